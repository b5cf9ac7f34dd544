//! The real `berth` binary against a small fake hosting API (axum on 127.0.0.1),
//! started once for the whole test binary.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const KEY: &str = "sk_test";

fn instance(id: &str, status: &str) -> Value {
    json!({
        "id": id, "object": "instance", "name": "demo", "status": status,
        "template": {"id": "berth-agent", "version": 1}, "agents": ["berth-agent"],
        "size": {"size": 1, "vcpu": 1, "memory_mb": 2048, "disk_gb": 10},
        "resources": {"cpu": "1", "memory_mb": 2048, "cpu_limit": "1", "memory_limit_mb": 2048, "custom": false},
        "user": "u_42", "region": "local", "metadata": {"team": "a"}, "env": {"TOKEN": "***"},
        "url": format!("http://{}.localhost:7071", &id[5..]),
        "ports": [{"port": 3737, "default": true, "url": format!("http://{}.localhost:7071", &id[5..])}],
        "budget": {"managed_cap_usd": null, "managed_used_usd": 0.0, "remaining_usd": null},
        "lifecycle": {"mode": "always_on"}, "update_available": false, "restart_count": 0,
        "created_at": 1_700_000_000, "updated_at": 1_700_000_000
    })
}

fn error(status: StatusCode, code: &str, message: &str, details: Value) -> (StatusCode, Json<Value>) {
    (status, Json(json!({"error": {"code": code, "message": message, "details": details}})))
}

type Answer = (StatusCode, Json<Value>);

fn authorized(headers: &HeaderMap) -> Result<(), Answer> {
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == format!("Bearer {KEY}") => Ok(()),
        _ => Err(error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or bad API key", json!({}))),
    }
}

