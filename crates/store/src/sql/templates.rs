//! Custom templates and their versions in SQLite. A version's spec may carry secrets
//! (its `env`), so it is sealed at rest like instances' env.

use super::SqlStore;
use crate::{BuildLine, BuildRecord, Result, StoreError, TemplateRecord, TemplateVersion, VersionSource};
use berth_core::{TemplateId, TemplateSpec, TemplateStatus, WorkspaceId};
use sqlx::any::AnyRow;
use sqlx::Row;

const COLUMNS: &str = "t.id, t.workspace_id, t.name, t.version, t.created_at, t.updated_at, v.spec, v.status, v.build";
const FROM: &str = "templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.version";

const BUILD_COLUMNS: &str =
    "b.template_id, b.version, b.image, b.dockerfile, v.status, b.error, b.started_at, b.finished_at";
const BUILDS: &str =
    "template_builds b JOIN template_versions v ON v.template_id = b.template_id AND v.version = b.version";

async fn insert_build(
    s: &SqlStore,
    tx: &mut sqlx::AnyConnection,
    id: &TemplateId,
    version: i64,
    image: &str,
    dockerfile: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(&s.sql(
        "INSERT INTO template_builds (template_id, version, image, dockerfile, started_at) VALUES (?, ?, ?, ?, ?)",
    ))
    .bind(id.as_str())
    .bind(version)
    .bind(image)
    .bind(dockerfile)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

impl SqlStore {
    /// Text for a spec column: JSON, sealed when the store has a key.
    pub(super) fn spec_text(&self, spec: &TemplateSpec) -> String {
        let text = serde_json::to_string(spec).unwrap_or_else(|_| "{}".into());
        match &self.seal {
            Some(key) => key.seal(&text),
            None => text,
        }
    }

    /// A spec column's value, opened when sealed.
    pub(super) fn spec_from(&self, text: &str) -> Result<TemplateSpec> {
        let plain = if crate::seal::is_sealed(text) {
            let key = self
                .seal
                .as_ref()
                .ok_or_else(|| StoreError::Corrupt("template spec is sealed and this store has no key".into()))?;
            key.open(text).map_err(|e| StoreError::Corrupt(format!("template spec: {e}")))?
        } else {
            text.to_string()
        };
        serde_json::from_str(&plain).map_err(|e| StoreError::Corrupt(format!("template spec: {e}")))
    }

    fn template_from_row(&self, row: &AnyRow) -> Result<TemplateRecord> {
        Ok(TemplateRecord {
            id: TemplateId::from_trusted(row.try_get("id")?),
            workspace_id: WorkspaceId::from_trusted(row.try_get("workspace_id")?),
            name: row.try_get("name")?,
            version: row.try_get::<i64, _>("version")? as u32,
            spec: self.spec_from(&row.try_get::<String, _>("spec")?)?,
            status: TemplateStatus::parse(row.try_get("status")?),
            build: row.try_get::<Option<i64>, _>("build")?.map(|b| b as u32),
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    pub(super) async fn t_create(&self, t: &TemplateRecord, build: Option<(&str, &str)>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(&self.sql(
            "INSERT INTO templates (id, workspace_id, name, version, created_at, updated_at) VALUES (?, ?, ?, 1, ?, ?)",
        ))
        .bind(t.id.as_str())
        .bind(t.workspace_id.as_str())
        .bind(&t.name)
        .bind(t.created_at)
        .bind(t.updated_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Duplicate(format!("a template named `{}` exists in this workspace", t.name)))
            }
            other => other?,
        };
        let (status, built) = match build {
            Some(_) => (TemplateStatus::Building, Some(1)),
            None => (t.status, t.build),
        };
        sqlx::query(&self.sql("INSERT INTO template_versions (template_id, version, spec, created_at, status, build) VALUES (?, 1, ?, ?, ?, ?)",))
        .bind(t.id.as_str())
        .bind(self.spec_text(&t.spec))
        .bind(t.created_at)
        .bind(status.as_str())
        .bind(built.map(i64::from))
        .execute(&mut *tx)
        .await?;
        if let Some((image, dockerfile)) = build {
            insert_build(self, &mut tx, &t.id, 1, image, dockerfile, t.created_at).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn t_get(&self, ws: Option<&WorkspaceId>, id: &TemplateId) -> Result<Option<TemplateRecord>> {
        let row = sqlx::query(
            &self.sql(&format!("SELECT {COLUMNS} FROM {FROM} WHERE t.id = ? AND (? IS NULL OR t.workspace_id = ?)")),
        )
        .bind(id.as_str())
        .bind(ws.map(|w| w.as_str()))
        .bind(ws.map(|w| w.as_str()))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| self.template_from_row(&r)).transpose()
    }

    pub(super) async fn t_by_name(&self, ws: &WorkspaceId, name: &str) -> Result<Option<TemplateRecord>> {
        let row =
            sqlx::query(&self.sql(&format!("SELECT {COLUMNS} FROM {FROM} WHERE t.workspace_id = ? AND t.name = ?")))
                .bind(ws.as_str())
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| self.template_from_row(&r)).transpose()
    }

    pub(super) async fn t_list(&self, ws: Option<&WorkspaceId>) -> Result<Vec<TemplateRecord>> {
        let rows = sqlx::query(
            &self.sql(&format!("SELECT {COLUMNS} FROM {FROM} WHERE ? IS NULL OR t.workspace_id = ? ORDER BY t.seq")),
        )
        .bind(ws.map(|w| w.as_str()))
        .bind(ws.map(|w| w.as_str()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| self.template_from_row(r)).collect()
    }

    pub(super) async fn t_version(&self, id: &TemplateId, version: u32) -> Result<Option<TemplateVersion>> {
        let row = sqlx::query(
            &self.sql("SELECT spec, status, build FROM template_versions WHERE template_id = ? AND version = ?"),
        )
        .bind(id.as_str())
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(TemplateVersion {
                version,
                spec: self.spec_from(&r.try_get::<String, _>("spec")?)?,
                status: TemplateStatus::parse(r.try_get("status")?),
                build: r.try_get::<Option<i64>, _>("build")?.map(|b| b as u32),
            })
        })
        .transpose()
    }

    pub(super) async fn t_add_version(
        &self,
        id: &TemplateId,
        base: u32,
        spec: &TemplateSpec,
        source: VersionSource,
        build: Option<(&str, &str)>,
    ) -> Result<Option<TemplateRecord>> {
        let now = berth_core::now_secs();
        let mut tx = self.pool.begin().await?;
        // The version number is taken and written in one transaction, only if it still
        // follows `base`: SQLite serialises writers, so of two PATCHes made from the same
        // version, the second finds it moved (and never copies a status meant for another).
        let done = sqlx::query(
            &self.sql("UPDATE templates SET version = version + 1, updated_at = ? WHERE id = ? AND version = ?"),
        )
        .bind(now)
        .bind(id.as_str())
        .bind(base as i64)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let version: i64 = sqlx::query_scalar(&self.sql("SELECT version FROM templates WHERE id = ?"))
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let (status, built) = match source {
            VersionSource::Image => (TemplateStatus::Ready.as_str().to_string(), None),
            VersionSource::Build => (TemplateStatus::Building.as_str().to_string(), Some(version)),
            VersionSource::Same => {
                let row = sqlx::query(
                    &self.sql("SELECT status, build FROM template_versions WHERE template_id = ? AND version = ?"),
                )
                .bind(id.as_str())
                .bind(version - 1)
                .fetch_one(&mut *tx)
                .await?;
                (row.try_get::<String, _>("status")?, row.try_get::<Option<i64>, _>("build")?)
            }
        };
        sqlx::query(&self.sql("INSERT INTO template_versions (template_id, version, spec, created_at, status, build) VALUES (?, ?, ?, ?, ?, ?)",))
        .bind(id.as_str())
        .bind(version)
        .bind(self.spec_text(spec))
        .bind(now)
        .bind(status)
        .bind(built)
        .execute(&mut *tx)
        .await?;
        if let (VersionSource::Build, Some((image, dockerfile))) = (source, build) {
            insert_build(self, &mut tx, id, version, image, dockerfile, now).await?;
        }
        // Read back inside the transaction: after it commits, a concurrent change may
        // already have made a newer version, and this caller must be told its own.
        let row = sqlx::query(&self.sql(&format!("SELECT {COLUMNS} FROM {FROM} WHERE t.id = ?")))
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        let made = self.template_from_row(&row)?;
        tx.commit().await?;
        Ok(Some(made))
    }

    pub(super) async fn t_finish_build(
        &self,
        id: &TemplateId,
        version: u32,
        status: TemplateStatus,
        error: Option<&str>,
        log: &[BuildLine],
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(&self.sql(
            "UPDATE template_builds SET log = ?, error = ?, finished_at = ? WHERE template_id = ? AND version = ?",
        ))
        .bind(serde_json::to_string(log).unwrap_or_else(|_| "[]".into()))
        .bind(error)
        .bind(berth_core::now_secs())
        .bind(id.as_str())
        .bind(version as i64)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&self.sql("UPDATE template_versions SET status = ? WHERE template_id = ? AND build = ?"))
            .bind(status.as_str())
            .bind(id.as_str())
            .bind(version as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    fn build_from_row(row: &AnyRow, with_log: bool) -> Result<BuildRecord> {
        let log = if with_log {
            let text: String = row.try_get("log")?;
            serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("build log: {e}")))?
        } else {
            Vec::new()
        };
        Ok(BuildRecord {
            template_id: TemplateId::from_trusted(row.try_get("template_id")?),
            version: row.try_get::<i64, _>("version")? as u32,
            image: row.try_get("image")?,
            dockerfile: row.try_get("dockerfile")?,
            status: TemplateStatus::parse(row.try_get("status")?),
            error: row.try_get("error")?,
            log,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }

    pub(super) async fn t_build(&self, id: &TemplateId, version: u32) -> Result<Option<BuildRecord>> {
        let row = sqlx::query(
            &self
                .sql(&format!("SELECT {BUILD_COLUMNS}, b.log FROM {BUILDS} WHERE b.template_id = ? AND b.version = ?")),
        )
        .bind(id.as_str())
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Self::build_from_row(&r, true)).transpose()
    }

    pub(super) async fn t_builds(&self, id: &TemplateId) -> Result<Vec<BuildRecord>> {
        let rows = sqlx::query(
            &self.sql(&format!("SELECT {BUILD_COLUMNS} FROM {BUILDS} WHERE b.template_id = ? ORDER BY b.version")),
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Self::build_from_row(r, false)).collect()
    }

    pub(super) async fn t_fail_unfinished(&self, started_before: i64, reason: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let cut: Vec<(String, i64)> = sqlx::query_as(&self.sql(
            "UPDATE template_builds SET error = ?, finished_at = ? WHERE finished_at IS NULL AND started_at < ? \
             RETURNING template_id, version",
        ))
        .bind(reason)
        .bind(berth_core::now_secs())
        .bind(started_before)
        .fetch_all(&mut *tx)
        .await?;
        for (template, version) in &cut {
            sqlx::query(&self.sql(
                "UPDATE template_versions SET status = 'failed' WHERE template_id = ? AND build = ? AND status = 'building'",
            ))
            .bind(template)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(cut.len() as u64)
    }

    pub(super) async fn t_ready_versions(&self) -> Result<Vec<(TemplateId, u32)>> {
        let rows = sqlx::query(&self.sql("SELECT template_id, MAX(version) AS version FROM template_versions WHERE status = 'ready' GROUP BY template_id",))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((TemplateId::from_trusted(r.try_get("template_id")?), r.try_get::<i64, _>("version")? as u32)))
            .collect()
    }

    pub(super) async fn t_delete(&self, id: &TemplateId) -> Result<bool> {
        let done =
            sqlx::query(&self.sql("DELETE FROM templates WHERE id = ?")).bind(id.as_str()).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn t_users(&self, template: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(&self.sql("SELECT COUNT(*) FROM instances WHERE template = ?"))
            .bind(template)
            .fetch_one(&self.pool)
            .await?)
    }
}
