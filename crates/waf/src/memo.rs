//! A per-thread memo of the values of a request that repeat from one request to the next —
//! header and cookie values, path segments and the whole path, query parameter names — that the
//! byte-deterministic detectors (SQLi, XSS, RCE, Java, traversal, the CRS rules of one target
//! and paranoia level) already found clean. Each entry records which of them it was checked by,
//! so a client's `User-Agent`, `Referer` and session cookie, and an API's route words and
//! parameter names, are run through libinjection and the CRS once per worker thread rather than
//! on every request. Query and form values, bodies and the headers that are new on every
//! request (ids, timestamps, trace context) are not remembered: they vary. On top,
//! the whole set of a request's headers (but those new on every request, such as ids and
//! signatures) is remembered as one key once all of them were found clean, so that a client
//! sending the same headers again costs one lookup instead of one per header.
//!
//! Why: libinjectionrs spends ~8–12 µs on a browser User-Agent or a Referer URL (keyword lookups
//! over three quote contexts), which would double the gateway's per-request CPU, while these
//! values repeat on nearly every request of a client. The memo changes no verdict: it holds only
//! values whose full bytes were inspected and found clean, compares full bytes and the value's
//! [`Class`] on lookup (a hash collision only evicts), and the verdict depends on nothing but
//! those bytes and how that class is decoded. A client that floods it with distinct values
//! evicts entries, which costs their owners one uncached inspection each and changes no verdict. `Waf` stays immutable and `Send + Sync`; each thread has its own
//! memo, so there is no lock on the request path.

use std::cell::RefCell;

/// Slots per table and thread, in pairs (two-way set associative). 2 tables × 1024 × up to
/// [`MAX_LEN`] bytes bound the memory at 1 MiB per thread; typical values are tens of bytes.
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

/// One entry's tag: the value's class and the bits of the detectors it was found clean by
/// ([`crate::RuleId::bit`] in the low byte, CRS targets per paranoia level in the high byte,
/// see `crs::memo_bit`).
type Tag = (Class, u16);

/// Byte strings remembered with a tag each, in a table that is two-way set associative: an
/// entry may sit in either slot of the pair its hash names, so two hot entries whose hashes
/// meet share a pair instead of evicting each other on every request. A new entry takes the
/// pair's first slot and moves the one there to the second, evicting the older. Lookups
/// compare full bytes, so a hash collision only evicts.
struct TwoWay<T> {
    slots: Vec<Option<(T, Box<[u8]>)>>,
}

impl<T: Clone> TwoWay<T> {
    fn new(slots: usize) -> Self {
        TwoWay {
            slots: vec![None; slots],
        }
    }

    /// The tag of `key` in the pair starting at `first`, if one there is for it by `same`.
    fn get(&self, first: usize, key: &[u8], same: impl Fn(&T) -> bool) -> Option<&T> {
        self.slots.get(first..first + 2)?.iter().find_map(|slot| {
            slot.as_ref()
                .filter(|(tag, k)| **k == *key && same(tag))
                .map(|(tag, _)| tag)
        })
    }

    /// Updates the tag of `key` with `update` when the pair holds it (by `same`), else puts
    /// `key` in with `tag`.
    fn put(
        &mut self,
        first: usize,
        key: &[u8],
        tag: T,
        same: impl Fn(&T) -> bool,
        update: impl FnOnce(&mut T),
    ) {
        let Some(slots) = self.slots.get_mut(first..first + 2) else {
            return;
        };
        if let Some((known, _)) = slots
            .iter_mut()
            .flatten()
            .find(|(t, k)| **k == *key && same(t))
        {
            update(known);
            return;
        }
        slots.swap(0, 1);
        slots[0] = Some((tag, key.into()));
    }
}

thread_local! {
    /// Two tables: header and cookie values, and the path and parameter names, so that an API
    /// whose paths carry ids (every one new) never evicts its clients' `User-Agent`.
    static CLEAN: [RefCell<TwoWay<Tag>>; 2] = [
        RefCell::new(TwoWay::new(SLOTS)),
        RefCell::new(TwoWay::new(SLOTS)),
    ];
}

/// The table of `class`.
fn table(class: Class) -> usize {
    match class {
        Class::Header => 0,
        Class::PathSegment | Class::Path | Class::QueryKey => 1,
    }
}

/// The first slot of the pair `value` of `class` may sit in. A multiply-rotate hash
/// (FxHash's) over the class and the value, eight bytes at a time: fast on the short values
/// remembered here and good enough to spread them; collisions cost only a miss. A client that
/// sends many distinct or colliding values only evicts entries: their owners pay one uncached
/// inspection each, and no verdict changes.
fn pair(class: Class, value: &[u8]) -> usize {
    // The high bits are the best mixed.
    ((hash(class as u64, value) >> 32) as usize & (SLOTS / 2 - 1)) * 2
}

fn hash(seed: u64, value: &[u8]) -> u64 {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let mix = |h: u64, word: u64| (h.rotate_left(5) ^ word).wrapping_mul(K);
    let mut h = mix(seed, value.len() as u64);
    let mut chunks = value.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        h = mix(h, u64::from_le_bytes(word));
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(word));
    }
    h
}

