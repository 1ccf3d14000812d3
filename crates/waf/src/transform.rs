//! The CRS transformations (`t:…`) that the vendored 941/942 rules use, on bytes: each returns
//! `None` when the value is unchanged, so a clean value is never copied. `t:urlDecodeUni` and
//! `t:htmlEntityDecode` reuse [`crate::decode`]; `t:lowercase` is not here, because the rules
//! that use it are compiled case-insensitive instead (see `crs.rs`).

use crate::decode::{self, Plus};

/// One CRS transformation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Transform {
    /// `t:utf8toUnicode`, as far as it changes a match: full-width forms (U+FF01–U+FF5E, which
    /// IIS and ModSecurity's `%u` handling fold) become ASCII.
    Utf8ToUnicode,
    /// `t:urlDecodeUni`: `%XX`, `%uXXXX` and `+` as a space.
    UrlDecodeUni,
    /// `t:htmlEntityDecode`.
    HtmlEntityDecode,
    /// `t:jsDecode`: `\xHH`, `\uHHHH`, octal and single-character escapes.
    JsDecode,
    /// `t:cssDecode`: `\` + 1–6 hex digits (and one following space), `\` + any other byte.
    CssDecode,
    /// `t:removeNulls`.
    RemoveNulls,
    /// `t:compressWhitespace`: each whitespace run becomes one space.
    CompressWhitespace,
    /// `t:removeWhitespace`.
    RemoveWhitespace,
    /// `t:replaceComments`: each `/* … */` (or unterminated `/* …`) becomes one space.
    ReplaceComments,
    /// `t:removeCommentsChar`: `/*`, `*/`, `--` and `#` are removed.
    RemoveCommentsChar,
}

/// Bits of [`triggers`]: the bytes that some transformation would act on.
pub(crate) const T_URL: u8 = 1;
pub(crate) const T_AMP: u8 = 1 << 1;
pub(crate) const T_BACKSLASH: u8 = 1 << 2;
pub(crate) const T_NUL: u8 = 1 << 3;
pub(crate) const T_FULL_WIDTH: u8 = 1 << 4;
/// Any whitespace (`t:removeWhitespace`).
pub(crate) const T_SPACE: u8 = 1 << 5;
pub(crate) const T_COMMENT: u8 = 1 << 6;
/// A whitespace run or a whitespace other than a space (`t:compressWhitespace`).
pub(crate) const T_SPACE_RUN: u8 = 1 << 7;

impl Transform {
    /// The CRS name (`"urlDecodeUni"`), as in the rules file.
    pub fn from_crs(name: &str) -> Option<Transform> {
        Some(match name {
            "utf8toUnicode" => Transform::Utf8ToUnicode,
            "urlDecodeUni" => Transform::UrlDecodeUni,
            "htmlEntityDecode" => Transform::HtmlEntityDecode,
            "jsDecode" => Transform::JsDecode,
            "cssDecode" => Transform::CssDecode,
            "removeNulls" => Transform::RemoveNulls,
            "compressWhitespace" => Transform::CompressWhitespace,
            "removeWhitespace" => Transform::RemoveWhitespace,
            "replaceComments" => Transform::ReplaceComments,
            "removeCommentsChar" => Transform::RemoveCommentsChar,
            _ => return None,
        })
    }

    /// The [`triggers`] bits without which this transformation leaves a value unchanged.
    pub fn trigger(self) -> u8 {
        match self {
            Transform::Utf8ToUnicode => T_FULL_WIDTH,
            Transform::UrlDecodeUni => T_URL,
            Transform::HtmlEntityDecode => T_AMP,
            Transform::JsDecode | Transform::CssDecode => T_BACKSLASH,
            Transform::RemoveNulls => T_NUL,
            Transform::CompressWhitespace => T_SPACE_RUN,
            Transform::RemoveWhitespace => T_SPACE,
            Transform::ReplaceComments | Transform::RemoveCommentsChar => T_COMMENT,
        }
    }

    /// Applies the transformation; `None` when nothing changed.
    pub fn apply(self, v: &[u8]) -> Option<Vec<u8>> {
        match self {
            Transform::Utf8ToUnicode => fold_full_width(v),
            Transform::UrlDecodeUni => decode::percent_decode_once(v, Plus::Space),
            Transform::HtmlEntityDecode => decode::html_entity_decode(v),
            Transform::JsDecode => js_decode(v),
            Transform::CssDecode => css_decode(v),
            Transform::RemoveNulls => v
                .contains(&0)
                .then(|| v.iter().copied().filter(|&b| b != 0).collect()),
            Transform::CompressWhitespace => compress_whitespace(v),
            Transform::RemoveWhitespace => v
                .iter()
                .any(|&b| is_space(b))
                .then(|| v.iter().copied().filter(|&b| !is_space(b)).collect()),
            Transform::ReplaceComments => replace_comments(v),
            Transform::RemoveCommentsChar => remove_comments_char(v),
        }
    }
}

