//! The reconciler: the database holds desired state, the runtime is brought to it.
//!
//! Every pass adopts this installation's containers by label, brings back
//! instances whose container died or vanished (with backoff, ending in `error`
//! on a crash loop), removes containers and volumes that have no record, cleans
//! up creates interrupted by a crash of the server, and purges deleted
//! instances past their retention. Instances with an operation in flight are
//! skipped (their lock is held).

use crate::activity::InstanceActivity;
use crate::instances::drive::address_stale;
use crate::instances::ops::{bring_up, set_status, Actor};
use crate::state::AppState;
use berth_core::lifecycle::Action;
use berth_core::{now_secs, InstanceId, Status};
use berth_runtime::{ContainerState, ManagedContainer, Observed, RuntimeError};
use berth_store::{EventRecord, InstanceRecord};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The reconciler, as named in the audit trail.
const ACTOR: &Actor = &Actor::Reconciler;

/// Restarts of one instance within a window, with exponential backoff.
#[derive(Debug, Default)]
pub struct CrashTracker {
    restarts: VecDeque<Instant>,
    next_try: Option<Instant>,
}

/// What the tracker allows now.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Restart now.
    Restart,
    /// Still backing off.
    Wait,
    /// Too many restarts in the window: give up.
    GiveUp { restarts: usize },
}

impl CrashTracker {
    /// Most restarts tolerated within [`CrashTracker::WINDOW`].
    pub const LIMIT: usize = 5;
    /// The crash-loop window.
    pub const WINDOW: Duration = Duration::from_secs(300);

    /// Decides about a restart at `now`, recording it when allowed.
    pub fn decide(&mut self, now: Instant) -> Verdict {
        if self.next_try.is_some_and(|t| now < t) {
            return Verdict::Wait;
        }
        while self.restarts.front().is_some_and(|t| now.duration_since(*t) > Self::WINDOW) {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= Self::LIMIT {
            return Verdict::GiveUp { restarts: self.restarts.len() };
        }
        self.restarts.push_back(now);
        let backoff = Duration::from_secs(1 << (self.restarts.len() - 1).min(6));
        self.next_try = Some(now + backoff);
        Verdict::Restart
    }
}

/// Runs reconciliation passes forever.
///
/// Idle cost stays flat however many instances there are: a pass works from the
/// runtime's last listing and the lock table, so an instance that nobody touched and
/// whose container did what its record says costs no runtime call and no database
/// read. The runtime is listed again (one call) when its event stream reported a
/// change, and on a sweep every [`SWEEP_PASSES`] passes whatever happened; an
/// instance whose record and listing disagree, or that an operation touched since
/// the listing, is re-read and inspected under its lock before anything is done.
pub struct Reconciler {
    state: AppState,
    shared: Arc<Shared>,
    nudge: Arc<Nudge>,
    /// The runtime as last listed, and the records as last read.
    view: tokio::sync::Mutex<View>,
    passes: AtomicU64,
    /// The time between passes (probes are spread over [`SWEEP_PASSES`] of them).
    interval: Duration,
}

/// A full sweep (containers listed whatever the events said, volumes listed, every
/// agent probed once, spread out) every this many passes: 30 s at the default 2 s.
const SWEEP_PASSES: u64 = 15;
/// Egress rules deleted by hand or lost to a firewall reload are put back every this
/// many passes (6 s at the default interval).
const ASSERT_RULES_PASSES: u64 = 3;
/// Rules for addresses no container holds are looked for every this many passes
/// (a rule listing and a network inspect).
const PRUNE_PASSES: u64 = 5;

/// What the reconciler's tasks share.
#[derive(Default)]
struct Shared {
    crashes: Mutex<HashMap<InstanceId, CrashTracker>>,
    /// When each running agent is next asked for its health.
    probes: Mutex<HashMap<InstanceId, Instant>>,
}

impl Shared {
    /// Whether the agent is due a health probe (first sight, or its turn came): each
    /// one's next probe falls at a random point around the next period, so probes
    /// spread out instead of arriving all at once every pass.
    fn probe_due(&self, id: &InstanceId, period: Duration) -> bool {
        let now = Instant::now();
        let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        if probes.get(id).is_some_and(|next| *next > now) {
            return false;
        }
        probes.insert(id.clone(), now + period.mul_f64(rand::random_range(0.5..1.5)));
        true
    }

