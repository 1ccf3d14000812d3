//! Canary releases: weight steps under load, automatic rollback from the gateway's own
//! metrics while the candidate holds part of the traffic, and operator commands.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Load, Server, demo_config, live_version};

fn canary_config(steps: &str, interval: &str, rules: &str, extra_env: &str) -> String {
    demo_config("2s", "", extra_env)
        .replace(
            "rollback_when = [\"error_rate > 5%\"]",
            &format!("rollback_when = {rules}\nstrategy = {{ canary = {{ steps = {steps}, interval = \"{interval}\" }} }}"),
        )
}

/// Polls `status --json` until the rollout ends, collecting the candidate's weights seen.
async fn weights_until_done(s: &Server, id: u64) -> (BTreeSet<u64>, Value) {
    let mut weights = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let st = s.cli_json(&["status", "api", "--env", "staging"]).await;
        let app = &st["environments"][0]["apps"][0];
        for t in app["traffic"].as_array().unwrap() {
            if t["version"].as_u64() != app["aliases"]["live"].as_u64() {
                weights.insert((t["weight_percent"].as_f64().unwrap() * 10.0) as u64);
            }
        }
        let h = s
            .cli_json(&["history", "api", "--env", "staging", "--limit", "1"])
            .await;
        let r = h["rollouts"][0].clone();
        if r["id"].as_u64() == Some(id) && r["finished_at"].is_string() {
            return (weights, r);
        }
        assert!(Instant::now() < deadline, "rollout #{id} did not end: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn deploy_detached(s: &Server, tag: &str, extra: &[&str]) -> u64 {
    let mut args = vec!["--detach", "--json"];
    args.extend_from_slice(extra);
    let (code, out) = s.deploy(&s.artifact(tag), &args).await;
    assert_eq!(code, 0, "{out}");
    let start = out.find('{').unwrap();
    serde_json::from_str::<Value>(&out[start..]).unwrap()["rollout_id"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_walks_10_25_50_100_and_succeeds_without_failures() {
    let s = Server::start(&canary_config(
        "[10, 25, 50, 100]",
        "1500ms",
        "[\"error_rate > 5%\"]",
        "",
    ))
    .await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");

    let load = Load::start(&gw, "/version", 6);
    let id = deploy_detached(&s, "v2", &[]).await;
    let (weights, r) = weights_until_done(&s, id).await;
    let seen = load.stop().await;

    assert_eq!(r["outcome"], "succeeded", "{r}");
    for w in [100, 250, 500] {
        assert!(weights.contains(&w), "weight {w} never seen: {weights:?}");
    }
    let kinds: Vec<&str> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "step_passed").count(),
        4,
        "{kinds:?}"
    );
    assert_eq!(seen.failed(), 0, "{}", seen.summary());
    let versions = seen.versions.lock().unwrap().clone();
    assert!(
        versions.get("1").copied().unwrap_or(0) > 0 && versions.get("2").copied().unwrap_or(0) > 0,
        "{versions:?}"
    );
    assert_eq!(live_version(&gw).await, "2");
    assert_eq!(s.aliases().await["blue"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_failing_20_percent_is_rolled_back_during_its_first_step() {
    let s = Server::start(&canary_config(
        "[10, 25, 50, 100]",
        "20s",
        "[\"error_rate > 5%\"]",
        "",
    ))
    .await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");

    let load = Load::start(&gw, "/api/users", 6);
    let started = Instant::now();
    let (code, out) = s
        .deploy(&s.artifact("v2"), &["--var", "DEMO_ERROR_RATE=0.2"])
        .await;
    let took = started.elapsed();
    let seen = load.stop().await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rolled back")
            && out.contains("error_rate > 5%")
            && out.contains("all traffic is back on v1"),
        "{out}"
    );
    // Rolled back within the first 20 s step, never promoted.
    assert!(took < Duration::from_secs(20), "took {took:?}:\n{out}");
    assert_eq!(live_version(&gw).await, "1");
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
        .find(|e| e["kind"] == "analysis_failed")
        .unwrap();
    assert_eq!(failed["data"]["verdicts"][0]["verdict"], "fail", "{failed}");

    // The decision explained: the rule, its window, the values and threshold; the tests.
    let (code, out, _) = s
        .cli(&[
            "history",
            "api",
            "--env",
            "staging",
            "--limit",
            "1",
            "--explain",
        ])
        .await;
    assert_eq!(code, 0);
    let rule_line = out
        .lines()
        .find(|l| l.contains("rule error_rate > 5%") && l.contains("=> FAIL"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        rule_line.contains("window   60s") && rule_line.contains("vs threshold 0.0500"),
        "{rule_line}"
    );
    // The comparison with v1 ran beside the rules (with a second of data it may still lack samples).
    assert!(
        out.contains("          test ") && out.contains("vs baseline"),
        "{out}"
    );
    assert!(
        out.contains("smoke GET /api/users on api.staging.v2.0: status 200"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_300ms_slower_is_rolled_back_by_the_latency_rule() {
    let s = Server::start(&canary_config(
        "[10, 50, 100]",
        "20s",
        "[\"error_rate > 5%\", \"p99 > 200ms\"]",
        "",
    ))
    .await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");

    let load = Load::start(&gw, "/api/users", 8);
    let (code, out) = s
        .deploy(&s.artifact("v2"), &["--var", "DEMO_LATENCY_MS=300"])
        .await;
    let seen = load.stop().await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("p99 > 200ms") && out.contains("all traffic is back on v1"),
        "{out}"
    );
    assert_eq!(seen.failed(), 0, "slow is not failed: {}", seen.summary());
    assert_eq!(live_version(&gw).await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_pause_resume_abort_retry_and_promote() {
    let s = Server::start(&canary_config(
        "[10, { weight = 50, pause = \"manual\" }, 100]",
        "30s",
        "[\"error_rate > 5%\"]",
        "on_inconclusive = \"continue\"",
    ))
    .await;
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let id = deploy_detached(&s, "v2", &[]).await;

    // Wait for the first step, then pause it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = s.cli_json(&["status", "api", "--env", "staging"]).await;
        if st["environments"][0]["apps"][0]["rollout"]["phase"] == "shifting" {
            break;
        }
        assert!(Instant::now() < deadline, "never shifting: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paused = s.cli_json(&["pause", "api", "--env", "staging"]).await;
    assert_eq!(paused["rollout"]["phase"], "paused", "{paused}");
    assert_eq!(paused["rollout"]["weight_percent"], 10.0);
    let (code, _, err) = s.cli(&["pause", "api", "--env", "staging"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot pause it now (conflict)"), "{err}");

    // Resume goes on to the next step, which waits for an operator at 50 %.
    let resumed = s.cli_json(&["resume", "api", "--env", "staging"]).await;
    assert_eq!(
        (
            resumed["rollout"]["phase"].as_str(),
            resumed["rollout"]["weight_percent"].as_f64()
        ),
        (Some("paused"), Some(50.0)),
        "{resumed}"
    );
    let st = s.cli_json(&["status", "api", "--env", "staging"]).await;
    let traffic = &st["environments"][0]["apps"][0]["traffic"];
    assert_eq!(traffic[0]["weight_percent"], 50.0, "{traffic}");

    // Abort: all traffic back on v1.
    let aborted = s.cli_json(&["abort", "api", "--env", "staging"]).await;
    assert_eq!(aborted["rollout"]["phase"], "aborted", "{aborted}");
    assert_eq!(live_version(&s.gateway("staging")).await, "1");
    assert_eq!(
        s.cli_json(&["history", "api", "--limit", "1"]).await["rollouts"][0]["id"],
        id
    );

    // Retry the same version (followed by the CLI), then promote past the remaining steps
    // and the monitor window.
    let config = s.config.clone();
    let retry = tokio::spawn(async move {
        tokio::process::Command::new(crate::util::BIN)
            .arg("--config")
            .arg(&config)
            .args(["retry", "api", "--env", "staging"])
            .output()
            .await
            .unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = s.cli_json(&["status", "api", "--env", "staging"]).await;
        let r = &st["environments"][0]["apps"][0]["rollout"];
        if r["phase"] == "shifting" && r["id"].as_u64() != Some(id) {
            assert_eq!(r["version"], 2, "a retry rolls out the same version: {r}");
            break;
        }
        assert!(Instant::now() < deadline, "the retry never shifted: {st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let promoted = s.cli_json(&["promote", "api", "--env", "staging"]).await;
    assert_eq!(promoted["rollout"]["phase"], "monitoring", "{promoted}");
    assert_eq!(live_version(&s.gateway("staging")).await, "2");
    let done = s.cli_json(&["promote", "api", "--env", "staging"]).await;
    assert_eq!(done["rollout"]["phase"], "succeeded", "{done}");
    let out = retry.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("promoted by"), "{stdout}");
    let audit = s.cli_json(&["audit"]).await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"retry") && actions.contains(&"rollout_aborted"),
        "{actions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_clients_never_switch_versions_mid_rollout_and_testers_reach_green() {
    let s = Server::start(&canary_config(
        "[10, 25, 50, { weight = 75, pause = \"manual\" }, 100]",
        "1s",
        "[\"error_rate > 5%\"]",
        "sticky = \"cookie\"\noverride_header = \"X-Rollgate-Alias\"\non_inconclusive = \"continue\"",
    ))
    .await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let _id = deploy_detached(&s, "v2", &[]).await;

    // Wait until v2 takes its first share, then start 20 clients with cookie jars.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = s.cli_json(&["status", "api", "--env", "staging"]).await;
        if st["environments"][0]["apps"][0]["rollout"]["phase"] == "shifting" {
            break;
        }
        assert!(Instant::now() < deadline, "never shifting: {st}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A tester reaches the candidate by its alias whatever the weight.
    for _ in 0..5 {
        let (_, _, body) =
            crate::util::get(&gw, "/version", &[("x-rollgate-alias", "green")]).await;
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["version"],
            "2",
            "{body}"
        );
    }

    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut clients = Vec::new();
    for _ in 0..20 {
        let (gw, running) = (gw.clone(), running.clone());
        clients.push(tokio::spawn(async move {
            let mut cookie: Option<String> = None;
            let mut seen = BTreeSet::new();
            for _ in 0..2_000 {
                if !running.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let headers: Vec<(&str, &str)> = cookie
                    .as_deref()
                    .map(|c| vec![("cookie", c)])
                    .unwrap_or_default();
                let (status, h, body) = crate::util::get(&gw, "/version", &headers).await;
                assert_eq!(status, 200, "{body}");
                if let Some(set) = h.get("set-cookie") {
                    cookie = set.to_str().unwrap().split(';').next().map(str::to_string);
                }
                seen.insert(
                    serde_json::from_str::<Value>(&body).unwrap()["version"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        }));
    }
    // Let the weights climb 10 → 25 → 50 → 75 % (held there for an operator).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = s.cli_json(&["status", "api", "--env", "staging"]).await;
        if st["environments"][0]["apps"][0]["rollout"]["phase"] == "paused" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never reached the manual step: {st}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut on = std::collections::BTreeMap::new();
    for c in clients {
        let seen = c.await.unwrap();
        assert_eq!(
            seen.len(),
            1,
            "a sticky client switched versions mid-rollout: {seen:?}"
        );
        *on.entry(seen.into_iter().next().unwrap()).or_insert(0) += 1;
    }
    assert!(on.contains_key("1"), "{on:?}");
    let _ = s.cli_json(&["abort", "api", "--env", "staging"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_comparison_with_the_stable_version_catches_what_no_rule_does() {
    // No rule fires on 40 ms of added latency or on 3 % errors; the comparison with v1 does.
    let s = Server::start(&canary_config(
        "[25, 100]",
        "30s",
        "[\"error_rate > 50%\", \"p99 > 5s\"]",
        "compare = { confidence = 0.99, latency_margin = \"20%\", error_rate_margin = \"1%\", consecutive = 3 }",
    ))
    .await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let load = Load::start(&gw, "/api/users", 6);
    let (code, out) = s
        .deploy(&s.artifact("v2"), &["--var", "DEMO_LATENCY_MS=40"])
        .await;
    load.stop().await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("mann-whitney-u") && out.contains("all traffic is back on v1"),
        "{out}"
    );

    let r = &s
        .cli_json(&["history", "api", "--env", "staging", "--limit", "1"])
        .await["rollouts"][0];
    let failed = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "analysis_failed")
        .unwrap();
    let latency = failed["data"]["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["test"] == "mann-whitney-u")
        .unwrap();
    assert_eq!(latency["verdict"], "fail", "{latency}");
    assert!(latency["p_value"].as_f64().unwrap() < 0.01, "{latency}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_service_is_inconclusive_without_a_probe_and_judged_with_one() {
    // No client traffic at all.
    let quiet = canary_config(
        "[10, 100]",
        "2s",
        "[\"error_rate > 5%\"]",
        "on_inconclusive = \"rollback\"",
    );
    let s = Server::start(&quiet).await;
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = s.deploy(&s.artifact("v2"), &[]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("analysis inconclusive at 10%") && out.contains("at least 20 needed"),
        "{out}"
    );
    drop(s);

    let probed = quiet.replace(
        "smoke = [",
        "probe = { path = \"/api/users\", every = \"20ms\" }\nsmoke = [",
    );
    let s = Server::start(&probed).await;
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let (code, out) = s.deploy(&s.artifact("v2"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let r = &s
        .cli_json(&["history", "api", "--env", "staging", "--limit", "1"])
        .await["rollouts"][0];
    let step = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "step_passed")
        .unwrap();
    let verdict = &step["data"]["verdicts"][0];
    assert_eq!(verdict["verdict"], "pass", "{step}");
    assert!(verdict["requests"].as_u64().unwrap() >= 20, "{verdict}");
}
