//! [`AppState`]: what every handler and the reconciler share.

use crate::locks::InstanceLocks;
use crate::metrics::Metrics;
use berth_runtime::Runtime;
use berth_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// Settings handlers need at request time.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Domain of instance URLs.
    pub domain: String,
    /// Port of the edge, for instance URLs.
    pub edge_port: u16,
    /// Default most live instances of a new workspace.
    pub instance_limit: u32,
    /// How long a deleted instance's data is kept.
    pub retention_secs: i64,
    /// How long create/start wait for the agent.
    pub start_timeout: Duration,
}

/// Shared state of the server.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<dyn Runtime>,
    pub locks: Arc<InstanceLocks>,
    pub metrics: Arc<Metrics>,
    pub settings: Arc<Settings>,
    /// Client for probing agents' `/health`.
    pub http: reqwest::Client,
}
