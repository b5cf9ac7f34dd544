//! TLS for both listeners: a certificate and key from files (a wildcard for
//! `*.{domain}` covers every instance URL), reloaded when the files change, and
//! optionally certificates obtained on demand from an ACME directory
//! ([`crate::acme`]) for instance hosts the files do not cover.

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::LazyConfigAcceptor;

/// ALPN protocols offered to clients, in order of preference.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A certificate chain and key read from PEM files.
pub fn load_certified_key(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificates from {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert.display());
    }
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading the private key {}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).context("the certificate and key do not match")
}

/// The certificate of the files, swapped in place when they change on disk.
#[derive(Debug)]
pub struct FileCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Option<Arc<CertifiedKey>>>,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl FileCert {
    /// Loads the files (an error names what is wrong with them).
    pub fn load(cert_path: PathBuf, key_path: PathBuf) -> anyhow::Result<Arc<Self>> {
        let ck = load_certified_key(&cert_path, &key_path)?;
        let stamp = mtime(&cert_path).zip(mtime(&key_path));
        Ok(Arc::new(Self { cert_path, key_path, current: RwLock::new(Some(Arc::new(ck))), stamp: RwLock::new(stamp) }))
    }

    /// Reloads when either file changed; a broken new pair keeps the old one.
    pub fn reload_if_changed(&self) {
        let now = mtime(&self.cert_path).zip(mtime(&self.key_path));
        if now.is_none() || *self.stamp.read().unwrap_or_else(|e| e.into_inner()) == now {
            return;
        }
        *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = now;
        match load_certified_key(&self.cert_path, &self.key_path) {
            Ok(ck) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(ck));
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            Err(e) => tracing::warn!(error = %e, "TLS certificate changed but cannot be loaded; keeping the old one"),
        }
    }

    /// Checks the files every `every` for as long as the process runs.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(me) = me.upgrade() else { return };
                me.reload_if_changed();
            }
        });
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Picks a certificate for a handshake: an ACME one for the host if there is
/// one, else the files' certificate.
#[derive(Debug)]
struct Resolver {
    file: Option<Arc<FileCert>>,
    acme: Option<Arc<crate::acme::Acme>>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let (Some(acme), Some(sni)) = (&self.acme, hello.server_name()) {
            if let Some(ck) = acme.cached(sni) {
                return Some(ck);
            }
        }
        self.file.as_ref().and_then(|f| f.get())
    }
}

/// Accepts TLS connections for the listeners.
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    acme: Option<Arc<crate::acme::Acme>>,
}

impl TlsAcceptor {
    /// An acceptor serving the files' certificate and, when given, ACME ones.
    pub fn new(file: Option<Arc<FileCert>>, acme: Option<Arc<crate::acme::Acme>>) -> Arc<Self> {
        let resolver = Arc::new(Resolver { file, acme: acme.clone() });
        let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        Arc::new(Self { config: Arc::new(config), acme })
    }

    /// Completes the handshake of a new connection. ACME TLS-ALPN-01 validation
    /// handshakes get the challenge certificate; a host under the ACME domain
    /// with no certificate yet gets one before the handshake completes.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let start = LazyConfigAcceptor::new(Acceptor::default(), tcp).await?;
        let hello = start.client_hello();
        let sni = hello.server_name().map(str::to_string);
        let mut config = self.config.clone();
        if let (Some(acme), Some(sni)) = (&self.acme, sni) {
            let wants_challenge = hello.alpn().is_some_and(|mut a| a.any(|p| p == crate::acme::ACME_TLS_ALPN));
            if wants_challenge {
                match acme.challenge_config(&sni) {
                    Some(c) => config = c,
                    None => return Err(io::Error::other(format!("no ACME challenge pending for {sni}"))),
                }
            } else if acme.covers(&sni) && acme.cached(&sni).is_none() {
                if let Err(e) = acme.obtain(&sni).await {
                    tracing::warn!(host = %sni, error = %e, "could not obtain a certificate");
                }
            }
        }
        start.into_stream(config).await
    }
}
