//! Notifications of rollout events and alarm state changes: the [`Notification`] message,
//! the [`Target`]s it goes to (a generic JSON webhook, a Slack-compatible incoming webhook),
//! and the [`Notifier`] that delivers in the background with timeouts and retries.
//!
//! The controller must never wait on a chat server to roll back, so [`Notifier::send`] only
//! queues: each target has its own bounded queue and worker task (a slow Slack does not hold
//! up the webhook), and a full queue drops the message and counts it rather than blocking.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::{mpsc, watch};

/// One event worth telling people about.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// What happened, dotted: `rollout.started`, `rollout.succeeded`, `rollout.rolled_back`,
    /// `rollout.failed`, `rollout.aborted`, `alarm.firing`, `alarm.resolved`, …
    pub kind: String,
    pub app: String,
    pub env: String,
    pub rollout_id: Option<u64>,
    /// The version the event is about (the candidate for rollouts).
    pub version: Option<u64>,
    /// The rollout phase when it happened, e.g. `shift`.
    pub phase: Option<String>,
    /// One sentence for people: why it happened.
    pub message: String,
    /// When it happened, RFC 3339 in UTC.
    pub at: String,
    /// Anything machine-readable, e.g. the judgment that decided; `null` by default.
    pub details: serde_json::Value,
}

impl Notification {
    /// A notification stamped now, with no rollout, version, phase or details.
    pub fn new(
        kind: impl Into<String>,
        app: impl Into<String>,
        env: impl Into<String>,
        message: impl Into<String>,
    ) -> Notification {
        Notification {
            kind: kind.into(),
            app: app.into(),
            env: env.into(),
            rollout_id: None,
            version: None,
            phase: None,
            message: message.into(),
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            details: serde_json::Value::Null,
        }
    }

    /// The one-line summary used for chat, e.g.
    /// `[rollgate] api/prod v7 rolled back: p99 612ms > 500ms`.
    pub fn summary(&self) -> String {
        let what = match self.kind.as_str() {
            "rollout.started" => "rollout started",
            "rollout.succeeded" => "rollout succeeded",
            "rollout.rolled_back" => "rolled back",
            "rollout.failed" => "rollout failed",
            "rollout.aborted" => "rollout aborted",
            "rollout.paused" => "rollout paused",
            "alarm.firing" => "alarm firing",
            "alarm.resolved" => "alarm resolved",
            other => other,
        };
        let version = self.version.map(|v| format!(" v{v}")).unwrap_or_default();
        let phase = self
            .phase
            .as_deref()
            .map(|p| format!(" (in {p})"))
            .unwrap_or_default();
        format!(
            "[rollgate] {}/{}{version} {what}{phase}: {}",
            self.app, self.env, self.message
        )
    }
}

/// Where notifications go. Only `http://` URLs: https needs a TLS connector, which is not
/// built in yet ([`Notifier::new`] rejects https URLs rather than failing at send time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// POSTs the [`Notification`] as JSON, with these extra headers (e.g. an authorization).
    Webhook {
        url: String,
        headers: BTreeMap<String, String>,
    },
    /// POSTs Slack incoming-webhook JSON, `{"text": <Notification::summary>}`.
    Slack { url: String },
}

/// A target that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notification target {url}: not a valid http URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "notification target {url}: https is not supported yet (no TLS connector is built in); \
         use an http:// URL"
    )]
    HttpsUnsupported { url: String },
    #[error("notification target {url}: header {name:?} is not valid: {reason}")]
    InvalidHeader {
        url: String,
        name: String,
        reason: String,
    },
    #[error("notifications need a running tokio runtime")]
    NoRuntime,
}

