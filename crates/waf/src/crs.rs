//! The OWASP Core Rule Set's own XSS (941) and SQL injection (942) rules, vendored from
//! `crs/rules-941-942.tsv` (written by `crs/import.py` from CRS commit 2cbd1d0, Apache-2.0):
//! their regexes, targets, transformations and severities, compiled once per process and
//! applied per field with CRS anomaly scoring.
//!
//! Why not a CRS engine: rollgate only needs the detection part of these two files, and a
//! `SecRule` interpreter costs milliseconds per request (see `lib.rs`). Each value costs one
//! scan of a [`RegexSet`] holding every rule that targets its kind of field, because the
//! rules are grouped by their transformation pipelines and a value that no transformation
//! would change (most clean values) is matched against the union of all groups at once. The
//! rules' own regexes run only on a set hit, to find the matched text and check chained
//! conditions.
//!
//! Rules that use `@detectSQLi`/`@detectXSS` are libinjection, which the crate runs anyway; the
//! importer lists what it skipped (paranoia levels 3–4 and those). `XML:/*` targets are dropped
//! from the table: the values of a parsed XML body are read as `ARGS` (`lib.rs`, `crs_target`),
//! which every rule naming `XML:/*` also reads.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use regex::bytes::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use thiserror::Error;

use crate::config::Paranoia;
use crate::finding::RuleId;
use crate::transform::{self, T_SPACE, Transform};

/// The vendored rules: one tab-separated rule per line, see `crs/import.py`.
const RULES_TSV: &str = include_str!("../crs/rules-941-942.tsv");

/// The CRS anomaly score at and above which a request is blocked: CRS's default inbound
/// threshold, so one critical rule suffices and one warning does not.
pub(crate) const INBOUND_THRESHOLD: u32 = 5;

/// Compiled programs are capped so that a rule cannot make the process allocate without bound;
/// CRS's largest (942 keyword lists) stay far below.
const SIZE_LIMIT: usize = 32 << 20;

/// Why the vendored CRS rules could not be loaded. The file is checked in and checked by the
/// tests, so these only appear after a hand edit of it or a regex engine change.
#[derive(Debug, Error)]
pub enum CrsError {
    /// A line does not have the importer's shape.
    #[error("crs/rules-941-942.tsv line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `crs_exclusions[index]` names a rule that is not vendored.
    #[error("crs_exclusions[{index}].rules: {id} is not a vendored CRS 941/942 rule")]
    UnknownRule {
        /// Position in the exclusion list.
        index: usize,
        /// The rejected id.
        id: u32,
    },
    /// `crs_exclusions[index]` is not usable: its path prefix, an empty rule list or a field.
    #[error("crs_exclusions[{index}]: {reason}")]
    InvalidExclusion {
        /// Position in the exclusion list.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A rule's regex does not compile with the `regex` crate.
    #[error("CRS rule {id}: {source}")]
    Regex {
        /// The CRS rule id.
        id: u32,
        /// The compiler's error.
        source: Box<regex::Error>,
    },
}

/// The kind of field a CRS rule targets, as CRS names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// `ARGS`: query, form, JSON, XML and multipart values.
    Args = 0,
    /// `ARGS_NAMES`: their names.
    ArgNames,
    /// `REQUEST_COOKIES`.
    Cookies,
    /// `REQUEST_COOKIES_NAMES`.
    CookieNames,
    /// `REQUEST_HEADERS:User-Agent`.
    UserAgent,
    /// `REQUEST_HEADERS:Referer`.
    Referer,
    /// `REQUEST_HEADERS` other than those above and `Cookie`.
    OtherHeader,
    /// `REQUEST_HEADERS:Cookie`, the whole header.
    CookieHeader,
    /// `REQUEST_FILENAME`: the path.
    Filename,
}

const TARGETS: usize = 9;

