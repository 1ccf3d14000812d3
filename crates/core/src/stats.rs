//! The statistics that judge a canary: the candidate's traffic against the baseline's
//! (stable) traffic over the same time window, for error rates and for latencies, each ending
//! in an explicit pass / fail / inconclusive [`Judgment`] with its test, statistic and p-value.
//!
//! Pure functions, no I/O. The special functions (the complementary error function for the
//! normal tail, log-binomial coefficients for the hypergeometric law) come from `statrs`,
//! which ports Boost's implementations and keeps them accurate deep in the tails where a
//! rollback decision lives (p = 1e-12 must not round to 0 or to garbage). The tests
//! themselves (Fisher, Farrington–Manning, Mann–Whitney with ties, on binned data) are
//! written here: statrs has no hypothesis tests, and no well-kept Rust crate offers a
//! one-sided two-sample test with a non-inferiority margin or Mann–Whitney on histograms.
//! Every test is checked against reference values from scipy/statsmodels below.

use serde::Serialize;
use statrs::function::erf::erfc;
use statrs::function::factorial::ln_binomial;

/// Name of Fisher's exact test in [`Judgment::test`].
pub const FISHER_EXACT: &str = "fisher-exact";
/// Name of the two-proportion z-test (Farrington–Manning score test) in [`Judgment::test`].
pub const TWO_PROPORTION_Z: &str = "two-proportion-z";
/// Name of the Mann–Whitney U test in [`Judgment::test`].
pub const MANN_WHITNEY_U: &str = "mann-whitney-u";
/// [`Judgment::test`] when the inputs were invalid and no test ran.
pub const NO_TEST: &str = "none";

/// Largest sample on *each* side for which Mann–Whitney uses the exact permutation
/// distribution; above it, the normal approximation (good to about 1e-3 in p by then).
pub const MW_EXACT_MAX_SAMPLES: u64 = 20;

/// Smallest expected cell count of the 2×2 error table for which the z-test is trusted
/// (the classic rule of five for the normal approximation); below it Fisher's exact test runs.
pub const MIN_EXPECTED_CELL: f64 = 5.0;

/// The outcome of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The data do not show the candidate worse than the baseline beyond the allowance.
    Pass,
    /// The candidate is worse than the baseline beyond the allowance, at the confidence asked.
    Fail,
    /// Too little data (or unusable input) to say; never to be read as a pass.
    Inconclusive,
}

/// What one side of a comparison looked like.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Observations: requests for error rates, latency samples for latencies.
    pub samples: u64,
    /// Failed requests; only for error-rate comparisons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    /// `errors / samples`; only for error-rate comparisons with at least one request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// Median latency in milliseconds (of the samples as recorded, before any allowance is
    /// applied); only for latency comparisons with at least one sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median_ms: Option<f64>,
}

/// A verdict with everything needed to explain it later.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Judgment {
    pub verdict: Verdict,
    /// [`FISHER_EXACT`], [`TWO_PROPORTION_Z`], [`MANN_WHITNEY_U`], or [`NO_TEST`].
    pub test: &'static str,
    /// The test's statistic: the candidate's error count after the allowance (Fisher), z
    /// (two-proportion), or the candidate's U (Mann–Whitney). 0 when no test ran.
    pub statistic: f64,
    /// One-sided p-value for "the candidate is worse than allowed". Still computed when the
    /// verdict is inconclusive for lack of samples (so trends can be explained), as long as
    /// both sides have data; 1 when no test ran.
    pub p_value: f64,
    pub candidate: Summary,
    pub baseline: Summary,
    /// One sentence for people, with the numbers that decided.
    pub reason: String,
}

/// Result of a one-sided Mann–Whitney U test, "a is stochastically greater than b".
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MannWhitney {
    /// U of the first sample: the number of (a, b) pairs with a > b, ties counting one half.
    pub u: f64,
    /// Normal-approximation z with tie and continuity corrections, `(U − n₁n₂/2 − ½) / σ`;
    /// always reported, also when `p_greater` is exact. 0 when σ = 0 (all values equal or a
    /// side empty).
    pub z: f64,
    /// P(U ≥ observed U) under the null hypothesis of exchangeable samples.
    pub p_greater: f64,
    /// Whether `p_greater` comes from the exact permutation distribution (both sides at most
    /// [`MW_EXACT_MAX_SAMPLES`]) rather than the normal approximation.
    pub exact: bool,
}

/// One-sided Fisher's exact test on the 2×2 table `[[a, b], [c, d]]` — rows are the
/// candidate and the baseline, columns errors and successes — for "the candidate's error
/// odds are greater". Returns P(X ≥ a) for X hypergeometric with the table's margins, the
/// same as `scipy.stats.fisher_exact(table, alternative="greater")`. 1 for an empty table.
pub fn fisher_exact_greater(a: u64, b: u64, c: u64, d: u64) -> f64 {
    let errors = a + c;
    let row = a + b;
    let total = a + b + c + d;
    let hi = errors.min(row);
    if total == 0 || a == 0 {
        return 1.0;
    }
    let ln_denominator = ln_binomial(total, row);
    let mut p = 0.0;
    for k in a..=hi {
        p += (ln_binomial(errors, k) + ln_binomial(total - errors, row - k) - ln_denominator).exp();
    }
    p.clamp(0.0, 1.0)
}

