//! `[env.NAME.edge]`: the edge policy of one environment's gateway — trusted proxies, IP allow
//! and deny lists, the per-client rate limit, the WAF and the request limits — as a typed model
//! and its validation.
//!
//! This is a child module of `config` (declared there with `#[path]`) so that it reuses the
//! file's table helpers and error collection: every problem names the file and the full key,
//! e.g. `env.prod.edge.rate_limit.per`. The user documentation of every key is `docs/edge.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use rollgate_waf::{CrsExclusion, Exclusion, Paranoia, RuleId, WafConfig, WafError};
use serde::Serialize;

use super::{Cx, T, ms};

#[path = "edge_auth.rs"]
pub mod auth;
#[path = "edge_geo.rs"]
pub mod geo;

pub use auth::{
    AuthConfig, AuthRequirement, AuthRoute, KeyFileEntry, KeyRef, KeyUse, parse_keys_file,
};
pub use geo::GeoConfig;

/// Default per-client rate limit: 2000 requests per 5 minutes, as the AWS WAF rate-based rule
/// rollgate replaces.
pub const DEFAULT_RATE_REQUESTS: u32 = 2000;
/// The period of [`DEFAULT_RATE_REQUESTS`].
pub const DEFAULT_RATE_PER: Duration = Duration::from_secs(300);

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeMode {
    /// Answer the request early (403, 429, …). The default.
    #[default]
    Block,
    /// Log and count the decision exactly as `block` would, and let the request go on.
    Count,
}

impl EdgeMode {
    /// `"block"` or `"count"`, as in the configuration and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeMode::Block => "block",
            EdgeMode::Count => "count",
        }
    }
}

/// An IP range in CIDR notation (`203.0.113.0/24`, `2001:db8::/32`); a bare address is a
/// range of one. IPv4-mapped IPv6 client addresses (`::ffff:1.2.3.4`) match IPv4 ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, host bits zero.
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or a bare address. Host bits must be zero (`10.0.0.1/8` is refused,
    /// since it usually means a typo), so that what is written is what matches.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("expected an IP range like \"203.0.113.0/24\", got {text:?}"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => {
                    return Err(format!(
                        "expected a prefix length from 0 to {max} after '/', got {text:?}"
                    ));
                }
            },
        };
        let cidr = Cidr {
            network: mask(network, prefix),
            prefix,
        };
        if cidr.network != network {
            return Err(format!(
                "{text:?} has host bits set; did you mean \"{cidr}\"?"
            ));
        }
        Ok(cidr)
    }

    /// True when `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix) == self.network
    }
}

/// `ip` with every bit after the first `prefix` cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & keep))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & keep))
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `[env.NAME.edge]`. `Default` is what an empty table means: block mode, no trusted proxies,
/// no IP lists, the rate limit at 2000 requests per 5 minutes per client IP, every WAF
/// detector on, and the default request limits.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EdgeConfig {
    /// The mode of every rule that does not set its own; default `block`.
    pub mode: EdgeMode,
    /// Peers whose `X-Forwarded-For` is believed; default none (the socket peer is the client).
    pub trusted_proxies: Vec<Cidr>,
    /// When non-empty, clients outside these ranges are refused (403 `ip_denied`); default empty.
    pub allow_ips: Vec<Cidr>,
    /// Clients in these ranges are refused (403 `ip_denied`); default empty.
    pub deny_ips: Vec<Cidr>,
    /// Mode of `allow_ips` and `deny_ips`; default `mode`.
    pub ip_mode: EdgeMode,
    /// Per-client-IP rate limit; `None` when `rate_limit = false`.
    pub rate_limit: Option<RateLimitConfig>,
    /// Request inspection; `None` when `waf = false`.
    pub waf: Option<WafSettings>,
    /// Header and body size limits and read timeouts (these always block).
    pub limits: RequestLimits,
    /// Country allow or deny list; default none.
    pub geo: Option<GeoConfig>,
    /// `[env.NAME.edge.auth]`: API keys, signatures, per-key rate limit; default none.
    pub auth: Option<AuthConfig>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            mode: EdgeMode::Block,
            trusted_proxies: Vec::new(),
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            ip_mode: EdgeMode::Block,
            rate_limit: Some(RateLimitConfig::default()),
            waf: Some(WafSettings::default()),
            limits: RequestLimits::default(),
            geo: None,
            auth: None,
        }
    }
}

/// `rate_limit`: `requests` per `per` for each client IP (IPv6 clients by their /64), as a
/// token bucket that refills evenly; over it, 429 `rate_limited` with `Retry-After`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RateLimitConfig {
    /// Requests allowed per period, also the burst; default 2000.
    pub requests: u32,
    /// The period; default 5 minutes.
    #[serde(with = "ms")]
    pub per: Duration,
    /// Default the edge `mode`.
    pub mode: EdgeMode,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests: DEFAULT_RATE_REQUESTS,
            per: DEFAULT_RATE_PER,
            mode: EdgeMode::Block,
        }
    }
}

