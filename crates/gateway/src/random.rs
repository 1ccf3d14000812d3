//! Randomness for the request path, from `rand`'s per-thread generator (ChaCha, seeded and
//! periodically reseeded from the operating system): weighted backend picks and request ids.
//! One `getrandom` system call per request (what request ids cost before) is measurable at
//! proxy rates; the thread generator makes them without one.

use rand::{Rng, RngExt};

/// A uniform number in `0..bound` (0 when `bound` is 0).
pub(crate) fn below(bound: u64) -> u64 {
    if bound == 0 {
        return 0;
    }
    rand::rng().random_range(0..bound)
}

/// 128 random bits as 32 lowercase hex digits.
pub(crate) fn request_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut text = [0u8; 32];
    // 16 bytes always fit 32 hex digits, and hex digits are UTF-8.
    if hex::encode_to_slice(bytes, &mut text).is_err() {
        return hex::encode(bytes);
    }
    String::from_utf8(text.to_vec()).unwrap_or_else(|_| hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range() {
        for bound in [1, 2, 7, 1000] {
            for _ in 0..1000 {
                assert!(below(bound) < bound);
            }
        }
        assert_eq!(below(0), 0);
    }

    #[test]
    fn request_ids_are_32_hex_digits_and_differ() {
        let a = request_id();
        let b = request_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
