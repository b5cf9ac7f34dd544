//! `berth instances ...`: create, list, get, set, delete, restore and the lifecycle actions.

use crate::client::{Client, ClientArgs};
use crate::instance_view;
use crate::output;
use crate::progress::spin;
use berth_api_types::{BudgetInput, CreateInstance, Instance, List, UpdateInstance};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

/// `berth instances`: its connection flags and the action.
#[derive(Debug, Args)]
pub struct InstancesArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: InstancesCommand,
}

/// What to do with instances.
#[derive(Debug, Subcommand)]
pub enum InstancesCommand {
    /// Create an instance; waits until it runs and its agent answers.
    Create(CreateArgs),
    /// List instances, newest first.
    List(ListArgs),
    /// Show one instance.
    Get(IdArg),
    /// Change an instance: name, size (resized in place), metadata, env, budget cap.
    Set(SetArgs),
    /// Delete an instance (restorable during the retention period unless --purge).
    Delete(DeleteArgs),
    /// Bring back a deleted instance with its data.
    Restore(IdArg),
    /// Stop an instance (its data is kept).
    Stop(IdArg),
    /// Start a stopped instance.
    Start(IdArg),
    /// Restart an instance.
    Restart(IdArg),
    /// Recreate an instance on the newest version of its template (or `--version N`,
    /// an older one to roll back), data kept.
    Update(UpdateArgs),
    /// Freeze an instance's processes.
    Pause(IdArg),
    /// Unfreeze a paused instance.
    Resume(IdArg),
    /// Keep a cold_start instance awake for a while (waking it if it sleeps).
    Hold(HoldArgs),
}

/// `berth instances hold`.
#[derive(Debug, Args)]
pub struct HoldArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// How long: `90s`, `30m`, `2h`, `1d` (0 releases the hold).
    #[arg(long, default_value = "1h", value_parser = crate::share::parse_duration)]
    pub ttl: u64,
}

/// An instance id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Instance id (`inst_...`).
    pub id: String,
}

/// `berth instances update`.
#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// The template version to move to (default: the newest).
    #[arg(long)]
    pub version: Option<u32>,
}

/// `berth instances create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Size class: 1, 2, 4 or 8.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u32>,
    #[command(flatten)]
    pub resources: ResourceFlags,
    /// Attribution tag (your end user's id), filterable in list.
    #[arg(long)]
    pub user: Option<String>,
    /// Template id (default `berth-agent`).
    #[arg(long)]
    pub template: Option<String>,
    /// Placement hint (`local` on a single Docker host).
    #[arg(long)]
    pub region: Option<String>,
    /// Metadata pair, repeatable.
    #[arg(long = "meta", value_name = "K=V", value_parser = parse_pair)]
    pub meta: Vec<(String, String)>,
    /// Environment variable of the instance, repeatable.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_pair)]
    pub env: Vec<(String, String)>,
    /// A port the instance's programs serve, given its own URL; repeatable.
    #[arg(long = "expose", value_name = "PORT")]
    pub expose: Vec<u16>,
    /// Stop after this many idle seconds, woken by the next request (cold_start).
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<u64>,
    /// Egress policy: `internet` (default), `none`, or the only destinations allowed,
    /// `CIDR[:PORT]` comma-separated (`10.1.2.0/24:5432,[fd00::/8]:443`).
    #[arg(long)]
    pub egress: Option<String>,
}

/// `berth instances set`: only the given fields change.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// New display name.
    #[arg(long)]
    pub name: Option<String>,
    /// New size class: 1, 2, 4 or 8 (resized in place, data kept).
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u32>,
    #[command(flatten)]
    pub resources: ResourceFlags,
    /// Metadata pair, repeatable; the given pairs replace all metadata.
    #[arg(long = "meta", value_name = "K=V", value_parser = parse_pair)]
    pub meta: Vec<(String, String)>,
    /// Environment variable, repeatable; the given variables replace the whole
    /// environment (the container is recreated, data kept).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_pair)]
    pub env: Vec<(String, String)>,
    /// Hard cap on managed LLM usage, in USD.
    #[arg(long, value_name = "USD")]
    pub budget_cap: Option<f64>,
    /// Port to expose, repeatable; the given ports replace the exposed ones
    /// (ports kept keep their URL).
    #[arg(long = "expose", value_name = "PORT")]
    pub expose: Vec<u16>,
    /// Expose no extra port any more.
    #[arg(long, conflicts_with = "expose")]
    pub no_expose: bool,
    /// Egress policy, applied without a restart: `internet`, `none`, or the only
    /// destinations allowed, `CIDR[:PORT]` comma-separated (`10.1.2.0/24:5432,[fd00::/8]:443`).
    #[arg(long)]
    pub egress: Option<String>,
}

