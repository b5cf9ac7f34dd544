//! `berth-agent [--listen ADDR] [--data DIR] [-- COMMAND...]`: thin wrapper over the
//! library. With a command (a template's main program), the agent runs it as its child
//! beside its own API and exits with it, so the container lives as long as the program.
//!
//! `berth-agent init -- CMD [ARGS...]` is a tiny init for PID 1 (like tini): it runs CMD
//! as its child with the same stdio and environment, forwards SIGTERM, SIGINT, SIGHUP,
//! SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to it, reaps every orphan, and exits with CMD's
//! exit code (`init.rs`). It is dispatched before anything starts a thread.

use clap::Parser;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

#[derive(Parser)]
#[command(name = "berth-agent", version, about = "The agent inside every berth instance")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Address to listen on.
    #[arg(long, env = "BERTH_AGENT_LISTEN", default_value = "0.0.0.0:3737")]
    listen: SocketAddr,
    /// Data directory (sessions, memory); default `$HOME/.berth`.
    #[arg(long, env = "BERTH_AGENT_DATA")]
    data: Option<PathBuf>,
}

/// Helpers the control plane and its runtimes run in the instance (not for people).
#[derive(clap::Subcommand)]
enum Command {
    /// Run a command as the leader of its own marked session (how execs start).
    ExecSession {
        /// Marks the session: `BERTH_EXEC=TOKEN` in the command's environment.
        #[arg(long)]
        token: String,
        /// Directory to run the command in (a missing one is an error, exit 126).
        #[arg(long, value_name = "DIR")]
        cwd: Option<PathBuf>,
        /// Add KEY=VALUE to the command's environment (repeatable).
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Read stdin as frames (4-byte big-endian length, then the bytes; length 0
        /// ends the input) and run the command as a child with its stdin closed at
        /// the end frame; exit with its exit code. For exec APIs that cannot
        /// half-close stdin (Kubernetes).
        #[arg(long)]
        stdin_framed: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Be PID 1 (like tini): run CMD as a child with the same stdio and environment,
    /// forward SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 and SIGWINCH to it,
    /// reap every orphan, and exit with CMD's exit code (128+N if signal N killed it;
    /// 127 if CMD does not exist, 126 if it cannot start).
    Init {
        /// Internal: init's child, which unblocks these signals (comma-separated
        /// numbers) and becomes CMD.
        #[arg(long, hide = true, value_name = "SIGNALS")]
        exec_unblocking: Option<String>,
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<std::ffi::OsString>,
    },
    /// Kill every process of the exec session marked with this token.
    ExecKill { token: String },
    /// Copy this binary to DEST (parents created, mode 0755, atomic rename): how a
    /// Kubernetes init container puts the agent into a volume shared with the pod.
    Install { dest: PathBuf },
    /// Run one file tool call read from stdin (as the tool user; see `tools::confine`).
    #[command(hide = true)]
    FileTool,
}

fn main() -> std::io::Result<()> {
    // `[OPTIONS] -- COMMAND...`: the instance's main program, run beside the agent (its
    // output is the container's); the agent exits with its exit code. Split off here:
    // with subcommands, clap would read COMMAND as one of them.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let main_program: Vec<String> = match argv.iter().position(|a| a == "--") {
        Some(at) if argv.get(1).is_some_and(|a| a.to_string_lossy().starts_with('-')) => {
            argv.split_off(at).into_iter().skip(1).map(|a| a.to_string_lossy().into_owned()).collect()
        }
        _ => Vec::new(),
    };
    let args = Args::parse_from(argv);
    match &args.command {
        // First, single-threaded: init blocks signals to take them with sigwait(3).
        Some(Command::Init { exec_unblocking: None, command }) => std::process::exit(berth_agent::init::run(command)),
        Some(Command::Init { exec_unblocking: Some(signals), command }) => {
            std::process::exit(berth_agent::init::exec_unblocking(signals, command))
        }
        Some(Command::ExecSession { token, cwd, env, stdin_framed, command }) => {
            use berth_agent::exec_session::{run_framed_session, run_session, SessionOptions};
            let opts = SessionOptions { cwd: cwd.clone(), env: env.clone() };
            let err = if *stdin_framed {
                match run_framed_session(token, &opts, command) {
                    Ok(code) => std::process::exit(code),
                    Err(err) => err,
                }
            } else {
                run_session(token, &opts, command)
            };
            eprintln!("{err}");
            std::process::exit(err.code);
        }
        Some(Command::ExecKill { token }) => match berth_agent::exec_session::kill_session(token) {
            Ok(_) => return Ok(()),
            Err(e) => {
                eprintln!("exec-kill: {e}");
                std::process::exit(1);
            }
        },
        Some(Command::Install { dest }) => match berth_agent::install::install_self(dest) {
            Ok(()) => return Ok(()),
            Err(e) => {
                eprintln!("berth-agent install: {e}");
                std::process::exit(1);
            }
        },
        Some(Command::FileTool) => return berth_agent::tools::confine::file_tool_main(),
        None => {}
    }
    if let Err(e) = berth_agent::tools::ToolUser::from_env() {
        eprintln!("berth-agent: {e}");
        std::process::exit(2);
    }
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
        .block_on(async move {
            if main_program.is_empty() {
                return berth_agent::run(args.listen, data_dir, None).await;
            }
            // The main program starts once the agent has its configuration (for a warm
            // pool agent, when claimed: the program gets the instance's environment).
            let (claimed_tx, claimed_rx) = tokio::sync::oneshot::channel();
            let agent = berth_agent::run(args.listen, data_dir, Some(claimed_tx));
            let program = async {
                if claimed_rx.await.is_err() {
                    return std::future::pending().await;
                }
                spawn_main(&main_program)?.wait().await
            };
            tokio::select! {
                served = agent => served,
                status = program => {
                    let status = status?;
                    tracing::info!(%status, "the main program ended");
                    std::process::exit(status.code().unwrap_or(128 + status.signal().unwrap_or(9)));
                }
            }
        })
}

/// Starts the template's main program with the container's stdio and environment,
/// less the gateway token (the agent's own credential toward the edge).
fn spawn_main(argv: &[String]) -> std::io::Result<tokio::process::Child> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_remove("BERTH_GATEWAY_TOKEN");
    cmd.spawn().map_err(|e| std::io::Error::new(e.kind(), format!("starting the main program `{}`: {e}", argv[0])))
}
