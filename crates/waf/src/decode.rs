//! Decoding of attacker-controlled values before detection: URL decoding (with `+`, repeated
//! for double encoding, `%uXXXX`), HTML entities and NUL bytes.
//!
//! Every function here works on bytes and accepts anything: invalid escapes are kept as they
//! are, invalid code points become U+FFFD, and nothing panics. Detection then runs on the
//! decoded forms, so `%2527`, `&#x3C;script` or `%u003C` reach the detectors as `'` and `<`.

use std::borrow::Cow;

/// How many percent-decoding passes are applied at most. Three covers double and triple
/// encoding, which is what scanners try; beyond that an application would not decode either.
pub const MAX_PERCENT_PASSES: usize = 3;

/// Whether `+` means a space, as in query strings and `application/x-www-form-urlencoded`
/// bodies, or is a literal plus, as in paths, headers and JSON strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plus {
    /// `+` decodes to a space (only in the first pass: a `%2B` stays a `+`).
    Space,
    /// `+` is kept.
    Literal,
}

/// The forms of one value that the detectors look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// After a single URL-decoding pass: what the application most likely sees.
    pub once: Cow<'a, [u8]>,
    /// After every percent pass, HTML entity decoding and NUL removal: what an attacker hopes a
    /// lenient application, browser or database ends up with.
    pub full: Cow<'a, [u8]>,
    /// A NUL byte appeared in a decoded form (before it was removed from `full`).
    pub had_nul: bool,
}

/// Decodes `raw` into the forms the detectors use.
pub fn decode(raw: &[u8], plus: Plus) -> Decoded<'_> {
    let once: Cow<'_, [u8]> = match percent_decode_once(raw, plus) {
        Some(v) => Cow::Owned(v),
        None => Cow::Borrowed(raw),
    };
    let mut full = once.clone();
    for _ in 1..MAX_PERCENT_PASSES {
        match percent_decode_once(&full, Plus::Literal) {
            Some(v) => full = Cow::Owned(v),
            None => break,
        }
    }
    if let Some(v) = html_entity_decode(&full) {
        full = Cow::Owned(v);
    }
    let had_nul = full.contains(&0);
    if had_nul {
        full = Cow::Owned(full.iter().copied().filter(|&b| b != 0).collect());
    }
    Decoded {
        once,
        full,
        had_nul,
    }
}

/// Decodes `raw` repeatedly (up to [`MAX_PERCENT_PASSES`]) without HTML or NUL handling; used
/// for paths, where the segment structure matters.
pub fn percent_decode(raw: &[u8], plus: Plus) -> Cow<'_, [u8]> {
    let mut out: Cow<'_, [u8]> = Cow::Borrowed(raw);
    for pass in 0..MAX_PERCENT_PASSES {
        let p = if pass == 0 { plus } else { Plus::Literal };
        match percent_decode_once(&out, p) {
            Some(v) => out = Cow::Owned(v),
            None => break,
        }
    }
    out
}

/// One pass of URL decoding: `%XX`, `%uXXXX` (IIS style; full-width ASCII folds to ASCII, as
/// IIS does) and, with [`Plus::Space`], `+`. Returns `None` when there was nothing to decode,
/// so clean values are never copied.
pub fn percent_decode_once(input: &[u8], plus: Plus) -> Option<Vec<u8>> {
    // The next `%` (or `+`) at or after `from`; the bytes before it are copied as one run.
    let next_special = |from: usize| {
        let rest = input.get(from..).unwrap_or_default();
        let found = match plus {
            Plus::Space => memchr::memchr2(b'%', b'+', rest),
            Plus::Literal => memchr::memchr(b'%', rest),
        };
        found.map_or(input.len(), |at| from + at)
    };
    let first = next_special(0);
    if first == input.len() {
        return None;
    }
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(&input[..first]);
    let mut i = first;
    while i < input.len() {
        let b = input[i];
        if b == b'+' && plus == Plus::Space {
            out.push(b' ');
            i += 1;
            continue;
        }
        if b != b'%' {
            // A run up to the next `%` (or `+`); `b` is neither, so the run is not empty.
            let end = next_special(i);
            out.extend_from_slice(&input[i..end]);
            i = end;
            continue;
        }
        if let (Some(h), Some(l)) = (hex_at(input, i + 1), hex_at(input, i + 2)) {
            out.push((h << 4) | l);
            i += 3;
            continue;
        }
        if matches!(input.get(i + 1), Some(b'u' | b'U'))
            && let Some(cp) = hex4(input, i + 2)
        {
            push_code_point(&mut out, fold_full_width(cp));
            i += 6;
            continue;
        }
        out.push(b);
        i += 1;
    }
    Some(out)
}

