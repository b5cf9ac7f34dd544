//! The edge's connections to instances: HTTP/1.1 keep-alive, kept per address.
//! Each edge thread has its own pool, so a request takes a connection without
//! crossing threads; a connection goes back once its response has been read to
//! the end (an upgraded one never does).

use super::forward::LimitedBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// Idle connections kept per instance address.
const MAX_IDLE_PER_ADDR: usize = 256;
/// How long a connect to an instance may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Sender = SendRequest<LimitedBody>;

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Nothing accepted the connection (refused, unreachable, timed out).
    #[error("connect: {0}")]
    Connect(std::io::Error),
    /// The connection failed while the request was sent or answered.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// Idle keep-alive connections, by address.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
}

/// A connection lent for one exchange; [`Lease::release`] returns it.
pub struct Lease {
    sender: Option<Sender>,
    addr: SocketAddr,
    pool: Weak<Pool>,
}

impl Lease {
    /// Gives the connection back for the next request (the response was read to the end).
    pub fn release(mut self) {
        let (Some(sender), Some(pool)) = (self.sender.take(), self.pool.upgrade()) else { return };
        if sender.is_closed() {
            return;
        }
        let mut idle = pool.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(self.addr).or_default();
        if list.len() < MAX_IDLE_PER_ADDR {
            list.push(sender);
        }
    }
}

impl Pool {
    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(&addr)?;
        while let Some(s) = list.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(addr: SocketAddr) -> Result<Sender, SendError> {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => return Err(SendError::Connect(std::io::ErrorKind::TimedOut.into())),
        };
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "connection to an instance ended");
            }
        });
        Ok(sender)
    }

    /// Sends a request to `addr` on an idle connection, or a new one.
    pub async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<LimitedBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        // An idle connection the instance closed meanwhile hands the request back
        // unsent: the next one (or a new connection) takes it.
        while let Some(mut sender) = self.checkout(addr) {
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, self.lease(sender, addr))),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = Self::connect(addr).await?;
        let resp = sender.send_request(req).await?;
        Ok((resp, self.lease(sender, addr)))
    }

    fn lease(self: &Arc<Self>, sender: Sender, addr: SocketAddr) -> Lease {
        Lease { sender: Some(sender), addr, pool: Arc::downgrade(self) }
    }
}
