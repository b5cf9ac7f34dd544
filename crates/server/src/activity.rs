//! What keeps an instance awake, kept in memory: the last request through the
//! edge, streams and WebSockets open right now, execs, shells and log follows, a
//! running agent turn (from the agent's `/health`) and holds. The reconciler reads
//! it to decide whether a `cold_start` instance is idle; request times and counts
//! go to the database in batches ([`Activity::flush`]), never per request.

use berth_core::{now_secs, InstanceId};
use berth_store::{Store, TrafficUpdate};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The live activity of one instance.
#[derive(Debug, Default)]
pub struct InstanceActivity {
    /// Latest request or end of a stream (unix seconds).
    last_request: AtomicI64,
    /// Streams, WebSockets, execs, shells and log follows open now.
    open: AtomicU32,
    /// Edge requests since this server started.
    requests: AtomicU64,
    /// Part of `requests` already written to the database.
    flushed: AtomicU64,
    /// An idle stop is under way: new requests wait for the wake instead.
    draining: AtomicBool,
    /// The agent reported a running turn at its last probe.
    turn_running: AtomicBool,
    /// Kept awake until (unix seconds).
    hold_until: AtomicI64,
    /// When the agent's next scheduled turn is due (unix seconds; 0: none), from its
    /// last probe; kept while the instance sleeps, so it is woken in time.
    next_due_at: AtomicI64,
}

impl InstanceActivity {
    /// Counts a request arriving now.
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.last_request.store(now_secs(), Ordering::Relaxed);
    }

    /// Marks something open (a stream, a WebSocket, an exec...) until the guard drops.
    pub fn open(self: &Arc<Self>) -> Busy {
        self.open.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Whether an idle stop has begun (checked after [`InstanceActivity::open`]).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Requests not yet written to the database.
    pub fn unflushed_requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed).saturating_sub(self.flushed.load(Ordering::Relaxed))
    }

    /// Latest activity (unix seconds; 0 when none since start).
    pub fn last_request(&self) -> i64 {
        self.last_request.load(Ordering::Relaxed)
    }

    /// Things open right now.
    pub fn open_count(&self) -> u32 {
        self.open.load(Ordering::SeqCst)
    }

    /// Records what the agent's `/health` said about turns.
    pub fn set_turn_running(&self, running: bool) {
        self.turn_running.store(running, Ordering::Relaxed);
    }

    /// Records what the agent's `/health` said about its next scheduled turn.
    pub fn set_next_due(&self, at: Option<i64>) {
        self.next_due_at.store(at.unwrap_or(0), Ordering::Relaxed);
    }

    /// When the agent's next scheduled turn is due, as of its last probe.
    pub fn next_due(&self) -> Option<i64> {
        Some(self.next_due_at.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// Whether the agent was running a turn at its last probe.
    pub fn turn_running(&self) -> bool {
        self.turn_running.load(Ordering::Relaxed)
    }

    /// Keeps the instance awake until `until` (unix seconds; 0 releases).
    pub fn set_hold(&self, until: i64) {
        self.hold_until.store(until, Ordering::Relaxed);
    }

    /// The hold in force, if any.
    pub fn hold_until(&self) -> Option<i64> {
        Some(self.hold_until.load(Ordering::Relaxed)).filter(|t| *t > now_secs())
    }

    /// Starts an idle stop unless something is open or a request came after
    /// `idle_since`; the caller stops the instance only when this returns true.
    /// Paired with [`InstanceActivity::open`] + [`InstanceActivity::draining`]:
    /// either the edge sees the drain and waits for the wake, or this sees the request.
    pub fn begin_drain(&self, idle_since: i64) -> bool {
        self.draining.store(true, Ordering::SeqCst);
        if self.open.load(Ordering::SeqCst) > 0 || self.last_request() > idle_since {
            self.draining.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Ends an idle stop (the instance is stopped, or the stop failed).
    pub fn end_drain(&self) {
        self.draining.store(false, Ordering::SeqCst);
    }
}

/// Held while something keeps the instance busy; the end counts as activity.
#[derive(Debug)]
pub struct Busy(Arc<InstanceActivity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.last_request.store(now_secs(), Ordering::Relaxed);
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Activity of every instance this server has seen.
#[derive(Debug, Default)]
pub struct Activity {
    map: RwLock<HashMap<InstanceId, Arc<InstanceActivity>>>,
}

impl Activity {
    /// The activity of an instance, created on first use.
    pub fn of(&self, id: &InstanceId) -> Arc<InstanceActivity> {
        if let Some(a) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(id) {
            return a.clone();
        }
        self.map.write().unwrap_or_else(|e| e.into_inner()).entry(id.clone()).or_default().clone()
    }

    /// The activity of an instance, if it has any.
    pub fn get(&self, id: &InstanceId) -> Option<Arc<InstanceActivity>> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Marks the instance busy until the guard drops (execs, shells, log follows).
    pub fn busy(&self, id: &InstanceId) -> Busy {
        self.of(id).open()
    }

    /// Drops an instance that no longer exists.
    pub fn forget(&self, id: &InstanceId) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Writes request times and counts gathered since the last flush, in one batch.
    /// With `open_is_traffic` (replicas: the one that decides idleness may be another),
    /// an instance with something open here (a stream, a WebSocket, an exec, a shell,
    /// a log follow) counts as requested now.
    pub async fn flush(&self, store: &dyn Store, open_is_traffic: bool) -> berth_store::Result<()> {
        let mut batch = Vec::new();
        let mut marks = Vec::new();
        let now = berth_core::now_secs();
        for (id, a) in self.map.read().unwrap_or_else(|e| e.into_inner()).iter() {
            let total = a.requests.load(Ordering::Relaxed);
            let flushed = a.flushed.load(Ordering::Relaxed);
            let open = open_is_traffic && a.open_count() > 0;
            if total > flushed || open {
                batch.push(TrafficUpdate {
                    id: id.clone(),
                    last_request_at: if open { now } else { a.last_request() },
                    requests: total - flushed,
                });
                marks.push((a.clone(), total));
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        store.record_traffic(&batch).await?;
        for (a, total) in marks {
            a.flushed.store(total, Ordering::Relaxed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_stream_or_a_late_request_prevents_a_drain() {
        let a = Arc::new(InstanceActivity::default());
        let busy = a.open();
        assert!(!a.begin_drain(now_secs()), "a stream is open");
        assert!(!a.draining());
        drop(busy);
        assert!(!a.begin_drain(now_secs() - 10), "the stream just ended: that is activity");
        assert!(a.begin_drain(now_secs() + 1));
        assert!(a.draining());
        a.end_drain();
        assert!(!a.draining());
    }

    #[test]
    fn requests_are_counted_until_flushed() {
        let a = InstanceActivity::default();
        a.request();
        a.request();
        assert_eq!(a.unflushed_requests(), 2);
        a.flushed.store(2, Ordering::Relaxed);
        assert_eq!(a.unflushed_requests(), 0);
    }
}
