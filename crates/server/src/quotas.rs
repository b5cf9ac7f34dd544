//! Fair shares: no workspace (and no key) can take the whole server. Concurrent
//! execs, shells, log follows and edge streams are capped per workspace and in
//! all; each key has a request rate (a token bucket). Over a cap the answer is
//! `429 rate_limited` with `Retry-After`, never a queue that slows everyone.
//! Failed authentications are rate-limited per client address on both planes.

use berth_core::{KeyId, WorkspaceId};
use std::collections::HashMap;
use std::net::IpAddr;
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
    /// Failed authentications a client address may make per minute (also the burst;
    /// 0: no limit).
    pub auth_failures_per_minute: f64,
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

impl Bucket {
    /// The tokens it holds at `now`, refilled at `rate` per second up to `burst`.
    fn level(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(burst)
    }
}

/// What is open, by workspace (`None`: the whole server) and kind.
type OpenCounts = HashMap<(Option<WorkspaceId>, Kind), Arc<AtomicU32>>;

/// Counters of what is open, and the keys' buckets.
pub struct Quotas {
    limits: QuotaLimits,
    open: Mutex<OpenCounts>,
    buckets: Mutex<HashMap<KeyId, Bucket>>,
    /// Failed authentications, by client address (IPv6 by /64: one host has many).
    failures: Mutex<HashMap<IpAddr, Bucket>>,
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
        Self { limits, open: Mutex::default(), buckets: Mutex::default(), failures: Mutex::default() }
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
        take(&self.buckets, key, rate, burst).map_err(|wait| Refused {
            message: format!("this key sends more than {rate} requests per second (burst {burst}); slow down"),
            retry_after: wait,
        })
    }

    /// Whether a client at `ip` may try to authenticate, or is refused for having
    /// failed too often (nothing is spent: only failures are, by [`Self::auth_failed`]).
    pub fn may_authenticate(&self, ip: IpAddr) -> Result<(), Refused> {
        let (rate, burst) = self.failure_rate();
        peek(&self.failures, &address_block(ip), rate, burst).map_err(|wait| Refused {
            message: format!(
                "too many failed authentications from this address (more than {burst} a minute); retry later"
            ),
            retry_after: wait,
        })
    }

    /// Counts one failed authentication of a client at `ip`.
    pub fn auth_failed(&self, ip: IpAddr) {
        let (rate, burst) = self.failure_rate();
        let _ = take(&self.failures, &address_block(ip), rate, burst);
    }

    /// Per second and burst of failed authentications.
    fn failure_rate(&self) -> (f64, f64) {
        let per_minute = self.limits.auth_failures_per_minute;
        (per_minute / 60.0, per_minute.max(1.0))
    }
}

/// The address a client is counted under: itself, or its /64 for IPv6.
fn address_block(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// Seconds until a bucket holding `tokens` has a whole one, at `rate` per second.
fn wait_secs(tokens: f64, rate: f64) -> u64 {
    ((1.0 - tokens) / rate).ceil().max(1.0) as u64
}

/// Whether `key`'s bucket holds a whole token now (a key without a bucket has a full
/// one), spending nothing and creating no bucket; else the seconds to wait. The check
/// every authenticating request makes: clients that never failed cost one lookup.
fn peek<K: std::hash::Hash + Eq>(
    buckets: &Mutex<HashMap<K, Bucket>>,
    key: &K,
    rate: f64,
    burst: f64,
) -> Result<(), u64> {
    if rate <= 0.0 {
        return Ok(());
    }
    let buckets = buckets.lock().unwrap_or_else(|e| e.into_inner());
    let Some(b) = buckets.get(key) else { return Ok(()) };
    let tokens = b.level(Instant::now(), rate, burst);
    if tokens >= 1.0 {
        Ok(())
    } else {
        Err(wait_secs(tokens, rate))
    }
}

/// Token bucket step: refills `key`'s bucket at `rate` per second up to `burst`,
/// then, when a whole token is there, takes it; else the seconds to wait.
/// A rate of 0 or less never refuses.
fn take<K: std::hash::Hash + Eq + Clone>(
    buckets: &Mutex<HashMap<K, Bucket>>,
    key: &K,
    rate: f64,
    burst: f64,
) -> Result<(), u64> {
    if rate <= 0.0 {
        return Ok(());
    }
    let mut buckets = buckets.lock().unwrap_or_else(|e| e.into_inner());
    if buckets.len() > 100_000 {
        buckets.retain(|_, b| b.at.elapsed().as_secs_f64() * rate < burst);
    }
    let now = Instant::now();
    let b = buckets.entry(key.clone()).or_insert(Bucket { tokens: burst, at: now });
    b.tokens = b.level(now, rate, burst);
    b.at = now;
    if b.tokens >= 1.0 {
        b.tokens -= 1.0;
        return Ok(());
    }
    Err(wait_secs(b.tokens, rate))
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
            auth_failures_per_minute: 3.0,
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

    #[test]
    fn failed_authentications_are_counted_per_address() {
        let q = Quotas::new(limits(1, 1, 0.0, 0.0));
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..3 {
            q.may_authenticate(ip).unwrap();
            q.auth_failed(ip);
        }
        let e = q.may_authenticate(ip).unwrap_err();
        assert_eq!(e.retry_after, 20, "3 a minute: one more in 20 s");
        assert!(q.may_authenticate("203.0.113.10".parse().unwrap()).is_ok(), "other addresses are not affected");
        // IPv6 clients are counted by /64.
        for i in 0..3u16 {
            q.auth_failed(format!("2001:db8::{i}").parse().unwrap());
        }
        assert!(q.may_authenticate("2001:db8::ffff".parse().unwrap()).is_err());
        assert!(q.may_authenticate("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
