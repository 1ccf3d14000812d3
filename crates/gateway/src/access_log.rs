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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// RFC 3339 with milliseconds, UTC: `2026-11-22T05:25:42.750Z`.
    pub(crate) ts: &'a str,
    pub(crate) request_id: &'a str,
    pub(crate) env: &'a str,
    pub(crate) app: Option<&'a str>,
    pub(crate) version: Option<u64>,
    pub(crate) instance: Option<&'a str>,
    pub(crate) client: &'a str,
    pub(crate) method: &'a str,
    /// Path only: query strings often carry secrets.
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    /// Written as milliseconds with up to three decimals (`"duration_ms":0.5`).
    #[serde(rename = "duration_ms", serialize_with = "micros_as_millis")]
    pub(crate) duration_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<&'a str>,
    /// The key id the auth phase verified; absent on open routes and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_id: Option<&'a str>,
    /// Edge decisions (block or count), in phase order; absent when there were none.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) edge: &'a [EdgeDecision],
}

impl Entry<'_> {
    /// Appends the entry as one JSON object, byte for byte what `serde_json` makes of it
    /// (a test holds the two equal), without going through serde's per-field calls: a
    /// quarter of the gateway's own per-request work went into them. The edge decisions,
    /// present only on requests a rule matched, still go through `serde_json`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.extend_from_slice(b"{\"ts\":");
        json_str(out, self.ts);
        out.extend_from_slice(b",\"request_id\":");
        json_str(out, self.request_id);
        out.extend_from_slice(b",\"env\":");
        json_str(out, self.env);
        out.extend_from_slice(b",\"app\":");
        json_opt_str(out, self.app);
        out.extend_from_slice(b",\"version\":");
        match self.version {
            Some(v) => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"instance\":");
        json_opt_str(out, self.instance);
        out.extend_from_slice(b",\"client\":");
        json_str(out, self.client);
        out.extend_from_slice(b",\"method\":");
        json_str(out, self.method);
        out.extend_from_slice(b",\"path\":");
        json_str(out, self.path);
        out.extend_from_slice(b",\"status\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        write_millis(out, self.duration_us);
        if let Some(error) = self.error {
            out.extend_from_slice(b",\"error\":");
            json_str(out, error);
        }
        if let Some(key_id) = self.key_id {
            out.extend_from_slice(b",\"key_id\":");
            json_str(out, key_id);
        }
        if !self.edge.is_empty() {
            out.extend_from_slice(b",\"edge\":");
            serde_json::to_writer(&mut *out, self.edge)?;
        }
        out.push(b'}');
        Ok(())
    }
}

/// `us` microseconds as the `f64` milliseconds `serde_json` would write for `us / 1000`
/// (shortest form: `0.5`, `12.0`, `0.001`), from integers: formatting the float cost a tenth
/// of the access-log line. Exact below 2^53 µs (285 years), where that `f64` is exact.
fn write_millis(out: &mut Vec<u8>, us: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(us / 1000).as_bytes());
    out.push(b'.');
    let frac = us % 1000;
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let len = match frac {
        // `.0` for whole milliseconds, as serde_json writes `12.0`.
        f if f % 100 == 0 => 1,
        f if f % 10 == 0 => 2,
        _ => 3,
    };
    out.extend_from_slice(&digits[..len]);
}

/// The serde form of [`Entry::duration_us`], the reference [`write_millis`] is tested against.
fn micros_as_millis<S: serde::Serializer>(us: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    #[allow(clippy::cast_precision_loss)] // exact below 2^53 µs, see `write_millis`
    serializer.serialize_f64(*us as f64 / 1000.0)
}

