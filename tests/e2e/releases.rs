//! Blue/green releases under load: deploy, failed deploys, automatic and manual rollback.

use serde_json::Value;

use crate::util::{Load, Server, demo_config, get, live_version};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_failed_deploys_and_rollback_under_load_fail_no_request() {
    let s = Server::start(&demo_config("2s", "", "")).await;
    let gw = s.gateway("staging");

    let (code, out) = s.deploy(&s.artifact("v1"), &["--label", "first"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("api v1 is live in staging"), "{out}");
    assert_eq!(live_version(&gw).await, "1");

    let load = Load::start(&gw, "/version", 6);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A healthy release.
    let (code, out) = s.deploy(&s.artifact("v2"), &["--label", "3f2a9c1"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(live_version(&gw).await, "2");

    // A release that never becomes healthy: caught before any traffic, live untouched.
    let (code, out) = s
        .deploy(&s.artifact("v3"), &["--var", "DEMO_FAIL_HEALTH=1"])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("did not become healthy") && out.contains("live was not changed"),
        "{out}"
    );
    assert_eq!(live_version(&gw).await, "2");

    // A release that fails its smoke test: also never takes traffic.
    let (code, out) = s
        .deploy(&s.artifact("v4"), &["--var", "DEMO_ERROR_RATE=1"])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("smoke") && out.contains("GET /api/users") && out.contains("status 500"),
        "{out}"
    );
    assert_eq!(live_version(&gw).await, "2");

    // An operator rollback: live goes back to blue (v1, kept warm) at once.
    let (code, out, err) = s.cli(&["rollback", "api", "--env", "staging"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("live is v1 again (was v2)"), "{out}");
    assert_eq!(live_version(&gw).await, "1");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let seen = load.stop().await;
    assert_eq!(seen.failed(), 0, "clients saw failures: {}", seen.summary());
    let versions = seen.versions.lock().unwrap().clone();
    assert!(
        versions.get("1").copied().unwrap_or(0) > 0 && versions.get("2").copied().unwrap_or(0) > 0,
        "{versions:?}"
    );
    assert!(
        !versions.contains_key("3") && !versions.contains_key("4"),
        "bad versions took traffic: {versions:?}"
    );

    let aliases = s.aliases().await;
    assert_eq!(aliases["live"], 1);
    assert_eq!(
        aliases["blue"],
        Value::Null,
        "blue was consumed by the rollback"
    );

    // History: newest first, each with outcome and reason.
    let h = s.cli_json(&["history", "api", "--env", "staging"]).await;
    let outcomes: Vec<&str> = h["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["failed", "failed", "succeeded", "succeeded"]);
    assert_eq!(h["rollouts"][2]["label"], "3f2a9c1");
    assert!(
        h["rollouts"][2]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // The audit trail has every action.
    let audit = s.cli_json(&["audit"]).await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "deploy").count(),
        4,
        "{actions:?}"
    );
    assert!(
        actions.contains(&"rollback") && actions.contains(&"rollout_failed"),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_failing_after_promotion_is_rolled_back_by_the_monitor() {
    let s = Server::start(&demo_config("30s", "", "")).await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");

    let load = Load::start(&gw, "/api/users", 4);
    // Passes its single smoke request, then fails half the API calls once live.
    let (code, out) = s
        .deploy(&s.artifact("v2"), &["--var", "DEMO_ERROR_RATE=0.5"])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rolled back")
            && out.contains("error_rate > 5%")
            && out.contains("live is back on v1"),
        "{out}"
    );
    assert_eq!(live_version(&gw).await, "1");
    let seen = load.stop().await;
    assert!(
        seen.status_5xx.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "{}",
        seen.summary()
    );
    assert_eq!(
        seen.conn_errors.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "{}",
        seen.summary()
    );

    let r = &s
        .cli_json(&["history", "api", "--env", "staging", "--limit", "1"])
        .await["rollouts"][0];
    assert_eq!(r["outcome"], "rolled_back");
    let failed = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "monitor_failed")
        .unwrap();
    let verdict = &failed["data"]["verdicts"][0];
    assert_eq!(verdict["verdict"], "fail");
    assert!(verdict["value"].as_f64().unwrap() > 0.05, "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_deploy_fails_at_once_naming_the_holder_and_rollback_aborts() {
    let cfg = demo_config("1s", "", "").replace("deadline = \"5s\"", "deadline = \"60s\"");
    let s = Server::start(&cfg).await;
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");

    // Never healthy: holds the lock until its 60s deadline.
    let (code, out) = s
        .deploy(
            &s.artifact("v2"),
            &["--var", "DEMO_FAIL_HEALTH=1", "--detach"],
        )
        .await;
    assert_eq!(code, 0, "{out}");
    let started = std::time::Instant::now();
    let (code, out) = s.deploy(&s.artifact("v3"), &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("locked by rollout #2") && out.contains("v2 by"),
        "{out}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the second deploy waited"
    );

    let (code, out, err) = s.cli(&["rollback", "api", "--env", "staging"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("aborted") && out.contains("live was not changed"),
        "{out}"
    );
    assert_eq!(live_version(&s.gateway("staging")).await, "1");
    // The lock is gone with the rollout.
    let (code, out) = s.deploy(&s.artifact("v4"), &[]).await;
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_reach_the_app_and_the_access_log_and_the_api_needs_the_token() {
    let s = Server::start(&demo_config("1s", "", "")).await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");

    let (status, headers, _) = get(&gw, "/api/users", &[("x-request-id", "e2e-req-42")]).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "e2e-req-42");
    let (_, headers, _) = get(&gw, "/api/users", &[]).await;
    let generated = headers["x-request-id"].to_str().unwrap().to_string();
    assert!(generated.len() >= 16, "{generated}");

    let log_path = s.data_dir().join("logs/access-staging.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if (log.contains("e2e-req-42") && log.contains(&generated))
            || std::time::Instant::now() > deadline
        {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let line: Value = serde_json::from_str(
        log.lines()
            .find(|l| l.contains("e2e-req-42"))
            .expect("request id in the access log"),
    )
    .unwrap();
    assert_eq!(
        (
            line["app"].as_str(),
            line["version"].as_u64(),
            line["status"].as_u64()
        ),
        (Some("api"), Some(1), Some(200))
    );

    // The control API refuses a request without the token, with a stable code.
    let control = s.control.trim_start_matches("http://").to_string();
    let (status, _, body) = get(&control, "/v1/status", &[]).await;
    assert_eq!(status, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "unauthorized"
    );
    let (status, _, _) = get(&control, "/v1/status", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401);

    // Logs of the live version come back through the CLI.
    let (code, out, _) = s.cli(&["logs", "api", "--env", "staging"]).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("api.staging.v1.0") && out.contains("rollgate: starting instance"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_lists_every_error_with_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rollgate.toml");
    std::fs::write(
        &path,
        "[app.api]\nrun = \"x\"\nhealth = { interval = \"soon\" }\nreplicas = 2\n[env.staging]\nlisten = \"nowhere\"\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(crate::util::BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let file = path.display().to_string();
    for needle in [
        format!("{file}: app.api.health.interval: expected a duration"),
        format!("{file}: app.api.replicas: unknown key"),
        format!("{file}: env.staging.listen: expected an IP address and port"),
        "3 errors found".to_string(),
    ] {
        assert!(err.contains(&needle), "missing {needle:?} in:\n{err}");
    }
    std::fs::write(
        &path,
        "[app.api]\nrun = \"x\"\n[env.staging]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(crate::util::BIN)
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_with_two_instances_are_balanced_and_replaced_without_failures() {
    let s = Server::start(&demo_config("1s", "instances = 2", "")).await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");

    let load = Load::start(&gw, "/version", 6);
    for tag in ["v2", "v3"] {
        let (code, out) = s.deploy(&s.artifact(tag), &[]).await;
        assert_eq!(code, 0, "{out}");
    }
    let seen = load.stop().await;
    assert_eq!(seen.failed(), 0, "{}", seen.summary());

    let status = s.cli_json(&["status", "api", "--env", "staging"]).await;
    let app = &status["environments"][0]["apps"][0];
    let live = app["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["number"] == 3)
        .unwrap();
    let instances = live["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 2, "{live}");
    assert!(
        instances.iter().all(|i| i["status"]["state"] == "healthy"),
        "{live}"
    );
    // v1 was the version before blue once v3 succeeded: stopped.
    let v1 = app["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["number"] == 1)
        .unwrap();
    assert_eq!(v1["instances"].as_array().unwrap().len(), 0, "{v1}");

    // Both instances of the live version get traffic (round-robin).
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let (_, _, body) = get(&gw, "/version", &[]).await;
        let v: Value = serde_json::from_str(&body).unwrap();
        pids.insert(v["pid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 2, "{pids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_the_whole_story_and_cleans_up() {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(180),
        tokio::process::Command::new(crate::util::BIN)
            .args(["demo", "--exit"])
            .output(),
    )
    .await
    .expect("the demo finishes by itself")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The summary's lines, not the headings of each step.
    let line = |needle: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with("  ") && l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{stdout}"))
            .to_string()
    };
    assert!(
        line("v2  healthy canary").contains("succeeded")
            && line("v2  healthy canary").ends_with(" 0 failed"),
        "{stdout}"
    );
    assert!(
        line("v3  fails its health check").contains("caught before traffic")
            && line("v3  fails").ends_with(" 0 failed"),
        "{stdout}"
    );
    assert!(
        line("v4  answers 30%").contains("rolled back automatically"),
        "{stdout}"
    );
    assert!(line("total:").contains(" 0 connection errors"), "{stdout}");
    assert!(line("  api  live v2").contains("blue v1"), "{stdout}");
    // Its temporary directory is gone, and with it every instance.
    let dir = stdout
        .lines()
        .next()
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_string();
    assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
}
