//! Unauthenticated operational routes: `/healthz`, `/metrics`, `/openapi.json`, `/docs`.

use crate::metrics::KindLabel;
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use berth_core::Status;
use serde_json::json;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/docs", get(docs))
}

/// `?verbose=true` on `/healthz`.
#[derive(serde::Deserialize)]
struct HealthQuery {
    #[serde(default)]
    verbose: bool,
}

/// `200 {"status":"ok"}` when the database and the runtime answer; with `?verbose=true`
/// also which database (and its ping) and whether this replica leads.
async fn healthz(State(state): State<AppState>, query: crate::extract::ApiQuery<HealthQuery>) -> Response {
    let verbose = query.0.verbose;
    let started = std::time::Instant::now();
    let db = state.store.ping().await;
    let ping_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    let rt = state.runtime.ping().await;
    match (db, rt) {
        (Ok(()), Ok(())) if verbose => Json(json!({
            "status": "ok",
            "database": {"backend": state.settings.database.name(), "ping_ms": ping_ms},
            "leader": state.leader.is_leader(),
        }))
        .into_response(),
        (Ok(()), Ok(())) => Json(json!({"status": "ok"})).into_response(),
        (db, rt) => {
            let mut problems = serde_json::Map::new();
            if let Err(e) = db {
                problems.insert("database".into(), json!(e.to_string()));
            }
            if let Err(e) = rt {
                problems.insert("runtime".into(), json!(e.to_string()));
            }
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "problems": problems})))
                .into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(counts) = state.store.status_counts().await {
        for st in Status::ALL {
            let n = counts.iter().find(|(s, _)| *s == st).map_or(0, |(_, n)| *n);
            state.metrics.instances.get_or_create(&KindLabel { kind: st.as_str().into() }).set(n);
        }
    }
    if let Some(pool) = &state.pool {
        for (name, n) in pool.ready_counts() {
            state.metrics.warm_pool_ready.get_or_create(&KindLabel { kind: name }).set(n as i64);
        }
    }
    state.metrics.set_runtime_calls(state.runtime.calls());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response()
}

fn doc_settings(state: &AppState) -> crate::openapi::DocSettings {
    crate::openapi::DocSettings { min_idle_timeout_secs: state.settings.min_idle_timeout_secs }
}

async fn openapi(State(state): State<AppState>) -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOC.get_or_init(|| crate::openapi::document_json(doc_settings(&state)));
    ([(header::CONTENT_TYPE, "application/json")], text.clone()).into_response()
}

async fn docs(State(state): State<AppState>) -> Html<String> {
    static PAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    Html(PAGE.get_or_init(|| crate::openapi::render_html(doc_settings(&state))).clone())
}
