//! `berth shell ID`: an interactive terminal in an instance over the shell WebSocket.
//!
//! Protocol (`GET /v1/instances/{id}/shell?cols=&rows=&command=`): we send BINARY frames
//! of raw terminal input and TEXT frames of JSON control messages
//! (`{"type":"resize","cols","rows"}`); the server sends BINARY frames of terminal
//! output and a final TEXT frame `{"type":"exit","exit_code":N}` before it closes.
//! The local terminal is in raw mode while connected and always restored after.

use crate::client::{decode_error, root_cause, Client, ClientArgs, ClientError};
use anyhow::bail;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{IsTerminal, Read, Write};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{HeaderValue, AUTHORIZATION};
use tokio_tungstenite::tungstenite::{error::UrlError, Error as WsError, Message};

/// End-of-transmission (Ctrl-D): sent when piped input ends, so the remote shell sees EOF.
const EOT: u8 = 0x04;

/// `berth shell`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Instance id (`inst_...`).
    pub id: String,
    /// Run this command (through `/bin/sh -c`) instead of a login shell.
    #[arg(long, value_name = "CMD")]
    pub command: Option<String>,
    // Last: its help heading would otherwise also title the flags declared after it.
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The local terminal in raw mode for as long as this lives: dropping it (on return,
/// on error, while unwinding from a panic) restores the terminal.
struct RawMode;

impl RawMode {
    fn enable() -> anyhow::Result<Self> {
        crossterm::terminal::enable_raw_mode()?;
        Ok(RawMode)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Run `berth shell`; answers the remote shell's exit code.
pub async fn run(args: ShellArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.client)?;
    let tty = std::io::stdin().is_terminal();
    let (cols, rows) = if tty { crossterm::terminal::size().unwrap_or((80, 24)) } else { (80, 24) };
    let mut query = vec![("cols", cols.to_string()), ("rows", rows.to_string())];
    query.extend(args.command.map(|c| ("command", c)));
    let url = client.ws_url(&format!("/instances/{}/shell", args.id), &query)?;
    let mut request = url.as_str().into_client_request()?;
    request.headers_mut().insert(AUTHORIZATION, HeaderValue::from_str(&format!("Bearer {}", client.key()))?);
    let (socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| connect_error(&client, e))?;
    let (mut to_server, mut from_server) = socket.split();

    // From here on the terminal is raw (when it is one) until `_raw` is dropped.
    let _raw = if tty { Some(RawMode::enable()?) } else { None };
    let mut input = read_stdin(tty);
    let mut input_open = true;
    let mut winch = if tty { Some(signal(SignalKind::window_change())?) } else { None };
    let mut stdout = std::io::stdout();
    let mut exit_code = None;
    loop {
        tokio::select! {
            bytes = input.recv(), if input_open => match bytes {
                Some(bytes) => to_server.send(Message::Binary(bytes.into())).await?,
                None => input_open = false,
            },
            () = resized(&mut winch) => {
                if let Ok((cols, rows)) = crossterm::terminal::size() {
                    let resize = json!({"type": "resize", "cols": cols, "rows": rows});
                    to_server.send(Message::Text(resize.to_string().into())).await?;
                }
            }
            msg = from_server.next() => match msg {
                Some(Ok(Message::Binary(bytes))) => {
                    if stdout.write_all(&bytes).and_then(|()| stdout.flush()).is_err() {
                        break; // nobody reads our output any more
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Some(code) = exit_of(&text) {
                        exit_code = Some(code);
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => {} // ping, pong: answered by tungstenite itself
                Some(Err(e)) => bail!("the shell connection broke: {e}"),
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), to_server.close()).await;
    match exit_code {
        Some(code) => Ok(code),
        None => bail!("the shell connection closed without an exit status"),
    }
}

/// The code of a `{"type":"exit","exit_code":N}` control message, kept in 0-255.
fn exit_of(text: &str) -> Option<i32> {
    let msg: Value = serde_json::from_str(text).ok()?;
    if msg.get("type").and_then(Value::as_str) != Some("exit") {
        return None;
    }
    match msg.get("exit_code").and_then(Value::as_i64) {
        Some(code @ 0..=255) => Some(code as i32),
        _ => Some(1),
    }
}

/// Resolves on each SIGWINCH; never without a terminal.
async fn resized(winch: &mut Option<Signal>) {
    if let Some(s) = winch {
        if s.recv().await.is_some() {
            return;
        }
    }
    std::future::pending().await
}

/// Standard input, chunk by chunk, from a plain thread (a blocking read cannot be
/// cancelled, and a thread of its own does not hold up the runtime's shutdown).
/// Piped input is followed by Ctrl-D so the remote shell sees its end.
fn read_stdin(tty: bool) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => {
                    if !tty {
                        let _ = tx.blocking_send(vec![EOT]);
                    }
                    break;
                }
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    rx
}

/// Why the WebSocket upgrade failed, in the words of the other client commands.
fn connect_error(client: &Client, err: WsError) -> anyhow::Error {
    let url = client.base().to_string();
    let err = match err {
        WsError::Http(resp) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            decode_error(url, resp.status().as_u16(), &body)
        }
        WsError::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            ClientError::Unreachable { url, cause: "connection refused".into() }
        }
        WsError::Url(UrlError::TlsFeatureNotEnabled) => ClientError::Transport {
            url,
            cause: "`berth shell` speaks plain ws:// only: reach the server over http://".into(),
        },
        e => ClientError::Transport { url, cause: root_cause(&e) },
    };
    err.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_messages_carry_the_code() {
        assert_eq!(exit_of(r#"{"type":"exit","exit_code":3}"#), Some(3));
        assert_eq!(exit_of(r#"{"type":"exit","exit_code":-1}"#), Some(1));
        assert_eq!(exit_of(r#"{"type":"resize","cols":1}"#), None);
        assert_eq!(exit_of("not json"), None);
    }
}
