//! [`EdgeError`]: every way the edge can refuse or fail a request, mapped once to
//! a status and the instance plane's OpenAI-style envelope
//! (`{"error":{"message","type","code","param"}}`).

use super::EdgeBody;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Why the edge answered instead of the instance.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The Host header names no instance URL.
    #[error("no instance at host `{host}`; instance URLs are http://{{label}}.{domain}")]
    UnknownHost { host: String, domain: String },
    /// No such label or handle, or one of another workspace (existence is never revealed).
    #[error("no instance at this URL in your workspace")]
    NotFound,
    /// No key and no share cookie.
    #[error("missing API key: send Authorization: Bearer sk_... (or X-API-Key)")]
    MissingKey,
    /// A key that does not verify.
    #[error("invalid API key")]
    BadKey,
    /// A share link or cookie that is malformed, expired or revoked.
    #[error("this share link is invalid, expired or revoked")]
    BadShare,
    /// Stopped by a user (only instances stopped for idleness wake), paused, in error...
    #[error("instance `{id}` is {status}; start it (POST /v1/instances/{id}/start) to reach it")]
    NotRunning { id: String, status: String },
    /// Waking a sleeping instance failed.
    #[error("could not wake the instance: {0}")]
    WakeFailed(String),
    /// The instance runs but its address is not known right now.
    #[error("the instance is not reachable right now; retry shortly")]
    Unreachable,
    /// Nothing listens on an exposed port.
    #[error("nothing answers on port {port} of the instance: {detail}")]
    PortUnreachable { port: u16, detail: String },
    /// The agent's port did not answer.
    #[error("the instance's agent did not answer: {0}")]
    AgentUnreachable(String),
    /// The request body is larger than the edge accepts.
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The request itself is unusable (no Host, bad URI).
    #[error("{0}")]
    BadRequest(String),
    /// Over the workspace's (or the server's) cap of requests in flight.
    #[error("{}", .0.message)]
    RateLimited(crate::quotas::Refused),
    /// The database failed while checking a key.
    #[error("the edge could not check the key right now; retry shortly")]
    Store,
}

impl EdgeError {
    /// Status and stable code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            EdgeError::UnknownHost { .. } | EdgeError::NotFound => (StatusCode::NOT_FOUND, "instance_not_found"),
            EdgeError::MissingKey | EdgeError::BadKey => (StatusCode::UNAUTHORIZED, "unauthorized"),
            EdgeError::BadShare => (StatusCode::UNAUTHORIZED, "share_invalid"),
            EdgeError::NotRunning { .. } => (StatusCode::CONFLICT, "instance_not_running"),
            EdgeError::WakeFailed(_) | EdgeError::Unreachable => {
                (StatusCode::SERVICE_UNAVAILABLE, "instance_unavailable")
            }
            EdgeError::PortUnreachable { .. } => (StatusCode::BAD_GATEWAY, "port_unreachable"),
            EdgeError::AgentUnreachable(_) => (StatusCode::BAD_GATEWAY, "instance_unavailable"),
            EdgeError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            EdgeError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            EdgeError::Store => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            EdgeError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        }
    }

    /// Whether the same request may succeed if retried shortly.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            EdgeError::WakeFailed(_)
                | EdgeError::Unreachable
                | EdgeError::AgentUnreachable(_)
                | EdgeError::Store
                | EdgeError::RateLimited(_)
        )
    }

    /// The response: the OpenAI-style envelope, `Retry-After` when a retry may help.
    pub fn into_response(self) -> Response<EdgeBody> {
        let (status, code) = self.status_code();
        let kind = match status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        let body =
            serde_json::json!({"error": {"message": self.to_string(), "type": kind, "code": code, "param": null}});
        let mut resp = Response::new(super::full(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let EdgeError::RateLimited(refused) = &self {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(refused.retry_after.max(1)));
        } else if self.retryable() {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
