//! Scripted model servers: fake LLM providers for tests, speaking OpenAI chat
//! completions (`/v1/chat/completions`, `/v1/models`) or Anthropic Messages
//! (`/v1/messages`) over real HTTP and real SSE on a real socket. Each request is
//! answered with what the test's script says ([`Reply`]) and recorded
//! ([`ScriptedLlm::requests`]).
//!
//! Used by the agent's own tests (the `berth-agent` binary against a model on
//! 127.0.0.1) and by the end-to-end tests (an agent inside an instance reaching a
//! model on the host through the bridge's gateway: bind `0.0.0.0`, see
//! [`ScriptedLlm::openai_on`] and [`ScriptedLlm::base_url_at`]).
//!
//! Why here and not behind a cargo feature: `berth-test-util` depends on no berth
//! crate but `berth-core` (no cycle with `berth-agent`), and what it adds to the
//! agent's test build is small: `axum`, `reqwest`, `tokio` and `tempfile` are the
//! agent's own dependencies already, leaving `berth-core`, `rcgen` and `nix`'s `fs`
//! feature. The workspace's test run (`scripts/test.sh`) compiles this crate
//! anyway, and the static agent build does not see dev-dependencies at all.
//!
//! A script is a function of the request body; the helpers [`last_text`],
//! [`last_role`], [`first_user_text`], [`count_role`] and [`tool_names`] read the request
//! in either protocol:
//!
//! ```no_run
//! # async fn demo() {
//! use berth_test_util::llm::{last_role, last_text, text, tool, Reply, ScriptedLlm};
//! use serde_json::json;
//! let llm = ScriptedLlm::openai(|body| match last_role(body).as_str() {
//!     "user" => tool("shell", json!({"command": "echo hi"})),
//!     _ => Reply::Text(vec![format!("the tool said {}", last_text(body))]),
//! })
//! .await;
//! // give the agent `BERTH_LLM_BASE_URL=llm.base_url`; the server stops when `llm` drops
//! # }
//! ```

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the scripted model answers to one request (one model turn).
#[derive(Debug, Clone)]
pub enum Reply {
    /// Text streamed in these chunks.
    Text(Vec<String>),
    /// Text streamed in these chunks, each after the given interval (OpenAI only;
    /// Anthropic streams them at once).
    SlowText(Vec<String>, Duration),
    /// Reasoning, then text.
    Reasoning(String, Vec<String>),
    /// Tool calls `(name, arguments)`, arguments streamed in two halves.
    Tools(Vec<(String, Value)>),
    /// An HTTP error with this JSON body.
    Status(u16, Value),
    /// These text chunks, then the connection breaks.
    CutAfter(Vec<String>),
    /// One chunk that is not JSON.
    Garbage,
    /// Headers, then silence.
    Hang,
}

/// `Reply::Text` from string slices.
pub fn text(chunks: &[&str]) -> Reply {
    Reply::Text(chunks.iter().map(|c| c.to_string()).collect())
}

/// `Reply::Tools` with one call.
pub fn tool(name: &str, args: Value) -> Reply {
    Reply::Tools(vec![(name.to_string(), args)])
}

type Script = dyn Fn(&Value) -> Reply + Send + Sync;

/// One request the model server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The JSON body.
    pub body: Value,
    /// The request's headers (`authorization`, `x-api-key`, `anthropic-version`...).
    pub headers: HeaderMap,
}

#[derive(Clone)]
struct Shared {
    script: Arc<Script>,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

/// A running scripted model server, served by a task on the runtime of the test
/// that started it; stops when dropped.
pub struct ScriptedLlm {
    /// Base URL as the agent wants it (`.../v1` for OpenAI, the root for Anthropic),
    /// on 127.0.0.1 (also for a server bound to `0.0.0.0`).
    pub base_url: String,
    port: u16,
    suffix: &'static str,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedLlm {
    /// An OpenAI-compatible server (`/v1/chat/completions`, `/v1/models`) on 127.0.0.1.
    pub async fn openai(script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        Self::openai_on("127.0.0.1:0", script).await
    }

