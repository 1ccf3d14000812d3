//! The upstream connection pool of one gateway worker: idle HTTP/1.1 keep-alive connections per
//! instance address, handed out most recently used first, given back when the response body
//! has been read to its end, and closed after [`GatewayConfig::idle_pool_timeout`] unused.
//!
//! Written on hyper's connection API rather than using hyper-util's pooled `Client` because
//! the gateway needs much less than that client does, and paid for the rest on every request:
//! the pool there is keyed by scheme and authority, hashed with SipHash one lowercased byte at
//! a time on every checkout and every return, behind boxed futures and a oneshot channel per
//! checkout (about a fifth of the gateway's own instructions per proxied request, counted with
//! `bench/gateway_instructions.sh`). Here the key is the instance's socket address, the pool
//! belongs to one thread (its lock is never contended), and a request that a closing pooled
//! connection did not take comes back whole (hyper's `try_send_request`), so it can go out on
//! another connection without a copy.
//!
//! [`GatewayConfig::idle_pool_timeout`]: crate::GatewayConfig::idle_pool_timeout

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustc_hash::FxHashMap;

/// The request body type the gateway sends: the buffered client body.
pub(crate) type UpstreamBody = Full<Bytes>;
type Sender = SendRequest<UpstreamBody>;

/// Why a request did not get a response head from the instance.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// No connection: refused, unreachable, or not established within the connect timeout.
    /// The request certainly did not reach the instance.
    #[error("connect to {addr} failed: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The instance closed the connection after the request went out and before any
    /// response. On a reused keep-alive connection this is usually the app closing it as
    /// idle just as it was handed out.
    #[error("connection closed before a response: {0}")]
    ClosedBeforeResponse(hyper::Error),
    /// Any other failure after the request went out (malformed response, reset, …).
    #[error("{0}")]
    Failed(hyper::Error),
}

impl UpstreamError {
    /// True when the request certainly did not reach the instance, so that sending it to
    /// another one cannot run it twice.
    pub(crate) fn never_sent(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. })
    }
}

/// One worker's idle connections, by instance address (hashed with FxHash: the addresses come
/// from the routing table, not from clients).
pub(crate) struct UpstreamPool {
    idle: Mutex<FxHashMap<SocketAddr, Vec<Idle>>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl UpstreamPool {
    pub(crate) fn new(connect_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(UpstreamPool {
            idle: Mutex::new(FxHashMap::default()),
            connect_timeout,
            idle_timeout,
        })
    }

    /// Sends `request` (origin-form URI, `Host` set) to the instance at `addr` on an idle
    /// connection, or on a new one when none is left or `fresh` asks for one. Returns the
    /// response head and the connection's lease, to be given back when the response body has
    /// ended.
    pub(crate) async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut request: Request<UpstreamBody>,
        fresh: bool,
    ) -> Result<(http::Response<Incoming>, Lease), UpstreamError> {
        while let Some(mut sender) = (!fresh).then(|| self.checkout(addr)).flatten() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, self.lease(addr, sender))),
                Err(mut err) => match err.take_message() {
                    // The connection was closing and did not take the request: next one.
                    Some(unsent) => request = unsent,
                    None => return Err(classify(err.into_error())),
                },
            }
        }
        let mut sender = self.connect(addr).await?;
        match sender.try_send_request(request).await {
            Ok(response) => Ok((response, self.lease(addr, sender))),
            Err(mut err) => match err.take_message() {
                // A brand-new connection that closed before taking the request.
                Some(_) => Err(UpstreamError::Connect {
                    addr,
                    reason: err.into_error().to_string(),
                }),
                None => Err(classify(err.into_error())),
            },
        }
    }

    /// The most recently returned idle connection to `addr` that can take a request now;
    /// closed, not ready and expired ones met on the way are dropped (which closes them).
    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(entry) = list.pop() {
            if entry.sender.is_ready() && now.duration_since(entry.since) < self.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Sender, UpstreamError> {
        let failed = |reason: String| UpstreamError::Connect { addr, reason };
        let stream =
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
            {
                Err(_elapsed) => {
                    return Err(failed(format!(
                        "timed out after {:?}",
                        self.connect_timeout
                    )));
                }
                Ok(Err(err)) => return Err(failed(err.to_string())),
                Ok(Ok(stream)) => stream,
            };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%addr, error = %err, "cannot set TCP_NODELAY upstream");
        }
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| failed(err.to_string()))?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(%addr, error = %err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn lease(self: &Arc<Self>, addr: SocketAddr, sender: Sender) -> Lease {
        Lease {
            pool: Arc::clone(self),
            addr,
            sender,
        }
    }

    /// Puts a connection that is ready for its next request back in the idle list.
    fn put_back(&self, addr: SocketAddr, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.entry(addr).or_default().push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Closes the connections idle for longer than the idle timeout or closed by the
    /// instance, and forgets addresses left with none (instances that were stopped).
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|_, list| {
            list.retain(|entry| {
                !entry.sender.is_closed() && now.duration_since(entry.since) < self.idle_timeout
            });
            !list.is_empty()
        });
    }

    /// Idle connections held, for tests.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.values().map(Vec::len).sum()
    }
}

