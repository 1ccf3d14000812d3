//! The listener of one environment: binding, accepting, serving HTTP/1.1 connections through
//! the request phases, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::access_log::{AccessLog, AccessLogWriter};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::phases::{self, Shared};
use crate::routes::RouteHandle;
use crate::server;
use crate::upstream::UpstreamPool;

/// Pending connections the kernel queues before `accept`; the OS default of 128 overflows
/// under connection bursts.
const LISTEN_BACKLOG: u32 = 1024;
/// Time allowed to write the access log's last lines at shutdown.
const ACCESS_LOG_CLOSE: Duration = Duration::from_secs(5);
/// The upstream pool is swept every half idle timeout, but not more often than this.
const POOL_SWEEP_MIN: Duration = Duration::from_millis(100);
/// How often the rate limiter forgets clients whose budget is full again, so that its memory
/// tracks recent clients instead of growing with every address ever seen.
const RATE_LIMIT_SWEEP: Duration = Duration::from_secs(30);

/// One environment's HTTP/1.1 reverse proxy listener.
pub struct Gateway {
    config: GatewayConfig,
    /// One listening socket per serving thread (see [`bind_listeners`]).
    listeners: Vec<std::net::TcpListener>,
    local_addr: SocketAddr,
    routes: RouteHandle,
    metrics: Metrics,
    access_log: Option<(AccessLog, AccessLogWriter)>,
}

impl Gateway {
    /// Binds the listen address now, so [`Gateway::local_addr`] is known before serving, and
    /// opens the access log. The routing table starts empty. Must run inside a Tokio runtime.
    pub async fn bind(config: GatewayConfig) -> Result<Gateway, GatewayError> {
        let addr = config.listen;
        let bind_error = |source| GatewayError::Bind { addr, source };
        let workers = match config.workers {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        };
        let listeners = bind_listeners(addr, workers).map_err(bind_error)?;
        let local_addr = listeners
            .first()
            .ok_or_else(|| bind_error(std::io::Error::other("no listening socket")))?
            .local_addr()
            .map_err(bind_error)?;

        let metrics = Metrics::new();
        let access_log = match &config.access_log {
            Some(path) => Some(AccessLog::open(path, metrics.clone())?),
            None => None,
        };
        tracing::info!(env = %config.env, addr = %local_addr, "gateway listening");
        Ok(Gateway {
            config,
            listeners,
            local_addr,
            routes: RouteHandle::default(),
            metrics,
            access_log,
        })
    }

    /// The bound address, with the port the OS chose when the configured port was 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Handle to this gateway's routing table; cheap to clone, valid after `serve` ends.
    pub fn routes(&self) -> RouteHandle {
        self.routes.clone()
    }

