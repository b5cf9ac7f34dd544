//! Pages of newest-first lists keyed by a sequence number (instances, the ledger):
//! `limit` 1–100 (default 50) and an opaque `cursor` naming where the last page ended.

use crate::error::{ApiError, ApiResult};

/// A checked page request.
pub(crate) struct Page {
    /// Items on the page.
    pub limit: u32,
    /// Items older than this sequence number (`None`: from the newest).
    pub before: Option<i64>,
    /// What this list's cursors start with.
    prefix: &'static str,
}

impl Page {
    /// Checks `limit` and `cursor` (a cursor is `prefix` and a sequence number).
    pub fn new(limit: Option<u32>, cursor: Option<&str>, prefix: &'static str) -> ApiResult<Self> {
        let limit = limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::invalid("limit", "`limit` must be between 1 and 100"));
        }
        let before = cursor
            .map(|c| {
                c.strip_prefix(prefix)
                    .and_then(|n| n.parse::<i64>().ok())
                    .ok_or_else(|| ApiError::invalid("cursor", "`cursor` is not a cursor this API returned"))
            })
            .transpose()?;
        Ok(Page { limit, before, prefix })
    }

    /// How many items to fetch: one more than the page, to know whether another follows.
    pub fn fetch(&self) -> u32 {
        self.limit + 1
    }

    /// Cuts what [`Page::fetch`] fetched to the page; answers the next page's cursor.
    pub fn cut<T>(&self, rows: &mut Vec<T>, seq: impl Fn(&T) -> i64) -> Option<String> {
        if rows.len() <= self.limit as usize {
            return None;
        }
        rows.truncate(self.limit as usize);
        rows.last().map(|r| format!("{}{}", self.prefix, seq(r)))
    }
}
