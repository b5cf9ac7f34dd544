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
    /// `ready` (image templates are ready at once).
    pub status: String,
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
    /// 1–63 chars: lowercase letters, digits, `-`; unique in the workspace.
    pub name: String,
    /// Any OCI image reference; pulled at the first instance when not present.
    #[serde(default)]
    pub image: Option<String>,
    /// Dockerfile builds are not in this build: give `image`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub build: Option<serde_json::Value>,
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
    /// An interactive main program fed through `POST /v1/instances/{id}/stdin`; not in
    /// this build (only `false`).
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

/// `PATCH /v1/templates/{id}` body: any of the create fields but `name` and `build`;
/// the result is a new version.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTemplate {
    #[serde(default)]
    pub image: Option<String>,
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
