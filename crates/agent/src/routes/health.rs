//! `GET /health`: liveness with version, uptime and whether a turn is running
//! (the control plane does not idle-stop an instance mid-turn); never needs the token.

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
    /// A turn is running (its client may have left: the turn still counts).
    turn_running: bool,
    /// How many turns are running.
    turns_running: usize,
    /// When the next scheduled turn is due (Unix seconds), if any: the control plane
    /// wakes a stopped instance for it.
    next_due_at: Option<u64>,
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/health", get(health))
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Health> {
    let turns_running = state.busy.running();
    Json(Health {
        status: "ok",
        version: crate::VERSION,
        uptime_secs: state.started.elapsed().as_secs(),
        turn_running: turns_running > 0,
        turns_running,
        next_due_at: state.store.next_due().unwrap_or_default(),
    })
}
