//! Persistence of berth's desired state behind the [`Store`] trait.
//!
//! Handlers and the reconciler only see the trait; [`SqlStore`] implements it on
//! SQLite (one server) and on PostgreSQL (one or several replicas, which also
//! coordinate through it: [`coord`]).

pub mod coord;
mod records;
pub mod seal;
mod sql;
pub mod transfer;

pub use records::*;
pub use sql::{redact, Backend, PoolOptions, SqlStore};

use async_trait::async_trait;
use berth_core::{InstanceId, KeyId, ShareId, Status, TemplateId, TemplateSpec, TemplateStatus, WorkspaceId};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The workspace already holds as many instances as it may.
    #[error("workspace instance limit of {limit} reached")]
    LimitExceeded { limit: u32 },
    /// The database could not be reached or refused the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed at start.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A name that must be unique is taken.
    #[error("{0}")]
    Duplicate(String),
    /// The store was asked for something it cannot be (an unknown database URL).
    #[error("{0}")]
    Config(String),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether the database could not be reached in time (down, overloaded, every
    /// connection busy): worth trying again shortly, unlike a refused statement.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_),
            ) => true,
            // PostgreSQL's connection exceptions (08…), insufficient resources (53…:
            // too many connections) and operator intervention (57…: shutting down).
            StoreError::Database(sqlx::Error::Database(e)) => {
                e.code().is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57"))
            }
            _ => false,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Filters of the instance list.
#[derive(Debug, Default, Clone)]
pub struct InstanceFilter {
    pub user: Option<String>,
    pub status: Option<Status>,
    pub template: Option<String>,
}

