//! A small incremental Server-Sent Events parser for provider streams.

/// One dispatched event: its `event:` name (may be empty) and joined `data:` lines.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Longest line and longest event kept: a provider that streams more without a
/// line break (or a blank line) has its excess dropped instead of filling memory.
const MAX_LINE: usize = 8 << 20;
const MAX_EVENT: usize = 16 << 20;

/// Feeds on byte chunks as they arrive; yields events at each blank line.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    pending: SseEvent,
    has_data: bool,
}

impl SseParser {
    /// Parses `chunk`, pushing every completed event onto `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            self.line(line.strip_suffix('\r').unwrap_or(&line), out);
            start = end + 1;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            self.buf.truncate(MAX_LINE);
        }
    }

    /// The stream ended: a last line without newline still counts.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.buf.is_empty() {
            let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            self.line(&line, out);
        }
        self.line("", out);
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data || !self.pending.event.is_empty() {
                out.push(std::mem::take(&mut self.pending));
            }
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" if self.pending.data.len() + value.len() > MAX_EVENT => {}
            "data" => {
                if self.has_data {
                    self.pending.data.push('\n');
                }
                self.pending.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.pending.event = value.to_string(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_line_without_end_does_not_grow_without_bound() {
        let mut p = super::SseParser::default();
        let mut out = Vec::new();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..20 {
            p.feed(&chunk, &mut out);
        }
        assert!(p.buf.len() <= super::MAX_LINE);
        p.feed(b"\ndata: ok\n\n", &mut out);
        assert_eq!(out.last().map(|e| e.data.as_str()), Some("ok"), "the stream goes on after the long line");
    }

    use super::*;

    #[test]
    fn events_split_across_chunks_and_crlf() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.feed(b"event: a\r\ndata: {\"x\"", &mut out);
        assert!(out.is_empty());
        p.feed(b":1}\r\n\r\n: comment\n\ndata: one\ndata: two\n\ndata: [DONE]", &mut out);
        p.finish(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].event, "a");
        assert_eq!(out[0].data, "{\"x\":1}");
        assert_eq!(out[1].data, "one\ntwo");
        assert_eq!(out[2].data, "[DONE]");
    }
}