    /// Whether [`Shared::probe_due`] would say yes now (without taking the turn).
    fn probe_pending(&self, id: &InstanceId) -> bool {
        let probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
        probes.get(id).is_none_or(|next| *next <= Instant::now())
    }
}

/// Wakes the reconciler when the runtime reports a change.
#[derive(Default)]
pub struct Nudge {
    dirty: AtomicBool,
    wake: Notify,
}

impl Nudge {
    /// The runtime changed: list it again on the next pass; `now` runs that pass at once
    /// (a container died or vanished).
    pub fn changed(&self, now: bool) {
        self.dirty.store(true, Ordering::SeqCst);
        if now {
            self.wake.notify_one();
        }
    }
}

/// What the reconciler knows between passes.
#[derive(Default)]
struct View {
    snapshot: Option<Snapshot>,
    records: HashMap<InstanceId, InstanceRecord>,
    /// The lock table's mark when the records were read.
    read_mark: u64,
}

/// The runtime as a listing saw it.
struct Snapshot {
    /// The lock table's mark when the listing began: an instance changed since is
    /// inspected afresh.
    mark: u64,
    /// By instance id.
    containers: HashMap<String, ManagedContainer>,
}

impl Reconciler {
    /// A reconciler over the server's state, passing every `interval`.
    pub fn new(state: AppState, interval: Duration) -> Self {
        Self {
            state,
            shared: Arc::default(),
            nudge: Arc::default(),
            view: tokio::sync::Mutex::default(),
            passes: AtomicU64::new(0),
            interval,
        }
    }

    /// The handle that tells this reconciler what the runtime's events say.
    pub fn nudge(&self) -> Arc<Nudge> {
        self.nudge.clone()
    }

