//! The Kubernetes runtime in tests: with `BERTH_TEST_RUNTIME=kubernetes` (and
//! `BERTH_TEST_KUBECONFIG` naming a cluster's kubeconfig, as `scripts/test.sh` sets
//! them after starting the testbed), test servers run instances as pods
//! ([`server_args`]), and the helpers here look at what they made with `kubectl`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Whether test servers run their instances on Kubernetes.
pub fn enabled() -> bool {
    std::env::var("BERTH_TEST_RUNTIME").is_ok_and(|r| r == "kubernetes")
}

/// The cluster's kubeconfig: `$BERTH_TEST_KUBECONFIG`.
pub fn kubeconfig() -> PathBuf {
    PathBuf::from(
        std::env::var("BERTH_TEST_KUBECONFIG")
            .expect("BERTH_TEST_RUNTIME=kubernetes needs BERTH_TEST_KUBECONFIG (scripts/test.sh sets both)"),
    )
}

/// `kubectl`: `$BERTH_TEST_KUBECTL`, else the one on `PATH`.
fn kubectl_bin() -> String {
    std::env::var("BERTH_TEST_KUBECTL").unwrap_or_else(|_| "kubectl".into())
}

/// `kubectl ARGS` against the test cluster, ready to run.
fn kubectl_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(kubectl_bin());
    cmd.arg("--kubeconfig").arg(kubeconfig()).args(args);
    cmd
}

/// Runs `kubectl ARGS` against the test cluster: (success, stdout, stderr).
pub fn kubectl(args: &[&str]) -> (bool, String, String) {
    let out = kubectl_command(args).output().expect("kubectl runs (BERTH_TEST_KUBECTL)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// The agent image test servers use: `$BERTH_TEST_K8S_AGENT_IMAGE`, else built once
/// by `scripts/build-agent-image.sh` from the test agent into the local Docker (the
/// testbed's node runs on it).
pub fn agent_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let Ok(image) = std::env::var("BERTH_TEST_K8S_AGENT_IMAGE") {
                return image;
            }
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let out = Command::new(root.join("scripts/build-agent-image.sh"))
                .args(["--agent", &crate::server::agent_bin().display().to_string()])
                .output()
                .expect("scripts/build-agent-image.sh runs");
            assert!(out.status.success(), "building the agent image: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        })
        .clone()
}

/// The flags that put a test server's instances on the test cluster.
pub fn server_args() -> Vec<String> {
    vec![
        "--runtime".into(),
        "kubernetes".into(),
        "--kubeconfig".into(),
        kubeconfig().display().to_string(),
        "--k8s-agent-image".into(),
        agent_image(),
        // Tests run many instances on one small node: reserve little of each.
        "--k8s-memory-request-percent".into(),
        "5".into(),
    ]
}

/// The name of the instance's pod now (not one being deleted), if it has one.
pub fn pod_of(instance_id: &str) -> Option<String> {
    let selector = format!("berth.instance={instance_id}");
    let format = r#"jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\n"}{end}"#;
    let (_, out, _) = kubectl(&["get", "pods", "-l", &selector, "-o", format]);
    out.lines().map(str::split_whitespace).find_map(|mut f| match (f.next(), f.next()) {
        (Some(name), None) => Some(name.to_string()),
        _ => None,
    })
}

/// `sh -c SCRIPT` in the instance's pod, as `kubectl exec` runs it: (exit code, output).
pub fn exec(instance_id: &str, script: &str) -> (i32, String) {
    let pod = pod_of(instance_id).unwrap_or_else(|| panic!("instance {instance_id} has no pod"));
    let out = kubectl_command(&["exec", &pod, "-c", "main", "--", "sh", "-c", script]).output().expect("kubectl runs");
    let mut text = String::from_utf8_lossy(&out.stdout).to_string();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text.trim().to_string())
}

/// Removes every object of an installation from the test cluster (not waiting).
pub fn remove_install(install_id: &str) {
    let selector = format!("berth.install={install_id}");
    kubectl(&["delete", "pods,secrets,networkpolicies,pvc", "-l", &selector, "--wait=false", "--grace-period=0"]);
}

/// The instance's current pod as JSON (`kubectl get pod -o json`).
pub fn pod_json(instance_id: &str) -> serde_json::Value {
    let pod = pod_of(instance_id).unwrap_or_else(|| panic!("instance {instance_id} has no pod"));
    let (ok, out, err) = kubectl(&["get", "pod", &pod, "-o", "json"]);
    assert!(ok, "kubectl get pod {pod}: {err}");
    serde_json::from_str(&out).expect("pod JSON")
}

/// Names of objects of `kind` (`pvc`, `secrets`, ...) carrying label `key=value`.
pub fn names_with_label(kind: &str, key: &str, value: &str) -> Vec<String> {
    let selector = format!("{key}={value}");
    let (_, out, _) = kubectl(&["get", kind, "-l", &selector, "-o", "name"]);
    out.lines().map(str::to_string).filter(|s| !s.is_empty()).collect()
}

/// For a test (or part) that checks what only Docker does: on the Kubernetes runtime,
/// says on stderr that it is skipped and why, and answers true (skip it).
pub fn skip_here(what: &str, why: &str) -> bool {
    if !enabled() {
        return false;
    }
    let test = std::thread::current().name().unwrap_or("<unnamed test>").to_string();
    eprintln!("SKIPPED on the Kubernetes runtime in {test}: {what}, because {why}");
    true
}