/// The `network` body of `--egress`.
fn egress_body(value: &str) -> berth_api_types::NetworkInput {
    let egress = match value {
        "internet" | "none" => json!(value),
        list => json!({"allow": list.split(',').filter(|s| !s.is_empty()).collect::<Vec<_>>()}),
    };
    berth_api_types::NetworkInput { egress: Some(egress) }
}

/// `berth instances list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only instances with this user tag.
    #[arg(long)]
    pub user: Option<String>,
    /// Only instances in this status (`deleted` lists soft-deleted ones).
    #[arg(long)]
    pub status: Option<String>,
    /// Only instances of this template.
    #[arg(long)]
    pub template: Option<String>,
    /// Page size, 1-100.
    #[arg(long)]
    pub limit: Option<u32>,
    /// Follow `next_cursor` until the last page.
    #[arg(long)]
    pub all: bool,
}

/// `berth instances delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// Remove the data now instead of keeping it for the retention period.
    #[arg(long)]
    pub purge: bool,
}

/// Run `berth instances ...`.
pub async fn run(args: InstancesArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    use InstancesCommand as C;
    let (verb, doing, id) = match args.command {
        C::Create(c) => return create(&client, c, json).await,
        C::List(l) => return list(&client, l, json).await,
        C::Get(a) => return show(client.get(&format!("/instances/{}", a.id), &[]).await?, json),
        C::Set(s) => return set(&client, s, json).await,
        C::Delete(d) => return delete(&client, d, json).await,
        C::Restore(a) => ("restore", "restoring", a.id),
        C::Stop(a) => ("stop", "stopping", a.id),
        C::Start(a) => ("start", "starting", a.id),
        C::Restart(a) => ("restart", "restarting", a.id),
        C::Update(u) => {
            let path = format!("/instances/{}/update", u.id);
            let body = berth_api_types::UpdateTo { version: u.version };
            let call = client.post(&path, Some(&body));
            return show(spin(format!("updating {}", u.id), call).await?, json);
        }
        C::Pause(a) => ("pause", "pausing", a.id),
        C::Resume(a) => ("resume", "resuming", a.id),
        C::Hold(h) => {
            let path = format!("/instances/{}/hold", h.id);
            let body = json!({"ttl_secs": h.ttl});
            let call = client.post(&path, Some(&body));
            return show(spin(format!("holding {}", h.id), call).await?, json);
        }
    };
    let path = format!("/instances/{id}/{verb}");
    let call = client.post(&path, None::<&()>);
    show(spin(format!("{doing} {id}"), call).await?, json)
}

async fn create(client: &Client, args: CreateArgs, json: bool) -> anyhow::Result<()> {
    let body = CreateInstance {
        name: args.name,
        template: args.template.map(berth_api_types::TemplateChoice::Newest),
        size: args.size,
        user: args.user,
        region: args.region,
        metadata: object(args.meta),
        env: object(args.env),
        expose: (!args.expose.is_empty()).then(|| json!(args.expose)),
        lifecycle: args
            .idle_timeout
            .map(|t| berth_api_types::Lifecycle { mode: "cold_start".into(), idle_timeout_secs: Some(t) }),
        network: args.egress.as_deref().map(egress_body),
        resources: args.resources.body(),
        ..CreateInstance::default()
    };
    let call = client.post("/instances", Some(&body));
    show(spin("creating instance".into(), call).await?, json)
}

/// CPU and memory in place of the size's (`resources`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ResourceFlags {
    /// vCPUs guaranteed, e.g. 0.5 (with the other three: CPU and memory in place of the size's).
    #[arg(long)]
    pub cpu: Option<String>,
    /// MiB of memory guaranteed.
    #[arg(long)]
    pub memory_mb: Option<u64>,
    /// Most vCPUs it may burst to.
    #[arg(long)]
    pub cpu_limit: Option<String>,
    /// Most MiB of memory it may use.
    #[arg(long)]
    pub memory_limit_mb: Option<u64>,
}

impl ResourceFlags {
    fn body(&self) -> Option<berth_api_types::ResourcesInput> {
        if self.cpu.is_none() && self.memory_mb.is_none() && self.cpu_limit.is_none() && self.memory_limit_mb.is_none()
        {
            return None;
        }
        Some(berth_api_types::ResourcesInput {
            cpu: self.cpu.clone().map(serde_json::Value::String),
            memory_mb: self.memory_mb,
            cpu_limit: self.cpu_limit.clone().map(serde_json::Value::String),
            memory_limit_mb: self.memory_limit_mb,
        })
    }
}

