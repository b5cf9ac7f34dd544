//! Per-instance operation locks: one lifecycle operation at a time per instance,
//! whether it comes from a client or from the reconciler.
//!
//! With replicas on one PostgreSQL database each lock is also taken in the database
//! (an advisory lock named after the instance), so an operation through one replica
//! waits for one through another.
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
    /// The database's locks, when other replicas may operate on the same instances.
    db: Option<Arc<berth_store::coord::SharedLocks>>,
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
    /// The database's lock (replicas); released after the local one is.
    _shared: Option<berth_store::coord::DbLock>,
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

    fn guard(
        &self,
        id: &InstanceId,
        held: OwnedMutexGuard<()>,
        shared: Option<berth_store::coord::DbLock>,
    ) -> InstanceGuard {
        InstanceGuard { _held: held, _shared: shared, id: id.clone(), releases: self.releases.clone(), changed: true }
    }

    /// Locks shared with other replicas through `db` (PostgreSQL).
    pub fn shared(db: berth_store::SqlStore) -> Self {
        Self { db: Some(berth_store::coord::SharedLocks::new(db)), ..Self::default() }
    }

    /// Waits for the instance's lock (and, with replicas, the database's).
    pub async fn lock(&self, id: &InstanceId) -> InstanceGuard {
        let held = self.slot(id).lock_owned().await;
        let mut shared = None;
        if let Some(db) = &self.db {
            // The database may be briefly away: wait for it rather than run an operation
            // another replica may be running too.
            let mut tries = 0;
            loop {
                match db.lock(&lock_name(id)).await {
                    Ok(l) => {
                        shared = Some(l);
                        break;
                    }
                    Err(e) if tries < 20 => {
                        tries += 1;
                        tracing::warn!(instance = %id, error = %e, "taking the instance's lock in the database");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    }
                    Err(e) => {
                        tracing::error!(instance = %id, error = %e, "running without the database's lock");
                        break;
                    }
                }
            }
        }
        self.guard(id, held, shared)
    }

    /// Takes the lock only if nobody holds it, here or on another replica (the
    /// reconciler skips busy instances).
    pub async fn try_lock(&self, id: &InstanceId) -> Option<InstanceGuard> {
        let held = self.slot(id).try_lock_owned().ok()?;
        let shared = match &self.db {
            None => None,
            Some(db) => match db.try_lock(&lock_name(id)).await {
                Ok(Some(l)) => Some(l),
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(instance = %id, error = %e, "taking the instance's lock in the database");
                    return None;
                }
            },
        };
        Some(self.guard(id, held, shared))
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

/// The database lock's name for an instance.
fn lock_name(id: &InstanceId) -> String {
    format!("instance:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn releases_after_a_mark_are_changes_unless_only_looked() {
        let locks = InstanceLocks::default();
        let (a, b) = (InstanceId::generate(), InstanceId::generate());
        drop(locks.try_lock(&a).await.unwrap());
        let mark = locks.mark();
        assert!(!locks.changed_since(&a, mark), "released before the mark");
        locks.try_lock(&b).await.unwrap().release_unchanged();
        assert!(!locks.changed_since(&b, mark), "only looked");
        let held = locks.try_lock(&b).await.unwrap();
        assert!(locks.try_lock(&b).await.is_none(), "one holder at a time");
        drop(held);
        assert!(locks.changed_since(&b, mark));
        assert_eq!(locks.changed_ids_since(mark), vec![b.clone()]);
        locks.forget_until(locks.mark());
        assert!(!locks.changed_since(&b, mark), "forgotten");
    }
}
