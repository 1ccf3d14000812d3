//! A per-thread memo of header and cookie values that the byte-deterministic detectors (SQLi,
//! XSS, RCE, Java, the CRS rules of one target and paranoia level) already found clean — each entry records which of them it was checked by — so a client's `User-Agent`, `Referer` and session cookie are run through libinjection
//! once per worker thread rather than on every request.
//!
//! Why: libinjectionrs spends ~8–12 µs on a browser User-Agent or a Referer URL (keyword lookups
//! over three quote contexts), which would double the gateway's per-request CPU, while these
//! values repeat on nearly every request of a client. The memo changes no verdict: it holds only
//! values whose full bytes were inspected and found clean, compares full bytes on lookup (a hash
//! collision only evicts), and the verdict depends on nothing but those bytes. An attacker who
//! floods it with distinct values only gets the uncached cost. `Waf` stays immutable and
//! `Send + Sync`; each thread has its own memo, so there is no lock on the request path.

use std::cell::RefCell;

/// Slots per thread (direct-mapped). 256 × up to [`MAX_LEN`] bytes bounds the memory at
/// 128 KiB per thread.
const SLOTS: usize = 256;
/// Longer values are not remembered: they are rare and would make the memo large.
pub(crate) const MAX_LEN: usize = 512;

/// One slot: the bits of the detectors the value was found clean by ([`crate::RuleId::bit`] in
/// the low byte, CRS targets per paranoia level in the high byte, see `crs::memo_bit`), and the
/// value.
type Slot = Option<(u16, Box<[u8]>)>;

thread_local! {
    static CLEAN: RefCell<Vec<Slot>> = RefCell::new(vec![None; SLOTS]);
}

/// FNV-1a: fast on short values and good enough to spread slots; collisions cost only a miss.
fn slot(value: &[u8]) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in value {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h as usize) & (SLOTS - 1)
}

/// The rule bits `value` was found clean by on this thread (0 when unknown).
pub(crate) fn known_clean(value: &[u8]) -> u16 {
    if value.len() > MAX_LEN {
        return 0;
    }
    CLEAN
        .try_with(|memo| {
            memo.try_borrow().map_or(0, |m| match &m[slot(value)] {
                Some((rules, v)) if **v == *value => *rules,
                _ => 0,
            })
        })
        .unwrap_or(0)
}

/// Records that `value` was found clean by the detectors of `rules`.
pub(crate) fn remember_clean(value: &[u8], rules: u16) {
    if value.len() > MAX_LEN || rules == 0 {
        return;
    }
    // Failing to remember (thread teardown) only costs a later miss.
    let _ = CLEAN.try_with(|memo| {
        if let Ok(mut m) = memo.try_borrow_mut() {
            match &mut m[slot(value)] {
                // More detectors found the same value clean: no new copy of it.
                Some((known, v)) if **v == *value => *known |= rules,
                entry => *entry = Some((rules, value.into())),
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
        assert_eq!(known_clean(v), 0);
        remember_clean(v, 0b11);
        assert_eq!(known_clean(v), 0b11);
        assert_eq!(known_clean(b"Mozilla/5.0 (X11; Linux x86_64) memo tesT"), 0);
    }

    #[test]
    fn long_values_are_not_remembered() {
        let v = vec![b'a'; MAX_LEN + 1];
        remember_clean(&v, 0b11);
        assert_eq!(known_clean(&v), 0);
    }

    #[test]
    fn memo_is_per_thread() {
        let v = b"per-thread value";
        remember_clean(v, 0b11);
        let other = std::thread::spawn(move || known_clean(v)).join();
        assert_eq!(other.ok(), Some(0));
    }
}
