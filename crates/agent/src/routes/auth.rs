//! The gateway token: with `BERTH_GATEWAY_TOKEN` set, every route but
//! `GET /health` needs `Authorization: Bearer <token>`.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

pub async fn require_gateway_token(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(token) = &state.config.gateway_token {
        if req.uri().path() != "/health"
            && !super::same_secret(super::bearer(req.headers()).as_bytes(), token.as_bytes())
        {
            return Err(ApiError::unauthorized());
        }
    }
    Ok(next.run(req).await)
}