/// Two instances, newest first; `limit=1` pages through them with `cursor`.
async fn list(headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Answer {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    let all = [instance("inst_aaaaaaaaaa", "running"), instance("inst_bbbbbbbbbb", "stopped")];
    let skip = usize::from(q.contains_key("cursor"));
    let limit = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(50);
    let data: Vec<Value> = all.iter().skip(skip).take(limit).cloned().collect();
    let next = (skip + data.len() < all.len()).then_some("cur_1");
    (StatusCode::OK, Json(json!({"object": "list", "data": data, "has_more": next.is_some(), "next_cursor": next})))
}

async fn retrieve(headers: HeaderMap, Path(id): Path<String>) -> Answer {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    if id == "inst_aaaaaaaaaa" {
        return (StatusCode::OK, Json(instance(&id, "running")));
    }
    if id == CHAT_ID {
        // Its URL is this fake under a `*.localhost` name, so `berth chat` must resolve it itself.
        let host = headers["host"].to_str().unwrap();
        let port = host.rsplit(':').next().unwrap();
        let mut inst = instance(&id, "running");
        inst["url"] = json!(format!("http://{}.localhost:{port}", &id[5..]));
        return (StatusCode::OK, Json(inst));
    }
    error(StatusCode::NOT_FOUND, "instance_not_found", &format!("no instance `{id}`"), json!({}))
}

/// PATCH: the instance with the given name and metadata applied.
async fn update(headers: HeaderMap, Path(id): Path<String>, Json(body): Json<Value>) -> Answer {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    let mut inst = instance(&id, "running");
    for field in ["name", "metadata", "network"] {
        if let Some(v) = body.get(field) {
            inst[field] = v.clone();
        }
    }
    inst["size"]["size"] = body.get("size").cloned().unwrap_or(json!(1));
    (StatusCode::OK, Json(inst))
}

/// An SSE answer of `(delay before it, event)` pairs.
fn sse(events: Vec<(u64, SseEvent)>) -> Response {
    let stream = futures_util::stream::iter(events).then(|(delay, ev)| async move {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        Ok::<_, Infallible>(ev)
    });
    Sse::new(stream).into_response()
}

/// Exec: stdout is the request body as JSON (so tests see what was sent), stderr a
/// warning; the exit code is the env var `CODE`; `sleep` times out; `slow` waits 2 s
/// between its first output and its exit.
async fn exec(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(e) = authorized(&headers) {
        return e.into_response();
    }
    let code: i64 = body["env"]["CODE"].as_str().and_then(|c| c.parse().ok()).unwrap_or(0);
    let program = body["command"][0].as_str().unwrap_or_default().to_string();
    let timed_out = program == "sleep";
    let exit_code = if timed_out { 137 } else { code };
    let echo = format!("{body}\n");
    let result = json!({"exit_code": exit_code, "duration_ms": 1500, "timed_out": timed_out, "truncated": false});
    if body["stream"] != true {
        let mut full = result;
        full["stdout"] = json!(echo);
        full["stderr"] = json!("warn\n");
        return (StatusCode::OK, Json(full)).into_response();
    }
    let pause = if program == "slow" { 2_000 } else { 0 };
    sse(vec![
        (0, SseEvent::default().event("stdout").data(json!({"data": echo}).to_string())),
        (0, SseEvent::default().event("stderr").data(json!({"data": "warn\n"}).to_string())),
        (pause, SseEvent::default().event("stdout").data(json!({"data": "done\n"}).to_string())),
        (0, SseEvent::default().event("exit").data(result.to_string())),
    ])
}

/// The instance whose URL leads back to this fake, for `berth chat`.
const CHAT_ID: &str = "inst_abcdefghij";

/// One Responses API stream event: its name on the `event:` line and in `type`.
fn rev(kind: &str, mut data: Value) -> (u64, SseEvent) {
    data["type"] = json!(kind);
    (30, SseEvent::default().event(kind).data(data.to_string()))
}

/// The instance's `POST /v1/responses`, reached only by the instance's own host name.
/// `input` "fail" fails the turn after one delta; an unknown session is a 404 in the
/// OpenAI envelope; otherwise a tool call, its output, and the reply in three deltas.
/// `--json` (no `stream`) answers the request body as `echo`.
async fn responses(headers: HeaderMap, Json(body): Json<Value>) -> Response {
    if let Err(e) = authorized(&headers) {
        return e.into_response();
    }
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !host.starts_with("abcdefghij.localhost:") {
        return error(StatusCode::NOT_FOUND, "not_found", &format!("no route for host `{host}`"), json!({}))
            .into_response();
    }
    if body["session_id"] == "sess_gone" {
        let e = json!({"error": {"message": "Session 'sess_gone' not found", "type": "invalid_request_error",
            "code": "session_not_found", "param": "session_id"}});
        return (StatusCode::NOT_FOUND, Json(e)).into_response();
    }
    let session = body["session_id"].as_str().unwrap_or("sess_new").to_string();
    let response = json!({"id": "resp_1", "object": "response", "status": "completed", "session_id": session});
    if body["stream"] != true {
        let mut full = response;
        full["echo"] = body;
        return (StatusCode::OK, Json(full)).into_response();
    }
    let created = rev("response.created", json!({"response": {"status": "in_progress", "session_id": session}}));
    if body["input"] == "fail" {
        let failed = json!({"status": "failed", "session_id": session,
            "error": {"code": "model_error", "message": "the model went away"}});
        return sse(vec![
            created,
            rev("response.output_text.delta", json!({"item_id": "msg_1", "delta": "partial"})),
            rev("response.failed", json!({"response": failed})),
        ]);
    }
    let call = json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "shell", "arguments": ""});
    let called = json!({"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "shell",
        "arguments": "{\"command\":\"ls\"}"});
    let out = json!({"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "",
        "status": "in_progress"});
    let outed = json!({"type": "function_call_output", "id": "fco_1", "call_id": "call_1",
        "output": "file1\nfile2\n", "status": "completed"});
    let last = format!("{}!", body["input"].as_str().unwrap_or_default());
    sse(vec![
        created,
        rev("response.output_item.added", json!({"output_index": 0, "item": call})),
        rev("response.function_call_arguments.delta", json!({"item_id": "fc_1", "delta": "{\"command\""})),
        rev("response.function_call_arguments.done", json!({"item_id": "fc_1", "arguments": called["arguments"]})),
        rev("response.output_item.done", json!({"output_index": 0, "item": called})),
        rev("response.output_item.added", json!({"output_index": 1, "item": out})),
        rev("response.output_item.done", json!({"output_index": 1, "item": outed})),
        rev("response.output_text.delta", json!({"item_id": "msg_1", "delta": "Hel"})),
        rev("response.output_text.delta", json!({"item_id": "msg_1", "delta": "lo, "})),
        rev("response.output_text.delta", json!({"item_id": "msg_1", "delta": last})),
        rev("response.output_text.done", json!({"item_id": "msg_1", "text": "..."})),
        rev("response.completed", json!({"response": response})),
    ])
}

