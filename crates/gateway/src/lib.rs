//! rollgate's data plane: one HTTP/1.1 reverse proxy listener per environment, an immutable
//! routing table swapped atomically, and per-version metric windows that analysis and
//! automatic rollback read directly.
//!
//! # Phase chart
//!
//! Every request runs through these phases, in this order, in one function
//! (`phases::handle`); each phase may answer early:
//!
//! ```text
//! accept ─▶ request id ─▶ route ─────────▶ proxy ───────────────────────▶ record
//!           keep a sane   Host + longest   buffer body (413), strip       when the body ends
//!           X-Request-Id  prefix (404),    hop-by-hop, X-Forwarded-*,     (or the client goes
//!           or make one   weighted version  pooled client; connect        away): metrics of
//!                         (503), instance  failure → next instance (502), (app, version) and
//!                         round-robin      no headers in time (504)       the access log
//! ```
//!
//! Answers the gateway produces itself carry `{"code": ..., "message": ...}` JSON bodies; see
//! [`ProxyError`] for the table of statuses and codes.

mod access_log;
mod config;
mod error;
mod gateway;
mod metrics;
mod phases;
mod random;
mod record;
mod routes;

pub use config::GatewayConfig;
pub use error::{ErrorSource, GatewayError, ProxyError};
pub use gateway::Gateway;
pub use metrics::{Metrics, RETENTION_SECS, Sample, WindowStats};
pub use phases::REQUEST_ID;
pub use routes::{AppRoute, Backend, RouteHandle, RouteTable, Sticky, Upstream};
