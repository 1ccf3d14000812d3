//! The auth, per-key rate limit and geo phases end to end over real TCP: API keys, HMAC
//! signatures (tampering, expiry, replay), count mode, per-key 429s, country lists from a
//! real `.mmdb` file, and what the app and the access log see. Policies are `rollgate.toml`
//! text parsed by `rollgate-core`, as `rollgate serve` builds them; keys come from a key file.

mod support;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use rollgate_core::signing::signature_for;
use rollgate_gateway::EdgeCounts;
use support::{Answer, TestClient, TestGateway, TestUpstream, mmdb};

const CI_SECRET: &str = "ci-0123456789abcdef";
const OPS_SECRET: &str = "ops-0123456789abcdef";
const ROUTES: &str = r#"routes = [{ prefix = "/health", auth = "none" }, { prefix = "/api/", auth = "signature" }, { prefix = "/", auth = "api_key" }]"#;

fn ci_key() -> String {
    format!("rg_ci_{CI_SECRET}")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The headers of a request signed by `key_id` with `secret` at `ts`.
fn signed(
    key_id: &str,
    secret: &str,
    method: &str,
    path_and_query: &str,
    ts: u64,
    body: &str,
) -> Vec<(String, String)> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let ts = ts.to_string();
    let signature = signature_for(
        key_id,
        secret.as_bytes(),
        method,
        path,
        query,
        &ts,
        body.as_bytes(),
    );
    vec![
        ("x-timestamp".to_owned(), ts),
        ("x-signature".to_owned(), signature),
    ]
}

