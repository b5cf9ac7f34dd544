//! Share links: a signed, expiring token that lets a browser reach one port of
//! one instance. The link carries it as `?berth_share=TOKEN`; the first visit
//! trades it for a host-only, HttpOnly, SameSite=Lax cookie and a redirect to the
//! clean URL, so the page's own requests and WebSockets carry it from then on.
//!
//! A token is `{share_id}.{expires_at}.{mac}`, the MAC (HMAC-SHA-256, 128 bits)
//! binding the id, instance, port and expiry to the installation's secret. Only
//! shares in the live set pass, so revocation takes effect at once and closes the
//! streams opened with the share.

use berth_core::{now_secs, InstanceId, ShareId};
use berth_store::ShareRecord;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Query parameter of a share link, and the name of its cookie.
pub const SHARE_PARAM: &str = "berth_share";
/// Bytes of MAC kept in a token.
const MAC_LEN: usize = 16;

/// A share that is neither revoked nor expired.
#[derive(Debug)]
pub struct LiveShare {
    pub id: ShareId,
    pub instance: InstanceId,
    pub port: u16,
    pub expires_at: i64,
    /// Cancelled on revocation or expiry.
    pub revoked: CancellationToken,
}

/// Signs and checks share tokens; holds the live shares.
pub struct Shares {
    secret: Vec<u8>,
    live: RwLock<HashMap<ShareId, Arc<LiveShare>>>,
}

impl Shares {
    /// Shares signed with `secret` (the installation's, kept in the database).
    pub fn new(secret: Vec<u8>) -> Self {
        Self { secret, live: RwLock::default() }
    }

    fn mac(&self, id: &str, instance: &str, port: u16, expires_at: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(format!("berth-share\n{id}\n{instance}\n{port}\n{expires_at}").as_bytes());
        mac
    }

    /// The token of a share.
    pub fn token(&self, s: &ShareRecord) -> String {
        let tag = self.mac(s.id.as_str(), s.instance_id.as_str(), s.port, s.expires_at).finalize().into_bytes();
        format!("{}.{}.{}", s.id, s.expires_at, hex::encode(&tag[..MAC_LEN]))
    }

    /// Adds a share to the live set; it leaves (and its token is cancelled) when it expires.
    pub fn add(self: &Arc<Self>, s: &ShareRecord) {
        let live = Arc::new(LiveShare {
            id: s.id.clone(),
            instance: s.instance_id.clone(),
            port: s.port,
            expires_at: s.expires_at,
            revoked: CancellationToken::new(),
        });
        let token = live.revoked.clone();
        let ttl = Duration::from_secs((s.expires_at - now_secs()).max(0) as u64);
        self.live.write().unwrap_or_else(|e| e.into_inner()).insert(s.id.clone(), live);
        let (me, id) = (Arc::downgrade(self), s.id.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(ttl) => {
                    if let Some(me) = me.upgrade() {
                        me.revoke(&id);
                    }
                }
                _ = token.cancelled() => {}
            }
        });
    }

    /// Revokes a share: new requests with it get 401, open streams close.
    pub fn revoke(&self, id: &ShareId) {
        if let Some(s) = self.live.write().unwrap_or_else(|e| e.into_inner()).remove(id) {
            s.revoked.cancel();
        }
    }

    /// Revokes every share of an instance (it was deleted).
    pub fn revoke_instance(&self, instance: &InstanceId) {
        self.live.write().unwrap_or_else(|e| e.into_inner()).retain(|_, s| {
            let keep = &s.instance != instance;
            if !keep {
                s.revoked.cancel();
            }
            keep
        });
    }

    /// Makes the live shares of `instance` (of every instance: `None`) those of
    /// `active`, as read from the database after another replica made or revoked one:
    /// the others are revoked, new ones added.
    pub fn sync(self: &Arc<Self>, instance: Option<&InstanceId>, active: &[ShareRecord]) {
        let in_scope = |i: &InstanceId| instance.is_none_or(|want| want == i);
        let stale: Vec<ShareId> = {
            let live = self.live.read().unwrap_or_else(|e| e.into_inner());
            live.values()
                .filter(|s| in_scope(&s.instance) && !active.iter().any(|a| a.id == s.id))
                .map(|s| s.id.clone())
                .collect()
        };
        for id in stale {
            self.revoke(&id);
        }
        for s in active.iter().filter(|s| in_scope(&s.instance_id)) {
            if !self.live.read().unwrap_or_else(|e| e.into_inner()).contains_key(&s.id) {
                self.add(s);
            }
        }
    }

    /// The live share a token grants for this instance and port, if any.
    pub fn check(&self, token: &str, instance: &InstanceId, port: u16) -> Option<Arc<LiveShare>> {
        let mut parts = token.splitn(3, '.');
        let (id, expires, tag) = (parts.next()?, parts.next()?, parts.next()?);
        let expires_at: i64 = expires.parse().ok()?;
        let tag = hex::decode(tag).ok().filter(|t| t.len() == MAC_LEN)?;
        self.mac(id, instance.as_str(), port, expires_at).verify_truncated_left(&tag).ok()?;
        let id = ShareId::parse(id)?;
        let live = self.live.read().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()?;
        let ok = live.expires_at == expires_at
            && &live.instance == instance
            && live.port == port
            && live.expires_at > now_secs()
            && !live.revoked.is_cancelled();
        ok.then_some(live)
    }
}

