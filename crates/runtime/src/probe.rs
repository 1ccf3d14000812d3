//! Health probes: one HTTP GET (or one TCP connect) against an instance, reduced to pass or a
//! failure reason a person can act on.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Sends `GET <path>` to `addr` on a fresh connection and passes on 2xx/3xx.
///
/// A fresh connection per probe is deliberate: it checks that the instance still accepts
/// connections, which a pooled keep-alive connection would hide.
pub(crate) async fn http(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, http_status(addr, path)).await {
        Err(_) => Err(format!("timed out after {}ms", timeout.as_millis())),
        Ok(Err(reason)) => Err(reason),
        Ok(Ok(status)) if (200..400).contains(&status) => Ok(()),
        Ok(Ok(status)) => Err(format!("status {status}")),
    }
}

async fn http_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let stream = TcpStream::connect(addr).await.map_err(connect_reason)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| format!("http handshake failed: {err}"))?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "rollgate-health-probe")
        .body(Empty::<Bytes>::new())
        .map_err(|err| format!("invalid probe path {path:?}: {err}"))?;
    let result = sender
        .send_request(request)
        .await
        .map(|response| response.status().as_u16())
        .map_err(|err| format!("request failed: {err}"));
    // The status is all a probe needs; dropping the connection discards the body.
    conn.abort();
    result
}

/// True when `addr` accepts a TCP connection within `timeout`.
pub(crate) async fn tcp(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(format!("connect timed out after {}ms", timeout.as_millis())),
        Ok(Err(err)) => Err(connect_reason(err)),
        Ok(Ok(_)) => Ok(()),
    }
}

fn connect_reason(err: std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        _ => format!("connect failed: {err}"),
    }
}