/// Decodes HTML character references: decimal (`&#60;`, `&#060`), hex (`&#x3C;`) and the named
/// ones that matter for injection. Browsers accept numeric references without `;`, so do we.
/// Returns `None` when there was nothing to decode.
pub fn html_entity_decode(input: &[u8]) -> Option<Vec<u8>> {
    if !input.contains(&b'&') {
        return None;
    }
    let mut out = Vec::with_capacity(input.len());
    let mut changed = false;
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'&' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if let Some((cp, used)) = numeric_reference(&input[i + 1..]) {
            push_code_point(&mut out, cp);
            i += 1 + used;
            changed = true;
            continue;
        }
        if let Some((bytes, used)) = named_reference(&input[i + 1..]) {
            out.extend_from_slice(bytes);
            i += 1 + used;
            changed = true;
            continue;
        }
        out.push(b'&');
        i += 1;
    }
    changed.then_some(out)
}

/// Named references worth decoding: those that spell markup, quotes and the punctuation used to
/// hide JavaScript and lookups (`&lpar;`, `&colon;`, `&dollar;&lcub;`). Not the full HTML list:
/// the rest cannot turn a benign string into an attack.
const NAMED: &[(&str, &str)] = &[
    ("lt", "<"),
    ("gt", ">"),
    ("amp", "&"),
    ("quot", "\""),
    ("apos", "'"),
    ("nbsp", " "),
    ("tab", "\t"),
    ("newline", "\n"),
    ("lpar", "("),
    ("rpar", ")"),
    ("colon", ":"),
    ("semi", ";"),
    ("sol", "/"),
    ("bsol", "\\"),
    ("period", "."),
    ("comma", ","),
    ("equals", "="),
    ("grave", "`"),
    ("dollar", "$"),
    ("lcub", "{"),
    ("rcub", "}"),
    ("lbrace", "{"),
    ("rbrace", "}"),
    ("lsqb", "["),
    ("rsqb", "]"),
    ("num", "#"),
    ("percnt", "%"),
    ("excl", "!"),
    ("plus", "+"),
];

/// Names that browsers also accept without the trailing `;` (legacy references).
const LEGACY_NO_SEMI: &[&str] = &["lt", "gt", "amp", "quot"];

fn named_reference(after_amp: &[u8]) -> Option<(&'static [u8], usize)> {
    let name_len = after_amp
        .iter()
        .take(12)
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    if name_len == 0 {
        return None;
    }
    let name = &after_amp[..name_len];
    let semi = after_amp.get(name_len) == Some(&b';');
    NAMED
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
        .filter(|(n, _)| semi || LEGACY_NO_SEMI.contains(n))
        .map(|(_, v)| (v.as_bytes(), name_len + usize::from(semi)))
}

