//! Instances: the create/update bodies and the instance object.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `POST /v1/instances` body. Every field is optional; an empty body works.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstance {
    /// Display name, up to 100 chars.
    #[serde(default)]
    pub name: Option<String>,
    /// Template (default `berth-agent`): its id or name (the newest version), or
    /// `{"id", "version"}` to pin a version.
    #[serde(default)]
    pub template: Option<crate::TemplateChoice>,
    /// Size class: 1, 2, 4 or 8 (default 1).
    #[serde(default)]
    pub size: Option<u32>,
    /// Opaque attribution tag (your end user's id), filterable in list.
    #[serde(default)]
    pub user: Option<String>,
    /// Placement hint; a single Docker host is region `local`.
    #[serde(default)]
    pub region: Option<String>,
    /// Your own string→string pairs; stored, never interpreted.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<serde_json::Value>,
    /// Environment of the instance's processes; values are never echoed back.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub env: Option<serde_json::Value>,
    /// Managed-usage budget.
    #[serde(default, deserialize_with = "crate::object_or_null")]
    pub budget: Option<BudgetInput>,
    /// Always-on or cold-start.
    #[serde(default, deserialize_with = "crate::object_or_null")]
    pub lifecycle: Option<Lifecycle>,
    /// Extra ports the instance's own programs serve (1–65535, not 3737), each
    /// reached at its own URL under an opaque handle, listed in `ports`.
    #[serde(default)]
    #[schema(value_type = Option<Vec<u16>>)]
    pub expose: Option<serde_json::Value>,
    /// Network settings: `egress` (`internet` by default, `none`, or `{"allow": [...]}`),
    /// applied without a restart.
    #[serde(default, deserialize_with = "crate::object_or_null")]
    pub network: Option<NetworkInput>,
    /// CPU and memory in place of the size's, within the operator's bounds (disk and
    /// processes stay the size's). On PATCH it is applied in place; `{}` goes back to
    /// the size's.
    #[serde(default, deserialize_with = "crate::object_or_null")]
    pub resources: Option<ResourcesInput>,
}

/// `PATCH /v1/instances/{id}` body: only given fields change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateInstance {
    #[serde(default)]
    pub name: Option<String>,
    /// Replaces all metadata.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub metadata: Option<serde_json::Value>,
    /// New size class: the instance is resized in place, data kept.
    #[serde(default)]
    pub size: Option<u32>,
    /// Replaces the environment: the container is recreated, data kept.
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub env: Option<serde_json::Value>,
    /// New budget cap.
    #[serde(default, deserialize_with = "crate::object_or_null")]
    pub budget: Option<BudgetInput>,
    /// Replaces the exposed ports; ports kept keep their URL, no restart needed.
    #[serde(default)]
    #[schema(value_type = Option<Vec<u16>>)]
    pub expose: Option<serde_json::Value>,
    /// Network settings: `egress` (`internet` by default, `none`, or `{"allow": [...]}`),
    /// applied without a restart.
    #[serde(default, deserialize_with = "crate::object_or_null")]
    pub network: Option<NetworkInput>,
    /// CPU and memory in place of the size's, within the operator's bounds (disk and
    /// processes stay the size's). On PATCH it is applied in place; `{}` goes back to
    /// the size's.
    #[serde(default, deserialize_with = "crate::object_or_null")]
    pub resources: Option<ResourcesInput>,
}

/// CPU and memory as given on create or update. Fields left out follow the size
/// (`cpu` the size's vCPUs, `memory_mb` its memory) or, for limits, the guarantee.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesInput {
    /// vCPUs guaranteed (its weight when CPUs are contended), a decimal like `"0.5"`
    /// (a JSON number is accepted too); at least 0.05, at most the operator's bound.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = r"^[0-9]{1,3}(\.[0-9]{1,3})?$")]
    pub cpu: Option<serde_json::Value>,
    /// Memory guaranteed (MiB; the kernel reclaims above it first); at least 64.
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// Most vCPUs it may burst to (its quota; default `cpu`), at least `cpu`.
    #[serde(default)]
    #[schema(value_type = Option<String>, pattern = r"^[0-9]{1,3}(\.[0-9]{1,3})?$")]
    pub cpu_limit: Option<serde_json::Value>,
    /// Most memory it may use (MiB, its OOM limit; default `memory_mb`), at least `memory_mb`.
    #[serde(default)]
    pub memory_limit_mb: Option<u64>,
}

/// What an instance gets: its own resources, or its size's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourcesInfo {
    /// vCPUs guaranteed, as a decimal (`"0.5"`).
    pub cpu: String,
    /// MiB guaranteed.
    pub memory_mb: u64,
    /// vCPUs it may use at most (the container's quota, before clamping to the host).
    pub cpu_limit: String,
    /// MiB it may use at most.
    pub memory_limit_mb: u64,
    /// Set by `resources` (false: the size's).
    pub custom: bool,
}

