//! Metric rules such as `error_rate > 5%`, `errors > 3 in 1m` or `p99 > 500ms`: their grammar,
//! and their verdict over the traffic the gateway saw for one version.
//!
//! Grammar: `METRIC OP THRESHOLD [in WINDOW]` where METRIC is `error_rate` (share of 5xx
//! responses, threshold in percent), `errors` or `5xx` (count of 5xx responses), or `p50`,
//! `p95`, `p99` (latency, threshold a duration); OP is `>` or `>=`; WINDOW a duration (default
//! one minute).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// The default window of a rule without `in WINDOW`.
pub const DEFAULT_RULE_WINDOW: Duration = Duration::from_secs(60);

/// What a rule measures.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// 5xx responses divided by all responses.
    ErrorRate,
    /// Number of 5xx responses.
    Errors,
    /// A latency percentile (50, 95 or 99).
    Latency(u8),
}

/// One parsed rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rule {
    /// The text as written in the configuration.
    pub text: String,
    pub metric: Metric,
    /// `true` for `>=`, `false` for `>`.
    pub inclusive: bool,
    /// Ratio 0–1 for `error_rate`, count for `errors`, milliseconds for latency.
    pub threshold: f64,
    /// How much recent traffic the rule looks at.
    #[serde(with = "duration_ms")]
    pub window: Duration,
}

