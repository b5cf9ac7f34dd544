//! Wire types of berth's hosting API (SPEC §3). Serde shapes and OpenAPI schemas
//! only: no I/O, no validation logic beyond what serde itself enforces.

pub mod billing;
pub mod error;
pub mod instance;
pub mod operate;
pub mod share;
pub mod template;
pub mod workspace;

pub use billing::*;
pub use error::{ErrorBody, ErrorDetail};
pub use instance::*;
pub use operate::*;
pub use share::*;
pub use template::*;
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

/// Deserializes a nested struct only from a JSON object (or null): serde's derive
/// would also take a list of field values (`[1, 2]`), which no client means.
pub(crate) fn object_or_null<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        v @ serde_json::Value::Object(_) => T::deserialize(v).map(Some).map_err(D::Error::custom),
        other => Err(D::Error::custom(format!("invalid type: {}, expected an object", kind(&other)))),
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}
