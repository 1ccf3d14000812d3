//! The request phases, in order, in one place: request id → limits → ip → geo → rate limit →
//! body → waf → auth → per-key rate limit → route → proxy → record (the chart is in the crate
//! docs). Each phase may answer early
//! with a [`ProxyError`]; [`handle`] is the only function that sequences them. The edge phases
//! (ip, geo, rate limit, waf, auth, per-key rate limit) run only when the gateway has an [`EdgePolicy`]; each decision they
//! take is counted and logged the same way in block and count mode, and only block mode
//! answers early.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use rollgate_core::config::edge::EdgeMode;
use rollgate_core::signing::KEY_ID_HEADER;
use rollgate_waf::RequestView;

use crate::access_log::AccessLog;
use crate::config::GatewayConfig;
use crate::edge::{EdgePolicy, EdgeRule};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::random;
use crate::record::{Recorder, ResponseBody};
use crate::routes::{Hints, Instance, RouteHandle, RouteMiss, Target};
use crate::timer::Deadline;
use crate::upstream::{Outgoing, UpstreamBody, UpstreamError, UpstreamPool};

/// Header carrying the request id to the upstream and back to the client.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// The verified key id, for the app; a client's own is removed first.
const KEY_ID: HeaderName = HeaderName::from_static(KEY_ID_HEADER);
/// Client-supplied ids longer than this are replaced, to keep logs and upstream headers sane.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The client end of one connection, with its address already formatted: every request on
/// the connection appends it to `X-Forwarded-For` and most log it, so it is formatted once.
#[derive(Clone)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    /// `addr`'s IP as text, e.g. `127.0.0.1`.
    pub(crate) ip_text: HeaderValue,
}

impl Peer {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        let ip_text = HeaderValue::from_str(&addr.ip().to_string())
            // An IP address is always a valid header value; keep a placeholder if not.
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Peer { addr, ip_text }
    }
}

/// What every request of one gateway shares.
pub(crate) struct Shared {
    pub(crate) env: Arc<str>,
    pub(crate) config: GatewayConfig,
    pub(crate) routes: RouteHandle,
    pub(crate) metrics: Metrics,
    pub(crate) access_log: Option<AccessLog>,
    /// This worker's upstream keep-alive connections.
    pub(crate) upstream: Arc<UpstreamPool>,
}

/// Runs one request through the phases. Never fails: every early answer is a response.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: Peer,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let edge = shared.config.edge.as_deref();

    // 1. request id
    let (request_id, own_request_id) = phase_request_id(&mut parts.headers);
    let mut recorder = Recorder::start(
        Arc::clone(&shared),
        started,
        request_id,
        parts.method.clone(),
        parts.uri.path(),
        peer.clone(),
    );

    // 2. limits on the request line and headers (431)
    if let Err(err) = phase_header_limits(&shared.config, &parts, &mut recorder) {
        return answer(err, recorder);
    }

    // 3. ip: who the client is, and the allow and deny lists (403)
    let client = match edge {
        Some(edge) => match phase_ip(edge, peer.addr.ip(), &parts.headers, &mut recorder) {
            Ok(client) => client,
            Err(err) => return answer(err, recorder),
        },
        None => peer.addr.ip(),
    };

    // 3a. geo: the client's country against the allow or deny list (403)
    if let Some(edge) = edge
        && let Err(err) = phase_geo(edge, client, &mut recorder)
    {
        return answer(err, recorder);
    }

    // 4. rate limit per client (429)
    if let Some(edge) = edge
        && let Err(err) = phase_rate_limit(edge, client, &mut recorder)
    {
        return answer(err, recorder);
    }

    // 5. body, buffered once for the WAF and every proxy attempt (413, 408)
    let body = match phase_body(&shared.config, body, &parts.headers, &mut recorder).await {
        Ok(body) => body,
        Err(err) => return answer(err, recorder),
    };

    // 6. waf (403)
    if let Some(edge) = edge
        && let Err(err) = phase_waf(edge, &parts, &body, own_request_id, &mut recorder)
    {
        return answer(err, recorder);
    }

    // 6a. auth: API key or HMAC signature per route, replay window (401)
    let key_id = match edge {
        Some(edge) => match phase_auth(edge, &mut parts, &body, &mut recorder) {
            Ok(key_id) => key_id,
            Err(err) => return answer(err, recorder),
        },
        None => None,
    };

    // 6b. rate limit per authenticated key (429)
    if let Some(edge) = edge
        && let Some(key_id) = &key_id
        && let Err(err) = phase_key_rate(edge, key_id, &mut recorder)
    {
        return answer(err, recorder);
    }

    // 7. route
    let target = match phase_route(&shared, &parts, &mut recorder) {
        Ok(target) => target,
        Err(err) => return answer(err, recorder),
    };

    // 8. proxy
    let upstream = match phase_proxy(&shared, parts, body, &target, &peer, &mut recorder).await {
        Ok(answered) => answered,
        Err(err) => return answer(err, recorder),
    };

    // 9. record (when the response body ends)
    phase_record(upstream, target.set_cookie.as_deref(), recorder)
}

