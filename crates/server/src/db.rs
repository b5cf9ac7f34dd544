//! The database behind the [`Store`](berth_store::Store): opening it from the flags,
//! `berth migrate|export|import`, and what replicas sharing one PostgreSQL database do
//! to stay in step — one of them leads (runs the reconciler, the warm pool and the
//! compute renewals: [`Leader`]), and each one follows the rows the others change
//! ([`follow_changes`]) so its edge table, key cache, share links and template catalog
//! stay current.

use crate::state::AppState;
use anyhow::Context;
use berth_core::{InstanceId, KeyId};
use berth_store::coord::Change;
use berth_store::{redact, Backend, PoolOptions, SqlStore};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// How often a replica that does not lead tries to, and the leader checks it still does.
const LEAD_EVERY: Duration = Duration::from_secs(1);

/// Opens (and migrates) the database `url` names, or the SQLite file in `data`.
pub async fn open(url: Option<&str>, data: &Path, opts: &PoolOptions) -> anyhow::Result<SqlStore> {
    match url {
        None => SqlStore::open(&data.join("berth.db")).await.context("opening the SQLite database"),
        Some(url) => {
            Backend::of_url(url).map_err(anyhow::Error::msg)?;
            SqlStore::connect(url, opts).await.with_context(|| format!("opening the database {}", redact(url)))
        }
    }
}

/// Which replica runs the once-per-installation loops. On SQLite (one server) it is
/// always this one.
#[derive(Clone)]
pub struct Leader(watch::Receiver<bool>);

impl Leader {
    /// This server is the only one.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        // Nothing ever changes it; the receiver keeps seeing `true` without a sender.
        drop(tx);
        Self(rx)
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until this replica leads.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|lead| *lead).await;
    }

    /// Elects among the replicas on `db`: this one leads while it holds the database's
    /// leadership lock; it tries every second, and one that dies (its connection closes)
    /// leaves the lock to the next.
    pub fn elect(db: SqlStore) -> Self {
        if db.backend() == Backend::Sqlite {
            return Self::always();
        }
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            loop {
                match db.try_lead().await {
                    Ok(Some(mut lead)) => {
                        tracing::info!("this replica leads: it runs the reconciler");
                        let _ = tx.send(true);
                        while lead.holds().await {
                            tokio::time::sleep(LEAD_EVERY).await;
                        }
                        tracing::warn!("this replica lost the database connection that made it lead");
                        let _ = tx.send(false);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "could not ask the database who leads"),
                }
                tokio::time::sleep(LEAD_EVERY).await;
            }
        });
        Self(rx)
    }
}

/// Applies what other replicas change: routes, keys, share links and templates, as the
/// database announces them (within milliseconds of their commit).
pub async fn follow_changes(state: AppState, mut changes: mpsc::Receiver<Change>) {
    while let Some(change) = changes.recv().await {
        if let Err(e) = apply(&state, &change).await {
            tracing::warn!(?change, error = %e, "could not apply a change made by another replica");
        }
    }
}

async fn apply(state: &AppState, change: &Change) -> anyhow::Result<()> {
    match change {
        Change::Instance(id) => {
            let Some(id) = InstanceId::parse(id) else { return Ok(()) };
            let rec = state.store.instance(None, &id).await?;
            instance_changed(state, &id, rec.as_ref()).await;
        }
        Change::Key(id) => {
            if let Some(id) = KeyId::parse(id) {
                state.keys.revoke(&id);
            }
        }
        Change::Shares(instance) => {
            let Some(instance) = InstanceId::parse(instance) else { return Ok(()) };
            let active = state.store.active_shares(&instance, berth_core::now_secs()).await?;
            state.shares.sync(Some(&instance), &active);
        }
        Change::Template(_) => state.settings.templates.reload(state.store.as_ref()).await?,
        Change::Resync => {
            tracing::info!("listening to the database again: reading routes, shares and templates anew");
            for rec in state.store.all_instances().await? {
                instance_changed(state, &rec.id, Some(&rec)).await;
            }
            let active = state.store.all_active_shares(berth_core::now_secs()).await?;
            state.shares.sync(None, &active);
            state.settings.templates.reload(state.store.as_ref()).await?;
            state.keys.clear();
        }
    }
    Ok(())
}

