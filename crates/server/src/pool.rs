//! The warm pool (`--warm-pool TEMPLATE[:SIZE]=N[..M]`): started, unclaimed instances
//! kept per template and size, so a create that matches is answered by handing one
//! over instead of making a container.
//!
//! Pool instances are ordinary records in a workspace of their own
//! ([`POOL_WORKSPACE`]) that no key belongs to and no list shows: the reconciler keeps
//! them running like any instance, and they count toward the host's capacity. Their
//! containers start with the template's environment, the gateway token and managed LLM
//! credentials of their id, and `BERTH_AGENT_POOL=1`, which makes berth-agent wait for
//! its claim (see the agent's `pool` module). A claim ([`claim`]) moves the record into
//! the creating workspace under the same id (one transaction that also checks the
//! workspace's limit), then hands the agent the instance's environment by one call on
//! its port; no restart. After any later start of that container the agent is back to
//! waiting, and `drive::wait_ready` claims it again from the record.
//!
//! A background task refills each pool, a few instances at a time, to a target between
//! its floor and ceiling that follows the claims of the last minute; it replaces pool
//! instances made from another template version, image or agent binary, and adopts
//! the pool's instances when the server starts again. Refills start only in a quiet
//! moment ([`QUIET`] after the last cold create of a client): a refill beside a cold
//! create takes the host's CPU from the create someone waits for (on a 2-core host,
//! creates with the pool drained took 504 ms instead of 397).

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::instances::ops::{self, Actor};
use crate::state::AppState;
use berth_core::{now_secs, InstanceId, Status, WorkspaceId};
use berth_store::{EventRecord, InstanceRecord, WorkspaceRecord};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The workspace pool instances belong to until claimed; no key is ever made for it.
pub const POOL_WORKSPACE: &str = "ws_warmpool0000";
/// Metadata of a pool record: what it was made from (image and agent binary).
const MADE_FROM: &str = "berth.pool";
/// How far back claims count toward a pool's target.
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How often the pools are looked at without a claim waking them.
const PASS_EVERY: Duration = Duration::from_secs(2);
/// How long after a client's cold create ends refills may start.
const QUIET: Duration = Duration::from_millis(500);

/// Whether `ws` is the warm pool's workspace.
pub fn is_pool(ws: &WorkspaceId) -> bool {
    ws.as_str() == POOL_WORKSPACE
}

/// One `--warm-pool` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// `berth-agent`, an agent template's name or a `tpl_…` id.
    pub template: String,
    /// `None`: the template's default size.
    pub size: Option<u32>,
    pub floor: u32,
    pub ceiling: u32,
}

impl PoolSpec {
    /// Parses `TEMPLATE[:SIZE]=N[..M]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("--warm-pool `{s}`: {why} (expected TEMPLATE[:SIZE]=N or TEMPLATE[:SIZE]=N..M)");
        let (what, count) = s.trim().split_once('=').ok_or_else(|| bad("no `=`"))?;
        let (template, size) = match what.split_once(':') {
            Some((t, size)) => (t, Some(size.trim().parse::<u32>().map_err(|_| bad("SIZE is not a number"))?)),
            None => (what, None),
        };
        let template = template.trim();
        if template.is_empty() {
            return Err(bad("no template"));
        }
        if let Some(size) = size {
            if berth_core::size::lookup(size).is_none() {
                return Err(bad(&format!("there is no size {size}")));
            }
        }
        let num = |t: &str| t.trim().parse::<u32>().map_err(|_| bad("N is not a number"));
        let (floor, ceiling) = match count.split_once("..") {
            Some((n, m)) => (num(n)?, num(m)?),
            None => {
                let n = num(count)?;
                (n, n.saturating_mul(2))
            }
        };
        if floor == 0 || ceiling < floor || ceiling > 1000 {
            return Err(bad("N must be at least 1, and M between N and 1000"));
        }
        Ok(PoolSpec { template: template.to_string(), size, floor, ceiling })
    }
}