/// Keeps a sane client-supplied `X-Request-Id` (1..=128 visible ASCII characters) or makes a
/// new 128-bit random one, and puts it on the request.
/// Returns the id and whether the gateway made it (and so need not inspect it).
fn phase_request_id(headers: &mut HeaderMap) -> (String, bool) {
    if let Some(id) = headers
        .get(REQUEST_ID)
        .and_then(|v| sane_request_id(v.as_bytes()))
    {
        return (id, false);
    }
    let id = random::request_id();
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert(REQUEST_ID, value);
    }
    (id, true)
}

fn sane_request_id(value: &[u8]) -> Option<String> {
    let visible = value.iter().all(|b| (0x21..=0x7e).contains(b));
    if value.is_empty() || value.len() > MAX_REQUEST_ID_LEN || !visible {
        return None;
    }
    String::from_utf8(value.to_vec()).ok()
}

/// Refuses a request line plus headers over `max_header_bytes`, or more than `max_headers`
/// fields. The HTTP layer's own caps are set above these (see `GatewayConfig`), so that most
/// oversized requests get this JSON answer and an access-log line.
fn phase_header_limits(
    config: &GatewayConfig,
    parts: &Parts,
    recorder: &mut Recorder,
) -> Result<(), ProxyError> {
    let count = parts.headers.len();
    // As on the wire: `METHOD URI HTTP/1.1\r\n`, `name: value\r\n` per field, `\r\n`.
    let bytes = parts.method.as_str().len()
        + parts.uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + 12
        + parts
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
        + 2;
    let rule = if bytes > config.max_header_bytes {
        EdgeRule::HeaderBytes
    } else if count > config.max_headers {
        EdgeRule::HeaderCount
    } else {
        return Ok(());
    };
    let found = match rule {
        EdgeRule::HeaderBytes => format!("{bytes} bytes"),
        _ => format!("{count} fields"),
    };
    recorder.decide(
        rule,
        EdgeMode::Block,
        true,
        Some("headers".to_owned()),
        Some(found),
    );
    Err(ProxyError::HeadersTooLarge { bytes, count })
}

/// Resolves the client address (trusted proxies) and applies the IP lists.
fn phase_ip(
    edge: &EdgePolicy,
    peer: IpAddr,
    headers: &HeaderMap,
    recorder: &mut Recorder,
) -> Result<IpAddr, ProxyError> {
    let client = edge.client_ip(peer, headers);
    recorder.client = client;
    let Some(verdict) = edge.check_ip(client) else {
        return Ok(client);
    };
    let mode = edge.ip_mode();
    recorder.decide(
        verdict.rule,
        mode,
        true,
        Some("client_ip".to_owned()),
        verdict.range.map(|range| range.to_string()),
    );
    match mode {
        EdgeMode::Block => Err(ProxyError::IpDenied),
        EdgeMode::Count => Ok(client),
    }
}

/// Applies the country lists to the client the ip phase resolved.
fn phase_geo(edge: &EdgePolicy, client: IpAddr, recorder: &mut Recorder) -> Result<(), ProxyError> {
    let Some((verdict, mode)) = edge.check_geo(client) else {
        return Ok(());
    };
    let country = verdict.country.unwrap_or_else(|| "unknown".to_owned());
    recorder.decide(
        EdgeRule::Geo,
        mode,
        true,
        Some("client_ip".to_owned()),
        Some(country),
    );
    match mode {
        EdgeMode::Block => Err(ProxyError::GeoDenied),
        EdgeMode::Count => Ok(()),
    }
}

