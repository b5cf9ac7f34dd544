//! Sessions, their history and their responses, in one SQLite file under `--data`.
//!
//! Calls are synchronous and short (one small transaction each), so they run on
//! the async workers under a mutex; that also lets a `Drop` guard record a
//! cancelled turn.

use crate::api::sessions::{HistoryItem, SessionSummary};
use crate::api::{Item, Response};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON is unreadable: {0}")]
    Json(#[from] serde_json::Error),
}

type Result<T> = std::result::Result<T, StoreError>;

/// Schema migrations, applied in order; `PRAGMA user_version` counts those done.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE sessions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        title TEXT NOT NULL
    );
    CREATE TABLE items (
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        response_id TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    );
    CREATE TABLE responses (
        id TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX responses_by_session ON responses(session_id, created_at);
",
    "
    -- The session of a driven agent (Claude Code...) that continues this one.
    ALTER TABLE sessions ADD COLUMN external_id TEXT;
",
    "
    -- A conversation's metadata (the Conversations API), a JSON object.
    ALTER TABLE sessions ADD COLUMN metadata TEXT;
",
    "
    -- On a compaction item's row: the seq of the first item the model is still sent
    -- after it (older ones are summarised by it, and kept here in full).
    ALTER TABLE items ADD COLUMN kept_from INTEGER;
    CREATE INDEX items_compactions ON items(session_id, seq) WHERE kept_from IS NOT NULL;
    -- The provider's count of input tokens at the session's last model call, and how
    -- many items of the model's history that call was sent: the base of the estimate
    -- of the next call's size.
    ALTER TABLE sessions ADD COLUMN context_tokens INTEGER;
    ALTER TABLE sessions ADD COLUMN context_items INTEGER;
",
    "
    -- Turns the agent runs on time (POST /v1/schedules); `body` holds the schedule as
    -- created (JSON), `session_id` the session its runs continue.
    CREATE TABLE schedules (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL,
        session_id TEXT,
        created_at INTEGER NOT NULL,
        next_run_at INTEGER NOT NULL,
        last_run_at INTEGER,
        run_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX schedules_due ON schedules(next_run_at);
    -- Each run: the response it made, or why it could not start.
    CREATE TABLE schedule_runs (
        schedule_id TEXT NOT NULL REFERENCES schedules(id) ON DELETE CASCADE,
        started_at INTEGER NOT NULL,
        response_id TEXT,
        error TEXT
    );
    CREATE INDEX schedule_runs_by_schedule ON schedule_runs(schedule_id, started_at);
",
    "
    -- The numbered stream events of streamed and background turns, kept a day so a
    -- client can pick a turn up again after the agent restarted.
    CREATE TABLE events (
        response_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (response_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX events_by_time ON events(at);
",
];

/// How long stream events are kept, in seconds.
pub const EVENTS_KEPT_SECS: u64 = 24 * 3600;

/// A stored schedule: its definition as created and its progress.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub id: String,
    pub body: serde_json::Value,
    pub session_id: Option<String>,
    pub created_at: u64,
    pub next_run_at: u64,
    pub last_run_at: Option<u64>,
    pub run_count: u64,
}

/// One run of a schedule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScheduleRun {
    pub started_at: u64,
    pub response_id: Option<String>,
    pub error: Option<String>,
}

/// What the model is sent of a session: its newest compaction summary, if any, and
/// the items after what that summary covers.
#[derive(Debug, Default)]
pub struct Context {
    pub summary: Option<Item>,
    pub items: Vec<Item>,
}

/// Handle to the session database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating and migrating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        // Keep the page cache small: the agent should idle in a few MiB.
        conn.pragma_update(None, "cache_size", -512)?;
        let done: usize = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(Store { conn: Arc::new(Mutex::new(conn)) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        // A panic while holding the lock leaves SQLite itself consistent.
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }

    /// Creates an empty session.
    pub fn create_session(&self, id: &str, title: &str, now: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO sessions (id, created_at, updated_at, title) VALUES (?1, ?2, ?2, ?3)",
                params![id, now, title],
            )?;
            Ok(())
        })
    }

    /// A driven agent's own session continuing this one, if any (`external_id` holds
    /// one per agent, as a JSON object).
    pub fn external_session(&self, id: &str, agent: &str) -> Result<Option<String>> {
        let map = self.externals(id)?;
        Ok(map.get(agent).and_then(|v| v.as_str()).map(str::to_string))
    }

    /// Records a driven agent's own session continuing this one.
    pub fn set_external_session(&self, id: &str, agent: &str, external: &str) -> Result<()> {
        let mut map = self.externals(id)?;
        map.insert(agent.to_string(), external.into());
        let text = serde_json::Value::Object(map).to_string();
        self.with(|c| {
            c.execute("UPDATE sessions SET external_id = ?2 WHERE id = ?1", params![id, text])?;
            Ok(())
        })
    }

    fn externals(&self, id: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
        self.json_object_column(id, "external_id")
    }

    /// A session's metadata (`{}` when none was set).
    pub fn session_metadata(&self, id: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
        self.json_object_column(id, "metadata")
    }

    /// A session's column holding a JSON object (`{}` when empty or unreadable).
    fn json_object_column(&self, id: &str, column: &'static str) -> Result<serde_json::Map<String, serde_json::Value>> {
        let sql = format!("SELECT {column} FROM sessions WHERE id = ?1");
        let text =
            self.with(|c| Ok(c.query_row(&sql, [id], |r| r.get::<_, Option<String>>(0)).optional()?.flatten()))?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default())
    }

    /// Replaces a session's metadata.
    pub fn set_session_metadata(&self, id: &str, metadata: &serde_json::Map<String, serde_json::Value>) -> Result<()> {
        let text = serde_json::Value::Object(metadata.clone()).to_string();
        self.with(|c| {
            c.execute("UPDATE sessions SET metadata = ?2 WHERE id = ?1", params![id, text])?;
            Ok(())
        })
    }

    /// The session's summary, if it exists.
    pub fn session(&self, id: &str) -> Result<Option<SessionSummary>> {
        self.with(|c| Ok(c.query_row(SUMMARY_SQL_BY_ID, [id], summary).optional()?))
    }

    /// Sessions newest first, `limit` of them after the session `after`;
    /// also says whether more follow.
    pub fn list_sessions(&self, limit: usize, after: Option<&str>) -> Result<(Vec<SessionSummary>, bool)> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(SUMMARY_SQL_PAGE)?;
            let rows = stmt.query_map(params![after, limit as i64 + 1], summary)?;
            let mut list = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            let more = list.len() > limit;
            list.truncate(limit);
            Ok((list, more))
        })
    }

    /// Starts session `id` as a branch of session `from`: a copy of its history up to
    /// and including the items of response `upto`, its title and metadata. False when
    /// `from` is gone.
    pub fn branch_session(&self, from: &str, upto: &str, id: &str, now: u64) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            let made = tx.execute(
                "INSERT INTO sessions (id, created_at, updated_at, title, metadata)
                 SELECT ?2, ?3, ?3, title, metadata FROM sessions WHERE id = ?1",
                params![from, id, now],
            )?;
            if made == 0 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO items (session_id, seq, response_id, body, kept_from)
                 SELECT ?2, seq, response_id, body, kept_from FROM items WHERE session_id = ?1 AND seq <=
                     (SELECT COALESCE(MAX(seq), 0) FROM items WHERE session_id = ?1 AND response_id = ?3)",
                params![from, id, upto],
            )?;
            tx.commit()?;
            Ok(true)
        })
    }

    /// Deletes a session with its history and responses; false if it did not exist.
    pub fn delete_session(&self, id: &str) -> Result<bool> {
        self.with(|c| {
            let tx = c.transaction()?;
            // Stream events hold the session's text too.
            tx.execute(
                "DELETE FROM events WHERE response_id IN (SELECT id FROM responses WHERE session_id = ?1)",
                [id],
            )?;
            let gone = tx.execute("DELETE FROM sessions WHERE id = ?1", [id])? > 0;
            tx.commit()?;
            Ok(gone)
        })
    }

    /// Appends items to a session's history in one transaction.
    pub fn append_items(&self, session_id: &str, response_id: &str, items: &[Item]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let next: i64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM items WHERE session_id = ?1", [session_id], |r| {
                    r.get(0)
                })?;
            for (i, item) in items.iter().enumerate() {
                tx.execute(
                    "INSERT INTO items (session_id, seq, response_id, body) VALUES (?1, ?2, ?3, ?4)",
                    params![session_id, next + i as i64, response_id, serde_json::to_string(item)?],
                )?;
            }
            tx.execute(
                "UPDATE sessions SET updated_at = ?2 WHERE id = ?1",
                params![session_id, crate::ids::now_secs()],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The whole history of a session, oldest first.
    pub fn history(&self, session_id: &str) -> Result<Vec<HistoryItem>> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT response_id, body FROM items WHERE session_id = ?1 ORDER BY seq")?;
            let rows = stmt.query_map([session_id], |r| Ok((r.get(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (response_id, body) = row?;
                out.push(HistoryItem { response_id, item: serde_json::from_str(&body)? });
            }
            Ok(out)
        })
    }

    /// What the model is sent of a session (see [`Context`]).
    pub fn context(&self, session_id: &str) -> Result<Context> {
        self.with(|c| {
            let (summary, from) = newest_compaction(c, session_id)?;
            let mut stmt = c.prepare_cached(
                "SELECT body FROM items WHERE session_id = ?1 AND seq >= ?2 AND kept_from IS NULL ORDER BY seq",
            )?;
            let rows = stmt.query_map(params![session_id, from], |r| r.get::<_, String>(0))?;
            let mut items = Vec::new();
            for body in rows {
                items.push(serde_json::from_str(&body?)?);
            }
            Ok(Context { summary, items })
        })
    }

    /// Records a compaction: `item` (a summary) stands for the first `summarised` items
    /// of the session's context (after its previous summary); they stay stored. Also
    /// forgets the last call's token count, which no longer describes the history.
    pub fn compact(&self, session_id: &str, response_id: &str, item: &Item, summarised: usize) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let (_, from) = newest_compaction(&tx, session_id)?;
            let next: i64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM items WHERE session_id = ?1", [session_id], |r| {
                    r.get(0)
                })?;
            let kept_from: i64 = tx
                .query_row(
                    "SELECT seq FROM items WHERE session_id = ?1 AND seq >= ?2 AND kept_from IS NULL
                     ORDER BY seq LIMIT 1 OFFSET ?3",
                    params![session_id, from, summarised as i64],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(next);
            tx.execute(
                "INSERT INTO items (session_id, seq, response_id, body, kept_from) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![session_id, next, response_id, serde_json::to_string(item)?, kept_from],
            )?;
            tx.execute(
                "UPDATE sessions SET context_tokens = NULL, context_items = NULL, updated_at = ?2 WHERE id = ?1",
                params![session_id, crate::ids::now_secs()],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The provider's input token count at the session's last model call and the
    /// number of context items it was sent.
    pub fn context_usage(&self, session_id: &str) -> Result<Option<(u64, usize)>> {
        self.with(|c| {
            let row = c
                .query_row("SELECT context_tokens, context_items FROM sessions WHERE id = ?1", [session_id], |r| {
                    Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
                })
                .optional()?;
            Ok(match row {
                Some((Some(t), Some(n))) => Some((t.max(0) as u64, n.max(0) as usize)),
                _ => None,
            })
        })
    }

    /// Records the input token count of a model call sent `items` context items.
    pub fn set_context_usage(&self, session_id: &str, tokens: u64, items: usize) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET context_tokens = ?2, context_items = ?3 WHERE id = ?1",
                params![session_id, tokens as i64, items as i64],
            )?;
            Ok(())
        })
    }

    /// Stores a new schedule.
    pub fn create_schedule(&self, row: &ScheduleRow) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO schedules (id, body, session_id, created_at, next_run_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.id, row.body.to_string(), row.session_id, row.created_at, row.next_run_at],
            )?;
            Ok(())
        })
    }

    /// Every schedule, oldest first.
    pub fn schedules(&self) -> Result<Vec<ScheduleRow>> {
        self.schedules_where("1 = 1", params![])
    }

    /// One schedule.
    pub fn schedule(&self, id: &str) -> Result<Option<ScheduleRow>> {
        Ok(self.schedules_where("id = ?1", params![id])?.pop())
    }

    /// Schedules due at `now`, the longest overdue first.
    pub fn due_schedules(&self, now: u64) -> Result<Vec<ScheduleRow>> {
        self.schedules_where("next_run_at <= ?1 ORDER BY next_run_at", params![now])
    }

    fn schedules_where(&self, clause: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<ScheduleRow>> {
        let order = if clause.contains("ORDER BY") { "" } else { " ORDER BY seq" };
        let sql = format!(
            "SELECT id, body, session_id, created_at, next_run_at, last_run_at, run_count FROM schedules WHERE {clause}{order}"
        );
        self.with(|c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, body, session_id, created_at, next_run_at, last_run_at, run_count) = row?;
                out.push(ScheduleRow {
                    id,
                    body: serde_json::from_str(&body)?,
                    session_id,
                    created_at: created_at as u64,
                    next_run_at: next_run_at as u64,
                    last_run_at: last_run_at.map(|t| t as u64),
                    run_count: run_count as u64,
                });
            }
            Ok(out)
        })
    }

    /// The soonest time a schedule is due.
    pub fn next_due(&self) -> Result<Option<u64>> {
        self.with(|c| {
            let t: Option<i64> = c.query_row("SELECT MIN(next_run_at) FROM schedules", [], |r| r.get(0))?;
            Ok(t.map(|t| t.max(0) as u64))
        })
    }

    /// Records a run (its response, or why it could not start), the schedule's next
    /// time, and the session its runs continue.
    pub fn record_run(
        &self,
        id: &str,
        at: u64,
        run: std::result::Result<&str, &str>,
        next_run_at: u64,
        session_id: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let (response, error) = match run {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            };
            tx.execute(
                "INSERT INTO schedule_runs (schedule_id, started_at, response_id, error) VALUES (?1, ?2, ?3, ?4)",
                params![id, at, response, error],
            )?;
            // Keep the newest 100 runs of a schedule.
            tx.execute(
                "DELETE FROM schedule_runs WHERE schedule_id = ?1 AND rowid NOT IN
                    (SELECT rowid FROM schedule_runs WHERE schedule_id = ?1 ORDER BY started_at DESC, rowid DESC LIMIT 100)",
                [id],
            )?;
            tx.execute(
                "UPDATE schedules SET next_run_at = ?2, last_run_at = ?3, run_count = run_count + 1,
                    session_id = COALESCE(?4, session_id) WHERE id = ?1",
                params![id, next_run_at, at, session_id],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Moves a schedule's next time (a run put off while its session was busy).
    pub fn postpone_schedule(&self, id: &str, next_run_at: u64) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE schedules SET next_run_at = ?2 WHERE id = ?1", params![id, next_run_at])?;
            Ok(())
        })
    }

    /// A schedule's runs, newest first, at most `limit`.
    pub fn schedule_runs(&self, id: &str, limit: usize) -> Result<Vec<ScheduleRun>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT started_at, response_id, error FROM schedule_runs WHERE schedule_id = ?1
                 ORDER BY started_at DESC, rowid DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id, limit as i64], |r| {
                Ok(ScheduleRun { started_at: r.get::<_, i64>(0)? as u64, response_id: r.get(1)?, error: r.get(2)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Deletes a schedule and its runs' records (not their responses); false if absent.
    pub fn delete_schedule(&self, id: &str) -> Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM schedules WHERE id = ?1", [id])? > 0))
    }

    /// Appends stream events of a turn `(seq, event, data)`.
    pub fn append_events(&self, response_id: &str, events: &[(u64, &str, &str)]) -> Result<()> {
        let now = crate::ids::now_secs();
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT OR IGNORE INTO events (response_id, seq, event, data, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                for (seq, event, data) in events {
                    stmt.execute(params![response_id, *seq as i64, event, data, now])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// A turn's stored stream events after `after` (all when None), in order.
    pub fn events(&self, response_id: &str, after: Option<u64>) -> Result<Vec<(u64, String, String)>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT seq, event, data FROM events WHERE response_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let from = after.map_or(-1, |a| a as i64);
            let rows =
                stmt.query_map(params![response_id, from], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The last stream event stored for a turn (its number and name), if any.
    pub fn last_event(&self, response_id: &str) -> Result<Option<(u64, String)>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT seq, event FROM events WHERE response_id = ?1 ORDER BY seq DESC LIMIT 1",
                [response_id],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            )
            .optional()?)
        })
    }

    /// Forgets stream events older than [`EVENTS_KEPT_SECS`].
    pub fn prune_events(&self) -> Result<usize> {
        let cutoff = crate::ids::now_secs().saturating_sub(EVENTS_KEPT_SECS);
        self.with(|c| Ok(c.execute("DELETE FROM events WHERE at < ?1", [cutoff])?))
    }

    /// Inserts or replaces a response.
    pub fn put_response(&self, r: &Response) -> Result<()> {
        let body = serde_json::to_string(r)?;
        self.with(|c| {
            c.execute(
                "INSERT INTO responses (id, session_id, created_at, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(id) DO UPDATE SET body = excluded.body",
                params![r.id, r.session_id, r.created_at, body],
            )?;
            Ok(())
        })
    }

    /// Marks a response that never finished as cancelled (the client went away).
    pub fn cancel_response(&self, id: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE responses SET body = json_set(body, '$.status', 'cancelled', '$.completed_at', unixepoch())
                 WHERE id = ?1 AND json_extract(body, '$.status') = 'in_progress'",
                [id],
            )?;
            Ok(())
        })
    }

    /// Ends the turns a previous run of the agent left `in_progress` (it stopped or
    /// crashed under them) as `failed` with code `agent_restarted`; answers how many.
    pub fn fail_unfinished(&self) -> Result<usize> {
        self.with(|c| {
            Ok(c.execute(
                "UPDATE responses SET body = json_set(body, '$.status', 'failed', '$.completed_at', unixepoch(), '$.error', json_object(
                    'code', 'agent_restarted',
                    'message', 'The agent restarted while this turn ran; what it produced before is kept. Send the turn again.'))
                 WHERE json_extract(body, '$.status') = 'in_progress'",
                [],
            )?)
        })
    }

    /// A stored response.
    pub fn response(&self, id: &str) -> Result<Option<Response>> {
        let body: Option<String> = self
            .with(|c| Ok(c.query_row("SELECT body FROM responses WHERE id = ?1", [id], |r| r.get(0)).optional()?))?;
        Ok(body.map(|b| serde_json::from_str(&b)).transpose()?)
    }

    /// The id of a session's newest response.
    pub fn newest_response_id(&self, session_id: &str) -> Result<Option<String>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id FROM responses WHERE session_id = ?1 ORDER BY created_at DESC, rowid DESC LIMIT 1",
            )?;
            Ok(stmt.query_row([session_id], |r| r.get(0)).optional()?)
        })
    }

    /// Ids of a session's responses, oldest first.
    pub fn response_ids(&self, session_id: &str) -> Result<Vec<String>> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id FROM responses WHERE session_id = ?1 ORDER BY created_at, rowid")?;
            let ids = stmt.query_map([session_id], |r| r.get(0))?;
            Ok(ids.collect::<rusqlite::Result<_>>()?)
        })
    }
}

