//! An instance through its whole life, with its data surviving every step. The
//! tests that leave the server alone share one (each in a workspace of its own).

use berth_test_util::docker::{exec, inspect, volumes_with_label};
use berth_test_util::{kubernetes, TestServer};
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};

async fn act(s: &TestServer, id: &str, action: &str) -> (u16, serde_json::Value) {
    s.call(Method::POST, &format!("/v1/instances/{id}/{action}"), Some(&s.key), None).await
}

fn assert_data(id: &str, step: &str) {
    let (code, out) = exec(id, "cat /home/agent/notes.txt");
    assert_eq!((code, out.as_str()), (0, "kept"), "data lost after {step}");
}

#[tokio::test]
async fn create_answers_a_running_instance_with_a_healthy_agent() {
    let s = TestServer::shared().await;
    // Empty body, no content type: every field is optional.
    let resp = s.http().post(format!("{}/v1/instances", s.base)).bearer_auth(&s.key).send().await.unwrap();
    let status = resp.status();
    let inst: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(status, 201, "{inst}\n{}", s.log());
    let id = inst["id"].as_str().unwrap();
    assert!(id.starts_with("inst_") && id.len() == 15, "{id}");
    assert_eq!(inst["object"], "instance");
    assert_eq!(inst["status"], "running");
    assert_eq!(inst["template"]["id"], "berth-agent");
    assert_eq!(inst["size"], json!({"size": 1, "vcpu": 1, "memory_mb": 2048, "disk_gb": 10, "cpu_limit": 1}));
    let label = &id[5..];
    assert_eq!(inst["url"], format!("http://{label}.localhost:{}", s.edge_port()));
    assert_eq!(inst["ports"][0]["port"], 3737);
    assert_eq!(inst["ports"][0]["default"], true);
    // The agent answers inside the container right away.
    let (code, out) = exec(id, "wget -q -O - http://127.0.0.1:3737/health");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"version\""), "{out}");
    // Labels let an operator find it; limits are enforced by the runtime.
    if kubernetes::enabled() {
        let pod = kubernetes::pod_json(id);
        assert_eq!(pod["metadata"]["labels"]["berth.instance"], json!(id));
        assert!(pod["metadata"]["labels"]["berth.workspace"].as_str().unwrap().starts_with("ws_"));
        let main = &pod["spec"]["containers"][0];
        assert_eq!(main["resources"]["limits"], json!({"cpu": "1", "memory": "2Gi"}), "{main}");
        assert_eq!(main["securityContext"]["privileged"], false);
        assert_eq!(main["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(main["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    } else {
        docker_limits_and_labels(id);
    }
    // Retrieve and list agree.
    let (st, got) = s.get(&format!("/v1/instances/{id}")).await;
    assert_eq!((st, &got["id"]), (200, &json!(id)));
    let (_, list) = s.get("/v1/instances").await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], json!(id));
}

fn docker_limits_and_labels(id: &str) {
    let name = format!("berth-{id}");
    assert_eq!(inspect(&name, "{{index .Config.Labels \"berth.instance\"}}"), id);
    assert!(inspect(&name, "{{index .Config.Labels \"berth.workspace\"}}").starts_with("ws_"));
    assert_eq!(inspect(&name, "{{.HostConfig.NanoCpus}}"), "1000000000");
    assert_eq!(inspect(&name, "{{.HostConfig.Memory}}"), (2048u64 * 1024 * 1024).to_string());
    assert_eq!(inspect(&name, "{{.HostConfig.PidsLimit}}"), "1024");
    assert_eq!(inspect(&name, "{{.HostConfig.Privileged}}"), "false");
    assert!(inspect(&name, "{{.HostConfig.SecurityOpt}}").contains("no-new-privileges"));
    assert!(inspect(&name, "{{.HostConfig.CapDrop}}").contains("ALL"));
}

/// The CPU limit the runtime enforces on the instance, in thousandths of a CPU.
fn cpu_limit_millis(id: &str) -> u64 {
    if kubernetes::enabled() {
        let cpu = kubernetes::pod_json(id)["spec"]["containers"][0]["resources"]["limits"]["cpu"].clone();
        let cpu = cpu.as_str().unwrap().to_string();
        return cpu.strip_suffix('m').map_or_else(|| cpu.parse::<u64>().unwrap() * 1000, |m| m.parse().unwrap());
    }
    inspect(&format!("berth-{id}"), "{{.HostConfig.NanoCpus}}").parse::<u64>().unwrap() / 1_000_000
}

