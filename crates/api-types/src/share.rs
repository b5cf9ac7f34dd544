//! Share links and holds.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/instances/{id}/share` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShare {
    /// The port to share (default: the instance's default port).
    #[serde(default)]
    pub port: Option<i64>,
    /// Seconds the link works, 1 to 2592000 (default 3600).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}

/// A share link. `url` (which carries the secret token) is only in the answer to its creation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Share {
    /// `shr_` + 16 chars.
    pub id: String,
    /// Always `share`.
    pub object: String,
    pub instance: String,
    pub port: u16,
    /// Open it in a browser: the first visit sets a cookie for this host and redirects to the clean URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Answer of `DELETE /v1/instances/{id}/shares/{share_id}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ShareRevoked {
    pub id: String,
    /// Always `share`.
    pub object: String,
    /// Always true.
    pub revoked: bool,
}

/// `POST /v1/instances/{id}/hold` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    /// Keep the instance awake this many seconds from now (0 releases the hold; at most 2592000).
    #[serde(default)]
    pub ttl_secs: Option<i64>,
}