/// Parses `#123;` or `#x7B;` after an `&`; returns the code point and the bytes used.
fn numeric_reference(after_amp: &[u8]) -> Option<(u32, usize)> {
    if after_amp.first() != Some(&b'#') {
        return None;
    }
    let hex = matches!(after_amp.get(1), Some(b'x' | b'X'));
    let start = if hex { 2 } else { 1 };
    let radix = if hex { 16 } else { 10 };
    let mut value: u32 = 0;
    let mut digits = 0;
    // Leading zeros are legal and used for padding tricks (`&#0000060`): read every digit, but
    // saturate so a long run cannot overflow (an out-of-range value becomes U+FFFD).
    while let Some(d) = after_amp
        .get(start + digits)
        .and_then(|&b| (b as char).to_digit(radix))
    {
        value = value.saturating_mul(radix).saturating_add(d);
        digits += 1;
    }
    if digits == 0 {
        return None;
    }
    let mut used = start + digits;
    if after_amp.get(used) == Some(&b';') {
        used += 1;
    }
    Some((value, used))
}

fn hex_at(input: &[u8], i: usize) -> Option<u8> {
    input
        .get(i)
        .and_then(|&b| (b as char).to_digit(16))
        .and_then(|d| u8::try_from(d).ok())
}

fn hex4(input: &[u8], i: usize) -> Option<u32> {
    let mut v = 0u32;
    for k in 0..4 {
        v = (v << 4) | u32::from(hex_at(input, i + k)?);
    }
    Some(v)
}

/// IIS decodes `%uFF1C` (full-width `<`) to `<`; fold the full-width ASCII block the same way.
fn fold_full_width(cp: u32) -> u32 {
    if (0xFF01..=0xFF5E).contains(&cp) {
        cp - 0xFEE0
    } else {
        cp
    }
}

fn push_code_point(out: &mut Vec<u8>, cp: u32) {
    let c = char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER);
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

