//! `[env.NAME.edge.auth]`: which routes need an API key or a signed request, where the keys
//! come from (environment variables or a key file, never the configuration itself), the
//! signature window, the replay cache and the per-key rate limit; and the format of the key
//! file. Reading variables and files is the gateway's job; this file only describes them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use zeroize::Zeroizing;

use super::super::{ConfigErrors, Cx, T, ms};
use super::{EdgeMode, RateLimitConfig, mode};
use crate::signing::valid_key_id;

/// Default per-key rate limit: 100 requests per minute.
pub const DEFAULT_KEY_RATE_REQUESTS: u32 = 100;
/// The period of [`DEFAULT_KEY_RATE_REQUESTS`].
pub const DEFAULT_KEY_RATE_PER: Duration = Duration::from_secs(60);
/// Default signature window, either side of the gateway's clock.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Default number of signatures remembered for replay protection.
pub const DEFAULT_REPLAY_CACHE: usize = 100_000;

/// What a route asks of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthRequirement {
    /// Open.
    None,
    /// A valid `X-API-Key` (or a valid signature, which proves more).
    ApiKey,
    /// A valid, fresh, unreplayed `X-Signature`.
    Signature,
}

impl AuthRequirement {
    /// `"none"`, `"api_key"` or `"signature"`, as in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthRequirement::None => "none",
            AuthRequirement::ApiKey => "api_key",
            AuthRequirement::Signature => "signature",
        }
    }
}

/// One `routes` entry: requests whose path starts with `prefix` need `auth`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthRoute {
    /// A path prefix starting with `/`.
    pub prefix: String,
    /// What requests under it need.
    pub auth: AuthRequirement,
}

/// What a key may be used for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyUse {
    /// As an API key and for signatures (the default).
    #[default]
    Both,
    /// Only as an API key `rg_<id>_<secret>`.
    ApiKey,
    /// Only for signatures: the secret never travels, so it is the safer choice.
    Signature,
}

/// One `keys` entry: a key whose secret is in an environment variable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyRef {
    /// The key id, 1 to 64 of `A-Z a-z 0-9 -`.
    pub id: String,
    /// The environment variable holding the secret.
    pub secret_env: String,
    /// Default `both`.
    #[serde(rename = "use")]
    pub usage: KeyUse,
    /// `FILE: env.NAME.edge.auth.keys[i].secret_env`, for errors found when the variable is
    /// read.
    #[serde(skip)]
    pub origin: String,
}

/// `[env.NAME.edge.auth]`. Absent means no authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuthConfig {
    /// Mode of the API key and signature checks; default the edge `mode`.
    pub mode: EdgeMode,
    /// Per-route policy, longest prefix first; a path no prefix matches needs an API key.
    /// Default `[{ prefix = "/", auth = "api_key" }]`.
    pub routes: Vec<AuthRoute>,
    /// Keys whose secrets are in environment variables; default none.
    pub keys: Vec<KeyRef>,
    /// A key file (mode 0600) of `[[key]]` tables; default none.
    pub keys_file: Option<PathBuf>,
    /// How far `X-Timestamp` may be from the gateway's clock, either way; default 5 minutes.
    #[serde(with = "ms")]
    pub window: Duration,
    /// Signatures remembered for replay protection; default 100,000.
    pub replay_cache: usize,
    /// Per-key rate limit; `None` when `rate_limit = false`. Default 100 per minute.
    pub rate_limit: Option<RateLimitConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: EdgeMode::Block,
            routes: vec![AuthRoute {
                prefix: "/".to_owned(),
                auth: AuthRequirement::ApiKey,
            }],
            keys: Vec::new(),
            keys_file: None,
            window: DEFAULT_WINDOW,
            replay_cache: DEFAULT_REPLAY_CACHE,
            rate_limit: Some(RateLimitConfig {
                requests: DEFAULT_KEY_RATE_REQUESTS,
                per: DEFAULT_KEY_RATE_PER,
                mode: EdgeMode::Block,
            }),
        }
    }
}

