//! The client side of the `berth` CLI: one module per API resource over one HTTP
//! client. `main.rs` only parses arguments and hands a [`ClientCommand`] to [`run`].

pub mod billing;
pub mod chat;
pub mod client;
pub mod events;
pub mod exec;
pub mod health;
pub mod instance_view;
pub mod instances;
pub mod keys;
pub mod logs;
pub mod output;
pub mod progress;
pub mod secret;
pub mod share;
pub mod shell;
pub mod sse;
pub mod stdin;
pub mod templates;
pub mod workspaces;

use client::ClientError;

/// The subcommands that talk to a berth server's hosting API.
#[derive(Debug, clap::Subcommand)]
pub enum ClientCommand {
    /// Create, list, inspect and drive instances.
    Instances(instances::InstancesArgs),
    /// Create and list workspaces (tenants).
    Workspaces(workspaces::WorkspacesArgs),
    /// Create, list and revoke API keys.
    Keys(keys::KeysArgs),
    /// Run a command in an instance: `berth exec ID -- CMD ARGS...` (exit code passed through).
    Exec(exec::ExecArgs),
    /// Write to the main program of a stdin template and print its reply: `berth stdin ID "print(6*7)"`.
    Stdin(stdin::StdinArgs),
    /// Talk to an instance's agent: `berth chat ID "message"` (the reply streams to stdout).
    Chat(chat::ChatArgs),
    /// Open an interactive terminal in an instance.
    Shell(shell::ShellArgs),
    /// Print a link a browser can open to an instance's port (`--list`, `--revoke`).
    Share(share::ShareArgs),
    /// Print an instance's logs (`-f` to follow).
    Logs(logs::LogsArgs),
    /// Show an instance's resource use and agent health.
    Health(health::HealthArgs),
    /// Show an instance's audit trail of lifecycle changes.
    Events(events::EventsArgs),
    /// The workspace's wallet: `show`, `ledger`, `topup` (admin keys).
    Billing(billing::BillingArgs),
    /// Create, list, version and delete templates.
    Templates(templates::TemplatesArgs),
}

/// Run one client command against the server; answers the exit code for the process
/// (0, or what a remote command exited with for `exec` and `shell`, 1 for a failed
/// `chat --json` turn).
pub async fn run(command: ClientCommand) -> anyhow::Result<i32> {
    let done = match command {
        ClientCommand::Instances(args) => instances::run(args).await,
        ClientCommand::Workspaces(args) => workspaces::run(args).await,
        ClientCommand::Keys(args) => keys::run(args).await,
        ClientCommand::Exec(args) => return exec::run(args).await,
        ClientCommand::Chat(args) => return chat::run(args).await,
        ClientCommand::Shell(args) => return shell::run(args).await,
        ClientCommand::Logs(args) => logs::run(args).await,
        ClientCommand::Stdin(args) => stdin::run(args).await,
        ClientCommand::Share(args) => share::run(args).await,
        ClientCommand::Health(args) => health::run(args).await,
        ClientCommand::Events(args) => events::run(args).await,
        ClientCommand::Billing(args) => billing::run(args).await,
        ClientCommand::Templates(args) => templates::run(args).await,
    };
    done.map(|()| 0)
}

/// Print a failed command's error to stderr as `error: ...`.
pub fn report(err: &anyhow::Error) {
    match err.downcast_ref::<ClientError>() {
        // Already a complete message; its transport causes are folded in.
        Some(e) => eprintln!("error: {e}"),
        None => eprintln!("error: {err:#}"),
    }
}
