//! The sample service that rollgate's demo and tests release.
//!
//! It owns a tiny HTTP/1 API (`/health`, `/version`, `/api/users`) and the faults a bad release
//! can be staged with (`DEMO_ERROR_RATE`, `DEMO_LATENCY_MS`, `DEMO_FAIL_HEALTH`,
//! `DEMO_EXIT_AFTER_MS`, `DEMO_FAULTS_AFTER_MS`), all read from the environment because that is how rollgate's run spec
//! hands settings to an instance. The same code backs the `demo-service` binary and the hidden
//! `rollgate demo-service` subcommand.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

/// Header echoed back on every response so a client (or the gateway) can correlate logs.
const REQUEST_ID: &str = "x-request-id";

/// Exit code of the process when `DEMO_EXIT_AFTER_MS` fires: a crashing release.
pub const EXIT_CODE_CRASH: i32 = 3;
/// Exit code of the binary when its configuration (environment or arguments) is invalid.
pub const EXIT_CODE_CONFIG: i32 = 2;

/// Settings of one demo-service instance.
///
/// Built from the environment with [`DemoConfig::from_env`]; [`DemoConfig::default`] is a
/// healthy, fault-free instance with version `"dev"`.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoConfig {
    /// Reported by `/version`: `ROLLGATE_VERSION`, else `DEMO_VERSION`, else `"dev"`.
    pub version: String,
    /// Reported by `/version`: `ROLLGATE_LABEL` (e.g. a git sha), else `null`.
    pub label: Option<String>,
    /// Reported by `/version`: `ROLLGATE_INSTANCE`, else `null`.
    pub instance: Option<String>,
    /// `DEMO_ERROR_RATE`: fraction in `[0, 1]` of `/api/*` requests answered 500; default 0.
    pub error_rate: f64,
    /// `DEMO_LATENCY_MS`: delay added to every `/api/*` request; default none.
    pub latency: Duration,
    /// `DEMO_FAIL_HEALTH=1`: `/health` answers 503; default false.
    pub fail_health: bool,
    /// `DEMO_EXIT_AFTER_MS`: [`run`] exits the process with code 3 this long after start.
    pub exit_after: Option<Duration>,
    /// `DEMO_FAULTS_AFTER_MS`: the error rate and latency apply only from this long after
    /// start, so a release that degrades once promoted can be staged; default from the start.
    pub faults_after: Option<Duration>,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            version: "dev".to_owned(),
            label: None,
            instance: None,
            error_rate: 0.0,
            latency: Duration::ZERO,
            fail_health: false,
            exit_after: None,
            faults_after: None,
        }
    }
}

/// A configuration value that cannot be used; the message names the variable or argument.
#[derive(Debug, thiserror::Error)]
pub enum DemoConfigError {
    /// A variable is set but does not parse or is out of range.
    #[error("invalid {name}={value:?}: expected {expected}")]
    Invalid {
        /// The environment variable or command-line argument.
        name: &'static str,
        /// The value as given.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// No port was given by `--port` or `PORT`.
    #[error("no port: pass --port N or set PORT")]
    MissingPort,
    /// A command-line argument the binary does not know.
    #[error("unknown argument {0:?} (usage: demo-service [--port N])")]
    UnknownArgument(String),
}

impl DemoConfig {
    /// Reads the configuration from the process environment (see the field docs for names
    /// and defaults). Empty variables count as unset.
    pub fn from_env() -> Result<DemoConfig, DemoConfigError> {
        DemoConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`DemoConfig::from_env`] but reads variables through `lookup`, so that callers
    /// (and tests) need not mutate the process environment.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<DemoConfig, DemoConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let defaults = DemoConfig::default();
        let version = get("ROLLGATE_VERSION")
            .or_else(|| get("DEMO_VERSION"))
            .unwrap_or(defaults.version);
        let error_rate = match get("DEMO_ERROR_RATE") {
            None => 0.0,
            Some(raw) => match raw.trim().parse::<f64>() {
                Ok(rate) if (0.0..=1.0).contains(&rate) => rate,
                _ => {
                    return Err(DemoConfigError::Invalid {
                        name: "DEMO_ERROR_RATE",
                        value: raw,
                        expected: "a fraction between 0.0 and 1.0",
                    });
                }
            },
        };
        let latency = parse_millis(get("DEMO_LATENCY_MS"), "DEMO_LATENCY_MS")?.unwrap_or_default();
        let fail_health = match get("DEMO_FAIL_HEALTH").as_deref().map(str::trim) {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => {
                return Err(DemoConfigError::Invalid {
                    name: "DEMO_FAIL_HEALTH",
                    value: other.to_owned(),
                    expected: "1, 0, true or false",
                });
            }
        };
        let exit_after = parse_millis(get("DEMO_EXIT_AFTER_MS"), "DEMO_EXIT_AFTER_MS")?;
        let faults_after = parse_millis(get("DEMO_FAULTS_AFTER_MS"), "DEMO_FAULTS_AFTER_MS")?;
        Ok(DemoConfig {
            version,
            label: get("ROLLGATE_LABEL"),
            instance: get("ROLLGATE_INSTANCE"),
            error_rate,
            latency,
            fail_health,
            exit_after,
            faults_after,
        })
    }
}

