//! `berth exec ID -- CMD ARGS...`: run a command in an instance, its output streamed
//! to the local stdout and stderr as it is produced, its exit code passed through.

use crate::client::{Client, ClientArgs};
use crate::instances::parse_pair;
use crate::output;
use crate::sse::SseStream;
use anyhow::{bail, Context};
use berth_api_types::{Command, ExecRequest};
use clap::Args;
use serde::Deserialize;
use serde_json::Value;
use std::io::Read;

/// Exit code of a command killed at its timeout (as `timeout(1)` answers).
pub const TIMED_OUT: i32 = 124;

/// `berth exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// Working directory in the instance (default: the home directory).
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// Extra environment variable, repeatable.
    #[arg(long = "env", value_name = "K=V", value_parser = parse_pair)]
    pub env: Vec<(String, String)>,
    /// Kill the command and everything it started after this many seconds (server default 60).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Give the command this file as standard input (`-`: this process's stdin).
    #[arg(long, value_name = "PATH|-")]
    pub stdin_file: Option<String>,
    /// The command and its arguments, after `--` (for shell syntax: `-- sh -c '...'`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
    // Last: its help heading would otherwise also title the flags declared after it.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// What the final `exit` event (and the non-streamed answer) says.
#[derive(Debug, Deserialize)]
struct Exit {
    exit_code: i64,
    #[serde(default)]
    duration_ms: u64,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    truncated: bool,
}

/// Run `berth exec`; answers the exit code this process should end with.
pub async fn run(args: ExecArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    let stdin = match args.stdin_file.as_deref() {
        None => None,
        Some(path) => Some(read_stdin(path)?),
    };
    let env = (!args.env.is_empty()).then(|| args.env.into_iter().collect());
    let body = ExecRequest {
        // Always an argv list, even one word with spaces: shell syntax is `-- sh -c '...'`.
        command: Command::Argv(args.command),
        stdin,
        env,
        cwd: args.cwd,
        timeout_secs: args.timeout,
        stream: Some(!json),
        max_output_bytes: None,
    };
    let path = format!("/instances/{}/exec", args.id);
    if json {
        let answer = client.post(&path, Some(&body)).await?;
        output::json(&answer)?;
        let exit: Exit = serde_json::from_value(answer).context("unexpected exec answer")?;
        return Ok(exit_code(&exit));
    }
    let resp = client.post_stream(&path, &body).await?;
    let mut events = SseStream::new(&client, resp);
    while let Some(ev) = events.next().await? {
        match ev.event.as_str() {
            "stdout" => output::stdout(chunk(&ev.data)?.as_bytes()),
            "stderr" => output::stderr(chunk(&ev.data)?.as_bytes()),
            "exit" => {
                let exit: Exit = serde_json::from_str(&ev.data).context("unexpected `exit` event")?;
                if exit.timed_out {
                    let secs = exit.duration_ms as f64 / 1000.0;
                    eprintln!(
                        "berth: the command timed out after {secs:.1}s; it and everything it started were killed"
                    );
                }
                if exit.truncated {
                    eprintln!("berth: output beyond the server's cap was dropped");
                }
                return Ok(exit_code(&exit));
            }
            "error" => {
                let message: Value = serde_json::from_str(&ev.data).unwrap_or(Value::Null);
                let message = message.get("message").and_then(Value::as_str).unwrap_or(&ev.data);
                bail!("exec failed: {message}");
            }
            _ => {}
        }
    }
    bail!("the server closed the exec stream before the command's exit status arrived")
}

/// The local exit code for a remote result: 124 on timeout, else the remote code
/// (which is 128+N for a signal), kept in the 0-255 a process can report.
fn exit_code(exit: &Exit) -> i32 {
    match exit.exit_code {
        _ if exit.timed_out => TIMED_OUT,
        code @ 0..=255 => code as i32,
        _ => 1,
    }
}

/// The text of one `{"data": "..."}` output event.
fn chunk(data: &str) -> anyhow::Result<String> {
    let chunk: Value = serde_json::from_str(data).context("unexpected output event")?;
    Ok(chunk.get("data").and_then(Value::as_str).unwrap_or_default().to_string())
}

/// The text of `--stdin-file`: a file, or all of this process's stdin for `-`.
fn read_stdin(path: &str) -> anyhow::Result<String> {
    let mut bytes = Vec::new();
    if path == "-" {
        std::io::stdin().read_to_end(&mut bytes).context("reading stdin")?;
    } else {
        bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    }
    String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("--stdin-file: the input must be UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i64, timed_out: bool) -> Exit {
        Exit { exit_code: code, duration_ms: 0, timed_out, truncated: false }
    }

    #[test]
    fn exit_codes_pass_through_and_timeouts_are_124() {
        assert_eq!(exit_code(&exit(0, false)), 0);
        assert_eq!(exit_code(&exit(3, false)), 3);
        assert_eq!(exit_code(&exit(137, false)), 137);
        assert_eq!(exit_code(&exit(137, true)), TIMED_OUT);
        assert_eq!(exit_code(&exit(-1, false)), 1);
        assert_eq!(exit_code(&exit(300, false)), 1);
    }
}
