//! Where instances actually run, behind the [`Runtime`] trait.
//!
//! Handlers and the reconciler speak only this trait. The Docker driver
//! ([`docker::DockerRuntime`], feature `docker`) runs instances on one Docker engine;
//! the Kubernetes driver ([`kubernetes::KubeRuntime`], feature `kubernetes`) runs them
//! as pods of a cluster. Neither is visible to their callers.

pub mod build;
#[cfg(feature = "docker")]
pub mod docker;
pub mod fair;
pub mod instance;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;

use async_trait::async_trait;
use berth_core::{InstanceId, SizeSpec, WorkspaceId};
use futures_util::stream::BoxStream;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use tokio::io::AsyncWrite;

/// Label carrying the instance id on every container and volume berth makes.
pub const LABEL_INSTANCE: &str = "berth.instance";
/// Label carrying the workspace id.
pub const LABEL_WORKSPACE: &str = "berth.workspace";
/// Label naming the berth installation (one data dir) that owns the object, so
/// two servers sharing one Docker host never adopt or remove each other's containers.
pub const LABEL_INSTALL: &str = "berth.install";

/// Port of the agent gateway inside every `berth-agent` instance.
pub const AGENT_PORT: u16 = berth_core::template::AGENT_PORT;
/// Where the instance's persistent home is mounted.
pub const HOME_DIR: &str = "/home/agent";

/// Everything a driver needs to (re)create an instance's container.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub id: InstanceId,
    pub workspace_id: WorkspaceId,
    /// Image to run; `None` means the server's base image.
    pub image: Option<String>,
    pub size: SizeSpec,
    /// CPU and memory in place of the size's.
    pub resources: Option<berth_core::Resources>,
    /// Environment given by the client, added to berth's own variables.
    pub env: BTreeMap<String, String>,
    /// The template's main program: with the agent, the agent runs it as its child
    /// (the container ends when it ends); without, it replaces the image's own
    /// entrypoint and command.
    pub command: Option<Vec<String>>,
    /// The main program reads standard input (`POST /v1/instances/{id}/stdin` writes
    /// to it through [`Runtime::attach`]).
    pub stdin: bool,
    /// Where the instance's traffic may go. The Docker runtime leaves this to the
    /// server's firewall on the host; Kubernetes writes it into the instance's
    /// NetworkPolicy (and [`Runtime::set_egress`] changes it there).
    pub egress: berth_core::Egress,
    /// berth-agent is the container's main process (serving its API on [`AGENT_PORT`]);
    /// false: the image's own entrypoint, or `command`. The agent binary is mounted
    /// either way (execs run under it).
    pub agent: bool,
}

/// What the runtime sees of an instance's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// No container exists.
    Missing,
    /// Created but never started.
    Created,
    Running,
    Paused,
    /// The main process ended.
    Exited {
        code: i64,
        oom_killed: bool,
    },
    /// Anything else the runtime reports (restarting, removing, dead).
    Other(String),
}

/// Observed state plus where to reach the agent.
#[derive(Debug, Clone)]
pub struct ContainerState {
    pub observed: Observed,
    /// The agent's address, when the container has one.
    pub agent_addr: Option<SocketAddr>,
    /// When the main process last started (unix seconds).
    pub started_at: Option<i64>,
    /// The container's global IPv6 address on the instances' network, when it has one.
    pub ipv6_addr: Option<std::net::Ipv6Addr>,
}

impl ContainerState {
    /// The container's addresses on the instances' network (IPv4 first).
    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        self.agent_addr.map(|a| a.ip()).into_iter().chain(self.ipv6_addr.map(std::net::IpAddr::V6)).collect()
    }
}

/// A process to run inside an instance.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    /// argv; the first element is looked up in `PATH`.
    pub cmd: Vec<String>,
    /// `KEY=VALUE` pairs added to the instance's environment.
    pub env: Vec<String>,
    /// Working directory (default the instance's home).
    pub cwd: Option<String>,
    /// Whether the caller will write to stdin.
    pub stdin: bool,
    /// Allocate a terminal (interactive shells).
    pub tty: bool,
}

/// A chunk of a process's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
}

