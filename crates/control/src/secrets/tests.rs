//! Unit tests of the secret service on a real SQLite file and real hook processes.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use rollgate_runtime::ProcessDriver;
use rollgate_store::{Filter, SqliteStore};

use super::*;
use crate::artifacts::ArtifactStore;

const CONFIG: &str = r#"
[app.api]
run = "./api"
secrets = ["db_password", { name = "token", env = "API_TOKEN" }, { name = "tls", file = "tls.pem" }]

[app.web]
run = "./web"
path_prefix = "/web"
secrets = ["db_password"]

[env.prod]
listen = "127.0.0.1:0"
"#;

struct Fixture {
    dir: tempfile::TempDir,
    sqlite: Arc<SqliteStore>,
    service: Arc<SecretService>,
    controller: Arc<Controller>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = Arc::new(Config::parse(CONFIG, "rollgate.toml").unwrap());
    let sqlite = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let (key, source) = load_master_key(&config, dir.path(), &*sqlite).unwrap();
    let service = SecretService::new(
        Arc::clone(&config),
        Arc::clone(&sqlite) as Arc<dyn SecretStore>,
        Arc::clone(&sqlite) as Arc<dyn Store>,
        key,
        source,
        dir.path(),
    )
    .unwrap();
    let controller = Controller::new(
        config,
        Arc::clone(&sqlite) as Arc<dyn Store>,
        Arc::new(ProcessDriver::new(dir.path().join("run")).unwrap()),
        ArtifactStore::new(dir.path().join("artifacts")),
        dir.path().join("logs"),
        BTreeMap::new(),
    );
    controller.set_secrets(Arc::clone(&service));
    Fixture {
        dir,
        sqlite,
        service,
        controller,
    }
}

fn value(s: &str) -> Redacted<Vec<u8>> {
    Redacted(s.as_bytes().to_vec())
}

fn current(f: &Fixture, scope: &SecretScope, name: &str) -> (u64, String) {
    let (v, bytes) = f
        .service
        .get(scope, name, Selector::Stage(Stage::Current), "t")
        .unwrap();
    (v, String::from_utf8(bytes.to_vec()).unwrap())
}

fn actions(f: &Fixture) -> Vec<String> {
    f.sqlite
        .audit(&Filter {
            limit: Some(1000),
            ..Default::default()
        })
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| format!("{} {}", e.action, e.detail))
        .collect()
}

#[test]
fn first_start_creates_a_private_key_file_and_later_starts_reuse_it() {
    let f = fixture();
    let path = f.dir.path().join(DEFAULT_KEY_FILE);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let prod = SecretScope::env("prod");
    f.service
        .set(&prod, "db_password", &value("pw-1"), "ada")
        .unwrap();
    let config = Config::parse(CONFIG, "rollgate.toml").unwrap();
    let (again, _) = load_master_key(&config, f.dir.path(), &*f.sqlite).unwrap();
    assert_eq!(
        again.key_id(),
        f.service.key().key_id(),
        "the same key file is read again"
    );
}

#[test]
fn a_wrong_or_missing_master_key_is_refused_and_nothing_is_written() {
    let f = fixture();
    f.service
        .set(
            &SecretScope::env("prod"),
            "db_password",
            &value("pw"),
            "ada",
        )
        .unwrap();
    let stored_id = f.service.key().key_id().to_string();
    let config = Config::parse(CONFIG, "rollgate.toml").unwrap();

    // Another key in the configured file: refused, naming both ids.
    let other = f.dir.path().join("other.key");
    MasterKey::generate().unwrap().write_new(&other).unwrap();
    let mut wrong = config.clone();
    wrong.server.master_key_file = Some(other.clone());
    let err = load_master_key(&wrong, f.dir.path(), &*f.sqlite)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wrong master key") && err.contains(&stored_id),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");

    // The default key file gone: refused, and no new key is made in its place.
    std::fs::remove_file(f.dir.path().join(DEFAULT_KEY_FILE)).unwrap();
    let err = load_master_key(&config, f.dir.path(), &*f.sqlite)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is missing") && err.contains(&stored_id),
        "{err}"
    );
    assert!(!f.dir.path().join(DEFAULT_KEY_FILE).exists());
}

