//! `berth templates ...`: the system template and the workspace's own.

use crate::client::{Client, ClientArgs};
use crate::output;
use berth_api_types::{CreateTemplate, List, Template, TemplatePort, UpdateTemplate};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;

/// `berth templates`: its connection flags and the action.
#[derive(Debug, Args)]
pub struct TemplatesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: TemplatesCommand,
}

/// What a template says, for create and update (each flag given replaces that field).
#[derive(Debug, Clone, Args)]
pub struct TemplateFields {
    /// Image reference (any OCI image; pulled when first needed).
    #[arg(long)]
    pub image: Option<String>,
    /// A routed port; `PORT:default` serves it at the instance's own URL (repeatable).
    #[arg(long = "port", value_name = "PORT[:default]")]
    pub ports: Vec<String>,
    /// Environment of every instance, `KEY=VALUE` (repeatable; replaces the whole env).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// HTTP path answering 2xx once the default port is ready.
    #[arg(long)]
    pub health_path: Option<String>,
    /// Run the image's own program without berth-agent.
    #[arg(long)]
    pub no_agent: bool,
    /// Size of instances created without one (1, 2, 4, 8).
    #[arg(long)]
    pub default_size: Option<u32>,
    /// The main program (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// What to do with templates.
#[derive(Debug, Subcommand)]
pub enum TemplatesCommand {
    /// List the system template and your workspace's.
    List,
    /// Show one template (by id or name).
    Get { id: String },
    /// Create a template from an image: `berth templates create NAME --image IMG [--port 8000] [-- CMD ARGS...]`.
    Create {
        name: String,
        #[command(flatten)]
        fields: TemplateFields,
    },
    /// Make a new version of a template (instances move with `berth instances update`).
    Update {
        id: String,
        #[command(flatten)]
        fields: TemplateFields,
    },
    /// Delete a template (`--force` while instances use it: they keep their version).
    Delete {
        id: String,
        #[arg(long)]
        force: bool,
    },
}

fn ports(specs: &[String]) -> anyhow::Result<Option<Vec<TemplatePort>>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::new();
    for s in specs {
        let (port, default) = match s.split_once(':') {
            Some((p, "default")) => (p, true),
            None => (s.as_str(), false),
            Some(_) => anyhow::bail!("--port {s}: expected PORT or PORT:default"),
        };
        let port = port.parse().map_err(|_| anyhow::anyhow!("--port {s}: not a port number"))?;
        out.push(TemplatePort { port, default });
    }
    Ok(Some(out))
}

fn env(pairs: &[String]) -> anyhow::Result<Option<BTreeMap<String, String>>> {
    if pairs.is_empty() {
        return Ok(None);
    }
    pairs
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--env {p}: expected KEY=VALUE"))
        })
        .collect::<anyhow::Result<_>>()
        .map(Some)
}

fn update_body(f: &TemplateFields) -> anyhow::Result<UpdateTemplate> {
    Ok(UpdateTemplate {
        image: f.image.clone(),
        ports: ports(&f.ports)?,
        command: (!f.command.is_empty()).then(|| f.command.clone()),
        env: env(&f.env)?,
        health_path: f.health_path.clone(),
        stdin: None,
        agent: f.no_agent.then_some(false),
        agents: None,
        default_size: f.default_size,
    })
}

/// Run `berth templates ...`.
pub async fn run(args: TemplatesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let answer = match &args.command {
        TemplatesCommand::List => client.get("/templates", &[]).await?,
        TemplatesCommand::Get { id } => client.get(&format!("/templates/{id}"), &[]).await?,
        TemplatesCommand::Create { name, fields } => {
            let u = update_body(fields)?;
            let body = CreateTemplate {
                name: name.clone(),
                image: u.image,
                build: None,
                ports: u.ports,
                command: u.command,
                env: u.env,
                health_path: u.health_path,
                stdin: None,
                agent: u.agent,
                agents: None,
                default_size: u.default_size,
            };
            client.post("/templates", Some(&body)).await?
        }
        TemplatesCommand::Update { id, fields } => {
            client.patch(&format!("/templates/{id}"), &update_body(fields)?).await?
        }
        TemplatesCommand::Delete { id, force } => {
            let query: Vec<(&str, String)> = if *force { vec![("force", "true".into())] } else { vec![] };
            client.delete(&format!("/templates/{id}"), &query).await?
        }
    };
    if args.client.json {
        return output::json(&answer);
    }
    match args.command {
        TemplatesCommand::List => {
            let list: List<Template> = serde_json::from_value(answer)?;
            let rows: Vec<Vec<String>> = list
                .data
                .into_iter()
                .map(|t| {
                    let ports: Vec<String> =
                        t.ports.iter().map(|p| format!("{}{}", p.port, if p.default { "*" } else { "" })).collect();
                    vec![t.id, t.name, t.version.to_string(), t.image, ports.join(","), t.agent.to_string()]
                })
                .collect();
            output::table(&["ID", "NAME", "VERSION", "IMAGE", "PORTS", "AGENT"], &rows);
        }
        TemplatesCommand::Delete { id, .. } => println!("deleted template {id}"),
        _ => {
            let t: Template = serde_json::from_value(answer)?;
            let ports: Vec<String> =
                t.ports.iter().map(|p| format!("{}{}", p.port, if p.default { " (default)" } else { "" })).collect();
            output::details(&[
                ("id", t.id),
                ("name", t.name),
                ("version", t.version.to_string()),
                ("image", t.image),
                ("ports", output::or_dash(Some(ports.join(", ").as_str()).filter(|s| !s.is_empty()))),
                ("command", output::or_dash(t.command.map(|c| c.join(" ")).as_deref())),
                ("agent", t.agent.to_string()),
                (
                    "env",
                    output::or_dash(
                        Some(t.env.keys().cloned().collect::<Vec<_>>().join(", ").as_str()).filter(|s| !s.is_empty()),
                    ),
                ),
                ("default size", t.default_size.to_string()),
            ]);
        }
    }
    Ok(())
}
