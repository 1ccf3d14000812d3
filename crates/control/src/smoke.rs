//! Smoke tests: the app's configured requests, sent to every instance of the candidate
//! directly (not through the gateway), before it gets any user traffic.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rollgate_core::config::SmokeTest;
use serde::Serialize;

/// A plain HTTP/1.1 client for checks.
pub type CheckClient = Client<HttpConnector, Full<Bytes>>;

/// A client with no pooling surprises for probes and smoke tests.
pub fn check_client() -> CheckClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(std::time::Duration::from_secs(2)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector)
}

/// The result of one smoke test against one instance.
#[derive(Clone, Debug, Serialize)]
pub struct SmokeResult {
    pub instance: String,
    pub request: String,
    pub passed: bool,
    /// What was seen: the status, or the transport error.
    pub observed: String,
    pub duration_ms: u64,
}

/// Runs every test against every instance; stops at the first failure and returns all
/// results so far. `Ok` holds the results when all passed, `Err` the failure and the results.
pub async fn run(
    client: &CheckClient,
    tests: &[SmokeTest],
    instances: &[(String, SocketAddr)],
) -> Result<Vec<SmokeResult>, (String, Vec<SmokeResult>)> {
    let mut results = Vec::new();
    for (id, addr) in instances {
        for t in tests {
            let r = run_one(client, t, id, *addr).await;
            let passed = r.passed;
            let reason = format!("{} on {} gave {}", r.request, r.instance, r.observed);
            results.push(r);
            if !passed {
                return Err((reason, results));
            }
        }
    }
    Ok(results)
}

async fn run_one(client: &CheckClient, t: &SmokeTest, id: &str, addr: SocketAddr) -> SmokeResult {
    let started = std::time::Instant::now();
    let request = format!("{} {}", t.method, t.path);
    let done = |passed: bool, observed: String| SmokeResult {
        instance: id.to_string(),
        request: request.clone(),
        passed,
        observed,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let mut builder = hyper::Request::builder()
        .method(t.method.as_str())
        .uri(format!("http://{addr}{}", t.path))
        .header("user-agent", "rollgate-smoke");
    for (k, v) in &t.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let req = match builder.body(Full::new(Bytes::new())) {
        Ok(r) => r,
        Err(e) => return done(false, format!("an invalid request ({e})")),
    };
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("no response ({e})"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("a broken body ({e})"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    match tokio::time::timeout(t.timeout, exchange).await {
        Err(_) => done(
            false,
            format!(
                "no response within {}",
                humantime::format_duration(t.timeout)
            ),
        ),
        Ok(Err(e)) => done(false, e),
        Ok(Ok((status, body))) => {
            if status != t.status {
                return done(false, format!("status {status} (expected {})", t.status));
            }
            if let Some(needle) = &t.body_contains
                && !String::from_utf8_lossy(&body).contains(needle.as_str())
            {
                return done(
                    false,
                    format!("status {status} but the body lacks {needle:?}"),
                );
            }
            done(true, format!("status {status}"))
        }
    }
}
