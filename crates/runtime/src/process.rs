//! The process driver, rollgate's embedded default: each instance is a `/bin/sh -c` process
//! group on 127.0.0.1, supervised by one task that owns the child, probes its health,
//! restarts it after a crash and stops it (SIGTERM, then SIGKILL to the whole group).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::instance::{InstanceBackend, InstanceHandle, InstanceState};
use crate::procfs::{self, PidRecord};
use crate::{BoxFuture, Driver, HealthProbe, InstanceSpec, InstanceStatus, RuntimeError};
use crate::{log, probe};

/// How often a stop checks whether the process group is gone.
const GROUP_POLL: Duration = Duration::from_millis(20);
/// How long a stop waits for the group to vanish after SIGKILL before giving up quietly.
const AFTER_KILL_WAIT: Duration = Duration::from_secs(2);
/// Time between TCP checks of an instance without an HTTP probe.
const TCP_POLL: Duration = Duration::from_millis(100);

type Registry = Arc<Mutex<HashMap<String, Arc<ProcessInstance>>>>;

/// Runs instances as local process groups. See the crate docs.
///
/// Every instance started and not yet stopped is tracked, both in memory (for
/// [`ProcessDriver::stop_all`]) and as `<run_dir>/<id>.pid` (for
/// [`ProcessDriver::reap_orphans`] after a crash of the control plane).
pub struct ProcessDriver {
    run_dir: PathBuf,
    instances: Registry,
    generation: AtomicU64,
}

impl std::fmt::Debug for ProcessDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessDriver")
            .field("run_dir", &self.run_dir)
            .finish_non_exhaustive()
    }
}

impl ProcessDriver {
    /// A driver keeping one pid file per running instance in `run_dir` (created if missing),
    /// so that a restarted control plane can find processes left by a crashed one.
    pub fn new(run_dir: PathBuf) -> Result<ProcessDriver, RuntimeError> {
        std::fs::create_dir_all(&run_dir).map_err(|source| RuntimeError::Io {
            action: "creating run dir",
            path: run_dir.clone(),
            source,
        })?;
        Ok(ProcessDriver {
            run_dir,
            instances: Arc::default(),
            generation: AtomicU64::new(0),
        })
    }

