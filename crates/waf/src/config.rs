//! The WAF's configuration ([`WafConfig`], [`Exclusion`], [`Paranoia`]), its validation and the
//! errors it reports ([`WafError`]).

use serde::Deserialize;
use thiserror::Error;

use crate::finding::RuleId;

/// How many request bytes of a body are inspected by default: 64 KiB. Larger bodies are
/// inspected up to this size; the rest passes unseen (the gateway's body limit bounds it).
pub const DEFAULT_MAX_INSPECTED_BYTES: usize = 64 * 1024;

/// The field kinds an exclusion may name, as they appear before the `:` in
/// [`crate::Finding::field`].
pub const FIELD_KINDS: &[&str] = &[
    "path",
    "body",
    "query",
    "query-key",
    "form",
    "form-key",
    "json",
    "json-key",
    "multipart",
    "multipart-filename",
    "cookie",
    "cookie-name",
    "header",
];

/// Which detectors run and where. Built once per environment; `Default` turns every detector
/// on at [`Paranoia::Normal`] with a 64 KiB body inspection limit and no exclusions.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WafConfig {
    /// SQL injection (libinjection). Default on.
    pub sqli: bool,
    /// Cross-site scripting (libinjection). Default on.
    pub xss: bool,
    /// Path traversal / local file inclusion. Default on.
    pub traversal: bool,
    /// Log4Shell JNDI lookups in any header, argument or body value. Default on.
    pub log4shell: bool,
    /// Shellshock function definitions in any header or argument value. Default on.
    pub shellshock: bool,
    /// Scanner user agents and probe paths. Default on.
    pub scanners: bool,
    /// Remote command execution (shell commands after separators, Windows shells). Default on.
    pub rce: bool,
    /// Java attacks (deserialization, gadget classes, OGNL/EL, Spring4Shell). Default on.
    pub java: bool,
    /// Body bytes inspected (form, JSON, XML, multipart); `0` skips bodies. Default 64 KiB.
    pub max_inspected_bytes: usize,
    /// Which headers SQLi/XSS/traversal look at. Default [`Paranoia::Normal`].
    pub paranoia: Paranoia,
    /// Per path-prefix exceptions. Default none.
    pub exclusions: Vec<Exclusion>,
}

impl Default for WafConfig {
    fn default() -> Self {
        WafConfig {
            sqli: true,
            xss: true,
            traversal: true,
            log4shell: true,
            shellshock: true,
            scanners: true,
            rce: true,
            java: true,
            max_inspected_bytes: DEFAULT_MAX_INSPECTED_BYTES,
            paranoia: Paranoia::Normal,
            exclusions: Vec::new(),
        }
    }
}

/// How much of the request the injection detectors (SQLi, XSS, traversal) look at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Paranoia {
    /// Path, query, bodies, cookies and the headers attackers use (`User-Agent`, `Referer`,
    /// `X-Forwarded-For`). Log4Shell and shellshock look at every header at any level.
    #[default]
    Normal,
    /// Also every other header value, at the price of more libinjection calls per request and
    /// more false positives on unusual headers.
    Strict,
}

/// An exception for requests whose raw path starts with `path_prefix`: the named rules (all
/// rules if `rules` is empty) are not applied to the named fields (all fields if `fields` is
/// empty). At least one of the two lists must be non-empty.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// Raw path prefix, starting with `/`, e.g. `"/api/cms/"`.
    pub path_prefix: String,
    /// Rules to skip, e.g. `["xss"]`; empty means every rule.
    #[serde(default)]
    pub rules: Vec<RuleId>,
    /// Fields to skip, as in [`crate::Finding::field`]: exact (`"json:$.body_html"`) or a
    /// prefix ending in `*` (`"cookie:*"`, `"json:$.article.*"`); empty means every field.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// Why a configuration was rejected. Every error names the exclusion by its index.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WafError {
    /// The path prefix is empty or does not start with `/`.
    #[error("exclusions[{index}].path_prefix: expected a path starting with '/', got {prefix:?}")]
    InvalidPathPrefix {
        /// Position in `exclusions`.
        index: usize,
        /// The rejected prefix.
        prefix: String,
    },
    /// Neither rules nor fields were given, which would switch the WAF off for a whole prefix;
    /// that must be said explicitly by disabling detectors instead.
    #[error("exclusions[{index}]: name at least one rule or one field to skip")]
    EmptyExclusion {
        /// Position in `exclusions`.
        index: usize,
    },
    /// A field pattern does not start with a known field kind.
    #[error(
        "exclusions[{index}].fields: {field:?} is not a field; expected one of {kinds} followed by ':name' or ':*'",
        kinds = FIELD_KINDS.join(", ")
    )]
    InvalidField {
        /// Position in `exclusions`.
        index: usize,
        /// The rejected pattern.
        field: String,
    },
}

