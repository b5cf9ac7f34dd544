//! Running commands inside instances: validation, caps, timeouts that kill the
//! whole process tree, and the streaming variant.

use crate::error::{invalid_state, ApiError, ApiResult};
use crate::state::AppState;
use berth_api_types::{Command, ExecRequest, ExecResult};
use berth_core::{InstanceId, Status};
use berth_runtime::{ExecRequest as RtExec, Output};
use futures_util::StreamExt;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

pub(crate) const DEFAULT_TIMEOUT: u64 = 60;
pub(crate) const MAX_TIMEOUT: u64 = 3600;
const DEFAULT_CAP: usize = 1 << 20;
pub(crate) const MAX_CAP: usize = 16 << 20;

/// An exec body that passed validation.
#[derive(Debug, Clone)]
pub struct ValidExec {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub stdin: Option<String>,
    pub timeout: Duration,
    pub cap: usize,
    pub stream: bool,
}

/// Checks an exec body; errors name the field.
pub fn validate(body: ExecRequest) -> ApiResult<ValidExec> {
    let argv = match body.command {
        Command::Argv(v) if v.is_empty() => {
            return Err(ApiError::invalid("command", "`command` is required: an argv list or a shell string"))
        }
        Command::Argv(v) => v,
        Command::Shell(s) if s.trim().is_empty() => {
            return Err(ApiError::invalid("command", "`command` must not be empty"))
        }
        Command::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s],
    };
    if argv.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::invalid("command", "`command` must not contain NUL bytes"));
    }
    let mut env = vec![];
    for (k, v) in body.env.unwrap_or_default() {
        if !super::validate::is_env_name(&k) || v.contains('\0') {
            return Err(ApiError::invalid(
                format!("env.{k}"),
                format!("`{k}` is not a valid variable name or its value holds NUL"),
            ));
        }
        env.push(format!("{k}={v}"));
    }
    if let Some(cwd) = &body.cwd {
        if !cwd.starts_with('/') || cwd.contains('\0') {
            return Err(ApiError::invalid("cwd", "`cwd` must be an absolute path"));
        }
    }
    let timeout = body.timeout_secs.unwrap_or(DEFAULT_TIMEOUT);
    if timeout == 0 || timeout > MAX_TIMEOUT {
        return Err(ApiError::invalid("timeout_secs", format!("`timeout_secs` must be between 1 and {MAX_TIMEOUT}")));
    }
    let cap = body.max_output_bytes.unwrap_or(DEFAULT_CAP);
    if cap > MAX_CAP {
        return Err(ApiError::invalid("max_output_bytes", format!("`max_output_bytes` must be at most {MAX_CAP}")));
    }
    Ok(ValidExec {
        argv,
        env,
        cwd: body.cwd,
        stdin: body.stdin,
        timeout: Duration::from_secs(timeout),
        cap,
        stream: body.stream.unwrap_or(false),
    })
}

/// What a running exec reports as it goes.
#[derive(Debug)]
pub enum ExecEvent {
    Stdout(String),
    Stderr(String),
    Exit(ExecResult),
}

