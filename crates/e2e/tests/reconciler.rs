//! The reconciler brings Docker back to the database's desired state. Tests of one
//! instance share a server (each in a workspace of its own); those about the
//! installation as a whole (orphans, a killed server, metrics) have their own.

use berth_test_util::docker::{containers_with_label, docker, exec, inspect};
use berth_test_util::TestServer;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

async fn wait_for(
    s: &TestServer,
    id: &str,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, inst) = s.get(&format!("/v1/instances/{id}")).await;
        if check(&inst) {
            return inst;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {inst}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits (restart_count rises before the new container is up) until the agent answers.
async fn agent_answers(id: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if exec(id, "timeout 2 wget -q -O - http://127.0.0.1:3737/health").0 == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

#[tokio::test]
async fn a_removed_or_dead_container_comes_back_with_its_data() {
    let s = TestServer::shared().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    assert_eq!(exec(&id, "echo kept > /home/agent/notes.txt").0, 0);

    // Removed behind berth's back.
    docker(&["rm", "-f", &format!("berth-{id}")]);
    let inst = wait_for(&s, &id, "restart after removal", |i| i["restart_count"] == 1).await;
    assert_eq!(inst["status"], "running");
    assert!(agent_answers(&id).await);
    assert_eq!(exec(&id, "cat /home/agent/notes.txt").1, "kept");

    // Killed behind berth's back.
    docker(&["kill", &format!("berth-{id}")]);
    let inst = wait_for(&s, &id, "restart after kill", |i| i["restart_count"] == 2).await;
    assert_eq!(inst["status"], "running");
    assert!(agent_answers(&id).await);
    assert_eq!(exec(&id, "cat /home/agent/notes.txt").1, "kept");

    // Started behind berth's back while it should be stopped: stopped again.
    let (st, _) = s.call(Method::POST, &format!("/v1/instances/{id}/stop"), Some(&s.key), None).await;
    assert_eq!(st, 200);
    docker(&["start", &format!("berth-{id}")]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while inspect(&format!("berth-{id}"), "{{.State.Running}}") == "true" {
        assert!(Instant::now() < deadline, "container kept running although the instance is stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_crash_loop_ends_in_error_with_a_reason() {
    let s = TestServer::shared().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, inst) = s.get(&format!("/v1/instances/{id}")).await;
        if inst["status"] == "error" {
            let reason = inst["status_reason"].as_str().unwrap_or_default();
            assert!(reason.contains("crash loop"), "{inst}");
            assert!(inst["restart_count"].as_u64().unwrap() >= 5, "{inst}");
            break;
        }
        assert!(Instant::now() < deadline, "never gave up: {inst}\n{}", s.log());
        // Kill the agent every time it is back up.
        docker(&["kill", &format!("berth-{id}")]);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A start from the error state brings it back.
    let (st, inst) = s.call(Method::POST, &format!("/v1/instances/{id}/start"), Some(&s.key), None).await;
    assert_eq!((st, inst["status"].as_str()), (200, Some("running")), "{inst}");
}

#[tokio::test]
async fn orphans_are_removed_and_a_server_killed_mid_create_leaves_nothing() {
    let mut s = TestServer::start().await;
    let keep = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();

    // A container of this installation with no record is removed (the reconciler may
    // remove it between Docker's create and start, so it is only created here).
    let orphan_id = format!("inst_orphan{}", &s.install_id[s.install_id.len() - 5..]);
    let (ok, _, err) = docker(&[
        "create",
        "--name",
        &format!("berth-{orphan_id}"),
        "--label",
        &format!("berth.instance={orphan_id}"),
        "--label",
        &format!("berth.install={}", s.install_id),
        "berth-test/busybox:latest",
        "sleep",
        "600",
    ]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !containers_with_label("berth.instance", &orphan_id).is_empty() {
        assert!(Instant::now() < deadline, "orphan not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // kill -9 the server while a create is in flight.
    let base = s.base.clone();
    let key = s.admin_key.clone();
    let create = tokio::spawn(async move {
        reqwest::Client::new().post(format!("{base}/v1/instances")).bearer_auth(key).json(&json!({})).send().await
    });
    // Wait until the create has a record in `creating` or a container exists.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let containers = containers_with_label("berth.install", &s.install_id);
        if containers.len() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "create never reached Docker");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.kill();
    let _ = create.await;
    s.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, list) = s.get("/v1/instances?limit=100").await;
        let records = list["data"].as_array().unwrap().clone();
        let creating = records.iter().any(|i| i["status"] == "creating");
        let containers = containers_with_label("berth.install", &s.install_id);
        let consistent = containers.len() == records.len()
            && records.iter().all(|i| containers.contains(&format!("berth-{}", i["id"].as_str().unwrap())));
        if !creating && consistent {
            assert!(records.iter().any(|i| i["id"] == json!(keep)));
            break;
        }
        assert!(Instant::now() < deadline, "left behind: records {records:?}, containers {containers:?}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The surviving instance still works.
    let (_, inst) = s.get(&format!("/v1/instances/{keep}")).await;
    assert_eq!(inst["status"], "running");
}

#[tokio::test]
async fn one_unremovable_orphan_does_not_stop_the_reconciler() {
    let s = TestServer::start().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    // An orphan volume of this installation that Docker refuses to remove: a
    // container of no installation holds it.
    let orphan = format!("inst_stuck{}", &s.install_id[s.install_id.len() - 5..]);
    let volume = format!("berth-{orphan}-home");
    let holder = format!("holder-{}", s.install_id);
    // Created with its labels by the mount itself, so it is in use from its first moment.
    let mount = format!(
        "type=volume,source={volume},target=/data,volume-label=berth.install={},volume-label=berth.instance={orphan}",
        s.install_id
    );
    let (ok, _, err) =
        docker(&["run", "-d", "--name", &holder, "--mount", &mount, "berth-test/busybox:latest", "sleep", "600"]);
    assert!(ok, "{err}");

    // The reconciler keeps failing on the orphan, and still brings back a dead instance.
    docker(&["kill", &format!("berth-{id}")]);
    let inst = wait_for(&s, &id, "restart despite the stuck orphan", |i| i["restart_count"] == 1).await;
    assert_eq!(inst["status"], "running");
    assert!(agent_answers(&id).await);
    // Volumes are listed on a sweep (every 15th pass, sooner when events nudge the
    // reconciler): the failure is counted by the sweep after the orphan appeared.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = s.http().get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
        let failures = metrics
            .lines()
            .find(|l| l.starts_with("berth_reconcile_failures_total{kind=\"remove_orphan_volume\"}"))
            .filter(|l| !l.ends_with(" 0"));
        if failures.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "the failure is counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    docker(&["rm", "-f", &holder]);
    docker(&["volume", "rm", &volume]);
}

/// Docker Engine calls made so far by the server, from `/metrics`.
async fn runtime_calls(s: &TestServer) -> u64 {
    let text = s.http().get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("berth_runtime_calls_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn an_idle_server_does_not_call_docker_per_instance_and_still_sees_a_death() {
    let s = TestServer::start().await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(s.create_instance(json!({})).await["id"].as_str().unwrap().to_string());
    }
    // Passes every 300 ms: 20 passes in 6 s. Polling would inspect every instance every
    // pass (over 120 calls); listing once per change and sweeping every 15 passes, the
    // idle server makes a handful whatever the count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = runtime_calls(&s).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let idle = runtime_calls(&s).await - before;
    assert!(idle <= 20, "{idle} Docker calls in 6 s of idleness with 6 instances\n{}", s.log());

    // Nothing listed is trusted over what happens: a container killed behind berth's
    // back still comes back (Docker's events say so at once).
    docker(&["kill", &format!("berth-{}", ids[0])]);
    wait_for(&s, &ids[0], "restart after kill", |i| i["restart_count"] == 1).await;
    assert!(agent_answers(&ids[0]).await);
    for id in &ids[1..] {
        let (_, inst) = s.get(&format!("/v1/instances/{id}")).await;
        assert_eq!((inst["status"].as_str(), inst["restart_count"].as_u64()), (Some("running"), Some(0)), "{inst}");
    }
}
