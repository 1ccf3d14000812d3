//! What to run and how to watch it: the driver-neutral description of an instance and the
//! status it reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One instance to start.
#[derive(Clone, Debug)]
pub struct InstanceSpec {
    /// Unique among running instances of a driver and filesystem-safe (ASCII letters, digits,
    /// `.`, `_`, `-`; not starting with `.`), e.g. `"api.staging.v3.0"`.
    pub id: String,
    /// A shell command line, run with `/bin/sh -c`; every `${PORT}` is replaced by the port.
    pub command: String,
    /// Working directory of the process.
    pub workdir: PathBuf,
    /// Added to the inherited environment; `PORT` is also set to the instance's port.
    pub env: BTreeMap<String, String>,
    /// The loopback port to use; `None` (the default) picks a free one.
    pub port: Option<u16>,
    /// stdout and stderr are appended here; parent directories are created.
    pub log_path: PathBuf,
    /// How long a stop waits after SIGTERM before SIGKILL; default 10s.
    pub stop_grace: Duration,
    /// The HTTP health probe; `None` means healthy once the port accepts a TCP connection.
    pub health: Option<HealthProbe>,
    /// What to do when the process exits on its own.
    pub restart: RestartPolicy,
}

impl InstanceSpec {
    /// A spec with the defaults: free port, no extra environment, 10s stop grace, no HTTP
    /// probe, the default [`RestartPolicy`].
    pub fn new(
        id: impl Into<String>,
        command: impl Into<String>,
        workdir: impl Into<PathBuf>,
        log_path: impl Into<PathBuf>,
    ) -> InstanceSpec {
        InstanceSpec {
            id: id.into(),
            command: command.into(),
            workdir: workdir.into(),
            env: BTreeMap::new(),
            port: None,
            log_path: log_path.into(),
            stop_grace: Duration::from_secs(10),
            health: None,
            restart: RestartPolicy::default(),
        }
    }
}

/// An HTTP health probe: `GET http://127.0.0.1:<port><path>`; 2xx and 3xx pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthProbe {
    /// Request path, e.g. `"/health"` (the default).
    pub path: String,
    /// Time between probes; default 1s.
    pub interval: Duration,
    /// Time allowed for one probe (connect + response head); default 500ms.
    pub timeout: Duration,
    /// Consecutive passes that make the instance healthy; default 2.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy instance unhealthy; default 3.
    pub unhealthy_threshold: u32,
}

impl Default for HealthProbe {
    fn default() -> Self {
        HealthProbe {
            path: "/health".to_owned(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Restarts of a process that exits on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Restart at all; default true.
    pub enabled: bool,
    /// Wait before the first restart; doubles after each restart; default 1s.
    pub initial_backoff: Duration,
    /// Cap of the doubling; default 30s.
    pub max_backoff: Duration,
    /// A process that ran this long before exiting restarts after `initial_backoff` again;
    /// default 60s.
    pub reset_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            enabled: true,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// No restarts: an exit leaves the instance [`InstanceStatus::Exited`].
    pub fn disabled() -> RestartPolicy {
        RestartPolicy {
            enabled: false,
            ..RestartPolicy::default()
        }
    }
}

/// Where an instance is in its life. Serialized as `{"state": "healthy", ...}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum InstanceStatus {
    /// The process is up but has not (yet) passed its probe `healthy_threshold` times.
    /// A process that is still starting is never reported unhealthy.
    Starting,
    /// The probe passes.
    Healthy,
    /// Was healthy, now failed the probe `unhealthy_threshold` times in a row; `reason` names
    /// the last failure (status code, timeout, connection refused).
    Unhealthy {
        /// The last probe failure.
        reason: String,
    },
    /// The process exited on its own and will be started again in `next_in_ms`.
    Restarting {
        /// How it exited, e.g. "exit status: 1" or "signal: 9 (SIGKILL)".
        exit: String,
        /// Restarts so far, including this one.
        restarts: u32,
        /// Milliseconds until the restart.
        next_in_ms: u64,
    },
    /// The process exited on its own and restarts are disabled.
    Exited {
        /// How it exited.
        exit: String,
    },
    /// Stopped on request (or by the driver shutting down); final.
    Stopped,
}

impl InstanceStatus {
    /// True for the states after which the instance never runs again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            InstanceStatus::Exited { .. } | InstanceStatus::Stopped
        )
    }
}