/// `waf`: which detectors run, each with its mode, and where they look.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WafSettings {
    /// The detectors that run and the mode of each; default all six in the edge `mode`.
    pub rules: BTreeMap<RuleId, EdgeMode>,
    /// `true` for `paranoia = "strict"`: SQLi/XSS/traversal on every header; default false.
    pub strict: bool,
    /// Body bytes inspected; default 64 KiB; 0 skips bodies.
    pub max_inspected_bytes: usize,
    /// Per path-prefix exceptions; default none.
    pub exclusions: Vec<WafExclusion>,
}

impl Default for WafSettings {
    fn default() -> Self {
        WafSettings {
            rules: RuleId::ALL.iter().map(|r| (*r, EdgeMode::Block)).collect(),
            strict: false,
            max_inspected_bytes: rollgate_waf::DEFAULT_MAX_INSPECTED_BYTES,
            exclusions: Vec::new(),
        }
    }
}

/// One `waf.exclusions` entry; see [`rollgate_waf::Exclusion`]. `rules` may name detectors
/// (`"sqli"`) and single OWASP CRS rules (`"crs-942190"`, kept in `crs_rules`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WafExclusion {
    pub path_prefix: String,
    pub rules: Vec<RuleId>,
    pub crs_rules: Vec<u32>,
    pub fields: Vec<String>,
}

impl WafExclusion {
    /// Whether this entry switches off only single CRS rules (then it is no detector-level
    /// exclusion: an empty detector list there would mean "every detector").
    fn crs_only(&self) -> bool {
        self.rules.is_empty() && !self.crs_rules.is_empty()
    }
}

impl WafSettings {
    /// The detection crate's configuration: the detectors of `rules` on, the others off.
    pub fn waf_config(&self) -> WafConfig {
        let on = |r: RuleId| self.rules.contains_key(&r);
        WafConfig {
            sqli: on(RuleId::Sqli),
            xss: on(RuleId::Xss),
            traversal: on(RuleId::Traversal),
            log4shell: on(RuleId::Log4shell),
            shellshock: on(RuleId::Shellshock),
            scanners: on(RuleId::Scanner),
            rce: on(RuleId::Rce),
            java: on(RuleId::Java),
            max_inspected_bytes: self.max_inspected_bytes,
            paranoia: if self.strict {
                Paranoia::Strict
            } else {
                Paranoia::Normal
            },
            exclusions: self
                .exclusions
                .iter()
                .filter(|e| !e.crs_only())
                .map(|e| Exclusion {
                    path_prefix: e.path_prefix.clone(),
                    rules: e.rules.clone(),
                    fields: e.fields.clone(),
                })
                .collect(),
        }
    }

    /// The entries naming single CRS rules, for [`rollgate_waf::Waf::with_crs_exclusions`].
    pub fn crs_exclusions(&self) -> Vec<CrsExclusion> {
        self.exclusions
            .iter()
            .filter(|e| !e.crs_rules.is_empty())
            .map(|e| CrsExclusion {
                path_prefix: e.path_prefix.clone(),
                rules: e.crs_rules.clone(),
                fields: e.fields.clone(),
            })
            .collect()
    }
}

/// `limits`: protections of the listener itself. They always block: a request over a limit
/// cannot be served as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RequestLimits {
    /// Request line plus headers, in bytes; default 32 KiB; over it 431 `headers_too_large`.
    pub max_header_bytes: usize,
    /// Header fields; default 100; over it 431 `headers_too_large`.
    pub max_headers: usize,
    /// Body bytes; default 8 MiB; over it 413 `body_too_large`.
    pub max_body_bytes: usize,
    /// Time to receive the request line and headers; default 10 s; then the connection closes.
    #[serde(with = "ms")]
    pub header_timeout: Duration,
    /// Time to receive the whole body once the headers are in; default 30 s; then 408
    /// `body_timeout`.
    #[serde(with = "ms")]
    pub body_timeout: Duration,
    /// Time the client may take no bytes of its answer while the gateway has some to send;
    /// default 60 s (nginx's `send_timeout`); then the connection closes.
    #[serde(with = "ms")]
    pub send_timeout: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 8 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
        }
    }
}

const KEYS: &[&str] = &[
    "mode",
    "trusted_proxies",
    "allow_ips",
    "deny_ips",
    "ip_mode",
    "rate_limit",
    "waf",
    "limits",
    "geo",
    "auth",
];
const WAF_KEYS: &[&str] = &[
    "mode",
    "sqli",
    "xss",
    "traversal",
    "log4shell",
    "shellshock",
    "scanners",
    "rce",
    "java",
    "paranoia",
    "max_inspected",
    "exclusions",
];
const LIMIT_KEYS: &[&str] = &[
    "max_header_bytes",
    "max_headers",
    "max_body",
    "header_timeout",
    "body_timeout",
    "send_timeout",
];
const RATE_HELP: &str = "expected false, a rate like \"2000/5m\" or { requests = 2000, per = \"5m\", mode = \"block\" }";

