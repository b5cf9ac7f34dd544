//! Numbers stream events and hands them to the SSE response; a closed channel
//! means the client went away, which cancels the turn.

use crate::api::events::Event;
use tokio::sync::mpsc;

/// One SSE frame ready to send.
#[derive(Debug)]
pub struct Frame {
    pub event: &'static str,
    pub data: String,
}

/// The client is gone; stop working for it.
#[derive(Debug)]
pub struct Cancelled;

/// Where a turn's events go: an SSE stream, or nowhere for a non-streamed turn.
pub struct Emitter {
    seq: u64,
    tx: Option<mpsc::Sender<Frame>>,
}

impl Emitter {
    /// Events go to `tx`; the bounded channel passes the client's pace back to the provider.
    pub fn streaming(tx: mpsc::Sender<Frame>) -> Self {
        Emitter { seq: 0, tx: Some(tx) }
    }

    /// Events are dropped (a non-streamed request).
    pub fn silent() -> Self {
        Emitter { seq: 0, tx: None }
    }

    /// Sends one event with the next `sequence_number`.
    pub async fn emit(&mut self, ev: Event) -> Result<(), Cancelled> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let event = ev.kind;
        let data = ev.into_json(self.seq).to_string();
        self.seq += 1;
        tx.send(Frame { event, data }).await.map_err(|_| Cancelled)
    }
}
