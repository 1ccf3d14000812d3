//! Test harness: real hyper upstreams and a real gateway on 127.0.0.1 ports chosen by the OS,
//! and a pooled keep-alive client to drive them.

#![allow(dead_code)]

pub mod mmdb;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rollgate_gateway::{
    AppRoute, Backend, Gateway, GatewayConfig, GatewayError, Metrics, RouteHandle, RouteTable,
    Upstream,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Request header telling a test upstream which status to answer.
pub const ANSWER_STATUS: &str = "x-test-status";
/// Request header telling a test upstream how long to sleep before answering, in ms.
pub const ANSWER_AFTER_MS: &str = "x-test-sleep-ms";

/// A hyper server answering with its name; it echoes what it saw in `x-seen-*` headers.
pub struct TestUpstream {
    pub name: String,
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestUpstream {
    pub async fn start(name: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let owned = name.to_owned();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let name = owned.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(name.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            name: name.to_owned(),
            addr,
            connections,
            task,
        }
    }

    /// This upstream as a routing-table instance.
    pub fn upstream(&self) -> Upstream {
        Upstream {
            id: self.name.clone(),
            addr: self.addr,
        }
    }
}

async fn answer(name: String, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |key: &str| {
        req.headers()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let status = header(ANSWER_STATUS)
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let sleep_ms = header(ANSWER_AFTER_MS)
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let seen_id = header("x-request-id").unwrap_or_default();
    let seen_xff = header("x-forwarded-for").unwrap_or_default();
    let seen_proto = header("x-forwarded-proto").unwrap_or_default();
    let seen_host = header("host").unwrap_or_default();
    let seen_connection_named = header("x-hop").is_some();
    let seen_key_id = header("x-rollgate-key-id").unwrap_or_default();
    let body_len = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes().len())
        .unwrap_or(0);
    if sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    }
    let response = Response::builder()
        .status(status)
        .header("x-upstream", name.as_str())
        .header("x-seen-request-id", seen_id)
        .header("x-seen-forwarded-for", seen_xff)
        .header("x-seen-forwarded-proto", seen_proto)
        .header("x-seen-host", seen_host)
        .header("x-seen-hop", seen_connection_named.to_string())
        .header("x-seen-key-id", seen_key_id)
        .header("x-seen-body-len", body_len.to_string())
        .body(Full::new(Bytes::from(name)))
        .expect("test response");
    Ok(response)
}

/// An address on which nothing listens: connections to it are refused. The port stays bound
/// (without listening) for the rest of the test run, so no other test's listener can take it
/// and turn "refused" into an answer.
pub async fn refused_addr() -> SocketAddr {
    static HELD: std::sync::Mutex<Vec<tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind probe");
    let addr = socket.local_addr().expect("probe addr");
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(socket);
    addr
}

/// A running gateway and the means to stop it.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub routes: RouteHandle,
    pub metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), GatewayError>>>,
}

impl TestGateway {
    pub async fn start(config: GatewayConfig) -> Self {
        let gateway = Gateway::bind(config).await.expect("bind gateway");
        let addr = gateway.local_addr();
        let routes = gateway.routes();
        let metrics = gateway.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(gateway.serve(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            routes,
            metrics,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn with_table(table: RouteTable) -> Self {
        Self::serving(GatewayConfig::default(), table).await
    }

    /// A gateway with `config`, routing by `table`.
    pub async fn serving(config: GatewayConfig, table: RouteTable) -> Self {
        let gateway = Self::start(config).await;
        gateway.routes.set(table);
        gateway
    }

    /// Asks the gateway to shut down and waits until `serve` returns.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("serve task").expect("serve result");
        }
    }
}

/// One app at `/` for any host.
pub fn table(app: &str, backends: Vec<Backend>) -> RouteTable {
    RouteTable {
        apps: vec![route(app, &[], "/", backends)],
    }
}

pub fn route(app: &str, hosts: &[&str], prefix: &str, backends: Vec<Backend>) -> AppRoute {
    AppRoute {
        app: app.to_owned(),
        hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        path_prefix: prefix.to_owned(),
        backends,
        ..AppRoute::default()
    }
}

/// A table of app `api` with one version of one instance, `id` at `addr`.
pub fn one_instance(id: &str, addr: SocketAddr) -> RouteTable {
    table(
        "api",
        vec![Backend {
            version: 1,
            weight: 1000,
            instances: vec![Upstream {
                id: id.to_owned(),
                addr,
            }],
        }],
    )
}

pub fn backend(version: u64, weight: u32, instances: &[&TestUpstream]) -> Backend {
    Backend {
        version,
        weight,
        instances: instances.iter().map(|u| u.upstream()).collect(),
    }
}

/// What a client saw.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("json body")
    }
}

/// A pooled keep-alive HTTP/1.1 client.
#[derive(Clone)]
pub struct TestClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for TestClient {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClient {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub async fn get(&self, gateway: SocketAddr, path: &str) -> Answer {
        self.send(gateway, "GET", path, &[], Bytes::new()).await
    }

    pub async fn send(
        &self,
        gateway: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("http://{gateway}{path}"));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder.body(Full::new(body)).expect("test request");
        let response = self.client.request(request).await.expect("response");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("response body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// Waits until `check` holds, for at most 10 s; returns whether it did. Recording happens as
/// the response body ends, which can be a moment after the client has read it.
pub async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An environment's edge policy parsed as `rollgate serve` would: `env_lines` are the
/// `[env.e.edge]` table (and its sub-tables) of a file with one app and one environment `e`.
pub fn parse_env_edge(env_lines: &str) -> rollgate_core::config::edge::EdgeConfig {
    let text = format!("[app.api]\nrun = \"x\"\n[env.e]\nlisten = \"127.0.0.1:0\"\n{env_lines}\n");
    let config = rollgate_core::Config::parse(&text, "test.toml").expect("valid edge config");
    config.envs["e"].edge.clone().expect("edge table")
}

/// A gateway with `edge` and its access log at `log`, routing app `api` to one upstream
/// `blue`; keep the upstream alive as long as the gateway.
pub async fn start_edge_gateway(
    edge: &rollgate_core::config::edge::EdgeConfig,
    log: std::path::PathBuf,
) -> (TestGateway, TestUpstream) {
    let config = GatewayConfig {
        access_log: Some(log),
        ..GatewayConfig::default()
    }
    .with_edge(Some(edge))
    .expect("edge policy");
    let gateway = TestGateway::start(config).await;
    let upstream = TestUpstream::start("blue").await;
    gateway
        .routes
        .set(table("api", vec![backend(1, 1000, &[&upstream])]));
    (gateway, upstream)
}
