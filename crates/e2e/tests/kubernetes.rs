//! What only the Kubernetes runtime has: the objects berth makes for an instance (a
//! hardened pod with the agent copied in, a home claim, a definition Secret, a
//! NetworkPolicy), pods deleted behind berth's back, and a server killed mid-create.
//! Run with `BERTH_TEST_RUNTIME=kubernetes` against a cluster (`scripts/test.sh`
//! starts the testbed when asked); the runtime-neutral suites (lifecycle, operate,
//! edge_protocols) run there too.

use berth_test_util::kubernetes::{self, kubectl, names_with_label, pod_json, pod_of};
use berth_test_util::{require, TestServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Whether the cluster is there; otherwise says the test is skipped (or fails it when
/// `BERTH_REQUIRE_K8S` is set).
fn cluster() -> bool {
    if kubernetes::enabled() {
        return true;
    }
    require::missing(
        "BERTH_REQUIRE_K8S",
        "a Kubernetes cluster",
        "scripts/test.sh --kubernetes (builds and starts the testbed), or BERTH_TEST_RUNTIME=kubernetes with BERTH_TEST_KUBECONFIG",
        "the Kubernetes runtime test",
    );
    false
}

async fn wait_for(s: &TestServer, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, inst) = s.get(&format!("/v1/instances/{id}")).await;
        if check(&inst) {
            return inst;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {inst}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_instance_is_a_hardened_pod_with_its_home_definition_and_policy() {
    if !cluster() {
        return;
    }
    let s = TestServer::shared().await;
    let inst = s.create_instance(json!({"env": {"API_TOKEN": "tok-123-secret"}})).await;
    let id = inst["id"].as_str().unwrap();
    let pod = pod_json(id);
    let spec = &pod["spec"];
    assert_eq!(spec["automountServiceAccountToken"], false, "no service-account token in an instance");
    assert_eq!(spec["enableServiceLinks"], false);
    assert!(spec["volumes"].as_array().unwrap().iter().all(|v| v.get("hostPath").is_none()), "no host path: {spec}");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["berth.instance"], json!(id));
    assert_eq!(labels["berth.install"], json!(s.install_id));
    assert!(labels["berth.workspace"].as_str().unwrap().starts_with("ws_"));
    // The agent comes from its own image, copied in by an init container.
    let init = &spec["initContainers"][0];
    assert_eq!(init["image"], json!(kubernetes::agent_image()));
    assert_eq!(init["command"][1], "install");
    let main = &spec["containers"][0];
    assert_eq!(main["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(main["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    let added = main["securityContext"]["capabilities"]["add"].as_array().unwrap();
    assert!(!added.iter().any(|c| c == "SYS_ADMIN" || c == "NET_ADMIN" || c == "NET_RAW"), "{added:?}");
    // The client's env lives in the definition Secret, never in the pod's spec.
    assert!(!pod.to_string().contains("tok-123-secret"), "an env value in the pod spec");
    let (ok, out, err) =
        kubectl(&["get", "secret", &format!("berth-{}", &id[5..]), "-o", "jsonpath={.data.API_TOKEN}"]);
    assert!(ok, "{err}");
    assert_eq!(out, "dG9rLTEyMy1zZWNyZXQ=", "the Secret holds the value");
    assert_eq!(berth_test_util::docker::exec(id, "echo $API_TOKEN").1, "tok-123-secret", "the process sees it");
    // The home is a claim of the size's disk.
    let claim = format!("berth-{}-home", &id[5..]);
    let (_, size, _) = kubectl(&["get", "pvc", &claim, "-o", "jsonpath={.spec.resources.requests.storage}"]);
    assert_eq!(size, "10Gi");
    // The NetworkPolicy selects the instance and keeps it off private networks (the
    // testbed's network does not enforce policies: the objects are what is checked).
    let (ok, np, err) = kubectl(&["get", "networkpolicy", &format!("berth-{}", &id[5..]), "-o", "json"]);
    assert!(ok, "{err}");
    let np: Value = serde_json::from_str(&np).unwrap();
    assert_eq!(np["spec"]["podSelector"]["matchLabels"]["berth.instance"], json!(id));
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let except = &np["spec"]["egress"][1]["to"][0]["ipBlock"]["except"];
    for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"] {
        assert!(except.as_array().unwrap().iter().any(|e| e == private), "{private} not excluded: {np}");
    }
    // Another workspace sees none of it.
    let other = s.create_workspace("other").await;
    let (st, _) = s.call(reqwest::Method::GET, &format!("/v1/instances/{id}"), Some(&other), None).await;
    assert_eq!(st, 404);
}

/// The instance's NetworkPolicy egress rules, as stored in the cluster.
fn policy_egress(id: &str) -> Value {
    let (ok, out, err) = kubectl(&["get", "networkpolicy", &format!("berth-{}", &id[5..]), "-o", "json"]);
    assert!(ok, "{err}");
    serde_json::from_str::<Value>(&out).unwrap()["spec"]["egress"].clone()
}

#[tokio::test]
async fn an_egress_policy_is_the_instances_network_policy_and_changes_in_place() {
    if !cluster() {
        return;
    }
    let s = TestServer::shared().await;
    let inst = s.create_instance(json!({"network": {"egress": "none"}})).await;
    let id = inst["id"].as_str().unwrap();
    let pod = kubernetes::pod_of(id);
    // `none`: no egress rule at all (Kubernetes omits an empty list), DNS neither.
    assert!(policy_egress(id).as_array().is_none_or(|r| r.is_empty()), "{}", policy_egress(id));
    let (st, body) = s
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/instances/{id}"),
            Some(&s.key),
            Some(json!({"network": {"egress": {"allow": ["10.9.8.0/24:5432"]}}})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let rules = policy_egress(id);
    assert_eq!(rules.as_array().unwrap().len(), 2, "DNS and the one network: {rules}");
    assert_eq!(rules[1]["to"][0]["ipBlock"]["cidr"], "10.9.8.0/24");
    assert!(rules[1]["ports"].as_array().unwrap().iter().all(|p| p["port"] == 5432), "{rules}");
    assert_eq!(kubernetes::pod_of(id), pod, "the policy changed in place: the same pod runs");
    let (_, got) = s.get(&format!("/v1/instances/{id}")).await;
    assert_eq!(got["status"], "running", "{got}");
}

#[tokio::test]
async fn an_instance_claimed_from_the_warm_pool_gets_its_own_egress_policy() {
    if !cluster() {
        return;
    }
    let s = TestServer::start_with(berth_test_util::ServerOptions {
        extra_args: ["--warm-pool", "berth-agent=1"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = s.http().get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        if metrics.lines().any(|l| l == "berth_warm_pool_ready{kind=\"berth-agent:1\"} 1") {
            break;
        }
        assert!(Instant::now() < deadline, "the pool never filled\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let inst = s.create_instance(json!({"network": {"egress": "none"}})).await;
    let id = inst["id"].as_str().unwrap();
    let (_, events) = s.get(&format!("/v1/instances/{id}/events")).await;
    assert!(events.to_string().contains("created from the warm pool"), "not a warm claim: {events}");
    // The pool's policy let everything out; the claimed instance's lets nothing.
    assert!(policy_egress(id).as_array().is_none_or(|r| r.is_empty()), "{}", policy_egress(id));
}

#[tokio::test]
async fn a_pod_deleted_behind_berths_back_comes_back_with_its_data() {
    if !cluster() {
        return;
    }
    let s = TestServer::shared().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    assert_eq!(berth_test_util::docker::exec(&id, "echo kept > /home/agent/notes.txt").0, 0);
    let pod = pod_of(&id).unwrap();
    let (ok, _, err) = kubectl(&["delete", "pod", &pod, "--wait=false"]);
    assert!(ok, "{err}");
    let inst = wait_for(&s, &id, "the pod back", |i| i["restart_count"] == 1 && i["status"] == "running").await;
    assert_eq!(inst["status"], "running");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match pod_of(&id) {
            Some(p) if p != pod => {
                let (code, out) = berth_test_util::docker::exec(&id, "cat /home/agent/notes.txt");
                if code == 0 {
                    assert_eq!(out, "kept", "the home is kept");
                    break;
                }
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "no new pod for {id}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_server_killed_mid_create_leaves_nothing_behind() {
    if !cluster() {
        return;
    }
    let mut s = TestServer::start().await;
    let keep = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let (base, key) = (s.base.clone(), s.admin_key.clone());
    let create = tokio::spawn(async move {
        reqwest::Client::new().post(format!("{base}/v1/instances")).bearer_auth(key).json(&json!({})).send().await
    });
    // Wait until the second instance has objects in the cluster, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(30);
    while names_with_label("secrets", "berth.install", &s.install_id).len() < 2 {
        assert!(Instant::now() < deadline, "the create never reached the cluster\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.kill();
    let _ = create.await;
    s.restart().await;
    // The interrupted create is cleaned up: no record, pod, claim or Secret left but
    // those of the instance that was there before.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, list) = s.get("/v1/instances?limit=100").await;
        let ids: Vec<String> =
            list["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();
        let objects = names_with_label("pods,pvc,secrets,networkpolicies", "berth.install", &s.install_id);
        let foreign = objects.iter().filter(|o| !o.contains(&keep[5..])).count();
        if ids == [keep.clone()] && foreign == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "left behind: records {ids:?}, objects {objects:?}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, inst) = s.get(&format!("/v1/instances/{keep}")).await;
    assert_eq!(inst["status"], "running");
}

/// `deploy/kubernetes/berth.yaml` made to run on the testbed, in namespace `ns`: the
/// testbed has no kube-proxy (Services and the API server's ClusterIP do not route)
/// and its API server listens on 127.0.0.1, so the server pod runs on the host's
/// network and is told where the API server is; everything else is the manifest's.
fn testbed_manifest(
    ns: &str,
    image: &str,
    api_port: u16,
    edge_port: u16,
    database_url: &str,
    admin_key: &str,
) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/kubernetes/berth.yaml"))
        .expect("deploy/kubernetes/berth.yaml");
    use sha2::Digest;
    let secret_key = hex::encode(sha2::Sha256::digest(berth_test_util::random_label(32)));
    text.replace("namespace: berth\n", &format!("namespace: {ns}\n"))
        .replace("kind: Namespace\nmetadata:\n  name: berth\n", &format!("kind: Namespace\nmetadata:\n  name: {ns}\n"))
        .replace("berth-nodes", &format!("berth-nodes-{ns}"))
        .replace("berth/agent-bin:CHANGE-ME", &kubernetes::agent_image())
        .replace("BERTH_BASE_IMAGE: debian:bookworm-slim", "BERTH_BASE_IMAGE: berth-test/busybox:latest")
        .replace("BERTH_DOMAIN: berth.example.com", "BERTH_DOMAIN: localhost")
        .replace("postgres://berth:CHANGE-ME@postgres.berth.svc:5432/berth", database_url)
        .replace("CHANGE-ME-64-hex-characters", &secret_key)
        .replace("sk_CHANGE-ME-at-least-32-random-characters", admin_key)
        .replace("berth/server:CHANGE-ME", image)
        .replace("replicas: 2", "replicas: 1")
        .replace("0.0.0.0:8080", &format!("0.0.0.0:{api_port}"))
        .replace("containerPort: 8080", &format!("containerPort: {api_port}"))
        .replace("0.0.0.0:7071", &format!("0.0.0.0:{edge_port}"))
        .replace("containerPort: 7071", &format!("containerPort: {edge_port}"))
        .replace(
            "      serviceAccountName: berth\n",
            "      serviceAccountName: berth\n      hostNetwork: true\n",
        )
        .replace(
            "          env:\n",
            "          env:\n            - {name: KUBERNETES_SERVICE_HOST, value: 127.0.0.1}\n            - {name: KUBERNETES_SERVICE_PORT, value: \"6443\"}\n",
        )
}

#[tokio::test]
async fn berth_runs_inside_the_cluster_with_exactly_its_rights() {
    if !cluster() {
        return;
    }
    if !berth_test_util::postgres::available() {
        require::missing("BERTH_REQUIRE_POSTGRES", "PostgreSQL", "apt-get install postgresql", "the in-cluster test");
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = std::process::Command::new(format!("{root}/scripts/build-server-image.sh"))
        .args(["--berth", &berth_test_util::server::berth_bin().display().to_string()])
        .args(["--agent", &berth_test_util::server::agent_bin().display().to_string()])
        .args(["--base", "berth/base:bookworm"])
        .output()
        .expect("scripts/build-server-image.sh runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let image = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let ns = format!("berth-e2e-{}", berth_test_util::random_label(6));
    let (api_port, edge_port) = (berth_test_util::free_port(), berth_test_util::free_port());
    let admin_key = format!("sk_{}", berth_test_util::random_label(40));
    let manifest =
        testbed_manifest(&ns, &image, api_port, edge_port, &berth_test_util::postgres::database_url(), &admin_key);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &manifest).unwrap();
    let _cleanup = Cleanup(ns.clone());
    let (ok, _, err) = kubectl(&["apply", "-f", &file.path().display().to_string()]);
    assert!(ok, "kubectl apply: {err}");

    // The service account may do what the server needs, and nothing else.
    let sa = format!("system:serviceaccount:{ns}:berth");
    let can = |verb: &str, what: &str, namespace: &str| {
        kubectl(&["auth", "can-i", verb, what, "-n", namespace, "--as", &sa]).1 == "yes"
    };
    for (verb, what) in [
        ("create", "pods"),
        ("delete", "pods"),
        ("watch", "pods"),
        ("create", "pods/exec"),
        ("get", "pods/log"),
        ("create", "persistentvolumeclaims"),
        ("update", "secrets"),
        ("create", "networkpolicies.networking.k8s.io"),
        ("patch", "networkpolicies.networking.k8s.io"),
        ("get", "nodes/proxy"),
    ] {
        assert!(can(verb, what, &ns), "the server may {verb} {what}");
    }
    for (verb, what, namespace) in [
        ("create", "pods", "default"),
        ("get", "secrets", "default"),
        ("create", "deployments.apps", &*ns),
        ("create", "roles.rbac.authorization.k8s.io", &*ns),
        ("delete", "nodes", &*ns),
        ("create", "serviceaccounts/token", &*ns),
    ] {
        assert!(!can(verb, what, namespace), "the server may not {verb} {what} in {namespace}");
    }

    // The server comes up in its pod and serves the API.
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(120)).build().unwrap();
    let api = format!("http://127.0.0.1:{api_port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if http.get(format!("{api}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        if Instant::now() > deadline {
            let (_, pods, _) = kubectl(&["get", "pods", "-n", &ns, "-o", "wide"]);
            let (_, logs, _) = kubectl(&["logs", "-n", &ns, "deployment/berth", "--tail=40"]);
            panic!("the in-cluster server never answered\n{pods}\n{logs}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // It creates an instance (a pod in its own namespace) and reaches it at its URL.
    let r = http.post(format!("{api}/v1/instances")).bearer_auth(&admin_key).json(&json!({})).send().await.unwrap();
    let status = r.status();
    let inst: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{inst}");
    let id = inst["id"].as_str().unwrap();
    assert_eq!(inst["status"], "running");
    let (_, pods, _) = kubectl(&["get", "pods", "-n", &ns, "-l", &format!("berth.instance={id}"), "-o", "name"]);
    assert_eq!(pods.lines().count(), 1, "one pod in the server's namespace: {pods}");
    let health = http
        .get(format!("http://127.0.0.1:{edge_port}/health"))
        .header("host", format!("{}.localhost", &id[5..]))
        .bearer_auth(&admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.text().await.unwrap().contains("\"version\""));
    // Its egress changes in place: the server may patch the instance's policy.
    let r = http
        .patch(format!("{api}/v1/instances/{id}"))
        .bearer_auth(&admin_key)
        .json(&json!({"network": {"egress": "none"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, rules, _) =
        kubectl(&["get", "networkpolicy", "-n", &ns, &format!("berth-{}", &id[5..]), "-o", "jsonpath={.spec.egress}"]);
    assert!(rules.is_empty() || rules == "[]", "no egress rule left: {rules}");
    let r = http.delete(format!("{api}/v1/instances/{id}?purge=true")).bearer_auth(&admin_key).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Deletes the test's namespace (everything in it) and its cluster-wide objects.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ns = &self.0;
        kubectl(&["delete", "namespace", ns, "--wait=false"]);
        kubectl(&["delete", "clusterrole,clusterrolebinding", &format!("berth-nodes-{ns}"), "--wait=false"]);
    }
}
