//! `berth keys ...`: API keys of the caller's workspace.

use crate::client::{Client, ClientArgs};
use crate::output;
use crate::secret;
use berth_api_types::{ApiKey, CreateKey, List};
use clap::{Args, Subcommand};

/// `berth keys`: its connection flags and the action.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// What to do with keys.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key for your workspace; its secret is shown once.
    Create {
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// An admin key (needs an admin key to create).
        #[arg(long, conflicts_with = "instance")]
        admin: bool,
        /// An instance key: works only at this instance's URLs and for reading it
        /// (what to hand an end user's browser or app).
        #[arg(long, value_name = "INSTANCE_ID")]
        instance: Option<String>,
        /// The key stops working this many seconds from now.
        #[arg(long, value_name = "SECS")]
        expires_in: Option<i64>,
    },
    /// List your workspace's keys (prefixes only, never secrets).
    List,
    /// Revoke a key.
    Delete {
        /// Key id.
        id: String,
    },
}

/// Run `berth keys ...`.
pub async fn run(args: KeysArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    let answer = match &args.command {
        KeysCommand::Create { name, admin, instance, expires_in } => {
            let body = CreateKey {
                name: name.clone(),
                admin: admin.then_some(true),
                expires_in_secs: *expires_in,
                instance: instance.clone(),
            };
            client.post("/keys", Some(&body)).await?
        }
        KeysCommand::List => client.get("/keys", &[]).await?,
        KeysCommand::Delete { id } => client.delete(&format!("/keys/{id}"), &[]).await?,
    };
    if json {
        return output::json(&answer);
    }
    match args.command {
        KeysCommand::Create { .. } => {
            let key: ApiKey = serde_json::from_value(answer)?;
            output::details(&[("id", key.id), ("name", output::or_dash(Some(&key.name))), ("prefix", key.prefix)]);
            secret::announce("the new API key", key.key.as_deref());
        }
        KeysCommand::List => {
            let list: List<ApiKey> = serde_json::from_value(answer)?;
            let now = output::now();
            let rows: Vec<Vec<String>> = list
                .data
                .into_iter()
                .map(|k| {
                    let scope = match (k.admin, k.instance) {
                        (true, _) => "admin".to_string(),
                        (false, Some(instance)) => instance,
                        (false, None) => "workspace".to_string(),
                    };
                    vec![k.id, output::or_dash(Some(&k.name)), k.prefix, scope, output::age(k.created_at, now)]
                })
                .collect();
            output::table(&["ID", "NAME", "PREFIX", "SCOPE", "AGE"], &rows);
        }
        KeysCommand::Delete { id } => println!("deleted key {id}"),
    }
    Ok(())
}
