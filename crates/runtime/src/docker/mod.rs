//! The Docker driver: the Docker Engine API through bollard, never the CLI.
//!
//! One container (`berth-<id>`) and one named volume (`berth-<id>-home`) per
//! instance. Containers are hardened (capabilities dropped, `no-new-privileges`,
//! an init as PID 1, no host mounts but the read-only agent binary) and sit on a
//! bridge network with inter-container traffic disabled. Every Engine API call
//! goes through a small semaphore: dockerd has been seen to lock up when hundreds
//! of calls land at once.

mod build;
pub mod disk;
mod exec;
pub mod host;
mod observe;
mod pull;
mod spec;

use crate::fair::{FairGate, FairPermit};
use crate::{
    ContainerState, ExecRequest, ExecSession, HostCapacity, InstanceSpec, LogLine, LogQuery, ManagedContainer,
    Observed, Result, Runtime, RuntimeError, RuntimeEvent, RuntimeEventKind, Stats, AGENT_PORT, LABEL_INSTALL,
    LABEL_INSTANCE, LABEL_WORKSPACE,
};
use async_trait::async_trait;
use berth_core::{InstanceId, Resources, SizeSpec};
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerStateStatusEnum, ContainerUpdateBody, NetworkCreateRequest, ThrottleDevice, VolumeCreateOptions,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListVolumesOptions, RemoveContainerOptions, RemoveVolumeOptions,
};
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const NO_INSPECT: Option<bollard::query_parameters::InspectContainerOptions> = None;

/// The exit code in a listing's status, `Exited (137) 5 minutes ago`.
fn listed_exit_code(status: &str) -> Option<i64> {
    status.strip_prefix("Exited (")?.split_once(')')?.0.parse().ok()
}

pub use crate::instance::{AGENT_PATH, KEPT_CAPS};

/// The system template's image when none is configured, in order of preference: the
/// upstream Debian image, then the equivalent `scripts/build-images.sh` builds from the
/// host's Debian mirror where no registry answers (under berth's own name, so it never
/// passes for the upstream image).
pub const DEFAULT_BASE_IMAGES: &[&str] = &["debian:bookworm-slim", "berth/base:bookworm"];

/// How the Docker driver is set up.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Image of the system template when a spec names none; `None`: the first of
    /// [`DEFAULT_BASE_IMAGES`] present on the daemon, else the first (pulled when needed).
    pub base_image: Option<String>,
    /// Host path of the static `berth-agent` binary, bind-mounted read-only.
    pub agent_bin: PathBuf,
    /// Id of this berth installation (the `berth.install` label).
    pub install_id: String,
    /// Bridge network the instances join.
    pub network: String,
    /// Most Engine API calls in flight at once.
    pub max_concurrent_calls: usize,
    /// Seconds between SIGTERM and SIGKILL on stop.
    pub stop_grace_secs: i32,
    /// Where home images live when homes are loop-backed filesystems of their size
    /// ([`disk`]); `None`: plain volumes, their size not enforced.
    pub disk_dir: Option<PathBuf>,
    /// OCI runtime (as registered with dockerd) instances run under, e.g. `runsc` for
    /// gVisor; `None`: the daemon's default (runc).
    pub oci_runtime: Option<String>,
    /// Host path of the CA bundle builds and instances trust (mounted read-only into
    /// instances, added to build contexts); `None`: the image's own.
    pub ca_bundle: Option<PathBuf>,
    /// Raise the host's neighbour table limits when they are too low for many
    /// instances ([`host::raise_neighbour_limits`]) when preparing.
    pub tune_host: bool,
}

/// Raises the host's neighbour table limits ([`host`]), logging what changed and
/// what could not be (with the command that does it).
fn tune_host() {
    for t in host::raise_neighbour_limits(std::path::Path::new("/proc/sys")) {
        match t.error {
            None => {
                tracing::info!(sysctl = %t.name, was = t.was, now = t.wanted, "raised a kernel limit many instances reach")
            }
            Some(e) => tracing::warn!(
                sysctl = %t.name, value = t.was, error = %e,
                "the kernel's neighbour table fits about 500 instances talking to the host; raise it: sysctl -w {}={}",
                t.name, t.wanted
            ),
        }
    }
}

/// [`Runtime`] on a Docker Engine.
pub struct DockerRuntime {
    docker: Docker,
    cfg: DockerConfig,
    /// Engine API calls that change something (create, start, kill, remove...),
    /// shared fairly between workspaces.
    permits: FairGate,
    /// Engine API calls that only look (inspect, list): a budget of their own, so
    /// polling never queues behind changes, nor changes behind polling; also fair.
    read_permits: FairGate,
    /// Recent stats per container, and a lock per container so that concurrent
    /// `/health` calls share one Engine API call (each costs up to a second).
    stats_cache: std::sync::Mutex<HashMap<String, (std::time::Instant, Stats)>>,
    /// Image pulls running now.
    pulls: Arc<pull::Pulls>,
    stats_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Exec id → (container, token) of execs that may still need a kill.
    exec_tokens: std::sync::Mutex<HashMap<String, (String, String)>>,
    /// Last CPU sample per container (total usage, system usage), for one-shot stats.
    cpu_samples: std::sync::Mutex<HashMap<String, (u64, u64)>>,
    /// Id of the instances' network, resolved by `prepare`.
    network_id: std::sync::RwLock<String>,
    /// Host interface (bridge) and subnets of the instances' network, read by `prepare`.
    bridge: std::sync::RwLock<(String, Vec<String>)>,
    /// The host's IPv4 address on the instances' network, read by `prepare`.
    gateway: std::sync::RwLock<Option<std::net::IpAddr>>,
    /// CPUs and memory of the Docker host, read by `prepare`.
    capacity: std::sync::RwLock<HostCapacity>,
    /// Loop-backed homes, when enabled.
    disks: Option<disk::LoopDisks>,
}