/// What a pool's instances are made from now.
#[derive(Debug, Clone, PartialEq)]
struct Current {
    template: String,
    version: u32,
    size: u32,
    /// Image and agent binary (a pool record's [`MADE_FROM`]).
    made_from: String,
}

/// A started, unclaimed instance.
#[derive(Debug, Clone)]
struct Ready {
    id: InstanceId,
    ip: IpAddr,
}

#[derive(Debug, Default)]
struct Slot {
    current: Option<Current>,
    ready: VecDeque<Ready>,
    filling: usize,
    claims: VecDeque<Instant>,
    /// Last complaint about this pool (one a minute at most).
    complained: Option<Instant>,
}

impl Slot {
    /// Drops claims older than [`RATE_WINDOW`].
    fn forget_old_claims(&mut self) {
        let now = Instant::now();
        while self.claims.front().is_some_and(|t| now.duration_since(*t) > RATE_WINDOW) {
            self.claims.pop_front();
        }
    }

    fn target(&self, spec: &PoolSpec) -> usize {
        let recent = self.claims.len() as u32;
        recent.clamp(spec.floor, spec.ceiling) as usize
    }
}

/// Clients' cold creates running, and when the last one ended.
#[derive(Debug, Default)]
struct Foreground {
    running: usize,
    last_end: Option<Instant>,
}

impl Foreground {
    /// How long refills wait from `now` (`None`: they may start).
    fn wait(&self, now: Instant) -> Option<Duration> {
        if self.running > 0 {
            return Some(QUIET);
        }
        let since = now.saturating_duration_since(self.last_end?);
        (since < QUIET).then(|| QUIET - since)
    }
}

/// A client's cold create in progress ([`WarmPool::foreground`]); refills wait until
/// it and [`QUIET`] are over.
pub struct ForegroundCreate(std::sync::Arc<WarmPool>);

impl Drop for ForegroundCreate {
    fn drop(&mut self) {
        let mut fg = self.0.foreground.lock().unwrap_or_else(|e| e.into_inner());
        fg.running -= 1;
        fg.last_end = Some(Instant::now());
    }
}

/// The pools and what they hold.
pub struct WarmPool {
    specs: Vec<PoolSpec>,
    slots: Mutex<Vec<Slot>>,
    foreground: Mutex<Foreground>,
    /// Fingerprint of the agent binary instances run.
    agent: String,
    parallel: usize,
    wake: tokio::sync::Notify,
}

impl WarmPool {
    /// Pools for the parsed `--warm-pool` entries; `agent` identifies the agent binary.
    pub fn new(specs: Vec<PoolSpec>, agent: String, parallel: usize) -> Self {
        let slots = specs.iter().map(|_| Slot::default()).collect();
        WarmPool {
            specs,
            slots: Mutex::new(slots),
            foreground: Mutex::default(),
            agent,
            parallel: parallel.max(1),
            wake: Default::default(),
        }
    }

    /// Marks a client's cold create as running until the answer is dropped.
    pub fn foreground(self: &std::sync::Arc<Self>) -> ForegroundCreate {
        self.foreground.lock().unwrap_or_else(|e| e.into_inner()).running += 1;
        ForegroundCreate(self.clone())
    }