#[test]
fn set_get_list_history_and_delete_never_show_a_value_outside_get() {
    let f = fixture();
    let prod = SecretScope::env("prod");
    let marker = "s3cret-marker-5e1f";
    assert_eq!(
        f.service
            .set(&prod, "db_password", &value(marker), "ada")
            .unwrap(),
        1
    );
    assert_eq!(
        f.service
            .set(&prod, "db_password", &value("second-value-77"), "ada")
            .unwrap(),
        2
    );
    assert_eq!(
        current(&f, &prod, "db_password"),
        (2, "second-value-77".into())
    );
    let (v, old) = f
        .service
        .get(&prod, "db_password", Selector::Stage(Stage::Previous), "t")
        .unwrap();
    assert_eq!((v, old.as_slice()), (1, marker.as_bytes()));

    let listed = serde_json::to_string(&f.service.list(&SecretFilter::default()).unwrap()).unwrap();
    let history = f.service.history(&prod, "db_password").unwrap().to_string();
    let audit = actions(&f).join("\n");
    for shown in [&listed, &history, &audit] {
        assert!(
            !shown.contains(marker) && !shown.contains("second-value"),
            "{shown}"
        );
    }
    assert!(listed.contains("\"value\":\"****\""), "{listed}");
    assert!(history.contains("\"previous\""), "{history}");
    assert!(audit.contains("secret_read db_password v2"), "{audit}");

    f.service.delete(&prod, "db_password", "ada").unwrap();
    assert!(matches!(
        f.service
            .get(&prod, "db_password", Selector::Stage(Stage::Current), "t"),
        Err(SecretsError::Store(StoreError::NotFound(_)))
    ));
    // Unknown environments, apps and bad names are refused before the store is touched.
    for (scope, name) in [
        (SecretScope::env("nope"), "x"),
        (SecretScope::app("prod", "nope"), "x"),
        (prod.clone(), "a/b"),
    ] {
        assert!(f.service.set(&scope, name, &value("v"), "ada").is_err());
    }
    let big = Redacted(vec![b'x'; MAX_VALUE + 1]);
    assert!(matches!(
        f.service.set(&prod, "big", &big, "ada"),
        Err(SecretsError::Invalid(_))
    ));
}