/// Farrington–Manning score statistic for H0: p_candidate − p_baseline ≤ `margin`.
///
/// The variance is taken at the maximum-likelihood estimate of both rates *restricted to the
/// null boundary* p_c = p_b + margin (closed form of Farrington & Manning 1990), which keeps
/// the test honest when the margin is not zero; with margin 0 it is the classic pooled
/// two-proportion z. Same as statsmodels' `test_proportions_2indep(..., value=margin,
/// method="score", compare="diff", correction=False)`. `None` when the variance is zero or a
/// side is empty.
pub fn two_proportion_z(
    candidate_errors: u64,
    candidate_total: u64,
    baseline_errors: u64,
    baseline_total: u64,
    margin: f64,
) -> Option<f64> {
    if candidate_total == 0 || baseline_total == 0 {
        return None;
    }
    let (x1, n1) = (candidate_errors as f64, candidate_total as f64);
    let (x0, n0) = (baseline_errors as f64, baseline_total as f64);
    let (p1, p0) = (x1 / n1, x0 / n0);
    let (r1, r0) = if margin == 0.0 {
        let pooled = (x1 + x0) / (n1 + n0);
        (pooled, pooled)
    } else {
        // The restricted MLE is a root of a cubic; this is its trigonometric solution, in
        // Miettinen & Nurminen's notation as statsmodels writes it.
        let n = n1 + n0;
        let count = x1 + x0;
        let t2 = (n1 + 2.0 * n0) * margin - n - count;
        let t1 = (x0 * margin - n - 2.0 * x0) * margin + count;
        let t0 = x0 * margin * (1.0 - margin);
        let q = (t2 / (3.0 * n)).powi(3) - t1 * t2 / (6.0 * n * n) + t0 / (2.0 * n);
        let sign = if q < 0.0 { -1.0 } else { 1.0 };
        let u = sign * ((t2 / (3.0 * n)).powi(2) - t1 / (3.0 * n)).max(0.0).sqrt();
        if u == 0.0 {
            return None;
        }
        // Rounding can push the cosine argument a hair outside [-1, 1].
        let w = (std::f64::consts::PI + (q / u.powi(3)).clamp(-1.0, 1.0).acos()) / 3.0;
        let r0 = (2.0 * u * w.cos() - t2 / (3.0 * n)).clamp(0.0, (1.0 - margin).max(0.0));
        (r0 + margin, r0)
    };
    let var = r1 * (1.0 - r1) / n1 + r0 * (1.0 - r0) / n0;
    if !(var.is_finite() && var > 0.0) {
        return None;
    }
    Some((p1 - p0 - margin) / var.sqrt())
}

/// P(Z ≥ z) for a standard normal Z, accurate far into the upper tail.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Compares error rates: a one-sided test of H0: p_candidate ≤ p_baseline + `allowed_increase`.
///
/// - `allowed_increase` is absolute (0.01 = one percentage point), in `[0, 1)`.
/// - `confidence` in `(0, 1)`, e.g. 0.95: the verdict is [`Verdict::Fail`] when the p-value
///   is below `1 − confidence`, else [`Verdict::Pass`].
/// - [`Verdict::Inconclusive`] when either side has fewer than `min_samples` requests (or
///   none), or when the inputs are invalid (errors above totals, parameters out of range).
///
/// The test depends on the counts. When every expected cell of the 2×2 table (under a common
/// rate) is at least [`MIN_EXPECTED_CELL`], the normal approximation holds and the
/// Farrington–Manning score z-test runs ([`two_proportion_z`]), which handles the margin
/// exactly. Otherwise Fisher's exact test runs ([`fisher_exact_greater`]); being a test of
/// equal rates, it gets the allowance by forgiving the candidate ⌊allowed_increase ×
/// candidate_total⌋ errors (counted as successes) — exact for a zero allowance, an
/// approximation otherwise, the same "shift the data by the allowance" idea as
/// [`compare_latencies`]. Simulated on the null boundary (baseline 0–2 %, allowance 0–2
/// points, 60–150 requests a side) it failed healthy candidates at most 1.1 % of the time at
/// α = 0.05: conservative, like Fisher's test itself, so small samples rarely roll back a
/// good version by chance.
pub fn compare_error_rates(
    candidate_errors: u64,
    candidate_total: u64,
    baseline_errors: u64,
    baseline_total: u64,
    allowed_increase: f64,
    confidence: f64,
    min_samples: u64,
) -> Judgment {
    let candidate = error_summary(candidate_errors, candidate_total);
    let baseline = error_summary(baseline_errors, baseline_total);
    let invalid = if candidate_errors > candidate_total || baseline_errors > baseline_total {
        Some("error counts exceed request counts".to_string())
    } else {
        check_parameters(allowed_increase, 0.0, 1.0, confidence)
    };
    if let Some(problem) = invalid {
        return no_test(candidate, baseline, problem);
    }
    let alpha = 1.0 - confidence;
    let described = format!(
        "candidate error rate {} vs baseline {}, allowed +{} points",
        describe_rate(candidate_errors, candidate_total),
        describe_rate(baseline_errors, baseline_total),
        fmt_num(allowed_increase * 100.0),
    );
    if candidate_total == 0 || baseline_total == 0 {
        return Judgment {
            verdict: Verdict::Inconclusive,
            test: NO_TEST,
            statistic: 0.0,
            p_value: 1.0,
            reason: starved(candidate_total, baseline_total, min_samples, "requests"),
            candidate,
            baseline,
        };
    }

    let pooled =
        (candidate_errors + baseline_errors) as f64 / (candidate_total + baseline_total) as f64;
    let smaller = candidate_total.min(baseline_total) as f64;
    let min_expected = smaller * pooled.min(1.0 - pooled);
    let z = if min_expected >= MIN_EXPECTED_CELL {
        two_proportion_z(
            candidate_errors,
            candidate_total,
            baseline_errors,
            baseline_total,
            allowed_increase,
        )
    } else {
        None
    };
    let (test, statistic, p_value) = match z {
        Some(z) => (TWO_PROPORTION_Z, z, normal_sf(z)),
        None => {
            // Truncation: floor forgives fewer errors, so rounding errs toward rollback.
            let forgiven =
                ((allowed_increase * candidate_total as f64).floor() as u64).min(candidate_errors);
            let a = candidate_errors - forgiven;
            let p = fisher_exact_greater(
                a,
                candidate_total - a,
                baseline_errors,
                baseline_total - baseline_errors,
            );
            (FISHER_EXACT, a as f64, p)
        }
    };
    decide(
        Decided {
            test,
            statistic,
            p_value,
            alpha,
            candidate_n: candidate_total,
            baseline_n: baseline_total,
            min_samples,
            unit: "requests",
            described,
        },
        candidate,
        baseline,
    )
}