fn parse_millis(
    raw: Option<String>,
    name: &'static str,
) -> Result<Option<Duration>, DemoConfigError> {
    match raw {
        None => Ok(None),
        Some(raw) => match raw.trim().parse::<u64>() {
            Ok(ms) => Ok(Some(Duration::from_millis(ms))),
            Err(_) => Err(DemoConfigError::Invalid {
                name,
                value: raw,
                expected: "a whole number of milliseconds",
            }),
        },
    }
}

/// Parses a port from `--port` or `PORT`; `0` is refused because rollgate must know the port.
pub fn parse_port(raw: &str, name: &'static str) -> Result<u16, DemoConfigError> {
    match raw.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(DemoConfigError::Invalid {
            name,
            value: raw.to_owned(),
            expected: "a port number between 1 and 65535",
        }),
    }
}

/// Resolves the listening port from the arguments (`--port N` or `--port=N`, which wins) or
/// the `PORT` variable.
pub fn port_from_args_or_env<I>(args: I) -> Result<u16, DemoConfigError>
where
    I: IntoIterator<Item = String>,
{
    let mut args = args.into_iter();
    let mut port = None;
    while let Some(arg) = args.next() {
        if arg == "--port" {
            let value = args.next().unwrap_or_default();
            port = Some(parse_port(&value, "--port")?);
        } else if let Some(value) = arg.strip_prefix("--port=") {
            port = Some(parse_port(value, "--port")?);
        } else {
            return Err(DemoConfigError::UnknownArgument(arg));
        }
    }
    match port {
        Some(port) => Ok(port),
        None => match std::env::var("PORT") {
            Ok(raw) if !raw.is_empty() => parse_port(&raw, "PORT"),
            _ => Err(DemoConfigError::MissingPort),
        },
    }
}

/// Entry point for a host binary: parses `args` (without the program name), reads the
/// environment, runs the service on its own tokio runtime until SIGTERM/SIGINT and returns the
/// process exit code: 0 after a graceful stop, 2 for invalid configuration, 1 for I/O errors
/// (e.g. the port is taken). `DEMO_EXIT_AFTER_MS` ends the process with code 3 instead.
pub fn run_main<I>(args: I) -> i32
where
    I: IntoIterator<Item = String>,
{
    let port = match port_from_args_or_env(args) {
        Ok(port) => port,
        Err(err) => {
            eprintln!("demo-service: {err}");
            return EXIT_CODE_CONFIG;
        }
    };
    let config = match DemoConfig::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("demo-service: {err}");
            return EXIT_CODE_CONFIG;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("demo-service: cannot start the async runtime: {err}");
            return 1;
        }
    };
    match runtime.block_on(run(port, config)) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("demo-service: {err}");
            1
        }
    }
}

