//! rollgate's data plane: one HTTP/1.1 reverse proxy listener per environment, an immutable
//! routing table swapped atomically, and per-version metric windows that analysis and
//! automatic rollback read directly.
//!
//! # Phase chart
//!
//! Every request runs through these phases, in this order, in one function
//! (`phases::handle`); each phase may answer early. The edge phases (ip, geo, rate limit, waf,
//! auth, key rate) run only when the environment has an `[env.NAME.edge]` policy; each of
//! their rules is in `block` mode (answers early) or `count` mode (logs and counts the same
//! decision, lets the request go on). Request limits always block.
//!
//! ```text
//! accept ─▶ request id ─▶ limits ─────▶ ip ───────────▶ geo ──────▶ rate limit ─▶ body ─────────▶
//!           keep a sane   request line  client address  country    per client IP  buffered once,
//!           X-Request-Id  + headers     (X-Forwarded-For allow or  (IPv6: /64),   ≤ max body
//!           or make one   ≤ max bytes,  from trusted     deny list GCRA (429 +    (413), within
//!                         ≤ max fields  proxies only);   (.mmdb,   Retry-After)   body timeout
//!                         (431)         deny / allow     403)                     (408)
//!                                       lists (403)
//!
//!       ─▶ waf ──────────▶ auth ─────────▶ key rate ─▶ route ─────────▶ proxy ──────────────▶ record
//!          path, query,    per-route:      per key id   Host + longest   strip hop-by-hop,     when the body
//!          headers,        none, API key   GCRA (429    prefix (404),    X-Forwarded-*, pooled ends (or the
//!          cookies, body   (hashed), HMAC  key_rate_    weighted version client; connect       client goes
//!          ≤ max_inspected signature +     limited +    (503), instance  failure → next        away): metrics
//!          (403            window + replay Retry-After) round-robin      instance (502), no    of (app,
//!          request_blocked) (401); sets                                  headers in time (504) version), edge
//!                          X-Rollgate-Key-Id                                                   counters, access log
//! ```
//!
//! The auth phase takes keys from a [`KeySource`]: the keys `rollgate.toml` references by
//! environment variable ([`StaticKeys`]) and rollgate's secret store (`SecretKeys` in the
//! control crate). The canonical request that
//! signatures cover is defined once, in `rollgate_core::signing`.
//!
//! Answers the gateway produces itself carry `{"code": ..., "message": ...}` JSON bodies; see
//! [`ProxyError`] for the table of statuses and codes.

mod access_log;
mod auth;
mod config;
mod edge;
mod error;
mod gateway;
mod geo;
mod head;
mod keys;
mod metrics;
mod phases;
mod random;
mod record;
mod routes;
mod server;
mod timer;
mod upstream;

pub use auth::{AuthFailure, Authenticator, Credentials};
pub use config::GatewayConfig;
pub use edge::{EdgeCounts, EdgeError, EdgePolicy, EdgeRule};
pub use error::{ErrorSource, GatewayError, ProxyError};
pub use gateway::Gateway;
pub use keys::{KeyError, KeyMaterial, KeySource, MIN_SECRET_LEN, StaticKeys};
pub use metrics::{Metrics, RETENTION_SECS, Sample, WindowStats};
pub use phases::REQUEST_ID;
pub use routes::{AppRoute, Backend, RouteHandle, RouteTable, Sticky, Upstream};
