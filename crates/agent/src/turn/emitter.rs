//! Numbers a turn's stream events and records them in its [`LiveTurn`], from which
//! every SSE answer about the turn reads.

use crate::api::events::Event;
use crate::live::{Frame, LiveTurn};
use std::sync::Arc;

/// The turn was stopped; stop working for it.
#[derive(Debug)]
pub struct Cancelled;

/// Where a turn's events go: its live log, or nowhere for a turn answered inline.
pub struct Emitter {
    seq: u64,
    live: Option<Arc<LiveTurn>>,
    persist: Option<Persist>,
}

/// Writes a turn's events to the store, so they can be replayed after a restart of
/// the agent: at each event that is not a delta, and at least every
/// [`FLUSH_EVERY`] in between.
struct Persist {
    store: crate::store::Store,
    response_id: String,
    pending: Vec<(u64, &'static str, String)>,
    flushed_at: std::time::Instant,
}

const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

impl Persist {
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let events: Vec<(u64, &str, &str)> = self.pending.iter().map(|(s, e, d)| (*s, *e, d.as_str())).collect();
        if let Err(e) = self.store.append_events(&self.response_id, &events) {
            tracing::warn!(response = %self.response_id, "cannot keep stream events: {e}");
        }
        self.pending.clear();
        self.flushed_at = std::time::Instant::now();
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        // A turn aborted mid-way still keeps what it had streamed.
        if let Some(p) = &mut self.persist {
            p.flush();
        }
    }
}

impl Emitter {
    /// Events are recorded in `live` (streamed and background turns).
    pub fn live(live: Arc<LiveTurn>) -> Self {
        Emitter { seq: 0, live: Some(live), persist: None }
    }

    /// Events are dropped (a turn answered inline as one JSON body).
    pub fn silent() -> Self {
        Emitter { seq: 0, live: None, persist: None }
    }

    /// Records one event with the next `sequence_number`.
    pub async fn emit(&mut self, ev: Event) -> Result<(), Cancelled> {
        let Some(live) = &self.live else {
            return Ok(());
        };
        let event = ev.kind;
        let data = ev.into_json(self.seq).to_string();
        if let Some(p) = &mut self.persist {
            p.pending.push((self.seq, event, data.clone()));
            if !event.ends_with(".delta") || p.flushed_at.elapsed() >= FLUSH_EVERY {
                p.flush();
            }
        }
        live.push(Frame { seq: self.seq, event, data });
        self.seq += 1;
        Ok(())
    }

    /// Keeps the events in `store` too (a live emitter's), under `response_id`.
    pub fn keep_in(&mut self, store: &crate::store::Store, response_id: &str) {
        if self.live.is_some() {
            self.persist = Some(Persist {
                store: store.clone(),
                response_id: response_id.to_string(),
                pending: Vec::new(),
                flushed_at: std::time::Instant::now(),
            });
        }
    }
}
