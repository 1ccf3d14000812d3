//! What an inspection reports: the stable rule ids and the [`Finding`] that names the rule, the
//! field and the (truncated) decoded value, ready for the access log and per-rule counters.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest `matched` value kept in a [`Finding`], in characters. Logs need enough to
/// recognise the attack, not the whole payload an attacker chose to send.
pub const MATCHED_MAX_CHARS: usize = 64;

/// A detector, by its stable id. The ids appear in logs, metrics and configuration
/// (exclusions), so they never change once released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleId {
    /// SQL injection (libinjection plus supplements for its known misses).
    Sqli,
    /// Cross-site scripting (libinjection plus supplements).
    Xss,
    /// Path traversal and local file inclusion.
    Traversal,
    /// Log4Shell: JNDI lookups, including obfuscated and nested ones.
    Log4shell,
    /// Shellshock: a bash function definition `() {` at the start of a value.
    Shellshock,
    /// Well-known scanner user agents and probe paths.
    Scanner,
    /// Remote command execution: Unix/Windows commands after shell separators or
    /// substitutions, with the usual evasions (CRS 932's class).
    Rce,
    /// Java attacks: deserialization magic, gadget/RCE class names, OGNL/EL/SpEL, Spring4Shell,
    /// JSP uploads (CRS 944's class; Log4Shell stays [`RuleId::Log4shell`]).
    Java,
}

impl RuleId {
    /// Every rule, in report order.
    pub const ALL: [RuleId; 8] = [
        RuleId::Sqli,
        RuleId::Xss,
        RuleId::Traversal,
        RuleId::Log4shell,
        RuleId::Shellshock,
        RuleId::Scanner,
        RuleId::Rce,
        RuleId::Java,
    ];

    /// The stable id: `"sqli"`, `"xss"`, `"traversal"`, `"log4shell"`, `"shellshock"`,
    /// `"scanner"`, `"rce"`, `"java"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleId::Sqli => "sqli",
            RuleId::Xss => "xss",
            RuleId::Traversal => "traversal",
            RuleId::Log4shell => "log4shell",
            RuleId::Shellshock => "shellshock",
            RuleId::Scanner => "scanner",
            RuleId::Rce => "rce",
            RuleId::Java => "java",
        }
    }

    pub(crate) fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One match of one rule in one field of a request.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// The rule that matched.
    pub rule: RuleId,
    /// Where: `"path"`, `"query:id"`, `"query-key:id"`, `"form:name"`, `"form-key:name"`,
    /// `"json:$.user.name"`, `"json-key:$.user.name"`, `"multipart:name"`,
    /// `"multipart-filename:name"`, `"cookie:session"`, `"cookie-name:session"`,
    /// `"header:user-agent"` or `"body"` (a body that could not be parsed as its type claims).
    pub field: String,
    /// The decoded value that matched, at most [`MATCHED_MAX_CHARS`] characters, with invalid
    /// UTF-8 replaced and control characters escaped (`\u{0}`) so a log line stays one line.
    pub matched: String,
    /// The libinjection fingerprint (e.g. `"s&sos"`) for SQL injection found by libinjection.
    pub fingerprint: Option<String>,
    /// The OWASP CRS rule (e.g. `942190`) when one of CRS's own 941/942 rules found this and
    /// rollgate's detectors did not; then `rule` is its family ([`RuleId::Xss`] for 941,
    /// [`RuleId::Sqli`] for 942) and `matched` the text the rule matched. Left out of the JSON
    /// when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crs_rule: Option<u32>,
}

impl Finding {
    /// The name for logs and counters: `"crs-942190"` for a CRS rule, else the rule id
    /// (`"sqli"`).
    pub fn rule_name(&self) -> String {
        match self.crs_rule {
            Some(id) => format!("crs-{id}"),
            None => self.rule.as_str().to_owned(),
        }
    }
}

/// Makes the log-safe, truncated form of a matched value.
pub(crate) fn matched_for_log(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut out = String::new();
    let mut chars = 0;
    for c in text.chars() {
        // An escape counts with its full length, so the result never exceeds the limit.
        let escaped = c.is_control().then(|| c.escape_unicode().to_string());
        let width = escaped.as_ref().map_or(1, |e| e.len());
        if chars + width > MATCHED_MAX_CHARS {
            break;
        }
        match escaped {
            Some(e) => out.push_str(&e),
            None => out.push(c),
        }
        chars += width;
    }
    out
}

/// Caps a field name (an attacker chooses it too) at the same length as values.
pub(crate) fn field_name_for_log(name: &str) -> String {
    matched_for_log(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matched_is_truncated_to_64_chars() {
        let long = "a".repeat(500);
        assert_eq!(matched_for_log(long.as_bytes()).chars().count(), 64);
        // Counted in characters, not bytes: a multi-byte value is not cut mid-character.
        let wide = "é".repeat(100);
        let m = matched_for_log(wide.as_bytes());
        assert_eq!(m.chars().count(), 64);
        assert!(m.chars().all(|c| c == 'é'));
    }

    #[test]
    fn matched_escapes_control_characters_and_replaces_invalid_utf8() {
        assert_eq!(matched_for_log(b"a\r\nb"), "a\\u{d}\\u{a}b");
        assert_eq!(matched_for_log(b"\xffx"), "\u{FFFD}x");
    }

    #[test]
    fn rule_ids_are_stable_strings() {
        let ids: Vec<&str> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            ids,
            [
                "sqli",
                "xss",
                "traversal",
                "log4shell",
                "shellshock",
                "scanner",
                "rce",
                "java"
            ]
        );
        let json = serde_json::to_string(&RuleId::Log4shell).unwrap_or_default();
        assert_eq!(json, "\"log4shell\"");
    }
}
