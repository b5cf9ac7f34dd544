//! `berth`: runs the server (`berth server`) and is the client of its API.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "Self-hosted, always-on agent computers: one per user")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (hosting API and reconciler).
    Server(berth_server::ServerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Server(args) => rt.block_on(berth_server::run(args)),
    }
}
