//! Secrets end to end: values go in through stdin and come out only through `secret get`;
//! nothing else (listings, history, status, audit, the server log, the SQLite files) ever holds
//! them; a wrong master key stops `serve` with nothing changed; a failed rotation keeps
//! `current`; and a rotation rolls the instances that use the secret under load without a
//! failed request.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::util::{BIN, Load, Server, demo_config, get, live_version};

/// Runs the CLI with `input` on stdin; returns (exit code, stdout, stderr).
async fn cli_stdin(s: &Server, args: &[&str], input: &[u8]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .args(args)
        .env_remove("ROLLGATE_TOKEN")
        .env_remove("ROLLGATE_SERVER")
        .env_remove("ROLLGATE_DATA_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(p);
            }
        }
    }
    found
}

/// The bytes of the database and its WAL, if any.
fn db_bytes(data: &Path) -> Vec<(String, Vec<u8>)> {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|f| std::fs::read(data.join(f)).ok().map(|b| (f.to_string(), b)))
        .collect()
}

const VALUE: &str = "e2e-secret-value-4b7d1c";
/// What the failing test step's hook makes: must never be stored as current nor leak.
const CANDIDATE: &str = "candidate-42-e2e";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_leak_nowhere_and_a_wrong_master_key_changes_nothing() {
    let mut s = Server::start(&demo_config("1s", "", "")).await;
    let data = s.data_dir();
    assert!(
        s.serve_log().contains("CREATED A NEW SECRETS MASTER KEY"),
        "{}",
        s.serve_log()
    );
    assert!(data.join("master.key").exists());

    // Set through stdin (with the newline echo adds), read back exactly.
    let (code, out, err) = cli_stdin(
        &s,
        &["secret", "set", "database_password", "--env", "staging"],
        format!("{VALUE}\n").as_bytes(),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("v1 (current)"), "{out}");
    let (code, out, err) = s
        .cli(&["secret", "get", "database_password", "--env", "staging"])
        .await;
    assert_eq!((code, out.as_str()), (0, VALUE), "{err}");
    // There is no way to give a value on the command line.
    let (code, _, err) = s
        .cli(&["secret", "set", "x", "--env", "staging", "--value", "v"])
        .await;
    assert_ne!(code, 0, "{err}");

    // Rotation with a failing hook, then with a failing test: current stays v1.
    let (code, out, err) = s
        .cli(&[
            "secret",
            "policy",
            "database_password",
            "--env",
            "staging",
            "--every",
            "1h",
            "--hook",
            "echo broken >&2; exit 4",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = s
        .cli(&["secret", "rotate", "database_password", "--env", "staging"])
        .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("broken") && err.contains("v1 stays current"),
        "{err}"
    );
    let (code, out, err) = s
        .cli(&[
            "secret",
            "policy",
            "database_password",
            "--env",
            "staging",
            "--every",
            "1h",
            "--hook",
            "echo candidate-$((6*7))-e2e",
            "--test",
            "cat >/dev/null; exit 7",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = s
        .cli(&["secret", "rotate", "database_password", "--env", "staging"])
        .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("test exited"), "{err}");
    let (_, out, _) = s
        .cli(&["secret", "get", "database_password", "--env", "staging"])
        .await;
    assert_eq!(out, VALUE, "a failed rotation keeps current");

    // Nothing but `get` shows a value.
    let listed = s.cli_json(&["secret", "list"]).await.to_string();
    assert!(
        listed.contains("database_password") && listed.contains("****"),
        "{listed}"
    );
    let history = s
        .cli_json(&["secret", "history", "database_password", "--env", "staging"])
        .await;
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    let status = s.cli_json(&["status"]).await.to_string();
    let audit = s.cli_json(&["audit", "--limit", "100"]).await;
    let audit_text = audit.to_string();
    for action in [
        "secret_set",
        "secret_read",
        "secret_policy",
        "secret_rotation_failed",
        "secret_rotation_discarded",
    ] {
        assert!(audit_text.contains(action), "{action}: {audit_text}");
    }
    let (_, list_text, _) = s.cli(&["secret", "list"]).await;
    let (_, history_text, _) = s
        .cli(&["secret", "history", "database_password", "--env", "staging"])
        .await;
    for shown in [
        &listed,
        &history.to_string(),
        &status,
        &audit_text,
        &list_text,
        &history_text,
    ] {
        assert!(
            !shown.contains(VALUE) && !shown.contains(CANDIDATE),
            "{shown}"
        );
    }
    // No file of the run holds a value: database and WAL while running, logs, everything.
    for needle in [VALUE, CANDIDATE] {
        let found = files_containing(s.dir.path(), needle.as_bytes());
        assert!(found.is_empty(), "{needle} found in {found:?}");
    }
    assert!(!db_bytes(&data).is_empty());

    assert!(s.stop().await.success());
    for needle in [VALUE, CANDIDATE] {
        let found = files_containing(s.dir.path(), needle.as_bytes());
        assert!(
            found.is_empty(),
            "{needle} found in {found:?} after shutdown"
        );
    }

    // A wrong master key: serve refuses with a clear error, and the database is untouched.
    let wrong = s.dir.path().join("wrong.key");
    std::fs::write(&wrong, format!("{}\n", "ab".repeat(32))).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good_config = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        good_config.replace("[server]\n", "[server]\nmaster_key_file = \"wrong.key\"\n"),
    )
    .unwrap();
    let before = db_bytes(&data);
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&s.config)
            .env_remove("ROLLGATE_MASTER_KEY")
            .output(),
    )
    .await
    .expect("serve with a wrong key did not exit")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("wrong master key") && stderr.contains("wrong.key"),
        "{stderr}"
    );
    assert!(!data.join("serve.json").exists());
    assert!(db_bytes(&data) == before, "the database changed");

    // The right key again: everything is there.
    std::fs::write(&s.config, good_config).unwrap();
    s.spawn().await;
    let (code, out, err) = s
        .cli(&["secret", "get", "database_password", "--env", "staging"])
        .await;
    assert_eq!((code, out.as_str()), (0, VALUE), "{err}");
}