/// Binds `127.0.0.1:port` and serves until SIGTERM or SIGINT, then lets in-flight requests
/// finish and returns. When `config.exit_after` is set the whole process exits with code 3 at
/// that time (a staged crash), which is why this is for a dedicated process, not for tests.
pub async fn run(port: u16, config: DemoConfig) -> std::io::Result<()> {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    if let Some(after) = config.exit_after {
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            eprintln!(
                "demo-service: DEMO_EXIT_AFTER_MS={} reached, exiting with code {EXIT_CODE_CRASH}",
                after.as_millis()
            );
            std::process::exit(EXIT_CODE_CRASH);
        });
    }
    eprintln!(
        "demo-service {} listening on http://{}",
        config.version,
        listener.local_addr()?
    );
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("demo-service: signal received, finishing in-flight requests");
    };
    serve(listener, config, shutdown).await
}

/// Serves the demo API on `listener` until `shutdown` completes, then stops accepting and
/// waits for in-flight requests to finish (idle keep-alive connections close at once).
///
/// Faults from `config` apply to `/api/*` only; `exit_after` is ignored here (see [`run`]).
pub async fn serve(
    listener: TcpListener,
    config: DemoConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = Arc::new(State {
        config,
        api_requests: AtomicU64::new(0),
        started: std::time::Instant::now(),
    });
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) => {
                // Running out of descriptors is transient; failing the whole service for it
                // would turn load into an outage.
                eprintln!("demo-service: accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        let service = service_fn(move |request| {
            let state = Arc::clone(&state);
            async move { Ok::<_, Infallible>(state.handle(request).await) }
        });
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client hanging up mid-request is normal and not worth a log line.
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

struct State {
    config: DemoConfig,
    /// Counts `/api/*` requests so that the injected error rate is spread deterministically.
    api_requests: AtomicU64,
    /// When the service started, for `DEMO_FAULTS_AFTER_MS`.
    started: std::time::Instant,
}

const USERS: [(u64, &str); 3] = [(1, "Ada"), (2, "Grace"), (3, "Edsger")];

impl State {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let request_id = request.headers().get(REQUEST_ID).cloned();
        let mut response = self.route(&request).await;
        if let Some(id) = request_id {
            response.headers_mut().insert(REQUEST_ID, id);
        }
        response
    }

    async fn route(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let is_api = path == "/api" || path.starts_with("/api/");
        if is_api && let Some(fault) = self.api_fault().await {
            return fault;
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return json(
                StatusCode::METHOD_NOT_ALLOWED,
                &serde_json::json!({"error": "method not allowed"}),
            );
        }
        match path {
            "/health" if self.config.fail_health => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "failing (DEMO_FAIL_HEALTH)",
            ),
            "/health" => text(StatusCode::OK, "ok"),
            "/version" => json(
                StatusCode::OK,
                &serde_json::json!({
                    "version": self.config.version,
                    "label": self.config.label,
                    "instance": self.config.instance,
                    "pid": std::process::id(),
                }),
            ),
            "/api/users" => {
                let users: Vec<_> = USERS
                    .iter()
                    .map(|(id, name)| serde_json::json!({"id": id, "name": name}))
                    .collect();
                json(StatusCode::OK, &serde_json::Value::Array(users))
            }
            _ => match path
                .strip_prefix("/api/users/")
                .and_then(|id| id.parse::<u64>().ok())
            {
                Some(wanted) => match USERS.iter().find(|(id, _)| *id == wanted) {
                    Some((id, name)) => {
                        json(StatusCode::OK, &serde_json::json!({"id": id, "name": name}))
                    }
                    None => json(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({"error": "user not found"}),
                    ),
                },
                None => not_found(),
            },
        }
    }

    /// Applies the configured latency, then answers 500 for request `n` exactly when
    /// `floor((n+1)*rate) > floor(n*rate)`, so any window of requests sees the configured
    /// fraction without randomness.
    async fn api_fault(&self) -> Option<Response<Full<Bytes>>> {
        if self
            .config
            .faults_after
            .is_some_and(|after| self.started.elapsed() < after)
        {
            return None;
        }
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let rate = self.config.error_rate;
        if rate <= 0.0 {
            return None;
        }
        let n = self.api_requests.fetch_add(1, Ordering::Relaxed) as f64;
        if ((n + 1.0) * rate).floor() > (n * rate).floor() {
            Some(json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": "injected fault"}),
            ))
        } else {
            None
        }
    }
}

fn not_found() -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({"error": "not found"}),
    )
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", value.to_string())
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.to_owned())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
