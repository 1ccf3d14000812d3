//! The CLI's client of the control API: JSON over HTTP/1.1 with the bearer token. API errors
//! come back as `message (code)`.

use anyhow::{Context, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A client of one control API.
#[derive(Clone)]
pub struct Api {
    base: String,
    token: String,
    actor: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl Api {
    pub fn new(base: &str, token: String) -> anyhow::Result<Api> {
        if !base.starts_with("http://") {
            anyhow::bail!("the server URL must start with http://, got {base:?}");
        }
        let actor = std::env::var("ROLLGATE_ACTOR")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "cli".to_string());
        Ok(Api {
            base: base.to_string(),
            token,
            actor,
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> anyhow::Result<Value> {
        self.call(Method::DELETE, path, None).await
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let req = Request::builder()
            .method(method)
            .uri(&url)
            .header("authorization", format!("Bearer {}", self.token))
            .header("x-rollgate-actor", &self.actor)
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .with_context(|| format!("invalid request to {url}"))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| anyhow!("cannot reach the rollgate server at {}: {e}", self.base))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .context("the server closed the response early")?
            .to_bytes();
        let value: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        if status.is_success() {
            return Ok(value);
        }
        let code = value.get("code").and_then(Value::as_str).unwrap_or("");
        let message = value.get("message").and_then(Value::as_str).unwrap_or("");
        Err(match status {
            StatusCode::UNAUTHORIZED => anyhow!(
                "the server refused the API token (unauthorized); check ROLLGATE_TOKEN or the data directory's token file"
            ),
            _ if message.is_empty() => anyhow!("the server answered {status}"),
            _ => anyhow!("{message} ({code})"),
        })
    }
}

/// Percent-encodes a query value.
pub fn q(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `?app=..&env=..` from optional parts.
pub fn query(parts: &[(&str, Option<String>)]) -> String {
    let kv: Vec<String> = parts
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", q(v))))
        .collect();
    if kv.is_empty() {
        String::new()
    } else {
        format!("?{}", kv.join("&"))
    }
}