/// A session's newest compaction item and the seq it keeps from (1: none yet).
fn newest_compaction(c: &Connection, session_id: &str) -> Result<(Option<Item>, i64)> {
    let row = c
        .query_row(
            "SELECT body, kept_from FROM items WHERE session_id = ?1 AND kept_from IS NOT NULL
             ORDER BY seq DESC LIMIT 1",
            [session_id],
            |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
        )
        .optional()?;
    Ok(match row {
        Some((body, from)) => (Some(serde_json::from_str(&body)?), from),
        None => (None, 1),
    })
}

const SUMMARY_SQL_BY_ID: &str = "SELECT s.id, s.created_at, s.updated_at, s.title,
        (SELECT COUNT(*) FROM items i WHERE i.session_id = s.id)
     FROM sessions s WHERE s.id = ?1";

/// Newest first, after the cursor session `?1` when given.
const SUMMARY_SQL_PAGE: &str = "SELECT s.id, s.created_at, s.updated_at, s.title,
        (SELECT COUNT(*) FROM items i WHERE i.session_id = s.id)
     FROM sessions s
     WHERE ?1 IS NULL OR s.seq < (SELECT seq FROM sessions WHERE id = ?1)
     ORDER BY s.seq DESC LIMIT ?2";

fn summary(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionSummary> {
    Ok(SessionSummary {
        id: r.get(0)?,
        object: "session".into(),
        created_at: r.get(1)?,
        updated_at: r.get(2)?,
        title: r.get(3)?,
        item_count: r.get(4)?,
    })
}
