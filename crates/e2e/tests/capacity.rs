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

    // Resources of its own count for what they ask: shrinking one running instance to
    // 512 MiB makes room for a 2 GiB one, not for 1 GiB more after it.
    let (st, body) = s
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/instances/{running}"),
            Some(&s.admin_key),
            Some(json!({"resources": {"memory_mb": 512}})),
        )
        .await;
    assert_eq!((st, body["resources"]["memory_limit_mb"].as_u64()), (200, Some(512)), "{body}");
    s.create_instance(json!({"resources": {"memory_mb": 2048}})).await;
    let (st, body) = s.post("/v1/instances", json!({"resources": {"memory_mb": 1024}})).await;
    assert_eq!((st, body["error"]["code"].as_str()), (422, Some("capacity_exceeded")), "{body}");
    assert_eq!(
        (body["error"]["details"]["requested_mb"].as_u64(), body["error"]["details"]["committed_mb"].as_u64()),
        (Some(1024), Some(4608)),
        "{body}"
    );
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

/// A limit of an instance's own cgroup, as cgroup v2 writes it (read from the v1 files
/// where the host has cgroup v1): `cpu.max`, `memory.max`, `memory.low`.
async fn cgroup(s: &TestServer, id: &str, file: &str) -> String {
    let v1 = match file {
        "cpu.max" => "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)",
        "memory.max" => "cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
        "memory.low" => "cat /sys/fs/cgroup/memory/memory.soft_limit_in_bytes",
        other => panic!("no v1 equivalent of {other}"),
    };
    let script = format!("if [ -f /sys/fs/cgroup/{file} ]; then cat /sys/fs/cgroup/{file}; else {v1}; fi");
    let out = s.exec(id, json!(["sh", "-c", script]), None).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    out["stdout"].as_str().unwrap().trim().to_string()
}

#[tokio::test]
async fn resources_of_its_own_show_in_the_container_and_change_in_place() {
    let s = TestServer::shared().await;
    let inst = s.create_instance(json!({"resources": {"cpu": "0.5", "memory_mb": 512}})).await;
    let id = inst["id"].as_str().unwrap();
    assert_eq!(
        inst["resources"],
        json!({"cpu": "0.5", "memory_mb": 512, "cpu_limit": "0.5", "memory_limit_mb": 512, "custom": true})
    );
    assert_eq!(cgroup(&s, id, "cpu.max").await, "50000 100000", "half a CPU");
    assert_eq!(cgroup(&s, id, "memory.max").await, (512u64 << 20).to_string());
    let started = s.get(&format!("/v1/instances/{id}")).await.1["restart_count"].clone();

    // Bursting: a guarantee below the limit; applied in place, no restart.
    let body = json!({"resources": {"cpu": "0.25", "cpu_limit": "1", "memory_mb": 3072, "memory_limit_mb": 4096}});
    let (st, got) = s.call(reqwest::Method::PATCH, &format!("/v1/instances/{id}"), Some(&s.key), Some(body)).await;
    assert_eq!((st, got["resources"]["cpu_limit"].as_str()), (200, Some("1")), "{got}");
    assert_eq!(cgroup(&s, id, "cpu.max").await, "100000 100000");
    assert_eq!(cgroup(&s, id, "memory.max").await, (4096u64 << 20).to_string());
    assert_eq!(cgroup(&s, id, "memory.low").await, (3072u64 << 20).to_string(), "the guarantee");
    assert_eq!(got["restart_count"], started);

    // `{}`: the size's again.
    let (_, got) = s
        .call(reqwest::Method::PATCH, &format!("/v1/instances/{id}"), Some(&s.key), Some(json!({"resources": {}})))
        .await;
    assert_eq!(
        (got["resources"]["custom"].as_bool(), got["resources"]["memory_limit_mb"].as_u64()),
        (Some(false), Some(2048))
    );
    assert_eq!(cgroup(&s, id, "memory.max").await, (2048u64 << 20).to_string());
    // The guarantee follows (a larger one left behind would make the next start fail).
    assert_eq!(cgroup(&s, id, "memory.low").await, (2048u64 << 20).to_string());
    for action in ["stop", "start"] {
        let (st, got) = s.post(&format!("/v1/instances/{id}/{action}"), json!({})).await;
        assert_eq!(st, 200, "{action}: {got}");
    }

    // Outside the operator's bounds, or a limit below its guarantee: 422, nothing made.
    for (body, field) in [
        (json!({"resources": {"cpu": "64"}}), "resources.cpu"),
        (json!({"resources": {"memory_mb": 16}}), "resources.memory_mb"),
        (json!({"resources": {"memory_mb": 1024, "memory_limit_mb": 512}}), "resources.memory_limit_mb"),
    ] {
        let (st, err) = s.post("/v1/instances", body.clone()).await;
        assert_eq!((st, err["error"]["code"].as_str()), (422, Some("resources_out_of_bounds")), "{body}: {err}");
        assert_eq!(err["error"]["details"]["field"].as_str(), Some(field), "{body}: {err}");
    }
    let (st, err) = s.post("/v1/instances", json!({"resources": {"cpu": "half"}})).await;
    assert_eq!((st, err["error"]["details"]["field"].as_str()), (400, Some("resources.cpu")), "{err}");
    // A deleted instance has no container to resize: refused, as a size change is.
    s.call(reqwest::Method::DELETE, &format!("/v1/instances/{id}"), Some(&s.key), None).await;
    let body = json!({"resources": {"memory_mb": 512}});
    let (st, err) = s.call(reqwest::Method::PATCH, &format!("/v1/instances/{id}"), Some(&s.key), Some(body)).await;
    assert_eq!((st, err["error"]["code"].as_str()), (409, Some("invalid_state")), "{err}");
    s.call(reqwest::Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(&s.key), None).await;
}
