//! The auth phase's questions, answered without I/O: what a path needs (per-route policy),
//! whether a request's API key or signature is valid, fresh and not replayed, and whether a
//! key is over its rate. Built once from `[env.NAME.edge.auth]`; the phases that apply it are
//! in `phases::handle`.
//!
//! Failures are told apart only by their stable code (`api_key_missing`, `api_key_invalid`,
//! `signature_missing`, `signature_invalid`, `signature_expired`, `signature_replayed`): an
//! unknown key id, a wrong secret and a malformed header are all "invalid". Comparisons of
//! secrets are constant-time.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use governor::{DefaultKeyedRateLimiter, RateLimiter};
use rollgate_core::config::edge::{AuthConfig, AuthRequirement, AuthRoute, EdgeMode};
use rollgate_core::signing::{
    self, API_KEY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, api_key_id, api_key_sha256,
    canonical_request, parse_signature_header, parse_timestamp,
};
use subtle::ConstantTimeEq;

use crate::edge::{EdgeError, EdgeRule, check_keyed, quota};
use crate::keys::KeySource;

/// The credentials a request presents: its `X-API-Key`, `X-Signature` and `X-Timestamp`
/// header fields, read in one pass over its fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    api_key: Credential<'a>,
    signature: Credential<'a>,
    timestamp: Credential<'a>,
}

/// One credential field: sent twice or not as text, it is there but cannot be valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Credential<'a> {
    #[default]
    Absent,
    One(&'a str),
    Invalid,
}

impl<'a> Credential<'a> {
    fn add(&mut self, value: &'a [u8]) {
        *self = match (*self, crate::head::field_text(value)) {
            (Credential::Absent, Some(text)) => Credential::One(text),
            _ => Credential::Invalid,
        };
    }

    fn present(self) -> bool {
        self != Credential::Absent
    }

    fn single(self) -> Option<&'a str> {
        match self {
            Credential::One(text) => Some(text),
            Credential::Absent | Credential::Invalid => None,
        }
    }
}

impl<'a> Credentials<'a> {
    /// Picks the credentials out of a request's header fields, given as (name, value); names
    /// are compared ignoring case.
    pub fn from_fields(fields: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut credentials = Credentials::default();
        for (name, value) in fields {
            let slot = if name.eq_ignore_ascii_case(API_KEY_HEADER) {
                &mut credentials.api_key
            } else if name.eq_ignore_ascii_case(SIGNATURE_HEADER) {
                &mut credentials.signature
            } else if name.eq_ignore_ascii_case(TIMESTAMP_HEADER) {
                &mut credentials.timestamp
            } else {
                continue;
            };
            slot.add(value);
        }
        credentials
    }
}

/// Why a request was not authenticated; each has a stable code, the `code` of the 401 body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// The route needs an API key and the request has neither a key nor a signature.
    ApiKeyMissing,
    /// The API key is malformed, unknown, or wrong.
    ApiKeyInvalid,
    /// The route needs a signature and the request has none.
    SignatureMissing,
    /// The signature header or timestamp is malformed, the key unknown, or the signature
    /// does not match the request.
    SignatureInvalid,
    /// The signature matches but its timestamp is outside the window.
    SignatureExpired,
    /// The signature was already accepted once.
    SignatureReplayed,
    /// The replay cache is full of unexpired signatures: a new one cannot be remembered, so it
    /// is refused rather than let through unprotected.
    ReplayCacheFull,
}

