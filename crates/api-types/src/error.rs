//! The hosting API's error envelope.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"error": {...}}`, the body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of the error envelope.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code (`invalid_request`, `instance_not_found`, ...).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured context: `field` for invalid requests, `current_status` for state conflicts.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub details: serde_json::Map<String, serde_json::Value>,
}