impl AuthConfig {
    /// What a request for `path` needs: the route with the longest matching prefix, or
    /// `api_key` when none matches.
    pub fn requirement(&self, path: &str) -> AuthRequirement {
        self.routes
            .iter()
            .filter(|r| path.starts_with(r.prefix.as_str()))
            .max_by_key(|r| r.prefix.len())
            .map_or(AuthRequirement::ApiKey, |r| r.auth)
    }
}

const AUTH_KEYS: &[&str] = &[
    "mode",
    "routes",
    "keys",
    "keys_file",
    "window",
    "replay_cache",
    "rate_limit",
];

/// Parses `auth` of the edge table; `None` when absent or wrong (the errors are in `cx`).
pub(super) fn parse(t: &T<'_>, edge_mode: EdgeMode, cx: &mut Cx) -> Option<AuthConfig> {
    let a = t.table("auth", cx)?;
    cx.only(&a, AUTH_KEYS);
    let d = AuthConfig::default();
    let mode = mode(&a, "mode", edge_mode, cx);
    let routes = match a.table.get("routes") {
        None => d.routes,
        Some(_) => parse_routes(&a, cx),
    };
    let keys = parse_keys(&a, cx);
    let keys_file = a
        .string("keys_file", cx)
        .map(|f| super::geo::relative_to_config(&cx.file, &f));
    let window = match a.duration("window", cx) {
        Some(w) if w >= Duration::from_secs(10) && w <= Duration::from_secs(3600) => w,
        Some(w) => {
            cx.err(
                &a.child("window"),
                format!(
                    "expected a duration from 10s to 1h, got {}",
                    humantime::format_duration(w)
                ),
            );
            d.window
        }
        None => d.window,
    };
    let replay_cache = a
        .int("replay_cache", 1000, 10_000_000, cx)
        .map_or(d.replay_cache, |n| n as usize);
    let rate_default = RateLimitConfig {
        requests: DEFAULT_KEY_RATE_REQUESTS,
        per: DEFAULT_KEY_RATE_PER,
        mode,
    };
    let rate_limit = match a.table.get("rate_limit") {
        None => Some(rate_default),
        Some(_) => super::parse_rate_limit_as(&a, mode, rate_default, cx),
    };
    Some(AuthConfig {
        mode,
        routes,
        keys,
        keys_file,
        window,
        replay_cache,
        rate_limit,
    })
}

fn parse_routes(a: &T<'_>, cx: &mut Cx) -> Vec<AuthRoute> {
    let key = a.child("routes");
    let help = "expected an array of { prefix = \"/api/\", auth = \"none\" | \"api_key\" | \"signature\" }";
    let Some(list) = a.table.get("routes").and_then(|v| v.as_array()) else {
        cx.err(&key, help.to_string());
        return Vec::new();
    };
    let mut out: Vec<AuthRoute> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let ikey = format!("{key}[{i}]");
        let Some(table) = item.as_table() else {
            cx.err(&ikey, format!("{help}, got {}", item.type_str()));
            continue;
        };
        let rt = T { key: ikey, table };
        cx.only(&rt, &["prefix", "auth"]);
        let prefix = match rt.string("prefix", cx) {
            Some(p) if p.starts_with('/') => Some(p),
            Some(p) => {
                cx.err(
                    &rt.child("prefix"),
                    format!("expected a path starting with '/', got {p:?}"),
                );
                None
            }
            None => {
                cx.err(
                    &rt.child("prefix"),
                    "expected the path prefix, e.g. \"/api/\"".to_string(),
                );
                None
            }
        };
        let auth = match rt.string("auth", cx).as_deref() {
            Some("none") => Some(AuthRequirement::None),
            Some("api_key") => Some(AuthRequirement::ApiKey),
            Some("signature") => Some(AuthRequirement::Signature),
            other => {
                cx.err(
                    &rt.child("auth"),
                    format!(
                        "expected \"none\", \"api_key\" or \"signature\", got {}",
                        other.map_or_else(|| "nothing".to_string(), |o| format!("{o:?}"))
                    ),
                );
                None
            }
        };
        let (Some(prefix), Some(auth)) = (prefix, auth) else {
            continue;
        };
        if out.iter().any(|r| r.prefix == prefix) {
            cx.err(&rt.child("prefix"), format!("{prefix:?} is listed twice"));
            continue;
        }
        out.push(AuthRoute { prefix, auth });
    }
    out
}

