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
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use berth_api_types::{
    BuildLogLine, BuildLogs, CreateTemplate, ErrorBody, List, Template, TemplateBuild, TemplatePort, TemplatePull,
    UpdateTemplate,
};
use berth_core::{now_secs, TemplateId, TemplateSpec, TemplateStatus};
use berth_store::{BuildLine, BuildRecord, TemplateRecord, VersionSource};
use futures_util::StreamExt;
use serde::Deserialize;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/templates", get(list).post(create))
        .route("/v1/templates/{id}", get(retrieve).patch(update).delete(delete))
        .route("/v1/templates/{id}/builds", get(builds))
        .route("/v1/templates/{id}/builds/{version}", get(build))
        .route("/v1/templates/{id}/builds/{version}/logs", get(build_logs))
        // A build's context travels in the body (base64 of up to 64 MiB of tar.gz).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// Largest template body (a build's context is in it).
const MAX_BODY: usize = 96 << 20;

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
        build: None,
        pull: None,
        image,
        ports: spec.ports.iter().map(|p| TemplatePort { port: p.port, default: p.default }).collect(),
        command: spec.command.clone(),
        env: spec.env.keys().map(|k| (k.clone(), "***".to_string())).collect(),
        health_path: spec.health_path.clone(),
        agent: spec.agent,
        stdin: spec.stdin,
        agents: spec.agents.clone(),
        default_size: spec.default_size,
        system: times.is_none(),
        created_at: times.map(|t| t.0),
        updated_at: times.map(|t| t.1),
    }
}

fn system_template(state: &AppState) -> Template {
    let t = present(
        SYSTEM_TEMPLATE.into(),
        SYSTEM_TEMPLATE.into(),
        SYSTEM_TEMPLATE_VERSION,
        &TemplateSpec::system(),
        state.settings.base_image.clone(),
        None,
    );
    with_pull(state, t)
}

/// The system agent templates the server offers (`claude-code`), with their builds.
fn agent_templates(state: &AppState) -> Vec<Template> {
    state.agents.names().iter().filter_map(|name| agent_template(state, name)).collect()
}

fn agent_template(state: &AppState, name: &str) -> Option<Template> {
    let st = state.agents.state(name).filter(|_| state.agents.offers(name))?;
    let spec = crate::agents::SystemAgents::spec(name);
    let image = crate::agents::SystemAgents::image(name);
    let mut t = present(name.into(), name.into(), 1, &spec, image.clone(), None);
    t.status = st.status.as_str().into();
    t.build = st.started_at.map(|started_at| TemplateBuild {
        object: "template.build".into(),
        template_id: name.into(),
        version: 1,
        status: st.status.as_str().into(),
        image,
        error: st.error.clone(),
        started_at,
        finished_at: st.finished_at,
    });
    Some(t)
}

/// A template with the pull of its image, while one runs.
fn with_pull(state: &AppState, mut t: Template) -> Template {
    t.pull = state.runtime.pull_progress(&t.image).map(|p| TemplatePull {
        status: "pulling".into(),
        image: p.image,
        current_bytes: p.current_bytes,
        total_bytes: p.total_bytes,
        layers_done: p.layers_done,
        layers_total: p.layers_total,
        started_at: p.started_at,
    });
    t
}

fn custom(t: &TemplateRecord, build: Option<&BuildRecord>) -> Template {
    let image = t.spec.image.clone().unwrap_or_default();
    let mut out =
        present(t.id.to_string(), t.name.clone(), t.version, &t.spec, image, Some((t.created_at, t.updated_at)));
    out.status = t.status.as_str().into();
    out.build = build.map(build_view);
    out
}

/// A template with the build of its newest version's image, if built.
async fn custom_with_build(state: &AppState, t: &TemplateRecord) -> ApiResult<Template> {
    let build = match t.build {
        Some(v) => state.store.template_build(&t.id, v).await?,
        None => None,
    };
    Ok(with_pull(state, custom(t, build.as_ref())))
}

fn build_view(b: &BuildRecord) -> TemplateBuild {
    TemplateBuild {
        object: "template.build".into(),
        template_id: b.template_id.to_string(),
        version: b.version,
        status: b.status.as_str().into(),
        image: b.image.clone(),
        error: b.error.clone(),
        started_at: b.started_at,
        finished_at: b.finished_at,
    }
}

/// List templates: the system template `berth-agent`, the agent templates the server
/// offers (`hermes`, `claude-code`, `codex`, `openclaw`, `all`: `building` until their image is
/// built), then the workspace's own, oldest first.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = List<Template>)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<List<Template>>> {
    let mut data = vec![system_template(&state)];
    data.extend(agent_templates(&state));
    for t in state.store.templates(Some(&auth.workspace_id)).await? {
        data.push(custom_with_build(&state, &t).await?);
    }
    Ok(Json(List::new(data, None)))
}

