//! SQL injection and XSS detection: libinjection (the `libinjectionrs` port) on each decoded
//! value, a fast path that skips it for values that cannot form an injection, and small,
//! explicit supplements for libinjection's known misses.

/// The result of a SQL injection match.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SqliHit {
    /// libinjection's token fingerprint, `None` when a supplement matched.
    pub fingerprint: Option<String>,
}

/// True for values made only of letters, digits and `_`: one word or number (or a number
/// glued to a word) to libinjection's tokenizer, which it never reports. `-` and `.` are not
/// here: `9.5-1union` is arithmetic followed by UNION to libinjection. Used before both
/// detectors; `tests::fast_path_never_hides_a_libinjection_match` checks the claim.
pub(crate) fn trivially_clean(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

/// True when libinjection cannot report `value` as SQL injection, decided without running it
/// (libinjectionrs spends 1–12 µs per call, mostly in keyword lookups; most clean values are
/// short words, numbers, slugs and plain prose).
///
/// The argument: every fingerprint in libinjection's blacklist contains at least one token
/// other than a bareword (`n`) or a number (`1`) — `tests::no_blacklisted_fingerprint_is_only_words_numbers_operators_and_dots`
/// checks this against the crate's table. Bytes other than ASCII letters, digits, `_`,
/// whitespace, `.` and a single `-` are what make such tokens (quotes, operators, parentheses,
/// comments, variables); `.` makes numbers or a dot token and `-` an operator (`o`), and no
/// blacklisted fingerprint is made of `n`, `1`, `o` and `.` alone either. Among the remaining bytes, only a
/// keyword makes another token type, so the value is clean when none of its words — a superset
/// of the words libinjection reads, see below — is a keyword or the first word of a multi-word keyword
/// (`GROUP BY`). `tests::prefilter_never_hides_a_libinjection_match` checks it empirically.
pub(crate) fn sqli_impossible(value: &[u8]) -> bool {
    let allowed = value.iter().all(|&b| {
        b.is_ascii_alphanumeric() || matches!(b, b'_' | b' ' | b'\t' | b'\r' | b'\n' | b'.' | b'-')
    });
    if !allowed || value.windows(2).any(|w| w == b"--") {
        return false;
    }
    let is_word_start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    let is_word_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < value.len() {
        if !is_word_byte(value[i]) {
            i += 1;
            continue;
        }
        let end = value[i..]
            .iter()
            .position(|&c| !is_word_byte(c))
            .map_or(value.len(), |p| i + p);
        let run = &value[i..end];
        // A run that starts with a letter is one word to libinjection unless it follows a
        // number's `.` (`1.e1union` is the number `1.e1`, then `union`). A run that starts with
        // a digit, or follows `<digit>.`, is cut by libinjection's number parser after digits,
        // `.`, an exponent, `0x`/`0b` and hex digits (`1exor` is `1e` then `xor`, `0xabcor` is
        // `0xabc` then `or`): every suffix that starts with a letter after such a prefix is a
        // candidate word.
        let after_number_dot = i >= 2 && value[i - 1] == b'.' && value[i - 2].is_ascii_digit();
        let keyword = if is_word_start(run[0]) && !after_number_dot {
            is_sql_keyword(run)
        } else {
            let mut found = false;
            for k in 0..run.len() {
                if k > 0 && !(run[k - 1].is_ascii_hexdigit() || matches!(run[k - 1], b'x' | b'X')) {
                    break;
                }
                if is_word_start(run[k]) && is_sql_keyword(&run[k..]) {
                    found = true;
                    break;
                }
            }
            found
        };
        if keyword {
            return false;
        }
        i = end;
    }
    true
}

/// Whether libinjection's keyword table gives `word` a type other than bareword, or `word`
/// starts one of its multi-word keywords. A hash lookup on a stack copy: libinjectionrs's own
/// `lookup_word` allocates and binary-searches 9,000 entries, which is where its time goes.
fn is_sql_keyword(word: &[u8]) -> bool {
    let table = keyword_table();
    if word.len() > table.max_len {
        return false;
    }
    let mut buf = [0u8; 64];
    let upper = &mut buf[..word.len()];
    upper.copy_from_slice(word);
    upper.make_ascii_uppercase();
    table.words.contains(&*upper)
}

struct KeywordTable {
    words: std::collections::HashSet<&'static [u8]>,
    max_len: usize,
}

/// Every word of libinjection's table that is not a fingerprint (`F`) or a bareword (`n`),
/// plus the first word of each multi-word keyword (`AT` of `AT TIME ZONE`), which libinjection
/// merges with the next word into one keyword token.
fn keyword_table() -> &'static KeywordTable {
    static TABLE: std::sync::OnceLock<KeywordTable> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut words = std::collections::HashSet::new();
        for k in libinjectionrs::sqli::sqli_data::SQL_KEYWORDS {
            if matches!(k.token_type, b'F' | b'n') {
                continue;
            }
            words.insert(k.word.as_bytes());
            if let Some((first, _)) = k.word.split_once(' ') {
                words.insert(first.as_bytes());
            }
        }
        let max_len = words.iter().map(|w| w.len()).max().unwrap_or(0).min(64);
        KeywordTable { words, max_len }
    })
}