#[test]
fn app_secrets_override_environment_wide_ones_and_missing_ones_are_named() {
    let f = fixture();
    let err = f
        .service
        .check_declared("api", "prod")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("db_password") && err.contains("token") && err.contains("tls"),
        "{err}"
    );
    f.service
        .set(
            &SecretScope::env("prod"),
            "db_password",
            &value("env-wide"),
            "ada",
        )
        .unwrap();
    f.service
        .set(
            &SecretScope::app("prod", "api"),
            "db_password",
            &value("api-own"),
            "ada",
        )
        .unwrap();
    f.service
        .set(&SecretScope::env("prod"), "token", &value("tok"), "ada")
        .unwrap();
    f.service
        .set(
            &SecretScope::env("prod"),
            "tls",
            &value("-----BEGIN-----\n"),
            "ada",
        )
        .unwrap();
    f.service.check_declared("api", "prod").unwrap();
    f.service.check_declared("web", "prod").unwrap();

    let api = &f.controller.config().apps["api"];
    let vars = f.service.inject(api, "prod", 3).unwrap();
    assert_eq!(vars["DB_PASSWORD"].expose(), "api-own");
    assert_eq!(vars["API_TOKEN"].expose(), "tok");
    let dir = PathBuf::from(vars[FILES_ENV].expose());
    assert_eq!(
        std::fs::read_to_string(dir.join("tls.pem")).unwrap(),
        "-----BEGIN-----\n"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("tls.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(format!("{vars:?}").matches("***").count() >= 3);
    assert!(!format!("{vars:?}").contains("api-own"));
    f.service.remove_files("api", "prod", 3);
    assert!(!dir.exists());

    let web = &f.controller.config().apps["web"];
    assert_eq!(
        f.service.inject(web, "prod", 1).unwrap()["DB_PASSWORD"].expose(),
        "env-wide"
    );
}

#[tokio::test]
async fn rotation_promotes_a_tested_value_and_a_failing_hook_or_test_keeps_current() {
    let f = fixture();
    let prod = SecretScope::env("prod");
    f.service
        .set(&prod, "db_password", &value("original"), "ada")
        .unwrap();

    // No hook: refused, nothing changes.
    assert!(matches!(
        f.service
            .rotate(&f.controller, &prod, "db_password", "ada")
            .await,
        Err(SecretsError::Conflict(_))
    ));

    let policy = |hook: &str, test: Option<&str>| Policy {
        every: Duration::from_secs(3600),
        hook: Some(hook.to_string()),
        test: test.map(str::to_string),
    };
    // A hook that fails: current stays, nothing pending.
    f.service
        .set_policy(
            &prod,
            "db_password",
            Some(&policy("echo oops >&2; exit 3", None)),
            "ada",
        )
        .unwrap();
    let out = f
        .service
        .rotate(&f.controller, &prod, "db_password", "ada")
        .await
        .unwrap();
    assert_eq!(out.outcome, "failed");
    assert!(out.reason.as_deref().unwrap().contains("oops"), "{out:?}");
    assert_eq!(current(&f, &prod, "db_password"), (1, "original".into()));

    // A test that rejects the candidate (and prints it): discarded, and not shown.
    f.service
        .set_policy(
            &prod,
            "db_password",
            Some(&policy(
                "echo candidate-$ROLLGATE_SECRET_NAME",
                Some("v=$(cat); echo \"rejected $v\" >&2; exit 1"),
            )),
            "ada",
        )
        .unwrap();
    let out = f
        .service
        .rotate(&f.controller, &prod, "db_password", "ada")
        .await
        .unwrap();
    assert_eq!((out.outcome, out.version), ("failed", Some(2)));
    let reason = out.reason.unwrap();
    assert!(
        reason.contains("rejected ***") && !reason.contains("candidate-"),
        "{reason}"
    );
    assert_eq!(current(&f, &prod, "db_password"), (1, "original".into()));
    let info = f.sqlite.secret_info(&prod, "db_password").unwrap();
    assert_eq!(info.pending, None);

    // A hook whose value passes the test: promoted, the old one is previous.
    f.service
        .set_policy(
            &prod,
            "db_password",
            Some(&policy(
                "echo rotated-$ROLLGATE_SECRET_ENV",
                Some("test \"$(cat)\" = \"rotated-$ROLLGATE_SECRET_ENV\""),
            )),
            "ada",
        )
        .unwrap();
    let out = f
        .service
        .rotate(&f.controller, &prod, "db_password", "ada")
        .await
        .unwrap();
    assert_eq!((out.outcome, out.current), ("rotated", Some(3)), "{out:?}");
    assert!(out.redeploys.is_empty(), "nothing is live");
    assert_eq!(
        current(&f, &prod, "db_password"),
        (3, "rotated-prod".into())
    );
    let info = f.sqlite.secret_info(&prod, "db_password").unwrap();
    assert_eq!((info.previous, info.pending), (Some(1), None));

    let audit = actions(&f).join("\n");
    assert!(
        audit.contains("secret_rotation_failed db_password: hook exited"),
        "{audit}"
    );
    assert!(audit.contains("secret_rotation_discarded"), "{audit}");
    assert!(
        audit.contains("secret_rotate db_password v3 promoted"),
        "{audit}"
    );
    assert!(
        !audit.contains("rotated-prod") && !audit.contains("candidate-db_password"),
        "{audit}"
    );
}

#[tokio::test]
async fn the_scheduler_rotates_due_secrets_and_backs_off_after_a_failure() {
    let f = fixture();
    let prod = SecretScope::env("prod");
    f.service.set(&prod, "token", &value("t0"), "ada").unwrap();
    f.service
        .set(&prod, "db_password", &value("p0"), "ada")
        .unwrap();
    f.service
        .set_policy(
            &prod,
            "token",
            Some(&Policy {
                every: Duration::from_secs(1),
                hook: Some("echo fresh".into()),
                test: None,
            }),
            "ada",
        )
        .unwrap();
    let broken = f.dir.path().join("broken-runs");
    f.service
        .set_policy(
            &prod,
            "db_password",
            Some(&Policy {
                every: Duration::from_secs(1),
                hook: Some(format!("echo x >> '{}'; exit 1", broken.display())),
                test: None,
            }),
            "ada",
        )
        .unwrap();
    // Not yet due.
    f.service.run_due(&f.controller).await;
    assert_eq!(current(&f, &prod, "token"), (1, "t0".into()));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    f.service.run_due(&f.controller).await;
    assert_eq!(current(&f, &prod, "token"), (2, "fresh".into()));
    assert_eq!(current(&f, &prod, "db_password"), (1, "p0".into()));
    // Right after a failure the broken hook is not run again.
    f.service.run_due(&f.controller).await;
    assert_eq!(std::fs::read_to_string(&broken).unwrap().lines().count(), 1);
}

#[test]
fn master_key_rotation_rewraps_everything_and_replaces_the_key_file() {
    let f = fixture();
    let prod = SecretScope::env("prod");
    f.service
        .set(&prod, "db_password", &value("keep-me"), "ada")
        .unwrap();
    f.service
        .set(
            &SecretScope::app("prod", "api"),
            "token",
            &value("t"),
            "ada",
        )
        .unwrap();
    let old_id = f.service.key().key_id().to_string();
    let new_file = f.dir.path().join("new.key");
    let new = MasterKey::generate().unwrap();
    new.write_new(&new_file).unwrap();

    assert!(
        f.service
            .rotate_master_key(Path::new("new.key"), "ada")
            .is_err(),
        "relative path"
    );
    let done = f.service.rotate_master_key(&new_file, "ada").unwrap();
    assert_eq!(done["rewrapped"], 2);
    assert_eq!(done["old_key_id"], old_id.as_str());
    assert_eq!(f.service.key().key_id(), new.key_id());
    assert_eq!(current(&f, &prod, "db_password"), (1, "keep-me".into()));
    // The default key file now holds the new key, so the next start works.
    let config = Config::parse(CONFIG, "rollgate.toml").unwrap();
    let (reloaded, _) = load_master_key(&config, f.dir.path(), &*f.sqlite).unwrap();
    assert_eq!(reloaded.key_id(), new.key_id());
    // Rotating to the key in use is refused.
    assert!(matches!(
        f.service.rotate_master_key(&new_file, "ada"),
        Err(SecretsError::Conflict(_))
    ));
    assert!(
        actions(&f)
            .join("\n")
            .contains("secret_master_key_rotate 2 data keys re-wrapped")
    );
}

#[test]
fn policies_round_trip_through_the_store_column() {
    let p = Policy {
        every: Duration::from_secs(7 * 86400),
        hook: Some("mkpass".into()),
        test: Some("check".into()),
    };
    assert_eq!(Policy::from_store(&p.to_store()), p);
    let hand = RotationPolicy {
        every: Duration::from_secs(60),
        hook: Some("./rotate.sh".into()),
    };
    assert_eq!(
        Policy::from_store(&hand).hook.as_deref(),
        Some("./rotate.sh")
    );
    assert_eq!(serde_json::to_value(&p).unwrap()["every"], "7days");
}

#[test]
fn hook_output_helpers_trim_one_newline_and_scrub_values() {
    assert_eq!(trim_newline(b"v\n".to_vec()), b"v");
    assert_eq!(trim_newline(b"v\r\n".to_vec()), b"v");
    assert_eq!(trim_newline(b"v\n\n".to_vec()), b"v\n");
    assert_eq!(scrub("bad pw123 here", b"pw123"), "bad *** here");
    assert_eq!(scrub("text", b""), "text");
}