    /// How long refills wait for clients' creates (`None`: not at all).
    fn refill_wait(&self) -> Option<Duration> {
        self.foreground.lock().unwrap_or_else(|e| e.into_inner()).wait(Instant::now())
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a ready instance for a create of `template` at `version` and `size`.
    fn take(&self, template: &str, version: u32, size: u32) -> Option<Ready> {
        let mut slots = self.slots();
        for slot in slots.iter_mut() {
            let Some(cur) = &slot.current else { continue };
            if cur.template == template && cur.version == version && cur.size == size {
                slot.claims.push_back(Instant::now());
                slot.forget_old_claims();
                let got = slot.ready.pop_front();
                self.wake.notify_one();
                return got;
            }
        }
        None
    }

    /// Puts back an instance a claim did not use.
    fn put_back(&self, r: Ready, rec: &InstanceRecord) {
        let mut slots = self.slots();
        let home = slots.iter_mut().find(|s| {
            s.current
                .as_ref()
                .is_some_and(|c| c.template == rec.template && c.version == rec.template_version && c.size == rec.size)
        });
        if let Some(slot) = home {
            slot.ready.push_front(r);
        }
    }

    /// Ready instances per pool (`TEMPLATE:SIZE` → count), for `/metrics` and tests.
    pub fn ready_counts(&self) -> BTreeMap<String, usize> {
        let slots = self.slots();
        self.specs
            .iter()
            .zip(slots.iter())
            .map(|(spec, slot)| {
                let size = slot.current.as_ref().map(|c| c.size).or(spec.size).unwrap_or(0);
                (format!("{}:{size}", spec.template), slot.ready.len())
            })
            .collect()
    }
}

/// Serves a create from the warm pool when one holds an instance of its template,
/// version and size (and it asks for no resources of its own): `Ok(None)` when no pool
/// can (the create goes on cold), the claimed instance otherwise. Errors are the
/// create's own (its workspace's limit, disk budget, payment).
pub async fn claim(state: &AppState, auth: &Auth, want: &InstanceRecord) -> ApiResult<Option<InstanceRecord>> {
    let Some(pool) = state.pool.clone() else { return Ok(None) };
    if want.resources.is_some() {
        return Ok(None);
    }
    let Some(ready) = pool.take(&want.template, want.template_version, want.size) else { return Ok(None) };
    let _guard = state.locks.lock(&ready.id).await;
    let pool_ws = WorkspaceId::from_trusted(POOL_WORKSPACE.into());
    let Some(was) = state.store.instance(Some(&pool_ws), &ready.id).await? else { return Ok(None) };
    if was.status != Status::Running {
        return Ok(None);
    }
    let ws = state
        .store
        .workspace(&auth.workspace_id)
        .await?
        .ok_or_else(|| ApiError::NotFound { code: "workspace_not_found", message: "workspace not found".into() })?;
    let now = now_secs();
    let mut rec = InstanceRecord {
        id: was.id.clone(),
        gateway_token: was.gateway_token.clone(),
        status: Status::Running,
        created_at: now,
        updated_at: now,
        pooled: true,
        ..want.clone()
    };
    // As a cold create: paid first, then the workspace's disk and instance limits.
    let paid =
        crate::compute::pay_for(state, &mut rec, "create").await.inspect_err(|_| pool.put_back(ready.clone(), &was))?;
    let handed = async {
        crate::admission::check_workspace_disk(
            state.store.as_ref(),
            &ws,
            state.settings.workspace_disk_gb,
            berth_core::size::lookup(rec.size).map_or(0, |s| s.disk_gb),
        )
        .await?;
        state
            .store
            .claim_instance(&was.id, &pool_ws, &rec, ws.instance_limit)
            .await
            .map_err(|e| ops::limit_error(&ws, e))
    }
    .await;
    match handed {
        Ok(true) => {}
        Ok(false) => {
            crate::compute::refund(state, &rec, paid, "refund: the create was refused").await;
            return Ok(None);
        }
        Err(e) => {
            pool.put_back(ready, &was);
            crate::compute::refund(state, &rec, paid, "refund: the create was refused").await;
            return Err(e);
        }
    }
    let actor = Actor::Key(auth.clone());
    let ev = EventRecord {
        instance_id: rec.id.clone(),
        at: now,
        from: None,
        to: Status::Running,
        actor: actor.name(),
        reason: Some("created from the warm pool".into()),
    };
    state.store.record_event(&ev).await?;
    let handed_over = async {
        if rec.egress != was.egress {
            state.egress_policy(&rec.id, &rec.egress).await;
            // Where the runtime holds the policy (Kubernetes' NetworkPolicy), the
            // instance must not keep the pool's: a failure sends the create on cold.
            state.runtime.set_egress(&rec.id, &rec.egress).await.map_err(|e| format!("setting its egress: {e}"))?;
        }
        claim_agent(state, &rec, ready.ip).await
    };
    if let Err(e) = handed_over.await {
        // The record is the workspace's now and the agent may hold part of its
        // environment: the instance goes, and the create goes on cold.
        tracing::warn!(instance = %rec.id, error = %e, "claiming a warm pool instance failed; removing it");
        discard(state, &rec).await;
        crate::compute::refund(state, &rec, paid, "refund: the warm instance could not be handed over").await;
        return Ok(None);
    }
    state.routes.apply(&rec);
    state.routes.set_address(&rec.id, Some(ready.ip), None);
    state.heartbeat(&rec.id);
    state.metrics.created("warm");
    Ok(Some(rec))
}

/// Claims the agent of `rec` (made for the pool) at `ip`: sends the environment the
/// record gives the instance, and what of the pool's to drop.
pub async fn claim_agent(state: &AppState, rec: &InstanceRecord, ip: IpAddr) -> Result<(), String> {
    let env = ops::spec_of(state, rec).env;
    let mut pool_rec = rec.clone();
    pool_rec.workspace_id = WorkspaceId::from_trusted(POOL_WORKSPACE.into());
    pool_rec.env.clear();
    let unset: Vec<String> = ops::spec_of(state, &pool_rec).env.into_keys().filter(|k| !env.contains_key(k)).collect();
    let url = format!("http://{}{}", std::net::SocketAddr::new(ip, berth_runtime::AGENT_PORT), "/berth/claim");
    let token = rec.gateway_token.clone().unwrap_or_default();
    let resp = state
        .http
        .post(&url)
        .bearer_auth(token)
        .json(&serde_json::json!({"env": env, "unset": unset}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("claiming the agent: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("the agent refused its claim ({status}): {}", crate::instances::validate::clip(&body)));
    }
    Ok(())
}

/// Removes an instance and its record (no trace kept: it never served anyone, or a
/// claim of it failed before its create answered).
async fn discard(state: &AppState, rec: &InstanceRecord) {
    if let Err(e) = state.runtime.purge(&rec.id).await {
        tracing::warn!(instance = %rec.id, error = %e, "could not remove a warm pool instance; the reconciler will");
        return;
    }
    if let Err(e) = state.store.delete_instance(&rec.id).await {
        tracing::warn!(instance = %rec.id, error = %e, "could not delete a warm pool instance's record");
    }
    state.routes.remove(&rec.id);
    state.egress_forget(&rec.id).await;
}

/// Removes one ready pool instance (the fullest pool's newest) to make room on the
/// host for a create; false when the pools hold none. The pool refills when room
/// comes back.
pub async fn evict_one(state: &AppState) -> bool {
    let Some(pool) = state.pool.clone() else { return false };
    let taken = {
        let mut slots = pool.slots();
        slots.iter_mut().max_by_key(|s| s.ready.len()).and_then(|s| s.ready.pop_back())
    };
    let Some(taken) = taken else { return false };
    match state.store.instance(None, &taken.id).await {
        Ok(Some(rec)) if is_pool(&rec.workspace_id) => {
            tracing::info!(instance = %rec.id, "warm pool: giving a ready instance's room to a create");
            retire(state, rec).await;
            true
        }
        _ => false,
    }
}

/// Creates the pool workspace when missing; adopts the pool instances a previous run
/// left (those still current become ready, the rest are removed); then keeps the pools
/// filled until the server stops.
pub async fn run(state: AppState, pool: std::sync::Arc<WarmPool>) {
    // One replica keeps the pool (the one that reconciles).
    state.leader.clone().wait().await;
    let ws = match ensure_workspace(&state).await {
        Ok(ws) => std::sync::Arc::new(ws),
        Err(e) => return tracing::error!(error = %e, "the warm pool's workspace could not be made; no warm pool"),
    };
    let mut adopted = false;
    let mut leader = state.leader.clone();
    loop {
        leader.wait().await;
        let currents = resolve_all(&state, &pool).await;
        if !adopted {
            adopt(&state, &pool, &currents).await;
            adopted = true;
        }
        let next = pass(&state, &pool, &ws, currents).await.unwrap_or(PASS_EVERY).min(PASS_EVERY);
        tokio::select! {
            _ = pool.wake.notified() => {}
            _ = tokio::time::sleep(next) => {}
        }
    }
}

async fn ensure_workspace(state: &AppState) -> ApiResult<WorkspaceRecord> {
    let id = WorkspaceId::from_trusted(POOL_WORKSPACE.into());
    if let Some(ws) = state.store.workspace(&id).await? {
        return Ok(ws);
    }
    let ws =
        WorkspaceRecord { id, name: "berth warm pool".into(), instance_limit: u32::MAX / 2, created_at: now_secs() };
    state.store.create_workspace(&ws).await?;
    Ok(ws)
}

/// What each pool's instances are made from now (`None`: its template cannot be used
/// now, e.g. its image is still being built; logged).
async fn resolve_all(state: &AppState, pool: &WarmPool) -> Vec<Option<(Current, crate::templates::Resolved)>> {
    let mut out = Vec::with_capacity(pool.specs.len());
    for (i, spec) in pool.specs.iter().enumerate() {
        match resolve(state, pool, spec).await {
            Ok(c) => out.push(Some(c)),
            Err(e) => {
                let mut slots = pool.slots();
                let slot = &mut slots[i];
                if slot.complained.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    slot.complained = Some(Instant::now());
                    tracing::warn!(pool = %spec.template, error = %e, "the warm pool's template cannot be used now");
                }
                out.push(None);
            }
        }
    }
    out
}

async fn resolve(
    state: &AppState,
    pool: &WarmPool,
    spec: &PoolSpec,
) -> ApiResult<(Current, crate::templates::Resolved)> {
    let choice = berth_api_types::TemplateChoice::Newest(spec.template.clone());
    let ws = match berth_core::TemplateId::parse(&spec.template) {
        Some(id) => match state.store.template(None, &id).await? {
            Some(t) => t.workspace_id,
            None => {
                return Err(ApiError::NotFound {
                    code: "template_not_found",
                    message: format!("no template `{}`", spec.template),
                })
            }
        },
        None => WorkspaceId::from_trusted(POOL_WORKSPACE.into()),
    };
    let resolved = crate::templates::resolve(state.store.as_ref(), &state.agents, &ws, &choice).await?;
    let t = resolved.spec();
    if !t.agent {
        return Err(ApiError::invalid(
            "--warm-pool",
            format!("template `{}` does not run berth-agent, so its instances cannot be claimed", spec.template),
        ));
    }
    let size = match spec.size {
        Some(s) => s,
        None => crate::instances::validate::size_of(t.default_size)?.size,
    };
    let image = t.image.clone().unwrap_or_else(|| state.settings.base_image.clone());
    let current = Current {
        template: resolved.id.clone(),
        version: resolved.version,
        size,
        made_from: format!("{image} agent:{}", pool.agent),
    };
    Ok((current, resolved))
}

/// The pool a record of the pool workspace belongs to now, if any.
fn slot_of(currents: &[Option<(Current, crate::templates::Resolved)>], rec: &InstanceRecord) -> Option<usize> {
    currents.iter().position(|c| {
        c.as_ref().is_some_and(|(c, _)| {
            c.template == rec.template
                && c.version == rec.template_version
                && c.size == rec.size
                && rec.metadata.get(MADE_FROM) == Some(&c.made_from)
        })
    })
}

async fn adopt(state: &AppState, pool: &WarmPool, currents: &[Option<(Current, crate::templates::Resolved)>]) {
    let recs = match state.store.all_instances().await {
        Ok(r) => r,
        Err(e) => return tracing::warn!(error = %e, "warm pool: could not list instances to adopt"),
    };
    let mut kept = 0;
    for rec in recs.into_iter().filter(|r| is_pool(&r.workspace_id)) {
        if rec.status == Status::Creating {
            continue; // the reconciler removes creates a stopped server left
        }
        let slot = slot_of(currents, &rec);
        let ip = match (rec.status, slot) {
            (Status::Running, Some(_)) => match state.runtime.inspect(&rec.id).await {
                Ok(cs) if cs.observed == berth_runtime::Observed::Running => cs.agent_addr.map(|a| a.ip()),
                _ => None,
            },
            _ => None,
        };
        match (ip, slot) {
            (Some(ip), Some(i)) => {
                let mut slots = pool.slots();
                let slot = &mut slots[i];
                slot.current = currents[i].as_ref().map(|(c, _)| c.clone());
                slot.ready.push_back(Ready { id: rec.id.clone(), ip });
                kept += 1;
            }
            _ => retire(state, rec).await,
        }
    }
    if kept > 0 {
        tracing::info!(instances = kept, "warm pool: adopted the instances of the previous run");
    }
}

/// Removes a pool instance nobody will claim (under its lock).
async fn retire(state: &AppState, rec: InstanceRecord) {
    let _guard = state.locks.lock(&rec.id).await;
    discard(state, &rec).await;
}

/// One look at the pools: retires what is stale or surplus, starts refills (unless
/// clients' creates run); answers how soon to look again when refills were held back.
async fn pass(
    state: &AppState,
    pool: &std::sync::Arc<WarmPool>,
    ws: &std::sync::Arc<WorkspaceRecord>,
    currents: Vec<Option<(Current, crate::templates::Resolved)>>,
) -> Option<Duration> {
    let held = pool.refill_wait();
    let mut stale: Vec<InstanceId> = Vec::new();
    let mut fills: Vec<(usize, crate::templates::Resolved, Current)> = Vec::new();
    {
        let mut slots = pool.slots();
        let mut filling: usize = slots.iter().map(|s| s.filling).sum();
        for (i, cur) in currents.into_iter().enumerate() {
            let spec = &pool.specs[i];
            let slot = &mut slots[i];
            let Some((cur, resolved)) = cur else { continue };
            if slot.current.as_ref() != Some(&cur) {
                stale.extend(slot.ready.drain(..).map(|r| r.id));
                slot.current = Some(cur.clone());
            }
            slot.forget_old_claims();
            let target = slot.target(spec);
            // One surplus instance a pass goes once claims slow down.
            if slot.ready.len() > target {
                stale.extend(slot.ready.pop_back().map(|r| r.id));
            }
            while held.is_none() && slot.ready.len() + slot.filling < target && filling < pool.parallel {
                slot.filling += 1;
                filling += 1;
                fills.push((i, resolved.clone(), cur.clone()));
            }
        }
    }
    for id in stale {
        let Ok(Some(rec)) = state.store.instance(None, &id).await else { continue };
        retire(state, rec).await;
    }
    for (i, resolved, cur) in fills {
        let (state, pool, ws) = (state.clone(), pool.clone(), ws.clone());
        tokio::spawn(async move {
            let made = fill(&state, &ws, &resolved, &cur).await;
            let (unwanted, failed) = {
                let mut slots = pool.slots();
                let slot = &mut slots[i];
                slot.filling -= 1;
                match made {
                    Ok(ready) if slot.current.as_ref() == Some(&cur) => {
                        slot.ready.push_back(ready);
                        (None, false)
                    }
                    // Made from what the pool no longer makes.
                    Ok(ready) => (Some(ready.id), false),
                    Err(e) => {
                        if slot.complained.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                            slot.complained = Some(Instant::now());
                            tracing::warn!(pool = %cur.template, error = %e, "could not make a warm pool instance");
                        }
                        (None, true)
                    }
                }
            };
            if let Some(id) = unwanted {
                if let Ok(Some(rec)) = state.store.instance(None, &id).await {
                    retire(&state, rec).await;
                }
            }
            if failed {
                // Not at once again: a host without room would be asked in a loop.
                tokio::time::sleep(PASS_EVERY).await;
            }
            pool.wake.notify_one();
        });
    }
    held
}

/// Makes one pool instance and waits until its agent answers.
async fn fill(
    state: &AppState,
    pool_ws: &WorkspaceRecord,
    resolved: &crate::templates::Resolved,
    cur: &Current,
) -> ApiResult<Ready> {
    let mut v = crate::instances::validate::create(Default::default(), 0)?;
    v.size = berth_core::size::lookup(cur.size);
    let mut rec = ops::new_record(state, &pool_ws.id, v, resolved)?;
    rec.pooled = true;
    rec.paid_until = Some(i64::MAX); // never charged: the claim pays for it
    rec.metadata.insert(MADE_FROM.into(), cur.made_from.clone());
    let _guard = state.locks.lock(&rec.id).await;
    let rec = ops::make(state, pool_ws, rec, Actor::Reconciler).await?;
    let cs = state.runtime.inspect(&rec.id).await.map_err(ApiError::Runtime)?;
    let ip = cs.agent_addr.map(|a| a.ip()).ok_or_else(|| {
        ApiError::Runtime(berth_runtime::RuntimeError::Failed("the warm instance has no address".into()))
    })?;
    Ok(Ready { id: rec.id, ip })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_wait_for_clients_creates_and_a_quiet_moment_after() {
        let t0 = Instant::now();
        let mut fg = Foreground::default();
        assert_eq!(fg.wait(t0), None, "no create ever: refills may start");
        fg.running = 2;
        assert_eq!(fg.wait(t0), Some(QUIET));
        fg.running = 1;
        fg.last_end = Some(t0);
        assert_eq!(fg.wait(t0 + Duration::from_secs(60)), Some(QUIET), "one still runs");
        fg.running = 0;
        assert_eq!(fg.wait(t0 + Duration::from_millis(200)), Some(QUIET - Duration::from_millis(200)));
        assert_eq!(fg.wait(t0 + QUIET), None);
    }

    #[tokio::test]
    async fn a_foreground_create_holds_refills_until_it_is_dropped() {
        let pool = std::sync::Arc::new(WarmPool::new(Vec::new(), String::new(), 1));
        assert_eq!(pool.refill_wait(), None);
        let a = pool.foreground();
        let b = pool.foreground();
        assert_eq!(pool.refill_wait(), Some(QUIET));
        drop(a);
        assert_eq!(pool.refill_wait(), Some(QUIET), "the other create still runs");
        drop(b);
        let w = pool.refill_wait().expect("the quiet moment after the last create");
        assert!(w <= QUIET);
        tokio::time::sleep(w).await;
        assert_eq!(pool.refill_wait(), None);
    }

    #[test]
    fn parses_pool_entries() {
        let p = PoolSpec::parse("berth-agent=3").unwrap();
        assert_eq!((p.template.as_str(), p.size, p.floor, p.ceiling), ("berth-agent", None, 3, 6));
        let p = PoolSpec::parse("hermes:2=1..8").unwrap();
        assert_eq!((p.template.as_str(), p.size, p.floor, p.ceiling), ("hermes", Some(2), 1, 8));
        for bad in ["berth-agent", "=3", "x=0", "x=3..2", "x:99=1", "x=many", "x:big=1"] {
            assert!(PoolSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