/// Everything berth keeps durably.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the database is reachable.
    async fn ping(&self) -> Result<()>;
    /// A value of the key/value meta table.
    async fn meta(&self, key: &str) -> Result<Option<String>>;
    /// Sets a meta value unless one exists; returns the value now stored.
    async fn meta_init(&self, key: &str, value: &str) -> Result<String>;

    /// Creates a workspace.
    async fn create_workspace(&self, ws: &WorkspaceRecord) -> Result<()>;
    /// One workspace.
    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<WorkspaceRecord>>;
    /// Every workspace, oldest first.
    async fn workspaces(&self) -> Result<Vec<WorkspaceRecord>>;
    /// Number of workspaces.
    async fn workspace_count(&self) -> Result<i64>;

    /// Stores a key (its hash only).
    async fn create_key(&self, key: &KeyRecord) -> Result<()>;
    /// The key whose secret hashes to `hash`.
    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>>;
    /// A workspace's keys, oldest first.
    async fn keys(&self, ws: &WorkspaceId) -> Result<Vec<KeyRecord>>;
    /// Revokes a key of the workspace; false when there is no such key.
    async fn delete_key(&self, ws: &WorkspaceId, id: &KeyId) -> Result<bool>;

    /// Inserts an instance unless its workspace already holds `limit` live instances.
    async fn insert_instance(&self, rec: &InstanceRecord, limit: u32) -> Result<()>;
    /// Hands the warm pool's instance `pooled` (of workspace `from`) over as `r` (same
    /// id), unless `r`'s workspace already holds `limit` live instances: the pool's row
    /// and audit events are replaced by `r` as a new row, atomically. `Ok(false)`: the
    /// pool no longer holds that instance.
    async fn claim_instance(
        &self,
        pooled: &InstanceId,
        from: &WorkspaceId,
        r: &InstanceRecord,
        limit: u32,
    ) -> Result<bool>;
    /// One instance, scoped to a workspace when given.
    async fn instance(&self, ws: Option<&WorkspaceId>, id: &InstanceId) -> Result<Option<InstanceRecord>>;
    /// A page of a workspace's instances, newest first, older than `before_seq`.
    async fn list_instances(
        &self,
        ws: &WorkspaceId,
        filter: &InstanceFilter,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>>;
    /// Instances of a workspace that count against its limit (all but deleted ones).
    async fn live_instance_count(&self, ws: &WorkspaceId) -> Result<i64>;
    /// Number of instances in each status, across workspaces (for `/metrics`).
    async fn status_counts(&self) -> Result<Vec<(Status, i64)>>;
    /// How many instances of each size hold a container now (creating, running,
    /// paused, stopping), across workspaces, those with resources of their own aside:
    /// what memory admission counts.
    async fn active_sizes(&self) -> Result<Vec<(u32, i64)>>;
    /// The memory limits (MiB) of the instances with resources of their own that hold
    /// a container now.
    async fn active_custom_memory_mb(&self) -> Result<u64>;
    /// Sizes (size, count) of a workspace's instances that hold a home: every one not
    /// yet purged, soft-deleted ones included.
    async fn workspace_sizes(&self, ws: &WorkspaceId) -> Result<Vec<(u32, i64)>>;
    /// Every instance of every workspace (the reconciler's view).
    async fn all_instances(&self) -> Result<Vec<InstanceRecord>>;
    /// Writes back every mutable field of an instance and bumps `updated_at`.
    async fn update_instance(&self, rec: &InstanceRecord) -> Result<()>;
    /// Writes a batch of edge traffic: latest request times and request counts.
    async fn record_traffic(&self, batch: &[TrafficUpdate]) -> Result<()>;
    /// Removes an instance's record for good.
    async fn delete_instance(&self, id: &InstanceId) -> Result<()>;

    /// Appends to an instance's audit trail.
    async fn record_event(&self, ev: &EventRecord) -> Result<()>;
    /// An instance's audit trail, oldest first.
    async fn events(&self, id: &InstanceId, limit: u32) -> Result<Vec<EventRecord>>;

    /// Stores a new share link.
    async fn create_share(&self, share: &ShareRecord) -> Result<()>;
    /// Share links of an instance that are neither revoked nor expired at `now`, newest first.
    async fn active_shares(&self, instance: &InstanceId, now: i64) -> Result<Vec<ShareRecord>>;
    /// Every share link of every instance that is neither revoked nor expired at `now`.
    async fn all_active_shares(&self, now: i64) -> Result<Vec<ShareRecord>>;
    /// Revokes a share link of an instance; false when there is no such active share.
    async fn revoke_share(&self, instance: &InstanceId, id: &ShareId, at: i64) -> Result<bool>;

    /// A workspace's wallet balance (micro-dollars); `None` when there is no such workspace.
    async fn balance(&self, ws: &WorkspaceId) -> Result<Option<i64>>;
    /// Appends to the ledger and moves the wallet (and, for managed usage, the
    /// instance's used amount) by the entry's amount, all in one transaction.
    async fn post_ledger(&self, entry: &LedgerEntry) -> Result<LedgerRecord>;
    /// Like [`Store::post_ledger`] for a charge, but only when the wallet covers it: `None`
    /// (and nothing written) when the balance would fall below zero. With `paid_until`,
    /// the entry's instance records it in the same transaction (compute paid in advance).
    async fn charge_within_balance(&self, entry: &LedgerEntry, paid_until: Option<i64>)
        -> Result<Option<LedgerRecord>>;
    /// A page of a workspace's ledger, newest first, older than `before_seq`.
    async fn ledger(&self, ws: &WorkspaceId, before_seq: Option<i64>, limit: u32) -> Result<Vec<LedgerRecord>>;
    /// A workspace's charges since `since` (unix seconds), per instance, UTC day and kind.
    async fn daily_usage(&self, ws: &WorkspaceId, since: i64) -> Result<Vec<DailyUsage>>;

    /// Stores a new template as its version 1 (with `build`, the image its build tags
    /// and the Dockerfile, a build of it that starts now); [`StoreError::Duplicate`]
    /// when its workspace already has a template of that name.
    async fn create_template(&self, t: &TemplateRecord, build: Option<(&str, &str)>) -> Result<()>;
    /// A template of a workspace (`None`: any workspace), with its newest version.
    async fn template(&self, ws: Option<&WorkspaceId>, id: &TemplateId) -> Result<Option<TemplateRecord>>;
    /// A workspace's template by name.
    async fn template_by_name(&self, ws: &WorkspaceId, name: &str) -> Result<Option<TemplateRecord>>;
    /// Every template of a workspace (`None`: of every workspace), oldest first.
    async fn templates(&self, ws: Option<&WorkspaceId>) -> Result<Vec<TemplateRecord>>;
    /// One version of a template.
    async fn template_version(&self, id: &TemplateId, version: u32) -> Result<Option<TemplateVersion>>;
    /// Adds the next version of a template (its newest from now on), its image from
    /// `source` (a [`VersionSource::Build`] also records the build, from `build`: the
    /// image it tags and the Dockerfile); answers the template as it now is. `None`
    /// when there is no such template, or when its newest version is no longer `base`
    /// (the one the change was made from: another change came first).
    async fn add_template_version(
        &self,
        id: &TemplateId,
        base: u32,
        spec: &TemplateSpec,
        source: VersionSource,
        build: Option<(&str, &str)>,
    ) -> Result<Option<TemplateRecord>>;
    /// Records the end of a build: its version (and every version sharing its image)
    /// becomes `ready` or `failed`, with its log and error. False when there is no such build.
    async fn finish_build(
        &self,
        id: &TemplateId,
        version: u32,
        status: TemplateStatus,
        error: Option<&str>,
        log: &[BuildLine],
    ) -> Result<bool>;
    /// A build (`version` is the version it makes).
    async fn template_build(&self, id: &TemplateId, version: u32) -> Result<Option<BuildRecord>>;
    /// Every build of a template, oldest first, without their logs.
    async fn template_builds(&self, id: &TemplateId) -> Result<Vec<BuildRecord>>;
    /// Marks builds still `building` that started before `started_before` as failed with
    /// `reason` (a server that starts has none running; with replicas, a build older
    /// than the build timeout runs nowhere); answers how many.
    async fn fail_unfinished_builds(&self, started_before: i64, reason: &str) -> Result<u64>;
    /// The newest `ready` version of every template that has one.
    async fn ready_versions(&self) -> Result<Vec<(TemplateId, u32)>>;
    /// Removes a template and its versions (instances keep their copies).
    async fn delete_template(&self, id: &TemplateId) -> Result<bool>;
    /// How many instances not yet purged run some version of a template.
    async fn template_users(&self, template: &str) -> Result<i64>;
}
