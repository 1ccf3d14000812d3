//! rollgate's WAF detection: a pure function from one request to the attacks found in it.
//!
//! The gateway builds one [`Waf`] per environment from a [`WafConfig`] and calls
//! [`Waf::inspect`] from its WAF request phase; whether a [`Finding`] blocks (403) or is only
//! logged and counted is the gateway's decision (`count` / `block` mode), not this crate's.
//! Nothing here does I/O, allocates on clean values more than the parsers need, or panics on any
//! input.
//!
//! # What is inspected
//!
//! | field | detectors |
//! |---|---|
//! | URI path (decoded, and each segment) | SQLi, XSS, Log4Shell, RCE, Java per segment; traversal and scanner probe paths on the whole path |
//! | query pairs, form bodies, JSON string values, multipart values, cookies — values and keys/names; XML bodies' text, CDATA and attribute values | SQLi, XSS, traversal, Log4Shell, shellshock, RCE, Java |
//! | an XML body's document type declaration (`xml:!DOCTYPE`) | traversal (XXE naming a local file), RCE, Log4Shell, Java |
//! | multipart file names (not file contents) | same, plus JSP uploads (Java) |
//! | `User-Agent`, `Referer`, `X-Forwarded-For` | SQLi, XSS, Log4Shell, shellshock, RCE, Java; scanner agents (`User-Agent`) |
//! | every other header value | Log4Shell, shellshock, Java (JSP uploads in `X-Filename`) (plus SQLi, XSS, traversal, RCE at [`Paranoia::Strict`]) |
//! | a body of another type, or one that fails to parse as its type | Log4Shell and Java only for unknown types (text, binary); all detectors on the raw body when JSON, XML or multipart fail to parse |
//!
//! The CRS 941/942 rules read the fields their CRS targets name (`ARGS`, `ARGS_NAMES`,
//! `REQUEST_COOKIES`, `REQUEST_COOKIES_NAMES`, `User-Agent`, `Referer`, every header but
//! `Cookie` for 941110/941120, `REQUEST_FILENAME` = the whole path, exempt from 941 when it is
//! plain as CRS 941010 does), with their own transformations (`transform.rs`); see below.
//!
//! Values that repeat across requests — header and cookie values, path segments and the whole
//! path, query parameter names — are remembered per thread once found clean, with the
//! detectors and CRS targets that checked them (a bounded memo, see `memo.rs`), because a
//! client's User-Agent, Referer and session cookie and an API's route words repeat on every
//! request and libinjection is the expensive part. Query and form values and bodies are always
//! inspected.
//!
//! Values are decoded first ([`decode`]): `+`, percent-decoding up to three times, `%uXXXX`,
//! HTML entities, NUL bytes removed (and reported as truncation attempts); JSON escapes are
//! decoded by the JSON parser. Detectors see the fully decoded form and, when it differs, the
//! form after one URL-decoding pass (what the application most likely sees).
//!
//! # Why libinjection plus CRS's own 941/942 regexes, and not the CRS engine
//!
//! Measured on this project's machines (`ENVIRONMENT.md`, "WAF engines, measured here"):
//! `zentinel-modsec` running CRS costs ~1.7 ms per clean GET and ~15 ms per 4 KB form at
//! paranoia level 1, with ~16.7k allocations per request and several correctness defects (chained
//! rules never complete, `t:normalizePathWin` corrupts paths, the anomaly score reads 0 under
//! CRS 4). The gateway's goal is to stay at or above nginx's plain-proxy throughput, whose whole
//! cost is ~50–75 µs of CPU per request: a CRS engine alone would cost 20× that. `libinjectionrs`
//! 0.1.1 (a pure-Rust port of libinjection, no unsafe, two small dependencies) detects 99.8 % /
//! 99.7 % of libinjection's SQLi / XSS corpora at ~9.5 µs per 100-byte value for SQLi and
//! ~0.4 µs for XSS, with 5 % false positives on libinjection's tricky-benign list against CRS's
//! 20.9 % at PL1. What it lacks — request parsing, decoding, the classes it does not cover
//! (traversal, Log4Shell, shellshock, scanners), its few known misses (`INTO OUTFILE`,
//! `LOCK IN SHARE MODE`, `IN BOOLEAN MODE`, `onerror\x0B=`, markup with NUL bytes, a value
//! starting with `or 1=1`), exclusions and findings that name the field — is what this crate
//! adds.
//!
//! libinjection alone misses much of what CRS's regexes catch (PayloadsAllTheThings: 57.5 %
//! SQL, 66.4 % XSS). So the CRS's own SQLi (942) and XSS (941) rules are vendored, not
//! interpreted: `crs/import.py` turns the two `.conf` files (CRS v4.28, commit 2cbd1d0,
//! Apache-2.0) into `crs/rules-941-942.tsv` — id, paranoia level, severity, targets,
//! transformations, regex, chained condition — and `crs.rs` compiles it once per process into
//! one `regex::bytes::RegexSet` per target and transformation pipeline, so that a clean value
//! costs one or two set scans, not 50 regex runs. CRS anomaly scoring decides (critical 5,
//! threshold 5). What is deliberately not taken from CRS: its engine (phases, `ctl`, `setvar`,
//! the other rule files — 930/932/944's classes have their own detectors here), the `@detectSQLi`/
//! `@detectXSS` rules (libinjection already runs), paranoia levels 3–4, and rule 942540, kept at
//! paranoia level 2 (see `crs/import.py`). CRS's `XML:/*` target is read as `ARGS`: the values
//! of an XML body are fields like those of a form or a JSON body.
//! Detection and cost as measured with this crate are in `bench/waf/RESULTS.md`
//! (`examples/corpus.rs`).

