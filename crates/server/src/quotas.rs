//! Fair shares: no workspace (and no key) can take the whole server. Concurrent
//! execs, shells, log follows and edge streams are capped per workspace and in
//! all; each key has a request rate (a token bucket). Over a cap the answer is
//! `429 rate_limited` with `Retry-After`, never a queue that slows everyone.

use berth_core::{KeyId, WorkspaceId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Exec,
    Shell,
    LogFollow,
    EdgeStream,
}

impl Kind {
    /// How clients call it in errors.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Exec => "commands running",
            Kind::Shell => "shells open",
            Kind::LogFollow => "log follows open",
            Kind::EdgeStream => "requests and streams in flight through the edge",
        }
    }
}

/// The caps (per workspace, and over the whole server) and the key rate.
#[derive(Debug, Clone)]
pub struct QuotaLimits {
    pub per_workspace: HashMap<Kind, u32>,
    pub total: HashMap<Kind, u32>,
    /// Requests per second a key may sustain on the hosting API.
    pub key_rate: f64,
    /// Requests a key may send at once above its rate.
    pub key_burst: f64,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub message: String,
    /// Seconds after which a retry may succeed.
    pub retry_after: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What is open, by workspace (`None`: the whole server) and kind.
type OpenCounts = HashMap<(Option<WorkspaceId>, Kind), Arc<AtomicU32>>;

/// Counters of what is open, and the keys' buckets.
pub struct Quotas {
    limits: QuotaLimits,
    open: Mutex<OpenCounts>,
    buckets: Mutex<HashMap<KeyId, Bucket>>,
}

/// Held while something counted is open; gives its slots back on drop.
#[derive(Debug)]
pub struct Slot(Vec<Arc<AtomicU32>>);

impl Drop for Slot {
    fn drop(&mut self) {
        for c in &self.0 {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Quotas {
    /// Quotas with these limits.
    pub fn new(limits: QuotaLimits) -> Self {
        Self { limits, open: Mutex::default(), buckets: Mutex::default() }
    }

    fn counter(&self, ws: Option<&WorkspaceId>, kind: Kind) -> Arc<AtomicU32> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() > 100_000 {
            open.retain(|_, c| c.load(Ordering::Acquire) > 0);
        }
        open.entry((ws.cloned(), kind)).or_default().clone()
    }

    /// Takes a slot of `kind` for the workspace, or says why not.
    pub fn acquire(&self, ws: &WorkspaceId, kind: Kind) -> Result<Slot, Refused> {
        let mut taken = Vec::with_capacity(2);
        for (scope, limit, whose) in [
            (Some(ws), self.limits.per_workspace.get(&kind), "this workspace has"),
            (None, self.limits.total.get(&kind), "this server has"),
        ] {
            let Some(&limit) = limit else { continue };
            let counter = self.counter(scope, kind);
            if counter.fetch_add(1, Ordering::AcqRel) >= limit {
                counter.fetch_sub(1, Ordering::AcqRel);
                drop(Slot(taken));
                return Err(Refused {
                    message: format!("{whose} {limit} {} already; retry when one ends", kind.noun()),
                    retry_after: 1,
                });
            }
            taken.push(counter);
        }
        Ok(Slot(taken))
    }

    /// Spends one request of the key's rate, or says when it may retry.
    pub fn spend(&self, key: &KeyId) -> Result<(), Refused> {
        let (rate, burst) = (self.limits.key_rate, self.limits.key_burst.max(1.0));
        if rate <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, b| b.at.elapsed().as_secs_f64() * rate < burst);
        }
        let now = Instant::now();
        let b = buckets.entry(key.clone()).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64;
        Err(Refused {
            message: format!("this key sends more than {rate} requests per second (burst {burst}); slow down"),
            retry_after: wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_ws: u32, total: u32, rate: f64, burst: f64) -> QuotaLimits {
        QuotaLimits {
            per_workspace: HashMap::from([(Kind::Exec, per_ws)]),
            total: HashMap::from([(Kind::Exec, total)]),
            key_rate: rate,
            key_burst: burst,
        }
    }

    #[test]
    fn a_workspace_cannot_take_more_than_its_share() {
        let q = Quotas::new(limits(2, 3, 0.0, 0.0));
        let (a, b) = (WorkspaceId::generate(), WorkspaceId::generate());
        let s1 = q.acquire(&a, Kind::Exec).unwrap();
        let _s2 = q.acquire(&a, Kind::Exec).unwrap();
        let e = q.acquire(&a, Kind::Exec).unwrap_err();
        assert!(e.message.contains("this workspace has 2"), "{e:?}");
        let _s3 = q.acquire(&b, Kind::Exec).unwrap();
        let e = q.acquire(&b, Kind::Exec).unwrap_err();
        assert!(e.message.contains("this server has 3"), "{e:?}");
        drop(s1);
        assert!(q.acquire(&b, Kind::Exec).is_ok(), "a slot given back is free again");
        assert!(q.acquire(&a, Kind::Shell).is_ok(), "kinds without a cap are free");
    }

    #[test]
    fn a_key_spends_its_burst_then_waits() {
        let q = Quotas::new(limits(1, 1, 1.0, 3.0));
        let k = KeyId::generate();
        for _ in 0..3 {
            q.spend(&k).unwrap();
        }
        let e = q.spend(&k).unwrap_err();
        assert_eq!(e.retry_after, 1);
        assert!(q.spend(&KeyId::generate()).is_ok(), "other keys are not affected");
    }
}
