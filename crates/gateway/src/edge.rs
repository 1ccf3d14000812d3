//! The edge policy of one gateway, built once from `[env.NAME.edge]`: who the client is
//! (trusted proxies), the IP allow and deny lists, the country lists, the per-client rate
//! limiter, the WAF and the authenticator (API keys, signatures, per-key rate), plus the stable ids of every edge rule ([`EdgeRule`]) used in the access log and metrics.
//!
//! The phases that apply it are sequenced in `phases::handle`; this file answers the questions
//! they ask ("who is the client?", "is this address denied?", "is it over its rate?", "what
//! did the WAF find?") without doing any I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rollgate_core::config::edge::{Cidr, EdgeConfig, EdgeMode, RateLimitConfig};
use rollgate_waf::{CrsError, Finding, RequestView, RuleId, Waf, WafError};

use crate::auth::Authenticator;
use crate::geo::{GeoFilter, GeoVerdict};
use crate::keys::{KeyError, KeySource, StaticKeys};

/// Edge decisions logged per request at most; an attacker can make the WAF report one
/// finding per query parameter, and the access log line must stay bounded.
pub(crate) const MAX_LOGGED_DECISIONS: usize = 16;

/// Why an edge policy could not be built from an (already validated) configuration.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The WAF rejected its configuration (an invalid exclusion).
    #[error("edge.waf: {0}")]
    Waf(#[from] WafError),
    /// An exclusion names an OWASP CRS rule that is not there.
    #[error("edge.waf: {0}")]
    Crs(#[from] CrsError),
    /// The vendored OWASP CRS rules could not be loaded.
    #[error("edge.waf: the OWASP CRS rules could not be loaded: {0}")]
    CrsLoad(String),
    /// The rate limit has zero requests or a period too short to divide among them.
    #[error("edge.rate_limit: {requests} requests per {per:?} is not a usable rate")]
    Rate {
        /// Configured requests per period.
        requests: u32,
        /// Configured period.
        per: std::time::Duration,
    },
    /// The geo database could not be read.
    #[error("edge.geo.database: {}: {message}", path.display())]
    Geo {
        /// The database file.
        path: std::path::PathBuf,
        /// The reader's reason.
        message: String,
    },
    /// The keys referenced by `edge.auth` could not be loaded.
    #[error(transparent)]
    Keys(#[from] KeyError),
}

/// One edge rule, by its stable id: the `rule` of an access-log `edge` entry and the key of
/// [`crate::Metrics::edge_counters`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EdgeRule {
    /// `ip_deny`: the client is in `deny_ips`.
    IpDeny,
    /// `ip_allow`: `allow_ips` is set and the client is not in it.
    IpAllow,
    /// `rate_limit`: the client is over its rate.
    RateLimit,
    /// `waf.<rule>`: a WAF detector matched, e.g. `waf.sqli`.
    Waf(RuleId),
    /// `limits.header_bytes`: request line and headers over `max_header_bytes`.
    HeaderBytes,
    /// `limits.headers`: more header fields than `max_headers`.
    HeaderCount,
    /// `limits.body_size`: body over `max_body`.
    BodySize,
    /// `limits.body_timeout`: the body did not arrive within `body_timeout`.
    BodyTimeout,
    /// `geo`: the client's country is not allowed (or unknown and `unknown = "deny"`).
    Geo,
    /// `auth.api_key`: the API key is missing or invalid.
    AuthApiKey,
    /// `auth.signature`: the signature is missing, invalid, expired or replayed.
    AuthSignature,
    /// `key_rate_limit`: the authenticated key is over its rate.
    KeyRateLimit,
}

impl EdgeRule {
    /// Every rule, in the order of the phases.
    pub const ALL: [EdgeRule; 19] = [
        EdgeRule::HeaderBytes,
        EdgeRule::HeaderCount,
        EdgeRule::IpDeny,
        EdgeRule::IpAllow,
        EdgeRule::Geo,
        EdgeRule::RateLimit,
        EdgeRule::BodySize,
        EdgeRule::BodyTimeout,
        EdgeRule::Waf(RuleId::Sqli),
        EdgeRule::Waf(RuleId::Xss),
        EdgeRule::Waf(RuleId::Traversal),
        EdgeRule::Waf(RuleId::Log4shell),
        EdgeRule::Waf(RuleId::Shellshock),
        EdgeRule::Waf(RuleId::Scanner),
        EdgeRule::Waf(RuleId::Rce),
        EdgeRule::Waf(RuleId::Java),
        EdgeRule::AuthApiKey,
        EdgeRule::AuthSignature,
        EdgeRule::KeyRateLimit,
    ];

    /// The stable id, e.g. `"ip_deny"`, `"rate_limit"`, `"waf.sqli"`, `"limits.body_timeout"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EdgeRule::IpDeny => "ip_deny",
            EdgeRule::IpAllow => "ip_allow",
            EdgeRule::RateLimit => "rate_limit",
            EdgeRule::Waf(RuleId::Sqli) => "waf.sqli",
            EdgeRule::Waf(RuleId::Xss) => "waf.xss",
            EdgeRule::Waf(RuleId::Traversal) => "waf.traversal",
            EdgeRule::Waf(RuleId::Log4shell) => "waf.log4shell",
            EdgeRule::Waf(RuleId::Shellshock) => "waf.shellshock",
            EdgeRule::Waf(RuleId::Scanner) => "waf.scanner",
            EdgeRule::Waf(RuleId::Rce) => "waf.rce",
            EdgeRule::Waf(RuleId::Java) => "waf.java",
            EdgeRule::HeaderBytes => "limits.header_bytes",
            EdgeRule::HeaderCount => "limits.headers",
            EdgeRule::BodySize => "limits.body_size",
            EdgeRule::BodyTimeout => "limits.body_timeout",
            EdgeRule::Geo => "geo",
            EdgeRule::AuthApiKey => "auth.api_key",
            EdgeRule::AuthSignature => "auth.signature",
            EdgeRule::KeyRateLimit => "key_rate_limit",
        }
    }

    /// Position in [`EdgeRule::ALL`], the slot of its counters.
    pub(crate) fn index(self) -> usize {
        Self::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

impl fmt::Display for EdgeRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Blocked and counted decisions of one edge rule since the gateway started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EdgeCounts {
    /// Requests this rule answered early (block mode).
    pub blocked: u64,
    /// Requests this rule matched in count mode and let through.
    pub counted: u64,
}

/// What the IP lists say about a client.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct IpVerdict {
    pub(crate) rule: EdgeRule,
    /// The `deny_ips` range that matched, for the log; `None` for "not in `allow_ips`".
    pub(crate) range: Option<Cidr>,
}

