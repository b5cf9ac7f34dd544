//! Serving HTTP on a TCP listener, shared by the hosting API and the edge.
//!
//! One accept loop: optional TLS (ALPN `h2` / `http/1.1`), HTTP/1.1 and HTTP/2
//! (h2c with prior knowledge) on the same port, `TCP_NODELAY`, a header-read
//! timeout, an idle timeout for connections with no request in flight (a stream
//! that is open is never idle), a cap on open connections, WebSocket upgrades,
//! and a graceful shutdown that lets in-flight requests finish.

use crate::tls::TlsAcceptor;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::either::Either;
use tokio_util::task::TaskTracker;

/// How long a connection may take to send a request's headers, and stay open
/// with nothing in flight.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Whole request head (and the TLS handshake) within this; on HTTP/1.1 it also
    /// bounds the wait for the next request of a kept-alive connection.
    pub header_read_timeout: Duration,
    /// A connection with no request or response in flight is closed after this.
    pub idle_timeout: Duration,
    /// Most connections open at once; more are closed as they arrive.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(75),
            max_connections: 8192,
        }
    }
}

/// The other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// Requests in flight on one connection, and since when it has had none.
struct ConnState {
    born: Instant,
    /// Requests begun on this connection.
    requests: AtomicU64,
    inflight: AtomicUsize,
    /// Milliseconds since `born` when the last request finished.
    idle_since_ms: AtomicU64,
}

impl ConnState {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            requests: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.inflight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.born.elapsed().saturating_sub(since))
    }
}

/// Held while a request (and its response body) is in flight.
struct InflightGuard(Arc<ConnState>);

impl InflightGuard {
    fn new(conn: &Arc<ConnState>) -> Self {
        conn.requests.fetch_add(1, Ordering::Relaxed);
        conn.inflight.fetch_add(1, Ordering::AcqRel);
        Self(conn.clone())
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let now = self.0.born.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(now, Ordering::Release);
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection's in-flight count until it ends.
pub struct TrackedBody<B> {
    inner: B,
    _guard: InflightGuard,
}

impl<B: Body<Data = Bytes> + Unpin> Body for TrackedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a service so the connection knows when it is idle.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    conn: Arc<ConnState>,
}

/// The future of a [`Tracked`] service: the inner one, then its body wrapped.
pub struct TrackedFuture<F> {
    inner: F,
    guard: Option<InflightGuard>,
}

impl<F, B> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>> + Unpin,
{
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let resp = match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(Ok(resp)) => resp,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => return Poll::Pending,
        };
        let guard = self.guard.take().expect("polled after completion");
        Poll::Ready(Ok(resp.map(|inner| TrackedBody { inner, _guard: guard })))
    }
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + Unpin + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let guard = InflightGuard::new(&self.conn);
        TrackedFuture { inner: self.inner.call(req), guard: Some(guard) }
    }
}

/// Boxes a service's futures (so they are `Unpin`), for services off the hot path.
#[derive(Clone)]
pub struct Boxed<S>(pub S);

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send>>;

impl<S, R> Service<Request<Incoming>> for Boxed<S>
where
    S: Service<Request<Incoming>, Response = R, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = R;
    type Error = Infallible;
    type Future = BoxFut<R>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(self.0.call(req))
    }
}

/// A listening socket with a deep accept queue (bursts of connections wait there
/// instead of being dropped and retried a second later).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn http_builder(limits: &ConnLimits) -> Arc<auto::Builder<TokioExecutor>> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256);
    Arc::new(builder)
}

/// Accepts connections until `shutdown`, handing each (with its slot of the
/// connection cap) to `dispatch`.
async fn accept_loop(
    listener: TcpListener,
    limits: ConnLimits,
    shutdown: &mut watch::Receiver<bool>,
    mut dispatch: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(shutdown) => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %addr, "too many open connections; closing a new one");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        dispatch(tcp, addr, slot);
    }
}

