//! A model relay for an agent whose own stream does not show its work (OpenClaw).
//!
//! The agent's model traffic goes to berth-agent on loopback instead of to the
//! endpoint: the relay forwards every request unchanged to the configured base URL
//! (with the real key, so the agent's configuration holds none) and streams the answer
//! back as it arrives, reading it on the way. What the model says is therefore
//! relayed to the client as it is said: text deltas and tool calls (with their
//! arguments) from each streamed chat-completions answer, and the results of the
//! tools the agent ran from the `tool` messages of its next request.

use crate::driver::DriverEvent;
use crate::provider::{ChatEvents, ProviderEvent};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The largest request an agent may send through the relay.
const MAX_REQUEST: usize = 32 * 1024 * 1024;

/// A relay listening on loopback; it stops when dropped. What it reads goes to the
/// turn begun last ([`Relay::begin`]), if any.
pub struct Relay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    upstream: String,
    api_key: Option<String>,
    http: reqwest::Client,
    sink: Mutex<Option<mpsc::Sender<DriverEvent>>>,
    state: Mutex<Seen>,
}

/// What the relay has passed on so far in this turn.
#[derive(Default)]
struct Seen {
    /// Tool calls relayed whose results have not been seen yet, in order.
    pending: Vec<String>,
    /// Some answer text was relayed.
    text: bool,
}

impl Relay {
    /// A relay to `upstream` (an OpenAI-compatible base URL, `.../v1`). Must be
    /// called within the runtime.
    pub fn start(upstream: &str, api_key: Option<&str>, http: reqwest::Client) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_string(),
            api_key: api_key.map(str::to_string),
            http,
            sink: Mutex::default(),
            state: Mutex::default(),
        });
        let app = axum::Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Relay { addr, shared, task })
    }

    /// The base URL the agent is given (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// What it reads from now on goes to `tx` (a turn begins).
    pub fn begin(&self, tx: mpsc::Sender<DriverEvent>) {
        *self.shared.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        *self.shared.state.lock().unwrap_or_else(|e| e.into_inner()) = Seen::default();
    }

    /// What it reads goes nowhere (the turn is over).
    pub fn end(&self) {
        *self.shared.sink.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether any answer text went through in this turn.
    pub fn relayed_text(&self) -> bool {
        self.shared.state.lock().map(|s| s.text).unwrap_or(false)
    }
}

/// Forwards one request and relays its answer.
async fn forward(State(s): State<Arc<Shared>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let rest = path.strip_prefix("/v1").unwrap_or(&path);
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let url = format!("{}{rest}{query}", s.upstream);
    let method = req.method().clone();
    let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
    let body = match axum::body::to_bytes(req.into_body(), MAX_REQUEST).await {
        Ok(b) => b,
        Err(e) => return failure(StatusCode::PAYLOAD_TOO_LARGE, &format!("the request could not be read: {e}")),
    };
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        for ev in s.tool_results(&v) {
            s.send(ev).await;
        }
    }
    let mut b = s.http.request(method, &url).body(body);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    if let Some(key) = &s.api_key {
        b = b.bearer_auth(key);
    }
    let upstream = match b.send().await {
        Ok(r) => r,
        Err(e) => return failure(StatusCode::BAD_GATEWAY, &format!("the model endpoint {url} did not answer: {e}")),
    };
    let status = upstream.status();
    let ct = upstream.headers().get(header::CONTENT_TYPE).cloned();
    let streamed = ct.as_ref().and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"));
    let mut resp = if streamed && status.is_success() {
        Body::from_stream(relayed(upstream, s.clone())).into_response()
    } else {
        match upstream.bytes().await {
            Ok(bytes) => bytes.into_response(),
            Err(e) => return failure(StatusCode::BAD_GATEWAY, &format!("the model endpoint's answer broke off: {e}")),
        }
    };
    *resp.status_mut() = status;
    if let Some(ct) = ct {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    resp
}

/// The answer's bytes, passed on after their events are: the agent never sees a
/// byte whose meaning the client has not been told.
fn relayed(
    upstream: reqwest::Response,
    s: Arc<Shared>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct Flow {
        upstream: reqwest::Response,
        s: Arc<Shared>,
        events: ChatEvents,
        /// The answer's end was told (at `[DONE]`, else when the bytes end).
        told: bool,
        ended: bool,
    }
    let flow = Flow { upstream, s, events: ChatEvents::default(), told: false, ended: false };
    futures_util::stream::unfold(flow, |mut f| async move {
        if f.ended {
            return None;
        }
        match f.upstream.chunk().await {
            Ok(Some(bytes)) => {
                let events = f.events.feed(&bytes).unwrap_or_default();
                f.s.relay(events).await;
                // Told before the agent has the last bytes: its next request (and
                // the next answer) can only come after this one's end.
                if f.events.done() && !std::mem::replace(&mut f.told, true) {
                    f.s.send(DriverEvent::ModelEnd).await;
                }
                Some((Ok(bytes), f))
            }
            Ok(None) => {
                let events = f.events.finish().unwrap_or_default();
                f.s.relay(events).await;
                if !f.told {
                    f.s.send(DriverEvent::ModelEnd).await;
                }
                None
            }
            Err(e) => {
                if !f.told {
                    f.s.send(DriverEvent::ModelEnd).await;
                }
                f.ended = true;
                Some((Err(std::io::Error::other(e)), f))
            }
        }
    })
}