/// A started process: its id, output, and (when asked for) its stdin.
pub struct ExecSession {
    /// Runtime-level exec id, for [`Runtime::exec_status`], [`Runtime::exec_kill`], [`Runtime::exec_resize`].
    pub id: String,
    pub output: BoxStream<'static, Result<Output>>,
    pub input: Option<Pin<Box<dyn AsyncWrite + Send>>>,
}

/// One line of an instance's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 time the line was written.
    pub timestamp: String,
    /// `stdout` or `stderr`.
    pub stream: &'static str,
    pub message: String,
}

/// Which log lines to read.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only the last N lines.
    pub tail: Option<u32>,
    /// Only lines since this unix time.
    pub since: Option<i64>,
    /// Keep streaming new lines.
    pub follow: bool,
}

/// Resource use of an instance now.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub pids: u64,
    /// Bytes received on the container's network interfaces.
    pub network_rx_bytes: u64,
    /// Bytes sent on the container's network interfaces.
    pub network_tx_bytes: u64,
}

/// A container of this installation, as found by label.
#[derive(Debug, Clone)]
pub struct ManagedContainer {
    /// Value of the `berth.instance` label.
    pub instance_id: String,
    /// Runtime-level name or id, for removal.
    pub name: String,
    /// What the listing said of it: enough to see that nothing needs doing. Its exit
    /// code is the listing's and `oom_killed` is never known here, and `started_at`
    /// is not filled: inspect before acting on it.
    pub state: ContainerState,
}

/// An image pull in progress (for the first instance of a template whose image is not
/// on the host yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullProgress {
    pub image: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Bytes downloaded so far, of `total_bytes` (the layers known so far).
    pub current_bytes: u64,
    pub total_bytes: u64,
    /// Layers in place (pulled, or already on the host), of `layers_total`.
    pub layers_done: u32,
    pub layers_total: u32,
}

/// What the host offers instances, as the runtime reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCapacity {
    /// CPUs instances can use.
    pub cpus: u32,
    /// Memory of the host, in bytes.
    pub memory_bytes: u64,
}

/// Something that happened to an instance's container, as the runtime saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// Value of the `berth.instance` label.
    pub instance_id: String,
    pub kind: RuntimeEventKind,
}

/// Kinds of [`RuntimeEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeEventKind {
    Started,
    /// The main process ended (crash, stop, kill).
    Died,
    Paused,
    Unpaused,
    /// The container was removed.
    Destroyed,
}

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime (Docker daemon) could not be reached.
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// The image to run is not present and could not be pulled.
    #[error("image `{image}` is not available: {detail}")]
    ImageMissing { image: String, detail: String },
    /// The runtime refused the operation.
    #[error("runtime error: {0}")]
    Failed(String),
    /// The host has no room for one more container (a limit of the runtime itself, not
    /// one of berth's); the message says which.
    #[error("{0}")]
    Full(String),
}

