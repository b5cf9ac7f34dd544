//! `/v1/workspaces` (admin) and `/v1/keys` (per workspace).

use crate::auth::{generate_secret, hash_secret, secret_prefix, Auth};
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use berth_api_types::{ApiKey, CreateKey, CreateWorkspace, ErrorBody, List, Workspace};
use berth_core::{now_secs, InstanceId, KeyId, WorkspaceId};
use berth_store::{KeyRecord, WorkspaceRecord};
use serde_json::{json, Value};

/// Routes of workspaces and keys.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/workspaces", get(list_workspaces).post(create_workspace))
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}", delete(delete_key))
}

fn workspace(ws: &WorkspaceRecord, key: Option<String>) -> Workspace {
    Workspace {
        id: ws.id.to_string(),
        object: "workspace".into(),
        name: ws.name.clone(),
        instance_limit: ws.instance_limit,
        created_at: ws.created_at,
        key,
    }
}

fn api_key(k: &KeyRecord, secret: Option<String>) -> ApiKey {
    ApiKey {
        id: k.id.to_string(),
        object: "api_key".into(),
        name: k.name.clone(),
        workspace_id: k.workspace_id.to_string(),
        prefix: k.prefix.clone(),
        admin: k.admin,
        created_at: k.created_at,
        expires_at: k.expires_at,
        instance: k.instance_id.as_ref().map(|i| i.to_string()),
        key: secret,
    }
}

/// Longest life a key may be given (`expires_in_secs`): ten years.
pub(crate) const MAX_KEY_LIFE: i64 = 10 * 365 * 24 * 3600;

fn check_name(field: &str, name: &str, required: bool) -> ApiResult<()> {
    if required && name.trim().is_empty() {
        return Err(ApiError::invalid(field, format!("`{field}` must not be empty")));
    }
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, format!("`{field}` must be at most 100 printable characters")));
    }
    Ok(())
}

/// Create a workspace and its first key (admin keys only).
#[utoipa::path(post, path = "/v1/workspaces", tag = "workspaces", request_body = CreateWorkspace,
    responses((status = 201, body = Workspace), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_workspace(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<Workspace>)> {
    auth.require_admin()?;
    check_name("name", &body.name, true)?;
    let limit = body.instance_limit.unwrap_or(state.settings.instance_limit);
    if limit > 100_000 {
        return Err(ApiError::invalid("instance_limit", "`instance_limit` must be at most 100000"));
    }
    let now = now_secs();
    let ws = WorkspaceRecord { id: WorkspaceId::generate(), name: body.name, instance_limit: limit, created_at: now };
    state.store.create_workspace(&ws).await?;
    let secret = generate_secret();
    let key = KeyRecord {
        id: KeyId::generate(),
        workspace_id: ws.id.clone(),
        name: "default".into(),
        prefix: secret_prefix(&secret),
        hash: hash_secret(&secret),
        admin: false,
        created_at: now,
        expires_at: None,
        instance_id: None,
    };
    state.store.create_key(&key).await?;
    Ok((StatusCode::CREATED, Json(workspace(&ws, Some(secret)))))
}

/// List workspaces: all of them for an admin key, the caller's own otherwise.
#[utoipa::path(get, path = "/v1/workspaces", tag = "workspaces",
    responses((status = 200, body = List<Workspace>), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_workspaces(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<List<Workspace>>> {
    let all: Vec<_> = if auth.admin {
        state.store.workspaces().await?.into_iter().filter(|w| !crate::pool::is_pool(&w.id)).collect()
    } else {
        state.store.workspace(&auth.workspace_id).await?.into_iter().collect()
    };
    Ok(Json(List::new(all.iter().map(|w| workspace(w, None)).collect(), None)))
}

/// Create a key for the caller's workspace; the secret is shown only here.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body = CreateKey,
    responses((status = 201, body = ApiKey), (status = 400, body = ErrorBody),
        (status = 403, description = "`forbidden`: `admin: true` asked with a key that is not an admin key, or with `instance`", body = ErrorBody),
        (status = 404, description = "`instance_not_found`: `instance` names no instance of this workspace", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_key(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<ApiKey>)> {
    let name = body.name.unwrap_or_default();
    check_name("name", &name, false)?;
    let admin = body.admin.unwrap_or(false);
    if admin {
        auth.require_admin()?;
    }
    let expires_in = body.expires_in_secs;
    if expires_in.is_some_and(|s| !(1..=MAX_KEY_LIFE).contains(&s)) {
        return Err(ApiError::invalid(
            "expires_in_secs",
            format!("`expires_in_secs` must be between 1 and {MAX_KEY_LIFE}"),
        ));
    }
    let instance = match body.instance.as_deref() {
        None => None,
        Some(_) if admin => {
            return Err(ApiError::Forbidden("an instance key cannot be an admin key: ask for one or the other".into()))
        }
        Some(id) => {
            let not_found = || ApiError::instance_not_found(id);
            let parsed = InstanceId::parse(id).ok_or_else(not_found)?;
            let found = state.store.instance(Some(&auth.workspace_id), &parsed).await?;
            found.filter(|i| i.deleted_at.is_none()).ok_or_else(not_found)?;
            Some(parsed)
        }
    };
    let secret = generate_secret();
    let key = KeyRecord {
        id: KeyId::generate(),
        workspace_id: auth.workspace_id.clone(),
        name,
        prefix: secret_prefix(&secret),
        hash: hash_secret(&secret),
        admin,
        created_at: now_secs(),
        expires_at: expires_in.map(|secs| now_secs() + secs),
        instance_id: instance,
    };
    state.store.create_key(&key).await?;
    Ok((StatusCode::CREATED, Json(api_key(&key, Some(secret)))))
}

/// List the caller's workspace's keys (prefixes only).
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses((status = 200, body = List<ApiKey>)), security(("bearer" = [])))]
pub async fn list_keys(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<List<ApiKey>>> {
    let keys = state.store.keys(&auth.workspace_id).await?;
    Ok(Json(List::new(keys.iter().map(|k| api_key(k, None)).collect(), None)))
}

/// Revoke a key of the caller's workspace.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path)),
    responses((status = 200, description = "`{id, object, deleted: true}`"), (status = 404, body = ErrorBody),
        (status = 403, description = "`forbidden`: an admin key deleted with a key that is not an admin key", body = ErrorBody),
        (status = 409, description = "`last_admin_key`: the workspace's only admin key", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_key(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let not_found =
        || ApiError::NotFound { code: "key_not_found", message: format!("no key `{id}` in this workspace") };
    let key_id = KeyId::parse(&id).ok_or_else(not_found)?;
    // One deletion at a time, so two concurrent ones cannot remove the last two admin keys.
    static DELETING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = DELETING.lock().await;
    let keys = state.store.keys(&auth.workspace_id).await?;
    let target = keys.iter().find(|k| k.id == key_id).ok_or_else(not_found)?;
    if target.admin {
        if !auth.admin {
            return Err(ApiError::Forbidden("only an admin key can delete an admin key".into()));
        }
        if keys.iter().filter(|k| k.admin).count() <= 1 {
            return Err(ApiError::Conflict {
                code: "last_admin_key",
                message: "this is the last admin key: create another admin key before deleting it".into(),
            });
        }
    }
    if !state.store.delete_key(&auth.workspace_id, &key_id).await? {
        return Err(not_found());
    }
    // At once: cached verifications end, and streams opened with the key close.
    state.keys.revoke(&key_id);
    Ok(Json(json!({"id": id, "object": "api_key", "deleted": true})))
}
