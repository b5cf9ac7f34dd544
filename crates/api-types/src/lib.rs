//! Wire types of berth's hosting API (SPEC §3). Serde shapes and OpenAPI schemas
//! only: no I/O, no validation logic beyond what serde itself enforces.

pub mod error;
pub mod instance;
pub mod operate;
pub mod share;
pub mod workspace;

pub use error::{ErrorBody, ErrorDetail};
pub use instance::*;
pub use operate::*;
pub use share::*;
pub use workspace::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A page of a list: `{"object":"list","data":[...],"has_more","next_cursor"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct List<T> {
    /// Always `list`.
    pub object: String,
    /// The items of this page, newest first.
    pub data: Vec<T>,
    /// Whether another page follows.
    pub has_more: bool,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> List<T> {
    /// A page of items.
    pub fn new(data: Vec<T>, next_cursor: Option<String>) -> Self {
        Self { object: "list".into(), has_more: next_cursor.is_some(), data, next_cursor }
    }
}

/// `GET /healthz` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Healthz {
    /// `ok` when the database and runtime answer.
    pub status: String,
}
