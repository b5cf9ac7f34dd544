//! The edge: `http://{label}.{domain}` reaches the instance's default port (its
//! agent) and `http://{handle}.{domain}` each other exposed port.
//!
//! A request is authenticated first (a workspace key, 401 / 404 as on the hosting
//! API, or a share link's cookie), routed through the in-memory table
//! ([`EdgeRoutes`]) with no database read and no Docker call, and forwarded over a
//! pooled keep-alive connection. On the agent's port the client's key is swapped
//! for the instance's gateway token. Bodies stream both ways unbuffered; upgrades
//! (WebSockets) are tunnelled; a sleeping `cold_start` instance is woken once for
//! however many requests wait on it. Revoking the key or the share closes the
//! streams opened with it.

pub mod access_log;
mod error;
pub mod forward;
mod pool;
mod proxied;
pub mod share;
pub mod table;
mod wake;

pub use error::EdgeError;
pub use table::EdgeRoutes;

use crate::activity::Busy;
use crate::key_cache::VerifiedKey;
use crate::listen::Peer;
use crate::state::AppState;
use access_log::AccessLog;
use berth_core::Status;
use berth_runtime::{Observed, AGENT_PORT};
use bytes::Bytes;
use forward::{ClientInfo, Forwarding, LimitedBody};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::Service;
use proxied::{LogContext, ProxiedBody};
use share::LiveShare;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use table::{HostRoute, Target};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Boxed error of edge bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of every edge response.
pub type EdgeBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// A body of known bytes.
pub fn full(b: Bytes) -> EdgeBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

fn empty() -> EdgeBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// How the edge is set up.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Largest request body forwarded (bytes); more is answered 413.
    pub body_limit: u64,
}

/// Who a request was let in as.
enum Principal {
    Key(Arc<VerifiedKey>),
    Share(Arc<LiveShare>),
}

impl Principal {
    fn revoked(&self) -> &CancellationToken {
        match self {
            Principal::Key(k) => &k.revoked,
            Principal::Share(s) => &s.revoked,
        }
    }
}

/// Request ids: a random per-process prefix and a counter (cheap and unique).
struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    /// `req_` + the prefix + 10 hex digits of the counter.
    fn next(&self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = Vec::with_capacity(4 + self.prefix.len() + 10);
        id.extend_from_slice(b"req_");
        id.extend_from_slice(self.prefix.as_bytes());
        id.extend((0..10).rev().map(|i| HEX[((n >> (i * 4)) & 0xf) as usize]));
        HeaderValue::from_maybe_shared(Bytes::from(id)).expect("ASCII")
    }
}

/// What every edge thread shares.
#[derive(Clone)]
pub struct EdgeShared {
    pub state: AppState,
    pub access: Arc<AccessLog>,
    pub config: EdgeConfig,
    /// The server's main runtime: slow work (database, Docker, wakes) runs there,
    /// never on an edge thread.
    pub main: Handle,
    wakes: Arc<wake::Wakes>,
}

impl EdgeShared {
    /// The shared parts over the server's state.
    pub fn new(state: AppState, access: AccessLog, config: EdgeConfig, main: Handle) -> Self {
        Self { state, access: Arc::new(access), config, main, wakes: Arc::default() }
    }
}

/// The edge of one thread: the shared parts plus its own pool of connections to
/// instances. The edge runs one of these per core, each on a single-threaded
/// runtime with its own `SO_REUSEPORT` listener, so a request is read, forwarded
/// and answered without crossing threads.
pub struct Edge {
    state: AppState,
    pool: Arc<pool::Pool>,
    wakes: Arc<wake::Wakes>,
    access: Arc<AccessLog>,
    /// `.{domain}`
    suffix: String,
    config: EdgeConfig,
    ids: RequestIds,
    main: Handle,
}

impl Edge {
    /// An edge for one thread.
    pub fn new(shared: &EdgeShared) -> Arc<Self> {
        let state = shared.state.clone();
        let suffix = format!(".{}", state.settings.domain);
        Arc::new(Self {
            state,
            pool: Arc::default(),
            wakes: shared.wakes.clone(),
            access: shared.access.clone(),
            suffix,
            config: shared.config.clone(),
            ids: RequestIds { prefix: berth_core::ids::random_label(6), next: AtomicU64::new(0) },
            main: shared.main.clone(),
        })
    }