/// Parses `env.NAME.edge` of the environment table `env`; `None` when absent or wrong (the
/// errors are in `cx`).
pub(super) fn parse(env: &T<'_>, cx: &mut Cx) -> Option<EdgeConfig> {
    let t = env.table("edge", cx)?;
    cx.only(&t, KEYS);
    let mode = mode(&t, "mode", EdgeMode::Block, cx);
    let ip_mode = self::mode(&t, "ip_mode", mode, cx);
    let rate_limit = parse_rate_limit(&t, mode, cx);
    let waf = parse_waf(&t, mode, cx);
    let limits = parse_limits(&t, cx);
    let geo = geo::parse(&t, mode, cx);
    let auth = auth::parse(&t, mode, cx);
    Some(EdgeConfig {
        mode,
        trusted_proxies: cidrs(&t, "trusted_proxies", cx),
        allow_ips: cidrs(&t, "allow_ips", cx),
        deny_ips: cidrs(&t, "deny_ips", cx),
        ip_mode,
        rate_limit,
        waf,
        limits,
        geo,
        auth,
    })
}

fn mode(t: &T<'_>, k: &str, default: EdgeMode, cx: &mut Cx) -> EdgeMode {
    match t.string(k, cx).as_deref() {
        None => default,
        Some("block") => EdgeMode::Block,
        Some("count") => EdgeMode::Count,
        Some(other) => {
            cx.err(
                &t.child(k),
                format!("expected \"block\" or \"count\", got {other:?}"),
            );
            default
        }
    }
}

fn cidrs(t: &T<'_>, k: &str, cx: &mut Cx) -> Vec<Cidr> {
    let mut out = Vec::new();
    for (i, text) in t.string_list(k, cx).unwrap_or_default().iter().enumerate() {
        match Cidr::parse(text) {
            Ok(c) => out.push(c),
            Err(msg) => cx.err(&format!("{}[{i}]", t.child(k)), msg),
        }
    }
    out
}

fn parse_rate_limit(t: &T<'_>, mode: EdgeMode, cx: &mut Cx) -> Option<RateLimitConfig> {
    let default = RateLimitConfig {
        mode,
        ..RateLimitConfig::default()
    };
    parse_rate_limit_as(t, mode, default, cx)
}

/// `rate_limit` of table `t` with `default` when absent or `true` (the per-key limit of
/// `auth` has other defaults than the per-IP one).
fn parse_rate_limit_as(
    t: &T<'_>,
    mode: EdgeMode,
    default: RateLimitConfig,
    cx: &mut Cx,
) -> Option<RateLimitConfig> {
    let key = t.child("rate_limit");
    let Some(v) = t.table.get("rate_limit") else {
        return Some(default);
    };
    if let Some(on) = v.as_bool() {
        return on.then_some(default);
    }
    if let Some(text) = v.as_str() {
        return match parse_rate(text) {
            Some((requests, per)) => check_rate(&key, requests, per, mode, cx),
            None => {
                cx.err(&key, format!("{RATE_HELP}, got {text:?}"));
                None
            }
        };
    }
    let rt = t.table("rate_limit", cx)?;
    cx.only(&rt, &["requests", "per", "mode"]);
    let requests = rt
        .int("requests", 1, 1_000_000, cx)
        .map_or(default.requests, |n| n as u32);
    let per = rt.duration("per", cx).unwrap_or(default.per);
    let mode = self::mode(&rt, "mode", mode, cx);
    check_rate(&rt.child("per"), requests, per, mode, cx)
}

fn check_rate(
    key: &str,
    requests: u32,
    per: Duration,
    mode: EdgeMode,
    cx: &mut Cx,
) -> Option<RateLimitConfig> {
    if per < Duration::from_secs(1) || per > Duration::from_secs(86_400) {
        cx.err(
            key,
            format!(
                "expected a period from 1s to 24h, got {}",
                humantime::format_duration(per)
            ),
        );
        return None;
    }
    Some(RateLimitConfig {
        requests,
        per,
        mode,
    })
}

/// `"2000/5m"` → (2000, 5 minutes); `"100/s"` means one second.
fn parse_rate(text: &str) -> Option<(u32, Duration)> {
    let (n, per) = text.split_once('/')?;
    let n = n
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))?;
    let per = per.trim();
    let per = match per {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        other => humantime::parse_duration(other).ok()?,
    };
    Some((n, per))
}

