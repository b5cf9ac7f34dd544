//! The container an instance runs in: hardened host config, limits, the injected agent.

use super::{limits, AGENT_PATH, KEPT_CAPS};
use crate::build::CA_PATH;
use crate::instance::{client_env, main_program, own_env};
use crate::{InstanceSpec, HOME_DIR};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountTypeEnum, MountVolumeOptions,
    NetworkingConfig, RestartPolicy, RestartPolicyNameEnum, ThrottleDevice,
};
use std::collections::HashMap;
use std::path::Path;

/// What of the host a container body depends on.
pub(super) struct Host<'a> {
    /// CPUs of the Docker host (CPU limits are clamped to them).
    pub cpus: u32,
    /// Id (or name) of the instances' network.
    pub network: String,
    /// Host path of the static agent binary.
    pub agent_bin: &'a Path,
    /// Block I/O limits on the home device (bytes/s, operations/s), when it is one.
    pub home_io: Option<(Vec<ThrottleDevice>, Vec<ThrottleDevice>)>,
    /// OCI runtime to run under (`runsc`), `None` for the daemon's default.
    pub oci_runtime: Option<String>,
    /// Host path of the CA bundle mounted read-only at [`CA_PATH`], when there is one.
    pub ca_bundle: Option<&'a Path>,
}

/// The create body of an instance's container: not privileged, capabilities dropped
/// to [`KEPT_CAPS`], `no-new-privileges`, an init as PID 1, size limits, the home
/// volume and the read-only agent binary as the only mounts.
pub(super) fn container_body(
    host: &Host<'_>,
    spec: &InstanceSpec,
    image: String,
    volume: String,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    let mut env: Vec<String> = client_env(spec).map(|(k, v)| format!("{k}={v}")).collect();
    env.extend(own_env(spec, host.ca_bundle.is_some()).into_iter().map(|(k, v)| format!("{k}={v}")));
    let l = limits(&spec.size, spec.resources.as_ref(), host.cpus);
    let (bps, iops) = host.home_io.clone().unzip();
    let host_config = HostConfig {
        runtime: host.oci_runtime.clone(),
        blkio_device_read_bps: bps.clone(),
        blkio_device_write_bps: bps,
        blkio_device_read_iops: iops.clone(),
        blkio_device_write_iops: iops,
        nano_cpus: Some(l.nano_cpus),
        cpu_shares: Some(l.cpu_shares),
        memory: Some(l.memory),
        memory_swap: Some(l.memory),
        memory_reservation: Some(l.memory_reservation),
        pids_limit: Some(l.pids),
        // Under memory pressure the kernel kills an instance before dockerd or berth.
        oom_score_adj: Some(500),
        init: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(KEPT_CAPS.iter().map(|c| c.to_string()).collect()),
        security_opt: Some(vec!["no-new-privileges".into()]),
        privileged: Some(false),
        network_mode: Some(host.network.clone()),
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([("max-size".into(), "10m".into()), ("max-file".into(), "3".into())])),
        }),
        mounts: Some(mounts(host, volume, &labels)),
        ..Default::default()
    };
    let (entrypoint, cmd, working_dir) = main_program(spec);
    let body = ContainerCreateBody {
        // A stdin template's main program reads a standard input that stays open
        // between attaches (`POST /v1/instances/{id}/stdin`).
        open_stdin: spec.stdin.then_some(true),
        stdin_once: spec.stdin.then_some(false),
        image: Some(image),
        hostname: Some(spec.id.label().to_string()),
        entrypoint,
        cmd,
        env: Some(env),
        working_dir,
        labels: Some(labels),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(host.network.clone(), EndpointSettings::default())])),
        }),
        ..Default::default()
    };
    body
}

