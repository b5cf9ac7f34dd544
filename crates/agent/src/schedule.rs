//! Scheduled work: turns the agent runs on time (`POST /v1/schedules`), on a cron
//! expression (UTC; five fields, or six with seconds first) or every N seconds. A run
//! is a background turn like any other (followed, fetched or cancelled by its response
//! id); its response is kept and listed in the schedule's runs. Runs continue the
//! schedule's session: the one it names, or the one its first run starts. A run due
//! while its session answers something else waits for it; runs missed while the agent
//! was stopped are made up once, when it starts again. `/health` reports the next due
//! time, so the control plane can wake a stopped instance before it.

use crate::api::CreateResponse;
use crate::error::ApiError;
use crate::ids::{new_id, now_secs};
use crate::state::AppState;
use crate::store::ScheduleRow;
use crate::turn::{prepare, Emitter};
use serde_json::{json, Map, Value};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

/// The most schedules one agent keeps.
pub const MAX_SCHEDULES: usize = 100;

/// How long a run waits before trying again while its session is busy.
const BUSY_RETRY_SECS: u64 = 2;

/// Wakes the scheduler when schedules change.
#[derive(Default)]
pub struct Scheduler {
    wake: tokio::sync::Notify,
}

impl Scheduler {
    /// The schedules changed: look again at what is due next.
    pub fn changed(&self) {
        self.wake.notify_one();
    }
}

/// When a schedule runs.
enum When {
    Cron(Box<croner::Cron>),
    Every(u64),
}

impl When {
    /// From a schedule's body; the error names the field.
    fn of(body: &Value) -> Result<When, ApiError> {
        match (body.get("cron").filter(|v| !v.is_null()), body.get("every_secs").filter(|v| !v.is_null())) {
            (Some(_), Some(_)) => Err(ApiError::invalid_param("every_secs", "Give 'cron' or 'every_secs', not both.")),
            (None, None) => Err(ApiError::missing_param("cron")),
            (Some(cron), None) => {
                let expr = cron
                    .as_str()
                    .ok_or_else(|| ApiError::invalid_param("cron", "'cron' must be a string like \"0 9 * * *\"."))?;
                let fields = expr.split_whitespace().count();
                if !(5..=6).contains(&fields) {
                    return Err(ApiError::invalid_param(
                        "cron",
                        format!("'{expr}' has {fields} fields: a cron expression has five (minute hour day month weekday), or six with seconds first."),
                    ));
                }
                let parsed = croner::Cron::from_str(expr)
                    .map_err(|e| ApiError::invalid_param("cron", format!("'{expr}' is not a cron expression: {e}.")))?;
                Ok(When::Cron(Box::new(parsed)))
            }
            (None, Some(every)) => match every.as_u64() {
                Some(n) if (1..=366 * 24 * 3600).contains(&n) => Ok(When::Every(n)),
                _ => Err(ApiError::invalid_param(
                    "every_secs",
                    "'every_secs' is a whole number of seconds, from 1 to a year.",
                )),
            },
        }
    }

    /// The first time after `now`, keeping an interval's cadence from `due` (the time
    /// that just came) when it can.
    fn next(&self, due: Option<u64>, now: u64) -> Option<u64> {
        match self {
            When::Every(n) => Some(match due.map(|d| d + n) {
                Some(next) if next > now => next,
                _ => now + n,
            }),
            When::Cron(cron) => {
                let start = chrono::DateTime::from_timestamp(now as i64, 0)?;
                cron.find_next_occurrence(&start, false).ok().map(|t| t.timestamp().max(0) as u64)
            }
        }
    }
}

