//! The `response` object returned by `POST /v1/responses` and `GET /v1/responses/{id}`.

use super::items::{ContentPart, Item};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A Responses API `response`, plus berth's `session_id`. Every field the Open
/// Responses specification requires is present (null where it allows); the ones the
/// agent does not act on echo the request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    /// When the turn ended; null while it runs.
    #[serde(default)]
    pub completed_at: Option<u64>,
    pub status: Status,
    pub model: String,
    pub output: Vec<Item>,
    pub usage: Option<Usage>,
    pub error: Option<ResponseError>,
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub metadata: Map<String, Value>,
    pub previous_response_id: Option<String>,
    pub parallel_tool_calls: bool,
    /// Whether the turn runs on its own (`background: true`), not tied to its request.
    #[serde(default)]
    pub background: bool,
    /// `auto`, `none`, `required` or `{"type": "function", "name": ...}`, as requested.
    pub tool_choice: Value,
    pub tools: Vec<Value>,
    /// `auto` or `disabled`: whether what does not fit the model's window is dropped.
    #[serde(default = "disabled")]
    pub truncation: String,
    /// As the request set it; 1 (the providers' default) when it did not.
    #[serde(serialize_with = "one_unless_set")]
    pub temperature: Option<f64>,
    #[serde(serialize_with = "one_unless_set")]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub presence_penalty: f64,
    #[serde(default)]
    pub frequency_penalty: f64,
    /// Echoed; the agent returns no log probabilities.
    #[serde(default)]
    pub top_logprobs: u32,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    #[serde(default = "text_format")]
    pub text: Value,
    /// Echoed (`{"effort", "summary"}`) or null.
    #[serde(default)]
    pub reasoning: Option<Value>,
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub max_tool_calls: Option<u32>,
    /// Always true: every response is stored in the instance.
    #[serde(default = "yes")]
    pub store: bool,
    #[serde(default = "default_tier")]
    pub service_tier: String,
    #[serde(default)]
    pub safety_identifier: Option<String>,
    #[serde(default)]
    pub prompt_cache_key: Option<String>,
    pub session_id: String,
    /// `{"id": ...}` of the conversation the turn continued, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<serde_json::Value>,
}

fn disabled() -> String {
    "disabled".into()
}

fn yes() -> bool {
    true
}

fn default_tier() -> String {
    "default".into()
}

/// `{"format": {"type": "text"}}`, the default text format.
pub fn text_format() -> Value {
    serde_json::json!({"format": {"type": "text"}})
}

fn one_unless_set<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(v.unwrap_or(1.0))
}

/// Lifecycle of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    InProgress,
    Completed,
    Failed,
    Incomplete,
    Cancelled,
}

/// Token counts summed over every model call of the turn (fields a provider leaves
/// out read as 0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    pub input_tokens_details: CachedTokens,
    pub output_tokens_details: ReasoningTokens,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CachedTokens {
    pub cached_tokens: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReasoningTokens {
    pub reasoning_tokens: u64,
}

/// Why a response failed; `code` is stable, `message` says what to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseError {
    pub code: String,
    pub message: String,
}

/// Why a response stopped early.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    pub reason: String,
}

impl Usage {
    /// Adds one model call's counts.
    pub fn add(&mut self, input: u64, output: u64) {
        self.input_tokens += input;
        self.output_tokens += output;
        self.total_tokens = self.input_tokens + self.output_tokens;
    }
}

impl Response {
    /// The text of every assistant message in `output`, joined (the SDKs' `output_text`).
    pub fn output_text(&self) -> String {
        self.output
            .iter()
            .filter_map(|i| match i {
                Item::Message(m) => Some(m),
                _ => None,
            })
            .flat_map(|m| &m.content)
            .filter_map(|p| match p {
                ContentPart::OutputText { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }
}
