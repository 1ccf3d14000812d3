//! Per-(app, version) traffic windows: one-second buckets in a ring holding status-class
//! counters and a latency histogram, read by analysis and automatic rollback; and the edge
//! rules' block/count counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rollgate_core::config::edge::EdgeMode;
use rustc_hash::FxHashMap;

use crate::edge::{EdgeCounts, EdgeRule};

/// Seconds of history kept per (app, version): a little over 15 minutes.
pub const RETENTION_SECS: u64 = 960;

/// Histogram bounds in microseconds: 1 µs .. 120 s; slower responses count as 120 s.
const LOWEST_US: u64 = 1;
const HIGHEST_US: u64 = 120_000_000;
/// Two significant figures keep percentile error under 1 % (a p99 rule at 500 ms cannot be
/// off by more than 5 ms) at about 11 KiB per busy second.
const SIGNIFICANT_FIGURES: u8 = 2;

/// Traffic seen by one (app, version) over a window.
///
/// `status_5xx` includes `upstream_failures`; percentiles are `None` when `requests == 0`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct WindowStats {
    /// Responses recorded in the window.
    pub requests: u64,
    /// Responses with status 200..=299.
    pub status_2xx: u64,
    /// Responses with status 300..=399.
    pub status_3xx: u64,
    /// Responses with status 400..=499 (and the rare 1xx final status, counted here as a
    /// client-side oddity); includes 499 for clients that went away before the response.
    pub status_4xx: u64,
    /// Responses with status 500..=599, from the upstream or the gateway.
    pub status_5xx: u64,
    /// Requests the gateway answered 502/504 because the upstream failed; also in `status_5xx`.
    pub upstream_failures: u64,
    /// Median latency in milliseconds, from request arrival to the end of the response body.
    pub p50_ms: Option<f64>,
    /// 95th percentile latency in milliseconds.
    pub p95_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: Option<f64>,
}

/// Per-version traffic windows of one gateway; cloning is cheap and shares the data.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<MetricsInner>,
}

struct MetricsInner {
    /// Bucket seconds count from here, on the monotonic clock.
    origin: Instant,
    /// Read-mostly: a write lock is only taken the first time a (app, version) is seen.
    series: RwLock<SeriesByApp>,
    access_log_dropped: AtomicU64,
    /// Open client connections of each serving thread, in the order the threads started.
    connections: Mutex<Vec<Arc<AtomicU64>>>,
    /// Blocked and counted decisions per [`EdgeRule`], by [`EdgeRule::index`]: a fixed set of
    /// plain atomics, so counting costs no lock or allocation on the request path.
    edge: [[AtomicU64; 2]; EdgeRule::ALL.len()],
}

/// Series keyed by app, then version, so lookups by `&str` need no allocation.
/// Hashed with FxHash: app names and versions come from the routing table, not from clients.
type SeriesByApp = FxHashMap<String, FxHashMap<u64, Arc<Mutex<Series>>>>;

/// The ring of one (app, version).
struct Series {
    buckets: Vec<Bucket>,
}

#[derive(Default)]
struct Bucket {
    /// Which second since `origin` this slot holds; a slot with another second is stale.
    second: u64,
    counts: Counts,
    /// Allocated only for seconds that saw traffic.
    latency: Option<Box<Histogram<u32>>>,
}

#[derive(Clone, Copy, Default)]
struct Counts {
    requests: u64,
    status_2xx: u64,
    status_3xx: u64,
    status_4xx: u64,
    status_5xx: u64,
    upstream_failures: u64,
}

