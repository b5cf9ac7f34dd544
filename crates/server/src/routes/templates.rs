//! `/v1/templates`: what instances are built from. This build has one, the
//! system template `berth-agent` (the injected agent on the server's base image).

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::instances::{SYSTEM_TEMPLATE, SYSTEM_TEMPLATE_VERSION};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use berth_api_types::{ErrorBody, List, Template, TemplatePort};
use berth_runtime::AGENT_PORT;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/templates", get(list)).route("/v1/templates/{id}", get(retrieve))
}

fn system_template(state: &AppState) -> Template {
    Template {
        id: SYSTEM_TEMPLATE.into(),
        object: "template".into(),
        name: "berth-agent".into(),
        version: SYSTEM_TEMPLATE_VERSION,
        image: state.settings.base_image.clone(),
        ports: vec![TemplatePort { port: AGENT_PORT, default: true }],
        agents: vec!["berth-agent".into()],
        system: true,
    }
}

/// List templates.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = List<Template>)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _auth: Auth) -> Json<List<Template>> {
    Json(List::new(vec![system_template(&state)], None))
}

/// Retrieve a template.
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)),
    responses((status = 200, body = Template), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn retrieve(State(state): State<AppState>, _auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Template>> {
    if id == SYSTEM_TEMPLATE {
        return Ok(Json(system_template(&state)));
    }
    Err(ApiError::NotFound { code: "template_not_found", message: format!("no template `{id}`") })
}