/// The home volume, the read-only agent binary and, when there is one, the read-only
/// CA bundle: nothing else of the host.
///
/// The home carries the instance's labels in its volume options: Docker creates a
/// missing volume with them. The volume is made (labelled) before the container, but
/// when it is removed meanwhile (a delete racing a start), the container's create
/// makes it again — labelled, so the reconciler and a purge still find it.
fn mounts(host: &Host<'_>, volume: String, labels: &HashMap<String, String>) -> Vec<Mount> {
    let bind = |source: &Path, target: &str| Mount {
        target: Some(target.into()),
        source: Some(source.display().to_string()),
        typ: Some(MountTypeEnum::BIND),
        read_only: Some(true),
        ..Default::default()
    };
    let mut mounts = vec![
        Mount {
            target: Some(HOME_DIR.into()),
            source: Some(volume),
            typ: Some(MountTypeEnum::VOLUME),
            volume_options: Some(MountVolumeOptions { labels: Some(labels.clone()), ..Default::default() }),
            ..Default::default()
        },
        bind(host.agent_bin, AGENT_PATH),
    ];
    mounts.extend(host.ca_bundle.map(|ca| bind(ca, CA_PATH)));
    mounts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{TOOL_USER, TOOL_USER_VAR};
    use crate::HOME_DIR;
    use berth_core::{size, InstanceId, WorkspaceId};
    use std::collections::BTreeMap;

    fn body(size: u32, env: &[(&str, &str)]) -> ContainerCreateBody {
        let spec = InstanceSpec {
            id: InstanceId::generate(),
            workspace_id: WorkspaceId::generate(),
            image: None,
            size: size::lookup(size).unwrap(),
            resources: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
            command: None,
            stdin: false,
            egress: Default::default(),
            agent: true,
        };
        let host = Host {
            cpus: 2,
            network: "net_1".into(),
            agent_bin: Path::new("/usr/lib/berth/berth-agent"),
            home_io: Some(super::super::io_limits(&berth_core::size::SIZES[0], "/dev/loop7")),
            oci_runtime: None,
            ca_bundle: Some(Path::new("/etc/ssl/certs/ca-certificates.crt")),
        };
        container_body(
            &host,
            &spec,
            "img".into(),
            "vol_1".into(),
            HashMap::from([("berth.install".into(), "x".into())]),
        )
    }

    #[test]
    fn an_instance_is_hardened_and_limited() {
        let b = body(1, &[]);
        let h = b.host_config.as_ref().unwrap();
        assert_eq!(h.privileged, Some(false));
        assert_eq!(h.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(h.cap_add.as_ref().unwrap().iter().all(|c| KEPT_CAPS.contains(&c.as_str())));
        assert!(!h.cap_add.as_ref().unwrap().iter().any(|c| c == "SYS_ADMIN" || c == "NET_ADMIN" || c == "NET_RAW"));
        assert_eq!(h.security_opt.as_deref(), Some(&["no-new-privileges".to_string()][..]));
        assert_eq!(h.init, Some(true), "an init reaps children and makes stop fast");
        let bps = h.blkio_device_write_bps.as_ref().expect("home writes are throttled");
        assert_eq!((bps[0].path.as_deref(), bps[0].rate), (Some("/dev/loop7"), Some(100 << 20)));
        assert_eq!(h.blkio_device_read_iops.as_ref().unwrap()[0].rate, Some(2000));
        // Positive: the kernel picks an instance before dockerd or berth (a negative
        // value needs CAP_SYS_RESOURCE and fails container creation).
        assert_eq!(h.oom_score_adj, Some(500));
        assert_eq!(h.memory, Some(2048 * 1024 * 1024));
        assert_eq!(h.memory_swap, h.memory, "no swap beyond the memory limit");
        assert!(h.pids_limit.unwrap() > 0);
        assert_eq!(h.network_mode.as_deref(), Some("net_1"));
        assert!(h.port_bindings.is_none(), "nothing is published on the host");
        let mounts = h.mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 3, "the home volume, the agent binary and the CA bundle, nothing else");
        let ca = mounts.iter().find(|m| m.target.as_deref() == Some(CA_PATH)).unwrap();
        assert_eq!((ca.read_only, ca.source.as_deref()), (Some(true), Some("/etc/ssl/certs/ca-certificates.crt")));
        let agent = mounts.iter().find(|m| m.target.as_deref() == Some(AGENT_PATH)).unwrap();
        assert_eq!(agent.read_only, Some(true));
        assert_eq!(agent.typ, Some(MountTypeEnum::BIND));
        let home = mounts.iter().find(|m| m.target.as_deref() == Some(HOME_DIR)).unwrap();
        assert_eq!((home.typ, home.source.as_deref()), (Some(MountTypeEnum::VOLUME), Some("vol_1")));
        // Made again by the container's create when removed meanwhile: labelled all the same.
        let made_with = home.volume_options.as_ref().and_then(|o| o.labels.as_ref()).unwrap();
        assert_eq!(made_with["berth.install"], "x");
        assert!(!mounts.iter().any(|m| m.source.as_deref().is_some_and(|s| s.contains("docker.sock"))));
        assert_eq!(b.entrypoint.as_deref(), Some(&[AGENT_PATH.to_string()][..]));
        assert_eq!(b.labels.as_ref().unwrap()["berth.install"], "x");
    }

    #[test]
    fn cpus_are_clamped_to_the_host_and_env_is_berths_own_last() {
        let b = body(8, &[("FOO", "bar"), ("BERTH_INSTANCE_ID", "forged"), ("BERTH_GATEWAY_TOKEN", "t")]);
        let h = b.host_config.as_ref().unwrap();
        assert_eq!(h.nano_cpus, Some(2_000_000_000), "size 8 gets the host's 2 CPUs");
        assert_eq!(h.memory, Some(16384 * 1024 * 1024));
        let env = b.env.unwrap();
        assert!(env.contains(&"FOO=bar".to_string()));
        assert!(env.contains(&"BERTH_GATEWAY_TOKEN=t".to_string()));
        assert!(!env.iter().any(|e| e == "BERTH_INSTANCE_ID=forged"), "{env:?}");
        assert_eq!(env.iter().filter(|e| e.starts_with("BERTH_INSTANCE_ID=")).count(), 1);
        assert!(env.contains(&format!("HOME={HOME_DIR}")));
        assert!(env.contains(&format!("BERTH_AGENT_TOOL_USER={TOOL_USER}")), "tools run unprivileged by default");
        assert!(env.contains(&format!("SSL_CERT_FILE={CA_PATH}")), "TLS clients trust the host's CA bundle");
        assert!(b.open_stdin.is_none(), "only stdin templates keep a standard input open");
    }

    fn body_of(agent: bool, command: Option<&[&str]>) -> ContainerCreateBody {
        let spec = InstanceSpec {
            id: InstanceId::generate(),
            workspace_id: WorkspaceId::generate(),
            image: Some("custom".into()),
            size: size::lookup(1).unwrap(),
            resources: None,
            env: BTreeMap::new(),
            command: command.map(|c| c.iter().map(|s| s.to_string()).collect()),
            stdin: false,
            egress: Default::default(),
            agent,
        };
        let host = Host {
            cpus: 2,
            network: "n".into(),
            agent_bin: Path::new("/a"),
            home_io: None,
            oci_runtime: None,
            ca_bundle: None,
        };
        container_body(&host, &spec, "custom".into(), "v".into(), HashMap::new())
    }

    #[test]
    fn resources_of_its_own_replace_the_sizes_cpu_and_memory() {
        let size = size::lookup(1).unwrap();
        let r =
            berth_core::Resources { cpu_millis: 500, memory_mb: 512, cpu_limit_millis: 1500, memory_limit_mb: 1024 };
        let l = limits(&size, Some(&r), 2);
        assert_eq!((l.nano_cpus, l.cpu_shares), (1_500_000_000, 512), "quota the limit, weight the guarantee");
        assert_eq!((l.memory, l.memory_reservation), (1024 << 20, 512 << 20));
        let l = limits(&size, None, 2);
        assert_eq!(
            (l.nano_cpus, l.memory, l.memory_reservation),
            (1_000_000_000, 2048 << 20, 2048 << 20),
            "the size's"
        );
        let big =
            berth_core::Resources { cpu_millis: 4000, memory_mb: 512, cpu_limit_millis: 4000, memory_limit_mb: 512 };
        assert_eq!(limits(&size, Some(&big), 2).nano_cpus, 2_000_000_000, "clamped to the host");
    }

    #[test]
    fn a_templates_command_runs_under_the_agent_or_instead_of_the_images() {
        // With the agent: the agent is PID 1's child and runs the command after `--`.
        let b = body_of(true, Some(&["python3", "-m", "http.server", "8000"]));
        assert_eq!(b.entrypoint.as_deref(), Some(&[AGENT_PATH.to_string()][..]));
        let cmd = b.cmd.unwrap();
        assert_eq!(cmd[cmd.len() - 5..], ["--", "python3", "-m", "http.server", "8000"]);
        // Without: the command replaces the image's entrypoint and command, and the
        // image keeps its working directory; nothing of the agent's settings.
        let b = body_of(false, Some(&["nginx", "-g", "daemon off;"]));
        assert_eq!(b.entrypoint.as_deref(), Some(&["nginx".to_string()][..]));
        assert_eq!(b.cmd.as_deref(), Some(&["-g".to_string(), "daemon off;".to_string()][..]));
        assert_eq!(b.working_dir, None);
        assert!(!b.env.unwrap().iter().any(|e| e.starts_with(TOOL_USER_VAR)));
        // No command and no agent: the image runs as `docker run` would run it; the agent
        // binary is still mounted (execs run under it).
        let b = body_of(false, None);
        assert_eq!((b.entrypoint, b.cmd), (None, None));
        let mounts = b.host_config.unwrap().mounts.unwrap();
        assert!(mounts.iter().any(|m| m.target.as_deref() == Some(AGENT_PATH)));
    }
}
