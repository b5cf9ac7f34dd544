//! Exec, shell, logs, health and events against real containers. The tests share
//! one server (each in a workspace of its own).

use berth_test_util::docker::exec;
use berth_test_util::{kubernetes, TestServer};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

async fn run(s: &TestServer, id: &str, body: Value) -> (u16, Value) {
    s.post(&format!("/v1/instances/{id}/exec"), body).await
}

#[tokio::test]
async fn exec_reports_faithful_exit_codes_stdin_caps_and_timeouts() {
    let s = TestServer::shared().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();

    let (st, r) = run(&s, &id, json!({"command": ["true"]})).await;
    assert_eq!((st, r["exit_code"].as_i64(), r["timed_out"].as_bool()), (200, Some(0), Some(false)), "{r}");
    let (_, r) = run(&s, &id, json!({"command": "echo out; echo err >&2; exit 3"})).await;
    assert_eq!(
        (r["exit_code"].as_i64(), r["stdout"].as_str(), r["stderr"].as_str()),
        (Some(3), Some("out\n"), Some("err\n"))
    );
    let (_, r) = run(&s, &id, json!({"command": "kill -9 $$"})).await;
    assert_eq!(r["exit_code"], 137, "killed by SIGKILL: {r}");
    // A character written in two pieces arrives whole.
    let (_, r) = run(&s, &id, json!({"command": "printf '\\303'; sleep 0.3; printf '\\251\\n'"})).await;
    assert_eq!(r["stdout"], "\u{e9}\n", "{r}");
    // The cap counts what is sent: a NUL byte is six bytes of JSON.
    let (_, r) = run(&s, &id, json!({"command": "head -c 1000 /dev/zero", "max_output_bytes": 600})).await;
    assert_eq!((r["stdout"].as_str().map(str::len), r["truncated"].as_bool()), (Some(100), Some(true)), "{r}");
    let (_, r) = run(&s, &id, json!({"command": ["cat"], "stdin": "hello\nworld\n"})).await;
    assert_eq!(r["stdout"], "hello\nworld\n");
    let (_, r) =
        run(&s, &id, json!({"command": "pwd; echo $GREETING", "cwd": "/tmp", "env": {"GREETING": "hi"}})).await;
    assert_eq!(r["stdout"], "/tmp\nhi\n");
    let (_, r) = run(&s, &id, json!({"command": "head -c 5000 /dev/zero | tr '\\0' a", "max_output_bytes": 100})).await;
    assert_eq!((r["stdout"].as_str().unwrap().len(), r["truncated"].as_bool()), (100, Some(true)));

    // The timeout kills the whole tree, children included.
    let started = Instant::now();
    let (_, r) =
        run(&s, &id, json!({"command": "sleep 300 & sleep 301 & sleep 302; echo never", "timeout_secs": 1})).await;
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["exit_code"], 137);
    assert!(started.elapsed() < Duration::from_secs(10));
    let (_, ps) = exec(&id, "ps");
    assert!(!ps.contains("sleep 30"), "children survived the timeout:\n{ps}");
    // A forking loop is dead at its timeout too, and so is a child that left the
    // session (it still carries the exec's mark).
    let (_, r) =
        run(&s, &id, json!({"command": "setsid sleep 400 & while :; do sleep 401 & done", "timeout_secs": 1})).await;
    assert_eq!(r["timed_out"], true, "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, ps) = exec(&id, "ps");
    assert!(!ps.contains("sleep 40"), "the forking loop survived its timeout:\n{ps}");

    // Bad bodies name the field; a stopped instance refuses.
    let (st, e) = run(&s, &id, json!({"command": []})).await;
    assert_eq!((st, e["error"]["details"]["field"].as_str()), (400, Some("command")));
    let (st, e) = run(&s, &id, json!({"command": "true", "timeout_secs": 0})).await;
    assert_eq!((st, e["error"]["details"]["field"].as_str()), (400, Some("timeout_secs")));
    let (st, e) = run(&s, &id, json!({})).await;
    assert_eq!((st, e["error"]["details"]["field"].as_str()), (400, Some("command")), "{e}");
    s.post(&format!("/v1/instances/{id}/stop"), json!({})).await;
    let (st, e) = run(&s, &id, json!({"command": "true"})).await;
    assert_eq!((st, e["error"]["details"]["current_status"].as_str()), (409, Some("stopped")));
}

