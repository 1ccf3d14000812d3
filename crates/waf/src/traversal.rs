//! Path traversal and local file inclusion: `..` path segments (any encoding, either slash,
//! `;` as Tomcat reads it), a modest list of files attackers read (`/etc/passwd`,
//! `c:\windows\win.ini`, `/proc/self/environ`, …) and NUL-byte truncation (`x.php%00.jpg`).

use crate::decode::fold_for_match;
use crate::parse::contains;

/// Files and directories whose name in a parameter or path is an LFI attempt. Matched on the
/// folded form (lower case, `\` → `/`, `//` and `/./` collapsed), so `C:\Windows\win.ini` and
/// `/etc//./passwd` match too. Modest on purpose: CRS lists hundreds, most of which never appear
/// in attacks seen at an API gateway, and each entry is a potential false positive.
const SENSITIVE_FILES: &[&[u8]] = &[
    b"etc/passwd",
    b"etc/shadow",
    b"etc/group",
    b"etc/hosts",
    b"etc/issue",
    b"proc/self/",
    b"proc/version",
    b"c:/windows/",
    b"windows/win.ini",
    b"windows/system32",
    b"boot.ini",
    b"web-inf/web.xml",
    b".ssh/id_rsa",
    b".aws/credentials",
    b".htpasswd",
];

/// Why a value was reported.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Traversal {
    DotDot,
    SensitiveFile,
    NulByte,
}

/// Checks one decoded value (`had_nul`: a NUL byte was seen before it was removed).
pub(crate) fn check(value: &[u8], had_nul: bool) -> Option<Traversal> {
    if had_nul {
        return Some(Traversal::NulByte);
    }
    // Cheap reject: every pattern needs a dot or a slash.
    if !value.iter().any(|&b| matches!(b, b'.' | b'/' | b'\\')) {
        return None;
    }
    if has_dot_dot_segment(value) {
        return Some(Traversal::DotDot);
    }
    // Cheap reject: all but two entries contain a slash, which the folding keeps.
    let has_slash = value.iter().any(|&b| b == b'/' || b == b'\\');
    let folded = collapse(&fold_for_match(value));
    SENSITIVE_FILES
        .iter()
        .filter(|f| has_slash || !f.contains(&b'/'))
        .any(|f| contains(&folded, f))
        .then_some(Traversal::SensitiveFile)
}

/// A run of two or more dots that is a whole path segment: bounded by a separator (`/`, `\`,
/// `;`) on at least one side and by a separator or the end of the value on the other. `..` in
/// prose ("wait.. what") is not a segment; `....//` (a filter-evasion trick) is.
fn has_dot_dot_segment(value: &[u8]) -> bool {
    let sep = |b: u8| matches!(b, b'/' | b'\\' | b';');
    let mut i = 0;
    while i < value.len() {
        if value[i] != b'.' {
            i += 1;
            continue;
        }
        let start = i;
        while i < value.len() && value[i] == b'.' {
            i += 1;
        }
        if i - start < 2 {
            continue;
        }
        let before = if start == 0 {
            None
        } else {
            Some(value[start - 1])
        };
        let after = value.get(i).copied();
        let before_sep = before.is_some_and(sep);
        let after_sep = after.is_some_and(sep);
        let before_ok = before.is_none() || before_sep;
        let after_ok = after.is_none() || after_sep;
        // A lone `..` is a parent-directory reference too; a lone `...` is an ellipsis.
        let lone_parent = before.is_none() && after.is_none() && i - start == 2;
        // Three or more dots count only before a separator (`....//`), not as a trailing
        // ellipsis (`see /...`).
        let dots_ok = i - start == 2 || after_sep;
        if dots_ok && before_ok && after_ok && (before_sep || after_sep || lone_parent) {
            return true;
        }
    }
    false
}

/// Collapses `//` and `/./` so `etc//passwd` and `etc/./passwd` read as `etc/passwd`.
fn collapse(folded: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(folded.len());
    let mut i = 0;
    while i < folded.len() {
        let b = folded[i];
        if b == b'/' && out.last() == Some(&b'/') {
            i += 1;
            continue;
        }
        if b == b'.' && out.last() == Some(&b'/') && matches!(folded.get(i + 1), Some(b'/') | None)
        {
            i += 1;
            continue;
        }
        out.push(b);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(v: &str) -> Option<Traversal> {
        check(v.as_bytes(), false)
    }

    #[test]
    fn dot_dot_segments_in_both_slash_styles() {
        for v in [
            "../../etc/x",
            "..\\..\\boot",
            "files/../../x",
            "..",
            "x/..",
            "....//....//x",
            "..;/admin",
            "/static/..%2f", // already decoded by the caller: `%2f` stays literal here
        ] {
            let expected = if v.ends_with("%2f") {
                None
            } else {
                Some(Traversal::DotDot)
            };
            assert_eq!(hit(v), expected, "{v}");
        }
    }

    #[test]
    fn sensitive_files_in_any_case_and_spacing() {
        for v in [
            "/etc/passwd",
            "etc//./passwd",
            "C:\\Windows\\win.ini",
            "file:///proc/self/environ",
            "WEB-INF/web.xml",
        ] {
            assert_eq!(hit(v), Some(Traversal::SensitiveFile), "{v}");
        }
    }

    #[test]
    fn nul_byte_truncation_is_reported() {
        assert_eq!(check(b"shell.phpx.jpg", true), Some(Traversal::NulByte));
    }

    #[test]
    fn prose_urls_and_versions_are_clean() {
        for v in [
            "wait.. what?",
            "see https://example.com/a/b.html",
            "v1.2.3",
            "...and then",
            "my etc. passwords",
            "L;/...",
            "a/b/c.txt",
        ] {
            assert_eq!(hit(v), None, "{v}");
        }
    }
}
