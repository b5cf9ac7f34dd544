//! Test harness: the real `berth-agent` binary on a loopback port and a small
//! HTTP + SSE client. The scripted model servers are `berth_test_util::llm`.
#![allow(dead_code)] // each test binary uses a different part of it

use reqwest::StatusCode;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running agent process; killed when dropped.
pub struct Agent {
    pub url: String,
    pub data: PathBuf,
    pub workdir: PathBuf,
    child: Child,
    token: Option<String>,
    http: reqwest::Client,
}

/// Directories an agent (or several, one after the other) works in.
pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub data: PathBuf,
    pub workdir: PathBuf,
}

impl Dirs {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let workdir = tmp.path().join("work");
        std::fs::create_dir_all(&workdir).unwrap();
        Dirs { _tmp: tmp, data, workdir }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Agent {
    /// Starts the agent against an OpenAI-compatible base URL with `BERTH_MODEL=scripted-model`.
    pub async fn start(dirs: &Dirs, llm_base: &str, env: &[(&str, &str)]) -> Agent {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth-agent"));
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data")
            .arg(&dirs.data)
            .env_remove("BERTH_GATEWAY_TOKEN")
            .env_remove("BERTH_ANTHROPIC_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env("BERTH_LLM_BASE_URL", llm_base)
            .env("BERTH_LLM_API_KEY", "test-key")
            .env("BERTH_MODEL", "scripted-model")
            .env("BERTH_AGENT_WORKDIR", &dirs.workdir)
            .env("RUST_LOG", std::env::var("AGENT_LOG").unwrap_or("error".into()))
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let token = env.iter().find(|(k, _)| *k == "BERTH_GATEWAY_TOKEN").map(|(_, v)| v.to_string());
        let child = cmd.spawn().expect("spawn berth-agent");
        let agent = Agent {
            url: format!("http://127.0.0.1:{port}"),
            data: dirs.data.clone(),
            workdir: dirs.workdir.clone(),
            child,
            token,
            http: reqwest::Client::new(),
        };
        agent.wait_healthy().await;
        agent
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/health", self.url)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("berth-agent did not become healthy");
    }

    /// Stops the agent with SIGTERM and waits for it to exit.
    pub fn stop(mut self) {
        use nix::sys::signal::{kill, Signal};
        let _ = kill(nix::unistd::Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let _ = self.child.wait();
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let b = self.http.request(method, format!("{}{path}", self.url));
        match &self.token {
            Some(t) => b.bearer_auth(t),
            None => b,
        }
    }

    /// POST a JSON body; the status and the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self.req(reqwest::Method::POST, path).json(body).send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// POST raw bytes as JSON.
    pub async fn post_raw(&self, path: &str, body: &str) -> (StatusCode, Value) {
        let r = self
            .req(reqwest::Method::POST, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let r = self.req(reqwest::Method::DELETE, path).send().await.unwrap();
        (r.status(), r.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET /v1/responses/{id}` until its status is `want` (5 s at most); the last seen.
    pub async fn wait_status(&self, id: &str, want: &str) -> Value {
        let mut r = Value::Null;
        for _ in 0..50 {
            r = self.get(&format!("/v1/responses/{id}")).await.1;
            if r["status"] == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        r
    }

    /// Opens a streamed `POST /v1/responses` (adds `stream: true`).
    pub async fn open_stream(&self, body: &Value) -> SseReader {
        let mut body = body.clone();
        body["stream"] = Value::Bool(true);
        let r = self.req(reqwest::Method::POST, "/v1/responses").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200, "stream refused");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        SseReader { resp: r, buf: Vec::new() }
    }

    /// Opens `GET path` as an event stream (e.g. `/v1/responses/{id}?stream=true`).
    pub async fn open_get_stream(&self, path: &str) -> SseReader {
        let r = self.req(reqwest::Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), 200, "stream refused");
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        SseReader { resp: r, buf: Vec::new() }
    }

    /// A whole streamed response: every event, in order, until the server closes.
    pub async fn stream(&self, body: &Value) -> Vec<SseEvent> {
        self.open_stream(body).await.rest().await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One SSE event as a client sees it.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

/// Reads SSE events from a streamed response, skipping comments (keep-alives).
pub struct SseReader {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl SseReader {
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let frame = String::from_utf8(self.buf.drain(..pos + 2).collect()).unwrap();
                let mut event = String::new();
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("event: ") {
                        event = v.into();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                if data == "[DONE]" {
                    assert!(event.is_empty(), "[DONE] is a bare data line");
                    return None; // the end of the turn's events
                }
                let data: Value = serde_json::from_str(&data).expect("event data is JSON");
                assert_eq!(data["type"].as_str(), Some(event.as_str()), "event name matches type");
                return Some(SseEvent { event, data });
            }
            match tokio::time::timeout(Duration::from_secs(30), self.resp.chunk()).await {
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
                Ok(Ok(None)) => return None,
                Ok(Err(e)) => panic!("stream broke: {e}"),
                Err(_) => panic!("no event for 30s"),
            }
        }
    }
}

impl SseReader {
    /// Every event left, until the server closes (30 s at most).
    pub async fn rest(mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(e) = self.next().await {
            events.push(e);
            assert!(Instant::now() < deadline, "stream did not end");
        }
        events
    }
}

/// The event names of a stream, with consecutive repeats collapsed (`delta*`).
pub fn shape(events: &[SseEvent]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let name = e.event.trim_start_matches("response.").to_string();
        if out.last().is_some_and(|l| l == &name || l == &format!("{name}*")) {
            let last = out.last_mut().unwrap();
            if !last.ends_with('*') {
                last.push('*');
            }
        } else {
            out.push(name);
        }
    }
    out
}

/// Whether a process is gone (or a zombie waiting to be reaped).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Polls `f` until it holds or `secs` pass.
pub async fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// Reads a file the agent was told to write.
pub fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}
