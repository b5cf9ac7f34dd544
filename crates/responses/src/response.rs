//! The `response` object returned by `POST /v1/responses` and `GET /v1/responses/{id}`.

use super::items::{ContentPart, Item};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A Responses API `response`, plus berth's `session_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub id: String,
    pub object: String,
    pub created_at: u64,
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
    pub tool_choice: String,
    pub tools: Vec<Value>,
    /// `auto` or `disabled`: whether what does not fit the model's window is dropped.
    #[serde(default = "disabled")]
    pub truncation: String,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u32>,
    pub session_id: String,
    /// `{"id": ...}` of the conversation the turn continued, when it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<serde_json::Value>,
}

fn disabled() -> String {
    "disabled".into()
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
