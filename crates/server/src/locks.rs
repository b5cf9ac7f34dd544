//! Per-instance operation locks: one lifecycle operation at a time per instance,
//! whether it comes from a client or from the reconciler.

use berth_core::InstanceId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Hands out one async mutex per instance id.
#[derive(Default)]
pub struct InstanceLocks {
    map: Mutex<HashMap<InstanceId, Arc<AsyncMutex<()>>>>,
}

/// Held while an operation runs on an instance.
pub type InstanceGuard = OwnedMutexGuard<()>;

impl InstanceLocks {
    fn slot(&self, id: &InstanceId) -> Arc<AsyncMutex<()>> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Drop slots nobody holds, so the map does not grow with every id ever seen.
        if map.len() > 1024 {
            map.retain(|_, m| Arc::strong_count(m) > 1);
        }
        map.entry(id.clone()).or_default().clone()
    }

    /// Waits for the instance's lock.
    pub async fn lock(&self, id: &InstanceId) -> InstanceGuard {
        self.slot(id).lock_owned().await
    }

    /// Takes the lock only if nobody holds it (the reconciler skips busy instances).
    pub fn try_lock(&self, id: &InstanceId) -> Option<InstanceGuard> {
        self.slot(id).try_lock_owned().ok()
    }
}