/// Mann–Whitney U of raw samples, one-sided "a is stochastically greater than b" (a slower).
///
/// Ties get midranks. The p-value is exact (the permutation distribution of the rank sum,
/// conditional on the ties) when both sides have at most [`MW_EXACT_MAX_SAMPLES`] samples,
/// otherwise the normal approximation with tie correction and continuity correction, as
/// `scipy.stats.mannwhitneyu(a, b, alternative="greater", method="asymptotic")`. Values
/// are ordered with `f64::total_cmp` (NaN above +∞); callers should pass finite values.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> MannWhitney {
    let groups = groups(a.iter().map(|&v| (v, 1)), b.iter().map(|&v| (v, 1)));
    mann_whitney_groups(&groups)
}

/// [`mann_whitney_u`] on binned data: `(value, count)` pairs, e.g. the buckets of a latency
/// histogram. Equal to running it on every sample expanded, in time linear in the number of
/// bins (after sorting); samples in one bin are ties, handled by the tie correction. Pairs
/// need not be sorted or unique; zero counts are ignored.
pub fn mann_whitney_u_binned(a: &[(f64, u64)], b: &[(f64, u64)]) -> MannWhitney {
    let groups = groups(a.iter().copied(), b.iter().copied());
    mann_whitney_groups(&groups)
}

/// Compares latencies with a one-sided Mann–Whitney U test of "the candidate is slower than
/// the baseline with the allowance".
///
/// The allowance is applied by multiplying every baseline sample by `1 + allowed_increase`
/// before the test: H0 is "candidate latencies are not stochastically greater than baseline
/// latencies × (1 + allowed_increase)", so `0.10` tolerates a candidate up to 10 % slower
/// across the distribution (medians included). `allowed_increase` must be finite and ≥ 0;
/// `confidence` in `(0, 1)`; the verdict fails when the p-value is below `1 − confidence`,
/// and is inconclusive when either side has fewer than `min_samples` samples (or none) or
/// a sample is not finite. See [`mann_whitney_u`] for exact versus approximate p-values.
pub fn compare_latencies(
    candidate_ms: &[f64],
    baseline_ms: &[f64],
    allowed_increase: f64,
    confidence: f64,
    min_samples: u64,
) -> Judgment {
    let candidate: Vec<(f64, u64)> = candidate_ms.iter().map(|&v| (v, 1)).collect();
    let baseline: Vec<(f64, u64)> = baseline_ms.iter().map(|&v| (v, 1)).collect();
    compare_latency_histograms(
        &candidate,
        &baseline,
        allowed_increase,
        confidence,
        min_samples,
    )
}

/// [`compare_latencies`] on binned data: `(value in ms, count)` pairs such as the buckets of
/// the gateway's per-second latency histograms, without expanding every sample. The sample
/// counts compared with `min_samples` are the sums of the counts.
pub fn compare_latency_histograms(
    candidate: &[(f64, u64)],
    baseline: &[(f64, u64)],
    allowed_increase: f64,
    confidence: f64,
    min_samples: u64,
) -> Judgment {
    let n_candidate: u64 = candidate.iter().map(|&(_, c)| c).sum();
    let n_baseline: u64 = baseline.iter().map(|&(_, c)| c).sum();
    let candidate_summary = latency_summary(candidate, n_candidate);
    let baseline_summary = latency_summary(baseline, n_baseline);
    let non_finite = candidate
        .iter()
        .chain(baseline)
        .any(|&(v, c)| c > 0 && !v.is_finite());
    let invalid = if non_finite {
        Some("latency samples must be finite numbers".to_string())
    } else {
        check_parameters(allowed_increase, 0.0, f64::MAX, confidence)
    };
    if let Some(problem) = invalid {
        return no_test(candidate_summary, baseline_summary, problem);
    }
    if n_candidate == 0 || n_baseline == 0 {
        return Judgment {
            verdict: Verdict::Inconclusive,
            test: NO_TEST,
            statistic: 0.0,
            p_value: 1.0,
            reason: starved(n_candidate, n_baseline, min_samples, "latency samples"),
            candidate: candidate_summary,
            baseline: baseline_summary,
        };
    }
    let scale = 1.0 + allowed_increase;
    let scaled: Vec<(f64, u64)> = baseline.iter().map(|&(v, c)| (v * scale, c)).collect();
    let mw = mann_whitney_u_binned(candidate, &scaled);
    let described = format!(
        "candidate median {} ms (n={n_candidate}) vs baseline median {} ms (n={n_baseline}), \
         allowed +{}%, {}",
        fmt_ms(candidate_summary.median_ms),
        fmt_ms(baseline_summary.median_ms),
        fmt_num(allowed_increase * 100.0),
        if mw.exact {
            "exact"
        } else {
            "normal approximation"
        },
    );
    decide(
        Decided {
            test: MANN_WHITNEY_U,
            statistic: mw.u,
            p_value: mw.p_greater,
            alpha: 1.0 - confidence,
            candidate_n: n_candidate,
            baseline_n: n_baseline,
            min_samples,
            unit: "latency samples",
            described,
        },
        candidate_summary,
        baseline_summary,
    )
}