/// One finished request, as the record phase reports it.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Final HTTP status sent (or 499 when the client went away first).
    pub status: u16,
    /// From request arrival to the end of the response body.
    pub latency: Duration,
    /// The gateway answered 502/504 because the upstream failed.
    pub upstream_failure: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty windows; bucket seconds count from now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(MetricsInner {
                origin: Instant::now(),
                series: RwLock::new(FxHashMap::default()),
                access_log_dropped: AtomicU64::new(0),
                connections: Mutex::new(Vec::new()),
                edge: std::array::from_fn(|_| [AtomicU64::new(0), AtomicU64::new(0)]),
            }),
        }
    }

    /// Stats over the last `window` (whole one-second buckets, the current partial second
    /// included; at least one bucket, at most [`RETENTION_SECS`]). Unknown (app, version) pairs
    /// give all-zero stats.
    pub fn window(&self, app: &str, version: u64, window: Duration) -> WindowStats {
        self.window_at(app, version, window, Instant::now())
    }

    /// [`Metrics::window`] as seen at `now`, for deterministic tests and replay.
    pub fn window_at(
        &self,
        app: &str,
        version: u64,
        window: Duration,
        now: Instant,
    ) -> WindowStats {
        let Some((counts, merged)) = self.merged_at(app, version, window, now) else {
            return WindowStats::default();
        };
        let quantile = |q: f64| {
            merged
                .as_ref()
                .filter(|h| counts.requests > 0 && !h.is_empty())
                .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        WindowStats {
            requests: counts.requests,
            status_2xx: counts.status_2xx,
            status_3xx: counts.status_3xx,
            status_4xx: counts.status_4xx,
            status_5xx: counts.status_5xx,
            upstream_failures: counts.upstream_failures,
            p50_ms: quantile(0.50),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
        }
    }

    /// The latency distribution of the last `window` as (milliseconds, count) bins, in
    /// increasing order: the input of a rank test between two versions without the raw samples.
    pub fn latency_bins(&self, app: &str, version: u64, window: Duration) -> Vec<(f64, u64)> {
        let Some((_, Some(merged))) = self.merged_at(app, version, window, Instant::now()) else {
            return Vec::new();
        };
        merged
            .iter_recorded()
            .map(|v| {
                (
                    merged.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0,
                    u64::from(v.count_at_value()),
                )
            })
            .collect()
    }

    /// Counts and the merged latency histogram over the window, or `None` for an unknown pair.
    fn merged_at(
        &self,
        app: &str,
        version: u64,
        window: Duration,
        now: Instant,
    ) -> Option<(Counts, Option<Histogram<u32>>)> {
        let series = self.find(app, version)?;
        let current = self.second_of(now);
        let span = bucket_span(window);
        let oldest = current.saturating_sub(span - 1);
        let series = series.lock().unwrap_or_else(PoisonError::into_inner);
        let mut counts = Counts::default();
        let mut merged: Option<Histogram<u32>> = None;
        for bucket in &series.buckets {
            if bucket.counts.requests == 0 || bucket.second < oldest || bucket.second > current {
                continue;
            }
            counts.add(&bucket.counts);
            if let Some(latency) = &bucket.latency {
                match merged.as_mut() {
                    // Same bounds and precision everywhere, so adding cannot fail; a failure
                    // would only lose that second's latencies, never its counts.
                    Some(total) => {
                        let _ = total.add(latency.as_ref());
                    }
                    None => merged = Some(latency.as_ref().clone()),
                }
            }
        }
        Some((counts, merged))
    }

    /// Every (app, version) that has recorded traffic since the gateway started, sorted.
    pub fn versions(&self) -> Vec<(String, u64)> {
        let map = self
            .inner
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<(String, u64)> = map
            .iter()
            .flat_map(|(app, versions)| versions.keys().map(move |v| (app.clone(), *v)))
            .collect();
        out.sort();
        out
    }

    /// A new serving thread's open-connections gauge, which the thread keeps up to date.
    pub(crate) fn worker_connections(&self) -> Arc<AtomicU64> {
        let gauge = Arc::new(AtomicU64::new(0));
        self.inner
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&gauge));
        gauge
    }

    /// Open client connections per serving thread (`[]` before the gateway serves).
    pub fn open_connections(&self) -> Vec<u64> {
        self.inner
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|gauge| gauge.load(Ordering::Relaxed))
            .collect()
    }

    /// Access-log lines dropped because the writer could not keep up.
    pub fn access_log_dropped(&self) -> u64 {
        self.inner.access_log_dropped.load(Ordering::Relaxed)
    }

    /// Records one finished request now.
    pub fn record(&self, app: &str, version: u64, sample: Sample) {
        self.record_at(app, version, sample, Instant::now());
    }

    /// Records one finished request as if at `now`; instants before the origin count in the
    /// first second.
    pub fn record_at(&self, app: &str, version: u64, sample: Sample, now: Instant) {
        let second = self.second_of(now);
        let series = self.series(app, version);
        let mut series = series.lock().unwrap_or_else(PoisonError::into_inner);
        let len = series.buckets.len() as u64;
        let Some(bucket) = series.buckets.get_mut((second % len) as usize) else {
            return;
        };
        if bucket.second != second {
            // A newer second reclaims the slot; a late record for an older second (possible
            // only when callers pass instants out of order) is dropped rather than corrupting
            // the newer bucket.
            if bucket.second > second && bucket.counts.requests > 0 {
                return;
            }
            bucket.second = second;
            bucket.counts = Counts::default();
            if let Some(latency) = bucket.latency.as_mut() {
                latency.reset();
            }
        }
        bucket.counts.count(sample);
        if bucket.latency.is_none() {
            bucket.latency = Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_FIGURES)
                .ok()
                .map(Box::new);
        }
        if let Some(latency) = bucket.latency.as_mut() {
            let micros = u64::try_from(sample.latency.as_micros()).unwrap_or(u64::MAX);
            latency.saturating_record(micros.clamp(LOWEST_US, HIGHEST_US));
        }
    }

    /// Blocked and counted decisions of every edge rule since the gateway started, keyed by
    /// the rule id (`"ip_deny"`, `"rate_limit"`, `"waf.sqli"`, …, see [`EdgeRule::as_str`]);
    /// every rule is present, with zeros when it never matched.
    pub fn edge_counters(&self) -> BTreeMap<String, EdgeCounts> {
        EdgeRule::ALL
            .iter()
            .map(|rule| {
                let [blocked, counted] = &self.inner.edge[rule.index()];
                let counts = EdgeCounts {
                    blocked: blocked.load(Ordering::Relaxed),
                    counted: counted.load(Ordering::Relaxed),
                };
                (rule.as_str().to_owned(), counts)
            })
            .collect()
    }

    /// Counts one decision of `rule`: blocked in block mode, counted in count mode.
    pub(crate) fn count_edge(&self, rule: EdgeRule, mode: EdgeMode) {
        let slot = match mode {
            EdgeMode::Block => 0,
            EdgeMode::Count => 1,
        };
        if let Some(counters) = self.inner.edge.get(rule.index()) {
            counters[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_access_log_drop(&self) {
        self.inner
            .access_log_dropped
            .fetch_add(1, Ordering::Relaxed);
    }

    fn second_of(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.inner.origin).as_secs()
    }

    fn find(&self, app: &str, version: u64) -> Option<Arc<Mutex<Series>>> {
        let map = self
            .inner
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        map.get(app).and_then(|v| v.get(&version)).cloned()
    }

    fn series(&self, app: &str, version: u64) -> Arc<Mutex<Series>> {
        if let Some(series) = self.find(app, version) {
            return series;
        }
        let mut map = self
            .inner
            .series
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            map.entry(app.to_owned())
                .or_default()
                .entry(version)
                .or_insert_with(|| Arc::new(Mutex::new(Series::new()))),
        )
    }
}

