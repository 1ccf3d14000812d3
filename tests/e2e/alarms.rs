//! After promotion: a version that degrades only once live is caught by the monitor window,
//! or later by an alarm; both are announced to webhook and Slack-compatible receivers.

use std::time::Duration;

use crate::util::{Load, Receiver, Server, demo_config, live_version};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_degrading_after_promotion_is_rolled_back_by_the_monitor() {
    let cfg = demo_config(
        "20s",
        "",
        "strategy = { canary = { steps = [50, 100], interval = \"1s\" } }\non_inconclusive = \"continue\"",
    );
    let s = Server::start(&cfg).await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let load = Load::start(&gw, "/api/users", 6);
    // Healthy through its steps (about 2.5 s), then half its API calls fail from 6 s on.
    let (code, out) = s
        .deploy(
            &s.artifact("v2"),
            &[
                "--var",
                "DEMO_ERROR_RATE=0.5",
                "--var",
                "DEMO_FAULTS_AFTER_MS=6000",
            ],
        )
        .await;
    load.stop().await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("live switched to v2"),
        "promoted first:\n{out}"
    );
    assert!(
        out.contains("rolled back: FAIL: error_rate > 5%") && out.contains("live is back on v1"),
        "{out}"
    );
    assert_eq!(live_version(&gw).await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_rolls_back_a_live_version_that_degrades_and_everyone_is_told() {
    let hooks = Receiver::start().await;
    let extra_env = format!(
        "notify = [{{ webhook = \"http://{0}/hook\", headers = {{ Authorization = \"Bearer e2e\" }} }}, {{ slack = \"http://{0}/slack\" }}]\n\
         alarms = [{{ rule = \"error_rate > 5% in 10s\", actions = [\"rollback\", \"notify\"] }}]",
        hooks.addr
    );
    let s = Server::start(&demo_config("1s", "", &extra_env)).await;
    let gw = s.gateway("staging");
    let (code, out) = s.deploy(&s.artifact("v1"), &[]).await;
    assert_eq!(code, 0, "{out}");
    let load = Load::start(&gw, "/api/users", 6);
    // Passes its 1 s monitor window, then starts failing at 5 s: only the alarm can see it.
    let (code, out) = s
        .deploy(
            &s.artifact("v2"),
            &[
                "--var",
                "DEMO_ERROR_RATE=0.5",
                "--var",
                "DEMO_FAULTS_AFTER_MS=5000",
            ],
        )
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(live_version(&gw).await, "2");

    let firing = hooks.wait_for("/hook", "alarm.firing").await;
    assert_eq!(
        (
            firing["app"].as_str(),
            firing["env"].as_str(),
            firing["version"].as_u64()
        ),
        (Some("api"), Some("staging"), Some(2))
    );
    assert_eq!(firing["details"]["verdict"]["verdict"], "fail", "{firing}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while live_version(&gw).await != "1" {
        assert!(
            std::time::Instant::now() < deadline,
            "the alarm did not roll back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.stop().await;

    // Rollout events reached both receivers; Slack gets a readable line.
    hooks.wait_for("/hook", "rollout.succeeded").await;
    let slack = hooks.wait_for("/slack", "alarm firing").await;
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .starts_with("[rollgate] api/staging v2"),
        "{slack}"
    );
    let status = s.cli_json(&["status", "api", "--env", "staging"]).await;
    let alarm = &status["environments"][0]["apps"][0]["alarms"][0];
    assert_eq!(alarm["rule"], "error_rate > 5% in 10s", "{alarm}");
    let audit = s.cli_json(&["audit"]).await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"alarm_firing") && actions.contains(&"rollback"),
        "{actions:?}"
    );
}