fn parse_keys(a: &T<'_>, cx: &mut Cx) -> Vec<KeyRef> {
    let mut out: Vec<KeyRef> = Vec::new();
    let example = "{ id = \"ci\", secret_env = \"ROLLGATE_KEY_CI\" }";
    for kt in a.tables("keys", example, cx) {
        if kt.table.contains_key("secret") {
            // Never echo the value: it is the secret that must not be in this file.
            cx.err(
                &kt.child("secret"),
                "secrets are never written in rollgate.toml; put it in an environment \
                 variable named by `secret_env`, or in `keys_file`"
                    .to_string(),
            );
        }
        cx.only(&kt, &["id", "secret_env", "use", "secret"]);
        let id = key_id(&kt, cx, out.iter().map(|k| k.id.as_str()));
        let secret_env = match kt.string("secret_env", cx) {
            Some(e) if !e.is_empty() && !e.contains('=') && !e.contains('\0') => Some(e),
            Some(e) => {
                cx.err(
                    &kt.child("secret_env"),
                    format!("expected the name of an environment variable, got {e:?}"),
                );
                None
            }
            None => {
                cx.err(
                    &kt.child("secret_env"),
                    "expected the environment variable holding the secret, e.g. \"ROLLGATE_KEY_CI\""
                        .to_string(),
                );
                None
            }
        };
        let usage = key_use(&kt, cx);
        if let (Some(id), Some(secret_env)) = (id, secret_env) {
            out.push(KeyRef {
                id,
                origin: format!("{}: {}", cx.file, kt.child("secret_env")),
                secret_env,
                usage,
            });
        }
    }
    out
}

fn key_id<'k>(kt: &T<'_>, cx: &mut Cx, mut seen: impl Iterator<Item = &'k str>) -> Option<String> {
    match kt.string("id", cx) {
        Some(id) if valid_key_id(&id) => {
            if seen.any(|s| s == id) {
                cx.err(&kt.child("id"), format!("key id {id:?} is listed twice"));
                return None;
            }
            Some(id)
        }
        Some(id) => {
            cx.err(
                &kt.child("id"),
                format!("expected 1 to 64 of A-Z a-z 0-9 '-', got {id:?}"),
            );
            None
        }
        None => {
            cx.err(
                &kt.child("id"),
                "expected the key id, e.g. \"ci\"".to_string(),
            );
            None
        }
    }
}

fn key_use(kt: &T<'_>, cx: &mut Cx) -> KeyUse {
    match kt.string("use", cx).as_deref() {
        None | Some("both") => KeyUse::Both,
        Some("api_key") => KeyUse::ApiKey,
        Some("signature") => KeyUse::Signature,
        Some(other) => {
            cx.err(
                &kt.child("use"),
                format!("expected \"both\", \"api_key\" or \"signature\", got {other:?}"),
            );
            KeyUse::Both
        }
    }
}

/// One `[[key]]` of a key file. The secret is cleared from memory on drop and never shown by
/// `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyFileEntry {
    /// The key id.
    pub id: String,
    /// The secret, as written (its UTF-8 bytes are the HMAC key).
    pub secret: Zeroizing<String>,
    /// Default `both`.
    pub usage: KeyUse,
}

impl fmt::Debug for KeyFileEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFileEntry")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("usage", &self.usage)
            .finish()
    }
}

