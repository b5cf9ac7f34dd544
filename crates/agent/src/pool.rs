//! Waiting in berth's warm pool: an agent started with `BERTH_AGENT_POOL=1` runs in a
//! container made before anyone asked for it, without the instance's own environment
//! (the workspace's variables, its LLM credentials). It answers `/health` at once, so
//! the control plane sees it ready, and is configured later by one call:
//!
//! `POST /berth/claim` (bearer: the gateway token the container started with), body
//! `{"env": {NAME: VALUE}, "unset": [NAME]}`: the environment the instance's container
//! would have had, and what of the pool's to drop. The agent applies it to its own
//! process (its tools and driven agents inherit it), then builds its configuration,
//! opens its sessions and serves its API. A second claim of a claimed agent is
//! answered 200 and changes nothing; the control plane claims again after every start
//! of the container (a restarted process is back to waiting).

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;
use tower::ServiceExt;

/// The environment variable that starts the agent waiting for its claim.
pub const POOL_ENV: &str = "BERTH_AGENT_POOL";
/// Where the control plane claims a waiting agent.
pub const CLAIM_PATH: &str = "/berth/claim";

/// Whether this process was started for the warm pool.
pub fn waiting() -> bool {
    std::env::var(POOL_ENV).is_ok_and(|v| v.trim() == "1")
}

/// An agent waiting for its claim, then the agent it became.
struct Pool {
    listen: SocketAddr,
    data_dir: PathBuf,
    /// The gateway token the container started with: the claim's credential.
    token: Option<String>,
    started: Instant,
    /// The agent's own routes, once claimed.
    app: OnceLock<Router>,
    /// Told once claimed (the main program starts then).
    claimed: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// One claim at a time.
    claiming: tokio::sync::Mutex<()>,
}

/// The claim's body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Claim {
    env: BTreeMap<String, String>,
    #[serde(default)]
    unset: Vec<String>,
}

/// The routes of a waiting agent: `/health`, the claim, and once claimed everything
/// the agent serves.
pub fn router(listen: SocketAddr, data_dir: PathBuf, claimed: Option<tokio::sync::oneshot::Sender<()>>) -> Router {
    let pool = Arc::new(Pool {
        listen,
        data_dir,
        token: std::env::var("BERTH_GATEWAY_TOKEN").ok().filter(|t| !t.is_empty()),
        started: Instant::now(),
        app: OnceLock::new(),
        claimed: Mutex::new(claimed),
        claiming: Default::default(),
    });
    Router::new().fallback(dispatch).with_state(pool)
}

async fn dispatch(State(pool): State<Arc<Pool>>, req: Request) -> Response {
    let claim = req.method() == Method::POST && req.uri().path() == CLAIM_PATH;
    if !claim {
        if let Some(app) = pool.app.get() {
            return app.clone().oneshot(req).await.into_response();
        }
        if req.method() == Method::GET && req.uri().path() == "/health" {
            return Json(serde_json::json!({
                "status": "ok",
                "version": crate::VERSION,
                "uptime_secs": pool.started.elapsed().as_secs(),
                "turn_running": false,
                "turns_running": 0,
                "pool": "waiting",
            }))
            .into_response();
        }
        let mut e = ApiError::bad_request("not_claimed", "This instance is not ready yet; try again shortly.".into());
        e.status = StatusCode::SERVICE_UNAVAILABLE;
        return e.into_response();
    }
    let given = crate::routes::bearer(req.headers()).as_bytes();
    // Without a token to check it against, nobody may claim the agent.
    if !pool.token.as_deref().is_some_and(|t| crate::routes::same_secret(given, t.as_bytes())) {
        return ApiError::unauthorized().into_response();
    }
    let body = match axum::body::to_bytes(req.into_body(), 1024 * 1024).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::bad_request("invalid_body", format!("Could not read the claim: {e}.")).into_response()
        }
    };
    match claim_with(&pool, &body).await {
        Ok(()) => Json(serde_json::json!({"claimed": true})).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn claim_with(pool: &Pool, body: &Bytes) -> Result<(), ApiError> {
    let _one = pool.claiming.lock().await;
    if pool.app.get().is_some() {
        return Ok(());
    }
    let claim: Claim = crate::routes::json_body(body)?;
    let bad = |k: &String| k.is_empty() || k.contains(['=', '\0']);
    if let Some(k) = claim.env.keys().chain(&claim.unset).find(|k| bad(k)) {
        return Err(ApiError::invalid_param("env", format!("`{k}` is not an environment variable name.")));
    }
    if let Some((k, _)) = claim.env.iter().find(|(_, v)| v.contains('\0')) {
        return Err(ApiError::invalid_param("env", format!("The value of `{k}` holds a NUL byte.")));
    }
    // The agent's own process: its tools and driven agents inherit it from here on.
    for k in &claim.unset {
        std::env::remove_var(k);
    }
    for (k, v) in &claim.env {
        std::env::set_var(k, v);
    }
    std::env::remove_var(POOL_ENV);
    let cfg = crate::AgentConfig::from_env(pool.listen, pool.data_dir.clone());
    let state = crate::start(cfg).map_err(ApiError::internal)?;
    let _ = pool.app.set(crate::router(state));
    if let Some(tx) = pool.claimed.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = tx.send(());
    }
    tracing::info!("claimed from the warm pool");
    Ok(())
}
