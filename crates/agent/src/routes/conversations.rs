//! The Conversations API, mapped onto sessions (a conversation's id is its session's):
//! `POST /v1/conversations`, `GET|POST|DELETE /v1/conversations/{id}`,
//! `GET|POST /v1/conversations/{id}/items`. `POST /v1/responses` takes
//! `conversation` to continue one, so SDK code written for OpenAI's conversations
//! works unchanged.

use super::json_body;
use crate::api::parse_input;
use crate::api::sessions::HistoryItem;
use crate::error::ApiError;
use crate::ids::{new_id, now_secs};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Most metadata pairs on a conversation (as OpenAI's).
const MAX_METADATA: usize = 16;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/conversations", post(create))
        .route("/v1/conversations/{id}", get(fetch).post(update).delete(delete))
        .route("/v1/conversations/{id}/items", get(list_items).post(add_items))
}

/// The 404 of an unknown conversation.
pub fn not_found(id: &str) -> ApiError {
    ApiError::not_found("conversation_not_found", format!("No conversation with id '{id}'."))
}

fn object(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let s = state.store.session(id)?.ok_or_else(|| not_found(id))?;
    let metadata = state.store.session_metadata(id)?;
    Ok(json!({"id": s.id, "object": "conversation", "created_at": s.created_at, "metadata": metadata}))
}

fn metadata_of(body: &Map<String, Value>) -> Result<Option<Map<String, Value>>, ApiError> {
    match body.get("metadata") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => {
            if m.len() > MAX_METADATA {
                return Err(ApiError::invalid_param("metadata", format!("At most {MAX_METADATA} metadata pairs.")));
            }
            if let Some((k, _)) = m.iter().find(|(k, v)| k.len() > 64 || v.as_str().is_none_or(|s| s.len() > 512)) {
                return Err(ApiError::invalid_param(
                    "metadata",
                    format!("Metadata '{k}': keys are at most 64 characters, values strings of at most 512."),
                ));
            }
            Ok(Some(m.clone()))
        }
        Some(_) => Err(ApiError::invalid_param("metadata", "'metadata' must be an object of strings.")),
    }
}

fn items_of(body: &Map<String, Value>, required: bool) -> Result<Vec<crate::api::Item>, ApiError> {
    match body.get("items") {
        None | Some(Value::Null) if !required => Ok(Vec::new()),
        None | Some(Value::Null) => Err(ApiError::missing_param("items")),
        Some(Value::Array(a)) if a.is_empty() && !required => Ok(Vec::new()),
        Some(v @ Value::Array(_)) => parse_input(Some(v.clone())).map_err(|e| e.renamed("input", "items")),
        Some(_) => Err(ApiError::invalid_param("items", "'items' must be an array of items.")),
    }
}

fn body_object(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match json_body::<Value>(body)? {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("invalid_type", "The request body must be a JSON object.".into())),
    }
}

async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let body = body_object(&body)?;
    let metadata = metadata_of(&body)?.unwrap_or_default();
    let items = items_of(&body, false)?;
    let id = new_id("sess");
    let title = crate::turn::title(&items);
    state.store.create_session(&id, &title, now_secs())?;
    state.store.set_session_metadata(&id, &metadata)?;
    if !items.is_empty() {
        state.store.append_items(&id, "", &items)?;
    }
    Ok(Json(object(&state, &id)?))
}

async fn fetch(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    Ok(Json(object(&state, &id)?))
}

async fn update(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = body_object(&body)?;
    let metadata = metadata_of(&body)?.ok_or_else(|| ApiError::missing_param("metadata"))?;
    state.store.session(&id)?.ok_or_else(|| not_found(&id))?;
    state.store.set_session_metadata(&id, &metadata)?;
    Ok(Json(object(&state, &id)?))
}

async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    super::delete_session(&state, &id, "conversation.deleted", not_found)
}

#[derive(Deserialize)]
struct ItemParams {
    limit: Option<usize>,
    /// Cursor: the last item id of the previous page.
    after: Option<String>,
    /// `asc` (oldest first) or `desc` (newest first, the default).
    order: Option<String>,
}

fn list(data: Vec<Value>, has_more: bool) -> Value {
    let first = data.first().and_then(|i| i.get("id").cloned());
    let last = data.last().and_then(|i| i.get("id").cloned());
    json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more})
}

fn item_json(h: HistoryItem) -> Value {
    serde_json::to_value(h.item).unwrap_or(Value::Null)
}

async fn list_items(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    params: Result<Query<ItemParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params.map_err(|e| ApiError::bad_request("invalid_value", e.body_text()))?;
    let limit = super::page_limit(p.limit)?;
    let desc = match p.order.as_deref() {
        None | Some("desc") => true,
        Some("asc") => false,
        Some(o) => return Err(ApiError::invalid_param("order", format!("'order' is 'asc' or 'desc', not '{o}'."))),
    };
    state.store.session(&id)?.ok_or_else(|| not_found(&id))?;
    let mut items: Vec<Value> = state.store.history(&id)?.into_iter().map(item_json).collect();
    if desc {
        items.reverse();
    }
    let start = match &p.after {
        None => 0,
        Some(after) => {
            items.iter().position(|i| i.get("id").and_then(Value::as_str) == Some(after.as_str())).ok_or_else(|| {
                ApiError::invalid_param("after", format!("No item with id '{after}' in conversation '{id}'."))
            })? + 1
        }
    };
    let rest: Vec<Value> = items.into_iter().skip(start).collect();
    let has_more = rest.len() > limit;
    Ok(Json(list(rest.into_iter().take(limit).collect(), has_more)))
}

async fn add_items(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let body = body_object(&body)?;
    let items = items_of(&body, true)?;
    let _busy = state.busy.try_claim(&id).ok_or_else(|| ApiError::session_busy(&id))?;
    state.store.session(&id)?.ok_or_else(|| not_found(&id))?;
    state.store.append_items(&id, "", &items)?;
    let data: Vec<Value> = items.into_iter().map(|i| serde_json::to_value(i).unwrap_or(Value::Null)).collect();
    Ok(Json(list(data, false)))
}