pub mod config;
mod crs;
pub mod decode;
pub mod finding;
mod injection;
mod java;
mod log4shell;
mod memo;
mod needles;
mod parse;
mod rce;
mod scanner;
mod shellshock;
mod transform;
mod traversal;

use std::borrow::Cow;

pub use config::{
    CrsExclusion, DEFAULT_MAX_INSPECTED_BYTES, Exclusion, FIELD_KINDS, Paranoia, WafConfig,
    WafError, check_exclusion,
};
pub use crs::{CrsError, rule_ids as crs_rule_ids, rule_message as crs_rule_message};
pub use finding::{Finding, MATCHED_MAX_CHARS, RuleId};

use config::{CompiledCrsExclusion, CompiledExclusion};
use crs::{CrsRules, Target};
use decode::{Decoded, Plus};
use finding::matched_for_log;
use memo::Class;
use parse::{Field, Kind};

/// One request as the gateway received it, borrowed: nothing is copied to build it.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// The method, e.g. `"GET"`.
    pub method: &'a str,
    /// The raw path, still percent-encoded, without the query (`/api/users/42`).
    pub path: &'a str,
    /// The raw query string without `?`, if any.
    pub query: Option<&'a str>,
    /// Every header as received (names in any case, repeated names allowed).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The `Content-Type` header value, if any.
    pub content_type: Option<&'a str>,
    /// The body as buffered by the gateway (only the first `max_inspected_bytes` are read).
    pub body: &'a [u8],
}

/// The WAF for one environment: immutable, `Send + Sync`, built once and shared by every
/// request (behind an `Arc` or the gateway's routing-table swap).
#[derive(Debug)]
pub struct Waf {
    config: WafConfig,
    /// Bit set of enabled rules ([`RuleId::bit`]).
    enabled: u8,
    exclusions: Vec<CompiledExclusion>,
    /// CRS 941/942 rules of the configured paranoia level, shared by every `Waf` (an error
    /// only if the vendored file is broken, which the tests rule out; then CRS rules are off
    /// and [`Waf::crs_load_error`] says why).
    crs: Result<&'static CrsRules, &'static CrsError>,
    crs_exclusions: Vec<CompiledCrsExclusion>,
    /// Tells this WAF's header sets from another's in the per-thread memo: two environments'
    /// WAFs may inspect different rules.
    memo_id: u64,
}