/// The rule bits `value` of `class` was found clean by on this thread (0 when unknown).
pub(crate) fn known_clean(class: Class, value: &[u8]) -> u16 {
    if value.len() > MAX_LEN {
        return 0;
    }
    CLEAN
        .try_with(|memo| {
            memo[table(class)].try_borrow().map_or(0, |m| {
                m.get(pair(class, value), value, |(c, _)| *c == class)
                    .map_or(0, |(_, rules)| *rules)
            })
        })
        .unwrap_or(0)
}

/// Records that `value` of `class` was found clean by the detectors of `rules` (added to those
/// it is already known clean by, without a new copy of it).
pub(crate) fn remember_clean(class: Class, value: &[u8], rules: u16) {
    if value.len() > MAX_LEN || rules == 0 {
        return;
    }
    // Failing to remember (thread teardown) only costs a later miss.
    let _ = CLEAN.try_with(|memo| {
        if let Ok(mut m) = memo[table(class)].try_borrow_mut() {
            m.put(
                pair(class, value),
                value,
                (class, rules),
                |(c, _)| *c == class,
                |(_, known)| *known |= rules,
            );
        }
    });
}

/// Slots of the header-set table, in pairs; sets longer than [`MAX_SET_LEN`] bytes are not
/// remembered, which bounds it at 1 MiB per thread.
const SET_SLOTS: usize = 256;
pub(crate) const MAX_SET_LEN: usize = 4096;

thread_local! {
    /// Whole header sets found clean (see [`set_known_clean`]), as the keys the WAF built.
    static CLEAN_SETS: RefCell<TwoWay<()>> = RefCell::new(TwoWay::new(SET_SLOTS));
    /// The buffer header-set keys are built in, reused from request to request.
    static SET_KEY: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The key buffer, empty, for building one header-set key; give it back with [`put_key`].
pub(crate) fn take_key() -> Vec<u8> {
    let mut key = SET_KEY
        .try_with(|k| {
            k.try_borrow_mut()
                .map(|mut k| std::mem::take(&mut *k))
                .unwrap_or_default()
        })
        .unwrap_or_default();
    key.clear();
    key
}

pub(crate) fn put_key(key: Vec<u8>) {
    let _ = SET_KEY.try_with(|k| {
        if let Ok(mut k) = k.try_borrow_mut() {
            *k = key;
        }
    });
}

/// Whether the header set `key` (built by the WAF from its own identity and every header
/// name and value it inspects) was found clean on this thread. Like the value memo, it holds
/// only keys whose headers were all inspected and produced no finding, compares full bytes,
/// and a collision only evicts; one lookup here stands for one per header.
pub(crate) fn set_known_clean(key: &[u8]) -> bool {
    if key.len() > MAX_SET_LEN {
        return false;
    }
    CLEAN_SETS
        .try_with(|sets| {
            sets.try_borrow()
                .is_ok_and(|sets| sets.get(set_pair(key), key, |()| true).is_some())
        })
        .unwrap_or(false)
}

/// Records that every header of the set `key` was inspected and found clean.
pub(crate) fn remember_set(key: &[u8]) {
    if key.len() > MAX_SET_LEN {
        return;
    }
    let _ = CLEAN_SETS.try_with(|sets| {
        if let Ok(mut sets) = sets.try_borrow_mut() {
            sets.put(set_pair(key), key, (), |()| true, |()| {});
        }
    });
}

fn set_pair(key: &[u8]) -> usize {
    ((hash(0x5e75, key) >> 32) as usize & (SET_SLOTS / 2 - 1)) * 2
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
    fn slots_spread_similar_values() {
        // Values that differ in one byte, or only in length, land in many different slots.
        let mut used = std::collections::HashSet::new();
        for i in 0..256u32 {
            used.insert(pair(Class::Header, format!("session={i:03}").as_bytes()));
            used.insert(pair(Class::Header, &vec![b'a'; i as usize]));
        }
        assert!(used.len() > 250, "{} distinct pairs", used.len());
    }

    #[test]
    fn two_values_of_one_pair_are_both_remembered() {
        // Find three header values of one pair: the two most recent stay, the oldest goes.
        let target = pair(Class::Header, b"value-0");
        let same: Vec<Vec<u8>> = (1..200_000)
            .map(|i| format!("value-{i}").into_bytes())
            .filter(|v| pair(Class::Header, v) == target)
            .take(2)
            .collect();
        let [a, b] = [&same[0], &same[1]];
        remember_clean(Class::Header, b"value-0", 0b1);
        remember_clean(Class::Header, a, 0b10);
        assert_eq!(known_clean(Class::Header, b"value-0"), 0b1);
        assert_eq!(known_clean(Class::Header, a), 0b10);
        remember_clean(Class::Header, b, 0b100);
        assert_eq!(known_clean(Class::Header, b"value-0"), 0);
        assert_eq!(known_clean(Class::Header, a), 0b10);
        assert_eq!(known_clean(Class::Header, b), 0b100);
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
