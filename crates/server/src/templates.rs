//! Custom templates: what their bodies may say, which version an instance runs, and
//! the newest version of each (kept in memory for `update_available`).
//!
//! A template version is immutable. An instance keeps a copy of the version it runs
//! (`InstanceRecord::template_spec`; `None` is the system template), so its container
//! can always be recreated, even once the template is deleted.

use crate::error::{ApiError, ApiResult};
use crate::instances::validate::{clip, env as check_env, size_of};
use crate::instances::{SYSTEM_TEMPLATE, SYSTEM_TEMPLATE_VERSION};
use berth_api_types::{BuildSource, CreateTemplate, TemplateChoice, TemplatePort, UpdateTemplate};
use berth_core::template::{TemplatePort as CorePort, AGENT_PORT};
use berth_core::{TemplateId, TemplateSpec, TemplateStatus, WorkspaceId};
use berth_store::{InstanceRecord, Store, TemplateRecord};
use std::collections::HashMap;
use std::sync::RwLock;

/// Most ports a template routes.
pub const MAX_PORTS: usize = 16;
/// Longest template name.
pub const MAX_NAME: usize = 63;
/// Most arguments of a command.
pub const MAX_ARGS: usize = 256;

/// The newest ready version of every custom template, so presenting an instance needs
/// no database read to say whether an update is available.
#[derive(Debug, Default)]
pub struct Catalog {
    latest: RwLock<HashMap<String, u32>>,
}

impl Catalog {
    /// Loads every template's newest ready version.
    pub async fn load(store: &dyn Store) -> berth_store::Result<Self> {
        let c = Catalog::default();
        for (id, version) in store.ready_versions().await? {
            c.set(id.as_str(), version);
        }
        Ok(c)
    }

    /// The newest version of a template (the system template's for it).
    pub fn latest(&self, id: &str) -> Option<u32> {
        if id == SYSTEM_TEMPLATE {
            return Some(SYSTEM_TEMPLATE_VERSION);
        }
        self.latest.read().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }

    /// A version of a template is ready: the newest ready one, unless a newer is.
    pub fn set(&self, id: &str, version: u32) {
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        let v = latest.entry(id.to_string()).or_insert(version);
        *v = (*v).max(version);
    }

