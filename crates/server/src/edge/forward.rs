//! Forwarding to an instance: header rewriting, the request to send (bodies
//! streamed without buffering, with a size limit), and what marks an upgrade.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the ones proxies drop by convention.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Headers a client may not set for the instance: the edge sets them itself.
const FORWARDING: [HeaderName; 6] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-real-ip"),
    header::FORWARDED,
    HeaderName::from_static("x-request-id"),
];

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> =
            connection_tokens(headers).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()).collect();
        for n in named {
            headers.remove(n);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// What the edge knows about the client of a connection (computed once per connection).
pub struct ClientInfo {
    /// The client's address, for `X-Forwarded-For` and `X-Real-IP`.
    pub ip: HeaderValue,
    /// The client as a `Forwarded` node (`1.2.3.4`, `"[::1]"`).
    pub node: String,
    pub tls: bool,
}

impl ClientInfo {
    /// The forwarding facts of a connection from `peer`.
    pub fn new(peer: SocketAddr, tls: bool) -> Self {
        let ip = peer.ip().to_canonical();
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        let ip = HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self { ip, node, tls }
    }
}

/// What the edge knows about a request it forwards.
pub struct Forwarding<'a> {
    pub client: &'a ClientInfo,
    /// The Host the client asked for (with port).
    pub host: &'a str,
    pub request_id: &'a HeaderValue,
    /// `Bearer {token}` replacing the client's credentials (the agent's port), when set.
    pub gateway_auth: Option<&'a HeaderValue>,
    /// The client's `Authorization` carried its berth key (so it is not forwarded).
    pub key_in_authorization: bool,
    /// The value of `Upgrade` to keep, for an upgrade request.
    pub upgrade: Option<HeaderValue>,
}

/// Rewrites a client's request headers for the instance.
pub fn rewrite_request(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    strip_hop_by_hop(headers);
    for h in &FORWARDING {
        headers.remove(h);
    }
    headers.remove(&X_API_KEY);
    match f.gateway_auth {
        Some(v) => {
            headers.insert(header::AUTHORIZATION, v.clone());
        }
        None if f.key_in_authorization => {
            headers.remove(header::AUTHORIZATION);
        }
        None => {}
    }
    if let Some(cookie) = headers.get(header::COOKIE).and_then(|v| v.to_str().ok()) {
        if super::share::cookie_tokens(cookie).next().is_some() {
            match super::share::strip_cookie(cookie).and_then(|c| HeaderValue::from_str(&c).ok()) {
                Some(v) => headers.insert(header::COOKIE, v),
                None => headers.remove(header::COOKIE),
            };
        }
    }
    let proto = if f.client.tls { "https" } else { "http" };
    headers.insert(FORWARDING[0].clone(), f.client.ip.clone());
    headers.insert(FORWARDING[3].clone(), f.client.ip.clone());
    headers.insert(FORWARDING[1].clone(), HeaderValue::from_static(proto));
    // HTTP/1.1 clients sent a Host (kept as is); an HTTP/2 client's :authority becomes one.
    let host = match headers.get(header::HOST) {
        Some(v) => Some(v.clone()),
        None => HeaderValue::from_str(f.host).ok().inspect(|v| {
            headers.insert(header::HOST, v.clone());
        }),
    };
    if let Some(v) = host {
        headers.insert(FORWARDING[2].clone(), v);
    }
    let forwarded = format!("for={};host=\"{}\";proto={proto}", f.client.node, f.host);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(forwarded)) {
        headers.insert(header::FORWARDED, v);
    }
    headers.insert(X_REQUEST_ID.clone(), f.request_id.clone());
    if let Some(up) = &f.upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up.clone());
    }
}

/// Rewrites an instance's response headers for the client.
pub fn rewrite_response(headers: &mut HeaderMap, request_id: &HeaderValue, upgraded: bool) {
    let upgrade = if upgraded { headers.get(header::UPGRADE).cloned() } else { None };
    strip_hop_by_hop(headers);
    if let Some(up) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, up);
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
}

/// Builds the HTTP/1.1 request to the instance from the client's (origin-form
/// target; an HTTP/2 client's absolute URI is reduced to its path and query).
pub fn upstream_request(mut parts: http::request::Parts, body: LimitedBody) -> Request<LimitedBody> {
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().cloned();
        let mut uri = http::uri::Parts::default();
        uri.path_and_query = Some(pq.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")));
        parts.uri = http::Uri::from_parts(uri).unwrap_or_default();
    }
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// A request body passed through as it arrives, refused past a size limit.
pub struct LimitedBody {
    inner: Option<Incoming>,
    remaining: u64,
    /// Bytes read so far (for the access log and metrics).
    pub read: Arc<AtomicU64>,
    /// Set when the limit was crossed.
    pub exceeded: Arc<AtomicBool>,
}

impl LimitedBody {
    /// Wraps a client's body.
    pub fn new(inner: Incoming, limit: u64) -> Self {
        Self { inner: Some(inner), remaining: limit, read: Arc::default(), exceeded: Arc::default() }
    }

    /// No body (upgrade requests).
    pub fn empty() -> Self {
        Self { inner: None, remaining: 0, read: Arc::default(), exceeded: Arc::default() }
    }
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let Some(inner) = self.inner.as_mut() else { return Poll::Ready(None) };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    self.read.fetch_add(n, Ordering::Relaxed);
                    if n > self.remaining {
                        self.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err("request body too large".into())));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(|b| b.size_hint()).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// Whether a method may carry a share link that is traded for a cookie by a redirect.
pub fn redirectable(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_and_forwarding_headers_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
        h.insert("forwarded", "for=6.6.6.6".parse().unwrap());
        h.insert("x-request-id", "spoofed".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer sk_client".parse().unwrap());
        h.insert(header::COOKIE, "a=1; berth_share=tok".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        let client = ClientInfo::new("10.1.2.3:5555".parse().unwrap(), false);
        let (rid, gw) = (HeaderValue::from_static("req_1"), HeaderValue::from_static("Bearer gw"));
        let f = Forwarding {
            client: &client,
            host: "abc.localhost:7071",
            request_id: &rid,
            gateway_auth: Some(&gw),
            key_in_authorization: true,
            upgrade: None,
        };
        rewrite_request(&mut h, &f);
        assert!(!h.contains_key("x-secret") && !h.contains_key(header::CONNECTION));
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "abc.localhost:7071");
        assert_eq!(h["forwarded"], "for=10.1.2.3;host=\"abc.localhost:7071\";proto=http");
        assert_eq!(h["x-request-id"], "req_1");
        assert_eq!(h[header::AUTHORIZATION], "Bearer gw");
        assert_eq!(h[header::COOKIE], "a=1");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn an_exposed_port_keeps_its_own_authorization() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        h.insert("x-api-key", "sk_secret".parse().unwrap());
        let client = ClientInfo::new("[::1]:5555".parse().unwrap(), true);
        let rid = HeaderValue::from_static("r");
        let f = Forwarding {
            client: &client,
            host: "h.example.com",
            request_id: &rid,
            gateway_auth: None,
            key_in_authorization: false,
            upgrade: None,
        };
        rewrite_request(&mut h, &f);
        assert_eq!(h[header::AUTHORIZATION], "Basic dXNlcjpwdw==");
        assert!(!h.contains_key("x-api-key"), "the berth key never reaches the instance");
        assert_eq!(h["forwarded"], "for=\"[::1]\";host=\"h.example.com\";proto=https");
    }
}
