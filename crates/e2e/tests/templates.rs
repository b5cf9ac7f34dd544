//! Custom templates on real containers: an image's own program beside the agent with
//! its ports and env, private sandboxes, versions with update, pinning and rollback
//! (the home kept), a failed update going back, deletion rules, and bodies checked.

use berth_test_util::app::{host_of, port_url};
use berth_test_util::TestServer;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn image() -> String {
    std::env::var("BERTH_TEST_IMAGE").unwrap_or_else(|_| "berth-test/busybox:latest".into())
}

async fn patch(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    s.call(Method::PATCH, path, Some(&s.key), Some(body)).await
}

async fn delete(s: &TestServer, path: &str) -> (u16, Value) {
    s.call(Method::DELETE, path, Some(&s.key), None).await
}

async fn template(s: &TestServer, body: Value) -> Value {
    let (status, t) = s.post("/v1/templates", body).await;
    assert_eq!(status, 201, "{t}");
    t
}

async fn sh(s: &TestServer, id: &str, script: &str) -> String {
    let out = s.exec(id, json!(["sh", "-c", script]), None).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    out["stdout"].as_str().unwrap().trim().to_string()
}

/// GET through the edge with the test's key until it answers 200; the body.
async fn edge_text(s: &TestServer, host: &str, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.edge(Method::GET, host, path).bearer_auth(&s.key).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        if status == 200 {
            return text;
        }
        assert!(Instant::now() < deadline, "{host}{path} answered {status}: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_custom_template_runs_its_program_beside_the_agent_with_its_ports_and_env() {
    let s = TestServer::shared().await;
    let web =
        "mkdir -p /tmp/www && echo \"hello $GREETING\" > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www";
    let t = template(
        &s,
        json!({"name": "web", "image": image(), "ports": [{"port": 3737, "default": true}, {"port": 8080}],
               "command": ["sh", "-c", web], "env": {"GREETING": "from-template", "OTHER": "template"}}),
    )
    .await;
    assert_eq!(
        (t["version"].as_u64(), t["status"].as_str(), t["agent"].as_bool()),
        (Some(1), Some("ready"), Some(true))
    );
    assert_eq!(t["env"], json!({"GREETING": "***", "OTHER": "***"}), "template env values are never echoed");
    let tid = t["id"].as_str().unwrap();
    assert!(tid.starts_with("tpl_"), "{t}");

    let inst = s.create_instance(json!({"template": "web", "env": {"OTHER": "instance"}})).await;
    let id = inst["id"].as_str().unwrap();
    assert_eq!(inst["template"], json!({"id": tid, "version": 1}));
    assert_eq!(inst["agents"], json!(["berth-agent"]));
    let ports = inst["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "{inst}");
    assert_eq!((ports[0]["port"].as_u64(), ports[0]["default"].as_bool()), (Some(3737), Some(true)));
    // The template's own program serves its port, with the template's env...
    let page = edge_text(&s, &host_of(&port_url(&inst, 8080)), "/index.html").await;
    assert_eq!(page.trim(), "hello from-template");
    // ...the agent still answers at the instance's URL...
    let health = edge_text(&s, &host_of(inst["url"].as_str().unwrap()), "/health").await;
    assert!(health.contains("ok"), "{health}");
    // ...and the instance's own env wins over the template's.
    assert_eq!(sh(&s, id, "echo $OTHER").await, "instance");

    let (status, list) = s.get("/v1/templates").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["berth-agent", "web"]);
    let (status, by_name) = s.get("/v1/templates/web").await;
    assert_eq!((status, by_name["id"].as_str()), (200, Some(tid)));
}

#[tokio::test]
async fn sandboxes_without_the_agent_run_the_images_program_and_are_ready_when_it_answers() {
    let s = TestServer::shared().await;
    // No agent, no port: a private sandbox, no URL, driven by exec.
    template(&s, json!({"name": "box", "image": image(), "agent": false, "command": ["sleep", "100000"]})).await;
    let inst = s.create_instance(json!({"template": "box"})).await;
    assert_eq!(
        (inst["url"].clone(), inst["ports"].clone(), inst["agents"].clone()),
        (Value::Null, json!([]), json!([]))
    );
    let id = inst["id"].as_str().unwrap();
    assert_eq!(sh(&s, id, "echo hi from the sandbox").await, "hi from the sandbox");
    assert!(sh(&s, id, "ps -o args").await.contains("sleep 100000"), "the template's command runs");

    // No agent, a default port and a health path: created once the page answers.
    let site = "mkdir -p /tmp/w && echo up > /tmp/w/ready.html && exec httpd -f -p 8080 -h /tmp/w";
    template(
        &s,
        json!({"name": "site", "image": image(), "agent": false, "ports": [{"port": 8080, "default": true}],
               "health_path": "/ready.html", "command": ["sh", "-c", site], "default_size": 2}),
    )
    .await;
    let inst = s.create_instance(json!({"template": "site"})).await;
    assert_eq!(inst["size"]["size"], 2, "the template's default size");
    assert_eq!(inst["ports"].as_array().unwrap().len(), 1);
    let host = host_of(inst["url"].as_str().unwrap());
    let r = s.edge(Method::GET, &host, "/ready.html").bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(r.status(), 200, "ready at once: create waited for the health path");
    assert_eq!(r.text().await.unwrap().trim(), "up");
    // The edge hands no gateway token to a program that is not the agent.
    let id = inst["id"].as_str().unwrap();
    assert_eq!(sh(&s, id, "echo ${BERTH_GATEWAY_TOKEN:-none}").await, "none");
}

#[tokio::test]
async fn versions_update_pin_and_roll_back_with_the_home_kept() {
    let s = TestServer::shared().await;
    let t = template(&s, json!({"name": "ver", "image": image(), "env": {"V": "1"}})).await;
    let tid = t["id"].as_str().unwrap().to_string();
    let a = s.create_instance(json!({"template": tid})).await;
    let a_id = a["id"].as_str().unwrap().to_string();
    let b = s.create_instance(json!({"template": {"id": tid, "version": 1}})).await;
    let b_id = b["id"].as_str().unwrap().to_string();
    sh(&s, &a_id, "echo kept > /home/agent/kept.txt").await;

    let (status, t2) = patch(&s, &format!("/v1/templates/{tid}"), json!({"env": {"V": "2"}})).await;
    assert_eq!((status, t2["version"].as_u64()), (200, Some(2)), "{t2}");
    let (_, got) = s.get(&format!("/v1/instances/{a_id}")).await;
    assert_eq!((got["template"]["version"].as_u64(), got["update_available"].as_bool()), (Some(1), Some(true)));

    let (status, up) = s.post(&format!("/v1/instances/{a_id}/update"), json!({})).await;
    assert_eq!(status, 200, "{up}");
    assert_eq!((up["template"]["version"].as_u64(), up["update_available"].as_bool()), (Some(2), Some(false)));
    assert_eq!(sh(&s, &a_id, "cat /home/agent/kept.txt; echo $V").await, "kept\n2");

    // An older version rolls back.
    let (status, down) = s.post(&format!("/v1/instances/{a_id}/update"), json!({"version": 1})).await;
    assert_eq!((status, down["template"]["version"].as_u64()), (200, Some(1)), "{down}");
    assert_eq!(sh(&s, &a_id, "echo $V").await, "1");
    // A pinned instance stays where it was put.
    let (_, got) = s.get(&format!("/v1/instances/{b_id}")).await;
    assert_eq!(got["template"]["version"], 1);

    // A version that cannot come up: the instance goes back to the one it ran.
    let missing = "127.0.0.1:9/berth-test/missing:1";
    let (status, t3) = patch(&s, &format!("/v1/templates/{tid}"), json!({"image": missing})).await;
    assert_eq!((status, t3["version"].as_u64()), (200, Some(3)));
    let (status, err) = s.post(&format!("/v1/instances/{a_id}/update"), json!({})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (422, Some("image_unavailable")), "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains(missing), "{err}");
    let (_, got) = s.get(&format!("/v1/instances/{a_id}")).await;
    assert_eq!((got["status"].as_str(), got["template"]["version"].as_u64()), (Some("running"), Some(1)), "{got}");
    assert_eq!(sh(&s, &a_id, "cat /home/agent/kept.txt").await, "kept");
    let (_, events) = s.get(&format!("/v1/instances/{a_id}/events")).await;
    assert!(events.to_string().contains("update failed, back on version 1"), "{events}");

    let (status, err) = s.post("/v1/instances", json!({"template": {"id": tid, "version": 9}})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("template_version_not_found")), "{err}");

    // In use: deleting needs force; the instances keep running what they have.
    let (status, err) = delete(&s, &format!("/v1/templates/{tid}")).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("template_in_use")), "{err}");
    let (status, _) = delete(&s, &format!("/v1/templates/{tid}?force=true")).await;
    assert_eq!(status, 200);
    assert_eq!(sh(&s, &a_id, "echo $V").await, "1");
    let (status, err) = s.post(&format!("/v1/instances/{a_id}/update"), json!({})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("template_not_found")), "{err}");
    let (_, got) = s.get(&format!("/v1/instances/{a_id}")).await;
    assert_eq!((got["status"].as_str(), got["update_available"].as_bool()), (Some("running"), Some(false)));
}