    /// The directory holding the pid files.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Kills (SIGKILL) every process group recorded in `run_dir` whose leader still exists
    /// and is the same process (pid and start time from `/proc/<pid>/stat` match), removes
    /// all those pid files, and returns how many groups were killed. A pid now used by a
    /// different process is left alone. Instances started by this driver are skipped.
    /// Call once at control-plane start, before anything else. Blocks for at most ~2s while
    /// the killed groups exit, so that their ports are free when it returns.
    pub fn reap_orphans(&self) -> Result<usize, RuntimeError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| RuntimeError::Io {
                action,
                path,
                source,
            }
        };
        let entries =
            std::fs::read_dir(&self.run_dir).map_err(io("reading run dir", &self.run_dir))?;
        let ours: Vec<String> = self.lock().keys().cloned().collect();
        let mut killed = Vec::new();
        for entry in entries {
            let path = entry.map_err(io("reading run dir", &self.run_dir))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".pid.tmp") {
                // Left by a crash between write and rename; never a complete record.
                procfs::remove_if_exists(&path).map_err(io("removing pid file", &path))?;
                continue;
            }
            let Some(id) = name.strip_suffix(".pid") else {
                continue;
            };
            if ours.iter().any(|o| o == id) {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(io("reading pid file", &path))?;
            match PidRecord::parse(&text) {
                // pid 1 or rollgate's own group can only come from a forged or corrupt file.
                Some(record)
                    if record.is_live()
                        && record.pid > 1
                        && pgid_of(record.pid) != nix::unistd::getpgrp().as_raw() =>
                {
                    let pgid = pgid_of(record.pid);
                    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
                        Ok(()) => {
                            tracing::warn!(instance = id, pid = record.pid, "killed orphan");
                            killed.push(pgid);
                        }
                        Err(Errno::ESRCH) => {}
                        Err(source) => {
                            return Err(RuntimeError::Signal {
                                id: id.to_owned(),
                                pgid,
                                source,
                            });
                        }
                    }
                }
                Some(record) => {
                    tracing::info!(instance = id, pid = record.pid, "stale pid file removed");
                }
                None => tracing::warn!(path = %path.display(), "unreadable pid file removed"),
            }
            procfs::remove_if_exists(&path).map_err(io("removing pid file", &path))?;
        }
        let deadline = Instant::now() + AFTER_KILL_WAIT;
        while killed.iter().any(|pgid| procfs::group_alive(*pgid)) && Instant::now() < deadline {
            std::thread::sleep(GROUP_POLL);
        }
        Ok(killed.len())
    }

    /// Starts one instance and returns at once (it does not wait for health; see
    /// [`InstanceHandle::wait_healthy`]).
    ///
    /// Picks a free loopback port when `spec.port` is `None` (bind 127.0.0.1:0, read the
    /// port, release it), replaces every `${PORT}` in the command, spawns
    /// `/bin/sh -c <command>` as the leader of a new process group with the inherited
    /// environment plus `spec.env` plus `PORT`, stdin null and stdout/stderr appended to
    /// `spec.log_path`, writes `<run_dir>/<id>.pid`, and hands the child to a supervisor task.
    /// Fails when the id is invalid or already running, or the process cannot be spawned.
    pub async fn start(&self, spec: InstanceSpec) -> Result<InstanceHandle, RuntimeError> {
        validate(&spec)?;
        let port = match spec.port {
            Some(port) => port,
            None => free_port()?,
        };
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let launch = Launch {
            id: spec.id.clone(),
            command: spec.command.replace("${PORT}", &port.to_string()),
            workdir: spec.workdir.clone(),
            env: spec.env.clone(),
            port,
            log_path: spec.log_path.clone(),
            pid_file: procfs::pid_file_path(&self.run_dir, &spec.id),
        };

        // Held across the spawn so that two starts of one id cannot both pass the check.
        let mut instances = self.lock();
        if instances.contains_key(&spec.id) {
            return Err(RuntimeError::DuplicateInstance(spec.id));
        }
        let _ = log::write_marker(
            &launch.log_path,
            &format!(
                "starting instance {} on {addr}: {}",
                launch.id, launch.command
            ),
        );
        let running = launch.spawn()?;
        tracing::info!(instance = %launch.id, %addr, pid = running.pgid, "instance started");

        let state = Arc::new(InstanceState::new());
        state.set_pid(Some(running.pid()));
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let instance = Arc::new(ProcessInstance {
            state: Arc::clone(&state),
            log_path: spec.log_path.clone(),
            stop_tx,
            done_rx,
            stop_error: Arc::default(),
            generation,
        });
        instances.insert(spec.id.clone(), Arc::clone(&instance));
        drop(instances);

        let supervisor = Supervisor {
            launch,
            addr,
            stop_grace: spec.stop_grace,
            health: spec.health,
            restart: spec.restart,
            state: Arc::clone(&state),
            stop_rx,
            done_tx,
            stop_error: Arc::clone(&instance.stop_error),
            registry: Arc::clone(&self.instances),
            generation,
        };
        tokio::spawn(supervisor.supervise(running));
        let backend: Arc<dyn InstanceBackend> = instance;
        Ok(InstanceHandle::new(spec.id, addr, state, backend))
    }

    /// Stops every instance this driver started and has not stopped yet, all at once, and
    /// waits until they are gone (each within its `stop_grace`). For server shutdown, so
    /// that no orphans remain.
    pub async fn stop_all(&self) {
        let instances: Vec<Arc<ProcessInstance>> = self.lock().values().cloned().collect();
        for instance in &instances {
            instance.stop_tx.send_replace(true);
        }
        for instance in &instances {
            if let Err(err) = instance.stop_and_wait().await {
                tracing::warn!(error = %err, "stopping instance at shutdown");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ProcessInstance>>> {
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Driver for ProcessDriver {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn reap_orphans(&self) -> BoxFuture<'_, Result<usize, RuntimeError>> {
        Box::pin(async move { ProcessDriver::reap_orphans(self) })
    }

    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<InstanceHandle, RuntimeError>> {
        Box::pin(ProcessDriver::start(self, spec))
    }

    fn stop_all(&self) -> BoxFuture<'_, ()> {
        Box::pin(ProcessDriver::stop_all(self))
    }
}

fn validate(spec: &InstanceSpec) -> Result<(), RuntimeError> {
    let id_ok = !spec.id.is_empty()
        && spec.id.len() <= 200
        && !spec.id.starts_with('.')
        && spec
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !id_ok {
        return Err(RuntimeError::InvalidSpec(format!(
            "id {:?} must be 1-200 ASCII letters, digits, '.', '_' or '-', not starting with '.'",
            spec.id
        )));
    }
    if spec.command.trim().is_empty() {
        return Err(RuntimeError::InvalidSpec(format!(
            "instance {}: empty command",
            spec.id
        )));
    }
    if let Some(probe) = &spec.health
        && !probe.path.starts_with('/')
    {
        return Err(RuntimeError::InvalidSpec(format!(
            "instance {}: health path {:?} must start with '/'",
            spec.id, probe.path
        )));
    }
    Ok(())
}

fn free_port() -> Result<u16, RuntimeError> {
    // Another process may take the port between release and the child's bind; that race
    // is accepted, since the alternative (passing a bound socket) needs the app's help.
    let listener =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(RuntimeError::NoPort)?;
    Ok(listener.local_addr().map_err(RuntimeError::NoPort)?.port())
}

/// The group of a pid-file process: instances lead their own group, so it is the pid.
fn pgid_of(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

/// Everything needed to (re)spawn the process.
struct Launch {
    id: String,
    command: String,
    workdir: PathBuf,
    env: BTreeMap<String, String>,
    port: u16,
    log_path: PathBuf,
    pid_file: PathBuf,
}

impl Launch {
    fn spawn(&self) -> Result<Running, RuntimeError> {
        let io = |action| {
            let path = self.log_path.clone();
            move |source| RuntimeError::Io {
                action,
                path,
                source,
            }
        };
        let stdout = log::open_append(&self.log_path).map_err(io("opening log"))?;
        let stderr = stdout.try_clone().map_err(io("opening log"))?;
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(&self.command)
            .current_dir(&self.workdir)
            .envs(&self.env)
            .env("PORT", self.port.to_string())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            // A fallback only: the supervisor's GroupGuard kills the whole group.
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| RuntimeError::Spawn {
            id: self.id.clone(),
            source,
        })?;
        // Only a child that was already reaped has no id, and nothing has waited on it yet;
        // a pgid of 0 would make every later killpg hit rollgate's own group.
        let Some(pid) = child
            .id()
            .filter(|pid| *pid > 0 && i32::try_from(*pid).is_ok())
        else {
            return Err(RuntimeError::Spawn {
                id: self.id.clone(),
                source: std::io::Error::other("spawned process has no pid"),
            });
        };
        let running = Running {
            child,
            pgid: pgid_of(pid),
            guard: GroupGuard {
                pgid: pgid_of(pid),
                armed: true,
            },
        };
        // The child cannot have been reaped yet, so /proc/<pid> exists even if it exited.
        let record = PidRecord::of(pid).unwrap_or(PidRecord {
            pid,
            start_ticks: 0,
        });
        if let Err(source) = record.write(&self.pid_file) {
            // Dropping `running` kills the group: an untracked process is what we must avoid.
            drop(running);
            return Err(RuntimeError::Io {
                action: "writing pid file",
                path: self.pid_file.clone(),
                source,
            });
        }
        Ok(running)
    }
}

/// A spawned process group.
struct Running {
    child: Child,
    pgid: i32,
    guard: GroupGuard,
}

impl Running {
    fn pid(&self) -> u32 {
        u32::try_from(self.pgid).unwrap_or(0)
    }
}

/// SIGKILLs the process group when dropped while armed, e.g. when the runtime shuts down
/// with the supervisor task still running. `kill_on_drop` alone would miss grandchildren.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed && self.pgid > 0 {
            let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        }
    }
}

