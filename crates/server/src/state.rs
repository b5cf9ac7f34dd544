//! [`AppState`]: what every handler and the reconciler share.

use crate::activity::Activity;
use crate::edge::share::Shares;
use crate::edge::EdgeRoutes;
use crate::key_cache::KeyCache;
use crate::locks::InstanceLocks;
use crate::metrics::Metrics;
use berth_runtime::Runtime;
use berth_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Disk usage (MiB) of instances, with when it was measured.
pub type DiskUsageCache =
    std::sync::Mutex<std::collections::HashMap<berth_core::InstanceId, (std::time::Instant, f64)>>;

/// What `/health` last saw of each instance's container, with when.
pub type InspectCache = std::sync::Mutex<
    std::collections::HashMap<berth_core::InstanceId, (std::time::Instant, berth_runtime::ContainerState)>,
>;

/// Settings handlers need at request time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The database (PostgreSQL: possibly shared with other replicas).
    pub database: berth_store::Backend,
    /// Domain of instance URLs.
    pub domain: String,
    /// Port of the edge, for instance URLs.
    pub edge_port: u16,
    /// Default most live instances of a new workspace.
    pub instance_limit: u32,
    /// How long a deleted instance's data is kept.
    pub retention_secs: i64,
    /// Disk (GiB) a workspace's instances may hold, soft-deleted ones included
    /// (`None`: its instance limit × the largest size's disk).
    pub workspace_disk_gb: Option<u64>,
    /// How long create/start wait for the agent.
    pub start_timeout: Duration,
    /// Image of the system template.
    pub base_image: String,
    /// Instance URLs are `https://` (TLS is configured on the edge).
    pub tls: bool,
    /// Shortest `idle_timeout_secs` a `cold_start` instance may ask for.
    pub min_idle_timeout_secs: u64,
    /// CPUs of the host: CPU limits are clamped to them.
    pub host_cpus: u32,
    /// Longest a hosting API request may take (exec, logs and shell bound themselves).
    pub request_timeout: Duration,
    /// Upper bounds of an instance's own `resources`.
    pub resource_bounds: crate::instances::validate::ResourceBounds,
    /// The newest version of every template (for `update_available`).
    pub templates: Arc<crate::templates::Catalog>,
}

/// Shared state of the server.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    /// The server's secret key: gateway tokens are derived from it (the store seals
    /// `env` with it too).
    pub seal: berth_store::seal::SealKey,
    pub runtime: Arc<dyn Runtime>,
    pub locks: Arc<InstanceLocks>,
    /// Whether this replica runs the reconciler, the warm pool and compute renewals
    /// (always, on SQLite).
    pub leader: crate::db::Leader,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    /// Client for probing agents' `/health`.
    pub http: reqwest::Client,
    /// Verified API keys (both listeners authenticate through it).
    pub keys: Arc<KeyCache>,
    /// The edge's routing table, kept current by every lifecycle operation.
    pub routes: Arc<EdgeRoutes>,
    /// What keeps instances awake.
    pub activity: Arc<Activity>,
    /// Live share links.
    pub shares: Arc<Shares>,
    /// Fair shares: caps on concurrent execs, shells, follows, edge streams; key rates.
    pub quotas: Arc<crate::quotas::Quotas>,
    /// KiB of command output all collecting execs may hold in memory together.
    pub exec_buffer: Arc<tokio::sync::Semaphore>,
    /// Disk usage last measured per instance (measuring runs a command in it).
    pub disk_usage: Arc<DiskUsageCache>,
    /// Container state seen by `/health`, reused for a second (polling clients).
    pub health_inspect: Arc<InspectCache>,
    /// Turns of `POST /v1/instances/{id}/stdin` (one write and its reply at a time).
    pub stdin_turns: Arc<InstanceLocks>,
    /// Template builds in progress: their live logs, and the slots they wait for.
    pub builds: Arc<crate::builds::Builds>,
    /// The system agent templates offered (`claude-code`) and their images' builds.
    pub agents: Arc<crate::agents::SystemAgents>,
    /// Room on the host for instances' memory.
    pub admission: Arc<crate::admission::Admission>,
    /// The instances' egress firewall (`None` where the runtime has no host interface).
    pub egress: Option<Arc<crate::firewall::Firewall>>,
    /// Notifications to the operator (a wallet falling low).
    pub webhooks: Arc<crate::webhook::Webhooks>,
    /// Compute prices and the clock they are charged by.
    pub compute: Arc<crate::compute::Compute>,
    /// The managed LLM proxy, as instances are told of it (`None`: no upstream configured).
    pub llm: Option<Arc<crate::llm::ManagedLlm>>,
    /// The managed LLM proxy's meter and settings (`None`: no upstream configured).
    pub llm_proxy: Option<Arc<crate::llm::LlmProxy>>,
    /// The warm pool (`None`: no `--warm-pool`).
    pub pool: Option<Arc<crate::pool::WarmPool>>,
    /// Last time (unix seconds) each instance's agent answered a probe.
    pub heartbeats: Arc<std::sync::Mutex<std::collections::HashMap<berth_core::InstanceId, i64>>>,
}