/// Checks the instance runs, then runs the command, sending events to `tx`.
/// Returns when the process ended (or was killed at the timeout, or the receiver went away).
pub async fn run(
    state: AppState,
    id: InstanceId,
    status: Status,
    v: ValidExec,
    tx: mpsc::Sender<ExecEvent>,
) -> ApiResult<()> {
    if status != Status::Running {
        return Err(invalid_state("exec", status));
    }
    let started = Instant::now();
    let req = RtExec { cmd: v.argv, env: v.env, cwd: v.cwd, stdin: v.stdin.is_some(), tty: false };
    let mut session = state.runtime.exec(&id, req).await?;
    if let (Some(mut input), Some(data)) = (session.input.take(), v.stdin) {
        // Feed stdin on the side so a process that writes before reading cannot deadlock.
        tokio::spawn(async move {
            let _ = input.write_all(data.as_bytes()).await;
            let _ = input.shutdown().await;
        });
    }
    let deadline = tokio::time::Instant::now() + v.timeout;
    let (mut out, mut err) = (Capped::new(v.cap), Capped::new(v.cap));
    let mut timed_out = false;
    loop {
        tokio::select! {
            chunk = session.output.next() => match chunk {
                Some(Ok(Output::Stdout(b))) => {
                    if let Some(text) = out.take(&b) {
                        if tx.send(ExecEvent::Stdout(text)).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Ok(Output::Stderr(b))) => {
                    if let Some(text) = err.take(&b) {
                        if tx.send(ExecEvent::Stderr(text)).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {
                    for (stream, text) in [(0, out.finish()), (1, err.finish())] {
                        if let Some(text) = text {
                            let ev = if stream == 0 { ExecEvent::Stdout(text) } else { ExecEvent::Stderr(text) };
                            let _ = tx.send(ev).await;
                        }
                    }
                    break;
                }
            },
            _ = tokio::time::sleep_until(deadline) => {
                timed_out = true;
                break;
            }
            _ = tx.closed() => break,
        }
    }
    if timed_out || tx.is_closed() {
        // The client left or time ran out: the whole tree goes.
        state.runtime.exec_kill(&session.id).await?;
    }
    let code = exit_code(&state, &session.id).await?;
    let duration_ms = started.elapsed().as_millis() as u64;
    state.metrics.exec(if timed_out { "timeout" } else { "completed" }, started.elapsed().as_secs_f64());
    let result = ExecResult {
        exit_code: code.unwrap_or(if timed_out { 137 } else { -1 }),
        stdout: String::new(),
        stderr: String::new(),
        duration_ms,
        timed_out,
        truncated: out.truncated || err.truncated,
    };
    let _ = tx.send(ExecEvent::Exit(result)).await;
    Ok(())
}

/// One output stream of a command: decoded as UTF-8 across chunk boundaries and
/// capped at `cap` bytes *as sent* (JSON-encoded: a NUL byte counts six), so no
/// output makes the answer bigger than asked.
struct Capped {
    decoder: berth_core::text::Utf8Decoder,
    left: usize,
    truncated: bool,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Self { decoder: Default::default(), left: cap, truncated: false }
    }

    fn keep(&mut self, text: String) -> Option<String> {
        if self.truncated || text.is_empty() {
            self.truncated |= !text.is_empty();
            return None;
        }
        let (kept, used) = berth_core::text::json_prefix(&text, self.left);
        self.left -= used;
        if kept.len() < text.len() {
            self.truncated = true;
        }
        (!kept.is_empty()).then(|| kept.to_string())
    }

    /// What of `chunk` may still be sent.
    fn take(&mut self, chunk: &[u8]) -> Option<String> {
        if self.truncated {
            return None;
        }
        let text = self.decoder.push(chunk);
        self.keep(text)
    }

    /// A character the output ended in the middle of.
    fn finish(&mut self) -> Option<String> {
        let text = self.decoder.finish();
        self.keep(text)
    }
}

/// The exit code of an exec whose output has ended, or `None` if Docker has not
/// recorded one within two seconds (the stream ends a moment before the code is set).
pub async fn exit_code(state: &AppState, exec_id: &str) -> Result<Option<i64>, berth_runtime::RuntimeError> {
    for _ in 0..200 {
        if let Some(code) = state.runtime.exec_status(exec_id).await? {
            return Ok(Some(code));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(None)
}

/// The output of a finished exec, JSON-escaped in the chunks it came in, with the
/// room it takes in the exec buffer (released when this is dropped).
pub struct Gathered {
    /// The result; its `stdout` and `stderr` are empty (they are the chunks).
    pub result: ExecResult,
    stdout: Vec<bytes::Bytes>,
    stderr: Vec<bytes::Bytes>,
    _held: Vec<tokio::sync::OwnedSemaphorePermit>,
}

/// A chunk of output as the inside of a JSON string (no quotes).
fn escaped(text: &str) -> bytes::Bytes {
    let quoted = serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into());
    let n = quoted.len();
    bytes::Bytes::from(quoted).slice(1..n - 1)
}

/// Runs to completion and gathers the output. What is held in memory for all
/// collecting execs together is bounded (`--exec-buffer-mb`, counted as sent: JSON-
/// escaped): past it, output is truncated (and said so) rather than kept; streamed
/// execs hold nothing.
pub async fn gather(state: AppState, id: InstanceId, status: Status, v: ValidExec) -> ApiResult<Gathered> {
    // A short queue: each exec in flight holds at most this many chunks unaccounted.
    let (tx, mut rx) = mpsc::channel(8);
    let budget = state.exec_buffer.clone();
    let task = tokio::spawn(run(state, id, status, v, tx));
    let (mut stdout, mut stderr, mut result) = (Vec::new(), Vec::new(), None);
    let mut held: Vec<tokio::sync::OwnedSemaphorePermit> = Vec::new();
    let mut starved = false;
    while let Some(ev) = rx.recv().await {
        let (buf, text) = match ev {
            ExecEvent::Stdout(s) => (&mut stdout, s),
            ExecEvent::Stderr(s) => (&mut stderr, s),
            ExecEvent::Exit(r) => {
                result = Some(r);
                continue;
            }
        };
        if starved {
            continue;
        }
        let chunk = escaped(&text);
        drop(text);
        let kib = chunk.len().div_ceil(1024) as u32;
        match budget.clone().try_acquire_many_owned(kib) {
            Ok(permit) => {
                held.push(permit);
                buf.push(chunk);
            }
            Err(_) => starved = true,
        }
    }
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(ApiError::Runtime(berth_runtime::RuntimeError::Failed(format!("exec aborted: {e}")))),
    }
    let mut r = result
        .ok_or_else(|| ApiError::Runtime(berth_runtime::RuntimeError::Failed("exec ended without a result".into())))?;
    r.truncated |= starved;
    Ok(Gathered { result: r, stdout, stderr, _held: held })
}

impl Gathered {
    /// The result as one JSON body, sent chunk by chunk as it was gathered (never
    /// copied into one string); the exec buffer's room is given back once it is sent.
    pub fn into_body(self) -> axum::body::Body {
        let Gathered { result, stdout, stderr, _held: held } = self;
        let head = format!("{{\"exit_code\":{},\"stdout\":\"", result.exit_code);
        let tail = format!(
            "\",\"duration_ms\":{},\"timed_out\":{},\"truncated\":{}}}",
            result.duration_ms, result.timed_out, result.truncated
        );
        let parts = std::iter::once(bytes::Bytes::from(head))
            .chain(stdout)
            .chain(std::iter::once(bytes::Bytes::from_static(b"\",\"stderr\":\"")))
            .chain(stderr)
            .chain(std::iter::once(bytes::Bytes::from(tail)));
        let stream = futures_util::stream::iter(parts).map(move |b| {
            let _room = &held;
            Ok::<_, std::convert::Infallible>(b)
        });
        axum::body::Body::from_stream(stream)
    }
}

/// Runs to completion and collects the output into an [`ExecResult`] (for berth's own
/// small commands; clients get [`Gathered::into_body`]).
pub async fn collect(state: AppState, id: InstanceId, status: Status, v: ValidExec) -> ApiResult<ExecResult> {
    let g = gather(state, id, status, v).await?;
    let join = |chunks: &[bytes::Bytes]| -> String {
        let mut quoted = Vec::with_capacity(chunks.iter().map(|c| c.len()).sum::<usize>() + 2);
        quoted.push(b'"');
        chunks.iter().for_each(|c| quoted.extend_from_slice(c));
        quoted.push(b'"');
        serde_json::from_slice(&quoted).unwrap_or_default()
    };
    let mut r = g.result.clone();
    r.stdout = join(&g.stdout);
    r.stderr = join(&g.stderr);
    Ok(r)
}
