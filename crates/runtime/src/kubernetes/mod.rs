//! The Kubernetes driver: instances as pods of a cluster, through kube-rs.
//!
//! Per instance, in one namespace, named after the instance id's label:
//! - `berth-L-home`, a PersistentVolumeClaim: the home, kept across stops, restarts
//!   and resizes, removed only by a purge;
//! - `berth-L`, a Secret: the definition. Its data is the client's environment (the
//!   pod reads it with `envFrom`), its `berth.pod` annotation the pod to run, so a
//!   start needs nothing but the id, and a stopped instance is a Secret without a pod;
//! - `berth-L-xxxxx`, the Pod (restart policy `Never`: berth, not the kubelet, decides
//!   when an instance comes back), created by start and deleted by stop. Each start
//!   makes a pod of a new name: a deleted pod lingers for seconds after its processes
//!   have ended (the kubelet unmounting its volumes), and a start does not wait for it;
//!   pods are found by their `berth.instance` label;
//! - `berth-L`, a NetworkPolicy: in, only berth; out, DNS and the public internet.
//!
//! The agent comes from a tiny image holding only the static `berth-agent`
//! (`--k8s-agent-image`): an init container copies it into an `emptyDir` the main
//! container runs it from, so any base image works and no host path is mounted.
//!
//! What Kubernetes 1.20 cannot do is done the nearest way, and said so:
//! pause deletes the pod and marks the definition paused (memory is not kept); a
//! resize recreates the pod (a restart, data kept); logs are the current pod's.

mod exec;
mod observe;
pub mod spec;

use crate::{
    ContainerState, ExecRequest, ExecSession, HostCapacity, InstanceSpec, LogLine, LogQuery, ManagedContainer,
    Observed, Result, Runtime, RuntimeError, RuntimeEvent, Stats, LABEL_INSTALL, LABEL_INSTANCE,
};
use async_trait::async_trait;
use berth_core::{InstanceId, Resources, SizeSpec};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Config, ResourceExt};
use serde::de::DeserializeOwned;
use spec::{claim_name, definition_name, Setup, LABEL_PAUSED, MAIN, POD_ANNOTATION};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How the Kubernetes driver is set up.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// Kubeconfig file; `None`: in-cluster configuration inside a pod, else
    /// `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the instances; `None`: the kubeconfig's (or the pod's) own.
    pub namespace: Option<String>,
    /// The objects' settings (install id, images, storage class, grace).
    pub setup: Setup,
}

/// How long a start waits for its pod to run (scheduling, the home's claim bound and
/// mounted, images present).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Recent stats are shared by the `/health` calls of a moment.
const STATS_TTL: Duration = Duration::from_secs(2);

/// [`Runtime`] on a Kubernetes cluster.
pub struct KubeRuntime {
    client: Client,
    namespace: String,
    setup: Setup,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    claims: Api<PersistentVolumeClaim>,
    policies: Api<NetworkPolicy>,
    capacity: std::sync::RwLock<HostCapacity>,
    execs: exec::Execs,
    stats_cache: Mutex<HashMap<String, (Instant, Stats)>>,
}

