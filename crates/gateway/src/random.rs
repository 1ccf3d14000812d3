//! Randomness for the request path: a per-thread generator for weighted backend picks (cheap,
//! not cryptographic) and operating-system randomness for request ids.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// Distinguishes fallback seeds and ids when the OS generator is unavailable.
static FALLBACK: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    let seed = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => fallback_entropy(),
    };
    // xorshift has a fixed point at zero.
    seed | 1
}

fn fallback_entropy() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let counter = FALLBACK.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    splitmix(nanos ^ counter)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Next value of the thread's xorshift64* generator.
fn next_u64() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A uniformly distributed value in `0..bound`; `bound` must be positive (0 yields 0).
pub(crate) fn below(bound: u64) -> u64 {
    if bound == 0 {
        return 0;
    }
    // Multiply-shift maps 64 random bits onto the range with negligible bias for the small
    // bounds used here (sums of weights).
    ((u128::from(next_u64()) * u128::from(bound)) >> 64) as u64
}

/// 128 random bits as 32 lowercase hex digits, from the OS generator.
pub(crate) fn request_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Ids must stay unique even if the OS generator fails; uniqueness, not secrecy, is
        // what they are for.
        bytes[..8].copy_from_slice(&fallback_entropy().to_le_bytes());
        bytes[8..].copy_from_slice(&fallback_entropy().to_le_bytes());
    }
    let mut out = String::with_capacity(32);
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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
