//! `/v1/billing` (the wallet, month-to-date usage, the ledger), wallet top-ups by an
//! admin, and instances' managed-usage top-ups.

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, ApiQuery};
use crate::instances::{ops, present};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use berth_api_types::{Billing, BudgetTopup, ErrorBody, Instance, LedgerEntry, List, UsageDay, WalletTopup};
use berth_core::time::format_rfc3339_millis;
use berth_core::WorkspaceId;
use berth_store::LedgerRecord;
use serde::Deserialize;
use utoipa::IntoParams;

/// Routes of money.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/billing", get(billing))
        .route("/v1/billing/ledger", get(ledger))
        .route("/v1/workspaces/{id}/topup", post(wallet_topup))
        .route("/v1/instances/{id}/budget/topup", post(budget_topup))
}

/// Largest single top-up: a billion dollars.
pub const MAX_TOPUP: i64 = 1_000_000_000 * 1_000_000;

fn entry(r: &LedgerRecord) -> LedgerEntry {
    LedgerEntry {
        id: r.id.clone(),
        object: "ledger_entry".into(),
        kind: r.entry.kind.clone(),
        amount_micros: r.entry.amount_micros,
        balance_micros: r.balance_micros,
        instance: r.entry.instance_id.as_ref().map(|i| i.to_string()),
        description: r.entry.description.clone(),
        model: r.entry.model.clone(),
        input_tokens: r.entry.input_tokens,
        output_tokens: r.entry.output_tokens,
        created_at: r.created_at,
    }
}

/// The workspace's wallet balance and this month's usage, per instance and day.
#[utoipa::path(get, path = "/v1/billing", tag = "billing",
    responses((status = 200, body = Billing), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub async fn billing(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Billing>> {
    let ws = &auth.workspace_id;
    let balance = state.store.balance(ws).await?.unwrap_or(0);
    let (start, _) = crate::compute::month_bounds(state.compute.now());
    let days = state.store.daily_usage(ws, start).await?;
    let sum = |kinds: &[&str]| days.iter().filter(|d| kinds.contains(&d.kind.as_str())).map(|d| d.micros).sum();
    Ok(Json(Billing {
        object: "billing".into(),
        workspace_id: ws.to_string(),
        balance_micros: balance,
        enforced: state.compute.enforce,
        low_balance_threshold_micros: state.webhooks.low_balance_micros,
        low_balance: balance < state.webhooks.low_balance_micros,
        period_start: start,
        managed_usage_micros: sum(&["managed_usage", "tool_usage"]),
        compute_micros: sum(&["compute"]),
        usage: days
            .iter()
            .map(|d| UsageDay {
                date: format_rfc3339_millis(d.day * 1000)[..10].to_string(),
                instance: d.instance_id.as_ref().map(|i| i.to_string()),
                kind: d.kind.clone(),
                micros: d.micros,
                input_tokens: d.input_tokens,
                output_tokens: d.output_tokens,
                calls: d.calls,
            })
            .collect(),
    }))
}

/// Query of the ledger.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// Page size, 1–100 (default 50).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The workspace's ledger, newest first: every top-up and charge with the balance after it.
#[utoipa::path(get, path = "/v1/billing/ledger", tag = "billing", params(LedgerQuery),
    responses((status = 200, body = List<LedgerEntry>), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn ledger(
    State(state): State<AppState>,
    auth: Auth,
    ApiQuery(q): ApiQuery<LedgerQuery>,
) -> ApiResult<Json<List<LedgerEntry>>> {
    let page = super::page::Page::new(q.limit, q.cursor.as_deref(), "led_cur_")?;
    let mut rows = state.store.ledger(&auth.workspace_id, page.before, page.fetch()).await?;
    let next = page.cut(&mut rows, |r| r.seq);
    Ok(Json(List::new(rows.iter().map(entry).collect(), next)))
}

fn positive(field: &str, v: Option<i64>) -> ApiResult<i64> {
    match v {
        Some(n) if n > 0 && n <= MAX_TOPUP => Ok(n),
        Some(_) => Err(ApiError::invalid(field, format!("`{field}` must be an integer between 1 and {MAX_TOPUP}"))),
        None => Err(ApiError::invalid(field, format!("`{field}` is required (micro-dollars, an integer)"))),
    }
}

/// Add money to a workspace's wallet (admin keys only).
#[utoipa::path(post, path = "/v1/workspaces/{id}/topup", tag = "billing", params(("id" = String, Path)),
    request_body = WalletTopup,
    responses((status = 200, body = LedgerEntry), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn wallet_topup(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<WalletTopup>,
) -> ApiResult<Json<LedgerEntry>> {
    auth.require_admin()?;
    let micros = positive("micros", body.micros)?;
    let description = body.description.unwrap_or_else(|| "top-up".into());
    if description.chars().count() > 200 || description.chars().any(char::is_control) {
        return Err(ApiError::invalid("description", "`description` must be at most 200 printable characters"));
    }
    let not_found = || ApiError::NotFound { code: "workspace_not_found", message: format!("no workspace `{id}`") };
    let ws = WorkspaceId::parse(&id).ok_or_else(not_found)?;
    if state.store.workspace(&ws).await?.is_none() {
        return Err(not_found());
    }
    let rec = state
        .store
        .post_ledger(&berth_store::LedgerEntry::plain(
            ws,
            None,
            "topup",
            micros,
            format!("{description} (key {})", auth.key_id),
        ))
        .await?;
    Ok(Json(entry(&rec)))
}

/// Add one-time headroom above an instance's managed-usage cap.
#[utoipa::path(post, path = "/v1/instances/{id}/budget/topup", tag = "billing", params(("id" = String, Path)),
    request_body = BudgetTopup,
    responses((status = 200, body = Instance), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn budget_topup(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<BudgetTopup>,
) -> ApiResult<Json<Instance>> {
    let micros = positive("topup_micros", body.topup_micros)?;
    let rec = ops::get(&state, &auth, &id).await?;
    let rec = {
        let _guard = state.locks.lock(&rec.id).await;
        let mut rec = ops::get(&state, &auth, &id).await?;
        rec.topup_micros = rec.topup_micros.saturating_add(micros);
        state.store.update_instance(&rec).await?;
        rec
    };
    Ok(Json(present::instance(&state.settings, &rec)))
}
