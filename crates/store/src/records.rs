//! Rows as the rest of berth sees them.

use berth_core::{InstanceId, KeyId, ShareId, Status, WorkspaceId};
use std::collections::BTreeMap;

/// A tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceRecord {
    pub id: WorkspaceId,
    pub name: String,
    pub instance_limit: u32,
    pub created_at: i64,
}

/// An API key; only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub id: KeyId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    pub prefix: String,
    pub hash: String,
    pub admin: bool,
    pub created_at: i64,
    /// When the key stops working (unix seconds); `None`: never.
    pub expires_at: Option<i64>,
    /// The one instance an instance key is for; `None`: the whole workspace.
    pub instance_id: Option<InstanceId>,
}

/// The desired and observed state of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// Insertion order; newest-first listing and cursors use it.
    pub seq: i64,
    pub id: InstanceId,
    pub workspace_id: WorkspaceId,
    pub name: Option<String>,
    pub template: String,
    pub template_version: u32,
    /// The copy of the template version it runs; `None`: the system template.
    pub template_spec: Option<berth_core::TemplateSpec>,
    pub size: u32,
    /// CPU and memory in place of the size's; `None`: the size's.
    pub resources: Option<berth_core::Resources>,
    pub user: Option<String>,
    pub region: String,
    pub metadata: BTreeMap<String, String>,
    /// Plain values: needed to (re)create the container; never sent to clients.
    pub env: BTreeMap<String, String>,
    /// Cap on managed LLM usage (micro-dollars); `None`: no cap of its own.
    pub budget_cap_micros: Option<i64>,
    /// One-time headroom above the cap (micro-dollars).
    pub topup_micros: i64,
    /// Models the managed proxy serves it; `None`: every priced model.
    pub budget_models: Option<Vec<String>>,
    /// What its managed usage has cost so far (micro-dollars). Written only by
    /// [`crate::Store::post_ledger`], never by `update_instance`.
    pub managed_used_micros: i64,
    pub lifecycle_mode: String,
    pub idle_timeout_secs: Option<u64>,
    /// The status clients see; for resting states it is also the desired state.
    pub status: Status,
    pub status_reason: Option<String>,
    pub restart_count: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub deleted_at: Option<i64>,
    /// Token the edge presents to the instance's agent; never shown to clients.
    pub gateway_token: Option<String>,
    /// When the instance last served a request through the edge.
    pub last_request_at: Option<i64>,
    /// Extra ports its programs serve, each routed under its own opaque handle.
    pub exposed: Vec<ExposedPort>,
    /// Stopped by the reconciler for idleness (a request wakes it).
    pub idle_stopped: bool,
    /// Kept awake until this time (unix seconds), whatever its activity.
    pub hold_until: Option<i64>,
    /// Requests served through the edge (as of the last batch written).
    pub requests_total: u64,
    /// Its container was made for the warm pool, before the instance was claimed: the
    /// container's environment is the pool's, the agent takes the record's by a claim
    /// call after every start, and execs are given it. False once the container is
    /// made again from the record.
    pub pooled: bool,
    /// Where its traffic may go.
    pub egress: berth_core::Egress,
    /// End of the period its compute is paid for (`--billing` with a size price).
    pub paid_until: Option<i64>,
}

/// A port an instance's own programs serve, reached at `http://{handle}.{domain}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExposedPort {
    pub port: u16,
    /// Random DNS label, not derivable from the instance id.
    pub handle: String,
}

/// A share link: a signed, expiring URL that lets a browser reach one port.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareRecord {
    pub id: ShareId,
    pub instance_id: InstanceId,
    pub workspace_id: WorkspaceId,
    pub port: u16,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// `key:<id>` of the creator.
    pub created_by: String,
}

/// Edge traffic of one instance, written in batches.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficUpdate {
    pub id: InstanceId,
    /// Latest request (unix seconds).
    pub last_request_at: i64,
    /// Requests since the previous batch.
    pub requests: u64,
}

/// One entry of an instance's audit trail.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub instance_id: InstanceId,
    pub at: i64,
    pub from: Option<Status>,
    pub to: Status,
    /// `key:<id>` or `reconciler`.
    pub actor: String,
    pub reason: Option<String>,
}

/// One movement of a workspace's money, as written by [`crate::Store::post_ledger`].
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub workspace_id: WorkspaceId,
    /// The instance it is for (managed usage, compute); `None` for wallet top-ups.
    pub instance_id: Option<InstanceId>,
    /// `topup`, `managed_usage`, `tool_usage`, `compute` or `refund`.
    pub kind: String,
    /// Signed micro-dollars: credits positive, charges negative.
    pub amount_micros: i64,
    pub description: String,
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
}

impl LedgerEntry {
    /// An entry with no model or tokens (top-ups, compute, refunds).
    pub fn plain(
        workspace_id: WorkspaceId,
        instance_id: Option<InstanceId>,
        kind: &str,
        amount_micros: i64,
        description: impl Into<String>,
    ) -> Self {
        LedgerEntry {
            workspace_id,
            instance_id,
            kind: kind.into(),
            amount_micros,
            description: description.into(),
            model: None,
            input_tokens: None,
            output_tokens: None,
        }
    }

    /// Whether the entry counts toward its instance's managed usage (its cap).
    pub fn counts_as_managed(&self) -> bool {
        matches!(self.kind.as_str(), "managed_usage" | "tool_usage")
    }
}

/// A row of the append-only ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRecord {
    pub seq: i64,
    pub id: String,
    pub entry: LedgerEntry,
    /// The wallet's balance right after this entry.
    pub balance_micros: i64,
    pub created_at: i64,
}

/// Charges of one kind to one instance on one day (UTC), for usage reports.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyUsage {
    pub instance_id: Option<InstanceId>,
    /// Unix seconds of the day's start (UTC).
    pub day: i64,
    pub kind: String,
    /// Micro-dollars charged (positive).
    pub micros: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub calls: i64,
}

/// A custom template of a workspace, with its newest version.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRecord {
    pub id: berth_core::TemplateId,
    pub workspace_id: WorkspaceId,
    pub name: String,
    /// The newest version (versions count from 1).
    pub version: u32,
    /// The newest version's spec.
    pub spec: berth_core::TemplateSpec,
    /// The newest version's status.
    pub status: berth_core::TemplateStatus,
    /// The version whose build made the newest version's image (`None`: an image).
    pub build: Option<u32>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One version of a template.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateVersion {
    pub version: u32,
    pub spec: berth_core::TemplateSpec,
    pub status: berth_core::TemplateStatus,
    /// The version whose build made its image (`None`: an image).
    pub build: Option<u32>,
}

/// Where a new template version's image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSource {
    /// An image reference: ready at once.
    Image,
    /// A build that starts now (its own row in the builds, `building`).
    Build,
    /// The image of the version before, with its status and build.
    Same,
}

/// A line of a build's output.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildLine {
    /// RFC 3339.
    pub timestamp: String,
    pub message: String,
}

/// A Dockerfile build of a template version.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildRecord {
    pub template_id: berth_core::TemplateId,
    /// The version it makes.
    pub version: u32,
    /// The image it tags.
    pub image: String,
    pub dockerfile: String,
    /// `building`, `ready` or `failed` (the version's status).
    pub status: berth_core::TemplateStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Its output, once it has ended (a build in progress keeps its lines in memory).
    pub log: Vec<BuildLine>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}