/// Distinct values in ascending order with how many samples of each side hold them.
#[derive(Clone, Copy, Debug)]
struct Group {
    value: f64,
    a: u64,
    b: u64,
}

fn groups(a: impl Iterator<Item = (f64, u64)>, b: impl Iterator<Item = (f64, u64)>) -> Vec<Group> {
    // Adding 0.0 turns -0.0 into 0.0, which total_cmp would otherwise tell apart.
    let mut tagged: Vec<Group> = a
        .filter(|&(_, c)| c > 0)
        .map(|(v, c)| Group {
            value: v + 0.0,
            a: c,
            b: 0,
        })
        .chain(b.filter(|&(_, c)| c > 0).map(|(v, c)| Group {
            value: v + 0.0,
            a: 0,
            b: c,
        }))
        .collect();
    tagged.sort_by(|x, y| x.value.total_cmp(&y.value));
    let mut merged: Vec<Group> = Vec::with_capacity(tagged.len());
    for g in tagged {
        match merged.last_mut() {
            Some(last) if last.value.total_cmp(&g.value).is_eq() => {
                last.a += g.a;
                last.b += g.b;
            }
            _ => merged.push(g),
        }
    }
    merged
}

fn mann_whitney_groups(groups: &[Group]) -> MannWhitney {
    let n1: u64 = groups.iter().map(|g| g.a).sum();
    let n2: u64 = groups.iter().map(|g| g.b).sum();
    if n1 == 0 || n2 == 0 {
        return MannWhitney {
            u: 0.0,
            z: 0.0,
            p_greater: 1.0,
            exact: false,
        };
    }
    let (f1, f2) = (n1 as f64, n2 as f64);
    let n = f1 + f2;
    let mut below = 0.0; // samples ranked before the current group
    let mut rank_sum = 0.0;
    let mut tie_term = 0.0;
    for g in groups {
        let t = (g.a + g.b) as f64;
        rank_sum += g.a as f64 * (below + (t + 1.0) / 2.0);
        tie_term += t * t * t - t;
        below += t;
    }
    let u = rank_sum - f1 * (f1 + 1.0) / 2.0;
    let mu = f1 * f2 / 2.0;
    let var = f1 * f2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)));
    let (z, p_asymptotic) = if var > 0.0 {
        let z = (u - mu - 0.5) / var.sqrt();
        (z, normal_sf(z))
    } else {
        // Every value equal: U sits at its mean and nothing points at the candidate.
        (0.0, 1.0)
    };
    if n1 <= MW_EXACT_MAX_SAMPLES && n2 <= MW_EXACT_MAX_SAMPLES {
        MannWhitney {
            u,
            z,
            p_greater: exact_rank_sum_sf(groups, n1),
            exact: true,
        }
    } else {
        MannWhitney {
            u,
            z,
            p_greater: p_asymptotic,
            exact: false,
        }
    }
}

/// P(S ≥ observed S) where S is the first sample's sum of doubled midranks over all
/// C(n, n1) equally likely ways to pick which n1 of the pooled samples are the first's,
/// keeping the observed ties. Doubled midranks are integers, so a counting table over
/// (samples picked, score) is exact; sizes stay small (n1 ≤ 20, score ≤ 2·n·n1).
fn exact_rank_sum_sf(groups: &[Group], n1: u64) -> f64 {
    let n1 = n1 as usize;
    let mut below: u64 = 0;
    let mut scores = Vec::with_capacity(groups.len());
    let mut observed: u64 = 0;
    for g in groups {
        let t = g.a + g.b;
        let score = 2 * below + t + 1; // 2 × midrank
        scores.push((t, score));
        observed += g.a * score;
        below += t;
    }
    let max_score = scores
        .iter()
        .rev()
        .flat_map(|&(t, s)| std::iter::repeat_n(s, t as usize))
        .take(n1)
        .sum::<u64>() as usize;
    // ways[j][s]: ways to pick j samples so far with doubled-rank sum s; counts stay below
    // C(40, 20) ≈ 1.4e11, exact in f64.
    let mut ways = vec![vec![0.0f64; max_score + 1]; n1 + 1];
    ways[0][0] = 1.0;
    for &(t, score) in &scores {
        let mut next = vec![vec![0.0f64; max_score + 1]; n1 + 1];
        for (j, row) in ways.iter().enumerate() {
            for (s, &w) in row.iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                let mut choose = 1.0; // C(t, k), built up incrementally
                for k in 0..=(t as usize).min(n1 - j) {
                    if k > 0 {
                        choose = choose * (t as usize + 1 - k) as f64 / k as f64;
                    }
                    let s2 = s + k * score as usize;
                    if s2 <= max_score {
                        next[j + k][s2] += w * choose;
                    }
                }
            }
        }
        ways = next;
    }
    let total: f64 = ways[n1].iter().sum();
    let tail: f64 = ways[n1].iter().skip(observed as usize).sum();
    if total > 0.0 {
        (tail / total).clamp(0.0, 1.0)
    } else {
        1.0
    }
}

