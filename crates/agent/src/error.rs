//! The one error type of the HTTP API, rendered as the OpenAI error envelope
//! `{"error":{"message","type","code","param"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error answered to a client. Handlers return `Result<_, ApiError>` and
/// never build error JSON themselves.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI error type: `invalid_request_error`, `authentication_error`, `server_error`.
    pub kind: &'static str,
    pub code: Option<&'static str>,
    pub param: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, msg: String) -> Self {
        ApiError { status, message: msg, kind, code: Some(code), param: None }
    }

    /// The same error about `to` where it named `from` (a list parsed as another's).
    pub fn renamed(mut self, from: &str, to: &str) -> Self {
        if let Some(rest) = self.param.as_deref().and_then(|p| p.strip_prefix(from)) {
            self.param = Some(format!("{to}{rest}"));
        }
        self.message = self.message.replace(&format!("'{from}"), &format!("'{to}"));
        self
    }

    /// 400: a parameter is malformed.
    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        let mut e = Self::bad_request("invalid_value", message.into());
        e.param = Some(param.into());
        e
    }

    /// 400: a required parameter is absent.
    pub fn missing_param(param: &str) -> Self {
        let mut e = Self::bad_request("missing_required_parameter", format!("Missing required parameter: '{param}'."));
        e.param = Some(param.into());
        e
    }

    /// 400 with a given code.
    pub fn bad_request(code: &'static str, message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message)
    }

    /// 404 for an unknown object (`session_not_found`, `response_not_found`, ...).
    pub fn not_found(code: &'static str, message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "invalid_request_error", code, message)
    }

    /// 409: the session is answering another message.
    pub fn session_busy(session_id: &str) -> Self {
        let mut e = Self::new(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "session_busy",
            format!(
                "Session '{session_id}' is still answering another message; \
                 wait for that response to finish, then send this one again."
            ),
        );
        e.param = Some("session_id".into());
        e
    }

    /// 401: missing or wrong gateway token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
            "Missing or invalid bearer token: send 'Authorization: Bearer <key>'.".into(),
        )
    }

    /// 502: the model provider failed a call the agent made for the request.
    pub fn upstream(e: &crate::provider::ProviderError) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "server_error", e.code(), e.to_string())
    }

    /// 500: something broke inside the agent (the log has details).
    pub fn internal(message: impl std::fmt::Display) -> Self {
        tracing::error!(error = %message, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            format!("The agent failed: {message}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message,
            "type": self.kind,
            "code": self.code,
            "param": self.param,
        }});
        (self.status, Json(body)).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::internal(e)
    }
}