    /// Reads every template's newest ready version again (another replica changed one).
    pub async fn reload(&self, store: &dyn Store) -> berth_store::Result<()> {
        let fresh: HashMap<String, u32> =
            store.ready_versions().await?.into_iter().map(|(id, v)| (id.as_str().to_string(), v)).collect();
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    pub fn remove(&self, id: &str) {
        self.latest.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}

/// The system template's spec, built once: every presentation, edge-table update and
/// readiness check of a system-template instance reads it.
static SYSTEM_SPEC: std::sync::LazyLock<TemplateSpec> = std::sync::LazyLock::new(TemplateSpec::system);

/// A stored copy of a template version, or the system template's (`None`).
fn or_system(spec: &Option<TemplateSpec>) -> &TemplateSpec {
    spec.as_ref().unwrap_or(&SYSTEM_SPEC)
}

/// The template version an instance runs.
pub fn spec_of(rec: &InstanceRecord) -> &TemplateSpec {
    or_system(&rec.template_spec)
}

/// A template version chosen for an instance.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// `berth-agent` or a `tpl_…` id.
    pub id: String,
    pub version: u32,
    /// `None`: the system template.
    pub spec: Option<TemplateSpec>,
}

impl Resolved {
    pub fn spec(&self) -> &TemplateSpec {
        or_system(&self.spec)
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError::NotFound {
        code: "template_not_found",
        message: format!("no template `{}` in this workspace (system template: {SYSTEM_TEMPLATE})", clip(what)),
    }
}

/// Finds a workspace's template by id or name.
pub async fn find(store: &dyn Store, ws: &WorkspaceId, what: &str) -> ApiResult<TemplateRecord> {
    let found = match TemplateId::parse(what) {
        Some(id) => store.template(Some(ws), &id).await?,
        None => store.template_by_name(ws, what).await?,
    };
    found.ok_or_else(|| not_found(what))
}

/// The version a create body names: the newest unless pinned.
pub async fn resolve(
    store: &dyn Store,
    agents: &crate::agents::SystemAgents,
    ws: &WorkspaceId,
    choice: &TemplateChoice,
) -> ApiResult<Resolved> {
    let (what, version) = match choice {
        TemplateChoice::Newest(id) => (id.as_str(), None),
        TemplateChoice::Pinned(r) => (r.id.as_str(), Some(r.version)),
    };
    if crate::agents::AGENT_NAMES.contains(&what) {
        return agent_template(agents, what, version);
    }
    if what == SYSTEM_TEMPLATE {
        return match version {
            None | Some(SYSTEM_TEMPLATE_VERSION) => {
                Ok(Resolved { id: SYSTEM_TEMPLATE.into(), version: SYSTEM_TEMPLATE_VERSION, spec: None })
            }
            Some(v) => Err(version_not_found(what, v, SYSTEM_TEMPLATE_VERSION)),
        };
    }
    let t = find(store, ws, what).await?;
    version_of(store, &t, version).await
}

/// One version of a template (`None`: the newest that is ready; while a newer one
/// builds, or when its build failed, instances keep being made from the one before).
pub async fn version_of(store: &dyn Store, t: &TemplateRecord, version: Option<u32>) -> ApiResult<Resolved> {
    if version.is_none() && t.status != TemplateStatus::Ready {
        // The few versions before the newest, newest first; none ready: the newest's error.
        for v in (t.version.saturating_sub(32).max(1)..t.version).rev() {
            if let Some(older) = store.template_version(&t.id, v).await? {
                if older.status == TemplateStatus::Ready {
                    return Ok(Resolved { id: t.id.to_string(), version: v, spec: Some(older.spec) });
                }
            }
        }
    }
    let v = version.unwrap_or(t.version);
    let (spec, status) = if v == t.version {
        (t.spec.clone(), t.status)
    } else {
        let found = store.template_version(&t.id, v).await?;
        let found = found.ok_or_else(|| version_not_found(t.id.as_str(), v, t.version))?;
        (found.spec, found.status)
    };
    let logs = format!("/v1/templates/{}/builds/{v}/logs", t.id);
    match status {
        TemplateStatus::Ready => Ok(Resolved { id: t.id.to_string(), version: v, spec: Some(spec) }),
        TemplateStatus::Building => Err(ApiError::Conflict {
            code: "build_not_ready",
            message: format!(
                "version {v} of template `{}` is still building; try again once it is ready (follow {logs}?follow=true)",
                t.name
            ),
        }),
        TemplateStatus::Failed => Err(ApiError::Conflict {
            code: "build_not_ready",
            message: format!(
                "the build of version {v} of template `{}` failed (its log: {logs}); build it again (PATCH with `build`) or pick a ready version",
                t.name
            ),
        }),
    }
}

/// A system agent template (version 1), once its image is built.
fn agent_template(agents: &crate::agents::SystemAgents, name: &str, version: Option<u32>) -> ApiResult<Resolved> {
    let Some(state) = agents.state(name).filter(|_| agents.offers(name)) else {
        return Err(ApiError::NotFound {
            code: "template_not_found",
            message: format!(
                "the agent template `{name}` is not offered by this server (it offers: {}; see --agent-templates)",
                std::iter::once(SYSTEM_TEMPLATE).chain(agents.names().iter().copied()).collect::<Vec<_>>().join(", ")
            ),
        });
    };
    if let Some(v) = version.filter(|v| *v != 1) {
        return Err(version_not_found(name, v, 1));
    }
    match state.status {
        TemplateStatus::Ready => {
            Ok(Resolved { id: name.to_string(), version: 1, spec: Some(crate::agents::SystemAgents::spec(name)) })
        }
        TemplateStatus::Building => Err(ApiError::Conflict {
            code: "build_not_ready",
            message: format!(
                "the image of the agent template `{name}` is still being built (the server builds it at start, a few minutes the first time); try again once GET /v1/templates/{name} says ready"
            ),
        }),
        TemplateStatus::Failed => Err(ApiError::Conflict {
            code: "build_not_ready",
            message: format!(
                "the image of the agent template `{name}` could not be built: {}; a server restart builds it again",
                state.error.unwrap_or_default()
            ),
        }),
    }
}

fn version_not_found(id: &str, v: u32, newest: u32) -> ApiError {
    ApiError::NotFound {
        code: "template_version_not_found",
        message: format!("template `{id}` has no version {v}; its versions are 1 to {newest}"),
    }
}

/// A template name: 1–63 lowercase letters, digits and `-`, not a template id's shape.
fn check_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !ok {
        return Err(ApiError::invalid(
            "name",
            format!("template names are 1–{MAX_NAME} lowercase letters, digits and `-` (`{}` is not)", clip(name)),
        ));
    }
    if name == SYSTEM_TEMPLATE || crate::agents::AGENT_NAMES.contains(&name) || TemplateId::parse(name).is_some() {
        return Err(ApiError::invalid("name", format!("`{name}` is reserved")));
    }
    Ok(())
}

/// An image reference as Docker takes it: no spaces or control characters, ≤ 255 bytes.
fn check_image(image: &str) -> ApiResult<()> {
    let ok = !image.is_empty()
        && image.len() <= 255
        && image.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/:@".contains(&b))
        && !image.starts_with(['-', '.', '/', ':', '@']);
    if !ok {
        return Err(ApiError::invalid(
            "image",
            format!("`{}` is not an image reference (like `python:3.12-slim`)", clip(image)),
        ));
    }
    check_image_owner(image).map_err(|e| invalid("image", e))
}

/// Refuses the references that could reach another workspace's image on the shared
/// daemon: the images berth builds (`berth/tpl_...`, each workspace's own; a template
/// is used by its id, not its image) and images named by their ID (or a prefix of
/// it), which Docker resolves among every image it holds.
fn check_image_owner(image: &str) -> Result<(), String> {
    let name = image.split(['@', ':']).next().unwrap_or_default();
    if image.starts_with(BUILT_PREFIX) {
        return Err(format!(
            "`{}` is an image berth built for a template; use the template itself (its id), or build from the same Dockerfile",
            clip(image)
        ));
    }
    let hex_id = image.strip_prefix("sha256:").unwrap_or(image);
    if image.starts_with("sha256:") || (!name.contains('/') && hex_id.bytes().all(|b| b.is_ascii_hexdigit())) {
        return Err(format!("`{}` names an image by its ID; name it by repository and tag", clip(image)));
    }
    Ok(())
}

/// Where the images berth builds are tagged.
const BUILT_PREFIX: &str = "berth/tpl_";

/// 422: parts of a template body that contradict each other.
fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::Unprocessable { code: "invalid_template", field: field.into(), message: message.into() }
}

