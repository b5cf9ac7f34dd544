//! `POST /v1/responses` (plain JSON, Server-Sent Events, or in the background),
//! `GET /v1/responses/{id}` (also as a stream picked up at any point) and
//! `POST /v1/responses/{id}/cancel`.

use super::json_body;
use crate::api::{CreateResponse, Response, Status};
use crate::error::ApiError;
use crate::live::{Follower, LiveTurn};
use crate::state::AppState;
use crate::turn::{prepare, Emitter};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::AbortHandle;
use tracing::Instrument;

/// How often an idle stream sends an SSE comment; a write to a vanished
/// client fails, which is how a disconnect during a long tool run is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/responses", post(create).get(super::websocket::upgrade))
        .route("/v1/responses/compact", post(compact))
        .route("/v1/responses/{id}", get(fetch))
        .route("/v1/responses/{id}/cancel", post(cancel))
}

async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Result<axum::response::Response, ApiError> {
    let req: CreateResponse = json_body(&body)?;
    let stream = req.stream.unwrap_or(false);
    let background = req.background.unwrap_or(false);
    let mut turn = prepare(&state, req)?;
    let span = turn.span();
    if !stream && !background {
        // Runs inside the request: if the client disconnects, hyper drops
        // this future and the turn with it.
        return Ok(Json(turn.run(Emitter::silent()).instrument(span).await).into_response());
    }
    let snapshot = turn.response().clone();
    let live = state.live.start(&snapshot.id);
    turn.attach(live.clone());
    let task = tokio::spawn(turn.run(Emitter::live(live.clone())).instrument(span));
    live.set_task(task.abort_handle());
    if !stream {
        return Ok(Json(snapshot).into_response());
    }
    // A streamed turn that is not in the background ends when its client goes away.
    let guard = (!background).then(|| AbortOnDrop(task.abort_handle()));
    Ok(sse(live.follow(None), guard))
}

/// `POST /v1/responses/compact` (see [`crate::turn::context::compact_on_demand`]).
async fn compact(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let req = json_body(&body)?;
    Ok(Json(crate::turn::context::compact_on_demand(&state, req).await?))
}

/// Aborts the turn's task when the response stream is dropped (client gone).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The SSE answer reading a turn's log; `guard` goes with the stream.
fn sse(follower: Follower, guard: Option<AbortOnDrop>) -> axum::response::Response {
    Sse::new(events(follower, guard)).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// The turn's events, then `data: [DONE]` (the Open Responses stream's end; the OpenAI
/// SDKs stop reading at it).
fn events(follower: Follower, guard: Option<AbortOnDrop>) -> impl Stream<Item = Result<Event, Infallible>> {
    let frames = stream::unfold((follower, guard), |(mut follower, guard)| async move {
        let frame = follower.next().await?;
        let event = Event::default().event(frame.event).data(frame.data.as_str());
        Some((Ok(event), (follower, guard)))
    });
    frames.chain(stream::once(async { Ok(Event::default().data("[DONE]")) }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("response_not_found", format!("Response with id '{id}' not found."))
}

/// `GET /v1/responses/{id}`: the stored response; with `stream=true`, its events
/// after `starting_after` (all without it), then the rest live until the turn ends.
async fn fetch(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    let stream = match q.get("stream").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid_param("stream", format!("'stream' is true or false, not '{other}'.")))
        }
    };
    let after = match q.get("starting_after") {
        None => None,
        Some(n) => Some(n.parse::<u64>().ok().filter(|n| *n < i64::MAX as u64).ok_or_else(|| {
            ApiError::invalid_param(
                "starting_after",
                format!("'starting_after' is the sequence_number of an event already seen (0 or more), not '{n}'."),
            )
        })?),
    };
    // A `store: false` response is not kept for anyone to fetch.
    let stored = state.store.response(&id)?.filter(|r| r.store).ok_or_else(|| not_found(&id))?;
    if !stream {
        return Ok(Json(stored).into_response());
    }
    match state.live.get(&id) {
        Some(live) => Ok(sse(live.follow(after), None)),
        None => replay(&state, &stored, after),
    }
}

/// A turn's events as the store kept them (the agent restarted since, or its log in
/// memory was let go), ended by its terminal event: when the turn was cut short by a
/// restart, one made from the stored response (`response.failed`, `agent_restarted`).
fn replay(state: &AppState, stored: &Response, after: Option<u64>) -> Result<axum::response::Response, ApiError> {
    let id = &stored.id;
    let Some((last, last_kind)) = state.store.last_event(id)? else {
        let mut e = ApiError::bad_request(
            "stream_unavailable",
            format!(
                "The events of response '{id}' are not kept (they are for a day after a streamed or background turn); \
                 GET it without stream=true."
            ),
        );
        e.status = StatusCode::GONE;
        return Err(e);
    };
    let mut frames: Vec<(String, String)> =
        state.store.events(id, after)?.into_iter().map(|(_, event, data)| (event, data)).collect();
    let ended = ["response.completed", "response.failed", "response.incomplete"].contains(&last_kind.as_str());
    let kind = match stored.status {
        Status::Completed => Some("response.completed"),
        Status::Failed => Some("response.failed"),
        Status::Incomplete => Some("response.incomplete"),
        Status::Cancelled | Status::InProgress => None,
    };
    if let (false, Some(kind)) = (ended, kind) {
        let seq = (last + 1).max(after.map_or(0, |a| a.saturating_add(1)));
        let data = crate::api::events::lifecycle(kind, stored).into_json(seq).to_string();
        frames.push((kind.to_string(), data));
    }
    let events = stream::iter(frames)
        .map(|(event, data)| Ok::<_, Infallible>(Event::default().event(event).data(data)))
        .chain(stream::once(async { Ok(Event::default().data("[DONE]")) }));
    Ok(Sse::new(events).into_response())
}

/// `POST /v1/responses/{id}/cancel`: stops a running streamed or background turn and
/// its tools; answers the response (`cancelled`, or as it ended when it had already).
async fn cancel(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Response>, ApiError> {
    let stored = state.store.response(&id)?.filter(|r| r.store).ok_or_else(|| not_found(&id))?;
    let live: Option<Arc<LiveTurn>> = state.live.get(&id);
    match live {
        Some(live) => {
            live.cancel();
            live.wait_finished().await;
        }
        None if stored.status == Status::InProgress => {
            let mut e = ApiError::bad_request(
                "response_not_cancellable",
                format!(
                    "Response '{id}' runs inside its own request (neither streamed nor in the background): close \
                     that request to stop it."
                ),
            );
            e.status = StatusCode::CONFLICT;
            return Err(e);
        }
        None => {}
    }
    Ok(Json(state.store.response(&id)?.filter(|r| r.store).ok_or_else(|| not_found(&id))?))
}
