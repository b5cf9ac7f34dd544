//! `--isolation gvisor`: instances run on gVisor's user-space kernel (Debian's
//! `runsc`, registered with dockerd), and everything else still works.

use berth_test_util::docker::{docker, inspect};
use berth_test_util::{require, ServerOptions, TestServer};
use serde_json::json;

#[tokio::test]
async fn instances_run_under_gvisor() {
    let (_, runtimes, _) = docker(&["info", "--format", "{{json .Runtimes}}"]);
    if !runtimes.contains("\"runsc\"") {
        require::missing(
            "BERTH_REQUIRE_GVISOR",
            "a `runsc` runtime in dockerd",
            "apt-get install runsc && scripts/ensure-gvisor.sh",
            "running an instance under gVisor",
        );
        return;
    }
    let s = TestServer::start_with(ServerOptions {
        extra_args: ["--isolation", "gvisor"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await;
    let inst = s.create_instance(json!({})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    assert_eq!(inspect(&format!("berth-{id}"), "{{.HostConfig.Runtime}}"), "runsc");
    // Its kernel is gVisor's, not the host's.
    let out = s.exec(&id, json!(["dmesg"]), None).await;
    assert!(out["stdout"].as_str().unwrap().contains("gVisor"), "{out}");
    // The agent answers through the edge; the home is still bounded.
    let host = berth_test_util::app::host_of(inst["url"].as_str().unwrap());
    let r = s.edge(reqwest::Method::GET, &host, "/health").bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let out = s.exec(&id, json!(["sh", "-c", "fallocate -l 11G /home/agent/big"]), None).await;
    assert_ne!(out["exit_code"], 0, "{out}");
    // Timeouts still kill.
    let (_, r) = s
        .post(&format!("/v1/instances/{id}/exec"), json!({"command": "sleep 300 & sleep 301", "timeout_secs": 1}))
        .await;
    assert_eq!(r["timed_out"], true, "{r}");
}

/// `berth server --isolation gvisor ARGS` on a fresh data dir, expected to refuse to
/// start: its stderr.
fn refused_gvisor_start(args: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(berth_test_util::server::berth_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--edge-listen", "127.0.0.1:0", "--isolation", "gvisor"])
        .args(args)
        .arg("--agent-bin")
        .arg(berth_test_util::server::agent_bin())
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn gvisor_without_its_runtime_is_refused_at_start() {
    let err = refused_gvisor_start(&["--gvisor-runtime", "no-such-runtime"]);
    assert!(err.contains("no runtime `no-such-runtime`") && err.contains("daemon.json"), "{err}");
}

#[test]
fn gvisor_on_kubernetes_is_refused_at_start_not_ignored() {
    let err = refused_gvisor_start(&["--runtime", "kubernetes", "--k8s-agent-image", "berth/agent-bin:x"]);
    assert!(err.contains("--isolation gvisor is not available with --runtime kubernetes"), "{err}");
}