/// Whether the Docker engine runs on this host (`DOCKER_HOST` unset or a unix socket):
/// only then are its loop devices and containers' processes this host's to touch.
pub fn docker_is_local() -> bool {
    std::env::var("DOCKER_HOST").map_or(true, |h| h.is_empty() || h.starts_with("unix://"))
}

/// Bytes in a GiB.
const GIB: u64 = 1 << 30;

/// How long a container's stats are reused. Docker's one-shot stats answer at once
/// only when no other stats request is in progress; otherwise they wait for the next
/// sample, up to a second, so a polling client would pay that on every call.
const STATS_TTL: std::time::Duration = std::time::Duration::from_secs(2);

/// The label berth puts on the networks it makes (and requires on one it adopts).
const NETWORK_LABEL: &str = "berth.network";

/// Checks that the instances' network `name` (id `id`) isolates instances: a bridge,
/// inter-container traffic off, made by berth. Answers its host interface (the
/// `com.docker.network.bridge.name` option, else Docker's `br-` + 12 chars of the id)
/// and its subnets.
fn check_network(
    name: &str,
    id: &str,
    net: &bollard::models::Network,
) -> std::result::Result<(String, Vec<String>), String> {
    let driver = net.driver.as_deref().unwrap_or("");
    if driver != "bridge" {
        return Err(format!(
            "network `{name}` uses the `{driver}` driver; instances need a bridge network (pass another --network, or remove it and berth makes one)"
        ));
    }
    let opts = net.options.clone().unwrap_or_default();
    let icc = opts.get("com.docker.network.bridge.enable_icc").map(String::as_str);
    if icc != Some("false") {
        return Err(format!(
            "network `{name}` lets containers reach each other (com.docker.network.bridge.enable_icc is {}); instances need it \"false\"",
            icc.map_or("unset".to_string(), |v| format!("\"{v}\""))
        ));
    }
    if !net.labels.as_ref().is_some_and(|l| l.contains_key(NETWORK_LABEL)) {
        return Err(format!(
            "network `{name}` was not made by berth (no `{NETWORK_LABEL}` label); berth adopts only its own networks"
        ));
    }
    let bridge = match opts.get("com.docker.network.bridge.name") {
        Some(b) if !b.is_empty() => b.clone(),
        _ if id.len() >= 12 => format!("br-{}", &id[..12]),
        _ => return Err(format!("network `{name}` has no bridge interface name")),
    };
    let subnets = net
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .map(|c| c.iter().filter_map(|c| c.subnet.clone()).collect())
        .unwrap_or_default();
    Ok((bridge, subnets))
}

/// The host's IPv4 address on a network: its IPAM gateway, else the first address of
/// its IPv4 subnet (where Docker puts the bridge).
fn network_gateway(net: &bollard::models::Network) -> Option<std::net::IpAddr> {
    let configs = net.ipam.as_ref()?.config.as_ref()?;
    configs.iter().find_map(|c| {
        if let Some(gw) = c.gateway.as_deref().and_then(|g| g.parse::<std::net::Ipv4Addr>().ok()) {
            return Some(std::net::IpAddr::V4(gw));
        }
        let (addr, _) = c.subnet.as_deref()?.split_once('/')?;
        let base: std::net::Ipv4Addr = addr.parse().ok()?;
        Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from(base) + 1)))
    })
}

fn container_name(id: &InstanceId) -> String {
    format!("berth-{id}")
}

fn volume_name(id: &str) -> String {
    format!("berth-{id}-home")
}

fn is_not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

fn is_not_modified(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 304, .. })
}

fn map_err(e: DockerError) -> RuntimeError {
    match e {
        // A Linux bridge takes at most 1024 ports: the 1024th container on one network fails.
        DockerError::DockerResponseServerError { message, .. } if message.contains("exchange full") => {
            RuntimeError::Full(format!(
                "the instances' network is full: a Linux bridge holds at most 1023 running containers \
                 (Docker: {message}); stop or delete instances, or run another server with its own --network"
            ))
        }
        DockerError::DockerResponseServerError { status_code, message } => {
            RuntimeError::Failed(format!("docker answered {status_code}: {message}"))
        }
        DockerError::HyperResponseError { .. }
        | DockerError::IOError { .. }
        | DockerError::RequestTimeoutError
        | DockerError::SocketNotFoundError(_) => RuntimeError::Unavailable(e.to_string()),
        other => RuntimeError::Failed(other.to_string()),
    }
}

