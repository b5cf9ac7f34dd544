//! Custom templates and their versions in SQLite. A version's spec may carry secrets
//! (its `env`), so it is sealed at rest like instances' env.

use super::SqliteStore;
use crate::{Result, StoreError, TemplateRecord};
use berth_core::{TemplateId, TemplateSpec, WorkspaceId};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

const COLUMNS: &str = "t.id, t.workspace_id, t.name, t.version, t.created_at, t.updated_at, v.spec";
const FROM: &str = "templates t JOIN template_versions v ON v.template_id = t.id AND v.version = t.version";

impl SqliteStore {
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

    fn template_from_row(&self, row: &SqliteRow) -> Result<TemplateRecord> {
        Ok(TemplateRecord {
            id: TemplateId::from_trusted(row.try_get("id")?),
            workspace_id: WorkspaceId::from_trusted(row.try_get("workspace_id")?),
            name: row.try_get("name")?,
            version: row.try_get::<i64, _>("version")? as u32,
            spec: self.spec_from(&row.try_get::<String, _>("spec")?)?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    pub(super) async fn t_create(&self, t: &TemplateRecord) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO templates (id, workspace_id, name, version, created_at, updated_at) VALUES (?, ?, ?, 1, ?, ?)",
        )
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
        sqlx::query("INSERT INTO template_versions (template_id, version, spec, created_at) VALUES (?, 1, ?, ?)")
            .bind(t.id.as_str())
            .bind(self.spec_text(&t.spec))
            .bind(t.created_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn t_get(&self, ws: Option<&WorkspaceId>, id: &TemplateId) -> Result<Option<TemplateRecord>> {
        let row =
            sqlx::query(&format!("SELECT {COLUMNS} FROM {FROM} WHERE t.id = ? AND (? IS NULL OR t.workspace_id = ?)"))
                .bind(id.as_str())
                .bind(ws.map(|w| w.as_str()))
                .bind(ws.map(|w| w.as_str()))
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| self.template_from_row(&r)).transpose()
    }

    pub(super) async fn t_by_name(&self, ws: &WorkspaceId, name: &str) -> Result<Option<TemplateRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM {FROM} WHERE t.workspace_id = ? AND t.name = ?"))
            .bind(ws.as_str())
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| self.template_from_row(&r)).transpose()
    }

    pub(super) async fn t_list(&self, ws: Option<&WorkspaceId>) -> Result<Vec<TemplateRecord>> {
        let rows =
            sqlx::query(&format!("SELECT {COLUMNS} FROM {FROM} WHERE ? IS NULL OR t.workspace_id = ? ORDER BY t.seq"))
                .bind(ws.map(|w| w.as_str()))
                .bind(ws.map(|w| w.as_str()))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(|r| self.template_from_row(r)).collect()
    }

    pub(super) async fn t_version(&self, id: &TemplateId, version: u32) -> Result<Option<TemplateSpec>> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT spec FROM template_versions WHERE template_id = ? AND version = ?")
                .bind(id.as_str())
                .bind(version as i64)
                .fetch_optional(&self.pool)
                .await?;
        text.map(|t| self.spec_from(&t)).transpose()
    }

    pub(super) async fn t_add_version(&self, id: &TemplateId, spec: &TemplateSpec) -> Result<Option<TemplateRecord>> {
        let now = berth_core::now_secs();
        let mut tx = self.pool.begin().await?;
        // The version number is taken and written in one transaction: SQLite serialises
        // writers, so two PATCHes get two versions.
        let done = sqlx::query("UPDATE templates SET version = version + 1, updated_at = ? WHERE id = ?")
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let version: i64 = sqlx::query_scalar("SELECT version FROM templates WHERE id = ?")
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO template_versions (template_id, version, spec, created_at) VALUES (?, ?, ?, ?)")
            .bind(id.as_str())
            .bind(version)
            .bind(self.spec_text(spec))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.t_get(None, id).await
    }

    pub(super) async fn t_delete(&self, id: &TemplateId) -> Result<bool> {
        let done = sqlx::query("DELETE FROM templates WHERE id = ?").bind(id.as_str()).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn t_users(&self, template: &str) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE template = ?")
            .bind(template)
            .fetch_one(&self.pool)
            .await?)
    }
}
