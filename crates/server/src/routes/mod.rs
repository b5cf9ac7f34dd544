//! HTTP routers, one module per resource, merged in [`router`].

pub mod billing;
pub mod instances;
pub mod operate;
pub mod shares;
pub mod shell;
pub mod system;
pub mod templates;
pub mod workspaces;

mod page;

use crate::error::ApiError;
use crate::metrics::{RequestLabels, RouteLabel};
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::time::Instant;
use tracing::Instrument;

/// How long a client may take to send a request body.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Routes whose answers may rightly take long (a command's own timeout, a followed
/// log, a shell): no request timeout, they bound themselves.
const LONG_ROUTES: [&str; 4] =
    ["/v1/instances/{id}/exec", "/v1/instances/{id}/logs", "/v1/instances/{id}/shell", "/v1/instances/{id}/stdin"];

/// The whole hosting API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(system::router())
        .merge(instances::router())
        .merge(operate::router())
        .merge(shell::router())
        .merge(shares::router())
        .merge(templates::router())
        .merge(workspaces::router())
        .merge(billing::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        // A client that sends a body slower than this is cut off (its request fails).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(BODY_READ_TIMEOUT))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound { code: "not_found", message: "no such route".into() }
}

async fn method_not_allowed() -> Response {
    let mut resp =
        ApiError::InvalidRequest { field: None, message: "method not allowed on this route".into() }.into_response();
    *resp.status_mut() = axum::http::StatusCode::METHOD_NOT_ALLOWED;
    resp
}

/// Counts and times every request by matched route, and logs it.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route =
        req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    // Bounded label values: a client can send any method string.
    let method = match req.method().as_str() {
        m @ ("GET" | "POST" | "PATCH" | "PUT" | "DELETE" | "HEAD" | "OPTIONS") => m.to_string(),
        _ => "other".to_string(),
    };
    let started = Instant::now();
    // One span per request, so every log line of it (and of the operations it
    // starts on this task) carries the request id; the client gets the id back.
    let request_id = format!("req_{}", berth_core::ids::random_label(16));
    let span = tracing::info_span!("request", id = %request_id, %method, %route);
    let resp = async {
        if LONG_ROUTES.contains(&route.as_str()) {
            next.run(req).await
        } else {
            let limit = state.settings.request_timeout;
            match tokio::time::timeout(limit, next.run(req)).await {
                Ok(resp) => resp,
                Err(_) => ApiError::Timeout(limit.as_secs()).into_response(),
            }
        }
    }
    .instrument(span.clone());
    // Filled in by the key check: the request's runtime calls get a fair share.
    let mut resp = berth_runtime::fair::scope(Default::default(), resp).await;
    if let Ok(v) = axum::http::HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let secs = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    state.metrics.requests.get_or_create(&RequestLabels { method: method.clone(), route: route.clone(), status }).inc();
    state.metrics.request_seconds.get_or_create(&RouteLabel { route: route.clone() }).observe(secs);
    span.in_scope(|| tracing::info!(status, ms = (secs * 1000.0) as u64, "request"));
    resp
}