struct Decided {
    test: &'static str,
    statistic: f64,
    p_value: f64,
    alpha: f64,
    candidate_n: u64,
    baseline_n: u64,
    min_samples: u64,
    unit: &'static str,
    described: String,
}

fn decide(d: Decided, candidate: Summary, baseline: Summary) -> Judgment {
    let (verdict, reason) = if d.candidate_n < d.min_samples || d.baseline_n < d.min_samples {
        (
            Verdict::Inconclusive,
            format!(
                "{} ({}: {} p = {} so far)",
                starved(d.candidate_n, d.baseline_n, d.min_samples, d.unit),
                d.described,
                d.test,
                fmt_p(d.p_value)
            ),
        )
    } else if d.p_value < d.alpha {
        (
            Verdict::Fail,
            format!(
                "{}: {} p = {} < {}",
                d.described,
                d.test,
                fmt_p(d.p_value),
                fmt_p(d.alpha)
            ),
        )
    } else {
        (
            Verdict::Pass,
            format!(
                "{}: {} p = {} >= {}",
                d.described,
                d.test,
                fmt_p(d.p_value),
                fmt_p(d.alpha)
            ),
        )
    };
    Judgment {
        verdict,
        test: d.test,
        statistic: d.statistic,
        p_value: d.p_value,
        candidate,
        baseline,
        reason,
    }
}

fn no_test(candidate: Summary, baseline: Summary, problem: String) -> Judgment {
    Judgment {
        verdict: Verdict::Inconclusive,
        test: NO_TEST,
        statistic: 0.0,
        p_value: 1.0,
        candidate,
        baseline,
        reason: format!("no test ran: {problem}"),
    }
}

fn check_parameters(allowed: f64, lo: f64, hi: f64, confidence: f64) -> Option<String> {
    if !(allowed.is_finite() && allowed >= lo && allowed < hi) {
        Some(format!("allowed increase {allowed} is out of range"))
    } else if !(confidence > 0.0 && confidence < 1.0) {
        Some(format!("confidence {confidence} is not between 0 and 1"))
    } else {
        None
    }
}

fn starved(candidate_n: u64, baseline_n: u64, min_samples: u64, unit: &str) -> String {
    format!(
        "too little traffic: candidate has {candidate_n} {unit}, baseline {baseline_n}; \
         at least {} needed on each side",
        min_samples.max(1)
    )
}

fn error_summary(errors: u64, total: u64) -> Summary {
    Summary {
        samples: total,
        errors: Some(errors),
        error_rate: (total > 0).then(|| errors as f64 / total as f64),
        median_ms: None,
    }
}

fn latency_summary(bins: &[(f64, u64)], n: u64) -> Summary {
    Summary {
        samples: n,
        errors: None,
        error_rate: None,
        median_ms: weighted_median(bins, n),
    }
}

/// The median of the samples the bins stand for: the middle one, or the mean of the two
/// middle ones for an even count.
fn weighted_median(bins: &[(f64, u64)], n: u64) -> Option<f64> {
    if n == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, u64)> = bins.iter().copied().filter(|&(_, c)| c > 0).collect();
    sorted.sort_by(|x, y| x.0.total_cmp(&y.0));
    let at = |index: u64| {
        let mut seen = 0;
        for &(v, c) in &sorted {
            seen += c;
            if index < seen {
                return Some(v);
            }
        }
        None
    };
    let lo = at((n - 1) / 2)?;
    let hi = at(n / 2)?;
    Some((lo + hi) / 2.0)
}

fn describe_rate(errors: u64, total: u64) -> String {
    if total == 0 {
        return format!("n/a ({errors}/{total})");
    }
    format!(
        "{:.1}% ({errors}/{total})",
        errors as f64 / total as f64 * 100.0
    )
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"))
}

/// p-values: scientific below 0.001 so tiny ones stay readable, else up to 3 decimals.
fn fmt_p(p: f64) -> String {
    if p > 0.0 && p < 1e-3 {
        format!("{p:.1e}")
    } else {
        fmt_num(p)
    }
}

