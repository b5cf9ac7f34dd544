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
    // Two worker threads at most: the agent is small and idle most of the time.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(berth_agent::run(berth_agent::AgentConfig::from_env(args.listen, data_dir)))
}