    /// Runs `fut` on the main runtime and waits for it.
    async fn on_main<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Option<T> {
        self.main.spawn(fut).await.ok()
    }

    /// The key a secret belongs to: from memory, or (once) from the store.
    async fn verify_key(&self, secret: &str) -> Result<Arc<VerifiedKey>, EdgeError> {
        if let Some(k) = self.state.keys.cached(secret) {
            return Ok(k);
        }
        let (keys, secret) = (self.state.keys.clone(), secret.to_string());
        let found = self.on_main(async move { keys.verify(&secret).await }).await;
        found.ok_or(EdgeError::Store)?.map_err(|_| EdgeError::Store)?.ok_or(EdgeError::BadKey)
    }

    /// The service of one client connection.
    pub fn service(self: &Arc<Self>, peer: Peer) -> EdgeService {
        EdgeService { edge: self.clone(), peer, client: Arc::new(forward::ClientInfo::new(peer.addr, peer.tls)) }
    }

    /// The DNS label a Host names under the domain (`{label}.{domain}[:port]`).
    fn label_of<'h>(&self, host: &'h str) -> Option<&'h str> {
        let name = match host.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        let label = name.strip_suffix(&self.suffix)?;
        let ok = !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        ok.then_some(label)
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
        client: Arc<ClientInfo>,
    ) -> Response<EdgeBody> {
        let mut log = LogContext {
            started: Instant::now(),
            request_id: self.ids.next(),
            peer: peer.addr,
            method: req.method().clone(),
            version: req.version(),
            host: host_of(&req),
            path: if self.access.enabled() { req.uri().path().to_string() } else { String::new() },
            instance: None,
        };
        match self.route(req, peer, &client, &mut log).await {
            Ok(resp) => resp,
            Err(e) => {
                let mut resp = e.into_response();
                self.finish(&log, &mut resp);
                resp
            }
        }
    }

    /// Answers a request the edge itself answers (errors, redirects): request id, metrics, log line.
    fn finish(&self, log: &LogContext, resp: &mut Response<EdgeBody>) {
        resp.headers_mut().insert("x-request-id", log.request_id.clone());
        let status = resp.status().as_u16();
        self.state.metrics.edge.response(status, log.started.elapsed().as_secs_f64());
        if self.access.enabled() {
            self.access.line(log.line(status, 0, 0, None));
        }
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: Peer,
        client: &ClientInfo,
        log: &mut LogContext,
    ) -> Result<Response<EdgeBody>, EdgeError> {
        let domain = &self.state.settings.domain;
        let label = self.label_of(&log.host).ok_or_else(|| EdgeError::UnknownHost {
            host: log.host.chars().take(100).collect(),
            domain: domain.clone(),
        })?;
        let quotas = &self.state.quotas;
        let ip = peer.addr.ip();
        // A client that failed to authenticate too often is refused before it tries again.
        let failed = |e: EdgeError| {
            quotas.auth_failed(ip);
            e
        };
        let (principal, route, key_in_authorization) = match presented_key(req.headers()) {
            Some((secret, in_auth)) => {
                quotas.may_authenticate(ip).map_err(EdgeError::RateLimited)?;
                let key = self.verify_key(secret).await.map_err(|e| match e {
                    EdgeError::BadKey => failed(e),
                    e => e,
                })?;
                // Another workspace's instance, or (for an instance key) another
                // instance: not found, as if it did not exist.
                let route = self
                    .state
                    .routes
                    .lookup(label)
                    .filter(|r| r.target.workspace == key.record.workspace_id)
                    .filter(|r| key.record.instance_id.as_ref().is_none_or(|i| *i == r.target.id))
                    .ok_or(EdgeError::NotFound)?;
                (Principal::Key(key), route, in_auth)
            }
            None => {
                let from_query = req.uri().query().and_then(share::take_from_query);
                // Every share cookie the browser sent is tried: another host under the
                // domain may have set one of its own on the parent domain.
                let tokens: Vec<&str> = match &from_query {
                    Some((t, _)) => vec![t.as_str()],
                    None => req
                        .headers()
                        .get_all(header::COOKIE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(share::cookie_tokens)
                        .collect(),
                };
                if tokens.is_empty() {
                    return Err(EdgeError::MissingKey);
                }
                quotas.may_authenticate(ip).map_err(EdgeError::RateLimited)?;
                let route = self.state.routes.lookup(label).ok_or_else(|| failed(EdgeError::BadShare))?;
                let live = tokens
                    .iter()
                    .find_map(|t| self.state.shares.check(t, &route.target.id, route.port))
                    .ok_or_else(|| failed(EdgeError::BadShare))?;
                if let Some((token, rest)) = from_query.filter(|_| forward::redirectable(req.method())) {
                    let mut resp = share_redirect(req.uri().path(), &rest, &token, live.expires_at, peer.tls);
                    log.instance = Some(route.target.id.to_string());
                    self.finish(log, &mut resp);
                    return Ok(resp);
                }
                (Principal::Share(live), route, false)
            }
        };
        log.instance = Some(route.target.id.to_string());
        let slot = self
            .state
            .quotas
            .acquire(&route.target.workspace, crate::quotas::Kind::EdgeStream)
            .map_err(EdgeError::RateLimited)?;
        let (target, ip, busy) = self.ready(route.target.clone()).await?;
        let busy = (busy, slot);
        let route = HostRoute { target, ..route };
        self.forward(req, client, log, route, ip, busy, principal, key_in_authorization).await
    }

    /// Waits until the instance can take the request: wakes it when it sleeps,
    /// learns its address when unknown. Marks it busy for the request's life.
    async fn ready(&self, mut target: Arc<Target>) -> Result<(Arc<Target>, IpAddr, Busy), EdgeError> {
        for _ in 0..3 {
            let wake = match target.status {
                Status::Running => {
                    let busy = target.activity.open();
                    if target.activity.draining() {
                        true
                    } else {
                        target.activity.request();
                        let ip = match target.ip {
                            Some(ip) => ip,
                            None => self.resolve(&target).await?,
                        };
                        return Ok((target, ip, busy));
                    }
                }
                Status::Stopped if target.wake_on_request => true,
                other => return Err(EdgeError::NotRunning { id: target.id.to_string(), status: other.to_string() }),
            };
            if wake {
                let (result, began) = self.wakes.wake(&self.main, &self.state, &target.id, &target.workspace).await;
                if began {
                    self.state.metrics.edge.wakes.inc();
                }
                result.map_err(EdgeError::WakeFailed)?;
                target = self.state.routes.target(&target.id).ok_or(EdgeError::NotFound)?;
            }
        }
        Err(EdgeError::Unreachable)
    }

    /// Asks the runtime where a running instance is (after a restart of the server).
    async fn resolve(&self, target: &Target) -> Result<IpAddr, EdgeError> {
        let (runtime, id) = (self.state.runtime.clone(), target.id.clone());
        let cs = self.on_main(async move { runtime.inspect(&id).await }).await;
        let cs = cs.ok_or(EdgeError::Unreachable)?.map_err(|_| EdgeError::Unreachable)?;
        match (cs.observed, cs.agent_addr) {
            (Observed::Running, Some(addr)) => {
                self.state.routes.set_address(&target.id, Some(addr.ip()), Some(target.generation));
                Ok(addr.ip())
            }
            _ => Err(EdgeError::Unreachable),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        client: &ClientInfo,
        log: &mut LogContext,
        route: HostRoute,
        ip: IpAddr,
        busy: (Busy, crate::quotas::Slot),
        principal: Principal,
        key_in_authorization: bool,
    ) -> Result<Response<EdgeBody>, EdgeError> {
        let limit = self.config.body_limit;
        if let Some(announced) = content_length(req.headers()).filter(|&n| n > limit) {
            drain_refused(req, announced).await;
            return Err(EdgeError::BodyTooLarge { limit });
        }
        let upgrade = forward::is_upgrade(&req).then(|| req.headers().get(header::UPGRADE).cloned()).flatten();
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let is_agent = route.target.agent && route.port == AGENT_PORT;
        let (mut parts, body) = req.into_parts();
        let f = Forwarding {
            client,
            host: &log.host,
            request_id: &log.request_id,
            gateway_auth: if is_agent { route.target.gateway_auth.as_ref() } else { None },
            key_in_authorization,
            upgrade,
        };
        forward::rewrite_request(&mut parts.headers, &f);
        let body = if client_upgrade.is_some() { LimitedBody::empty() } else { LimitedBody::new(body, limit) };
        let (read, exceeded) = (body.read.clone(), body.exceeded.clone());
        let up = forward::upstream_request(parts, body);
        let (mut resp, lease) = match self.pool.send(SocketAddr::new(ip, route.port), up).await {
            Ok(r) => r,
            Err(_) if exceeded.load(Ordering::Relaxed) => return Err(EdgeError::BodyTooLarge { limit }),
            Err(e) => {
                if matches!(e, pool::SendError::Connect(_)) && is_agent {
                    // The address may be stale: look it up again next time.
                    self.state.routes.set_address(&route.target.id, None, Some(route.target.generation));
                }
                let detail = error_chain(&e);
                return Err(if is_agent {
                    EdgeError::AgentUnreachable(detail)
                } else {
                    EdgeError::PortUnreachable { port: route.port, detail }
                });
            }
        };
        let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upstream_upgrade = (switched && client_upgrade.is_some()).then(|| hyper::upgrade::on(&mut resp));
        let (mut parts, body) = resp.into_parts();
        forward::rewrite_response(&mut parts.headers, &log.request_id, upstream_upgrade.is_some());
        let status = parts.status.as_u16();
        self.state.metrics.edge.response(status, log.started.elapsed().as_secs_f64());
        let log = log.take();
        let revoked = principal.revoked().clone();
        match (client_upgrade, upstream_upgrade) {
            (Some(client), Some(upstream)) => {
                let metrics = self.state.metrics.clone();
                let line = self.access.enabled().then(|| log.line(status, 0, 0, Some(log.started.elapsed())));
                if let Some(line) = line {
                    self.access.line(line);
                }
                tokio::spawn(proxied::tunnel(client, upstream, busy, revoked, metrics));
                Ok(Response::from_parts(parts, empty()))
            }
            _ => {
                let access = self.access.enabled().then(|| self.access.clone());
                let metrics = self.state.metrics.clone();
                let body = ProxiedBody::new(body, busy, revoked, metrics, read, log, status, access, lease);
                Ok(Response::from_parts(parts, body.boxed_unsync()))
            }
        }
    }
}

/// The Host the client asked for: the `Host` header, or the URI's authority (HTTP/2).
fn host_of<B>(req: &Request<B>) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Reads and discards a refused body that is not too big to read, so that the
/// client, still writing it, reads the 413 instead of a broken pipe (what
/// nginx's lingering close does). A client that waits for `100-continue` sends
/// nothing, and a huge or slow body is cut off: it would cost more than it saves.
async fn drain_refused(req: Request<Incoming>, announced: u64) {
    const MOST: u64 = 16 * 1024 * 1024;
    const WITHIN: std::time::Duration = std::time::Duration::from_secs(3);
    let waits = req.headers().get(header::EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits || announced > MOST {
        return;
    }
    let mut body = req.into_body();
    let _ = tokio::time::timeout(WITHIN, async { while let Some(Ok(_)) = body.frame().await {} }).await;
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The berth key a request carries, and whether it came in `Authorization`.
fn presented_key(headers: &http::HeaderMap) -> Option<(&str, bool)> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(token) = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")) {
            let token = token.trim();
            if !token.is_empty() {
                return Some((token, true));
            }
        }
    }
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty())?;
    Some((key, false))
}

fn share_redirect(path: &str, rest_query: &str, token: &str, expires_at: i64, tls: bool) -> Response<EdgeBody> {
    let location = if rest_query.is_empty() { path.to_string() } else { format!("{path}?{rest_query}") };
    let max_age = expires_at - berth_core::now_secs();
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&share::set_cookie(token, max_age, tls)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// The edge as a hyper service, one per connection.
#[derive(Clone)]
pub struct EdgeService {
    edge: Arc<Edge>,
    peer: Peer,
    client: Arc<ClientInfo>,
}

impl Service<Request<Incoming>> for EdgeService {
    type Response = Response<EdgeBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<EdgeBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let (edge, peer, client) = (self.edge.clone(), self.peer, self.client.clone());
        Box::pin(async move { Ok(edge.handle(req, peer, client).await) })
    }
}
