//! Settings of one gateway listener and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rollgate_core::config::edge::EdgeConfig;

use crate::edge::{EdgeError, EdgePolicy};
use crate::keys::KeySource;

/// Settings of one environment's gateway listener.
///
/// Defaults: listen `127.0.0.1:0` (the OS picks a port), env `default`, no access log,
/// connect timeout 2 s, upstream timeout 30 s, header read timeout 10 s, headers at most
/// 32 KiB and 100 fields, body limit 8 MiB, body read timeout 30 s, send timeout 60 s,
/// upstream idle keep-alive 30 s, shutdown grace 10 s, no edge policy.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Environment name, for logs and the access log `env` field.
    pub env: String,
    /// Listen address; port 0 lets the OS pick (read it back with `Gateway::local_addr`).
    pub listen: SocketAddr,
    /// Access log file, JSON lines, appended; `None` writes no access log.
    pub access_log: Option<PathBuf>,
    /// Limit on opening a TCP connection to an instance; beyond it the next instance is tried.
    pub connect_timeout: Duration,
    /// Limit from forwarding a request to receiving the upstream's response headers, across
    /// all instances tried; beyond it the client gets 504 `upstream_timeout`.
    pub upstream_timeout: Duration,
    /// Limit on reading a client's request headers, counted from when the connection is ready
    /// for a request (new, or done with the previous one): slow clients and connections idle
    /// between requests are disconnected.
    pub header_read_timeout: Duration,
    /// Request line plus headers over this many bytes get 431 `headers_too_large`. The
    /// connection's read buffer is capped at twice this (at least 8 KiB): a client sending
    /// more without finishing its headers gets a bare 431 from the HTTP layer and is cut off.
    pub max_header_bytes: usize,
    /// Requests with more header fields than this get 431 `headers_too_large`. Above 100 the
    /// HTTP layer's own cap (otherwise 100, answered with a bare 431) is raised to twice this.
    pub max_headers: usize,
    /// Request bodies are buffered (so a request can be inspected and retried) up to this many
    /// bytes; larger bodies get 413 `body_too_large`.
    pub max_body_bytes: usize,
    /// Limit on receiving the whole request body once its headers are in; a client that
    /// trickles its body (slowloris) gets 408 `body_timeout` and the connection is closed.
    pub body_read_timeout: Duration,
    /// Limit on a client taking none of its answer while the gateway has bytes to send it (a
    /// client that stops reading holds its connection and the instance's); then the
    /// connection is closed.
    pub send_timeout: Duration,
    /// Idle upstream keep-alive connections are closed after this long.
    pub idle_pool_timeout: Duration,
    /// After shutdown is requested, in-flight requests get this long to finish.
    pub shutdown_grace: Duration,
    /// Threads serving this listener, each with its own single-threaded runtime and upstream
    /// connection pool (as nginx runs one worker process per core). `0` (the default) means
    /// one per CPU core the process may use.
    pub workers: usize,
    /// A request header naming an alias (`green`, `blue`, `live`) that sends the request to
    /// that alias's version whatever the weights, so testers can reach a candidate before it
    /// gets user traffic. `None` (the default) disables it.
    pub override_header: Option<http::HeaderName>,
    /// The edge phases' policy (client IP, IP lists, rate limit, WAF); `None` (the default)
    /// skips those phases. Shared: a gateway built from a clone shares its rate limit state.
    pub edge: Option<Arc<EdgePolicy>>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            env: "default".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            access_log: None,
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 8 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            idle_pool_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            workers: 0,
            override_header: None,
            edge: None,
        }
    }
}

impl GatewayConfig {
    /// Applies an environment's `[env.NAME.edge]`: its request limits to the listener settings
    /// and a new [`EdgePolicy`] (with its own, empty rate-limit state). `None` leaves the
    /// settings as they are.
    pub fn with_edge(self, edge: Option<&EdgeConfig>) -> Result<Self, EdgeError> {
        self.with_edge_keys(edge, None)
    }

    /// [`GatewayConfig::with_edge`] with another source of API keys and signing secrets (the
    /// control plane's secret store), asked after the keys `rollgate.toml` references.
    pub fn with_edge_keys(
        mut self,
        edge: Option<&EdgeConfig>,
        keys: Option<Arc<dyn KeySource>>,
    ) -> Result<Self, EdgeError> {
        let Some(edge) = edge else {
            return Ok(self);
        };
        let limits = &edge.limits;
        self.max_header_bytes = limits.max_header_bytes;
        self.max_headers = limits.max_headers;
        self.max_body_bytes = limits.max_body_bytes;
        self.header_read_timeout = limits.header_timeout;
        self.body_read_timeout = limits.body_timeout;
        self.send_timeout = limits.send_timeout;
        self.edge = Some(Arc::new(EdgePolicy::with_keys(edge, keys)?));
        Ok(self)
    }
}
