//! rollgate's data plane: one HTTP/1.1 reverse proxy listener per environment, an immutable
//! routing table swapped atomically, and per-version metric windows that analysis and
//! automatic rollback read directly.
//!
//! # Phase chart
//!
//! Every request runs through these phases, in this order, in one function
//! (`phases::handle`); each phase may answer early. The edge phases (ip, rate limit, waf) run
//! only when the environment has an `[env.NAME.edge]` policy; each of their rules is in
//! `block` mode (answers early) or `count` mode (logs and counts the same decision, lets the
//! request go on). Request limits always block.
//!
//! ```text
//! accept ─▶ request id ─▶ limits ─────▶ ip ───────────▶ (geo) ─▶ rate limit ─▶ body ─────────▶
//!           keep a sane   request line  client address         per client IP  buffered once,
//!           X-Request-Id  + headers     (X-Forwarded-For       (IPv6: /64),   ≤ max body
//!           or make one   ≤ max bytes,  from trusted proxies   GCRA (429 +    (413), within
//!                         ≤ max fields  only); deny / allow    Retry-After)   body timeout
//!                         (431)         lists (403)                           (408)
//!
//!       ─▶ waf ──────────▶ (auth) ─▶ (per-key rate) ─▶ route ─────────▶ proxy ──────────────▶ record
//!          path, query,                                Host + longest   strip hop-by-hop,     when the body
//!          headers,                                    prefix (404),    X-Forwarded-*, pooled ends (or the
//!          cookies, body                               weighted version client; connect       client goes
//!          ≤ max_inspected                             (503), instance  failure → next        away): metrics
//!          (403                                        round-robin      instance (502), no    of (app,
//!          request_blocked)                                             headers in time (504) version), edge
//!                                                                                             counters, access log
//! ```
//!
//! `(geo)` (country allow/deny lists from a MaxMind database), `(auth)` (API key, HMAC
//! signature, replay window: 401) and `(per-key rate)` (429 per API key) are where the rest of
//! the edge work goes; they do not exist yet.
//!
//! Answers the gateway produces itself carry `{"code": ..., "message": ...}` JSON bodies; see
//! [`ProxyError`] for the table of statuses and codes.

mod access_log;
mod config;
mod edge;
mod error;
mod gateway;
mod metrics;
mod phases;
mod random;
mod record;
mod routes;

pub use config::GatewayConfig;
pub use edge::{EdgeCounts, EdgeError, EdgePolicy, EdgeRule};
pub use error::{ErrorSource, GatewayError, ProxyError};
pub use gateway::Gateway;
pub use metrics::{Metrics, RETENTION_SECS, Sample, WindowStats};
pub use phases::REQUEST_ID;
pub use routes::{AppRoute, Backend, RouteHandle, RouteTable, Sticky, Upstream};
