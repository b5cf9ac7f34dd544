//! `hyper-floor LISTEN UPSTREAM [THREADS] [--rewrite]`: a bare HTTP/1.1 reverse proxy on
//! the stack berth's edge uses — one current-thread tokio runtime per thread, hyper's
//! auto (HTTP/1.1 + h2c) server with a header-read timeout, pooled keep-alive hyper
//! client connections, response bodies streamed and the connection pooled again once
//! read to the end. No authentication, routing, limits, metrics or logs. `--rewrite`
//! adds the header work the edge does for every request (hop-by-hop and forwarding
//! headers removed, credentials swapped, `X-Forwarded-*`, `Forwarded`, `X-Request-Id`).

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Each thread's idle connections (one upstream).
type Pool = Arc<Mutex<Vec<SendRequest<Incoming>>>>;

const REMOVED: [&str; 15] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "forwarded",
    "x-request-id",
    "x-api-key",
];

/// A response body that puts its connection back in the pool once read to the end.
struct Pooled {
    inner: Incoming,
    sender: Option<SendRequest<Incoming>>,
    pool: Pool,
    ended: bool,
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(r)) => Poll::Ready(Some(r.map_err(Into::into))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if self.ended || self.inner.is_end_stream() {
            if let Some(s) = self.sender.take() {
                self.pool.lock().unwrap_or_else(|e| e.into_inner()).push(s);
            }
        }
    }
}

async fn sender(pool: &Pool, upstream: SocketAddr) -> Result<SendRequest<Incoming>, BoxError> {
    loop {
        let idle = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match idle {
            Some(s) if !s.is_closed() => return Ok(s),
            Some(_) => continue,
            None => break,
        }
    }
    let tcp = tokio::net::TcpStream::connect(upstream).await?;
    tcp.set_nodelay(true)?;
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(s)
}

fn rewrite(headers: &mut http::HeaderMap) {
    for h in REMOVED {
        headers.remove(h);
    }
    let set = |h: &mut http::HeaderMap, name: &'static str, v: HeaderValue| {
        h.insert(HeaderName::from_static(name), v);
    };
    set(headers, "authorization", HeaderValue::from_static("Bearer gateway-token-of-the-instance-0000000"));
    set(headers, "x-forwarded-for", HeaderValue::from_static("127.0.0.1"));
    set(headers, "x-real-ip", HeaderValue::from_static("127.0.0.1"));
    set(headers, "x-forwarded-proto", HeaderValue::from_static("http"));
    let host = headers.get(http::header::HOST).cloned().unwrap_or(HeaderValue::from_static("-"));
    let forwarded = format!("for=127.0.0.1;host=\"{}\";proto=http", host.to_str().unwrap_or("-"));
    set(headers, "x-forwarded-host", host);
    set(headers, "forwarded", HeaderValue::from_str(&forwarded).unwrap_or(HeaderValue::from_static("-")));
    set(headers, "x-request-id", HeaderValue::from_static("req_floor00000000000001"));
}

async fn proxy(
    req: Request<Incoming>,
    pool: Pool,
    upstream: SocketAddr,
    rewriting: bool,
) -> Result<Response<Pooled>, BoxError> {
    let mut s = sender(&pool, upstream).await?;
    let (mut parts, body) = req.into_parts();
    if rewriting {
        rewrite(&mut parts.headers);
    }
    let resp = s.send_request(Request::from_parts(parts, body)).await?;
    let (mut parts, body) = resp.into_parts();
    if rewriting {
        for h in &REMOVED[..8] {
            parts.headers.remove(*h);
        }
        parts
            .headers
            .insert(HeaderName::from_static("x-request-id"), HeaderValue::from_static("req_floor00000000000001"));
    }
    Ok(Response::from_parts(parts, Pooled { inner: body, sender: Some(s), pool, ended: false }))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: hyper-floor LISTEN UPSTREAM [THREADS] [--rewrite]");
        std::process::exit(2);
    }
    let listen: SocketAddr = args[1].parse().expect("LISTEN: an address");
    let upstream: SocketAddr = args[2].parse().expect("UPSTREAM: an address");
    let threads: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2);
    let rewriting = args.iter().any(|a| a == "--rewrite");
    let listener = std::net::TcpListener::bind(listen).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let l = listener.try_clone().expect("listener");
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(15));
                    let builder = Arc::new(builder);
                    let pool: Pool = Arc::default();
                    let l = tokio::net::TcpListener::from_std(l).expect("listener");
                    loop {
                        let Ok((tcp, _)) = l.accept().await else { continue };
                        let _ = tcp.set_nodelay(true);
                        let (builder, pool) = (builder.clone(), pool.clone());
                        tokio::spawn(async move {
                            let svc =
                                hyper::service::service_fn(move |req| proxy(req, pool.clone(), upstream, rewriting));
                            let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc).await;
                        });
                    }
                });
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
}
