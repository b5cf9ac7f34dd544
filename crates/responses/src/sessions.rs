//! Session objects of `GET /v1/sessions` and `GET /v1/sessions/{id}`.

use super::items::Item;
use serde::{Deserialize, Serialize};

/// A session as listed: no history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub object: String,
    pub created_at: u64,
    pub updated_at: u64,
    /// The start of the first user message.
    pub title: String,
    pub item_count: u64,
}

/// A session with its full history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub summary: SessionSummary,
    /// Every message, tool call and tool result, oldest first.
    pub items: Vec<HistoryItem>,
    /// Ids of the session's responses, oldest first.
    pub response_ids: Vec<String>,
}

/// One history item and the response that produced it (or took it as input).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryItem {
    pub response_id: String,
    #[serde(flatten)]
    pub item: Item,
}

/// `{"object":"list","data":[...],"first_id","last_id","has_more"}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionList {
    pub object: String,
    pub data: Vec<SessionSummary>,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
    pub has_more: bool,
}
