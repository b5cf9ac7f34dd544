//! Conversation items: what a session's history, a request's `input` and a
//! response's `output` are made of (the Responses API item shapes).

use serde::{Deserialize, Serialize};

/// One item of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Item {
    /// A message from the user, the system/developer, or the assistant.
    Message(MessageItem),
    /// The model asked to run a tool.
    FunctionCall(FunctionCallItem),
    /// What a tool returned.
    FunctionCallOutput(FunctionCallOutputItem),
    /// The model's reasoning, where the provider exposes it.
    Reasoning(ReasoningItem),
    /// A summary standing for the older part of a conversation (compaction).
    Compaction(CompactionItem),
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Assistant,
    System,
    Developer,
}

/// A `message` item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageItem {
    pub id: String,
    pub role: Role,
    pub content: Vec<ContentPart>,
    #[serde(default = "completed")]
    pub status: String,
}

/// One part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    InputText {
        text: String,
    },
    OutputText {
        text: String,
        #[serde(default)]
        annotations: Vec<serde_json::Value>,
        /// Always empty: the agent returns no log probabilities.
        #[serde(default)]
        logprobs: Vec<serde_json::Value>,
    },
    /// An image: an `https:` URL or a `data:` URL with the bytes in base64.
    InputImage {
        image_url: Option<String>,
        #[serde(default = "auto")]
        detail: String,
    },
}

/// A `function_call` item: the model's request to run one tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallItem {
    pub id: String,
    pub call_id: String,
    pub name: String,
    pub arguments: String,
    #[serde(default = "completed")]
    pub status: String,
}

/// A `function_call_output` item: a tool's result, fed back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallOutputItem {
    pub id: String,
    pub call_id: String,
    pub output: String,
    #[serde(default = "completed")]
    pub status: String,
}

/// A `reasoning` item; `content` holds raw reasoning text, `summary` a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasoningItem {
    pub id: String,
    #[serde(default)]
    pub summary: Vec<ReasoningText>,
    #[serde(default)]
    pub content: Vec<ReasoningText>,
}

/// A `compaction` item: the model's summary of the turns before it, which the
/// model is sent instead of them (they stay in the session's stored history).
/// OpenAI's field name is kept for SDK compatibility; berth's content is the
/// summary's plain text, not encrypted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionItem {
    pub id: String,
    pub encrypted_content: String,
}

/// `{"type":"reasoning_text"|"summary_text","text":...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasoningText {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

fn auto() -> String {
    "auto".into()
}

fn completed() -> String {
    "completed".into()
}

impl ContentPart {
    /// An `output_text` part holding `text`.
    pub fn output_text(text: String) -> Self {
        ContentPart::OutputText { text, annotations: Vec::new(), logprobs: Vec::new() }
    }

    /// The text of the part, whatever its kind.
    pub fn text(&self) -> &str {
        match self {
            ContentPart::InputText { text } | ContentPart::OutputText { text, .. } => text,
            ContentPart::InputImage { .. } => "",
        }
    }
}

impl MessageItem {
    /// All text parts joined, as providers that take a plain string want it.
    pub fn text(&self) -> String {
        self.content.iter().map(ContentPart::text).collect()
    }

    /// A finished assistant message holding `text`.
    pub fn assistant(id: String, text: String) -> Self {
        MessageItem { id, role: Role::Assistant, content: vec![ContentPart::output_text(text)], status: completed() }
    }
}

impl ReasoningItem {
    /// All reasoning text joined.
    pub fn text(&self) -> String {
        self.content.iter().chain(&self.summary).map(|t| t.text.as_str()).collect()
    }
}
