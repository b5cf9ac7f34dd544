//! Server-Sent Events framing, shared by berth-agent (provider streams), the server's
//! managed LLM proxy (which re-emits what it reads), the CLI and the tests.
//!
//! [`Decoder`] is fed bytes in chunks of any size and yields each event once its blank
//! line has arrived: its `event:` name, its `data:` lines joined by `\n`, its `id:`, and
//! the exact bytes it came in (a proxy forwards those unchanged). Lines end in `\n`,
//! `\r\n` or `\r`. A frame with neither data nor an event name (a comment, a keep-alive)
//! is still yielded, so a proxy can forward it; [`Event::is_empty`] tells readers to skip
//! it. [`encode`] writes one event.

use bytes::{Bytes, BytesMut};

/// One event as it arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field; empty when it had none (the default type, `message`).
    pub event: String,
    /// The `data:` lines, joined by `\n`.
    pub data: String,
    /// The `id:` field, when present.
    pub id: Option<String>,
    /// Whether any `data:` line was present (`data` may be empty even so).
    pub has_data: bool,
    /// The bytes of the event, its blank line included.
    pub raw: Bytes,
}

impl Event {
    /// Neither data nor an event name: a comment or a keep-alive, no event for a reader.
    pub fn is_empty(&self) -> bool {
        !self.has_data && self.event.is_empty()
    }

    /// The event's type: its name, or `message` when it has none.
    pub fn kind(&self) -> &str {
        if self.event.is_empty() {
            "message"
        } else {
            &self.event
        }
    }
}

/// The longest event kept by default: a stream that sends more without a blank line
/// has the excess dropped rather than filling memory.
pub const DEFAULT_MAX_EVENT: usize = 16 << 20;

/// An incremental decoder.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    max_event: usize,
    /// Bytes of `buf` already searched for an event's end.
    scanned: usize,
    dropped: bool,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::with_max_event(DEFAULT_MAX_EVENT)
    }
}

impl Decoder {
    /// A decoder keeping events of up to `max_event` bytes.
    pub fn with_max_event(max_event: usize) -> Self {
        Decoder { buf: BytesMut::new(), max_event, scanned: 0, dropped: false }
    }

    /// Adds bytes that arrived.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        if self.buf.len() > self.max_event && event_end(&self.buf, 0).is_none() {
            // An event longer than allowed: dropped, up to its last line break so
            // the lines after it still parse.
            let keep_from = self.buf.iter().rposition(|&b| b == b'\n' || b == b'\r').map_or(self.buf.len(), |i| i + 1);
            let _ = self.buf.split_to(keep_from);
            self.scanned = 0;
            self.dropped = true;
        }
    }

    /// Whether an over-long event was dropped.
    pub fn dropped(&self) -> bool {
        self.dropped
    }

    /// The next complete event, if one has arrived.
    pub fn next_event(&mut self) -> Option<Event> {
        let start = self.scanned.saturating_sub(3);
        let Some(end) = event_end(&self.buf, start) else {
            self.scanned = self.buf.len();
            return None;
        };
        self.scanned = 0;
        let raw = self.buf.split_to(end).freeze();
        Some(parse(raw))
    }

    /// Adds `chunk` and answers every event it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.push(chunk);
        std::iter::from_fn(|| self.next_event()).collect()
    }

    /// The stream ended: an unterminated last event still counts (when it has fields).
    pub fn finish(&mut self) -> Option<Event> {
        if self.buf.is_empty() {
            return None;
        }
        let raw = self.buf.split().freeze();
        self.scanned = 0;
        let ev = parse(raw);
        (!ev.is_empty()).then_some(ev)
    }

    /// The bytes not yet part of a complete event (what a proxy forwards at the end).
    pub fn take_rest(&mut self) -> Bytes {
        self.scanned = 0;
        self.buf.split().freeze()
    }
}

/// The length of the first complete event of `b` (through its blank line), searching
/// from `from`.
fn event_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\n' => match b.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if b.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                Some(b'\r') if b.get(i + 2).is_some() => return Some(i + 2),
                _ => {}
            },
            b'\r' => match (b.get(i + 1), b.get(i + 2), b.get(i + 3)) {
                (Some(b'\n'), Some(b'\r'), Some(b'\n')) => return Some(i + 4),
                (Some(b'\n'), Some(b'\n'), _) => return Some(i + 3),
                (Some(b'\r'), _, _) => return Some(i + 2),
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    None
}

fn parse(raw: Bytes) -> Event {
    let text = String::from_utf8_lossy(&raw).into_owned();
    let mut ev = Event { raw, ..Event::default() };
    for line in text.split(['\n', '\r']) {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "data" => {
                if ev.has_data {
                    ev.data.push('\n');
                }
                ev.data.push_str(value);
                ev.has_data = true;
            }
            "event" => ev.event = value.to_string(),
            "id" => ev.id = Some(value.to_string()),
            _ => {}
        }
    }
    ev
}

/// One event as text: `event:` when named, one `data:` line per line of `data`, and
/// the blank line.
pub fn encode(event: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 16);
    if let Some(e) = event {
        out.push_str("event: ");
        out.push_str(e);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line.strip_suffix('\r').unwrap_or(line));
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_of(events: &[Event]) -> Vec<&str> {
        events.iter().filter(|e| !e.is_empty()).map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn events_split_however_the_bytes_arrive_and_bytes_are_kept() {
        let stream =
            b"event: a\ndata: {\"x\":1}\n\ndata: one\ndata: two\r\n\r\n: comment\n\nid: 7\ndata: tail\r\rdata: end";
        for cut in 0..stream.len() {
            let mut d = Decoder::default();
            let mut got = d.feed(&stream[..cut]);
            got.extend(d.feed(&stream[cut..]));
            assert_eq!(data_of(&got), ["{\"x\":1}", "one\ntwo", "tail"], "cut at {cut}");
            assert_eq!(got[0].kind(), "a");
            assert_eq!(got[1].kind(), "message");
            assert!(got[2].is_empty(), "the comment frame is yielded, and empty");
            assert_eq!(got[3].id.as_deref(), Some("7"));
            let mut raw: Vec<u8> = got.iter().flat_map(|e| e.raw.to_vec()).collect();
            let last = d.finish().expect("the unterminated last event counts");
            assert_eq!(last.data, "end");
            raw.extend_from_slice(&last.raw);
            assert_eq!(raw, stream, "the bytes are forwarded unchanged");
        }
    }

    #[test]
    fn an_event_that_never_ends_does_not_grow_without_bound() {
        let mut d = Decoder::with_max_event(1 << 16);
        let chunk = vec![b'x'; 1 << 12];
        for _ in 0..100 {
            d.push(&chunk);
        }
        assert!(d.buf.len() <= 1 << 16);
        let got = d.feed(b"\ndata: ok\n\n");
        assert_eq!(data_of(&got).last(), Some(&"ok"), "the stream goes on after the long line");
        assert!(d.dropped());
    }

    #[test]
    fn encoding_round_trips() {
        let text = encode(Some("delta"), "line one\nline two");
        assert_eq!(text, "event: delta\ndata: line one\ndata: line two\n\n");
        let got = Decoder::default().feed(text.as_bytes());
        assert_eq!((got[0].event.as_str(), got[0].data.as_str()), ("delta", "line one\nline two"));
        assert_eq!(encode(None, ""), "data: \n\n");
        assert!(Decoder::default().feed(b"data: \n\n")[0].has_data);
    }
}
