//! `/v1/instances`: create, list, retrieve, update, delete/restore and lifecycle.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::instances::{ops, present, validate};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_api_types::{CreateInstance, ErrorBody, Instance, List, Purged, UpdateInstance, UpdateTo};
use berth_core::lifecycle::Action;
use berth_core::Status;
use berth_store::InstanceFilter;
use serde::Deserialize;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/instances", post(create).get(list))
        .route("/v1/instances/{id}", get(retrieve).patch(update).delete(delete))
        .route("/v1/instances/{id}/{action}", post(lifecycle))
}

/// Create an instance; answers once it runs and its agent answers.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", request_body = CreateInstance,
    responses((status = 201, body = Instance), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, description = "`template_not_found`", body = ErrorBody),
        (status = 422, description = "`limit_exceeded` (the workspace's instance limit), `capacity_exceeded` (host memory, `--max-instances`; `details` name the numbers), `resources_out_of_bounds` (`details.field`) or `image_unavailable`", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateInstance>,
) -> ApiResult<(StatusCode, Json<Instance>)> {
    let valid = validate::create(body, state.settings.min_idle_timeout_secs)?;
    let template =
        crate::templates::resolve(state.store.as_ref(), &state.agents, &auth.workspace_id, &valid.template).await?;
    let settings = state.settings.clone();
    let rec = ops::detached(ops::create(state, auth, valid, template)).await?;
    Ok((StatusCode::CREATED, Json(present::instance(&settings, &rec))))
}

/// Query of the list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// Only instances with this `user` tag.
    pub user: Option<String>,
    /// Only instances in this status (`deleted` lists soft-deleted ones).
    pub status: Option<String>,
    /// Only instances of this template.
    pub template: Option<String>,
    /// Page size, 1–100 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// List the workspace's instances, newest first.
#[utoipa::path(get, path = "/v1/instances", tag = "instances", params(ListQuery),
    responses((status = 200, body = List<Instance>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<Instance>>> {
    let page = super::page::Page::new(q.limit, q.cursor.as_deref(), "cur_")?;
    let status =
        q.status.as_deref().map(|s| s.parse::<Status>().map_err(|e| ApiError::invalid("status", e))).transpose()?;
    let filter = InstanceFilter { user: q.user, status, template: q.template };
    let mut recs = state.store.list_instances(&auth.workspace_id, &filter, page.before, page.fetch()).await?;
    let next = page.cut(&mut recs, |r| r.seq);
    let data = recs.iter().map(|r| present::instance(&state.settings, r)).collect();
    Ok(Json(List::new(data, next)))
}

/// Retrieve one instance.
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances", params(("id" = String, Path)),
    responses((status = 200, body = Instance), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn retrieve(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Instance>> {
    let rec = ops::get(&state, &auth, &id).await?;
    Ok(Json(present::instance(&state.settings, &rec)))
}

/// Update name, metadata, budget, size (resize in place) or env (recreate); data is kept.
#[utoipa::path(patch, path = "/v1/instances/{id}", tag = "instances", params(("id" = String, Path)),
    request_body = UpdateInstance,
    responses((status = 200, body = Instance), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody),
        (status = 422, description = "`resources_out_of_bounds` (`details.field`), `capacity_exceeded` (no room on the host to grow), `image_unavailable`", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateInstance>,
) -> ApiResult<Json<Instance>> {
    let valid = validate::update(body)?;
    let settings = state.settings.clone();
    let rec = ops::detached(ops::patch(state, auth.into(), id, valid)).await?;
    Ok(Json(present::instance(&settings, &rec)))
}

/// Query of delete.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct DeleteQuery {
    /// Remove the data now instead of keeping it for the retention period.
    pub purge: Option<bool>,
}

/// Delete an instance: kept (restorable) for the retention period, or purged now.
#[utoipa::path(delete, path = "/v1/instances/{id}", tag = "instances", params(("id" = String, Path), DeleteQuery),
    responses((status = 200, description = "the deleted instance, or `{id, deleted, purged}` when purged", body = Instance),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<Response> {
    let settings = state.settings.clone();
    let purge = q.purge.unwrap_or(false);
    match ops::detached(ops::delete(state, auth.into(), id.clone(), purge)).await? {
        Some(rec) => Ok(Json(present::instance(&settings, &rec)).into_response()),
        None => Ok(Json(Purged { id, object: "instance".into(), deleted: true, purged: true }).into_response()),
    }
}

/// Lifecycle actions: stop, start, restart, pause, resume, update, restore. `update`
/// recreates the instance on its template's newest version, or on `{"version": N}`
/// (an older one rolls back), home and agent sessions kept; if that version does not
/// come up, the instance goes back to the one it ran and the answer is the error.
#[utoipa::path(post, path = "/v1/instances/{id}/{action}", tag = "instances",
    params(("id" = String, Path), ("action" = String, Path, description = "stop | start | restart | pause | resume | update | restore")),
    request_body(content = UpdateTo, description = "only for `update` (optional): the version to move to"),
    responses((status = 200, body = Instance), (status = 404, body = ErrorBody),
        (status = 409, description = "invalid_state, with details.current_status", body = ErrorBody),
        (status = 422, description = "`capacity_exceeded`/`limit_exceeded` (start, restore) or `image_unavailable` (update)", body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lifecycle(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, action)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateTo>,
) -> ApiResult<Json<Instance>> {
    let action = match action.as_str() {
        "stop" => Action::Stop,
        "start" => Action::Start,
        "restart" => Action::Restart,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "update" => Action::Update,
        "restore" => Action::Restore,
        _ => {
            return Err(ApiError::NotFound { code: "not_found", message: format!("no action `{action}` on instances") })
        }
    };
    let settings = state.settings.clone();
    let rec = match action {
        Action::Update => ops::detached(ops::update_to(state, auth.into(), id, body.version)).await?,
        _ => ops::detached(ops::act(state, auth.into(), id, action)).await?,
    };
    Ok(Json(present::instance(&settings, &rec)))
}
