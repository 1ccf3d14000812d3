//! `[env.NAME.edge] geo = { ... }`: country allow or deny lists judged from a MaxMind-format
//! database, as a typed model and its validation. Opening the database is the gateway's job;
//! this file only resolves its path against the configuration file's directory.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::super::{Cx, T};
use super::{EdgeMode, mode};

/// `geo`: which countries may reach the app. Exactly one of `allow` and `deny` is given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GeoConfig {
    /// The `.mmdb` file (GeoLite2-Country or any database with `country.iso_code`), relative
    /// paths taken from the configuration file's directory.
    pub database: PathBuf,
    /// The countries listed, as ISO 3166-1 alpha-2 codes in upper case.
    pub countries: Vec<String>,
    /// True for `allow` (only the listed countries get in), false for `deny`.
    pub allow: bool,
    /// Whether clients whose country the database does not know get in; default `allow`.
    pub unknown_allowed: bool,
    /// Default the edge `mode`.
    pub mode: EdgeMode,
}

/// Parses `geo` of the edge table; `None` when absent or wrong (the errors are in `cx`).
pub(super) fn parse(t: &T<'_>, edge_mode: EdgeMode, cx: &mut Cx) -> Option<GeoConfig> {
    let g = t.table("geo", cx)?;
    cx.only(&g, &["database", "allow", "deny", "unknown", "mode"]);
    let database = match g.string("database", cx) {
        Some(d) if !d.is_empty() => Some(relative_to_config(&cx.file, &d)),
        Some(_) | None => {
            cx.err(
                &g.child("database"),
                "expected the path of a MaxMind .mmdb file, e.g. \"GeoLite2-Country.mmdb\""
                    .to_string(),
            );
            None
        }
    };
    let allow = countries(&g, "allow", cx);
    let deny = countries(&g, "deny", cx);
    let (countries, allow) = match (allow, deny) {
        (Some(a), None) => (a, true),
        (None, Some(d)) => (d, false),
        (Some(_), Some(_)) => {
            cx.err(
                &g.child("deny"),
                "give either `allow` or `deny`, not both".to_string(),
            );
            return None;
        }
        (None, None) => {
            cx.err(
                &g.key,
                "expected `allow = [\"DE\", ...]` or `deny = [\"XX\", ...]`".to_string(),
            );
            return None;
        }
    };
    let unknown_allowed = match g.string("unknown", cx).as_deref() {
        None | Some("allow") => true,
        Some("deny") => false,
        Some(other) => {
            cx.err(
                &g.child("unknown"),
                format!("expected \"allow\" or \"deny\", got {other:?}"),
            );
            true
        }
    };
    let mode = mode(&g, "mode", edge_mode, cx);
    Some(GeoConfig {
        database: database?,
        countries,
        allow,
        unknown_allowed,
        mode,
    })
}

fn countries(g: &T<'_>, k: &str, cx: &mut Cx) -> Option<Vec<String>> {
    let list = g.string_list(k, cx)?;
    let mut out = Vec::new();
    for (i, code) in list.iter().enumerate() {
        if code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()) {
            out.push(code.clone());
        } else {
            cx.err(
                &format!("{}[{i}]", g.child(k)),
                format!(
                    "expected a two-letter country code in upper case like \"DE\", got {code:?}"
                ),
            );
        }
    }
    Some(out)
}

/// `path` as written, or joined to the directory of the configuration file `file` when
/// relative, so that a configuration means the same wherever rollgate is started from.
pub(super) fn relative_to_config(file: &str, path: &str) -> PathBuf {
    let path = Path::new(path);
    match Path::new(file).parent() {
        Some(dir) if path.is_relative() && !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_path_buf(),
    }
}