    /// This gateway's per-version traffic windows; cheap to clone.
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits for in-flight requests,
    /// for at most `shutdown_grace` (default 10 s); connections still open then are dropped.
    /// The access log is flushed before returning. Accept errors (such as running out of file
    /// descriptors) are logged and retried, never fatal.
    ///
    /// Connections are served by [`GatewayConfig::workers`] threads, each running its own
    /// single-threaded Tokio runtime that accepts from its own listening socket (on Linux the
    /// kernel spreads new connections over them), serves its connections and keeps its own
    /// upstream connection pool. A request and the upstream connection serving it then live
    /// on one thread: none of the cross-thread task wake-ups a shared work-stealing runtime
    /// makes on every proxied request (measured in `docs/benchmarks.md`). What the workers
    /// share (routing table, metrics, rate limits, access log) is thread-safe.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let Gateway {
            config,
            listeners,
            local_addr,
            routes,
            metrics,
            access_log,
        } = self;
        let (access_log, writer) = match access_log {
            Some((log, writer)) => (Some(log), Some(writer)),
            None => (None, None),
        };
        let env: Arc<str> = Arc::from(config.env.as_str());
        let worker_error = |source| GatewayError::Worker {
            env: config.env.clone(),
            source,
        };
        let count = listeners.len();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (ended, mut worker_ended) = tokio::sync::mpsc::unbounded_channel();
        let mut threads = Vec::with_capacity(count);
        for (index, listener) in listeners.into_iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(worker_error)?;
            let shared = Arc::new(Shared {
                env: Arc::clone(&env),
                upstream: UpstreamPool::new(config.connect_timeout, config.idle_pool_timeout),
                config: config.clone(),
                routes: routes.clone(),
                metrics: metrics.clone(),
                access_log: access_log.clone(),
            });
            let worker = Worker {
                shared,
                stopped: stopped.clone(),
                open: metrics.worker_connections(),
            };
            let ended = ended.clone();
            let thread = std::thread::Builder::new()
                .name(format!("gateway-{index}"))
                .spawn(move || {
                    let result = runtime.block_on(worker.run(listener));
                    // The runtime's own tasks (connections past the grace) end here.
                    drop(runtime);
                    let _ = ended.send((index, result));
                })
                .map_err(worker_error);
            match thread {
                Ok(thread) => threads.push(thread),
                Err(err) => {
                    // Stop the workers already started before reporting.
                    let _ = stop.send(true);
                    return Err(err);
                }
            }
        }
        drop(ended);
        let sweeper = config
            .edge
            .clone()
            .filter(|edge| edge.has_rate_limit())
            .map(|edge| every(RATE_LIMIT_SWEEP, move || edge.retain_recent()));

        let mut shutdown = std::pin::pin!(shutdown);
        let mut running = count;
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                ended = worker_ended.recv() => match ended {
                    // A worker only returns early when it could not serve at all.
                    Some((index, result)) => {
                        running -= 1;
                        if let Err(err) = result {
                            tracing::error!(env = %env, worker = index, error = %err, "gateway worker stopped");
                        }
                        if running == 0 {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        tracing::info!(env = %env, addr = %local_addr, "gateway stopping; draining connections");
        let _ = stop.send(true);
        // Each worker drains for at most the grace period; join them off the runtime.
        let joined = tokio::task::spawn_blocking(move || {
            threads
                .into_iter()
                .filter_map(|thread| thread.join().err())
                .count()
        })
        .await;
        if let Ok(panicked) = joined
            && panicked > 0
        {
            tracing::error!(env = %env, panicked, "gateway workers panicked");
        }
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        if let Some(writer) = writer {
            drop(access_log);
            writer.close(ACCESS_LOG_CLOSE).await;
        }
        Ok(())
    }
}

/// One serving thread's state.
struct Worker {
    shared: Arc<Shared>,
    stopped: tokio::sync::watch::Receiver<bool>,
    /// This worker's open client connections, as the metrics report them.
    open: Arc<AtomicU64>,
}

impl Worker {
    /// Accepts and serves connections until told to stop, then drains them for at most the
    /// shutdown grace. Runs inside this worker's own runtime.
    async fn run(mut self, listener: std::net::TcpListener) -> Result<(), std::io::Error> {
        let listener = TcpListener::from_std(listener)?;
        let env = Arc::clone(&self.shared.env);
        // Every connection task holds a sender; when all are gone, the channel says so.
        let (open_tx, mut all_closed) = tokio::sync::mpsc::channel::<()>(1);
        // Closes upstream connections left idle past the pool's idle timeout.
        let pool = Arc::clone(&self.shared.upstream);
        let sweep_every = (self.shared.config.idle_pool_timeout / 2).max(POOL_SWEEP_MIN);
        let sweeper = every(sweep_every, move || pool.sweep());
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                changed = self.stopped.wait_for(|stop| *stop) => {
                    // Told to stop, or the gateway is gone: either way stop accepting.
                    let _ = changed;
                    break;
                }
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(env = %env, error = %err, "accept failed");
                        // Usually out of file descriptors: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
            let connection = server::serve_connection(
                Arc::clone(&self.shared),
                stream,
                phases::Peer::new(peer),
                self.stopped.clone(),
            );
            let open = (OpenConnection::count(&self.open), open_tx.clone());
            tokio::spawn(async move {
                let _open = open;
                connection.await;
            });
        }
        drop(listener);
        drop(open_tx);
        sweeper.abort();
        let grace = self.shared.config.shutdown_grace;
        // Idle connections close as they see the stop; busy ones after their answer.
        if tokio::time::timeout(grace, all_closed.recv())
            .await
            .is_err()
        {
            tracing::warn!(env = %env, grace = ?grace, "connections still open after the shutdown grace");
        }
        Ok(())
    }
}

/// One client connection in a worker's open-connections gauge, for as long as it lives (also
/// when its task is dropped with the runtime at shutdown).
struct OpenConnection(Arc<AtomicU64>);

impl OpenConnection {
    fn count(open: &Arc<AtomicU64>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(open))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The listening sockets of `count` serving threads on `addr`.
///
/// On Linux, with more than one thread, each thread gets its own socket in a `SO_REUSEPORT`
/// group, and the kernel spreads new connections over them evenly (by a hash of the
/// connection's addresses). Threads accepting from one shared socket instead take connections
/// in bursts: whichever thread wakes first drains the queue, and 64 keep-alive connections
/// opened at once were split 64/0, 56/8, 53/11 between two threads, for their whole life
/// (`connections_opened_at_once_are_spread_over_the_workers` without the group).
///
/// A group only admits sockets that set `SO_REUSEPORT` too, so the port is first claimed by an
/// ordinary bind: a port another program (or a second rollgate) listens on is an error here
/// as it is without the group. That bind also picks the port when `addr`'s is 0. It is released
/// just before the group binds the same port; another program taking the port in that instant
/// makes the group's bind fail, never join it.
fn bind_listeners(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let socket = |addr: SocketAddr, group: bool| -> std::io::Result<TcpSocket> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        // Lets a restarted gateway take its port back while old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true)?;
        if group {
            socket.set_reuseport(true)?;
        }
        socket.bind(addr)?;
        Ok(socket)
    };
    let group = cfg!(target_os = "linux") && count > 1;
    if !group {
        let listener = socket(addr, false)?.listen(LISTEN_BACKLOG)?.into_std()?;
        return (0..count).map(|_| listener.try_clone()).collect();
    }
    let claimed = socket(addr, false)?;
    let addr = claimed.local_addr()?;
    drop(claimed);
    (0..count)
        .map(|_| socket(addr, true)?.listen(LISTEN_BACKLOG)?.into_std())
        .collect()
}

/// Runs `work` on the current runtime every `period` (the first time at once; a late tick is
/// not made up for) until the returned task is aborted.
fn every(period: Duration, work: impl Fn() + Send + 'static) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            work();
        }
    })
}
