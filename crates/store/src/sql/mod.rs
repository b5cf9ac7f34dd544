//! The SQL backends: SQLite (a file, WAL mode) and PostgreSQL, one implementation on
//! sqlx's `Any` driver. Statements are written once with `?` placeholders
//! ([`SqlStore::sql`] numbers them for PostgreSQL); where the two differ (locking for
//! the limit-checked insert) [`Backend`] says which one runs. Each has its own embedded
//! migrations (`migrations_sqlite`, `migrations_postgres`).

mod ledger;
mod shares;
mod templates;

use crate::{
    BuildLine, BuildRecord, DailyUsage, EventRecord, ExposedPort, InstanceFilter, InstanceRecord, KeyRecord,
    LedgerEntry, LedgerRecord, Result, ShareRecord, Store, StoreError, TemplateRecord, TemplateVersion, TrafficUpdate,
    VersionSource, WorkspaceRecord,
};
use async_trait::async_trait;
use berth_core::{now_secs, InstanceId, KeyId, ShareId, Status, TemplateId, TemplateSpec, TemplateStatus, WorkspaceId};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// Which database a [`SqlStore`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// The backend a `--database-url` names, or why none does.
    pub fn of_url(url: &str) -> std::result::Result<Self, String> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(format!("unsupported database URL scheme in `{}`: use sqlite:PATH or postgres://…", redact(url)))
        }
    }
}

/// A database URL with its password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let auth = &url[scheme + 3..at];
            match auth.find(':') {
                Some(colon) => format!("{}{}:***{}", &url[..scheme + 3], &auth[..colon], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// How a [`SqlStore`] connects: pool size and timeouts (`berth server --database-*`).
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Connections kept at most.
    pub max_connections: u32,
    /// How long a statement waits for a free connection (and a new one to open).
    pub acquire_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self { max_connections: 16, acquire_timeout: Duration::from_secs(10) }
    }
}

/// [`Store`] on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// The URL it was opened with (PostgreSQL's LISTEN needs a connection of its own).
    url: String,
    /// Seals `env` on write and opens it on read, and derives gateway tokens
    /// ([`SqlStore::sealed_with`]); without one, both are kept as given.
    seal: Option<crate::seal::SealKey>,
}

