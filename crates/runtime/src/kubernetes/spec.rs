//! The objects of one instance: its home (a PersistentVolumeClaim), its definition (a
//! Secret holding the client's environment and the rendered Pod), the Pod, and a
//! NetworkPolicy. Pure functions of the spec and the driver's settings.

use crate::instance::{client_env, main_program, own_env, AGENT_PATH, KEPT_CAPS};
use crate::{InstanceSpec, AGENT_PORT, HOME_DIR, LABEL_INSTALL, LABEL_INSTANCE, LABEL_WORKSPACE};
use berth_core::{Egress, InstanceId, Resources, SizeSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, SeccompProfile, Secret, SecretEnvSource, SecurityContext, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use std::collections::BTreeMap;

/// Annotation of the definition Secret holding the Pod to run (JSON): `start` has only
/// the instance id, and a stopped instance has no Pod to read it from.
pub const POD_ANNOTATION: &str = "berth.pod";
/// Label of the definition Secret of an instance that is paused (its pod deleted).
pub const LABEL_PAUSED: &str = "berth.paused";
/// Label the server's own pods carry when berth runs in the cluster: the only pods an
/// instance accepts connections from.
pub const SERVER_LABEL: (&str, &str) = ("app.kubernetes.io/name", "berth");
/// Name of the instance's container in its pod.
pub const MAIN: &str = "main";
/// The shared volume the init container copies the agent into.
const AGENT_VOLUME: &str = "berth-agent";
/// Where that volume is mounted (the agent ends up at [`AGENT_PATH`]).
const AGENT_DIR: &str = "/opt/berth/bin";

/// What of the driver's settings the objects depend on.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `berth.install` label value.
    pub install_id: String,
    /// Image of the system template when the spec names none.
    pub base_image: String,
    /// Image holding only `/berth-agent` (the init container's).
    pub agent_image: String,
    /// StorageClass of homes; `None`: the cluster's default.
    pub storage_class: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when a pod is deleted.
    pub stop_grace_secs: i64,
    /// The address berth reaches pods from when it runs outside the cluster: allowed
    /// in by the instances' NetworkPolicy beside berth's own pods.
    pub server_address: Option<std::net::IpAddr>,
    /// The share (percent) of an instance's guaranteed CPU that its pod requests: the
    /// scheduler reserves requests, so 100 would place one size-1 instance per CPU,
    /// where Docker shares CPUs between instances by weight.
    pub cpu_request_percent: u32,
    /// The share (percent) of an instance's guaranteed memory its pod requests.
    pub memory_request_percent: u32,
}

/// The name of an instance's definition Secret and NetworkPolicy, and the prefix of
/// its pods' names (DNS-1123: the id's label).
pub fn definition_name(id: &InstanceId) -> String {
    format!("berth-{}", id.label())
}

/// The name of an instance's home claim.
pub fn claim_name(id: &InstanceId) -> String {
    format!("berth-{}-home", id.label())
}

/// The three labels of every object of an instance.
pub fn labels(setup: &Setup, spec: &InstanceSpec) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTALL.to_string(), setup.install_id.clone()),
        (LABEL_INSTANCE.to_string(), spec.id.to_string()),
        (LABEL_WORKSPACE.to_string(), spec.workspace_id.to_string()),
    ])
}

fn meta(name: String, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta { name: Some(name), labels: Some(labels.clone()), ..Default::default() }
}

/// The home: a claim of the size's disk, ReadWriteOnce.
pub fn claim(setup: &Setup, spec: &InstanceSpec) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(claim_name(&spec.id), &labels(setup, spec)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), Quantity(format!("{}Gi", spec.size.disk_gb)))])),
                ..Default::default()
            }),
            storage_class_name: setup.storage_class.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// CPU (millis) and memory (MiB) as Kubernetes quantities.
fn quantities(cpu_millis: u64, memory_mb: u64) -> BTreeMap<String, Quantity> {
    BTreeMap::from([
        ("cpu".to_string(), Quantity(format!("{cpu_millis}m"))),
        ("memory".into(), Quantity(format!("{memory_mb}Mi"))),
    ])
}

/// What the scheduler reserves for an instance (CPU millis, MiB): the given shares of
/// what it is guaranteed.
fn requested(setup: &Setup, r: &Resources) -> (u64, u64) {
    let share = |v: u64, percent: u32| (v * u64::from(percent.clamp(1, 100)) / 100).max(1);
    (
        share(u64::from(r.cpu_millis.min(r.cpu_limit_millis)), setup.cpu_request_percent),
        share(r.memory_mb.min(r.memory_limit_mb), setup.memory_request_percent),
    )
}