/// The shared half of a process instance: what handles and the driver use to reach the
/// supervisor task.
struct ProcessInstance {
    state: Arc<InstanceState>,
    log_path: PathBuf,
    stop_tx: watch::Sender<bool>,
    done_rx: watch::Receiver<bool>,
    stop_error: Arc<Mutex<Option<RuntimeError>>>,
    generation: u64,
}

impl ProcessInstance {
    async fn stop_and_wait(&self) -> Result<(), RuntimeError> {
        self.stop_tx.send_replace(true);
        let mut done = self.done_rx.clone();
        // An error means the supervisor is gone (runtime shutdown), which is "done" too.
        let _ = done.wait_for(|done| *done).await;
        // An instance that had exited on its own is now stopped for good as well.
        self.state.set_status(InstanceStatus::Stopped);
        match self
            .stop_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

impl InstanceBackend for ProcessInstance {
    fn stop(&self) -> BoxFuture<'_, Result<(), RuntimeError>> {
        Box::pin(self.stop_and_wait())
    }

    fn release(&self) {
        self.stop_tx.send_replace(true);
    }

    fn log_tail(&self, max_lines: usize, max_bytes: usize) -> String {
        log::tail_for_error(&self.log_path, max_lines, max_bytes)
    }
}

/// How one run of the process ended.
enum Watched {
    StopRequested,
    Exited(String),
}

/// The task that owns one instance's child process for its whole life.
struct Supervisor {
    launch: Launch,
    addr: SocketAddr,
    stop_grace: Duration,
    health: Option<HealthProbe>,
    restart: crate::RestartPolicy,
    state: Arc<InstanceState>,
    stop_rx: watch::Receiver<bool>,
    done_tx: watch::Sender<bool>,
    stop_error: Arc<Mutex<Option<RuntimeError>>>,
    registry: Registry,
    generation: u64,
}

impl Supervisor {
    async fn supervise(mut self, mut running: Running) {
        let policy = self.restart.clone();
        let mut backoff = policy.initial_backoff;
        loop {
            let started = Instant::now();
            let mut exit = match self.watch(running).await {
                Watched::StopRequested => return self.finish(InstanceStatus::Stopped),
                Watched::Exited(exit) => exit,
            };
            tracing::warn!(instance = %self.launch.id, %exit, "instance exited");
            if !policy.enabled {
                self.marker(&format!("instance exited ({exit}), restarts disabled"));
                self.state.record_exit(exit.clone());
                return self.finish(InstanceStatus::Exited { exit });
            }
            if started.elapsed() >= policy.reset_after {
                backoff = policy.initial_backoff;
            }
            running = loop {
                let restarts = self.state.add_restart();
                self.marker(&format!(
                    "instance exited ({exit}), restarting in {}",
                    human(backoff)
                ));
                self.state.record_exit(exit.clone());
                self.state.set_status(InstanceStatus::Restarting {
                    exit: exit.clone(),
                    restarts,
                    next_in_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                });
                let stop = tokio::select! {
                    () = tokio::time::sleep(backoff) => false,
                    () = stop_requested(&mut self.stop_rx) => true,
                };
                if stop {
                    return self.finish(InstanceStatus::Stopped);
                }
                backoff = backoff.saturating_mul(2).min(policy.max_backoff);
                match self.launch.spawn() {
                    Ok(running) => break running,
                    Err(err) => exit = format!("restart failed: {err}"),
                }
            };
            tracing::info!(instance = %self.launch.id, pid = running.pgid, "instance restarted");
            self.state.set_pid(Some(running.pid()));
            self.state.set_status(InstanceStatus::Starting);
        }
    }