/// Network settings as given on create or update.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkInput {
    /// Where the instance's traffic may go: `"internet"` (the server's default
    /// policy: the public internet only), `"none"` (nothing, not even DNS), or
    /// `{"allow": ["CIDR[:PORT]", ...]}` (only those, plus DNS; IPv6 with a port is
    /// written `[fd00::/8]:443`). `null` or absent: unchanged.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub egress: Option<serde_json::Value>,
}

/// Network settings of an instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Network {
    /// `"internet"`, `"none"` or `{"allow": ["CIDR[:PORT]", ...]}` (canonical spelling:
    /// a bare address is written with its `/32` or `/128`).
    #[schema(value_type = Object)]
    pub egress: serde_json::Value,
}

impl Default for Network {
    /// The server's default policy, `internet` (what an older server's answer means).
    fn default() -> Self {
        Self { egress: serde_json::Value::String("internet".into()) }
    }
}

/// Budget as given on create or update.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetInput {
    /// Hard cap on managed LLM usage in USD.
    #[serde(default)]
    pub managed_cap_usd: Option<f64>,
    /// One-time headroom in micro-USD.
    #[serde(default)]
    pub topup_micros: Option<i64>,
    /// Models the managed LLM proxy serves this instance (an allow-list); absent: every
    /// model the operator prices.
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// Budget as reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Budget {
    /// Cap on managed LLM usage in USD (`null`: no cap of its own).
    pub managed_cap_usd: Option<f64>,
    /// What managed usage has cost so far, in USD.
    pub managed_used_usd: f64,
    /// Cap plus top-ups minus usage, never below 0 (`null`: no cap).
    pub remaining_usd: Option<f64>,
    /// One-time headroom above the cap, in micro-USD.
    #[serde(default)]
    pub topup_micros: i64,
    /// `managed_used_usd` exactly, in micro-USD.
    #[serde(default)]
    pub managed_used_micros: i64,
    /// Models the managed proxy serves this instance (`null`: every priced model).
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// How the instance is kept alive.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Lifecycle {
    /// `always_on` (default) or `cold_start`.
    pub mode: String,
    /// For `cold_start`: stop after this many idle seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self { mode: "always_on".into(), idle_timeout_secs: None }
    }
}

/// Template reference inside an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateRef {
    pub id: String,
    pub version: u32,
}

/// Resources of a size class.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SizeInfo {
    /// The size class (1, 2, 4, 8).
    pub size: u32,
    pub vcpu: u32,
    pub memory_mb: u64,
    pub disk_gb: u64,
    /// CPUs the instance may use now: `vcpu`, clamped to the host's CPUs (they are shared).
    #[serde(default)]
    pub cpu_limit: u32,
}

/// One exposed port of an instance.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Port {
    pub port: u16,
    pub default: bool,
    pub url: String,
}

/// The instance object.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    /// `inst_` + 10 chars; the 10 chars are its URL's DNS label.
    pub id: String,
    /// Always `instance`.
    pub object: String,
    pub name: Option<String>,
    /// `creating`, `running`, `stopping`, `stopped`, `paused`, `error` or `deleted`.
    pub status: String,
    /// Why the instance is in `error`, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    pub template: TemplateRef,
    /// The agents the template installed.
    pub agents: Vec<String>,
    pub size: SizeInfo,
    /// CPU and memory it gets (its own `resources`, or its size's).
    pub resources: ResourcesInfo,
    pub user: Option<String>,
    pub region: String,
    #[schema(value_type = BTreeMap<String, String>)]
    pub metadata: BTreeMap<String, String>,
    /// Keys of the environment; every value is `***`.
    #[schema(value_type = BTreeMap<String, String>)]
    pub env: BTreeMap<String, String>,
    /// URL of the default port (null for private sandboxes).
    pub url: Option<String>,
    pub ports: Vec<Port>,
    pub budget: Budget,
    pub lifecycle: Lifecycle,
    pub update_available: bool,
    /// Times the instance was brought back after dying unexpectedly.
    pub restart_count: u32,
    pub created_at: i64,
    pub updated_at: i64,
    /// When it was deleted (soft), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<i64>,
    /// Kept awake until this time (`POST /v1/instances/{id}/hold`), while a hold is in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_until: Option<i64>,
    /// Network settings (the egress policy).
    #[serde(default)]
    pub network: Network,
}

/// Answer of `DELETE /v1/instances/{id}?purge=true`: the instance and its data are gone.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Purged {
    pub id: String,
    /// Always `instance`.
    pub object: String,
    /// Always true.
    pub deleted: bool,
    /// Always true: nothing is kept.
    pub purged: bool,
}