impl AuthFailure {
    /// The stable code.
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::ApiKeyMissing => "api_key_missing",
            AuthFailure::ApiKeyInvalid => "api_key_invalid",
            AuthFailure::SignatureMissing => "signature_missing",
            AuthFailure::SignatureInvalid => "signature_invalid",
            AuthFailure::SignatureExpired => "signature_expired",
            AuthFailure::SignatureReplayed => "signature_replayed",
            AuthFailure::ReplayCacheFull => "auth_unavailable",
        }
    }

    /// The edge rule that reports it.
    pub(crate) fn rule(self) -> EdgeRule {
        match self {
            AuthFailure::ApiKeyMissing | AuthFailure::ApiKeyInvalid => EdgeRule::AuthApiKey,
            _ => EdgeRule::AuthSignature,
        }
    }

    /// The header that was judged, for the access log's `field`.
    pub(crate) fn field(self) -> &'static str {
        match self {
            AuthFailure::ApiKeyMissing | AuthFailure::ApiKeyInvalid => "header:x-api-key",
            _ => "header:x-signature",
        }
    }
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The auth policy of one gateway: routes, key sources, window, replay cache, per-key limiter.
pub struct Authenticator {
    mode: EdgeMode,
    routes: AuthConfig,
    sources: Vec<Arc<dyn KeySource>>,
    window_secs: u64,
    replay: ReplayCache,
    key_rate: Option<(DefaultKeyedRateLimiter<String>, EdgeMode)>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("routes", &self.routes.routes)
            .field("sources", &self.sources.len())
            .field("window_secs", &self.window_secs)
            .field("key_rate", &self.key_rate.as_ref().map(|(_, m)| m))
            .finish()
    }
}

impl Authenticator {
    /// Builds the policy; keys are looked up in `sources` in order, the first that knows an
    /// id answers.
    pub fn new(
        config: &AuthConfig,
        sources: Vec<Arc<dyn KeySource>>,
    ) -> Result<Authenticator, EdgeError> {
        let key_rate = config
            .rate_limit
            .as_ref()
            .map(|r| Ok::<_, EdgeError>((RateLimiter::keyed(quota(r)?), r.mode)))
            .transpose()?;
        Ok(Authenticator {
            mode: config.mode,
            routes: AuthConfig {
                routes: config.routes.clone(),
                ..AuthConfig::default()
            },
            sources,
            window_secs: config.window.as_secs(),
            replay: ReplayCache::new(config.replay_cache),
            key_rate,
        })
    }

    /// Mode of the API key and signature checks.
    pub(crate) fn mode(&self) -> EdgeMode {
        self.mode
    }

    /// What a request for `path` (raw, as sent) needs: the strictest of what the longest
    /// matching prefix says for the path as sent, for it decoded with dot segments and
    /// repeated slashes resolved, and for that in lower case. An app that decodes or folds
    /// case itself would otherwise serve `/health/../admin` or `/API/` under a weaker policy.
    pub fn requirement(&self, path: &str) -> AuthRequirement {
        if is_normal_path(path) {
            // All three forms are the same path: one lookup, nothing to allocate.
            return self.routes.requirement(path);
        }
        let normalized = normalized_path(path);
        let lower = normalized.to_lowercase();
        [path, normalized.as_str(), lower.as_str()]
            .into_iter()
            .map(|p| self.routes.requirement(p))
            .max()
            .unwrap_or(AuthRequirement::ApiKey)
    }

    /// The configured routes.
    pub fn routes(&self) -> &[AuthRoute] {
        &self.routes.routes
    }

    /// Authenticates one request: `Ok(None)` on an open route, `Ok(Some(key_id))` when the
    /// API key or signature is valid (on `api_key` routes a valid signature also does), the
    /// failure otherwise. `now` gives the gateway's unix time in seconds, read only for a
    /// signature (an API key needs no clock). A valid signature is
    /// remembered, and refused if it comes again within the window.
    pub fn authenticate(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        credentials: &Credentials<'_>,
        body: &[u8],
        now: impl FnOnce() -> u64,
    ) -> Result<Option<String>, AuthFailure> {
        let has_signature = credentials.signature.present();
        match self.requirement(path) {
            AuthRequirement::None => Ok(None),
            AuthRequirement::ApiKey if credentials.api_key.present() => {
                self.check_api_key(credentials).map(Some)
            }
            AuthRequirement::ApiKey if !has_signature => Err(AuthFailure::ApiKeyMissing),
            AuthRequirement::Signature if !has_signature => Err(AuthFailure::SignatureMissing),
            AuthRequirement::ApiKey | AuthRequirement::Signature => self
                .check_signature(method, path, query, credentials, body, now())
                .map(Some),
        }
    }

    fn material(&self, key_id: &str) -> Option<crate::keys::KeyMaterial> {
        self.sources.iter().find_map(|s| s.key(key_id))
    }

