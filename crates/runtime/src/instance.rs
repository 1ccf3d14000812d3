//! The driver-neutral face of a running instance: its observable state and the handle the
//! control plane holds. A driver constructs both; the handle never knows which driver.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::{BoxFuture, InstanceStatus, RuntimeError};

/// How many log lines, and about how many bytes, an exit-before-healthy error quotes.
const ERROR_TAIL_LINES: usize = 20;
const ERROR_TAIL_BYTES: usize = 2048;

/// What a driver reports about one instance; shared by the driver's supervisor and every
/// [`InstanceHandle`]. Starts as [`InstanceStatus::Starting`] with no pid.
pub struct InstanceState {
    status: watch::Sender<InstanceStatus>,
    pid: AtomicU32,
    restarts: AtomicU32,
    exits: AtomicU32,
    last_exit: Mutex<Option<String>>,
    last_probe: Mutex<String>,
}

impl Default for InstanceState {
    fn default() -> Self {
        InstanceState::new()
    }
}

impl InstanceState {
    /// A fresh state: `Starting`, no pid, no restarts, no probe yet.
    pub fn new() -> InstanceState {
        InstanceState {
            status: watch::Sender::new(InstanceStatus::Starting),
            pid: AtomicU32::new(0),
            restarts: AtomicU32::new(0),
            exits: AtomicU32::new(0),
            last_exit: Mutex::new(None),
            last_probe: Mutex::new("no probe has run yet".to_owned()),
        }
    }

    /// The current status.
    pub fn status(&self) -> InstanceStatus {
        self.status.borrow().clone()
    }

    /// Publishes a status; subscribers are woken only when it differs from the current one.
    pub fn set_status(&self, status: InstanceStatus) {
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            *current = status;
            changed
        });
    }

    /// A receiver of status changes.
    pub fn subscribe(&self) -> watch::Receiver<InstanceStatus> {
        self.status.subscribe()
    }

    /// The current process id, if a process is running.
    pub fn pid(&self) -> Option<u32> {
        match self.pid.load(Ordering::Acquire) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Records the current process id (`None` while restarting or stopped).
    pub fn set_pid(&self, pid: Option<u32>) {
        self.pid.store(pid.unwrap_or(0), Ordering::Release);
    }

    /// How many times the instance has been restarted.
    pub fn restarts(&self) -> u32 {
        self.restarts.load(Ordering::Acquire)
    }

    /// Counts one more restart and returns the new count.
    pub fn add_restart(&self) -> u32 {
        self.restarts.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Records that the process exited on its own, with how (e.g. "exit status: 7").
    /// Call before publishing the status that follows the exit, so that waiters woken by the
    /// status see the exit.
    pub fn record_exit(&self, exit: String) {
        *self
            .last_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(exit);
        self.exits.fetch_add(1, Ordering::AcqRel);
    }

    /// How the process last exited on its own, if it ever did.
    pub fn last_exit(&self) -> Option<String> {
        self.last_exit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn exits(&self) -> u32 {
        self.exits.load(Ordering::Acquire)
    }

    /// Records what the last health probe saw ("passed", "status 503", "connection refused").
    pub fn set_last_probe(&self, seen: String) {
        *self
            .last_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = seen;
    }

    /// What the last health probe saw.
    pub fn last_probe(&self) -> String {
        self.last_probe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The driver-specific half of an instance, behind [`InstanceHandle`].
pub trait InstanceBackend: Send + Sync {
    /// Stops the instance for good and waits until it is gone; idempotent.
    fn stop(&self) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// Called when the last handle is dropped: begin stopping in the background, so that a
    /// forgotten instance does not run forever. Must not block.
    fn release(&self);

    /// The last lines of the instance's output, for error messages: at most `max_lines`
    /// lines and about `max_bytes` bytes.
    fn log_tail(&self, max_lines: usize, max_bytes: usize) -> String;
}

/// A running instance, as the control plane sees it. Cheap to clone; when the last clone is
/// dropped the instance is stopped in the background (call [`InstanceHandle::stop`] to stop
/// it and wait).
#[derive(Clone)]
pub struct InstanceHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    id: String,
    addr: SocketAddr,
    state: Arc<InstanceState>,
    backend: Arc<dyn InstanceBackend>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        self.backend.release();
    }
}

impl std::fmt::Debug for InstanceHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceHandle")
            .field("id", &self.inner.id)
            .field("addr", &self.inner.addr)
            .field("pid", &self.pid())
            .field("status", &self.status())
            .finish()
    }
}