/// Authenticates the request as its route demands. A client's own `X-Rollgate-Key-Id` is
/// always removed, so that the app can trust the header: it is set only to the key id the
/// gateway verified. Failures log the code, never the key or the signature; in count mode the
/// request goes on unauthenticated.
fn phase_auth(
    edge: &EdgePolicy,
    parts: &mut Parts,
    body: &Bytes,
    recorder: &mut Recorder,
) -> Result<Option<String>, ProxyError> {
    let Some(auth) = edge.auth() else {
        return Ok(None);
    };
    parts.headers.remove(KEY_ID);
    let verdict = auth.authenticate(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        body,
        unix_now,
    );
    match verdict {
        Ok(Some(key_id)) => {
            if let Ok(value) = HeaderValue::from_str(&key_id) {
                parts.headers.insert(KEY_ID, value);
            }
            recorder.key_id = Some(key_id.clone());
            Ok(Some(key_id))
        }
        Ok(None) => Ok(None),
        Err(failure) => {
            let mode = auth.mode();
            recorder.decide(
                failure.rule(),
                mode,
                true,
                Some(failure.field().to_owned()),
                Some(failure.code().to_owned()),
            );
            match mode {
                EdgeMode::Block => Err(ProxyError::Unauthorized(failure)),
                EdgeMode::Count => Ok(None),
            }
        }
    }
}

/// Takes one request from the authenticated key's rate.
fn phase_key_rate(
    edge: &EdgePolicy,
    key_id: &str,
    recorder: &mut Recorder,
) -> Result<(), ProxyError> {
    let Some((mode, retry_after_secs)) = edge.auth().and_then(|a| a.check_key_rate(key_id)) else {
        return Ok(());
    };
    recorder.decide(
        EdgeRule::KeyRateLimit,
        mode,
        true,
        Some("key_id".to_owned()),
        Some(key_id.to_owned()),
    );
    match mode {
        EdgeMode::Block => Err(ProxyError::KeyRateLimited { retry_after_secs }),
        EdgeMode::Count => Ok(()),
    }
}

/// The gateway's clock in unix seconds, for signature windows.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Takes one request from the client's rate.
fn phase_rate_limit(
    edge: &EdgePolicy,
    client: IpAddr,
    recorder: &mut Recorder,
) -> Result<(), ProxyError> {
    let Some((mode, retry_after_secs)) = edge.check_rate(client) else {
        return Ok(());
    };
    recorder.decide(EdgeRule::RateLimit, mode, true, None, None);
    match mode {
        EdgeMode::Block => Err(ProxyError::RateLimited { retry_after_secs }),
        EdgeMode::Count => Ok(()),
    }
}

/// Buffers the whole body under the size limit and the body read timeout, so that a client
/// trickling its body cannot hold a request (and its memory) open for long.
async fn phase_body(
    config: &GatewayConfig,
    body: Incoming,
    headers: &HeaderMap,
    recorder: &mut Recorder,
) -> Result<Bytes, ProxyError> {
    // Most requests (GET, HEAD) have no body: nothing to wait for, so no timer to arm.
    if http_body::Body::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    let buffered = tokio::time::timeout(
        config.body_read_timeout,
        buffer_body(body, headers, config.max_body_bytes),
    )
    .await;
    let (rule, err) = match buffered {
        Ok(Ok(body)) => return Ok(body),
        Ok(Err(err @ ProxyError::BodyTooLarge { .. })) => (EdgeRule::BodySize, err),
        Ok(Err(err)) => return Err(err),
        Err(_elapsed) => (
            EdgeRule::BodyTimeout,
            ProxyError::BodyTimeout(config.body_read_timeout),
        ),
    };
    recorder.decide(rule, EdgeMode::Block, true, Some("body".to_owned()), None);
    Err(err)
}

/// Inspects path, query, headers, cookies and the buffered body; blocks when any finding's
/// rule is in block mode. Every finding is logged; each rule counts once per request. An
/// `X-Request-Id` the gateway made itself (`own_request_id`) is not the client's to inspect.
fn phase_waf(
    edge: &EdgePolicy,
    parts: &Parts,
    body: &Bytes,
    own_request_id: bool,
    recorder: &mut Recorder,
) -> Result<(), ProxyError> {
    // Sized up front: collecting a filtered iterator starts small and reallocates.
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(parts.headers.len());
    headers.extend(
        parts
            .headers
            .iter()
            .filter(|(name, _)| !(own_request_id && *name == REQUEST_ID))
            .map(|(name, value)| (name.as_str(), value.as_bytes())),
    );
    let request = RequestView {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &headers,
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
        body,
    };
    let findings = edge.inspect(&request);
    let mut block = false;
    let mut seen: Vec<EdgeRule> = Vec::new();
    for (finding, mode) in findings {
        let rule = EdgeRule::Waf(finding.rule);
        let first = !seen.contains(&rule);
        if first {
            seen.push(rule);
        }
        block |= mode == EdgeMode::Block;
        recorder.decide_waf(
            rule,
            mode,
            first,
            Some(finding.field),
            Some(finding.matched),
            finding.crs_rule,
        );
    }
    if block {
        Err(ProxyError::RequestBlocked)
    } else {
        Ok(())
    }
}