/// How deliveries are attempted. [`Policy::default`] is what `rollgate serve` uses.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Limit for one attempt, connection included. Default 5 s.
    pub timeout: Duration,
    /// Attempts after the first one, on connection errors, timeouts, 5xx and 429. Default 3.
    pub retries: u32,
    /// Wait before the first retry, doubled for each next one. Default 0.5 s (0.5, 1, 2 s).
    pub first_backoff: Duration,
    /// Cap on a server's `Retry-After`, so one receiver cannot park a queue. Default 30 s.
    pub max_retry_after: Duration,
    /// Notifications each target's queue holds before new ones are dropped. Default 1024.
    pub queue: usize,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            timeout: Duration::from_secs(5),
            retries: 3,
            first_backoff: Duration::from_millis(500),
            max_retry_after: Duration::from_secs(30),
            queue: 1024,
        }
    }
}

impl Policy {
    /// The wait before retry number `retry` (0-based) when the server gave no `Retry-After`.
    pub fn backoff(&self, retry: u32) -> Duration {
        self.first_backoff
            .saturating_mul(2u32.saturating_pow(retry))
            .min(Duration::from_secs(300))
    }
}

/// Delivery counters. A notification sent to two targets counts twice in `sent`/`failed`;
/// `dropped` counts notifications a full queue turned away, also per target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NotifierStats {
    /// Delivered: the target answered 2xx.
    pub sent: u64,
    /// Given up: a 4xx other than 429, a non-2xx that is not retried, or retries exhausted.
    pub failed: u64,
    /// Never attempted because the target's queue was full.
    pub dropped: u64,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

/// Sends notifications to every target in the background. Cheap to clone; the workers stop
/// once every clone is dropped and their queues are empty.
#[derive(Clone)]
pub struct Notifier {
    queues: Vec<mpsc::Sender<Arc<Notification>>>,
    counters: Arc<Counters>,
    /// Notifications queued or being delivered, over all targets; lets `flush` wait.
    pending: Arc<watch::Sender<usize>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("targets", &self.queues.len())
            .field("stats", &self.stats())
            .finish()
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A target checked and parsed once, so that workers cannot meet a bad URL.
struct Prepared {
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    slack: bool,
    /// scheme://host:port only: Slack webhook paths are secrets and must not reach logs.
    label: String,
}

impl Notifier {
    /// A notifier with the default [`Policy`]; see [`Notifier::with_policy`].
    pub fn new(targets: Vec<Target>) -> Result<Notifier, NotifyError> {
        Notifier::with_policy(targets, Policy::default())
    }

    /// Checks every target (http URL, valid headers) and starts one worker task per target
    /// on the current tokio runtime. Errors name the bad target; no task starts then.
    pub fn with_policy(targets: Vec<Target>, policy: Policy) -> Result<Notifier, NotifyError> {
        let prepared = targets.iter().map(prepare).collect::<Result<Vec<_>, _>>()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| NotifyError::NoRuntime)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(policy.timeout));
        let client: HttpClient = Client::builder(TokioExecutor::new()).build(connector);
        let counters = Arc::new(Counters::default());
        let pending = Arc::new(watch::Sender::new(0usize));
        let mut queues = Vec::with_capacity(prepared.len());
        for target in prepared {
            let (tx, rx) = mpsc::channel(policy.queue.max(1));
            queues.push(tx);
            runtime.spawn(worker(
                target,
                rx,
                client.clone(),
                policy.clone(),
                Arc::clone(&counters),
                Arc::clone(&pending),
            ));
        }
        Ok(Notifier {
            queues,
            counters,
            pending,
        })
    }

    /// Queues `n` for every target and returns at once; never waits on the network. When a
    /// target's queue is full, the notification is dropped for that target and counted.
    pub fn send(&self, n: Notification) {
        let n = Arc::new(n);
        for queue in &self.queues {
            // Count before queueing so a fast worker can never take pending below zero.
            self.pending.send_modify(|p| *p += 1);
            if queue.try_send(Arc::clone(&n)).is_err() {
                self.pending.send_modify(|p| *p = p.saturating_sub(1));
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(kind = %n.kind, app = %n.app, env = %n.env,
                    "notification dropped: queue full");
            }
        }
    }

    /// Waits until every queued notification is delivered or given up, at most `timeout`.
    /// Returns whether the queues are empty. For shutdown and tests.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let mut rx = self.pending.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The delivery counters so far.
    pub fn stats(&self) -> NotifierStats {
        NotifierStats {
            sent: self.counters.sent.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
        }
    }
}