/// Values of at most this many ASCII digits match no vendored rule, whatever the target
/// (checked on the rules' automata by a test); the scan skips them. Ten digits can match:
/// 942220's integer-overflow numbers.
const DIGITS_NEVER_MATCH: usize = 9;

impl Target {
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// The memo bit ([`crate::memo`]) for a value found clean by the rules of `target` at
/// `paranoia`; 0 for targets that are not remembered. Bits are per memo class: header and
/// cookie values use four targets, the path (`Filename`) and parameter names (`ArgNames`) one.
pub(crate) fn memo_bit(target: Target, paranoia: Paranoia) -> u16 {
    let slot = match target {
        Target::Cookies | Target::Filename | Target::ArgNames => 0,
        Target::UserAgent => 1,
        Target::Referer => 2,
        Target::OtherHeader => 3,
        _ => return 0,
    };
    let level = match paranoia {
        Paranoia::Normal => 0,
        Paranoia::Strict => 4,
    };
    1 << (8 + slot + level)
}

/// The CRS severity of a rule and the anomaly score it adds (CRS's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Severity {
    Critical,
    Error,
    Warning,
    Notice,
}

impl Severity {
    pub fn score(self) -> u32 {
        match self {
            Severity::Critical => 5,
            Severity::Error => 4,
            Severity::Warning => 3,
            Severity::Notice => 2,
        }
    }
}

/// A second condition on a rule's match (CRS's `chain`).
#[derive(Debug)]
enum Chain {
    None,
    /// `MATCHED_VARS @rx` (or `!@rx` when `negated`): the transformed value must (not) match.
    Value {
        regex: Regex,
        negated: bool,
    },
    /// `TX:1 @rx`: the first capture group must match.
    Capture1 {
        regex: Regex,
    },
    /// `TX:1 @streq %{TX.2}` (or `!@streq`): the first two capture groups are (not) equal.
    CapturesEqual {
        negated: bool,
    },
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub id: u32,
    pub paranoia_level: u8,
    pub severity: Severity,
    /// [`RuleId::Xss`] for 941, [`RuleId::Sqli`] for 942.
    pub family: RuleId,
    targets: u16,
    /// Tagged `xss-perf-disable`: CRS 941010 removes the path from it when the path holds only
    /// letters, digits, space, `-./_`.
    xss_perf_disable: bool,
    regex: Regex,
    chain: Chain,
    pub msg: String,
}

/// A set of rules compiled together: pattern `i` of `set` is `rules[i]`.
#[derive(Debug)]
struct Scan {
    set: RegexSet,
    rules: Vec<usize>,
}

/// Rules that share one transformation pipeline.
#[derive(Debug)]
struct Group {
    transforms: Vec<Transform>,
    /// `multiMatch`: the value is also matched before each transformation.
    multi_match: bool,
    triggers: u8,
    scans: [Option<Arc<Scan>>; TARGETS],
}

/// The compiled rules of one paranoia level.
#[derive(Debug)]
pub(crate) struct CrsRules {
    rules: Vec<Rule>,
    groups: Vec<Group>,
    /// Every rule per target: for values no transformation changes.
    all: [Option<Arc<Scan>>; TARGETS],
    /// The rules of groups without `t:removeWhitespace`, per target: for values whose only
    /// trigger is a single space.
    no_space: [Option<Arc<Scan>>; TARGETS],
    /// The rules of the groups with `t:removeWhitespace`, per target.
    space: [Option<Arc<Scan>>; TARGETS],
    /// The union of every group's triggers.
    all_triggers: u8,
}

/// One rule that matched one value.
#[derive(Debug, PartialEq)]
pub(crate) struct Hit {
    /// Index into [`CrsRules::rule`].
    pub rule: usize,
    /// The matched text (CRS's `TX.0`), after the rule's transformations.
    pub matched: Vec<u8>,
}

