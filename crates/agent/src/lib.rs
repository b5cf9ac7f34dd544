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
pub mod init;
pub mod install;
pub mod live;
mod mcp;
mod openclaw;
pub mod pool;
pub mod provider;
mod relay;
mod routes;
pub mod schedule;
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

/// Opens the data directory and serves the agent until SIGTERM or Ctrl-C. `claimed` is
/// told once the agent has its configuration: at once, or, started for berth's warm pool
/// (`BERTH_AGENT_POOL=1`, see [`pool`]), when the control plane claims it.
pub async fn run(
    listen: std::net::SocketAddr,
    data_dir: std::path::PathBuf,
    claimed: Option<tokio::sync::oneshot::Sender<()>>,
) -> std::io::Result<()> {
    std::fs::create_dir_all(&data_dir)?;
    // Tools must not read this process's secrets through /proc (environ, mem), even as
    // the same user: a process that is not dumpable is readable only with CAP_SYS_PTRACE,
    // which instances do not have.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "could not make the agent non-dumpable");
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, data = %data_dir.display(), "berth-agent listening");
    let app = if pool::waiting() {
        tracing::info!("waiting in the warm pool for a claim");
        pool::router(listen, data_dir, claimed)
    } else {
        let state = start(AgentConfig::from_env(listen, data_dir))?;
        if let Some(tx) = claimed {
            let _ = tx.send(());
        }
        router(state)
    };
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

/// The agent's state for its configuration: the home handed to the tool user, the
/// sessions opened, OpenClaw's Gateway started when OpenClaw answers by default.
fn start(cfg: AgentConfig) -> std::io::Result<Arc<AppState>> {
    if let Some(user) = cfg.tool_user {
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| cfg.workdir.clone());
        if let Err(e) = tools::confine::prepare(&home, &cfg.data_dir, user) {
            tracing::warn!(error = %e, home = %home.display(), "could not hand the home directory to the tool user");
        }
    }
    let store =
        store::Store::open(&cfg.data_dir.join("sessions.db")).map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Err(e) = store.prune_events() {
        tracing::warn!("cannot prune old stream events: {e}");
    }
    match store.fail_unfinished() {
        Ok(0) => {}
        Ok(n) => tracing::warn!(turns = n, "turns left running by the previous run of the agent ended as failed"),
        Err(e) => tracing::error!("cannot end the turns of the previous run: {e}"),
    }
    let state = AppState::new(cfg, store);
    tokio::spawn(schedule::run(state.clone()));
    // MCP servers start now, so the first turn does not wait for them.
    let warm = state.clone();
    tokio::spawn(async move { drop(warm.mcp.specs().await) });
    if let Some(driver::Driver::OpenClaw { bin }) = state.config.drivers.first() {
        let (bin, state) = (bin.clone(), state.clone());
        tokio::spawn(async move { openclaw::prestart(&bin, &state).await });
    }
    Ok(state)
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
