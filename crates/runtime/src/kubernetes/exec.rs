//! Processes inside instance pods: `pods/exec` over a WebSocket, through the agent.
//!
//! As on Docker, every exec runs as `berth-agent exec-session --token T`, which makes
//! the command lead a marked session; a kill is a second exec, `berth-agent exec-kill
//! T`, inside the pod. Kubernetes' exec has no environment or working directory: the
//! agent takes them as `--env` and `--cwd`.
//!
//! Kubernetes 1.20 speaks version 4 of the exec protocol, which cannot close stdin
//! alone (closing it ends the whole exec, output and exit code lost). A command whose
//! stdin the caller writes therefore runs with `--stdin-framed`: each write travels as
//! a frame (4-byte big-endian length, then the bytes), and the end of input as an
//! empty frame, after which the agent closes the command's stdin while the socket
//! stays open for its output and exit code.

use super::spec::MAIN;
use super::{map_err, KubeRuntime};
use crate::instance::AGENT_PATH;
use crate::{ExecRequest, ExecSession, Output, Result, RuntimeError, HOME_DIR};
use futures_util::{SinkExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, TerminalSize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

/// One exec berth started: where, how to kill it, its exit code once known.
struct Entry {
    pod: String,
    token: String,
    code: Arc<Mutex<Option<i64>>>,
    resize: Option<futures_channel::mpsc::Sender<TerminalSize>>,
    /// When its exit code was read (entries are forgotten a while after).
    read_at: Option<Instant>,
}

/// The execs of this server.
#[derive(Default)]
pub(super) struct Execs(Mutex<HashMap<String, Entry>>);

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exit code of a finished exec; `None` while it runs.
    pub fn status(&self, exec_id: &str) -> Result<Option<i64>> {
        let mut all = self.lock();
        let entry = all.get_mut(exec_id).ok_or_else(|| RuntimeError::Failed(format!("no exec {exec_id}")))?;
        let code = *entry.code.lock().unwrap_or_else(|e| e.into_inner());
        if code.is_some() {
            entry.read_at.get_or_insert_with(Instant::now);
        }
        Ok(code)
    }

    pub async fn resize(&self, exec_id: &str, cols: u16, rows: u16) -> Result<()> {
        let sender = self.lock().get(exec_id).and_then(|e| e.resize.clone());
        let Some(mut sender) = sender else {
            return Err(RuntimeError::Failed(format!("exec {exec_id} has no terminal")));
        };
        sender
            .send(TerminalSize { width: cols, height: rows })
            .await
            .map_err(|_| RuntimeError::Failed(format!("exec {exec_id} has ended")))
    }

    fn insert(&self, id: String, entry: Entry) {
        let mut all = self.lock();
        // Forget execs whose code was read a while ago.
        all.retain(|_, e| e.read_at.is_none_or(|t| t.elapsed() < Duration::from_secs(300)));
        all.insert(id, entry);
    }
}

/// The 4-byte big-endian length header of a frame of `len` bytes (0: end of input).
fn frame_header(len: usize) -> [u8; 4] {
    (len as u32).to_be_bytes()
}

/// The exit code in an exec's final status: 0 on success, the `ExitCode` cause of a
/// `NonZeroExitCode` failure, -1 when the status says neither.
fn exit_code(status: &Status) -> i64 {
    if status.status.as_deref() == Some("Success") {
        return 0;
    }
    status
        .details
        .as_ref()
        .and_then(|d| d.causes.as_ref())
        .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
        .and_then(|c| c.message.as_deref()?.parse().ok())
        .unwrap_or(-1)
}

