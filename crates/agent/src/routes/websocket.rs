//! `GET /v1/responses` upgraded to a WebSocket: the Open Responses WebSocket mode.
//!
//! The client sends one JSON text frame per turn, `{"type": "response.create", ...}`
//! with a `POST /v1/responses` body (no `stream`, `stream_options` or `background`);
//! the agent answers each of the turn's events as one JSON text frame, the same
//! events an SSE stream carries, ending with `response.completed`, `.failed` or
//! `.incomplete`. A request it refuses is one frame `{"type": "error", "status",
//! "error": {"type", "code", "message", "param"}}`. Turns run one at a time per
//! connection, in the order sent. Responses made with `store: false` can be continued
//! (`previous_response_id`) on the connection that made them and nowhere else; a
//! continuation that fails forgets the response it named. A connection lasts at most
//! an hour. Closing the socket cancels the turn it runs.

use crate::api::CreateResponse;
use crate::error::ApiError;
use crate::state::AppState;
use crate::turn::{prepare_on, Emitter};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The longest a connection lasts.
const CONNECTION_LIMIT: Duration = Duration::from_secs(60 * 60);

/// Largest message taken: the HTTP body limit.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Most `response.create` messages waiting behind the running turn.
const MAX_QUEUED: usize = 8;

/// How many `store: false` responses a connection remembers.
const LOCAL_RESPONSES: usize = 64;

pub async fn upgrade(State(state): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(MAX_MESSAGE_BYTES).on_upgrade(move |socket| serve(state, socket))
}

/// The `store: false` responses a connection made, oldest first.
#[derive(Default)]
struct Local {
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl Local {
    fn remember(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
        }
        while self.order.len() > LOCAL_RESPONSES {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
    }

    fn forget(&mut self, id: &str) {
        self.ids.remove(id);
        self.order.retain(|i| i != id);
    }
}

async fn serve(state: Arc<AppState>, mut socket: WebSocket) {
    let deadline = tokio::time::Instant::now() + CONNECTION_LIMIT;
    let mut local = Local::default();
    let mut queued: VecDeque<String> = VecDeque::new();
    loop {
        let text = match queued.pop_front() {
            Some(t) => t,
            None => match tokio::time::timeout_at(deadline, next_text(&mut socket)).await {
                Ok(Some(t)) => t,
                Ok(None) => return,
                Err(_) => {
                    let mut e = ApiError::bad_request(
                        "websocket_connection_limit_reached",
                        "This connection reached its 60-minute limit; open a new one.".into(),
                    );
                    e.status = axum::http::StatusCode::BAD_REQUEST;
                    let _ = socket.send(error_frame(&e)).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
        };
        let req = match parse(&text) {
            Ok(r) => r,
            Err(e) => {
                if socket.send(error_frame(&e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let previous = req.previous_response_id.clone();
        let mut turn = match prepare_on(&state, req, &local.ids) {
            Ok(t) => t,
            Err(e) => {
                if let Some(p) = &previous {
                    local.forget(p);
                }
                if socket.send(error_frame(&e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let span = turn.span();
        let id = turn.response().id.clone();
        let live = state.live.start(&id);
        turn.attach(live.clone());
        let task = tokio::spawn(turn.run(Emitter::live(live.clone())).instrument(span));
        live.set_task(task.abort_handle());
        let mut follower = live.follow(None);
        loop {
            tokio::select! {
                frame = follower.next() => match frame {
                    Some(frame) => {
                        if socket.send(Message::Text(frame.data.clone().into())).await.is_err() {
                            task.abort();
                            return;
                        }
                    }
                    None => break,
                },
                incoming = next_text(&mut socket) => match incoming {
                    // Another turn asked for while this one runs: it waits its turn.
                    Some(t) if queued.len() < MAX_QUEUED => queued.push_back(t),
                    Some(_) => {
                        let e = ApiError::bad_request(
                            "too_many_queued",
                            format!("At most {MAX_QUEUED} turns wait behind the running one on a connection; send this one again later."),
                        );
                        if socket.send(error_frame(&e)).await.is_err() {
                            task.abort();
                            return;
                        }
                    }
                    None => {
                        task.abort();
                        return;
                    }
                },
            }
        }
        let done = task.await.ok().or_else(|| state.store.response(&id).ok().flatten());
        match done {
            Some(r) if r.status == crate::api::Status::Failed => {
                if let Some(p) = &previous {
                    local.forget(p);
                }
            }
            Some(r) if !r.store => local.remember(r.id),
            _ => {}
        }
    }
}

/// The next text (or UTF-8 binary) message; None when the client closed or broke the
/// connection.
async fn next_text(socket: &mut WebSocket) -> Option<String> {
    loop {
        match socket.recv().await? {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(Message::Binary(b)) => return Some(String::from_utf8_lossy(&b).into_owned()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
        }
    }
}

/// A `response.create` message as a request body.
fn parse(text: &str) -> Result<CreateResponse, ApiError> {
    let mut value: serde_json::Value = super::json_body(&axum::body::Bytes::copy_from_slice(text.as_bytes()))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(ApiError::bad_request("invalid_type", "Each message is a JSON object.".into()));
    };
    match obj.remove("type").as_ref().and_then(|t| t.as_str()) {
        Some("response.create") => {}
        Some(other) => {
            return Err(ApiError::invalid_param(
                "type",
                format!("Unknown message type '{other}': send 'response.create'."),
            ))
        }
        None => return Err(ApiError::missing_param("type")),
    }
    for key in ["stream", "stream_options", "background"] {
        if obj.contains_key(key) {
            return Err(ApiError::invalid_param(
                key,
                format!("'{key}' is not taken over a WebSocket: every turn streams its events on the socket."),
            ));
        }
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_type", format!("Invalid response.create message: {e}.")))
}

/// `{"type": "error", "status", "error": {...}}`.
fn error_frame(e: &ApiError) -> Message {
    let frame = serde_json::json!({
        "type": "error",
        "status": e.status.as_u16(),
        "error": {"type": e.kind, "code": e.code, "message": e.message, "param": e.param},
    });
    Message::Text(frame.to_string().into())
}
