//! `berth stdin ID TEXT`: write a line to the main program of a stdin template (an
//! interactive program, `python3 -i` say) and print what it answered.

use crate::client::{Client, ClientArgs};
use crate::output;
use berth_api_types::{StdinRequest, StdinResult};
use clap::Args;

/// `berth stdin`.
#[derive(Debug, Args)]
pub struct StdinArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// What to write (a newline is added).
    pub input: String,
    /// The reply ends once the program printed nothing for this long (ms; server default 300).
    #[arg(long, value_name = "MS")]
    pub quiet_ms: Option<u64>,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `berth stdin`.
pub async fn run(args: StdinArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let body = StdinRequest { input: args.input, newline: None, quiet_ms: args.quiet_ms, timeout_secs: None };
    let answer = client.post(&format!("/instances/{}/stdin", args.id), Some(&body)).await?;
    if args.client.json {
        return output::json(&answer);
    }
    let r: StdinResult = serde_json::from_value(answer)?;
    output::stdout(r.stdout.as_bytes());
    output::stderr(r.stderr.as_bytes());
    Ok(())
}