#[tokio::test]
async fn data_survives_every_lifecycle_step() {
    let s = TestServer::shared().await;
    let inst = s
        .create_instance(
            json!({"name": "alice", "user": "u1", "metadata": {"plan": "pro"}, "env": {"SECRET": "hunter2"}}),
        )
        .await;
    let id = inst["id"].as_str().unwrap().to_string();
    assert_eq!(inst["env"], json!({"SECRET": "***"}), "env values are never echoed");
    assert_eq!(exec(&id, "echo kept > /home/agent/notes.txt").0, 0);

    let (st, body) = act(&s, &id, "stop").await;
    assert_eq!((st, body["status"].as_str()), (200, Some("stopped")));
    // Wrong-state transitions answer 409 with the current status.
    for action in ["pause", "resume", "stop", "restore"] {
        let (st, err) = act(&s, &id, action).await;
        assert_eq!(st, 409, "{action} on stopped: {err}");
        assert_eq!(err["error"]["code"], "invalid_state");
        assert_eq!(err["error"]["details"]["current_status"], "stopped");
    }
    let (st, body) = act(&s, &id, "start").await;
    assert_eq!((st, body["status"].as_str()), (200, Some("running")));
    assert_data(&id, "stop/start");

    let (st, _) = act(&s, &id, "restart").await;
    assert_eq!(st, 200);
    assert_data(&id, "restart");

    let (st, body) = act(&s, &id, "pause").await;
    assert_eq!((st, body["status"].as_str()), (200, Some("paused")));
    if kubernetes::enabled() {
        // Kubernetes cannot freeze a pod: a paused instance has none (its home is kept).
        assert_eq!(kubernetes::pod_of(&id), None, "a paused instance's pod is deleted");
    } else {
        assert_eq!(inspect(&format!("berth-{id}"), "{{.State.Paused}}"), "true");
    }
    let (st, err) = act(&s, &id, "start").await;
    assert_eq!((st, err["error"]["details"]["current_status"].as_str()), (409, Some("paused")));
    let (st, _) = act(&s, &id, "resume").await;
    assert_eq!(st, 200);
    assert_data(&id, "pause/resume");

    // Resize (in place on Docker, a new pod on Kubernetes): new limits, same data.
    let (st, body) =
        s.call(Method::PATCH, &format!("/v1/instances/{id}"), Some(&s.key), Some(json!({"size": 2}))).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["size"]["vcpu"], 2);
    assert_eq!(cpu_limit_millis(&id), 2000);
    assert_data(&id, "resize");

    // New env recreates the container; data stays, the process sees the new value.
    let (st, body) = s
        .call(
            Method::PATCH,
            &format!("/v1/instances/{id}"),
            Some(&s.key),
            Some(json!({"env": {"COLOR": "blue"}, "name": "bob"})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["name"], "bob");
    assert_eq!(body["env"], json!({"COLOR": "***"}));
    assert_eq!(exec(&id, "cat /proc/1/environ | tr '\\0' '\\n' | grep COLOR").1, "COLOR=blue");
    assert_data(&id, "env change");

    // Update recreates the container on the newest template version; data stays.
    let (st, body) = act(&s, &id, "update").await;
    assert_eq!(
        (st, body["status"].as_str(), body["update_available"].as_bool()),
        (200, Some("running"), Some(false)),
        "{body}"
    );
    assert_data(&id, "update");

    // Soft delete keeps the data; restore brings it back.
    let (st, body) = s.call(Method::DELETE, &format!("/v1/instances/{id}"), Some(&s.key), None).await;
    assert_eq!((st, body["status"].as_str()), (200, Some("deleted")), "{body}");
    let (_, list) = s.get("/v1/instances").await;
    assert!(list["data"].as_array().unwrap().iter().all(|i| i["id"] != json!(id)), "deleted instances leave the list");
    let (_, deleted) = s.get("/v1/instances?status=deleted").await;
    assert_eq!(deleted["data"][0]["id"], json!(id));
    let (st, body) = act(&s, &id, "restore").await;
    assert_eq!((st, body["status"].as_str()), (200, Some("running")), "{body}");
    assert_data(&id, "delete/restore");

    // Purge removes everything.
    let (st, body) = s.call(Method::DELETE, &format!("/v1/instances/{id}?purge=true"), Some(&s.key), None).await;
    assert_eq!((st, body["purged"].as_bool()), (200, Some(true)), "{body}");
    let (st, _) = s.get(&format!("/v1/instances/{id}")).await;
    assert_eq!(st, 404);
    if kubernetes::enabled() {
        // The claim goes once the pod that mounted it has terminated (the cluster's
        // pvc-protection finalizer): gone within a minute.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = kubernetes::names_with_label("pvc,secrets", "berth.instance", &id);
            if left.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "home left after purge: {left:?}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    } else {
        assert!(volumes_with_label("berth.instance", &id).is_empty(), "volume left after purge");
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly_and_instances_keep_running() {
    let mut s = TestServer::start().await;
    let inst = s.create_instance(json!({})).await;
    let id = inst["id"].as_str().unwrap().to_string();
    let status = s.terminate().expect("server was running");
    assert!(status.success(), "exit status {status:?}");
    if kubernetes::enabled() {
        assert!(kubernetes::pod_json(&id)["status"]["containerStatuses"][0]["state"]["running"].is_object());
    } else {
        assert_eq!(inspect(&format!("berth-{id}"), "{{.State.Running}}"), "true");
    }
    s.restart().await;
    let (st, got) = s.get(&format!("/v1/instances/{id}")).await;
    assert_eq!((st, got["status"].as_str(), got["restart_count"].as_u64()), (200, Some("running"), Some(0)));
}