impl SqlStore {
    /// Opens (creating when missing) a SQLite database file and runs migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::connect(&Self::sqlite_url(path), &PoolOptions { max_connections: 8, ..PoolOptions::default() }).await
    }

    /// The `sqlite:` URL of a database file (created when missing).
    pub fn sqlite_url(path: &Path) -> String {
        // `%`, `?` and `#` would be read as URL syntax in the path.
        let path = path.display().to_string().replace('%', "%25").replace('?', "%3F").replace('#', "%23");
        format!("sqlite://{path}?mode=rwc")
    }

    /// Opens the database a `--database-url` names (`sqlite:PATH` or `postgres://…`) and
    /// runs its migrations (on PostgreSQL under sqlx's advisory lock, so replicas
    /// starting together migrate once).
    pub async fn connect(url: &str, opts: &PoolOptions) -> Result<Self> {
        let store = Self::connect_only(url, opts).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the database without migrating it (`berth export` reads one as it is).
    pub async fn connect_only(url: &str, opts: &PoolOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).map_err(StoreError::Config)?;
        let mut url = url.to_string();
        if backend == Backend::Sqlite && !url.contains('?') {
            url.push_str("?mode=rwc");
        }
        let connect = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Per connection: WAL (kept by the file), writers wait for each
                        // other rather than fail, foreign keys enforced.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA synchronous = NORMAL",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA foreign_keys = ON",
                        ] {
                            sqlx::Executor::execute(&mut *conn, pragma).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(connect)
            .await?;
        Ok(Self { pool, backend, url, seal: None })
    }

    /// Runs the migrations this database lacks.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations_sqlite").run(&self.pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations_postgres").run(&self.pool).await?,
        }
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The PostgreSQL database's URL; `None` on SQLite.
    pub(crate) fn postgres_url(&self) -> Option<&str> {
        (self.backend == Backend::Postgres).then_some(self.url.as_str())
    }

    /// The connection pool (leases, locks and transfers run their own statements on it).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `sql` in this backend's placeholders: `?` on SQLite, `$1`, `$2`… on PostgreSQL
    /// (statements here have no `?` inside string literals).
    pub fn sql<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        if self.backend == Backend::Sqlite || !sql.contains('?') {
            return Cow::Borrowed(sql);
        }
        let mut out = String::with_capacity(sql.len() + 16);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        Cow::Owned(out)
    }

    /// From now on `env` values are sealed at rest with `key` (those stored in clear by
    /// an earlier version are sealed now) and gateway tokens derived from it are not
    /// stored. A value sealed under another key fails to load (`Corrupt`).
    pub async fn sealed_with(mut self, key: crate::seal::SealKey) -> Result<Self> {
        let rows: Vec<(String, String)> =
            sqlx::query_as(&self.sql("SELECT id, env FROM instances WHERE env NOT LIKE 'sealed:%'"))
                .fetch_all(&self.pool)
                .await?;
        for (id, env) in rows {
            sqlx::query(&self.sql("UPDATE instances SET env = ? WHERE id = ?"))
                .bind(key.seal(&env))
                .bind(&id)
                .execute(&self.pool)
                .await?;
        }
        self.seal = Some(key);
        Ok(self)
    }

    /// The `env` column's text for `env`.
    fn env_text(&self, env: &std::collections::BTreeMap<String, String>) -> String {
        let text = to_json(env);
        match &self.seal {
            Some(key) => key.seal(&text),
            None => text,
        }
    }

    /// The `gateway_token` column for `r`: nothing when the key derives it.
    fn stored_token<'a>(&self, r: &'a InstanceRecord) -> Option<&'a str> {
        let token = r.gateway_token.as_deref()?;
        match &self.seal {
            Some(key) if key.gateway_token(r.id.as_str()) == token => None,
            _ => Some(token),
        }
    }

    /// Inserts `r` unless its workspace already holds `limit` live instances.
    async fn insert_row(&self, conn: &mut sqlx::AnyConnection, r: &InstanceRecord, limit: u32) -> Result<()> {
        // One statement, so the limit check and the insert cannot interleave with
        // another create: SQLite serialises writers. PostgreSQL lets two transactions
        // count at once, so there the workspace's row is locked first (the caller runs
        // this in a transaction): creates in one workspace queue, on every replica.
        if self.backend == Backend::Postgres {
            sqlx::query(&self.sql("SELECT id FROM workspaces WHERE id = ? FOR UPDATE"))
                .bind(r.workspace_id.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        }
        let done = sqlx::query(&self.sql(
            "INSERT INTO instances (id, workspace_id, name, template, template_version, size, user_tag, region, \
             metadata, env, budget_cap_micros, topup_micros, budget_models, lifecycle_mode, idle_timeout, status, \
             status_reason, restart_count, created_at, updated_at, deleted_at, gateway_token, exposed, idle_stopped, \
             hold_until, egress, paid_until, template_spec, resources, pooled) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? \
             WHERE (SELECT COUNT(*) FROM instances WHERE workspace_id = ? AND status != 'deleted') < ?",
        ))
        .bind(r.id.as_str())
        .bind(r.workspace_id.as_str())
        .bind(&r.name)
        .bind(&r.template)
        .bind(r.template_version as i64)
        .bind(r.size as i64)
        .bind(&r.user)
        .bind(&r.region)
        .bind(to_json(&r.metadata))
        .bind(self.env_text(&r.env))
        .bind(r.budget_cap_micros)
        .bind(r.topup_micros)
        .bind(models_json(&r.budget_models))
        .bind(&r.lifecycle_mode)
        .bind(r.idle_timeout_secs.map(|v| v as i64))
        .bind(r.status.as_str())
        .bind(&r.status_reason)
        .bind(r.restart_count as i64)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.deleted_at)
        .bind(self.stored_token(r))
        .bind(exposed_json(&r.exposed))
        .bind(r.idle_stopped as i64)
        .bind(r.hold_until)
        .bind(egress_json(&r.egress))
        .bind(r.paid_until)
        .bind(r.template_spec.as_ref().map(|t| self.spec_text(t)))
        .bind(resources_json(&r.resources))
        .bind(r.pooled as i64)
        .bind(r.workspace_id.as_str())
        .bind(limit as i64)
        .execute(&mut *conn)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::LimitExceeded { limit });
        }
        Ok(())
    }
}

