//! Reading Server-Sent Events (exec with `stream: true`, `logs --follow`) from an
//! open response, one event at a time, as the bytes arrive.

use crate::client::{Client, ClientError};
use reqwest::Response;
use std::collections::VecDeque;

/// One event: its `event:` name (`message` when it has none) and its `data:` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// The SSE decoder, yielding [`SseEvent`]s: keep-alives and comments are skipped.
#[derive(Debug, Default)]
pub struct SseParser {
    decoder: berth_sse::Decoder,
}

impl SseParser {
    /// Add bytes; answer the events they completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.decoder
            .feed(chunk)
            .into_iter()
            .filter(|e| e.has_data)
            .map(|e| SseEvent { event: e.kind().to_string(), data: e.data })
            .collect()
    }
}

/// The events of one streamed response.
pub struct SseStream<'a> {
    client: &'a Client,
    resp: Response,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
}

impl<'a> SseStream<'a> {
    /// Read `resp` (already checked for success) as an event stream.
    pub fn new(client: &'a Client, resp: Response) -> Self {
        Self { client, resp, parser: SseParser::default(), ready: VecDeque::new() }
    }

    /// The next event, or `None` once the server has closed the stream.
    pub async fn next(&mut self) -> Result<Option<SseEvent>, ClientError> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(Some(ev));
            }
            match self.resp.chunk().await.map_err(|e| self.client.transport(&e))? {
                Some(chunk) => self.ready.extend(self.parser.feed(&chunk)),
                None => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), data: data.into() }
    }

    #[test]
    fn events_split_across_chunks_are_reassembled() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: std").is_empty());
        assert!(p.feed(b"out\ndata: {\"data\":").is_empty());
        assert_eq!(
            p.feed(b"\"hi\"}\n\nevent: exit\r\ndata: {}\r\n\r\n"),
            [ev("stdout", "{\"data\":\"hi\"}"), ev("exit", "{}")]
        );
    }

    #[test]
    fn comments_and_keep_alives_are_skipped_and_data_lines_join() {
        let mut p = SseParser::default();
        let out = p.feed(b":\n\n: keep-alive\n\ndata:a\ndata: b\nid: 7\n\n");
        assert_eq!(out, [ev("message", "a\nb")]);
    }
}