async fn set(client: &Client, args: SetArgs, json: bool) -> anyhow::Result<()> {
    let slow = args.size.is_some() || !args.env.is_empty();
    let body = UpdateInstance {
        name: args.name,
        size: args.size,
        metadata: object(args.meta),
        env: object(args.env),
        budget: args.budget_cap.map(|cap| BudgetInput { managed_cap_usd: Some(cap), topup_micros: None, models: None }),
        expose: match (args.no_expose, args.expose.is_empty()) {
            (true, _) => Some(json!([])),
            (false, false) => Some(json!(args.expose)),
            (false, true) => None,
        },
        network: args.egress.as_deref().map(egress_body),
        resources: args.resources.body(),
    };
    if body.name.is_none()
        && body.resources.is_none()
        && body.size.is_none()
        && body.metadata.is_none()
        && body.env.is_none()
        && body.budget.is_none()
        && body.expose.is_none()
        && body.network.is_none()
    {
        anyhow::bail!("nothing to change: pass --name, --size, --meta, --env, --budget-cap, --expose or --egress");
    }
    let path = format!("/instances/{}", args.id);
    let call = client.patch(&path, &body);
    let answer = if slow { spin(format!("updating {}", args.id), call).await? } else { call.await? };
    show(answer, json)
}

async fn list(client: &Client, args: ListArgs, json: bool) -> anyhow::Result<()> {
    let mut query: Vec<(&str, String)> = [("user", args.user), ("status", args.status), ("template", args.template)]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
    query.extend(args.limit.map(|n| ("limit", n.to_string())));
    let mut data = Vec::new();
    let mut cursor: Option<String> = None;
    let more = loop {
        let mut q = query.clone();
        q.extend(cursor.take().map(|c| ("cursor", c)));
        let page: Value = client.get("/instances", &q).await?;
        let typed: List<Instance> = serde_json::from_value(page.clone())?;
        data.extend(page.get("data").and_then(Value::as_array).cloned().unwrap_or_default());
        match typed.next_cursor {
            Some(next) if args.all => cursor = Some(next),
            next => break next,
        }
    };
    if json {
        let has_more = more.is_some();
        return output::json(&json!({"object": "list", "data": data, "has_more": has_more, "next_cursor": more}));
    }
    let instances: Vec<Instance> = serde_json::from_value(Value::Array(data))?;
    instance_view::table(&instances);
    if more.is_some() {
        eprintln!("(more instances: pass --all to list them all)");
    }
    Ok(())
}

async fn delete(client: &Client, args: DeleteArgs, json: bool) -> anyhow::Result<()> {
    let query = if args.purge { vec![("purge", "true".to_string())] } else { vec![] };
    let path = format!("/instances/{}", args.id);
    let answer = spin(format!("deleting {}", args.id), client.delete(&path, &query)).await?;
    if json {
        return output::json(&answer);
    }
    if answer.get("purged").and_then(Value::as_bool) == Some(true) {
        println!("purged {}: the instance and its data are gone", args.id);
        return Ok(());
    }
    show(answer, false)?;
    println!("\nrestore it with `berth instances restore {}` during the retention period", args.id);
    Ok(())
}

/// Print one instance as JSON or as a detail view.
fn show(answer: Value, json: bool) -> anyhow::Result<()> {
    if json {
        return output::json(&answer);
    }
    instance_view::details(&serde_json::from_value(answer)?);
    Ok(())
}

/// `K=V` pairs as a JSON object, or nothing when there are none.
fn object(pairs: Vec<(String, String)>) -> Option<Value> {
    let map: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    (!map.is_empty()).then_some(Value::Object(map))
}

/// `KEY=VALUE` (split on the first `=`), for `--meta` and `--env`.
pub(crate) fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

fn parse_size(s: &str) -> Result<u32, String> {
    match s.parse() {
        Ok(n @ (1 | 2 | 4 | 8)) => Ok(n),
        _ => Err(format!("size must be 1, 2, 4 or 8, got `{s}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_split_on_the_first_equals() {
        assert_eq!(parse_pair("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_pair("A="), Ok(("A".into(), String::new())));
        assert!(parse_pair("=x").is_err());
        assert!(parse_pair("nope").is_err());
    }

    #[test]
    fn sizes_are_the_four_classes() {
        assert_eq!(parse_size("4"), Ok(4));
        assert!(parse_size("3").is_err());
        assert!(parse_size("x").is_err());
    }
}