/// Which transformations could change `v` (a superset: a set bit may still change nothing).
/// One pass, no allocation; used to skip whole groups of rules on clean values.
pub(crate) fn triggers(v: &[u8]) -> u8 {
    let mut t = 0;
    let mut prev = 0u8;
    for (i, &b) in v.iter().enumerate() {
        let next = v.get(i + 1).copied().unwrap_or(0);
        t |= match b {
            b'%' | b'+' => T_URL,
            // Only a reference can change: `&` before `#` or a letter.
            b'&' if next == b'#' || next.is_ascii_alphabetic() => T_AMP,
            b'\\' => T_BACKSLASH,
            0 => T_NUL,
            0xEF => T_FULL_WIDTH,
            b' ' if is_space(prev) => T_SPACE | T_SPACE_RUN,
            b' ' => T_SPACE,
            b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => T_SPACE | T_SPACE_RUN,
            b'#' => T_COMMENT,
            b'*' if prev == b'/' => T_COMMENT,
            b'/' if prev == b'*' => T_COMMENT,
            b'-' if prev == b'-' => T_COMMENT,
            _ => 0,
        };
        prev = b;
    }
    t
}

/// Applies `transforms` in order, copying only when one changes the value.
pub(crate) fn apply_all<'v>(transforms: &[Transform], v: &'v [u8]) -> std::borrow::Cow<'v, [u8]> {
    let mut out = std::borrow::Cow::Borrowed(v);
    for t in transforms {
        if let Some(changed) = t.apply(&out) {
            out = std::borrow::Cow::Owned(changed);
        }
    }
    out
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex(b: u8) -> Option<u32> {
    (b as char).to_digit(16)
}

fn push_code_point(out: &mut Vec<u8>, cp: u32) {
    let cp = if (0xFF01..=0xFF5E).contains(&cp) {
        cp - 0xFEE0
    } else {
        cp
    };
    let c = char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

fn fold_full_width(v: &[u8]) -> Option<Vec<u8>> {
    // U+FF01–U+FF3F are EF BC 81–BF, U+FF40–U+FF5E are EF BD 80–9E.
    let at = |i: usize| match (v.get(i), v.get(i + 1), v.get(i + 2)) {
        (Some(0xEF), Some(0xBC), Some(&c)) if (0x81..=0xBF).contains(&c) => Some(c - 0x60),
        (Some(0xEF), Some(0xBD), Some(&c)) if (0x80..=0x9E).contains(&c) => Some(c - 0x20),
        _ => None,
    };
    if !(0..v.len()).any(|i| at(i).is_some()) {
        return None;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match at(i) {
            Some(ascii) => {
                out.push(ascii);
                i += 3;
            }
            None => {
                out.push(v[i]);
                i += 1;
            }
        }
    }
    Some(out)
}

fn js_decode(v: &[u8]) -> Option<Vec<u8>> {
    if !v.contains(&b'\\') {
        return None;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' || i + 1 >= v.len() {
            out.push(v[i]);
            i += 1;
            continue;
        }
        let next = v[i + 1];
        let hex_run = |start: usize, n: usize| -> Option<u32> {
            let digits = v.get(start..start + n)?;
            digits
                .iter()
                .try_fold(0u32, |acc, &b| Some(acc * 16 + hex(b)?))
        };
        if matches!(next, b'u' | b'U')
            && let Some(cp) = hex_run(i + 2, 4)
        {
            push_code_point(&mut out, cp);
            i += 6;
        } else if matches!(next, b'x' | b'X')
            && let Some(b) = hex_run(i + 2, 2)
        {
            out.push(u8::try_from(b).unwrap_or(b'?'));
            i += 4;
        } else if (b'0'..=b'7').contains(&next) {
            let mut value = 0u32;
            let mut n = 0;
            while n < 3 && i + 1 + n < v.len() && (b'0'..=b'7').contains(&v[i + 1 + n]) {
                let candidate = value * 8 + u32::from(v[i + 1 + n] - b'0');
                if candidate > 0xFF {
                    break;
                }
                value = candidate;
                n += 1;
            }
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 1 + n;
        } else {
            out.push(match next {
                b'a' => 0x07,
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                other => other,
            });
            i += 2;
        }
    }
    Some(out)
}

