//! Share links in SQL.

use super::SqlStore;
use crate::{Result, ShareRecord};
use berth_core::{InstanceId, ShareId, WorkspaceId};
use sqlx::any::AnyRow;
use sqlx::Row;

fn share_from_row(row: &AnyRow) -> Result<ShareRecord> {
    Ok(ShareRecord {
        id: ShareId::from_trusted(row.try_get("id")?),
        instance_id: InstanceId::from_trusted(row.try_get("instance_id")?),
        workspace_id: WorkspaceId::from_trusted(row.try_get("workspace_id")?),
        port: row.try_get::<i64, _>("port")? as u16,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        created_by: row.try_get("created_by")?,
    })
}

pub(super) async fn create(s: &SqlStore, share: &ShareRecord) -> Result<()> {
    sqlx::query(&s.sql(
        "INSERT INTO shares (id, instance_id, workspace_id, port, created_at, expires_at, revoked_at, created_by) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ))
    .bind(share.id.as_str())
    .bind(share.instance_id.as_str())
    .bind(share.workspace_id.as_str())
    .bind(share.port as i64)
    .bind(share.created_at)
    .bind(share.expires_at)
    .bind(share.revoked_at)
    .bind(&share.created_by)
    .execute(&s.pool)
    .await?;
    Ok(())
}

pub(super) async fn active(s: &SqlStore, instance: Option<&InstanceId>, now: i64) -> Result<Vec<ShareRecord>> {
    let instance = instance.map(|i| i.as_str().to_string());
    let rows = sqlx::query(&s.sql(
        "SELECT * FROM shares WHERE revoked_at IS NULL AND expires_at > ? AND (? IS NULL OR instance_id = ?) \
         ORDER BY created_at DESC, id DESC",
    ))
    .bind(now)
    .bind(&instance)
    .bind(&instance)
    .fetch_all(&s.pool)
    .await?;
    rows.iter().map(share_from_row).collect()
}

pub(super) async fn revoke(s: &SqlStore, instance: &InstanceId, id: &ShareId, at: i64) -> Result<bool> {
    let done = sqlx::query(&s.sql(
        "UPDATE shares SET revoked_at = ? WHERE id = ? AND instance_id = ? AND revoked_at IS NULL AND expires_at > ?",
    ))
    .bind(at)
    .bind(id.as_str())
    .bind(instance.as_str())
    .bind(at)
    .execute(&s.pool)
    .await?;
    Ok(done.rows_affected() > 0)
}