    /// Loops with `interval` between passes, or sooner when nudged; with replicas,
    /// only while this one leads.
    pub async fn run(self) {
        let mut leader = self.state.leader.clone();
        loop {
            if !leader.is_leader() {
                leader.wait().await;
                // What the last leader did is unknown here: list everything again.
                self.nudge.changed(true);
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "reconciler pass failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.nudge.wake.notified() => {
                    // Let a burst of events (a container dying, then its restart) settle.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// One pass over every record, with the runtime listed again when it changed.
    pub async fn pass(&self) -> anyhow::Result<()> {
        let n = self.passes.fetch_add(1, Ordering::Relaxed);
        // The egress rules first: a firewall reload or a rule deleted by hand comes
        // back within a few passes (one listing per family when nothing changed);
        // rules for addresses no container holds go.
        if n.is_multiple_of(PRUNE_PASSES) {
            self.state.egress_prune().await;
        }
        if n.is_multiple_of(ASSERT_RULES_PASSES) {
            self.state.egress_sync().await;
        }
        let mut view = self.view.lock().await;
        let view = &mut *view;
        let sweep = view.snapshot.is_none() || n.is_multiple_of(SWEEP_PASSES);
        // Cleared before listing: an event that arrives meanwhile makes the next pass list again.
        let relist = self.nudge.dirty.swap(false, Ordering::SeqCst) || sweep;
        if relist {
            // Containers (and volumes) first, records second: anything listed was made
            // after its record was inserted, so it cannot be mistaken for an orphan.
            let mark = self.state.locks.mark();
            let containers = match self.state.runtime.list().await {
                Ok(containers) => containers.into_iter().map(|c| (c.instance_id.clone(), c)).collect(),
                Err(e) => {
                    self.nudge.changed(false);
                    return Err(e.into());
                }
            };
            view.snapshot = Some(Snapshot { mark, containers });
        }
        let volumes = if sweep { Some(self.state.runtime.list_volumes().await?) } else { None };
        // Records: all of them on a sweep; between sweeps, those an operation touched
        // since they were read (nothing the reconciler acts on changes without one).
        let read_mark = self.state.locks.mark();
        if sweep {
            view.records = self.state.store.all_instances().await?.into_iter().map(|r| (r.id.clone(), r)).collect();
        } else {
            for id in self.state.locks.changed_ids_since(view.read_mark) {
                match self.state.store.instance(None, &id).await? {
                    Some(rec) => view.records.insert(id, rec),
                    None => view.records.remove(&id),
                };
            }
        }
        view.read_mark = read_mark;
        let Some(snapshot) = view.snapshot.as_ref() else { return Ok(()) };
        // Older releases matter to neither the listing nor the records any more.
        self.state.locks.forget_until(snapshot.mark.min(read_mark));
        if relist {
            self.remove_orphan_containers(&snapshot.containers, &view.records).await;
        }
        if let Some(volumes) = volumes {
            self.remove_orphan_volumes(&volumes, &view.records).await;
            let live = &view.records;
            self.shared.probes.lock().unwrap_or_else(|e| e.into_inner()).retain(|id, _| live.contains_key(id));
        }
        let period = self.interval * SWEEP_PASSES as u32;
        let retention = self.state.settings.retention_secs;
        for rec in view.records.values() {
            let seen = match self.state.locks.changed_since(&rec.id, snapshot.mark) {
                true => None,
                false => {
                    Some(snapshot.containers.get(rec.id.as_str()).map(|c| c.state.clone()).unwrap_or_else(missing))
                }
            };
            // An untouched instance whose container agrees with its record needs a task
            // only on a sweep, when its probe is due, or when it may have gone idle.
            let quiet = seen.as_ref().is_some_and(|cs| settled(rec, &cs.observed, retention));
            if let Some(due) = due_wake(rec, &self.state.activity.of(&rec.id), now_secs()) {
                self.wake_for_schedule(rec, due);
                continue;
            }
            if quiet && !sweep && !self.has_duty(rec) {
                continue;
            }
            let Some(guard) = self.state.locks.try_lock(&rec.id).await else { continue };
            let (state, shared, id, rec) = (self.state.clone(), self.shared.clone(), rec.id.clone(), rec.clone());
            let nudge = self.nudge.clone();
            // Slow work (restarts wait for the agent) runs on its own task, holding the lock.
            tokio::spawn(async move {
                match reconcile_one(&state, &shared, rec, seen, period).await {
                    Ok(false) => guard.release_unchanged(),
                    Ok(true) => {
                        // Inspected afresh (or acted): the next pass lists again, so that
                        // the instance is back on the listing's word.
                        drop(guard);
                        nudge.changed(false);
                    }
                    Err(e) => {
                        nudge.changed(false);
                        state.metrics.reconcile_failure("instance");
                        tracing::warn!(instance = %id, error = %e, "reconcile failed");
                    }
                }
            });
        }
        Ok(())
    }

    /// Starts an instance stopped for idleness whose agent has scheduled work due
    /// (once: the start clears what made it due).
    fn wake_for_schedule(&self, rec: &InstanceRecord, due: i64) {
        let activity = self.state.activity.of(&rec.id);
        activity.set_next_due(None);
        let (state, id) = (self.state.clone(), rec.id.to_string());
        tracing::info!(instance = %rec.id, due, "waking a sleeping instance for its scheduled work");
        self.state.metrics.reconciled("wake_for_schedule");
        tokio::spawn(async move {
            let why = Some(format!("woken for its agent's scheduled work, due at {due}"));
            if let Err(e) =
                crate::instances::ops::act_noted(state, Actor::Reconciler, id.clone(), Action::Start, why).await
            {
                tracing::warn!(instance = %id, error = %e, "could not wake an instance for its scheduled work");
                // Tried again next pass (a start that failed for good leaves it in error, not asleep).
                activity.set_next_due(Some(due));
            }
        });
    }

    /// Whether a running instance is due a health probe or may have gone idle.
    fn has_duty(&self, rec: &InstanceRecord) -> bool {
        rec.status == Status::Running
            && (self.shared.probe_pending(&rec.id)
                || (rec.lifecycle_mode == "cold_start"
                    && idle_for(rec, &self.state.activity.of(&rec.id), now_secs()).is_some()))
    }

    /// Removes containers with no live record (a crashed create, a purge interrupted).
    async fn remove_orphan_containers(
        &self,
        containers: &HashMap<String, ManagedContainer>,
        records: &HashMap<InstanceId, InstanceRecord>,
    ) {
        let live: HashSet<&str> =
            records.values().filter(|r| r.status != Status::Deleted).map(|r| r.id.as_str()).collect();
        for c in containers.values().filter(|c| !live.contains(c.instance_id.as_str())) {
            // Under the instance's lock: a restore of a deleted instance may be under way.
            let _guard = match InstanceId::parse(&c.instance_id) {
                Some(id) => match self.state.locks.try_lock(&id).await {
                    // Asked again under the lock: the records between sweeps are those
                    // read when their operation ended, and one may have ended since.
                    Some(guard) => match self.state.store.instance(None, &id).await {
                        Ok(Some(rec)) if rec.status != Status::Deleted => continue,
                        Ok(_) => Some(guard),
                        Err(e) => {
                            tracing::warn!(instance = %id, error = %e, "could not read a record; orphan kept this pass");
                            continue;
                        }
                    },
                    None => continue,
                },
                None => None,
            };
            tracing::info!(instance = %c.instance_id, "removing container with no live record");
            self.state.metrics.reconciled("remove_orphan_container");
            // One that cannot be removed must not stop the pass for every other instance.
            if let Err(e) = self.state.runtime.remove_orphan(c).await {
                self.state.metrics.reconcile_failure("remove_orphan_container");
                tracing::warn!(instance = %c.instance_id, error = %e, "could not remove an orphan container");
            }
        }
    }

    /// Removes volumes with no record at all.
    async fn remove_orphan_volumes(&self, volumes: &[String], records: &HashMap<InstanceId, InstanceRecord>) {
        let known: HashSet<&str> = records.keys().map(|id| id.as_str()).collect();
        for v in volumes.iter().filter(|v| !known.contains(v.as_str())) {
            tracing::info!(instance = %v, "removing volume with no record");
            self.state.metrics.reconciled("remove_orphan_volume");
            if let Err(e) = self.state.runtime.remove_orphan_volume(v).await {
                self.state.metrics.reconcile_failure("remove_orphan_volume");
                tracing::warn!(instance = %v, error = %e, "could not remove an orphan volume");
            }
        }
    }
}

/// What a listing that does not show an instance's container says of it.
fn missing() -> ContainerState {
    ContainerState { observed: Observed::Missing, agent_addr: None, started_at: None, ipv6_addr: None }
}

/// Whether a record and its container as listed agree, so that nothing is to be done
/// at the runtime (only the in-memory tables asserted, probes and idle checks made).
fn settled(rec: &InstanceRecord, observed: &Observed, retention_secs: i64) -> bool {
    match rec.status {
        Status::Running => *observed == Observed::Running,
        Status::Paused => *observed == Observed::Paused,
        Status::Stopped => !matches!(observed, Observed::Running | Observed::Paused),
        Status::Error => true,
        Status::Deleted => {
            *observed == Observed::Missing && rec.deleted_at.is_some_and(|t| now_secs() < t + retention_secs)
        }
        Status::Creating | Status::Stopping => false,
    }
}

/// Brings one instance to its record. `seen` is its container as last listed, when no
/// operation touched it since; where that does not agree with the record, the record
/// is read again and the container inspected. Answers whether anything changed.
async fn reconcile_one(
    state: &AppState,
    shared: &Shared,
    rec: InstanceRecord,
    seen: Option<ContainerState>,
    probe_period: Duration,
) -> anyhow::Result<bool> {
    let retention = state.settings.retention_secs;
    let (mut rec, cs, settled) = match seen.filter(|cs| settled(&rec, &cs.observed, retention)) {
        Some(cs) => (rec, cs, true),
        None => {
            // Re-read under the lock: an operation may have just finished.
            let Some(rec) = state.store.instance(None, &rec.id).await? else { return Ok(true) };
            let cs = state.runtime.inspect(&rec.id).await?;
            (rec, cs, false)
        }
    };
    let observed = cs.observed.clone();
    // The record is authoritative: the edge's table and the egress rules follow it every pass.
    state.routes.apply(&rec);
    if rec.status == Status::Deleted {
        if let Some(fw) = &state.egress {
            fw.forget(&rec.id);
        }
    } else {
        state.egress_policy(&rec.id, &rec.egress).await;
        let addrs = match observed {
            Observed::Running | Observed::Paused => cs.addresses(),
            _ => Vec::new(),
        };
        state.egress_addresses(&rec.id, addrs).await;
    }
    match observed {
        Observed::Running if rec.status == Status::Running => {
            state.routes.set_address(&rec.id, cs.agent_addr.map(|a| a.ip()), None)
        }
        Observed::Running => {}
        _ => address_stale(state, &rec.id),
    }
    match rec.status {
        Status::Creating => {
            // Nobody holds the lock, so no create is in flight: the server died mid-create.
            tracing::info!(instance = %rec.id, "cleaning up a create interrupted by a server crash");
            state.metrics.reconciled("abandoned_create");
            state.runtime.purge(&rec.id).await?;
            state.store.delete_instance(&rec.id).await?;
            state.routes.remove(&rec.id);
            state.egress_forget(&rec.id).await;
            let ev = EventRecord {
                instance_id: rec.id.clone(),
                at: now_secs(),
                from: Some(Status::Creating),
                to: Status::Deleted,
                actor: ACTOR.name(),
                reason: Some("create was interrupted (server stopped); removed".into()),
            };
            state.store.record_event(&ev).await?;
        }
        Status::Deleted => {
            let expired = rec.deleted_at.is_some_and(|t| now_secs() >= t + state.settings.retention_secs);
            if expired {
                state.metrics.reconciled("purge_expired");
                state.runtime.purge(&rec.id).await?;
                state.store.delete_instance(&rec.id).await?;
                state.routes.remove(&rec.id);
                state.forget_instance_keys(&rec.workspace_id, &rec.id).await;
            } else if observed != Observed::Missing {
                state.runtime.remove(&rec.id).await?;
            }
        }
        Status::Running => match observed {
            Observed::Running => {
                let activity = state.activity.of(&rec.id);
                // Probed when its turn comes, and before an idle stop (a running turn is activity).
                let idle = idle_for(&rec, &activity, now_secs()).is_some();
                let agent = cs.agent_addr.filter(|_| crate::templates::spec_of(&rec).agent);
                if let Some(addr) = agent.filter(|_| idle || shared.probe_due(&rec.id, probe_period)) {
                    probe_agent(state, &rec.id, addr, &activity).await;
                }
                if idle_for(&rec, &activity, now_secs()).is_some() {
                    if settled {
                        // The listing's record may be older than the traffic counters: read it again.
                        let Some(fresh) = state.store.instance(None, &rec.id).await? else { return Ok(true) };
                        rec = fresh;
                    }
                    if let Some((idle, since)) = idle_for(&rec, &activity, now_secs()) {
                        idle_stop(state, &mut rec, &activity, idle, since).await?;
                        return Ok(true);
                    }
                }
            }
            Observed::Paused => {
                state.metrics.reconciled("resume");
                state.runtime.resume(&rec.id).await?;
            }
            other => revive(state, &shared.crashes, &mut rec, &other).await?,
        },
        Status::Paused => match observed {
            Observed::Paused => {}
            Observed::Running => {
                state.metrics.reconciled("pause");
                state.runtime.pause(&rec.id).await?;
            }
            other => {
                revive(state, &shared.crashes, &mut rec, &other).await?;
                if rec.status == Status::Paused {
                    state.runtime.pause(&rec.id).await?;
                }
            }
        },
        Status::Stopped | Status::Stopping => {
            if matches!(observed, Observed::Running | Observed::Paused) {
                state.metrics.reconciled("stop");
                state.runtime.stop(&rec.id).await?;
            }
            if rec.status == Status::Stopping {
                set_status(state, &mut rec, Status::Stopped, ACTOR, None).await?;
            }
        }
        Status::Error => {}
    }
    Ok(!settled)
}

/// Asks the agent whether it is alive and running a turn (a running turn is activity).
async fn probe_agent(state: &AppState, id: &InstanceId, addr: std::net::SocketAddr, activity: &InstanceActivity) {
    let probe = state.http.get(format!("http://{addr}/health")).timeout(Duration::from_secs(2)).send().await;
    let Ok(resp) = probe else { return };
    if !resp.status().is_success() {
        return;
    }
    state.heartbeat(id);
    if let Ok(body) = resp.json::<serde_json::Value>().await {
        activity.set_turn_running(body["turn_running"].as_bool().unwrap_or(false));
        activity.set_next_due(body["next_due_at"].as_i64());
    }
}

/// Scheduled work due within this many seconds keeps a `cold_start` instance awake.
const DUE_SOON_SECS: i64 = 60;

/// A sleeping instance is woken this many seconds before its scheduled work is due.
const WAKE_LEAD_SECS: i64 = 15;

/// Whether an instance stopped for idleness has scheduled work due (it is woken for it).
fn due_wake(rec: &InstanceRecord, activity: &InstanceActivity, now: i64) -> Option<i64> {
    let asleep = rec.status == Status::Stopped && rec.idle_stopped && rec.lifecycle_mode == "cold_start";
    activity.next_due().filter(|due| asleep && *due - WAKE_LEAD_SECS <= now)
}

/// How long a `cold_start` instance has been idle past its timeout, and since when:
/// nothing open (streams, WebSockets, execs, shells, log follows), no agent turn,
/// no hold, and no request for the timeout.
fn idle_for(rec: &InstanceRecord, activity: &InstanceActivity, now: i64) -> Option<(i64, i64)> {
    let timeout = rec.idle_timeout_secs.filter(|_| rec.lifecycle_mode == "cold_start")? as i64;
    let held = rec.hold_until.is_some_and(|t| t > now) || activity.hold_until().is_some();
    let due_soon = activity.next_due().is_some_and(|due| due - DUE_SOON_SECS <= now);
    if held || activity.open_count() > 0 || activity.turn_running() || due_soon {
        return None;
    }
    let since = rec.last_request_at.unwrap_or(0).max(activity.last_request()).max(rec.updated_at);
    let idle = now - since;
    (idle >= timeout).then_some((idle, since))
}

/// Stops an idle `cold_start` instance; the next request to its URL wakes it. A
/// request that arrives meanwhile waits for the wake instead of failing.
async fn idle_stop(
    state: &AppState,
    rec: &mut InstanceRecord,
    activity: &InstanceActivity,
    idle: i64,
    since: i64,
) -> anyhow::Result<()> {
    if !activity.begin_drain(since) {
        return Ok(());
    }
    state.metrics.reconciled("idle_stop");
    address_stale(state, &rec.id);
    let stopped = state.runtime.stop(&rec.id).await;
    let result = match stopped {
        Ok(()) => {
            rec.idle_stopped = true;
            let reason = format!("cold_start: idle for {idle} s (no request, stream, exec, shell or agent turn)");
            set_status(state, rec, Status::Stopped, ACTOR, Some(reason)).await.map_err(anyhow::Error::from)
        }
        Err(e) => Err(e.into()),
    };
    activity.end_drain();
    result
}

fn describe(observed: &Observed) -> String {
    match observed {
        Observed::Missing => "container was removed".into(),
        Observed::Exited { code, oom_killed: true } => {
            format!("container was killed for lack of memory (exit code {code})")
        }
        Observed::Exited { code, .. } => format!("container exited with code {code}"),
        Observed::Created => "container was not running".into(),
        Observed::Other(s) => format!("container was {s}"),
        Observed::Running | Observed::Paused => "container was running".into(),
    }
}

/// Brings a dead instance back, unless it is crash-looping.
async fn revive(
    state: &AppState,
    crashes: &Mutex<HashMap<InstanceId, CrashTracker>>,
    rec: &mut InstanceRecord,
    observed: &Observed,
) -> anyhow::Result<()> {
    let why = describe(observed);
    let verdict =
        crashes.lock().unwrap_or_else(|e| e.into_inner()).entry(rec.id.clone()).or_default().decide(Instant::now());
    match verdict {
        Verdict::Wait => Ok(()),
        Verdict::GiveUp { restarts } => {
            crashes.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id);
            state.metrics.reconciled("crash_loop");
            let reason = format!(
                "crash loop: restarted {restarts} times within {} s and it died again ({why}); start or restart it to try again",
                CrashTracker::WINDOW.as_secs()
            );
            set_status(state, rec, Status::Error, ACTOR, Some(reason)).await?;
            Ok(())
        }
        Verdict::Restart => {
            state.heartbeats.lock().unwrap_or_else(|e| e.into_inner()).remove(&rec.id);
            state.metrics.reconciled("restart");
            tracing::info!(instance = %rec.id, %why, "bringing instance back");
            // Every attempt counts, so a crash loop shows in restart_count too.
            rec.restart_count += 1;
            state.store.update_instance(rec).await?;
            if matches!(observed, Observed::Exited { .. } | Observed::Created | Observed::Other(_)) {
                // Keep the data, replace the dead container only if start fails.
                if let Err(e) = bring_up(state, rec).await {
                    tracing::info!(instance = %rec.id, error = %e, "restart failed; recreating the container");
                    state.runtime.remove(&rec.id).await?;
                    bring_up(state, rec).await.map_err(anyhow_rt)?;
                }
            } else {
                bring_up(state, rec).await.map_err(anyhow_rt)?;
            }
            let status = rec.status;
            set_status(state, rec, status, ACTOR, Some(format!("{why}; brought back"))).await?;
            Ok(())
        }
    }
}

fn anyhow_rt(e: RuntimeError) -> anyhow::Error {
    anyhow::anyhow!(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mode: &str, idle: Option<u64>, updated_at: i64, last_request_at: Option<i64>) -> InstanceRecord {
        InstanceRecord {
            seq: 1,
            id: InstanceId::generate(),
            workspace_id: berth_core::WorkspaceId::generate(),
            name: None,
            template: "berth-agent".into(),
            template_version: 1,
            template_spec: None,
            resources: None,
            size: 1,
            user: None,
            region: "local".into(),
            metadata: Default::default(),
            env: Default::default(),
            budget_cap_micros: None,
            budget_models: None,
            managed_used_micros: 0,
            topup_micros: 0,
            lifecycle_mode: mode.into(),
            idle_timeout_secs: idle,
            status: Status::Running,
            status_reason: None,
            restart_count: 0,
            created_at: updated_at,
            updated_at,
            deleted_at: None,
            gateway_token: None,
            last_request_at,
            exposed: vec![],
            idle_stopped: false,
            hold_until: None,
            requests_total: 0,
            egress: Default::default(),
            paid_until: None,
            pooled: false,
        }
    }

    #[test]
    fn only_idle_cold_start_instances_expire() {
        let now = now_secs();
        let quiet = InstanceActivity::default();
        let expired = |rec: &InstanceRecord, a: &InstanceActivity| idle_for(rec, a, now).is_some();
        assert!(expired(&record("cold_start", Some(60), now - 100, None), &quiet));
        assert!(expired(&record("cold_start", Some(60), now - 500, Some(now - 61)), &quiet));
        assert!(
            !expired(&record("cold_start", Some(60), now - 500, Some(now - 10)), &quiet),
            "a recent request keeps it up"
        );
        assert!(!expired(&record("cold_start", Some(60), now - 10, None), &quiet), "recently started");
        assert!(!expired(&record("always_on", None, now - 10_000, None), &quiet));
        let old = record("cold_start", Some(60), now - 500, None);
        let streaming = std::sync::Arc::new(InstanceActivity::default());
        let open = streaming.open();
        assert!(!expired(&old, &streaming), "an open stream is activity");
        drop(open);
        let turn = InstanceActivity::default();
        turn.set_turn_running(true);
        assert!(!expired(&old, &turn), "a running agent turn is activity");
        let held = InstanceActivity::default();
        held.set_hold(now + 60);
        assert!(!expired(&old, &held), "a hold keeps it awake");
        let scheduled = InstanceActivity::default();
        scheduled.set_next_due(Some(now + 30));
        assert!(!expired(&old, &scheduled), "scheduled work due soon keeps it awake");
        scheduled.set_next_due(Some(now + 3600));
        assert!(expired(&old, &scheduled), "work due in an hour does not");
    }

    #[test]
    fn a_sleeping_instance_is_woken_before_its_scheduled_work_only() {
        let now = now_secs();
        let mut asleep = record("cold_start", Some(60), now - 500, None);
        asleep.status = Status::Stopped;
        asleep.idle_stopped = true;
        let due = InstanceActivity::default();
        due.set_next_due(Some(now + 10));
        assert_eq!(due_wake(&asleep, &due, now), Some(now + 10));
        let later = InstanceActivity::default();
        later.set_next_due(Some(now + 600));
        assert_eq!(due_wake(&asleep, &later, now), None, "not yet");
        assert_eq!(due_wake(&asleep, &InstanceActivity::default(), now), None, "nothing scheduled");
        let mut stopped_by_user = asleep.clone();
        stopped_by_user.idle_stopped = false;
        assert_eq!(due_wake(&stopped_by_user, &due, now), None, "a user's stop is kept");
    }

    #[test]
    fn only_a_listing_that_agrees_with_the_record_skips_the_inspect() {
        let now = now_secs();
        let with = |status: Status| InstanceRecord { status, ..record("always_on", None, now, None) };
        let exited = Observed::Exited { code: 0, oom_killed: false };
        assert!(settled(&with(Status::Running), &Observed::Running, 60));
        assert!(!settled(&with(Status::Running), &exited, 60), "died: inspect, then bring back");
        assert!(!settled(&with(Status::Running), &Observed::Missing, 60));
        assert!(settled(&with(Status::Stopped), &exited, 60));
        assert!(settled(&with(Status::Stopped), &Observed::Missing, 60));
        assert!(!settled(&with(Status::Stopped), &Observed::Running, 60), "started behind berth's back");
        assert!(settled(&with(Status::Paused), &Observed::Paused, 60));
        assert!(!settled(&with(Status::Paused), &Observed::Running, 60));
        assert!(!settled(&with(Status::Creating), &Observed::Missing, 60), "a create the server lost");
        assert!(!settled(&with(Status::Stopping), &exited, 60));
        let deleted = |at: i64| InstanceRecord { deleted_at: Some(at), ..with(Status::Deleted) };
        assert!(settled(&deleted(now), &Observed::Missing, 60));
        assert!(!settled(&deleted(now - 61), &Observed::Missing, 60), "retention over: purge");
        assert!(!settled(&deleted(now), &exited, 60), "its container goes");
    }

    #[test]
    fn probes_come_once_a_period_spread_out() {
        let shared = Shared::default();
        let period = Duration::from_secs(30);
        let ids: Vec<InstanceId> = (0..200).map(|_| InstanceId::generate()).collect();
        assert!(ids.iter().all(|id| shared.probe_due(id, period)), "first sight");
        assert!(ids.iter().all(|id| !shared.probe_due(id, period)), "not again at once");
        let next: Vec<Instant> = shared.probes.lock().unwrap().values().copied().collect();
        let (first, last) = (next.iter().min().unwrap(), next.iter().max().unwrap());
        assert!(*last - *first > Duration::from_secs(20), "spread over the period: {:?}", *last - *first);
    }

    #[test]
    fn backoff_grows_and_a_loop_ends_in_give_up() {
        let mut t = CrashTracker::default();
        let start = Instant::now();
        assert_eq!(t.decide(start), Verdict::Restart);
        // Within the 1 s backoff: wait.
        assert_eq!(t.decide(start + Duration::from_millis(500)), Verdict::Wait);
        let mut now = start;
        for n in 1..CrashTracker::LIMIT {
            now += Duration::from_secs(1 << (n - 1));
            assert_eq!(t.decide(now), Verdict::Restart, "restart {n}");
        }
        now += Duration::from_secs(60);
        assert_eq!(t.decide(now), Verdict::GiveUp { restarts: CrashTracker::LIMIT });
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let mut t = CrashTracker::default();
        let start = Instant::now();
        let mut now = start;
        for _ in 0..CrashTracker::LIMIT {
            assert_eq!(t.decide(now), Verdict::Restart);
            now += Duration::from_secs(100);
        }
        // The first restarts are older than the window now.
        now += CrashTracker::WINDOW;
        assert_eq!(t.decide(now), Verdict::Restart);
    }
}