fn sha256(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Python app with its `/secret` route, in the server's directory.
fn secret_app(s: &Server) -> PathBuf {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let dir = s.dir.path().join("secretapp");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures.join("pyapp/app.py"), dir.join("app.py")).unwrap();
    std::fs::copy(
        fixtures.join("secretapp/secretapp.py"),
        dir.join("secretapp.py"),
    )
    .unwrap();
    dir
}

/// The SHA-256 that `/secret` answers, as seen through the gateway.
async fn secret_hash(gw: &str) -> String {
    let (status, _, body) = get(gw, "/secret", &[]).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["sha256"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_gets_the_rotated_secret_while_clients_see_no_failed_request() {
    let s = Server::start(
        r#"
[server]
control = "127.0.0.1:0"

[app.py]
run = "python3 secretapp.py"
stop_grace = "5s"
instances = 2
secrets = ["database_password"]
health = { path = "/health", interval = "200ms", timeout = "200ms", healthy = 2, unhealthy = 2, deadline = "20s" }
smoke = [{ path = "/api/hello", status = 200, body_contains = "world" }]

[env.staging]
listen = "127.0.0.1:0"
monitor = "1s"
rollback_when = ["error_rate > 5%"]
min_requests = 20
"#,
    )
    .await;
    let gw = s.gateway("staging");
    let artifact = secret_app(&s).display().to_string();
    let deploy = [
        "deploy",
        "py",
        "--env",
        "staging",
        "--artifact",
        artifact.as_str(),
    ];

    // A declared secret that does not exist fails the deploy at once.
    let (code, out, err) = s.cli(&deploy).await;
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("database_password") && err.contains("not set"),
        "{err}"
    );

    let first = "first-pass-e2e";
    let (code, out, err) = cli_stdin(
        &s,
        &["secret", "set", "database_password", "--env", "staging"],
        first.as_bytes(),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = s.cli(&deploy).await;
    assert_eq!(code, 0, "{out}{err}\n{}", s.serve_log());
    assert_eq!(secret_hash(&gw).await, sha256(first));

    // The hook's command does not contain the value it prints.
    let rotated = "rotated-42-pass";
    let (code, out, err) = s
        .cli(&[
            "secret",
            "policy",
            "database_password",
            "--env",
            "staging",
            "--every",
            "1h",
            "--hook",
            "echo rotated-$((6*7))-pass",
            "--test",
            "test \"$(cat)\" != ''",
        ])
        .await;
    assert_eq!(code, 0, "{out}{err}");

    let load = Load::start(&gw, "/version", 6);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = s
        .cli_json(&["secret", "rotate", "database_password", "--env", "staging"])
        .await;
    assert_eq!(r["outcome"], "rotated", "{r}");
    assert_eq!(r["redeploys"][0]["version"], 2, "{r}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while live_version(&gw).await != "2" || secret_hash(&gw).await != sha256(rotated) {
        assert!(
            Instant::now() < deadline,
            "v2 with the new secret did not go live:\n{}",
            s.serve_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Long enough for the old instances to drain and stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = load.stop().await;
    assert_eq!(seen.failed(), 0, "{}", seen.summary());
    assert!(
        seen.versions.lock().unwrap().contains_key("2"),
        "{}",
        seen.summary()
    );
    for _ in 0..10 {
        assert_eq!(
            secret_hash(&gw).await,
            sha256(rotated),
            "every instance has it"
        );
    }

    let audit = s.cli_json(&["audit", "--limit", "100"]).await.to_string();
    assert!(
        audit.contains("secret_rotate") && audit.contains("redeploy"),
        "{audit}"
    );
    let log = s.serve_log();
    assert!(
        log.contains("redeploy of the live version started"),
        "{log}"
    );
    for needle in [first, rotated] {
        let found = files_containing(s.dir.path(), needle.as_bytes());
        assert!(found.is_empty(), "{needle} found in {found:?}");
    }
}