fn ports_of(ports: &[TemplatePort], agent: bool) -> ApiResult<Vec<CorePort>> {
    if ports.len() > MAX_PORTS {
        return Err(ApiError::invalid("ports", format!("`ports` lists more than {MAX_PORTS} ports")));
    }
    let mut out: Vec<CorePort> = Vec::with_capacity(ports.len());
    for (i, p) in ports.iter().enumerate() {
        let field = format!("ports[{i}].port");
        if p.port == 0 {
            return Err(ApiError::invalid(&field, format!("`{field}` must be a port number from 1 to 65535")));
        }
        if out.iter().any(|o| o.port == p.port) {
            return Err(invalid(&field, format!("port {} is listed twice", p.port)));
        }
        if p.port == AGENT_PORT && !agent {
            return Err(invalid(&field, format!("port {AGENT_PORT} is berth-agent's; this template has none")));
        }
        out.push(CorePort { port: p.port, default: p.default });
    }
    if out.iter().filter(|p| p.default).count() > 1 {
        return Err(invalid("ports", "at most one port is `default` (served at the instance's own URL)"));
    }
    Ok(out)
}

fn command_of(command: Vec<String>) -> ApiResult<Option<Vec<String>>> {
    if command.is_empty() {
        return Ok(None);
    }
    if command.len() > MAX_ARGS || command.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid(
            "command",
            format!("`command` is an argv list of at most {MAX_ARGS} strings, no NUL"),
        ));
    }
    if command[0].is_empty() {
        return Err(invalid("command[0]", "the program (`command[0]`) is empty"));
    }
    Ok(Some(command))
}

fn health_path_of(path: String) -> ApiResult<Option<String>> {
    if path.is_empty() {
        return Ok(None);
    }
    if !path.starts_with('/') || path.len() > 1024 || path.chars().any(|c| c.is_control() || c == ' ') {
        return Err(ApiError::invalid("health_path", "`health_path` is a URL path starting with `/`, like `/healthz`"));
    }
    Ok(Some(path))
}