fn parse_waf(t: &T<'_>, mode: EdgeMode, cx: &mut Cx) -> Option<WafSettings> {
    let default = WafSettings {
        rules: RuleId::ALL.iter().map(|r| (*r, mode)).collect(),
        ..WafSettings::default()
    };
    let Some(v) = t.table.get("waf") else {
        return Some(default);
    };
    if let Some(on) = v.as_bool() {
        return on.then_some(default);
    }
    let wt = t.table("waf", cx)?;
    cx.only(&wt, WAF_KEYS);
    let mode = self::mode(&wt, "mode", mode, cx);
    let mut rules = BTreeMap::new();
    for (key, rule) in [
        ("sqli", RuleId::Sqli),
        ("xss", RuleId::Xss),
        ("traversal", RuleId::Traversal),
        ("log4shell", RuleId::Log4shell),
        ("shellshock", RuleId::Shellshock),
        ("scanners", RuleId::Scanner),
        ("rce", RuleId::Rce),
        ("java", RuleId::Java),
    ] {
        let on = match wt.table.get(key) {
            None => Some(mode),
            Some(v) => match (v.as_bool(), v.as_str()) {
                (Some(true), _) => Some(mode),
                (Some(false), _) => None,
                (_, Some("block")) => Some(EdgeMode::Block),
                (_, Some("count")) => Some(EdgeMode::Count),
                _ => {
                    cx.err(
                        &wt.child(key),
                        format!(
                            "expected true, false, \"block\" or \"count\", got {}",
                            v.as_str()
                                .map_or_else(|| v.type_str().to_string(), |s| format!("{s:?}"))
                        ),
                    );
                    None
                }
            },
        };
        if let Some(m) = on {
            rules.insert(rule, m);
        }
    }
    let strict = match wt.string("paranoia", cx).as_deref() {
        None | Some("normal") => false,
        Some("strict") => true,
        Some(other) => {
            cx.err(
                &wt.child("paranoia"),
                format!("expected \"normal\" or \"strict\", got {other:?}"),
            );
            false
        }
    };
    let max_inspected_bytes = size(&wt, "max_inspected", 0, 1 << 30, cx)
        .unwrap_or(rollgate_waf::DEFAULT_MAX_INSPECTED_BYTES);
    let exclusions = parse_exclusions(&wt, strict, cx);
    let settings = WafSettings {
        rules,
        strict,
        max_inspected_bytes,
        exclusions,
    };
    Some(settings)
}

fn parse_exclusions(wt: &T<'_>, strict: bool, cx: &mut Cx) -> Vec<WafExclusion> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let example = "{ path_prefix = \"/search\", rules = [\"sqli\"] }";
    let crs_normal = rollgate_waf::crs_rule_ids(Paranoia::Normal);
    let crs_strict = rollgate_waf::crs_rule_ids(Paranoia::Strict);
    for (index, et) in wt.tables("exclusions", example, cx).into_iter().enumerate() {
        cx.only(&et, &["path_prefix", "rules", "fields"]);
        let path_prefix = et.string("path_prefix", cx).unwrap_or_else(|| {
            cx.err(
                &et.child("path_prefix"),
                "expected the path prefix the exclusion applies to, e.g. \"/search\"".to_string(),
            );
            "/".to_string()
        });
        let mut rules = Vec::new();
        let mut crs_rules = Vec::new();
        let names = et.string_list("rules", cx).unwrap_or_default();
        let had_rule_names = !names.is_empty();
        for name in names {
            if let Some(digits) = name.strip_prefix("crs-") {
                let id = digits
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                    .then(|| digits.parse::<u32>().ok())
                    .flatten()
                    .filter(|id| id.to_string() == digits);
                match id {
                    Some(id)
                        if crs_normal.contains(&id) || (strict && crs_strict.contains(&id)) =>
                    {
                        crs_rules.push(id);
                    }
                    Some(id) if crs_strict.contains(&id) => cx.err(
                        &et.child("rules"),
                        format!(
                            "{name:?} runs only at paranoia = \"strict\"; at \"normal\" there \
                             is nothing to exclude"
                        ),
                    ),
                    _ => cx.err(
                        &et.child("rules"),
                        format!(
                            "{name:?} is not one of the OWASP CRS rules rollgate runs \
                             (crs-941xxx and crs-942xxx; the list is in docs/edge.md)"
                        ),
                    ),
                }
                continue;
            }
            match RuleId::ALL.iter().find(|r| r.as_str() == name) {
                Some(r) => rules.push(*r),
                None => cx.err(
                    &et.child("rules"),
                    format!(
                        "unknown rule {name:?}; expected one of: {}, or a CRS rule such as \
                         \"crs-942190\"",
                        RuleId::ALL.map(RuleId::as_str).join(", ")
                    ),
                ),
            }
        }
        let fields = et.string_list("fields", cx).unwrap_or_default();
        let entry = WafExclusion {
            path_prefix,
            rules,
            crs_rules,
            fields,
        };
        // The detection crate owns the rules of a valid exclusion (known field kinds, a path
        // prefix, something to skip). An entry whose rule names were all wrong already has its
        // error, so it counts as naming rules: "name at least one rule" would only repeat it.
        rollgate_waf::check_exclusion(
            index,
            &entry.path_prefix,
            had_rule_names,
            &entry.fields,
            &mut errors,
        );
        out.push(entry);
    }
    // Its errors are put back under this file's keys.
    let ex = wt.child("exclusions");
    for e in errors {
        let (key, what) = match &e {
            WafError::InvalidPathPrefix { index, .. } => {
                (format!("{ex}[{index}].path_prefix"), e.to_string())
            }
            WafError::EmptyExclusion { index } => (format!("{ex}[{index}]"), e.to_string()),
            WafError::InvalidField { index, .. } => {
                (format!("{ex}[{index}].fields"), e.to_string())
            }
        };
        // The crate's message repeats its own relative key; keep what follows it.
        let message = what
            .split_once(": ")
            .map_or(what.clone(), |(_, m)| m.to_string());
        cx.err(&key, message);
    }
    out
}

