//! Reading what a call used from the provider's own answer: OpenAI chat completions
//! (`usage.prompt_tokens`/`completion_tokens`), the Responses API
//! (`usage.input_tokens`/`output_tokens`, on `response.*` events when streamed) and
//! Anthropic Messages (`usage` on the message, `message_start` and `message_delta`).

use bytes::{Bytes, BytesMut};
use serde_json::Value;

/// Tokens a call used, as the provider reported them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    /// Whether any usage was reported at all.
    pub seen: bool,
}

impl Usage {
    /// Takes the usage objects of `v` into account. Streams report in several events
    /// (Anthropic: input on `message_start`, the running output total on
    /// `message_delta`): the largest figure of each side wins.
    pub fn observe(&mut self, v: &Value) {
        for u in [&v["usage"], &v["response"]["usage"], &v["message"]["usage"]] {
            if !u.is_object() {
                continue;
            }
            let n = |k: &str| u[k].as_u64().unwrap_or(0);
            let input = n("prompt_tokens")
                + n("input_tokens")
                + n("cache_creation_input_tokens")
                + n("cache_read_input_tokens");
            let output = n("completion_tokens") + n("output_tokens");
            self.input = self.input.max(input);
            self.output = self.output.max(output);
            self.seen = true;
        }
    }
}

/// One Server-Sent Event as it arrived: its exact bytes (blank line included), to be
/// forwarded unchanged, and its `data` lines joined.
#[derive(Debug)]
pub struct Event {
    pub raw: Bytes,
    pub data: String,
}

/// Splits a byte stream into Server-Sent Events (`\n\n`, `\r\n\r\n` or `\r\r` ends one).
#[derive(Default)]
pub struct SseFramer {
    buf: BytesMut,
}

impl SseFramer {
    /// Adds bytes that arrived.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Option<Event> {
        let end = event_end(&self.buf)?;
        let raw = self.buf.split_to(end).freeze();
        let text = String::from_utf8_lossy(&raw);
        let mut data = String::new();
        for line in text.split(['\n', '\r']) {
            if let Some(rest) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
            }
        }
        Some(Event { raw, data })
    }

    /// What is left when the stream ended (an unterminated last event).
    pub fn rest(&mut self) -> Bytes {
        self.buf.split().freeze()
    }
}

/// The length of the first complete event in `b` (through its blank line).
fn event_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\n' if b.get(i + 1) == Some(&b'\n') => return Some(i + 2),
            b'\r' if b.get(i + 1) == Some(&b'\n') && b.get(i + 2) == Some(&b'\r') && b.get(i + 3) == Some(&b'\n') => {
                return Some(i + 4)
            }
            b'\r' if b.get(i + 1) == Some(&b'\r') => return Some(i + 2),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Whether an event's data may carry usage: parsing every token's JSON is avoided.
pub fn may_carry_usage(data: &str) -> bool {
    data.contains("\"usage\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_of_each_provider_shape() {
        let mut u = Usage::default();
        u.observe(&json!({"usage": {"prompt_tokens": 12, "completion_tokens": 5}}));
        assert_eq!(u, Usage { input: 12, output: 5, seen: true });
        let mut u = Usage::default();
        u.observe(
            &json!({"type": "response.completed", "response": {"usage": {"input_tokens": 7, "output_tokens": 3}}}),
        );
        assert_eq!((u.input, u.output), (7, 3));
        let mut u = Usage::default();
        u.observe(&json!({"type": "message_start", "message": {"usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1}}}));
        u.observe(&json!({"type": "message_delta", "usage": {"output_tokens": 42}}));
        assert_eq!((u.input, u.output), (25, 42));
        let mut none = Usage::default();
        none.observe(&json!({"choices": [], "usage": null}));
        assert!(!none.seen);
    }

    #[test]
    fn events_split_however_the_bytes_arrive() {
        let stream = b"event: a\ndata: {\"x\":1}\n\ndata: one\ndata: two\r\n\r\n: comment\n\ndata: tail";
        for cut in 1..stream.len() {
            let mut f = SseFramer::default();
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                f.push(part);
                while let Some(e) = f.next_event() {
                    got.push(e);
                }
            }
            let data: Vec<_> = got.iter().map(|e| e.data.as_str()).collect();
            assert_eq!(data, ["{\"x\":1}", "one\ntwo", ""], "cut at {cut}");
            let raw: Vec<u8> = got.iter().flat_map(|e| e.raw.to_vec()).chain(f.rest().to_vec()).collect();
            assert_eq!(raw, stream, "bytes are forwarded unchanged");
        }
    }
}
