//! The record phase: what is known about one request as it moves through the phases, and the
//! response body wrapper that records it into the metrics and the access log when the body
//! ends, fails, or is dropped because the client went away.

use std::borrow::Cow;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;

use rollgate_core::config::edge::EdgeMode;

use crate::access_log::Entry;
use crate::edge::{EdgeRule, MAX_LOGGED_DECISIONS};
use crate::metrics::Sample;
use crate::phases::{Peer, Shared};
use crate::routes::InFlightGuard;
use crate::upstream::{BodyError, UpstreamBody};

/// Status recorded when the client goes away before any response was produced (nginx's
/// "client closed request").
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// Everything the record phase needs about one request. Recording happens exactly once: at
/// the end of the response body, or on drop if the request is abandoned earlier.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    started: Instant,
    arrived: SystemTime,
    pub(crate) request_id: String,
    method: http::Method,
    path: String,
    /// The client as the ip phase resolved it (the socket peer until then).
    pub(crate) client: IpAddr,
    /// The socket peer, formatted once per connection.
    peer: Peer,
    pub(crate) app: Option<Arc<str>>,
    pub(crate) version: Option<u64>,
    pub(crate) instance: Option<Arc<str>>,
    pub(crate) status: u16,
    /// Code of an answer the gateway produced itself.
    pub(crate) error: Option<&'static str>,
    pub(crate) upstream_failure: bool,
    /// The key id the auth phase verified; logged, never the key or signature.
    pub(crate) key_id: Option<String>,
    /// Keeps the chosen instance counted in flight until the response is over.
    pub(crate) in_flight: Option<InFlightGuard>,
    /// Edge decisions (block or count) taken on this request, for the access log.
    edge: Vec<EdgeDecision>,
    done: bool,
}

/// One edge decision as the access log shows it: `{"rule": "waf.sqli", "action": "block",
/// "field": "query:id", "matched": "1' OR '1'='1"}`, plus `"crs": 942190` when one of the
/// OWASP CRS rules found it. `field` and `matched` are absent when the rule has none (a rate
/// limit); `matched` is already truncated and escaped by its producer.
#[derive(Debug, serde::Serialize)]
pub(crate) struct EdgeDecision {
    rule: &'static str,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    crs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<String>,
}

#[cfg(test)]
impl EdgeDecision {
    pub(crate) fn new(
        rule: &'static str,
        action: &'static str,
        crs: Option<u32>,
        field: Option<String>,
        matched: Option<String>,
    ) -> Self {
        EdgeDecision {
            rule,
            action,
            crs,
            field,
            matched,
        }
    }
}

impl Recorder {
    pub(crate) fn start(
        shared: Arc<Shared>,
        started: Instant,
        request_id: String,
        method: http::Method,
        path: &str,
        peer: Peer,
    ) -> Self {
        Self {
            shared,
            started,
            arrived: SystemTime::now(),
            request_id,
            method,
            path: path.to_owned(),
            client: peer.addr.ip(),
            peer,
            app: None,
            version: None,
            instance: None,
            status: CLIENT_CLOSED,
            error: None,
            upstream_failure: false,
            key_id: None,
            in_flight: None,
            edge: Vec::new(),
            done: false,
        }
    }

    /// Records an edge decision: counted in the metrics at once, and kept for the access log
    /// (up to [`MAX_LOGGED_DECISIONS`] per request). `counted = false` logs a further match of
    /// a rule already counted for this request, so counters count requests, not matches.
    pub(crate) fn decide(
        &mut self,
        rule: EdgeRule,
        mode: EdgeMode,
        counted: bool,
        field: Option<String>,
        matched: Option<String>,
    ) {
        self.decide_waf(rule, mode, counted, field, matched, None);
    }

    /// [`Recorder::decide`] for a WAF finding, with the CRS rule that made it, if one did.
    pub(crate) fn decide_waf(
        &mut self,
        rule: EdgeRule,
        mode: EdgeMode,
        counted: bool,
        field: Option<String>,
        matched: Option<String>,
        crs: Option<u32>,
    ) {
        if counted {
            self.shared.metrics.count_edge(rule, mode);
        }
        if self.edge.len() < MAX_LOGGED_DECISIONS {
            self.edge.push(EdgeDecision {
                rule: rule.as_str(),
                action: mode.as_str(),
                crs,
                field,
                matched,
            });
        }
    }

    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        // One clock read for the latency and the metrics' second.
        let now = Instant::now();
        let latency = now.saturating_duration_since(self.started);
        if let (Some(app), Some(version)) = (&self.app, self.version) {
            self.shared.metrics.record_at(
                app,
                version,
                Sample {
                    status: self.status,
                    latency,
                    upstream_failure: self.upstream_failure,
                },
                now,
            );
        }
        if let Some(log) = &self.shared.access_log {
            let ts = crate::access_log::rfc3339_millis(self.arrived);
            // The peer's text is ready; a client from X-Forwarded-For is formatted here.
            let client = if self.client == self.peer.addr.ip() {
                Cow::Borrowed(self.peer.ip_text.to_str().unwrap_or_default())
            } else {
                Cow::Owned(self.client.to_string())
            };
            log.write(&Entry {
                ts: std::str::from_utf8(&ts).unwrap_or_default(),
                request_id: &self.request_id,
                env: &self.shared.env,
                app: self.app.as_deref(),
                version: self.version,
                instance: self.instance.as_deref(),
                client: &client,
                method: self.method.as_str(),
                path: &self.path,
                status: self.status,
                // Rounded to the microsecond.
                duration_us: u64::try_from(latency.as_nanos().saturating_add(500) / 1000)
                    .unwrap_or(u64::MAX),
                error: self.error,
                key_id: self.key_id.as_deref(),
                edge: &self.edge,
            });
        }
        self.in_flight = None;
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Response body sent to clients: the upstream's body streamed through, or a body the gateway
/// produced, either way recorded when it ends.
pub(crate) struct ResponseBody {
    inner: Inner,
    recorder: Option<Recorder>,
}

enum Inner {
    Upstream(UpstreamBody),
    Local(Full<Bytes>),
}

impl ResponseBody {
    pub(crate) fn upstream(body: UpstreamBody, recorder: Recorder) -> Self {
        Self {
            inner: Inner::Upstream(body),
            recorder: Some(recorder),
        }
    }

    pub(crate) fn local(body: Bytes, recorder: Recorder) -> Self {
        Self {
            inner: Inner::Local(Full::new(body)),
            recorder: Some(recorder),
        }
    }

    /// The instance's connection after a `101 Switching Protocols`, with what it already sent
    /// in its new protocol.
    pub(crate) fn take_upgraded(&mut self) -> Option<(tokio::net::TcpStream, bytes::BytesMut)> {
        match &mut self.inner {
            Inner::Upstream(body) => body.take_upgraded(),
            Inner::Local(_) => None,
        }
    }

    /// Records the request (the upstream body gives its connection back by itself).
    fn finish(&mut self) {
        if let Some(mut recorder) = self.recorder.take() {
            recorder.finish();
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Local(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|result| result.map_err(|never| match never {}))),
        };
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => {
                if let Some(recorder) = this.recorder.as_mut() {
                    // The status line is already out; the log says why the body was cut short.
                    recorder.error = Some("upstream_body_error");
                }
                this.finish();
            }
            Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // Dropped before `poll_frame` said it ended: an answer without a body (HEAD, 204,
        // 304), or the client went away mid-body. Both are recorded with the status already
        // sent; the upstream body then keeps or closes its connection by itself.
        self.finish();
    }
}