impl Shared {
    async fn send(&self, ev: DriverEvent) {
        let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(tx) = sink {
            let _ = tx.send(ev).await;
        }
    }

    async fn relay(&self, events: Vec<ProviderEvent>) {
        for ev in events {
            if let Ok(mut seen) = self.state.lock() {
                match &ev {
                    ProviderEvent::Text(t) if !t.is_empty() => seen.text = true,
                    ProviderEvent::ToolCallStart { call_id, .. } => seen.pending.push(call_id.clone()),
                    _ => {}
                }
            }
            self.send(DriverEvent::Model(ev)).await;
        }
    }

    /// The results of relayed tool calls that a request carries back to the model.
    fn tool_results(&self, body: &Value) -> Vec<DriverEvent> {
        let Some(messages) = body["messages"].as_array() else { return Vec::new() };
        let Ok(mut seen) = self.state.lock() else { return Vec::new() };
        if seen.pending.is_empty() {
            return Vec::new();
        }
        // The tool messages answering the last assistant message's calls.
        let last_assistant = messages.iter().rposition(|m| m["role"] == "assistant").unwrap_or(0);
        let mut out = Vec::new();
        for m in messages[last_assistant..].iter().filter(|m| m["role"] == "tool") {
            let id = m["tool_call_id"].as_str().unwrap_or_default();
            // Agents may rewrite ids (OpenClaw drops the punctuation): else the oldest.
            let pos = seen.pending.iter().position(|p| p == id || plain(p) == plain(id)).unwrap_or(0);
            if seen.pending.is_empty() {
                break;
            }
            let call_id = seen.pending.remove(pos);
            out.push(DriverEvent::ToolResult { call_id, output: crate::driver::result_text(&m["content"], false) });
        }
        out
    }
}

/// An id's letters and digits.
fn plain(id: &str) -> String {
    id.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

fn failure(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": "relay_error"}});
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_test_util::llm::{text, tool, ScriptedLlm};
    use serde_json::json;

    /// Everything sent to the channel so far.
    fn drain(rx: &mut mpsc::Receiver<DriverEvent>) -> Vec<DriverEvent> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn answers_pass_through_unchanged_and_are_relayed_as_they_stream() {
        let model = ScriptedLlm::openai(|body| match body["messages"].as_array().unwrap().len() {
            1 => tool("exec", json!({"command": "echo hi"})),
            _ => text(&["it ", "said hi"]),
        })
        .await;
        let (tx, mut rx) = mpsc::channel(256);
        let relay = Relay::start(&model.base_url, Some("sk-real"), reqwest::Client::new()).unwrap();
        relay.begin(tx);
        let http = reqwest::Client::new();
        let url = format!("{}/chat/completions", relay.base_url());
        let first = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "go"}]});
        let body = http.post(&url).bearer_auth("berth-relay").json(&first).send().await.unwrap().text().await.unwrap();
        assert!(body.contains("data: ") && body.contains("echo hi"), "the agent gets the stream as it was: {body}");
        let got = drain(&mut rx);
        let call_id = match &got[0] {
            DriverEvent::Model(ProviderEvent::ToolCallStart { call_id, name, .. }) if name == "exec" => call_id.clone(),
            other => panic!("{other:?}"),
        };
        assert!(matches!(got.last(), Some(DriverEvent::ModelEnd)), "{got:?}");
        assert!(!relay.relayed_text());

        // The agent ran it and says so in its next request, with the id rewritten.
        let rewritten: String = call_id.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        let second = json!({"model": "m", "stream": true, "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [{"id": rewritten, "type": "function", "function": {"name": "exec", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": rewritten, "content": [{"type": "text", "text": "hi"}]},
            {"role": "user", "content": "(context)"}]});
        http.post(&url).json(&second).send().await.unwrap().text().await.unwrap();
        let got = drain(&mut rx);
        assert!(
            matches!(&got[0], DriverEvent::ToolResult { call_id: c, output } if *c == call_id && output == "hi"),
            "{got:?}"
        );
        let text: String = got
            .iter()
            .filter_map(|e| match e {
                DriverEvent::Model(ProviderEvent::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "it said hi");
        assert!(relay.relayed_text());
        // The model saw the real key, never the agent's placeholder.
        let reqs = model.requests();
        assert!(reqs.iter().all(|r| r.headers["authorization"] == "Bearer sk-real"), "{reqs:?}");

        // What is not a stream passes through as it is.
        let models = http.get(format!("{}/models", relay.base_url())).send().await.unwrap();
        assert_eq!(models.status(), 200);
        assert!(models.text().await.unwrap().contains("scripted-1"));
        assert!(drain(&mut rx).is_empty());

        // Once the turn is over, nothing more is relayed.
        relay.end();
        http.post(&url).json(&first).send().await.unwrap().text().await.unwrap();
        assert!(drain(&mut rx).is_empty());
    }

    #[tokio::test]
    async fn an_endpoint_that_does_not_answer_is_a_clear_502() {
        let relay = Relay::start("http://127.0.0.1:9/v1", None, reqwest::Client::new()).unwrap();
        let resp = reqwest::Client::new()
            .post(format!("{}/chat/completions", relay.base_url()))
            .json(&json!({"model": "m"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502);
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"]["message"].as_str().unwrap().contains("127.0.0.1:9"), "{body}");
    }
}
