//! Matching a value against a short list of lower-case literal needles, ignoring ASCII case,
//! in one pass: each position is
//! compared only with the needles that start with its byte, so a value costs about its length
//! in table lookups rather than its length times the number of needles.

/// A set of lower-case literal needles, indexed by first byte.
pub(crate) struct Needles {
    /// For each first byte, a bit set of needle indexes (at most 128 needles).
    by_first: [u128; 256],
    /// For each second byte, the same (needles of one byte match any second byte).
    by_second: [u128; 256],
    needles: &'static [&'static str],
}

impl Needles {
    /// Indexes `needles` (non-empty strings, at most 128 of them; extra ones are ignored).
    pub(crate) const fn new(needles: &'static [&'static str]) -> Needles {
        let mut by_first = [0u128; 256];
        let mut by_second = [0u128; 256];
        let mut i = 0;
        while i < needles.len() && i < 128 {
            let bytes = needles[i].as_bytes();
            if !bytes.is_empty() {
                by_first[bytes[0].to_ascii_lowercase() as usize] |= 1 << i;
                by_first[bytes[0].to_ascii_uppercase() as usize] |= 1 << i;
            }
            if bytes.len() >= 2 {
                by_second[bytes[1].to_ascii_lowercase() as usize] |= 1 << i;
                by_second[bytes[1].to_ascii_uppercase() as usize] |= 1 << i;
            } else {
                let mut b = 0;
                while b < 256 {
                    by_second[b] |= 1 << i;
                    b += 1;
                }
            }
            i += 1;
        }
        Needles {
            by_first,
            by_second,
            needles,
        }
    }

    /// Does any needle occur in `hay`, ignoring ASCII case? With `boundary`, only where the byte before is not
    /// alphanumeric or `_` (or at the start).
    pub(crate) fn any_in(&self, hay: &[u8], boundary: bool) -> bool {
        for (i, &b) in hay.iter().enumerate() {
            let mut set = self.by_first[b as usize];
            if set == 0 {
                continue;
            }
            set &= hay
                .get(i + 1)
                .map_or(u128::MAX, |&c| self.by_second[c as usize]);
            if set == 0 {
                continue;
            }
            if boundary && i > 0 && (hay[i - 1].is_ascii_alphanumeric() || hay[i - 1] == b'_') {
                continue;
            }
            let rest = &hay[i..];
            while set != 0 {
                let k = set.trailing_zeros() as usize;
                set &= set - 1;
                if self
                    .needles
                    .get(k)
                    .is_some_and(|n| starts_with_ignore_case(rest, n.as_bytes()))
                {
                    return true;
                }
            }
        }
        false
    }
}

/// `hay` starts with `needle`, ignoring ASCII case.
pub(crate) fn starts_with_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    static SET: Needles = Needles::new(&["java.lang.runtime", "ysoserial", "#_member"]);

    #[test]
    fn finds_needles_with_and_without_boundary() {
        assert!(SET.any_in(b"x=java.lang.runtime", true));
        assert!(!SET.any_in(b"myjava.lang.runtime", true));
        assert!(SET.any_in(b"myjava.lang.runtime", false));
        assert!(SET.any_in(b"(#_member", false));
        assert!(SET.any_in(b"x=Java.Lang.RUNTIME", true));
        assert!(!SET.any_in(b"java.lang", false));
        assert!(!SET.any_in(b"", false));
    }
}
