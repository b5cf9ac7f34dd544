//! Fair shares of a bounded budget of calls (the Docker Engine API's), across tenants.
//!
//! [`FairGate`] hands out at most `n` permits at once, like a semaphore; when callers
//! wait, the next free permit goes to the tenants in turn (round robin), each
//! tenant's own callers first come, first served. So a tenant polling in a loop
//! from many threads queues behind itself: another tenant's call waits for at most
//! one permit to come free, not for the whole backlog.
//!
//! The tenant of a call is the one of the task it runs on: [`scope`] runs a future
//! with a tenant slot that is filled in once the tenant is known ([`set_tenant`],
//! called by the server when it authenticates a request). Calls with no tenant
//! (the reconciler, start-up) share one lane of their own.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::oneshot;

tokio::task_local! {
    static TENANT: Arc<OnceLock<Arc<str>>>;
}

/// A slot for the tenant of a piece of work, filled in once it is known.
pub type TenantSlot = Arc<OnceLock<Arc<str>>>;

/// Runs `fut` with `slot` as its tenant slot: runtime calls made by it (on this
/// task) are queued in that tenant's lane.
pub fn scope<F: Future>(slot: TenantSlot, fut: F) -> impl Future<Output = F::Output> {
    TENANT.scope(slot, fut)
}

/// The tenant slot of the current task, to carry it into a spawned task.
pub fn current_slot() -> Option<TenantSlot> {
    TENANT.try_with(Arc::clone).ok()
}

/// Names the tenant of the current task's work (the first name given sticks).
pub fn set_tenant(tenant: &str) {
    let _ = TENANT.try_with(|slot| slot.set(Arc::from(tenant)));
}

/// The tenant of the current task, `""` when none.
fn current_tenant() -> Arc<str> {
    TENANT.try_with(|slot| slot.get().cloned()).ok().flatten().unwrap_or_else(|| Arc::from(""))
}

#[derive(Default)]
struct State {
    free: usize,
    /// Waiters of each tenant, oldest first.
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
    /// Tenants with waiters, in the order they are served.
    turn: VecDeque<Arc<str>>,
}

/// At most `n` permits at once, shared fairly between tenants (see the module).
pub struct FairGate {
    state: Mutex<State>,
    /// Permits asked for so far.
    asked: std::sync::atomic::AtomicU64,
}

/// A permit of a [`FairGate`]; dropping it lets the next waiter in.
pub struct FairPermit<'a> {
    gate: &'a FairGate,
}

impl FairGate {
    /// A gate of `n` permits (at least one).
    pub fn new(n: usize) -> Self {
        Self { state: Mutex::new(State { free: n.max(1), ..Default::default() }), asked: Default::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a permit in the current task's tenant lane.
    pub async fn acquire(&self) -> FairPermit<'_> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.acquire_as(current_tenant()).await
    }

    /// Waits for a permit in `tenant`'s lane.
    pub async fn acquire_as(&self, tenant: Arc<str>) -> FairPermit<'_> {
        let rx = {
            let mut st = self.lock();
            if st.free > 0 && st.turn.is_empty() {
                st.free -= 1;
                return FairPermit { gate: self };
            }
            let (tx, rx) = oneshot::channel();
            let lane = st.waiting.entry(tenant.clone()).or_default();
            let new_lane = lane.is_empty();
            lane.push_back(tx);
            if new_lane {
                st.turn.push_back(tenant);
            }
            // Free permits with only abandoned waiters ahead: hand them out now.
            dispatch(&mut st);
            rx
        };
        // If this future is dropped after a permit was handed to it, the guard passes
        // the permit on instead of losing it.
        let mut guard = Waiting { gate: self, rx: Some(rx) };
        let got = guard.rx.as_mut().expect("receiver present").await;
        guard.rx = None;
        match got {
            Ok(()) => FairPermit { gate: self },
            // The gate only drops a sender after sending; should it ever not, wait again.
            Err(_) => Box::pin(self.acquire_as(current_tenant())).await,
        }
    }