    fn check_api_key(&self, credentials: &Credentials<'_>) -> Result<String, AuthFailure> {
        let presented = credentials
            .api_key
            .single()
            .ok_or(AuthFailure::ApiKeyInvalid)?;
        let id = api_key_id(presented).ok_or(AuthFailure::ApiKeyInvalid)?;
        let hash = api_key_sha256(presented);
        let material = self.material(id);
        // Compare against something even for an unknown id, so that the time taken does not
        // tell which ids exist.
        let stored = material
            .as_ref()
            .and_then(|m| m.api_key_sha256().copied())
            .unwrap_or([0xa5; 32]);
        let equal: bool = hash.ct_eq(&stored).into();
        if equal && material.is_some_and(|m| m.api_key_sha256().is_some()) {
            Ok(id.to_owned())
        } else {
            Err(AuthFailure::ApiKeyInvalid)
        }
    }

    fn check_signature(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        credentials: &Credentials<'_>,
        body: &[u8],
        now: u64,
    ) -> Result<String, AuthFailure> {
        let invalid = AuthFailure::SignatureInvalid;
        let header = credentials.signature.single().ok_or(invalid)?;
        let (key_id, signature) = parse_signature_header(header).ok_or(invalid)?;
        let ts_text = credentials.timestamp.single().ok_or(invalid)?;
        let ts = parse_timestamp(ts_text).ok_or(invalid)?;
        let material = self.material(key_id);
        let secret = material.as_ref().and_then(|m| m.hmac_secret());
        let canonical = canonical_request(method, path, query, ts_text, body);
        // As for API keys: an unknown key costs the same HMAC as a known one.
        let valid = signing::verify(
            secret.unwrap_or(b"rollgate-unknown-key"),
            &canonical,
            &signature,
        );
        if !valid || secret.is_none() {
            return Err(invalid);
        }
        // Only an authentic request learns that it is stale; both directions, since a
        // timestamp far ahead would otherwise outlive its replay-cache entry.
        if now.abs_diff(ts) > self.window_secs {
            return Err(AuthFailure::SignatureExpired);
        }
        self.replay
            .remember(signature, ts.saturating_add(self.window_secs), now)?;
        Ok(key_id.to_owned())
    }

    /// Takes one request from `key_id`'s rate: `None` when allowed (or no limit), else the
    /// mode and the whole seconds until the next request would be allowed (at least 1).
    pub(crate) fn check_key_rate(&self, key_id: &str) -> Option<(EdgeMode, u64)> {
        let (limiter, mode) = self.key_rate.as_ref()?;
        check_keyed(limiter, &key_id.to_owned()).map(|secs| (*mode, secs))
    }