/// Logs: the first line names the query; one line on stderr.
async fn logs(headers: HeaderMap, Query(q): Query<HashMap<String, String>>) -> Response {
    if let Err(e) = authorized(&headers) {
        return e.into_response();
    }
    let param = |k: &str| q.get(k).cloned().unwrap_or_else(|| "-".into());
    let first = format!("lines={} since={}", param("lines"), param("since"));
    let entries = [
        json!({"timestamp": "2024-01-01T00:00:00Z", "stream": "stdout", "message": first}),
        json!({"timestamp": "2024-01-01T00:00:01Z", "stream": "stderr", "message": "oops on stderr"}),
        json!({"timestamp": "2024-01-01T00:00:02Z", "stream": "stdout", "message": "last line\n"}),
    ];
    if q.get("follow").map(String::as_str) != Some("true") {
        return Json(json!({"logs": entries})).into_response();
    }
    sse(entries.into_iter().map(|e| (50, SseEvent::default().data(e.to_string()))).collect())
}

async fn health(headers: HeaderMap) -> Answer {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let h = json!({"status": "running", "cpu_percent": 12.345, "memory_mb": 256.0, "memory_limit_mb": 2048.0,
        "disk_mb": 42.5, "pids": 7, "uptime_secs": 3_725, "last_heartbeat": now - 5, "restart_count": 2,
        "gateway": {"ok": true, "response_time_ms": 3.25}});
    (StatusCode::OK, Json(h))
}

async fn events(headers: HeaderMap, Path(id): Path<String>) -> Answer {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    if id != "inst_aaaaaaaaaa" {
        return error(StatusCode::NOT_FOUND, "instance_not_found", &format!("no instance `{id}`"), json!({}));
    }
    let data = json!([
        {"object": "event", "at": 1_700_000_000, "from": null, "to": "creating", "actor": "key:key_1", "reason": null},
        {"object": "event", "at": 1_700_000_060, "from": "running", "to": "stopped", "actor": "reconciler",
         "reason": "container exited"},
    ]);
    (StatusCode::OK, Json(json!({"object": "list", "data": data, "has_more": false, "next_cursor": null})))
}

/// Shell: greets with the query, echoes input, and ends on `exit N` (code N) or Ctrl-D (0).
async fn shell(headers: HeaderMap, Query(q): Query<HashMap<String, String>>, ws: WebSocketUpgrade) -> Response {
    if let Err(e) = authorized(&headers) {
        return e.into_response();
    }
    let hello = format!("cols={} rows={} command={}\r\n", q["cols"], q["rows"], q.get("command").map_or("-", |c| c));
    ws.on_upgrade(move |socket| shell_session(socket, hello))
}

async fn shell_session(mut socket: WebSocket, hello: String) {
    let _ = socket.send(Message::Binary(hello.into_bytes().into())).await;
    let mut input = Vec::new();
    let code = loop {
        let Some(Ok(msg)) = socket.recv().await else { return };
        let Message::Binary(bytes) = msg else { continue };
        input.extend_from_slice(&bytes);
        let _ = socket.send(Message::Binary(bytes)).await;
        let text = String::from_utf8_lossy(&input).into_owned();
        if let Some(rest) = text.split("exit ").nth(1) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() {
                break digits.parse().unwrap();
            }
        }
        if input.contains(&4) {
            break 0;
        }
    };
    let exit = json!({"type": "exit", "exit_code": code}).to_string();
    let _ = socket.send(Message::Text(exit.into())).await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn action(Path((_, action)): Path<(String, String)>) -> Answer {
    let message = format!("cannot {action} an instance that is stopped");
    error(StatusCode::CONFLICT, "invalid_state", &message, json!({"current_status": "stopped"}))
}