fn env_of(env: &std::collections::BTreeMap<String, String>) -> ApiResult<std::collections::BTreeMap<String, String>> {
    let value = serde_json::to_value(env).unwrap_or_default();
    Ok(check_env(Some(&value))?.unwrap_or_default())
}

fn agents_of(agents: Vec<String>) -> ApiResult<Vec<String>> {
    if agents.len() > 16
        || agents.iter().any(|a| a.is_empty() || a.chars().count() > 64 || a.chars().any(char::is_control))
    {
        return Err(ApiError::invalid("agents", "`agents` lists at most 16 names of 1–64 characters"));
    }
    Ok(agents)
}

/// A stdin template needs a program that reads standard input: its `command`, or
/// (without the agent) the image's own.
fn check_stdin(spec: &TemplateSpec) -> ApiResult<()> {
    if spec.stdin && spec.agent && spec.command.is_none() {
        return Err(invalid(
            "command",
            "a stdin template with the agent needs a `command`: the interactive program its input goes to",
        ));
    }
    Ok(())
}

/// A Dockerfile build as a request checked it: the Dockerfile and the context (tar).
#[derive(Debug, Clone)]
pub struct BuildInput {
    pub dockerfile: String,
    pub context: Vec<u8>,
}

impl BuildInput {
    /// What the runtime builds: the image `tag` of a template's version.
    /// `workspace` scopes the builder's cache.
    pub fn request(self, template: &TemplateId, tag: &str, workspace: &str) -> berth_runtime::build::BuildRequest {
        berth_runtime::build::BuildRequest {
            tag: tag.to_string(),
            dockerfile: self.dockerfile,
            context: self.context,
            labels: HashMap::from([("berth.template".to_string(), template.to_string())]),
            scope: workspace.to_string(),
        }
    }
}

/// Checks a build body: a Dockerfile starting with `FROM`, a base64 tar (or tar.gz).
fn build_of(source: BuildSource) -> ApiResult<BuildInput> {
    berth_runtime::build::check_dockerfile(&source.dockerfile).map_err(|e| invalid("build.dockerfile", e))?;
    let images = berth_runtime::build::image_refs(&source.dockerfile).map_err(|e| invalid("build.dockerfile", e))?;
    for image in images {
        check_image_owner(&image).map_err(|e| invalid("build.dockerfile", e))?;
    }
    let context = match source.context.as_deref().map(str::trim) {
        None | Some("") => Vec::new(),
        Some(text) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| {
                invalid("build.context", format!("`build.context` is not base64 ({e}): encode a tar or tar.gz"))
            })?;
            berth_runtime::build::check_context(&bytes).map_err(|e| invalid("build.context", e))?;
            bytes
        }
    };
    Ok(BuildInput { dockerfile: source.dockerfile, context })
}

/// The image a build of a template tags: under berth's own name, unique per build.
pub fn build_tag(id: &TemplateId) -> String {
    debug_assert!(format!("berth/{id}").starts_with(BUILT_PREFIX));
    format!("berth/{id}:build-{}", berth_core::ids::random_label(10))
}

/// Fills what an agent template leaves out: the agent's port as the default port when
/// no port is given, and the agent in `agents`.
fn complete(mut spec: TemplateSpec, ports_given: bool) -> TemplateSpec {
    if spec.agent && !ports_given && spec.ports.is_empty() {
        spec.ports = vec![CorePort { port: AGENT_PORT, default: true }];
    }
    if spec.agent && spec.agents.is_empty() {
        spec.agents = vec!["berth-agent".into()];
    }
    spec
}

