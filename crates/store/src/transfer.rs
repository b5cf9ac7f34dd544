//! `berth export` / `berth import`: an installation's whole store as JSON Lines, to
//! move it between databases (SQLite → PostgreSQL, or a backup). Rows are copied as
//! they are stored: sealed env values stay sealed (the importing server needs the same
//! `secret.key`), ids, sequence numbers, ledger balances and audit events unchanged.
//!
//! The first line is a header `{"berth_export": 1, "tables": [...]}`; each further
//! line is `{"table": NAME, "row": {COLUMN: VALUE, ...}}` with integers and text as
//! JSON numbers and strings, NULL as null.

use crate::sql::{Backend, SqlStore};
use crate::{Result, StoreError};
use serde_json::{Map, Value};
use sqlx::{Column, Row};
use std::io::{BufRead, Write};

/// Every table, parents before the rows that refer to them.
pub const TABLES: &[&str] = &[
    "meta",
    "workspaces",
    "api_keys",
    "instances",
    "events",
    "shares",
    "ledger",
    "templates",
    "template_versions",
    "template_builds",
];

/// Tables whose `seq` a database numbers itself (PostgreSQL's identity columns are
/// moved past the imported rows).
const SEQUENCED: &[&str] = &["instances", "events", "ledger", "templates"];

/// Rows written per table, as `(table, rows)`.
pub type Counts = Vec<(String, u64)>;

/// A column's value as JSON: integer, text, real or null.
fn value(row: &sqlx::any::AnyRow, i: usize) -> Result<Value> {
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return Ok(v.map_or(Value::Null, Value::from));
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return Ok(v.map_or(Value::Null, Value::from));
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return Ok(v.map_or(Value::Null, Value::from));
    }
    Err(StoreError::Corrupt(format!("column {} has a type export does not know", row.column(i).name())))
}

/// Writes every row of `store` to `out`, read in one transaction (a consistent
/// snapshot while the server keeps running).
pub async fn export(store: &SqlStore, out: &mut dyn Write) -> Result<Counts> {
    let io = |e: std::io::Error| StoreError::Config(format!("writing the export: {e}"));
    let header = serde_json::json!({"berth_export": 1, "tables": TABLES});
    writeln!(out, "{header}").map_err(io)?;
    let mut tx = store.pool().begin().await?;
    if store.backend() == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
    }
    let mut counts = Vec::new();
    for table in TABLES {
        let order = if SEQUENCED.contains(table) { "seq" } else { "1" };
        let rows = sqlx::query(&format!("SELECT * FROM {table} ORDER BY {order}")).fetch_all(&mut *tx).await?;
        for row in &rows {
            let mut obj = Map::new();
            for (i, col) in row.columns().iter().enumerate() {
                obj.insert(col.name().to_string(), value(row, i)?);
            }
            let line = serde_json::json!({"table": table, "row": obj});
            writeln!(out, "{line}").map_err(io)?;
        }
        counts.push((table.to_string(), rows.len() as u64));
    }
    tx.commit().await?;
    out.flush().map_err(io)?;
    Ok(counts)
}

/// Reads an export into `store`, which must hold no workspace yet (a freshly migrated
/// database). All or nothing: one transaction.
pub async fn import(store: &SqlStore, input: &mut dyn BufRead) -> Result<Counts> {
    let bad = |line: usize, why: String| StoreError::Config(format!("line {line} of the export: {why}"));
    let mut tx = store.pool().begin().await?;
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspaces").fetch_one(&mut *tx).await?;
    if existing > 0 {
        return Err(StoreError::Config(format!(
            "the target database already holds {existing} workspace(s); import into an empty one"
        )));
    }
    // `berth server` made no meta rows here yet, but a first start may have: the
    // export's own (installation id, share secret) win.
    sqlx::query("DELETE FROM meta").execute(&mut *tx).await?;
    let mut counts: Vec<(String, u64)> = TABLES.iter().map(|t| (t.to_string(), 0)).collect();
    let mut header = false;
    for (n, line) in input.lines().enumerate() {
        let n = n + 1;
        let line = line.map_err(|e| bad(n, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let doc: Value = serde_json::from_str(&line).map_err(|e| bad(n, format!("not JSON: {e}")))?;
        if !header {
            if doc.get("berth_export") != Some(&Value::from(1)) {
                return Err(bad(n, "not a berth export (its first line has no \"berth_export\": 1)".into()));
            }
            header = true;
            continue;
        }
        let table = doc.get("table").and_then(Value::as_str).unwrap_or_default();
        let Some(slot) = counts.iter_mut().find(|(t, _)| t == table) else {
            return Err(bad(n, format!("unknown table `{table}`")));
        };
        let Some(row) = doc.get("row").and_then(Value::as_object) else {
            return Err(bad(n, "no \"row\" object".into()));
        };
        let mut cols = Vec::new();
        let mut vals = Vec::new();
        for (name, v) in row {
            if !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                return Err(bad(n, format!("bad column name `{name}`")));
            }
            cols.push(name.as_str());
            // NULL is written in the statement: a typed NULL parameter would not fit
            // every column on PostgreSQL.
            vals.push(if v.is_null() { "NULL" } else { "?" });
        }
        let sql = format!("INSERT INTO {table} ({}) VALUES ({})", cols.join(", "), vals.join(", "));
        let sql = store.sql(&sql);
        let mut q = sqlx::query(&sql);
        for v in row.values() {
            q = match v {
                Value::Null => q,
                Value::Number(num) => match num.as_i64() {
                    Some(i) => q.bind(i),
                    None => q.bind(num.as_f64().unwrap_or_default()),
                },
                Value::String(s) => q.bind(s.as_str()),
                other => return Err(bad(n, format!("unexpected value {other}"))),
            };
        }
        q.execute(&mut *tx).await.map_err(|e| bad(n, format!("{table}: {e}")))?;
        slot.1 += 1;
    }
    if !header {
        return Err(StoreError::Config("the export is empty".into()));
    }
    if store.backend() == Backend::Postgres {
        for table in SEQUENCED {
            sqlx::query(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'seq'), COALESCE(MAX(seq), 0) + 1, false) FROM {table}"
            ))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(counts)
}
