//! `GET /v1/sessions` (newest first, paginated), `GET /v1/sessions/{id}` (full
//! history), `DELETE /v1/sessions/{id}`.

use crate::api::sessions::{SessionDetail, SessionList};
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/sessions", get(list)).route("/v1/sessions/{id}", get(detail).delete(delete))
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<usize>,
    /// Cursor: the last id of the previous page.
    after: Option<String>,
}

async fn list(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<SessionList>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_value", e.body_text()))?;
    let limit = super::page_limit(p.limit)?;
    if let Some(after) = &p.after {
        if state.store.session(after)?.is_none() {
            return Err(ApiError::invalid_param("after", format!("No session with id '{after}'.")));
        }
    }
    let (data, has_more) = state.store.list_sessions(limit, p.after.as_deref())?;
    Ok(Json(SessionList {
        object: "list".into(),
        first_id: data.first().map(|s| s.id.clone()),
        last_id: data.last().map(|s| s.id.clone()),
        has_more,
        data,
    }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("session_not_found", format!("No session with id '{id}'."))
}

async fn detail(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<SessionDetail>, ApiError> {
    let summary = state.store.session(&id)?.ok_or_else(|| not_found(&id))?;
    Ok(Json(SessionDetail { summary, items: state.store.history(&id)?, response_ids: state.store.response_ids(&id)? }))
}

async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    super::delete_session(&state, &id, "session.deleted", not_found)
}
