//! [`ApiError`]: every failure of the hosting API, mapped to a status and a
//! stable code in one place. Handlers never build error JSON by hand.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api_types::{ErrorBody, ErrorDetail};
use berth_core::{InvalidTransition, Status};
use berth_runtime::RuntimeError;
use berth_store::StoreError;
use serde_json::{json, Map, Value};

/// A failure answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; `field` names what was wrong.
    #[error("{message}")]
    InvalidRequest { field: Option<String>, message: String },
    /// 401: no key or an unknown key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// 402: not enough money (`insufficient_funds`, `budget_exceeded`); details name the amounts.
    #[error("{message}")]
    PaymentRequired { code: &'static str, message: String, details: Value },
    /// 403: the key may not do this (admin-only routes).
    #[error("{0}")]
    Forbidden(String),
    /// 404 with a resource-specific code (`instance_not_found`, ...).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 409: the instance is not in a state that allows the action.
    #[error("{0}")]
    InvalidState(InvalidTransition),
    /// 409 with its own code: the request conflicts with what exists (`last_admin_key`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 422: a workspace limit would be exceeded.
    #[error("{0}")]
    LimitExceeded(String),
    /// 422: well-formed input whose parts contradict each other (a port listed twice,
    /// two default ports); `details.field` names the part.
    #[error("{message}")]
    Unprocessable { code: &'static str, field: String, message: String },
    /// 422: the host has no room (memory admission, `--max-instances`); details name the numbers.
    #[error("{message}")]
    CapacityExceeded { message: String, details: Value },
    /// 413: the request body is larger than the route takes.
    #[error("{0}")]
    TooLarge(String),
    /// 426: a WebSocket route asked without `Upgrade: websocket`.
    #[error("{0}")]
    UpgradeRequired(String),
    /// 429: over a fair-share cap or the key's rate; retry after `retry_after` seconds.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// 503: the request took longer than the server's request timeout.
    #[error("the request took longer than {0} s; an operation it started may still complete (check the instance)")]
    Timeout(u64),
    /// 503: the runtime could not do what was asked.
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
    /// 500: the database failed.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// 400 naming a field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest { field: Some(field.into()), message: message.into() }
    }

    /// 404 for an instance id.
    pub fn instance_not_found(id: &str) -> Self {
        ApiError::NotFound { code: "instance_not_found", message: format!("no instance `{id}` in this workspace") }
    }

    fn parts(&self) -> (StatusCode, &'static str, Map<String, Value>) {
        let mut details = Map::new();
        let (status, code) = match self {
            ApiError::InvalidRequest { field, .. } => {
                if let Some(f) = field {
                    details.insert("field".into(), json!(f));
                }
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::PaymentRequired { code, details: d, .. } => {
                if let Value::Object(m) = d {
                    details.extend(m.clone());
                }
                (StatusCode::PAYMENT_REQUIRED, *code)
            }
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound { code, .. } => (StatusCode::NOT_FOUND, *code),
            ApiError::InvalidState(t) => {
                details.insert("current_status".into(), json!(t.current.as_str()));
                (StatusCode::CONFLICT, "invalid_state")
            }
            ApiError::Conflict { code, .. } => (StatusCode::CONFLICT, *code),
            ApiError::LimitExceeded(_) => (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
            ApiError::Unprocessable { code, field, .. } => {
                details.insert("field".into(), json!(field));
                (StatusCode::UNPROCESSABLE_ENTITY, *code)
            }
            ApiError::CapacityExceeded { details: d, .. } => {
                if let Value::Object(m) = d {
                    details.extend(m.clone());
                }
                (StatusCode::UNPROCESSABLE_ENTITY, "capacity_exceeded")
            }
            ApiError::UpgradeRequired(_) => (StatusCode::UPGRADE_REQUIRED, "upgrade_required"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::Runtime(berth_runtime::RuntimeError::ImageMissing { image, .. }) => {
                details.insert("image".into(), json!(image));
                (StatusCode::UNPROCESSABLE_ENTITY, "image_unavailable")
            }
            ApiError::Runtime(berth_runtime::RuntimeError::Full(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "capacity_exceeded")
            }
            ApiError::Runtime(_) => (StatusCode::SERVICE_UNAVAILABLE, "runtime_unavailable"),
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::RateLimited { retry_after, .. } => {
                details.insert("retry_after_secs".into(), json!(retry_after));
                (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
            }
            ApiError::Store(StoreError::LimitExceeded { .. }) => (StatusCode::UNPROCESSABLE_ENTITY, "limit_exceeded"),
            ApiError::Store(StoreError::Duplicate(_)) => (StatusCode::CONFLICT, "name_taken"),
            ApiError::Store(e) if e.is_unavailable() => {
                details.insert("retry_after_secs".into(), json!(1));
                (StatusCode::SERVICE_UNAVAILABLE, "database_unavailable")
            }
            ApiError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        (status, code, details)
    }
}

impl From<InvalidTransition> for ApiError {
    fn from(t: InvalidTransition) -> Self {
        ApiError::InvalidState(t)
    }
}

/// Builds the 409 for an action refused in `current`.
pub fn invalid_state(action: &'static str, current: Status) -> ApiError {
    ApiError::InvalidState(InvalidTransition { action, current })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, details) = self.parts();
        let message = match &self {
            ApiError::Store(StoreError::LimitExceeded { .. } | StoreError::Duplicate(_)) => self.to_string(),
            ApiError::Store(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "the database did not answer in time");
                "the database did not answer in time (it is down, or every connection is busy); try again".to_string()
            }
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                "internal error: the database failed; try again".to_string()
            }
            _ => self.to_string(),
        };
        let retry_after = match &self {
            ApiError::RateLimited { retry_after, .. } => Some(*retry_after),
            ApiError::Store(e) if e.is_unavailable() => Some(1),
            _ => None,
        };
        let body = ErrorBody { error: ErrorDetail { code: code.into(), message, details } };
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UPGRADE_REQUIRED {
            resp.headers_mut().insert(axum::http::header::UPGRADE, axum::http::HeaderValue::from_static("websocket"));
            resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("Upgrade"));
        }
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is never read: the connection ends with this answer,
            // and says so, so that a client does not send its next request on it.
            resp.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<crate::quotas::Refused> for ApiError {
    fn from(r: crate::quotas::Refused) -> Self {
        ApiError::RateLimited { message: r.message, retry_after: r.retry_after }
    }
}
