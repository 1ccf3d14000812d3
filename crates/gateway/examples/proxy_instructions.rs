//! Drives N proxied requests through one gateway worker on one thread, for instruction counts
//! under `valgrind --tool=callgrind` (`bench/gateway_instructions.sh`): counts that do not
//! move with the machine's load, unlike wall-clock throughput on a shared 2-core VM.
//!
//! `proxy_instructions N [edge|full|varied|signed]`: N sequential GETs of `/api/users?id=42` with browser-like
//! headers over one keep-alive connection, from an in-process client, through a gateway with
//! one worker and an access log, to an in-process hyper upstream. With `edge`, the gateway has
//! the default edge policy (every WAF detector in block mode) without the per-IP rate limit.
//! With `full`, the full-security gateway of `bench/waf/side_by_side.sh`: the WAF, the per-IP
//! rate limit, an API key on every route and the per-key rate limit (limits far above N).
//! With `varied`, the full-security gateway with requests that differ as `bench/waf/varied.lua`'s
//! do: new `id`, `q` and `sort` values on every request and one of 24 User-Agents in turn.
//! With `signed`, the same but every route needs an HMAC signature instead of the API key: each
//! request carries `X-Timestamp` and `X-Signature` (made by the client, outside the gateway's
//! thread), and its query is `id=<request number>`, since a signature is accepted only once.
//! Everything runs in this process, so the counts include the client and the upstream; the
//! script subtracts a short run from a long one and reports per-request figures by function.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rollgate_core::signing;
use rollgate_gateway::{AppRoute, Backend, Gateway, GatewayConfig, RouteTable, Upstream};

/// The allocator `rollgate` itself uses, so allocation counts match the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(n) = args.next().and_then(|n| n.parse::<usize>().ok()) else {
        eprintln!("usage: proxy_instructions N [edge|full|varied|signed]");
        std::process::exit(2);
    };
    let mode = args.next().unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(n, &mode));
}

/// The API key's secret in `full` mode; the edge table reads it from `PROXY_INSTRUCTIONS_KEY`,
/// which `bench/gateway_instructions.sh` sets to this.
const KEY_SECRET: &str = "proxy-instructions-secret";

async fn run(n: usize, mode: &str) {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let upstream_addr = upstream.local_addr().expect("upstream address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_request: hyper::Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        b"[{\"id\":1,\"name\":\"Ada\"}]",
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let log_dir = tempfile::tempdir().expect("temporary directory");
    let mut config = GatewayConfig {
        workers: 1,
        access_log: Some(log_dir.path().join("access.log")),
        ..GatewayConfig::default()
    };
    match mode {
        "edge" => {
            let policy = rollgate_core::config::edge::EdgeConfig {
                rate_limit: None,
                ..Default::default()
            };
            config = config.with_edge(Some(&policy)).expect("edge policy");
        }
        "full" | "varied" | "signed" => {
            if std::env::var("PROXY_INSTRUCTIONS_KEY").as_deref() != Ok(KEY_SECRET) {
                panic!("{mode} mode needs PROXY_INSTRUCTIONS_KEY={KEY_SECRET} in the environment");
            }
            let auth = if mode == "signed" {
                "signature"
            } else {
                "api_key"
            };
            let text = format!(
                r#"
[app.api]
run = "x"
[env.full]
listen = "127.0.0.1:0"
[env.full.edge]
waf = {{ mode = "block" }}
rate_limit = {{ requests = 1000000, per = "1s" }}
[env.full.edge.auth]
routes = [{{ prefix = "/", auth = "{auth}" }}]
keys = [{{ id = "bench", secret_env = "PROXY_INSTRUCTIONS_KEY", use = "{auth}" }}]
rate_limit = {{ requests = 1000000, per = "1s" }}
"#
            );
            let parsed =
                rollgate_core::Config::parse(&text, "proxy_instructions.toml").expect("edge table");
            let policy = parsed.envs["full"].edge.clone().expect("edge table");
            config = config.with_edge(Some(&policy)).expect("edge policy");
        }
        "" => {}
        other => panic!("unknown mode {other:?}: expected edge, full, varied or signed"),
    }
    let gateway = Gateway::bind(config).await.expect("bind gateway");
    let addr = gateway.local_addr();
    gateway.routes().set(RouteTable {
        apps: vec![AppRoute {
            app: "api".into(),
            hosts: vec![],
            path_prefix: "/".into(),
            backends: vec![Backend {
                version: 1,
                weight: 1000,
                instances: vec![Upstream {
                    id: "blue".into(),
                    addr: upstream_addr,
                }],
            }],
            sticky: None,
            aliases: vec![],
        }],
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(gateway.serve(async move {
        let _ = stopped.await;
    }));

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    // As varied.lua: words for the query, and 24 User-Agents from 3 systems and 8 versions.
    const WORDS: [&str; 18] = [
        "shipped", "pending", "created", "name", "price", "blue", "green", "north", "delta",
        "omega", "paper", "stone", "river", "maple", "cedar", "amber", "coral", "ivory",
    ];
    const VERSIONS: [&str; 8] = [
        "120.0.6099.109",
        "121.0.6167.85",
        "122.0.6261.94",
        "123.0.6312.58",
        "124.0.6367.91",
        "125.0.6422.60",
        "126.0.6478.61",
        "127.0.6533.72",
    ];
    const SYSTEMS: [&str; 3] = [
        "Windows NT 10.0; Win64; x64",
        "Macintosh; Intel Mac OS X 10_15_7",
        "X11; Linux x86_64",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for i in 0..n {
        let mut user_agent = "Mozilla/5.0 (X11; Linux x86_64) Chrome/126.0".to_owned();
        let query = match mode {
            "signed" => format!("id={i}"),
            "varied" => {
                user_agent = format!(
                    "Mozilla/5.0 ({}) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{} Safari/537.36",
                    SYSTEMS[i % 3],
                    VERSIONS[i / 3 % 8]
                );
                format!(
                    "id={}&q={}{}&sort={}",
                    random(100_000_000) + 1,
                    WORDS[random(WORDS.len())],
                    random(9999) + 1,
                    WORDS[random(WORDS.len())]
                )
            }
            _ => "id=42".to_owned(),
        };
        let mut request = hyper::Request::get(format!("http://{addr}/api/users?{query}"))
            .header("host", "localhost")
            .header("user-agent", user_agent)
            .header("accept", "text/html,*/*;q=0.8")
            .header("accept-language", "en-GB,en;q=0.9");
        if mode == "signed" {
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_secs()
                .to_string();
            let signature = signing::signature_for(
                "bench",
                KEY_SECRET.as_bytes(),
                "GET",
                "/api/users",
                Some(&query),
                &timestamp,
                b"",
            );
            request = request
                .header(signing::TIMESTAMP_HEADER, timestamp)
                .header(signing::SIGNATURE_HEADER, signature);
        } else {
            request = request.header("x-api-key", format!("rg_bench_{KEY_SECRET}"));
        }
        let request = request.body(Full::new(Bytes::new())).expect("request");
        let response = client.request(request).await.expect("response");
        assert_eq!(response.status(), 200);
        let _ = response.into_body().collect().await.expect("body");
    }
    let _ = stop.send(());
    serving.await.expect("serve task").expect("serve");
}