/// Picks app, version and first instance, and counts the request in flight on it.
fn phase_route(
    shared: &Shared,
    parts: &Parts,
    recorder: &mut Recorder,
) -> Result<Target, ProxyError> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| parts.uri.host());
    let hints = Hints {
        alias: shared
            .config
            .override_header
            .as_ref()
            .and_then(|h| parts.headers.get(h))
            .and_then(|v| v.to_str().ok()),
        headers: Some(&parts.headers),
    };
    match shared.routes.route_with(host, parts.uri.path(), &hints) {
        Ok((target, guard)) => {
            recorder.app = Some(Arc::clone(&target.app));
            recorder.version = Some(target.version);
            recorder.instance = target.instances.first().map(|i| Arc::clone(&i.id));
            recorder.in_flight = Some(guard);
            Ok(target)
        }
        Err(RouteMiss::NoRoute) => Err(ProxyError::NoRoute),
        Err(RouteMiss::NoUpstream(app)) => {
            recorder.app = Some(Arc::clone(&app));
            Err(ProxyError::NoUpstream {
                app: app.to_string(),
            })
        }
    }
}

/// Rewrites the headers and forwards the buffered body to the target's instances in order,
/// moving on only when the request provably never reached an instance. `peer` (the socket
/// peer, whatever the ip phase decided) is appended to `X-Forwarded-For`.
async fn phase_proxy(
    shared: &Shared,
    mut parts: Parts,
    body: Bytes,
    target: &Target,
    peer: &Peer,
    recorder: &mut Recorder,
) -> Result<Response<UpstreamBody>, ProxyError> {
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, peer);
    // Origin form (`/path?query`), whatever form the client used.
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    // No response head within the upstream timeout: 504 (see `timer` for the precision).
    let mut expiry = Deadline::after(shared.config.upstream_timeout);
    let mut last_failure = String::new();
    // An app may close an idle keep-alive connection just as the pool hands it out (gunicorn
    // does after 2 s); the request then dies before any response. For idempotent methods one
    // more try on a fresh connection is safe and hides that race from the client.
    let mut stale_retry = parts.method.is_idempotent();
    let mut fresh = false;
    let mut attempt = 0;
    // Encoded once; again only for a request without `Host` (an HTTP/1.0 client may send
    // none, HTTP/1.1 requires one upstream) going to another instance.
    let encode = |instance: &Instance| {
        Outgoing::new(
            &parts.method,
            path,
            &parts.headers,
            Some(&instance.host),
            body.clone(),
        )
    };
    let has_host = parts.headers.contains_key(header::HOST);
    let mut request = None;
    while let Some(instance) = target.instances.get(attempt) {
        if attempt > 0 {
            // The previous instance is done with; count this one instead.
            recorder.in_flight = Some(shared.routes.begin(instance));
            recorder.instance = Some(Arc::clone(&instance.id));
            if !has_host {
                request = None;
            }
        }
        let request = &*request.get_or_insert_with(|| encode(instance));
        let sent = tokio::select! {
            biased;
            sent = shared.upstream.send(instance.addr, request, fresh) => sent,
            () = &mut expiry => {
                return Err(ProxyError::UpstreamTimeout(shared.config.upstream_timeout));
            }
        };
        match sent {
            Ok(answered) => return Ok(answered),
            Err(err) if err.never_sent() => {
                tracing::debug!(
                    request_id = %recorder.request_id,
                    instance = %instance.id,
                    error = %err,
                    "upstream connect failed; trying the next instance"
                );
                last_failure = format!("{}: {err}", instance.id);
                attempt += 1;
            }
            Err(err @ UpstreamError::ClosedBeforeResponse) if stale_retry => {
                tracing::debug!(
                    request_id = %recorder.request_id,
                    instance = %instance.id,
                    error = %err,
                    "upstream closed the connection before answering; retrying once"
                );
                stale_retry = false;
                // Other idle connections to it may be just as stale.
                fresh = true;
            }
            Err(err) => {
                return Err(ProxyError::UpstreamUnavailable {
                    attempts: attempt + 1,
                    reason: format!("{}: {err}", instance.id),
                });
            }
        }
    }
    Err(ProxyError::UpstreamUnavailable {
        attempts: target.instances.len(),
        reason: last_failure,
    })
}

