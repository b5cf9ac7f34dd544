//! `berth billing ...`: the workspace's wallet, its ledger, and top-ups (admin keys).

use crate::client::{Client, ClientArgs};
use crate::output;
use berth_api_types::{Billing, LedgerEntry, List, WalletTopup};
use berth_core::money::format_usd as usd;
use clap::{Args, Subcommand};

/// `berth billing`: its connection flags and the action.
#[derive(Debug, Args)]
pub struct BillingArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: BillingCommand,
}

/// What to do with the wallet.
#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// The wallet's balance and this month's usage per instance.
    Show,
    /// The ledger, newest first.
    Ledger {
        /// Entries to show (1–100).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// `next_cursor` of a previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Add money to a wallet (admin keys): `berth billing topup 25` adds $25.
    Topup {
        /// Dollars, exact to the micro-dollar (`25`, `0.5`).
        usd: String,
        /// The workspace (default: the key's own).
        #[arg(long)]
        workspace: Option<String>,
        /// Shown on the ledger entry.
        #[arg(long)]
        description: Option<String>,
    },
}

/// Run `berth billing ...`.
pub async fn run(args: BillingArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    match args.command {
        BillingCommand::Show => {
            let answer = client.get("/billing", &[]).await?;
            if json {
                return output::json(&answer);
            }
            let b: Billing = serde_json::from_value(answer)?;
            output::details(&[
                ("workspace", b.workspace_id),
                ("balance", usd(b.balance_micros)),
                ("enforced", if b.enforced { "yes (--billing)" } else { "no: usage is metered, not refused" }.into()),
                ("since", output::utc(b.period_start)),
                ("managed usage", usd(b.managed_usage_micros)),
                ("compute", usd(b.compute_micros)),
            ]);
            if !b.usage.is_empty() {
                println!();
                let rows: Vec<Vec<String>> = b
                    .usage
                    .into_iter()
                    .map(|u| {
                        vec![
                            u.date,
                            output::or_dash(u.instance.as_deref()),
                            u.kind,
                            usd(u.micros),
                            u.calls.to_string(),
                            format!("{}/{}", u.input_tokens, u.output_tokens),
                        ]
                    })
                    .collect();
                output::table(&["DATE", "INSTANCE", "KIND", "AMOUNT", "CALLS", "TOKENS IN/OUT"], &rows);
            }
        }
        BillingCommand::Ledger { limit, cursor } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(c) = cursor {
                query.push(("cursor", c));
            }
            let answer = client.get("/billing/ledger", &query).await?;
            if json {
                return output::json(&answer);
            }
            let page: List<LedgerEntry> = serde_json::from_value(answer)?;
            let rows: Vec<Vec<String>> = page
                .data
                .into_iter()
                .map(|e| {
                    vec![
                        output::utc(e.created_at),
                        e.kind,
                        usd(e.amount_micros),
                        usd(e.balance_micros),
                        output::or_dash(e.instance.as_deref()),
                        e.description,
                    ]
                })
                .collect();
            output::table(&["WHEN", "KIND", "AMOUNT", "BALANCE", "INSTANCE", "DESCRIPTION"], &rows);
            if let Some(next) = page.next_cursor {
                println!("more: berth billing ledger --cursor {next}");
            }
        }
        BillingCommand::Topup { usd: amount, workspace, description } => {
            let micros = berth_core::money::parse_micros(&amount).map_err(|e| anyhow::anyhow!("the amount: {e}"))?;
            let workspace = match workspace {
                Some(w) => w,
                None => {
                    let b: Billing = serde_json::from_value(client.get("/billing", &[]).await?)?;
                    b.workspace_id
                }
            };
            let body = WalletTopup { micros: Some(micros), description };
            let answer = client.post(&format!("/workspaces/{workspace}/topup"), Some(&body)).await?;
            if json {
                return output::json(&answer);
            }
            let e: LedgerEntry = serde_json::from_value(answer)?;
            println!("added {} to {workspace}: balance {}", usd(e.amount_micros), usd(e.balance_micros));
        }
    }
    Ok(())
}