/// Checks a create body of template `id`: its name, its first version and, for a
/// template built from a Dockerfile, the build (the version's image is the build's tag).
pub fn create(body: CreateTemplate, id: &TemplateId) -> ApiResult<(String, TemplateSpec, Option<BuildInput>)> {
    check_name(&body.name)?;
    let (image, build) = match (body.image, body.build) {
        (Some(_), Some(_)) => return Err(invalid("build", "give `image` or `build`, not both")),
        (None, None) => {
            return Err(ApiError::invalid(
                "image",
                "`image` (an OCI image reference) or `build` (a Dockerfile) is required",
            ))
        }
        (Some(image), None) => {
            check_image(&image)?;
            (image, None)
        }
        (None, Some(source)) => (build_tag(id), Some(build_of(source)?)),
    };
    let agent = body.agent.unwrap_or(true);
    let ports_given = body.ports.is_some();
    let spec = TemplateSpec {
        image: Some(image),
        ports: ports_of(&body.ports.unwrap_or_default(), agent)?,
        command: command_of(body.command.unwrap_or_default())?,
        env: env_of(&body.env.unwrap_or_default())?,
        health_path: health_path_of(body.health_path.unwrap_or_default())?,
        stdin: body.stdin.unwrap_or(false),
        agent,
        agents: agents_of(body.agents.unwrap_or_default())?,
        default_size: size_of(body.default_size.unwrap_or(1))?.size,
    };
    let spec = complete(spec, ports_given);
    check_stdin(&spec)?;
    Ok((body.name, spec, build))
}

