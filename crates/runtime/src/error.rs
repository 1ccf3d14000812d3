//! The errors of this crate, classified by what went wrong so that callers can tell a bad
//! spec from a release that does not start from a failure of the machine.

use std::path::PathBuf;
use std::time::Duration;

/// Everything a driver or an instance handle can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec cannot be run as given (bad id, empty command, …).
    #[error("invalid instance spec: {0}")]
    InvalidSpec(String),

    /// An instance with this id is already running under this driver.
    #[error("instance {0} is already running")]
    DuplicateInstance(String),

    /// A file or directory the driver needs could not be used.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the driver was doing, e.g. "creating run dir".
        action: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// No free loopback port could be found for the instance.
    #[error("cannot pick a free port on 127.0.0.1: {0}")]
    NoPort(#[source] std::io::Error),

    /// The command could not be spawned at all.
    #[error("cannot spawn instance {id}: {source}")]
    Spawn {
        /// The instance id.
        id: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Sending a signal to the instance's process group failed for a reason other than the
    /// group being gone already.
    #[error("cannot signal process group {pgid} of instance {id}: {source}")]
    Signal {
        /// The instance id.
        id: String,
        /// The process group.
        pgid: i32,
        /// The underlying error.
        #[source]
        source: nix::errno::Errno,
    },

    /// The process exited before it was ever healthy: the release cannot start.
    #[error("instance {id} exited before becoming healthy ({exit}); last log lines:\n{log_tail}")]
    ExitedBeforeHealthy {
        /// The instance id.
        id: String,
        /// The exit status, e.g. "exit status: 7".
        exit: String,
        /// The last lines of the instance log (at most ~20 lines / 2 KB).
        log_tail: String,
    },

    /// The instance did not become healthy within the deadline.
    #[error("instance {id} not healthy after {waited:?}; last probe: {last_probe}")]
    HealthTimeout {
        /// The instance id.
        id: String,
        /// How long the caller waited.
        waited: Duration,
        /// What the last probe saw (status code, timeout, connection refused).
        last_probe: String,
    },

    /// The instance was stopped while the caller was waiting for it.
    #[error("instance {0} was stopped")]
    Stopped(String),
}