/// Requests ([`requested`]) and limits (its CPU quota and OOM limit) of a size or the
/// instance's own resources.
fn resources(r: &Resources, requested: (u64, u64)) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(quantities(requested.0, requested.1)),
        limits: Some(quantities(r.cpu_limit_millis.into(), r.memory_limit_mb)),
        ..Default::default()
    }
}

/// Sizes a pod's containers for a size or the instance's own resources: the main
/// container ([`resources`]) and, from the same figures, the init container
/// ([`init_resources`]). At creation and at every resize, so the two never disagree.
pub fn size_containers(setup: &Setup, pod: &mut PodSpec, size: &SizeSpec, custom: Option<&Resources>) {
    let r = Resources::effective(size, custom);
    let asked = requested(setup, &r);
    for c in pod.containers.iter_mut().filter(|c| c.name == MAIN) {
        c.resources = Some(resources(&r, asked));
    }
    for c in pod.init_containers.iter_mut().flatten() {
        c.resources = Some(init_resources(asked));
    }
}

/// The init container's: at most half a CPU and 64 MiB, and requests no larger than the
/// main container's (both from [`requested`]). A pod reserves the larger of its
/// init and main containers' requests: an init requesting its whole limit (the default
/// when it names none) would reserve 500m for every instance, whatever
/// `--k8s-cpu-request-percent` says (four instances filled a 2-CPU node).
fn init_resources((cpu, memory): (u64, u64)) -> ResourceRequirements {
    const CPU_MILLIS: u64 = 500;
    const MEMORY_MB: u64 = 64;
    ResourceRequirements {
        requests: Some(quantities(cpu.min(CPU_MILLIS), memory.min(MEMORY_MB))),
        limits: Some(quantities(CPU_MILLIS, MEMORY_MB)),
        ..Default::default()
    }
}

/// The instance's pod: the agent copied in by an init container, the home claim, the
/// client's environment from the definition Secret, the size's requests and limits,
/// no service-account token, no privilege escalation, capabilities dropped to
/// [`KEPT_CAPS`], the runtime's default seccomp profile, and an init as PID 1.
pub fn pod(setup: &Setup, spec: &InstanceSpec) -> Pod {
    let name = definition_name(&spec.id);
    let hardened = SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: Some(KEPT_CAPS.iter().map(|c| c.to_string()).collect()),
        }),
        ..Default::default()
    };
    let agent_mount = |read_only: bool| VolumeMount {
        name: AGENT_VOLUME.into(),
        mount_path: AGENT_DIR.into(),
        read_only: Some(read_only),
        ..Default::default()
    };
    let env: Vec<EnvVar> = own_env(spec, false)
        .into_iter()
        .map(|(name, value)| EnvVar { name, value: Some(value), ..Default::default() })
        .collect();
    // The agent as PID 1's init (`berth-agent init`: signals forwarded, orphans reaped,
    // the container's stdout and environment PID 1's, as under Docker's init) around
    // the main program. An image run with its own entrypoint (not known here) gets the
    // pod's shared process namespace instead, whose pause process reaps.
    let (entrypoint, args, working_dir) = main_program(spec);
    let (command, args, shared_pids) = match entrypoint {
        Some(entry) => {
            let mut argv = vec![AGENT_PATH.to_string(), "init".into(), "--".into()];
            argv.extend(entry);
            argv.extend(args.unwrap_or_default());
            (Some(argv), None, false)
        }
        None => (None, args, true),
    };
    let main = Container {
        name: MAIN.into(),
        image: Some(spec.image.clone().unwrap_or_else(|| setup.base_image.clone())),
        image_pull_policy: Some("IfNotPresent".into()),
        command,
        args,
        working_dir,
        // berth's own variables win over the client's (explicit `env` beats `envFrom`).
        env: Some(env),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource { name: name.clone(), optional: Some(false) }),
            ..Default::default()
        }]),
        security_context: Some(hardened.clone()),
        stdin: spec.stdin.then_some(true),
        stdin_once: spec.stdin.then_some(false),
        ports: spec.agent.then(|| {
            vec![ContainerPort { name: Some("agent".into()), container_port: AGENT_PORT.into(), ..Default::default() }]
        }),
        volume_mounts: Some(vec![
            VolumeMount { name: "home".into(), mount_path: HOME_DIR.into(), ..Default::default() },
            agent_mount(true),
        ]),
        ..Default::default()
    };
    let init = Container {
        name: "agent".into(),
        image: Some(setup.agent_image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["/berth-agent".into(), "install".into(), AGENT_PATH.into()]),
        volume_mounts: Some(vec![agent_mount(false)]),
        security_context: Some(hardened),
        ..Default::default()
    };
    let mut pod_spec = PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        share_process_namespace: shared_pids.then_some(true),
        restart_policy: Some("Never".into()),
        termination_grace_period_seconds: Some(setup.stop_grace_secs),
        hostname: Some(spec.id.label().to_string()),
        security_context: Some(PodSecurityContext {
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
            ..Default::default()
        }),
        init_containers: Some(vec![init]),
        containers: vec![main],
        volumes: Some(vec![
            Volume {
                name: "home".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim_name(&spec.id),
                    read_only: None,
                }),
                ..Default::default()
            },
            Volume {
                name: AGENT_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("128Mi".into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    size_containers(setup, &mut pod_spec, &spec.size, spec.resources.as_ref());
    Pod { metadata: meta(name, &labels(setup, spec)), spec: Some(pod_spec), ..Default::default() }
}

/// The definition: the client's environment (the pod reads it with `envFrom`, so
/// values never appear in the pod's spec) and the pod to run.
pub fn definition(setup: &Setup, spec: &InstanceSpec, pod: &Pod) -> Secret {
    let mut m = meta(definition_name(&spec.id), &labels(setup, spec));
    let rendered = serde_json::to_string(pod).unwrap_or_default();
    m.annotations = Some(BTreeMap::from([(POD_ANNOTATION.to_string(), rendered)]));
    Secret {
        metadata: m,
        data: Some(client_env(spec).map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes()))).collect()),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// Ranges an instance never reaches: private networks (the cluster's pods and
