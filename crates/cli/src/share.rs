//! `berth share ID`: a link a browser can open to an instance's port, until it
//! expires; `--list` shows the active ones, `--revoke SHARE_ID` ends one at once.

use crate::client::{Client, ClientArgs};
use crate::output;
use clap::Args;
use serde_json::{json, Value};

/// `berth share`.
#[derive(Debug, Args)]
pub struct ShareArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// Port to share (default: the instance's default port, its agent).
    #[arg(long)]
    pub port: Option<u16>,
    /// How long the link works: `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: u64,
    /// List the instance's active share links instead.
    #[arg(long, conflicts_with_all = ["revoke", "port"])]
    pub list: bool,
    /// Revoke a share link (its open pages lose access at once).
    #[arg(long, value_name = "SHARE_ID")]
    pub revoke: Option<String>,
    // Last: its help heading would otherwise also title the flags declared after it.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Run `berth share`.
pub async fn run(args: ShareArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    if args.list {
        let answer = client.get(&format!("/instances/{}/shares", args.id), &[]).await?;
        if json {
            return output::json(&answer);
        }
        let now = output::now();
        let rows: Vec<Vec<String>> = answer["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let expires = s["expires_at"].as_i64().unwrap_or(0);
                vec![
                    s["id"].as_str().unwrap_or("").to_string(),
                    s["port"].to_string(),
                    format!("in {}", output::duration((expires - now).max(0) as u64)),
                ]
            })
            .collect();
        output::table(&["ID", "PORT", "EXPIRES"], &rows);
        return Ok(());
    }
    if let Some(share) = args.revoke {
        let answer = client.delete(&format!("/instances/{}/shares/{share}", args.id), &[]).await?;
        if json {
            return output::json(&answer);
        }
        println!("revoked {share}");
        return Ok(());
    }
    let mut body = json!({"ttl_secs": args.ttl});
    if let Some(port) = args.port {
        body["port"] = json!(port);
    }
    let answer: Value = client.post(&format!("/instances/{}/share", args.id), Some(&body)).await?;
    if json {
        return output::json(&answer);
    }
    println!("{}", answer["url"].as_str().unwrap_or_default());
    if let Some(expires) = answer["expires_at"].as_i64() {
        eprintln!(
            "expires {} UTC; revoke with `berth share {} --revoke {}`",
            output::utc(expires),
            args.id,
            answer["id"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `90s`, `30m`, `2h`, `1d` or plain seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 's')) => (&s[..i], 1),
        Some((i, 'm')) => (&s[..i], 60),
        Some((i, 'h')) => (&s[..i], 3600),
        Some((i, 'd')) => (&s[..i], 86_400),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("expected a duration like 90s, 30m, 2h or 1d, got `{s}`"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1w").is_err());
    }
}
