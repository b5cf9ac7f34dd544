//! The steps lifecycle operations and the reconciler share: who acts, recording a
//! status (record, audit event, edge routing table), and bringing a container up
//! until its agent answers.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use berth_core::{now_secs, size, InstanceId, Status, WorkspaceId};
use berth_runtime::{InstanceSpec, Observed, RuntimeError};
use berth_store::{EventRecord, InstanceRecord};
use std::future::Future;
use std::time::{Duration, Instant};

/// Who performs an operation; named in the audit trail.
#[derive(Debug, Clone)]
pub enum Actor {
    /// A client of the hosting API, by its key.
    Key(Auth),
    /// The edge, waking a sleeping instance for a request to its URL.
    Edge(WorkspaceId),
    /// The reconciler.
    Reconciler,
}

impl Actor {
    /// The audit trail's name: `key:<id>`, `edge` or `reconciler`.
    pub fn name(&self) -> String {
        match self {
            Actor::Key(a) => a.actor(),
            Actor::Edge(_) => "edge".into(),
            Actor::Reconciler => "reconciler".into(),
        }
    }

    /// The workspace the actor may touch (`None`: any).
    pub fn workspace(&self) -> Option<&WorkspaceId> {
        match self {
            Actor::Key(a) => Some(&a.workspace_id),
            Actor::Edge(ws) => Some(ws),
            Actor::Reconciler => None,
        }
    }
}

impl From<Auth> for Actor {
    fn from(a: Auth) -> Self {
        Actor::Key(a)
    }
}

/// Runs `fut` on its own task so it completes even if the caller goes away.
pub async fn detached<T: Send + 'static>(fut: impl Future<Output = ApiResult<T>> + Send + 'static) -> ApiResult<T> {
    // The request's span goes along, so the operation's log lines carry its id.
    // So does its tenant, so its runtime calls stay in the workspace's lane.
    let fut = berth_runtime::fair::scope(berth_runtime::fair::current_slot().unwrap_or_default(), fut);
    match tokio::spawn(tracing::Instrument::in_current_span(fut)).await {
        Ok(r) => r,
        Err(e) => Err(ApiError::Runtime(RuntimeError::Failed(format!("operation aborted: {e}")))),
    }
}