/// A gateway with an edge policy (auth keys from a key file) in front of one upstream.
struct Gate {
    gateway: TestGateway,
    _upstream: TestUpstream,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Gate {
    /// `edge` is the body of `[env.e.edge]`; `auth`, when given, the body of
    /// `[env.e.edge.auth]` (the key file is added). `@KEYS@` and `@DB@` in them are replaced by the
    /// key file's and the geo database's paths.
    async fn start(edge: &str, auth: Option<&str>) -> Gate {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = write_private(
            dir.path(),
            "keys.toml",
            &format!(
                "[[key]]\nid = \"ci\"\nsecret = \"{CI_SECRET}\"\n\n\
                 [[key]]\nid = \"ops\"\nsecret = \"{OPS_SECRET}\"\n"
            ),
        );
        let db = dir.path().join("countries.mmdb");
        std::fs::write(
            &db,
            mmdb::country_db(&[
                ([127, 0, 0, 0].into(), 8, "DE"),
                ([198, 51, 100, 0].into(), 24, "FR"),
            ]),
        )
        .expect("write mmdb");
        let mut text = format!("[env.e.edge]\nrate_limit = false\nwaf = false\n{edge}\n");
        if let Some(auth) = auth {
            text.push_str(&format!(
                "[env.e.edge.auth]\nkeys_file = \"@KEYS@\"\n{auth}\n"
            ));
        }
        let text = text
            .replace("@KEYS@", &keys.display().to_string())
            .replace("@DB@", &db.display().to_string());
        let log = dir.path().join("access.log");
        let (gateway, upstream) =
            support::start_edge_gateway(&support::parse_env_edge(&text), log.clone()).await;
        Gate {
            gateway,
            _upstream: upstream,
            dir,
            log,
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        body: &str,
    ) -> Answer {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        TestClient::new()
            .send(
                self.gateway.addr,
                method,
                path,
                &headers,
                Bytes::from(body.to_owned()),
            )
            .await
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let owned: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        self.send("GET", path, &owned, "").await
    }

    fn counts(&self, rule: &str) -> EdgeCounts {
        self.gateway.metrics.edge_counters()[rule]
    }

    /// Stops the gateway (flushing the access log) and returns its raw text.
    async fn stop(self) -> String {
        self.gateway.stop().await;
        let text = std::fs::read_to_string(&self.log).expect("access log");
        drop(self.dir);
        text
    }
}

fn write_private(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("create private file");
    f.write_all(text.as_bytes()).expect("write private file");
    path
}

fn assert_401(answer: &Answer, code: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(answer.json()["code"], code);
}

#[tokio::test]
async fn no_key_gets_401_api_key_missing() {
    let gate = Gate::start("", Some(ROUTES)).await;
    let answer = gate.get("/items", &[]).await;
    assert_401(&answer, "api_key_missing");
    assert_eq!(
        answer.header("www-authenticate"),
        "ApiKey realm=\"rollgate\""
    );
    assert_eq!(gate.counts("auth.api_key").blocked, 1);
    gate.stop().await;
}

#[tokio::test]
async fn a_wrong_key_gets_api_key_invalid() {
    let gate = Gate::start("", Some(ROUTES)).await;
    for key in ["rg_ci_wrong-secret-0000000", "rg_nobody_x", "not-a-key"] {
        assert_401(
            &gate.get("/items", &[("x-api-key", key)]).await,
            "api_key_invalid",
        );
    }
    gate.stop().await;
}

#[tokio::test]
async fn the_right_key_passes_and_the_app_sees_only_the_verified_key_id() {
    let gate = Gate::start("", Some(ROUTES)).await;
    let key = ci_key();
    let answer = gate
        .get(
            "/items",
            &[("x-api-key", &key), ("x-rollgate-key-id", "admin")],
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.header("x-seen-key-id"), "ci");
    // On an open route a forged key id is removed, not passed on.
    let answer = gate.get("/health", &[("x-rollgate-key-id", "admin")]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-seen-key-id"), "");
    gate.stop().await;
}

#[tokio::test]
async fn health_is_open() {
    let gate = Gate::start("", Some(ROUTES)).await;
    let answer = gate.get("/health", &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "blue");
    // But not what only looks like it to a prefix match.
    assert_401(
        &gate.get("/health/../api/x", &[]).await,
        "signature_missing",
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_signed_request_passes_and_an_unsigned_one_gets_signature_missing() {
    let gate = Gate::start("", Some(ROUTES)).await;
    let body = "{\"name\":\"Ada\"}";
    let headers = signed(
        "ops",
        OPS_SECRET,
        "POST",
        "/api/users?b=2&a=%41",
        now(),
        body,
    );
    let answer = gate
        .send("POST", "/api/users?b=2&a=%41", &headers, body)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.header("x-seen-key-id"), "ops");

    let key = ci_key();
    let answer = gate.get("/api/users", &[("x-api-key", &key)]).await;
    assert_401(&answer, "signature_missing");
    assert_eq!(
        answer.header("www-authenticate"),
        "Signature realm=\"rollgate\""
    );
    gate.stop().await;
}

#[tokio::test]
async fn a_tampered_body_path_or_query_gets_signature_invalid() {
    let gate = Gate::start("", Some(ROUTES)).await;
    let ts = now();
    let headers = signed(
        "ops",
        OPS_SECRET,
        "POST",
        "/api/pay?to=alice",
        ts,
        "{\"amount\":1}",
    );
    for (path, body) in [
        ("/api/pay?to=alice", "{\"amount\":100}"),
        ("/api/refund?to=alice", "{\"amount\":1}"),
        ("/api/pay?to=mallory", "{\"amount\":1}"),
        ("/api/pay?to=alice&also=bob", "{\"amount\":1}"),
    ] {
        let answer = gate.send("POST", path, &headers, body).await;
        assert_401(&answer, "signature_invalid");
    }
    // A wrong secret is just as invalid.
    let forged = signed("ops", "not-the-secret-000000", "GET", "/api/x", ts, "");
    assert_401(
        &gate.send("GET", "/api/x", &forged, "").await,
        "signature_invalid",
    );
    assert_eq!(gate.counts("auth.signature").blocked, 5);
    gate.stop().await;
}

#[tokio::test]
async fn an_old_timestamp_gets_signature_expired() {
    let gate = Gate::start("", Some(ROUTES)).await;
    let headers = signed("ops", OPS_SECRET, "GET", "/api/x", now() - 3600, "");
    assert_401(
        &gate.send("GET", "/api/x", &headers, "").await,
        "signature_expired",
    );
    let headers = signed("ops", OPS_SECRET, "GET", "/api/x", now() + 3600, "");
    assert_401(
        &gate.send("GET", "/api/x", &headers, "").await,
        "signature_expired",
    );
    gate.stop().await;
}

#[tokio::test]
async fn the_same_signed_request_twice_is_replayed() {
    let gate = Gate::start("", Some(ROUTES)).await;
    let headers = signed("ops", OPS_SECRET, "POST", "/api/pay", now(), "{}");
    let first = gate.send("POST", "/api/pay", &headers, "{}").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let second = gate.send("POST", "/api/pay", &headers, "{}").await;
    assert_401(&second, "signature_replayed");
    gate.stop().await;
}

#[tokio::test]
async fn count_mode_lets_every_request_through_and_counts_the_failures() {
    let auth = format!("mode = \"count\"\n{ROUTES}");
    let gate = Gate::start("", Some(&auth)).await;
    let missing = gate.get("/items", &[]).await;
    assert_eq!(missing.status, StatusCode::OK);
    assert_eq!(missing.header("x-seen-key-id"), "");
    let wrong = gate.get("/items", &[("x-api-key", "rg_ci_nope")]).await;
    assert_eq!(wrong.status, StatusCode::OK);
    let unsigned = gate.get("/api/x", &[]).await;
    assert_eq!(unsigned.status, StatusCode::OK);
    assert_eq!(
        gate.counts("auth.api_key"),
        EdgeCounts {
            blocked: 0,
            counted: 2
        }
    );
    assert_eq!(gate.counts("auth.signature").counted, 1);
    let log = gate.stop().await;
    assert!(log.contains("\"action\":\"count\""), "{log}");
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_while_another_key_is_unaffected() {
    let auth = format!("rate_limit = {{ requests = 2, per = \"1h\" }}\n{ROUTES}");
    let gate = Gate::start("", Some(&auth)).await;
    let key = ci_key();
    for _ in 0..2 {
        let answer = gate.get("/items", &[("x-api-key", &key)]).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = gate.get("/items", &[("x-api-key", &key)]).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["code"], "key_rate_limited");
    let retry: u64 = limited.header("retry-after").parse().expect("retry-after");
    assert!(retry >= 1);
    let ops = format!("rg_ops_{OPS_SECRET}");
    let other = gate.get("/items", &[("x-api-key", &ops)]).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(gate.counts("key_rate_limit").blocked, 1);
    gate.stop().await;
}

#[tokio::test]
async fn geo_allow_and_deny_lists_judge_the_client_country() {
    // 127.0.0.1 is "DE" in the test database.
    let allowed = Gate::start("geo = { database = \"@DB@\", allow = [\"DE\"] }", None).await;
    assert_eq!(allowed.get("/", &[]).await.status, StatusCode::OK);
    allowed.stop().await;

    let denied = Gate::start("geo = { database = \"@DB@\", deny = [\"DE\"] }", None).await;
    let answer = denied.get("/", &[("x-request-id", "geo-1")]).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["code"], "geo_denied");
    assert_eq!(denied.counts("geo").blocked, 1);
    let log = denied.stop().await;
    assert!(log.contains("\"rule\":\"geo\""), "{log}");
    assert!(log.contains("\"matched\":\"DE\""), "{log}");

    // Behind a trusted proxy the forwarded client decides: FR is refused, an address the
    // database does not know follows `unknown`.
    let behind = Gate::start(
        "trusted_proxies = [\"127.0.0.1\"]\ngeo = { database = \"@DB@\", allow = [\"DE\"], unknown = \"deny\" }",
        None,
    )
    .await;
    let fr = behind
        .get("/", &[("x-forwarded-for", "198.51.100.7")])
        .await;
    assert_eq!(fr.status, StatusCode::FORBIDDEN);
    let unknown = behind.get("/", &[("x-forwarded-for", "203.0.113.9")]).await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
    let log = behind.stop().await;
    assert!(log.contains("\"matched\":\"unknown\""), "{log}");

    let lenient = Gate::start(
        "trusted_proxies = [\"127.0.0.1\"]\ngeo = { database = \"@DB@\", deny = [\"FR\"], mode = \"count\" }",
        None,
    )
    .await;
    let fr = lenient
        .get("/", &[("x-forwarded-for", "198.51.100.7")])
        .await;
    assert_eq!(fr.status, StatusCode::OK);
    assert_eq!(lenient.counts("geo").counted, 1);
    lenient.stop().await;
}

#[tokio::test]
async fn the_access_log_has_the_key_id_and_rule_but_never_the_key_or_signature() {
    let gate = Gate::start("", Some(ROUTES)).await;
    let key = ci_key();
    gate.get(
        "/items",
        &[("x-api-key", &key), ("x-request-id", "good-key")],
    )
    .await;
    gate.get(
        "/items",
        &[
            ("x-api-key", "rg_ci_guessed-secret-1234"),
            ("x-request-id", "bad-key"),
        ],
    )
    .await;
    let mut headers = signed("ops", OPS_SECRET, "GET", "/api/x", now(), "");
    let signature = headers[1].1.clone();
    headers.push(("x-request-id".to_owned(), "signed".to_owned()));
    gate.send("GET", "/api/x", &headers, "").await;
    let log = gate.stop().await;

    assert!(
        !log.contains(CI_SECRET) && !log.contains("guessed-secret"),
        "{log}"
    );
    let hex = signature.rsplit('=').next().expect("hex");
    assert!(!log.contains(hex), "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id}: {log}"))
    };
    assert_eq!(line("good-key")["key_id"], "ci");
    assert_eq!(line("signed")["key_id"], "ops");
    let bad = line("bad-key");
    assert_eq!(bad["key_id"], serde_json::Value::Null);
    assert_eq!(bad["error"], "api_key_invalid");
    assert_eq!(bad["edge"][0]["rule"], "auth.api_key");
    assert_eq!(bad["edge"][0]["field"], "header:x-api-key");
    assert_eq!(bad["edge"][0]["matched"], "api_key_invalid");
}