impl Series {
    fn new() -> Self {
        Self {
            buckets: (0..RETENTION_SECS).map(|_| Bucket::default()).collect(),
        }
    }
}

impl Counts {
    fn count(&mut self, sample: Sample) {
        self.requests += 1;
        match sample.status {
            200..=299 => self.status_2xx += 1,
            300..=399 => self.status_3xx += 1,
            500..=599 => self.status_5xx += 1,
            _ => self.status_4xx += 1,
        }
        if sample.upstream_failure {
            self.upstream_failures += 1;
        }
    }

    fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.status_2xx += other.status_2xx;
        self.status_3xx += other.status_3xx;
        self.status_4xx += other.status_4xx;
        self.status_5xx += other.status_5xx;
        self.upstream_failures += other.upstream_failures;
    }
}

/// Number of one-second buckets a window covers, the current one included.
fn bucket_span(window: Duration) -> u64 {
    let whole = window.as_secs() + u64::from(window.subsec_nanos() > 0);
    whole.clamp(1, RETENTION_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: u16, ms: u64) -> Sample {
        Sample {
            status,
            latency: Duration::from_millis(ms),
            upstream_failure: false,
        }
    }

    fn close(actual: Option<f64>, expected: f64) -> bool {
        actual.is_some_and(|a| (a - expected).abs() <= expected * 0.01)
    }

    #[test]
    fn counts_status_classes_and_upstream_failures() {
        let metrics = Metrics::new();
        let now = Instant::now();
        for status in [200, 201, 204, 301, 404, 499, 500, 503] {
            metrics.record_at("api", 1, sample(status, 5), now);
        }
        metrics.record_at(
            "api",
            1,
            Sample {
                status: 502,
                latency: Duration::from_millis(5),
                upstream_failure: true,
            },
            now,
        );
        let stats = metrics.window_at("api", 1, Duration::from_secs(60), now);
        assert_eq!(stats.requests, 9);
        assert_eq!(stats.status_2xx, 3);
        assert_eq!(stats.status_3xx, 1);
        assert_eq!(stats.status_4xx, 2);
        assert_eq!(stats.status_5xx, 3);
        assert_eq!(stats.upstream_failures, 1);
        assert_eq!(
            metrics.window_at("api", 2, Duration::from_secs(60), now),
            WindowStats::default()
        );
    }

    #[test]
    fn percentiles_of_recorded_samples() {
        let metrics = Metrics::new();
        let start = Instant::now();
        // 1..=1000 ms spread over 10 seconds, so the percentiles come from merged buckets.
        for ms in 1..=1000u64 {
            let at = start + Duration::from_millis(ms * 10);
            metrics.record_at("api", 1, sample(200, ms), at);
        }
        let now = start + Duration::from_secs(10);
        let stats = metrics.window_at("api", 1, Duration::from_secs(60), now);
        assert_eq!(stats.requests, 1000);
        assert!(close(stats.p50_ms, 500.0), "p50 {:?}", stats.p50_ms);
        assert!(close(stats.p95_ms, 950.0), "p95 {:?}", stats.p95_ms);
        assert!(close(stats.p99_ms, 990.0), "p99 {:?}", stats.p99_ms);
    }

    #[test]
    fn latency_bins_hold_every_sample_in_order() {
        let metrics = Metrics::new();
        let now = Instant::now();
        for ms in [5u64, 5, 5, 40, 40, 300] {
            metrics.record_at("api", 1, sample(200, ms), now);
        }
        let bins = metrics.latency_bins("api", 1, Duration::from_secs(60));
        assert_eq!(bins.iter().map(|(_, c)| c).sum::<u64>(), 6);
        assert!(bins.windows(2).all(|w| w[0].0 < w[1].0), "{bins:?}");
        let counts: Vec<u64> = bins.iter().map(|(_, c)| *c).collect();
        assert_eq!(counts, vec![3, 2, 1]);
        assert!((bins[2].0 - 300.0).abs() <= 3.0, "{bins:?}");
        assert!(
            metrics
                .latency_bins("api", 2, Duration::from_secs(60))
                .is_empty()
        );
    }

    #[test]
    fn empty_window_has_no_percentiles() {
        let metrics = Metrics::new();
        let stats = metrics.window("api", 1, Duration::from_secs(10));
        assert_eq!(stats.requests, 0);
        assert_eq!(stats.p50_ms, None);
        assert_eq!(stats.p99_ms, None);
    }

    #[test]
    fn old_buckets_fall_out_of_the_window() {
        let metrics = Metrics::new();
        let start = Instant::now();
        metrics.record_at("api", 1, sample(500, 900), start);
        metrics.record_at("api", 1, sample(200, 10), start + Duration::from_secs(20));
        let now = start + Duration::from_millis(20_500);

        let last_10s = metrics.window_at("api", 1, Duration::from_secs(10), now);
        assert_eq!(last_10s.requests, 1);
        assert_eq!(last_10s.status_5xx, 0);
        assert!(close(last_10s.p99_ms, 10.0));

        let last_21s = metrics.window_at("api", 1, Duration::from_secs(21), now);
        assert_eq!(last_21s.requests, 2);
        assert_eq!(last_21s.status_5xx, 1);

        // The window counts whole buckets: the current second (20) and the 20 before it reach
        // second 0; 20 buckets stop at second 1.
        let last_20s = metrics.window_at("api", 1, Duration::from_secs(20), now);
        assert_eq!(last_20s.requests, 1);
    }

    #[test]
    fn ring_slots_are_reused_after_retention() {
        let metrics = Metrics::new();
        let start = Instant::now();
        metrics.record_at("api", 1, sample(500, 1), start);
        let later = start + Duration::from_secs(RETENTION_SECS);
        metrics.record_at("api", 1, sample(200, 1), later);
        let stats = metrics.window_at("api", 1, Duration::from_secs(RETENTION_SECS * 2), later);
        assert_eq!(stats.requests, 1);
        assert_eq!(stats.status_2xx, 1);
    }

    #[test]
    fn versions_lists_every_recorded_pair() {
        let metrics = Metrics::new();
        metrics.record("web", 3, sample(200, 1));
        metrics.record("api", 2, sample(200, 1));
        metrics.record("api", 1, sample(200, 1));
        assert_eq!(
            metrics.versions(),
            vec![
                ("api".to_owned(), 1),
                ("api".to_owned(), 2),
                ("web".to_owned(), 3)
            ]
        );
    }

    #[test]
    fn edge_counters_list_every_rule_and_count_by_mode() {
        let metrics = Metrics::new();
        metrics.count_edge(EdgeRule::RateLimit, EdgeMode::Block);
        metrics.count_edge(EdgeRule::RateLimit, EdgeMode::Count);
        metrics.count_edge(EdgeRule::RateLimit, EdgeMode::Count);
        let counters = metrics.edge_counters();
        assert_eq!(counters.len(), EdgeRule::ALL.len());
        assert_eq!(
            counters["rate_limit"],
            EdgeCounts {
                blocked: 1,
                counted: 2
            }
        );
        assert_eq!(counters["waf.sqli"], EdgeCounts::default());
    }

    #[test]
    fn latencies_beyond_the_range_saturate() {
        let metrics = Metrics::new();
        let now = Instant::now();
        metrics.record_at("api", 1, sample(200, 500_000), now);
        let stats = metrics.window_at("api", 1, Duration::from_secs(1), now);
        assert!(stats.p99_ms.is_some_and(|p| p >= 119_000.0));
    }
}