fn json_opt_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => json_str(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// `value` as a JSON string, escaped as `serde_json` escapes it: `"` and `\\` with a backslash,
/// control characters as `\\b \\f \\n \\r \\t` or `\\u00XX`, everything else (non-ASCII too)
/// as it is. Runs without an escape are copied whole.
fn json_str(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    while let Some(i) = next_escape(bytes, start) {
        let b = bytes[i];
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The index of the first byte at or after `from` that a JSON string needs escaped (a control
/// character, `"` or `\\`). Eight bytes at a time: a log line is mostly runs without one.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let x = u64::from_le_bytes(chunk);
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // A byte below 0x20, or equal to `"` or `\\` (zero after the xor), sets its high bit
        // here; never missed, and a false alarm only sends the chunk to the byte loop below.
        let flagged = (x.wrapping_sub(ONES * 0x20) & !x)
            | (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash);
        if flagged & HIGH != 0 {
            break;
        }
        i += 8;
    }
    bytes
        .get(i..)?
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map(|p| i + p)
}

thread_local! {
    /// The last whole second formatted on this thread (`2026-11-22T05:25:42`), with its Unix
    /// time: every request within that second reuses it.
    static SECOND: RefCell<(u64, [u8; 19])> = const { RefCell::new((u64::MAX, [b'0'; 19])) };
}

/// `t` as RFC 3339 UTC with milliseconds (`2026-11-22T05:25:42.750Z`), 24 ASCII bytes. The
/// date and time of day are formatted once per second per thread; calendar formatting through
/// `humantime` costs more than the rest of a log line.
pub(crate) fn rfc3339_millis(t: SystemTime) -> [u8; 24] {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since.as_secs();
    let millis = since.subsec_millis();
    let mut out = [b'0'; 24];
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            let full = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(second))
                .to_string();
            if let Some(prefix) = full.as_bytes().get(..19) {
                text.copy_from_slice(prefix);
                *cached = second;
            }
        }
        out[..19].copy_from_slice(text);
    });
    out[19] = b'.';
    // `millis` < 1000: three digits.
    out[20] = b'0' + (millis / 100) as u8;
    out[21] = b'0' + (millis / 10 % 10) as u8;
    out[22] = b'0' + (millis % 10) as u8;
    out[23] = b'Z';
    out
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
            if let Err(err) = entry.write_json(line) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_found_at_every_offset() {
        // Each escaped byte at each position of strings longer than one 8-byte chunk, among
        // non-ASCII text too: the escape must come out exactly as serde_json writes it.
        for special in ['"', '\\', '\n', '\u{1}', '\u{1f}'] {
            for len in [1usize, 7, 8, 9, 16, 17, 31] {
                for at in 0..len {
                    let text: String = (0..len)
                        .map(|i| {
                            if i == at {
                                special
                            } else if i % 5 == 0 {
                                '\u{e9}'
                            } else {
                                'a'
                            }
                        })
                        .collect();
                    let mut ours = Vec::new();
                    json_str(&mut ours, &text);
                    let theirs = serde_json::to_vec(&text).unwrap();
                    assert_eq!(ours, theirs, "{text:?}");
                }
            }
        }
        assert_eq!(next_escape(b"\x7f\xff plain text, no escape", 0), None);
    }

    #[test]
    fn lines_are_what_serde_json_makes_of_the_entry() {
        let decisions = vec![
            EdgeDecision::new(
                "waf.sqli",
                "block",
                Some(942190),
                Some("query:q".into()),
                Some("' or 1=1--".into()),
            ),
            EdgeDecision::new("rate_limit", "count", None, None, None),
        ];
        let tricky = "q\"uote\\back\u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f} caf\u{e9} \u{1F600} </script>";
        let entries = [
            Entry {
                ts: "2026-11-22T05:25:42.750Z",
                request_id: "0123456789abcdef0123456789abcdef",
                env: "prod",
                app: Some("api"),
                version: Some(42),
                instance: Some("api-v42-0"),
                client: "127.0.0.1",
                method: "GET",
                path: "/api/users",
                status: 200,
                duration_us: 500,
                error: None,
                key_id: Some("bench"),
                edge: &[],
            },
            Entry {
                ts: tricky,
                request_id: tricky,
                env: "",
                app: None,
                version: None,
                instance: None,
                client: "2001:db8::1",
                method: "PATCH",
                path: tricky,
                status: 499,
                duration_us: 12_000,
                error: Some("request_blocked"),
                key_id: None,
                edge: &decisions,
            },
            Entry {
                ts: "t",
                request_id: "r",
                env: "e",
                app: Some(tricky),
                version: Some(u64::MAX),
                instance: Some(tricky),
                client: tricky,
                method: tricky,
                path: "/",
                status: 0,
                duration_us: 123_456_789,
                error: Some(tricky),
                key_id: Some(tricky),
                edge: &decisions,
            },
        ];
        for entry in &entries {
            for duration_us in [entry.duration_us, 0, 1, 10, 100, 3_250_000_000_000] {
                let entry = Entry {
                    duration_us,
                    ..*entry
                };
                let mut ours = Vec::new();
                entry.write_json(&mut ours).unwrap();
                let theirs = serde_json::to_vec(&entry).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&theirs)
                );
            }
        }
    }

    #[test]
    fn durations_are_written_as_serde_json_writes_the_float() {
        let mut us = 0u64;
        while us < 1u64 << 53 {
            let mut ours = Vec::new();
            write_millis(&mut ours, us);
            #[allow(clippy::cast_precision_loss)]
            let theirs = serde_json::to_string(&(us as f64 / 1000.0)).unwrap();
            assert_eq!(String::from_utf8_lossy(&ours), theirs, "{us} µs");
            // Every value up to 3 s, then ever sparser ones up to 2^53.
            us = if us < 3_000_000 { us + 1 } else { us * 2 + 777 };
        }
    }

    #[test]
    fn timestamps_match_humantime_across_seconds_and_days() {
        let base = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        for offset_ms in [
            0u64,
            1,
            999,
            1000,
            1001,
            59_999,
            86_399_999,
            86_400_000,
            31_622_400_123,
        ] {
            let t = base + Duration::from_millis(offset_ms);
            let ours = rfc3339_millis(t);
            assert_eq!(
                std::str::from_utf8(&ours).unwrap(),
                humantime::format_rfc3339_millis(t).to_string()
            );
        }
    }
}
