//! `GET /v1/tools`: what the model is offered — the agent's own tools and those of
//! the MCP servers in `DATA/mcp.json` (with the servers that did not start).

use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/tools", get(list))
}

async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let mut data: Vec<Value> = crate::tools::specs(&state.tools)
        .into_iter()
        .map(|t| {
            json!({"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters,
                   "source": "builtin"})
        })
        .collect();
    let (mcp, errors) = state.mcp.listing().await;
    data.extend(mcp);
    Json(json!({"object": "list", "data": data, "mcp_errors": errors}))
}