/// What the runtime needs to run a record: its template version's image, command and
/// env, its own env over that, plus (with the agent) the gateway token and, unless its
/// env names an LLM (bring your own key), the managed LLM proxy's URL and the
/// instance's token for it.
pub fn spec_of(state: &AppState, r: &InstanceRecord) -> InstanceSpec {
    let t = crate::templates::spec_of(r);
    let mut env = t.env.clone();
    env.extend(r.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(token) = r.gateway_token.as_ref().filter(|_| t.agent) {
        env.insert("BERTH_GATEWAY_TOKEN".into(), token.clone());
    }
    if let Some(llm) = &state.llm {
        llm.add_env(&state.seal, &r.id, &mut env);
    }
    if crate::pool::is_pool(&r.workspace_id) && t.agent {
        // Made for the warm pool: the agent waits for its claim (see `crate::pool`).
        env.insert("BERTH_AGENT_POOL".into(), "1".into());
    }
    InstanceSpec {
        id: r.id.clone(),
        workspace_id: r.workspace_id.clone(),
        image: t.image.clone(),
        size: size::lookup(r.size).unwrap_or(size::SIZES[0]),
        resources: r.resources,
        env,
        command: t.command.clone(),
        stdin: t.stdin,
        agent: t.agent,
        egress: r.egress.clone(),
    }
}

/// What an exec in `rec` gets besides the container's environment: for an instance
/// claimed from the warm pool (whose container started with the pool's), the
/// environment its record gives it; else nothing.
pub fn exec_env(state: &AppState, rec: &InstanceRecord) -> Vec<String> {
    if !rec.pooled || crate::pool::is_pool(&rec.workspace_id) {
        return Vec::new();
    }
    spec_of(state, rec).env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Writes a new status (and reason), appends the audit event and updates the
/// edge's routing table. Leaving `stopped` clears the idle-stop mark.
pub async fn set_status(
    state: &AppState,
    rec: &mut InstanceRecord,
    to: Status,
    actor: &Actor,
    reason: Option<String>,
) -> ApiResult<()> {
    let from = rec.status;
    rec.status = to;
    rec.status_reason = if to == Status::Error { reason.clone() } else { None };
    if to != Status::Stopped {
        rec.idle_stopped = false;
    }
    rec.updated_at = now_secs();
    state.store.update_instance(rec).await?;
    state.routes.apply(rec);
    if from != to || reason.is_some() {
        let ev = EventRecord {
            instance_id: rec.id.clone(),
            at: rec.updated_at,
            from: Some(from),
            to,
            actor: actor.name(),
            reason,
        };
        state.store.record_event(&ev).await?;
    }
    Ok(())
}

/// The container is about to stop, restart or be replaced: the edge must not
/// use its address any more.
pub fn address_stale(state: &AppState, id: &InstanceId) {
    state.routes.set_address(id, None, None);
}

/// The container is going away or being replaced: its address (which Docker may give
/// to another container) loses the instance's own egress rules.
pub async fn addresses_released(state: &AppState, id: &InstanceId) {
    state.egress_addresses(id, Vec::new()).await;
}

/// Waits until the container runs and is ready — its agent answers `/health`, or
/// without an agent, its default port answers the template's `health_path` (HTTP 2xx)
/// or accepts a connection; a template with no port is ready once it runs. The edge
/// learns the address it answered on.
pub async fn wait_ready(state: &AppState, rec: &InstanceRecord) -> Result<(), RuntimeError> {
    let id = &rec.id;
    let t = crate::templates::spec_of(rec);
    let probe = match (t.agent, t.default_port()) {
        (true, _) => Some((berth_runtime::AGENT_PORT, Some("/health".to_string()))),
        (false, Some(port)) => Some((port, t.health_path.clone())),
        (false, None) => None,
    };
    let reclaim = t.agent && rec.pooled && !crate::pool::is_pool(&rec.workspace_id);
    let deadline = Instant::now() + state.settings.start_timeout;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        let cs = state.runtime.inspect(id).await?;
        match cs.observed {
            Observed::Exited { code, oom_killed } => {
                let why = if oom_killed { " (out of memory)".to_string() } else { String::new() };
                return Err(RuntimeError::Failed(format!(
                    "the instance's main process exited with code {code}{why} while starting"
                )));
            }
            Observed::Missing => {
                return Err(RuntimeError::Failed("the instance's container disappeared while starting".into()))
            }
            Observed::Running => {
                // The instance's own egress rules follow its address before anything else.
                state.egress_addresses(id, cs.addresses()).await;
                if let Some(ip) = cs.agent_addr.map(|a| a.ip()) {
                    let ready = match &probe {
                        None => Ok(()),
                        Some((port, Some(path))) => {
                            let url = format!("http://{}{path}", std::net::SocketAddr::new(ip, *port));
                            match state.http.get(&url).timeout(Duration::from_secs(2)).send().await {
                                Ok(resp) if resp.status().is_success() && reclaim => {
                                    // A claimed warm pool instance's agent restarted: it
                                    // waits for the record's environment again.
                                    let waiting = resp
                                        .json::<serde_json::Value>()
                                        .await
                                        .is_ok_and(|h| h.get("pool").and_then(|p| p.as_str()) == Some("waiting"));
                                    match waiting {
                                        true => crate::pool::claim_agent(state, rec, ip).await,
                                        false => Ok(()),
                                    }
                                }
                                Ok(resp) if resp.status().is_success() => Ok(()),
                                Ok(resp) => Err(format!("{url} answered {}", resp.status())),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                        Some((port, None)) => {
                            let addr = std::net::SocketAddr::new(ip, *port);
                            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
                                .await
                            {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err(e)) => Err(format!("port {port}: {e}")),
                                Err(_) => Err(format!("port {port}: no answer")),
                            }
                        }
                    };
                    match ready {
                        Ok(()) => {
                            if t.agent {
                                state.heartbeat(id);
                            }
                            state.routes.set_address(id, Some(ip), None);
                            return Ok(());
                        }
                        Err(why) => last = why,
                    }
                }
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let what = match &probe {
        Some((_, _)) if t.agent => "the agent did not answer /health".to_string(),
        Some((port, Some(path))) => format!("port {port} did not answer {path} with 2xx"),
        Some((port, None)) => format!("nothing accepted connections on port {port}"),
        None => "the container did not run".to_string(),
    };
    Err(RuntimeError::Failed(format!("{what} within {} s ({last})", state.settings.start_timeout.as_secs())))
}

/// Makes sure a container exists (recreating it from the record when it was
/// removed), starts it and waits for the agent.
pub async fn bring_up(state: &AppState, rec: &InstanceRecord) -> Result<(), RuntimeError> {
    address_stale(state, &rec.id);
    if state.runtime.inspect(&rec.id).await?.observed == Observed::Missing {
        state.runtime.create(&spec_of(state, rec)).await?;
    }
    state.runtime.start(&rec.id).await?;
    wait_ready(state, rec).await
}