    /// Runs the health checks while waiting for the process to exit or for a stop request.
    async fn watch(&mut self, mut running: Running) -> Watched {
        let exited = {
            let health = health_loop(&self.state, self.addr, self.health.as_ref());
            tokio::select! {
                status = running.child.wait() => Some(status),
                () = stop_requested(&mut self.stop_rx) => None,
                () = health => None,
            }
        };
        match exited {
            None => {
                if let Err(err) = self.terminate(running).await {
                    *self
                        .stop_error
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(err);
                }
                Watched::StopRequested
            }
            Some(status) => {
                // Children the leader left behind could keep the port from the restart.
                let _ = killpg(Pid::from_raw(running.pgid), Signal::SIGKILL);
                running.guard.armed = false;
                self.state.set_pid(None);
                self.remove_pid_file();
                Watched::Exited(describe(status))
            }
        }
    }

    /// SIGTERM to the group; SIGKILL to the group once `stop_grace` has passed and anything
    /// in it is still alive; then waits for the group to be gone.
    async fn terminate(&self, mut running: Running) -> Result<(), RuntimeError> {
        let pgid = Pid::from_raw(running.pgid);
        let grace_end = tokio::time::Instant::now() + self.stop_grace;
        let mut result = match killpg(pgid, Signal::SIGTERM) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(source) => Err(RuntimeError::Signal {
                id: self.launch.id.clone(),
                pgid: running.pgid,
                source,
            }),
        };
        let leader_exited = tokio::time::timeout_at(grace_end, running.child.wait())
            .await
            .is_ok();
        if leader_exited {
            while procfs::group_alive(running.pgid) && tokio::time::Instant::now() < grace_end {
                tokio::time::sleep(GROUP_POLL).await;
            }
        }
        if !leader_exited || procfs::group_alive(running.pgid) {
            tracing::warn!(instance = %self.launch.id, "stop grace passed, sending SIGKILL");
            if let Err(source) = killpg(pgid, Signal::SIGKILL)
                && source != Errno::ESRCH
                && result.is_ok()
            {
                result = Err(RuntimeError::Signal {
                    id: self.launch.id.clone(),
                    pgid: running.pgid,
                    source,
                });
            }
            let _ = running.child.wait().await;
            let deadline = Instant::now() + AFTER_KILL_WAIT;
            while procfs::group_alive(running.pgid) && Instant::now() < deadline {
                tokio::time::sleep(GROUP_POLL).await;
            }
        }
        running.guard.armed = false;
        result
    }