/// services, the nodes, the control plane), loopback, link-local (cloud metadata) and
/// carrier-grade NAT.
pub const PRIVATE_V4: &[&str] =
    &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16", "127.0.0.0/8"];

/// The instance's NetworkPolicy: in, only berth (its pods, or its address outside the
/// cluster); out, what its egress policy allows ([`egress_rules`]). Enforced where the
/// cluster's network plugin enforces policies.
pub fn network_policy(setup: &Setup, spec: &InstanceSpec) -> NetworkPolicy {
    let select = |k: &str, v: &str| LabelSelector {
        match_labels: Some(BTreeMap::from([(k.to_string(), v.to_string())])),
        ..Default::default()
    };
    let mut from =
        vec![NetworkPolicyPeer { pod_selector: Some(select(SERVER_LABEL.0, SERVER_LABEL.1)), ..Default::default() }];
    if let Some(ip) = setup.server_address {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        from.push(NetworkPolicyPeer {
            ip_block: Some(IPBlock { cidr: format!("{ip}/{bits}"), except: None }),
            ..Default::default()
        });
    }
    NetworkPolicy {
        metadata: meta(definition_name(&spec.id), &labels(setup, spec)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(select(LABEL_INSTANCE, spec.id.as_str())),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule { from: Some(from), ports: None }]),
            egress: Some(egress_rules(&spec.egress)),
        }),
    }
}

/// The egress rules of an instance's NetworkPolicy, as the host firewall reads the
/// policy on Docker: `internet` is DNS plus every IPv4 address but the private,
/// link-local, loopback and CGNAT ranges (other instances, the nodes, the API server);
/// `none` is no rule (nothing goes out, DNS neither); `allow` is DNS plus exactly the
/// listed networks (a port covers TCP and UDP). DNS is port 53 to any address: the
/// cluster's resolver lives at a private one.
pub fn egress_rules(egress: &Egress) -> Vec<NetworkPolicyEgressRule> {
    let ports = |port: u16| -> Vec<NetworkPolicyPort> {
        ["UDP", "TCP"]
            .iter()
            .map(|p| NetworkPolicyPort {
                port: Some(IntOrString::Int(port.into())),
                protocol: Some(p.to_string()),
                end_port: None,
            })
            .collect()
    };
    let dns = NetworkPolicyEgressRule { to: None, ports: Some(ports(53)) };
    let block = |cidr: String, except: Option<Vec<String>>| NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr, except }),
        ..Default::default()
    };
    match egress {
        Egress::None => Vec::new(),
        Egress::Internet => vec![
            dns,
            NetworkPolicyEgressRule {
                to: Some(vec![block("0.0.0.0/0".into(), Some(PRIVATE_V4.iter().map(|c| c.to_string()).collect()))]),
                ports: None,
            },
        ],
        Egress::Allow(list) => std::iter::once(dns)
            .chain(list.iter().map(|d| NetworkPolicyEgressRule {
                to: Some(vec![block(format!("{}/{}", d.net.addr, d.net.prefix), None)]),
                ports: d.port.map(ports),
            }))
            .collect(),
    }
}