/// Serves one accepted connection: TLS handshake, then HTTP until it ends.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<S, B>(
    tcp: TcpStream,
    addr: SocketAddr,
    slot: OwnedSemaphorePermit,
    tls: Option<Arc<TlsAcceptor>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    svc: S,
    limits: ConnLimits,
    shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + Sync + 'static,
    S::Future: Send + Unpin + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = match tls {
        None => Either::Left(tcp),
        Some(tls) => match tokio::time::timeout(limits.header_read_timeout, tls.accept(tcp)).await {
            Ok(Ok(stream)) => Either::Right(stream),
            Ok(Err(e)) => {
                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    let conn = Arc::new(ConnState::new());
    let svc = Tracked { inner: svc, conn: conn.clone() };
    drive(builder, io, svc, conn, limits, shutdown).await;
    drop(slot);
}

/// Serves `listener` on the current runtime until `shutdown` turns true, then
/// waits up to `grace` for in-flight requests. `make` builds each connection's service.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    tls: Option<Arc<TlsAcceptor>>,
    limits: ConnLimits,
    make: M,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) where
    M: Fn(Peer) -> S + Send + Sync + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + Sync + 'static,
    S::Future: Send + Unpin + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = http_builder(&limits);
    let tracker = TaskTracker::new();
    let stop = shutdown.clone();
    accept_loop(listener, limits, &mut shutdown, |tcp, addr, slot| {
        let svc = make(Peer { addr, tls: tls.is_some() });
        let conn = serve_connection(tcp, addr, slot, tls.clone(), builder.clone(), svc, limits, stop.clone());
        tracker.spawn(conn);
    })
    .await;
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after {} s; closing them", grace.as_secs());
    }
}

/// Like [`serve`], but connections are served on `makes.len()` threads of their
/// own, each a single-threaded runtime with its own service maker: a request is
/// read, handled and answered on one thread, with no cross-thread wakeups. The
/// accept loop runs on the current runtime and deals connections round-robin.
pub async fn serve_on_threads<M, S, B>(
    listener: TcpListener,
    tls: Option<Arc<TlsAcceptor>>,
    limits: ConnLimits,
    makes: Vec<M>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<()>
where
    M: Fn(Peer) -> S + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + Sync + 'static,
    S::Future: Send + Unpin + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Handoff = (std::net::TcpStream, SocketAddr, OwnedSemaphorePermit);
    let mut senders = Vec::new();
    let mut done = Vec::new();
    for (i, make) in makes.into_iter().enumerate() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Handoff>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (tls, stop, builder) = (tls.clone(), shutdown.clone(), http_builder(&limits));
        std::thread::Builder::new().name(format!("edge-{i}")).spawn(move || {
            rt.block_on(async move {
                let tracker = TaskTracker::new();
                while let Some((tcp, addr, slot)) = rx.recv().await {
                    let Ok(tcp) = TcpStream::from_std(tcp) else { continue };
                    let svc = make(Peer { addr, tls: tls.is_some() });
                    let conn =
                        serve_connection(tcp, addr, slot, tls.clone(), builder.clone(), svc, limits, stop.clone());
                    tracker.spawn(conn);
                }
                tracker.close();
                let _ = tokio::time::timeout(grace, tracker.wait()).await;
                let _ = done_tx.send(());
            });
        })?;
        senders.push(tx);
        done.push(done_rx);
    }
    let mut next = 0usize;
    accept_loop(listener, limits, &mut shutdown, |tcp, addr, slot| {
        let Ok(tcp) = tcp.into_std() else { return };
        let _ = senders[next % senders.len()].send((tcp, addr, slot));
        next = next.wrapping_add(1);
    })
    .await;
    drop(senders);
    if tokio::time::timeout(grace, futures_util::future::join_all(done)).await.is_err() {
        tracing::warn!("connections still open after {} s; closing them", grace.as_secs());
    }
    Ok(())
}

type Io = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

async fn drive<S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    io: Io,
    svc: Tracked<S>,
    conn: Arc<ConnState>,
    limits: ConnLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + Sync + 'static,
    S::Future: Send + Unpin + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(served);
    let every = limits.idle_timeout.min(limits.header_read_timeout) / 4;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(250)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut closing = false;
    loop {
        tokio::select! {
            res = served.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut shutdown), if !closing => {
                closing = true;
                served.as_mut().graceful_shutdown();
            }
            _ = tick.tick(), if !closing => {
                // Nothing sent at all (hyper waits for the first bytes to tell HTTP/1.1
                // from HTTP/2 before its own header timer starts): drop it.
                if conn.requests.load(Ordering::Relaxed) == 0 && conn.born.elapsed() >= limits.header_read_timeout {
                    return;
                }
                if conn.idle_for().is_some_and(|d| d >= limits.idle_timeout) {
                    closing = true;
                    served.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Resolves once `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
