//! Notifications to the operator's `--webhook-url`: a workspace's wallet falling below
//! `--low-balance-micros` (`balance.low`).
//!
//! The body is JSON; `X-Berth-Signature: t=<unix>,v1=<hex>` carries HMAC-SHA-256 of
//! `"<t>.<body>"` under the webhook secret (`--webhook-secret`, else one derived from the
//! server's secret key and written to `<data>/webhook.secret`), so the receiver can check
//! the sender and reject replays. A delivery that does not get a 2xx is retried with
//! backoff (1, 2, 4, 8, 16 s), then given up with a log line.

use berth_store::LedgerRecord;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::time::Duration;

/// Where and how notifications go.
#[derive(Clone)]
pub struct Webhooks {
    url: Option<String>,
    secret: String,
    /// A wallet falling below this (micro-dollars) is notified once per fall.
    pub low_balance_micros: i64,
    http: reqwest::Client,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Waits between delivery attempts.
const BACKOFF: [u64; 5] = [1, 2, 4, 8, 16];

impl Webhooks {
    /// Notifications to `url` (none when `None`), signed with `secret`.
    pub fn new(url: Option<String>, secret: String, low_balance_micros: i64) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build()?;
        Ok(Webhooks { url, secret, low_balance_micros, http })
    }

    /// `X-Berth-Signature` of `body` sent at `t`.
    pub fn signature(secret: &str, t: i64, body: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(format!("{t}.{body}").as_bytes());
        format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Looks at a ledger entry just written: a charge that took the wallet below the
    /// threshold is logged and, with a URL, sent.
    pub fn after_entry(&self, r: &LedgerRecord) {
        let before = r.balance_micros - r.entry.amount_micros;
        if !(before >= self.low_balance_micros && r.balance_micros < self.low_balance_micros) {
            return;
        }
        tracing::warn!(
            workspace = %r.entry.workspace_id,
            balance_micros = r.balance_micros,
            threshold_micros = self.low_balance_micros,
            "a workspace's wallet is low"
        );
        let Some(url) = self.url.clone() else { return };
        let body = json!({
            "type": "balance.low",
            "workspace_id": r.entry.workspace_id.to_string(),
            "balance_micros": r.balance_micros,
            "threshold_micros": self.low_balance_micros,
            "ledger_entry": r.id,
            "created_at": r.created_at,
        })
        .to_string();
        let hooks = self.clone();
        tokio::spawn(async move { hooks.deliver(&url, body).await });
    }

    async fn deliver(&self, url: &str, body: String) {
        for (attempt, wait) in std::iter::once(0).chain(BACKOFF).enumerate() {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            let sig = Self::signature(&self.secret, berth_core::now_secs(), &body);
            let sent = self
                .http
                .post(url)
                .header("content-type", "application/json")
                .header("x-berth-signature", sig)
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => tracing::info!(attempt, status = %r.status(), "webhook not accepted; retrying"),
                Err(e) => tracing::info!(attempt, error = %e, "webhook not delivered; retrying"),
            }
        }
        tracing::warn!(url, "webhook given up after {} attempts", BACKOFF.len() + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_time_and_body() {
        let a = Webhooks::signature("s", 1, "{}");
        assert!(a.starts_with("t=1,v1=") && a.len() == "t=1,v1=".len() + 64);
        assert_ne!(a, Webhooks::signature("s", 2, "{}"));
        assert_ne!(a, Webhooks::signature("s", 1, "{ }"));
        assert_ne!(a, Webhooks::signature("t", 1, "{}"));
    }
}