/// CPUs and bytes of a Kubernetes quantity (`1500m`, `4`, `8Gi`, `8053456Ki`, `1e3`);
/// `None` when it is not one.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{size, WorkspaceId};

    fn spec(env: &[(&str, &str)]) -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::generate(),
            workspace_id: WorkspaceId::generate(),
            image: None,
            size: size::lookup(2).unwrap(),
            resources: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            command: None,
            stdin: false,
            egress: Default::default(),
            agent: true,
        }
    }

    fn setup() -> Setup {
        Setup {
            install_id: "inst1".into(),
            base_image: "debian:bookworm-slim".into(),
            agent_image: "berth/agent-bin:abc".into(),
            storage_class: Some("fast".into()),
            stop_grace_secs: 10,
            server_address: Some("172.17.0.1".parse().unwrap()),
            cpu_request_percent: 10,
            memory_request_percent: 100,
        }
    }

    #[test]
    fn a_pod_is_hardened_and_sized() {
        let s = spec(&[]);
        let p = pod(&setup(), &s);
        let ps = p.spec.as_ref().unwrap();
        assert_eq!(ps.automount_service_account_token, Some(false), "no service-account token in an instance");
        assert_eq!(ps.restart_policy.as_deref(), Some("Never"), "berth, not the kubelet, brings instances back");
        assert_eq!(ps.security_context.as_ref().unwrap().seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let main = &ps.containers[0];
        let sc = main.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert!(!caps.add.as_ref().unwrap().iter().any(|c| c == "SYS_ADMIN" || c == "NET_ADMIN" || c == "NET_RAW"));
        let r = main.resources.as_ref().unwrap();
        let lim = r.limits.as_ref().unwrap();
        assert_eq!((lim["cpu"].0.as_str(), lim["memory"].0.as_str()), ("2000m", "4096Mi"));
        assert_eq!(r.requests.as_ref().unwrap()["memory"].0, "4096Mi");
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "200m", "a tenth of its CPUs is reserved");
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_INSTANCE], s.id.as_str());
        assert_eq!(labels[LABEL_WORKSPACE], s.workspace_id.as_str());
        assert_eq!(labels[LABEL_INSTALL], "inst1");
        // The agent comes from the init container's image, not from a host path.
        let init = &ps.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.image.as_deref(), Some("berth/agent-bin:abc"));
        let ir = init.resources.as_ref().unwrap();
        assert_eq!(ir.requests.as_ref().unwrap()["cpu"].0, "200m", "the init reserves no more than main");
        assert_eq!(ir.requests.as_ref().unwrap()["memory"].0, "64Mi", "nor more than its own limit");
        assert_eq!(ir.limits.as_ref().unwrap()["cpu"].0, "500m");
        assert_eq!(init.command.as_ref().unwrap()[1..], ["install".to_string(), AGENT_PATH.into()]);
        assert!(ps.volumes.as_ref().unwrap().iter().all(|v| v.host_path.is_none()), "no host mounts");
        let argv = main.command.as_ref().unwrap();
        assert_eq!(
            argv[..4],
            [AGENT_PATH.to_string(), "init".into(), "--".into(), AGENT_PATH.into()],
            "an init as PID 1"
        );
        assert_eq!(argv[4..6], ["--listen".to_string(), "0.0.0.0:3737".into()]);
        assert_eq!(ps.share_process_namespace, None);
        let home = ps.volumes.as_ref().unwrap().iter().find(|v| v.name == "home").unwrap();
        assert_eq!(home.persistent_volume_claim.as_ref().unwrap().claim_name, claim_name(&s.id));
    }

    #[test]
    fn a_resize_sizes_the_init_container_too() {
        let setup = setup();
        let mut p = pod(&setup, &spec(&[])).spec.unwrap();
        // Down to the smallest size: the init's request must follow main's down.
        size_containers(&setup, &mut p, &size::lookup(1).unwrap(), None);
        let cpu_request =
            |r: &Option<ResourceRequirements>| parse_quantity(&r.as_ref().unwrap().requests.as_ref().unwrap()["cpu"].0);
        let main = cpu_request(&p.containers[0].resources);
        let init = cpu_request(&p.init_containers.as_ref().unwrap()[0].resources);
        assert!(main < Some(0.2), "main was resized: {main:?}");
        assert_eq!(init, main, "the init reserves no more than main after a resize");
    }

    #[test]
    fn the_clients_env_is_in_the_secret_not_the_pod() {
        let s = spec(&[("API_TOKEN", "s3cret"), ("BERTH_INSTANCE_ID", "spoofed")]);
        let p = pod(&setup(), &s);
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("s3cret"), "env values stay out of the pod spec");
        let main = &p.spec.as_ref().unwrap().containers[0];
        let own: BTreeMap<_, _> =
            main.env.as_ref().unwrap().iter().map(|e| (e.name.as_str(), e.value.as_deref().unwrap())).collect();
        assert_eq!(own["BERTH_INSTANCE_ID"], s.id.as_str(), "berth's own id wins");
        assert_eq!(own["HOME"], HOME_DIR);
        let secret = definition(&setup(), &s, &p);
        let data = secret.data.unwrap();
        assert_eq!(data["API_TOKEN"].0, b"s3cret");
        assert!(!data.contains_key("BERTH_INSTANCE_ID"));
        let stored: Pod = serde_json::from_str(&secret.metadata.annotations.unwrap()[POD_ANNOTATION]).unwrap();
        assert_eq!(stored, p, "the stored pod is the pod");
    }

    #[test]
    fn a_claim_is_the_sizes_disk() {
        let c = claim(&setup(), &spec(&[]));
        let cs = c.spec.unwrap();
        assert_eq!(cs.resources.unwrap().requests.unwrap()["storage"].0, "20Gi");
        assert_eq!(cs.storage_class_name.as_deref(), Some("fast"));
    }

    #[test]
    fn the_policy_keeps_instances_off_private_networks() {
        let s = spec(&[]);
        let np = network_policy(&setup(), &s).spec.unwrap();
        assert_eq!(np.pod_selector.unwrap().match_labels.unwrap()[LABEL_INSTANCE], s.id.as_str());
        assert_eq!(np.policy_types.unwrap(), ["Ingress", "Egress"]);
        let from = np.ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(from[1].ip_block.as_ref().unwrap().cidr, "172.17.0.1/32", "berth outside the cluster gets in");
        assert_eq!(from.len(), 2, "nothing else gets in: not other instances");
        let egress = np.egress.unwrap();
        let block = egress[1].to.as_ref().unwrap()[0].ip_block.clone().unwrap();
        assert_eq!(block.cidr, "0.0.0.0/0");
        for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"] {
            assert!(block.except.as_ref().unwrap().iter().any(|e| e == private), "{private} is excluded");
        }
    }

    #[test]
    fn egress_none_is_no_rule_and_allow_is_dns_plus_exactly_the_list() {
        let mut s = spec(&[]);
        s.egress = Egress::None;
        assert_eq!(network_policy(&setup(), &s).spec.unwrap().egress, Some(vec![]), "nothing goes out, DNS neither");
        let list =
            ["10.1.2.0/24:5432", "203.0.113.7"].iter().map(|d| berth_core::egress::Destination::parse(d).unwrap());
        s.egress = Egress::Allow(list.collect());
        let rules = network_policy(&setup(), &s).spec.unwrap().egress.unwrap();
        assert_eq!(rules.len(), 3, "{rules:?}");
        let port_of = |r: &NetworkPolicyEgressRule| {
            r.ports
                .as_ref()
                .map(|ps| ps.iter().map(|p| (p.protocol.clone().unwrap(), p.port.clone())).collect::<Vec<_>>())
        };
        assert_eq!(rules[0].to, None);
        assert_eq!(port_of(&rules[0]).unwrap().len(), 2, "DNS over UDP and TCP");
        let cidr = |r: &NetworkPolicyEgressRule| r.to.as_ref().unwrap()[0].ip_block.clone().unwrap();
        assert_eq!((cidr(&rules[1]).cidr.as_str(), cidr(&rules[1]).except), ("10.1.2.0/24", None));
        assert_eq!(
            port_of(&rules[1]).unwrap(),
            [("UDP".to_string(), Some(IntOrString::Int(5432))), ("TCP".to_string(), Some(IntOrString::Int(5432)))]
        );
        assert_eq!(cidr(&rules[2]).cidr, "203.0.113.7/32");
        assert_eq!(rules[2].ports, None, "no port: every port");
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1500m"), Some(1.5));
        assert_eq!(parse_quantity("4"), Some(4.0));
        assert_eq!(parse_quantity("8Gi"), Some(8.0 * 1024.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("8053456Ki"), Some(8053456.0 * 1024.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("2x"), None);
    }
}