/// The rules of `paranoia`, compiled on first use and shared by every [`crate::Waf`]: PL1 at
/// [`Paranoia::Normal`], PL1 and PL2 at [`Paranoia::Strict`].
pub(crate) fn rules(paranoia: Paranoia) -> Result<&'static CrsRules, &'static CrsError> {
    static NORMAL: OnceLock<Result<CrsRules, CrsError>> = OnceLock::new();
    static STRICT: OnceLock<Result<CrsRules, CrsError>> = OnceLock::new();
    let (cell, max_pl) = match paranoia {
        Paranoia::Normal => (&NORMAL, 1),
        Paranoia::Strict => (&STRICT, 2),
    };
    cell.get_or_init(|| CrsRules::compile(RULES_TSV, max_pl))
        .as_ref()
}

/// The ids of every vendored rule up to `paranoia`. Reads the ids and levels only, without
/// compiling the rules (configuration checks call this; compiling takes a few hundred ms).
pub fn rule_ids(paranoia: Paranoia) -> Vec<u32> {
    let max_pl = match paranoia {
        Paranoia::Normal => 1,
        Paranoia::Strict => 2,
    };
    RULES_TSV
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let id = cols.next()?.parse::<u32>().ok()?;
            let pl = cols.next()?.parse::<u8>().ok()?;
            (pl <= max_pl).then_some(id)
        })
        .collect()
}

/// The CRS message of a vendored rule (`msg:`), e.g. `"SQL Injection Attack Detected via
/// libinjection"`; `None` for an id that is not vendored.
pub fn rule_message(id: u32) -> Option<&'static str> {
    rules(Paranoia::Strict)
        .ok()?
        .rules
        .iter()
        .find(|r| r.id == id)
        .map(|r| r.msg.as_str())
}

