//! HTTP routes of the instance plane, one module per resource, merged here
//! behind the gateway-token check.

mod auth;
mod conversations;
mod health;
mod models;
mod responses;
mod schedules;
mod sessions;
mod tools;
mod websocket;

use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Router;
use serde::de::DeserializeOwned;
use std::sync::Arc;

pub(crate) use conversations::not_found as conversation_not_found;

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Every route of the agent.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .merge(health::router())
        .merge(responses::router())
        .merge(sessions::router())
        .merge(schedules::router())
        .merge(tools::router())
        .merge(conversations::router())
        .merge(models::router())
        .fallback(|| async { ApiError::not_found("not_found", "No such route on this agent.".into()) })
        .method_not_allowed_fallback(|| async {
            let mut e = ApiError::bad_request("method_not_allowed", "This method is not allowed on this route.".into());
            e.status = StatusCode::METHOD_NOT_ALLOWED;
            e
        })
        // Whole conversations may come in as `input`; axum's default 2 MiB is too tight.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_gateway_token))
        .with_state(state)
}

/// Parses a JSON body, answering OpenAI-style 400s for what is wrong with it.
pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("invalid_json", "The request body is empty; send a JSON object.".into()));
    }
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        let code = match e.classify() {
            Category::Data => "invalid_type",
            _ => "invalid_json",
        };
        ApiError::bad_request(code, format!("Invalid request body: {e}."))
    })
}

/// A list's `limit`: 1 to 100, 20 when not given.
pub(crate) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid_param("limit", "'limit' must be between 1 and 100."));
    }
    Ok(limit)
}

/// Deletes a session (a conversation), answering `{"id", "object", "deleted": true}`;
/// a session answering a turn is 409, an unknown one `not_found`.
pub(crate) fn delete_session(
    state: &AppState,
    id: &str,
    object: &str,
    not_found: fn(&str) -> ApiError,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    // Claiming it keeps a turn from starting while it goes away.
    let _busy = state.busy.try_claim(id).ok_or_else(|| ApiError::session_busy(id))?;
    if !state.store.delete_session(id)? {
        return Err(not_found(id));
    }
    Ok(axum::Json(serde_json::json!({"id": id, "object": object, "deleted": true})))
}

/// Compares two secrets in time independent of where the first difference is.
pub(crate) fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request (empty when there is none).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> &str {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
        .trim()
}
