//! What berth sees of a pod: its state, its resource use (the kubelet's summary), and
//! the events of every pod of the installation (a watch).

use super::spec::{parse_quantity, MAIN};
use crate::{ContainerState, Observed, Result, RuntimeError, RuntimeEvent, RuntimeEventKind, Stats, AGENT_PORT};
use crate::{LABEL_INSTALL, LABEL_INSTANCE};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, ResourceExt};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

/// Waiting reasons that mean the image will not come by waiting.
const IMAGE_ERRORS: &[&str] = &["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"];
/// Waiting reasons that mean the pod as defined cannot run.
const CONFIG_ERRORS: &[&str] = &["CreateContainerConfigError", "CreateContainerError", "RunContainerError"];

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn main_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status.as_ref()?.container_statuses.as_ref()?.iter().find(|c| c.name == MAIN)
}

/// Every container status of the pod, init containers first.
fn all_statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let s = pod.status.as_ref();
    let init = s.and_then(|s| s.init_container_statuses.as_deref()).unwrap_or_default();
    let main = s.and_then(|s| s.container_statuses.as_deref()).unwrap_or_default();
    init.iter().chain(main)
}

/// Whether the pod's main container runs now.
pub fn main_running(pod: &Pod) -> bool {
    main_status(pod).and_then(|c| c.state.as_ref()).is_some_and(|s| s.running.is_some())
}

/// Whether the pod's main process has ended (the pod will not run again).
pub fn ended(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
        || main_status(pod).and_then(|c| c.state.as_ref()).is_some_and(|s| s.terminated.is_some())
}

/// A waiting container's reason and message, when one waits for a reason that will
/// not pass by itself.
fn stuck(pod: &Pod) -> Option<(String, String, &str)> {
    all_statuses(pod).find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.clone()?;
        (IMAGE_ERRORS.contains(&reason.as_str()) || CONFIG_ERRORS.contains(&reason.as_str()))
            .then(|| (reason, w.message.clone().unwrap_or_default(), c.image.as_str()))
    })
}

/// For a new pod: `Some(Ok)` once it runs, `Some(Err)` when it cannot (its image
/// missing, its definition refused, its process ended), `None` while pending.
pub fn settled(pod: &Pod) -> Option<Result<()>> {
    if let Some((reason, message, image)) = stuck(pod) {
        if IMAGE_ERRORS.contains(&reason.as_str()) {
            return Some(Err(RuntimeError::ImageMissing {
                image: image.to_string(),
                detail: format!("{reason}: {message}"),
            }));
        }
        return Some(Err(RuntimeError::Failed(format!("the pod cannot start: {reason}: {message}"))));
    }
    if ended(pod) {
        let code = exit(pod).0;
        return Some(Err(RuntimeError::Failed(format!(
            "the instance's main process exited with code {code} while starting"
        ))));
    }
    let running = main_status(pod).and_then(|c| c.state.as_ref()).is_some_and(|s| s.running.is_some());
    (phase(pod) == "Running" && running).then_some(Ok(()))
}

/// Why a pod is still pending, for an error message (` (reason: message)` or nothing).
pub fn pending_reason(pod: &Pod) -> String {
    let waiting = all_statuses(pod).find_map(|c| c.state.as_ref()?.waiting.as_ref());
    let condition = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.status == "False" && c.message.is_some()));
    match (waiting, condition) {
        (Some(w), _) if w.reason.is_some() => {
            format!(" ({}: {})", w.reason.as_deref().unwrap_or(""), w.message.as_deref().unwrap_or(""))
        }
        (_, Some(c)) => {
            format!(" ({}: {})", c.reason.as_deref().unwrap_or(&c.type_), c.message.as_deref().unwrap_or(""))
        }
        _ => String::new(),
    }
}

/// The main process's exit code and whether the kernel killed it for memory.
fn exit(pod: &Pod) -> (i64, bool) {
    let terminated = main_status(pod).and_then(|c| {
        let st = c.state.as_ref()?;
        st.terminated.as_ref().or_else(|| c.last_state.as_ref()?.terminated.as_ref())
    });
    match terminated {
        Some(t) => (i64::from(t.exit_code), t.reason.as_deref() == Some("OOMKilled")),
        // Evicted or lost with its node: no code.
        None => (-1, false),
    }
}

