//! `POST /v1/responses` (plain JSON or Server-Sent Events) and `GET /v1/responses/{id}`.

use super::json_body;
use crate::api::{CreateResponse, Response};
use crate::error::ApiError;
use crate::state::AppState;
use crate::turn::{prepare, Emitter, Frame};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Instrument;

/// Events buffered between the turn and a slow client before the turn waits.
const STREAM_BUFFER: usize = 64;

/// How often an idle stream sends an SSE comment; a write to a vanished
/// client fails, which is how a disconnect during a long tool run is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(1);

pub fn router() -> Router<Arc<AppState>> {
    Router::new().route("/v1/responses", post(create)).route("/v1/responses/{id}", get(fetch))
}

async fn create(State(state): State<Arc<AppState>>, body: Bytes) -> Result<axum::response::Response, ApiError> {
    let req: CreateResponse = json_body(&body)?;
    let stream = req.stream.unwrap_or(false);
    let turn = prepare(&state, req)?;
    let span = turn.span();
    if !stream {
        // Runs inside the request: if the client disconnects, hyper drops
        // this future and the turn with it.
        return Ok(Json(turn.run(Emitter::silent()).instrument(span).await).into_response());
    }
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let task = tokio::spawn(turn.run(Emitter::streaming(tx)).instrument(span));
    let events = sse_events(rx, AbortOnDrop(task.abort_handle()));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// Aborts the turn's task when the response stream is dropped (client gone).
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn sse_events(rx: mpsc::Receiver<Frame>, guard: AbortOnDrop) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold((rx, guard), |(mut rx, guard)| async move {
        let frame = rx.recv().await?;
        let event = Event::default().event(frame.event).data(frame.data);
        Some((Ok(event), (rx, guard)))
    })
}

async fn fetch(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Response>, ApiError> {
    state
        .store
        .response(&id)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("response_not_found", format!("Response with id '{id}' not found.")))
}
