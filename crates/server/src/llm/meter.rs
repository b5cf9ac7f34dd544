//! Caps without overspend: every managed call reserves an upper bound of its cost
//! before it is forwarded and settles to the real cost after.
//!
//! The books are in memory (one server; the PostgreSQL issue moves them to the
//! database for several replicas): a call is admitted only when the instance's cap
//! (and, with `--billing`, the wallet) still covers every call in flight at its bound,
//! so concurrent calls at the edge of a cap overspend only where a call costs more
//! than its bound. A killed server loses its reservations, which is what releasing
//! them at start means: nothing reserved was ever charged.

use berth_core::{InstanceId, WorkspaceId};
use std::collections::HashMap;
use std::sync::Mutex;

/// Why a call was refused before it was forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The instance's cap (plus top-ups) does not cover the call's bound.
    Budget { available: i64, needed: i64 },
    /// `--billing`: the workspace's wallet does not cover it.
    Funds { available: i64, needed: i64 },
}

#[derive(Default)]
struct Books {
    /// Per instance: managed usage settled so far (as this server knows it) and in flight.
    instances: HashMap<InstanceId, (i64, i64)>,
    /// Per workspace: reserved by calls in flight.
    wallets: HashMap<WorkspaceId, i64>,
    /// Per workspace: settled by calls whose ledger entry is not written yet (the
    /// balance read from the database does not show them).
    pending: HashMap<WorkspaceId, i64>,
}

/// The reservations of calls in flight.
#[derive(Default)]
pub struct Meter {
    books: Mutex<Books>,
}

/// What an instance may spend, as its record says.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Cap plus top-ups (micro-dollars); `None`: no cap of its own.
    pub cap: Option<i64>,
    /// Managed usage the record has settled.
    pub used: i64,
    /// The wallet's balance when `--billing` enforces it.
    pub wallet: Option<i64>,
}

/// A reservation held by a call in flight; settle it exactly once.
#[derive(Debug)]
pub struct Reservation {
    pub instance: InstanceId,
    pub workspace: WorkspaceId,
    pub micros: i64,
}

impl Meter {
    /// Reserves `bound` micro-dollars for a call of `instance`, or says why not.
    pub fn reserve(
        &self,
        instance: &InstanceId,
        workspace: &WorkspaceId,
        limits: Limits,
        bound: i64,
    ) -> Result<Reservation, Refusal> {
        let mut b = self.books.lock().unwrap_or_else(|e| e.into_inner());
        let (used, reserved) = {
            let e = b.instances.entry(instance.clone()).or_insert((limits.used, 0));
            // The record may know of charges this map has not seen (another server,
            // a restart): the larger figure is the safer one.
            e.0 = e.0.max(limits.used);
            *e
        };
        if let Some(cap) = limits.cap {
            let available = cap.saturating_sub(used).saturating_sub(reserved);
            if available < bound {
                return Err(Refusal::Budget { available: available.max(0), needed: bound });
            }
        }
        if let Some(balance) = limits.wallet {
            let held = b.wallets.get(workspace).copied().unwrap_or(0) + b.pending.get(workspace).copied().unwrap_or(0);
            let available = balance.saturating_sub(held);
            if available < bound {
                return Err(Refusal::Funds { available: available.max(0), needed: bound });
            }
        }
        let e = b.instances.get_mut(instance).expect("entry made above");
        e.1 = e.1.saturating_add(bound);
        let w = b.wallets.entry(workspace.clone()).or_default();
        *w = w.saturating_add(bound);
        Ok(Reservation { instance: instance.clone(), workspace: workspace.clone(), micros: bound })
    }

    /// Releases a reservation and counts what the call really cost (0 when it failed);
    /// the cost stays held on the wallet until [`Meter::committed`].
    pub fn settle(&self, r: &Reservation, cost: i64) {
        let mut b = self.books.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = b.instances.get_mut(&r.instance) {
            e.0 = e.0.saturating_add(cost);
            e.1 = e.1.saturating_sub(r.micros);
        }
        if let Some(w) = b.wallets.get_mut(&r.workspace) {
            *w = w.saturating_sub(r.micros);
            if *w == 0 {
                b.wallets.remove(&r.workspace);
            }
        }
        if cost != 0 {
            let p = b.pending.entry(r.workspace.clone()).or_default();
            *p = p.saturating_add(cost);
        }
    }

    /// A settled cost's ledger entry is written (or failed): the balance read from the
    /// database shows it now.
    pub fn committed(&self, workspace: &WorkspaceId, cost: i64) {
        if cost == 0 {
            return;
        }
        let mut b = self.books.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = b.pending.get_mut(workspace) {
            *p = p.saturating_sub(cost);
            if *p == 0 {
                b.pending.remove(workspace);
            }
        }
    }

    /// Forgets a purged instance (unless a call of it is still in flight).
    pub fn forget(&self, instance: &InstanceId) {
        let mut b = self.books.lock().unwrap_or_else(|e| e.into_inner());
        if b.instances.get(instance).is_some_and(|e| e.1 == 0) {
            b.instances.remove(instance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (InstanceId, WorkspaceId) {
        (InstanceId::from_trusted("inst_aaaaaaaaaa".into()), WorkspaceId::from_trusted("ws_a".into()))
    }

    #[test]
    fn a_cap_serves_the_calls_it_can_pay_for_then_refuses() {
        let (i, w) = ids();
        let m = Meter::default();
        let limits = Limits { cap: Some(500_000), used: 0, wallet: None };
        for _ in 0..2 {
            let r = m.reserve(&i, &w, limits, 200_000).unwrap();
            m.settle(&r, 200_000);
        }
        assert_eq!(
            m.reserve(&i, &w, limits, 200_000).unwrap_err(),
            Refusal::Budget { available: 100_000, needed: 200_000 }
        );
    }

    #[test]
    fn calls_in_flight_hold_their_bound_until_settled() {
        let (i, w) = ids();
        let m = Meter::default();
        let limits = Limits { cap: Some(1_000), used: 0, wallet: Some(10_000) };
        let held: Vec<_> = (0..10).map(|_| m.reserve(&i, &w, limits, 100).unwrap()).collect();
        assert!(m.reserve(&i, &w, limits, 100).is_err(), "ten calls at 100 fill a cap of 1000");
        for r in &held {
            m.settle(r, 40);
        }
        // 400 spent: 600 left, six more calls at their bound.
        assert!((0..6).all(|_| m.reserve(&i, &w, limits, 100).is_ok()));
        assert!(m.reserve(&i, &w, limits, 100).is_err());
    }

    #[test]
    fn the_wallet_bounds_calls_across_instances() {
        let (i, w) = ids();
        let j = InstanceId::from_trusted("inst_bbbbbbbbbb".into());
        let m = Meter::default();
        let limits = Limits { cap: None, used: 0, wallet: Some(150) };
        let a = m.reserve(&i, &w, limits, 100).unwrap();
        assert_eq!(m.reserve(&j, &w, limits, 100).unwrap_err(), Refusal::Funds { available: 50, needed: 100 });
        // Settled but not yet in the database: still held against the balance read.
        m.settle(&a, 100);
        assert!(m.reserve(&j, &w, limits, 100).is_err(), "a charge not yet written was forgotten");
        m.committed(&w, 100);
        let limits = Limits { wallet: Some(50), ..limits };
        assert_eq!(m.reserve(&j, &w, limits, 100).unwrap_err(), Refusal::Funds { available: 50, needed: 100 });
    }
}
