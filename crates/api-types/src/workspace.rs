//! Workspaces (tenants) and their API keys.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A tenant: every instance and key belongs to exactly one workspace.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Workspace {
    pub id: String,
    /// Always `workspace`.
    pub object: String,
    pub name: String,
    /// Most instances (not counting deleted ones) this workspace may hold.
    pub instance_limit: u32,
    pub created_at: i64,
    /// The workspace's first key, present only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `POST /v1/workspaces` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspace {
    /// Display name, 1–100 chars.
    pub name: String,
    /// Most instances the workspace may hold (default: the server's `--instance-limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_limit: Option<u32>,
}

/// An API key as listed: never the secret, only its prefix.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    /// Always `api_key`.
    pub object: String,
    pub name: String,
    pub workspace_id: String,
    /// First characters of the secret, to recognise it.
    pub prefix: String,
    /// Admin keys manage workspaces.
    pub admin: bool,
    pub created_at: i64,
    /// When the key stops working (unix seconds), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// An instance key's instance: the key works only at its URLs and for reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The full secret, present only in the answer to its creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// `POST /v1/keys` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Display name, up to 100 chars.
    #[serde(default)]
    pub name: Option<String>,
    /// An admin key (manages workspaces and admin keys); only an admin key may create one.
    #[serde(default)]
    pub admin: Option<bool>,
    /// The key stops working this many seconds from now (1 to 315360000); default never.
    #[serde(default)]
    pub expires_in_secs: Option<i64>,
    /// Makes an instance key: it works only at this instance's URLs (the edge) and for
    /// `GET /v1/instances/{id}` (and its health); anything else with it is `403`. What a
    /// product hands its end user's browser or app. Not with `admin`.
    #[serde(default)]
    pub instance: Option<String>,
}