#[tokio::test]
async fn streaming_exec_delivers_output_before_the_command_ends() {
    let s = TestServer::shared().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let resp = s
        .http()
        .post(format!("{}/v1/instances/{id}/exec", s.base))
        .bearer_auth(&s.key)
        .json(&json!({"command": "echo first; echo oops >&2; sleep 3; echo second; exit 4", "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let mut first_at = None;
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if first_at.is_none() && text.contains("first") {
            first_at = Some(started.elapsed());
        }
    }
    let first_at = first_at.expect("stdout event");
    assert!(first_at < Duration::from_millis(2500), "first line came after {first_at:?}, not as produced");
    assert!(text.contains("event: stdout\ndata: {\"data\":\"first\\n\"}"), "{text}");
    assert!(text.contains("event: stderr\ndata: {\"data\":\"oops\\n\"}"), "{text}");
    let exit = text.split("event: exit\ndata: ").nth(1).expect("exit event").lines().next().unwrap();
    let exit: Value = serde_json::from_str(exit).unwrap();
    assert_eq!(exit["exit_code"], 4);
    assert!(text.find("first").unwrap() < text.find("second").unwrap());
}

#[tokio::test]
async fn a_shell_over_the_websocket_runs_commands_and_reports_exit() {
    let s = TestServer::shared().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let url = format!("{}/v1/instances/{id}/shell?cols=100&rows=30", s.base.replace("http://", "ws://"));
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url).unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", s.key).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade");
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text("{\"type\":\"resize\",\"cols\":120,\"rows\":40}".into())).await.unwrap();
    ws.send(Message::Binary(b"stty size; echo marker-$((40+2))\n".to_vec().into())).await.unwrap();
    ws.send(Message::Binary(b"exit 3\n".to_vec().into())).await.unwrap();
    let mut out = String::new();
    let mut exit = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, ws.next()).await {
        match msg.unwrap() {
            Message::Binary(b) => out.push_str(&String::from_utf8_lossy(&b)),
            Message::Text(t) => exit = Some(serde_json::from_str::<Value>(&t).unwrap()),
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(out.contains("marker-42"), "{out}");
    assert!(out.contains("40 120"), "resize reached the tty: {out}");
    assert_eq!(exit, Some(json!({"type": "exit", "exit_code": 3})));
    // Without an upgrade the route explains itself (426, as the OpenAPI document says).
    let (st, e) = s.get(&format!("/v1/instances/{id}/shell")).await;
    assert_eq!((st, e["error"]["code"].as_str()), (426, Some("upgrade_required")), "{e}");
    // Other workspaces cannot open it.
    let other = s.create_workspace("other").await;
    let (st, _) = s.call(Method::GET, &format!("/v1/instances/{id}/shell"), Some(&other), None).await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn logs_follow_sees_new_lines_and_old_lines_survive_a_restart() {
    let s = TestServer::shared().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    assert_eq!(exec(&id, "echo before-restart > /proc/1/fd/1").0, 0);
    // Kubernetes keeps no lines of a deleted pod, and a restart is a new pod there.
    if !kubernetes::enabled() {
        let (st, _) = s.post(&format!("/v1/instances/{id}/restart"), json!({})).await;
        assert_eq!(st, 200);
    }
    let (st, logs) = s.get(&format!("/v1/instances/{id}/logs?lines=1000")).await;
    assert_eq!(st, 200);
    let lines = logs["logs"].as_array().unwrap();
    assert!(lines.iter().any(|l| l["message"] == "before-restart" && l["stream"] == "stdout"), "{logs}");
    assert!(lines.iter().all(|l| l["timestamp"].as_str().unwrap().starts_with("20")), "{logs}");

    let resp = s
        .http()
        .get(format!("{}/v1/instances/{id}/logs?follow=true&lines=1", s.base))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(exec(&id, "echo written-after-follow >&2 > /proc/1/fd/2").0, 0);
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !text.contains("written-after-follow") {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            other => panic!("follow ended before the new line: {other:?}\n{text}"),
        }
    }
    let line = text.lines().find(|l| l.contains("written-after-follow")).unwrap();
    let entry: Value = serde_json::from_str(line.strip_prefix("data: ").unwrap()).unwrap();
    // Kubernetes' log API merges a container's streams: everything is stdout there.
    assert_eq!(entry["stream"], if kubernetes::enabled() { "stdout" } else { "stderr" });
    let (st, e) = s.get(&format!("/v1/instances/{id}/logs?lines=0")).await;
    assert_eq!((st, e["error"]["details"]["field"].as_str()), (400, Some("lines")));
}

#[tokio::test]
async fn health_moves_when_memory_is_used_and_events_record_each_transition() {
    let s = TestServer::shared().await;
    let id = s.create_instance(json!({})).await["id"].as_str().unwrap().to_string();
    let (st, h) = s.get(&format!("/v1/instances/{id}/health")).await;
    assert_eq!(st, 200, "{h}");
    for key in [
        "status",
        "cpu_percent",
        "memory_mb",
        "memory_limit_mb",
        "disk_mb",
        "pids",
        "uptime_secs",
        "last_heartbeat",
        "restart_count",
        "gateway",
    ] {
        assert!(h.get(key).is_some(), "{key} missing: {h}");
    }
    assert_eq!(h["gateway"]["ok"], true);
    assert_eq!(h["memory_limit_mb"], 2048.0);
    assert!(h["last_heartbeat"].as_i64().unwrap() > 0);
    let before = h["memory_mb"].as_f64().unwrap();
    // Hold ~100 MB in one process for a while.
    let (st, _) =
        run(&s, &id, json!({"command": "(head -c 100000000 /dev/zero; sleep 20) | tail -c 100000000 > /dev/null &"}))
            .await;
    assert_eq!(st, 200);
    // The kubelet refreshes its figures every 10 to 15 s.
    let wait = if kubernetes::enabled() { 45 } else { 15 };
    let deadline = Instant::now() + Duration::from_secs(wait);
    loop {
        let (_, h) = s.get(&format!("/v1/instances/{id}/health")).await;
        let now = h["memory_mb"].as_f64().unwrap();
        if now > before + 80.0 {
            // Kubernetes counts processes per node, not per pod.
            if !kubernetes::skip_here("the process count", "the kubelet reports no pod's processes") {
                assert!(h["pids"].as_u64().unwrap() > 2, "{h}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "memory did not move: {before} → {now}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    for action in ["stop", "start", "pause", "resume"] {
        let (st, _) = s.post(&format!("/v1/instances/{id}/{action}"), json!({})).await;
        assert_eq!(st, 200);
    }
    let (st, evs) = s.get(&format!("/v1/instances/{id}/events")).await;
    assert_eq!(st, 200);
    let steps: Vec<(Value, Value)> =
        evs["data"].as_array().unwrap().iter().map(|e| (e["from"].clone(), e["to"].clone())).collect();
    let expect = [
        (json!(null), json!("creating")),
        (json!("creating"), json!("running")),
        (json!("running"), json!("stopping")),
        (json!("stopping"), json!("stopped")),
        (json!("stopped"), json!("running")),
        (json!("running"), json!("paused")),
        (json!("paused"), json!("running")),
    ];
    assert_eq!(steps, expect, "{evs}");
    assert!(evs["data"].as_array().unwrap().iter().all(|e| e["actor"].as_str().unwrap().starts_with("key:key_")));
}

#[tokio::test]
async fn an_exec_that_took_every_pid_is_still_killed_at_its_timeout() {
    if kubernetes::skip_here("the whole test", "Kubernetes limits processes per node (--pod-max-pids), not per pod") {
        return;
    }
    let s = TestServer::shared().await;
    let id = s.create_instance(json!({"size": 1})).await["id"].as_str().unwrap().to_string();
    // More sleepers than the size's pids limit (1024): nothing else can start in the
    // container, not even the in-container killer.
    let (st, r) = run(
        &s,
        &id,
        // The inner shell dies when fork fails; the outer one then execs (no fork).
        json!({"command": "sh -c 'for i in $(seq 1100); do sleep 402 & done' 2>/dev/null; exec sleep 300", "timeout_secs": 8}),
    )
    .await;
    assert_eq!((st, r["timed_out"].as_bool(), r["exit_code"].as_i64()), (200, Some(true), Some(137)), "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, ps) = exec(&id, "ps | grep -c '[s]leep 402' || true");
    assert_eq!(ps.trim(), "0", "sleepers survived the timeout: {ps}");
    let (st, r) = run(&s, &id, json!({"command": ["echo", "room again"]})).await;
    assert_eq!((st, r["stdout"].as_str()), (200, Some("room again\n")), "{r}");
}
