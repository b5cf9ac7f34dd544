//! `berth events ID`: an instance's audit trail, one lifecycle change a row.

use crate::client::{Client, ClientArgs};
use crate::output::{self, or_dash};
use berth_api_types::{Event, List};
use clap::Args;

/// `berth events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    // Last: its help heading would otherwise also title the flags declared after it.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `berth events`.
pub async fn run(args: EventsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let answer = client.get(&format!("/instances/{}/events", args.id), &[]).await?;
    if args.client.json {
        return output::json(&answer);
    }
    let list: List<Event> = serde_json::from_value(answer)?;
    output::table(&["TIME (UTC)", "FROM → TO", "ACTOR", "REASON"], &rows(&list.data));
    if list.has_more {
        eprintln!("(only the first {} events are shown)", list.data.len());
    }
    Ok(())
}

/// One row per event: when, the transition, who, why.
pub fn rows(events: &[Event]) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|e| {
            let from = e.from.as_deref().unwrap_or("-");
            vec![output::utc(e.at), format!("{from} → {}", e.to), e.actor.clone(), or_dash(e.reason.as_deref())]
        })
        .collect()
}
