//! Verified API keys, kept in memory. Both listeners authenticate every request
//! and the edge must not touch the database on its hot path, so a key is read
//! from the store once and then served from here. Deleting a key revokes it here
//! at once and cancels its token, which closes every stream and WebSocket that
//! was opened with it. A replica that learns of a revocation from elsewhere
//! (database notifications) calls [`KeyCache::revoke`] the same way.

use crate::auth::secret_digest;
use berth_core::KeyId;
use berth_store::{KeyRecord, Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio_util::sync::CancellationToken;

/// Most keys kept; past this the cache starts over (keys are re-read on use).
const MAX_ENTRIES: usize = 100_000;

/// A key that verified, with the token its streams watch.
#[derive(Debug)]
pub struct VerifiedKey {
    pub record: KeyRecord,
    /// Cancelled when the key is revoked.
    pub revoked: CancellationToken,
}

impl VerifiedKey {
    /// Not expired (yet).
    pub fn live(&self) -> bool {
        self.record.expires_at.is_none_or(|at| berth_core::now_secs() < at)
    }
}

/// The cache of verified keys, by SHA-256 of the secret.
pub struct KeyCache {
    store: Arc<dyn Store>,
    by_digest: RwLock<HashMap<[u8; 32], Arc<VerifiedKey>>>,
    /// Bumped by every revocation, so a lookup that raced one is not cached.
    generation: AtomicU64,
}

impl KeyCache {
    /// An empty cache over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, by_digest: RwLock::default(), generation: AtomicU64::new(0) }
    }

    /// The key a secret belongs to, if it verified before (no database access).
    pub fn cached(&self, secret: &str) -> Option<Arc<VerifiedKey>> {
        self.by_digest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&secret_digest(secret))
            .filter(|k| k.live())
            .cloned()
    }

    /// Revokes every cached key whose time is up, closing what was opened with it
    /// (the server calls this twice a second).
    pub fn expire_due(&self) {
        let now = berth_core::now_secs();
        let due: Vec<KeyId> = self
            .by_digest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|k| k.record.expires_at.is_some_and(|at| at <= now))
            .map(|k| k.record.id.clone())
            .collect();
        for id in due {
            self.revoke(&id);
        }
    }

    /// The key a secret belongs to, or `None` for an unknown secret.
    pub async fn verify(&self, secret: &str) -> Result<Option<Arc<VerifiedKey>>, StoreError> {
        let digest = secret_digest(secret);
        if let Some(k) = self.by_digest.read().unwrap_or_else(|e| e.into_inner()).get(&digest) {
            return Ok(k.live().then(|| k.clone()));
        }
        loop {
            let generation = self.generation.load(Ordering::Acquire);
            let Some(record) = self.store.key_by_hash(&hex::encode(digest)).await? else { return Ok(None) };
            if record.expires_at.is_some_and(|at| at <= berth_core::now_secs()) {
                return Ok(None);
            }
            let mut map = self.by_digest.write().unwrap_or_else(|e| e.into_inner());
            // A revocation since the read may concern this very key: read it again.
            if self.generation.load(Ordering::Acquire) != generation {
                continue;
            }
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
            let key = Arc::new(VerifiedKey { record, revoked: CancellationToken::new() });
            return Ok(Some(map.entry(digest).or_insert(key).clone()));
        }
    }

    /// Forgets every cached key (each is read again at its next use); what they opened
    /// stays open (a revoked one is closed when its revocation is announced).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.by_digest.write().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets a key and closes everything opened with it.
    pub fn revoke(&self, id: &KeyId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut map = self.by_digest.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, k| {
            if &k.record.id == id {
                k.revoked.cancel();
                false
            } else {
                true
            }
        });
    }
}
