//! `berth server` flags. Every flag also reads `BERTH_<FLAG>`.

use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Which runtime driver runs instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    Docker,
    Kubernetes,
}

/// What separates an instance from the host's kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Isolation {
    /// Namespaces, cgroups, dropped capabilities (Docker's default runtime, runc).
    Runc,
    /// gVisor: the instance's system calls are served by a user-space kernel
    /// (`--gvisor-runtime`, registered with dockerd).
    Gvisor,
}

/// How instances' home volumes are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiskQuota {
    /// `loop` when this host can (root, loop devices, util-linux and e2fsprogs, a local
    /// Docker engine), else `off` with a warning.
    Auto,
    /// Each home is an ext4 filesystem of the size's `disk_gb` on a loop device.
    Loop,
    /// Plain Docker volumes: the size's disk is reported, not enforced.
    Off,
}

/// Flags of `berth server` (SPEC §2).
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Data directory: SQLite database, admin key.
    #[arg(long, env = "BERTH_DATA", default_value = "./.berth")]
    pub data: PathBuf,
    /// Address of the hosting API.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Address of the edge proxy (instance URLs point here).
    #[arg(long, env = "BERTH_EDGE_LISTEN", default_value = "127.0.0.1:7071")]
    pub edge_listen: SocketAddr,
    /// Domain under which instance URLs live (`{label}.{domain}`).
    #[arg(long, env = "BERTH_DOMAIN", default_value = "localhost")]
    pub domain: String,
    /// Database URL: `sqlite:PATH`, or `postgres://USER:PASSWORD@HOST:PORT/DB` for one
    /// or several replicas sharing a database; default: SQLite file `berth.db` in the
    /// data dir.
    #[arg(long, env = "BERTH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Database connections this server keeps at most.
    #[arg(long, env = "BERTH_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,
    /// Seconds a statement waits for a database connection before failing (503).
    #[arg(long, env = "BERTH_DATABASE_TIMEOUT_SECS", default_value_t = 10)]
    pub database_timeout_secs: u64,
    /// Runtime driver.
    #[arg(long, env = "BERTH_RUNTIME", value_enum, default_value = "docker")]
    pub runtime: RuntimeKind,
    /// Image the system template runs (any image with /bin/sh); default:
    /// `debian:bookworm-slim`, or berth's local equivalent `berth/base:bookworm` (built by
    /// scripts/build-images.sh where no registry answers) when only that one is present.
    #[arg(long, env = "BERTH_BASE_IMAGE")]
    pub base_image: Option<String>,
    /// Host path of the static berth-agent binary; default: `berth-agent` beside this
    /// executable when it is static, else the static agent built with this server.
    #[arg(long, env = "BERTH_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// What separates instances from the host's kernel (`runc`, `gvisor`).
    #[arg(long, env = "BERTH_ISOLATION", value_enum, default_value = "runc")]
    pub isolation: Isolation,
    /// Name of the gVisor runtime in dockerd's configuration (`--isolation gvisor`).
    #[arg(long, env = "BERTH_GVISOR_RUNTIME", default_value = "runsc")]
    pub gvisor_runtime: String,
    /// CA bundle (PEM) that template builds and instances trust, so `pip`, `npm` and
    /// `curl` work behind a TLS-intercepting proxy: mounted read-only into instances at
    /// /usr/local/share/berth/ca-certificates.crt (SSL_CERT_FILE, REQUESTS_CA_BUNDLE,
    /// PIP_CERT, NODE_EXTRA_CA_CERTS, CURL_CA_BUNDLE and GIT_SSL_CAINFO point at it) and
    /// copied into every build stage. Default: the system's
    /// /etc/ssl/certs/ca-certificates.crt when it exists; `none`: the images' own.
    #[arg(long, env = "BERTH_CA_BUNDLE")]
    pub ca_bundle: Option<String>,
    /// Most vCPUs an instance's own `resources` may ask for (guaranteed or limit).
    #[arg(long, env = "BERTH_RESOURCES_MAX_CPU", default_value_t = 8.0)]
    pub resources_max_cpu: f64,
    /// Most memory (MiB) an instance's own `resources` may ask for.
    #[arg(long, env = "BERTH_RESOURCES_MAX_MEMORY_MB", default_value_t = 16384, value_parser = clap::value_parser!(u64).range(64..))]
    pub resources_max_memory_mb: u64,
    /// Most template builds running at once (the others wait their turn).
    #[arg(long, env = "BERTH_MAX_BUILDS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_builds: u32,
    /// System agent templates to offer, their images built at start (comma-separated;
    /// `none`: none). This build ships `hermes`, `claude-code`, `codex`, `openclaw` and
    /// `all` (every one of them).
    #[arg(
        long,
        env = "BERTH_AGENT_TEMPLATES",
        value_delimiter = ',',
        default_value = "hermes,claude-code,codex,openclaw,all"
    )]
    pub agent_templates: Vec<String>,
    /// The Debian image agent templates are built on (it needs `apt-get`).
    #[arg(long, env = "BERTH_AGENT_TEMPLATE_BASE", default_value = "berth/base:bookworm")]
    pub agent_template_base: String,
    /// Longest a template build may take before it fails.
    #[arg(long, env = "BERTH_BUILD_TIMEOUT_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub build_timeout_secs: u64,
    /// How home volumes are bounded to their size's disk (`auto`, `loop`, `off`).
    #[arg(long, env = "BERTH_DISK_QUOTA", value_enum, default_value = "auto")]
    pub disk_quota: DiskQuota,
    /// Where the home volumes' disk images are kept (loop disks); default: `disks` in
    /// the data dir. Replicas on one Docker host must name the same directory.
    #[arg(long, env = "BERTH_DISK_DIR")]
    pub disk_dir: Option<PathBuf>,
    /// Disk (GiB) each workspace's instances may be given in all, soft-deleted ones
    /// (whose homes are kept for the retention period) included; default: the
    /// workspace's instance limit × 80 (its limit's worth of the largest size).
    #[arg(long, env = "BERTH_WORKSPACE_DISK_GB")]
    pub workspace_disk_gb: Option<u64>,
    /// Docker network instances join (inter-container traffic disabled). An existing
    /// one is adopted only when it is a bridge made by berth with `enable_icc=false`.
    #[arg(long, env = "BERTH_NETWORK", default_value = "berth-instances")]
    pub network: String,
    /// Destination instances may reach although the default policy denies it,
    /// `CIDR[:PORT]` (IPv6 with a port: `[fd00::/8]:443`); repeatable.
    #[arg(long = "egress-allow", env = "BERTH_EGRESS_ALLOW", value_delimiter = ',', value_name = "CIDR[:PORT]", value_parser = berth_core::egress::Destination::parse)]
    pub egress_allow: Vec<berth_core::egress::Destination>,
    /// Destination instances never reach, in addition to the default denies (also
    /// over an instance's own `allow` list), `CIDR[:PORT]`; repeatable.
    #[arg(long = "egress-deny", env = "BERTH_EGRESS_DENY", value_delimiter = ',', value_name = "CIDR[:PORT]", value_parser = berth_core::egress::Destination::parse)]
    pub egress_deny: Vec<berth_core::egress::Destination>,
    /// Default most live instances per workspace.
    #[arg(long, env = "BERTH_INSTANCE_LIMIT", default_value_t = 100)]
    pub instance_limit: u32,
    /// Seconds a deleted instance's data is kept before it is purged.
    #[arg(long, env = "BERTH_RETENTION_SECS", default_value_t = 7 * 24 * 3600)]
    pub retention_secs: i64,
    /// Milliseconds between reconciler passes.
    #[arg(long, env = "BERTH_RECONCILE_INTERVAL_MS", default_value_t = 2000)]
    pub reconcile_interval_ms: u64,
    /// Seconds create/start wait for the agent to answer before giving up.
    #[arg(long, env = "BERTH_START_TIMEOUT_SECS", default_value_t = 60)]
    pub start_timeout_secs: u64,
    /// Leave the host's kernel limits alone. By default the server raises the
    /// neighbour (ARP/NDP) table thresholds (`net.ipv4.neigh.default.gc_thresh1/2/3`,
    /// and IPv6's) to 4096/8192/16384 when they are lower: Linux's defaults let only
    /// about 500 instances talk to the host before connections to new ones stall.
    #[arg(long, env = "BERTH_NO_HOST_TUNING")]
    pub no_host_tuning: bool,
    /// Most Docker Engine API calls in flight at once.
    #[arg(long, env = "BERTH_RUNTIME_CONCURRENCY", default_value_t = 4)]
    pub runtime_concurrency: usize,
    /// Kubernetes runtime: kubeconfig file; default: the in-cluster configuration inside
    /// a pod, else `$KUBECONFIG` or `~/.kube/config`.
    #[arg(long, env = "BERTH_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubernetes runtime: namespace of the instances; default: the kubeconfig's (or
    /// the pod's own).
    #[arg(long, env = "BERTH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubernetes runtime: image holding only `/berth-agent` (the static agent), which
    /// an init container copies into every instance. `scripts/build-agent-image.sh`
    /// builds it into the local Docker as `berth/agent-bin:<hash>`; push it where the
    /// cluster's nodes pull from. Give it a tag per build: nodes keep a tag they have.
    #[arg(long, env = "BERTH_K8S_AGENT_IMAGE")]
    pub k8s_agent_image: Option<String>,
    /// Kubernetes runtime: StorageClass of instances' homes; default: the cluster's.
    #[arg(long, env = "BERTH_K8S_STORAGE_CLASS")]
    pub k8s_storage_class: Option<String>,
    /// Kubernetes runtime, berth outside the cluster: the address instance pods see
    /// berth's connections come from (let in by their NetworkPolicy beside berth's own
    /// pods labelled `app.kubernetes.io/name=berth`), and where the managed LLM proxy
    /// listens for them.
    #[arg(long, env = "BERTH_K8S_SERVER_ADDRESS")]
    pub k8s_server_address: Option<std::net::IpAddr>,
    /// Kubernetes runtime: the percent of an instance's CPU its pod requests (the
    /// scheduler reserves requests; the limit stays the size's). 100 reserves whole
    /// CPUs, one size-1 instance per CPU of a node.
    #[arg(long, env = "BERTH_K8S_CPU_REQUEST_PERCENT", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub k8s_cpu_request_percent: u32,
    /// Kubernetes runtime: the percent of an instance's memory its pod requests.
    #[arg(long, env = "BERTH_K8S_MEMORY_REQUEST_PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub k8s_memory_request_percent: u32,
    /// The managed LLM proxy's upstream (OpenAI-compatible base URL, e.g.
    /// `https://api.openai.com/v1`). With it (or `--llm-upstream`), instances get
    /// `BERTH_LLM_BASE_URL`/`BERTH_LLM_API_KEY` pointing at berth's proxy.
    #[arg(long, env = "BERTH_LLM_BASE_URL")]
    pub llm_base_url: Option<String>,
    /// Key of the managed LLM upstream; never enters an instance.
    #[arg(long, env = "BERTH_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// More upstreams, `NAME=URL,KEY` (repeatable): a model `NAME/MODEL` goes to
    /// upstream NAME as `MODEL`.
    #[arg(long = "llm-upstream", env = "BERTH_LLM_UPSTREAM", value_delimiter = ';', hide_env_values = true)]
    pub llm_upstream: Vec<String>,
    /// Metered tool APIs `NAME=URL,KEY,PRICE_PER_CALL[,HEADER]` (repeatable): instances
    /// reach them through the proxy at `/tools/NAME/...` with the operator's key (sent
    /// as `Authorization: Bearer KEY`, or in HEADER), each call charged against the
    /// instance's budget. A tool named `web_search` (or `search`) becomes berth-agent's
    /// `web_search` tool.
    #[arg(long = "tool-upstream", env = "BERTH_TOOL_UPSTREAM", value_delimiter = ';', hide_env_values = true)]
    pub tool_upstream: Vec<String>,
    /// Managed-usage price `MODEL=IN,OUT` (USD per million tokens), repeatable.
    #[arg(long = "llm-price", env = "BERTH_LLM_PRICE", value_delimiter = ';')]
    pub llm_price: Vec<String>,
    /// Price `IN,OUT` (USD per million tokens) of models `--llm-price` does not name;
    /// without it such models are refused.
    #[arg(long, env = "BERTH_LLM_PRICE_DEFAULT")]
    pub llm_price_default: Option<String>,
    /// Model instances' agents use when a request names none (their `BERTH_MODEL`, unless
    /// their own env sets it); default: the one `--llm-price` model, when there is one.
    #[arg(long, env = "BERTH_LLM_MODEL")]
    pub llm_model: Option<String>,
    /// Port of the managed LLM proxy, on the host's address on the instances' network
    /// only (0: any free port).
    #[arg(long, env = "BERTH_LLM_PROXY_PORT", default_value_t = 7072)]
    pub llm_proxy_port: u16,
    /// Output tokens reserved for a call that names no limit (`max_tokens`,
    /// `max_output_tokens`, ...) when checking it against caps and the wallet.
    #[arg(long, env = "BERTH_LLM_RESERVE_TOKENS", default_value_t = 4096)]
    pub llm_reserve_tokens: u32,
    /// Turn on wallet enforcement: managed usage is drawn from the workspace's wallet and
    /// refused (402 `insufficient_funds`) when it is empty.
    #[arg(long, env = "BERTH_BILLING")]
    pub billing: bool,
    /// Where notifications go (a wallet falling low), as signed JSON POSTs.
    #[arg(long, env = "BERTH_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The secret webhooks are signed with (default: derived from the server's secret
    /// key and written to `<data>/webhook.secret`).
    #[arg(long, env = "BERTH_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// A wallet falling below this many micro-dollars is notified.
    #[arg(long, env = "BERTH_LOW_BALANCE_MICROS", default_value_t = 1_000_000)]
    pub low_balance_micros: i64,
    /// Tests only: a file holding the unix time compute billing runs at (to cross a month).
    #[arg(long, env = "BERTH_TEST_CLOCK_FILE", hide = true)]
    pub test_clock_file: Option<PathBuf>,
    /// Compute price `SIZE=USD_PER_MONTH`, repeatable.
    #[arg(long = "size-price", env = "BERTH_SIZE_PRICE", value_delimiter = ';')]
    pub size_price: Vec<String>,
    /// PEM certificate (chain) for both listeners, typically a wildcard for
    /// `*.{domain}`; reloaded when the file changes. Instance URLs become https://.
    #[arg(long, env = "BERTH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "BERTH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// ACME directory URL: certificates for instance hosts are obtained on demand
    /// (TLS-ALPN-01 on the edge's port) and kept in the data dir.
    #[arg(long, env = "BERTH_ACME_DIRECTORY")]
    pub acme_directory: Option<String>,
    /// Contact e-mail of the ACME account.
    #[arg(long, env = "BERTH_ACME_EMAIL")]
    pub acme_email: Option<String>,
    /// Extra PEM root to trust for the ACME directory's own HTTPS (a private CA).
    #[arg(long, env = "BERTH_ACME_CA")]
    pub acme_ca: Option<PathBuf>,
    /// Edge access log: `-` (stderr), a file path, or `off`.
    #[arg(long, env = "BERTH_ACCESS_LOG", default_value = "-")]
    pub access_log: String,
    /// Largest request body the edge forwards, in MiB (more is answered 413).
    #[arg(long, env = "BERTH_EDGE_BODY_LIMIT_MB", default_value_t = 64)]
    pub edge_body_limit_mb: u64,
    /// Seconds a client has to send a request's headers (and the TLS handshake).
    #[arg(long, env = "BERTH_HEADER_READ_TIMEOUT_SECS", default_value_t = 15)]
    pub header_read_timeout_secs: u64,
    /// Seconds a hosting API request may take before it is answered 503 `timeout`
    /// (exec, logs and shell bound themselves).
    #[arg(long, env = "BERTH_REQUEST_TIMEOUT_SECS", default_value_t = 300)]
    pub request_timeout_secs: u64,
    /// Seconds a connection with nothing in flight stays open.
    #[arg(long, env = "BERTH_IDLE_TIMEOUT_SECS", default_value_t = 75)]
    pub idle_timeout_secs: u64,
    /// Instances' memory limits may add up to host memory × this (admission; 422 beyond).
    #[arg(long, env = "BERTH_MEMORY_OVERCOMMIT", default_value_t = 2.0)]
    pub memory_overcommit: f64,
    /// Warm pool: keep started, unclaimed instances of a template and size, so a create
    /// that matches is answered by handing one over (`TEMPLATE[:SIZE]=N`, or `=N..M` for
    /// a floor of N and a ceiling of M that the pool grows to while claims come fast;
    /// `=N` is `N..2N`). TEMPLATE: `berth-agent`, an agent template, or a `tpl_…` id.
    /// Repeatable; the environment variable takes a comma-separated list.
    #[arg(long = "warm-pool", env = "BERTH_WARM_POOL", value_delimiter = ',', value_name = "TEMPLATE[:SIZE]=N[..M]")]
    pub warm_pool: Vec<String>,
    /// Most warm-pool instances being made at once.
    #[arg(long, env = "BERTH_WARM_POOL_PARALLEL", default_value_t = 2)]
    pub warm_pool_parallel: usize,
    /// Most instances (all workspaces, not counting deleted ones) this server holds.
    #[arg(long, env = "BERTH_MAX_INSTANCES")]
    pub max_instances: Option<u32>,
    /// Requests per second each API key may sustain on the hosting API (0: no limit).
    #[arg(long, env = "BERTH_KEY_RATE", default_value_t = 100.0)]
    pub key_rate: f64,
    /// Requests an API key may send at once above its rate.
    #[arg(long, env = "BERTH_KEY_BURST", default_value_t = 500.0)]
    pub key_burst: f64,
    /// Failed authentications (bad or unknown keys, bad share tokens) each client
    /// address may make per minute on either plane, all at once at most; beyond,
    /// `429 rate_limited` until it recovers (0: no limit).
    #[arg(long, env = "BERTH_AUTH_FAILURES_PER_MINUTE", default_value_t = 60.0)]
    pub auth_failures_per_minute: f64,
    /// Most commands running at once per workspace (exec).
    #[arg(long, env = "BERTH_WORKSPACE_MAX_EXECS", default_value_t = 64)]
    pub workspace_max_execs: u32,
    /// Most shells open at once per workspace.
    #[arg(long, env = "BERTH_WORKSPACE_MAX_SHELLS", default_value_t = 32)]
    pub workspace_max_shells: u32,
    /// Most log follows open at once per workspace.
    #[arg(long, env = "BERTH_WORKSPACE_MAX_LOG_FOLLOWS", default_value_t = 64)]
    pub workspace_max_log_follows: u32,
    /// Most requests and streams in flight through the edge per workspace.
    #[arg(long, env = "BERTH_WORKSPACE_MAX_EDGE_STREAMS", default_value_t = 4096)]
    pub workspace_max_edge_streams: u32,
    /// Most commands running at once on the whole server.
    #[arg(long, env = "BERTH_MAX_EXECS", default_value_t = 256)]
    pub max_execs: u32,
    /// Most shells open at once on the whole server.
    #[arg(long, env = "BERTH_MAX_SHELLS", default_value_t = 128)]
    pub max_shells: u32,
    /// Most log follows open at once on the whole server.
    #[arg(long, env = "BERTH_MAX_LOG_FOLLOWS", default_value_t = 256)]
    pub max_log_follows: u32,
    /// MiB of command output all non-streamed execs may hold at once, counted as sent
    /// (JSON-escaped) until it is sent; beyond, output is truncated.
    #[arg(long, env = "BERTH_EXEC_BUFFER_MB", default_value_t = 48)]
    pub exec_buffer_mb: u64,
    /// Threads serving the edge (each a single-threaded runtime); default: one per core.
    #[arg(long, env = "BERTH_EDGE_THREADS")]
    pub edge_threads: Option<usize>,
    /// Shortest idle timeout a `cold_start` instance may ask for, in seconds.
    #[arg(long, env = "BERTH_MIN_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub min_idle_timeout_secs: u64,
    /// Most connections open at once on each listener.
    #[arg(long, env = "BERTH_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
}

impl ServerArgs {
    /// The fair-share caps and key rate.
    pub fn quota_limits(&self) -> crate::quotas::QuotaLimits {
        use crate::quotas::Kind;
        crate::quotas::QuotaLimits {
            per_workspace: [
                (Kind::Exec, self.workspace_max_execs),
                (Kind::Shell, self.workspace_max_shells),
                (Kind::LogFollow, self.workspace_max_log_follows),
                (Kind::EdgeStream, self.workspace_max_edge_streams),
            ]
            .into(),
            total: [
                (Kind::Exec, self.max_execs),
                (Kind::Shell, self.max_shells),
                (Kind::LogFollow, self.max_log_follows),
            ]
            .into(),
            key_rate: self.key_rate,
            key_burst: self.key_burst,
            auth_failures_per_minute: self.auth_failures_per_minute,
        }
    }

    /// Timeouts and caps of both listeners.
    pub fn conn_limits(&self) -> crate::listen::ConnLimits {
        crate::listen::ConnLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs.max(1)),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
        }
    }
}