mod duration_ms {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Traffic of one version over one window, as the gateway counted it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrafficStats {
    pub requests: u64,
    pub errors_5xx: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// The verdict of one rule, with everything needed to explain it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum RuleVerdict {
    Pass {
        rule: String,
        /// The window judged, in seconds.
        window_s: u64,
        value: f64,
        threshold: f64,
        requests: u64,
    },
    Fail {
        rule: String,
        /// The window judged, in seconds.
        window_s: u64,
        value: f64,
        threshold: f64,
        requests: u64,
    },
    /// Too little traffic to judge; never counted as a pass.
    Inconclusive {
        rule: String,
        /// The window judged, in seconds.
        window_s: u64,
        requests: u64,
        min_requests: u64,
    },
}

impl RuleVerdict {
    pub fn is_fail(&self) -> bool {
        matches!(self, RuleVerdict::Fail { .. })
    }
}

impl fmt::Display for RuleVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleVerdict::Pass {
                rule,
                value,
                threshold,
                requests,
                ..
            } => write!(
                f,
                "pass: {rule} (value {}, threshold {}, {requests} requests)",
                fmt_num(*value),
                fmt_num(*threshold)
            ),
            RuleVerdict::Fail {
                rule,
                value,
                threshold,
                requests,
                ..
            } => write!(
                f,
                "FAIL: {rule} (value {}, threshold {}, {requests} requests)",
                fmt_num(*value),
                fmt_num(*threshold)
            ),
            RuleVerdict::Inconclusive {
                rule,
                requests,
                min_requests,
                ..
            } => write!(
                f,
                "inconclusive: {rule} ({requests} requests, at least {min_requests} needed)"
            ),
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

impl Rule {
    /// Parses a rule; the error says what was expected.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let (metric_w, op_w, threshold_w, window) = match words.as_slice() {
            [m, op, t] => (*m, *op, *t, DEFAULT_RULE_WINDOW),
            [m, op, t, kw, w] if kw.eq_ignore_ascii_case("in") => {
                let window = humantime::parse_duration(w)
                    .map_err(|_| format!("expected a window like \"1m\" after `in`, got {w:?}"))?;
                if window < Duration::from_secs(1) {
                    return Err(format!("the window must be at least 1s, got {w:?}"));
                }
                (*m, *op, *t, window)
            }
            _ => {
                return Err(format!(
                    "expected `METRIC > THRESHOLD [in WINDOW]` (e.g. \"error_rate > 5%\", \"errors > 3 in 1m\", \"p99 > 500ms\"), got {text:?}"
                ));
            }
        };
        let inclusive = match op_w {
            ">" => false,
            ">=" => true,
            other => return Err(format!("expected `>` or `>=`, got {other:?} in {text:?}")),
        };
        let (metric, threshold) = match metric_w {
            "error_rate" => {
                let pct = threshold_w
                    .strip_suffix('%')
                    .and_then(|p| p.parse::<f64>().ok())
                    .filter(|p| (0.0..=100.0).contains(p))
                    .ok_or_else(|| {
                        format!("error_rate needs a percentage like \"5%\", got {threshold_w:?}")
                    })?;
                (Metric::ErrorRate, pct / 100.0)
            }
            "errors" | "5xx" => {
                let n = threshold_w.parse::<u64>().map_err(|_| {
                    format!("{metric_w} needs a whole number of responses, got {threshold_w:?}")
                })?;
                (Metric::Errors, n as f64)
            }
            "p50" | "p95" | "p99" => {
                let d = humantime::parse_duration(threshold_w).map_err(|_| {
                    format!("{metric_w} needs a duration like \"500ms\", got {threshold_w:?}")
                })?;
                let pct = metric_w[1..].parse::<u8>().unwrap_or(99);
                (Metric::Latency(pct), d.as_secs_f64() * 1000.0)
            }
            other => {
                return Err(format!(
                    "unknown metric {other:?}: expected error_rate, errors, 5xx, p50, p95 or p99"
                ));
            }
        };
        Ok(Rule {
            text: text.split_whitespace().collect::<Vec<_>>().join(" "),
            metric,
            inclusive,
            threshold,
            window,
        })
    }

    /// Judges `stats` (traffic of the rule's window). Rate and latency rules need at least
    /// `min_requests` requests; a count rule fails as soon as its count is exceeded, whatever
    /// the sample, but with fewer requests than that it cannot pass.
    pub fn judge(&self, stats: &TrafficStats, min_requests: u64) -> RuleVerdict {
        let value = match self.metric {
            Metric::ErrorRate => {
                if stats.requests == 0 {
                    0.0
                } else {
                    stats.errors_5xx as f64 / stats.requests as f64
                }
            }
            Metric::Errors => stats.errors_5xx as f64,
            Metric::Latency(p) => match p {
                50 => stats.p50_ms,
                95 => stats.p95_ms,
                _ => stats.p99_ms,
            }
            .unwrap_or(0.0),
        };
        let exceeded = if self.inclusive {
            value >= self.threshold
        } else {
            value > self.threshold
        };
        let window_s = self.window.as_secs();
        let rule = self.text.clone();
        let requests = stats.requests;
        let threshold = self.threshold;
        if exceeded && (self.metric == Metric::Errors || requests >= min_requests) {
            return RuleVerdict::Fail {
                rule,
                window_s,
                value,
                threshold,
                requests,
            };
        }
        if requests < min_requests {
            return RuleVerdict::Inconclusive {
                rule,
                window_s,
                requests,
                min_requests,
            };
        }
        RuleVerdict::Pass {
            rule,
            window_s,
            value,
            threshold,
            requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(requests: u64, errors: u64, p99: Option<f64>) -> TrafficStats {
        TrafficStats {
            requests,
            errors_5xx: errors,
            p50_ms: p99,
            p95_ms: p99,
            p99_ms: p99,
        }
    }

    #[test]
    fn parses_the_aws_defaults() {
        let r = Rule::parse("error_rate > 5%").unwrap();
        assert_eq!(r.metric, Metric::ErrorRate);
        assert!((r.threshold - 0.05).abs() < 1e-12);
        assert_eq!(r.window, DEFAULT_RULE_WINDOW);
        let r = Rule::parse("errors > 3 in 1m").unwrap();
        assert_eq!(
            (r.metric, r.threshold, r.window),
            (Metric::Errors, 3.0, Duration::from_secs(60))
        );
        let r = Rule::parse("5xx > 10 in 5m").unwrap();
        assert_eq!(
            (r.metric, r.window),
            (Metric::Errors, Duration::from_secs(300))
        );
        let r = Rule::parse("p99  >=  500ms").unwrap();
        assert_eq!(
            (r.metric, r.threshold, r.inclusive),
            (Metric::Latency(99), 500.0, true)
        );
        assert_eq!(r.text, "p99 >= 500ms");
    }

    #[test]
    fn rejects_bad_rules_with_a_reason() {
        for (text, needle) in [
            ("error_rate > 5", "percentage"),
            ("error_rate > 500%", "percentage"),
            ("errors > many", "whole number"),
            ("p99 > fast", "duration"),
            ("cpu > 5%", "unknown metric"),
            ("errors < 3", "`>` or `>=`"),
            ("errors > 3 during 1m", "METRIC"),
            ("errors > 3 in 0s", "at least 1s"),
            ("", "METRIC"),
        ] {
            let err = Rule::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn error_rate_needs_a_minimum_sample() {
        let r = Rule::parse("error_rate > 5%").unwrap();
        assert!(matches!(
            r.judge(&stats(5, 5, None), 20),
            RuleVerdict::Inconclusive { .. }
        ));
        assert!(matches!(
            r.judge(&stats(0, 0, None), 20),
            RuleVerdict::Inconclusive { .. }
        ));
        assert!(r.judge(&stats(100, 6, None), 20).is_fail());
        assert!(matches!(
            r.judge(&stats(100, 5, None), 20),
            RuleVerdict::Pass { .. }
        ));
    }

    #[test]
    fn count_rules_fire_on_any_sample_but_never_pass_on_too_little() {
        let r = Rule::parse("errors > 3 in 1m").unwrap();
        assert!(r.judge(&stats(4, 4, None), 20).is_fail());
        assert!(matches!(
            r.judge(&stats(4, 3, None), 20),
            RuleVerdict::Inconclusive { .. }
        ));
        assert!(matches!(
            r.judge(&stats(40, 3, None), 20),
            RuleVerdict::Pass { .. }
        ));
    }

    #[test]
    fn latency_rules_compare_the_percentile() {
        let r = Rule::parse("p99 > 500ms").unwrap();
        assert!(r.judge(&stats(50, 0, Some(800.0)), 20).is_fail());
        assert!(matches!(
            r.judge(&stats(50, 0, Some(500.0)), 20),
            RuleVerdict::Pass { .. }
        ));
        let shown = r.judge(&stats(50, 0, Some(812.5)), 20).to_string();
        assert!(
            shown.contains("FAIL: p99 > 500ms") && shown.contains("812.5"),
            "{shown}"
        );
    }
}
