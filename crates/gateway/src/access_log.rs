//! The access log: one JSON object per line, written off the request path. Each request
//! serialises its line into a per-thread scratch buffer and appends it to one shared in-memory
//! batch under a short lock; a dedicated writer thread swaps the batch out and writes it to the
//! file every [`FLUSH_EVERY`] (sooner when it passes [`WAKE_AT`]). Requests never wait for the
//! disk and never wake another thread per line (a channel with a task per line did, and cost
//! a cross-thread wake-up per request); when the batch is full because the disk is slow, lines
//! are dropped and counted rather than slowing requests down.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::record::EdgeDecision;

/// Bytes of log lines held in memory before new lines are dropped (counted in the metrics).
const MAX_BATCH: usize = 8 * 1024 * 1024;
/// A batch this large wakes the writer before its next tick.
const WAKE_AT: usize = 256 * 1024;
/// Written lines reach the file at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// One access-log line. Fields that the request never reached (no app matched, say) are
/// `null`; `error` appears only when the gateway produced the answer itself, `edge` only when an
/// edge rule matched (blocked or counted).
#[derive(Debug, serde::Serialize)]
pub(crate) struct Entry<'a> {
    /// Written with `Display` straight into the line (no string per field per request).
    #[serde(serialize_with = "display")]
    pub(crate) ts: humantime::Rfc3339Timestamp,
    pub(crate) request_id: &'a str,
    pub(crate) env: &'a str,
    pub(crate) app: Option<&'a str>,
    pub(crate) version: Option<u64>,
    pub(crate) instance: Option<&'a str>,
    #[serde(serialize_with = "display")]
    pub(crate) client: std::net::IpAddr,
    pub(crate) method: &'a str,
    /// Path only: query strings often carry secrets.
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    pub(crate) duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<&'a str>,
    /// The key id the auth phase verified; absent on open routes and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_id: Option<&'a str>,
    /// Edge decisions (block or count), in phase order; absent when there were none.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) edge: &'a [EdgeDecision],
}

fn display<T: std::fmt::Display, S: serde::Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Request-side handle: serialises entries and appends them to the batch without waiting.
#[derive(Clone)]
pub(crate) struct AccessLog {
    shared: Arc<Batch>,
    metrics: Metrics,
}

/// Owner of the writer thread; [`AccessLogWriter::close`] writes what was queued and stops it.
pub(crate) struct AccessLogWriter {
    shared: Arc<Batch>,
    thread: Option<JoinHandle<()>>,
}

/// The lines not yet written, and the writer's wake-up call.
struct Batch {
    state: Mutex<BatchState>,
    wake: Condvar,
}

#[derive(Default)]
struct BatchState {
    lines: Vec<u8>,
    closing: bool,
}

thread_local! {
    /// Serialisation scratch space, reused by every line this thread writes.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl AccessLog {
    /// Opens `path` for appending (creating it) and starts the writer thread.
    pub(crate) fn open(
        path: &Path,
        metrics: Metrics,
    ) -> Result<(AccessLog, AccessLogWriter), GatewayError> {
        let open_error = |source| GatewayError::AccessLog {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(open_error)?;
        let shared = Arc::new(Batch {
            state: Mutex::new(BatchState::default()),
            wake: Condvar::new(),
        });
        let writer_shared = Arc::clone(&shared);
        let display = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_batches(file, &writer_shared, &display))
            .map_err(open_error)?;
        Ok((
            AccessLog {
                shared: Arc::clone(&shared),
                metrics,
            },
            AccessLogWriter {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Appends one line to the batch; drops and counts it if the batch is full or closed.
    pub(crate) fn write(&self, entry: &Entry<'_>) {
        SCRATCH.with_borrow_mut(|line| {
            line.clear();
            if let Err(err) = serde_json::to_writer(&mut *line, entry) {
                tracing::warn!(error = %err, "access log entry not serialisable");
                self.metrics.count_access_log_drop();
                return;
            }
            line.push(b'\n');
            let mut state = self
                .shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if state.closing || state.lines.len() + line.len() > MAX_BATCH {
                drop(state);
                self.metrics.count_access_log_drop();
                return;
            }
            let before = state.lines.len();
            state.lines.extend_from_slice(line);
            let crossed = before < WAKE_AT && state.lines.len() >= WAKE_AT;
            drop(state);
            if crossed {
                self.shared.wake.notify_one();
            }
        });
    }
}

impl AccessLogWriter {
    /// Writes the lines already queued, flushes, and stops the thread; waits at most `limit`.
    pub(crate) async fn close(mut self, limit: Duration) {
        self.stop();
        let Some(thread) = self.thread.take() else {
            return;
        };
        let joined = tokio::task::spawn_blocking(move || thread.join());
        if tokio::time::timeout(limit, joined).await.is_err() {
            tracing::warn!("access log writer did not finish in time; last lines may be lost");
        }
    }
}

impl AccessLogWriter {
    /// Tells the thread to write what is queued and end.
    fn stop(&self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closing = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for AccessLogWriter {
    /// A gateway dropped without `close` (its task was aborted) still ends the thread.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer thread: waits for a tick, a large batch or closing, swaps the batch out and
/// writes it; ends after writing the last batch once closing.
fn write_batches(mut file: File, batch: &Batch, path: &str) {
    let mut out = Vec::new();
    let mut failing = false;
    loop {
        let closing = {
            let state = batch.state.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut state, _) = batch
                .wake
                .wait_timeout_while(state, FLUSH_EVERY, |s| {
                    !s.closing && s.lines.len() < WAKE_AT
                })
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut state.lines, &mut out);
            state.closing
        };
        if !out.is_empty() {
            match file.write_all(&out) {
                Ok(()) => failing = false,
                Err(err) => report(err, path, &mut failing),
            }
            out.clear();
            // Do not keep a burst's worth of memory for ever.
            out.shrink_to(WAKE_AT);
        }
        if closing {
            break;
        }
    }
    if let Err(err) = file.flush() {
        report(err, path, &mut failing);
    }
}

/// Warns once per run of failures, so a full disk does not flood the logs.
fn report(err: std::io::Error, path: &str, failing: &mut bool) {
    if !*failing {
        tracing::warn!(path, error = %err, "access log write failed");
    }
    *failing = true;
}
