//! `berth health ID`: resource use and agent health of one instance.

use crate::client::{Client, ClientArgs};
use crate::output;
use berth_api_types::InstanceHealth;
use clap::Args;

/// `berth health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    // Last: its help heading would otherwise also title the flags declared after it.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `berth health`.
pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let answer = client.get(&format!("/instances/{}/health", args.id), &[]).await?;
    if args.client.json {
        return output::json(&answer);
    }
    let h: InstanceHealth = serde_json::from_value(answer)?;
    output::details(&view(&h, output::now()));
    Ok(())
}

/// The `key: value` lines of a health answer, ages measured from `now`.
pub fn view(h: &InstanceHealth, now: i64) -> Vec<(&'static str, String)> {
    let memory = if h.memory_limit_mb > 0.0 {
        let pct = h.memory_mb / h.memory_limit_mb * 100.0;
        format!("{:.1} MB of {:.0} MB ({pct:.1}%)", h.memory_mb, h.memory_limit_mb)
    } else {
        format!("{:.1} MB", h.memory_mb)
    };
    let heartbeat = match h.last_heartbeat {
        Some(at) => format!("{} ago", output::age(at, now)),
        None => "never".into(),
    };
    let gateway = match (h.gateway.ok, h.gateway.response_time_ms) {
        (true, Some(ms)) => format!("ok ({ms:.1} ms)"),
        (true, None) => "ok".into(),
        (false, _) => "not answering".into(),
    };
    vec![
        ("status", h.status.clone()),
        ("cpu", format!("{:.1}%", h.cpu_percent)),
        ("memory", memory),
        ("disk", format!("{:.1} MB", h.disk_mb)),
        ("pids", h.pids.to_string()),
        ("uptime", if h.uptime_secs > 0 { output::duration(h.uptime_secs) } else { "-".into() }),
        ("last heartbeat", heartbeat),
        ("restart count", h.restart_count.to_string()),
        ("gateway", gateway),
        ("requests", h.requests_total.to_string()),
        (
            "network",
            format!("{} received, {} sent", output::bytes(h.network_rx_bytes), output::bytes(h.network_tx_bytes)),
        ),
        ("open now", format!("{} (streams, WebSockets, execs, shells)", h.open_connections)),
        ("agent turn", if h.turn_running { "running".into() } else { "idle".into() }),
    ]
}
