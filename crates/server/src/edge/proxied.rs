//! What the edge holds while a response streams: the instance's busy mark, the
//! open-stream gauge, the byte counters and the access log line (written when
//! the body ends, with its bytes and duration), and the revocation token that
//! cuts the stream when the key or share is revoked. Also the tunnel of an
//! upgraded connection (WebSockets).

use super::access_log::AccessLog;
use super::pool::Lease;
use super::BoxError;
use crate::activity::Busy;
use crate::metrics::Metrics;
use crate::quotas::Slot;
use bytes::Bytes;
use http::{Method, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// What the access log line of a request says.
pub struct LogContext {
    pub started: Instant,
    pub request_id: http::HeaderValue,
    pub peer: SocketAddr,
    pub method: Method,
    pub version: Version,
    /// Host as the client sent it (lowercased).
    pub host: String,
    /// Path (only filled when the access log is on).
    pub path: String,
    pub instance: Option<String>,
}

impl LogContext {
    /// Moves the context out (for the body that outlives the handler).
    pub fn take(&mut self) -> LogContext {
        LogContext {
            started: self.started,
            request_id: self.request_id.clone(),
            peer: self.peer,
            method: self.method.clone(),
            version: self.version,
            host: std::mem::take(&mut self.host),
            path: std::mem::take(&mut self.path),
            instance: self.instance.take(),
        }
    }

    /// One line: time, request id, client, request, status, bytes in and out,
    /// milliseconds to headers and in all, instance.
    pub fn line(&self, status: u16, rx: u64, tx: u64, headers_after: Option<Duration>) -> String {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let total = self.started.elapsed();
        let ttfb = headers_after.unwrap_or(total);
        format!(
            "{} {} {} \"{} {}{} {:?}\" {status} {rx} {tx} {:.3} {:.3} {}",
            berth_core::time::format_rfc3339_millis(now_ms),
            self.request_id.to_str().unwrap_or("-"),
            self.peer.ip(),
            self.method,
            self.host,
            self.path,
            self.version,
            ttfb.as_secs_f64() * 1000.0,
            total.as_secs_f64() * 1000.0,
            self.instance.as_deref().unwrap_or("-"),
        )
    }
}

/// A streamed response body from an instance.
pub struct ProxiedBody {
    inner: Incoming,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    sent: u64,
    received: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
    log: LogContext,
    status: u16,
    headers_after: Duration,
    access: Option<Arc<AccessLog>>,
    /// The connection to the instance, returned to the pool once the body ended.
    lease: Option<Lease>,
    ended: bool,
    _busy: (Busy, Slot),
}

impl ProxiedBody {
    /// Wraps an instance's response body; the line goes to `access` when it ends.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        inner: Incoming,
        busy: (Busy, Slot),
        revoked: CancellationToken,
        metrics: Arc<Metrics>,
        received: Arc<AtomicU64>,
        log: LogContext,
        status: u16,
        access: Option<Arc<AccessLog>>,
        lease: Lease,
    ) -> Self {
        metrics.edge.open_streams.inc();
        let headers_after = log.started.elapsed();
        Self {
            inner,
            cancelled: Box::pin(revoked.cancelled_owned()),
            sent: 0,
            received,
            metrics,
            log,
            status,
            headers_after,
            access,
            lease: Some(lease),
            ended: false,
            _busy: busy,
        }
    }
}

impl Body for ProxiedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.cancelled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("access was revoked".into())));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    self.sent += d.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
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

impl Drop for ProxiedBody {
    fn drop(&mut self) {
        // Read to the end: the connection can carry the next request.
        if self.ended || self.inner.is_end_stream() {
            if let Some(lease) = self.lease.take() {
                lease.release();
            }
        }
        let edge = &self.metrics.edge;
        edge.open_streams.dec();
        let received = self.received.load(Ordering::Relaxed);
        edge.sent_bytes.inc_by(self.sent);
        edge.received_bytes.inc_by(received);
        if let Some(access) = &self.access {
            access.line(self.log.line(self.status, received, self.sent, Some(self.headers_after)));
        }
    }
}

/// Copies an upgraded connection both ways until either side closes it or the
/// access is revoked. The instance stays busy meanwhile.
pub async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    busy: (Busy, Slot),
    revoked: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let (client, upstream) = tokio::join!(client, upstream);
    let (Ok(client), Ok(upstream)) = (client, upstream) else { return };
    metrics.edge.open_websockets.inc();
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    tokio::select! {
        res = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
            if let Ok((up, down)) = res {
                metrics.edge.received_bytes.inc_by(up);
                metrics.edge.sent_bytes.inc_by(down);
            }
        }
        _ = revoked.cancelled() => {}
    }
    metrics.edge.open_websockets.dec();
    drop(busy);
}