    /// Puts a permit back and hands it to the next waiter in turn.
    fn release(&self) {
        let mut st = self.lock();
        st.free += 1;
        dispatch(&mut st);
    }

    /// Permits asked for through [`FairGate::acquire`] since the gate was made.
    pub fn asked(&self) -> u64 {
        self.asked.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Permits free now.
    pub fn available(&self) -> usize {
        self.lock().free
    }
}

/// While permits are free and tenants wait, gives one permit to the oldest waiter of
/// the tenant whose turn it is, then moves that tenant to the back of the turn order.
fn dispatch(st: &mut State) {
    while st.free > 0 {
        let Some(tenant) = st.turn.pop_front() else { return };
        let Some(lane) = st.waiting.get_mut(&tenant) else { continue };
        let next = lane.pop_front();
        if lane.is_empty() {
            st.waiting.remove(&tenant);
        } else {
            st.turn.push_back(tenant);
        }
        // A waiter that went away (its receiver dropped) is skipped.
        if let Some(tx) = next {
            if tx.send(()).is_ok() {
                st.free -= 1;
            }
        }
    }
}

struct Waiting<'a> {
    gate: &'a FairGate,
    rx: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if rx.try_recv().is_ok() {
                self.gate.release();
            }
        }
    }
}

impl Drop for FairPermit<'_> {
    fn drop(&mut self) {
        self.gate.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[tokio::test]
    async fn a_tenants_backlog_does_not_delay_another_tenant() {
        let gate = Arc::new(FairGate::new(2));
        let order = Arc::new(Mutex::new(Vec::new()));
        // Tenant A holds both permits and queues 20 more calls.
        let held = (gate.acquire_as(t("A")).await, gate.acquire_as(t("A")).await);
        let mut tasks = vec![];
        for i in 0..20 {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = gate.acquire_as(t("A")).await;
                order.lock().unwrap().push(format!("A{i}"));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }));
            tokio::task::yield_now().await;
        }
        // Then B asks once.
        let (g, o) = (gate.clone(), order.clone());
        let b = tokio::spawn(async move {
            let _p = g.acquire_as(t("B")).await;
            o.lock().unwrap().push("B".into());
        });
        tokio::task::yield_now().await;
        drop(held);
        b.await.unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        let order = order.lock().unwrap();
        let b_at = order.iter().position(|x| x == "B").unwrap();
        assert!(b_at <= 1, "B was served after {b_at} of A's queued calls: {order:?}");
        assert_eq!(order.len(), 21);
        // A's own calls kept their order.
        let a: Vec<&String> = order.iter().filter(|x| x.starts_with('A')).collect();
        assert_eq!(a.first().map(|s| s.as_str()), Some("A0"));
        assert_eq!(gate.available(), 2, "every permit came back");
    }

    #[tokio::test]
    async fn an_abandoned_wait_loses_no_permit() {
        let gate = FairGate::new(1);
        let p = gate.acquire_as(t("A")).await;
        // A waiter that gives up (a client went away).
        let gave_up = tokio::time::timeout(Duration::from_millis(20), gate.acquire_as(t("B"))).await;
        assert!(gave_up.is_err());
        drop(p);
        assert_eq!(gate.available(), 1);
        let again = tokio::time::timeout(Duration::from_secs(1), gate.acquire_as(t("C"))).await;
        assert!(again.is_ok(), "the permit was lost");
    }

    #[tokio::test]
    async fn the_tenant_comes_from_the_task_scope() {
        let slot: TenantSlot = Default::default();
        scope(slot.clone(), async {
            assert_eq!(&*current_tenant(), "");
            set_tenant("ws_1");
            set_tenant("ws_2");
            assert_eq!(&*current_tenant(), "ws_1", "the first name sticks");
            let carried = current_slot().unwrap();
            tokio::spawn(scope(carried, async { assert_eq!(&*current_tenant(), "ws_1") })).await.unwrap();
        })
        .await;
        assert_eq!(&*current_tenant(), "", "no scope, no tenant");
    }
}
