//! The access log: one JSON object per line, written off the request path by a background task
//! fed through a bounded channel. When the writer falls behind, lines are dropped and counted
//! rather than slowing requests down.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::record::EdgeDecision;

/// Lines buffered between requests and the writer before new lines are dropped.
const CHANNEL_CAPACITY: usize = 16 * 1024;
/// Written lines reach the file at least this often.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// One access-log line. Fields that the request never reached (no app matched, say) are
/// `null`; `error` appears only when the gateway produced the answer itself, `edge` only when an
/// edge rule matched (blocked or counted).
#[derive(Debug, serde::Serialize)]
pub(crate) struct Entry<'a> {
    pub(crate) ts: String,
    pub(crate) request_id: &'a str,
    pub(crate) env: &'a str,
    pub(crate) app: Option<&'a str>,
    pub(crate) version: Option<u64>,
    pub(crate) instance: Option<&'a str>,
    pub(crate) client: String,
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

/// Request-side handle: serialises entries and hands them to the writer without waiting.
#[derive(Clone)]
pub(crate) struct AccessLog {
    lines: mpsc::Sender<Vec<u8>>,
    metrics: Metrics,
}

/// Owner of the writer task; [`AccessLogWriter::close`] flushes what was queued and stops it.
pub(crate) struct AccessLogWriter {
    close: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl AccessLog {
    /// Opens `path` for appending (creating it) and starts the writer task.
    pub(crate) fn open(
        path: &Path,
        metrics: Metrics,
    ) -> Result<(AccessLog, AccessLogWriter), GatewayError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| GatewayError::AccessLog {
                path: path.to_owned(),
                source,
            })?;
        let (lines, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (close, closed) = oneshot::channel();
        let task = tokio::spawn(write_lines(
            tokio::fs::File::from_std(file),
            rx,
            closed,
            path.display().to_string(),
        ));
        Ok((
            AccessLog { lines, metrics },
            AccessLogWriter { close, task },
        ))
    }

    /// Queues one line; drops and counts it if the writer is behind or gone.
    pub(crate) fn write(&self, entry: &Entry<'_>) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(err) => {
                tracing::warn!(error = %err, "access log entry not serialisable");
                self.metrics.count_access_log_drop();
                return;
            }
        };
        line.push(b'\n');
        if self.lines.try_send(line).is_err() {
            self.metrics.count_access_log_drop();
        }
    }
}

impl AccessLogWriter {
    /// Writes the lines already queued, flushes, and stops the task; waits at most `limit`.
    pub(crate) async fn close(self, limit: Duration) {
        let _ = self.close.send(());
        if tokio::time::timeout(limit, self.task).await.is_err() {
            tracing::warn!("access log writer did not finish in time; last lines may be lost");
        }
    }
}

async fn write_lines(
    file: tokio::fs::File,
    mut lines: mpsc::Receiver<Vec<u8>>,
    mut closed: oneshot::Receiver<()>,
    path: String,
) {
    let mut out = BufWriter::new(file);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending = false;
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut closed => {
                while let Ok(line) = lines.try_recv() {
                    write_line(&mut out, &line, &path, &mut failing).await;
                }
                break;
            }
            _ = tick.tick() => {
                if pending {
                    flush(&mut out, &path, &mut failing).await;
                    pending = false;
                }
            }
            line = lines.recv() => match line {
                Some(line) => {
                    write_line(&mut out, &line, &path, &mut failing).await;
                    pending = true;
                }
                None => break,
            },
        }
    }
    flush(&mut out, &path, &mut failing).await;
}

async fn write_line(
    out: &mut BufWriter<tokio::fs::File>,
    line: &[u8],
    path: &str,
    failing: &mut bool,
) {
    match out.write_all(line).await {
        Ok(()) => *failing = false,
        Err(err) => report(err, path, failing),
    }
}

async fn flush(out: &mut BufWriter<tokio::fs::File>, path: &str, failing: &mut bool) {
    if let Err(err) = out.flush().await {
        report(err, path, failing);
    }
}

/// Warns once per run of failures, so a full disk does not flood the logs.
fn report(err: std::io::Error, path: &str, failing: &mut bool) {
    if !*failing {
        tracing::warn!(path, error = %err, "access log write failed");
    }
    *failing = true;
}