const INSTANCE_COLUMNS: &str = "seq, id, workspace_id, name, template, template_version, size, \
    user_tag, region, metadata, env, budget_cap_micros, topup_micros, budget_models, managed_used_micros, \
    lifecycle_mode, idle_timeout, status, status_reason, restart_count, created_at, updated_at, deleted_at, gateway_token, last_request_at, \
    exposed, idle_stopped, hold_until, requests_total, egress, paid_until, template_spec, resources, pooled";

/// The `resources` column.
fn resources_json(r: &Option<berth_core::Resources>) -> Option<String> {
    r.as_ref().and_then(|r| serde_json::to_string(r).ok())
}

/// The `env` column, opened when sealed.
fn env_map(row: &AnyRow, seal: Option<&crate::seal::SealKey>) -> Result<std::collections::BTreeMap<String, String>> {
    let text: String = row.try_get("env")?;
    if !crate::seal::is_sealed(&text) {
        return serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("env: {e}")));
    }
    let key =
        seal.ok_or_else(|| StoreError::Corrupt("env is sealed and this store was opened without a key".into()))?;
    let plain = key.open(&text).map_err(|e| StoreError::Corrupt(format!("env: {e}")))?;
    serde_json::from_str(&plain).map_err(|e| StoreError::Corrupt(format!("env: {e}")))
}

fn json_map(row: &AnyRow, col: &str) -> Result<std::collections::BTreeMap<String, String>> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn exposed_from_row(row: &AnyRow) -> Result<Vec<ExposedPort>> {
    let text: String = row.try_get("exposed")?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("exposed: {e}")))
}

fn exposed_json(ports: &[ExposedPort]) -> String {
    serde_json::to_string(ports).unwrap_or_else(|_| "[]".into())
}

fn egress_from_row(row: &AnyRow) -> Result<berth_core::Egress> {
    match row.try_get::<Option<String>, _>("egress")? {
        None => Ok(berth_core::Egress::Internet),
        Some(text) => serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("egress: {e}"))),
    }
}

/// NULL for the default policy, so rows written before it existed read the same.
fn egress_json(e: &berth_core::Egress) -> Option<String> {
    (*e != berth_core::Egress::Internet).then(|| serde_json::to_string(e).unwrap_or_else(|_| "\"none\"".into()))
}

fn models_json(models: &Option<Vec<String>>) -> Option<String> {
    models.as_ref().map(|m| serde_json::to_string(m).unwrap_or_else(|_| "[]".into()))
}

fn status(text: &str) -> Result<Status> {
    text.parse().map_err(StoreError::Corrupt)
}

/// An instance row: `env` opened when sealed, the gateway token derived when not stored.
fn instance_from_row(row: &AnyRow, store: &SqlStore) -> Result<InstanceRecord> {
    let seal = store.seal.as_ref();
    let id: String = row.try_get("id")?;
    let stored_token: Option<String> = row.try_get("gateway_token")?;
    Ok(InstanceRecord {
        seq: row.try_get("seq")?,
        gateway_token: stored_token.or_else(|| seal.map(|k| k.gateway_token(&id))),
        id: InstanceId::from_trusted(id),
        workspace_id: WorkspaceId::from_trusted(row.try_get("workspace_id")?),
        name: row.try_get("name")?,
        template: row.try_get("template")?,
        template_version: row.try_get::<i64, _>("template_version")? as u32,
        template_spec: match row.try_get::<Option<String>, _>("template_spec")? {
            None => None,
            Some(text) => Some(store.spec_from(&text)?),
        },
        size: row.try_get::<i64, _>("size")? as u32,
        resources: match row.try_get::<Option<String>, _>("resources")? {
            None => None,
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("instance resources: {e}")))?)
            }
        },
        user: row.try_get("user_tag")?,
        region: row.try_get("region")?,
        metadata: json_map(row, "metadata")?,
        env: env_map(row, seal)?,
        budget_cap_micros: row.try_get("budget_cap_micros")?,
        topup_micros: row.try_get("topup_micros")?,
        budget_models: match row.try_get::<Option<String>, _>("budget_models")? {
            None => None,
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("budget_models: {e}")))?)
            }
        },
        managed_used_micros: row.try_get("managed_used_micros")?,
        lifecycle_mode: row.try_get("lifecycle_mode")?,
        idle_timeout_secs: row.try_get::<Option<i64>, _>("idle_timeout")?.map(|v| v as u64),
        status: status(row.try_get("status")?)?,
        status_reason: row.try_get("status_reason")?,
        restart_count: row.try_get::<i64, _>("restart_count")? as u32,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        deleted_at: row.try_get("deleted_at")?,
        last_request_at: row.try_get("last_request_at")?,
        exposed: exposed_from_row(row)?,
        idle_stopped: row.try_get::<i64, _>("idle_stopped")? != 0,
        hold_until: row.try_get("hold_until")?,
        requests_total: row.try_get::<i64, _>("requests_total")?.max(0) as u64,
        egress: egress_from_row(row)?,
        paid_until: row.try_get("paid_until")?,
        pooled: row.try_get::<i64, _>("pooled")? != 0,
    })
}

