//! The edge through the real binary: keys kept in rollgate's secret store authenticate
//! requests at the gateway (API key and HMAC signature with replay protection), and the WAF
//! answers attacks before they reach the app.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::util::{BIN, Server, demo_config, get};

const EDGE: &str = r#"
[env.staging.edge]
rate_limit = false
waf = { mode = "block" }
auth = { routes = [{ prefix = "/health", auth = "none" }, { prefix = "/api/", auth = "signature" }, { prefix = "/", auth = "api_key" }] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_secret_store_authenticate_at_the_gateway_and_the_waf_blocks() {
    let s = Server::start(&format!("{}{EDGE}", demo_config("1s", "", ""))).await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");

    let (status, _, body) = get(&gw, "/version", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "api_key_missing"
    );
    assert_eq!(get(&gw, "/health", &[]).await.0, 200, "an open route");

    // The key lives in the secret store, set from stdin.
    let secret = "e2e-secret-value-0123456789";
    let mut child = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .args(["secret", "set", "edge-key.ci", "--env", "staging"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(secret.as_bytes())
        .await
        .unwrap();
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Within a few seconds the gateway knows the key.
    let api_key = format!("rg_ci_{secret}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, headers, body) = get(&gw, "/version", &[("x-api-key", &api_key)]).await;
        if status == 200 {
            assert!(body.contains("\"version\":\"1\""), "{body}");
            let _ = headers;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the key never reached the gateway: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, body) = get(
        &gw,
        "/version",
        &[("x-api-key", "rg_ci_not-the-right-secret-at-all")],
    )
    .await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["code"].as_str()
        ),
        (401, Some("api_key_invalid"))
    );

    // A signed request, made by `rollgate sign`, passes once; its replay does not.
    let secret_file = s.dir.path().join("ci.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let url = format!("http://{gw}/api/users?limit=2");
    let signed = tokio::process::Command::new(BIN)
        .args(["sign", "--key-id", "ci", "--secret-file"])
        .arg(&secret_file)
        .arg(&url)
        .output()
        .await
        .unwrap();
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let text = String::from_utf8_lossy(&signed.stdout).into_owned();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    let (ts, sig) = (header("X-Timestamp"), header("X-Signature"));
    let headers = [("x-timestamp", ts.as_str()), ("x-signature", sig.as_str())];
    let (status, _, body) = get(&gw, "/api/users?limit=2", &headers).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = get(&gw, "/api/users?limit=2", &headers).await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["code"].as_str()
        ),
        (401, Some("signature_replayed"))
    );
    let (status, _, _) = get(&gw, "/api/users?limit=3", &headers).await;
    assert_eq!(status, 401, "a signature covers the query");

    // The WAF answers an attack itself, and never echoes it.
    let (status, _, body) = get(
        &gw,
        "/version?id=1'%20OR%20'1'='1",
        &[("x-api-key", &api_key)],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("request_blocked") && !body.contains("OR"),
        "{body}"
    );

    // The control API's Prometheus endpoint counts the block, and needs the token.
    let admin = std::fs::read_to_string(s.data_dir().join("token")).unwrap();
    let control = s.control.trim_start_matches("http://");
    let (status, headers, text) = get(
        control,
        "/v1/metrics",
        &[("authorization", &format!("Bearer {}", admin.trim()))],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    assert!(
        text.contains(
            "rollgate_edge_requests_total{env=\"staging\",rule=\"waf.sqli\",action=\"block\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "rollgate_edge_requests_total{env=\"staging\",rule=\"auth.api_key\",action=\"block\"} "
        ),
        "{text}"
    );
    assert!(
        text.contains("rollgate_access_log_dropped_total{env=\"staging\"} 0\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE rollgate_gateway_open_connections gauge\n")
            && text.contains("rollgate_gateway_open_connections{env=\"staging\",worker=\"0\"} "),
        "{text}"
    );
    assert_eq!(get(control, "/v1/metrics", &[]).await.0, 401);

    // The access log names the key, never the secret.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let log = std::fs::read_to_string(s.data_dir().join("logs/access-staging.log")).unwrap();
    assert!(log.contains("\"key_id\":\"ci\""), "{log}");
    assert!(
        !log.contains(secret),
        "the secret leaked into the access log"
    );
    assert!(
        !s.serve_log().contains(secret),
        "the secret leaked into the server log"
    );
}

/// Runs the CLI with `token` as `ROLLGATE_TOKEN`; returns (exit code, stdout + stderr).
async fn cli_as(s: &Server, token: &str, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let mut child = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .args(args)
        .env("ROLLGATE_TOKEN", token)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limited_token_does_only_what_it_may() {
    let ci = "ci-token-0123456789abcdef";
    let config = demo_config("1s", "", "").replace(
        "[server]\n",
        "[server]\ntokens = [{ name = \"ci\", token_env = \"E2E_CI_TOKEN\", may = [\"read\", \"deploy\"] }]\n",
    );
    let s = Server::start_with_env(&config, &[("E2E_CI_TOKEN", ci)]).await;
    let admin = std::fs::read_to_string(s.data_dir().join("token"))
        .unwrap()
        .trim()
        .to_string();

    let artifact = s.artifact("v1").display().to_string();
    let (code, out) = cli_as(
        &s,
        ci,
        &["deploy", "api", "--env", "staging", "--artifact", &artifact],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli_as(&s, ci, &["status"], None).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli_as(&s, ci, &["rollback", "api", "--env", "staging"], None).await;
    assert_eq!(code, 1);
    assert!(
        out.contains("token \"ci\" may not operate (forbidden)"),
        "{out}"
    );

    let (code, out) = cli_as(
        &s,
        &admin,
        &["secret", "set", "db_password", "--env", "staging"],
        Some("hunter2-but-longer"),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli_as(&s, ci, &["secret", "list", "--env", "staging"], None).await;
    assert_eq!(code, 0, "metadata is readable: {out}");
    let (code, out) = cli_as(
        &s,
        ci,
        &["secret", "get", "db_password", "--env", "staging"],
        None,
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        out.contains("may not secrets.read") && !out.contains("hunter2"),
        "{out}"
    );
    let (code, out) = cli_as(
        &s,
        ci,
        &["secret", "set", "db_password", "--env", "staging"],
        Some("attacker-value-123456"),
    )
    .await;
    assert_eq!(code, 1);
    assert!(out.contains("may not secrets.write"), "{out}");
    let (code, out) = cli_as(
        &s,
        &admin,
        &["secret", "get", "db_password", "--env", "staging"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("hunter2-but-longer"), "{out}");
    let (code, out) = cli_as(&s, "not-a-token-at-all-0000", &["status"], None).await;
    assert_eq!(code, 1);
    assert!(out.contains("unauthorized"), "{out}");
}
