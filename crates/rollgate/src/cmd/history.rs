//! `rollgate history`: past rollouts, newest first, with outcome, reason and events; with
//! `--explain`, every verdict behind them: the rule or test, the window, the values on each
//! side, the threshold, the statistic.

use std::fmt::Write;
use std::process::ExitCode;

use serde_json::Value;

use crate::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub scope: super::Scope,
    /// Show the inputs of every verdict: rules, statistical comparisons, smoke tests.
    #[arg(long)]
    pub explain: bool,
}

pub async fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let Some(body) = a.scope.fetch(g, "/v1/history").await? else {
        return Ok(ExitCode::SUCCESS);
    };
    print!("{}", render(&body, a.explain));
    Ok(ExitCode::SUCCESS)
}

/// The human form of a history answer.
pub fn render(body: &Value, explain: bool) -> String {
    let mut out = String::new();
    for r in body["rollouts"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "#{} {}/{} v{} ({}): {}, {} started by {} at {}",
            r["id"],
            super::s(r, "app"),
            super::s(r, "env"),
            r["version"],
            r["label"].as_str().unwrap_or("no label"),
            super::s(r, "phase"),
            super::s(r, "strategy"),
            super::s(r, "actor"),
            super::s(r, "started_at"),
        );
        if let Some(reason) = r["reason"].as_str() {
            let _ = writeln!(out, "    {reason}");
        }
        for e in r["events"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "    {}  {:<18} {}",
                super::clock(super::s(e, "at")),
                super::s(e, "kind"),
                super::s(e, "message")
            );
            if explain {
                explain_event(&mut out, &e["data"]);
            }
        }
    }
    out
}

fn num(v: &Value) -> String {
    match v.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.0}"),
        Some(f) if f.abs() < 1e-3 && f != 0.0 => format!("{f:.2e}"),
        Some(f) => format!("{f:.4}"),
        None => "-".to_string(),
    }
}

/// One line per verdict input found in an event's data.
fn explain_event(out: &mut String, data: &Value) {
    for v in data["verdicts"].as_array().into_iter().flatten() {
        let verdict = super::s(v, "verdict");
        let detail = if verdict == "inconclusive" {
            format!(
                "{} requests, {} needed",
                num(&v["requests"]),
                num(&v["min_requests"])
            )
        } else {
            format!(
                "value {} vs threshold {} over {} requests",
                num(&v["value"]),
                num(&v["threshold"]),
                num(&v["requests"])
            )
        };
        let _ = writeln!(
            out,
            "          rule {:<26} window {:>4}s  {detail}  => {}",
            super::s(v, "rule"),
            num(&v["window_s"]),
            verdict.to_uppercase()
        );
    }
    for j in data["comparisons"].as_array().into_iter().flatten() {
        let side = |s: &Value| match (s["error_rate"].as_f64(), s["median_ms"].as_f64()) {
            (Some(rate), _) => format!(
                "{:.2}% ({}/{})",
                rate * 100.0,
                num(&s["errors"]),
                num(&s["samples"])
            ),
            (_, Some(median)) => format!("median {median:.1}ms of {}", num(&s["samples"])),
            _ => format!("{} samples", num(&s["samples"])),
        };
        let _ = writeln!(
            out,
            "          test {:<26} window {:>4}s  candidate {} vs baseline {}  statistic {}  p {}  => {}",
            super::s(j, "test"),
            num(&data["compare_window_s"]),
            side(&j["candidate"]),
            side(&j["baseline"]),
            num(&j["statistic"]),
            num(&j["p_value"]),
            super::s(j, "verdict").to_uppercase()
        );
    }
    for t in data["results"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "          smoke {} on {}: {} in {}ms => {}",
            super::s(t, "request"),
            super::s(t, "instance"),
            super::s(t, "observed"),
            num(&t["duration_ms"]),
            if t["passed"] == true { "PASS" } else { "FAIL" }
        );
    }
    if let (Some(id), Some(state)) = (data["instance"].as_str(), data["status"].as_object()) {
        let _ = writeln!(
            out,
            "          instance {id}: {}",
            state.get("state").and_then(Value::as_str).unwrap_or("-")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_shows_rules_tests_and_smoke_results() {
        let body = serde_json::json!({ "rollouts": [{
            "id": 4, "app": "api", "env": "prod", "version": 7, "label": "abc", "phase": "rolled_back",
            "strategy": "canary", "actor": "ada", "started_at": "2026-11-22T01:00:00.000Z",
            "reason": "FAIL: error_rate > 5%",
            "events": [{
                "at": "2026-11-22T01:00:03.000Z", "kind": "analysis_failed", "message": "v7 failed",
                "data": {
                    "verdicts": [{ "verdict": "fail", "rule": "error_rate > 5%", "window_s": 60, "value": 0.2, "threshold": 0.05, "requests": 350 }],
                    "comparisons": [{ "verdict": "fail", "test": "two-proportion-z", "statistic": 12.5, "p_value": 1.2e-30,
                        "candidate": { "samples": 350, "errors": 70, "error_rate": 0.2 },
                        "baseline": { "samples": 3150, "errors": 3, "error_rate": 0.000952 } }],
                    "compare_window_s": 12
                }
            }, {
                "at": "2026-11-22T01:00:01.000Z", "kind": "smoke_passed", "message": "ok",
                "data": { "results": [{ "request": "GET /api/users", "instance": "api.prod.v7.0", "observed": "status 200", "duration_ms": 3, "passed": true }] }
            }]
        }]});
        let shown = render(&body, true);
        assert!(
            shown.contains("rule error_rate > 5%")
                && shown.contains("window   60s")
                && shown.contains("value 0.2000 vs threshold 0.0500 over 350 requests  => FAIL"),
            "{shown}"
        );
        assert!(
            shown.contains("test two-proportion-z")
                && shown.contains("candidate 20.00% (70/350) vs baseline 0.10% (3/3150)")
                && shown.contains("p 1.20e-30"),
            "{shown}"
        );
        assert!(
            shown.contains("smoke GET /api/users on api.prod.v7.0: status 200 in 3ms => PASS"),
            "{shown}"
        );
        assert!(!render(&body, false).contains("rule error_rate"));
    }
}