/// Wraps the upstream response so that the record phase runs when its body ends.
fn phase_record(
    upstream: Response<UpstreamBody>,
    set_cookie: Option<&str>,
    mut recorder: Recorder,
) -> Response<ResponseBody> {
    let (mut parts, body) = upstream.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    set_request_id(&mut parts.headers, &recorder.request_id);
    // The sticky assignment of a new client, next to any cookies the app sets itself.
    if let Some(value) = set_cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        parts.headers.append(header::SET_COOKIE, value);
    }
    recorder.status = parts.status.as_u16();
    Response::from_parts(parts, ResponseBody::upstream(body, recorder))
}

/// The gateway's own answer: status and JSON body from the error table.
fn answer(err: ProxyError, mut recorder: Recorder) -> Response<ResponseBody> {
    let status = err.status();
    if status.is_server_error() {
        tracing::warn!(
            request_id = %recorder.request_id,
            app = recorder.app.as_deref().unwrap_or("-"),
            instance = recorder.instance.as_deref().unwrap_or("-"),
            code = err.code(),
            error = %err,
            "gateway answered with an error"
        );
    }
    recorder.status = status.as_u16();
    recorder.error = Some(err.code());
    recorder.upstream_failure = err.is_upstream_failure();
    let mut response = Response::new(());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = err.retry_after_secs() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Some(challenge) = err.www_authenticate() {
        headers.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    if err.closes_connection() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    set_request_id(headers, &recorder.request_id);
    let (parts, ()) = response.into_parts();
    Response::from_parts(
        parts,
        ResponseBody::local(Bytes::from(err.body()), recorder),
    )
}

fn set_request_id(headers: &mut HeaderMap, id: &str) {
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(REQUEST_ID, value);
    }
}

/// Reads the whole request body, refusing early on a declared length over the limit.
async fn buffer_body(
    body: Incoming,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, ProxyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ProxyError::BodyTooLarge { limit })
        }
        Err(err) => Err(ProxyError::ClientBody(err.to_string())),
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1): `Connection` and every header it names,
/// `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    const FIXED: [HeaderName; 6] = [
        header::CONNECTION,
        KEEP_ALIVE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ];
    let is_proxy = |name: &HeaderName| name.as_str().starts_with("proxy-");
    // Most messages carry none: one pass over the names instead of a lookup per name.
    if !headers
        .keys()
        .any(|name| FIXED.contains(name) || is_proxy(name))
    {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in FIXED {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers.keys().filter(|n| is_proxy(n)).cloned().collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// Appends the client to `X-Forwarded-For` and sets `X-Forwarded-Proto: http`.
fn add_forwarded(headers: &mut HeaderMap, peer: &Peer) {
    let prior: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let value = if prior.is_empty() {
        peer.ip_text.clone()
    } else {
        let client = peer.ip_text.to_str().unwrap_or_default();
        HeaderValue::from_str(&format!("{}, {client}", prior.join(", ")))
            .unwrap_or_else(|_| peer.ip_text.clone())
    };
    headers.insert(X_FORWARDED_FOR, value);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("proxy-authorization", HeaderValue::from_static("basic x"));
        headers.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::TRAILER, HeaderValue::from_static("x-sum"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::HOST, HeaderValue::from_static("example.com"));
        headers.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(headers.contains_key(header::HOST));
        assert!(headers.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let mut headers = HeaderMap::new();
        let client = Peer::new(SocketAddr::from(([10, 0, 0, 9], 41000)));
        add_forwarded(&mut headers, &client);
        assert_eq!(headers[&X_FORWARDED_FOR], "10.0.0.9");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        add_forwarded(&mut headers, &client);
        assert_eq!(headers[&X_FORWARDED_FOR], "1.2.3.4, 5.6.7.8, 10.0.0.9");
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert_eq!(sane_request_id(b"abc-123").as_deref(), Some("abc-123"));
        assert_eq!(sane_request_id(b""), None);
        assert_eq!(sane_request_id(b"has space"), None);
        assert_eq!(sane_request_id(&[b'a'; 129]), None);
        assert!(sane_request_id(&[b'a'; 128]).is_some());
        assert_eq!(sane_request_id("caf\u{e9}".as_bytes()), None);

        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("bad id"));
        let (id, own) = phase_request_id(&mut headers);
        assert_eq!(id.len(), 32);
        assert!(own);
        assert_eq!(headers[&REQUEST_ID], id.as_str());
        headers.insert(REQUEST_ID, HeaderValue::from_static("client-id-1"));
        assert_eq!(
            phase_request_id(&mut headers),
            ("client-id-1".to_owned(), false)
        );
    }
}
