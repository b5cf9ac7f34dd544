//! `berth workspaces ...`: create a tenant (admin keys only) and list them.

use crate::client::{Client, ClientArgs};
use crate::output;
use crate::secret;
use berth_api_types::{CreateWorkspace, List, Workspace};
use clap::{Args, Subcommand};

/// `berth workspaces`: its connection flags and the action.
#[derive(Debug, Args)]
pub struct WorkspacesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: WorkspacesCommand,
}

/// What to do with workspaces.
#[derive(Debug, Subcommand)]
pub enum WorkspacesCommand {
    /// Create a workspace and its first API key (needs an admin key).
    Create {
        /// Display name, 1-100 characters.
        name: String,
        /// Most instances the workspace may hold (default: the server's).
        #[arg(long)]
        instance_limit: Option<u32>,
    },
    /// List workspaces (all of them for an admin key, your own otherwise).
    List,
}

/// Run `berth workspaces ...`.
pub async fn run(args: WorkspacesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    match args.command {
        WorkspacesCommand::Create { name, instance_limit } => {
            let answer = client.post("/workspaces", Some(&CreateWorkspace { name, instance_limit })).await?;
            if json {
                return output::json(&answer);
            }
            let ws: Workspace = serde_json::from_value(answer)?;
            output::details(&[
                ("id", ws.id),
                ("name", ws.name),
                ("instance limit", ws.instance_limit.to_string()),
                ("created", output::when(ws.created_at)),
            ]);
            secret::announce("the workspace's API key", ws.key.as_deref());
        }
        WorkspacesCommand::List => {
            let answer = client.get("/workspaces", &[]).await?;
            if json {
                return output::json(&answer);
            }
            let list: List<Workspace> = serde_json::from_value(answer)?;
            let now = output::now();
            let rows: Vec<Vec<String>> = list
                .data
                .into_iter()
                .map(|w| vec![w.id, w.name, w.instance_limit.to_string(), output::age(w.created_at, now)])
                .collect();
            output::table(&["ID", "NAME", "INSTANCE LIMIT", "AGE"], &rows);
        }
    }
    Ok(())
}