fn parse_limits(t: &T<'_>, cx: &mut Cx) -> RequestLimits {
    let d = RequestLimits::default();
    let Some(lt) = t.table("limits", cx) else {
        return d;
    };
    cx.only(&lt, LIMIT_KEYS);
    let timeout = |k: &str, default: Duration, cx: &mut Cx| match lt.duration(k, cx) {
        Some(v) if v >= Duration::from_millis(100) && v <= Duration::from_secs(3600) => v,
        Some(v) => {
            cx.err(
                &lt.child(k),
                format!(
                    "expected a duration from 100ms to 1h, got {}",
                    humantime::format_duration(v)
                ),
            );
            default
        }
        None => default,
    };
    RequestLimits {
        max_header_bytes: size(&lt, "max_header_bytes", 1024, 1 << 20, cx)
            .unwrap_or(d.max_header_bytes),
        max_headers: lt
            .int("max_headers", 1, 1000, cx)
            .map_or(d.max_headers, |n| n as usize),
        max_body_bytes: size(&lt, "max_body", 0, 1 << 30, cx).unwrap_or(d.max_body_bytes),
        header_timeout: timeout("header_timeout", d.header_timeout, cx),
        body_timeout: timeout("body_timeout", d.body_timeout, cx),
        send_timeout: timeout("send_timeout", d.send_timeout, cx),
    }
}

/// A byte size: a whole number of bytes, or a string like `"16KiB"`, `"8 MiB"`, `"100KB"`.
fn size(t: &T<'_>, k: &str, min: usize, max: usize, cx: &mut Cx) -> Option<usize> {
    let v = t.table.get(k)?;
    let parsed = match (v.as_integer(), v.as_str()) {
        (Some(n), _) => usize::try_from(n).ok(),
        (_, Some(s)) => parse_size(s),
        _ => None,
    };
    match parsed {
        Some(n) if (min..=max).contains(&n) => Some(n),
        Some(n) => {
            cx.err(
                &t.child(k),
                format!("expected a size from {min} to {max} bytes, got {n}"),
            );
            None
        }
        None => {
            let got = v
                .as_str()
                .map_or_else(|| v.type_str().to_string(), |s| format!("{s:?}"));
            cx.err(
                &t.child(k),
                format!("expected a size like \"16KiB\", \"8MiB\" or a number of bytes, got {got}"),
            );
            None
        }
    }
}

fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits.parse().ok()?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    use super::*;

    fn env(edge: &str) -> String {
        format!("[app.a]\nrun = \"x\"\n[env.prod]\nlisten = \"127.0.0.1:0\"\n{edge}\n")
    }

    fn edge_of(edge: &str) -> EdgeConfig {
        let config = Config::parse(&env(edge), "r.toml").expect("valid config");
        config.envs["prod"].edge.clone().expect("edge table")
    }

    #[test]
    fn no_edge_table_means_no_edge_policy() {
        let config = Config::parse(&env(""), "r.toml").expect("valid config");
        assert_eq!(config.envs["prod"].edge, None);
    }

    #[test]
    fn an_empty_edge_table_turns_on_the_defaults() {
        assert_eq!(edge_of("[env.prod.edge]"), EdgeConfig::default());
        let d = EdgeConfig::default();
        let rate = d.rate_limit.expect("rate limit on");
        assert_eq!((rate.requests, rate.per), (2000, Duration::from_secs(300)));
        assert_eq!(d.waf.expect("waf on").rules.len(), 8);
    }

    #[test]
    fn parses_every_key() {
        let edge = edge_of(
            r#"
[env.prod.edge]
mode = "count"
trusted_proxies = ["127.0.0.1/32", "10.0.0.0/8"]
allow_ips = ["2001:db8::/32"]
deny_ips = ["203.0.113.0/24", "198.51.100.7"]
ip_mode = "block"
rate_limit = { requests = 5, per = "1s", mode = "block" }
waf = { mode = "block", sqli = "count", xss = true, traversal = false, paranoia = "strict", max_inspected = "16KiB", exclusions = [{ path_prefix = "/search", rules = ["sqli"] }, { path_prefix = "/cms/", fields = ["json:$.html"] }] }
limits = { max_header_bytes = "16KiB", max_headers = 50, max_body = "1MiB", header_timeout = "5s", body_timeout = "2s", send_timeout = "20s" }
"#,
        );
        assert_eq!(edge.mode, EdgeMode::Count);
        assert_eq!(edge.ip_mode, EdgeMode::Block);
        assert_eq!(edge.trusted_proxies.len(), 2);
        assert!(edge.trusted_proxies[1].contains("10.200.3.4".parse().expect("ip")));
        assert!(edge.allow_ips[0].contains("2001:db8::1".parse().expect("ip")));
        assert_eq!(edge.deny_ips[1].to_string(), "198.51.100.7/32");
        assert_eq!(
            edge.rate_limit,
            Some(RateLimitConfig {
                requests: 5,
                per: Duration::from_secs(1),
                mode: EdgeMode::Block
            })
        );
        let waf = edge.waf.expect("waf");
        assert_eq!(waf.rules.get(&RuleId::Sqli), Some(&EdgeMode::Count));
        assert_eq!(waf.rules.get(&RuleId::Xss), Some(&EdgeMode::Block));
        assert_eq!(waf.rules.get(&RuleId::Traversal), None);
        assert_eq!(waf.rules.get(&RuleId::Scanner), Some(&EdgeMode::Block));
        assert!(waf.strict);
        assert_eq!(waf.max_inspected_bytes, 16 * 1024);
        assert_eq!(waf.exclusions.len(), 2);
        assert_eq!(waf.exclusions[0].rules, vec![RuleId::Sqli]);
        let wc = waf.waf_config();
        assert!(!wc.traversal && wc.sqli && wc.paranoia == Paranoia::Strict);
        assert_eq!(
            edge.limits,
            RequestLimits {
                max_header_bytes: 16 * 1024,
                max_headers: 50,
                max_body_bytes: 1 << 20,
                header_timeout: Duration::from_secs(5),
                body_timeout: Duration::from_secs(2),
                send_timeout: Duration::from_secs(20),
            }
        );
    }

    #[test]
    fn rates_and_switches_have_short_forms() {
        let edge = edge_of("[env.prod.edge]\nrate_limit = \"100/1m\"\nwaf = false");
        let rate = edge.rate_limit.expect("rate");
        assert_eq!((rate.requests, rate.per), (100, Duration::from_secs(60)));
        assert_eq!(edge.waf, None);
        let edge = edge_of("[env.prod.edge]\nmode = \"count\"\nrate_limit = false");
        assert_eq!(edge.rate_limit, None);
        assert!(
            edge.waf
                .expect("waf")
                .rules
                .values()
                .all(|m| *m == EdgeMode::Count),
            "detectors inherit the edge mode"
        );
        assert_eq!(edge.ip_mode, EdgeMode::Count);
    }

    #[test]
    fn every_error_names_the_file_and_the_key() {
        let bad = r#"
[env.prod.edge]
mode = "log"
trusted_proxies = ["127.0.0.1/33"]
allow_ips = ["10.0.0.1/8"]
deny_ips = ["nonsense"]
ip_mode = 3
rate_limit = { requests = 0, per = "1ms", burst = 3 }
waf = { sqli = "maybe", paranoia = "high", max_inspected = "lots", exclusions = [{ path_prefix = "search", rules = ["sql", "xss"] }, { path_prefix = "/x" }, { path_prefix = "/y", fields = ["bogus:x"] }] }
limits = { max_header_bytes = "1B", max_headers = 0, max_body = "2GiB", header_timeout = "never", body_timeout = "0s", max_uri = 1 }
colour = "red"
"#;
        let errs = Config::parse(&env(bad), "conf/rollgate.toml").expect_err("invalid");
        let shown = errs.to_string();
        let k = "conf/rollgate.toml: env.prod.edge";
        for needle in [
            format!("{k}.mode: expected \"block\" or \"count\", got \"log\""),
            format!("{k}.trusted_proxies[0]: expected a prefix length from 0 to 32"),
            format!(
                "{k}.allow_ips[0]: \"10.0.0.1/8\" has host bits set; did you mean \"10.0.0.0/8\"?"
            ),
            format!("{k}.deny_ips[0]: expected an IP range"),
            format!("{k}.ip_mode: expected a string"),
            format!("{k}.rate_limit.burst: unknown key"),
            format!("{k}.rate_limit.requests: expected a whole number from 1"),
            format!("{k}.rate_limit.per: expected a period from 1s to 24h"),
            format!("{k}.waf.sqli: expected true, false, \"block\" or \"count\", got \"maybe\""),
            format!("{k}.waf.paranoia: expected \"normal\" or \"strict\""),
            format!("{k}.waf.max_inspected: expected a size"),
            format!("{k}.waf.exclusions[0].rules: unknown rule \"sql\""),
            format!("{k}.waf.exclusions[0].path_prefix: expected a path starting with '/'"),
            format!("{k}.waf.exclusions[1]: name at least one rule or one field"),
            format!("{k}.waf.exclusions[2].fields: \"bogus:x\" is not a field"),
            format!("{k}.limits.max_uri: unknown key"),
            format!("{k}.limits.max_header_bytes: expected a size from 1024"),
            format!("{k}.limits.max_headers: expected a whole number from 1 to 1000, got 0"),
            format!("{k}.limits.max_body: expected a size from 0 to 1073741824 bytes"),
            format!("{k}.limits.header_timeout: expected a duration string"),
            format!("{k}.limits.body_timeout: expected a duration from 100ms to 1h"),
            format!("{k}.colour: unknown key"),
        ] {
            assert!(shown.contains(&needle), "missing {needle:?} in:\n{shown}");
        }
        assert_eq!(errs.0.len(), 22, "{shown}");
        assert!(errs.0.iter().all(|e| e.file == "conf/rollgate.toml"));
    }

    #[test]
    fn a_crs_rule_in_an_exclusion_is_kept_apart_from_the_detectors() {
        let waf = edge_of(
            r#"
[env.prod.edge]
waf = { exclusions = [{ path_prefix = "/search", rules = ["crs-942190"], fields = ["query:q"] }, { path_prefix = "/cms/", rules = ["sqli", "crs-941160"] }] }
"#,
        )
        .waf
        .expect("waf");
        assert_eq!(waf.exclusions[0].rules, Vec::<RuleId>::new());
        assert_eq!(waf.exclusions[0].crs_rules, vec![942190]);
        assert_eq!(waf.exclusions[1].rules, vec![RuleId::Sqli]);
        assert_eq!(waf.exclusions[1].crs_rules, vec![941160]);
        // A CRS-only entry is no detector exclusion: its empty detector list would lift every
        // detector on /search.
        assert_eq!(
            waf.waf_config().exclusions,
            vec![Exclusion {
                path_prefix: "/cms/".into(),
                rules: vec![RuleId::Sqli],
                fields: vec![],
            }]
        );
        assert_eq!(
            waf.crs_exclusions(),
            vec![
                CrsExclusion {
                    path_prefix: "/search".into(),
                    rules: vec![942190],
                    fields: vec!["query:q".into()],
                },
                CrsExclusion {
                    path_prefix: "/cms/".into(),
                    rules: vec![941160],
                    fields: vec![],
                },
            ]
        );
    }

    /// Errors as (key under `waf.exclusions`, message) for an `exclusions` array.
    fn exclusion_errors(exclusions: &str) -> Vec<(String, String)> {
        let text = env(&format!(
            "[env.prod.edge]\nwaf = {{ exclusions = [{exclusions}] }}"
        ));
        let errs = Config::parse(&text, "conf/rollgate.toml").expect_err(exclusions);
        assert!(errs.0.iter().all(|e| e.file == "conf/rollgate.toml"));
        errs.0
            .into_iter()
            .map(|e| {
                let key = e.key.strip_prefix("env.prod.edge.waf.exclusions");
                (key.unwrap_or(&e.key).to_string(), e.message)
            })
            .collect()
    }

    #[test]
    fn crs_exclusion_errors_name_the_key() {
        let unknown = "is not one of the OWASP CRS rules rollgate runs (crs-941xxx and \
                       crs-942xxx; the list is in docs/edge.md)";
        for (entry, key, message) in [
            (
                r#"{ path_prefix = "/a", rules = ["crs-999999"], fields = ["query:q"] }"#,
                "[0].rules",
                format!("\"crs-999999\" {unknown}"),
            ),
            (
                r#"{ path_prefix = "/a", rules = ["crs-abc"], fields = ["query:q"] }"#,
                "[0].rules",
                format!("\"crs-abc\" {unknown}"),
            ),
            (
                r#"{ path_prefix = "search", rules = ["crs-942190"] }"#,
                "[0].path_prefix",
                "expected a path starting with '/', got \"search\"".to_string(),
            ),
            (
                r#"{ path_prefix = "/search", rules = ["crs-942190"], fields = ["bogus:x"] }"#,
                "[0].fields",
                format!(
                    "\"bogus:x\" is not a field; expected one of {} followed by ':name' or ':*'",
                    rollgate_waf::FIELD_KINDS.join(", ")
                ),
            ),
            // Ids are written as CRS writes them: no sign, no leading zero.
            (
                r#"{ path_prefix = "/a", rules = ["crs-0942190"], fields = ["query:q"] }"#,
                "[0].rules",
                format!("\"crs-0942190\" {unknown}"),
            ),
            (
                r#"{ path_prefix = "/a", rules = ["crs-+941160"], fields = ["query:q"] }"#,
                "[0].rules",
                format!("\"crs-+941160\" {unknown}"),
            ),
            // A paranoia-level-2 rule does not run at "normal": excluding it would do nothing.
            (
                r#"{ path_prefix = "/a", rules = ["crs-942470"], fields = ["query:q"] }"#,
                "[0].rules",
                "\"crs-942470\" runs only at paranoia = \"strict\"; at \"normal\" there is \
                 nothing to exclude"
                    .to_string(),
            ),
            // A wrong rule name is one error, not also "name at least one rule".
            (
                r#"{ path_prefix = "/a", rules = ["crs-999999"] }"#,
                "[0].rules",
                format!("\"crs-999999\" {unknown}"),
            ),
        ] {
            assert_eq!(
                exclusion_errors(entry),
                vec![(key.to_string(), message)],
                "{entry}"
            );
        }
    }

    #[test]
    fn detector_exclusion_errors_keep_the_file_index_after_a_crs_only_entry() {
        assert_eq!(
            exclusion_errors(
                r#"{ path_prefix = "/search", rules = ["crs-942190"] }, { path_prefix = "x", rules = ["sqli"] }, { path_prefix = "/y" }"#
            ),
            vec![
                (
                    "[1].path_prefix".to_string(),
                    "expected a path starting with '/', got \"x\"".to_string()
                ),
                (
                    "[2]".to_string(),
                    "name at least one rule or one field to skip".to_string()
                ),
            ]
        );
    }

    /// The error for an unknown `crs-` rule sends the reader to the list in docs/edge.md.
    #[test]
    fn the_crs_rule_ids_in_the_docs_are_the_vendored_ones() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/edge.md");
        let docs = std::fs::read_to_string(path).expect("docs/edge.md");
        let column = |family: &str, level: usize| -> Vec<u32> {
            let row = docs
                .lines()
                .find(|l| l.starts_with(&format!("| {family} ")))
                .unwrap_or_else(|| panic!("no row for {family} in docs/edge.md"));
            let cell = row.split('|').nth(level + 1).unwrap_or_default();
            cell.split(',')
                .filter_map(|id| id.trim().parse().ok())
                .collect()
        };
        let mut normal = [column("941", 1), column("942", 1)].concat();
        let mut strict = [normal.clone(), column("941", 2), column("942", 2)].concat();
        normal.sort_unstable();
        strict.sort_unstable();
        let vendored = |p: Paranoia| {
            let mut ids = rollgate_waf::crs_rule_ids(p);
            ids.sort_unstable();
            ids
        };
        assert_eq!(normal, vendored(Paranoia::Normal));
        assert_eq!(strict, vendored(Paranoia::Strict));
    }

    #[test]
    fn short_form_errors_name_their_key() {
        for (bad, needle) in [
            (
                "rate_limit = \"lots\"",
                "env.prod.edge.rate_limit: expected false, a rate",
            ),
            (
                "rate_limit = \"5/1ms\"",
                "env.prod.edge.rate_limit: expected a period",
            ),
            (
                "waf = \"on\"",
                "env.prod.edge.waf: expected a table, got string",
            ),
            (
                "waf = { exclusions = \"x\" }",
                "env.prod.edge.waf.exclusions: expected an array",
            ),
        ] {
            let text = env(&format!("[env.prod.edge]\n{bad}"));
            let shown = Config::parse(&text, "r.toml").expect_err(bad).to_string();
            assert!(shown.contains(needle), "{bad}: {shown}");
        }
        let shown = Config::parse(&env("edge = 1"), "r.toml")
            .expect_err("edge must be a table")
            .to_string();
        assert!(shown.contains("env.prod.edge: expected a table"), "{shown}");
    }

    #[test]
    fn cidrs_match_their_range_only() {
        let v4 = Cidr::parse("203.0.113.0/24").expect("v4");
        assert!(v4.contains("203.0.113.77".parse().expect("ip")));
        assert!(!v4.contains("203.0.114.1".parse().expect("ip")));
        assert!(v4.contains("::ffff:203.0.113.9".parse().expect("mapped ip")));
        assert!(!v4.contains("2001:db8::1".parse().expect("ip")));
        let all = Cidr::parse("0.0.0.0/0").expect("all v4");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains("2001:db8:ffff::1".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::1".parse().expect("ip")));
        assert_eq!(Cidr::parse("::1").expect("host").to_string(), "::1/128");
        assert!(Cidr::parse("10.0.0.0/").is_err());
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("16KiB"), Some(16384));
        assert_eq!(parse_size("8 MiB"), Some(8 << 20));
        assert_eq!(parse_size("100KB"), Some(100_000));
        assert_eq!(parse_size("42"), Some(42));
        assert_eq!(parse_size("1 TiB"), None);
        assert_eq!(parse_size("KiB"), None);
    }
}