/// SQL injection in one decoded value.
pub(crate) fn sqli(value: &[u8]) -> Option<SqliHit> {
    if value.is_empty() || trivially_clean(value) || sqli_impossible(value) {
        return None;
    }
    if let Some(fingerprint) = libinjection_sqli(value) {
        return Some(SqliHit {
            fingerprint: Some(fingerprint),
        });
    }
    (sqli_supplement(value) || leading_tautology(value)).then_some(SqliHit { fingerprint: None })
}

/// libinjection's verdict and, for an injection, its fingerprint: what
/// `libinjectionrs::detect_sqli` does, minus its second tokenization. It always asks the state
/// for the fingerprint after `detect`, which folds the tokens again, and the fingerprint is only
/// wanted for a finding (a third of libinjection's time on clean prose).
/// `tests::libinjection_sqli_is_detect_sqli` checks both agree.
fn libinjection_sqli(value: &[u8]) -> Option<String> {
    let mut state = libinjectionrs::SqliState::new(value, libinjectionrs::SqliFlags::FLAG_NONE);
    state
        .detect()
        .then(|| state.get_fingerprint().as_str().to_owned())
}

/// A value that *starts* with a boolean operator and a tautology — `or 1=1`, `' OR 'a'='a' --`,
/// `) and 1=1#`, `or true--` — is the tail of a WHERE clause and nothing else: libinjection
/// misses the forms without a leading quote (no string context to close), CRS only catches
/// them with 942130 at paranoia level 2, which also flags prose such as `Is 1 = 1?`. Only the
/// start of the value is read, so the same words inside prose are not reported.
fn leading_tautology(value: &[u8]) -> bool {
    let mut rest = value;
    // Closers of the context the value was inserted in: quotes, backticks, parentheses.
    while let Some((&b, tail)) = rest.split_first() {
        if b.is_ascii_whitespace() || matches!(b, b'\'' | b'"' | b'`' | b')') {
            rest = tail;
        } else {
            break;
        }
    }
    let Some(after_op) = [&b"or"[..], b"and", b"xor", b"||", b"&&"]
        .iter()
        .find_map(|op| {
            let head = rest.get(..op.len())?;
            let tail = &rest[op.len()..];
            let separated = op[0] == b'|'
                || op[0] == b'&'
                || tail
                    .first()
                    .is_some_and(|&b| b.is_ascii_whitespace() || matches!(b, b'(' | b'\'' | b'"'));
            (head.eq_ignore_ascii_case(op) && separated).then_some(tail)
        })
    else {
        return false;
    };
    let rest = trim_start(after_op, b"( ");
    let ends_clause = |tail: &[u8]| {
        let tail = trim_start(tail, b"'\"`) ");
        tail.is_empty()
            || tail.starts_with(b"--")
            || tail.starts_with(b"#")
            || tail.starts_with(b"/*")
            || tail.starts_with(b";")
    };
    for literal in [&b"true"[..], b"not false"] {
        if rest.len() >= literal.len()
            && rest[..literal.len()].eq_ignore_ascii_case(literal)
            && ends_clause(&rest[literal.len()..])
        {
            return true;
        }
    }
    let Some((left, tail)) = operand(rest) else {
        return false;
    };
    let tail = trim_start(tail, b" ");
    let Some(tail) = tail.strip_prefix(b"=") else {
        return false;
    };
    let Some((right, tail)) = operand(trim_start(tail, b" ")) else {
        return false;
    };
    left.eq_ignore_ascii_case(right) && ends_clause(tail)
}