/// What a pod's state means to berth. A pending pod counts as running without an
/// address yet (its start is under way: readiness waits, the reconciler leaves it).
pub fn state(pod: &Pod) -> ContainerState {
    let mut cs = ContainerState { observed: Observed::Running, agent_addr: None, started_at: None, ipv6_addr: None };
    if pod.metadata.deletion_timestamp.is_some() {
        cs.observed = Observed::Other("terminating".into());
        return cs;
    }
    if ended(pod) {
        let (code, oom_killed) = exit(pod);
        cs.observed = Observed::Exited { code, oom_killed };
        return cs;
    }
    if let Some((reason, _, image)) = stuck(pod) {
        cs.observed = Observed::Other(format!("unable to start ({reason}, image {image})"));
        return cs;
    }
    let running = main_status(pod).and_then(|c| c.state.as_ref()?.running.as_ref());
    if phase(pod) == "Running" {
        if let Some(r) = running {
            cs.started_at = r.started_at.as_ref().map(|t| t.0.as_second());
            let ips = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse::<IpAddr>().ok());
            match ips {
                Some(IpAddr::V6(v6)) => {
                    cs.ipv6_addr = Some(v6);
                    cs.agent_addr = Some(SocketAddr::new(IpAddr::V6(v6), AGENT_PORT));
                }
                Some(ip) => cs.agent_addr = Some(SocketAddr::new(ip, AGENT_PORT)),
                None => {}
            }
        }
    }
    cs
}

/// The pod's figures in a kubelet stats summary (`/stats/summary`): CPU (as a
/// percentage of one CPU, as Docker's), working-set memory, network bytes and
/// processes; the memory limit is the pod's own.
pub fn stats(summary: &serde_json::Value, namespace: &str, name: &str, pod: &Pod) -> Stats {
    let limit = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == MAIN))
        .and_then(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory").and_then(|q| parse_quantity(&q.0)))
        .unwrap_or(0.0) as u64;
    let mut stats = Stats { memory_limit_bytes: limit, ..Default::default() };
    let pods = summary["pods"].as_array().map(Vec::as_slice).unwrap_or_default();
    let Some(p) = pods.iter().find(|p| p["podRef"]["name"] == name && p["podRef"]["namespace"] == namespace) else {
        return stats;
    };
    let main = p["containers"].as_array().and_then(|cs| cs.iter().find(|c| c["name"] == MAIN));
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    if let Some(c) = main {
        stats.cpu_percent = n(&c["cpu"]["usageNanoCores"]) as f64 / 1e7;
        stats.memory_bytes = n(&c["memory"]["workingSetBytes"]);
    }
    stats.network_rx_bytes = n(&p["network"]["rxBytes"]);
    stats.network_tx_bytes = n(&p["network"]["txBytes"]);
    stats.pids = n(&p["process_stats"]["process_count"]);
    stats
}

/// The installation's pod events, from a watch: a pod whose main container runs is
/// `Started`, one whose process ended `Died`, a deleted one `Destroyed`. Each kind is
/// said once per pod.
pub fn events(pods: Api<Pod>, install_id: &str) -> BoxStream<'static, Result<RuntimeEvent>> {
    let cfg = watcher::Config::default().labels(&format!("{LABEL_INSTALL}={install_id}"));
    let mut said: HashMap<String, RuntimeEventKind> = HashMap::new();
    watcher::watcher(pods, cfg)
        .default_backoff()
        .filter_map(move |ev| {
            let out = match ev {
                Ok(Event::Apply(pod) | Event::InitApply(pod)) => {
                    let uid = pod.uid().unwrap_or_default();
                    let kind = match state(&pod).observed {
                        Observed::Running if state(&pod).agent_addr.is_some() => Some(RuntimeEventKind::Started),
                        Observed::Exited { .. } => Some(RuntimeEventKind::Died),
                        _ => None,
                    };
                    match kind {
                        Some(k) if said.get(&uid) != Some(&k) => {
                            said.insert(uid, k);
                            event(&pod, k)
                        }
                        _ => None,
                    }
                }
                Ok(Event::Delete(pod)) => {
                    said.remove(&pod.uid().unwrap_or_default());
                    event(&pod, RuntimeEventKind::Destroyed)
                }
                Ok(Event::Init | Event::InitDone) => None,
                Err(e) => {
                    tracing::debug!(error = %e, "pod watch interrupted; it resumes");
                    None
                }
            };
            futures_util::future::ready(out)
        })
        .boxed()
}

