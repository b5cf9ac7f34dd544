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