/// Maps a client error: an API answer is the cluster refusing (a quota is a full
/// host), anything else the cluster not answering.
pub(crate) fn map_err(e: kube::Error) -> RuntimeError {
    match e {
        kube::Error::Api(s) if s.code == 403 && s.message.contains("exceeded quota") => RuntimeError::Full(s.message),
        kube::Error::Api(s) => RuntimeError::Failed(format!("kubernetes: {} ({} {})", s.message, s.code, s.reason)),
        other => RuntimeError::Unavailable(format!("kubernetes: {other}")),
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// `Ok(None)` for a 404.
fn found<T>(r: std::result::Result<T, kube::Error>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_status(&e, 404) => Ok(None),
        Err(e) => Err(map_err(e)),
    }
}

impl KubeRuntime {
    /// Reads the configuration (kubeconfig, in-cluster, or the default places) and
    /// makes a client; nothing is asked of the cluster yet ([`Runtime::prepare`]).
    pub async fn connect(cfg: KubeConfig) -> Result<Self> {
        let fail = |e: String| RuntimeError::Unavailable(format!("kubernetes configuration: {e}"));
        let mut config = match &cfg.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| fail(e.to_string()))?
            }
            None => match Config::incluster() {
                Ok(c) => c,
                Err(_) => {
                    Config::from_kubeconfig(&KubeConfigOptions::default()).await.map_err(|e| fail(e.to_string()))?
                }
            },
        };
        if let Some(ns) = &cfg.namespace {
            config.default_namespace = ns.clone();
        }
        let namespace = config.default_namespace.clone();
        let client = Client::try_from(config).map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            pods: Api::namespaced(client.clone(), &namespace),
            secrets: Api::namespaced(client.clone(), &namespace),
            claims: Api::namespaced(client.clone(), &namespace),
            policies: Api::namespaced(client.clone(), &namespace),
            client,
            namespace,
            setup: cfg.setup,
            capacity: std::sync::RwLock::new(HostCapacity { cpus: 1, memory_bytes: 0 }),
            execs: exec::Execs::default(),
            stats_cache: Mutex::new(HashMap::new()),
        })
    }

    /// The namespace instances live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The system template's image.
    pub fn base_image(&self) -> &str {
        &self.setup.base_image
    }

    fn install_selector(&self) -> ListParams {
        ListParams::default().labels(&format!("{LABEL_INSTALL}={}", self.setup.install_id))
    }

    /// Creates `obj`, or replaces the one of that name.
    async fn upsert<K>(&self, api: &Api<K>, obj: &K) -> Result<()>
    where
        K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
    {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => {
                let name = obj.meta().name.clone().unwrap_or_default();
                api.replace(&name, &PostParams::default(), obj).await.map(|_| ()).map_err(map_err)
            }
            Err(e) => Err(map_err(e)),
        }
    }

    /// Deletes an object; gone already is fine.
    async fn delete<K>(&self, api: &Api<K>, name: &str, grace: Option<u32>) -> Result<()>
    where
        K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let dp = DeleteParams {
            grace_period_seconds: grace,
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(name, &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Every pod of an instance (its current one, and any still being deleted).
    async fn pods_of(&self, instance_id: &str) -> Result<Vec<Pod>> {
        let lp = ListParams::default()
            .labels(&format!("{LABEL_INSTALL}={},{LABEL_INSTANCE}={instance_id}", self.setup.install_id));
        Ok(self.pods.list(&lp).await.map_err(map_err)?.items)
    }

    /// The instance's pod now: the newest one not being deleted, else one that is.
    async fn current_pod(&self, id: &InstanceId) -> Result<Option<Pod>> {
        let mut pods = self.pods_of(id.as_str()).await?;
        pods.sort_by_key(|p| (p.metadata.deletion_timestamp.is_none(), p.creation_timestamp()));
        Ok(pods.pop())
    }

    /// The name of the instance's running pod, or an error saying it has none.
    async fn running_pod(&self, id: &InstanceId) -> Result<String> {
        match self.current_pod(id).await? {
            Some(p) if p.metadata.deletion_timestamp.is_none() && !observe::ended(&p) => Ok(p.name_any()),
            _ => Err(RuntimeError::Failed(format!("instance {id} has no running pod"))),
        }
    }

    /// Deletes every pod of the instance (SIGTERM, SIGKILL after `grace` seconds) and
    /// waits until none runs its main process any more; the pod objects themselves go
    /// a few seconds later.
    async fn stop_pods(&self, instance_id: &str, grace: u32) -> Result<()> {
        let pods = self.pods_of(instance_id).await?;
        for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            self.delete(&self.pods, &p.name_any(), Some(grace)).await?;
        }
        for p in &pods {
            let name = p.name_any();
            let ended = await_condition(self.pods.clone(), &name, |p: Option<&Pod>| {
                p.is_none_or(|p| !observe::main_running(p))
            });
            match tokio::time::timeout(Duration::from_secs(u64::from(grace) + 60), ended).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(RuntimeError::Unavailable(format!("kubernetes: watching pod {name}: {e}"))),
                Err(_) => {
                    return Err(RuntimeError::Failed(format!(
                        "pod {name} still ran {} s after its deletion",
                        grace + 60
                    )))
                }
            }
        }
        Ok(())
    }

    /// The instance's definition, or an error naming it when there is none.
    async fn definition(&self, id: &InstanceId) -> Result<Secret> {
        found(self.secrets.get(&definition_name(id)).await)?.ok_or_else(|| {
            RuntimeError::Failed(format!("instance {id} has no definition in the cluster (create it first)"))
        })
    }

    fn stored_pod(secret: &Secret) -> Result<Pod> {
        let text = secret.annotations().get(POD_ANNOTATION).map(String::as_str).unwrap_or_default();
        serde_json::from_str(text)
            .map_err(|e| RuntimeError::Failed(format!("the definition {} holds no valid pod: {e}", secret.name_any())))
    }

    async fn mark_paused(&self, id: &InstanceId, paused: bool) -> Result<()> {
        let value = if paused { serde_json::json!("true") } else { serde_json::Value::Null };
        let patch = serde_json::json!({"metadata": {"labels": {LABEL_PAUSED: value}}});
        self.secrets
            .patch(&definition_name(id), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// Waits until a new pod runs, or says why it cannot.
    async fn wait_running(&self, name: &str) -> Result<()> {
        let settled = await_condition(self.pods.clone(), name, |pod: Option<&Pod>| {
            pod.is_none_or(|p| observe::settled(p).is_some())
        });
        let waited = tokio::time::timeout(START_TIMEOUT, settled).await;
        let pod = match waited {
            Ok(Ok(Some(pod))) => pod,
            Ok(Ok(None)) => return Err(RuntimeError::Failed(format!("pod {name} was deleted while starting"))),
            Ok(Err(e)) => return Err(RuntimeError::Unavailable(format!("kubernetes: watching pod {name}: {e}"))),
            Err(_) => {
                let why = found(self.pods.get(name).await)?.map(|p| observe::pending_reason(&p)).unwrap_or_default();
                return Err(RuntimeError::Failed(format!(
                    "pod {name} did not run within {} s{why}",
                    START_TIMEOUT.as_secs()
                )));
            }
        };
        match observe::settled(&pod) {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    async fn node_capacity(&self) -> Result<HostCapacity> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes.list(&ListParams::default()).await.map_err(map_err)?;
        let (mut cpus, mut memory) = (0f64, 0f64);
        for n in &list.items {
            let alloc = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
            let get = |k: &str| alloc.and_then(|a| a.get(k)).and_then(|q| spec::parse_quantity(&q.0)).unwrap_or(0.0);
            // One pod runs on one node: the largest node bounds an instance's CPUs.
            cpus = cpus.max(get("cpu"));
            memory += get("memory");
        }
        Ok(HostCapacity { cpus: (cpus.floor() as u32).max(1), memory_bytes: memory as u64 })
    }
}

#[async_trait]
impl Runtime for KubeRuntime {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn ping(&self) -> Result<()> {
        self.client.apiserver_version().await.map(|_| ()).map_err(map_err)
    }

    async fn prepare(&self) -> Result<()> {
        let version = self.client.apiserver_version().await.map_err(map_err)?;
        // The namespace answers and berth may list in it.
        self.pods.list(&ListParams::default().limit(1)).await.map_err(map_err)?;
        match self.node_capacity().await {
            Ok(c) => *self.capacity.write().unwrap_or_else(|e| e.into_inner()) = c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the cluster's nodes; CPU limits are not clamped to a node's")
            }
        }
        tracing::info!(
            version = %version.git_version, namespace = %self.namespace, agent_image = %self.setup.agent_image,
            "kubernetes runtime ready"
        );
        Ok(())
    }

    fn host_interface(&self) -> Option<String> {
        None
    }

    fn host_address(&self) -> Option<std::net::IpAddr> {
        self.setup.server_address
    }

    fn capacity(&self) -> HostCapacity {
        *self.capacity.read().unwrap_or_else(|e| e.into_inner())
    }

    fn resize_restarts(&self) -> bool {
        true
    }

    async fn set_egress(&self, id: &InstanceId, egress: &berth_core::Egress) -> Result<()> {
        // A merge patch replaces the list whole.
        let patch = serde_json::json!({"spec": {"egress": spec::egress_rules(egress)}});
        match self.policies.patch(&definition_name(id), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(()),
            // No policy: no instance objects yet; `create` writes it from the spec.
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<()> {
        match self.claims.create(&PostParams::default(), &spec::claim(&self.setup, spec)).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {} // the home is kept
            Err(e) => return Err(map_err(e)),
        }
        // A fresh definition replaces any old pod.
        self.stop_pods(spec.id.as_str(), 0).await?;
        let pod = spec::pod(&self.setup, spec);
        self.upsert(&self.secrets, &spec::definition(&self.setup, spec, &pod)).await?;
        self.upsert(&self.policies, &spec::network_policy(&self.setup, spec)).await
    }

    async fn start(&self, id: &InstanceId) -> Result<()> {
        let secret = self.definition(id).await?;
        if secret.labels().contains_key(LABEL_PAUSED) {
            self.mark_paused(id, false).await?;
        }
        if let Some(pod) = self.current_pod(id).await? {
            let alive = pod.metadata.deletion_timestamp.is_none() && !observe::ended(&pod);
            if alive {
                return self.wait_running(&pod.name_any()).await;
            }
            // An ended pod stays until deleted (restart policy `Never`).
            self.stop_pods(id.as_str(), 0).await?;
        }
        let mut pod = Self::stored_pod(&secret)?;
        pod.metadata.generate_name = Some(format!("{}-", definition_name(id)));
        pod.metadata.name = None;
        let made = self.pods.create(&PostParams::default(), &pod).await.map_err(map_err)?;
        self.wait_running(&made.name_any()).await
    }

    async fn stop(&self, id: &InstanceId) -> Result<()> {
        self.stop_pods(id.as_str(), self.setup.stop_grace_secs as u32).await
    }

    /// There is no freezing a pod on Kubernetes 1.20: a paused instance's pod is
    /// deleted (its memory and processes are lost, its home kept) and its definition
    /// marked paused; resume starts it again.
    async fn pause(&self, id: &InstanceId) -> Result<()> {
        self.mark_paused(id, true).await?;
        self.stop(id).await
    }

    async fn resume(&self, id: &InstanceId) -> Result<()> {
        self.start(id).await
    }

    /// Kubernetes 1.20 cannot resize a running pod: the definition gets the new
    /// requests and limits (and the home claim a larger request, where its storage
    /// class allows expansion), and a running pod is recreated with them.
    async fn resize(&self, id: &InstanceId, size: &SizeSpec, resources: Option<&Resources>) -> Result<()> {
        let mut secret = self.definition(id).await?;
        let mut pod = Self::stored_pod(&secret)?;
        if let Some(pod_spec) = pod.spec.as_mut() {
            spec::size_containers(&self.setup, pod_spec, size, resources);
        }
        let rendered = serde_json::to_string(&pod).map_err(|e| RuntimeError::Failed(e.to_string()))?;
        secret.annotations_mut().insert(POD_ANNOTATION.into(), rendered);
        self.secrets.replace(&definition_name(id), &PostParams::default(), &secret).await.map_err(map_err)?;
        let grow = serde_json::json!({"spec": {"resources": {"requests": {"storage": format!("{}Gi", size.disk_gb)}}}});
        let claim = claim_name(id);
        if let Some(c) = found(self.claims.get(&claim).await)? {
            let now = c.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref());
            let now = now.and_then(|r| r.get("storage")).and_then(|q| spec::parse_quantity(&q.0)).unwrap_or(0.0);
            if (size.disk_gb as f64) * 1024.0 * 1024.0 * 1024.0 > now {
                if let Err(e) = self.claims.patch(&claim, &PatchParams::default(), &Patch::Merge(&grow)).await {
                    tracing::warn!(claim = %claim, error = %e, "the home's claim cannot grow (its storage class must allow expansion)");
                }
            }
        }
        let running = self.current_pod(id).await?.is_some_and(|p| p.metadata.deletion_timestamp.is_none());
        if running {
            self.stop(id).await?;
            self.start(id).await?;
        }
        Ok(())
    }

    async fn remove(&self, id: &InstanceId) -> Result<()> {
        let name = definition_name(id);
        self.stop_pods(id.as_str(), 0).await?;
        self.delete(&self.secrets, &name, None).await?;
        self.delete(&self.policies, &name, None).await
    }

    async fn purge(&self, id: &InstanceId) -> Result<()> {
        self.remove(id).await?;
        self.delete(&self.claims, &claim_name(id), None).await
    }

    async fn inspect(&self, id: &InstanceId) -> Result<ContainerState> {
        // A pod being deleted is as good as gone: what the instance is now is its
        // definition's (stopped or paused), and a start makes a new pod beside it.
        if let Some(pod) = self.current_pod(id).await?.filter(|p| p.metadata.deletion_timestamp.is_none()) {
            return Ok(observe::state(&pod));
        }
        let name = definition_name(id);
        let observed = match found(self.secrets.get(&name).await)? {
            None => Observed::Missing,
            Some(s) if s.labels().contains_key(LABEL_PAUSED) => Observed::Paused,
            Some(_) => Observed::Created,
        };
        Ok(ContainerState { observed, agent_addr: None, started_at: None, ipv6_addr: None })
    }

    async fn list(&self) -> Result<Vec<ManagedContainer>> {
        let lp = self.install_selector();
        let (secrets, pods) = tokio::try_join!(self.secrets.list(&lp), self.pods.list(&lp)).map_err(map_err)?;
        let mut all: HashMap<String, ManagedContainer> = HashMap::new();
        for s in secrets.items {
            let Some(instance) = s.labels().get(LABEL_INSTANCE).cloned() else { continue };
            let observed = if s.labels().contains_key(LABEL_PAUSED) { Observed::Paused } else { Observed::Created };
            let state = ContainerState { observed, agent_addr: None, started_at: None, ipv6_addr: None };
            all.insert(instance.clone(), ManagedContainer { instance_id: instance, name: s.name_any(), state });
        }
        // The newest pod not being deleted speaks for its instance (one being deleted is
        // as good as gone).
        let mut pods: Vec<Pod> = pods.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        pods.sort_by_key(|p| p.creation_timestamp());
        for p in pods {
            let Some(instance) = p.labels().get(LABEL_INSTANCE).cloned() else { continue };
            let state = observe::state(&p);
            all.insert(instance.clone(), ManagedContainer { instance_id: instance, name: p.name_any(), state });
        }
        Ok(all.into_values().collect())
    }

    async fn list_volumes(&self) -> Result<Vec<String>> {
        let list = self.claims.list(&self.install_selector()).await.map_err(map_err)?;
        Ok(list.items.iter().filter_map(|c| c.labels().get(LABEL_INSTANCE).cloned()).collect())
    }

    async fn remove_orphan(&self, container: &ManagedContainer) -> Result<()> {
        self.stop_pods(&container.instance_id, 0).await?;
        let lp = self.install_selector().labels(&format!("{LABEL_INSTANCE}={}", container.instance_id));
        for s in self.secrets.list(&lp).await.map_err(map_err)?.items {
            self.delete(&self.secrets, &s.name_any(), None).await?;
        }
        for p in self.policies.list(&lp).await.map_err(map_err)?.items {
            self.delete(&self.policies, &p.name_any(), None).await?;
        }
        Ok(())
    }

    async fn remove_orphan_volume(&self, instance_id: &str) -> Result<()> {
        let lp = self.install_selector().labels(&format!("{LABEL_INSTANCE}={instance_id}"));
        for c in self.claims.list(&lp).await.map_err(map_err)?.items {
            self.delete(&self.claims, &c.name_any(), None).await?;
        }
        Ok(())
    }

    async fn exec(&self, id: &InstanceId, req: ExecRequest) -> Result<ExecSession> {
        exec::start(self, &self.running_pod(id).await?, req).await
    }

    async fn exec_status(&self, exec_id: &str) -> Result<Option<i64>> {
        self.execs.status(exec_id)
    }

    async fn exec_kill(&self, exec_id: &str) -> Result<()> {
        exec::kill(self, exec_id).await
    }

    /// The kubelet applies a resize apart from the input stream: input written at once
    /// after it could reach the terminal at its old size, so the call lets it land.
    async fn exec_resize(&self, exec_id: &str, cols: u16, rows: u16) -> Result<()> {
        self.execs.resize(exec_id, cols, rows).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    async fn attach(&self, id: &InstanceId) -> Result<ExecSession> {
        exec::attach(self, &self.running_pod(id).await?).await
    }

    /// The current pod's output (Kubernetes keeps no lines of a deleted pod).
    async fn logs(&self, id: &InstanceId, query: LogQuery) -> Result<BoxStream<'static, Result<LogLine>>> {
        let Some(pod) = self.current_pod(id).await? else { return Ok(futures_util::stream::empty().boxed()) };
        let name = pod.name_any();
        let lp = LogParams {
            follow: query.follow,
            timestamps: true,
            tail_lines: query.tail.map(i64::from),
            since_seconds: query.since.map(|t| (berth_core::now_secs() - t).max(1)),
            container: Some(MAIN.into()),
            ..Default::default()
        };
        use futures_util::AsyncBufReadExt;
        let lines = self.pods.log_stream(&name, &lp).await.map_err(map_err)?.lines();
        Ok(lines
            .map_err(|e| RuntimeError::Unavailable(format!("kubernetes: reading logs: {e}")))
            .map_ok(|line| {
                let (ts, msg) = line.split_once(' ').unwrap_or(("", line.as_str()));
                LogLine { timestamp: ts.to_string(), stream: "stdout", message: msg.to_string() }
            })
            .boxed())
    }

    async fn stats(&self, id: &InstanceId) -> Result<Stats> {
        let name = definition_name(id);
        if let Some((at, s)) = self.stats_cache.lock().unwrap_or_else(|e| e.into_inner()).get(&name) {
            if at.elapsed() < STATS_TTL {
                return Ok(s.clone());
            }
        }
        let Some(pod) = self.current_pod(id).await? else { return Ok(Stats::default()) };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { return Ok(Stats::default()) };
        let req = http::Request::get(format!("/api/v1/nodes/{node}/proxy/stats/summary"))
            .body(Vec::new())
            .map_err(|e| RuntimeError::Failed(e.to_string()))?;
        let summary: serde_json::Value = self.client.request(req).await.map_err(map_err)?;
        let stats = observe::stats(&summary, &self.namespace, &pod.name_any(), &pod);
        self.stats_cache.lock().unwrap_or_else(|e| e.into_inner()).insert(name, (Instant::now(), stats.clone()));
        Ok(stats)
    }

    async fn events(&self) -> Result<BoxStream<'static, Result<RuntimeEvent>>> {
        Ok(observe::events(self.pods.clone(), &self.setup.install_id))
    }
}