/// The edge policy of one gateway: immutable apart from the rate limiter's per-client state.
/// Build it with [`EdgePolicy::new`] and put it in [`crate::GatewayConfig::edge`].
pub struct EdgePolicy {
    trusted_proxies: Vec<Cidr>,
    allow_ips: Vec<Cidr>,
    deny_ips: Vec<Cidr>,
    ip_mode: EdgeMode,
    rate: Option<(DefaultKeyedRateLimiter<IpAddr>, EdgeMode)>,
    waf: Option<(Waf, BTreeMap<RuleId, EdgeMode>)>,
    geo: Option<GeoFilter>,
    auth: Option<Authenticator>,
}

impl fmt::Debug for EdgePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgePolicy")
            .field("trusted_proxies", &self.trusted_proxies)
            .field("allow_ips", &self.allow_ips)
            .field("deny_ips", &self.deny_ips)
            .field("ip_mode", &self.ip_mode)
            .field("rate_limit", &self.rate.as_ref().map(|(_, mode)| mode))
            .field("waf", &self.waf.as_ref().map(|(_, modes)| modes))
            .field("geo", &self.geo)
            .field("auth", &self.auth)
            .finish()
    }
}

impl EdgePolicy {
    /// Builds the policy: compiles the WAF and sizes the rate limiter (`requests` per `per`,
    /// also the burst, refilled evenly). The request limits of the configuration are not part
    /// of the policy; [`crate::GatewayConfig::with_edge`] applies them to the listener.
    ///
    /// With `[env.NAME.edge.auth]`, the keys it references are loaded here (environment
    /// variables, key file) and the geo database is read; see [`EdgePolicy::with_keys`] to
    /// add another key source.
    pub fn new(config: &EdgeConfig) -> Result<EdgePolicy, EdgeError> {
        Self::with_keys(config, None)
    }

