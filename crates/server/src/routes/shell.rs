//! `GET /v1/instances/{id}/shell`: an interactive terminal over a WebSocket.
//!
//! Protocol: the client sends BINARY frames of terminal input and TEXT frames of
//! JSON control messages (`{"type":"resize","cols","rows"}`); the server sends
//! BINARY frames of terminal output and, when the shell ends, a TEXT frame
//! `{"type":"exit","exit_code":N}` before closing. A client that leaves kills
//! the shell and everything it started.

use crate::auth::Auth;
use crate::error::{invalid_state, ApiError, ApiResult};
use crate::instances::ops;
use crate::state::AppState;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use berth_core::{InstanceId, Status};
use berth_runtime::{ExecRequest, Output};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/instances/{id}/shell", get(shell))
}

/// Query of the shell.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct ShellQuery {
    /// Terminal width (default 80).
    pub cols: Option<u16>,
    /// Terminal height (default 24).
    pub rows: Option<u16>,
    /// Command to run instead of a login shell.
    pub command: Option<String>,
}

#[derive(Deserialize)]
struct Control {
    #[serde(rename = "type")]
    kind: String,
    cols: Option<u16>,
    rows: Option<u16>,
}

/// Upgrade to a WebSocket carrying a real TTY.
#[utoipa::path(get, path = "/v1/instances/{id}/shell", tag = "operate", params(("id" = String, Path), ShellQuery),
    responses((status = 101, description = "WebSocket: binary frames are terminal bytes, text frames JSON control messages"),
        (status = 404, body = berth_api_types::ErrorBody), (status = 409, body = berth_api_types::ErrorBody),
        (status = 426, description = "`upgrade_required`: not a WebSocket upgrade request", body = berth_api_types::ErrorBody)),
    security(("bearer" = [])))]
pub async fn shell(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<ShellQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let rec = ops::get(&state, &auth, &id).await?;
    if rec.status != Status::Running {
        return Err(invalid_state("open a shell on", rec.status));
    }
    let slot = state.quotas.acquire(&auth.workspace_id, crate::quotas::Kind::Shell)?;
    let ws = ws.map_err(|e| {
        ApiError::UpgradeRequired(format!("this route is a WebSocket: send an Upgrade: websocket request ({e})"))
    })?;
    let (cols, rows) = (q.cols.unwrap_or(80).clamp(1, 1000), q.rows.unwrap_or(24).clamp(1, 1000));
    let cmd = match q.command {
        Some(c) if !c.trim().is_empty() => vec!["/bin/sh".into(), "-c".into(), c],
        _ => vec![
            "/bin/sh".into(),
            "-c".into(),
            "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi".into(),
        ],
    };
    let revoked = auth.revoked.clone();
    let mut env = crate::instances::drive::exec_env(&state, &rec);
    env.push("TERM=xterm-256color".into());
    Ok(ws.on_upgrade(move |socket| async move {
        let _busy = (state.activity.busy(&rec.id), slot);
        tokio::select! {
            r = session(state.clone(), rec.id.clone(), socket, cmd, env, cols, rows) => {
                if let Err(e) = r {
                    tracing::info!(instance = %rec.id, error = %e, "shell session ended with an error");
                }
            }
            // A revoked or expired key's shell is closed (its input ends, so does the shell).
            _ = revoked.cancelled() => tracing::info!(instance = %rec.id, "shell closed: its key was revoked"),
        }
    }))
}

async fn session(
    state: AppState,
    id: InstanceId,
    socket: WebSocket,
    cmd: Vec<String>,
    env: Vec<String>,
    cols: u16,
    rows: u16,
) -> Result<(), berth_runtime::RuntimeError> {
    let req = ExecRequest { cmd, env, cwd: None, stdin: true, tty: true };
    let mut exec = state.runtime.exec(&id, req).await?;
    let exec_id = exec.id.clone();
    let _ = state.runtime.exec_resize(&exec_id, cols, rows).await;
    let mut input = exec.input.take();
    let (mut sink, mut stream) = socket.split();
    let mut client_left = false;
    loop {
        tokio::select! {
            out = exec.output.next() => match out {
                Some(Ok(Output::Stdout(b) | Output::Stderr(b))) => {
                    if sink.send(Message::Binary(b.into())).await.is_err() {
                        client_left = true;
                        break;
                    }
                }
                Some(Err(_)) | None => break,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Some(w) = input.as_mut() {
                        let _ = w.write_all(&b).await;
                    }
                }
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<Control>(&t) {
                    Ok(c) if c.kind == "resize" => {
                        let _ = state.runtime.exec_resize(&exec_id, c.cols.unwrap_or(cols), c.rows.unwrap_or(rows)).await;
                    }
                    // Text that is not a control message is typed input.
                    _ => {
                        if let Some(w) = input.as_mut() {
                            let _ = w.write_all(t.as_bytes()).await;
                        }
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    client_left = true;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    if client_left {
        state.runtime.exec_kill(&exec_id).await?;
        return Ok(());
    }
    let code = crate::instances::exec::exit_code(&state, &exec_id).await?.unwrap_or(-1);
    let _ = sink.send(Message::Text(json!({"type": "exit", "exit_code": code}).to_string().into())).await;
    let _ = sink.close().await;
    Ok(())
}