/// The next [`Waf::memo_id`].
static NEXT_MEMO_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Headers whose values are new on every request (ids, signatures, timestamps, trace context,
/// lengths). They are inspected on their own, outside the header-set memo, so that the rest of
/// a client's headers, the same from request to request, are looked up as one set.
fn per_request(name: &str) -> bool {
    // By length first: most names are then compared with one candidate or none (a loop over
    // one list of names cost 0.8k instructions more per request).
    let candidates: &[&str] = match name.len() {
        4 => &["date"],
        7 => &["baggage"],
        10 => &["tracestate"],
        11 => &["x-signature", "x-timestamp", "traceparent", "x-b3-spanid"],
        12 => &["x-request-id", "sentry-trace", "x-b3-traceid"],
        14 => &["content-length"],
        15 => &["x-amzn-trace-id"],
        16 => &["x-correlation-id"],
        17 => &["x-b3-parentspanid"],
        _ => return false,
    };
    candidates.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The longest `X-Signature` value in the form rollgate's clients send: `keyId=`, a key id of
/// up to 64 characters, `,signature=`, 64 hex digits.
const SIGNATURE_FORM_MAX: usize = 6 + 64 + 11 + 64;

/// An `X-Signature` value in the form rollgate's clients send (`keyId=<letters, digits and
/// '-'>,signature=<64 lowercase hex digits>`), copied into `form` with its 64 digits as
/// zeros; `None` for any other header or form, which is then inspected as sent. The digits are
/// new on every request, so the value would never repeat, and they cannot make or unmake
/// anything a detector looks for (no quote, space, bracket, dot, slash, `<`, `$`, `;`, and no
/// `0x`: `tests::signature_digits_change_no_verdict` checks it on random ones); the key id,
/// the part the client chooses, is inspected as ever, and the memo then remembers the value.
fn signature_form<'f>(
    name: &str,
    value: &[u8],
    form: &'f mut [u8; SIGNATURE_FORM_MAX],
) -> Option<&'f [u8]> {
    if !name.eq_ignore_ascii_case("x-signature") {
        return None;
    }
    let rest = value.strip_prefix(b"keyId=")?;
    let comma = rest.iter().position(|&b| b == b',')?;
    let (id, rest) = rest.split_at(comma);
    let digits = rest.strip_prefix(b",signature=")?;
    let id_ok =
        (1..=64).contains(&id.len()) && id.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-');
    let digits_ok = digits.len() == 64
        && digits
            .iter()
            .all(|&b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !id_ok || !digits_ok {
        return None;
    }
    let len = value.len();
    let form = form.get_mut(..len)?;
    form.copy_from_slice(value);
    form.get_mut(len - 64..)?.fill(b'0');
    Some(form)
}

/// Detectors applied to arguments (query, form, JSON, XML, multipart, cookies).
const ARGS: u8 = bits(&[
    RuleId::Sqli,
    RuleId::Xss,
    RuleId::Traversal,
    RuleId::Log4shell,
    RuleId::Shellshock,
    RuleId::Rce,
    RuleId::Java,
]);
/// Detectors applied to the headers attackers use for injection.
const ATTACK_HEADERS: u8 = bits(&[
    RuleId::Sqli,
    RuleId::Xss,
    RuleId::Log4shell,
    RuleId::Shellshock,
    RuleId::Rce,
    RuleId::Java,
]);
/// Detectors whose verdict depends only on a value's bytes, remembered by `memo`: all of
/// them (scanner agents on `User-Agent`).
const MEMOIZED: u8 = bits(&RuleId::ALL);
/// Detectors applied to every other header value.
const ANY_HEADER: u8 = bits(&[RuleId::Log4shell, RuleId::Shellshock, RuleId::Java]);
/// Detectors applied to an XML body's document type declaration.
const XML_DOCTYPE: u8 = bits(&[
    RuleId::Traversal,
    RuleId::Rce,
    RuleId::Log4shell,
    RuleId::Java,
]);
/// Detectors applied to each path segment.
const PATH_SEGMENT: u8 = bits(&[
    RuleId::Sqli,
    RuleId::Xss,
    RuleId::Log4shell,
    RuleId::Rce,
    RuleId::Java,
]);

const fn bits(rules: &[RuleId]) -> u8 {
    let mut acc = 0;
    let mut i = 0;
    while i < rules.len() {
        acc |= 1 << (rules[i] as u8);
        i += 1;
    }
    acc
}

impl Waf {
    /// Builds the WAF, rejecting an invalid configuration with its first error (use
    /// [`WafConfig::validate`] to list them all).
    pub fn new(config: WafConfig) -> Result<Waf, WafError> {
        if let Err(mut errors) = config.validate()
            && !errors.is_empty()
        {
            return Err(errors.swap_remove(0));
        }
        let enabled = [
            (config.sqli, RuleId::Sqli),
            (config.xss, RuleId::Xss),
            (config.traversal, RuleId::Traversal),
            (config.log4shell, RuleId::Log4shell),
            (config.shellshock, RuleId::Shellshock),
            (config.scanners, RuleId::Scanner),
            (config.rce, RuleId::Rce),
            (config.java, RuleId::Java),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0, |acc, (_, r)| acc | r.bit());
        let exclusions = config
            .exclusions
            .iter()
            .map(CompiledExclusion::new)
            .collect();
        let crs = crs::rules(config.paranoia);
        Ok(Waf {
            config,
            enabled,
            exclusions,
            crs,
            crs_exclusions: Vec::new(),
            memo_id: NEXT_MEMO_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// Switches single CRS rules off under path prefixes (see [`CrsExclusion`]); replaces any
    /// earlier list. Rejects an unknown rule id, a prefix not starting with `/`, an empty rule
    /// list or an invalid field pattern, naming the first such exclusion.
    pub fn with_crs_exclusions(mut self, exclusions: &[CrsExclusion]) -> Result<Waf, CrsError> {
        let known = crs_rule_ids(Paranoia::Strict);
        for (index, ex) in exclusions.iter().enumerate() {
            let invalid = |reason: String| CrsError::InvalidExclusion { index, reason };
            if !ex.path_prefix.starts_with('/') {
                return Err(invalid(format!(
                    "path_prefix: expected a path starting with '/', got {:?}",
                    ex.path_prefix
                )));
            }
            if ex.rules.is_empty() {
                return Err(invalid("rules: name at least one CRS rule id".to_owned()));
            }
            if let Some(&id) = ex.rules.iter().find(|id| !known.contains(id)) {
                return Err(CrsError::UnknownRule { index, id });
            }
            if let Some(field) = ex.fields.iter().find(|f| !config::is_field_pattern(f)) {
                return Err(invalid(format!("fields: {field:?} is not a field")));
            }
        }
        self.crs_exclusions = exclusions.iter().map(CompiledCrsExclusion::new).collect();
        Ok(self)
    }

    /// Why the vendored CRS rules could not be loaded, if they could not (never with the
    /// checked-in file: `crs::tests::every_vendored_rule_compiles`).
    pub fn crs_load_error(&self) -> Option<&CrsError> {
        self.crs.err()
    }

    /// The configuration this WAF was built from.
    pub fn config(&self) -> &WafConfig {
        &self.config
    }

    /// Inspects one request; returns every match (empty = clean), in the order path, query,
    /// headers (cookies included), body. Pure and cheap on clean traffic: values that cannot
    /// carry an injection skip libinjection, and clean values are not copied.
    pub fn inspect(&self, req: &RequestView<'_>) -> Vec<Finding> {
        let mut run = Run {
            waf: self,
            exclusions: self
                .exclusions
                .iter()
                .filter(|e| req.path.starts_with(e.path_prefix.as_str()))
                .collect(),
            crs_exclusions: self
                .crs_exclusions
                .iter()
                .filter(|e| req.path.starts_with(e.path_prefix.as_str()))
                .collect(),
            crs_score: 0,
            crs_hits: Vec::new(),
            findings: Vec::new(),
        };
        if self.enabled == 0 {
            return run.findings;
        }
        run.path(req.path);
        let mut fields = Vec::new();
        if let Some(query) = req.query {
            parse::pairs(query.as_bytes(), Kind::Query, Kind::QueryKey, &mut fields);
        }
        for field in fields.drain(..) {
            run.check(&field, ARGS);
        }
        self.headers(&mut run, req.headers);
        self.body(&mut run, req);
        // CRS anomaly scoring: CRS matches block only together (critical 5, error 4, warning
        // 3, notice 2; threshold 5), unless another detector already flagged the request.
        if run.crs_score < crs::INBOUND_THRESHOLD
            && run.findings.iter().all(|f| f.crs_rule.is_some())
        {
            run.findings.clear();
        }
        run.findings
    }

    fn headers(&self, run: &mut Run<'_>, headers: &[(&str, &[u8])]) {
        // The header set (every header but the per-request ones) as one memo key. Without
        // exclusions that apply to this path, what the headers are found to be depends only on
        // this WAF and their names and values in order.
        let mut key = memo::take_key();
        let keyed = run.exclusions.is_empty()
            && run.crs_exclusions.is_empty()
            && self.header_set_key(headers, &mut key);
        let known = keyed && memo::set_known_clean(&key);
        let before = (run.findings.len(), run.crs_score);
        self.check_headers(run, headers, known);
        if keyed && !known && (run.findings.len(), run.crs_score) == before {
            memo::remember_set(&key);
        }
        memo::put_key(key);
    }

    /// Writes the memo key of `headers` into `key`; false when it is too long to remember.
    /// Lengths go before names and values, so that no two sets share a key.
    fn header_set_key(&self, headers: &[(&str, &[u8])], key: &mut Vec<u8>) -> bool {
        key.reserve(
            headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 8)
                .sum::<usize>()
                .min(memo::MAX_SET_LEN)
                + 8,
        );
        key.extend_from_slice(&self.memo_id.to_le_bytes());
        for &(name, value) in headers {
            if per_request(name) {
                continue;
            }
            if key.len() + name.len() + value.len() + 8 > memo::MAX_SET_LEN {
                return false;
            }
            for part in [name.as_bytes(), value] {
                let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
                key.extend_from_slice(&len.to_le_bytes());
                key.extend_from_slice(part);
            }
        }
        true
    }

    /// Inspects every header, or with `set_known_clean` only the per-request ones.
    fn check_headers(&self, run: &mut Run<'_>, headers: &[(&str, &[u8])], set_known_clean: bool) {
        let mut cookie_fields = Vec::new();
        let mut form = [0u8; SIGNATURE_FORM_MAX];
        for &(name, value) in headers {
            let changing = per_request(name);
            if set_known_clean && !changing {
                continue;
            }
            let mask = if name.eq_ignore_ascii_case("cookie") {
                parse::cookies(value, &mut cookie_fields);
                ANY_HEADER
            } else if name.eq_ignore_ascii_case("user-agent") {
                let field = header_field(name, value);
                let scanner = RuleId::Scanner.bit();
                if run.enabled_for(&field, scanner) != 0 {
                    let known = memo::known_clean(Class::Header, value);
                    if known & u16::from(scanner) == 0 {
                        if scanner::is_scanner_agent(value) {
                            run.report(&field, RuleId::Scanner, value, None);
                        } else {
                            memo::remember_clean(Class::Header, value, u16::from(scanner));
                        }
                    }
                }
                ATTACK_HEADERS
            } else if name.eq_ignore_ascii_case("referer")
                || name.eq_ignore_ascii_case("x-forwarded-for")
            {
                ATTACK_HEADERS
            } else if self.config.paranoia == Paranoia::Strict {
                ATTACK_HEADERS | ANY_HEADER | RuleId::Traversal.bit()
            } else {
                ANY_HEADER
            };
            match signature_form(name, value, &mut form) {
                // The same from request to request: remembered like any header value.
                Some(form) => run.check(&header_field(name, form), mask),
                // New on every request: remembering them would only push out the values
                // that do repeat.
                None if changing => run.check_as(&header_field(name, value), mask, None),
                None => run.check(&header_field(name, value), mask),
            }
        }
        for field in &cookie_fields {
            run.check(field, ARGS);
        }
    }

    fn body(&self, run: &mut Run<'_>, req: &RequestView<'_>) {
        let limit = self.config.max_inspected_bytes.min(req.body.len());
        if limit == 0 {
            return;
        }
        let body = &req.body[..limit];
        let content_type = req.content_type.unwrap_or_default();
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        let raw_body = Field {
            kind: Kind::Body,
            name: Cow::Borrowed(b""),
            value: Cow::Borrowed(body),
        };
        let mut fields = Vec::new();
        // A parsed XML body, read whole once more after its values (below).
        let mut xml_body = None;
        if essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            parse::pairs(body, Kind::Form, Kind::FormKey, &mut fields);
        } else if is_json(essence) {
            if !parse::json(body, &mut fields) {
                // Not JSON (or cut at the inspection limit): a lenient backend may still read
                // it, so it is inspected whole rather than waved through.
                fields.push(raw_body);
            }
        } else if is_xml(essence) {
            if parse::xml(body, &mut fields) {
                xml_body = Some(raw_body);
            } else {
                // Malformed, cut at the inspection limit or not UTF-8: inspected whole, as JSON.
                fields.push(raw_body);
            }
        } else if essence.eq_ignore_ascii_case("multipart/form-data") {
            match parse::multipart_boundary(content_type) {
                Some(boundary) => parse::multipart(body, boundary, &mut fields),
                None => fields.push(raw_body),
            }
        } else {
            // Other types (text, binary) are not parsed; a JNDI lookup is dangerous in any
            // of them, because Java backends log bodies, and so are serialized objects and
            // gadget class names (XStream, XMLDecoder and deserializing endpoints).
            run.check_own(&raw_body, RuleId::Log4shell.bit() | RuleId::Java.bit(), 0);
            return;
        }
        for field in &fields {
            // An XML document type declaration is declarations, not data: what matters there
            // is what they point at (XXE: `SYSTEM "file:///etc/passwd"`, `"expect://id"`),
            // while markup and quotes are their syntax.
            let mask = if field.kind == Kind::XmlDoctype {
                XML_DOCTYPE
            } else {
                ARGS
            };
            run.check(field, mask);
        }
        if let Some(xml_body) = xml_body {
            // What the values do not show: gadget classes as element names (XStream's
            // `<java.lang.ProcessBuilder>`) and JNDI lookups in comments, which a Java backend
            // may still deserialize or log. Checked on the whole body, as for bodies of other
            // types, unless a value already reported them.
            let whole = [RuleId::Log4shell, RuleId::Java]
                .into_iter()
                .filter(|&rule| !run.findings.iter().any(|f| f.rule == rule))
                .fold(0, |mask, rule| mask | rule.bit());
            if whole != 0 {
                run.check_own(&xml_body, whole, 0);
            }
        }
    }
}

/// `application/xml`, `text/xml` and the `+xml` types (`application/soap+xml`, Atom, …).
fn is_xml(essence: &str) -> bool {
    essence.eq_ignore_ascii_case("application/xml")
        || essence.eq_ignore_ascii_case("text/xml")
        || has_suffix(essence, "+xml")
}

fn is_json(essence: &str) -> bool {
    essence.eq_ignore_ascii_case("application/json") || has_suffix(essence, "+json")
}

/// A structured-syntax suffix (`application/soap+xml`, `application/problem+json`), in any case.
fn has_suffix(essence: &str, suffix: &str) -> bool {
    essence
        .get(essence.len().saturating_sub(suffix.len())..)
        .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
}

/// How [`Run::check`] remembers `field` when it is one of the values that repeat across
/// requests (`memo`'s docs): header and cookie values, path segments, query parameter names
/// (the whole path is remembered by [`Run::path`] itself). File-name headers are checked by
/// name as well, so they are not remembered.
fn memo_class(field: &Field<'_>) -> Option<Class> {
    match field.kind {
        Kind::Header | Kind::Cookie if !is_upload_name(field) => Some(Class::Header),
        Kind::Path => Some(Class::PathSegment),
        Kind::QueryKey => Some(Class::QueryKey),
        _ => None,
    }
}

/// The own detectors' bits of a memo entry.
fn memo_own(known: u16) -> u8 {
    u8::try_from(known & u16::from(MEMOIZED)).unwrap_or(0)
}

/// A field naming an uploaded file: a multipart file name or an `X-Filename`-style header.
fn is_upload_name(field: &Field<'_>) -> bool {
    match field.kind {
        Kind::MultipartFilename => true,
        Kind::Header => {
            let name = &*field.name;
            [
                &b"x-filename"[..],
                b"x_filename",
                b"x-file-name",
                b"x-file_name",
            ]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        }
        _ => false,
    }
}

fn header_field<'a>(name: &'a str, value: &'a [u8]) -> Field<'a> {
    Field {
        kind: Kind::Header,
        name: Cow::Borrowed(name.as_bytes()),
        value: Cow::Borrowed(value),
    }
}

/// The state of one inspection: the exclusions that apply to this path and what was found.
struct Run<'w> {
    waf: &'w Waf,
    exclusions: Vec<&'w CompiledExclusion>,
    crs_exclusions: Vec<&'w CompiledCrsExclusion>,
    /// The CRS anomaly score of the CRS matches so far.
    crs_score: u32,
    /// Scratch space for one field's CRS matches, kept to avoid an allocation per field.
    crs_hits: Vec<crs::Hit>,
    findings: Vec<Finding>,
}

impl Run<'_> {
    /// The whole path: scanner probes and traversal on the decoded path, then injection
    /// detectors per segment (an id, a slug or a file name each).
    fn path(&mut self, raw: &str) {
        let whole = Field {
            kind: Kind::Path,
            name: Cow::Borrowed(b""),
            value: Cow::Borrowed(raw.as_bytes()),
        };
        // Route paths repeat: remember those found clean (see `memo`).
        let known = memo::known_clean(Class::Path, raw.as_bytes());
        let mut clean = 0u16;
        let whole_rules = RuleId::Traversal.bit() | RuleId::Scanner.bit();
        let enabled = self.enabled_for(&whole, whole_rules) & !memo_own(known);
        if enabled != 0 {
            let decoded = decode::decode(raw.as_bytes(), Plus::Literal);
            let mut found = false;
            if enabled & RuleId::Scanner.bit() != 0 && scanner::is_probe_path(&decoded.full) {
                found = true;
                self.report(&whole, RuleId::Scanner, &decoded.full, None);
            }
            if enabled & RuleId::Traversal.bit() != 0
                && traversal::check(&decoded.full, decoded.had_nul).is_some()
            {
                found = true;
                self.report(&whole, RuleId::Traversal, &decoded.full, None);
            }
            if !found {
                clean |= u16::from(enabled);
            }
        }
        for segment in raw.as_bytes().split(|&b| b == b'/') {
            if segment.is_empty() {
                continue;
            }
            let field = Field {
                kind: Kind::Path,
                name: Cow::Borrowed(b""),
                value: Cow::Borrowed(segment),
            };
            self.check(&field, PATH_SEGMENT);
        }
        // CRS's REQUEST_FILENAME rules read the whole path; after the segments, so that a
        // segment's own finding is not repeated as a CRS one.
        clean |= self.crs(&whole, known);
        if clean != 0 {
            memo::remember_clean(Class::Path, raw.as_bytes(), clean);
        }
    }

    /// The rules of `mask` that are enabled and not excluded for this field.
    fn enabled_for(&self, field: &Field<'_>, mask: u8) -> u8 {
        let mut mask = mask & self.waf.enabled;
        if mask != 0 && !self.exclusions.is_empty() {
            let label = field.label();
            for ex in &self.exclusions {
                mask &= !ex.skipped_rules(&label);
            }
        }
        mask
    }

    /// Runs CRS's 941/942 rules that target this field's kind on it, and reports the first
    /// rule of each family that matched unless rollgate's own detector of that family already
    /// reported this field.
    ///
    /// `known` is what the memo knows of the value (0 when it is not remembered); returns the
    /// memo bit of this target and paranoia level when the rules found it clean, else 0 (the
    /// caller remembers it if the value is one the memo keeps).
    fn crs(&mut self, field: &Field<'_>, known: u16) -> u16 {
        let Ok(rules) = self.waf.crs else {
            return 0;
        };
        let Some(target) = crs_target(field) else {
            return 0;
        };
        if !rules.targets(target) {
            return 0;
        }
        let families = self.enabled_for(field, RuleId::Sqli.bit() | RuleId::Xss.bit());
        if families == 0 {
            return 0;
        }
        // The verdict depends only on the bytes, the target and the paranoia level.
        let memo_bit = crs::memo_bit(target, self.waf.config.paranoia);
        if known & memo_bit != 0 {
            return 0;
        }
        // What CRS's request parser hands the rules: query and form pairs decoded once (then
        // each rule's t:urlDecodeUni decodes again), the path decoded once, the rest raw.
        let base: Cow<'_, [u8]> = match field.kind {
            Kind::Query | Kind::QueryKey | Kind::Form | Kind::FormKey | Kind::Path => {
                decode::percent_decode_once(&field.value, field.kind.plus())
                    .map_or(Cow::Borrowed(&*field.value), Cow::Owned)
            }
            _ => Cow::Borrowed(&*field.value),
        };
        let plain_path = target == Target::Filename && crs::is_plain_path(&base);
        let mut hits = std::mem::take(&mut self.crs_hits);
        hits.clear();
        rules.scan(target, &base, plain_path, &mut hits);
        let clean = if hits.is_empty() { memo_bit } else { 0 };
        if !hits.is_empty() {
            let label = (!self.crs_exclusions.is_empty()).then(|| field.label());
            for hit in &hits {
                let Some(rule) = rules.rule(hit.rule) else {
                    continue;
                };
                if families & rule.family.bit() == 0 {
                    continue;
                }
                if let Some(label) = &label
                    && self.crs_exclusions.iter().any(|e| e.skips(rule.id, label))
                {
                    continue;
                }
                self.crs_score += rule.severity.score();
                self.report_crs(field, rule.family, rule.id, &hit.matched);
            }
        }
        self.crs_hits = hits;
        clean
    }

    fn report_crs(&mut self, field: &Field<'_>, family: RuleId, id: u32, matched: &[u8]) {
        let label = field.label();
        if self
            .findings
            .iter()
            .any(|f| f.rule == family && f.field == label)
        {
            return;
        }
        self.findings.push(Finding {
            rule: family,
            field: label,
            matched: matched_for_log(matched),
            fingerprint: None,
            crs_rule: Some(id),
        });
    }

    /// Runs rollgate's own detectors of `mask` and the CRS rules on one field (on a path
    /// segment only the former: CRS reads the whole path), skipping what the memo knows.
    fn check(&mut self, field: &Field<'_>, mask: u8) {
        self.check_as(field, mask, memo_class(field));
    }

    /// [`Run::check`] with the memo class the caller chose (`None`: a value that is never
    /// looked up nor remembered).
    fn check_as(&mut self, field: &Field<'_>, mask: u8, class: Option<Class>) {
        let known = class.map_or(0, |class| memo::known_clean(class, &field.value));
        let mut clean = self.check_own(field, mask, known);
        if field.kind != Kind::Path {
            clean |= self.crs(field, known);
        }
        if let Some(class) = class
            && clean != 0
        {
            memo::remember_clean(class, &field.value, clean);
        }
    }

    /// Runs rollgate's own detectors of `mask` on one field's decoded forms, except those
    /// the memo `known` says found it clean; returns the memo bits of the detectors that ran
    /// and found it clean (0 when any found something), for the caller to remember if the
    /// value is one the memo keeps.
    fn check_own(&mut self, field: &Field<'_>, mask: u8, known: u16) -> u16 {
        let mask = self.enabled_for(field, mask) & !memo_own(known);
        if mask == 0 {
            return 0;
        }
        // Ids, counts and page numbers, the commonest values of an API: ASCII digits decode to
        // themselves and no detector can report them (SQLi and XSS need more than one token,
        // traversal a dot or a slash, Log4Shell `${`, shellshock `() {`, RCE a separator or a
        // command word, Java a letter). `tests::digits_are_clean_to_every_detector` checks it.
        // Not remembered: this is cheaper than the memo, and ids would only crowd it.
        if field.value.iter().all(u8::is_ascii_digit) && !field.value.is_empty() {
            return 0;
        }
        let mut memo_hit = false;
        let d = decode::decode(&field.value, field.kind.plus());
        let has = |r: RuleId| mask & r.bit() != 0;
        if has(RuleId::Sqli) {
            let hit =
                injection::sqli(&d.full).or_else(|| distinct_once(&d).and_then(injection::sqli));
            if let Some(hit) = hit {
                memo_hit = true;
                self.report(field, RuleId::Sqli, &d.full, hit.fingerprint);
            }
        }
        if has(RuleId::Xss)
            && (injection::xss(&d.full) || distinct_once(&d).is_some_and(injection::xss))
        {
            memo_hit = true;
            self.report(field, RuleId::Xss, &d.full, None);
        }
        if has(RuleId::Traversal) && traversal::check(&d.full, d.had_nul).is_some() {
            memo_hit = true;
            self.report(field, RuleId::Traversal, &d.full, None);
        }
        if has(RuleId::Log4shell) && log4shell::check(&d.full) {
            memo_hit = true;
            self.report(field, RuleId::Log4shell, &d.full, None);
        }
        if has(RuleId::Shellshock)
            && (shellshock::check(&d.full) || distinct_once(&d).is_some_and(shellshock::check))
        {
            memo_hit = true;
            self.report(field, RuleId::Shellshock, &d.full, None);
        }
        if has(RuleId::Rce) && (rce::check(&d.full) || distinct_once(&d).is_some_and(rce::check)) {
            memo_hit = true;
            self.report(field, RuleId::Rce, &d.full, None);
        }
        if has(RuleId::Java)
            && (java::check(&d.full)
                || distinct_once(&d).is_some_and(java::check)
                || (is_upload_name(field) && java::jsp_filename(&d.full)))
        {
            memo_hit = true;
            self.report(field, RuleId::Java, &d.full, None);
        }
        // Remember only what was inspected here and found clean (not a value whose finding
        // was merely deduplicated).
        if memo_hit {
            0
        } else {
            u16::from(mask & MEMOIZED)
        }
    }

    fn report(
        &mut self,
        field: &Field<'_>,
        rule: RuleId,
        value: &[u8],
        fingerprint: Option<String>,
    ) {
        let finding = Finding {
            rule,
            field: field.label(),
            matched: matched_for_log(value),
            fingerprint,
            crs_rule: None,
        };
        if !self.findings.contains(&finding) {
            self.findings.push(finding);
        }
    }
}