/// `POST /v1/schedules`: checks the body and stores the schedule.
pub fn create(state: &AppState, body: Value) -> Result<Value, ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::bad_request("invalid_type", "The body must be a JSON object.".into()));
    };
    let known = ["cron", "every_secs", "input", "session_id", "model", "instructions", "metadata", "name"];
    if let Some(key) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::invalid_param(
            key,
            format!("Unknown field '{key}': a schedule takes {}.", known.join(", ")),
        ));
    }
    let body = Value::Object(obj.clone());
    let when = When::of(&body)?;
    crate::api::parse_input(obj.get("input").cloned())?;
    for key in ["session_id", "model", "instructions", "name"] {
        if obj.get(key).is_some_and(|v| !v.is_null() && !v.is_string()) {
            return Err(ApiError::invalid_param(key, format!("'{key}' must be a string.")));
        }
    }
    match obj.get("metadata") {
        None | Some(Value::Null) => {
            obj.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => return Err(ApiError::invalid_param("metadata", "'metadata' must be an object.")),
    }
    let session_id = obj.get("session_id").and_then(Value::as_str).map(str::to_string);
    if let Some(id) = &session_id {
        if state.store.session(id)?.is_none() {
            return Err(ApiError::not_found("session_not_found", format!("No session with id '{id}'.")));
        }
    }
    if obj.get("model").and_then(Value::as_str).is_none() && state.config.llm.default_model.is_none() {
        return Err(ApiError::invalid_param(
            "model",
            "No 'model' given and the agent has no default (set BERTH_MODEL).",
        ));
    }
    if state.store.schedules()?.len() >= MAX_SCHEDULES {
        return Err(ApiError::bad_request(
            "too_many_schedules",
            format!("This agent keeps at most {MAX_SCHEDULES} schedules; delete one first."),
        ));
    }
    let now = now_secs();
    let next_run_at = when
        .next(None, now)
        .ok_or_else(|| ApiError::invalid_param("cron", "This cron expression never comes round again.".to_string()))?;
    let row = ScheduleRow {
        id: new_id("sched"),
        body: Value::Object(obj),
        session_id,
        created_at: now,
        next_run_at,
        last_run_at: None,
        run_count: 0,
    };
    state.store.create_schedule(&row)?;
    state.scheduler.changed();
    tracing::info!(schedule = %row.id, next_run_at, "schedule created");
    describe(state, &row, false)
}

/// A schedule as the API shows it; with `runs`, its newest runs too.
pub fn describe(state: &AppState, row: &ScheduleRow, runs: bool) -> Result<Value, ApiError> {
    let b = &row.body;
    let recent = state.store.schedule_runs(&row.id, if runs { 20 } else { 1 })?;
    let last = recent.first();
    let last_status = match last {
        Some(run) => match &run.response_id {
            Some(id) => state.store.response(id)?.map(|r| json!(r.status)),
            None => Some(json!("not_started")),
        },
        None => None,
    };
    let mut v = json!({
        "id": row.id,
        "object": "schedule",
        "name": b.get("name").cloned().unwrap_or(Value::Null),
        "cron": b.get("cron").cloned().unwrap_or(Value::Null),
        "every_secs": b.get("every_secs").cloned().unwrap_or(Value::Null),
        "input": b["input"],
        "session_id": row.session_id,
        "model": b.get("model").cloned().unwrap_or(Value::Null),
        "instructions": b.get("instructions").cloned().unwrap_or(Value::Null),
        "metadata": b.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "created_at": row.created_at,
        "next_run_at": row.next_run_at,
        "last_run_at": row.last_run_at,
        "run_count": row.run_count,
        "last_response_id": last.and_then(|r| r.response_id.clone()),
        "last_status": last_status,
        "last_error": last.and_then(|r| r.error.clone()),
    });
    if runs {
        v["runs"] = serde_json::to_value(&recent).unwrap_or_default();
    }
    Ok(v)
}

fn now_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// Runs schedules when they come due, for as long as the agent runs.
pub async fn run(state: Arc<AppState>) {
    let mut pruned = std::time::Instant::now();
    loop {
        // Stream events are kept a day: forget older ones hourly, not only at start.
        if pruned.elapsed() >= Duration::from_secs(3600) {
            pruned = std::time::Instant::now();
            if let Err(e) = state.store.prune_events() {
                tracing::warn!("cannot prune old stream events: {e}");
            }
        }
        let now = now_secs();
        match state.store.due_schedules(now) {
            Ok(due) => {
                for row in due {
                    fire(&state, row, now);
                }
            }
            Err(e) => tracing::error!("cannot read the schedules: {e}"),
        }
        let wait = match state.store.next_due() {
            Ok(Some(t)) => {
                Duration::from_millis((u128::from(t) * 1000).saturating_sub(now_millis()).min(3_600_000) as u64)
            }
            Ok(None) => Duration::from_secs(600),
            Err(_) => Duration::from_secs(5),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
            _ = state.scheduler.wake.notified() => {}
        }
    }
}