async fn create_workspace() -> Answer {
    let ws = json!({"id": "ws_1", "object": "workspace", "name": "acme", "instance_limit": 5,
        "created_at": 1_700_000_000, "key": "sk_new_secret"});
    (StatusCode::CREATED, Json(ws))
}

/// Base URL of the fake API, started on first use.
fn fake_api() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let app = Router::new()
                    .route("/v1/instances", get(list))
                    .route("/v1/instances/{id}", get(retrieve).patch(update))
                    .route("/v1/instances/{id}/exec", post(exec))
                    .route("/v1/instances/{id}/logs", get(logs))
                    .route("/v1/instances/{id}/health", get(health))
                    .route("/v1/instances/{id}/events", get(events))
                    .route("/v1/instances/{id}/shell", get(shell))
                    .route("/v1/instances/{id}/{action}", post(action))
                    .route("/v1/workspaces", post(create_workspace))
                    .route("/v1/responses", post(responses));
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        url
    })
}

fn berth(url: &str, key: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args).env("BERTH_URL", url).env_remove("BERTH_API_KEY").env("NO_COLOR", "1");
    if let Some(key) = key {
        cmd.env("BERTH_API_KEY", key);
    }
    cmd.output().unwrap()
}

/// `berth` with `input` piped to its stdin.
fn berth_with_stdin(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .env("BERTH_URL", fake_api())
        .env("BERTH_API_KEY", KEY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn list_prints_a_table_with_ids_and_statuses() {
    let out = berth(fake_api(), Some(KEY), &["instances", "list"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let header = stdout.lines().next().unwrap();
    for column in ["ID", "NAME", "STATUS", "SIZE", "USER", "URL", "AGE"] {
        assert!(header.contains(column), "{stdout}");
    }
    assert!(stdout.contains("inst_aaaaaaaaaa") && stdout.contains("running"), "{stdout}");
    assert!(stdout.contains("inst_bbbbbbbbbb") && stdout.contains("stopped"), "{stdout}");
}

#[test]
fn list_all_follows_the_cursor_and_json_parses() {
    let one = berth(fake_api(), Some(KEY), &["instances", "list", "--limit", "1", "--json"]);
    let page: Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], "cur_1");

    let all = berth(fake_api(), Some(KEY), &["instances", "list", "--limit", "1", "--all", "--json"]);
    let page: Value = serde_json::from_slice(&all.stdout).unwrap();
    let ids: Vec<&str> = page["data"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["inst_aaaaaaaaaa", "inst_bbbbbbbbbb"]);
    assert_eq!(page["has_more"], false);
}

#[test]
fn get_shows_details_or_json() {
    let out = berth(fake_api(), Some(KEY), &["instances", "get", "inst_aaaaaaaaaa"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("status:") && stdout.contains("running"), "{stdout}");
    assert!(stdout.contains("http://aaaaaaaaaa.localhost:7071"), "{stdout}");

    let out = berth(fake_api(), Some(KEY), &["instances", "get", "inst_aaaaaaaaaa", "--json"]);
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["id"], "inst_aaaaaaaaaa");
}

#[test]
fn api_errors_print_message_code_and_details_and_exit_1() {
    let out = berth(fake_api(), Some(KEY), &["instances", "get", "inst_zzzzzzzzzz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error: no instance `inst_zzzzzzzzzz` (instance_not_found)"));

    let out = berth(fake_api(), Some(KEY), &["instances", "start", "inst_aaaaaaaaaa"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("(invalid_state)") && stderr.contains("current_status: stopped"), "{stderr}");

    let out = berth(fake_api(), Some("sk_wrong"), &["instances", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(unauthorized)"));
}

#[test]
fn missing_key_and_refused_connection_say_what_to_set() {
    let out = berth(fake_api(), None, &["instances", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("BERTH_API_KEY"));

    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = berth(&format!("http://127.0.0.1:{port}"), Some(KEY), &["instances", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("BERTH_URL") && stderr.contains("connection refused"), "{stderr}");
}

#[test]
fn workspace_creation_shows_the_key_once_and_completions_work() {
    let out = berth(fake_api(), Some(KEY), &["workspaces", "create", "acme"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("sk_new_secret") && stdout.contains("shown only this once"), "{stdout}");

    let out = berth(fake_api(), None, &["completions", "bash"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("instances"));
}

#[test]
fn exec_streams_output_and_passes_the_exit_code_through() {
    let id = "inst_aaaaaaaaaa";
    let args = ["exec", id, "--cwd", "/tmp", "--env", "CODE=3", "--timeout", "9", "--", "sh", "-c", "echo a b"];
    let out = berth(fake_api(), Some(KEY), &args);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let sent: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(sent["command"], json!(["sh", "-c", "echo a b"]));
    assert_eq!(sent["cwd"], "/tmp");
    assert_eq!(sent["timeout_secs"], 9);
    assert_eq!(sent["stream"], true);
    assert!(stdout.ends_with("done\n"), "{stdout}");
    assert_eq!(text(&out.stderr), "warn\n");

    // One argument with spaces is still one argv element; exit 0 is success.
    let out = berth(fake_api(), Some(KEY), &["exec", id, "--", "echo a b"]);
    assert_eq!(out.status.code(), Some(0));
    let sent: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(sent["command"], json!(["echo a b"]));
}

#[test]
fn exec_output_arrives_before_the_command_ends() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["exec", "inst_aaaaaaaaaa", "--", "slow"])
        .env("BERTH_URL", fake_api())
        .env("BERTH_API_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("slow"), "{first}");
    assert!(started.elapsed() < Duration::from_millis(1_800), "first output came only at the end");
    assert!(child.try_wait().unwrap().is_none(), "exited before the command ended");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn exec_timeouts_exit_124_and_stdin_and_json_work() {
    let out = berth(fake_api(), Some(KEY), &["exec", "inst_aaaaaaaaaa", "--timeout", "1", "--", "sleep", "5"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(text(&out.stderr).contains("timed out"), "{}", text(&out.stderr));

    let args = ["exec", "inst_aaaaaaaaaa", "--stdin-file", "-", "--env", "CODE=7", "--json", "--", "cat"];
    let out = berth_with_stdin(&args, "piped input");
    assert_eq!(out.status.code(), Some(7));
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["exit_code"], 7);
    let sent: Value = serde_json::from_str(result["stdout"].as_str().unwrap()).unwrap();
    assert_eq!(sent["stdin"], "piped input");
    assert_eq!(sent["stream"], false);

    let out = berth(fake_api(), Some("sk_wrong"), &["exec", "inst_aaaaaaaaaa", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(unauthorized)"));
}

#[test]
fn logs_split_stdout_and_stderr_and_follow_streams() {
    let out = berth(fake_api(), Some(KEY), &["logs", "-n", "5", "--since", "1700000000", "inst_aaaaaaaaaa"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "lines=5 since=1700000000\nlast line\n");
    assert_eq!(text(&out.stderr), "oops on stderr\n");

    let out = berth(fake_api(), Some(KEY), &["logs", "inst_aaaaaaaaaa", "--json"]);
    let logs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(logs["logs"].as_array().unwrap().len(), 3);

    let out = berth(fake_api(), Some(KEY), &["logs", "-f", "-t", "inst_aaaaaaaaaa"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout, "2024-01-01T00:00:00Z lines=- since=-\n2024-01-01T00:00:02Z last line\n");
    assert!(text(&out.stderr).contains("oops on stderr"));

    let out = berth(fake_api(), Some(KEY), &["logs", "--follow", "--json", "inst_aaaaaaaaaa"]);
    let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["stream"], "stderr");
}

#[test]
fn health_reads_as_key_values() {
    let out = berth(fake_api(), Some(KEY), &["health", "inst_aaaaaaaaaa"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "cpu:",
        "12.3%",
        "256.0 MB of 2048 MB (12.5%)",
        "42.5 MB",
        "pids:",
        "uptime:",
        "1h 2m",
        "5s ago",
        "restart count:",
        "ok (3.2 ms)",
    ] {
        assert!(stdout.contains(expected), "{expected} missing in\n{stdout}");
    }
    let out = berth(fake_api(), Some(KEY), &["health", "inst_aaaaaaaaaa", "--json"]);
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h["pids"], 7);
}

#[test]
fn events_print_a_table_of_transitions() {
    let out = berth(fake_api(), Some(KEY), &["events", "inst_aaaaaaaaaa"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("TIME (UTC)") && lines[0].contains("FROM → TO"), "{stdout}");
    assert!(lines[1].starts_with("2023-11-14 22:13:20") && lines[1].contains("- → creating"), "{stdout}");
    assert!(lines[2].contains("running → stopped") && lines[2].contains("reconciler"), "{stdout}");
    assert!(lines[2].ends_with("container exited"), "{stdout}");

    let out = berth(fake_api(), Some(KEY), &["events", "inst_zzzzzzzzzz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(instance_not_found)"));
}

#[test]
fn instances_set_patches_only_what_is_given() {
    let args =
        ["instances", "set", "inst_aaaaaaaaaa", "--name", "renamed", "--meta", "team=b", "--size", "2", "--json"];
    let out = berth(fake_api(), Some(KEY), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let inst: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inst["name"], "renamed");
    assert_eq!(inst["metadata"], json!({"team": "b"}));
    assert_eq!(inst["size"]["size"], 2);

    for (egress, sent) in [
        ("none", json!("none")),
        ("10.1.2.0/24:5432,[fd00::/8]:443", json!({"allow": ["10.1.2.0/24:5432", "[fd00::/8]:443"]})),
    ] {
        let out = berth(fake_api(), Some(KEY), &["instances", "set", "inst_aaaaaaaaaa", "--egress", egress, "--json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let inst: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(inst["network"], json!({"egress": sent}));
    }

    let out = berth(fake_api(), Some(KEY), &["instances", "set", "inst_aaaaaaaaaa"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nothing to change"));
}

#[test]
fn shell_pipes_input_and_exits_with_the_remote_code() {
    let out = berth_with_stdin(&["shell", "inst_aaaaaaaaaa"], "echo hi; exit 3\n");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("cols=80 rows=24 command=-\r\n"), "{stdout}");
    assert!(stdout.contains("echo hi; exit 3"), "{stdout}");

    // Input that ends without `exit`: Ctrl-D follows it, the session ends with 0.
    let out = berth_with_stdin(&["shell", "inst_aaaaaaaaaa", "--command", "cat -n"], "x\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("cols=80 rows=24 command=cat -n\r\n"));

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["shell", "inst_aaaaaaaaaa"])
        .env("BERTH_URL", fake_api())
        .env("BERTH_API_KEY", "sk_wrong")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(unauthorized)"), "{}", text(&out.stderr));
}

#[test]
fn chat_streams_the_reply_through_the_instance_url() {
    let out = berth(fake_api(), Some(KEY), &["chat", CHAT_ID, "world"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "Hello, world!\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("[tool] shell({\"command\":\"ls\"})\n"), "{stderr}");
    assert_eq!(stderr.matches("[tool]").count(), 1, "{stderr}");
    assert!(stderr.contains("→ file1 …"), "{stderr}");
    assert!(stderr.ends_with("session: sess_new\n"), "{stderr}");

    let out = berth(fake_api(), Some(KEY), &["chat", CHAT_ID, "again", "--session", "sess_old"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).ends_with("session: sess_old\n"));

    let args = ["chat", CHAT_ID, "hi", "--session", "s1", "--model", "m1", "--instructions", "be brief", "--json"];
    let out = berth(fake_api(), Some(KEY), &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sent = json!({"input": "hi", "stream": false, "session_id": "s1", "model": "m1", "instructions": "be brief"});
    assert_eq!(answer["echo"], sent);
}

#[test]
fn chat_failures_exit_1_with_the_message() {
    let out = berth(fake_api(), Some(KEY), &["chat", CHAT_ID, "fail"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "partial\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: the model went away (model_error)"), "{stderr}");
    assert!(!stderr.contains("session:"), "{stderr}");

    let out = berth(fake_api(), Some(KEY), &["chat", CHAT_ID, "hi", "--session", "sess_gone"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error: Session 'sess_gone' not found (session_not_found)"));

    let out = berth(fake_api(), Some(KEY), &["chat", "inst_zzzzzzzzzz", "hi"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("(instance_not_found)"));
}
