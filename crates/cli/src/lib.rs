//! The client side of the `berth` CLI: one module per API resource over one HTTP
//! client. `main.rs` only parses arguments and hands a [`ClientCommand`] to [`run`].

pub mod client;
pub mod instance_view;
pub mod instances;
pub mod keys;
pub mod output;
pub mod progress;
pub mod secret;
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
}

/// Run one client command against the server.
pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Instances(args) => instances::run(args).await,
        ClientCommand::Workspaces(args) => workspaces::run(args).await,
        ClientCommand::Keys(args) => keys::run(args).await,
    }
}

/// Print a failed command's error to stderr as `error: ...`.
pub fn report(err: &anyhow::Error) {
    match err.downcast_ref::<ClientError>() {
        // Already a complete message; its transport causes are folded in.
        Some(e) => eprintln!("error: {e}"),
        None => eprintln!("error: {err:#}"),
    }
}