    /// [`EdgePolicy::new`] with `extra` (e.g. the control plane's secret store) asked for keys
    /// that `rollgate.toml` does not reference.
    pub fn with_keys(
        config: &EdgeConfig,
        extra: Option<Arc<dyn KeySource>>,
    ) -> Result<EdgePolicy, EdgeError> {
        let geo = config.geo.as_ref().map(GeoFilter::open).transpose()?;
        let auth = match &config.auth {
            Some(auth) => {
                let configured = StaticKeys::load(auth)?;
                if configured.is_empty() && extra.is_none() {
                    tracing::warn!(
                        "edge.auth has no keys: every route that needs a key will answer 401"
                    );
                }
                let mut sources: Vec<Arc<dyn KeySource>> = vec![Arc::new(configured)];
                sources.extend(extra);
                Some(Authenticator::new(auth, sources)?)
            }
            None => None,
        };
        let rate = config
            .rate_limit
            .as_ref()
            .map(|r| Ok::<_, EdgeError>((RateLimiter::keyed(quota(r)?), r.mode)))
            .transpose()?;
        let waf = config
            .waf
            .as_ref()
            .map(|w| {
                let waf = Waf::new(w.waf_config())?.with_crs_exclusions(&w.crs_exclusions())?;
                // The rules are vendored and tested; a gateway that silently lost them would
                // let through what the docs promise it blocks, so this is fatal.
                if let Some(err) = waf.crs_load_error() {
                    return Err(EdgeError::CrsLoad(err.to_string()));
                }
                Ok::<_, EdgeError>((waf, w.rules.clone()))
            })
            .transpose()?;
        Ok(EdgePolicy {
            trusted_proxies: config.trusted_proxies.clone(),
            allow_ips: config.allow_ips.clone(),
            deny_ips: config.deny_ips.clone(),
            ip_mode: config.ip_mode,
            rate,
            waf,
            geo,
            auth,
        })
    }

    /// The client's address: the socket peer, unless the peer is a trusted proxy; then the
    /// right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries to its
    /// right were added by proxies we trust, entries to its left are the client's word). An
    /// entry that is not an address stops the walk at the last trusted hop. `forwarded_for`
    /// gives the request's `X-Forwarded-For` values in the order received.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl IntoIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for
            .into_iter()
            .filter_map(crate::head::field_text)
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                break;
            };
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        client
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }

    /// Mode of the IP lists.
    pub(crate) fn ip_mode(&self) -> EdgeMode {
        self.ip_mode
    }

    /// What the IP lists say about `client`: denied first, then not allowed; `None` = fine.
    pub(crate) fn check_ip(&self, client: IpAddr) -> Option<IpVerdict> {
        if let Some(range) = self.deny_ips.iter().find(|c| c.contains(client)) {
            return Some(IpVerdict {
                rule: EdgeRule::IpDeny,
                range: Some(*range),
            });
        }
        if !self.allow_ips.is_empty() && !self.allow_ips.iter().any(|c| c.contains(client)) {
            return Some(IpVerdict {
                rule: EdgeRule::IpAllow,
                range: None,
            });
        }
        None
    }

    /// Takes one request from `client`'s rate. `None` when allowed (or no rate limit);
    /// otherwise the mode and the whole seconds until the next request would be allowed
    /// (at least 1, for `Retry-After`).
    pub(crate) fn check_rate(&self, client: IpAddr) -> Option<(EdgeMode, u64)> {
        let (limiter, mode) = self.rate.as_ref()?;
        check_keyed(limiter, &rate_key(client)).map(|secs| (*mode, secs))
    }

    /// What the country lists say about `client`, with their mode; `None` = fine or no lists.
    pub(crate) fn check_geo(&self, client: IpAddr) -> Option<(GeoVerdict, EdgeMode)> {
        let geo = self.geo.as_ref()?;
        geo.check(client).map(|v| (v, geo.mode))
    }

    /// The authenticator, when `[env.NAME.edge.auth]` is set.
    pub(crate) fn auth(&self) -> Option<&Authenticator> {
        self.auth.as_ref()
    }

    /// Forgets clients whose rate state is back to full, so that the limiter's memory follows
    /// the clients seen in the last period rather than every client ever seen.
    pub(crate) fn retain_recent(&self) {
        if let Some((limiter, _)) = &self.rate {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        if let Some(auth) = &self.auth {
            auth.retain_recent(crate::phases::unix_now());
        }
    }

    /// True when a rate limiter or the replay cache runs (and so needs
    /// [`EdgePolicy::retain_recent`] now and then).
    pub(crate) fn has_rate_limit(&self) -> bool {
        self.rate.is_some() || self.auth.is_some()
    }

    /// Runs the WAF, if any, on one request: each finding with the mode of its rule.
    pub(crate) fn inspect(&self, request: &RequestView<'_>) -> Vec<(Finding, EdgeMode)> {
        let Some((waf, modes)) = &self.waf else {
            return Vec::new();
        };
        waf.inspect(request)
            .into_iter()
            .map(|f| {
                let mode = modes.get(&f.rule).copied().unwrap_or_default();
                (f, mode)
            })
            .collect()
    }
}

