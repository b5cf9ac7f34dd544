//! The workspace's wallet, its ledger and managed-usage top-ups (all money in integer
//! micro-dollars; `*_usd` fields are the same amounts for display).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/billing`: the wallet and this month's usage.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Billing {
    /// Always `billing`.
    pub object: String,
    pub workspace_id: String,
    /// The wallet's balance (may be negative when `--billing` is off: usage is metered, not refused).
    pub balance_micros: i64,
    /// Whether the server enforces the wallet (`--billing`).
    pub enforced: bool,
    /// The balance below which the operator is notified (`--low-balance-micros`).
    pub low_balance_threshold_micros: i64,
    /// Whether the balance is below that threshold.
    pub low_balance: bool,
    /// Start of the current month (UTC, unix seconds): what month-to-date counts from.
    pub period_start: i64,
    /// Managed LLM usage charged this month.
    pub managed_usage_micros: i64,
    /// Compute charged this month.
    pub compute_micros: i64,
    /// This month's charges per instance, UTC day and kind, oldest day first.
    pub usage: Vec<UsageDay>,
}

/// Charges of one kind to one instance on one UTC day.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD` (UTC).
    pub date: String,
    pub instance: Option<String>,
    /// `managed_usage`, `tool_usage` or `compute`.
    pub kind: String,
    pub micros: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub calls: i64,
}

/// An entry of the append-only ledger.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LedgerEntry {
    pub id: String,
    /// Always `ledger_entry`.
    pub object: String,
    /// `topup`, `managed_usage`, `tool_usage`, `compute` or `refund`.
    pub kind: String,
    /// Signed: credits positive, charges negative.
    pub amount_micros: i64,
    /// The wallet's balance right after this entry.
    pub balance_micros: i64,
    pub instance: Option<String>,
    pub description: String,
    pub model: Option<String>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub created_at: i64,
}

/// `POST /v1/workspaces/{id}/topup` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WalletTopup {
    /// Micro-dollars to add (> 0).
    pub micros: Option<i64>,
    /// Shown on the ledger entry (default: "top-up").
    #[serde(default)]
    pub description: Option<String>,
}

/// `POST /v1/instances/{id}/budget/topup` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BudgetTopup {
    /// Micro-dollars of one-time headroom to add above the cap (> 0).
    pub topup_micros: Option<i64>,
}
