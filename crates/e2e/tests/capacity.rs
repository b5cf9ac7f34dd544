//! Capacity and admission: sizes larger than the host run with their CPU limit
//! clamped; instances' memory may not add up past host memory × overcommit; a
//! server-wide instance cap. A refused create leaves nothing behind.

use berth_test_util::docker::containers_with_label;
use berth_test_util::{ServerOptions, TestServer};
use serde_json::json;

fn host_memory_mib() -> f64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: f64 =
        info.lines().find(|l| l.starts_with("MemTotal:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

fn cpus() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

#[tokio::test]
async fn memory_admission_refuses_what_the_host_cannot_hold_and_creates_nothing() {
    // Room for 5 GiB of instance memory: two size-1 instances (2 GiB each), not three.
    let overcommit = 5.0 * 1024.0 / host_memory_mib();
    let s = TestServer::start_with(ServerOptions {
        extra_args: vec!["--memory-overcommit".into(), format!("{overcommit:.6}")],
        ..Default::default()
    })
    .await;
    let a = s.create_instance(json!({})).await;
    s.create_instance(json!({})).await;
    let before = containers_with_label("berth.install", &s.install_id).len();
    let (status, body) = s.post("/v1/instances", json!({"name": "one too many"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "capacity_exceeded");
    let d = &body["error"]["details"];
    assert_eq!(d["requested_mb"], 2048);
    assert_eq!(d["committed_mb"], 4096);
    assert!(d["capacity_mb"].as_u64().unwrap() < 6144, "{body}");
    assert_eq!(containers_with_label("berth.install", &s.install_id).len(), before, "nothing was created");
    let (_, list) = s.get("/v1/instances").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    // A stopped instance holds no memory: its room goes to the next create, and it
    // cannot start again while that one runs.
    let id = a["id"].as_str().unwrap();
    let (st, _) = s.post(&format!("/v1/instances/{id}/stop"), json!({})).await;
    assert_eq!(st, 200);
    s.create_instance(json!({})).await;
    let (st, body) = s.post(&format!("/v1/instances/{id}/start"), json!({})).await;
    assert_eq!((st, body["error"]["code"].as_str()), (422, Some("capacity_exceeded")), "{body}");
    let (_, got) = s.get(&format!("/v1/instances/{id}")).await;
    assert_eq!(got["status"], "stopped", "a refused start changes nothing");

    // Growing a running instance needs room for the difference.
    let (_, list) = s.get("/v1/instances?status=running").await;
    let running = list["data"][0]["id"].as_str().unwrap().to_string();
    let (st, body) = s
        .call(reqwest::Method::PATCH, &format!("/v1/instances/{running}"), Some(&s.admin_key), Some(json!({"size": 2})))
        .await;
    assert_eq!((st, body["error"]["code"].as_str()), (422, Some("capacity_exceeded")), "{body}");
}

#[tokio::test]
async fn sizes_beyond_the_host_run_with_their_cpu_clamped_and_the_server_cap_holds() {
    let s = TestServer::start_with(ServerOptions {
        extra_args: vec!["--max-instances".into(), "2".into()],
        ..Default::default()
    })
    .await;
    let big = s.create_instance(json!({"size": 8})).await;
    assert_eq!(big["status"], "running");
    assert_eq!(big["size"]["vcpu"], 8);
    assert_eq!(big["size"]["cpu_limit"], 8.min(cpus()), "{big}");
    let id = big["id"].as_str().unwrap();
    let nano = berth_test_util::docker::inspect(&format!("berth-{id}"), "{{.HostConfig.NanoCpus}}");
    assert_eq!(nano, format!("{}", 8.min(cpus()) as u64 * 1_000_000_000));
    let oom = berth_test_util::docker::inspect(&format!("berth-{id}"), "{{.HostConfig.OomScoreAdj}}");
    assert_eq!(oom, "500", "instances die first under memory pressure");

    s.create_instance(json!({})).await;
    let (status, body) = s.post("/v1/instances", json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("capacity_exceeded")), "{body}");
    assert_eq!(body["error"]["details"]["max_instances"], 2);
}
