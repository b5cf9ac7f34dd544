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
}

impl Emitter {
    /// Events are recorded in `live` (streamed and background turns).
    pub fn live(live: Arc<LiveTurn>) -> Self {
        Emitter { seq: 0, live: Some(live) }
    }

    /// Events are dropped (a turn answered inline as one JSON body).
    pub fn silent() -> Self {
        Emitter { seq: 0, live: None }
    }

    /// Records one event with the next `sequence_number`.
    pub async fn emit(&mut self, ev: Event) -> Result<(), Cancelled> {
        let Some(live) = &self.live else {
            return Ok(());
        };
        let event = ev.kind;
        let data = ev.into_json(self.seq).to_string();
        live.push(Frame { seq: self.seq, event, data });
        self.seq += 1;
        Ok(())
    }
}