fn css_decode(v: &[u8]) -> Option<Vec<u8>> {
    if !v.contains(&b'\\') {
        return None;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] != b'\\' {
            out.push(v[i]);
            i += 1;
            continue;
        }
        let digits = v[i + 1..]
            .iter()
            .take(6)
            .take_while(|&&b| b.is_ascii_hexdigit())
            .count();
        if digits > 0 {
            let cp = v[i + 1..i + 1 + digits]
                .iter()
                .fold(0u32, |acc, &b| acc * 16 + hex(b).unwrap_or(0));
            push_code_point(&mut out, cp);
            i += 1 + digits;
            if v.get(i).is_some_and(|&b| is_space(b)) {
                i += 1;
            }
        } else if let Some(&next) = v.get(i + 1) {
            // A backslash before a newline continues the line; before anything else it only
            // escapes that character.
            if next != b'\n' {
                out.push(next);
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    Some(out)
}

fn compress_whitespace(v: &[u8]) -> Option<Vec<u8>> {
    let needed = v
        .iter()
        .enumerate()
        .any(|(i, &b)| is_space(b) && (b != b' ' || v.get(i + 1).is_some_and(|&n| is_space(n))));
    if !needed {
        return None;
    }
    let mut out = Vec::with_capacity(v.len());
    for &b in v {
        if is_space(b) {
            if out.last() != Some(&b' ') {
                out.push(b' ');
            }
        } else {
            out.push(b);
        }
    }
    Some(out)
}

fn replace_comments(v: &[u8]) -> Option<Vec<u8>> {
    let start = v.windows(2).position(|w| w == b"/*")?;
    let mut out = Vec::with_capacity(v.len());
    out.extend_from_slice(&v[..start]);
    let mut i = start;
    while i < v.len() {
        if v[i..].starts_with(b"/*") {
            let end = v[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(v.len(), |p| i + 2 + p + 2);
            out.push(b' ');
            i = end;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    Some(out)
}

fn remove_comments_char(v: &[u8]) -> Option<Vec<u8>> {
    let pair = |w: &[u8]| w == b"/*" || w == b"*/" || w == b"--";
    if !v.contains(&b'#') && !v.windows(2).any(pair) {
        return None;
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v.get(i..i + 2).is_some_and(pair) {
            i += 2;
        } else if v[i] == b'#' {
            i += 1;
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tr: Transform, v: &str) -> String {
        String::from_utf8_lossy(&apply_all(&[tr], v.as_bytes())).into_owned()
    }

    #[test]
    fn url_decode_uni_decodes_percent_u_and_plus() {
        assert_eq!(
            t(Transform::UrlDecodeUni, "%3Cscript+x%u003E"),
            "<script x>"
        );
        assert_eq!(t(Transform::UrlDecodeUni, "plain"), "plain");
    }

    #[test]
    fn html_and_js_and_css_decoding() {
        assert_eq!(t(Transform::HtmlEntityDecode, "&lt;a&#x3e;"), "<a>");
        assert_eq!(
            t(Transform::JsDecode, r"\x3cscript\u003e\101\n\q"),
            "<script>A\nq"
        );
        assert_eq!(t(Transform::JsDecode, r"\u"), r"u");
        assert_eq!(
            t(Transform::CssDecode, r"\6a avascript\:x\"),
            "javascript:x"
        );
        assert_eq!(t(Transform::CssDecode, "\\3c  b"), "< b");
    }

    #[test]
    fn whitespace_comment_and_null_transforms() {
        assert_eq!(t(Transform::CompressWhitespace, "a \t\n b c"), "a b c");
        assert!(Transform::CompressWhitespace.apply(b"a b c").is_none());
        assert_eq!(t(Transform::RemoveWhitespace, "j a\tv a"), "java");
        assert_eq!(t(Transform::ReplaceComments, "un/**/ion/*x"), "un ion ");
        assert_eq!(t(Transform::RemoveCommentsChar, "un/**/ion--#x"), "unionx");
        assert_eq!(t(Transform::RemoveNulls, "a\0b"), "ab");
        assert_eq!(
            t(Transform::Utf8ToUnicode, "\u{FF1C}script\u{FF1E}"),
            "<script>"
        );
    }

    #[test]
    fn triggers_cover_every_transform_that_changes_a_value() {
        let samples = [
            "%41", "a+b", "&lt;", r"\x41", "a\0b", "\u{FF1C}", "a  b", "a b", "/*x*/", "--", "#",
            "x*/",
        ];
        let all = [
            Transform::Utf8ToUnicode,
            Transform::UrlDecodeUni,
            Transform::HtmlEntityDecode,
            Transform::JsDecode,
            Transform::CssDecode,
            Transform::RemoveNulls,
            Transform::CompressWhitespace,
            Transform::RemoveWhitespace,
            Transform::ReplaceComments,
            Transform::RemoveCommentsChar,
        ];
        for s in samples {
            for tr in all {
                if tr.apply(s.as_bytes()).is_some() {
                    assert_ne!(triggers(s.as_bytes()) & tr.trigger(), 0, "{tr:?} on {s:?}");
                }
            }
        }
        assert_eq!(triggers(b"Jane_Doe-42.x"), 0);
        assert_eq!(triggers(b"Tom & Jerry, 1 b"), T_SPACE);
    }

    #[test]
    fn malformed_escapes_never_panic() {
        for v in [
            "\\", "\\u12", "\\x", "\\777", "%", "&#", "/*", "\\\n", "\\ffffff",
        ] {
            for tr in [
                Transform::JsDecode,
                Transform::CssDecode,
                Transform::ReplaceComments,
            ] {
                let _ = tr.apply(v.as_bytes());
            }
        }
    }
}
