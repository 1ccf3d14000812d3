//! The process driver against real processes: `sh -c` one-liners and `python3 -m
//! http.server` on 127.0.0.1 ports chosen by the OS.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rollgate_runtime::{
    Driver, HealthProbe, InstanceHandle, InstanceSpec, InstanceStatus, ProcessDriver,
    RestartPolicy, RuntimeError, log_tail,
};
use tokio::net::TcpStream;

/// Generous: tests never assert on speed, only on outcomes.
const PATIENCE: Duration = Duration::from_secs(30);
const PYTHON_SERVER: &str = "exec python3 -m http.server ${PORT} --bind 127.0.0.1";

struct Fixture {
    dir: tempfile::TempDir,
    driver: ProcessDriver,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let driver = ProcessDriver::new(dir.path().join("run")).unwrap();
        Fixture { dir, driver }
    }

    fn workdir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn spec(&self, id: &str, command: &str) -> InstanceSpec {
        let mut spec = InstanceSpec::new(
            id,
            command,
            self.workdir(),
            self.dir.path().join("logs").join(format!("{id}.log")),
        );
        spec.restart = RestartPolicy::disabled();
        spec.stop_grace = Duration::from_secs(5);
        spec
    }

    fn pid_file(&self, id: &str) -> PathBuf {
        self.driver.run_dir().join(format!("{id}.pid"))
    }
}

fn fast_probe(path: &str) -> HealthProbe {
    HealthProbe {
        path: path.to_owned(),
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        healthy_threshold: 1,
        unhealthy_threshold: 2,
    }
}