impl AppState {
    /// Records that an instance's agent answered now.
    pub fn heartbeat(&self, id: &berth_core::InstanceId) {
        self.heartbeats.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), berth_core::now_secs());
    }

    /// Deletes (and revokes at once, open streams included) the instance keys of a
    /// purged instance: they would open nothing ever again.
    pub async fn forget_instance_keys(&self, ws: &berth_core::WorkspaceId, id: &berth_core::InstanceId) {
        let keys = match self.store.keys(ws).await {
            Ok(keys) => keys,
            Err(e) => return tracing::warn!(instance = %id, error = %e, "could not list the purged instance's keys"),
        };
        for k in keys.into_iter().filter(|k| k.instance_id.as_ref() == Some(id)) {
            match self.store.delete_key(ws, &k.id).await {
                Ok(_) => self.keys.revoke(&k.id),
                Err(e) => tracing::warn!(key = %k.id, error = %e, "could not delete a purged instance's key"),
            }
        }
    }

    /// Brings the egress rules to what is desired (on a blocking thread); a failure is logged.
    pub async fn egress_sync(&self) {
        self.egress_run(crate::firewall::Firewall::sync, "assert").await
    }

    /// Brings the egress rules to what is desired when that changed since the last
    /// sync (concurrent callers share one), on a blocking thread; a failure is logged.
    pub async fn egress_apply(&self) {
        self.egress_run(crate::firewall::Firewall::apply, "apply").await
    }

    async fn egress_run(&self, run: fn(&crate::firewall::Firewall) -> anyhow::Result<()>, what: &'static str) {
        let Some(fw) = self.egress.clone() else { return };
        match tokio::task::spawn_blocking(move || run(&fw)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not {what} the egress rules"),
            Err(e) => tracing::warn!(error = %e, "egress rules task failed"),
        }
    }

    /// Removes egress rules for addresses no container on the bridge holds (left by a
    /// server killed with its instances removed behind it); failures are logged.
    pub async fn egress_prune(&self) {
        let Some(fw) = self.egress.clone() else { return };
        let lister = fw.clone();
        // The rules first, then the addresses: a rule added meanwhile is not judged.
        let listed = match tokio::task::spawn_blocking(move || lister.dispatch_listing()).await {
            Ok(Ok(listed)) if !listed.is_empty() => listed,
            Ok(Ok(_)) => return,
            Ok(Err(e)) => return tracing::warn!(error = %e, "could not list the egress rules"),
            Err(e) => return tracing::warn!(error = %e, "egress listing task failed"),
        };
        let held = match self.runtime.network_addresses().await {
            Ok(Some(held)) => held,
            Ok(None) => return,
            Err(e) => return tracing::warn!(error = %e, "could not read the network's addresses"),
        };
        match tokio::task::spawn_blocking(move || fw.prune_vacant(&listed, &held)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not remove vacant egress rules"),
            Err(e) => tracing::warn!(error = %e, "egress pruning task failed"),
        }
    }

    /// Sets an instance's egress policy, applying it at once when it changed.
    pub async fn egress_policy(&self, id: &berth_core::InstanceId, policy: &berth_core::Egress) {
        if self.egress.as_ref().is_some_and(|fw| fw.set_policy(id, policy)) {
            self.egress_apply().await;
        }
    }

    /// Sets an instance's addresses on the bridge (empty: none now), applying its
    /// policy to them at once when they changed.
    pub async fn egress_addresses(&self, id: &berth_core::InstanceId, addrs: Vec<std::net::IpAddr>) {
        if self.egress.as_ref().is_some_and(|fw| fw.set_addresses(id, addrs)) {
            self.egress_apply().await;
        }
    }

    /// Removes a deleted instance's own egress rules.
    pub async fn egress_forget(&self, id: &berth_core::InstanceId) {
        if let Some(fw) = &self.egress {
            fw.forget(id);
            self.egress_apply().await;
        }
    }

    /// Last heartbeat of an instance.
    pub fn last_heartbeat(&self, id: &berth_core::InstanceId) -> Option<i64> {
        self.heartbeats.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied()
    }
}