    /// An OpenAI-compatible server listening on `bind` (`0.0.0.0:0`: reachable from
    /// instances through the bridge's gateway, see [`ScriptedLlm::base_url_at`]).
    pub async fn openai_on(bind: &str, script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        let app = Router::new().route("/v1/chat/completions", post(openai_chat)).route(
            "/v1/models",
            get(|| async { Json(json!({"object": "list", "data": [{"id": "scripted-1", "object": "model"}]})) }),
        );
        Self::serve(bind, app, script, "/v1").await
    }

    /// An Anthropic Messages server (`/v1/messages`) on 127.0.0.1.
    pub async fn anthropic(script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        Self::anthropic_on("127.0.0.1:0", script).await
    }

    /// An Anthropic Messages server listening on `bind`.
    pub async fn anthropic_on(bind: &str, script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        let app = Router::new().route("/v1/messages", post(anthropic_messages));
        Self::serve(bind, app, script, "").await
    }

    /// A model speaking the OpenAI Responses API (`POST /v1/responses`, streamed), as
    /// Codex uses it (text and tool calls only), and chat completions too, as an OpenAI
    /// endpoint does. `base_url` ends in `/v1`.
    pub async fn responses_on(bind: &str, script: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Self {
        let app = Router::new()
            .route("/v1/responses", post(openai_responses))
            .route("/v1/chat/completions", post(openai_chat))
            .route(
                "/v1/models",
                get(|| async { Json(json!({"object": "list", "data": [{"id": "scripted-1", "object": "model"}]})) }),
            );
        Self::serve(bind, app, script, "/v1").await
    }

    async fn serve(
        bind: &str,
        app: Router<Shared>,
        script: impl Fn(&Value) -> Reply + Send + Sync + 'static,
        suffix: &'static str,
    ) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared { script: Arc::new(script), requests: requests.clone() };
        let listener = tokio::net::TcpListener::bind(bind).await.expect("scripted model binds");
        let port = listener.local_addr().expect("local addr").port();
        let app = app.with_state(shared);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        ScriptedLlm { base_url: format!("http://127.0.0.1:{port}{suffix}"), port, suffix, requests, task }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The base URL under another host name or address (for an instance: the
    /// gateway of its bridge, [`crate::docker::network_gateway`]).
    pub fn base_url_at(&self, host: &str) -> String {
        format!("http://{host}:{}{}", self.port, self.suffix)
    }

    /// Requests received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

fn record(s: &Shared, headers: HeaderMap, body: &Value) -> Reply {
    s.requests.lock().unwrap().push(Recorded { body: body.clone(), headers });
    (s.script)(body)
}

/// A streamed body of SSE frames; `then_break` ends it with an I/O error.
fn sse(frames: Vec<(String, Duration)>, then_break: bool, hang: bool) -> Response {
    let items = stream::iter(frames).then(|(frame, delay)| async move {
        tokio::time::sleep(delay).await;
        Ok::<Bytes, std::io::Error>(Bytes::from(frame))
    });
    // The break waits a little, so what came before it is flushed first.
    let tail = stream::iter(then_break.then_some(())).then(|()| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(std::io::Error::other("cut"))
    });
    let body = items.chain(tail);
    let body = if hang { Body::from_stream(body.chain(stream::pending())) } else { Body::from_stream(body) };
    ([("content-type", "text/event-stream")], body).into_response()
}

fn data(v: Value) -> String {
    berth_sse::encode(None, &v.to_string())
}

async fn openai_chat(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let reply = record(&s, headers, &body);
    let chunk = |delta: Value, finish: Option<&str>| {
        data(json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body["model"],
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}))
    };
    let now = Duration::ZERO;
    let texts = |chunks: &[String], delay: Duration| -> Vec<(String, Duration)> {
        chunks.iter().map(|c| (chunk(json!({"content": c}), None), delay)).collect()
    };
    let end = |reason: &str| {
        vec![
            (chunk(json!({}), Some(reason)), now),
            (
                data(json!({"id": "chatcmpl-1", "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})),
                now,
            ),
            (berth_sse::encode(None, "[DONE]"), now),
        ]
    };
    match reply {
        Reply::Text(chunks) => sse([texts(&chunks, now), end("stop")].concat(), false, false),
        Reply::SlowText(chunks, d) => sse([texts(&chunks, d), end("stop")].concat(), false, false),
        Reply::Reasoning(r, chunks) => {
            let mut frames = vec![(chunk(json!({"reasoning_content": r}), None), now)];
            frames.extend(texts(&chunks, now));
            frames.extend(end("stop"));
            sse(frames, false, false)
        }
        Reply::Tools(calls) => {
            let mut frames = Vec::new();
            for (i, (name, args)) in calls.iter().enumerate() {
                let a = args.to_string();
                let (h1, h2) = a.split_at(a.len() / 2);
                frames.push((chunk(json!({"tool_calls": [{"index": i, "id": format!("call_{i}_{}", body["messages"].as_array().map_or(0, |m| m.len())),
                    "type": "function", "function": {"name": name, "arguments": h1}}]}), None), now));
                frames.push((chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": h2}}]}), None), now));
            }
            frames.extend(end("tool_calls"));
            sse(frames, false, false)
        }
        Reply::Status(code, body) => (StatusCode::from_u16(code).unwrap(), Json(body)).into_response(),
        Reply::CutAfter(chunks) => sse(texts(&chunks, now), true, false),
        Reply::Garbage => sse(vec![("data: {this is not json\n\n".into(), now)], false, false),
        Reply::Hang => sse(vec![(": waiting\n\n".into(), now)], false, true),
    }
}

async fn openai_responses(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let reply = record(&s, headers, &body);
    let now = Duration::ZERO;
    let seq = std::cell::Cell::new(0);
    let ev = |mut v: Value| {
        v["sequence_number"] = json!(seq.get());
        seq.set(seq.get() + 1);
        let name = v["type"].as_str().unwrap_or_default().to_string();
        (berth_sse::encode(Some(&name), &v.to_string()), now)
    };
    let turn = body["input"].as_array().map_or(0, |i| i.len());
    let response = json!({"id": format!("resp_{turn}"), "object": "response", "status": "in_progress",
        "model": body["model"], "output": []});
    let mut frames = vec![ev(json!({"type": "response.created", "response": response}))];
    let output: Vec<Value> = match reply {
        Reply::Text(chunks) | Reply::SlowText(chunks, _) | Reply::Reasoning(_, chunks) => {
            let id = format!("msg_{turn}");
            let item = |text: &str, status: &str| {
                json!({"type": "message", "id": id, "role": "assistant", "status": status,
                    "content": [{"type": "output_text", "text": text, "annotations": []}]})
            };
            frames.push(ev(json!({"type": "response.output_item.added", "output_index": 0,
                "item": {"type": "message", "id": id, "role": "assistant", "status": "in_progress", "content": []}})));
            for c in &chunks {
                frames.push(ev(json!({"type": "response.output_text.delta", "output_index": 0, "item_id": id,
                    "content_index": 0, "delta": c})));
            }
            let done = item(&chunks.concat(), "completed");
            frames.push(ev(json!({"type": "response.output_item.done", "output_index": 0, "item": done})));
            vec![done]
        }
        Reply::Tools(calls) => calls
            .iter()
            .enumerate()
            .map(|(i, (name, args))| {
                let (id, call_id) = (format!("fc_{turn}_{i}"), format!("call_{turn}_{i}"));
                let done = json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
                    "arguments": args.to_string(), "status": "completed"});
                frames.push(ev(json!({"type": "response.output_item.added", "output_index": i,
                    "item": {"type": "function_call", "id": id, "call_id": call_id, "name": name,
                        "arguments": "", "status": "in_progress"}})));
                frames.push(ev(json!({"type": "response.function_call_arguments.delta", "output_index": i,
                    "item_id": id, "delta": args.to_string()})));
                frames.push(ev(json!({"type": "response.output_item.done", "output_index": i, "item": done})));
                done
            })
            .collect(),
        Reply::Status(code, body) => return (StatusCode::from_u16(code).unwrap(), Json(body)).into_response(),
        other => panic!("the Responses model does not script {other:?}"),
    };
    let mut done = response;
    done["status"] = json!("completed");
    done["output"] = json!(output);
    done["usage"] = json!({"input_tokens": 11, "output_tokens": 7, "total_tokens": 18,
        "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}});
    frames.push(ev(json!({"type": "response.completed", "response": done})));
    sse(frames, false, false)
}

async fn anthropic_messages(State(s): State<Shared>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let reply = record(&s, headers, &body);
    let now = Duration::ZERO;
    let ev = |name: &str, v: Value| (berth_sse::encode(Some(name), &v.to_string()), now);
    let start = ev(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1",
        "role": "assistant", "content": [], "usage": {"input_tokens": 13, "output_tokens": 1}}}),
    );
    let stop = |reason: &str| {
        vec![
            ev(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": reason},
            "usage": {"output_tokens": 5}}),
            ),
            ev("message_stop", json!({"type": "message_stop"})),
        ]
    };
    let text_block = |index: usize, chunks: &[String]| {
        let mut f = vec![ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
        )];
        for c in chunks {
            f.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": c}}),
            ));
        }
        f.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        f
    };
    match reply {
        Reply::Text(chunks) | Reply::SlowText(chunks, _) | Reply::Reasoning(_, chunks) => {
            sse([vec![start], text_block(0, &chunks), stop("end_turn")].concat(), false, false)
        }
        Reply::Tools(calls) => {
            let mut frames = vec![start, ev("ping", json!({"type": "ping"}))];
            for (i, (name, args)) in calls.iter().enumerate() {
                frames.push(ev("content_block_start", json!({"type": "content_block_start", "index": i,
                    "content_block": {"type": "tool_use", "id": format!("toolu_{i}_{}", body["messages"].as_array().map_or(0, |m| m.len())),
                    "name": name, "input": {}}})));
                let a = args.to_string();
                let (h1, h2) = a.split_at(a.len() / 2);
                for part in [h1, h2] {
                    frames.push(ev(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": part}}),
                    ));
                }
                frames.push(ev("content_block_stop", json!({"type": "content_block_stop", "index": i})));
            }
            frames.extend(stop("tool_use"));
            sse(frames, false, false)
        }
        Reply::Status(code, body) => (StatusCode::from_u16(code).unwrap(), Json(body)).into_response(),
        Reply::CutAfter(chunks) => {
            let mut frames = vec![start];
            frames.extend(text_block(0, &chunks));
            sse(frames, true, false)
        }
        Reply::Garbage => sse(vec![("event: message_start\ndata: {oops\n\n".into(), now)], false, false),
        Reply::Hang => sse(vec![start], false, true),
    }
}

// Helpers for scripts: what the last message of a request says.

/// Text of the last message of a chat-completions or Messages request.
pub fn last_text(body: &Value) -> String {
    let last = body["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| b["text"].as_str().or(b["content"].as_str()).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Role of the last message (`tool` for a chat tool result; Anthropic tool results are `user`).
pub fn last_role(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|m| m.last())
        .map(|m| m["role"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Text of the first user message.
pub fn first_user_text(body: &Value) -> String {
    let first =
        body["messages"].as_array().and_then(|m| m.iter().find(|m| m["role"] == "user")).cloned().unwrap_or_default();
    last_text(&json!({"messages": [first]}))
}

/// How many messages with this role the request carries.
pub fn count_role(body: &Value, role: &str) -> usize {
    body["messages"].as_array().map_or(0, |m| m.iter().filter(|m| m["role"] == role).count())
}

/// Names of the tools a chat-completions request offers.
pub fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_string))
        .collect()
}
