//! Compute charges (`--billing` with `--size-price SIZE=USD_PER_MONTH`): an instance's
//! compute is paid per calendar month (UTC), in advance, from its workspace's wallet.
//!
//! * Create pays the rest of the current month, prorated to the second (rounded up to
//!   the micro-dollar); a wallet that cannot cover it answers `402 insufficient_funds`
//!   and nothing is created. A create that fails afterwards is refunded.
//! * At the start of each month every instance that is not stopped by choice (running,
//!   paused, asleep after idling, in error) is renewed for the month; one whose renewal
//!   cannot be paid is stopped, with an event saying why.
//! * Starting or restoring an instance whose paid period is over pays the rest of the
//!   month first (402 when the wallet is short: it stays stopped).
//! * Resizing pays (or is credited) the price difference for the rest of the paid period.
//! * Deleting stops future charges (what was paid is not refunded; a restore within the
//!   paid period costs nothing).

use crate::config::ServerArgs;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use anyhow::Context;
use berth_core::Status;
use berth_store::{InstanceRecord, LedgerEntry};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Compute prices and the clock they are charged by.
#[derive(Debug, Clone, Default)]
pub struct Compute {
    /// Micro-dollars per month, by size.
    prices: BTreeMap<u32, i64>,
    /// `--billing`: compute is charged (without it, never).
    pub enforce: bool,
    /// Test clock: a file holding the unix time billing runs at (never set in production).
    clock_file: Option<PathBuf>,
}

impl Compute {
    /// From `--size-price`, `--billing` and the hidden `--test-clock-file`.
    pub fn from_args(args: &ServerArgs) -> anyhow::Result<Self> {
        let mut prices = BTreeMap::new();
        for spec in &args.size_price {
            let (size, usd) =
                spec.split_once('=').with_context(|| format!("--size-price `{spec}`: expected SIZE=USD_PER_MONTH"))?;
            let size: u32 = size
                .trim()
                .parse()
                .ok()
                .filter(|s| berth_core::size::lookup(*s).is_some())
                .with_context(|| format!("--size-price `{spec}`: the size must be one of 1, 2, 4, 8"))?;
            let micros =
                berth_core::money::parse_micros(usd).with_context(|| format!("--size-price `{spec}`: the price"))?;
            prices.insert(size, micros);
        }
        if !args.billing && !prices.is_empty() {
            tracing::warn!("--size-price without --billing: compute is not charged");
        }
        Ok(Compute { prices, enforce: args.billing, clock_file: args.test_clock_file.clone() })
    }

    /// Now, by the clock billing runs on.
    pub fn now(&self) -> i64 {
        self.clock_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(berth_core::now_secs)
    }

    /// The monthly price of a size, when compute is charged.
    pub fn price(&self, size: u32) -> Option<i64> {
        self.enforce.then(|| self.prices.get(&size).copied()).flatten()
    }

    /// Whether any compute is charged at all (`--billing` with a size price).
    pub fn charges(&self) -> bool {
        self.enforce && !self.prices.is_empty()
    }
}

/// Start and end (unix seconds, UTC) of the calendar month holding `t`.
pub fn month_bounds(t: i64) -> (i64, i64) {
    let start = month_start(t);
    (start, month_start(start + 32 * 86_400))
}

fn month_start(t: i64) -> i64 {
    use berth_core::time::{format_rfc3339_millis, parse_rfc3339};
    let text = format_rfc3339_millis(t * 1000);
    parse_rfc3339(&format!("{}-01T00:00:00Z", &text[..7])).unwrap_or(t - t.rem_euclid(86_400))
}

/// What `price` per month costs from `now` to the end of its month, rounded up.
pub fn prorated(price: i64, now: i64) -> i64 {
    let (start, end) = month_bounds(now);
    let total = i128::from(price) * i128::from(end - now);
    let len = i128::from(end - start);
    i64::try_from((total + len - 1) / len).unwrap_or(i64::MAX)
}

fn insufficient(balance: i64, needed: i64, what: &str) -> ApiError {
    ApiError::PaymentRequired {
        code: "insufficient_funds",
        message: format!(
            "the workspace's wallet holds {}, and {what} costs {} of compute for the rest of the month; top the wallet up",
            berth_core::money::format_usd(balance),
            berth_core::money::format_usd(needed)
        ),
        details: json!({"balance_micros": balance, "needed_micros": needed}),
    }
}

/// Charges `micros` for `rec` unless the wallet is short (402, nothing charged); with
/// `paid_until`, the instance's record says so in the same transaction.
async fn charge(
    state: &AppState,
    rec: &InstanceRecord,
    micros: i64,
    description: String,
    paid_until: Option<i64>,
) -> ApiResult<()> {
    let entry = LedgerEntry::plain(rec.workspace_id.clone(), Some(rec.id.clone()), "compute", -micros, &description);
    match state.store.charge_within_balance(&entry, paid_until).await? {
        Some(r) => {
            state.webhooks.after_entry(&r);
            Ok(())
        }
        None => {
            let balance = state.store.balance(&rec.workspace_id).await?.unwrap_or(0);
            Err(insufficient(balance, micros, &description))
        }
    }
}

/// Pays `rec`'s compute for the rest of the month unless it is paid already; sets
/// `paid_until` (the caller writes the record). Answers what was charged.
pub async fn pay_for(state: &AppState, rec: &mut InstanceRecord, what: &str) -> ApiResult<i64> {
    let Some(price) = state.compute.price(rec.size) else { return Ok(0) };
    let now = state.compute.now();
    if rec.paid_until.is_some_and(|p| p > now) {
        return Ok(0);
    }
    let micros = prorated(price, now);
    let (_, end) = month_bounds(now);
    charge(state, rec, micros, format!("{what}: size {} until {}", rec.size, date(end)), Some(end)).await?;
    rec.paid_until = Some(end);
    Ok(micros)
}

