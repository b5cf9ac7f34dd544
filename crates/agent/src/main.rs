//! `berth-agent [--listen ADDR] [--data DIR]`: thin wrapper over the library.

use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "berth-agent",
    version,
    about = "The agent inside every berth instance"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "BERTH_AGENT_LISTEN", default_value = "0.0.0.0:3737")]
    listen: SocketAddr,
    /// Data directory (sessions, memory); default `$HOME/.berth`.
    #[arg(long, env = "BERTH_AGENT_DATA")]
    data: Option<PathBuf>,
}

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let data_dir = args.data.unwrap_or_else(|| {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(".berth")
    });
    // Two worker threads at most: the agent is small and idle most of the time.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(berth_agent::run(berth_agent::AgentConfig::from_env(
            args.listen,
            data_dir,
        )))
}