/// Docker's RFC 3339 times drop trailing zeros of the fraction; pad it to nine
/// digits so that times compare correctly as text.
fn sortable_time(t: &str) -> String {
    let Some((secs, rest)) = t.split_once('.') else { return t.to_string() };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let zone = &rest[digits.len()..];
    format!("{secs}.{digits:0<9}{zone}")
}

/// Bytes per second a home device may be read or written at, per size unit.
const HOME_BPS_PER_SIZE: i64 = 100 << 20;
/// Reads or writes per second on a home device, per size unit.
const HOME_IOPS_PER_SIZE: i64 = 2000;

/// Block I/O limits (bytes/s, operations/s) on an instance's home device: one tenant
/// cannot take all of the host's disk bandwidth from the others.
pub(super) fn io_limits(size: &SizeSpec, device: &str) -> (Vec<ThrottleDevice>, Vec<ThrottleDevice>) {
    let dev = |rate| vec![ThrottleDevice { path: Some(device.to_string()), rate: Some(rate) }];
    (dev(HOME_BPS_PER_SIZE * i64::from(size.size)), dev(HOME_IOPS_PER_SIZE * i64::from(size.size)))
}

/// The CPU and memory settings of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// CPU quota, clamped to the host's CPUs (Docker refuses more).
    pub nano_cpus: i64,
    /// CPU weight under contention (1024 per guaranteed vCPU).
    pub cpu_shares: i64,
    /// Hard memory limit (and memory + swap: no swap).
    pub memory: i64,
    /// Soft limit, reclaimed above first: the guarantee (the limit itself when
    /// there is no separate guarantee). Never 0: an update ignores 0, which would
    /// keep a previous, larger reservation and make the next start fail.
    pub memory_reservation: i64,
    pub pids: i64,
}

/// What a size (or an instance's own resources) gives a container.
pub(super) fn limits(size: &SizeSpec, resources: Option<&Resources>, host_cpus: u32) -> Limits {
    let r = Resources::effective(size, resources);
    let nano_cpus = i64::from(r.cpu_limit_millis).min(i64::from(host_cpus.max(1)) * 1000) * 1_000_000;
    let mib = 1024 * 1024;
    Limits {
        nano_cpus,
        cpu_shares: (i64::from(r.cpu_millis) * 1024 / 1000).max(2),
        memory: (r.memory_limit_mb * mib) as i64,
        memory_reservation: (r.memory_mb.min(r.memory_limit_mb) * mib) as i64,
        pids: size.pids,
    }
}

/// How long a create waits for the pull of its image (the pull itself goes on).
const PULL_TIMEOUT: Duration = Duration::from_secs(120);

impl DockerRuntime {
    /// Connects to the daemon named by `DOCKER_HOST` (or the local socket) and
    /// negotiates the API version, so older engines (Debian's 20.10) work.
    pub async fn connect(mut cfg: DockerConfig) -> Result<Self> {
        let docker = Docker::connect_with_defaults().map_err(map_err)?;
        let docker = docker.negotiate_version().await.map_err(map_err)?;
        if cfg.base_image.is_none() {
            let mut chosen = DEFAULT_BASE_IMAGES[0];
            for image in DEFAULT_BASE_IMAGES {
                if docker.inspect_image(image).await.is_ok() {
                    chosen = image;
                    break;
                }
            }
            cfg.base_image = Some(chosen.to_string());
        }
        let permits = FairGate::new(cfg.max_concurrent_calls);
        let read_permits = FairGate::new(cfg.max_concurrent_calls);
        let capacity = HostCapacity { cpus: 1, memory_bytes: 0 };
        let disks = match &cfg.disk_dir {
            Some(dir) => Some(
                disk::LoopDisks::new(dir.clone())
                    .map_err(|e| RuntimeError::Failed(format!("preparing {}: {e}", dir.display())))?,
            ),
            None => None,
        };
        Ok(Self {
            disks,
            docker,
            cfg,
            permits,
            read_permits,
            stats_cache: Default::default(),
            pulls: Default::default(),
            stats_locks: Default::default(),
            cpu_samples: Default::default(),
            exec_tokens: Default::default(),
            network_id: Default::default(),
            bridge: Default::default(),
            gateway: Default::default(),
            capacity: std::sync::RwLock::new(capacity),
        })
    }

    /// The system template's image (configured or chosen at connect).
    pub fn base_image(&self) -> &str {
        self.cfg.base_image.as_deref().unwrap_or(DEFAULT_BASE_IMAGES[0])
    }