fn trim_start<'v>(mut v: &'v [u8], bytes: &[u8]) -> &'v [u8] {
    while let Some((b, tail)) = v.split_first() {
        if bytes.contains(b) || (bytes.contains(&b' ') && b.is_ascii_whitespace()) {
            v = tail;
        } else {
            break;
        }
    }
    v
}

/// A number, a word or a quoted string (without its quotes) at the start of `v`, and the rest.
fn operand(v: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&first, tail) = v.split_first()?;
    if matches!(first, b'\'' | b'"' | b'`') {
        // Unterminated: the application's own closing quote ends it (`' or 'x'='x`).
        return Some(match tail.iter().position(|&b| b == first) {
            Some(end) => (&tail[..end], &tail[end + 1..]),
            None => (tail, &tail[tail.len()..]),
        });
    }
    let len = v
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
        .count();
    (len > 0).then(|| (&v[..len], &v[len..]))
}

/// MySQL clauses that libinjection's fingerprints miss (ENVIRONMENT.md lists them). Each is
/// only reported together with a quote, a closing parenthesis, a comment or a `UNION`/`SELECT`,
/// i.e. in a value that already leaves a string or expression context or builds a query: the
/// phrases alone can appear in prose.
const SQLI_PHRASES: &[&[u8]] = &[
    b"into outfile",
    b"into dumpfile",
    b"lock in share mode",
    b"in boolean mode",
];

fn sqli_supplement(value: &[u8]) -> bool {
    // Cheap reject first: every phrase contains "in".
    if !value.windows(2).any(|w| w.eq_ignore_ascii_case(b"in")) {
        return false;
    }
    let breaks_context = value
        .iter()
        .any(|&b| matches!(b, b'\'' | b'"' | b'`' | b')' | b'#' | b';'))
        || value.windows(2).any(|w| w == b"--" || w == b"/*")
        || value
            .windows(6)
            .any(|w| w.eq_ignore_ascii_case(b"select") || w[..5].eq_ignore_ascii_case(b"union"));
    if !breaks_context {
        return false;
    }
    let normalized = normalize_sql_spacing(value);
    SQLI_PHRASES
        .iter()
        .any(|p| crate::parse::contains(&normalized, p))
}

/// Lower-cases and turns comments (`/*…*/`) and whitespace runs into one space, so
/// `INTO/**/OUTFILE` and `INTO\n\tOUTFILE` read as `into outfile`.
fn normalize_sql_spacing(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        let b = value[i];
        let space = if b == b'/' && value.get(i + 1) == Some(&b'*') {
            let end = value[i + 2..]
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(value.len(), |p| i + 2 + p + 2);
            i = end;
            true
        } else if b.is_ascii_whitespace() || b == 0x0b {
            i += 1;
            true
        } else {
            i += 1;
            false
        };
        if space {
            if out.last() != Some(&b' ') {
                out.push(b' ');
            }
        } else {
            out.push(b.to_ascii_lowercase());
        }
    }
    out
}

