//! Identifiers, timestamps and text cuts shared by the API objects.

use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh random id with an OpenAI-style prefix (`resp`, `msg`, `fc`, `sess`, ...).
pub fn new_id(prefix: &str) -> String {
    let bits: u128 = rand::random();
    // 24 hex digits (96 bits) is plenty for ids that live on one instance.
    format!("{prefix}_{:024x}", bits >> 32)
}

/// Seconds since the Unix epoch, as the Responses API reports `created_at`.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Shortens `s` to at most `max` bytes (at a character boundary) and appends `mark`
/// when it was longer; answers whether it was cut.
pub(crate) fn cut(s: &mut String, max: usize, mark: &str) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(mark);
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_carry_prefix_and_differ() {
        let a = super::new_id("resp");
        let b = super::new_id("resp");
        assert!(a.starts_with("resp_") && a.len() == 29);
        assert_ne!(a, b);
    }
}
