//! berth-agent: the process that makes an instance an agent (SPEC §4).
//!
//! It runs as the main process of every `berth-agent` instance, listening on
//! 3737, and also runs on its own outside any container.

use axum::{routing::get, Json, Router};
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

/// Version reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the agent is started.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where sessions and memory live.
    pub data_dir: PathBuf,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    version: &'static str,
    uptime_secs: u64,
}

/// The agent's HTTP routes.
pub fn router() -> Router {
    let started = Instant::now();
    Router::new().route(
        "/health",
        get(move || async move {
            Json(Health {
                status: "ok",
                version: VERSION,
                uptime_secs: started.elapsed().as_secs(),
            })
        }),
    )
}

/// Serves the agent until SIGTERM or Ctrl-C.
pub async fn run(cfg: AgentConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "berth-agent listening");
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown())
        .await
}

async fn shutdown() {
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
