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
    /// The main program is interactive: it reads what `berth stdin ID TEXT` writes.
    #[arg(long)]
    pub stdin: bool,
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
    /// Build a template from a Dockerfile and a directory (its context), creating it
    /// when there is none of that name, else making its next version; follows the
    /// build's output until it ends (exits non-zero when it fails).
    Build {
        name: String,
        /// The directory whose files `COPY`/`ADD` read (packed as tar.gz; at most
        /// 256 MiB unpacked; `.git` is left out).
        dir: std::path::PathBuf,
        /// The Dockerfile (default: DIR/Dockerfile).
        #[arg(long = "file", short = 'f')]
        file: Option<std::path::PathBuf>,
        /// Answer at once, without following the build.
        #[arg(long)]
        no_follow: bool,
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
        build: None,
        health_path: f.health_path.clone(),
        stdin: f.stdin.then_some(true),
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
                stdin: u.stdin,
                agent: u.agent,
                agents: None,
                default_size: u.default_size,
            };
            client.post("/templates", Some(&body)).await?
        }
        TemplatesCommand::Update { id, fields } => {
            client.patch(&format!("/templates/{id}"), &update_body(fields)?).await?
        }
        TemplatesCommand::Build { name, dir, file, no_follow, fields } => {
            return build(&client, args.client.json, name, dir, file.as_deref(), *no_follow, fields).await;
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
                    let status = match &t.pull {
                        Some(p) => format!("{} ({})", t.status, pull_text(p)),
                        None => t.status,
                    };
                    vec![t.id, t.name, t.version.to_string(), status, t.image, ports.join(","), t.agent.to_string()]
                })
                .collect();
            output::table(&["ID", "NAME", "VERSION", "STATUS", "IMAGE", "PORTS", "AGENT"], &rows);
        }
        TemplatesCommand::Delete { id, .. } => println!("deleted template {id}"),
        _ => {
            print_template(serde_json::from_value(answer)?);
        }
    }
    Ok(())
}

fn print_template(t: Template) {
    let ports: Vec<String> =
        t.ports.iter().map(|p| format!("{}{}", p.port, if p.default { " (default)" } else { "" })).collect();
    let build = t.build.as_ref().map(|b| match &b.error {
        Some(e) => format!("version {} {}: {e}", b.version, b.status),
        None => format!("version {} {}", b.version, b.status),
    });
    output::details(&[
        ("id", t.id),
        ("name", t.name),
        ("version", t.version.to_string()),
        ("status", t.status),
        ("build", output::or_dash(build.as_deref())),
        ("pull", output::or_dash(t.pull.as_ref().map(pull_text).as_deref())),
        ("image", t.image),
        ("ports", output::or_dash(Some(ports.join(", ").as_str()).filter(|s| !s.is_empty()))),
        ("command", output::or_dash(t.command.map(|c| c.join(" ")).as_deref())),
        ("agent", t.agent.to_string()),
        ("stdin", t.stdin.to_string()),
        (
            "env",
            output::or_dash(
                Some(t.env.keys().cloned().collect::<Vec<_>>().join(", ").as_str()).filter(|s| !s.is_empty()),
            ),
        ),
        ("default size", t.default_size.to_string()),
    ]);
}

/// A pull in progress: `pulling 12.0/40.5 MB, 1/3 layers`.
fn pull_text(p: &berth_api_types::TemplatePull) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    format!(
        "pulling {:.1}/{:.1} MB, {}/{} layers",
        mb(p.current_bytes),
        mb(p.total_bytes),
        p.layers_done,
        p.layers_total
    )
}

/// Packs a directory as a tar.gz (`.git` left out), base64-encoded.
fn pack(dir: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context;
    use base64::Engine;
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name() == ".git" {
            continue;
        }
        let path = entry.path();
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            tar.append_dir_all(&name, &path).with_context(|| format!("packing {}", path.display()))?;
        } else {
            tar.append_path_with_name(&path, &name).with_context(|| format!("packing {}", path.display()))?;
        }
    }
    let bytes = tar.into_inner()?.finish()?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

async fn build(
    client: &Client,
    json: bool,
    name: &str,
    dir: &std::path::Path,
    file: Option<&std::path::Path>,
    no_follow: bool,
    fields: &TemplateFields,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let dockerfile_path = file.map(std::path::Path::to_path_buf).unwrap_or_else(|| dir.join("Dockerfile"));
    let dockerfile = std::fs::read_to_string(&dockerfile_path)
        .with_context(|| format!("reading the Dockerfile {}", dockerfile_path.display()))?;
    let source = berth_api_types::BuildSource { dockerfile, context: Some(pack(dir)?) };
    let mut u = update_body(fields)?;
    anyhow::ensure!(u.image.is_none(), "--image and a build exclude each other");
    u.build = Some(source);
    let exists = match client.get(&format!("/templates/{name}"), &[]).await {
        Ok(_) => true,
        Err(crate::client::ClientError::Api(e)) if e.code == "template_not_found" => false,
        Err(e) => return Err(e.into()),
    };
    let answer = if exists {
        client.patch(&format!("/templates/{name}"), &u).await?
    } else {
        let body = CreateTemplate {
            name: name.to_string(),
            image: None,
            build: u.build,
            ports: u.ports,
            command: u.command,
            env: u.env,
            health_path: u.health_path,
            stdin: u.stdin,
            agent: u.agent,
            agents: None,
            default_size: u.default_size,
        };
        client.post("/templates", Some(&body)).await?
    };
    let t: Template = serde_json::from_value(answer.clone())?;
    if no_follow {
        if json {
            return output::json(&answer);
        }
        print_template(t);
        return Ok(());
    }
    eprintln!("building {} version {} ...", t.name, t.version);
    let path = format!("/templates/{}/builds/{}/logs", t.id, t.version);
    let resp = client.get_stream(&path, &[("follow", "true".into())]).await?;
    let mut events = crate::sse::SseStream::new(client, resp);
    while let Some(ev) = events.next().await? {
        if ev.event == "end" {
            let end: serde_json::Value = serde_json::from_str(&ev.data).context("unexpected build event")?;
            let status = end["status"].as_str().unwrap_or("failed").to_string();
            if status != "ready" {
                let why = end["error"].as_str().unwrap_or("see the log above");
                anyhow::bail!("the build of {} version {} failed: {why}", t.name, t.version);
            }
            let t: Template = serde_json::from_value(client.get(&format!("/templates/{}", t.id), &[]).await?)?;
            return if json {
                output::json(&serde_json::to_value(&t)?)
            } else {
                print_template(t);
                Ok(())
            };
        }
        let line: berth_api_types::BuildLogLine = serde_json::from_str(&ev.data).context("unexpected build event")?;
        if json {
            output::stdout(format!("{}\n", serde_json::to_string(&line)?).as_bytes());
        } else {
            output::stderr(format!("{}\n", line.message).as_bytes());
        }
    }
    anyhow::bail!("the build's log stream ended early; see `berth templates get {}`", t.id)
}
