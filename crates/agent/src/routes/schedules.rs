//! `POST/GET /v1/schedules`, `GET/DELETE /v1/schedules/{id}`: turns the agent runs on
//! time (see [`crate::schedule`]).

use super::json_body;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/schedules", post(create).get(list)).route("/v1/schedules/{id}", get(fetch).delete(remove))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("schedule_not_found", format!("No schedule with id '{id}'."))
}

async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body: Value = json_body(&body)?;
    Ok(Json(crate::schedule::create(&state, body)?))
}

async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let data = state
        .store
        .schedules()?
        .iter()
        .map(|row| crate::schedule::describe(&state, row, false))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({"object": "list", "data": data, "has_more": false})))
}

async fn fetch(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let row = state.store.schedule(&id)?.ok_or_else(|| not_found(&id))?;
    Ok(Json(crate::schedule::describe(&state, &row, true)?))
}

/// Deletes the schedule; a run already started goes on (cancel it by its response id).
async fn remove(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if !state.store.delete_schedule(&id)? {
        return Err(not_found(&id));
    }
    state.scheduler.changed();
    Ok(Json(json!({"id": id, "object": "schedule.deleted", "deleted": true})))
}
