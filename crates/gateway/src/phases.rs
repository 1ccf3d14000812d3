//! The request phases, in order, in one place: request id → limits → ip → geo → rate limit →
//! body → waf → auth → per-key rate limit → route → proxy → record (the chart is in the crate
//! docs). Each phase may answer early
//! with a [`ProxyError`]; [`handle`] is the only function that sequences them. The edge phases
//! (ip, geo, rate limit, waf, auth, per-key rate limit) run only when the gateway has an [`EdgePolicy`]; each decision they
//! take is counted and logged the same way in block and count mode, and only block mode
//! answers early.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use rollgate_core::config::edge::EdgeMode;
use rollgate_core::signing::KEY_ID_HEADER;
use rollgate_waf::RequestView;

use crate::access_log::AccessLog;
use crate::auth::Credentials;
use crate::config::GatewayConfig;
use crate::edge::{EdgePolicy, EdgeRule};
use crate::error::ProxyError;
use crate::head::{HopByHop, RequestHead, field_text};
use crate::metrics::Metrics;
use crate::random;
use crate::record::{Recorder, ResponseBody};
use crate::routes::{Hints, RouteHandle, RouteMiss, Target};
use crate::server::{BodyReadError, ClientConn, Reply, push_field};
use crate::timer::Deadline;
use crate::upstream::{Outgoing, ResponseHead, UpstreamBody, UpstreamError, UpstreamPool};

/// Header carrying the request id to the upstream and back to the client.
pub const REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_FIELD);
const REQUEST_ID_FIELD: &str = "x-request-id";
const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
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

/// Runs one request through the phases. Every early answer is a reply; `None` means the
/// client went away while the request was with an instance (recorded as 499), so nobody is
/// left to answer.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: Peer,
    head: RequestHead,
    client: &mut ClientConn,
) -> Option<Reply> {
    let started = Instant::now();
    let edge = shared.config.edge.as_deref();

    // 1. request id
    let request_id = phase_request_id(&head);
    let mut recorder = Recorder::start(
        Arc::clone(&shared),
        started,
        request_id,
        head.method().clone(),
        head.path(),
        peer.clone(),
    );

    // 2. limits on the request line and headers (431)
    if let Err(err) = phase_header_limits(&shared.config, &head, &mut recorder) {
        return Some(answer(err, recorder));
    }

    // 3. ip: who the client is, and the allow and deny lists (403)
    let client_ip = match edge {
        Some(edge) => match phase_ip(edge, peer.addr.ip(), &head, &mut recorder) {
            Ok(client_ip) => client_ip,
            Err(err) => return Some(answer(err, recorder)),
        },
        None => peer.addr.ip(),
    };

    // 3a. geo: the client's country against the allow or deny list (403)
    if let Some(edge) = edge
        && let Err(err) = phase_geo(edge, client_ip, &mut recorder)
    {
        return Some(answer(err, recorder));
    }

    // 4. rate limit per client (429)
    if let Some(edge) = edge
        && let Err(err) = phase_rate_limit(edge, client_ip, &mut recorder)
    {
        return Some(answer(err, recorder));
    }

    // 5. body, buffered once for the WAF and every proxy attempt (413, 408)
    let body = match phase_body(&shared.config, client, &mut recorder).await {
        Ok(body) => body,
        Err(err) => return Some(answer(err, recorder)),
    };

    // 6. waf (403)
    if let Some(edge) = edge
        && let Err(err) = phase_waf(edge, &head, &body, &mut recorder)
    {
        return Some(answer(err, recorder));
    }

    // 6a. auth: API key or HMAC signature per route, replay window (401)
    let key_id = match edge {
        Some(edge) => match phase_auth(edge, &head, &body, &mut recorder) {
            Ok(key_id) => key_id,
            Err(err) => return Some(answer(err, recorder)),
        },
        None => None,
    };

    // 6b. rate limit per authenticated key (429)
    if let Some(edge) = edge
        && let Some(key_id) = &key_id
        && let Err(err) = phase_key_rate(edge, key_id, &mut recorder)
    {
        return Some(answer(err, recorder));
    }

    // 7. route
    let target = match phase_route(&shared, &head, &mut recorder) {
        Ok(target) => target,
        Err(err) => return Some(answer(err, recorder)),
    };

    // 8. proxy, given up when the client goes away
    let outgoing = Forward {
        head: &head,
        peer: &peer,
        key_id: edge.and_then(EdgePolicy::auth).map(|_| key_id.as_deref()),
    };
    let proxied = tokio::select! {
        biased;
        proxied = phase_proxy(&shared, &outgoing, body, &target, &mut recorder) => proxied,
        () = client.gone() => return None,
    };
    let upstream = match proxied {
        Ok(answered) => answered,
        Err(err) => return Some(answer(err, recorder)),
    };

    // 9. record (when the response body ends)
    Some(phase_record(
        upstream,
        target.set_cookie.as_deref(),
        recorder,
    ))
}