/// The next version of template `id`: its newest with the body's fields replaced (and,
/// with `build`, the image of a build that starts).
pub fn update(
    id: &TemplateId,
    old: &TemplateSpec,
    body: UpdateTemplate,
) -> ApiResult<(TemplateSpec, Option<BuildInput>)> {
    let mut spec = old.clone();
    let mut build = None;
    match (body.image, body.build) {
        (Some(_), Some(_)) => return Err(invalid("build", "give `image` or `build`, not both")),
        (Some(image), None) => {
            check_image(&image)?;
            spec.image = Some(image);
        }
        (None, Some(source)) => {
            build = Some(build_of(source)?);
            spec.image = Some(build_tag(id));
        }
        (None, None) => {}
    }
    if let Some(stdin) = body.stdin {
        spec.stdin = stdin;
    }
    if let Some(agent) = body.agent {
        spec.agent = agent;
    }
    let ports_given = body.ports.is_some();
    match body.ports {
        Some(p) => spec.ports = ports_of(&p, spec.agent)?,
        None if !spec.agent => {
            // The agent's port goes with the agent.
            spec.ports.retain(|p| p.port != AGENT_PORT);
        }
        None => {}
    }
    if let Some(c) = body.command {
        spec.command = command_of(c)?;
    }
    if let Some(e) = body.env {
        spec.env = env_of(&e)?;
    }
    if let Some(h) = body.health_path {
        spec.health_path = health_path_of(h)?;
    }
    if let Some(a) = body.agents {
        spec.agents = agents_of(a)?;
    } else if !spec.agent {
        spec.agents.retain(|a| a != "berth-agent");
    }
    if let Some(s) = body.default_size {
        spec.default_size = size_of(s)?.size;
    }
    let spec = complete(spec, ports_given);
    check_stdin(&spec)?;
    Ok((spec, build))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: serde_json::Value) -> CreateTemplate {
        serde_json::from_value(v).unwrap()
    }

    fn create(body: CreateTemplate) -> ApiResult<(String, TemplateSpec, Option<BuildInput>)> {
        super::create(body, &TemplateId::generate())
    }

    #[test]
    fn an_agent_template_defaults_to_the_agents_port_and_a_sandbox_has_none() {
        let (name, s, _) = create(body(serde_json::json!({"name": "py", "image": "python:3.12"}))).unwrap();
        assert_eq!(name, "py");
        assert_eq!(s.default_port(), Some(AGENT_PORT));
        assert_eq!(s.agents, vec!["berth-agent"]);
        let (_, s, _) = create(body(serde_json::json!({"name": "box", "image": "busybox", "agent": false}))).unwrap();
        assert!(s.ports.is_empty() && s.agents.is_empty());
        let (_, s, _) = create(body(serde_json::json!({"name": "box", "image": "x", "ports": []}))).unwrap();
        assert!(s.ports.is_empty(), "an agent template may be a private sandbox too");
    }

    #[test]
    fn bad_bodies_name_their_field() {
        for (v, field) in [
            (serde_json::json!({"name": "Py", "image": "x"}), "name"),
            (serde_json::json!({"name": "berth-agent", "image": "x"}), "name"),
            (serde_json::json!({"name": "a"}), "image"),
            (serde_json::json!({"name": "a", "image": "x y"}), "image"),
            (serde_json::json!({"name": "a"}), "image"),
            (serde_json::json!({"name": "a", "image": "x", "command": ["a\u{0}"]}), "command"),
            (serde_json::json!({"name": "a", "image": "x", "health_path": "healthz"}), "health_path"),
            (serde_json::json!({"name": "a", "image": "x", "env": {"1X": "v"}}), "env.1X"),
            (serde_json::json!({"name": "a", "image": "x", "default_size": 3}), "size"),
        ] {
            let err = create(body(v.clone())).unwrap_err();
            match err {
                ApiError::InvalidRequest { field: Some(f), .. } => assert_eq!(f, field, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
        // Parts that contradict each other (a schema cannot say so): 422.
        for (v, field) in [
            (
                json!({"name": "a", "image": "x", "ports": [{"port": 80, "default": true}, {"port": 81, "default": true}]}),
                "ports",
            ),
            (json!({"name": "a", "image": "x", "ports": [{"port": 80}, {"port": 80}]}), "ports[1].port"),
            (json!({"name": "a", "image": "x", "agent": false, "ports": [{"port": 3737}]}), "ports[0].port"),
            (json!({"name": "a", "image": "x", "command": [""]}), "command[0]"),
            (json!({"name": "a", "image": "x", "stdin": true}), "command"),
            (json!({"name": "a", "image": "x", "build": {"dockerfile": "FROM x"}}), "build"),
            (json!({"name": "a", "build": {"dockerfile": "RUN true"}}), "build.dockerfile"),
            (json!({"name": "a", "build": {"dockerfile": "FROM x", "context": "@@"}}), "build.context"),
            (json!({"name": "a", "build": {"dockerfile": "FROM x", "context": "bm90IGEgdGFy"}}), "build.context"),
            // What could reach another workspace's image on the shared daemon.
            (json!({"name": "a", "image": "berth/tpl_0a1b2c3d4e5f:build-abc"}), "image"),
            (json!({"name": "a", "image": "3f4a1b"}), "image"),
            (json!({"name": "a", "image": "sha256:3f4a1b"}), "image"),
            (json!({"name": "a", "build": {"dockerfile": "FROM berth/tpl_x:build-y"}}), "build.dockerfile"),
            (json!({"name": "a", "build": {"dockerfile": "ARG B=berth/tpl_x:y\nFROM ${B}"}}), "build.dockerfile"),
            (json!({"name": "a", "build": {"dockerfile": "FROM x\nCOPY --from=3f4a1b / /"}}), "build.dockerfile"),
            (json!({"name": "a", "build": {"dockerfile": "FROM $UNSET"}}), "build.dockerfile"),
        ] {
            match create(body(v.clone())).unwrap_err() {
                ApiError::Unprocessable { code: "invalid_template", field: f, .. } => assert_eq!(f, field, "{v}"),
                other => panic!("{v}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_patch_replaces_what_it_names_and_the_agents_port_goes_with_the_agent() {
        let (_, v1, _) = create(body(serde_json::json!({"name": "a", "image": "x:1", "env": {"A": "1"}}))).unwrap();
        let id = TemplateId::generate();
        let (v2, _) = update(&id, &v1, serde_json::from_value(serde_json::json!({"image": "x:2"})).unwrap()).unwrap();
        assert_eq!((v2.image.as_deref(), v2.env.get("A").map(String::as_str)), (Some("x:2"), Some("1")));
        let (v3, _) = update(&id, &v2, serde_json::from_value(serde_json::json!({"agent": false})).unwrap()).unwrap();
        assert!(v3.ports.is_empty() && v3.agents.is_empty() && !v3.agent);
    }

    #[test]
    fn a_build_tags_an_image_of_berths_own_per_build() {
        let id = TemplateId::generate();
        let (_, v1, build) =
            super::create(body(json!({"name": "b", "build": {"dockerfile": "FROM busybox\n"}})), &id).unwrap();
        let tag = v1.image.clone().unwrap();
        assert!(tag.starts_with(&format!("berth/{id}:build-")), "{tag}");
        assert!(build.unwrap().context.is_empty());
        let (v2, build) =
            update(&id, &v1, serde_json::from_value(json!({"build": {"dockerfile": "FROM busybox\n"}})).unwrap())
                .unwrap();
        assert!(build.is_some() && v2.image != v1.image, "each build tags an image of its own");
        let (v3, build) = update(&id, &v2, serde_json::from_value(json!({"env": {"A": "1"}})).unwrap()).unwrap();
        assert!(build.is_none() && v3.image == v2.image, "a change without a build keeps the image");
    }
}