/// The CRS target of a field, `None` for those CRS does not inspect (multipart file names are
/// `FILES`; a body of an unparsed type is not `ARGS`). The path segments are not targets
/// either: the whole path is `REQUEST_FILENAME`.
fn crs_target(field: &Field<'_>) -> Option<Target> {
    Some(match field.kind {
        // XML text and attribute values stand for CRS's `XML:/*`, which the 941/942 rules read
        // wherever they read `ARGS`.
        Kind::Query | Kind::Form | Kind::Json | Kind::Xml | Kind::Multipart | Kind::Body => {
            Target::Args
        }
        Kind::QueryKey | Kind::FormKey | Kind::JsonKey => Target::ArgNames,
        Kind::Cookie => Target::Cookies,
        Kind::CookieName => Target::CookieNames,
        Kind::Path => Target::Filename,
        Kind::MultipartFilename | Kind::XmlDoctype => return None,
        Kind::Header => {
            let name = &*field.name;
            if name.eq_ignore_ascii_case(b"user-agent") {
                Target::UserAgent
            } else if name.eq_ignore_ascii_case(b"referer") {
                Target::Referer
            } else if name.eq_ignore_ascii_case(b"cookie") {
                Target::CookieHeader
            } else {
                Target::OtherHeader
            }
        }
    })
}

/// The once-decoded form when it differs from the fully decoded one: a value whose second
/// decoding pass destroys the payload (`%27` inside a string that was meant literally) is
/// still seen as the application sees it.
fn distinct_once<'d>(d: &'d Decoded<'_>) -> Option<&'d [u8]> {
    (d.once != d.full).then_some(&*d.once)
}

#[cfg(test)]
mod tests;

/// A fixed-seed xorshift64 generator for the randomized tests: the same numbers on every run.
#[cfg(test)]
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}
