//! `GET /v1/models`: the default model plus what the configured providers report.

use crate::config::ProviderKind;
use crate::state::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/models", get(list))
}

async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let llm = &state.config.llm;
    let mut kinds = vec![llm.default_provider];
    if llm.default_provider != ProviderKind::Anthropic && llm.anthropic_api_key.is_some() {
        kinds.push(ProviderKind::Anthropic);
    }
    let mut models: Vec<(String, &str)> = Vec::new();
    if let Some(m) = &llm.default_model {
        models.push((m.clone(), "berth"));
    }
    for kind in kinds {
        let owner = match kind {
            ProviderKind::OpenAi => "openai-compatible",
            ProviderKind::Anthropic => "anthropic",
        };
        match state.provider(kind).list_models().await {
            Ok(ids) => models.extend(ids.into_iter().map(|id| (id, owner))),
            // An unreachable provider should not hide the configured default.
            Err(e) => tracing::warn!("cannot list {owner} models: {e}"),
        }
    }
    let mut seen = std::collections::HashSet::new();
    let data: Vec<Value> = models
        .into_iter()
        .filter(|(id, _)| seen.insert(id.clone()))
        .map(|(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}))
        .collect();
    Json(json!({"object": "list", "data": data}))
}
