//! The container an instance runs in: hardened host config, limits, the injected agent.

use super::{limits, DockerRuntime, AGENT_PATH, KEPT_CAPS};
use crate::Runtime;
use crate::{InstanceSpec, AGENT_PORT, HOME_DIR};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountTypeEnum, NetworkingConfig,
    RestartPolicy, RestartPolicyNameEnum,
};
use std::collections::HashMap;

/// The create body of an instance's container: not privileged, capabilities dropped
/// to [`KEPT_CAPS`], `no-new-privileges`, an init as PID 1, size limits, the home
/// volume and the read-only agent binary as the only mounts.
pub(super) fn container_body(
    rt: &DockerRuntime,
    spec: &InstanceSpec,
    image: String,
    volume: String,
    labels: HashMap<String, String>,
) -> ContainerCreateBody {
    let mut env: Vec<String> =
        spec.env.iter().filter(|(k, _)| !k.starts_with("BERTH_INSTANCE")).map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("HOME={HOME_DIR}"));
    env.push(format!("BERTH_INSTANCE_ID={}", spec.id));
    let (nano_cpus, memory, pids) = limits(&spec.size, rt.capacity().cpus);
    let host_config = HostConfig {
        nano_cpus: Some(nano_cpus),
        memory: Some(memory),
        memory_swap: Some(memory),
        pids_limit: Some(pids),
        // Under memory pressure the kernel kills an instance before dockerd or berth.
        oom_score_adj: Some(500),
        init: Some(true),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(KEPT_CAPS.iter().map(|c| c.to_string()).collect()),
        security_opt: Some(vec!["no-new-privileges:true".into()]),
        privileged: Some(false),
        network_mode: Some(rt.network_ref()),
        restart_policy: Some(RestartPolicy { name: Some(RestartPolicyNameEnum::NO), maximum_retry_count: None }),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".into()),
            config: Some(HashMap::from([("max-size".into(), "10m".into()), ("max-file".into(), "3".into())])),
        }),
        mounts: Some(vec![
            Mount {
                target: Some(HOME_DIR.into()),
                source: Some(volume),
                typ: Some(MountTypeEnum::VOLUME),
                ..Default::default()
            },
            Mount {
                target: Some(AGENT_PATH.into()),
                source: Some(rt.cfg.agent_bin.display().to_string()),
                typ: Some(MountTypeEnum::BIND),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let body = ContainerCreateBody {
        image: Some(image),
        hostname: Some(spec.id.label().to_string()),
        entrypoint: Some(vec![AGENT_PATH.into()]),
        cmd: Some(vec![
            "--listen".into(),
            format!("0.0.0.0:{AGENT_PORT}"),
            "--data".into(),
            format!("{HOME_DIR}/.berth"),
        ]),
        env: Some(env),
        working_dir: Some(HOME_DIR.into()),
        labels: Some(labels),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(rt.network_ref(), EndpointSettings::default())])),
        }),
        ..Default::default()
    };
    body
}
