//! Certificates on demand from an ACME directory (RFC 8555), proved with
//! TLS-ALPN-01 (RFC 8737) on the edge's own TLS listener.
//!
//! The first TLS handshake for an instance host that no certificate covers
//! orders one and waits for it; the ACME server's validation handshake (ALPN
//! `acme-tls/1`) is answered with the challenge certificate; the issued chain and
//! key are kept in `{data}/acme/` and served from then on (and after a restart).
//! Only hosts that route to an instance (`{label}.{domain}` or a port handle) are
//! ever ordered, and a host whose order failed is not retried for a minute.

use crate::edge::EdgeRoutes;
use crate::tls::load_certified_key;
use anyhow::{anyhow, bail, Context};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// ALPN protocol of TLS-ALPN-01 validation handshakes.
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// How long a failed host waits before it is ordered again.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// A certificate is renewed once it is this old (ACME certificates commonly last 90 days).
const RENEW_AFTER: Duration = Duration::from_secs(60 * 24 * 3600);

/// How to reach the ACME directory.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    pub directory: String,
    pub email: Option<String>,
    /// Extra root the directory's HTTPS chains to (a private CA).
    pub ca: Option<PathBuf>,
    /// Instance URLs' domain.
    pub domain: String,
    /// Where the account and certificates are kept.
    pub dir: PathBuf,
}

/// The ACME client and the certificates it obtained.
pub struct Acme {
    cfg: AcmeConfig,
    suffix: String,
    routes: Arc<EdgeRoutes>,
    account: tokio::sync::OnceCell<Account>,
    certs: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    challenges: RwLock<HashMap<String, Arc<ServerConfig>>>,
    orders: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    failed: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme").field("directory", &self.cfg.directory).finish_non_exhaustive()
    }
}

impl Acme {
    /// Sets up the client and loads certificates obtained earlier.
    pub fn new(cfg: AcmeConfig, routes: Arc<EdgeRoutes>) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(cfg.dir.join("certs")).with_context(|| format!("creating {}", cfg.dir.display()))?;
        let acme = Self {
            suffix: format!(".{}", cfg.domain),
            cfg,
            routes,
            account: tokio::sync::OnceCell::new(),
            certs: RwLock::default(),
            challenges: RwLock::default(),
            orders: Default::default(),
            failed: Mutex::default(),
        };
        acme.load_saved();
        Ok(Arc::new(acme))
    }

    fn load_saved(&self) {
        let Ok(entries) = std::fs::read_dir(self.cfg.dir.join("certs")) else { return };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "pem") {
                let key = path.with_extension("key");
                let host = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
                match load_certified_key(&path, &key) {
                    Ok(ck) => {
                        self.certs.write().unwrap_or_else(|e| e.into_inner()).insert(host, Arc::new(ck));
                    }
                    Err(e) => tracing::warn!(cert = %path.display(), error = %e, "ignoring a stored certificate"),
                }
            }
        }
    }

    /// Whether `host` is one this installation may order a certificate for.
    pub fn covers(&self, host: &str) -> bool {
        host.strip_suffix(&self.suffix)
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
            .is_some_and(|label| self.routes.lookup(label).is_some())
    }

    /// The certificate obtained for `host`, if any.
    pub fn cached(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        self.certs.read().unwrap_or_else(|e| e.into_inner()).get(&host.to_ascii_lowercase()).cloned()
    }

    /// The TLS configuration answering a validation handshake for `host`.
    pub fn challenge_config(&self, host: &str) -> Option<Arc<ServerConfig>> {
        self.challenges.read().unwrap_or_else(|e| e.into_inner()).get(&host.to_ascii_lowercase()).cloned()
    }

    async fn account(&self) -> anyhow::Result<&Account> {
        self.account
            .get_or_try_init(|| async {
                let path = self.cfg.dir.join("account.json");
                let builder = || match &self.cfg.ca {
                    Some(ca) => Account::builder_with_root(ca),
                    None => Account::builder(),
                };
                if let Ok(text) = std::fs::read_to_string(&path) {
                    let creds: AccountCredentials = serde_json::from_str(&text).context("reading account.json")?;
                    return builder()?.from_credentials(creds).await.context("restoring the ACME account");
                }
                let contact = self.cfg.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
                let (account, creds) = builder()?
                    .create(&new, self.cfg.directory.clone(), None)
                    .await
                    .with_context(|| format!("creating an account at {}", self.cfg.directory))?;
                write_private(&path, serde_json::to_string(&creds)?.as_bytes())?;
                Ok(account)
            })
            .await
    }

    /// Renews, once a day, every stored certificate older than 60 days (the old one
    /// is served until the new one is issued).
    pub fn renew_periodically(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
                let Some(acme) = me.upgrade() else { return };
                for host in acme.due_for_renewal() {
                    match acme.order(&host).await {
                        Ok(()) => tracing::info!(host, "certificate renewed"),
                        Err(e) => tracing::warn!(host, error = %e, "certificate renewal failed; will retry"),
                    }
                    acme.challenges.write().unwrap_or_else(|e| e.into_inner()).remove(&host);
                }
            }
        });
    }

    /// Hosts whose stored certificate was issued more than [`RENEW_AFTER`] ago.
    fn due_for_renewal(&self) -> Vec<String> {
        let hosts: Vec<String> = self.certs.read().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
        hosts
            .into_iter()
            .filter(|h| {
                let path = self.cfg.dir.join("certs").join(format!("{h}.pem"));
                let age = std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                age.is_some_and(|a| a >= RENEW_AFTER)
            })
            .collect()
    }

    /// Orders a certificate for `host` and waits until it is issued (or fails).
    pub async fn obtain(&self, host: &str) -> anyhow::Result<()> {
        let host = host.to_ascii_lowercase();
        let lock = self.orders.lock().await.entry(host.clone()).or_default().clone();
        let _one_order = lock.lock().await;
        if self.cached(&host).is_some() {
            return Ok(());
        }
        if let Some(at) = self.failed.lock().unwrap_or_else(|e| e.into_inner()).get(&host) {
            if at.elapsed() < RETRY_AFTER {
                bail!("the last order for {host} failed less than a minute ago");
            }
        }
        let outcome = self.order(&host).await;
        self.challenges.write().unwrap_or_else(|e| e.into_inner()).remove(&host);
        if outcome.is_err() {
            self.failed.lock().unwrap_or_else(|e| e.into_inner()).insert(host.clone(), Instant::now());
        }
        outcome
    }

    async fn order(&self, host: &str) -> anyhow::Result<()> {
        let account = self.account().await?;
        let ids = [Identifier::Dns(host.to_string())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await.context("creating the order")?;
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.context("reading an authorization")?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => bail!("authorization for {host} is {other:?}"),
            }
            let mut challenge =
                authz.challenge(ChallengeType::TlsAlpn01).ok_or_else(|| anyhow!("no tls-alpn-01 challenge offered"))?;
            let config = challenge_config(host, challenge.key_authorization().digest().as_ref())?;
            self.challenges.write().unwrap_or_else(|e| e.into_inner()).insert(host.to_string(), config);
            challenge.set_ready().await.context("answering the challenge")?;
        }
        let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await.context("waiting for validation")?;
        if status != OrderStatus::Ready {
            bail!("order for {host} ended {status:?}");
        }
        let key_pem = order.finalize().await.context("finalizing the order")?;
        let chain_pem = order.poll_certificate(&retry).await.context("downloading the certificate")?;
        let dir = self.cfg.dir.join("certs");
        let (cert_path, key_path) = (dir.join(format!("{host}.pem")), dir.join(format!("{host}.key")));
        write_private(&key_path, key_pem.as_bytes())?;
        write_private(&cert_path, chain_pem.as_bytes())?;
        let ck = load_certified_key(&cert_path, &key_path)?;
        self.certs.write().unwrap_or_else(|e| e.into_inner()).insert(host.to_string(), Arc::new(ck));
        tracing::info!(host, "certificate obtained");
        Ok(())
    }
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)?;
    Ok(())
}

