//! Per-instance operation locks: one lifecycle operation at a time per instance,
//! whether it comes from a client or from the reconciler.
//!
//! Releases are counted, so the reconciler can tell which instances an operation
//! touched since it last looked at the runtime (its snapshot of them is stale).

use berth_core::InstanceId;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Hands out one async mutex per instance id.
#[derive(Default)]
pub struct InstanceLocks {
    map: Mutex<HashMap<InstanceId, Arc<AsyncMutex<()>>>>,
    releases: Arc<Releases>,
}

/// When each instance's lock was last released, in release counts.
#[derive(Default)]
struct Releases {
    count: AtomicU64,
    last: Mutex<HashMap<InstanceId, u64>>,
}

/// Held while an operation runs on an instance.
pub struct InstanceGuard {
    _held: OwnedMutexGuard<()>,
    id: InstanceId,
    releases: Arc<Releases>,
    /// Whether releasing counts as a change (the reconciler only looked).
    changed: bool,
}

impl InstanceGuard {
    /// Releases the lock without counting it as a change: the holder only looked and
    /// changed nothing, so what was seen of the instance before is still true.
    pub fn release_unchanged(mut self) {
        self.changed = false;
    }
}

impl Releases {
    fn touch(&self, id: &InstanceId) {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        self.last.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone(), n);
    }
}

impl Drop for InstanceGuard {
    fn drop(&mut self) {
        if self.changed {
            self.releases.touch(&self.id);
        }
    }
}

impl InstanceLocks {
    fn slot(&self, id: &InstanceId) -> Arc<AsyncMutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Drop slots nobody holds, so the map does not grow with every id ever seen.
        if map.len() > 1024 {
            map.retain(|_, m| Arc::strong_count(m) > 1);
        }
        map.entry(id.clone()).or_default().clone()
    }

    fn guard(&self, id: &InstanceId, held: OwnedMutexGuard<()>) -> InstanceGuard {
        InstanceGuard { _held: held, id: id.clone(), releases: self.releases.clone(), changed: true }
    }

    /// Waits for the instance's lock.
    pub async fn lock(&self, id: &InstanceId) -> InstanceGuard {
        let held = self.slot(id).lock_owned().await;
        self.guard(id, held)
    }

    /// Takes the lock only if nobody holds it (the reconciler skips busy instances).
    pub fn try_lock(&self, id: &InstanceId) -> Option<InstanceGuard> {
        let held = self.slot(id).try_lock_owned().ok()?;
        Some(self.guard(id, held))
    }

    /// Counts a change of the instance made outside any operation (its container died,
    /// was removed or started behind berth's back), as if an operation had just ended.
    pub fn touch(&self, id: &InstanceId) {
        self.releases.touch(id);
    }

    /// Releases counted so far: a mark to compare [`InstanceLocks::changed_since`] with.
    pub fn mark(&self) -> u64 {
        self.releases.count.load(Ordering::SeqCst)
    }

    /// Whether an operation on the instance ended after `mark` was taken.
    pub fn changed_since(&self, id: &InstanceId, mark: u64) -> bool {
        self.releases.last.lock().unwrap_or_else(|e| e.into_inner()).get(id).is_some_and(|n| *n > mark)
    }

    /// Instances whose lock was released (or that were touched) after `mark`.
    pub fn changed_ids_since(&self, mark: u64) -> Vec<InstanceId> {
        let last = self.releases.last.lock().unwrap_or_else(|e| e.into_inner());
        last.iter().filter(|(_, n)| **n > mark).map(|(id, _)| id.clone()).collect()
    }

    /// Forgets releases up to `mark` (nobody will ask about anything older).
    pub fn forget_until(&self, mark: u64) {
        self.releases.last.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, n| *n > mark);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_after_a_mark_are_changes_unless_only_looked() {
        let locks = InstanceLocks::default();
        let (a, b) = (InstanceId::generate(), InstanceId::generate());
        drop(locks.try_lock(&a).unwrap());
        let mark = locks.mark();
        assert!(!locks.changed_since(&a, mark), "released before the mark");
        locks.try_lock(&b).unwrap().release_unchanged();
        assert!(!locks.changed_since(&b, mark), "only looked");
        let held = locks.try_lock(&b).unwrap();
        assert!(locks.try_lock(&b).is_none(), "one holder at a time");
        drop(held);
        assert!(locks.changed_since(&b, mark));
        assert_eq!(locks.changed_ids_since(mark), vec![b.clone()]);
        locks.forget_until(locks.mark());
        assert!(!locks.changed_since(&b, mark), "forgotten");
    }
}