fn prepare(target: &Target) -> Result<Prepared, NotifyError> {
    let (url, headers, slack) = match target {
        Target::Webhook { url, headers } => (url, Some(headers), false),
        Target::Slack { url } => (url, None, true),
    };
    let invalid = |reason: String| NotifyError::InvalidUrl {
        url: url.clone(),
        reason,
    };
    let uri: Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(NotifyError::HttpsUnsupported { url: url.clone() }),
        _ => return Err(invalid("the scheme must be http://".to_string())),
    }
    let Some(authority) = uri.authority() else {
        return Err(invalid("no host".to_string()));
    };
    let label = format!("http://{authority}");
    let mut parsed = Vec::new();
    for (name, value) in headers.into_iter().flatten() {
        let bad = |reason: String| NotifyError::InvalidHeader {
            url: label.clone(),
            name: name.clone(),
            reason,
        };
        let n = HeaderName::try_from(name.as_str()).map_err(|e| bad(e.to_string()))?;
        let v = HeaderValue::try_from(value.as_str()).map_err(|e| bad(e.to_string()))?;
        parsed.push((n, v));
    }
    Ok(Prepared {
        uri,
        headers: parsed,
        slack,
        label,
    })
}

async fn worker(
    target: Prepared,
    mut rx: mpsc::Receiver<Arc<Notification>>,
    client: HttpClient,
    policy: Policy,
    counters: Arc<Counters>,
    pending: Arc<watch::Sender<usize>>,
) {
    while let Some(n) = rx.recv().await {
        let counter = if deliver(&client, &target, &n, &policy).await {
            &counters.sent
        } else {
            &counters.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        pending.send_modify(|p| *p = p.saturating_sub(1));
    }
}

/// What one attempt taught us.
enum Attempt {
    Delivered,
    /// Transient: connection error, timeout, 5xx, 429; with the server's Retry-After if any.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    GiveUp(String),
}

/// Delivers one notification to one target, retrying transient failures; true when sent.
async fn deliver(
    client: &HttpClient,
    target: &Prepared,
    n: &Notification,
    policy: &Policy,
) -> bool {
    let body = if target.slack {
        serde_json::to_vec(&serde_json::json!({ "text": n.summary() }))
    } else {
        serde_json::to_vec(n)
    };
    let body = match body {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::warn!(target = %target.label, kind = %n.kind, error = %e,
                "notification could not be encoded");
            return false;
        }
    };
    let mut retry = 0;
    loop {
        let (reason, after) = match attempt(client, target, body.clone(), policy).await {
            Attempt::Delivered => return true,
            Attempt::GiveUp(reason) => {
                tracing::warn!(target = %target.label, kind = %n.kind, %reason,
                    "notification rejected, not retrying");
                return false;
            }
            Attempt::Retry { reason, after } => (reason, after),
        };
        if retry >= policy.retries {
            tracing::warn!(target = %target.label, kind = %n.kind, %reason,
                attempts = retry + 1, "notification failed, giving up");
            return false;
        }
        let wait = after.map_or_else(|| policy.backoff(retry), |a| a.min(policy.max_retry_after));
        tracing::debug!(target = %target.label, kind = %n.kind, %reason, ?wait,
            "notification attempt failed, retrying");
        tokio::time::sleep(wait).await;
        retry += 1;
    }
}