/// Lower-cases ASCII letters and turns backslashes into slashes: the shape that path and
/// lookup patterns are matched against.
pub fn fold_for_match(input: &[u8]) -> Vec<u8> {
    input
        .iter()
        .map(|&b| {
            if b == b'\\' {
                b'/'
            } else {
                b.to_ascii_lowercase()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time decoder `percent_decode_once` replaced, kept to check it against.
    fn reference_decode_once(input: &[u8], plus: Plus) -> Option<Vec<u8>> {
        if !input
            .iter()
            .any(|&b| b == b'%' || (b == b'+' && plus == Plus::Space))
        {
            return None;
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            if b == b'+' && plus == Plus::Space {
                out.push(b' ');
                i += 1;
            } else if b != b'%' {
                out.push(b);
                i += 1;
            } else if let (Some(h), Some(l)) = (hex_at(input, i + 1), hex_at(input, i + 2)) {
                out.push((h << 4) | l);
                i += 3;
            } else if matches!(input.get(i + 1), Some(b'u' | b'U'))
                && let Some(cp) = hex4(input, i + 2)
            {
                push_code_point(&mut out, fold_full_width(cp));
                i += 6;
            } else {
                out.push(b);
                i += 1;
            }
        }
        Some(out)
    }

    #[test]
    fn percent_decoding_in_runs_is_byte_for_byte_the_same() {
        let pieces: [&[u8]; 14] = [
            b"%",
            b"%4",
            b"%41",
            b"%u0041",
            b"%uFF21",
            b"%U00e9",
            b"+",
            b"a",
            b"%zz",
            b"%%",
            b"\xc3\xa9",
            b"%C3%A9",
            b"abc def",
            b"%2B",
        ];
        let mut next = crate::xorshift(0x6a09_e667_f3bc_c909);
        for _ in 0..50_000 {
            let mut value = Vec::new();
            for _ in 0..next() % 8 {
                value.extend_from_slice(pieces[(next() % 14) as usize]);
            }
            for plus in [Plus::Space, Plus::Literal] {
                assert_eq!(
                    percent_decode_once(&value, plus),
                    reference_decode_once(&value, plus),
                    "{:?} {plus:?}",
                    String::from_utf8_lossy(&value)
                );
            }
        }
    }

    fn full(raw: &str, plus: Plus) -> String {
        String::from_utf8_lossy(&decode(raw.as_bytes(), plus).full).into_owned()
    }

    #[test]
    fn plus_is_space_in_forms_but_not_elsewhere() {
        assert_eq!(full("a+b", Plus::Space), "a b");
        assert_eq!(full("a+b", Plus::Literal), "a+b");
        // An encoded plus stays a plus even in a form: only the first pass maps `+`.
        assert_eq!(full("a%2Bb", Plus::Space), "a+b");
    }

    #[test]
    fn percent_decoding_is_repeated_for_double_and_triple_encoding() {
        assert_eq!(full("%27", Plus::Space), "'");
        assert_eq!(full("%2527", Plus::Space), "'");
        assert_eq!(full("%252527", Plus::Space), "'");
        // Four levels is more than any application decodes: left at one level.
        assert_eq!(full("%25252527", Plus::Space), "%27");
        let d = decode(b"%2527", Plus::Space);
        assert_eq!(&*d.once, b"%27");
    }

    #[test]
    fn invalid_percent_escapes_are_kept() {
        assert_eq!(full("50% off", Plus::Space), "50% off");
        assert_eq!(full("%zz%4", Plus::Space), "%zz%4");
        assert_eq!(full("%", Plus::Space), "%");
    }

    #[test]
    fn percent_u_escapes_decode_and_full_width_folds_to_ascii() {
        assert_eq!(full("%u003Cscript%u003E", Plus::Space), "<script>");
        assert_eq!(full("%uFF1Cscript%uFF1E", Plus::Space), "<script>");
        assert_eq!(full("%u00e9", Plus::Space), "é");
        // A lone surrogate is not a char: replaced, not a panic.
        assert_eq!(full("%uD800", Plus::Space), "\u{FFFD}");
    }

    #[test]
    fn html_entities_decimal_hex_and_named() {
        assert_eq!(full("&#60;script&#62;", Plus::Literal), "<script>");
        assert_eq!(full("&#x3C;img&#X3e;", Plus::Literal), "<img>");
        assert_eq!(full("&#0000060", Plus::Literal), "<");
        assert_eq!(full("&lt;b&gt;&quot;&apos;", Plus::Literal), "<b>\"'");
        assert_eq!(
            full("javascript&colon;alert&lpar;1&rpar;", Plus::Literal),
            "javascript:alert(1)"
        );
        assert_eq!(full("&LT;", Plus::Literal), "<");
        // Unknown names and bare ampersands are left alone.
        assert_eq!(full("AT&T &copy; a&b", Plus::Literal), "AT&T &copy; a&b");
        // Huge numeric references do not overflow.
        assert_eq!(full("&#99999999999999999999;", Plus::Literal), "\u{FFFD}");
    }

    #[test]
    fn percent_encoded_entities_are_decoded_in_order() {
        assert_eq!(full("%26lt%3Bscript%26gt%3B", Plus::Space), "<script>");
    }

    #[test]
    fn nul_bytes_are_removed_but_remembered() {
        let d = decode(b"<scr%00ipt>", Plus::Space);
        assert_eq!(&*d.full, b"<script>");
        assert!(d.had_nul);
        assert!(!decode(b"plain", Plus::Space).had_nul);
    }

    #[test]
    fn invalid_utf8_passes_through_as_bytes() {
        let d = decode(b"\xff\xfe%C0%AE", Plus::Space);
        assert_eq!(&*d.full, b"\xff\xfe\xc0\xae");
    }

    #[test]
    fn clean_values_are_not_copied() {
        let d = decode(b"hello", Plus::Space);
        assert!(matches!(d.once, Cow::Borrowed(_)));
        assert!(matches!(d.full, Cow::Borrowed(_)));
    }

    #[test]
    fn fold_lowercases_and_unifies_slashes() {
        assert_eq!(
            fold_for_match(b"C:\\Windows\\Win.INI"),
            b"c:/windows/win.ini"
        );
    }
}
