//! Coordination between server replicas that share one PostgreSQL database: an
//! exclusive lock per key held for an operation ([`SharedLocks`]), the
//! reconciler's leadership ([`SqlStore::try_lead`]) and the announcements of changed
//! rows that keep each replica's in-memory tables current ([`SqlStore::changes`]).
//!
//! On SQLite there is one server: locks and leadership are granted at once (the
//! server's in-process locks serialise its own operations) and nothing is announced.

use crate::sql::{Backend, SqlStore};
use crate::Result;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Connection};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The advisory-lock key of the reconciler's leadership.
const LEADER_KEY: &str = "berth:reconciler";
/// The channel the schema's triggers announce changed rows on.
pub const CHANGES_CHANNEL: &str = "berth_changes";

/// A 64-bit advisory-lock key for `name`, the same in every replica.
fn lock_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Named exclusive locks shared by the replicas: PostgreSQL session advisory locks,
/// all taken on one connection of this replica's (an operation holding a lock holds
/// no connection, so a thousand operations in flight need no thousand connections).
/// Taking one polls without blocking that connection; its holder releases it when its
/// [`DbLock`] drops. Should the connection break, PostgreSQL releases every lock it
/// held: locks are for keeping replicas from working on one instance at once, and a
/// lost one costs at worst that.
pub struct SharedLocks {
    db: SqlStore,
    conn: tokio::sync::Mutex<Option<AnyConnection>>,
}

/// How often a lock held elsewhere is asked for again.
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(25);

impl SharedLocks {
    /// Locks on `db` (on SQLite, every lock is granted at once: one server, whose
    /// in-process locks serialise its own operations).
    pub fn new(db: SqlStore) -> Arc<Self> {
        Arc::new(Self { db, conn: tokio::sync::Mutex::new(None) })
    }

    /// Runs `pg_*_advisory_*(key)` on the locks' connection, opening it when needed.
    async fn call(&self, function: &str, key: i64) -> Result<bool> {
        let mut slot = self.conn.lock().await;
        if slot.is_none() {
            *slot = Some(self.db.pool().acquire().await?.detach());
        }
        let conn = slot.as_mut().expect("opened above");
        match sqlx::query_scalar(&format!("SELECT {function}($1)")).bind(key).fetch_one(conn).await {
            Ok(v) => Ok(v),
            Err(e) => {
                *slot = None;
                Err(e.into())
            }
        }
    }

    /// Takes the lock named `name` only if no replica holds it.
    pub async fn try_lock(self: &Arc<Self>, name: &str) -> Result<Option<DbLock>> {
        if self.db.backend() == Backend::Sqlite {
            return Ok(Some(DbLock { key: 0, owner: None }));
        }
        let key = lock_key(name);
        Ok(self.call("pg_try_advisory_lock", key).await?.then(|| DbLock { key, owner: Some(self.clone()) }))
    }

    /// Waits for the lock named `name` (e.g. `instance:ID`).
    pub async fn lock(self: &Arc<Self>, name: &str) -> Result<DbLock> {
        loop {
            if let Some(held) = self.try_lock(name).await? {
                return Ok(held);
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }
}

/// A lock of [`SharedLocks`], released when dropped.
pub struct DbLock {
    key: i64,
    owner: Option<Arc<SharedLocks>>,
}

impl Drop for DbLock {
    fn drop(&mut self) {
        let (Some(owner), Ok(rt)) = (self.owner.take(), tokio::runtime::Handle::try_current()) else { return };
        let key = self.key;
        rt.spawn(async move {
            if let Err(e) = owner.call("pg_advisory_unlock", key).await {
                tracing::warn!(error = %e, "releasing a lock in the database (its connection's end releases it)");
            }
        });
    }
}

/// The reconciler's leadership, held by one replica at a time: a session advisory
/// lock on a connection of its own, released by PostgreSQL when that connection
/// closes (a replica that dies, even by kill -9, closes it).
pub struct Leadership {
    conn: Option<AnyConnection>,
}

impl Leadership {
    /// Whether this replica still leads: the connection holding the lock answers.
    pub async fn holds(&mut self) -> bool {
        match &mut self.conn {
            None => true,
            Some(conn) => conn.ping().await.is_ok(),
        }
    }
}

/// A row changed on some replica, as announced on [`CHANGES_CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An instance (id) was created, changed or removed.
    Instance(String),
    /// A key (id) was removed.
    Key(String),
    /// A share link of an instance (the instance's id) was made or revoked.
    Shares(String),
    /// A template (id) or one of its versions changed.
    Template(String),
    /// The listening connection was lost and made again: some announcements may be
    /// missing, so everything kept in memory should be read again.
    Resync,
}

impl Change {
    fn parse(payload: &str) -> Option<Self> {
        let (table, id) = payload.split_once(':')?;
        let id = id.to_string();
        Some(match table {
            "instances" => Self::Instance(id),
            "api_keys" => Self::Key(id),
            "shares" => Self::Shares(id),
            "templates" | "template_versions" => Self::Template(id),
            _ => return None,
        })
    }
}

impl SqlStore {
    /// Becomes the replica that runs the reconciler, unless another one is.
    pub async fn try_lead(&self) -> Result<Option<Leadership>> {
        if self.backend() == Backend::Sqlite {
            return Ok(Some(Leadership { conn: None }));
        }
        let mut conn = self.pool().acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(lock_key(LEADER_KEY))
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(Leadership { conn: Some(conn) }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// The rows other replicas (or this one) change, as they commit; `None` on SQLite.
    /// A lost connection is made again and reported as [`Change::Resync`].
    pub async fn changes(&self) -> Result<Option<mpsc::Receiver<Change>>> {
        let Some(url) = self.postgres_url() else { return Ok(None) };
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let change = match listener.try_recv().await {
                    Ok(Some(n)) => match Change::parse(n.payload()) {
                        Some(c) => c,
                        None => continue,
                    },
                    // The connection was lost; the next call reconnects.
                    Ok(None) => Change::Resync,
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for changes; trying again");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        Change::Resync
                    }
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_name_their_row() {
        assert_eq!(Change::parse("instances:inst_1"), Some(Change::Instance("inst_1".into())));
        assert_eq!(Change::parse("template_versions:tpl_1"), Some(Change::Template("tpl_1".into())));
        assert_eq!(Change::parse("api_keys:key_1"), Some(Change::Key("key_1".into())));
        assert_eq!(Change::parse("ledger:x"), None);
        assert_eq!(Change::parse("garbage"), None);
        assert_ne!(lock_key("instance:a"), lock_key("instance:b"));
    }
}
