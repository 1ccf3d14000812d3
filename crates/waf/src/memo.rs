//! A per-thread memo of the values of a request that repeat from one request to the next —
//! header and cookie values, path segments and the whole path, query parameter names — that the
//! byte-deterministic detectors (SQLi, XSS, RCE, Java, traversal, the CRS rules of one target
//! and paranoia level) already found clean. Each entry records which of them it was checked by,
//! so a client's `User-Agent`, `Referer` and session cookie, and an API's route words and
//! parameter names, are run through libinjection and the CRS once per worker thread rather than
//! on every request. Query and form values and bodies are not remembered: they vary.
//!
//! Why: libinjectionrs spends ~8–12 µs on a browser User-Agent or a Referer URL (keyword lookups
//! over three quote contexts), which would double the gateway's per-request CPU, while these
//! values repeat on nearly every request of a client. The memo changes no verdict: it holds only
//! values whose full bytes were inspected and found clean, compares full bytes and the value's
//! [`Class`] on lookup (a hash collision only evicts), and the verdict depends on nothing but
//! those bytes and how that class is decoded. An attacker who floods it with distinct values
//! only gets the uncached cost. `Waf` stays immutable and `Send + Sync`; each thread has its own
//! memo, so there is no lock on the request path.

use std::cell::RefCell;

/// Slots per thread (direct-mapped). 1024 × up to [`MAX_LEN`] bytes bounds the memory at
/// 512 KiB per thread; typical values are tens of bytes.
const SLOTS: usize = 1024;
/// Longer values are not remembered: they are rare and would make the memo large.
pub(crate) const MAX_LEN: usize = 512;

/// What a remembered value was, which decides how it is decoded and which detectors run on it;
/// the same bytes in two classes are two entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// A header value or a cookie value (decoded with `+` kept literal).
    Header = 0,
    /// One segment of the path.
    PathSegment = 1,
    /// The whole path.
    Path = 2,
    /// A query parameter name (decoded with `+` as a space).
    QueryKey = 3,
}

/// One slot: the value's class, the bits of the detectors it was found clean by
/// ([`crate::RuleId::bit`] in the low byte, CRS targets per paranoia level in the high byte,
/// see `crs::memo_bit`), and the value.
type Slot = Option<(Class, u16, Box<[u8]>)>;

thread_local! {
    static CLEAN: RefCell<Vec<Slot>> = RefCell::new(vec![None; SLOTS]);
}

/// FNV-1a over the class and the value: fast on short values and good enough to spread slots;
/// collisions cost only a miss.
fn slot(class: Class, value: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (class as u64);
    h = h.wrapping_mul(0x0100_0000_01b3);
    for &b in value {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) & (SLOTS - 1)
}

/// The rule bits `value` of `class` was found clean by on this thread (0 when unknown).
pub(crate) fn known_clean(class: Class, value: &[u8]) -> u16 {
    if value.len() > MAX_LEN {
        return 0;
    }
    CLEAN
        .try_with(|memo| {
            memo.try_borrow()
                .map_or(0, |m| match &m[slot(class, value)] {
                    Some((c, rules, v)) if *c == class && **v == *value => *rules,
                    _ => 0,
                })
        })
        .unwrap_or(0)
}

/// Records that `value` of `class` was found clean by the detectors of `rules`.
pub(crate) fn remember_clean(class: Class, value: &[u8], rules: u16) {
    if value.len() > MAX_LEN || rules == 0 {
        return;
    }
    // Failing to remember (thread teardown) only costs a later miss.
    let _ = CLEAN.try_with(|memo| {
        if let Ok(mut m) = memo.try_borrow_mut() {
            match &mut m[slot(class, value)] {
                // More detectors found the same value clean: no new copy of it.
                Some((c, known, v)) if *c == class && **v == *value => *known |= rules,
                entry => *entry = Some((class, rules, value.into())),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_exact_values_only() {
        let v = b"Mozilla/5.0 (X11; Linux x86_64) memo test";
        assert_eq!(known_clean(Class::Header, v), 0);
        remember_clean(Class::Header, v, 0b11);
        assert_eq!(known_clean(Class::Header, v), 0b11);
        assert_eq!(
            known_clean(Class::Header, b"Mozilla/5.0 (X11; Linux x86_64) memo tesT"),
            0
        );
    }

    #[test]
    fn the_same_bytes_in_another_class_are_unknown() {
        let v = b"a+b";
        remember_clean(Class::PathSegment, v, 0b11);
        assert_eq!(known_clean(Class::PathSegment, v), 0b11);
        assert_eq!(known_clean(Class::QueryKey, v), 0);
        remember_clean(Class::QueryKey, v, 0b1);
        assert_eq!(known_clean(Class::QueryKey, v), 0b1);
    }

    #[test]
    fn long_values_are_not_remembered() {
        let v = vec![b'a'; MAX_LEN + 1];
        remember_clean(Class::Header, &v, 0b11);
        assert_eq!(known_clean(Class::Header, &v), 0);
    }

    #[test]
    fn memo_is_per_thread() {
        let v = b"per-thread value";
        remember_clean(Class::Header, v, 0b11);
        let other = std::thread::spawn(move || known_clean(Class::Header, v)).join();
        assert_eq!(other.ok(), Some(0));
    }
}
