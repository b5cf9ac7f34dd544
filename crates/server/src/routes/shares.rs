//! Share links (`/v1/instances/{id}/share`, `/shares`) and holds (`/hold`).

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::ApiJson;
use crate::instances::{ops, present};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use berth_api_types::{CreateShare, ErrorBody, Hold, Instance, List, Share, ShareRevoked};
use berth_core::{now_secs, ShareId, Status};
use berth_store::{InstanceRecord, ShareRecord};

/// Shortest and longest share link lifetimes, and the default.
pub(crate) const TTL_MIN: i64 = 1;
pub(crate) const TTL_MAX: i64 = 30 * 24 * 3600;
const TTL_DEFAULT: i64 = 3600;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/instances/{id}/share", post(create_share))
        .route("/v1/instances/{id}/shares", get(list_shares))
        .route("/v1/instances/{id}/shares/{share_id}", delete(revoke_share))
        .route("/v1/instances/{id}/hold", post(hold))
}

fn view(state: &AppState, rec: &InstanceRecord, s: &ShareRecord, with_url: bool) -> Share {
    let url = with_url.then(|| {
        let base = present::ports(&state.settings, rec).into_iter().find(|p| p.port == s.port).map(|p| p.url);
        format!("{}/?{}={}", base.unwrap_or_default(), crate::edge::share::SHARE_PARAM, state.shares.token(s))
    });
    Share {
        id: s.id.to_string(),
        object: "share".into(),
        instance: s.instance_id.to_string(),
        port: s.port,
        url,
        created_at: s.created_at,
        expires_at: s.expires_at,
    }
}

/// Create a share link: a URL a browser can open, for one port, until it expires.
#[utoipa::path(post, path = "/v1/instances/{id}/share", tag = "shares", params(("id" = String, Path)),
    request_body = CreateShare,
    responses((status = 201, body = Share), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_share(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CreateShare>,
) -> ApiResult<(StatusCode, Json<Share>)> {
    let rec = ops::get(&state, &auth, &id).await?;
    if rec.status == Status::Deleted {
        return Err(ApiError::instance_not_found(&id));
    }
    let default = crate::templates::spec_of(&rec).default_port();
    let port = match (body.port, default) {
        (None, Some(port)) => port,
        (None, None) => {
            return Err(ApiError::NotFound {
                code: "port_not_found",
                message: "this instance has no default port (a private sandbox); name an exposed `port`".into(),
            })
        }
        (Some(p), _) => {
            let routed =
                u16::try_from(p).ok().filter(|p| Some(*p) == default || rec.exposed.iter().any(|e| e.port == *p));
            routed.ok_or_else(|| {
                let mut ports: Vec<String> = default.iter().map(u16::to_string).collect();
                ports.extend(rec.exposed.iter().map(|e| e.port.to_string()));
                ApiError::NotFound {
                    code: "port_not_found",
                    message: format!(
                        "port {p} is not routed for this instance (its ports: {}); expose it first",
                        ports.join(", ")
                    ),
                }
            })?
        }
    };
    let ttl = body.ttl_secs.unwrap_or(TTL_DEFAULT);
    if !(TTL_MIN..=TTL_MAX).contains(&ttl) {
        return Err(ApiError::invalid("ttl_secs", format!("`ttl_secs` must be between {TTL_MIN} and {TTL_MAX}")));
    }
    let now = now_secs();
    let share = ShareRecord {
        id: ShareId::generate(),
        instance_id: rec.id.clone(),
        workspace_id: rec.workspace_id.clone(),
        port,
        created_at: now,
        expires_at: now + ttl,
        revoked_at: None,
        created_by: auth.actor(),
    };
    state.store.create_share(&share).await?;
    state.shares.add(&share);
    Ok((StatusCode::CREATED, Json(view(&state, &rec, &share, true))))
}

/// The instance's share links that are neither revoked nor expired, newest first.
#[utoipa::path(get, path = "/v1/instances/{id}/shares", tag = "shares", params(("id" = String, Path)),
    responses((status = 200, body = List<Share>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_shares(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<List<Share>>> {
    let rec = ops::get(&state, &auth, &id).await?;
    let shares = state.store.active_shares(&rec.id, now_secs()).await?;
    Ok(Json(List::new(shares.iter().map(|s| view(&state, &rec, s, false)).collect(), None)))
}

/// Revoke a share link: at once, new requests with it get 401 and its open streams close.
#[utoipa::path(delete, path = "/v1/instances/{id}/shares/{share_id}", tag = "shares",
    params(("id" = String, Path), ("share_id" = String, Path)),
    responses((status = 200, body = ShareRevoked), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke_share(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, share_id)): Path<(String, String)>,
) -> ApiResult<Json<ShareRevoked>> {
    let rec = ops::get(&state, &auth, &id).await?;
    let not_found = || ApiError::NotFound {
        code: "share_not_found",
        message: format!("no active share `{share_id}` on instance `{id}`"),
    };
    let sid = ShareId::parse(&share_id).ok_or_else(not_found)?;
    if !state.store.revoke_share(&rec.id, &sid, now_secs()).await? {
        return Err(not_found());
    }
    state.shares.revoke(&sid);
    Ok(Json(ShareRevoked { id: share_id, object: "share".into(), revoked: true }))
}

/// Keep the instance awake (a `cold_start` instance is not stopped for idleness
/// meanwhile; one asleep is woken). `ttl_secs: 0` releases the hold.
#[utoipa::path(post, path = "/v1/instances/{id}/hold", tag = "instances", params(("id" = String, Path)),
    request_body = Hold,
    responses((status = 200, body = Instance), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn hold(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Hold>,
) -> ApiResult<Json<Instance>> {
    let ttl = body.ttl_secs.ok_or_else(|| ApiError::invalid("ttl_secs", "`ttl_secs` is required"))?;
    if !(0..=TTL_MAX).contains(&ttl) {
        return Err(ApiError::invalid("ttl_secs", format!("`ttl_secs` must be between 0 and {TTL_MAX}")));
    }
    let settings = state.settings.clone();
    let rec = ops::detached(ops::hold(state, auth.into(), id, ttl)).await?;
    Ok(Json(present::instance(&settings, &rec)))
}