/// True while `pid` is a process that has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..].trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_status(
    handle: &InstanceHandle,
    what: &str,
    check: impl Fn(&InstanceStatus) -> bool,
) {
    let mut rx = handle.subscribe();
    tokio::time::timeout(PATIENCE, rx.wait_for(|s| check(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}; status {:?}", handle.status()))
        .unwrap();
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits for a line of process output starting with `prefix` (rollgate's start marker quotes
/// the command, so a plain substring would match too early).
async fn wait_for_log(path: &Path, prefix: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = log_text(path);
        if text.lines().any(|line| line.starts_with(prefix)) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "log never had a line {prefix:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn http_status(addr: SocketAddr, path: &str) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender
        .send_request(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The pid logged by `echo NAME=$!` in a test command.
fn logged_pid(log: &str, name: &str) -> u32 {
    let prefix = format!("{name}=");
    log.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn start_healthy_serve_then_stop_leaves_no_process_and_no_pid_file() {
    let fx = Fixture::new();
    std::fs::write(fx.dir.path().join("hello.txt"), "hi").unwrap();
    let mut spec = fx.spec("web.dev.v1.0", PYTHON_SERVER);
    spec.health = Some(fast_probe("/hello.txt"));
    let handle = fx.driver.start(spec).await.unwrap();

    handle.wait_healthy(PATIENCE).await.unwrap();
    assert_eq!(handle.status(), InstanceStatus::Healthy);
    assert_eq!(handle.id(), "web.dev.v1.0");
    assert!(handle.addr().ip().is_loopback());
    assert_eq!(http_status(handle.addr(), "/hello.txt").await, 200);

    let pid = handle.pid().unwrap();
    let record = std::fs::read_to_string(fx.pid_file("web.dev.v1.0")).unwrap();
    assert_eq!(
        record.split_whitespace().next(),
        Some(pid.to_string().as_str())
    );
    assert!(alive(pid));

    handle.stop().await.unwrap();
    assert!(!alive(pid));
    assert!(!fx.pid_file("web.dev.v1.0").exists());
    assert_eq!(handle.status(), InstanceStatus::Stopped);
    assert_eq!(handle.pid(), None);
    // Idempotent.
    handle.stop().await.unwrap();
    assert_eq!(handle.status(), InstanceStatus::Stopped);
}

#[tokio::test]
async fn port_and_environment_reach_the_command() {
    let fx = Fixture::new();
    let mut spec = fx.spec(
        "env",
        "echo arg=${PORT} env=$PORT greeting=$GREETING cwd=$(pwd); exec sleep 1000",
    );
    spec.env.insert("GREETING".into(), "hello".into());
    spec.port = Some(free_port());
    let log_path = spec.log_path.clone();
    let handle = fx.driver.start(spec).await.unwrap();
    let port = handle.addr().port();
    let log = wait_for_log(&log_path, "arg=").await;
    assert!(
        log.contains(&format!("arg={port} env={port} greeting=hello")),
        "{log}"
    );
    assert!(
        log.contains(&format!("cwd={}", fx.dir.path().display())),
        "{log}"
    );
    handle.stop().await.unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn process_ignoring_sigterm_is_killed_after_grace() {
    let fx = Fixture::new();
    let mut spec = fx.spec(
        "stubborn",
        "trap '' TERM; echo ready; while true; do sleep 0.1; done",
    );
    spec.stop_grace = Duration::from_millis(500);
    let log_path = spec.log_path.clone();
    let handle = fx.driver.start(spec).await.unwrap();
    wait_for_log(&log_path, "ready").await;
    let pid = handle.pid().unwrap();

    let began = Instant::now();
    handle.stop().await.unwrap();
    // It had to wait out the grace: SIGTERM alone did nothing.
    assert!(began.elapsed() >= Duration::from_millis(500));
    assert!(!alive(pid));
    assert_eq!(handle.status(), InstanceStatus::Stopped);
}

#[tokio::test]
async fn stop_kills_the_whole_process_group() {
    let fx = Fixture::new();
    let spec = fx.spec(
        "family",
        "sh -c 'trap \"\" TERM; sleep 1000' & echo grandchild=$!; sleep 1000 & echo child=$!; wait",
    );
    let log_path = spec.log_path.clone();
    let mut spec = spec;
    spec.stop_grace = Duration::from_millis(300);
    let handle = fx.driver.start(spec).await.unwrap();
    let log = wait_for_log(&log_path, "child=").await;
    let (grandchild, child) = (logged_pid(&log, "grandchild"), logged_pid(&log, "child"));
    let leader = handle.pid().unwrap();
    assert!(alive(grandchild) && alive(child) && alive(leader));

    handle.stop().await.unwrap();
    assert!(!alive(leader), "leader survived");
    assert!(!alive(child), "child survived");
    assert!(
        !alive(grandchild),
        "grandchild that ignores SIGTERM survived"
    );
}

#[tokio::test]
async fn leader_exit_takes_its_group_down_and_reports_exited() {
    let fx = Fixture::new();
    let spec = fx.spec("leaver", "sleep 1000 & echo child=$!; sleep 0.2; exit 4");
    let log_path = spec.log_path.clone();
    let handle = fx.driver.start(spec).await.unwrap();
    wait_for_status(&handle, "exit", |s| {
        matches!(s, InstanceStatus::Exited { .. })
    })
    .await;
    let InstanceStatus::Exited { exit } = handle.status() else {
        unreachable!()
    };
    assert!(exit.contains('4'), "{exit}");
    let child = logged_pid(&log_text(&log_path), "child");
    eventually("orphaned child to die", || !alive(child)).await;
    assert!(!fx.pid_file("leaver").exists());
    handle.stop().await.unwrap();
    assert_eq!(handle.status(), InstanceStatus::Stopped);
}

#[tokio::test]
async fn crash_restarts_on_the_same_port_and_marks_the_log() {
    let fx = Fixture::new();
    // The first run crashes; the second serves.
    let mut spec = fx.spec(
        "phoenix",
        &format!("if [ -f crashed ]; then {PYTHON_SERVER}; else touch crashed; echo crashing now; exit 1; fi"),
    );
    spec.restart = RestartPolicy {
        enabled: true,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        reset_after: Duration::from_secs(60),
    };
    spec.health = Some(fast_probe("/"));
    let log_path = spec.log_path.clone();
    let handle = fx.driver.start(spec).await.unwrap();
    let addr = handle.addr();

    wait_for_status(&handle, "healthy after restart", |s| {
        *s == InstanceStatus::Healthy
    })
    .await;
    assert_eq!(handle.restarts(), 1);
    assert_eq!(handle.addr(), addr);
    assert_eq!(http_status(addr, "/").await, 200);
    let pid = handle.pid().unwrap();
    let record = std::fs::read_to_string(fx.pid_file("phoenix")).unwrap();
    assert!(
        record.starts_with(&format!("{pid} ")),
        "pid file not rewritten: {record}"
    );

    let log = log_text(&log_path);
    assert!(log.contains("crashing now"), "{log}");
    assert!(
        log.contains("--- rollgate: instance exited (exit status: 1), restarting in 200ms ---"),
        "{log}"
    );
    handle.stop().await.unwrap();
    assert!(!alive(pid));
}

#[tokio::test]
async fn restarting_status_reports_exit_count_and_backoff_then_doubles() {
    let fx = Fixture::new();
    let mut spec = fx.spec("flapper", "echo run; exit 9");
    spec.restart = RestartPolicy {
        enabled: true,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        reset_after: Duration::from_secs(60),
    };
    let handle = fx.driver.start(spec).await.unwrap();
    let mut rx = handle.subscribe();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        tokio::time::timeout(PATIENCE, rx.changed())
            .await
            .unwrap()
            .unwrap();
        if let InstanceStatus::Restarting {
            exit,
            restarts,
            next_in_ms,
        } = rx.borrow_and_update().clone()
        {
            assert!(exit.contains('9'), "{exit}");
            seen.push((restarts, next_in_ms));
        }
    }
    // A watch may skip a state, so check the shape rather than every step.
    for pair in seen.windows(2) {
        assert!(pair[1].0 > pair[0].0);
        assert!(pair[1].1 >= pair[0].1);
    }
    assert!(seen.iter().all(|(_, ms)| *ms <= 400));
    assert!(seen.iter().any(|(_, ms)| *ms == 400));
    handle.stop().await.unwrap();
    assert_eq!(handle.status(), InstanceStatus::Stopped);
}

#[tokio::test]
async fn wait_healthy_fails_fast_with_exit_status_and_log_tail() {
    for restart in [
        RestartPolicy::disabled(),
        RestartPolicy {
            // Long enough that the test never sees the restart.
            initial_backoff: Duration::from_secs(600),
            ..RestartPolicy::default()
        },
    ] {
        let fx = Fixture::new();
        let mut spec = fx.spec("doomed", "echo booting; echo missing config >&2; exit 7");
        spec.health = Some(fast_probe("/health"));
        spec.restart = restart;
        let handle = fx.driver.start(spec).await.unwrap();
        let began = Instant::now();
        let err = handle
            .wait_healthy(Duration::from_secs(600))
            .await
            .unwrap_err();
        assert!(began.elapsed() < Duration::from_secs(600));
        match &err {
            RuntimeError::ExitedBeforeHealthy { id, exit, log_tail } => {
                assert_eq!(id, "doomed");
                assert!(exit.contains('7'), "{exit}");
                assert!(log_tail.contains("booting"), "{log_tail}");
                assert!(log_tail.contains("missing config"), "{log_tail}");
            }
            other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("missing config"));
        handle.stop().await.unwrap();
    }
}

#[tokio::test]
async fn wait_healthy_fails_at_the_deadline_naming_the_last_probe() {
    let fx = Fixture::new();
    let mut spec = fx.spec("mute", "exec sleep 1000");
    spec.health = Some(fast_probe("/health"));
    let handle = fx.driver.start(spec).await.unwrap();
    let err = handle
        .wait_healthy(Duration::from_secs(1))
        .await
        .unwrap_err();
    match &err {
        RuntimeError::HealthTimeout { last_probe, .. } => {
            assert!(last_probe.contains("connection refused"), "{last_probe}");
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(handle.status(), InstanceStatus::Starting);
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_probe_healthy_means_the_port_accepts_connections() {
    let fx = Fixture::new();
    let handle = fx
        .driver
        .start(fx.spec(
            "plain",
            "sleep 0.5; exec python3 -m http.server ${PORT} --bind 127.0.0.1",
        ))
        .await
        .unwrap();
    handle.wait_healthy(PATIENCE).await.unwrap();
    assert!(TcpStream::connect(handle.addr()).await.is_ok());
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn failing_probe_flips_unhealthy_and_back() {
    let fx = Fixture::new();
    let health_file = fx.dir.path().join("health.txt");
    std::fs::write(&health_file, "ok").unwrap();
    let mut spec = fx.spec("flaky", PYTHON_SERVER);
    spec.health = Some(fast_probe("/health.txt"));
    let handle = fx.driver.start(spec).await.unwrap();
    handle.wait_healthy(PATIENCE).await.unwrap();

    std::fs::remove_file(&health_file).unwrap();
    wait_for_status(&handle, "unhealthy", |s| {
        matches!(s, InstanceStatus::Unhealthy { .. })
    })
    .await;
    assert_eq!(
        handle.status(),
        InstanceStatus::Unhealthy {
            reason: "status 404".into()
        }
    );
    assert_eq!(handle.last_probe(), "status 404");

    std::fs::write(&health_file, "ok").unwrap();
    wait_for_status(&handle, "healthy again", |s| *s == InstanceStatus::Healthy).await;
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn reap_orphans_kills_recorded_processes_and_spares_reused_pids() {
    let fx = Fixture::new();
    let run_dir = fx.driver.run_dir().to_path_buf();
    let spawn_group = || {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let start_ticks = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap()
    };
    // Left by a crashed control plane: same pid, same start time.
    let mut orphan = spawn_group();
    std::fs::write(
        run_dir.join("api.prod.v1.0.pid"),
        format!("{} {}\n", orphan.id(), start_ticks(orphan.id())),
    )
    .unwrap();
    // Same pid but a different start time: the pid now belongs to someone else.
    let mut bystander = spawn_group();
    std::fs::write(
        run_dir.join("api.prod.v2.0.pid"),
        format!("{} {}\n", bystander.id(), start_ticks(bystander.id()) + 1),
    )
    .unwrap();
    std::fs::write(run_dir.join("garbage.pid"), "not a pid").unwrap();

    assert_eq!(fx.driver.reap_orphans().unwrap(), 1);
    let status = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(status) = orphan.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    assert!(!status.success());
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "a reused pid was killed"
    );
    assert_eq!(std::fs::read_dir(&run_dir).unwrap().count(), 0);

    bystander.kill().unwrap();
    bystander.wait().unwrap();
    // Nothing left to reap the second time.
    assert_eq!(fx.driver.reap_orphans().unwrap(), 0);
}

#[tokio::test]
async fn reap_orphans_through_the_driver_trait_spares_own_instances() {
    let fx = Fixture::new();
    let handle = fx
        .driver
        .start(fx.spec("mine", "exec sleep 1000"))
        .await
        .unwrap();
    let pid = handle.pid().unwrap();
    let driver: &dyn Driver = &fx.driver;
    assert_eq!(driver.kind(), "process");
    assert_eq!(driver.reap_orphans().await.unwrap(), 0);
    assert!(alive(pid));
    assert!(fx.pid_file("mine").exists());
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn stop_all_stops_every_instance() {
    let fx = Fixture::new();
    let driver: Arc<dyn Driver> = Arc::new(ProcessDriver::new(fx.dir.path().join("run2")).unwrap());
    let a = driver.start(fx.spec("a", "exec sleep 1000")).await.unwrap();
    let b = driver
        .start(fx.spec("b", "sleep 1000 & wait"))
        .await
        .unwrap();
    let pids = [a.pid().unwrap(), b.pid().unwrap()];
    driver.stop_all().await;
    assert!(pids.iter().all(|pid| !alive(*pid)));
    assert_eq!(a.status(), InstanceStatus::Stopped);
    assert_eq!(b.status(), InstanceStatus::Stopped);
    // The ids are free again.
    let again = driver.start(fx.spec("a", "exec sleep 1000")).await.unwrap();
    again.stop().await.unwrap();
}

#[tokio::test]
async fn dropping_every_handle_stops_the_instance() {
    let fx = Fixture::new();
    let handle = fx
        .driver
        .start(fx.spec("forgotten", "exec sleep 1000"))
        .await
        .unwrap();
    let pid = handle.pid().unwrap();
    let clone = handle.clone();
    drop(handle);
    assert!(alive(pid), "a remaining clone must keep the instance");
    drop(clone);
    eventually("the dropped instance to stop", || !alive(pid)).await;
    eventually("its pid file to go", || !fx.pid_file("forgotten").exists()).await;
}

#[tokio::test]
async fn duplicate_and_invalid_ids_are_rejected() {
    let fx = Fixture::new();
    let handle = fx
        .driver
        .start(fx.spec("one", "exec sleep 1000"))
        .await
        .unwrap();
    let err = fx
        .driver
        .start(fx.spec("one", "exec sleep 1000"))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::DuplicateInstance(_)), "{err}");
    for bad in ["", "../escape", ".hidden", "a/b", "with space"] {
        let err = fx.driver.start(fx.spec(bad, "true")).await.unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidSpec(_)), "{bad}: {err}");
    }
    handle.stop().await.unwrap();
}

#[tokio::test]
async fn log_tail_reads_the_instance_log() {
    let fx = Fixture::new();
    let spec = fx.spec(
        "talker",
        "for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2",
    );
    let log_path = spec.log_path.clone();
    let handle = fx.driver.start(spec).await.unwrap();
    wait_for_status(&handle, "exit", |s| {
        matches!(s, InstanceStatus::Exited { .. })
    })
    .await;
    let tail = log_tail(&log_path, 3).unwrap();
    assert_eq!(tail[..2], ["line 5", "oops"]);
    assert!(
        tail[2].starts_with("--- rollgate: instance exited"),
        "{tail:?}"
    );
}