fn event(pod: &Pod, kind: RuntimeEventKind) -> Option<Result<RuntimeEvent>> {
    let instance_id = pod.labels().get(LABEL_INSTANCE)?.clone();
    Some(Ok(RuntimeEvent { instance_id, kind }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn pod_states() {
        let running = pod(serde_json::json!({
            "metadata": {"name": "berth-x"},
            "status": {"phase": "Running", "podIP": "172.17.0.5",
              "containerStatuses": [{"name": "main", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-12-06T10:00:00Z"}}}]}
        }));
        let cs = state(&running);
        assert_eq!(cs.observed, Observed::Running);
        assert_eq!(cs.agent_addr, Some("172.17.0.5:3737".parse().unwrap()));
        assert_eq!(cs.started_at, Some(1_796_551_200));
        assert!(matches!(settled(&running), Some(Ok(()))));

        let pending = pod(serde_json::json!({"metadata": {"name": "berth-x"}, "status": {"phase": "Pending"}}));
        assert_eq!(state(&pending).observed, Observed::Running);
        assert_eq!(state(&pending).agent_addr, None, "no address until it runs");
        assert!(settled(&pending).is_none());

        let oom = pod(serde_json::json!({
            "metadata": {"name": "berth-x"},
            "status": {"phase": "Failed",
              "containerStatuses": [{"name": "main", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}
        }));
        assert_eq!(state(&oom).observed, Observed::Exited { code: 137, oom_killed: true });

        let evicted =
            pod(serde_json::json!({"metadata": {"name": "b"}, "status": {"phase": "Failed", "reason": "Evicted"}}));
        assert_eq!(state(&evicted).observed, Observed::Exited { code: -1, oom_killed: false });

        let no_image = pod(serde_json::json!({
            "metadata": {"name": "berth-x"},
            "status": {"phase": "Pending",
              "containerStatuses": [{"name": "main", "image": "nope:1", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "not present"}}}]}
        }));
        assert!(matches!(settled(&no_image), Some(Err(RuntimeError::ImageMissing { image, .. })) if image == "nope:1"));

        let deleting = pod(serde_json::json!({
            "metadata": {"name": "berth-x", "deletionTimestamp": "2026-12-06T10:00:00Z"}, "status": {"phase": "Running"}
        }));
        assert_eq!(state(&deleting).observed, Observed::Other("terminating".into()));
    }

    #[test]
    fn stats_from_a_summary() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "berth-x"},
            "spec": {"containers": [{"name": "main", "resources": {"limits": {"memory": "2048Mi"}}}]}
        }));
        let summary = serde_json::json!({"pods": [
            {"podRef": {"name": "berth-x", "namespace": "other"}, "containers": []},
            {"podRef": {"name": "berth-x", "namespace": "ns"},
             "containers": [{"name": "main", "cpu": {"usageNanoCores": 250_000_000u64}, "memory": {"workingSetBytes": 5_000_000u64}}],
             "network": {"rxBytes": 10, "txBytes": 20}, "process_stats": {"process_count": 3}}
        ]});
        let s = stats(&summary, "ns", "berth-x", &p);
        assert_eq!(s.cpu_percent, 25.0);
        assert_eq!(s.memory_bytes, 5_000_000);
        assert_eq!(s.memory_limit_bytes, 2048 << 20);
        assert_eq!((s.network_rx_bytes, s.network_tx_bytes, s.pids), (10, 20, 3));
    }
}
