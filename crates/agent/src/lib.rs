//! berth-agent: the process that makes an instance an agent (SPEC §4).
//!
//! It runs as the main process of every `berth-agent` instance, listening on
//! 3737, and also runs on its own outside any container. The binary only
//! parses flags; everything else lives here so tests can drive it.
//!
//! Code map: `api` (wire types) ← `store` (SQLite sessions) ← `provider` (LLM
//! protocols) ← `tools` (shell, files, memory) ← `turn` (the agent loop) ←
//! `routes` (HTTP). See README.md for the design.

pub mod api;
mod busy;
pub mod config;
pub mod driver;
pub mod error;
pub mod exec_session;
mod ids;
mod openclaw;
pub mod provider;
mod relay;
mod routes;
mod state;
pub mod store;
pub mod tools;
mod turn;

pub use config::AgentConfig;
pub use state::AppState;

use std::sync::Arc;
use std::time::Duration;

/// Version reported by `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How long in-flight turns get to finish after SIGTERM before the agent exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The agent's HTTP routes over its state.
pub fn router(state: Arc<AppState>) -> axum::Router {
    routes::router(state)
}

/// Opens the data directory and serves the agent until SIGTERM or Ctrl-C.
pub async fn run(cfg: AgentConfig) -> std::io::Result<()> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    // Tools must not read this process's secrets through /proc (environ, mem), even as
    // the same user: a process that is not dumpable is readable only with CAP_SYS_PTRACE,
    // which instances do not have.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "could not make the agent non-dumpable");
    }
    if let Some(user) = cfg.tool_user {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| cfg.workdir.clone());
        if let Err(e) = tools::confine::prepare(&home, &cfg.data_dir, user) {
            tracing::warn!(error = %e, home = %home.display(), "could not hand the home directory to the tool user");
        }
    }
    let store =
        store::Store::open(&cfg.data_dir.join("sessions.db")).map_err(|e| std::io::Error::other(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    tracing::info!(addr = %listener.local_addr()?, data = %cfg.data_dir.display(), "berth-agent listening");
    let state = AppState::new(cfg, store);
    if let Some(driver::Driver::OpenClaw { bin }) = state.config.drivers.first() {
        let (bin, state) = (bin.clone(), state.clone());
        tokio::spawn(async move { openclaw::prestart(&bin, &state).await });
    }
    let app = router(state);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    // Streams may stay open for long; after the grace period, exit anyway.
    let deadline = async move {
        let mut rx = stop_rx;
        let _ = rx.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = serve => r,
        _ = deadline => {
            tracing::warn!("shutdown grace period over; exiting with turns still running");
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}
