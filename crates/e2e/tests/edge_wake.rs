//! Cold start: an idle `cold_start` instance is stopped, and the next requests to
//! its URL wake it once and all succeed. What counts as activity: open streams,
//! shells, holds and a running agent turn. A user's stop is not undone by a request.

use berth_test_util::docker::{network_gateway, reach_host_port, TEST_NETWORK};
use berth_test_util::llm::{Reply, ScriptedLlm};
use berth_test_util::{ServerOptions, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Options of a server whose cold_start instances may idle for as little as a second.
fn short_idle() -> ServerOptions {
    ServerOptions { extra_args: vec!["--min-idle-timeout-secs".into(), "1".into()], ..Default::default() }
}

async fn cold_instance(s: &TestServer, idle: u64, env: Value) -> (String, String) {
    cold_instance_with(s, idle, env, Value::Null).await
}

/// [`cold_instance`] with `network` settings.
async fn cold_instance_with(s: &TestServer, idle: u64, env: Value, network: Value) -> (String, String) {
    let inst = s
        .create_instance(
            json!({"lifecycle": {"mode": "cold_start", "idle_timeout_secs": idle}, "env": env, "network": network}),
        )
        .await;
    let id = inst["id"].as_str().unwrap().to_string();
    let host = format!("{}.localhost:{}", &id[5..], s.edge_port());
    (id, host)
}

async fn status(s: &TestServer, id: &str) -> String {
    s.get(&format!("/v1/instances/{id}")).await.1["status"].as_str().unwrap().to_string()
}

/// Waits up to `secs` for the instance to reach `want`.
async fn wait_status(s: &TestServer, id: &str, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = status(s, id).await;
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "{id} is still {now}, not {want}, after {secs} s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts the instance stays `running` for `secs`.
async fn stays_running(s: &TestServer, id: &str, secs: u64, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        assert_eq!(status(s, id).await, "running", "stopped although {why}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn events(s: &TestServer, id: &str) -> Vec<Value> {
    s.get(&format!("/v1/instances/{id}/events")).await.1["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn concurrent_first_requests_wake_a_sleeping_instance_once() {
    // A server of its own: it reads the server-wide wake count.
    let s = TestServer::start_with(short_idle()).await;
    let (id, host) = cold_instance(&s, 2, json!({})).await;
    wait_status(&s, &id, "stopped", 20).await;
    let evs = events(&s, &id).await;
    let stop = evs.iter().rev().find(|e| e["to"] == "stopped").unwrap();
    assert_eq!(stop["actor"], "reconciler");
    assert!(stop["reason"].as_str().unwrap().contains("idle"), "the event says why: {stop}");

    let started = Instant::now();
    let requests = (0..20).map(|_| {
        let req = s.edge(Method::GET, &host, "/v1/models").bearer_auth(&s.key);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(requests).await;
    let took = started.elapsed();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "every waiting request succeeds: {body}");
    }
    let wakes: Vec<Value> =
        events(&s, &id).await.into_iter().filter(|e| e["from"] == "stopped" && e["to"] == "running").collect();
    assert_eq!(wakes.len(), 1, "one start for twenty requests: {wakes:?}");
    assert_eq!(wakes[0]["actor"], "edge");
    assert!(took < Duration::from_secs(10), "woken in {took:?}");
    let metrics = s.http().get(format!("{}/metrics", s.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "berth_edge_wakes_total 1"), "{metrics}");

    // A user's stop is final: a request does not undo it.
    let (st, _) = s.post(&format!("/v1/instances/{id}/stop"), json!({})).await;
    assert_eq!(st, 200);
    let r = s.edge(Method::GET, &host, "/v1/models").bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "instance_not_running");
    assert_eq!(status(&s, &id).await, "stopped");
}

#[tokio::test]
async fn shells_streams_and_holds_keep_an_instance_awake() {
    let s = TestServer::shared_with(short_idle()).await;
    let (id, host) = cold_instance(&s, 2, json!({})).await;

    // An open shell (hosting API WebSocket) is activity.
    let url = format!("{}/v1/instances/{id}/shell", s.base.replace("http://", "ws://"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.key).parse().unwrap());
    let (shell, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    stays_running(&s, &id, 5, "a shell is open").await;
    drop(shell);
    wait_status(&s, &id, "stopped", 15).await;

    // A hold wakes it and keeps it up; releasing the hold lets it idle again.
    let (st, held) = s.post(&format!("/v1/instances/{id}/hold"), json!({"ttl_secs": 6})).await;
    assert_eq!(st, 200, "{held}");
    assert_eq!(held["status"], "running");
    assert!(held["hold_until"].as_i64().is_some(), "{held}");
    stays_running(&s, &id, 4, "it is held").await;
    let (st, _) = s.post(&format!("/v1/instances/{id}/hold"), json!({"ttl_secs": 0})).await;
    assert_eq!(st, 200);
    wait_status(&s, &id, "stopped", 15).await;
    let (st, bad) = s.post(&format!("/v1/instances/{id}/hold"), json!({"ttl_secs": -1})).await;
    assert_eq!((st, bad["error"]["details"]["field"].as_str()), (400, Some("ttl_secs")));

    // A request wakes it again; then it idles again.
    let r = s.edge(Method::GET, &host, "/health").bearer_auth(&s.key).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(status(&s, &id).await, "running");
    wait_status(&s, &id, "stopped", 15).await;
}

/// An OpenAI-compatible model (on all addresses: instances reach it through their
/// bridge's gateway) whose answer streams for about `secs` seconds.
async fn slow_model(secs: u64) -> ScriptedLlm {
    let chunks: Vec<String> = (0..secs * 2).map(|i| format!("{i} ")).collect();
    ScriptedLlm::openai_on("0.0.0.0:0", move |_| Reply::SlowText(chunks.clone(), Duration::from_millis(500))).await
}

#[tokio::test]
async fn a_running_agent_turn_keeps_an_instance_awake() {
    let s = TestServer::shared_with(short_idle()).await;
    let model = slow_model(9).await;
    let llm = model.base_url_at(&network_gateway(TEST_NETWORK));
    let env = json!({"BERTH_LLM_BASE_URL": llm, "BERTH_MODEL": "scripted"});
    let (id, host) = cold_instance_with(&s, 2, env, reach_host_port(model.port())).await;

    // A turn started from inside the instance (no edge stream, no exec left
    // running): only the agent's own report of a running turn keeps it up.
    let start_turn = "wget -q -O /tmp/turn.json --header \"Authorization: Bearer $BERTH_GATEWAY_TOKEN\" \
        --header 'content-type: application/json' --post-data '{\"input\":\"count slowly\"}' \
        http://127.0.0.1:3737/v1/responses >/dev/null 2>&1 &";
    let out = s.exec(&id, json!(["sh", "-c", start_turn]), None).await;
    assert_eq!(out["exit_code"], 0, "{out}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, health) = s.get(&format!("/v1/instances/{id}/health")).await;
    assert_eq!(health["turn_running"], true, "{health}");
    stays_running(&s, &id, 6, "the agent is running a turn").await;
    wait_status(&s, &id, "stopped", 20).await;

    // Through the edge: a streamed turn longer than the idle timeout is not cut.
    let began = berth_core_now();
    let r = s
        .edge(Method::POST, &host, "/v1/responses")
        .bearer_auth(&s.key)
        .json(&json!({"input": "count slowly again", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "woken for the request");
    let text = String::from_utf8_lossy(&r.bytes().await.unwrap()).to_string();
    assert!(text.contains("response.completed"), "the whole turn streamed: {text}");
    let ended = berth_core_now();
    let during: Vec<Value> = events(&s, &id)
        .await
        .into_iter()
        .filter(|e| e["to"] == "stopped" && (began + 1..ended).contains(&e["at"].as_i64().unwrap()))
        .collect();
    assert!(during.is_empty(), "stopped during the streamed turn: {during:?}");
}

fn berth_core_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}
