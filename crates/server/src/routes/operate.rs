//! Driving and watching instances: exec, logs, health, events.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::instances::exec::{self, ExecEvent};
use crate::instances::ops;
use crate::quotas::Kind;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_api_types::{
    ErrorBody, Event, ExecRequest, ExecResult, GatewayHealth, InstanceHealth, List, LogEntry, Logs, StdinRequest,
    StdinResult,
};
use berth_core::{now_secs, InstanceId, Status};
use berth_runtime::{LogQuery, Observed};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/instances/{id}/exec", post(exec_command))
        .route("/v1/instances/{id}/stdin", post(stdin))
        .route("/v1/instances/{id}/logs", get(logs))
        .route("/v1/instances/{id}/health", get(health))
        .route("/v1/instances/{id}/events", get(events))
}

/// Run a command in the instance; with `stream: true`, SSE `stdout`, `stderr`, then `exit`.
#[utoipa::path(post, path = "/v1/instances/{id}/exec", tag = "operate", params(("id" = String, Path)),
    request_body = ExecRequest,
    responses((status = 200, description = "the finished command (or an SSE stream with `stream: true`)", body = ExecResult),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the instance is not running", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn exec_command(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    let rec = ops::get(&state, &auth, &id).await?;
    let mut v = exec::validate(body)?;
    // The instance's own environment first (claimed from the warm pool), the request's over it.
    v.env.splice(0..0, crate::instances::drive::exec_env(&state, &rec));
    if rec.status != Status::Running {
        return Err(crate::error::invalid_state("exec", rec.status));
    }
    // A command running in the instance is activity: a cold_start instance stays up.
    let slot = state.quotas.acquire(&auth.workspace_id, Kind::Exec)?;
    let busy = (state.activity.busy(&rec.id), slot);
    if !v.stream {
        let gathered = exec::gather(state, rec.id, rec.status, v).await?;
        drop(busy);
        let json = [(axum::http::header::CONTENT_TYPE, "application/json")];
        return Ok((json, gathered.into_body()).into_response());
    }
    let revoked = auth.revoked.clone();
    let (tx, rx) = mpsc::channel::<ExecEvent>(64);
    let (sse_tx, sse_rx) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(async move {
        let _busy = busy;
        let forward = async {
            let mut rx = rx;
            while let Some(ev) = rx.recv().await {
                let sse = match ev {
                    ExecEvent::Stdout(s) => SseEvent::default().event("stdout").data(json!({"data": s}).to_string()),
                    ExecEvent::Stderr(s) => SseEvent::default().event("stderr").data(json!({"data": s}).to_string()),
                    ExecEvent::Exit(r) => {
                        SseEvent::default().event("exit").data(serde_json::to_string(&r).unwrap_or_default())
                    }
                };
                if sse_tx.send(sse).await.is_err() {
                    break;
                }
            }
        };
        let (result, ()) = tokio::join!(exec::run(state, rec.id, rec.status, v, tx), forward);
        if let Err(e) = result {
            let _ = sse_tx
                .send(SseEvent::default().event("error").data(json!({"message": e.to_string()}).to_string()))
                .await;
        }
    });
    let stream = ReceiverStream::new(sse_rx).map(Ok::<_, Infallible>).take_until(revoked.cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// Write to the main program of a stdin template and answer what it printed in reply
/// (until it goes quiet for `quiet_ms`). Its output is in the instance's logs too.
#[utoipa::path(post, path = "/v1/instances/{id}/stdin", tag = "operate", params(("id" = String, Path)),
    request_body = StdinRequest,
    responses((status = 200, body = StdinResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "`invalid_state`: not running; `stdin_unavailable`: its template is not a stdin template, or its program no longer reads", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn stdin(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StdinRequest>,
) -> ApiResult<Json<StdinResult>> {
    let rec = ops::get(&state, &auth, &id).await?;
    let c = crate::instances::stdin::validate(body)?;
    if !crate::templates::spec_of(&rec).stdin {
        return Err(ApiError::Conflict {
            code: "stdin_unavailable",
            message: format!(
                "instance `{}` runs template `{}`, whose main program does not read standard input (`stdin: true` templates do); use exec",
                rec.id, rec.template
            ),
        });
    }
    if rec.status != Status::Running {
        return Err(crate::error::invalid_state("write to the standard input of", rec.status));
    }
    let _busy = state.activity.busy(&rec.id);
    Ok(Json(crate::instances::stdin::write(&state, &rec, c).await?))
}

/// Most bytes of log messages one (non-follow) answer holds; older lines go first.
const MAX_LOG_BYTES: usize = 8 << 20;

/// Query of the logs.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct LogsQuery {
    /// Only the last N lines (1–10000, default 100).
    pub lines: Option<u32>,
    /// Only lines written since this unix time.
    pub since: Option<i64>,
    /// Stream new lines as SSE until the client leaves.
    pub follow: Option<bool>,
}

/// The instance's main-process output.
#[utoipa::path(get, path = "/v1/instances/{id}/logs", tag = "operate", params(("id" = String, Path), LogsQuery),
    responses((status = 200, description = "`{logs: [...]}`, or SSE with `follow=true`", body = Logs),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> ApiResult<Response> {
    let rec = ops::get(&state, &auth, &id).await?;
    let lines = q.lines.unwrap_or(100);
    if !(1..=10_000).contains(&lines) {
        return Err(ApiError::invalid("lines", "`lines` must be between 1 and 10000"));
    }
    if q.since.is_some_and(|s| s < 0) {
        return Err(ApiError::invalid("since", "`since` is a unix time in seconds"));
    }
    let follow = q.follow.unwrap_or(false);
    let query = LogQuery { tail: Some(lines), since: q.since, follow };
    let missing = state.runtime.inspect(&rec.id).await?.observed == Observed::Missing;
    if missing && !follow {
        return Ok(Json(Logs { logs: vec![] }).into_response());
    }
    if missing {
        return Err(crate::error::invalid_state("follow the logs of", rec.status));
    }
    let stream = state.runtime.logs(&rec.id, query).await?;
    let entries =
        stream.map(|l| l.map(|l| LogEntry { timestamp: l.timestamp, stream: l.stream.into(), message: l.message }));
    if !follow {
        // The newest lines, within a memory bound however long the lines are.
        let mut logs = std::collections::VecDeque::new();
        let mut bytes = 0usize;
        let mut entries = std::pin::pin!(entries);
        while let Some(line) = entries.next().await {
            let line = line?;
            bytes += line.message.len();
            logs.push_back(line);
            while bytes > MAX_LOG_BYTES {
                if let Some(old) = logs.pop_front() {
                    bytes -= old.message.len();
                }
            }
        }
        return Ok(Json(Logs { logs: logs.into() }).into_response());
    }
    let busy = (state.activity.busy(&rec.id), state.quotas.acquire(&auth.workspace_id, Kind::LogFollow)?);
    let events = entries
        .take_while(move |l| {
            let _following = &busy;
            std::future::ready(l.is_ok())
        })
        .filter_map(|l| std::future::ready(l.ok()))
        .map(|l| Ok::<_, Infallible>(SseEvent::default().data(serde_json::to_string(&l).unwrap_or_default())))
        // A revoked or expired key's follow ends.
        .take_until(auth.revoked.clone().cancelled_owned());
    Ok(Sse::new(events).keep_alive(KeepAlive::default()).into_response())
}

/// Resource use and agent health, from the runtime's stats and a probe of the agent.
#[utoipa::path(get, path = "/v1/instances/{id}/health", tag = "operate", params(("id" = String, Path)),
    responses((status = 200, body = InstanceHealth), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn health(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<InstanceHealth>> {
    let rec = ops::get(&state, &auth, &id).await?;
    let cs = recent_inspect(&state, &rec.id).await?;
    let running = matches!(cs.observed, Observed::Running | Observed::Paused);
    let mut h = InstanceHealth {
        status: rec.status.as_str().into(),
        cpu_percent: 0.0,
        memory_mb: 0.0,
        // What it may use: its own resources' limit, or its size's.
        memory_limit_mb: berth_core::size::lookup(rec.size)
            .map(|s| berth_core::Resources::effective(&s, rec.resources.as_ref()).memory_limit_mb as f64)
            .unwrap_or(0.0),
        disk_mb: 0.0,
        disk_limit_mb: state
            .runtime
            .disk_quota()
            .then(|| berth_core::size::lookup(rec.size).map(|s| (s.disk_gb * 1024) as f64))
            .flatten(),
        pids: 0,
        uptime_secs: 0,
        last_heartbeat: None,
        restart_count: rec.restart_count,
        gateway: GatewayHealth { ok: false, response_time_ms: None },
        requests_total: rec.requests_total,
        network_rx_bytes: 0,
        network_tx_bytes: 0,
        open_connections: 0,
        turn_running: false,
    };
    if let Some(a) = state.activity.get(&rec.id) {
        h.requests_total += a.unflushed_requests();
        h.open_connections = a.open_count();
        h.turn_running = a.turn_running();
    }
    if running {
        let probe = async {
            let addr = cs.agent_addr?;
            let started = Instant::now();
            let resp =
                state.http.get(format!("http://{addr}/health")).timeout(Duration::from_secs(2)).send().await.ok()?;
            if !resp.status().is_success() {
                return None;
            }
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            Some((ms, body["turn_running"].as_bool().unwrap_or(false)))
        };
        let (stats, probe, disk) = tokio::join!(state.runtime.stats(&rec.id), probe, disk_usage_mb(&state, &rec));
        if let Ok(s) = stats {
            h.cpu_percent = s.cpu_percent;
            h.memory_mb = (s.memory_bytes as f64 / 1048576.0 * 10.0).round() / 10.0;
            if s.memory_limit_bytes > 0 {
                h.memory_limit_mb = (s.memory_limit_bytes as f64 / 1048576.0).round();
            }
            h.pids = s.pids;
            h.network_rx_bytes = s.network_rx_bytes;
            h.network_tx_bytes = s.network_tx_bytes;
        }
        if let Some((ms, turn_running)) = probe {
            state.heartbeat(&rec.id);
            state.activity.of(&rec.id).set_turn_running(turn_running);
            h.turn_running = turn_running;
            h.gateway = GatewayHealth { ok: true, response_time_ms: Some((ms * 100.0).round() / 100.0) };
        }
        h.disk_mb = disk.unwrap_or(0.0);
        h.uptime_secs = cs.started_at.map(|t| (now_secs() - t).max(0) as u64).unwrap_or(0);
    }
    h.last_heartbeat = state.last_heartbeat(&rec.id);
    Ok(Json(h))
}

/// How long `/health` reuses what it saw of a container: a client polling health
/// in a loop costs the Docker Engine one inspect per second, not one per call.
const HEALTH_INSPECT_TTL: Duration = Duration::from_secs(1);

async fn recent_inspect(state: &AppState, id: &InstanceId) -> ApiResult<berth_runtime::ContainerState> {
    if let Some((at, cs)) = state.health_inspect.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
        if at.elapsed() < HEALTH_INSPECT_TTL {
            return Ok(cs.clone());
        }
    }
    let cs = state.runtime.inspect(id).await?;
    let mut cache = state.health_inspect.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 10_000 {
        cache.retain(|_, (at, _)| at.elapsed() < HEALTH_INSPECT_TTL);
    }
    cache.insert(id.clone(), (Instant::now(), cs.clone()));
    Ok(cs)
}

/// How long a measured disk usage is reused: `du` is a command in the instance (three
/// Engine API calls), too dear for every `/health` of a polling client.
const DISK_USAGE_TTL: Duration = Duration::from_secs(30);

/// Space used by the instance's home, measured inside it (only while it runs).
async fn disk_usage_mb(state: &AppState, rec: &berth_store::InstanceRecord) -> Option<f64> {
    if rec.status != Status::Running {
        return None;
    }
    if let Some((at, mb)) = state.disk_usage.lock().unwrap_or_else(|e| e.into_inner()).get(&rec.id) {
        if at.elapsed() < DISK_USAGE_TTL {
            return Some(*mb);
        }
    }
    let v = exec::ValidExec {
        argv: vec!["du".into(), "-sk".into(), berth_runtime::HOME_DIR.into()],
        env: vec![],
        cwd: None,
        stdin: None,
        timeout: Duration::from_secs(5),
        cap: 4096,
        stream: false,
    };
    let r = exec::collect(state.clone(), rec.id.clone(), rec.status, v).await.ok()?;
    let kb: f64 = r.stdout.split_whitespace().next()?.parse().ok()?;
    let mb = (kb / 1024.0 * 10.0).round() / 10.0;
    let mut cache = state.disk_usage.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() > 10_000 {
        cache.retain(|_, (at, _)| at.elapsed() < DISK_USAGE_TTL);
    }
    cache.insert(rec.id.clone(), (Instant::now(), mb));
    Some(mb)
}

/// The instance's audit trail, oldest first.
#[utoipa::path(get, path = "/v1/instances/{id}/events", tag = "operate", params(("id" = String, Path)),
    responses((status = 200, body = List<Event>), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn events(State(state): State<AppState>, auth: Auth, Path(id): Path<String>) -> ApiResult<Json<List<Event>>> {
    let rec = ops::get(&state, &auth, &id).await?;
    let evs = state.store.events(&rec.id, 1000).await?;
    let data = evs
        .into_iter()
        .map(|e| Event {
            object: "event".into(),
            at: e.at,
            from: e.from.map(|s| s.as_str().to_string()),
            to: e.to.as_str().into(),
            actor: e.actor,
            reason: e.reason,
        })
        .collect();
    Ok(Json(List::new(data, None)))
}