/// Takes one request from `key`'s budget: `None` when allowed, else the whole seconds until
/// the next request would be allowed (at least 1, for `Retry-After`).
pub(crate) fn check_keyed<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Option<u64> {
    let not_until = limiter.check_key(key).err()?;
    let wait = not_until.wait_time_from(limiter.clock().now());
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Some(secs.max(1))
}

pub(crate) fn quota(r: &RateLimitConfig) -> Result<Quota, EdgeError> {
    let invalid = || EdgeError::Rate {
        requests: r.requests,
        per: r.per,
    };
    let burst = NonZeroU32::new(r.requests).ok_or_else(invalid)?;
    let period = r.per.checked_div(r.requests).ok_or_else(invalid)?;
    Ok(Quota::with_period(period)
        .ok_or_else(invalid)?
        .allow_burst(burst))
}

/// The rate-limit key of a client: its address, or its /64 for IPv6, since one IPv6 host
/// usually holds a whole /64 and could otherwise rotate through it.
fn rate_key(client: IpAddr) -> IpAddr {
    match client.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(edit: impl FnOnce(&mut EdgeConfig)) -> EdgePolicy {
        let mut config = EdgeConfig::default();
        edit(&mut config);
        EdgePolicy::new(&config).expect("valid policy")
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| Cidr::parse(c).expect("cidr")).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn xff<'a>(values: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> {
        values.iter().map(|v| v.as_bytes())
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let p = policy(|_| {});
        assert_eq!(
            p.client_ip(ip("198.51.100.1"), xff(&["203.0.113.9"])),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let p = policy(|c| c.trusted_proxies = cidrs(&["10.0.0.0/8"]));
        // A client-chosen left part cannot hide the real client behind two trusted proxies.
        let headers = ["1.1.1.1, 203.0.113.9", "10.0.0.2"];
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), xff(&headers)),
            ip("203.0.113.9")
        );
        // Only trusted hops: the left-most of them.
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), xff(&["10.0.0.3, 10.0.0.2"])),
            ip("10.0.0.3")
        );
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), xff(&["203.0.113.9, nonsense, 10.0.0.2"])),
            ip("10.0.0.2")
        );
        // Ports and brackets are tolerated.
        assert_eq!(
            p.client_ip(ip("10.0.0.1"), xff(&["[2001:db8::7]:443"])),
            ip("2001:db8::7")
        );
        assert_eq!(p.client_ip(ip("10.0.0.1"), xff(&[])), ip("10.0.0.1"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let p = policy(|c| {
            c.allow_ips = cidrs(&["203.0.113.0/24"]);
            c.deny_ips = cidrs(&["203.0.113.128/25"]);
        });
        assert_eq!(p.check_ip(ip("203.0.113.5")), None);
        assert_eq!(
            p.check_ip(ip("203.0.113.200")).map(|v| v.rule),
            Some(EdgeRule::IpDeny)
        );
        assert_eq!(
            p.check_ip(ip("198.51.100.1")),
            Some(IpVerdict {
                rule: EdgeRule::IpAllow,
                range: None
            })
        );
    }

    #[test]
    fn the_rate_is_per_client_and_ipv6_counts_per_64() {
        let p = policy(|c| {
            c.rate_limit = Some(RateLimitConfig {
                requests: 2,
                per: std::time::Duration::from_secs(3600),
                mode: EdgeMode::Block,
            });
        });
        assert_eq!(p.check_rate(ip("192.0.2.1")), None);
        assert_eq!(p.check_rate(ip("192.0.2.1")), None);
        let (mode, retry) = p.check_rate(ip("192.0.2.1")).expect("limited");
        assert_eq!(mode, EdgeMode::Block);
        // One request refills every 30 minutes.
        assert!((1..=1800).contains(&retry), "{retry}");
        assert_eq!(p.check_rate(ip("192.0.2.2")), None);
        assert_eq!(p.check_rate(ip("2001:db8::1")), None);
        assert_eq!(p.check_rate(ip("2001:db8::2")), None);
        assert!(p.check_rate(ip("2001:db8::3")).is_some());
        p.retain_recent();
    }

    #[test]
    fn rule_ids_are_stable_and_indexed() {
        let ids: Vec<&str> = EdgeRule::ALL.iter().map(|r| r.as_str()).collect();
        assert!(ids.contains(&"waf.log4shell") && ids.contains(&"ip_deny"));
        for (i, rule) in EdgeRule::ALL.iter().enumerate() {
            assert_eq!(rule.index(), i);
        }
    }
}