pub(super) async fn start(rt: &KubeRuntime, pod: &str, req: ExecRequest) -> Result<ExecSession> {
    let token = berth_core::ids::random_label(20);
    let framed = req.stdin && !req.tty;
    let mut cmd = vec![AGENT_PATH.to_string(), "exec-session".into(), "--token".into(), token.clone()];
    cmd.extend(["--cwd".into(), req.cwd.clone().unwrap_or_else(|| HOME_DIR.to_string())]);
    for kv in &req.env {
        cmd.extend(["--env".into(), kv.clone()]);
    }
    if framed {
        cmd.push("--stdin-framed".into());
    }
    cmd.push("--".into());
    cmd.extend(req.cmd);
    let ap = AttachParams::default().container(MAIN).stdin(req.stdin).stdout(true).stderr(!req.tty).tty(req.tty);
    let mut proc = rt.pods.exec(pod, cmd, &ap).await.map_err(map_err)?;
    let id = format!("k8s-{}", berth_core::ids::random_label(16));
    let code = Arc::new(Mutex::new(None));
    let resize = if req.tty { proc.terminal_size() } else { None };
    rt.execs.insert(id.clone(), Entry { pod: pod.to_string(), token, code: code.clone(), resize, read_at: None });
    let stdout = proc.stdout().map(|r| ReaderStream::new(r).map(|b| b.map(|b| Output::Stdout(b.to_vec()))));
    let stderr = proc.stderr().map(|r| ReaderStream::new(r).map(|b| b.map(|b| Output::Stderr(b.to_vec()))));
    let output = match (stdout, stderr) {
        (Some(o), Some(e)) => futures_util::stream::select(o, e).boxed(),
        (Some(o), None) => o.boxed(),
        (None, Some(e)) => e.boxed(),
        (None, None) => futures_util::stream::empty().boxed(),
    };
    let output = output.map(|r| r.map_err(|e| RuntimeError::Unavailable(format!("kubernetes exec: {e}")))).boxed();
    let status = proc.take_status();
    let (done_tx, done_rx) = tokio::sync::watch::channel(false);
    let stdin = proc.stdin();
    // The exec lives as long as this task: its code is stored when the status arrives.
    tokio::spawn(async move {
        let st = match status {
            Some(s) => s.await,
            None => None,
        };
        *code.lock().unwrap_or_else(|e| e.into_inner()) = Some(st.as_ref().map_or(-1, exit_code));
        let _ = done_tx.send(true);
        let _ = proc.join().await;
    });
    let input: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>> = match (stdin, framed) {
        (Some(raw), false) => Some(Box::pin(raw)),
        (Some(mut raw), true) => {
            let (writer, mut reader) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    let n = reader.read(&mut buf).await.unwrap_or(0);
                    if raw.write_all(&frame_header(n)).await.is_err() || raw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = raw.flush().await;
                    if n == 0 {
                        break;
                    }
                }
                // Closing stdin would end the exec: it stays open until the exec ends.
                let mut done = done_rx;
                let _ = done.wait_for(|d| *d).await;
                drop(raw);
            });
            Some(Box::pin(writer))
        }
        (None, _) => None,
    };
    Ok(ExecSession { id, output, input })
}

/// Kills an exec and every process it started, with a second exec inside the pod.
pub(super) async fn kill(rt: &KubeRuntime, exec_id: &str) -> Result<()> {
    let Some((pod, token)) = rt.execs.lock().get(exec_id).map(|e| (e.pod.clone(), e.token.clone())) else {
        return Ok(());
    };
    let cmd = vec![AGENT_PATH.to_string(), "exec-kill".into(), token];
    let ap = AttachParams::default().container(MAIN).stdin(false).stdout(true).stderr(true);
    let mut proc = rt.pods.exec(&pod, cmd, &ap).await.map_err(map_err)?;
    let status = proc.take_status();
    let mut out = String::new();
    if let Some(mut e) = proc.stderr() {
        let _ = e.read_to_string(&mut out).await;
    }
    let st = match status {
        Some(s) => s.await,
        None => None,
    };
    let code = st.as_ref().map_or(-1, exit_code);
    if code != 0 {
        return Err(RuntimeError::Failed(format!("exec-kill in {pod} exited with {code}: {}", out.trim())));
    }
    Ok(())
}

/// The main process's standard streams (a template that reads stdin).
pub(super) async fn attach(rt: &KubeRuntime, pod: &str) -> Result<ExecSession> {
    let ap = AttachParams::default().container(MAIN).stdin(true).stdout(true).stderr(true);
    let mut proc = rt.pods.attach(pod, &ap).await.map_err(map_err)?;
    let stdout = proc.stdout().map(|r| ReaderStream::new(r).map(|b| b.map(|b| Output::Stdout(b.to_vec()))));
    let stderr = proc.stderr().map(|r| ReaderStream::new(r).map(|b| b.map(|b| Output::Stderr(b.to_vec()))));
    let output = match (stdout, stderr) {
        (Some(o), Some(e)) => futures_util::stream::select(o, e).boxed(),
        _ => futures_util::stream::empty().boxed(),
    };
    let output = output.map(|r| r.map_err(|e| RuntimeError::Unavailable(format!("kubernetes attach: {e}")))).boxed();
    let input = proc.stdin().map(|w| Box::pin(w) as std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>);
    tokio::spawn(async move {
        let _ = proc.join().await;
    });
    Ok(ExecSession { id: String::new(), output, input })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_from_statuses() {
        let ok: Status = serde_json::from_value(serde_json::json!({"status": "Success"})).unwrap();
        assert_eq!(exit_code(&ok), 0);
        let three: Status = serde_json::from_value(serde_json::json!({
            "status": "Failure", "reason": "NonZeroExitCode", "message": "command terminated with non-zero exit code",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
        }))
        .unwrap();
        assert_eq!(exit_code(&three), 3);
        let other: Status =
            serde_json::from_value(serde_json::json!({"status": "Failure", "message": "internal error"})).unwrap();
        assert_eq!(exit_code(&other), -1);
    }

    #[test]
    fn frames_are_length_prefixed() {
        assert_eq!(frame_header(5), [0, 0, 0, 5]);
        assert_eq!(frame_header(0), [0, 0, 0, 0], "an empty frame ends the input");
        assert_eq!(frame_header(70_000), [0, 1, 0x11, 0x70]);
    }
}
