//! Writing to the main program of a stdin template (`POST /v1/instances/{id}/stdin`):
//! attach to its standard streams, write the input, and collect what it prints until
//! it goes quiet. Writes to one instance take turns, so replies never interleave;
//! everything the program prints is in its logs too.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use berth_api_types::{StdinRequest, StdinResult};
use berth_runtime::Output;
use berth_store::InstanceRecord;
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Longest input written at once.
pub const MAX_INPUT: usize = 1 << 20;
/// Most bytes of reply kept.
pub const MAX_OUTPUT: usize = 1 << 20;
/// Before its first output, a program is given at least this long.
const FIRST_OUTPUT: Duration = Duration::from_secs(2);

/// A checked body: the bytes to write, the quiet window, the overall bound.
pub struct Checked {
    input: Vec<u8>,
    quiet: Duration,
    timeout: Duration,
}

pub fn validate(body: StdinRequest) -> ApiResult<Checked> {
    if body.input.len() > MAX_INPUT {
        return Err(ApiError::invalid("input", format!("`input` is longer than {} KiB", MAX_INPUT >> 10)));
    }
    let quiet = body.quiet_ms.unwrap_or(300);
    if !(10..=10_000).contains(&quiet) {
        return Err(ApiError::invalid("quiet_ms", "`quiet_ms` must be between 10 and 10000"));
    }
    let timeout = body.timeout_secs.unwrap_or(30);
    if !(1..=300).contains(&timeout) {
        return Err(ApiError::invalid("timeout_secs", "`timeout_secs` must be between 1 and 300"));
    }
    let mut input = body.input.into_bytes();
    if body.newline.unwrap_or(true) && !input.ends_with(b"\n") {
        input.push(b'\n');
    }
    Ok(Checked { input, quiet: Duration::from_millis(quiet), timeout: Duration::from_secs(timeout) })
}

/// Writes the input and answers what the program printed in reply.
pub async fn write(state: &AppState, rec: &InstanceRecord, c: Checked) -> ApiResult<StdinResult> {
    let started = Instant::now();
    // One bound for all of it: waiting for an earlier turn, attaching, writing (a
    // program that stopped reading blocks the write) and reading the reply.
    let deadline = tokio::time::Instant::now() + c.timeout;
    let setup = async {
        let turn = state.stdin_turns.lock(&rec.id).await;
        let session = state.runtime.attach(&rec.id).await?;
        let mut input = session.input.ok_or_else(|| ApiError::Conflict {
            code: "stdin_unavailable",
            message: "the instance's main program has no standard input to write to".into(),
        })?;
        input.write_all(&c.input).await.map_err(|e| gone(&e))?;
        input.flush().await.map_err(|e| gone(&e))?;
        Ok::<_, ApiError>((turn, session.output, input))
    };
    let (_turn, mut output, input) = tokio::time::timeout_at(deadline, setup).await.map_err(|_| {
        ApiError::Conflict {
            code: "stdin_unavailable",
            message: format!(
                "the input could not be written within {} s (`timeout_secs`): an earlier input is still being answered, or the program does not read its input",
                c.timeout.as_secs()
            ),
        }
    })??;
    let (mut all, mut out, mut err) = (Vec::new(), Vec::new(), Vec::new());
    let mut truncated = false;
    let mut timed_out = false;
    loop {
        let window = if all.is_empty() { c.quiet.max(FIRST_OUTPUT) } else { c.quiet };
        let until = (tokio::time::Instant::now() + window).min(deadline);
        match tokio::time::timeout_at(until, output.next()).await {
            Ok(Some(Ok(chunk))) => {
                let (bytes, to) = match chunk {
                    Output::Stdout(b) => (b, &mut out),
                    Output::Stderr(b) => (b, &mut err),
                };
                if all.len() + bytes.len() > MAX_OUTPUT {
                    truncated = true;
                    continue;
                }
                all.extend_from_slice(&bytes);
                to.extend_from_slice(&bytes);
            }
            // The program ended (its streams closed), or the runtime went away.
            Ok(None) | Ok(Some(Err(_))) => break,
            Err(_) => {
                // The overall bound ran out before the program went quiet.
                timed_out = until == deadline;
                break;
            }
        }
    }
    drop(input);
    Ok(StdinResult {
        output: String::from_utf8_lossy(&all).into_owned(),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        duration_ms: started.elapsed().as_millis() as u64,
        timed_out,
        truncated,
    })
}

fn gone(e: &std::io::Error) -> ApiError {
    ApiError::Conflict {
        code: "stdin_unavailable",
        message: format!("the instance's main program no longer reads its standard input ({e})"),
    }
}
