//! Tests of the demo service over real HTTP on 127.0.0.1: in-process for the endpoints and
//! faults, and through the real binary for exit codes and graceful shutdown.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use demo_service::{DemoConfig, serve};
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(config: DemoConfig) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, config, async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

struct Reply {
    status: u16,
    request_id: Option<String>,
    content_type: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

async fn get(addr: SocketAddr, path: &str, request_id: Option<&str>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut request = Request::get(path).header("host", addr.to_string());
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let status = response.status().as_u16();
    let request_id = header("x-request-id");
    let content_type = header("content-type");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        request_id,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

fn config(vars: &[(&str, &str)]) -> DemoConfig {
    DemoConfig::from_lookup(|name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap()
}

#[tokio::test]
async fn endpoints_answer_as_documented() {
    let service = Running::start(config(&[
        ("ROLLGATE_VERSION", "7"),
        ("ROLLGATE_LABEL", "abc123"),
        ("ROLLGATE_INSTANCE", "api.prod.v7.0"),
    ]))
    .await;
    let addr = service.addr;

    let health = get(addr, "/health", None).await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    let version = get(addr, "/version", None).await;
    assert_eq!(version.status, 200);
    assert_eq!(version.content_type.as_deref(), Some("application/json"));
    let version = version.json();
    assert_eq!(version["version"], "7");
    assert_eq!(version["label"], "abc123");
    assert_eq!(version["instance"], "api.prod.v7.0");
    assert_eq!(version["pid"], std::process::id());

    let users = get(addr, "/api/users", None).await;
    assert_eq!(users.status, 200);
    let users = users.json();
    assert_eq!(users[0], serde_json::json!({"id": 1, "name": "Ada"}));
    assert!(users.as_array().unwrap().len() >= 3);

    let one = get(addr, "/api/users/2", None).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json(), serde_json::json!({"id": 2, "name": "Grace"}));

    let missing = get(addr, "/api/users/99", None).await;
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"].is_string());

    let unknown = get(addr, "/nope", None).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json(), serde_json::json!({"error": "not found"}));

    service.shutdown().await;
}

#[tokio::test]
async fn version_defaults_to_demo_version_then_dev() {
    let service = Running::start(config(&[("DEMO_VERSION", "2.0")])).await;
    let version = get(service.addr, "/version", None).await.json();
    assert_eq!(version["version"], "2.0");
    assert!(version["label"].is_null());
    assert!(version["instance"].is_null());
    service.shutdown().await;

    let service = Running::start(DemoConfig::default()).await;
    assert_eq!(
        get(service.addr, "/version", None).await.json()["version"],
        "dev"
    );
    service.shutdown().await;
}

#[tokio::test]
async fn request_id_is_echoed_on_every_response() {
    let service = Running::start(config(&[("DEMO_ERROR_RATE", "1")])).await;
    for path in ["/health", "/version", "/api/users", "/nope"] {
        let reply = get(service.addr, path, Some("req-42")).await;
        assert_eq!(reply.request_id.as_deref(), Some("req-42"), "{path}");
    }
    let without = get(service.addr, "/health", None).await;
    assert_eq!(without.request_id, None);
    service.shutdown().await;
}

#[tokio::test]
async fn error_rate_quarter_fails_exactly_25_of_100_api_requests() {
    let service = Running::start(config(&[("DEMO_ERROR_RATE", "0.25")])).await;
    let mut failures = 0;
    for _ in 0..100 {
        let reply = get(service.addr, "/api/users", None).await;
        match reply.status {
            200 => {}
            500 => {
                assert_eq!(reply.json(), serde_json::json!({"error": "injected fault"}));
                failures += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(failures, 25);
    // Faults are for /api/* only, so a bad release still passes its health probe.
    for _ in 0..10 {
        assert_eq!(get(service.addr, "/health", None).await.status, 200);
    }
    service.shutdown().await;
}

#[tokio::test]
async fn faults_start_only_after_demo_faults_after_ms() {
    let service = Running::start(config(&[
        ("DEMO_ERROR_RATE", "1"),
        ("DEMO_FAULTS_AFTER_MS", "600"),
    ]))
    .await;
    assert_eq!(get(service.addr, "/api/users", None).await.status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(get(service.addr, "/api/users", None).await.status, 500);
    service.shutdown().await;
}

#[tokio::test]
async fn latency_is_added_to_api_requests() {
    let service = Running::start(config(&[("DEMO_LATENCY_MS", "300")])).await;
    let started = Instant::now();
    let reply = get(service.addr, "/api/users", None).await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    service.shutdown().await;
}

#[tokio::test]
async fn failing_health_answers_503() {
    let service = Running::start(config(&[("DEMO_FAIL_HEALTH", "1")])).await;
    assert_eq!(get(service.addr, "/health", None).await.status, 503);
    assert_eq!(get(service.addr, "/api/users", None).await.status, 200);
    service.shutdown().await;
}

#[test]
fn invalid_values_name_the_variable() {
    for (name, value) in [
        ("DEMO_ERROR_RATE", "1.5"),
        ("DEMO_ERROR_RATE", "lots"),
        ("DEMO_LATENCY_MS", "-3"),
        ("DEMO_FAIL_HEALTH", "maybe"),
        ("DEMO_EXIT_AFTER_MS", "soon"),
    ] {
        let err = DemoConfig::from_lookup(|n| (n == name).then(|| value.to_owned())).unwrap_err();
        let message = err.to_string();
        assert!(message.contains(name), "{message}");
        assert!(message.contains(value), "{message}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn binary(port: u16) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo-service"));
    command
        .env("PORT", port.to_string())
        .env_remove("DEMO_ERROR_RATE")
        .env_remove("DEMO_LATENCY_MS")
        .env_remove("DEMO_FAIL_HEALTH")
        .env_remove("DEMO_EXIT_AFTER_MS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "demo-service never listened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn binary_exits_2_on_invalid_configuration() {
    let output = binary(free_port())
        .env("DEMO_ERROR_RATE", "2")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DEMO_ERROR_RATE"));

    let output = binary(free_port())
        .arg("--port")
        .arg("http")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--port"));
}

#[tokio::test]
async fn binary_exits_3_after_demo_exit_after_ms() {
    let port = free_port();
    let mut child = binary(port)
        .env("DEMO_EXIT_AFTER_MS", "300")
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(3));
}

#[tokio::test]
async fn binary_finishes_in_flight_requests_on_sigterm() {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = binary(port)
        .env("DEMO_LATENCY_MS", "800")
        .arg("--port")
        .arg(port.to_string())
        .spawn()
        .unwrap();
    wait_listening(addr).await;

    let in_flight = tokio::spawn(async move { get(addr, "/api/users", Some("slow")).await });
    // Give the request time to reach the service before the signal.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();

    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.request_id.as_deref(), Some("slow"));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
