//! What a server started with its defaults runs: the default base image
//! (`debian:bookworm-slim`, or `berth/base:bookworm` that scripts/build-images.sh builds
//! locally when no registry answers) and the static agent a plain `cargo build` made.

use berth_test_util::docker::exec;
use berth_test_util::{ServerOptions, TestServer};
use serde_json::json;

#[tokio::test]
async fn the_default_debian_base_runs_the_injected_agent() {
    let s = TestServer::start_with(ServerOptions { base_image: None, ..Default::default() }).await;
    let inst = s.create_instance(json!({"name": "real-base"})).await;
    let id = inst["id"].as_str().unwrap();
    assert_eq!(inst["status"], "running");
    let (code, out) = exec(id, "python3 --version && git --version && curl --version | head -1 && echo $HOME");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Python 3") && out.ends_with("/home/agent"), "{out}");
}

/// The default egress policy keeps the public internet open: a package registry
/// (PyPI, which this kind of machine reaches) answers from an instance, name
/// resolution included. Checked only when the host itself reaches it.
#[tokio::test]
async fn the_public_internet_stays_open_under_the_default_egress_policy() {
    const INDEX: &str = "https://pypi.org/simple/six/";
    let host = std::process::Command::new("curl").args(["-sS", "-o", "/dev/null", "-m", "20", INDEX]).status();
    if !host.is_ok_and(|s| s.success()) {
        berth_test_util::require::missing(
            "BERTH_REQUIRE_REGISTRY",
            "a reachable package registry",
            "network access to pypi.org",
            "fetching a package index from an instance",
        );
        return;
    }
    let s = TestServer::start_with(ServerOptions { base_image: None, ..Default::default() }).await;
    let inst = s.create_instance(json!({"name": "pip-like"})).await;
    assert_eq!(inst["network"], json!({"egress": "internet"}));
    let id = inst["id"].as_str().unwrap();
    let (code, out) = exec(id, &format!("curl -sS -m 30 -o /dev/null -w '%{{http_code}}' {INDEX}"));
    assert_eq!((code, out.as_str()), (0, "200"), "the registry is out of an instance's reach: {out}");
}

/// With no `--agent-bin`, the server injects the static agent that `cargo build` made
/// (the dynamically linked `berth-agent` beside it would die in busybox with 127).
#[tokio::test]
async fn the_default_build_runs_its_agent_in_an_image_without_libc() {
    let s = TestServer::start_with(ServerOptions { server_picks_agent: true, ..Default::default() }).await;
    let inst = s.create_instance(json!({"name": "busybox-default-agent"})).await;
    assert_eq!(inst["status"], "running", "{inst}");
    let id = inst["id"].as_str().unwrap();
    let (code, out) = exec(id, "ls /lib*/ld-linux* 2>&1; echo agent-up");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No such file") && out.ends_with("agent-up"), "the test image has no loader: {out}");
}

/// An agent binary that needs a program interpreter is refused before anything starts,
/// with the way out in the message.
#[test]
fn a_dynamically_linked_agent_is_refused_at_start() {
    let data = tempfile::tempdir().unwrap();
    // `berth` itself is linked like every host binary: dynamically.
    let dynamic = berth_test_util::server::berth_bin();
    let out = std::process::Command::new(berth_test_util::server::berth_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--edge-listen", "127.0.0.1:0", "--agent-bin"])
        .arg(&dynamic)
        .arg("--data")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("dynamically linked") && err.contains("ld-linux") && err.contains("scripts/build-agent.sh"),
        "{err}"
    );
    assert!(!data.path().join("berth.db").exists(), "refused before the database was made");
}
