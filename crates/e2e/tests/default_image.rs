//! One instance on the real default base image (`debian:bookworm-slim`, pulled
//! or built locally by scripts/build-images.sh).

use berth_test_util::docker::exec;
use berth_test_util::{ServerOptions, TestServer};
use serde_json::json;

#[tokio::test]
async fn the_default_debian_base_runs_the_injected_agent() {
    let s =
        TestServer::start_with(ServerOptions { base_image: "debian:bookworm-slim".into(), ..Default::default() }).await;
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
    let s =
        TestServer::start_with(ServerOptions { base_image: "debian:bookworm-slim".into(), ..Default::default() }).await;
    let inst = s.create_instance(json!({"name": "pip-like"})).await;
    assert_eq!(inst["network"], json!({"egress": "internet"}));
    let id = inst["id"].as_str().unwrap();
    let (code, out) = exec(id, &format!("curl -sS -m 30 -o /dev/null -w '%{{http_code}}' {INDEX}"));
    assert_eq!((code, out.as_str()), (0, "200"), "the registry is out of an instance's reach: {out}");
}