    /// The underlying client, for callers in this crate's tests.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// A slot of the budget of calls that change something.
    async fn permit(&self) -> FairPermit<'_> {
        self.permits.acquire().await
    }

    /// A slot of the budget of calls that only look.
    async fn read_permit(&self) -> FairPermit<'_> {
        self.read_permits.acquire().await
    }

    /// Whether the container runs (or is paused); `None` when it does not exist.
    async fn is_up(&self, name: &str) -> Result<Option<(bool, bool)>> {
        let _p = self.read_permit().await;
        match self.docker.inspect_container(name, NO_INSPECT).await {
            Ok(info) => {
                let state = info.state.unwrap_or_default();
                Ok(Some((state.running.unwrap_or(false), state.paused.unwrap_or(false))))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Sends a signal to the container's main process (an absent or stopped one is fine).
    async fn signal(&self, name: &str, signal: &str) -> Result<()> {
        let _p = self.permit().await;
        let opts = bollard::query_parameters::KillContainerOptions { signal: signal.to_string() };
        match self.docker.kill_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // "is not running": already stopped.
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Polls (holding no permit while it waits) until the container is down or `limit` passed.
    async fn wait_down(&self, name: &str, limit: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.is_up(name).await? {
                None | Some((false, _)) => return Ok(true),
                Some(_) if tokio::time::Instant::now() >= deadline => return Ok(false),
                Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Makes sure `image` is on the host, pulling it when missing.
    async fn ensure_image(&self, image: &str) -> Result<()> {
        {
            let _p = self.permit().await;
            match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        let outcome = tokio::time::timeout(PULL_TIMEOUT, self.pulls.pull(&self.docker, image)).await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(RuntimeError::ImageMissing {
                image: image.into(),
                detail: if image == self.base_image() {
                    format!("pull failed ({e}); build it locally with scripts/build-images.sh --base-only")
                } else {
                    format!("pull failed ({e}); pull or build it on the Docker host (docker pull, docker build)")
                },
            }),
            Err(_) => Err(RuntimeError::ImageMissing {
                image: image.into(),
                detail: format!(
                    "the pull did not end within {} s; it goes on meanwhile (the template shows its progress): try again later",
                    PULL_TIMEOUT.as_secs()
                ),
            }),
        }
    }

    fn labels(&self, spec: &InstanceSpec) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_INSTANCE.to_string(), spec.id.to_string()),
            (LABEL_WORKSPACE.to_string(), spec.workspace_id.to_string()),
            (LABEL_INSTALL.to_string(), self.cfg.install_id.clone()),
        ])
    }

    /// (created, id) of every network named exactly `cfg.network`.
    async fn networks_named(&self) -> Result<Vec<(String, String)>> {
        let opts = bollard::query_parameters::ListNetworksOptions {
            filters: Some(HashMap::from([("name".to_string(), vec![self.cfg.network.clone()])])),
        };
        let found = self.docker.list_networks(Some(opts)).await.map_err(map_err)?;
        Ok(found
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(self.cfg.network.as_str()))
            .filter_map(|n| Some((sortable_time(&n.created.map(|c| c.to_string()).unwrap_or_default()), n.id?)))
            .collect())
    }

    fn network_ref(&self) -> String {
        let id = self.network_id.read().unwrap_or_else(|e| e.into_inner()).clone();
        if id.is_empty() {
            self.cfg.network.clone()
        } else {
            id
        }
    }

    /// The agent's address and the IPv6 address of a container on the instances' network.
    fn addresses(
        &self,
        networks: Option<&HashMap<String, bollard::models::EndpointSettings>>,
    ) -> (Option<SocketAddr>, Option<std::net::Ipv6Addr>) {
        let endpoint = networks.and_then(|nets| nets.get(&self.cfg.network));
        let agent_addr = endpoint
            .and_then(|ep| ep.ip_address.as_deref())
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, AGENT_PORT));
        let ipv6_addr = endpoint.and_then(|ep| ep.global_ipv6_address.as_deref()).and_then(|ip| ip.parse().ok());
        (agent_addr, ipv6_addr)
    }

    /// A container's state as a listing tells it (see [`ManagedContainer::state`]).
    fn listed_state(&self, c: &bollard::models::ContainerSummary) -> ContainerState {
        use bollard::models::ContainerSummaryStateEnum as S;
        let status = c.status.as_deref().unwrap_or_default();
        let observed = match c.state {
            Some(S::RUNNING) if status.contains("(Paused)") => Observed::Paused,
            Some(S::RUNNING) => Observed::Running,
            Some(S::PAUSED) => Observed::Paused,
            Some(S::CREATED) => Observed::Created,
            Some(S::EXITED) => Observed::Exited { code: listed_exit_code(status).unwrap_or(-1), oom_killed: false },
            other => Observed::Other(other.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())),
        };
        let (agent_addr, ipv6_addr) = self.addresses(c.network_settings.as_ref().and_then(|n| n.networks.as_ref()));
        ContainerState { observed, agent_addr, started_at: None, ipv6_addr }
    }

    fn install_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_string(), vec![format!("{LABEL_INSTALL}={}", self.cfg.install_id)])])
    }

    async fn remove_container_named(&self, name: &str) -> Result<()> {
        let _p = self.permit().await;
        let opts = RemoveContainerOptions { force: true, v: false, link: false };
        match self.docker.remove_container(name, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // Removal already under way: wait for it to finish.
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {
                drop(_p);
                for _ in 0..50 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _p = self.permit().await;
                    if let Err(e) = self.docker.inspect_container(name, NO_INSPECT).await {
                        if is_not_found(&e) {
                            return Ok(());
                        }
                    }
                }
                Err(RuntimeError::Failed(format!("container {name} could not be removed")))
            }
            Err(e) => Err(map_err(e)),
        }
    }

    /// Whether a volume exists, and then the loop device it is mounted from
    /// (`Some(None)`: a plain volume).
    async fn inspect_home(&self, name: &str) -> Result<Option<Option<String>>> {
        let _p = self.read_permit().await;
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v.options.get("device").cloned())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(map_err(e)),
        }
    }

    /// The loop device a home volume is mounted from (`None`: a plain volume, or none).
    async fn volume_device(&self, name: &str) -> Result<Option<String>> {
        Ok(self.inspect_home(name).await?.flatten())
    }

    /// Makes the home volume of `spec`: a loop-backed filesystem of its size when
    /// enabled (a plain volume made before that is kept, data first), else plain.
    /// Answers the volume and its loop device, if it has one.
    async fn ensure_volume(
        &self,
        spec: &InstanceSpec,
        labels: &HashMap<String, String>,
    ) -> Result<(String, Option<String>)> {
        let volume = volume_name(spec.id.as_str());
        let mut driver_opts = None;
        let mut device = None;
        if let Some(disks) = &self.disks {
            let named = match self.inspect_home(&volume).await? {
                // A plain volume from before quotas: its data stays where it is.
                Some(None) => return Ok((volume, None)),
                Some(Some(named)) => Some(named),
                None => None,
            };
            let dev = disks.ensure(spec.id.as_str(), spec.size.disk_gb * GIB).await?;
            if named.as_ref() == Some(&dev) {
                return Ok((volume, Some(dev)));
            }
            if named.is_some() {
                // Attached elsewhere since (a reboot): the volume is only a mount
                // description; the data is in the image. Describe it again.
                self.remove_volume_named(&volume).await?;
            }
            driver_opts =
                Some(HashMap::from([("type".to_string(), "ext4".to_string()), ("device".to_string(), dev.clone())]));
            device = Some(dev);
        }
        let _p = self.permit().await;
        let opts = VolumeCreateOptions {
            name: Some(volume.clone()),
            labels: Some(labels.clone()),
            driver: driver_opts.as_ref().map(|_| "local".to_string()),
            driver_opts,
            ..Default::default()
        };
        self.docker.create_volume(opts).await.map_err(map_err)?;
        Ok((volume, device))
    }

    /// Removes a home volume, and its image when loop-backed.
    async fn remove_home(&self, id: &str) -> Result<()> {
        self.remove_volume_named(&volume_name(id)).await?;
        match &self.disks {
            Some(disks) => disks.release(id).await,
            None => Ok(()),
        }
    }

    async fn remove_volume_named(&self, name: &str) -> Result<()> {
        let _p = self.permit().await;
        // Not forced: Docker then reports a volume it cannot remove (in use) instead of
        // answering success and keeping it.
        match self.docker.remove_volume(name, Some(RemoveVolumeOptions { force: false })).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn host_interface(&self) -> Option<String> {
        let name = self.bridge.read().unwrap_or_else(|e| e.into_inner()).0.clone();
        (!name.is_empty()).then_some(name)
    }

    fn host_subnets(&self) -> Vec<String> {
        self.bridge.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    fn host_address(&self) -> Option<std::net::IpAddr> {
        *self.gateway.read().unwrap_or_else(|e| e.into_inner())
    }

    async fn network_addresses(&self) -> Result<Option<std::collections::HashSet<IpAddr>>> {
        let _p = self.read_permit().await;
        let net = self
            .docker
            .inspect_network(&self.network_ref(), None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
            .map_err(map_err)?;
        let held = net
            .containers
            .unwrap_or_default()
            .values()
            .flat_map(|c| [c.ipv4_address.as_deref(), c.ipv6_address.as_deref()])
            .flatten()
            .filter_map(|a| a.split('/').next()?.parse().ok())
            .collect();
        Ok(Some(held))
    }

    fn pull_progress(&self, image: &str) -> Option<crate::PullProgress> {
        self.pulls.progress(image)
    }

    fn capacity(&self) -> HostCapacity {
        *self.capacity.read().unwrap_or_else(|e| e.into_inner())
    }

    async fn ping(&self) -> Result<()> {
        // No permit: /healthz must not queue behind tenants' calls.
        self.docker.ping().await.map(|_| ()).map_err(map_err)
    }

    async fn prepare(&self) -> Result<()> {
        if !self.cfg.agent_bin.is_file() {
            return Err(RuntimeError::Failed(format!(
                "agent binary {} not found (build it with scripts/build-agent.sh, or pass --agent-bin)",
                self.cfg.agent_bin.display()
            )));
        }
        if self.cfg.tune_host {
            tune_host();
        }
        let _p = self.permit().await;
        let info = self.docker.info().await.map_err(map_err)?;
        if let Some(name) = &self.cfg.oci_runtime {
            let known = info.runtimes.as_ref().is_some_and(|r| r.contains_key(name));
            if !known {
                return Err(RuntimeError::Failed(format!(
                    "dockerd has no runtime `{name}`: register it in /etc/docker/daemon.json, e.g. \
                     {{\"runtimes\": {{\"{name}\": {{\"path\": \"/usr/bin/runsc\", \"runtimeArgs\": [\"--network=host\"]}}}}}} \
                     (Debian: apt-get install runsc), then reload dockerd (SIGHUP)"
                )));
            }
        }
        *self.capacity.write().unwrap_or_else(|e| e.into_inner()) = HostCapacity {
            cpus: info.ncpu.unwrap_or(1).max(1) as u32,
            memory_bytes: info.mem_total.unwrap_or(0).max(0) as u64,
        };
        let mut nets = self.networks_named().await?;
        if nets.is_empty() {
            let req = NetworkCreateRequest {
                name: self.cfg.network.clone(),
                driver: Some("bridge".into()),
                // Instances must not reach each other: no inter-container traffic.
                options: Some(HashMap::from([("com.docker.network.bridge.enable_icc".into(), "false".into())])),
                labels: Some(HashMap::from([(NETWORK_LABEL.into(), "instances".into())])),
                ..Default::default()
            };
            self.docker.create_network(req).await.map_err(map_err)?;
            nets = self.networks_named().await?;
        }
        // Docker allows several networks of one name; servers starting at once may
        // each have made one. All of them keep the oldest and remove the rest.
        nets.sort();
        let Some((_, winner)) = nets.first().cloned() else {
            return Err(RuntimeError::Failed(format!("network {} could not be created", self.cfg.network)));
        };
        for (_, loser) in nets.iter().skip(1) {
            let _ = self.docker.remove_network(loser).await;
        }
        let net = self
            .docker
            .inspect_network(&winner, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
            .map_err(map_err)?;
        let bridge = check_network(&self.cfg.network, &winner, &net).map_err(RuntimeError::Failed)?;
        *self.bridge.write().unwrap_or_else(|e| e.into_inner()) = bridge;
        *self.gateway.write().unwrap_or_else(|e| e.into_inner()) = network_gateway(&net);
        *self.network_id.write().unwrap_or_else(|e| e.into_inner()) = winner;
        Ok(())
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<()> {
        let image = spec.image.clone().unwrap_or_else(|| self.base_image().to_string());
        self.ensure_image(&image).await?;
        let labels = self.labels(spec);
        let name = container_name(&spec.id);
        // The old container first: a home volume in use cannot be described again.
        self.remove_container_named(&name).await?;
        let (volume, home_device) = self.ensure_volume(spec, &labels).await?;
        let io = home_device.as_deref().map(|d| io_limits(&spec.size, d));
        let host = spec::Host {
            cpus: self.capacity().cpus,
            network: self.network_ref(),
            agent_bin: &self.cfg.agent_bin,
            home_io: io,
            oci_runtime: self.cfg.oci_runtime.clone(),
            ca_bundle: self.cfg.ca_bundle.as_deref(),
        };
        let body = spec::container_body(&host, spec, image, volume, labels);
        let _p = self.permit().await;
        let opts = CreateContainerOptions { name: Some(name), platform: String::new() };
        self.docker.create_container(Some(opts), body).await.map_err(map_err)?;
        Ok(())
    }

    async fn start(&self, id: &InstanceId) -> Result<()> {
        if let Some(disks) = &self.disks {
            if let Some(device) = self.volume_device(&volume_name(id.as_str())).await? {
                disks.reattach(id.as_str(), &device).await?;
                // A growth the kernel refused online is done now, while nothing mounts it.
                disks.grow_fs(&device).await?;
            }
        }
        let _p = self.permit().await;
        match self
            .docker
            .start_container(&container_name(id), None::<bollard::query_parameters::StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_modified(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn stop(&self, id: &InstanceId) -> Result<()> {
        // SIGTERM, then poll, then SIGKILL: no Engine API call (and no permit) is held
        // for the grace period, as Docker's own blocking stop would.
        let name = container_name(id);
        match self.is_up(&name).await? {
            None | Some((false, _)) => return Ok(()),
            Some((true, true)) => {
                // A paused container cannot receive SIGTERM: thaw it first.
                let _p = self.permit().await;
                let _ = self.docker.unpause_container(&name).await;
            }
            Some(_) => {}
        }
        self.signal(&name, "SIGTERM").await?;
        let grace = Duration::from_secs(self.cfg.stop_grace_secs.max(0) as u64);
        if self.wait_down(&name, grace).await? {
            return Ok(());
        }
        self.signal(&name, "SIGKILL").await?;
        if self.wait_down(&name, Duration::from_secs(10)).await? {
            return Ok(());
        }
        Err(RuntimeError::Failed(format!("container {name} did not stop after SIGKILL")))
    }

    async fn pause(&self, id: &InstanceId) -> Result<()> {
        let _p = self.permit().await;
        self.docker.pause_container(&container_name(id)).await.map_err(map_err)
    }

    async fn resume(&self, id: &InstanceId) -> Result<()> {
        let _p = self.permit().await;
        self.docker.unpause_container(&container_name(id)).await.map_err(map_err)
    }

    async fn resize(&self, id: &InstanceId, size: &SizeSpec, resources: Option<&Resources>) -> Result<()> {
        let l = limits(size, resources, self.capacity().cpus);
        let device = match &self.disks {
            Some(_) => self.volume_device(&volume_name(id.as_str())).await?,
            None => None,
        };
        let (bps, iops) = device.as_deref().map(|d| io_limits(size, d)).unzip();
        let body = ContainerUpdateBody {
            nano_cpus: Some(l.nano_cpus),
            cpu_shares: Some(l.cpu_shares),
            memory: Some(l.memory),
            memory_swap: Some(l.memory),
            memory_reservation: Some(l.memory_reservation),
            pids_limit: Some(l.pids),
            blkio_device_read_bps: bps.clone(),
            blkio_device_write_bps: bps,
            blkio_device_read_iops: iops.clone(),
            blkio_device_write_iops: iops,
            ..Default::default()
        };
        {
            let _p = self.permit().await;
            self.docker.update_container(&container_name(id), body).await.map_err(map_err)?;
        }
        if let (Some(disks), Some(device)) = (&self.disks, device) {
            disks.grow(id.as_str(), &device, size.disk_gb * GIB).await?;
        }
        Ok(())
    }

    async fn remove(&self, id: &InstanceId) -> Result<()> {
        self.remove_container_named(&container_name(id)).await
    }

    async fn purge(&self, id: &InstanceId) -> Result<()> {
        self.remove_container_named(&container_name(id)).await?;
        self.remove_home(id.as_str()).await
    }

    async fn inspect(&self, id: &InstanceId) -> Result<ContainerState> {
        let _p = self.read_permit().await;
        let info = match self.docker.inspect_container(&container_name(id), NO_INSPECT).await {
            Ok(info) => info,
            Err(e) if is_not_found(&e) => {
                return Ok(ContainerState {
                    observed: Observed::Missing,
                    agent_addr: None,
                    started_at: None,
                    ipv6_addr: None,
                })
            }
            Err(e) => return Err(map_err(e)),
        };
        let state = info.state.unwrap_or_default();
        let observed = match state.status {
            Some(ContainerStateStatusEnum::RUNNING) if state.paused == Some(true) => Observed::Paused,
            Some(ContainerStateStatusEnum::RUNNING) => Observed::Running,
            Some(ContainerStateStatusEnum::PAUSED) => Observed::Paused,
            Some(ContainerStateStatusEnum::CREATED) => Observed::Created,
            Some(ContainerStateStatusEnum::EXITED) => {
                Observed::Exited { code: state.exit_code.unwrap_or(-1), oom_killed: state.oom_killed.unwrap_or(false) }
            }
            other => Observed::Other(other.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into())),
        };
        let (agent_addr, ipv6_addr) = self.addresses(info.network_settings.as_ref().and_then(|n| n.networks.as_ref()));
        let started_at = state.started_at.as_deref().and_then(berth_core::time::parse_rfc3339).filter(|t| *t > 0);
        Ok(ContainerState { observed, agent_addr, started_at, ipv6_addr })
    }

    async fn list(&self) -> Result<Vec<ManagedContainer>> {
        let opts = ListContainersOptions { all: true, filters: Some(self.install_filter()), ..Default::default() };
        let _p = self.read_permit().await;
        let found = self.docker.list_containers(Some(opts)).await.map_err(map_err)?;
        Ok(found
            .into_iter()
            .filter_map(|c| {
                let instance_id = c.labels.as_ref()?.get(LABEL_INSTANCE)?.clone();
                let state = self.listed_state(&c);
                Some(ManagedContainer { instance_id, name: c.id?, state })
            })
            .collect())
    }

    async fn list_volumes(&self) -> Result<Vec<String>> {
        let opts = ListVolumesOptions { filters: Some(self.install_filter()) };
        let _p = self.read_permit().await;
        let found = self.docker.list_volumes(Some(opts)).await.map_err(map_err)?;
        Ok(found
            .volumes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| v.labels.get(LABEL_INSTANCE).cloned())
            .collect())
    }

    async fn remove_orphan(&self, c: &ManagedContainer) -> Result<()> {
        self.remove_container_named(&c.name).await
    }

    async fn remove_orphan_volume(&self, instance_id: &str) -> Result<()> {
        self.remove_home(instance_id).await
    }

    fn disk_quota(&self) -> bool {
        self.disks.is_some()
    }

    fn calls(&self) -> (u64, u64) {
        (self.read_permits.asked(), self.permits.asked())
    }

    async fn exec(&self, id: &InstanceId, req: ExecRequest) -> Result<ExecSession> {
        exec::start(self, &container_name(id), req).await
    }

    async fn exec_status(&self, exec_id: &str) -> Result<Option<i64>> {
        let code = exec::status(self, exec_id).await?;
        if code.is_some() {
            exec::forget(self, exec_id);
        }
        Ok(code)
    }

    async fn exec_kill(&self, exec_id: &str) -> Result<()> {
        exec::kill_tree(self, exec_id).await
    }

    async fn exec_resize(&self, exec_id: &str, cols: u16, rows: u16) -> Result<()> {
        exec::resize(self, exec_id, cols, rows).await
    }

    async fn logs(
        &self,
        id: &InstanceId,
        query: LogQuery,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<LogLine>>> {
        Ok(observe::logs(self, &container_name(id), query))
    }

    async fn stats(&self, id: &InstanceId) -> Result<Stats> {
        let name = container_name(id);
        let fresh = |rt: &Self| {
            let cache = rt.stats_cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.get(&name).filter(|(at, _)| at.elapsed() < STATS_TTL).map(|(_, s)| s.clone())
        };
        if let Some(s) = fresh(self) {
            return Ok(s);
        }
        // One call per container at a time; the others wait for it and use its answer.
        let lock = {
            let mut locks = self.stats_locks.lock().unwrap_or_else(|e| e.into_inner());
            if locks.len() > 10_000 {
                locks.retain(|_, l| Arc::strong_count(l) > 1);
            }
            locks.entry(name.clone()).or_default().clone()
        };
        let _one = lock.lock().await;
        if let Some(s) = fresh(self) {
            return Ok(s);
        }
        let s = observe::stats(self, &name).await?;
        let mut cache = self.stats_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < STATS_TTL);
        }
        cache.insert(name, (std::time::Instant::now(), s.clone()));
        Ok(s)
    }

    async fn build_image(
        &self,
        req: crate::build::BuildRequest,
        log: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<()> {
        build::build(self, req, log).await
    }

    async fn remove_image(&self, image: &str) -> Result<()> {
        build::remove(self, image).await
    }

    async fn attach(&self, id: &InstanceId) -> Result<ExecSession> {
        exec::attach(self, &container_name(id)).await
    }

    async fn events(&self) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        // A long-lived stream: it holds no permit of the Engine API semaphore.
        let mut filters = self.install_filter();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert(
            "event".into(),
            ["start", "die", "pause", "unpause", "destroy"].iter().map(|s| s.to_string()).collect(),
        );
        let opts = bollard::query_parameters::EventsOptions { since: None, until: None, filters: Some(filters) };
        let stream = self.docker.events(Some(opts)).filter_map(|ev| async move {
            let ev = match ev {
                Ok(ev) => ev,
                Err(e) => return Some(Err(map_err(e))),
            };
            let kind = match ev.action.as_deref()? {
                "start" => RuntimeEventKind::Started,
                "die" => RuntimeEventKind::Died,
                "pause" => RuntimeEventKind::Paused,
                "unpause" => RuntimeEventKind::Unpaused,
                "destroy" => RuntimeEventKind::Destroyed,
                _ => return None,
            };
            let instance_id = ev.actor?.attributes?.remove(LABEL_INSTANCE)?;
            Some(Ok(RuntimeEvent { instance_id, kind }))
        });
        Ok(stream.boxed())
    }
}

#[cfg(test)]
mod network_tests {
    use super::check_network;
    use bollard::models::{Ipam, IpamConfig, Network};
    use std::collections::HashMap;

    fn net(driver: &str, opts: &[(&str, &str)], labelled: bool) -> Network {
        Network {
            driver: Some(driver.into()),
            options: Some(opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            labels: Some(if labelled {
                HashMap::from([("berth.network".into(), "instances".into())])
            } else {
                HashMap::new()
            }),
            ipam: Some(Ipam {
                config: Some(vec![IpamConfig { subnet: Some("172.30.0.0/16".into()), ..Default::default() }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const ICC_OFF: (&str, &str) = ("com.docker.network.bridge.enable_icc", "false");

    #[test]
    fn only_berths_isolated_bridges_are_adopted() {
        let id = "0123456789abcdef";
        assert_eq!(
            check_network("n", id, &net("bridge", &[ICC_OFF], true)).unwrap(),
            ("br-0123456789ab".to_string(), vec!["172.30.0.0/16".to_string()])
        );
        let named = net("bridge", &[ICC_OFF, ("com.docker.network.bridge.name", "berth0")], true);
        assert_eq!(check_network("n", id, &named).unwrap().0, "berth0");
        let e = check_network("mine", id, &net("overlay", &[ICC_OFF], true)).unwrap_err();
        assert!(e.contains("`mine`") && e.contains("overlay"), "{e}");
        let e = check_network("mine", id, &net("bridge", &[], true)).unwrap_err();
        assert!(e.contains("`mine`") && e.contains("enable_icc is unset"), "{e}");
        let e = check_network("mine", id, &net("bridge", &[("com.docker.network.bridge.enable_icc", "true")], true))
            .unwrap_err();
        assert!(e.contains("\"true\""), "{e}");
        let e = check_network("mine", id, &net("bridge", &[ICC_OFF], false)).unwrap_err();
        assert!(e.contains("`mine`") && e.contains("not made by berth"), "{e}");
    }
}

#[cfg(test)]
mod listing_tests {
    #[test]
    fn a_listings_status_gives_the_exit_code() {
        assert_eq!(super::listed_exit_code("Exited (137) 5 minutes ago"), Some(137));
        assert_eq!(super::listed_exit_code("Exited (0) Less than a second ago"), Some(0));
        assert_eq!(super::listed_exit_code("Up 2 hours (Paused)"), None);
        assert_eq!(super::listed_exit_code("Created"), None);
    }

    #[test]
    fn a_full_bridge_is_a_lack_of_room_not_a_broken_runtime() {
        let e = super::map_err(bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "failed to create endpoint berth-x on network berth: adding interface veth1 to bridge br-1 failed: exchange full".into(),
        });
        assert!(matches!(&e, crate::RuntimeError::Full(m) if m.contains("1023")), "{e}");
    }
}