/// An instance changed elsewhere (`rec`: as it is now; `None`: gone): what the
/// reconciler last saw of it is stale, and its route and egress policy are set anew
/// (this replica's firewall syncs would otherwise take the rules of an instance it did
/// not know for stale).
async fn instance_changed(state: &AppState, id: &InstanceId, rec: Option<&berth_store::InstanceRecord>) {
    state.locks.touch(id);
    match rec {
        Some(rec) => {
            state.routes.apply(rec);
            if rec.status == berth_core::Status::Deleted {
                state.egress_forget(id).await;
            } else {
                state.egress_policy(id, &rec.egress).await;
            }
        }
        None => {
            state.routes.remove(id);
            state.egress_forget(id).await;
        }
    }
}

/// `berth migrate|export|import`: which database.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// Database URL (`sqlite:PATH` or `postgres://…`); default: `berth.db` in the data dir.
    #[arg(long, env = "BERTH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// The server's data directory (where the default SQLite database is).
    #[arg(long, env = "BERTH_DATA", default_value = "./.berth")]
    pub data: PathBuf,
}

impl DbArgs {
    async fn open(&self, migrate: bool) -> anyhow::Result<SqlStore> {
        let opts = PoolOptions { max_connections: 2, ..PoolOptions::default() };
        match (&self.database_url, migrate) {
            (_, true) => open(self.database_url.as_deref(), &self.data, &opts).await,
            (Some(url), false) => SqlStore::connect_only(url, &opts)
                .await
                .with_context(|| format!("opening the database {}", redact(url))),
            (None, false) => {
                let path = self.data.join("berth.db");
                anyhow::ensure!(path.exists(), "no database at {}: give --database-url or --data", path.display());
                SqlStore::connect_only(&SqlStore::sqlite_url(&path), &opts).await.context("opening the database")
            }
        }
    }
}

/// `berth migrate`: brings the database's schema up to this version (a server also
/// does at start; migrating twice at once is safe — one waits for the other).
pub async fn migrate(args: DbArgs) -> anyhow::Result<()> {
    let db = args.open(true).await?;
    println!("database {} is up to date", describe(&args, &db));
    Ok(())
}

/// `berth export [--out FILE]`: every record, as JSON Lines (standard output by default).
pub async fn export(args: DbArgs, out: Option<PathBuf>) -> anyhow::Result<()> {
    let db = args.open(false).await?;
    let counts = match &out {
        Some(path) => {
            let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut w = std::io::BufWriter::new(file);
            berth_store::transfer::export(&db, &mut w).await?
        }
        None => berth_store::transfer::export(&db, &mut std::io::stdout().lock()).await?,
    };
    eprintln!("exported {} from {}", summary(&counts), describe(&args, &db));
    Ok(())
}

/// `berth import FILE`: loads an export into an empty database (migrated first).
pub async fn import(args: DbArgs, file: PathBuf) -> anyhow::Result<()> {
    let db = args.open(true).await?;
    let f = std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
    let counts = berth_store::transfer::import(&db, &mut std::io::BufReader::new(f)).await?;
    println!("imported {} into {}", summary(&counts), describe(&args, &db));
    Ok(())
}

fn describe(args: &DbArgs, db: &SqlStore) -> String {
    match &args.database_url {
        Some(url) => redact(url),
        None => format!("{:?} {}", db.backend(), args.data.join("berth.db").display()),
    }
}

fn summary(counts: &[(String, u64)]) -> String {
    counts.iter().filter(|(_, n)| *n > 0).map(|(t, n)| format!("{n} {t}")).collect::<Vec<_>>().join(", ")
}