fn workspace_from_row(row: &AnyRow) -> Result<WorkspaceRecord> {
    Ok(WorkspaceRecord {
        id: WorkspaceId::from_trusted(row.try_get("id")?),
        name: row.try_get("name")?,
        instance_limit: row.try_get::<i64, _>("instance_limit")? as u32,
        created_at: row.try_get("created_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<KeyRecord> {
    Ok(KeyRecord {
        id: KeyId::from_trusted(row.try_get("id")?),
        workspace_id: WorkspaceId::from_trusted(row.try_get("workspace_id")?),
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        hash: row.try_get("hash")?,
        admin: row.try_get::<i64, _>("admin")? != 0,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        instance_id: row.try_get::<Option<String>, _>("instance_id")?.map(InstanceId::from_trusted),
    })
}

fn to_json(map: &std::collections::BTreeMap<String, String>) -> String {
    serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query(&self.sql("SELECT 1")).execute(&self.pool).await?;
        Ok(())
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        let row =
            sqlx::query(&self.sql("SELECT value FROM meta WHERE key = ?")).bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get("value")))
    }

    async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query(&self.sql("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"))
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(self.meta(key).await?.unwrap_or_else(|| value.to_string()))
    }

    async fn create_workspace(&self, ws: &WorkspaceRecord) -> Result<()> {
        sqlx::query(&self.sql("INSERT INTO workspaces (id, name, instance_limit, created_at) VALUES (?, ?, ?, ?)"))
            .bind(ws.id.as_str())
            .bind(&ws.name)
            .bind(ws.instance_limit as i64)
            .bind(ws.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn workspace(&self, id: &WorkspaceId) -> Result<Option<WorkspaceRecord>> {
        let row = sqlx::query(&self.sql("SELECT * FROM workspaces WHERE id = ?"))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    async fn workspaces(&self) -> Result<Vec<WorkspaceRecord>> {
        let rows =
            sqlx::query(&self.sql("SELECT * FROM workspaces ORDER BY created_at, id")).fetch_all(&self.pool).await?;
        rows.iter().map(workspace_from_row).collect()
    }

    async fn workspace_count(&self) -> Result<i64> {
        Ok(sqlx::query(&self.sql("SELECT COUNT(*) AS n FROM workspaces")).fetch_one(&self.pool).await?.get("n"))
    }

    async fn create_key(&self, key: &KeyRecord) -> Result<()> {
        sqlx::query(&self.sql(
            "INSERT INTO api_keys (id, workspace_id, name, prefix, hash, admin, created_at, expires_at, instance_id) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(key.id.as_str())
        .bind(key.workspace_id.as_str())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(&key.hash)
        .bind(key.admin as i64)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(key.instance_id.as_ref().map(|i| i.as_str()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>> {
        let row = sqlx::query(&self.sql("SELECT * FROM api_keys WHERE hash = ?"))
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn keys(&self, ws: &WorkspaceId) -> Result<Vec<KeyRecord>> {
        let rows = sqlx::query(&self.sql("SELECT * FROM api_keys WHERE workspace_id = ? ORDER BY created_at, id"))
            .bind(ws.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn delete_key(&self, ws: &WorkspaceId, id: &KeyId) -> Result<bool> {
        let done = sqlx::query(&self.sql("DELETE FROM api_keys WHERE workspace_id = ? AND id = ?"))
            .bind(ws.as_str())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_instance(&self, r: &InstanceRecord, limit: u32) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        self.insert_row(&mut tx, r, limit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_instance(
        &self,
        pooled: &InstanceId,
        from: &WorkspaceId,
        r: &InstanceRecord,
        limit: u32,
    ) -> Result<bool> {
        // The pool's row goes and the claimed one comes as a new row (its own place in
        // the newest-first list), with the pool's audit events, in one transaction.
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query(&self.sql("DELETE FROM instances WHERE id = ? AND workspace_id = ?"))
            .bind(pooled.as_str())
            .bind(from.as_str())
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Ok(false);
        }
        sqlx::query(&self.sql("DELETE FROM events WHERE instance_id = ?"))
            .bind(pooled.as_str())
            .execute(&mut *tx)
            .await?;
        self.insert_row(&mut tx, r, limit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn instance(&self, ws: Option<&WorkspaceId>, id: &InstanceId) -> Result<Option<InstanceRecord>> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE id = ? AND (? IS NULL OR workspace_id = ?)");
        let ws = ws.map(|w| w.as_str().to_string());
        let row = sqlx::query(&self.sql(&sql)).bind(id.as_str()).bind(&ws).bind(&ws).fetch_optional(&self.pool).await?;
        row.as_ref().map(|r| instance_from_row(r, self)).transpose()
    }

    async fn list_instances(
        &self,
        ws: &WorkspaceId,
        f: &InstanceFilter,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>> {
        // Only the filters given are in the statement (one statement per combination,
        // each prepared once): a planner then walks the (workspace_id, seq) index
        // backwards, where `? IS NULL OR …` leaves PostgreSQL's generic plans a scan.
        // Deleted instances only show when asked for by status.
        let mut sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE workspace_id = ?");
        if before_seq.is_some() {
            sql.push_str(" AND seq < ?");
        }
        if f.user.is_some() {
            sql.push_str(" AND user_tag = ?");
        }
        if f.template.is_some() {
            sql.push_str(" AND template = ?");
        }
        sql.push_str(if f.status.is_some() { " AND status = ?" } else { " AND status != 'deleted'" });
        sql.push_str(" ORDER BY seq DESC LIMIT ?");
        let sql = self.sql(&sql);
        let mut q = sqlx::query(&sql).bind(ws.as_str());
        if let Some(seq) = before_seq {
            q = q.bind(seq);
        }
        if let Some(user) = &f.user {
            q = q.bind(user.as_str());
        }
        if let Some(template) = &f.template {
            q = q.bind(template.as_str());
        }
        if let Some(status) = f.status {
            q = q.bind(status.as_str());
        }
        let rows = q.bind(limit as i64).fetch_all(&self.pool).await?;
        rows.iter().map(|r| instance_from_row(r, self)).collect()
    }

    async fn live_instance_count(&self, ws: &WorkspaceId) -> Result<i64> {
        let row = sqlx::query(
            &self.sql("SELECT COUNT(*) AS n FROM instances WHERE workspace_id = ? AND status != 'deleted'"),
        )
        .bind(ws.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.get("n"))
    }

    async fn status_counts(&self) -> Result<Vec<(Status, i64)>> {
        let rows = sqlx::query(&self.sql("SELECT status, COUNT(*) AS n FROM instances GROUP BY status"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((status(r.try_get("status")?)?, r.try_get("n")?))).collect()
    }

    async fn active_sizes(&self) -> Result<Vec<(u32, i64)>> {
        let rows = sqlx::query(&self.sql(
            "SELECT size, COUNT(*) AS n FROM instances \
             WHERE status IN ('creating', 'running', 'paused', 'stopping') AND resources IS NULL GROUP BY size",
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((r.try_get::<i64, _>("size")? as u32, r.try_get("n")?))).collect()
    }

    async fn active_custom_memory_mb(&self) -> Result<u64> {
        // Summed here: JSON paths differ between the backends, and only a few instances
        // have resources of their own.
        let texts: Vec<String> = sqlx::query_scalar(&self.sql(
            "SELECT resources FROM instances \
             WHERE status IN ('creating', 'running', 'paused', 'stopping') AND resources IS NOT NULL",
        ))
        .fetch_all(&self.pool)
        .await?;
        let mut mb = 0u64;
        for text in texts {
            let r: berth_core::Resources =
                serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("instance resources: {e}")))?;
            mb += r.memory_limit_mb as u64;
        }
        Ok(mb)
    }

    async fn workspace_sizes(&self, ws: &WorkspaceId) -> Result<Vec<(u32, i64)>> {
        let rows =
            sqlx::query(&self.sql("SELECT size, COUNT(*) AS n FROM instances WHERE workspace_id = ? GROUP BY size"))
                .bind(ws.as_str())
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| Ok((r.try_get::<i64, _>("size")? as u32, r.try_get("n")?))).collect()
    }

    async fn all_instances(&self) -> Result<Vec<InstanceRecord>> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances ORDER BY seq");
        let rows = sqlx::query(&self.sql(&sql)).fetch_all(&self.pool).await?;
        rows.iter().map(|r| instance_from_row(r, self)).collect()
    }

    async fn update_instance(&self, r: &InstanceRecord) -> Result<()> {
        sqlx::query(&self.sql("UPDATE instances SET name = ?, template_version = ?, size = ?, metadata = ?, env = ?, \
             budget_cap_micros = ?, topup_micros = ?, budget_models = ?, lifecycle_mode = ?, idle_timeout = ?, status = ?, \
             status_reason = ?, restart_count = ?, updated_at = ?, deleted_at = ?, exposed = ?, idle_stopped = ?, \
             hold_until = ?, egress = ?, paid_until = ?, template = ?, template_spec = ?, resources = ?, pooled = ? \
             WHERE id = ?",))
        .bind(&r.name)
        .bind(r.template_version as i64)
        .bind(r.size as i64)
        .bind(to_json(&r.metadata))
        .bind(self.env_text(&r.env))
        .bind(r.budget_cap_micros)
        .bind(r.topup_micros)
        .bind(models_json(&r.budget_models))
        .bind(&r.lifecycle_mode)
        .bind(r.idle_timeout_secs.map(|v| v as i64))
        .bind(r.status.as_str())
        .bind(&r.status_reason)
        .bind(r.restart_count as i64)
        .bind(now_secs().max(r.updated_at))
        .bind(r.deleted_at)
        .bind(exposed_json(&r.exposed))
        .bind(r.idle_stopped as i64)
        .bind(r.hold_until)
        .bind(egress_json(&r.egress))
        .bind(r.paid_until)
        .bind(&r.template)
        .bind(r.template_spec.as_ref().map(|t| self.spec_text(t)))
        .bind(resources_json(&r.resources))
        .bind(r.pooled as i64)
        .bind(r.id.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn record_traffic(&self, batch: &[TrafficUpdate]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // One transaction for the whole batch: one fsync however many instances.
        let mut tx = self.pool.begin().await?;
        for t in batch {
            sqlx::query(&self.sql("UPDATE instances SET last_request_at = CASE WHEN COALESCE(last_request_at, 0) > ? THEN last_request_at ELSE ? END, \
                 requests_total = requests_total + ? WHERE id = ?",))
            .bind(t.last_request_at)
            .bind(t.last_request_at)
            .bind(t.requests as i64)
            .bind(t.id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_instance(&self, id: &InstanceId) -> Result<()> {
        sqlx::query(&self.sql("DELETE FROM instances WHERE id = ?")).bind(id.as_str()).execute(&self.pool).await?;
        Ok(())
    }

    async fn record_event(&self, ev: &EventRecord) -> Result<()> {
        sqlx::query(&self.sql(
            "INSERT INTO events (instance_id, at, from_status, to_status, actor, reason) VALUES (?, ?, ?, ?, ?, ?)",
        ))
        .bind(ev.instance_id.as_str())
        .bind(ev.at)
        .bind(ev.from.map(|s| s.as_str()))
        .bind(ev.to.as_str())
        .bind(&ev.actor)
        .bind(&ev.reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn events(&self, id: &InstanceId, limit: u32) -> Result<Vec<EventRecord>> {
        let rows = sqlx::query(&self.sql("SELECT * FROM (SELECT * FROM events WHERE instance_id = ? ORDER BY seq DESC LIMIT ?) AS newest ORDER BY seq",))
        .bind(id.as_str())
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let from: Option<String> = row.try_get("from_status")?;
                Ok(EventRecord {
                    instance_id: InstanceId::from_trusted(row.try_get("instance_id")?),
                    at: row.try_get("at")?,
                    from: from.as_deref().map(status).transpose()?,
                    to: status(row.try_get("to_status")?)?,
                    actor: row.try_get("actor")?,
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }

    async fn create_share(&self, share: &ShareRecord) -> Result<()> {
        shares::create(self, share).await
    }

    async fn active_shares(&self, instance: &InstanceId, now: i64) -> Result<Vec<ShareRecord>> {
        shares::active(self, Some(instance), now).await
    }

    async fn all_active_shares(&self, now: i64) -> Result<Vec<ShareRecord>> {
        shares::active(self, None, now).await
    }

    async fn revoke_share(&self, instance: &InstanceId, id: &ShareId, at: i64) -> Result<bool> {
        shares::revoke(self, instance, id, at).await
    }

    async fn balance(&self, ws: &WorkspaceId) -> Result<Option<i64>> {
        ledger::balance(self, ws).await
    }

    async fn post_ledger(&self, entry: &LedgerEntry) -> Result<LedgerRecord> {
        ledger::post_within(self, entry, false, None)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("ledger entry for unknown workspace {}", entry.workspace_id)))
    }

    async fn charge_within_balance(
        &self,
        entry: &LedgerEntry,
        paid_until: Option<i64>,
    ) -> Result<Option<LedgerRecord>> {
        ledger::post_within(self, entry, true, paid_until).await
    }

    async fn ledger(&self, ws: &WorkspaceId, before_seq: Option<i64>, limit: u32) -> Result<Vec<LedgerRecord>> {
        ledger::page(self, ws, before_seq, limit).await
    }

    async fn daily_usage(&self, ws: &WorkspaceId, since: i64) -> Result<Vec<DailyUsage>> {
        ledger::daily_usage(self, ws, since).await
    }

    async fn create_template(&self, t: &TemplateRecord, build: Option<(&str, &str)>) -> Result<()> {
        self.t_create(t, build).await
    }

    async fn template(&self, ws: Option<&WorkspaceId>, id: &TemplateId) -> Result<Option<TemplateRecord>> {
        self.t_get(ws, id).await
    }

    async fn template_by_name(&self, ws: &WorkspaceId, name: &str) -> Result<Option<TemplateRecord>> {
        self.t_by_name(ws, name).await
    }

    async fn templates(&self, ws: Option<&WorkspaceId>) -> Result<Vec<TemplateRecord>> {
        self.t_list(ws).await
    }

    async fn template_version(&self, id: &TemplateId, version: u32) -> Result<Option<TemplateVersion>> {
        self.t_version(id, version).await
    }

    async fn add_template_version(
        &self,
        id: &TemplateId,
        base: u32,
        spec: &TemplateSpec,
        source: VersionSource,
        build: Option<(&str, &str)>,
    ) -> Result<Option<TemplateRecord>> {
        self.t_add_version(id, base, spec, source, build).await
    }

    async fn finish_build(
        &self,
        id: &TemplateId,
        version: u32,
        status: TemplateStatus,
        error: Option<&str>,
        log: &[BuildLine],
    ) -> Result<bool> {
        self.t_finish_build(id, version, status, error, log).await
    }

    async fn template_build(&self, id: &TemplateId, version: u32) -> Result<Option<BuildRecord>> {
        self.t_build(id, version).await
    }

    async fn template_builds(&self, id: &TemplateId) -> Result<Vec<BuildRecord>> {
        self.t_builds(id).await
    }

    async fn fail_unfinished_builds(&self, started_before: i64, reason: &str) -> Result<u64> {
        self.t_fail_unfinished(started_before, reason).await
    }

    async fn ready_versions(&self) -> Result<Vec<(TemplateId, u32)>> {
        self.t_ready_versions().await
    }

    async fn delete_template(&self, id: &TemplateId) -> Result<bool> {
        self.t_delete(id).await
    }

    async fn template_users(&self, template: &str) -> Result<i64> {
        self.t_users(template).await
    }
}