/// Gives back `micros` to `rec`'s workspace (a create that failed after paying).
pub async fn refund(state: &AppState, rec: &InstanceRecord, micros: i64, why: &str) {
    if micros <= 0 {
        return;
    }
    let entry = LedgerEntry::plain(rec.workspace_id.clone(), Some(rec.id.clone()), "refund", micros, why);
    if let Err(e) = state.store.post_ledger(&entry).await {
        tracing::error!(instance = %rec.id, micros, error = %e, "could not refund compute");
    }
}

/// Charges (or credits) the difference between two sizes' prices for the rest of the
/// period `rec` has paid for; answers the amount charged (negative: credited).
pub async fn resize(state: &AppState, rec: &InstanceRecord, new_size: u32) -> ApiResult<i64> {
    let now = state.compute.now();
    if !state.compute.enforce || rec.status == Status::Deleted || rec.paid_until.is_none_or(|p| p <= now) {
        return Ok(0);
    }
    let old = state.compute.price(rec.size).map_or(0, |p| prorated(p, now));
    let new = state.compute.price(new_size).map_or(0, |p| prorated(p, now));
    let description = format!("resize {} → {} for the rest of the month", rec.size, new_size);
    let diff = new - old;
    match diff {
        0 => {}
        more if more > 0 => charge(state, rec, more, description, None).await?,
        less => refund(state, rec, -less, &description).await,
    }
    Ok(diff)
}

/// Reverses what [`resize`] charged or credited (the resize itself failed).
pub async fn undo_resize(state: &AppState, rec: &InstanceRecord, diff: i64) {
    if diff == 0 {
        return;
    }
    let kind = if diff > 0 { "refund" } else { "compute" };
    let why = "the resize failed: its price difference reversed";
    let entry = LedgerEntry::plain(rec.workspace_id.clone(), Some(rec.id.clone()), kind, diff, why);
    if let Err(e) = state.store.post_ledger(&entry).await {
        tracing::error!(instance = %rec.id, diff, error = %e, "could not reverse a failed resize's charge");
    }
}

fn date(t: i64) -> String {
    berth_core::time::format_rfc3339_millis(t * 1000)[..10].to_string()
}

/// Renews every instance whose paid period is over and that is not stopped by choice;
/// stops those whose renewal the wallet cannot cover.
pub async fn renew_due(state: &AppState) {
    // Nothing to renew: not even a look at the instances.
    if !state.compute.charges() {
        return;
    }
    let now = state.compute.now();
    let due = |r: &InstanceRecord| {
        let stopped_by_choice = r.status == Status::Stopped && !r.idle_stopped;
        !matches!(r.status, Status::Deleted | Status::Creating)
            && !stopped_by_choice
            && state.compute.price(r.size).is_some()
            && r.paid_until.is_none_or(|p| p <= now)
    };
    let recs = match state.store.all_instances().await {
        Ok(r) => r,
        Err(e) => return tracing::warn!(error = %e, "compute renewal: could not list instances"),
    };
    for rec in recs.into_iter().filter(|r| due(r)) {
        let _guard = state.locks.lock(&rec.id).await;
        let Ok(Some(mut rec)) = state.store.instance(None, &rec.id).await else { continue };
        if !due(&rec) {
            continue;
        }
        match pay_for(state, &mut rec, "renewal").await {
            Ok(_) => {
                if let Err(e) = state.store.update_instance(&rec).await {
                    tracing::error!(instance = %rec.id, error = %e, "compute renewal paid but not recorded");
                }
            }
            Err(ApiError::PaymentRequired { message, .. }) => {
                drop(_guard);
                let note = format!("stopped: the compute renewal could not be paid ({message})");
                tracing::info!(instance = %rec.id, "{note}");
                let id = rec.id.to_string();
                let actor = crate::instances::ops::Actor::Reconciler;
                if let Err(e) =
                    crate::instances::ops::act_noted(state.clone(), actor, id, berth_core::Action::Stop, Some(note))
                        .await
                {
                    tracing::warn!(instance = %rec.id, error = %e, "could not stop an instance whose renewal failed");
                }
            }
            Err(e) => tracing::warn!(instance = %rec.id, error = %e, "compute renewal failed"),
        }
    }
}

/// Runs [`renew_due`] every few seconds.
pub async fn renew_loop(state: AppState, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    let mut leader = state.leader.clone();
    loop {
        tick.tick().await;
        // One replica renews (the one that reconciles); a renewal is also guarded by
        // the instance's lock and its paid-until date, so none is charged twice.
        leader.wait().await;
        renew_due(&state).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_31: i64 = 1_801_353_600; // 2027-01-31T00:00:00Z

    #[test]
    fn months_are_calendar_months() {
        assert_eq!(berth_core::time::format_rfc3339_millis(JAN_31 * 1000), "2027-01-31T00:00:00.000Z");
        let (start, end) = month_bounds(JAN_31);
        assert_eq!(end - start, 31 * 86_400);
        assert_eq!(end - JAN_31, 86_400);
        let (s2, e2) = month_bounds(end);
        assert_eq!((s2, e2 - s2), (end, 28 * 86_400));
        assert_eq!(month_bounds(end - 1), (start, end));
    }

    #[test]
    fn the_rest_of_a_month_is_prorated_up_to_the_micro() {
        // $31 a month, one day of January left: $1.
        assert_eq!(prorated(31_000_000, JAN_31), 1_000_000);
        let (start, end) = month_bounds(JAN_31);
        assert_eq!(prorated(31_000_000, start), 31_000_000);
        assert_eq!(prorated(31_000_000, end - 1), 12); // 31e6 / 2,678,400 s = 11.57 → 12
    }
}