impl WafConfig {
    /// Checks every exclusion and returns all errors, not only the first.
    pub fn validate(&self) -> Result<(), Vec<WafError>> {
        let mut errors = Vec::new();
        for (index, ex) in self.exclusions.iter().enumerate() {
            check_exclusion(
                index,
                &ex.path_prefix,
                !ex.rules.is_empty(),
                &ex.fields,
                &mut errors,
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// The checks of one exclusion, at position `index`: a path prefix starting with `/`, known
/// field patterns, and something to skip (`names_rules`, or at least one field). Shared with
/// configuration files whose exclusion entries also name single CRS rules.
pub fn check_exclusion(
    index: usize,
    path_prefix: &str,
    names_rules: bool,
    fields: &[String],
    errors: &mut Vec<WafError>,
) {
    if !path_prefix.starts_with('/') {
        errors.push(WafError::InvalidPathPrefix {
            index,
            prefix: path_prefix.to_owned(),
        });
    }
    if !names_rules && fields.is_empty() {
        errors.push(WafError::EmptyExclusion { index });
    }
    for field in fields {
        if !is_field_pattern(field) {
            errors.push(WafError::InvalidField {
                index,
                field: field.clone(),
            });
        }
    }
}

/// Whether `field` is a valid field pattern: a known kind, then `:name` or `:*` (`path` and
/// `body` alone).
pub(crate) fn is_field_pattern(field: &str) -> bool {
    let kind = field.split(':').next().unwrap_or_default();
    let kind = kind.strip_suffix('*').unwrap_or(kind);
    FIELD_KINDS.contains(&kind) && (field.contains(':') || kind == "path" || kind == "body")
}

/// Compiles field patterns (`cookie:*` is a prefix, anything else exact).
pub(crate) fn field_patterns(fields: &[String]) -> Vec<FieldPattern> {
    fields
        .iter()
        .map(|f| match f.strip_suffix('*') {
            Some(p) => FieldPattern::Prefix(p.to_owned()),
            None => FieldPattern::Exact(f.clone()),
        })
        .collect()
}

/// Whether `field` matches one of `patterns` (an empty list matches every field).
pub(crate) fn matches_field(patterns: &[FieldPattern], field: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| match p {
            FieldPattern::Exact(f) => f == field,
            FieldPattern::Prefix(p) => field.starts_with(p.as_str()),
        })
}

/// An exception for single OWASP CRS rules (941xxx, 942xxx) under a path prefix: the named
/// CRS rules are not applied to the named fields (all fields if `fields` is empty). To switch
/// off every CRS rule of a family together with libinjection, use an [`Exclusion`] of
/// `sqli` or `xss` instead. Passed to [`crate::Waf::with_crs_exclusions`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrsExclusion {
    /// Raw path prefix, starting with `/`, e.g. `"/api/search"`.
    pub path_prefix: String,
    /// CRS rule ids, e.g. `[942190]`; at least one, each a vendored rule
    /// ([`crate::crs_rule_ids`]).
    pub rules: Vec<u32>,
    /// Fields, as in [`Exclusion::fields`]; empty means every field.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// A [`CrsExclusion`] prepared for matching.
#[derive(Debug)]
pub(crate) struct CompiledCrsExclusion {
    pub path_prefix: String,
    pub rules: Vec<u32>,
    pub fields: Vec<FieldPattern>,
}

impl CompiledCrsExclusion {
    pub fn new(ex: &CrsExclusion) -> Self {
        CompiledCrsExclusion {
            path_prefix: ex.path_prefix.clone(),
            rules: ex.rules.clone(),
            fields: field_patterns(&ex.fields),
        }
    }

    /// Whether CRS rule `id` is switched off for `field`.
    pub fn skips(&self, id: u32, field: &str) -> bool {
        self.rules.contains(&id) && matches_field(&self.fields, field)
    }
}

/// An exclusion prepared for matching.
#[derive(Debug)]
pub(crate) struct CompiledExclusion {
    pub path_prefix: String,
    /// Bit set of skipped rules ([`RuleId::bit`]); all bits when the list was empty.
    pub rules: u8,
    pub fields: Vec<FieldPattern>,
}

#[derive(Debug)]
pub(crate) enum FieldPattern {
    Exact(String),
    Prefix(String),
}

impl CompiledExclusion {
    pub fn new(ex: &Exclusion) -> Self {
        let rules = if ex.rules.is_empty() {
            u8::MAX
        } else {
            ex.rules.iter().fold(0, |acc, r| acc | r.bit())
        };
        CompiledExclusion {
            path_prefix: ex.path_prefix.clone(),
            rules,
            fields: field_patterns(&ex.fields),
        }
    }

    /// The rules this exclusion removes from `field` (a bit set; 0 when it does not apply).
    pub fn skipped_rules(&self, field: &str) -> u8 {
        if matches_field(&self.fields, field) {
            self.rules
        } else {
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_turns_everything_on() {
        let c = WafConfig::default();
        assert!(
            c.sqli
                && c.xss
                && c.traversal
                && c.log4shell
                && c.shellshock
                && c.scanners
                && c.rce
                && c.java
        );
        assert_eq!(c.max_inspected_bytes, 64 * 1024);
        assert_eq!(c.paranoia, Paranoia::Normal);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validation_collects_every_error() {
        let c = WafConfig {
            exclusions: vec![
                Exclusion {
                    path_prefix: "api".into(),
                    rules: vec![],
                    fields: vec![],
                },
                Exclusion {
                    path_prefix: "/ok".into(),
                    rules: vec![RuleId::Xss],
                    fields: vec!["json:$.html".into(), "bogus:x".into(), "cookie:*".into()],
                },
            ],
            ..WafConfig::default()
        };
        let errors = c.validate().err().unwrap_or_default();
        assert_eq!(
            errors,
            vec![
                WafError::InvalidPathPrefix {
                    index: 0,
                    prefix: "api".into()
                },
                WafError::EmptyExclusion { index: 0 },
                WafError::InvalidField {
                    index: 1,
                    field: "bogus:x".into()
                },
            ]
        );
        assert!(errors[2].to_string().contains("exclusions[1].fields"));
    }

    #[test]
    fn config_deserializes_with_defaults_and_rejects_unknown_keys() {
        let c: WafConfig = serde_json::from_str(
            r#"{"xss": false, "exclusions": [{"path_prefix": "/cms/", "rules": ["xss", "sqli"]}]}"#,
        )
        .unwrap_or_default();
        assert!(!c.xss);
        assert!(c.sqli);
        assert_eq!(c.exclusions[0].rules, vec![RuleId::Xss, RuleId::Sqli]);
        assert!(serde_json::from_str::<WafConfig>(r#"{"sqly": true}"#).is_err());
    }

    #[test]
    fn compiled_exclusion_matches_exact_and_prefix_fields() {
        let ex = CompiledExclusion::new(&Exclusion {
            path_prefix: "/cms/".into(),
            rules: vec![RuleId::Xss],
            fields: vec!["json:$.body".into(), "cookie:*".into()],
        });
        assert_eq!(ex.skipped_rules("json:$.body"), RuleId::Xss.bit());
        assert_eq!(ex.skipped_rules("json:$.body2"), 0);
        assert_eq!(ex.skipped_rules("cookie:session"), RuleId::Xss.bit());
        let all = CompiledExclusion::new(&Exclusion {
            path_prefix: "/".into(),
            rules: vec![],
            fields: vec!["query:q".into()],
        });
        assert_eq!(all.skipped_rules("query:q"), u8::MAX);
    }
}