/// Result alias of this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// A place that runs instances: one container and one volume each.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// `docker`, `kubernetes`, ...
    fn name(&self) -> &'static str;
    /// Answers when the runtime is reachable.
    async fn ping(&self) -> Result<()>;
    /// One-time setup at server start (networks, image checks).
    async fn prepare(&self) -> Result<()>;
    /// The host network interface instances' traffic arrives on, once prepared
    /// (for host firewall rules); `None` where the runtime has no such thing.
    fn host_interface(&self) -> Option<String>;
    /// The subnets (CIDR text) of the instances' network, once prepared.
    fn host_subnets(&self) -> Vec<String> {
        Vec::new()
    }
    /// The host's address on the instances' network, once prepared: where services
    /// berth runs for instances (the managed LLM proxy) listen.
    fn host_address(&self) -> Option<std::net::IpAddr> {
        None
    }
    /// The addresses the containers on the instances' network hold now (any
    /// container: instances, builds, other servers'); `None` where the runtime cannot
    /// say.
    async fn network_addresses(&self) -> Result<Option<std::collections::HashSet<std::net::IpAddr>>> {
        Ok(None)
    }
    /// The pull of `image` running now, if any.
    fn pull_progress(&self, _image: &str) -> Option<PullProgress> {
        None
    }
    /// CPUs and memory of the host, once prepared. CPU limits above the host's CPUs
    /// are clamped to them (instances share CPUs; memory is admitted by the server).
    fn capacity(&self) -> HostCapacity;
    /// Engine calls made so far: (calls that only look, calls that change something).
    fn calls(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Whether an instance's home is bounded by its size's `disk_gb`.
    fn disk_quota(&self) -> bool {
        false
    }
    /// Creates the volume when missing and a fresh container (replacing any old
    /// one, keeping the volume), without starting it.
    async fn create(&self, spec: &InstanceSpec) -> Result<()>;
    /// Starts a created or exited container.
    async fn start(&self, id: &InstanceId) -> Result<()>;
    /// Stops the container (SIGTERM, then SIGKILL after a grace period).
    async fn stop(&self, id: &InstanceId) -> Result<()>;
    /// Freezes every process of the instance.
    async fn pause(&self, id: &InstanceId) -> Result<()>;
    /// Thaws a paused instance.
    async fn resume(&self, id: &InstanceId) -> Result<()>;
    /// Applies a new size (and the instance's own resources, if any) to the container in place.
    async fn resize(&self, id: &InstanceId, size: &SizeSpec, resources: Option<&berth_core::Resources>) -> Result<()>;
    /// Applies a new egress policy to the instance's existing container at once.
    /// Nothing to do where the server's host firewall enforces egress (Docker); an
    /// instance with no container yet takes it from its [`InstanceSpec`] when created.
    async fn set_egress(&self, _id: &InstanceId, _egress: &berth_core::Egress) -> Result<()> {
        Ok(())
    }
    /// Whether [`Runtime::resize`] restarts a running instance (a new address; the
    /// caller waits for it again) rather than resizing it in place.
    fn resize_restarts(&self) -> bool {
        false
    }
    /// Removes the container; the volume (the instance's data) stays.
    async fn remove(&self, id: &InstanceId) -> Result<()>;
    /// Removes the container and the volume.
    async fn purge(&self, id: &InstanceId) -> Result<()>;
    /// What the container is doing now.
    async fn inspect(&self, id: &InstanceId) -> Result<ContainerState>;
    /// Every container of this installation.
    /// Every container of this installation, with its state: one call, however many.
    async fn list(&self) -> Result<Vec<ManagedContainer>>;
    /// Instance ids of every data volume of this installation.
    async fn list_volumes(&self) -> Result<Vec<String>>;
    /// Removes a container found by [`Runtime::list`] that has no record.
    async fn remove_orphan(&self, container: &ManagedContainer) -> Result<()>;
    /// Removes a volume that belongs to no record.
    async fn remove_orphan_volume(&self, instance_id: &str) -> Result<()>;

    /// Starts a process inside a running instance.
    async fn exec(&self, id: &InstanceId, req: ExecRequest) -> Result<ExecSession>;
    /// Exit code of a finished process; `None` while it runs.
    async fn exec_status(&self, exec_id: &str) -> Result<Option<i64>>;
    /// Kills a process and every process it started.
    async fn exec_kill(&self, exec_id: &str) -> Result<()>;
    /// Resizes the terminal of a process started with `tty`.
    async fn exec_resize(&self, exec_id: &str, cols: u16, rows: u16) -> Result<()>;
    /// The instance's main-process output (lines survive restarts of its container).
    async fn logs(&self, id: &InstanceId, query: LogQuery) -> Result<BoxStream<'static, Result<LogLine>>>;
    /// CPU, memory and process counts now.
    async fn stats(&self, id: &InstanceId) -> Result<Stats>;
    /// Builds an image from a Dockerfile and context, sending each line of the
    /// builder's output to `log`; the error says why a build failed.
    async fn build_image(
        &self,
        req: build::BuildRequest,
        log: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<()> {
        let _ = (req, log);
        Err(RuntimeError::Failed(format!("the {} runtime does not build images", self.name())))
    }
    /// Removes an image berth built (best effort: one still in use stays).
    async fn remove_image(&self, image: &str) -> Result<()> {
        let _ = image;
        Ok(())
    }
    /// Attaches to the standard streams of an instance's main process: its output from
    /// now on, and its standard input (the container was made with `stdin`).
    async fn attach(&self, id: &InstanceId) -> Result<ExecSession> {
        let _ = id;
        Err(RuntimeError::Failed(format!("the {} runtime cannot attach to an instance's main process", self.name())))
    }
    /// This installation's container events as they happen. The stream ends when
    /// the runtime goes away; the caller subscribes again.
    async fn events(&self) -> Result<BoxStream<'static, Result<RuntimeEvent>>>;
}
