//! `berth logs [-f] ID`: the output of an instance's main process; stdout lines to
//! stdout, stderr lines to stderr, and with `--follow` new lines as they come.

use crate::client::{Client, ClientArgs};
use crate::output;
use crate::sse::SseStream;
use anyhow::Context;
use berth_api_types::{LogEntry, Logs};
use clap::Args;

/// `berth logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// Keep printing new lines as they are written, until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines (1-10000; server default 100).
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<u32>,
    /// Only lines written since this Unix time (seconds).
    #[arg(long, value_name = "UNIX_SECS")]
    pub since: Option<i64>,
    /// Prefix each line with the time it was written.
    #[arg(short, long)]
    pub timestamps: bool,
    // Last: its help heading would otherwise also title the flags declared after it.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `berth logs`.
pub async fn run(args: LogsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    let mut query = vec![];
    query.extend(args.lines.map(|n| ("lines", n.to_string())));
    query.extend(args.since.map(|s| ("since", s.to_string())));
    let path = format!("/instances/{}/logs", args.id);
    if !args.follow {
        let answer = client.get(&path, &query).await?;
        if json {
            return output::json(&answer);
        }
        let logs: Logs = serde_json::from_value(answer)?;
        for entry in &logs.logs {
            print_entry(entry, args.timestamps);
        }
        return Ok(());
    }
    query.push(("follow", "true".into()));
    let resp = client.get_stream(&path, &query).await?;
    let mut events = SseStream::new(&client, resp);
    let follow = async {
        while let Some(ev) = events.next().await? {
            let entry: LogEntry = serde_json::from_str(&ev.data).context("unexpected log event")?;
            if json {
                // One JSON object per line, for `jq` and friends.
                output::stdout(format!("{}\n", serde_json::to_string(&entry)?).as_bytes());
            } else {
                print_entry(&entry, args.timestamps);
            }
        }
        eprintln!("(the log stream ended: the instance stopped or restarted)");
        anyhow::Ok(())
    };
    tokio::select! {
        done = follow => done,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// One line, to stdout or stderr after the stream it came from.
fn print_entry(entry: &LogEntry, timestamps: bool) {
    let message = entry.message.trim_end_matches(['\n', '\r']);
    let line = if timestamps { format!("{} {message}\n", entry.timestamp) } else { format!("{message}\n") };
    if entry.stream == "stderr" {
        output::stderr(line.as_bytes());
    } else {
        output::stdout(line.as_bytes());
    }
}