/// Keeps a sane client-supplied `X-Request-Id` (1..=128 visible ASCII characters) or makes a
/// new 128-bit random one. The proxy phase sends the instance this one alone.
fn phase_request_id(head: &RequestHead) -> String {
    head.first(REQUEST_ID_FIELD)
        .and_then(sane_request_id)
        .unwrap_or_else(random::request_id)
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
    head: &RequestHead,
    recorder: &mut Recorder,
) -> Result<(), ProxyError> {
    let count = head.field_count();
    // As received: the request line, every field line and the empty line.
    let bytes = head.wire_len();
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
    head: &RequestHead,
    recorder: &mut Recorder,
) -> Result<IpAddr, ProxyError> {
    let client = edge.client_ip(peer, head.values(X_FORWARDED_FOR));
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

/// Authenticates the request as its route demands. A client's own `X-Rollgate-Key-Id` never
/// reaches the app when the gateway authenticates (see [`Forward`]): it is set only to the key
/// id the gateway verified. Failures log the code, never the key or the signature; in count
/// mode the request goes on unauthenticated.
fn phase_auth(
    edge: &EdgePolicy,
    head: &RequestHead,
    body: &Bytes,
    recorder: &mut Recorder,
) -> Result<Option<String>, ProxyError> {
    let Some(auth) = edge.auth() else {
        return Ok(None);
    };
    let verdict = auth.authenticate(
        head.method().as_str(),
        head.path(),
        head.query(),
        &Credentials::from_fields(head.fields()),
        body,
        unix_now,
    );
    match verdict {
        Ok(Some(key_id)) => {
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
    client: &mut ClientConn,
    recorder: &mut Recorder,
) -> Result<Bytes, ProxyError> {
    // Most requests (GET, HEAD) have no body: nothing to wait for, so no timer to arm.
    if !client.has_body() {
        return Ok(Bytes::new());
    }
    let limit = config.max_body_bytes;
    let buffered = tokio::time::timeout(config.body_read_timeout, client.read_body(limit)).await;
    let (rule, err) = match buffered {
        Ok(Ok(body)) => return Ok(body),
        Ok(Err(BodyReadError::TooLarge)) => {
            (EdgeRule::BodySize, ProxyError::BodyTooLarge { limit })
        }
        Ok(Err(err)) => return Err(ProxyError::ClientBody(err.to_string())),
        Err(_elapsed) => (
            EdgeRule::BodyTimeout,
            ProxyError::BodyTimeout(config.body_read_timeout),
        ),
    };
    recorder.decide(rule, EdgeMode::Block, true, Some("body".to_owned()), None);
    Err(err)
}

/// Inspects path, query, headers, cookies and the buffered body; blocks when any finding's
/// rule is in block mode. Every finding is logged; each rule counts once per request. Every
/// field the client sent is inspected, its `X-Request-Id` too.
fn phase_waf(
    edge: &EdgePolicy,
    head: &RequestHead,
    body: &Bytes,
    recorder: &mut Recorder,
) -> Result<(), ProxyError> {
    // Sized up front: collecting an iterator of unknown length starts small and reallocates.
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(head.field_count());
    headers.extend(head.fields());
    let request = RequestView {
        method: head.method().as_str(),
        path: head.path(),
        query: head.query(),
        headers: &headers,
        content_type: head.first_text("content-type"),
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
    head: &RequestHead,
    recorder: &mut Recorder,
) -> Result<Target, ProxyError> {
    let host = head.first_text("host").or_else(|| head.target_host());
    let hints = Hints {
        alias: shared
            .config
            .override_header
            .as_ref()
            .and_then(|h| head.first_text(h.as_str())),
        head: Some(head),
    };
    match shared.routes.route_with(host, head.path(), &hints) {
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

/// What the proxy phase sends an instance of the client's request: its method, target in
/// origin form and end-to-end fields, with the gateway's own `X-Request-Id`,
/// `X-Forwarded-For` (the client's chain plus the socket peer, whatever the ip phase
/// decided) and `X-Forwarded-Proto`.
struct Forward<'a> {
    head: &'a RequestHead,
    peer: &'a Peer,
    /// `Some` when the gateway authenticates: the client's own `X-Rollgate-Key-Id` is left
    /// out, and the key id the auth phase verified, if any, is sent instead.
    key_id: Option<Option<&'a str>>,
}

impl Forward<'_> {
    fn encode(&self, request_id: &str, host: &HeaderValue, body: Bytes) -> Outgoing {
        let head = self.head;
        let hop = HopByHop::new(head.values("connection")).passing_upgrade(head.upgrade);
        let forwarded_for = forwarded_for(head, self.peer);
        // The fields the gateway sets, also spelled with `_` for `-`: CGI-style servers
        // (WSGI, Rack, PHP) see `X_Forwarded_For` and `X-Forwarded-For` as one variable, so a
        // client's underscore spelling could stand in for the gateway's own.
        let own = |name: &str| {
            [X_FORWARDED_FOR, X_FORWARDED_PROTO, REQUEST_ID_FIELD]
                .iter()
                .any(|own| same_field(name, own))
                || (self.key_id.is_some() && same_field(name, KEY_ID_HEADER))
        };
        let key_id = self
            .key_id
            .flatten()
            .filter(|id| field_text(id.as_bytes()).is_some());
        let fields = head
            .fields()
            .filter(|(name, _)| !own(name) && !hop.drops(name.as_bytes()))
            .map(|(name, value)| (name.as_bytes(), value))
            .chain([
                (REQUEST_ID_FIELD.as_bytes(), request_id.as_bytes()),
                (X_FORWARDED_FOR.as_bytes(), &forwarded_for[..]),
                (X_FORWARDED_PROTO.as_bytes(), &b"http"[..]),
            ])
            .chain(
                head.upgrade
                    .then_some((&b"connection"[..], &b"upgrade"[..])),
            )
            .chain(key_id.map(|id| (KEY_ID_HEADER.as_bytes(), id.as_bytes())));
        let outgoing = Outgoing::new(
            head.method(),
            &head.path_and_query(),
            fields,
            Some(host),
            body,
        );
        if head.upgrade {
            outgoing.upgrading()
        } else {
            outgoing
        }
    }
}

/// True when the field `name` (lower case) is `own`, or `own` with `_` in place of `-`.
fn same_field(name: &str, own: &str) -> bool {
    name.len() == own.len()
        && name
            .bytes()
            .zip(own.bytes())
            .all(|(a, b)| a == b || (a == b'_' && b == b'-'))
}

/// The client's `X-Forwarded-For` chain with `peer` appended.
fn forwarded_for<'a>(head: &'a RequestHead, peer: &'a Peer) -> Cow<'a, [u8]> {
    let mut prior = head
        .values(X_FORWARDED_FOR)
        .filter(|v| field_text(v).is_some())
        .peekable();
    if prior.peek().is_none() {
        return Cow::Borrowed(peer.ip_text.as_bytes());
    }
    let mut chain = Vec::with_capacity(64);
    for value in prior {
        chain.extend_from_slice(value);
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(peer.ip_text.as_bytes());
    Cow::Owned(chain)
}

/// Forwards the request and its buffered body to the target's instances in order, moving
/// on only when the request provably never reached an instance.
async fn phase_proxy(
    shared: &Shared,
    forward: &Forward<'_>,
    body: Bytes,
    target: &Target,
    recorder: &mut Recorder,
) -> Result<(ResponseHead, UpstreamBody), ProxyError> {
    // No response head within the upstream timeout: 504 (see `timer` for the precision).
    let mut expiry = Deadline::after(shared.config.upstream_timeout);
    let mut last_failure = String::new();
    // An app may close an idle keep-alive connection just as the pool hands it out (gunicorn
    // does after 2 s); the request then dies before any response. For idempotent methods one
    // more try on a fresh connection is safe and hides that race from the client.
    let mut stale_retry = forward.head.method().is_idempotent();
    let mut fresh = false;
    let mut attempt = 0;
    // Encoded once; again only for a request without `Host` (an HTTP/1.0 client may send
    // none, HTTP/1.1 requires one upstream) going to another instance.
    let has_host = forward.head.first("host").is_some();
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
        let request = &*request.get_or_insert_with(|| {
            forward.encode(&recorder.request_id, &instance.host, body.clone())
        });
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

/// The instance's answer, its head passed through with the request id and any sticky cookie
/// added, and its body wrapped so that the record phase runs when the body ends.
fn phase_record(
    (head, body): (ResponseHead, UpstreamBody),
    set_cookie: Option<&str>,
    mut recorder: Recorder,
) -> Reply {
    recorder.status = head.status.as_u16();
    let mut fields = Vec::with_capacity(128);
    push_request_id(&mut fields, &recorder.request_id);
    // The sticky assignment of a new client, next to any cookies the app sets itself.
    if let Some(cookie) = set_cookie.filter(|c| field_text(c.as_bytes()).is_some()) {
        push_field(&mut fields, b"set-cookie", cookie.as_bytes());
    }
    Reply {
        status: head.status,
        upstream: Some(head),
        fields,
        body: ResponseBody::upstream(body, recorder),
        close: false,
    }
}

/// The gateway's own answer: status and JSON body from the error table.
fn answer(err: ProxyError, mut recorder: Recorder) -> Reply {
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
    let mut fields = Vec::with_capacity(128);
    push_field(&mut fields, b"content-type", b"application/json");
    if let Some(secs) = err.retry_after_secs() {
        push_field(
            &mut fields,
            b"retry-after",
            itoa::Buffer::new().format(secs).as_bytes(),
        );
    }
    if let Some(challenge) = err.www_authenticate() {
        push_field(&mut fields, b"www-authenticate", challenge.as_bytes());
    }
    push_request_id(&mut fields, &recorder.request_id);
    Reply {
        status,
        upstream: None,
        fields,
        body: ResponseBody::local(Bytes::from(err.body()), recorder),
        close: err.closes_connection(),
    }
}

fn push_request_id(fields: &mut Vec<u8>, id: &str) {
    push_field(fields, REQUEST_ID_FIELD.as_bytes(), id.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::head::parse_for_test;

    fn forwarded(head: &str, key_id: Option<Option<&str>>) -> String {
        let head = parse_for_test(head);
        let peer = Peer::new(SocketAddr::from(([10, 0, 0, 9], 41000)));
        let forward = Forward {
            head: &head,
            peer: &peer,
            key_id,
        };
        let host = HeaderValue::from_static("10.0.0.2:8080");
        let out = forward.encode("rid-1", &host, Bytes::new());
        String::from_utf8(out.wire_for_test().to_vec()).expect("text")
    }

    #[test]
    fn hop_by_hop_fields_stay_behind_and_the_gateways_own_are_added() {
        let wire = forwarded(
            "GET /a?b=1 HTTP/1.1\r\nConnection: close, x-secret\r\nx-secret: 1\r\nkeep-alive: timeout=5\r\nproxy-authorization: basic x\r\nte: trailers\r\nupgrade: websocket\r\nHost: example.com\r\nx-kept: yes\r\nx-request-id: client-id\r\nx-forwarded-proto: https\r\n\r\n",
            None,
        );
        assert_eq!(
            wire,
            "GET /a?b=1 HTTP/1.1\r\nhost: example.com\r\nx-kept: yes\r\nx-request-id: rid-1\r\nx-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let wire = forwarded(
            "GET / HTTP/1.1\r\nx-forwarded-for: 1.2.3.4\r\nX-Forwarded-For: 5.6.7.8\r\n\r\n",
            None,
        );
        assert!(
            wire.contains("\r\nx-forwarded-for: 1.2.3.4, 5.6.7.8, 10.0.0.9\r\n"),
            "{wire}"
        );
        assert_eq!(wire.matches("x-forwarded-for").count(), 1, "{wire}");
        // No Host: the instance's address is sent as one.
        assert!(wire.contains("\r\nhost: 10.0.0.2:8080\r\n"), "{wire}");
    }

    #[test]
    fn the_key_id_the_app_sees_is_only_the_verified_one() {
        let head = "GET / HTTP/1.1\r\nhost: a\r\nx-rollgate-key-id: forged\r\n\r\n";
        let wire = forwarded(head, Some(Some("deploy")));
        assert!(wire.contains("x-rollgate-key-id: deploy\r\n"), "{wire}");
        assert!(!wire.contains("forged"), "{wire}");
        let wire = forwarded(head, Some(None));
        assert!(!wire.contains("x-rollgate-key-id"), "{wire}");
        // Without auth the gateway does not touch the field.
        let wire = forwarded(head, None);
        assert!(wire.contains("x-rollgate-key-id: forged"), "{wire}");
    }

    #[test]
    fn the_gateways_own_fields_cannot_be_smuggled_with_underscores() {
        let head = "GET / HTTP/1.1\r\nhost: a\r\nX_Rollgate_Key_Id: forged\r\nx_forwarded_for: 6.6.6.6\r\nX_Forwarded-Proto: https\r\nx_request_id: spoofed\r\nx_other: kept\r\n\r\n";
        let wire = forwarded(head, Some(Some("deploy")));
        for gone in ["forged", "6.6.6.6", "https", "spoofed"] {
            assert!(!wire.contains(gone), "{gone}: {wire}");
        }
        assert!(wire.contains("x_other: kept\r\n"), "{wire}");
        assert!(wire.contains("x-rollgate-key-id: deploy\r\n"), "{wire}");
        assert!(wire.contains("x-forwarded-for: 10.0.0.9\r\n"), "{wire}");
        assert!(same_field("x-request-id", "x-request-id"));
        assert!(!same_field("x-request-idx", "x-request-id"));
        assert!(!same_field("x-request-ix", "x-request-id"));
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert_eq!(sane_request_id(b"abc-123").as_deref(), Some("abc-123"));
        assert_eq!(sane_request_id(b""), None);
        assert_eq!(sane_request_id(b"has space"), None);
        assert_eq!(sane_request_id(&[b'a'; 129]), None);
        assert!(sane_request_id(&[b'a'; 128]).is_some());
        assert_eq!(sane_request_id("caf\u{e9}".as_bytes()), None);

        let id = phase_request_id(&parse_for_test(
            "GET / HTTP/1.1\r\nx-request-id: bad id\r\n\r\n",
        ));
        assert_eq!(id.len(), 32);
        let id = phase_request_id(&parse_for_test(
            "GET / HTTP/1.1\r\nX-Request-Id: client-id-1\r\n\r\n",
        ));
        assert_eq!(id, "client-id-1");
    }
}
