//! Prometheus metrics of the control plane, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of one API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

/// Label of a route alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

/// Label naming an action or a status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Label of a response status class (`2xx`...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabel {
    pub class: String,
}

/// Metrics of the edge. Label sets are fixed (no per-instance labels), and the
/// counters are looked up once, not per request.
pub struct EdgeMetrics {
    by_class: [Counter; 5],
    /// Time from request to response headers.
    pub latency: Histogram,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    pub open_streams: Gauge,
    pub open_websockets: Gauge,
    pub wakes: Counter,
}

impl EdgeMetrics {
    fn register(registry: &mut Registry) -> Self {
        let family = Family::<ClassLabel, Counter>::default();
        let by_class =
            ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|c| family.get_or_create(&ClassLabel { class: c.into() }).clone());
        let latency = Histogram::new([
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
        ]);
        let m = Self {
            by_class,
            latency,
            received_bytes: Counter::default(),
            sent_bytes: Counter::default(),
            open_streams: Gauge::default(),
            open_websockets: Gauge::default(),
            wakes: Counter::default(),
        };
        registry.register("edge_requests", "Edge requests by response status class", family);
        registry.register(
            "edge_request_duration_seconds",
            "Edge time from request to response headers",
            m.latency.clone(),
        );
        registry.register("edge_received_bytes", "Request body bytes the edge received", m.received_bytes.clone());
        registry.register("edge_sent_bytes", "Response body bytes the edge sent", m.sent_bytes.clone());
        registry.register("edge_open_streams", "Responses the edge is streaming now", m.open_streams.clone());
        registry.register("edge_open_websockets", "WebSockets open through the edge", m.open_websockets.clone());
        registry.register("edge_wakes", "Sleeping instances woken by a request", m.wakes.clone());
        m
    }

    /// Counts a response by its status.
    pub fn response(&self, status: u16, secs: f64) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.latency.observe(secs);
    }
}

/// Every metric berth exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<RouteLabel, Histogram>,
    pub instances: Family<KindLabel, Gauge>,
    pub reconciler_actions: Family<KindLabel, Counter>,
    pub runtime_errors: Family<KindLabel, Counter>,
    pub reconcile_failures: Family<KindLabel, Counter>,
    pub execs: Family<KindLabel, Counter>,
    pub creates: Family<KindLabel, Counter>,
    pub warm_pool_ready: Family<KindLabel, Gauge>,
    /// Runtime (Docker Engine) calls by kind, `read` or `write`; set at scrape time.
    pub runtime_calls: Family<KindLabel, Counter>,
    pub exec_seconds: Histogram,
    pub edge: EdgeMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<RouteLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        });
        let instances = Family::<KindLabel, Gauge>::default();
        let reconciler_actions = Family::<KindLabel, Counter>::default();
        let runtime_errors = Family::<KindLabel, Counter>::default();
        let reconcile_failures = Family::<KindLabel, Counter>::default();
        let execs = Family::<KindLabel, Counter>::default();
        let creates = Family::<KindLabel, Counter>::default();
        let warm_pool_ready = Family::<KindLabel, Gauge>::default();
        let runtime_calls = Family::<KindLabel, Counter>::default();
        let exec_seconds = Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0]);
        registry.register("http_requests", "Hosting API requests by route and status", requests.clone());
        registry.register("http_request_duration_seconds", "Hosting API latency by route", request_seconds.clone());
        registry.register("instances", "Instances by status", instances.clone());
        registry.register("reconciler_actions", "Actions taken by the reconciler", reconciler_actions.clone());
        registry.register("runtime_errors", "Failed runtime calls by operation", runtime_errors.clone());
        registry.register(
            "reconcile_failures",
            "Reconciler steps that failed and were skipped (the pass went on)",
            reconcile_failures.clone(),
        );
        registry.register("execs", "Commands run in instances by outcome", execs.clone());
        registry.register(
            "creates",
            "Instances created through the API: `warm` from the warm pool, `cold`",
            creates.clone(),
        );
        registry.register(
            "warm_pool_ready",
            "Started, unclaimed warm pool instances by pool (`TEMPLATE:SIZE`)",
            warm_pool_ready.clone(),
        );
        registry.register(
            "runtime_calls",
            "Calls to the runtime (Docker Engine API) by kind: `read` only looks, `write` changes something",
            runtime_calls.clone(),
        );
        registry.register("exec_duration_seconds", "Duration of commands run in instances", exec_seconds.clone());
        let edge = EdgeMetrics::register(&mut registry);
        Self {
            registry,
            requests,
            request_seconds,
            instances,
            reconciler_actions,
            runtime_errors,
            reconcile_failures,
            execs,
            creates,
            warm_pool_ready,
            runtime_calls,
            exec_seconds,
            edge,
        }
    }
}

impl Metrics {
    /// Counts one reconciler action.
    pub fn reconciled(&self, kind: &str) {
        self.reconciler_actions.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    /// Counts one create: `warm` (from the warm pool) or `cold`.
    pub fn created(&self, how: &str) {
        self.creates.get_or_create(&KindLabel { kind: how.into() }).inc();
    }

    /// Counts one failed runtime call.
    pub fn runtime_error(&self, kind: &str) {
        self.runtime_errors.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    /// Counts one reconciler step that failed and was skipped.
    pub fn reconcile_failure(&self, kind: &str) {
        self.reconcile_failures.get_or_create(&KindLabel { kind: kind.into() }).inc();
    }

    /// Counts one exec and its duration.
    pub fn exec(&self, outcome: &str, secs: f64) {
        self.execs.get_or_create(&KindLabel { kind: outcome.into() }).inc();
        self.exec_seconds.observe(secs);
    }

    /// Brings the runtime call counters up to what the runtime counted.
    pub fn set_runtime_calls(&self, (reads, writes): (u64, u64)) {
        // Two scrapes at once must not both add the same difference.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        for (kind, n) in [("read", reads), ("write", writes)] {
            let c = self.runtime_calls.get_or_create(&KindLabel { kind: kind.into() });
            c.inc_by(n.saturating_sub(c.get()));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