impl CrsRules {
    pub(crate) fn compile(tsv: &str, max_pl: u8) -> Result<CrsRules, CrsError> {
        let mut rules = Vec::new();
        let mut pipelines: Vec<(Vec<Transform>, bool)> = Vec::new();
        let mut group_of = Vec::new();
        for (n, line) in tsv.lines().enumerate() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (rule, transforms, multi_match) = parse_line(line, n + 1)?;
            if rule.paranoia_level > max_pl {
                continue;
            }
            let key = (transforms, multi_match);
            let g = match pipelines.iter().position(|p| *p == key) {
                Some(g) => g,
                None => {
                    pipelines.push(key);
                    pipelines.len() - 1
                }
            };
            group_of.push(g);
            rules.push(rule);
        }
        let mut cache: HashMap<Vec<usize>, Arc<Scan>> = HashMap::new();
        let mut scans_for =
            |filter: &dyn Fn(usize) -> bool| -> Result<[Option<Arc<Scan>>; TARGETS], CrsError> {
                let mut out: [Option<Arc<Scan>>; TARGETS] = Default::default();
                for (t, slot) in out.iter_mut().enumerate() {
                    let members: Vec<usize> = (0..rules.len())
                        .filter(|&i| filter(i) && rules[i].targets & (1 << t) != 0)
                        .collect();
                    if members.is_empty() {
                        continue;
                    }
                    if let Some(s) = cache.get(&members) {
                        *slot = Some(Arc::clone(s));
                        continue;
                    }
                    let patterns = members.iter().map(|&i| rules[i].regex.as_str());
                    // The patterns are already rewritten by `pcre_bytes`.
                    let set = RegexSetBuilder::new(patterns)
                        .unicode(false)
                        .size_limit(SIZE_LIMIT)
                        .dfa_size_limit(SIZE_LIMIT)
                        .build()
                        .map_err(|e| CrsError::Regex {
                            id: 0,
                            source: Box::new(e),
                        })?;
                    let scan = Arc::new(Scan {
                        set,
                        rules: members.clone(),
                    });
                    cache.insert(members, Arc::clone(&scan));
                    *slot = Some(scan);
                }
                Ok(out)
            };
        let mut groups = Vec::new();
        for (g, (transforms, multi_match)) in pipelines.iter().enumerate() {
            let scans = scans_for(&|i| group_of[i] == g)?;
            groups.push(Group {
                triggers: transforms.iter().fold(0, |acc, t| acc | t.trigger()),
                transforms: transforms.clone(),
                multi_match: *multi_match,
                scans,
            });
        }
        let space_groups: Vec<usize> = (0..groups.len())
            .filter(|&g| groups[g].triggers & T_SPACE != 0)
            .collect();
        let all = scans_for(&|_| true)?;
        let no_space = scans_for(&|i| !space_groups.contains(&group_of[i]))?;
        let space = scans_for(&|i| space_groups.contains(&group_of[i]))?;
        let all_triggers = groups.iter().fold(0, |acc, g| acc | g.triggers);
        Ok(CrsRules {
            rules,
            groups,
            all,
            no_space,
            space,
            all_triggers,
        })
    }

    pub(crate) fn rule(&self, index: usize) -> Option<&Rule> {
        self.rules.get(index)
    }

    /// Whether any rule of this level targets `target` in `family`.
    pub(crate) fn targets(&self, target: Target) -> bool {
        self.all[target as usize].is_some()
    }

    /// Every rule that matches `value` (as the request parser delivered it: query and form
    /// values decoded once, everything else raw) in a field of kind `target`. `plain_path`
    /// tells, for [`Target::Filename`], that CRS 941010 would exempt it from 941's rules.
    pub(crate) fn scan(&self, target: Target, value: &[u8], plain_path: bool, out: &mut Vec<Hit>) {
        let t = target as usize;
        if self.all[t].is_none() || value.is_empty() {
            return;
        }
        // Ids, counts, page numbers: no rule matches them (`no_rule_matches_a_short_value_of_digits`
        // walks every rule's automaton to show it).
        if value.len() <= DIGITS_NEVER_MATCH && value.iter().all(u8::is_ascii_digit) {
            return;
        }
        let triggers = transform::triggers(value) & self.all_triggers;
        if triggers == 0 {
            self.run(self.all[t].as_deref(), value, target, plain_path, out);
            return;
        }
        if triggers == T_SPACE {
            // Single spaces only: every transformation but t:removeWhitespace leaves the value
            // as it is, so two scans do: the rules without it on the value, the rules with it
            // on the value without spaces.
            self.run(self.no_space[t].as_deref(), value, target, plain_path, out);
            if let Some(scan) = self.space[t].as_deref() {
                let stripped = Transform::RemoveWhitespace.apply(value);
                self.run(
                    Some(scan),
                    stripped.as_deref().unwrap_or(value),
                    target,
                    plain_path,
                    out,
                );
            }
            return;
        }
        for group in &self.groups {
            self.run_group(group, value, target, plain_path, out);
        }
    }

    fn run_group(
        &self,
        group: &Group,
        value: &[u8],
        target: Target,
        plain_path: bool,
        out: &mut Vec<Hit>,
    ) {
        let Some(scan) = group.scans[target as usize].as_deref() else {
            return;
        };
        if group.multi_match {
            let mut current = std::borrow::Cow::Borrowed(value);
            self.run(Some(scan), &current, target, plain_path, out);
            for tr in &group.transforms {
                if let Some(changed) = tr.apply(&current) {
                    current = std::borrow::Cow::Owned(changed);
                    self.run(Some(scan), &current, target, plain_path, out);
                }
            }
            return;
        }
        let transformed = transform::apply_all(&group.transforms, value);
        self.run(Some(scan), &transformed, target, plain_path, out);
    }

    fn run(
        &self,
        scan: Option<&Scan>,
        value: &[u8],
        target: Target,
        plain_path: bool,
        out: &mut Vec<Hit>,
    ) {
        let Some(scan) = scan else {
            return;
        };
        if !scan.set.is_match(value) {
            return;
        }
        for p in scan.set.matches(value).iter() {
            let Some(&index) = scan.rules.get(p) else {
                continue;
            };
            let rule = &self.rules[index];
            if target == Target::Filename && plain_path && rule.xss_perf_disable {
                continue;
            }
            if out.iter().any(|h| h.rule == index) {
                continue;
            }
            if let Some(matched) = rule.confirm(value) {
                out.push(Hit {
                    rule: index,
                    matched,
                });
            }
        }
    }
}

