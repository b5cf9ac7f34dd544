//! `berth-agent [--listen ADDR] [--data DIR]`: thin wrapper over the library.

use clap::Parser;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[derive(Parser)]
#[command(name = "berth-agent", version, about = "The agent inside every berth instance")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BERTH_AGENT_LISTEN", default_value = "0.0.0.0:3737")]
    listen: SocketAddr,
    /// Data directory (sessions, memory); default `$HOME/.berth`.
    #[arg(long, env = "BERTH_AGENT_DATA")]
    data: Option<PathBuf>,
}

fn main() -> std::io::Result<()> {
    // `Targets` (not `EnvFilter`) reads RUST_LOG: same `target=level,level` syntax for
    // what the agent needs, without linking a regex engine into the static binary.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(Level::INFO));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr))
        .with(filter)
        .init();
    let args = Args::parse();
    let data_dir = args.data.unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")).join(".berth")
    });
    // One thread: the agent is I/O-bound and idle most of the time, and every extra
    // thread costs each instance a stack and a malloc arena. Blocking work (SQLite)
    // goes to tokio's blocking pool, whose threads exit once idle.
    tokio::runtime::Builder::new_current_thread()
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .enable_all()
        .build()?
        .block_on(berth_agent::run(berth_agent::AgentConfig::from_env(args.listen, data_dir)))
}
