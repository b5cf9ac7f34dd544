//! `GET /health`: liveness with version and uptime; never needs the token.

use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;

/// The `/health` body the control plane reads.
#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/health", get(health))
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Health> {
    Json(Health { status: "ok", version: crate::VERSION, uptime_secs: state.started.elapsed().as_secs() })
}