/// The share tokens in a `Cookie` header value.
pub fn cookie_tokens(cookie: &str) -> impl Iterator<Item = &str> {
    cookie.split(';').map(str::trim).filter_map(|pair| pair.strip_prefix(SHARE_PARAM)?.strip_prefix('='))
}

/// A `Cookie` header value without the share cookie (`None` when nothing remains).
pub fn strip_cookie(cookie: &str) -> Option<String> {
    let rest: Vec<&str> = cookie
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(SHARE_PARAM))
        .collect();
    (!rest.is_empty()).then(|| rest.join("; "))
}

/// Splits a share token out of a query string: (token, the query without it).
pub fn take_from_query(query: &str) -> Option<(String, String)> {
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.strip_prefix(SHARE_PARAM).and_then(|v| v.strip_prefix('=')) {
            Some(v) if token.is_none() => token = Some(v.to_string()),
            _ if pair.is_empty() => {}
            _ => rest.push(pair),
        }
    }
    Some((token?, rest.join("&")))
}

/// The `Set-Cookie` value that trades a share link for a cookie on this host.
pub fn set_cookie(token: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SHARE_PARAM}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}", max_age.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(instance: &InstanceId, port: u16, ttl: i64) -> ShareRecord {
        ShareRecord {
            id: ShareId::generate(),
            instance_id: instance.clone(),
            workspace_id: berth_core::WorkspaceId::generate(),
            port,
            created_at: now_secs(),
            expires_at: now_secs() + ttl,
            revoked_at: None,
            created_by: "key:test".into(),
        }
    }

    #[tokio::test]
    async fn a_token_opens_only_its_own_port_until_revoked() {
        let shares = Arc::new(Shares::new(b"secret".to_vec()));
        let inst = InstanceId::generate();
        let s = share(&inst, 8080, 600);
        shares.add(&s);
        let token = shares.token(&s);
        assert!(shares.check(&token, &inst, 8080).is_some());
        assert!(shares.check(&token, &inst, 3737).is_none(), "another port");
        assert!(shares.check(&token, &InstanceId::generate(), 8080).is_none(), "another instance");
        let forged = format!("{}.{}.{}", s.id, s.expires_at + 3600, &token[token.len() - 32..]);
        assert!(shares.check(&forged, &inst, 8080).is_none(), "a longer expiry breaks the MAC");
        assert!(Shares::new(b"other".to_vec()).check(&token, &inst, 8080).is_none());
        let live = shares.check(&token, &inst, 8080).unwrap();
        shares.revoke(&s.id);
        assert!(live.revoked.is_cancelled(), "open streams are told");
        assert!(shares.check(&token, &inst, 8080).is_none());
    }

    #[tokio::test]
    async fn an_expired_share_fails() {
        let shares = Arc::new(Shares::new(b"secret".to_vec()));
        let inst = InstanceId::generate();
        let s = share(&inst, 80, -1);
        shares.add(&s);
        assert!(shares.check(&shares.token(&s), &inst, 80).is_none());
    }

    #[test]
    fn cookies_and_queries() {
        assert_eq!(cookie_tokens("a=1; berth_share=tok; b=2; berth_share=t2").collect::<Vec<_>>(), ["tok", "t2"]);
        assert_eq!(cookie_tokens("a=1").next(), None);
        assert_eq!(strip_cookie("a=1; berth_share=tok; b=2").as_deref(), Some("a=1; b=2"));
        assert_eq!(strip_cookie("berth_share=tok"), None);
        assert_eq!(take_from_query("x=1&berth_share=t&y=2"), Some(("t".into(), "x=1&y=2".into())));
        assert_eq!(take_from_query("x=1"), None);
        assert!(set_cookie("t", 60, true).ends_with("HttpOnly; SameSite=Lax; Secure"));
    }
}
