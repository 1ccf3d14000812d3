//! Settings of one gateway listener and their defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings of one environment's gateway listener.
///
/// Defaults: listen `127.0.0.1:0` (the OS picks a port), env `default`, no access log,
/// connect timeout 2 s, upstream timeout 30 s, header read timeout 10 s, body limit 8 MiB,
/// upstream idle keep-alive 30 s, shutdown grace 10 s.
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
    /// Limit on reading a client's request headers; slow clients are disconnected.
    pub header_read_timeout: Duration,
    /// Request bodies are buffered (so a request can be retried) up to this many bytes;
    /// larger bodies get 413 `body_too_large`.
    pub max_body_bytes: usize,
    /// Idle upstream keep-alive connections are closed after this long.
    pub idle_pool_timeout: Duration,
    /// After shutdown is requested, in-flight requests get this long to finish.
    pub shutdown_grace: Duration,
    /// A request header naming an alias (`green`, `blue`, `live`) that sends the request to
    /// that alias's version whatever the weights, so testers can reach a candidate before it
    /// gets user traffic. `None` (the default) disables it.
    pub override_header: Option<http::HeaderName>,
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
            max_body_bytes: 8 * 1024 * 1024,
            idle_pool_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            override_header: None,
        }
    }
}