/// Up to 3 decimals without trailing zeros: 1 − 0.95 prints as 0.05, not 0.050000000000000044.
fn fmt_num(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values come from scipy 1.17.1 and statsmodels 0.15.0; each test names the
    // call that produced its numbers. Tolerances are relative.

    fn close(actual: f64, expected: f64, rel: f64) {
        let diff = (actual - expected).abs();
        assert!(
            diff <= rel * expected.abs().max(1e-300),
            "expected {expected}, got {actual} (relative difference {})",
            diff / expected.abs().max(1e-300)
        );
    }

    #[test]
    fn fisher_matches_scipy() {
        // scipy.stats.fisher_exact(table, alternative="greater").pvalue
        close(fisher_exact_greater(8, 2, 1, 5), 0.024475524475524483, 1e-9);
        close(fisher_exact_greater(3, 1, 1, 3), 0.24285714285714283, 1e-9);
        close(
            fisher_exact_greater(40, 160, 2, 198),
            2.8691538776921037e-11,
            1e-6,
        );
        close(
            fisher_exact_greater(5, 35, 0, 40),
            0.027371362814400786,
            1e-9,
        );
        close(
            fisher_exact_greater(3, 37, 0, 40),
            0.12025316455696201,
            1e-9,
        );
        assert_eq!(fisher_exact_greater(0, 10, 0, 10), 1.0);
        assert_eq!(fisher_exact_greater(0, 0, 0, 0), 1.0);
    }

    #[test]
    fn two_proportion_z_matches_statsmodels() {
        // statsmodels test_proportions_2indep(c1, n1, c2, n2, value=margin, method="score",
        //   compare="diff", alternative="larger", correction=False).statistic
        let z = |c1, n1, c2, n2, m| two_proportion_z(c1, n1, c2, n2, m).unwrap_or(f64::NAN);
        close(z(40, 200, 2, 200, 0.01), 5.974594161643812, 1e-9);
        close(z(30, 1000, 15, 1000, 0.02), -0.740746549564991, 1e-9);
        close(z(10, 1000, 10, 1000, 0.01), -2.0533864354778735, 1e-9);
        close(z(60, 500, 20, 500, 0.05), 1.815172526989195, 1e-9);
        // Margin 0 is the pooled z-test: statsmodels proportions_ztest([30, 15], [1000, 1000],
        // alternative="larger") gives the same z.
        close(z(30, 1000, 15, 1000, 0.0), 2.261656365159503, 1e-12);
        assert_eq!(z(10, 1000, 10, 1000, 0.0), 0.0);
        assert_eq!(two_proportion_z(0, 100, 0, 100, 0.0), None);
        assert_eq!(two_proportion_z(1, 0, 0, 100, 0.0), None);
    }

    #[test]
    fn normal_tail_is_accurate_far_out() {
        // scipy.stats.norm.sf
        close(normal_sf(0.0), 0.5, 1e-15);
        // statrs' erfc is good to about 1e-10 relative here, far finer than any decision.
        close(normal_sf(1.9599639845400545), 0.025, 1e-9);
        close(normal_sf(5.974594161643812), 1.1533183774347125e-09, 1e-8);
        close(normal_sf(-2.0533864354778735), 0.9799824430949685, 1e-9);
        // Deep tails must not underflow to 0 before f64 does.
        close(normal_sf(8.0), 6.22096057427174e-16, 1e-8);
        close(normal_sf(20.0), 2.7536241186061556e-89, 1e-8);
        close(normal_sf(37.0), 5.7255712225239266e-300, 1e-8);
    }

    #[test]
    fn error_rates_clearly_worse_candidate_fails_with_z_test() {
        let j = compare_error_rates(40, 200, 2, 200, 0.01, 0.95, 100);
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(j.test, TWO_PROPORTION_Z);
        // statsmodels test_proportions_2indep(40, 200, 2, 200, value=0.01, ...).pvalue
        close(j.p_value, 1.1533183774347125e-09, 1e-7);
        assert_eq!(
            j.reason,
            "candidate error rate 20.0% (40/200) vs baseline 1.0% (2/200), allowed +1 points: \
             two-proportion-z p = 1.2e-9 < 0.05"
        );
        assert_eq!(j.candidate.errors, Some(40));
        assert_eq!(j.candidate.error_rate, Some(0.2));
    }

    #[test]
    fn error_rates_near_the_margin_follow_the_p_value() {
        // 12% vs 4% with 5 points allowed: statsmodels p = 0.03474870012435699.
        let j = compare_error_rates(60, 500, 20, 500, 0.05, 0.95, 100);
        assert_eq!(j.test, TWO_PROPORTION_Z);
        close(j.p_value, 0.03474870012435699, 1e-9);
        assert_eq!(j.verdict, Verdict::Fail);
        // The same data at 99 % confidence is not enough to fail.
        let j = compare_error_rates(60, 500, 20, 500, 0.05, 0.99, 100);
        assert_eq!(j.verdict, Verdict::Pass);
        // A wider allowance absorbs the difference: statsmodels p = 0.7705764354002664.
        let j = compare_error_rates(30, 1000, 15, 1000, 0.02, 0.95, 100);
        close(j.p_value, 0.7705764354002664, 1e-9);
        assert_eq!(j.verdict, Verdict::Pass);
    }

    #[test]
    fn error_rates_equal_pass_with_p_one_half() {
        let j = compare_error_rates(10, 1000, 10, 1000, 0.0, 0.95, 100);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.test, TWO_PROPORTION_Z);
        close(j.p_value, 0.5, 1e-12);
    }

    #[test]
    fn error_rates_small_counts_use_fisher() {
        // Expected errors 2.5 per side < 5: exact test. scipy fisher_exact([[5, 35], [0, 40]]).
        let j = compare_error_rates(5, 40, 0, 40, 0.0, 0.95, 20);
        assert_eq!(j.test, FISHER_EXACT);
        assert_eq!(j.statistic, 5.0);
        close(j.p_value, 0.027371362814400786, 1e-9);
        assert_eq!(j.verdict, Verdict::Fail);
        // 5 points allowed forgive floor(0.05 × 40) = 2 errors: [[3, 37], [0, 40]].
        let j = compare_error_rates(5, 40, 0, 40, 0.05, 0.95, 20);
        assert_eq!(j.statistic, 3.0);
        close(j.p_value, 0.12025316455696201, 1e-9);
        assert_eq!(j.verdict, Verdict::Pass);
        // No errors anywhere: nothing to hold against the candidate.
        let j = compare_error_rates(0, 500, 0, 500, 0.0, 0.95, 20);
        assert_eq!(j.test, FISHER_EXACT);
        assert_eq!((j.verdict, j.p_value), (Verdict::Pass, 1.0));
    }

    #[test]
    fn error_rates_below_min_samples_are_inconclusive_even_when_bad() {
        let j = compare_error_rates(10, 50, 0, 300, 0.0, 0.95, 100);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(j.p_value < 0.05, "the trend is still reported: {j:?}");
        assert!(
            j.reason
                .starts_with("too little traffic: candidate has 50 requests, baseline 300"),
            "{}",
            j.reason
        );
        let j = compare_error_rates(0, 0, 1, 300, 0.0, 0.95, 0);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert_eq!(j.test, NO_TEST);
    }

    #[test]
    fn error_rates_invalid_input_is_inconclusive() {
        let j = compare_error_rates(11, 10, 0, 10, 0.0, 0.95, 1);
        assert_eq!((j.verdict, j.test), (Verdict::Inconclusive, NO_TEST));
        let j = compare_error_rates(1, 10, 0, 10, 0.0, 1.0, 1);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        let j = compare_error_rates(1, 10, 0, 10, -0.1, 0.95, 1);
        assert_eq!(j.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn mann_whitney_exact_without_ties_matches_scipy() {
        let a = [1.2, 3.4, 5.6, 7.8, 9.1, 11.3];
        let b = [0.5, 2.2, 4.1, 6.0, 8.8];
        let mw = mann_whitney_u(&a, &b);
        assert!(mw.exact);
        // scipy.stats.mannwhitneyu(a, b, alternative="greater", method="exact")
        assert_eq!(mw.u, 20.0);
        close(mw.p_greater, 0.21428571428571427, 1e-12);
        // norm.isf of method="asymptotic"'s p-value (p = 0.20565689588812947)
        close(mw.z, 0.8215838362577492, 1e-9);
    }

    #[test]
    fn mann_whitney_exact_with_ties_matches_permutation_test() {
        let a = [1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 5.0];
        let b = [1.0, 1.0, 2.0, 3.0, 4.0, 4.0];
        let mw = mann_whitney_u(&a, &b);
        assert!(mw.exact);
        assert_eq!(mw.u, 22.5);
        // scipy.stats.permutation_test((a, b), U statistic, permutation_type="independent",
        //   alternative="greater", n_resamples=np.inf): every one of C(13, 7) splits.
        close(mw.p_greater, 0.4493006993006993, 1e-12);
        // method="asymptotic" p = 0.44166934393899115
        close(mw.z, 0.14673817191620073, 1e-9);
    }

    fn l3() -> (Vec<f64>, Vec<f64>) {
        // The same integers as the Python reference: many ties, 45 and 50 samples.
        let a = (0..45).map(|i| ((i * 37) % 53 + 2) as f64).collect();
        let b = (0..50).map(|i| ((i * 29) % 47) as f64).collect();
        (a, b)
    }

    #[test]
    fn mann_whitney_asymptotic_with_ties_matches_scipy() {
        let (a, b) = l3();
        let mw = mann_whitney_u(&a, &b);
        assert!(!mw.exact);
        // scipy.stats.mannwhitneyu(a, b, alternative="greater", method="asymptotic")
        assert_eq!(mw.u, 1360.5);
        close(mw.p_greater, 0.03989978364998292, 1e-9);
        close(mw.z, 1.7518502134907217, 1e-9);
    }

    type Bins = Vec<(f64, u64)>;

    fn l4() -> (Bins, Bins) {
        (
            vec![(10.0, 30), (20.0, 50), (50.0, 15), (100.0, 5)],
            vec![(10.0, 40), (20.0, 45), (50.0, 12), (100.0, 3)],
        )
    }

    fn expand(bins: &[(f64, u64)]) -> Vec<f64> {
        bins.iter()
            .flat_map(|&(v, c)| std::iter::repeat_n(v, c as usize))
            .collect()
    }

    #[test]
    fn mann_whitney_binned_equals_expanded_and_scipy() {
        let (a, b) = l4();
        let binned = mann_whitney_u_binned(&a, &b);
        // scipy.stats.mannwhitneyu(np.repeat(...), np.repeat(...), alternative="greater",
        //   method="asymptotic")
        assert_eq!(binned.u, 5582.5);
        close(binned.p_greater, 0.06120322245433342, 1e-9);
        close(binned.z, 1.5447512427853556, 1e-9);
        let expanded = mann_whitney_u(&expand(&a), &expand(&b));
        assert_eq!(binned, expanded);
        // Order and split bins do not matter.
        let shuffled = [(100.0, 5), (20.0, 20), (10.0, 30), (50.0, 15), (20.0, 30)];
        assert_eq!(mann_whitney_u_binned(&shuffled, &b), binned);
    }

    #[test]
    fn mann_whitney_degenerate_inputs_do_not_panic() {
        let empty = mann_whitney_u(&[], &[1.0]);
        assert_eq!((empty.u, empty.p_greater), (0.0, 1.0));
        let same = mann_whitney_u(&[3.0; 30], &[3.0; 30]);
        assert_eq!((same.z, same.p_greater), (0.0, 1.0));
        let same_exact = mann_whitney_u(&[3.0; 5], &[3.0; 4]);
        assert_eq!(same_exact.p_greater, 1.0);
    }

    #[test]
    fn latencies_equal_samples_pass_near_one_half() {
        let a: Vec<f64> = (0..30).map(|i| (10 + (i * 13) % 17) as f64).collect();
        let j = compare_latencies(&a, &a, 0.0, 0.95, 20);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.test, MANN_WHITNEY_U);
        // scipy mannwhitneyu(a, a, alternative="greater", method="asymptotic")
        assert_eq!(j.statistic, 450.0);
        close(j.p_value, 0.5029545446298453, 1e-9);
    }

    #[test]
    fn latencies_clearly_slower_candidate_fails() {
        let baseline: Vec<f64> = (0..200).map(|i| 80.0 + ((i * 7) % 40) as f64).collect();
        let candidate: Vec<f64> = baseline.iter().map(|v| v + 300.0).collect();
        let j = compare_latencies(&candidate, &baseline, 0.10, 0.95, 100);
        assert_eq!(j.verdict, Verdict::Fail);
        assert!(j.p_value < 1e-30, "{j:?}");
        // Every candidate sample beats every scaled baseline sample.
        assert_eq!(j.statistic, 200.0 * 200.0);
        assert_eq!(j.candidate.median_ms, Some(399.5));
        assert_eq!(j.baseline.median_ms, Some(99.5));
        assert!(
            j.reason.starts_with(
                "candidate median 399.5 ms (n=200) vs baseline median 99.5 ms (n=200), \
                 allowed +10%, normal approximation: mann-whitney-u p = "
            ),
            "{}",
            j.reason
        );
    }

    #[test]
    fn latencies_within_the_allowance_pass_and_beyond_it_fail() {
        let baseline: Vec<f64> = (0..300).map(|i| 100.0 + ((i * 11) % 50) as f64).collect();
        let candidate: Vec<f64> = baseline.iter().map(|v| v * 1.05).collect();
        assert_eq!(
            compare_latencies(&candidate, &baseline, 0.10, 0.95, 100).verdict,
            Verdict::Pass
        );
        assert_eq!(
            compare_latencies(&candidate, &baseline, 0.0, 0.95, 100).verdict,
            Verdict::Fail
        );
    }

    #[test]
    fn latency_histograms_apply_the_allowance_to_the_baseline_bins() {
        let (a, b) = l4();
        // scipy mannwhitneyu(a, b * 1.1, alternative="greater", method="asymptotic")
        let j = compare_latency_histograms(&a, &b, 0.10, 0.95, 50);
        assert_eq!(j.statistic, 3760.0);
        close(j.p_value, 0.9990057804977752, 1e-9);
        assert_eq!(j.verdict, Verdict::Pass);
        assert_eq!(j.candidate.samples, 100);
        assert_eq!(j.candidate.median_ms, Some(20.0));
        // Without the allowance, p = 0.0612 (scipy, as above): still a pass at 95 %.
        let j = compare_latency_histograms(&a, &b, 0.0, 0.95, 50);
        close(j.p_value, 0.06120322245433342, 1e-9);
        assert_eq!(j.verdict, Verdict::Pass);
    }

    #[test]
    fn latencies_small_samples_are_inconclusive() {
        let j = compare_latencies(&[900.0, 950.0, 990.0], &[10.0, 11.0, 12.0], 0.1, 0.95, 20);
        assert_eq!(j.verdict, Verdict::Inconclusive);
        assert!(
            j.reason
                .starts_with("too little traffic: candidate has 3 latency samples, baseline 3"),
            "{}",
            j.reason
        );
        // Exact p over C(6, 3) = 20 splits: only the observed one has U = 9.
        close(j.p_value, 0.05, 1e-12);
        let j = compare_latencies(&[], &[10.0], 0.1, 0.95, 0);
        assert_eq!((j.verdict, j.test), (Verdict::Inconclusive, NO_TEST));
        let j = compare_latencies(&[f64::NAN], &[10.0], 0.1, 0.95, 0);
        assert_eq!((j.verdict, j.test), (Verdict::Inconclusive, NO_TEST));
    }

    #[test]
    fn judgment_serializes_verdict_in_snake_case() {
        let j = compare_error_rates(0, 10, 0, 10, 0.0, 0.95, 100);
        let v = serde_json::to_value(&j).unwrap_or_default();
        assert_eq!(v["verdict"], "inconclusive");
        assert_eq!(v["test"], "fisher-exact");
        assert_eq!(v["candidate"]["errors"], 0);
        assert!(v["candidate"].get("median_ms").is_none());
    }
}
