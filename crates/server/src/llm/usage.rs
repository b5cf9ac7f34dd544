//! Reading what a call used from the provider's own answer: OpenAI chat completions
//! (`usage.prompt_tokens`/`completion_tokens`), the Responses API
//! (`usage.input_tokens`/`output_tokens`, on `response.*` events when streamed) and
//! Anthropic Messages (`usage` on the message, `message_start` and `message_delta`).
//! Streams are framed by `berth_sse`.

use serde::Deserialize;
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
        // The Responses API's usage (on `response.*` events), read with its wire type.
        if v["response"]["usage"].is_object() {
            if let Ok(u) = berth_responses::Usage::deserialize(&v["response"]["usage"]) {
                self.input = self.input.max(u.input_tokens);
                self.output = self.output.max(u.output_tokens);
                self.seen = true;
            }
        }
        for u in [&v["usage"], &v["message"]["usage"]] {
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
}
