//! The wallet and its append-only ledger in SQL.

use super::SqlStore;
use crate::{DailyUsage, LedgerEntry, LedgerRecord, Result, StoreError};
use berth_core::{now_secs, InstanceId, WorkspaceId};
use sqlx::any::AnyRow;
use sqlx::Row;

fn from_row(row: &AnyRow) -> Result<LedgerRecord> {
    Ok(LedgerRecord {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        entry: LedgerEntry {
            workspace_id: WorkspaceId::from_trusted(row.try_get("workspace_id")?),
            instance_id: row.try_get::<Option<String>, _>("instance_id")?.map(InstanceId::from_trusted),
            kind: row.try_get("kind")?,
            amount_micros: row.try_get("amount_micros")?,
            description: row.try_get("description")?,
            model: row.try_get("model")?,
            input_tokens: row.try_get("input_tokens")?,
            output_tokens: row.try_get("output_tokens")?,
        },
        balance_micros: row.try_get("balance_micros")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) async fn balance(s: &SqlStore, ws: &WorkspaceId) -> Result<Option<i64>> {
    let row = sqlx::query(&s.sql("SELECT balance_micros FROM workspaces WHERE id = ?"))
        .bind(ws.as_str())
        .fetch_optional(&s.pool)
        .await?;
    Ok(row.map(|r| r.get("balance_micros")))
}

/// Writes an entry; with `within_balance`, only if the balance stays ≥ 0 (`None` otherwise).
pub(super) async fn post_within(
    s: &SqlStore,
    e: &LedgerEntry,
    within_balance: bool,
    paid_until: Option<i64>,
) -> Result<Option<LedgerRecord>> {
    let mut tx = s.pool.begin().await?;
    // The first statement writes, so the transaction holds SQLite's write lock from the
    // start: the balance it reads back is the one its entry records.
    let row = sqlx::query(&s.sql(
        "UPDATE workspaces SET balance_micros = balance_micros + ? WHERE id = ? \
         AND (? = 0 OR balance_micros + ? >= 0) RETURNING balance_micros",
    ))
    .bind(e.amount_micros)
    .bind(e.workspace_id.as_str())
    .bind(i64::from(within_balance))
    .bind(e.amount_micros)
    .fetch_optional(&mut *tx)
    .await?;
    let balance: i64 = match row {
        Some(r) => r.get("balance_micros"),
        None if within_balance => return Ok(None),
        None => return Err(StoreError::Corrupt(format!("ledger entry for unknown workspace {}", e.workspace_id))),
    };
    if let (Some(until), Some(id)) = (paid_until, &e.instance_id) {
        sqlx::query(&s.sql("UPDATE instances SET paid_until = ? WHERE id = ?"))
            .bind(until)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    if let (true, Some(id)) = (e.counts_as_managed(), &e.instance_id) {
        sqlx::query(&s.sql("UPDATE instances SET managed_used_micros = managed_used_micros - ? WHERE id = ?"))
            .bind(e.amount_micros)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
    }
    let id = format!("led_{}", berth_core::ids::random_label(16));
    let at = now_secs();
    let seq: i64 = sqlx::query(&s.sql(
        "INSERT INTO ledger (id, workspace_id, instance_id, kind, amount_micros, balance_micros, description, model, \
         input_tokens, output_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
    ))
    .bind(&id)
    .bind(e.workspace_id.as_str())
    .bind(e.instance_id.as_ref().map(|i| i.as_str()))
    .bind(&e.kind)
    .bind(e.amount_micros)
    .bind(balance)
    .bind(&e.description)
    .bind(&e.model)
    .bind(e.input_tokens)
    .bind(e.output_tokens)
    .bind(at)
    .fetch_one(&mut *tx)
    .await?
    .get("seq");
    tx.commit().await?;
    Ok(Some(LedgerRecord { seq, id, entry: e.clone(), balance_micros: balance, created_at: at }))
}

pub(super) async fn page(
    s: &SqlStore,
    ws: &WorkspaceId,
    before_seq: Option<i64>,
    limit: u32,
) -> Result<Vec<LedgerRecord>> {
    let rows = sqlx::query(&s.sql("SELECT * FROM ledger WHERE workspace_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"))
        .bind(ws.as_str())
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&s.pool)
        .await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn daily_usage(s: &SqlStore, ws: &WorkspaceId, since: i64) -> Result<Vec<DailyUsage>> {
    let rows = sqlx::query(&s.sql("SELECT instance_id, (created_at / 86400) * 86400 AS day, kind, CAST(-SUM(amount_micros) AS BIGINT) AS micros, \
         CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) AS input_tokens, \
         CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT) AS output_tokens, \
         COUNT(*) AS calls FROM ledger WHERE workspace_id = ? AND created_at >= ? AND amount_micros < 0 \
         GROUP BY instance_id, day, kind ORDER BY day, instance_id, kind",))
    .bind(ws.as_str())
    .bind(since)
    .fetch_all(&s.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(DailyUsage {
                instance_id: r.try_get::<Option<String>, _>("instance_id")?.map(InstanceId::from_trusted),
                day: r.try_get("day")?,
                kind: r.try_get("kind")?,
                micros: r.try_get("micros")?,
                input_tokens: r.try_get("input_tokens")?,
                output_tokens: r.try_get("output_tokens")?,
                calls: r.try_get("calls")?,
            })
        })
        .collect()
}
