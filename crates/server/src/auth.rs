//! API keys: generation, hashing, and the [`Auth`] extractor that every
//! authenticated route takes.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use berth_core::{ids::random_label, InstanceId, KeyId, WorkspaceId};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// The client's address, which the listener puts in every API request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The caller, as established from its key.
#[derive(Debug, Clone)]
pub struct Auth {
    pub workspace_id: WorkspaceId,
    pub key_id: KeyId,
    pub admin: bool,
    /// The one instance an instance key is for (such a request got past [`scope_allows`]).
    pub instance: Option<InstanceId>,
    /// Cancelled when the key is revoked or expires: long streams opened with it end.
    pub revoked: tokio_util::sync::CancellationToken,
}

impl Auth {
    /// Actor string for the audit trail.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }

    /// Refuses non-admin keys.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this action needs an admin key".into()))
        }
    }
}

/// A new secret: `sk_` + 40 chars of `[a-z0-9]`.
pub fn generate_secret() -> String {
    format!("sk_{}", random_label(40))
}

/// What is stored instead of the secret.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(secret_digest(secret))
}

/// SHA-256 of a secret (the stored hash is its hex form).
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The displayable start of a secret.
pub fn secret_prefix(secret: &str) -> String {
    secret.chars().take(10).collect()
}

/// The key carried by `Authorization: Bearer ...` or `X-API-Key`.
pub fn presented_key(parts: &Parts) -> Option<String> {
    if let Some(v) = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(token) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            return Some(token.trim().to_string());
        }
    }
    parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_string())
}

/// What an instance key may do on the hosting API: read its instance and its health.
pub fn scope_allows(instance: &InstanceId, method: &axum::http::Method, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/v1/instances/").and_then(|r| r.strip_prefix(instance.as_str())) else {
        return false;
    };
    method == axum::http::Method::GET && matches!(rest, "" | "/health")
}

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let secret = presented_key(parts).filter(|s| !s.is_empty()).ok_or(ApiError::Unauthorized)?;
        let client = parts.extensions.get::<ClientAddr>().map(|c| c.0);
        if let Some(ip) = client {
            state.quotas.may_authenticate(ip)?;
        }
        let Some(key) = state.keys.verify(&secret).await? else {
            if let Some(ip) = client {
                state.quotas.auth_failed(ip);
            }
            return Err(ApiError::Unauthorized);
        };
        let k = &key.record;
        if let Some(instance) = &k.instance_id {
            if !scope_allows(instance, &parts.method, parts.uri.path()) {
                return Err(ApiError::Forbidden(format!(
                    "this key is an instance key for `{instance}`: it reaches that instance's URLs and reads \
                     `GET /v1/instances/{instance}` (and its health), nothing else"
                )));
            }
        }
        state.quotas.spend(&k.id)?;
        // The runtime calls this request makes queue in its workspace's lane.
        berth_runtime::fair::set_tenant(k.workspace_id.as_str());
        Ok(Auth {
            workspace_id: k.workspace_id.clone(),
            key_id: k.id.clone(),
            admin: k.admin,
            instance: k.instance_id.clone(),
            revoked: key.revoked.clone(),
        })
    }
}
