//! `/v1/templates`: what instances are built from. The system template `berth-agent`
//! (the injected agent on the server's base image) and each workspace's own templates,
//! made from any image; every change is a new immutable version.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::instances::{SYSTEM_TEMPLATE, SYSTEM_TEMPLATE_VERSION};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use berth_api_types::{CreateTemplate, ErrorBody, List, Template, TemplatePort, UpdateTemplate};
use berth_core::{now_secs, TemplateId, TemplateSpec};
use berth_store::TemplateRecord;
use serde::Deserialize;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/templates", get(list).post(create))
        .route("/v1/templates/{id}", get(retrieve).patch(update).delete(delete))
}

fn present(
    id: String,
    name: String,
    version: u32,
    spec: &TemplateSpec,
    image: String,
    times: Option<(i64, i64)>,
) -> Template {
    Template {
        id,
        object: "template".into(),
        name,
        version,
        status: "ready".into(),
        image,
        ports: spec.ports.iter().map(|p| TemplatePort { port: p.port, default: p.default }).collect(),
        command: spec.command.clone(),
        env: spec.env.keys().map(|k| (k.clone(), "***".to_string())).collect(),
        health_path: spec.health_path.clone(),
        agent: spec.agent,
        agents: spec.agents.clone(),
        default_size: spec.default_size,
        system: times.is_none(),
        created_at: times.map(|t| t.0),
        updated_at: times.map(|t| t.1),
    }
}

fn system_template(state: &AppState) -> Template {
    present(
        SYSTEM_TEMPLATE.into(),
        SYSTEM_TEMPLATE.into(),
        SYSTEM_TEMPLATE_VERSION,
        &TemplateSpec::system(),
        state.settings.base_image.clone(),
        None,
    )
}

fn custom(t: &TemplateRecord) -> Template {
    let image = t.spec.image.clone().unwrap_or_default();
    present(t.id.to_string(), t.name.clone(), t.version, &t.spec, image, Some((t.created_at, t.updated_at)))
}

/// List templates: the system template, then the workspace's own, oldest first.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = List<Template>)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<List<Template>>> {
    let mut data = vec![system_template(&state)];
    data.extend(state.store.templates(Some(&auth.workspace_id)).await?.iter().map(custom));
    Ok(Json(List::new(data, None)))
}

/// Retrieve a template (by id, or by the name of one of the workspace's).
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)),
    responses((status = 200, body = Template), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn retrieve(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Template>> {
    if id == SYSTEM_TEMPLATE {
        return Ok(Json(system_template(&state)));
    }
    let t = crate::templates::find(state.store.as_ref(), &auth.workspace_id, &id).await?;
    Ok(Json(custom(&t)))
}

/// Create a template from an image (version 1). The image is pulled when the first
/// instance needs it.
#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = CreateTemplate,
    responses((status = 201, body = Template), (status = 400, body = ErrorBody),
        (status = 409, description = "`name_taken`: the workspace has a template of that name", body = ErrorBody),
        (status = 422, description = "`invalid_template`: parts that contradict each other (a port twice, two default ports, port 3737 without the agent, an empty program); `details.field` names it", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    let (name, spec) = crate::templates::create(body)?;
    let now = now_secs();
    let t = TemplateRecord {
        id: TemplateId::generate(),
        workspace_id: auth.workspace_id.clone(),
        name,
        version: 1,
        spec,
        created_at: now,
        updated_at: now,
    };
    state.store.create_template(&t).await?;
    state.settings.templates.set(t.id.as_str(), t.version);
    Ok((StatusCode::CREATED, Json(custom(&t))))
}

/// Change a template: the result is its next version. Instances stay on the version
/// they run until they are updated (`POST /v1/instances/{id}/update`).
#[utoipa::path(patch, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)),
    request_body = UpdateTemplate,
    responses((status = 200, body = Template), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`system_template`: the system template cannot change", body = ErrorBody),
        (status = 422, description = "`invalid_template`, as for create", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateTemplate>,
) -> ApiResult<Json<Template>> {
    refuse_system(&id, "changed")?;
    let t = crate::templates::find(state.store.as_ref(), &auth.workspace_id, &id).await?;
    let spec = crate::templates::update(&t.spec, body)?;
    if spec == t.spec {
        // Nothing changes (an empty body, or the same values): no new version.
        return Ok(Json(custom(&t)));
    }
    let t = state.store.add_template_version(&t.id, &spec).await?.ok_or_else(|| ApiError::NotFound {
        code: "template_not_found",
        message: format!("template `{id}` was deleted meanwhile"),
    })?;
    state.settings.templates.set(t.id.as_str(), t.version);
    Ok(Json(custom(&t)))
}

/// Query of a template delete.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct DeleteQuery {
    /// Delete even while instances use it (they keep running the version they have,
    /// and can no longer be updated).
    pub force: Option<bool>,
}

/// Delete a template and its versions; refused while instances (deleted ones not yet
/// purged included) use it, unless `?force=true`.
#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path), DeleteQuery),
    responses((status = 200, body = Template), (status = 404, body = ErrorBody),
        (status = 409, description = "`template_in_use` or `system_template`", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> ApiResult<Json<Template>> {
    refuse_system(&id, "deleted")?;
    let t = crate::templates::find(state.store.as_ref(), &auth.workspace_id, &id).await?;
    let users = state.store.template_users(t.id.as_str()).await?;
    if users > 0 && !q.force.unwrap_or(false) {
        return Err(ApiError::Conflict {
            code: "template_in_use",
            message: format!(
                "{users} instance(s) use template `{}`; delete them first, or pass ?force=true (they keep running)",
                t.name
            ),
        });
    }
    state.store.delete_template(&t.id).await?;
    state.settings.templates.remove(t.id.as_str());
    Ok(Json(custom(&t)))
}

fn refuse_system(id: &str, what: &str) -> ApiResult<()> {
    if id == SYSTEM_TEMPLATE {
        return Err(ApiError::Conflict {
            code: "system_template",
            message: format!("the system template `{SYSTEM_TEMPLATE}` cannot be {what}; create a template of your own"),
        });
    }
    Ok(())
}