/// Starts one due run as a background turn and records it.
fn fire(state: &Arc<AppState>, row: ScheduleRow, now: u64) {
    let store = &state.store;
    let when = match When::of(&row.body) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(schedule = %row.id, "a stored schedule is unreadable ({}); deleting it", e.message);
            let _ = store.delete_schedule(&row.id);
            return;
        }
    };
    // A year ahead when a cron expression has no next time: it will not run again.
    let next = when.next(Some(row.next_run_at), now).unwrap_or(now + 366 * 24 * 3600);
    let mut metadata: Map<String, Value> = row.body["metadata"].as_object().cloned().unwrap_or_default();
    metadata.insert("schedule_id".into(), row.id.clone().into());
    let text = |key: &str| row.body.get(key).and_then(Value::as_str).map(str::to_string);
    let request = |session_id: Option<String>| CreateResponse {
        input: Some(row.body["input"].clone()),
        session_id,
        model: text("model"),
        instructions: text("instructions"),
        metadata: Some(metadata.clone()),
        background: Some(true),
        ..Default::default()
    };
    let mut prepared = prepare(state, request(row.session_id.clone()));
    // The session its first run started is gone: start another (one the schedule
    // was given is an error to report).
    if let Err(e) = &prepared {
        if e.code == Some("session_not_found") && row.body.get("session_id").is_none_or(Value::is_null) {
            prepared = prepare(state, request(None));
        }
    }
    let result = match prepared {
        Err(e) if e.code == Some("session_busy") => {
            tracing::debug!(schedule = %row.id, "session busy; the run waits");
            if let Err(e) = store.postpone_schedule(&row.id, now + BUSY_RETRY_SECS) {
                tracing::error!("cannot postpone a schedule: {e}");
            }
            return;
        }
        Err(e) => {
            tracing::warn!(schedule = %row.id, code = ?e.code, "a scheduled run could not start: {}", e.message);
            store.record_run(&row.id, now, Err(&e.message), next, None)
        }
        Ok(mut turn) => {
            let id = turn.response().id.clone();
            let session = turn.response().session_id.clone();
            tracing::info!(schedule = %row.id, response = %id, "scheduled run starts");
            let live = state.live.start(&id);
            turn.attach(live.clone());
            let span = turn.span();
            let task = tokio::spawn(turn.run(Emitter::live(live.clone())).instrument(span));
            live.set_task(task.abort_handle());
            store.record_run(&row.id, now, Ok(&id), next, Some(&session))
        }
    };
    if let Err(e) = result {
        tracing::error!(schedule = %row.id, "cannot record a scheduled run: {e}");
        // Move on anyway, so a broken store does not make the run start again and again.
        let _ = store.postpone_schedule(&row.id, next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_keep_their_cadence_and_cron_finds_the_next_minute() {
        let every = When::of(&json!({"every_secs": 60})).unwrap();
        assert_eq!(every.next(None, 1000), Some(1060));
        assert_eq!(every.next(Some(1060), 1061), Some(1120), "the cadence, not the late start");
        assert_eq!(every.next(Some(1060), 5000), Some(5060), "missed runs are not all made up");
        let cron = When::of(&json!({"cron": "30 9 * * *"})).unwrap();
        // 2026-12-06 09:00:00 UTC → 09:30 the same day.
        assert_eq!(cron.next(None, 1796547600), Some(1796547600 + 1800));
        let secs = When::of(&json!({"cron": "*/10 * * * * *"})).unwrap();
        assert_eq!(secs.next(None, 1796547600), Some(1796547610));
    }

    #[test]
    fn bad_schedules_name_the_field() {
        let param = |v: Value| When::of(&v).err().and_then(|e| e.param);
        assert_eq!(param(json!({})).as_deref(), Some("cron"));
        assert_eq!(param(json!({"cron": "* * *"})).as_deref(), Some("cron"));
        assert_eq!(param(json!({"cron": "61 * * * *"})).as_deref(), Some("cron"));
        assert_eq!(param(json!({"every_secs": 0})).as_deref(), Some("every_secs"));
        assert_eq!(param(json!({"every_secs": "5"})).as_deref(), Some("every_secs"));
        assert_eq!(param(json!({"cron": "* * * * *", "every_secs": 5})).as_deref(), Some("every_secs"));
    }
}