async fn attempt(client: &HttpClient, target: &Prepared, body: Bytes, policy: &Policy) -> Attempt {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(target.uri.clone())
        .header(CONTENT_TYPE, "application/json")
        .header(USER_AGENT, "rollgate-notify");
    for (name, value) in &target.headers {
        builder = builder.header(name, value);
    }
    let request = match builder.body(Full::new(body)) {
        Ok(r) => r,
        Err(e) => return Attempt::GiveUp(format!("invalid request: {e}")),
    };
    let response = match tokio::time::timeout(policy.timeout, client.request(request)).await {
        Err(_) => {
            return Attempt::Retry {
                reason: format!("no answer within {:?}", policy.timeout),
                after: None,
            };
        }
        Ok(Err(e)) => {
            return Attempt::Retry {
                reason: format!("connection error: {e}"),
                after: None,
            };
        }
        Ok(Ok(r)) => r,
    };
    // The body is not read: only the status matters, and a hostile receiver could stream.
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Attempt::Retry {
            reason: format!("answered {status}"),
            after: retry_after(response.headers()),
        };
    }
    Attempt::GiveUp(format!("answered {status}"))
}

/// `Retry-After` in seconds; the HTTP-date form is ignored (back-off applies instead).
fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper::{HeaderMap, Response};
    use hyper_util::rt::TokioIo;
    use std::sync::Mutex;
    use std::time::Instant;

    /// How the test receiver answers one request.
    #[derive(Clone)]
    enum Reply {
        Status(u16, Option<&'static str>),
        Hang,
    }

    struct Recorded {
        at: Instant,
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    /// A real HTTP server on 127.0.0.1:0 that records every request and answers the i-th
    /// with `script[i]` (the last entry repeats; 200 when empty).
    struct Receiver {
        url: String,
        requests: Arc<Mutex<Vec<Recorded>>>,
    }

    async fn receiver(script: Vec<Reply>) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook/secret", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let recorded = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let recorded = Arc::clone(&recorded);
                let script = script.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let recorded = Arc::clone(&recorded);
                        let script = script.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let headers = req.headers().clone();
                            let body = req.into_body().collect().await?.to_bytes();
                            let index = {
                                let mut r = recorded.lock().unwrap();
                                r.push(Recorded {
                                    at: Instant::now(),
                                    path,
                                    headers,
                                    body,
                                });
                                r.len() - 1
                            };
                            let reply = script
                                .get(index)
                                .or(script.last())
                                .cloned()
                                .unwrap_or(Reply::Status(200, None));
                            let (status, retry_after) = match reply {
                                Reply::Status(s, r) => (s, r),
                                Reply::Hang => std::future::pending().await,
                            };
                            let mut resp = Response::builder().status(status);
                            if let Some(r) = retry_after {
                                resp = resp.header("retry-after", r);
                            }
                            Ok::<_, hyper::Error>(resp.body(Full::new(Bytes::new())).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, requests }
    }

    impl Receiver {
        fn count(&self) -> usize {
            self.requests.lock().unwrap().len()
        }
        fn json(&self, i: usize) -> serde_json::Value {
            serde_json::from_slice(&self.requests.lock().unwrap()[i].body).unwrap()
        }
    }

    /// Retries without the production waits, so the tests stay quick.
    fn fast() -> Policy {
        Policy {
            timeout: Duration::from_secs(5),
            retries: 3,
            first_backoff: Duration::from_millis(10),
            max_retry_after: Duration::from_secs(30),
            queue: 16,
        }
    }

    fn rolled_back() -> Notification {
        let mut n = Notification::new(
            "rollout.rolled_back",
            "api",
            "prod",
            "candidate error rate 20.0% vs baseline 1.0%",
        );
        n.rollout_id = Some(12);
        n.version = Some(7);
        n.phase = Some("shift".to_string());
        n.details = serde_json::json!({ "p_value": 3e-12 });
        n
    }

    fn webhook(url: &str) -> Target {
        Target::Webhook {
            url: url.to_string(),
            headers: BTreeMap::from([("authorization".to_string(), "Bearer t0k".to_string())]),
        }
    }

    const WAIT: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn webhook_posts_the_notification_as_json_with_every_field() {
        let rx = receiver(vec![]).await;
        let notifier = Notifier::with_policy(vec![webhook(&rx.url)], fast()).unwrap();
        notifier.send(rolled_back());
        assert!(notifier.flush(WAIT).await);

        assert_eq!(
            notifier.stats(),
            NotifierStats {
                sent: 1,
                failed: 0,
                dropped: 0
            }
        );
        assert_eq!(rx.count(), 1);
        {
            let requests = rx.requests.lock().unwrap();
            let r = &requests[0];
            assert_eq!(r.path, "/hook/secret");
            assert_eq!(r.headers["content-type"], "application/json");
            assert_eq!(r.headers["authorization"], "Bearer t0k");
        }
        let body = rx.json(0);
        assert_eq!(body["kind"], "rollout.rolled_back");
        assert_eq!(body["app"], "api");
        assert_eq!(body["env"], "prod");
        assert_eq!(body["rollout_id"], 12);
        assert_eq!(body["version"], 7);
        assert_eq!(body["phase"], "shift");
        assert_eq!(
            body["message"],
            "candidate error rate 20.0% vs baseline 1.0%"
        );
        assert_eq!(body["details"]["p_value"], 3e-12);
        let at = body["at"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(at).is_ok(), "not RFC 3339: {at}");
    }

    #[tokio::test]
    async fn slack_body_has_a_readable_text_line() {
        let rx = receiver(vec![]).await;
        let notifier = Notifier::with_policy(
            vec![Target::Slack {
                url: rx.url.clone(),
            }],
            fast(),
        )
        .unwrap();
        notifier.send(rolled_back());
        assert!(notifier.flush(WAIT).await);
        assert_eq!(
            rx.json(0),
            serde_json::json!({
                "text": "[rollgate] api/prod v7 rolled back (in shift): \
                         candidate error rate 20.0% vs baseline 1.0%"
            })
        );
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_success() {
        let rx = receiver(vec![
            Reply::Status(500, None),
            Reply::Status(500, None),
            Reply::Status(200, None),
        ])
        .await;
        let notifier = Notifier::with_policy(vec![webhook(&rx.url)], fast()).unwrap();
        notifier.send(rolled_back());
        assert!(notifier.flush(WAIT).await);
        assert_eq!(rx.count(), 3);
        assert_eq!(
            notifier.stats(),
            NotifierStats {
                sent: 1,
                failed: 0,
                dropped: 0
            }
        );
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let rx = receiver(vec![Reply::Status(404, None)]).await;
        let notifier = Notifier::with_policy(vec![webhook(&rx.url)], fast()).unwrap();
        notifier.send(rolled_back());
        assert!(notifier.flush(WAIT).await);
        assert_eq!(rx.count(), 1);
        assert_eq!(
            notifier.stats(),
            NotifierStats {
                sent: 0,
                failed: 1,
                dropped: 0
            }
        );
    }

    #[tokio::test]
    async fn too_many_requests_waits_for_retry_after() {
        let rx = receiver(vec![
            Reply::Status(429, Some("1")),
            Reply::Status(200, None),
        ])
        .await;
        // Back-off alone would retry after 10 ms; only honouring Retry-After waits a second.
        let notifier = Notifier::with_policy(vec![webhook(&rx.url)], fast()).unwrap();
        notifier.send(rolled_back());
        assert!(notifier.flush(WAIT).await);
        assert_eq!(notifier.stats().sent, 1);
        let requests = rx.requests.lock().unwrap();
        assert_eq!(requests.len(), 2);
        let gap = requests[1].at - requests[0].at;
        assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    }

    #[tokio::test]
    async fn refused_connection_fails_after_retries() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let notifier = Notifier::with_policy(
            vec![webhook(&format!("http://127.0.0.1:{port}/hook"))],
            fast(),
        )
        .unwrap();
        notifier.send(rolled_back());
        assert!(notifier.flush(WAIT).await);
        assert_eq!(
            notifier.stats(),
            NotifierStats {
                sent: 0,
                failed: 1,
                dropped: 0
            }
        );
    }

    #[tokio::test]
    async fn send_never_blocks_on_a_hanging_receiver() {
        let rx = receiver(vec![Reply::Hang]).await;
        let policy = Policy {
            timeout: Duration::from_millis(200),
            retries: 0,
            queue: 4,
            ..fast()
        };
        let notifier = Notifier::with_policy(vec![webhook(&rx.url)], policy).unwrap();
        // `send` is synchronous: if it could wait on the receiver, this loop would hang.
        for _ in 0..100 {
            notifier.send(rolled_back());
        }
        let stats = notifier.stats();
        // The queue holds 4 and the worker may have taken one more off it.
        assert!(stats.dropped >= 95, "{stats:?}");
        assert_eq!(stats.sent, 0);
        assert!(notifier.flush(WAIT).await);
        let stats = notifier.stats();
        assert_eq!(stats.failed + stats.dropped, 100, "{stats:?}");
        assert_eq!(stats.sent, 0);
    }

    #[tokio::test]
    async fn each_target_gets_its_own_copy() {
        let hook = receiver(vec![]).await;
        let slack = receiver(vec![Reply::Status(403, None)]).await;
        let notifier = Notifier::with_policy(
            vec![
                webhook(&hook.url),
                Target::Slack {
                    url: slack.url.clone(),
                },
            ],
            fast(),
        )
        .unwrap();
        notifier.send(Notification::new(
            "alarm.firing",
            "api",
            "prod",
            "p99 612ms > 500ms",
        ));
        assert!(notifier.flush(WAIT).await);
        assert_eq!((hook.count(), slack.count()), (1, 1));
        assert_eq!(
            notifier.stats(),
            NotifierStats {
                sent: 1,
                failed: 1,
                dropped: 0
            }
        );
        assert_eq!(
            slack.json(0)["text"],
            "[rollgate] api/prod alarm firing: p99 612ms > 500ms"
        );
    }

    #[tokio::test]
    async fn https_and_bad_targets_are_rejected_at_construction() {
        let err = Notifier::new(vec![Target::Slack {
            url: "https://hooks.slack.com/services/T/B/X".to_string(),
        }])
        .unwrap_err();
        assert!(matches!(err, NotifyError::HttpsUnsupported { .. }), "{err}");
        assert!(err.to_string().contains("https is not supported yet"));
        let err = Notifier::new(vec![Target::Slack {
            url: "not a url".to_string(),
        }])
        .unwrap_err();
        assert!(matches!(err, NotifyError::InvalidUrl { .. }), "{err}");
        let err = Notifier::new(vec![Target::Webhook {
            url: "http://127.0.0.1:9/".to_string(),
            headers: BTreeMap::from([("bad header".to_string(), "x".to_string())]),
        }])
        .unwrap_err();
        assert!(matches!(err, NotifyError::InvalidHeader { .. }), "{err}");
    }

    #[test]
    fn construction_outside_a_runtime_is_an_error_not_a_panic() {
        let err = Notifier::new(vec![Target::Slack {
            url: "http://127.0.0.1:9/".to_string(),
        }])
        .unwrap_err();
        assert!(matches!(err, NotifyError::NoRuntime));
    }

    #[test]
    fn default_backoff_doubles_from_half_a_second() {
        let p = Policy::default();
        assert_eq!(
            (0..3).map(|r| p.backoff(r)).collect::<Vec<_>>(),
            [500, 1000, 2000].map(Duration::from_millis)
        );
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert_eq!(p.retries, 3);
    }
}