/// Parses a key file: `[[key]]` tables of `id`, `secret` and optionally `use`. Every problem
/// names `file` and the key (`key[2].secret`); messages never repeat a secret.
pub fn parse_keys_file(text: &str, file: &str) -> Result<Vec<KeyFileEntry>, ConfigErrors> {
    let mut cx = Cx {
        file: file.to_string(),
        errors: Vec::new(),
    };
    let root: toml::Table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            // The parser's message may quote the offending line, which may hold a secret.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            cx.err(
                &line.map_or_else(|| "syntax".to_string(), |l| format!("line {l}")),
                "invalid TOML".to_string(),
            );
            return Err(ConfigErrors(cx.errors));
        }
    };
    let root_t = T {
        key: String::new(),
        table: &root,
    };
    cx.only(&root_t, &["key"]);
    let mut out: Vec<KeyFileEntry> = Vec::new();
    match root.get("key").map(|v| v.as_array()) {
        None => {}
        Some(None) => cx.err("key", "expected [[key]] tables".to_string()),
        Some(Some(list)) => {
            for (i, item) in list.iter().enumerate() {
                let ikey = format!("key[{i}]");
                let Some(table) = item.as_table() else {
                    cx.err(&ikey, "expected a [[key]] table".to_string());
                    continue;
                };
                let kt = T { key: ikey, table };
                cx.only(&kt, &["id", "secret", "use"]);
                let id = key_id(&kt, &mut cx, out.iter().map(|k| k.id.as_str()));
                let secret = match kt.table.get("secret").map(|v| v.as_str()) {
                    Some(Some(s)) if s.len() >= 16 => Some(Zeroizing::new(s.to_owned())),
                    Some(Some(_)) => {
                        cx.err(
                            &kt.child("secret"),
                            "expected a secret of at least 16 characters".to_string(),
                        );
                        None
                    }
                    Some(None) => {
                        cx.err(&kt.child("secret"), "expected a string".to_string());
                        None
                    }
                    None => {
                        cx.err(&kt.child("secret"), "expected the key's secret".to_string());
                        None
                    }
                };
                let usage = key_use(&kt, &mut cx);
                if let (Some(id), Some(secret)) = (id, secret) {
                    out.push(KeyFileEntry { id, secret, usage });
                }
            }
        }
    }
    if cx.errors.is_empty() {
        Ok(out)
    } else {
        Err(ConfigErrors(cx.errors))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn edge_text(edge: &str) -> String {
        format!("[app.a]\nrun = \"x\"\n[env.prod]\nlisten = \"127.0.0.1:0\"\n{edge}\n")
    }

    fn edge_of(edge: &str) -> super::super::EdgeConfig {
        let config = Config::parse(&edge_text(edge), "conf/rollgate.toml").expect("valid config");
        config.envs["prod"].edge.clone().expect("edge table")
    }

    #[test]
    fn an_empty_auth_table_needs_api_keys_everywhere_with_the_defaults() {
        let auth = edge_of("[env.prod.edge.auth]").auth.expect("auth");
        assert_eq!(auth, AuthConfig::default());
        assert_eq!(auth.requirement("/anything"), AuthRequirement::ApiKey);
        let rate = auth.rate_limit.expect("per-key rate");
        assert_eq!((rate.requests, rate.per), (100, Duration::from_secs(60)));
        assert_eq!(auth.window, Duration::from_secs(300));
    }

    #[test]
    fn parses_routes_keys_and_files_relative_to_the_config() {
        let edge = edge_of(
            r#"
[env.prod.edge]
mode = "count"
geo = { database = "GeoLite2-Country.mmdb", deny = ["XX"], unknown = "deny" }
[env.prod.edge.auth]
routes = [{ prefix = "/health", auth = "none" }, { prefix = "/api/", auth = "signature" }, { prefix = "/", auth = "api_key" }]
keys = [{ id = "ci", secret_env = "ROLLGATE_KEY_CI", use = "signature" }]
keys_file = "keys.toml"
window = "1m"
replay_cache = 5000
rate_limit = "10/1s"
"#,
        );
        let auth = edge.auth.expect("auth");
        assert_eq!(auth.mode, EdgeMode::Count, "auth inherits the edge mode");
        assert_eq!(auth.requirement("/health"), AuthRequirement::None);
        assert_eq!(auth.requirement("/api/users"), AuthRequirement::Signature);
        assert_eq!(auth.requirement("/apix"), AuthRequirement::ApiKey);
        assert_eq!(auth.keys[0].usage, KeyUse::Signature);
        assert_eq!(
            auth.keys[0].origin,
            "conf/rollgate.toml: env.prod.edge.auth.keys[0].secret_env"
        );
        assert_eq!(auth.keys_file.as_deref(), Some(Path::new("conf/keys.toml")));
        assert_eq!(auth.window, Duration::from_secs(60));
        assert_eq!(auth.replay_cache, 5000);
        let rate = auth.rate_limit.expect("rate");
        assert_eq!((rate.requests, rate.mode), (10, EdgeMode::Count));
        let geo = edge.geo.expect("geo");
        assert_eq!(geo.database, Path::new("conf/GeoLite2-Country.mmdb"));
        assert!(!geo.allow && !geo.unknown_allowed);
        assert_eq!(geo.countries, vec!["XX".to_owned()]);
        let off = edge_of("[env.prod.edge.auth]\nrate_limit = false");
        assert_eq!(off.auth.expect("auth").rate_limit, None);
    }

    #[test]
    fn every_auth_and_geo_error_names_the_file_and_the_key() {
        let bad = r#"
[env.prod.edge]
geo = { database = "", allow = ["de"], deny = ["FR"], unknown = "maybe", colour = 1 }
[env.prod.edge.auth]
mode = "log"
routes = [{ prefix = "api", auth = "none" }, { prefix = "/x", auth = "magic" }, { prefix = "/y", auth = "none" }, { prefix = "/y", auth = "none" }]
keys = [{ id = "c_i", secret_env = "A" }, { id = "ok", secret = "hunter2-hunter2-hunter2" }, { id = "ok", secret_env = "B", use = "all" }]
window = "1s"
replay_cache = 5
rate_limit = { requests = 0 }
extra = true
"#;
        let errs = Config::parse(&edge_text(bad), "conf/rollgate.toml").expect_err("invalid");
        let shown = errs.to_string();
        let k = "conf/rollgate.toml: env.prod.edge";
        for needle in [
            format!("{k}.geo.database: expected the path of a MaxMind .mmdb file"),
            format!("{k}.geo.allow[0]: expected a two-letter country code"),
            format!("{k}.geo.deny: give either `allow` or `deny`, not both"),
            format!("{k}.geo.colour: unknown key"),
            format!("{k}.auth.mode: expected \"block\" or \"count\", got \"log\""),
            format!("{k}.auth.routes[0].prefix: expected a path starting with '/'"),
            format!(
                "{k}.auth.routes[1].auth: expected \"none\", \"api_key\" or \"signature\", got \"magic\""
            ),
            format!("{k}.auth.routes[3].prefix: \"/y\" is listed twice"),
            format!("{k}.auth.keys[0].id: expected 1 to 64 of A-Z a-z 0-9 '-', got \"c_i\""),
            format!("{k}.auth.keys[1].secret: secrets are never written in rollgate.toml"),
            format!("{k}.auth.keys[1].secret_env: expected the environment variable"),
            format!("{k}.auth.keys[2].use: expected \"both\", \"api_key\" or \"signature\""),
            format!("{k}.auth.window: expected a duration from 10s to 1h"),
            format!("{k}.auth.replay_cache: expected a whole number from 1000"),
            format!("{k}.auth.rate_limit.requests: expected a whole number from 1"),
            format!("{k}.auth.extra: unknown key"),
        ] {
            assert!(shown.contains(&needle), "missing {needle:?} in:\n{shown}");
        }
        // The inline secret is refused without being repeated.
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn key_files_hold_key_tables() {
        let entries = parse_keys_file(
            "[[key]]\nid = \"ci\"\nsecret = \"0123456789abcdef\"\n[[key]]\nid = \"ops\"\nsecret = \"fedcba9876543210\"\nuse = \"api_key\"\n",
            "keys.toml",
        )
        .expect("valid key file");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].usage, KeyUse::ApiKey);
        assert!(!format!("{entries:?}").contains("0123456789abcdef"));
        let errs = parse_keys_file("[[key]]\nid = \"ci\"\nsecret = \"oops", "keys.toml")
            .expect_err("syntax error")
            .to_string();
        assert_eq!(errs, "keys.toml: line 3: invalid TOML");
        let errs = parse_keys_file(
            "[[key]]\nid = \"ci\"\nsecret = \"0123456789abcdef\"\n[[key]]\nid = \"ci\"\nsecret = \"0123456789abcdef\"\n",
            "keys.toml",
        )
        .expect_err("duplicate")
        .to_string();
        assert!(
            errs.contains("keys.toml: key[1].id: key id \"ci\" is listed twice"),
            "{errs}"
        );
    }
}
