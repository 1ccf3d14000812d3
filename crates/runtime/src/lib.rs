//! Drivers that run instances: the seam between rollgate's controller and whatever actually
//! executes a version (local processes today; containers and pods later).
//!
//! This crate knows nothing of rollouts. A driver turns an [`InstanceSpec`] into a running
//! instance and hands back an [`InstanceHandle`], which reports an [`InstanceStatus`] (from a
//! health probe), restarts crashed processes under a [`RestartPolicy`], and stops the instance
//! on request. [`ProcessDriver`] is the embedded default: one process group per instance on
//! 127.0.0.1, with pid files so that a restarted control plane can reap what a crashed one left.

mod error;
mod instance;
mod log;
mod probe;
mod process;
mod procfs;
mod spec;

use std::future::Future;
use std::pin::Pin;

pub use error::RuntimeError;
pub use instance::{InstanceBackend, InstanceHandle, InstanceState};
pub use log::log_tail;
pub use process::ProcessDriver;
pub use spec::{HealthProbe, InstanceSpec, InstanceStatus, RestartPolicy};

/// A boxed, sendable future: what [`Driver`] methods return so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way of running instances. The control plane holds an `Arc<dyn Driver>` so that other
/// engines (docker, kubernetes) can be added without touching it.
pub trait Driver: Send + Sync {
    /// A short name for logs and the API, e.g. `"process"`.
    fn kind(&self) -> &'static str;

    /// Stops whatever a previous, crashed control plane left running; returns how many
    /// instances were stopped. Called once at start, before any [`Driver::start`].
    fn reap_orphans(&self) -> BoxFuture<'_, Result<usize, RuntimeError>>;

    /// Starts one instance and returns at once, without waiting for it to be healthy
    /// (see [`InstanceHandle::wait_healthy`]).
    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<InstanceHandle, RuntimeError>>;

    /// Stops every instance this driver started and has not stopped yet (server shutdown).
    fn stop_all(&self) -> BoxFuture<'_, ()>;
}