/// A connection lent to one request, from its response head until its body has ended.
pub(crate) struct Lease {
    pool: Arc<UpstreamPool>,
    addr: SocketAddr,
    sender: Sender,
}

impl Lease {
    /// Gives the connection back once its response body was read to the end. HTTP/1.1 carries
    /// one exchange at a time: the connection can take the next request once its task has
    /// seen the end of the body, usually already; if not, a small task waits for that.
    /// A lease dropped without this (the client went away mid-body) closes the connection,
    /// whose unread rest of the body would otherwise corrupt the next exchange.
    pub(crate) fn release(self) {
        let Lease {
            pool,
            addr,
            mut sender,
        } = self;
        if sender.is_ready() {
            pool.put_back(addr, sender);
        } else if !sender.is_closed() {
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.put_back(addr, sender);
                }
            });
        }
    }
}

fn classify(err: hyper::Error) -> UpstreamError {
    if err.is_incomplete_message() {
        UpstreamError::ClosedBeforeResponse(err)
    } else {
        UpstreamError::Failed(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An upstream that answers "ok" and counts the connections it accepted.
    async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn get(addr: SocketAddr) -> Request<UpstreamBody> {
        Request::builder()
            .uri("/x")
            .header(http::header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))
            .expect("request")
    }

    /// One whole exchange: send, read the body to its end, give the connection back, and let
    /// the connection task settle as the next request would.
    async fn exchange(pool: &Arc<UpstreamPool>, addr: SocketAddr, fresh: bool) -> Bytes {
        let (response, lease) = pool.send(addr, get(addr), fresh).await.expect("response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        lease.release();
        tokio::task::yield_now().await;
        body
    }

    #[tokio::test]
    async fn a_connection_is_reused_after_its_body_ends() {
        let (addr, accepted) = upstream().await;
        let pool = UpstreamPool::new(Duration::from_secs(2), Duration::from_secs(30));
        for _ in 0..5 {
            assert_eq!(&exchange(&pool, addr, false).await[..], b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn fresh_asks_for_a_new_connection() {
        let (addr, accepted) = upstream().await;
        let pool = UpstreamPool::new(Duration::from_secs(2), Duration::from_secs(30));
        for fresh in [false, false, true] {
            exchange(&pool, addr, fresh).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Both connections are idle now: the pool keeps them for the next requests.
        assert_eq!(pool.idle_count(), 2);
    }

    #[tokio::test]
    async fn a_lease_dropped_mid_body_is_not_reused() {
        let (addr, accepted) = upstream().await;
        let pool = UpstreamPool::new(Duration::from_secs(2), Duration::from_secs(30));
        let (_response, lease) = pool.send(addr, get(addr), false).await.expect("response");
        drop(lease);
        exchange(&pool, addr, false).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_swept() {
        let (addr, _) = upstream().await;
        let pool = UpstreamPool::new(Duration::from_secs(2), Duration::from_millis(50));
        exchange(&pool, addr, false).await;
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(80)).await;
        pool.sweep();
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_refused_connection_is_never_sent() {
        // Bind and drop: the port is (almost certainly) closed now.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("address");
        let pool = UpstreamPool::new(Duration::from_secs(2), Duration::from_secs(30));
        match pool.send(addr, get(addr), false).await {
            Ok(_) => panic!("a closed port answered"),
            Err(err) => assert!(err.never_sent(), "{err}"),
        }
    }
}