    /// Forgets keys whose rate is full again and signatures whose window has passed.
    pub(crate) fn retain_recent(&self, now: u64) {
        if let Some((limiter, _)) = &self.key_rate {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        self.replay.purge(now);
    }
}

/// True when [`normalized_path`] and lower-casing would both give `path` back unchanged: it
/// starts with `/`, has no `%`, `\\` or ASCII capitals, no empty segment before its end (`//`)
/// and no `.` or `..` segment. Most request paths are; they skip two allocations.
fn is_normal_path(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/')
        || bytes
            .iter()
            .any(|&b| b == b'%' || b == b'\\' || b.is_ascii_uppercase() || !b.is_ascii())
    {
        return false;
    }
    let segments = path.get(1..).unwrap_or_default();
    let mut rest = segments.split('/').peekable();
    while let Some(segment) = rest.next() {
        let last = rest.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// `path` percent-decoded, with `.` and `..` segments resolved and repeated slashes
/// collapsed, as many apps see it; a trailing slash is kept.
fn normalized_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |j: usize| bytes.get(j).and_then(|c| char::from(*c).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                decoded.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                i += 3;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let decoded = String::from_utf8_lossy(&decoded).replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = format!("/{}", segments.join("/"));
    if decoded.ends_with('/') && out.len() > 1 {
        out.push('/');
    }
    out
}

/// Signatures accepted within their window, each kept until its timestamp leaves the window.
/// Bounded: when `capacity` unexpired signatures are held, new ones are refused (fail closed).
///
/// Split in [`REPLAY_SHARDS`] tables by the signature's first byte (an HMAC output, so evenly):
/// the serving threads seldom wait for each other, and growing a table, which rehashes every
/// entry in it while the serving thread does nothing else, takes 1/256 of the time. With one
/// table of a few million signatures each growth stalled a serving thread for tens of
/// milliseconds (p99 21.7 ms against 2.5 ms for API keys, at 53k signed requests/s).
struct ReplayCache {
    capacity: usize,
    /// Signatures held over all shards.
    len: AtomicUsize,
    shards: [Mutex<ReplayState>; REPLAY_SHARDS],
    full: Mutex<FullWarning>,
}

const REPLAY_SHARDS: usize = 256;

/// Signatures are forgotten in groups of this many seconds (the end of their window rounded up):
/// fewer, fuller buckets per shard, for at most this much longer than needed.
const EXPIRY_BUCKET_SECS: u64 = 8;

/// How often a full cache is logged at most: it refuses every signed request while full, and a
/// warning per request would flood the log at the rate the clients send.
const FULL_WARNING_EVERY_SECS: u64 = 10;

#[derive(Default)]
struct ReplayState {
    seen: HashSet<[u8; 32]>,
    /// The same signatures by the end of their window (rounded up to [`EXPIRY_BUCKET_SECS`]), so
    /// that whole buckets are forgotten at once as the clock passes them (about 75 for a
    /// ±5-minute window).
    by_expiry: BTreeMap<u64, Vec<[u8; 32]>>,
}

/// Requests refused since the last warning about a full cache, and when that was.
#[derive(Default)]
struct FullWarning {
    refused: u64,
    warned_at: Option<u64>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ReplayCache {
    fn new(capacity: usize) -> Self {
        ReplayCache {
            capacity,
            len: AtomicUsize::new(0),
            shards: std::array::from_fn(|_| Mutex::default()),
            full: Mutex::default(),
        }
    }

    /// Remembers `signature` until `expires` (unix seconds); refuses one already seen.
    fn remember(&self, signature: [u8; 32], expires: u64, now: u64) -> Result<(), AuthFailure> {
        match self.try_remember(signature, expires, now) {
            Err(AuthFailure::ReplayCacheFull) => {
                // The other shards may hold signatures whose window has passed.
                self.purge(now);
                let retried = self.try_remember(signature, expires, now);
                if retried == Err(AuthFailure::ReplayCacheFull) {
                    self.note_full(now);
                }
                retried
            }
            other => other,
        }
    }

    fn try_remember(&self, signature: [u8; 32], expires: u64, now: u64) -> Result<(), AuthFailure> {
        let mut shard = lock(&self.shards[usize::from(signature[0]) % REPLAY_SHARDS]);
        // Forget what has left the window first: memory follows the signed traffic of the
        // last window rather than growing to the capacity and staying there.
        let purged = shard.purge(now);
        self.len.fetch_sub(purged, Ordering::Relaxed);
        if self.len.load(Ordering::Relaxed) >= self.capacity {
            return Err(if shard.seen.contains(&signature) {
                AuthFailure::SignatureReplayed
            } else {
                AuthFailure::ReplayCacheFull
            });
        }
        if !shard.seen.insert(signature) {
            return Err(AuthFailure::SignatureReplayed);
        }
        if self.len.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            // Another shard took the last place since the check above.
            self.len.fetch_sub(1, Ordering::Relaxed);
            shard.seen.remove(&signature);
            return Err(AuthFailure::ReplayCacheFull);
        }
        let bucket = expires.div_ceil(EXPIRY_BUCKET_SECS) * EXPIRY_BUCKET_SECS;
        shard.by_expiry.entry(bucket).or_default().push(signature);
        Ok(())
    }

    fn note_full(&self, now: u64) {
        let mut full = lock(&self.full);
        full.refused += 1;
        if full
            .warned_at
            .is_none_or(|at| now >= at.saturating_add(FULL_WARNING_EVERY_SECS))
        {
            tracing::warn!(
                capacity = self.capacity,
                refused = full.refused,
                "replay cache full of unexpired signatures; refusing signed requests \
                 (auth.replay_cache)"
            );
            full.refused = 0;
            full.warned_at = Some(now);
        }
    }

    fn purge(&self, now: u64) {
        for shard in &self.shards {
            let purged = lock(shard).purge(now);
            self.len.fetch_sub(purged, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

impl ReplayState {
    /// Drops entries whose window has passed (they would be refused as expired anyway) and
    /// says how many.
    fn purge(&mut self, now: u64) -> usize {
        let mut purged = 0;
        while let Some(bucket) = self.by_expiry.first_entry() {
            if *bucket.key() >= now {
                break;
            }
            for signature in bucket.remove() {
                purged += usize::from(self.seen.remove(&signature));
            }
        }
        purged
    }
}

#[cfg(test)]
mod tests {
    use rollgate_core::config::edge::{KeyUse, RateLimitConfig};

    use super::*;
    use crate::keys::{KeyMaterial, StaticKeys};

    const SECRET: &str = "0123456789abcdef-ci";
    const NOW: u64 = 1_700_000_000;

    #[test]
    fn normal_paths_are_exactly_those_normalizing_leaves_alone() {
        let paths = [
            "/",
            "/api",
            "/api/",
            "/api/users/42",
            "/health",
            "/a-b_c.d~e/f.json",
            "/API",
            "/Api/x",
            "//api",
            "/api//x",
            "/api/./x",
            "/api/../admin",
            "/api/.",
            "/api/..",
            "/.hidden/x",
            "/..",
            "/%61pi",
            "/api%2fx",
            "/a\\b",
            "api",
            "",
            "/.../x",
            "/x/",
            "/x//",
        ];
        for path in paths {
            let unchanged = normalized_path(path) == path && path.to_lowercase() == path;
            assert_eq!(is_normal_path(path), unchanged, "{path:?}");
        }
    }

    fn auth(edit: impl FnOnce(&mut AuthConfig)) -> Authenticator {
        let mut config = AuthConfig {
            routes: vec![
                AuthRoute {
                    prefix: "/health".into(),
                    auth: AuthRequirement::None,
                },
                AuthRoute {
                    prefix: "/api/".into(),
                    auth: AuthRequirement::Signature,
                },
                AuthRoute {
                    prefix: "/".into(),
                    auth: AuthRequirement::ApiKey,
                },
            ],
            ..AuthConfig::default()
        };
        edit(&mut config);
        let mut keys = StaticKeys::new();
        keys.insert("ci", KeyMaterial::from_secret("ci", SECRET, KeyUse::Both));
        keys.insert(
            "signer",
            KeyMaterial::from_secret("signer", SECRET, KeyUse::Signature),
        );
        Authenticator::new(&config, vec![Arc::new(keys)]).expect("authenticator")
    }

    fn signed(
        key: &str,
        method: &str,
        path: &str,
        query: Option<&str>,
        ts: u64,
        body: &[u8],
    ) -> Fields {
        let signature = signing::signature_for(
            key,
            SECRET.as_bytes(),
            method,
            path,
            query,
            &ts.to_string(),
            body,
        );
        Fields(vec![
            ("X-Timestamp", ts.to_string()),
            (SIGNATURE_HEADER, signature),
        ])
    }

    fn with_key(key: &str) -> Fields {
        Fields(vec![(API_KEY_HEADER, key.to_owned())])
    }

    /// A request's header fields, for [`Credentials::from_fields`].
    struct Fields(Vec<(&'static str, String)>);

    impl Fields {
        fn credentials(&self) -> Credentials<'_> {
            Credentials::from_fields(self.0.iter().map(|(n, v)| (*n, v.as_bytes())))
        }
    }

    #[test]
    fn a_credential_sent_twice_or_not_as_text_is_invalid() {
        let a = auth(|_| {});
        let key = format!("rg_ci_{SECRET}");
        let twice = Fields(vec![(API_KEY_HEADER, key.clone()), ("X-API-Key", key)]);
        assert_eq!(
            a.authenticate("GET", "/x", None, &twice.credentials(), b"", || NOW),
            Err(AuthFailure::ApiKeyInvalid)
        );
        let binary = Credentials::from_fields([(API_KEY_HEADER, &b"rg_ci_\xff"[..])]);
        assert_eq!(
            a.authenticate("GET", "/x", None, &binary, b"", || NOW),
            Err(AuthFailure::ApiKeyInvalid)
        );
    }

    #[test]
    fn the_longest_prefix_decides_and_normalizing_only_tightens() {
        let a = auth(|_| {});
        assert_eq!(a.requirement("/health"), AuthRequirement::None);
        assert_eq!(a.requirement("/api/users"), AuthRequirement::Signature);
        assert_eq!(a.requirement("/other"), AuthRequirement::ApiKey);
        assert_eq!(
            a.requirement("/health/../api/x"),
            AuthRequirement::Signature
        );
        assert_eq!(
            a.requirement("/health/%2e%2e/api/x"),
            AuthRequirement::Signature
        );
        assert_eq!(a.requirement("//api//x"), AuthRequirement::Signature);
        assert_eq!(a.requirement("/API/x"), AuthRequirement::Signature);
        assert_eq!(normalized_path("/a/./b/../c/"), "/a/c/");
    }

    #[test]
    fn api_keys_are_checked_against_their_hash() {
        let a = auth(|_| {});
        let ok = a.authenticate(
            "GET",
            "/x",
            None,
            &with_key(&format!("rg_ci_{SECRET}")).credentials(),
            b"",
            || NOW,
        );
        assert_eq!(ok, Ok(Some("ci".to_owned())));
        for bad in [
            "rg_ci_wrong",
            "rg_nobody_x",
            "nonsense",
            &format!("rg_signer_{SECRET}"),
        ] {
            assert_eq!(
                a.authenticate("GET", "/x", None, &with_key(bad).credentials(), b"", || NOW),
                Err(AuthFailure::ApiKeyInvalid),
                "{bad}"
            );
        }
        assert_eq!(
            a.authenticate("GET", "/x", None, &Credentials::default(), b"", || NOW),
            Err(AuthFailure::ApiKeyMissing)
        );
        assert_eq!(
            a.authenticate("GET", "/health", None, &Credentials::default(), b"", || NOW),
            Ok(None)
        );
        // An API key is not a signature.
        assert_eq!(
            a.authenticate(
                "GET",
                "/api/x",
                None,
                &with_key(&format!("rg_ci_{SECRET}")).credentials(),
                b"",
                || NOW
            ),
            Err(AuthFailure::SignatureMissing)
        );
    }

    #[test]
    fn signatures_are_checked_fresh_and_once() {
        let a = auth(|_| {});
        let h = signed("signer", "POST", "/api/x", Some("b=2&a=1"), NOW - 10, b"{}");
        let check = |headers: &Fields, path: &str, query: Option<&str>, body: &[u8], now: u64| {
            a.authenticate("POST", path, query, &headers.credentials(), body, || now)
        };
        assert_eq!(
            check(&h, "/api/x", Some("a=1&b=2"), b"{}", NOW),
            Ok(Some("signer".into()))
        );
        assert_eq!(
            check(&h, "/api/x", Some("a=1&b=2"), b"{}", NOW),
            Err(AuthFailure::SignatureReplayed)
        );
        let h = signed("signer", "POST", "/api/x", None, NOW, b"{}");
        assert_eq!(
            check(&h, "/api/y", None, b"{}", NOW),
            Err(AuthFailure::SignatureInvalid)
        );
        assert_eq!(
            check(&h, "/api/x", None, b"{ }", NOW),
            Err(AuthFailure::SignatureInvalid)
        );
        assert_eq!(
            check(&h, "/api/x", Some("a=1"), b"{}", NOW),
            Err(AuthFailure::SignatureInvalid)
        );
        assert_eq!(
            check(&h, "/api/x", None, b"{}", NOW + 301),
            Err(AuthFailure::SignatureExpired)
        );
        assert_eq!(
            check(&h, "/api/x", None, b"{}", NOW - 301),
            Err(AuthFailure::SignatureExpired)
        );
        let unknown = signed("nobody", "POST", "/api/x", None, NOW, b"{}");
        assert_eq!(
            check(&unknown, "/api/x", None, b"{}", NOW),
            Err(AuthFailure::SignatureInvalid)
        );
        // A signature also satisfies an api_key route.
        let h = signed("ci", "GET", "/other", None, NOW, b"");
        assert_eq!(
            a.authenticate("GET", "/other", None, &h.credentials(), b"", || NOW),
            Ok(Some("ci".into()))
        );
    }

    #[test]
    fn the_replay_cache_forgets_expired_entries_and_fails_closed_when_full() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.remember([1; 32], 100, 50), Ok(()));
        assert_eq!(cache.remember([2; 32], 200, 50), Ok(()));
        assert_eq!(
            cache.remember([3; 32], 300, 50),
            Err(AuthFailure::ReplayCacheFull)
        );
        // At 150 the first entry's window is over: room again.
        assert_eq!(cache.remember([3; 32], 300, 150), Ok(()));
        assert_eq!(cache.len(), 2);
        cache.purge(1000);
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn the_replay_cache_forgets_passed_seconds_without_being_full() {
        let cache = ReplayCache::new(1000);
        // Signatures with the same first byte share a shard, which forgets what has passed
        // whenever it remembers a signature; the other shards wait for `purge`.
        let in_shard = |i: u8| {
            let mut signature = [7u8; 32];
            signature[1] = i;
            signature
        };
        for i in 0..10u8 {
            let expires = if i % 2 == 0 { 96 } else { 104 };
            assert_eq!(cache.remember(in_shard(i), expires, 50), Ok(()));
        }
        assert_eq!(cache.remember([1; 32], 96, 50), Ok(()));
        assert_eq!(cache.len(), 11);
        // At 97 the windows that ended at 96 have passed: the shard's five are forgotten, the
        // five ending at 104 kept.
        assert_eq!(cache.remember(in_shard(100), 300, 97), Ok(()));
        assert_eq!(cache.len(), 7);
        assert_eq!(
            cache.remember(in_shard(1), 300, 97),
            Err(AuthFailure::SignatureReplayed)
        );
        cache.purge(97);
        assert_eq!(cache.len(), 6);
        // A window ending at 101 is kept until its bucket (rounded up to 104) has passed.
        assert_eq!(cache.remember(in_shard(200), 101, 97), Ok(()));
        cache.purge(103);
        assert_eq!(cache.len(), 7);
        cache.purge(105);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn threads_racing_for_the_last_places_never_overfill_the_replay_cache() {
        let cache = ReplayCache::new(15_000);
        let accepted: usize = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4u32)
                .map(|t| {
                    let cache = &cache;
                    scope.spawn(move || {
                        (0..5_000u64)
                            .filter(|i| {
                                // Distinct for every (thread, i), spread over the shards
                                // (an odd multiplier is a bijection of u64).
                                let n =
                                    (u64::from(t) << 32 | i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                                let mut signature = [0u8; 32];
                                signature[..8].copy_from_slice(&n.to_be_bytes());
                                cache.remember(signature, 1000, 50).is_ok()
                            })
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("thread")).sum()
        });
        assert_eq!(accepted, 15_000);
        assert_eq!(cache.len(), 15_000);
    }

    #[test]
    fn a_full_replay_cache_is_logged_once_per_interval_with_the_refusals_counted() {
        let cache = ReplayCache::new(1);
        assert_eq!(cache.remember([0; 32], 1000, 50), Ok(()));
        let refuse = |i: u8, now: u64| {
            assert_eq!(
                cache.remember([i; 32], 1000, now),
                Err(AuthFailure::ReplayCacheFull)
            );
            let full = cache.full.lock().expect("lock");
            (full.refused, full.warned_at)
        };
        // The first refusal warns; the next ones within the interval are only counted.
        assert_eq!(refuse(1, 50), (0, Some(50)));
        assert_eq!(refuse(2, 51), (1, Some(50)));
        assert_eq!(refuse(3, 59), (2, Some(50)));
        // The interval is over: a warning with the count, which starts again.
        assert_eq!(refuse(4, 60), (0, Some(60)));
    }

    #[test]
    fn the_key_rate_is_per_key() {
        let a = auth(|c| {
            c.rate_limit = Some(RateLimitConfig {
                requests: 2,
                per: std::time::Duration::from_secs(60),
                mode: EdgeMode::Block,
            });
        });
        assert_eq!(a.check_key_rate("ci"), None);
        assert_eq!(a.check_key_rate("ci"), None);
        let (mode, retry) = a.check_key_rate("ci").expect("limited");
        assert_eq!(mode, EdgeMode::Block);
        assert!((1..=30).contains(&retry), "{retry}");
        assert_eq!(a.check_key_rate("signer"), None);
        a.retain_recent(NOW);
    }
}