/// Retrieve a template (by id, or by the name of one of the workspace's).
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)),
    responses((status = 200, body = Template), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn retrieve(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<Template>> {
    if id == SYSTEM_TEMPLATE {
        return Ok(Json(system_template(&state)));
    }
    if let Some(t) = agent_template(&state, &id) {
        return Ok(Json(t));
    }
    let t = crate::templates::find(state.store.as_ref(), &auth.workspace_id, &id).await?;
    Ok(Json(custom_with_build(&state, &t).await?))
}

/// Create a template from an image (version 1), or build it from a Dockerfile: then
/// it answers at once with `status: building` (instances can be made once it is
/// `ready`; follow the build at `/v1/templates/{id}/builds/1/logs?follow=true`). An
/// image is pulled when the first instance needs it.
#[utoipa::path(post, path = "/v1/templates", tag = "templates", request_body = CreateTemplate,
    responses((status = 201, body = Template), (status = 400, body = ErrorBody),
        (status = 409, description = "`name_taken`: the workspace has a template of that name", body = ErrorBody),
        (status = 413, description = "the body (a build's context) is larger than 96 MiB", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the workspace already has 4 builds running or waiting", body = ErrorBody),
        (status = 422, description = "`invalid_template`: parts that contradict each other (a port twice, two default ports, port 3737 without the agent, an empty program, stdin with no program, both `image` and `build`, a Dockerfile without `FROM`, a context that is not a base64 tar, an image named by its ID or one berth built for a template); `details.field` names it", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    auth: Auth,
    ApiJson(body): ApiJson<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    let id = TemplateId::generate();
    // A build's context is decoded and read whole: off the async threads.
    let checked = {
        let id = id.clone();
        tokio::task::spawn_blocking(move || crate::templates::create(body, &id)).await
    };
    let (name, spec, build) = checked.map_err(|e| panicked("checking the template", &e))??;
    let ticket = match &build {
        Some(_) => Some(reserve(&state, &auth)?),
        None => None,
    };
    let now = now_secs();
    let t = TemplateRecord {
        id,
        workspace_id: auth.workspace_id.clone(),
        name,
        version: 1,
        status: if build.is_some() { TemplateStatus::Building } else { TemplateStatus::Ready },
        build: build.as_ref().map(|_| 1),
        spec,
        created_at: now,
        updated_at: now,
    };
    let tag = t.spec.image.clone().unwrap_or_default();
    let dockerfile = build.as_ref().map(|b| b.dockerfile.clone());
    state.store.create_template(&t, dockerfile.as_deref().map(|d| (tag.as_str(), d))).await?;
    match build {
        Some(b) => state.builds.start(
            &state,
            t.id.clone(),
            1,
            b.request(&t.id, &tag, auth.workspace_id.as_str()),
            ticket.expect("reserved with the build"),
        ),
        None => state.settings.templates.set(t.id.as_str(), t.version),
    }
    Ok((StatusCode::CREATED, Json(custom_with_build(&state, &t).await?)))
}

/// Change a template: the result is its next version (with `build`, a version that
/// is built, `status: building`). Instances stay on the version they run until they
/// are updated (`POST /v1/instances/{id}/update`).
#[utoipa::path(patch, path = "/v1/templates/{id}", tag = "templates", params(("id" = String, Path)),
    request_body = UpdateTemplate,
    responses((status = 200, body = Template), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`system_template`: the system template cannot change; `build_in_progress`: its newest version is still building; `template_changed`: another change made a newer version while this one was checked (send it again)", body = ErrorBody),
        (status = 422, description = "`invalid_template`, as for create", body = ErrorBody),
        (status = 429, description = "`rate_limited`: the workspace already has 4 builds running or waiting", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<UpdateTemplate>,
) -> ApiResult<Json<Template>> {
    refuse_system(&id, "changed")?;
    let t = crate::templates::find(state.store.as_ref(), &auth.workspace_id, &id).await?;
    let image_given = body.image.is_some();
    let checked = {
        let (id, spec) = (t.id.clone(), t.spec.clone());
        tokio::task::spawn_blocking(move || crate::templates::update(&id, &spec, body)).await
    };
    let (spec, build) = checked.map_err(|e| panicked("checking the change", &e))??;
    if spec == t.spec && build.is_none() {
        // Nothing changes (an empty body, or the same values): no new version.
        return Ok(Json(custom_with_build(&state, &t).await?));
    }
    if t.status == TemplateStatus::Building {
        // The new version would share an image that does not exist yet.
        return Err(ApiError::Conflict {
            code: "build_in_progress",
            message: format!(
                "version {} of template `{}` is still building; wait for it (GET /v1/templates/{}/builds/{}/logs?follow=true)",
                t.version, t.name, t.id, t.version
            ),
        });
    }
    let ticket = match &build {
        Some(_) => Some(reserve(&state, &auth)?),
        None => None,
    };
    let source = match (&build, image_given) {
        (Some(_), _) => VersionSource::Build,
        (None, true) => VersionSource::Image,
        (None, false) => VersionSource::Same,
    };
    let tag = spec.image.clone().unwrap_or_default();
    let dockerfile = build.as_ref().map(|b| b.dockerfile.clone());
    let added = state.store.add_template_version(
        &t.id,
        t.version,
        &spec,
        source,
        dockerfile.as_deref().map(|d| (tag.as_str(), d)),
    );
    let Some(now) = added.await? else {
        return Err(match state.store.template(Some(&auth.workspace_id), &t.id).await? {
            Some(moved) => ApiError::Conflict {
                code: "template_changed",
                message: format!(
                    "template `{}` changed meanwhile (now version {}); send the change again",
                    t.name, moved.version
                ),
            },
            None => ApiError::NotFound {
                code: "template_not_found",
                message: format!("template `{id}` was deleted meanwhile"),
            },
        });
    };
    match build {
        Some(b) => state.builds.start(
            &state,
            now.id.clone(),
            now.version,
            b.request(&now.id, &tag, auth.workspace_id.as_str()),
            ticket.expect("reserved with the build"),
        ),
        None if now.status == TemplateStatus::Ready => state.settings.templates.set(now.id.as_str(), now.version),
        None => {}
    }
    Ok(Json(custom_with_build(&state, &now).await?))
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
    let shown = custom_with_build(&state, &t).await?;
    let built = state.store.template_builds(&t.id).await?;
    state.builds.cancel(&t.id);
    state.store.delete_template(&t.id).await?;
    state.settings.templates.remove(t.id.as_str());
    // Its built images go, but those its instances still run on (`?force=true`) stay:
    // a stopped or deleted one may need its image to come back (restore, env change).
    let kept: std::collections::HashSet<String> = if users > 0 {
        let all = state.store.all_instances().await?;
        all.into_iter()
            .filter(|r| r.template == t.id.as_str())
            .filter_map(|r| r.template_spec.and_then(|s| s.image))
            .collect()
    } else {
        Default::default()
    };
    for b in built.into_iter().filter(|b| !kept.contains(&b.image)) {
        if let Err(e) = state.runtime.remove_image(&b.image).await {
            tracing::warn!(image = %b.image, error = %e, "could not remove a deleted template's image");
        }
    }
    Ok(Json(shown))
}

fn refuse_system(id: &str, what: &str) -> ApiResult<()> {
    if id == SYSTEM_TEMPLATE || crate::agents::AGENT_NAMES.contains(&id) {
        return Err(ApiError::Conflict {
            code: "system_template",
            message: format!("the system template `{id}` cannot be {what}; create a template of your own"),
        });
    }
    Ok(())
}

/// The builds of a template, oldest first.
#[utoipa::path(get, path = "/v1/templates/{id}/builds", tag = "templates", params(("id" = String, Path)),
    responses((status = 200, body = List<TemplateBuild>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn builds(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<List<TemplateBuild>>> {
    let t = crate::templates::find(state.store.as_ref(), &auth.workspace_id, &id).await?;
    let data = state.store.template_builds(&t.id).await?.iter().map(build_view).collect();
    Ok(Json(List::new(data, None)))
}

async fn find_build(state: &AppState, auth: &Auth, id: &str, version: &str) -> ApiResult<BuildRecord> {
    let t = crate::templates::find(state.store.as_ref(), &auth.workspace_id, id).await?;
    let not_found = || ApiError::NotFound {
        code: "build_not_found",
        message: format!(
            "template `{}` has no build {}: its builds are listed at /v1/templates/{}/builds",
            t.name,
            crate::instances::validate::clip(version),
            t.id
        ),
    };
    let version: u32 = version.parse().map_err(|_| not_found())?;
    state.store.template_build(&t.id, version).await?.ok_or_else(not_found)
}

/// A build of a template (`version`: the version it makes).
#[utoipa::path(get, path = "/v1/templates/{id}/builds/{version}", tag = "templates",
    params(("id" = String, Path), ("version" = u32, Path)),
    responses((status = 200, body = TemplateBuild), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn build(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, version)): Path<(String, String)>,
) -> ApiResult<Json<TemplateBuild>> {
    Ok(Json(build_view(&find_build(&state, &auth, &id, &version).await?)))
}

/// Query of a build's logs.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct BuildLogsQuery {
    /// Stream the output as SSE (`data:` one JSON line per line of output) until the
    /// build ends; a last `event: end` carries `{"status","error"}`.
    pub follow: Option<bool>,
}

/// A build's output: what it printed so far (in progress) or in all (ended).
#[utoipa::path(get, path = "/v1/templates/{id}/builds/{version}/logs", tag = "templates",
    params(("id" = String, Path), ("version" = u32, Path), BuildLogsQuery),
    responses((status = 200, description = "`{status, logs: [...]}`, or SSE with `follow=true`", body = BuildLogs),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn build_logs(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, version)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<BuildLogsQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let b = find_build(&state, &auth, &id, &version).await?;
    let line = |l: BuildLine| BuildLogLine { timestamp: l.timestamp, message: l.message };
    if !q.follow.unwrap_or(false) {
        let logs = match state.builds.live(&b.template_id, b.version) {
            Some(live) => live.since(0),
            // Ended (or cut short by a restart): the stored log.
            None => state.store.template_build(&b.template_id, b.version).await?.map(|b| b.log).unwrap_or_default(),
        };
        let status = b.status.as_str().into();
        return Ok(Json(BuildLogs { status, logs: logs.into_iter().map(line).collect() }).into_response());
    }
    let store = state.store.clone();
    let live = state.builds.live(&b.template_id, b.version);
    let events = async_stream_lines(store, b, live).map(move |item| {
        Ok::<_, std::convert::Infallible>(match item {
            Item::Line(l) => SseEvent::default().data(serde_json::to_string(&line(l)).unwrap_or_default()),
            Item::End(status, error) => SseEvent::default()
                .event("end")
                .data(serde_json::json!({"status": status.as_str(), "error": error}).to_string()),
        })
    });
    let events = events.take_until(auth.revoked.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

enum Item {
    Line(BuildLine),
    End(TemplateStatus, Option<String>),
}

/// A build's lines as they come: the live ones while it runs, then what the store has
/// beyond them, then its outcome.
fn async_stream_lines(
    store: std::sync::Arc<dyn berth_store::Store>,
    b: BuildRecord,
    live: Option<std::sync::Arc<crate::builds::Live>>,
) -> impl futures_util::Stream<Item = Item> + Send {
    struct S {
        store: std::sync::Arc<dyn berth_store::Store>,
        b: BuildRecord,
        live: Option<(std::sync::Arc<crate::builds::Live>, crate::builds::Progress)>,
        sent: usize,
        queue: std::collections::VecDeque<Item>,
        done: bool,
    }
    let live = live.map(|l| {
        let rx = l.subscribe();
        (l, rx)
    });
    let s = S { store, b, live, sent: 0, queue: Default::default(), done: false };
    futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(item) = s.queue.pop_front() {
                return Some((item, s));
            }
            if s.done {
                return None;
            }
            if let Some((live, rx)) = &mut s.live {
                // Marked seen before reading, so a line pushed after the read wakes us.
                let ended = rx.borrow_and_update().1;
                let lines = live.since(s.sent);
                if !lines.is_empty() {
                    s.sent += lines.len();
                    s.queue.extend(lines.into_iter().map(Item::Line));
                    continue;
                }
                if !ended && rx.changed().await.is_ok() {
                    continue;
                }
                // The build ended: the rest (and its outcome) is in the store.
                s.live = None;
            }
            let ended = s.store.template_build(&s.b.template_id, s.b.version).await.ok().flatten();
            let ended = ended.unwrap_or_else(|| s.b.clone());
            s.queue.extend(ended.log.into_iter().skip(s.sent).map(Item::Line));
            s.queue.push_back(Item::End(ended.status, ended.error));
            s.done = true;
        }
    })
}

/// A place for one more build of the workspace, or 429.
fn reserve(state: &AppState, auth: &Auth) -> ApiResult<crate::builds::Ticket> {
    state.builds.reserve(auth.workspace_id.as_str()).ok_or_else(|| ApiError::RateLimited {
        message: format!(
            "this workspace already has {} builds running or waiting; try again when one has ended",
            crate::builds::MAX_PER_WORKSPACE
        ),
        retry_after: 10,
    })
}

fn panicked(what: &str, e: &tokio::task::JoinError) -> ApiError {
    ApiError::Runtime(berth_runtime::RuntimeError::Failed(format!("{what} failed: {e}")))
}
