//! Text arriving in chunks: UTF-8 decoded across chunk boundaries, and sizes as
//! they are once JSON-encoded (what a client actually receives).

/// Decodes UTF-8 arriving in chunks. A character split across two chunks is kept
/// until its end arrives (not turned into two U+FFFD); invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// The text of `chunk`, plus what an earlier chunk left unfinished.
    pub fn push(&mut self, chunk: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(chunk);
        let mut out = String::with_capacity(buf.len());
        let mut rest: &[u8] = &buf;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    return out;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                    match e.error_len() {
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            rest = &after[bad..];
                        }
                        // An incomplete character at the end: wait for the rest of it.
                        None => {
                            self.pending = after.to_vec();
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// What is left when the input ends: a character that never finished.
    pub fn finish(&mut self) -> String {
        if std::mem::take(&mut self.pending).is_empty() {
            String::new()
        } else {
            "\u{FFFD}".to_string()
        }
    }
}

/// Bytes a character takes inside a JSON string.
fn json_char_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The longest prefix of `s` that takes at most `budget` bytes JSON-encoded, and
/// how many bytes it takes.
pub fn json_prefix(s: &str, budget: usize) -> (&str, usize) {
    let mut used = 0;
    for (i, c) in s.char_indices() {
        let n = json_char_len(c);
        if used + n > budget {
            return (&s[..i], used);
        }
        used += n;
    }
    (s, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_across_chunks_survives() {
        let text = "héllo → wörld";
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let mut d = Utf8Decoder::default();
            let mut out = d.push(&bytes[..cut]);
            out.push_str(&d.push(&bytes[cut..]));
            out.push_str(&d.finish());
            assert_eq!(out, text, "cut at {cut}");
        }
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut d = Utf8Decoder::default();
        assert_eq!(d.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(d.push(b"\xe2\x86"), "");
        assert_eq!(d.finish(), "\u{FFFD}", "an unfinished character at the end");
    }

    #[test]
    fn json_sizes_count_escapes() {
        assert_eq!(json_prefix("abc", 10), ("abc", 3));
        assert_eq!(json_prefix("a\0b", 7), ("a\0", 7), "NUL takes six bytes");
        assert_eq!(json_prefix("a\0b", 6), ("a", 1));
        assert_eq!(json_prefix("é\"", 3), ("é", 2));
        let s = "x\n\u{1}\"é";
        assert_eq!(json_prefix(s, usize::MAX).1, serde_json::to_string(s).unwrap().len() - 2);
    }
}