impl InstanceHandle {
    /// Builds a handle; for drivers.
    pub fn new(
        id: String,
        addr: SocketAddr,
        state: Arc<InstanceState>,
        backend: Arc<dyn InstanceBackend>,
    ) -> InstanceHandle {
        InstanceHandle {
            inner: Arc::new(HandleInner {
                id,
                addr,
                state,
                backend,
            }),
        }
    }

    /// The instance id from its spec.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Where the instance listens: `127.0.0.1:port` for the process driver. Stable across
    /// restarts.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// The current process id; `None` while restarting or stopped.
    pub fn pid(&self) -> Option<u32> {
        self.inner.state.pid()
    }

    /// How many times the instance has been restarted after crashing.
    pub fn restarts(&self) -> u32 {
        self.inner.state.restarts()
    }

    /// The current status.
    pub fn status(&self) -> InstanceStatus {
        self.inner.state.status()
    }

    /// A receiver of status changes (the current status is marked seen).
    pub fn subscribe(&self) -> watch::Receiver<InstanceStatus> {
        self.inner.state.subscribe()
    }

    /// What the last health probe saw.
    pub fn last_probe(&self) -> String {
        self.inner.state.last_probe()
    }

    /// Waits until the instance is `Healthy`.
    ///
    /// Fails fast with [`RuntimeError::ExitedBeforeHealthy`] (exit status and the last ~20
    /// lines / 2 KB of the log) when the process exits during the wait, or is already
    /// restarting or exited when called: a release whose process cannot start should fail,
    /// not be waited on through restarts. Fails with [`RuntimeError::HealthTimeout`] (naming
    /// what the last probe saw) after `deadline`, and with [`RuntimeError::Stopped`] when the
    /// instance is stopped meanwhile.
    pub async fn wait_healthy(&self, deadline: Duration) -> Result<(), RuntimeError> {
        let state = &self.inner.state;
        let mut rx = state.subscribe();
        // Counting exits, not only watching statuses, catches an exit whose `Restarting`
        // status was replaced before this task woke up to see it.
        let exits_before = state.exits();
        let wait = async {
            loop {
                let status = rx.borrow_and_update().clone();
                if state.exits() != exits_before {
                    return Err(self.exited(state.last_exit().unwrap_or_default()));
                }
                match status {
                    InstanceStatus::Healthy => return Ok(()),
                    InstanceStatus::Restarting { exit, .. } | InstanceStatus::Exited { exit } => {
                        return Err(self.exited(exit));
                    }
                    InstanceStatus::Stopped => return Err(RuntimeError::Stopped(self.id().into())),
                    InstanceStatus::Starting | InstanceStatus::Unhealthy { .. } => {}
                }
                if rx.changed().await.is_err() {
                    return Err(RuntimeError::Stopped(self.id().into()));
                }
            }
        };
        match tokio::time::timeout(deadline, wait).await {
            Ok(result) => result,
            Err(_) => Err(RuntimeError::HealthTimeout {
                id: self.id().into(),
                waited: deadline,
                last_probe: state.last_probe(),
            }),
        }
    }

    fn exited(&self, exit: String) -> RuntimeError {
        RuntimeError::ExitedBeforeHealthy {
            id: self.id().into(),
            exit,
            log_tail: self
                .inner
                .backend
                .log_tail(ERROR_TAIL_LINES, ERROR_TAIL_BYTES),
        }
    }

    /// Stops the instance (for the process driver: SIGTERM to its process group, SIGKILL
    /// after `stop_grace`), removes its traces (pid file) and waits until it is gone.
    /// Idempotent; afterwards the status is `Stopped`.
    pub async fn stop(&self) -> Result<(), RuntimeError> {
        self.inner.backend.stop().await
    }
}
