//! The listener of one environment: binding, accepting, serving HTTP/1.1 connections through
//! the request phases, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};

use crate::access_log::{AccessLog, AccessLogWriter};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::phases::{self, Shared, UpstreamClient};
use crate::routes::RouteHandle;

/// Pending connections the kernel queues before `accept`; the OS default of 128 overflows
/// under connection bursts.
const LISTEN_BACKLOG: u32 = 1024;
/// Time allowed to write the access log's last lines at shutdown.
const ACCESS_LOG_CLOSE: Duration = Duration::from_secs(5);
/// How often the rate limiter forgets clients whose budget is full again, so that its memory
/// tracks recent clients instead of growing with every address ever seen.
const RATE_LIMIT_SWEEP: Duration = Duration::from_secs(30);
/// hyper's smallest allowed connection buffer.
const MIN_CONN_BUFFER: usize = 8192;
/// hyper's header-field cap when not configured (kept on the stack, hence not raised lightly).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// One environment's HTTP/1.1 reverse proxy listener.
pub struct Gateway {
    config: GatewayConfig,
    listener: TcpListener,
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
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(bind_error)?;
        // Lets a restarted gateway take its port back while old connections sit in TIME_WAIT.
        socket.set_reuseaddr(true).map_err(bind_error)?;
        socket.bind(addr).map_err(bind_error)?;
        let listener = socket.listen(LISTEN_BACKLOG).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;

        let metrics = Metrics::new();
        let access_log = match &config.access_log {
            Some(path) => Some(AccessLog::open(path, metrics.clone())?),
            None => None,
        };
        tracing::info!(env = %config.env, addr = %local_addr, "gateway listening");
        Ok(Gateway {
            config,
            listener,
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
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let Gateway {
            config,
            listener,
            local_addr,
            routes,
            metrics,
            access_log,
        } = self;
        let (access_log, writer) = match access_log {
            Some((log, writer)) => (Some(log), Some(writer)),
            None => (None, None),
        };
        let grace = config.shutdown_grace;
        let env: Arc<str> = Arc::from(config.env.as_str());
        let shared = Arc::new(Shared {
            env: Arc::clone(&env),
            client: upstream_client(&config),
            config,
            routes,
            metrics,
            access_log,
        });

        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(shared.config.header_read_timeout)
            // A hard ceiling on what one connection buffers; the precise limit, with a JSON
            // answer and a log line, is the limits phase.
            .max_buf_size(
                shared
                    .config
                    .max_header_bytes
                    .saturating_mul(2)
                    .max(MIN_CONN_BUFFER),
            );
        if shared.config.max_headers > HYPER_DEFAULT_MAX_HEADERS {
            http.max_headers(shared.config.max_headers.saturating_mul(2));
        }
        let sweeper = shared
            .config
            .edge
            .clone()
            .filter(|edge| edge.has_rate_limit())
            .map(|edge| {
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(RATE_LIMIT_SWEEP);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        edge.retain_recent();
                    }
                })
            });
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);

        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
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
            let shared = Arc::clone(&shared);
            let service = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(phases::handle(shared, peer, request).await) }
            });
            let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(client = %peer, error = %err, "client connection ended with an error");
                }
            });
        }

        drop(listener);
        tracing::info!(env = %env, addr = %local_addr, "gateway stopping; draining connections");
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(env = %env, grace = ?grace, "connections still open after the shutdown grace");
        }
        if let Some(sweeper) = sweeper {
            sweeper.abort();
        }
        drop(shared);
        if let Some(writer) = writer {
            writer.close(ACCESS_LOG_CLOSE).await;
        }
        Ok(())
    }
}

fn upstream_client(config: &GatewayConfig) -> UpstreamClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(config.idle_pool_timeout)
        .build(connector)
}