/// True when libinjection's XSS detector cannot report `value`, decided without running it
/// (its HTML5 tokenizer compares every word of prose with its list of dangerous attribute
/// names, about three quarters of the WAF's cost on a 4 KB prose body).
///
/// The argument, from libinjectionrs' `XssDetector::is_xss`: it reports only a DOCTYPE, a tag
/// name, a comment, or an attribute value that directly follows a dangerous attribute name. The
/// tokenizer makes the first three only in the states a `<` leads to (tag open, markup
/// declaration, bogus comment), in every one of its five starting contexts; and an attribute
/// value follows an attribute name only through `=` (the attribute-name and after-attribute-name
/// states), the value a context starts in having no name before it. So a value without `<` and
/// `=` is never reported. `tests::xss_prefilter_never_hides_a_libinjection_match` checks it
/// empirically.
pub(crate) fn xss_impossible(value: &[u8]) -> bool {
    !value.iter().any(|&b| b == b'<' || b == b'=')
}

/// Cross-site scripting in one decoded value.
pub(crate) fn xss(value: &[u8]) -> bool {
    if value.is_empty() || trivially_clean(value) || xss_impossible(value) {
        return false;
    }
    if libinjectionrs::detect_xss(value).is_injection() {
        return true;
    }
    xss_supplement(value)
}