/// Serves one certificate to every handshake.
#[derive(Debug)]
struct Single(Arc<CertifiedKey>);

impl ResolvesServerCert for Single {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The self-signed certificate with the `acmeIdentifier` extension that proves
/// control of `host` (RFC 8737 §3), offered only with ALPN `acme-tls/1`.
fn challenge_config(host: &str, digest: &[u8]) -> anyhow::Result<Arc<ServerConfig>> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_string()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = rustls::crypto::ring::default_provider();
    // Not `from_der`: its key check parses the certificate with webpki, which refuses
    // the critical acmeIdentifier extension this certificate exists to carry.
    let signing_key = provider.key_provider.load_private_key(der)?;
    let ck = CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing_key);
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Single(Arc::new(ck))));
    config.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_certificates_load_and_old_ones_are_due_for_renewal() {
        let dir = std::env::temp_dir().join(format!("berth-acme-{}", berth_core::ids::random_label(8)));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let write = |host: &str, age: Duration| {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap().self_signed(&key).unwrap();
            let pem = dir.join("certs").join(format!("{host}.pem"));
            std::fs::write(&pem, cert.pem()).unwrap();
            std::fs::write(dir.join("certs").join(format!("{host}.key")), key.serialize_pem()).unwrap();
            let f = std::fs::File::options().write(true).open(&pem).unwrap();
            f.set_modified(std::time::SystemTime::now() - age).unwrap();
        };
        write("old.example.com", RENEW_AFTER + Duration::from_secs(3600));
        write("new.example.com", Duration::from_secs(3600));
        let cfg = AcmeConfig {
            directory: "https://acme.invalid/dir".into(),
            email: None,
            ca: None,
            domain: "example.com".into(),
            dir: dir.clone(),
        };
        let acme = Acme::new(cfg, Arc::new(EdgeRoutes::new(Arc::default()))).unwrap();
        assert!(acme.cached("old.example.com").is_some() && acme.cached("NEW.example.com").is_some());
        assert_eq!(acme.due_for_renewal(), vec!["old.example.com".to_string()]);
        assert!(!acme.covers("old.example.com"), "a host that routes to no instance is never ordered");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