#[tokio::test]
async fn template_bodies_are_checked_and_templates_stay_in_their_workspace() {
    let s = TestServer::shared().await;
    let t = template(&s, json!({"name": "mine", "image": image()})).await;
    let tid = t["id"].as_str().unwrap();
    for (body, status, code) in [
        (json!({"name": "mine", "image": image()}), 409, "name_taken"),
        (json!({"name": "noimage"}), 400, "invalid_request"),
        (json!({"name": "Bad Name", "image": image()}), 400, "invalid_request"),
        (json!({"name": "p", "image": image(), "ports": [{"port": 0}]}), 400, "invalid_request"),
        (json!({"name": "p", "image": image(), "unknown": 1}), 400, "invalid_request"),
    ] {
        let (got, err) = s.post("/v1/templates", body.clone()).await;
        assert_eq!((got, err["error"]["code"].as_str()), (status, Some(code)), "{body}: {err}");
    }
    for (body, field) in [
        (json!({"name": "b", "build": {"dockerfile": "RUN true"}}), "build.dockerfile"),
        (json!({"name": "b", "build": {"dockerfile": "FROM x", "context": "not base64!"}}), "build.context"),
        (json!({"name": "b", "image": "x", "build": {"dockerfile": "FROM x"}}), "build"),
    ] {
        let (status, err) = s.post("/v1/templates", body.clone()).await;
        assert_eq!((status, err["error"]["code"].as_str()), (422, Some("invalid_template")), "{body}: {err}");
        assert_eq!(err["error"]["details"]["field"].as_str(), Some(field), "{body}: {err}");
    }
    for (status, err) in [
        patch(&s, "/v1/templates/berth-agent", json!({"image": "x"})).await,
        delete(&s, "/v1/templates/berth-agent").await,
    ] {
        assert_eq!((status, err["error"]["code"].as_str()), (409, Some("system_template")), "{err}");
    }
    let (status, err) = s.post("/v1/instances", json!({"template": "nope"})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("template_not_found")), "{err}");

    // Another workspace neither sees it nor creates from it.
    let other = s.create_workspace("templates-other").await;
    let (status, _) = s.call(Method::GET, &format!("/v1/templates/{tid}"), Some(&other), None).await;
    assert_eq!(status, 404);
    let (status, _) = s.call(Method::POST, "/v1/instances", Some(&other), Some(json!({"template": tid}))).await;
    assert_eq!(status, 404);
    let (_, list) = s.call(Method::GET, "/v1/templates", Some(&other), None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1, "only the system template: {list}");
}

#[tokio::test]
async fn concurrent_changes_each_make_one_version_or_are_told_to_retry() {
    let s = TestServer::shared().await;
    let t = template(&s, json!({"name": "racy", "image": image(), "agent": false, "command": ["sleep", "1000"]})).await;
    let path = format!("/v1/templates/{}", t["id"].as_str().unwrap());
    let answers = futures_util::future::join_all((0..8).map(|i| {
        let path = path.clone();
        let s = &s;
        async move { patch(s, &path, json!({"env": {"N": i.to_string()}})).await }
    }))
    .await;
    let mut versions = Vec::new();
    for (status, body) in &answers {
        match status {
            200 => versions.push(body["version"].as_u64().unwrap()),
            409 => assert_eq!(body["error"]["code"], "template_changed", "{body}"),
            _ => panic!("{status}: {body}"),
        }
    }
    versions.sort_unstable();
    let n = versions.len() as u64;
    assert!(n >= 1 && versions == (2..2 + n).collect::<Vec<_>>(), "one version per change that landed: {versions:?}");
    let (_, now) = s.get(&path).await;
    assert_eq!((now["version"].as_u64(), now["status"].as_str()), (Some(1 + n), Some("ready")), "{now}");
    delete(&s, &path).await;
}