    fn finish(self, status: InstanceStatus) {
        self.remove_pid_file();
        self.state.set_pid(None);
        self.state.set_status(status);
        {
            let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            if registry
                .get(&self.launch.id)
                .is_some_and(|i| i.generation == self.generation)
            {
                registry.remove(&self.launch.id);
            }
        }
        tracing::info!(instance = %self.launch.id, "instance supervision ended");
        self.done_tx.send_replace(true);
    }

    fn remove_pid_file(&self) {
        if let Err(err) = procfs::remove_if_exists(&self.launch.pid_file) {
            tracing::warn!(path = %self.launch.pid_file.display(), error = %err, "cannot remove pid file");
        }
    }

    fn marker(&self, message: &str) {
        if let Err(err) = log::write_marker(&self.launch.log_path, message) {
            tracing::warn!(path = %self.launch.log_path.display(), error = %err, "cannot write log marker");
        }
    }
}

async fn stop_requested(stop_rx: &mut watch::Receiver<bool>) {
    // A closed channel means every owner is gone, which is a request to stop as well.
    let _ = stop_rx.wait_for(|stop| *stop).await;
}

/// Drives the status from health checks; never returns.
async fn health_loop(state: &InstanceState, addr: SocketAddr, probe: Option<&HealthProbe>) {
    let Some(probe) = probe else {
        loop {
            match probe::tcp(addr, Duration::from_secs(1)).await {
                Ok(()) => {
                    state.set_last_probe("port accepts connections".to_owned());
                    state.set_status(InstanceStatus::Healthy);
                    return std::future::pending().await;
                }
                Err(reason) => state.set_last_probe(reason),
            }
            tokio::time::sleep(TCP_POLL).await;
        }
    };
    let healthy_threshold = probe.healthy_threshold.max(1);
    let unhealthy_threshold = probe.unhealthy_threshold.max(1);
    let mut ticker = tokio::time::interval(probe.interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut passes, mut failures) = (0u32, 0u32);
    loop {
        ticker.tick().await;
        let current = state.status();
        match probe::http(addr, &probe.path, probe.timeout).await {
            Ok(()) => {
                state.set_last_probe("passed".to_owned());
                passes = passes.saturating_add(1);
                failures = 0;
                if passes >= healthy_threshold && current != InstanceStatus::Healthy {
                    state.set_status(InstanceStatus::Healthy);
                }
            }
            Err(reason) => {
                state.set_last_probe(reason.clone());
                failures = failures.saturating_add(1);
                passes = 0;
                let was_up = matches!(
                    current,
                    InstanceStatus::Healthy | InstanceStatus::Unhealthy { .. }
                );
                if was_up && failures >= unhealthy_threshold {
                    state.set_status(InstanceStatus::Unhealthy { reason });
                }
            }
        }
    }
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(err) => format!("wait failed: {err}"),
    }
}

fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}
