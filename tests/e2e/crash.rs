//! `kill -9` of `rollgate serve` in the middle of a rollout, then a restart: `live` serves the
//! last promoted version, the interrupted rollout is resolved and recorded as such, and no
//! instance is left orphaned or doubled.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{Load, Server, demo_config, live_version, processes_with};

/// A marker only this test's instances carry in their environment.
fn marker(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// The demo config with a per-test marker in every instance's environment; `monitor` and
/// `deadline` (of the health gate) as given.
fn marked_config(mark: &str, monitor: &str, deadline: &str) -> String {
    demo_config(monitor, &format!("env = {{ E2E_MARK = \"{mark}\" }}"), "")
        .replace("deadline = \"5s\"", &format!("deadline = \"{deadline}\""))
}

/// The instance processes carrying `mark`, without the `/bin/sh -c` wrappers: dash may or may
/// not exec the command, so only the service processes themselves count.
fn instances_with(mark: &str) -> Vec<u32> {
    processes_with(&format!("E2E_MARK={mark}"))
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() != "sh")
        })
        .collect()
}

/// Every live process carrying `mark`, wrappers included.
fn all_with(mark: &str) -> Vec<u32> {
    processes_with(&format!("E2E_MARK={mark}"))
}

/// Polls `check` every 100ms until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A rollout of api/staging with its events, from `history --json`.
async fn rollout(s: &Server, id: u64) -> Value {
    let h = s.cli_json(&["history", "api", "--env", "staging"]).await;
    h["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("rollout #{id} is not in the history: {h}"))
}

fn event_kinds(r: &Value) -> Vec<String> {
    r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

/// Starts a detached deploy of api and returns its rollout id.
async fn deploy_detached(s: &Server, tag: &str, extra: &[&str]) -> u64 {
    let a = s.artifact(tag).display().to_string();
    let mut args = vec![
        "deploy",
        "api",
        "--env",
        "staging",
        "--artifact",
        a.as_str(),
        "--detach",
    ];
    args.extend_from_slice(extra);
    s.cli_json(&args).await["rollout_id"].as_u64().unwrap()
}

/// After a clean stop (SIGTERM), no process carrying `mark` remains.
async fn assert_all_gone_after_stop(s: &mut Server, mark: &str) {
    let status = s.stop().await;
    assert!(status.success(), "serve exited with {status}");
    eventually(
        "the instances to exit after serve stopped",
        Duration::from_secs(10),
        || async { all_with(mark).is_empty().then_some(()) },
    )
    .await;
}

/// Crashes serve while the candidate v2, started with `vars`, is held in `phase` (before it
/// took traffic), restarts it, and checks that v1 is live, the rollout was rolled back and
/// recorded as such, and exactly v1's instances run: none from before the crash.
async fn kill9_before_the_switch(mark: &str, config: &str, vars: &[&str], phase: &str) {
    let mut s = Server::start(config).await;
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(live_version(&s.gateway("staging")).await, "1");
    // What one running version needs, measured here rather than assumed.
    let one_version = instances_with(mark).len();
    assert!(one_version >= 1, "no marked instance of v1");

    let id = deploy_detached(&s, "v2", vars).await;
    // The candidate runs beside v1 and the rollout is held in `phase` before the crash.
    let before = eventually(
        &format!("v2 to start and reach {phase}"),
        Duration::from_secs(30),
        || async {
            let pids = instances_with(mark);
            let r = rollout(&s, id).await;
            assert!(r["finished_at"].is_null(), "ended before the kill: {r}");
            (pids.len() == 2 * one_version && r["phase"] == phase).then_some(pids)
        },
    )
    .await;
    let before_all = all_with(mark);

    s.kill9().await;
    // The instances outlive the control plane: this is what the restart must clean up.
    assert!(
        before.iter().all(|p| all_with(mark).contains(p)),
        "instances died with serve; the test proves nothing"
    );

    s.spawn().await;
    let gw = s.gateway("staging");
    assert_eq!(live_version(&gw).await, "1");

    let r = eventually(
        "the interrupted rollout to be resolved",
        Duration::from_secs(30),
        || async {
            let r = rollout(&s, id).await;
            r["finished_at"].is_string().then_some(r)
        },
    )
    .await;
    assert_eq!(r["outcome"], "rolled_back", "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("restarted") && reason.contains(phase),
        "{reason}"
    );
    assert!(
        event_kinds(&r).contains(&"recovered".to_string()),
        "{:?}",
        event_kinds(&r)
    );
    let aliases = s.aliases().await;
    assert_eq!(aliases["live"], 1, "{aliases}");
    assert_eq!(aliases["green"], Value::Null, "{aliases}");

    // Nothing from before the crash survives, and only v1 runs again: no orphan, no double.
    let now = all_with(mark);
    let survivors: Vec<u32> = before_all
        .iter()
        .copied()
        .filter(|p| now.contains(p))
        .collect();
    assert!(
        survivors.is_empty(),
        "orphans survived: {survivors:?}\n{}",
        s.serve_log()
    );
    assert_eq!(instances_with(mark).len(), one_version, "{}", s.serve_log());
    assert!(s.serve_log().contains("killed orphan"), "{}", s.serve_log());

    // The lock went with the rollout: the next deploy goes through.
    let (code, out) = s.deploy(&s.artifact("v3"), &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(live_version(&gw).await, "3");

    assert_all_gone_after_stop(&mut s, mark).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_deploying_rolls_the_candidate_back_and_reaps_its_instances() {
    let mark = marker("crash-deploying");
    // Never healthy: the candidate stays in `deploying` until its 120s health deadline.
    let cfg = marked_config(&mark, "1s", "120s");
    kill9_before_the_switch(&mark, &cfg, &["--var", "DEMO_FAIL_HEALTH=1"], "deploying").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_verifying_rolls_the_candidate_back_and_reaps_its_instances() {
    let mark = marker("crash-verifying");
    // Healthy, but its smoke request takes 60s of the allowed 120s: held in `verifying`.
    let cfg = marked_config(&mark, "1s", "5s").replace(
        "body_contains = \"Ada\" }",
        "body_contains = \"Ada\", timeout = \"120s\" }",
    );
    assert!(cfg.contains("timeout = \"120s\""), "{cfg}");
    kill9_before_the_switch(
        &mark,
        &cfg,
        &["--var", "DEMO_LATENCY_MS=60000"],
        "verifying",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_monitoring_resumes_the_rollout_with_a_fresh_window() {
    let mark = marker("crash-monitoring");
    // Long enough to land the kill inside the window, short enough for the resumed window.
    let mut s = Server::start(&marked_config(&mark, "8s", "5s")).await;
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let one_version = instances_with(&mark).len();
    assert!(one_version >= 1, "no marked instance of v1");

    let id = deploy_detached(&s, "v2", &[]).await;
    eventually("v2 to be monitored", Duration::from_secs(30), || async {
        let r = rollout(&s, id).await;
        assert!(r["finished_at"].is_null(), "ended before the kill: {r}");
        (r["phase"] == "monitoring").then_some(())
    })
    .await;
    assert_eq!(live_version(&s.gateway("staging")).await, "2");
    let before = instances_with(&mark);
    assert_eq!(before.len(), 2 * one_version, "v1 (blue) and v2 (live) run");
    let before_all = all_with(&mark);

    s.kill9().await;
    assert!(
        before.iter().all(|p| all_with(&mark).contains(p)),
        "instances died with serve; the test proves nothing"
    );

    s.spawn().await;
    let gw = s.gateway("staging");
    // The promoted candidate is still live, and blue is warm behind it.
    assert_eq!(live_version(&gw).await, "2");
    let aliases = s.aliases().await;
    assert_eq!(
        (aliases["live"].clone(), aliases["blue"].clone()),
        (2.into(), 1.into())
    );

    let r = rollout(&s, id).await;
    assert!(
        event_kinds(&r).contains(&"recovered".to_string()),
        "{:?}",
        event_kinds(&r)
    );
    let r = eventually(
        "the resumed rollout to end",
        Duration::from_secs(60),
        || async {
            let r = rollout(&s, id).await;
            r["finished_at"].is_string().then_some(r)
        },
    )
    .await;
    assert_eq!(r["outcome"], "succeeded", "{r}\n{}", s.serve_log());
    let kinds = event_kinds(&r);
    let recovered = kinds.iter().position(|k| k == "recovered").unwrap();
    let passed = kinds.iter().position(|k| k == "monitor_passed");
    assert!(
        passed.is_some_and(|p| p > recovered),
        "the monitor did not pass after the restart: {kinds:?}"
    );
    assert_eq!(live_version(&gw).await, "2");

    let now = all_with(&mark);
    let survivors: Vec<u32> = before_all
        .iter()
        .copied()
        .filter(|p| now.contains(p))
        .collect();
    assert!(
        survivors.is_empty(),
        "orphans survived: {survivors:?}\n{}",
        s.serve_log()
    );
    // v2 live and v1 warm as blue, each once.
    assert_eq!(
        instances_with(&mark).len(),
        2 * one_version,
        "{}",
        s.serve_log()
    );

    assert_all_gone_after_stop(&mut s, &mark).await;
}

/// A loopback port that was free a moment ago, so the gateway comes back on the same address.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_under_load_comes_back_serving_the_same_live_version() {
    let mark = marker("crash-load");
    let port = free_port();
    let cfg = marked_config(&mark, "1s", "5s").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let mut s = Server::start(&cfg).await;
    let gw = s.gateway("staging");
    assert_eq!(gw, format!("127.0.0.1:{port}"));
    for tag in ["v1", "v2"] {
        let (code, out) = s.deploy(&s.artifact(tag), &[]).await;
        assert_eq!(code, 0, "{out}");
    }
    let one_version = instances_with(&mark).len() / 2;
    assert!(one_version >= 1, "no marked instances");
    let before_all = all_with(&mark);

    let load = Load::start(&gw, "/version", 6);
    eventually(
        "clients to get answers",
        Duration::from_secs(30),
        || async { (load.seen.ok.load(Ordering::Relaxed) >= 50).then_some(()) },
    )
    .await;

    s.kill9().await;
    s.spawn().await;
    // Clients saw connection errors while serve was down; only the state after counts.
    assert_eq!(s.gateway("staging"), gw, "the gateway moved");
    assert_eq!(live_version(&gw).await, "2");
    let aliases = s.aliases().await;
    assert_eq!(
        (aliases["live"].clone(), aliases["blue"].clone()),
        (2.into(), 1.into())
    );

    // The clients get answers from v2 again.
    let ok_at_restart = load
        .seen
        .versions
        .lock()
        .unwrap()
        .get("2")
        .copied()
        .unwrap_or(0);
    eventually(
        "clients to be answered by v2 after the restart",
        Duration::from_secs(30),
        || async {
            let ok = load
                .seen
                .versions
                .lock()
                .unwrap()
                .get("2")
                .copied()
                .unwrap_or(0);
            (ok >= ok_at_restart + 50).then_some(())
        },
    )
    .await;
    let seen = load.stop().await;
    let versions = seen.versions.lock().unwrap().clone();
    assert!(
        versions.keys().all(|v| v == "2"),
        "a version other than live answered: {}",
        seen.summary()
    );

    let now = all_with(&mark);
    assert!(
        before_all.iter().all(|p| !now.contains(p)),
        "orphans survived: {before_all:?} / {now:?}\n{}",
        s.serve_log()
    );
    assert_eq!(instances_with(&mark).len(), 2 * one_version);

    assert_all_gone_after_stop(&mut s, &mark).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_canary_step_resumes_the_step_with_the_same_split() {
    let mark = marker("canary-step");
    let config = marked_config(&mark, "1s", "30s").replace(
        "rollback_when = [\"error_rate > 5%\"]",
        "rollback_when = [\"error_rate > 5%\"]\nstrategy = { canary = { steps = [20, 100], interval = \"60s\" } }\non_inconclusive = \"continue\"",
    );
    let mut s = Server::start(&config).await;
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let id = deploy_detached(&s, "v2", &[]).await;
    eventually("the first canary step", Duration::from_secs(30), || async {
        let r = rollout(&s, id).await;
        (r["phase"] == "shifting").then_some(())
    })
    .await;
    let before = instances_with(&mark);

    s.kill9().await;
    s.spawn().await;

    // The step resumed: the same 20 % split, recorded, both versions running once each.
    let r = rollout(&s, id).await;
    assert_eq!(r["phase"], "shifting", "{r}");
    assert_eq!(r["weight_percent"], 20.0, "{r}");
    assert!(event_kinds(&r).contains(&"recovered".to_string()), "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or("")
            .contains("resumed at 20%"),
        "{r}"
    );
    let st = s.cli_json(&["status", "api", "--env", "staging"]).await;
    let traffic = &st["environments"][0]["apps"][0]["traffic"];
    assert_eq!(
        (
            traffic[0]["version"].as_u64(),
            traffic[0]["weight_percent"].as_f64()
        ),
        (Some(2), Some(20.0)),
        "{traffic}"
    );
    let after = instances_with(&mark);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "a process from before the crash survived: {before:?} {after:?}"
    );
    assert_eq!(after.len(), 2, "v1 and v2 once each: {after:?}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        seen.insert(live_version(&s.gateway("staging")).await);
    }
    assert_eq!(seen.len(), 2, "both versions answer at 20/80: {seen:?}");

    // Finish it by hand.
    let done = s.cli_json(&["promote", "api", "--env", "staging"]).await;
    assert_eq!(done["rollout"]["phase"], "monitoring", "{done}");
    assert_all_gone_after_stop(&mut s, &mark).await;
}
