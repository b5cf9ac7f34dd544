//! `berth`: runs the server (`berth server`) and is the client of its API.

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "berth", version, about = "Self-hosted, always-on agent computers: one per user")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the control plane (hosting API, edge and reconciler).
    Server(berth_server::ServerArgs),
    /// Bring the database's schema up to this version (`berth server` also does at start).
    Migrate(berth_server::db::DbArgs),
    /// Write every record of an installation's database as JSON Lines (to move it to
    /// another database with `berth import`; env values stay sealed).
    Export {
        #[command(flatten)]
        db: berth_server::db::DbArgs,
        /// File to write; default: standard output.
        #[arg(long, short)]
        out: Option<std::path::PathBuf>,
    },
    /// Load a `berth export` into an empty database (migrated first). The server that
    /// runs on it needs the exporting server's `secret.key` in its data dir.
    Import {
        #[command(flatten)]
        db: berth_server::db::DbArgs,
        /// The export to load.
        file: std::path::PathBuf,
    },
    #[command(flatten)]
    Client(berth_cli::ClientCommand),
    /// Print a shell completion script (bash, zsh, fish, ...).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Server(args) => {
            if let Err(e) = rt.block_on(berth_server::run(args)) {
                // Exit now: dropping the runtime would wait for tasks the server started.
                eprintln!("Error: {e:?}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Migrate(db) => exit_on_error(rt.block_on(berth_server::db::migrate(db))),
        Command::Export { db, out } => exit_on_error(rt.block_on(berth_server::db::export(db, out))),
        Command::Import { db, file } => exit_on_error(rt.block_on(berth_server::db::import(db, file))),
        Command::Client(command) => {
            let code = rt.block_on(berth_cli::run(command)).unwrap_or_else(|err| {
                berth_cli::report(&err);
                1
            });
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Exits 1 after printing the error's chain (like `berth server`).
fn exit_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("Error: {e:?}");
        std::process::exit(1);
    }
    Ok(())
}
