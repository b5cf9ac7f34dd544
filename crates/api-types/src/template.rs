//! Templates: what instances are built from, and the bodies that make them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A template port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplatePort {
    /// 1–65535.
    pub port: u16,
    /// Served at the instance's own URL (at most one port); the others get URLs of
    /// their own under opaque handles.
    #[serde(default)]
    pub default: bool,
}

/// Which template an instance is created from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TemplateChoice {
    /// A template id (`berth-agent`, `tpl_…`) or the name of one of the workspace's
    /// templates: its newest version.
    Newest(String),
    /// One version of a template.
    Pinned(crate::TemplateRef),
}

/// What instances are built from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    pub id: String,
    /// Always `template`.
    pub object: String,
    pub name: String,
    /// Newest version; instances on an older one show `update_available`.
    pub version: u32,
    /// Of the newest version: `ready` (an image template at once, a built one once its
    /// build succeeded), `building`, or `failed` (its build failed: see `build.error`
    /// and the build's log).
    pub status: String,
    /// The build that made the newest version's image (`null`: an image template).
    pub build: Option<TemplateBuild>,
    /// While the image is being pulled (an instance needs it and the Docker host does
    /// not have it yet): how far the pull got. `null` otherwise.
    pub pull: Option<TemplatePull>,
    /// The image instances run.
    pub image: String,
    /// Routed ports; empty: a private sandbox (no URL, driven by exec).
    pub ports: Vec<TemplatePort>,
    /// The main program (`null`: the agent alone, or the image's own command).
    pub command: Option<Vec<String>>,
    /// Keys of the template's environment; every value is `***`.
    #[schema(value_type = BTreeMap<String, String>)]
    pub env: BTreeMap<String, String>,
    /// HTTP path that answers 2xx on the default port once an instance is ready.
    pub health_path: Option<String>,
    /// berth-agent is injected (its Responses API on port 3737).
    pub agent: bool,
    /// The main program reads standard input: `POST /v1/instances/{id}/stdin`.
    pub stdin: bool,
    /// The agents the template installs.
    pub agents: Vec<String>,
    /// Size of instances created without one.
    pub default_size: u32,
    /// Provided by berth itself (cannot be changed or deleted).
    pub system: bool,
    /// Unix seconds (null for system templates).
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

/// `POST /v1/templates` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplate {
    /// 1–63 chars: lowercase letters, digits, `-`; unique in the workspace; not a
    /// system template's name (`berth-agent`, `hermes`, `claude-code`, `codex`,
    /// `openclaw`, `all`).
    pub name: String,
    /// Any OCI image reference; pulled at the first instance when not present.
    #[serde(default)]
    pub image: Option<String>,
    /// Build the image from a Dockerfile instead (give `image` or `build`, not both).
    /// The template answers at once with `status: building`; follow
    /// `GET /v1/templates/{id}/builds/{version}/logs?follow=true`.
    #[serde(default)]
    pub build: Option<BuildSource>,
    /// Routed ports (default: `[{"port": 3737, "default": true}]` with the agent, none without).
    #[serde(default)]
    pub ports: Option<Vec<TemplatePort>>,
    /// The main program, as argv.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Environment of every instance (an instance's own `env` wins).
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub env: Option<BTreeMap<String, String>>,
    /// HTTP path answering 2xx on the default port once ready (starts with `/`).
    #[serde(default)]
    pub health_path: Option<String>,
    /// The main program is interactive: it reads standard input, written through
    /// `POST /v1/instances/{id}/stdin` (a `command` is required).
    #[serde(default)]
    pub stdin: Option<bool>,
    /// Inject berth-agent (default true).
    #[serde(default)]
    pub agent: Option<bool>,
    /// Agents it offers (default `["berth-agent"]` with the agent).
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    /// Size of instances created without one (1, 2, 4 or 8; default 1).
    #[serde(default)]
    pub default_size: Option<u32>,
}

/// `PATCH /v1/templates/{id}` body: any of the create fields but `name`; the result is
/// a new version (with `build`, a version that is built: `status: building`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub build: Option<BuildSource>,
    #[serde(default)]
    pub ports: Option<Vec<TemplatePort>>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub health_path: Option<String>,
    #[serde(default)]
    pub stdin: Option<bool>,
    #[serde(default)]
    pub agent: Option<bool>,
    #[serde(default)]
    pub agents: Option<Vec<String>>,
    #[serde(default)]
    pub default_size: Option<u32>,
}

/// `POST /v1/instances/{id}/update` body (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTo {
    /// The version to move to (default: the newest); an older one rolls back.
    #[serde(default)]
    pub version: Option<u32>,
}

/// A Dockerfile and its context.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildSource {
    /// The Dockerfile's text (its first instruction `FROM`, after any `ARG`).
    pub dockerfile: String,
    /// The files `COPY`/`ADD` read: a tar archive, gzip-compressed or not, base64-encoded
    /// (at most 256 MiB unpacked; nothing under `.berth/`). Default: none.
    #[serde(default)]
    pub context: Option<String>,
}

/// An image pull in progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplatePull {
    /// Always `pulling`.
    pub status: String,
    pub image: String,
    /// Bytes downloaded so far, of `total_bytes` (of the layers known so far).
    pub current_bytes: u64,
    pub total_bytes: u64,
    /// Layers in place (downloaded and unpacked, or already on the host), of `layers_total`.
    pub layers_done: u32,
    pub layers_total: u32,
    /// Unix seconds.
    pub started_at: i64,
}

/// A build of a template version from a Dockerfile.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TemplateBuild {
    /// Always `template.build`.
    pub object: String,
    pub template_id: String,
    /// The version it makes (its number in `/builds/{version}`).
    pub version: u32,
    /// `building`, `ready` or `failed`.
    pub status: String,
    /// The image it tags.
    pub image: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix seconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

/// A build's output: `GET /v1/templates/{id}/builds/{version}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BuildLogs {
    /// `building`, `ready` or `failed`.
    pub status: String,
    pub logs: Vec<BuildLogLine>,
}

/// A line of a build's output.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BuildLogLine {
    /// RFC 3339.
    pub timestamp: String,
    pub message: String,
}