impl Rule {
    /// Runs the rule's own regex (and its chained condition): the matched text when it holds.
    fn confirm(&self, value: &[u8]) -> Option<Vec<u8>> {
        match &self.chain {
            Chain::None => self.regex.find(value).map(|m| m.as_bytes().to_vec()),
            Chain::Value { regex, negated } => {
                let m = self.regex.find(value)?;
                (regex.is_match(value) != *negated).then(|| m.as_bytes().to_vec())
            }
            Chain::Capture1 { regex } => {
                let c = self.regex.captures(value)?;
                let first = c.get(1)?;
                regex
                    .is_match(first.as_bytes())
                    .then(|| c.get(0).map_or(Vec::new(), |m| m.as_bytes().to_vec()))
            }
            Chain::CapturesEqual { negated } => {
                let c = self.regex.captures(value)?;
                let a = c.get(1).map(|m| m.as_bytes());
                let b = c.get(2).map(|m| m.as_bytes());
                ((a == b) != *negated)
                    .then(|| c.get(0).map_or(Vec::new(), |m| m.as_bytes().to_vec()))
            }
        }
    }
}

/// Rewrites PCRE's `\x{hh}` (a byte in ModSecurity, which matches bytes) as `\xhh`, which the
/// `regex` crate reads as a byte when Unicode is off (its `\x{…}` always means a code point).
fn pcre_bytes(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(i) = rest.find("\\x{") {
        let (before, after) = rest.split_at(i);
        out.push_str(before);
        let body = &after[3..];
        match body.find('}') {
            Some(2) if body[..2].bytes().all(|b| b.is_ascii_hexdigit()) => {
                out.push_str("\\x");
                out.push_str(&body[..2]);
                rest = &body[3..];
            }
            _ => {
                out.push_str("\\x{");
                rest = body;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Whether CRS 941010 would exempt this path from the `xss-perf-disable` rules: every byte in
/// `20,45-47,48-57,65-90,95,97-122`.
pub(crate) fn is_plain_path(path: &[u8]) -> bool {
    path.iter()
        .all(|&b| matches!(b, 0x20 | 45..=57 | 65..=90 | 95 | 97..=122))
}

fn parse_line(line: &str, n: usize) -> Result<(Rule, Vec<Transform>, bool), CrsError> {
    let bad = |reason: String| CrsError::Malformed { line: n, reason };
    let cols: Vec<&str> = line.split('\t').collect();
    let [id, pl, severity, targets, transforms, op, arg, chain, msg] = cols[..] else {
        return Err(bad(format!(
            "expected 9 tab-separated columns, got {}",
            cols.len()
        )));
    };
    let id: u32 = id.parse().map_err(|_| bad(format!("rule id {id:?}")))?;
    let paranoia_level: u8 = pl
        .parse()
        .map_err(|_| bad(format!("paranoia level {pl:?}")))?;
    let family = match id / 1000 {
        941 => RuleId::Xss,
        942 => RuleId::Sqli,
        _ => return Err(bad(format!("rule {id} is neither 941 nor 942"))),
    };
    let severity = match severity {
        "CRITICAL" => Severity::Critical,
        "ERROR" => Severity::Error,
        "WARNING" => Severity::Warning,
        "NOTICE" => Severity::Notice,
        other => return Err(bad(format!("severity {other:?}"))),
    };
    let mut bits = 0u16;
    for t in targets.split(',') {
        let (negated, name) = match t.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let b = match name {
            "ARGS" => Target::Args.bit(),
            "ARGS_NAMES" => Target::ArgNames.bit(),
            "REQUEST_COOKIES" => Target::Cookies.bit(),
            "REQUEST_COOKIES_NAMES" => Target::CookieNames.bit(),
            "REQUEST_HEADERS:User-Agent" => Target::UserAgent.bit(),
            "REQUEST_HEADERS:Referer" => Target::Referer.bit(),
            "REQUEST_HEADERS:Cookie" => Target::CookieHeader.bit(),
            "REQUEST_HEADERS" => {
                Target::UserAgent.bit()
                    | Target::Referer.bit()
                    | Target::OtherHeader.bit()
                    | Target::CookieHeader.bit()
            }
            "REQUEST_FILENAME" => Target::Filename.bit(),
            other => return Err(bad(format!("rule {id}: target {other:?}"))),
        };
        if negated {
            bits &= !b;
        } else {
            bits |= b;
        }
    }
    let mut pipeline = Vec::new();
    let mut xss_perf_disable = false;
    let mut multi_match = false;
    let mut lowercase = false;
    for t in transforms.split(',').filter(|t| *t != "-") {
        match t {
            "xssPerfDisable" => xss_perf_disable = true,
            "multiMatch" => multi_match = true,
            // The value is not lower-cased: the regex is compiled case-insensitive instead, so
            // the pipeline (and the set scan) can be shared with the rules that lack it.
            "lowercase" => lowercase = true,
            other => pipeline.push(
                Transform::from_crs(other)
                    .ok_or_else(|| bad(format!("rule {id}: transformation {other:?}")))?,
            ),
        }
    }
    let pattern = match op {
        "rx" => arg.to_owned(),
        "pm" => format!(
            "(?i:{})",
            arg.split(' ')
                .filter(|p| !p.is_empty())
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join("|")
        ),
        "contains" => regex::escape(arg),
        other => return Err(bad(format!("rule {id}: operator {other:?}"))),
    };
    let pattern = if lowercase {
        format!("(?i:{pattern})")
    } else {
        pattern
    };
    let regex = compile(id, &pattern)?;
    let chain = if chain == "-" {
        Chain::None
    } else {
        let mut parts = chain.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("MATCHED_VARS"), Some(op @ ("rx" | "!rx")), Some(p)) => Chain::Value {
                regex: compile(id, p)?,
                negated: op == "!rx",
            },
            (Some("TX:1"), Some("rx"), Some(p)) => Chain::Capture1 {
                regex: compile(id, p)?,
            },
            (Some("TX:1"), Some(op @ ("streq" | "!streq")), Some("%{TX.2}")) => {
                Chain::CapturesEqual {
                    negated: op == "!streq",
                }
            }
            _ => return Err(bad(format!("rule {id}: chain {chain:?}"))),
        }
    };
    let rule = Rule {
        id,
        paranoia_level,
        severity,
        family,
        targets: bits,
        xss_perf_disable,
        regex,
        chain,
        msg: msg.to_owned(),
    };
    Ok((rule, pipeline, multi_match))
}

/// Compiles one CRS regex as ModSecurity's PCRE reads it: on bytes, `\x{bc}` a byte, `\s`,
/// `\w`, `\b` and `(?i)` ASCII only.
fn compile(id: u32, pattern: &str) -> Result<Regex, CrsError> {
    RegexBuilder::new(&pcre_bytes(pattern))
        .unicode(false)
        .size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| CrsError::Regex {
            id,
            source: Box::new(e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> &'static CrsRules {
        match rules(Paranoia::Strict) {
            Ok(r) => r,
            Err(e) => panic!("vendored CRS rules do not load: {e}"),
        }
    }

    #[test]
    fn every_vendored_rule_compiles() {
        let all = strict();
        let normal = match rules(Paranoia::Normal) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let lines = RULES_TSV
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(all.rules.len(), lines);
        assert!(normal.rules.iter().all(|r| r.paranoia_level == 1));
        assert!(normal.rules.len() > 40, "{}", normal.rules.len());
    }

    /// Configuration checks name rules by `rule_ids`, which reads the file without compiling;
    /// it must list exactly the rules that run at each level, in file order.
    #[test]
    fn rule_ids_are_the_ids_of_the_compiled_rules() {
        for paranoia in [Paranoia::Normal, Paranoia::Strict] {
            let compiled = match rules(paranoia) {
                Ok(r) => r,
                Err(e) => panic!("{e}"),
            };
            let ids: Vec<u32> = compiled.rules.iter().map(|r| r.id).collect();
            assert_eq!(rule_ids(paranoia), ids, "{paranoia:?}");
        }
        assert!(rule_ids(Paranoia::Normal).len() < rule_ids(Paranoia::Strict).len());
    }

    /// Values of ten digits or more are scanned like any other: 942220 matches the
    /// integer-overflow numbers skipfish sends (a shortcut that skipped all digit values lost
    /// CRS test 942220 #1.1); shorter ones are skipped (`no_rule_matches_a_short_value_of_digits`).
    #[test]
    fn digits_alone_can_be_an_attack() {
        let normal = match rules(Paranoia::Normal) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        for value in ["4294967295", "2147483648", "-2147483649"] {
            assert!(
                hits(normal, Target::Args, value).contains(&942220),
                "{value}"
            );
        }
        assert_eq!(hits(normal, Target::Args, "42"), Vec::<u32>::new());
    }

    /// Why [`CrsRules::scan`] may skip values of at most [`DIGITS_NEVER_MATCH`] ASCII digits: no
    /// rule's regex matches any of them. Shown on each rule's automaton rather than by trying
    /// values (there are 1.1 billion): from the unanchored start state, every state reachable
    /// by up to that many digits is visited, and none may be or lead at the end of the value
    /// to a match. The transformations cannot change such a value (they decode `%`, `&`, `\`
    /// forms, drop NULs, comments and whitespace, lower-case), so the raw digits are what each
    /// rule sees. 942220's overflow numbers (`4294967295`, …) have ten digits.
    #[test]
    fn no_rule_matches_a_short_value_of_digits() {
        use regex_automata::Input;
        use regex_automata::hybrid::dfa::DFA;
        use regex_automata::util::syntax;

        for rule in &strict().rules {
            let dfa = DFA::builder()
                .syntax(syntax::Config::new().unicode(false).utf8(false))
                .thompson(regex_automata::nfa::thompson::Config::new().utf8(false))
                .build(rule.regex.as_str())
                .unwrap_or_else(|e| panic!("{}: {e}", rule.id));
            let mut cache = dfa.create_cache();
            let start = dfa
                .start_state_forward(&mut cache, &Input::new(&b"0"[..]))
                .unwrap_or_else(|e| panic!("{}: {e}", rule.id));
            let mut frontier = vec![start];
            for depth in 1..=DIGITS_NEVER_MATCH {
                let mut next = Vec::new();
                for &state in &frontier {
                    for digit in b'0'..=b'9' {
                        let to = dfa
                            .next_state(&mut cache, state, digit)
                            .unwrap_or_else(|e| panic!("{}: {e}", rule.id));
                        // A match state is reported one byte late, so this is a match of the
                        // digits before `digit`.
                        assert!(!to.is_match() && !to.is_quit(), "{} at {depth}", rule.id);
                        if to.is_dead() || next.contains(&to) {
                            continue;
                        }
                        let end = dfa
                            .next_eoi_state(&mut cache, to)
                            .unwrap_or_else(|e| panic!("{}: {e}", rule.id));
                        assert!(!end.is_match(), "rule {} matches {depth} digits", rule.id);
                        next.push(to);
                    }
                }
                frontier = next;
            }
        }
        // The walk does find what matches: 942220's ten digits.
        assert!(hits(strict(), Target::Args, "4294967295").contains(&942220));
    }

    fn hits(rules: &CrsRules, target: Target, value: &str) -> Vec<u32> {
        let mut out = Vec::new();
        rules.scan(target, value.as_bytes(), false, &mut out);
        let mut ids: Vec<u32> = out.iter().map(|h| rules.rules[h.rule].id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn rules_apply_their_transformations_and_targets() {
        let r = strict();
        // t:jsDecode + t:htmlEntityDecode: the escaped script tag is seen.
        assert!(hits(r, Target::Args, r"\x3cscript\x3e").contains(&941110));
        assert!(hits(r, Target::Args, "&lt;script&gt;").contains(&941110));
        // t:removeWhitespace (941140): `java script:` in a CSS url().
        assert!(
            hits(
                r,
                Target::Args,
                "style=background:url(java script:alert(1))"
            )
            .contains(&941140)
        );
        // t:replaceComments: `sleep/**/(5)`.
        assert!(hits(r, Target::Args, "sleep/**/(5)").contains(&942160));
        // 942140 reads arguments, not the User-Agent.
        assert!(hits(r, Target::Args, "information_schema").contains(&942140));
        assert!(!hits(r, Target::UserAgent, "information_schema").contains(&942140));
        assert_eq!(hits(r, Target::Args, "Jane Doe"), Vec::<u32>::new());
    }

    #[test]
    fn chained_conditions_hold() {
        let r = strict();
        // 942440 (comment sequences) spares JWTs and plain tokens through its chain.
        assert!(hits(r, Target::Args, "1'--").contains(&942440));
        assert!(!hits(r, Target::Args, "eyJhbGci.eyJzdWIi.abc--def").contains(&942440));
        // 942521: a closed quote followed by and/or (captured word checked by the chain).
        assert!(hits(r, Target::Args, "x' or 1").contains(&942521));
        assert!(!hits(r, Target::Args, "x' ok 1").contains(&942521));
    }

    #[test]
    fn pcre_byte_escapes_become_regex_byte_escapes() {
        assert_eq!(pcre_bytes(r"\x{bc}[^>\x{be}]"), r"\xbc[^>\xbe]");
        assert_eq!(pcre_bytes(r"\x{100}a\x{"), r"\x{100}a\x{");
        // 941310 matches the raw byte 0xBC of US-ASCII malformed encodings.
        assert!(
            hits(strict(), Target::Args, "%BCscript%BEalert(1)%BC/script%BE").contains(&941310)
        );
    }

    #[test]
    fn malformed_rule_files_are_errors_not_panics() {
        for tsv in [
            "941999\t1\tCRITICAL",
            "941999\t1\tCRITICAL\tARGS\t-\trx\t(\t-\tm",
            "941999\t1\tCRITICAL\tARGS\t-\tdetectXSS\tx\t-\tm",
            "941999\t1\tLOUD\tARGS\t-\trx\tx\t-\tm",
            "941999\t1\tCRITICAL\tXML:/*\t-\trx\tx\t-\tm",
            "941999\t1\tCRITICAL\tARGS\tt:bogus\trx\tx\t-\tm",
            "930999\t1\tCRITICAL\tARGS\t-\trx\tx\t-\tm",
        ] {
            assert!(CrsRules::compile(tsv, 2).is_err(), "{tsv}");
        }
        assert!(CrsRules::compile("941999\t1\tWARNING\tARGS\t-\tpm\ta b\t-\tm", 2).is_ok());
    }

    #[test]
    fn severities_score_like_crs() {
        let scores: Vec<u32> = [
            Severity::Critical,
            Severity::Error,
            Severity::Warning,
            Severity::Notice,
        ]
        .iter()
        .map(|s| s.score())
        .collect();
        assert_eq!(scores, [5, 4, 3, 2]);
        assert_eq!(INBOUND_THRESHOLD, 5);
    }

    #[test]
    fn plain_paths_are_those_941010_exempts() {
        assert!(is_plain_path(b"/api/v1/users/42_a-b.json"));
        assert!(!is_plain_path(b"/a\"b"));
        assert!(!is_plain_path(b"/a<b"));
    }
}
