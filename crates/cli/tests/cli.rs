//! The real `berth` binary against a small fake hosting API (axum on 127.0.0.1),
//! started once for the whole test binary.

use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::{Command, Output};
use std::sync::OnceLock;

const KEY: &str = "sk_test";

fn instance(id: &str, status: &str) -> Value {
    json!({
        "id": id, "object": "instance", "name": "demo", "status": status,
        "template": {"id": "berth-agent", "version": 1}, "agents": ["berth-agent"],
        "size": {"size": 1, "vcpu": 1, "memory_mb": 2048, "disk_gb": 10},
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
    error(StatusCode::NOT_FOUND, "instance_not_found", &format!("no instance `{id}`"), json!({}))
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
                    .route("/v1/instances/{id}", get(retrieve))
                    .route("/v1/instances/{id}/{action}", post(action))
                    .route("/v1/workspaces", post(create_workspace));
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
