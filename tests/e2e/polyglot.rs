//! Releasing a service that is not written in Rust: the Python app of `tests/fixtures/pyapp`,
//! released, switched and rolled back under load with no failed request.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Load, Server, get, live_version};

fn py_config() -> String {
    r#"
[server]
control = "127.0.0.1:0"

[app.py]
run = "python3 app.py"
stop_grace = "5s"
health = { path = "/health", interval = "200ms", timeout = "200ms", healthy = 2, unhealthy = 2, deadline = "20s" }
smoke = [{ path = "/api/hello", status = 200, body_contains = "world" }]

[env.staging]
listen = "127.0.0.1:0"
monitor = "1s"
rollback_when = ["error_rate > 5%"]
min_requests = 20
"#
    .to_string()
}

/// A copy of the Python app in the server's directory, made distinct by `tag`.
fn py_artifact(s: &Server, tag: &str) -> PathBuf {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pyapp/app.py");
    let dir = s.dir.path().join(format!("pyapp-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&fixture, dir.join("app.py")).unwrap();
    std::fs::write(dir.join("RELEASE"), tag).unwrap();
    dir
}

async fn deploy_py(s: &Server, tag: &str) -> (i32, String) {
    let a = py_artifact(s, tag).display().to_string();
    let (code, out, err) = s
        .cli(&["deploy", "py", "--env", "staging", "--artifact", &a])
        .await;
    (code, format!("{out}{err}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_service_is_released_and_rolled_back_under_load_failing_no_request() {
    let s = Server::start(&py_config()).await;
    let gw = s.gateway("staging");

    let (code, out) = deploy_py(&s, "v1").await;
    assert_eq!(code, 0, "{out}\n{}", s.serve_log());
    assert!(out.contains("py v1 is live in staging"), "{out}");
    let (status, headers, body) = get(&gw, "/version", &[("x-request-id", "py-req-7")]).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["version"].as_str(), v["runtime"].as_str()),
        (Some("1"), Some("python"))
    );
    assert_eq!(headers["x-request-id"], "py-req-7");
    let (status, _, body) = get(&gw, "/api/hello", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("world"), "{body}");

    let load = Load::start(&gw, "/version", 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (tag, version) in [("v2", "2"), ("v3", "3")] {
        let (code, out) = deploy_py(&s, tag).await;
        assert_eq!(code, 0, "{out}\n{}", s.serve_log());
        assert_eq!(live_version(&gw).await, version);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // An operator rollback: back to v2, kept warm as blue.
    let (code, out, err) = s.cli(&["rollback", "py", "--env", "staging"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("live is v2 again (was v3)"), "{out}");
    assert_eq!(live_version(&gw).await, "2");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let seen = load.stop().await;
    assert_eq!(seen.failed(), 0, "clients saw failures: {}", seen.summary());
    let versions = seen.versions.lock().unwrap().clone();
    for v in ["1", "2", "3"] {
        assert!(
            versions.get(v).copied().unwrap_or(0) > 0,
            "v{v} never answered: {versions:?}"
        );
    }

    // v3 was stopped with SIGTERM and exited on its own, having finished its requests.
    let log = s.data_dir().join("logs/py/staging/v3.0.log");
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("pyapp v3 stopped") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(text.contains("pyapp v3 stopped"), "{text}");
}