/// libinjectionrs does not treat control characters such as vertical tab as the separator
/// old browsers took them for (`<img src=x onerror\x0B=alert(1)>`). For markup that contains
/// them, read them as spaces and ask libinjection again.
fn xss_supplement(value: &[u8]) -> bool {
    let is_odd_control = |b: u8| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r');
    if !value.iter().any(|&b| is_odd_control(b)) || !value.contains(&b'<') {
        return false;
    }
    let spaced: Vec<u8> = value
        .iter()
        .map(|&b| if is_odd_control(b) { b' ' } else { b })
        .collect();
    libinjectionrs::detect_xss(&spaced).is_injection()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libinjection_finds_classic_sqli_with_fingerprint() {
        let hit = sqli(b"1' OR '1'='1");
        assert!(hit.is_some());
        assert!(
            hit.and_then(|h| h.fingerprint)
                .is_some_and(|f| !f.is_empty())
        );
        assert!(sqli(b"1 UNION SELECT username, password FROM users--").is_some());
        assert!(sqli(b"1;WAITFOR DELAY '0:0:5'--").is_some());
    }

    #[test]
    fn benign_sql_looking_words_are_clean() {
        for v in [
            "select a plan",
            "O'Brien",
            "1 OR 2 items",
            "Rock 'n' roll",
            "drop by anytime",
            "union station",
            "42",
            "jane.doe-1",
        ] {
            assert!(sqli(v.as_bytes()).is_none(), "{v}");
        }
    }

    #[test]
    fn supplement_finds_into_outfile_and_mysql_modes() {
        assert!(sqli(b"1' INTO/**/OUTFILE '/var/www/x.php").is_some());
        assert!(sqli(b"x' LOCK\tIN SHARE MODE-- ").is_some());
        assert!(sqli(b"a') IN BOOLEAN MODE)#").is_some());
        assert!(sqli(b"-1 LOCK IN SHARE MODE UNION SELECT table_name FROM t").is_some());
        // The same words in prose, with no quote or comment around them, are not reported.
        assert!(sqli(b"export the table into outfile storage").is_none());
    }

    #[test]
    fn leading_tautologies_are_sqli_but_not_in_prose() {
        for v in [
            " or 1=1",
            "or 1=1--",
            " and 1=1#",
            "' or 'a'='a' --",
            ") or ('x'='x",
            "or true--",
            " OR 0=0 /*",
        ] {
            assert!(leading_tautology(v.as_bytes()), "{v}");
        }
        for v in [
            "Is 1 = 1? Yes, and 2 > 1.",
            "or 1=2",
            "or maybe 1=1 later",
            "order=1",
            "oregon=oregon",
            "AND/OR logic",
            "or",
        ] {
            assert!(!leading_tautology(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn xss_via_libinjection_and_vertical_tab_supplement() {
        assert!(xss(b"<script>alert(1)</script>"));
        assert!(xss(b"\"><img src=x onerror=alert(1)>"));
        assert!(xss(b"<img src=x onerror\x0B=alert(1)>"));
        assert!(xss(b"<svg/onload=alert(1)>"));
        assert!(!xss(b"I <3 rust & 2 < 3"));
        assert!(!xss(b"Hello, world!"));
    }

    #[test]
    fn no_blacklisted_fingerprint_is_only_words_numbers_operators_and_dots() {
        // Fingerprints are stored as keywords of type `F`, as "0" + the upper-cased fingerprint.
        let fingerprints: Vec<&str> = libinjectionrs::sqli::sqli_data::SQL_KEYWORDS
            .iter()
            .filter(|k| k.token_type == b'F')
            .filter_map(|k| k.word.strip_prefix('0'))
            .collect();
        assert!(fingerprints.len() > 8000, "{}", fingerprints.len());
        for fp in fingerprints {
            // `.` is libinjection's DOT token, which `1.x` can make.
            assert!(
                fp.chars().any(|c| !matches!(c, 'N' | '1' | 'O' | '.')),
                "{fp}"
            );
        }
    }

    #[test]
    fn prefilter_keeps_keywords_and_special_bytes_for_libinjection() {
        assert!(sqli_impossible(b"jane doe 42"));
        assert!(sqli_impossible(b"2024-05-01"));
        assert!(sqli_impossible(b"550e8400-e29b-41d4-a716-446655440000"));
        assert!(!sqli_impossible(b"1 union all"));
        assert!(!sqli_impossible(b"1union"));
        assert!(!sqli_impossible(b"x.select"));
        assert!(!sqli_impossible(b"_utf8"));
        assert!(!sqli_impossible(b"at time zone"));
        assert!(!sqli_impossible(b"1--"));
        assert!(!sqli_impossible(b"O'Brien"));
    }

    /// `count` strings of 1 to `max_parts` pieces of `parts` each, chosen by a fixed-seed
    /// xorshift generator: the same strings on every run.
    fn joined_parts(
        parts: &'static [&'static str],
        seed: u64,
        count: usize,
        max_parts: u64,
    ) -> impl Iterator<Item = String> {
        let mut next = crate::xorshift(seed);
        let mut seed = seed;
        (0..count).map(move |_| {
            let mut v = String::new();
            for _ in 0..(seed % max_parts + 1) {
                seed = next();
                v.push_str(parts[(seed % parts.len() as u64) as usize]);
            }
            v
        })
    }

    #[test]
    fn prefilter_never_hides_a_libinjection_match() {
        let parts: &[&str] = &[
            "1",
            "0",
            "union",
            "select",
            "or",
            "and",
            "sleep",
            "-",
            ".",
            "_",
            "x",
            "e1",
            "null",
            "version",
            "benchmark",
            "1e",
            "0x41",
            "char",
            "admin",
            "-1",
            "9.5",
            "true",
            " ",
            "\n",
            "at",
            "time",
            "group",
            "by",
            "order",
            "is",
            "not",
            "like",
            "div",
            "mod",
            "utf8",
            "b",
            "n",
            "_utf8",
            "1.",
            ".5",
            "0b1",
            "xor",
            "where",
            "case",
            "when",
            "then",
            "end",
            "0xab",
            "eyJ",
            "9",
            "d",
            "f",
            "e",
            "ex",
            "1e1",
            "all",
            "zone",
            "left",
            "join",
        ];
        for v in joined_parts(parts, 0x5851_f42d_4c95_7f2d, 200_000, 7) {
            if sqli_impossible(v.as_bytes()) {
                assert!(
                    !libinjectionrs::detect_sqli(v.as_bytes()).is_injection(),
                    "{v:?}"
                );
            }
        }
    }

    #[test]
    fn libinjection_sqli_is_detect_sqli() {
        // Quotes and comments make libinjection try its other contexts (a leading quote, MySQL
        // comment rules), so the fingerprint reported can come from any of its passes.
        let parts: &[&str] = &[
            "1",
            "'",
            "\"",
            "or",
            "and",
            "union",
            "select",
            "from",
            "where",
            "=",
            " ",
            "--",
            "#",
            "/*",
            "*/",
            ")",
            "(",
            "x",
            "admin",
            "sleep",
            "null",
            ";",
            "drop",
            "table",
            "`",
            "0x41",
            "like",
            "@@version",
            "char",
            ",",
            "is",
            "not",
            "in",
            "+",
        ];
        let mut injections = 0;
        for v in joined_parts(parts, 0x2545_f491_4f6c_dd1d, 100_000, 8) {
            let full = libinjectionrs::detect_sqli(v.as_bytes());
            let expected = full
                .is_injection()
                .then(|| full.fingerprint.map(|f| f.as_str().to_owned()))
                .flatten();
            injections += usize::from(expected.is_some());
            assert_eq!(libinjection_sqli(v.as_bytes()), expected, "{v:?}");
        }
        // Both verdicts occur, in numbers.
        assert!(injections > 1_000, "{injections}");
        assert!(injections < 90_000, "{injections}");
    }

    #[test]
    fn xss_prefilter_never_hides_a_libinjection_match() {
        // Values without `<` and `=` built from what libinjection's XSS tokenizer reacts to —
        // quotes, backticks, slashes, `>`, `!`, `?`, `%`, NUL, whitespace, dangerous attribute
        // and tag names, URL schemes — must never be reported.
        let parts: &[&str] = &[
            "\"",
            "'",
            "`",
            "/",
            ">",
            "!",
            "?",
            "%",
            "\0",
            " ",
            "\t",
            "\n",
            "\x0b",
            "\x0c",
            "onerror",
            "onload",
            "ONMOUSEOVER",
            "on",
            "style",
            "href",
            "src",
            "xmlns",
            "formaction",
            "javascript:",
            "vbscript:",
            "data:",
            "alert(1)",
            "script",
            "svg",
            "img",
            "iframe",
            "--",
            "[if",
            "xml",
            "import",
            "entity",
            "DOCTYPE",
            "]]",
            "x",
            "1",
            "&lt;",
            "&#60;",
            "\\x3c",
            "\u{ff1c}",
            "\u{ff1d}",
        ];
        for v in joined_parts(parts, 0x2545_f491_4f6c_dd1d, 60_000, 8) {
            assert!(xss_impossible(v.as_bytes()), "{v:?}");
            assert!(
                !libinjectionrs::detect_xss(v.as_bytes()).is_injection(),
                "{v:?}"
            );
        }
        // With either byte back, the same material is reported: the filter is not vacuous.
        assert!(libinjectionrs::detect_xss(b"x onerror=alert(1)").is_injection());
        assert!(libinjectionrs::detect_xss(b"<script>").is_injection());
        assert!(!xss_impossible(b"x onerror=alert(1)"));
        assert!(!xss_impossible(b"<script>"));
    }

    #[test]
    fn fast_path_never_hides_a_libinjection_match() {
        // Values the fast path skips: random words from its alphabet, with SQL keywords and
        // `-` runs mixed in, must never be reported by libinjection either.
        let parts: &[&str] = &[
            "1",
            "0",
            "union",
            "select",
            "or",
            "and",
            "sleep",
            "_",
            "x",
            "e1",
            "null",
            "version",
            "benchmark",
            "1e",
            "0x41",
            "char",
            "admin",
            "0b1",
            "9",
            "true",
            "x0",
        ];
        for v in joined_parts(parts, 0x9e37_79b9_7f4a_7c15, 50_000, 5) {
            if trivially_clean(v.as_bytes()) {
                assert!(
                    !libinjectionrs::detect_sqli(v.as_bytes()).is_injection(),
                    "{v}"
                );
                assert!(
                    !libinjectionrs::detect_xss(v.as_bytes()).is_injection(),
                    "{v}"
                );
            }
        }
    }
}
