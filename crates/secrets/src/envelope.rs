//! Envelope encryption: [`seal`] a value under a fresh data key wrapped by the master key,
//! [`open`] it again, and [`rewrap`] the data key under a new master key (master-key rotation)
//! without touching the value's ciphertext.
//!
//! Layout of a [`Sealed`] value (AES-256-GCM throughout, 96-bit random nonces, 128-bit tags):
//!
//! ```text
//! wrapped_dek = dek_nonce (12) || AES-GCM(master, dek_nonce, data_key (32), aad = DEK_AAD) (48)
//! ciphertext  =                   AES-GCM(data_key, nonce, value, aad = identity)
//! ```
//!
//! A fresh data key per value means a nonce is never reused under one key however many values
//! are stored, and the master key only ever encrypts random keys.

use std::fmt;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Nonce, Payload};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::key::{KEY_LEN, MasterKey};
use crate::{SecretError, random};

/// Length of an AES-GCM nonce in bytes.
pub const NONCE_LEN: usize = 12;
/// Length of an AES-GCM tag in bytes.
pub const TAG_LEN: usize = 16;
/// Length of [`Sealed::wrapped_dek`]: nonce, encrypted data key, tag.
pub const WRAPPED_DEK_LEN: usize = NONCE_LEN + KEY_LEN + TAG_LEN;

/// Associated data of every wrapped data key: separates this use of the master key from any
/// other it may get, and versions the format.
const DEK_AAD: &[u8] = b"rollgate-dek/v1";

/// A value as stored: only ciphertext and public metadata. Safe to log by `Debug` (which
/// prints lengths, not bytes), to store and to copy.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// [`MasterKey::key_id`] of the master key that wraps the data key.
    pub key_id: String,
    /// The data key's nonce followed by the data key encrypted under the master key with its
    /// tag ([`WRAPPED_DEK_LEN`] bytes).
    pub wrapped_dek: Vec<u8>,
    /// The value's nonce ([`NONCE_LEN`] bytes).
    pub nonce: Vec<u8>,
    /// The value encrypted under the data key, with its tag (value length + [`TAG_LEN`]).
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("wrapped_dek_len", &self.wrapped_dek.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

fn cipher(key: &[u8; KEY_LEN]) -> Result<Aes256Gcm, SecretError> {
    // Cannot fail for a 32-byte key; mapped rather than unwrapped all the same.
    Aes256Gcm::new_from_slice(key).map_err(|_| SecretError::Malformed("key length".into()))
}

fn nonce(bytes: &[u8], what: &str) -> Result<Nonce<Aes256Gcm>, SecretError> {
    Nonce::<Aes256Gcm>::try_from(bytes).map_err(|_| {
        SecretError::Malformed(format!(
            "{what} nonce has {} bytes, expected {NONCE_LEN}",
            bytes.len()
        ))
    })
}

/// Encrypts `plaintext` under a fresh random data key, and the data key under `master`.
///
/// `aad` must name the value's identity (see [`crate::aad`]); [`open`] needs the same bytes,
/// so a ciphertext moved to another secret or version does not open. Two seals of the same
/// plaintext give unrelated bytes (fresh key and nonces each time).
pub fn seal(master: &MasterKey, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, SecretError> {
    let mut dek = Zeroizing::new([0u8; KEY_LEN]);
    random(dek.as_mut_slice())?;
    let mut value_nonce = [0u8; NONCE_LEN];
    random(&mut value_nonce)?;
    let ciphertext = cipher(&dek)?
        .encrypt(
            &nonce(&value_nonce, "value")?,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| SecretError::Malformed("value too long to encrypt".into()))?;
    Ok(Sealed {
        key_id: master.key_id().to_string(),
        wrapped_dek: wrap(master, &dek)?,
        nonce: value_nonce.to_vec(),
        ciphertext,
    })
}

/// Decrypts a sealed value.
///
/// Errors, before anything is decrypted: [`SecretError::WrongMasterKey`] when `sealed` was made
/// under another master key, [`SecretError::Malformed`] for wrong lengths. Then
/// [`SecretError::Decrypt`] when a tag does not verify: altered bytes, or `aad` not the one
/// the value was sealed with. The plaintext is zeroized when the returned buffer drops.
pub fn open(
    master: &MasterKey,
    sealed: &Sealed,
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SecretError> {
    let dek = unwrap_dek(master, sealed)?;
    let value_nonce = nonce(&sealed.nonce, "value")?;
    let plaintext = cipher(&dek)?
        .decrypt(
            &value_nonce,
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map_err(|_| SecretError::Decrypt { part: "value" })?;
    Ok(Zeroizing::new(plaintext))
}

/// Re-wraps the data key of `sealed` from `old` to `new` (master-key rotation). The value's
/// nonce and ciphertext are returned unchanged: only [`Sealed::key_id`] and
/// [`Sealed::wrapped_dek`] differ. Fails like [`open`] if `old` is not the key of `sealed`.
pub fn rewrap(old: &MasterKey, new: &MasterKey, sealed: &Sealed) -> Result<Sealed, SecretError> {
    let dek = unwrap_dek(old, sealed)?;
    Ok(Sealed {
        key_id: new.key_id().to_string(),
        wrapped_dek: wrap(new, &dek)?,
        nonce: sealed.nonce.clone(),
        ciphertext: sealed.ciphertext.clone(),
    })
}

fn wrap(master: &MasterKey, dek: &[u8; KEY_LEN]) -> Result<Vec<u8>, SecretError> {
    let mut dek_nonce = [0u8; NONCE_LEN];
    random(&mut dek_nonce)?;
    let encrypted = cipher(master.bytes())?
        .encrypt(
            &nonce(&dek_nonce, "data key")?,
            Payload {
                msg: dek,
                aad: DEK_AAD,
            },
        )
        .map_err(|_| SecretError::Malformed("cannot wrap the data key".into()))?;
    let mut out = Vec::with_capacity(WRAPPED_DEK_LEN);
    out.extend_from_slice(&dek_nonce);
    out.extend_from_slice(&encrypted);
    Ok(out)
}

fn unwrap_dek(
    master: &MasterKey,
    sealed: &Sealed,
) -> Result<Zeroizing<[u8; KEY_LEN]>, SecretError> {
    // Key ids are public, so the constant-time compare is not needed for secrecy; it is used
    // so that no comparison on key material paths ever becomes a timing oracle by habit.
    let same_key: bool = sealed
        .key_id
        .as_bytes()
        .ct_eq(master.key_id().as_bytes())
        .into();
    if !same_key {
        return Err(SecretError::WrongMasterKey {
            expected: sealed.key_id.clone(),
            found: master.key_id().to_string(),
        });
    }
    if sealed.wrapped_dek.len() != WRAPPED_DEK_LEN {
        return Err(SecretError::Malformed(format!(
            "wrapped data key has {} bytes, expected {WRAPPED_DEK_LEN}",
            sealed.wrapped_dek.len()
        )));
    }
    let (dek_nonce, encrypted) = sealed.wrapped_dek.split_at(NONCE_LEN);
    let dek = Zeroizing::new(
        cipher(master.bytes())?
            .decrypt(
                &nonce(dek_nonce, "data key")?,
                Payload {
                    msg: encrypted,
                    aad: DEK_AAD,
                },
            )
            .map_err(|_| SecretError::Decrypt { part: "data key" })?,
    );
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    if dek.len() != KEY_LEN {
        return Err(SecretError::Malformed("data key length".into()));
    }
    out.copy_from_slice(&dek);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SecretScope, aad};

    fn id() -> Vec<u8> {
        aad(&SecretScope::app("prod", "api"), "database_password", 3)
    }

    #[test]
    fn round_trip() {
        let master = MasterKey::generate().unwrap();
        for value in [
            &b""[..],
            b"x",
            b"correct horse battery staple",
            &[0u8; 10_000],
        ] {
            let sealed = seal(&master, value, &id()).unwrap();
            assert_eq!(sealed.key_id, master.key_id());
            assert_eq!(sealed.wrapped_dek.len(), WRAPPED_DEK_LEN);
            assert_eq!(sealed.nonce.len(), NONCE_LEN);
            assert_eq!(sealed.ciphertext.len(), value.len() + TAG_LEN);
            assert_eq!(open(&master, &sealed, &id()).unwrap().as_slice(), value);
        }
    }

    #[test]
    fn sealing_the_same_value_twice_gives_different_bytes() {
        let master = MasterKey::generate().unwrap();
        let a = seal(&master, b"same value", &id()).unwrap();
        let b = seal(&master, b"same value", &id()).unwrap();
        assert_ne!(a.ciphertext, b.ciphertext);
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.wrapped_dek, b.wrapped_dek);
    }

    #[test]
    fn ciphertext_does_not_contain_the_plaintext() {
        let master = MasterKey::generate().unwrap();
        let value = b"plaintext-marker-7d1e";
        let sealed = seal(&master, value, &id()).unwrap();
        for bytes in [&sealed.ciphertext, &sealed.wrapped_dek] {
            assert!(!bytes.windows(8).any(|w| value.windows(8).any(|v| v == w)));
        }
    }

    #[test]
    fn wrong_master_key_is_named_and_nothing_is_decrypted() {
        let right = MasterKey::generate().unwrap();
        let wrong = MasterKey::generate().unwrap();
        let sealed = seal(&right, b"secret", &id()).unwrap();
        let err = open(&wrong, &sealed, &id()).unwrap_err();
        match &err {
            SecretError::WrongMasterKey { expected, found } => {
                assert_eq!(expected, right.key_id());
                assert_eq!(found, wrong.key_id());
            }
            other => panic!("expected WrongMasterKey, got {other}"),
        }
        assert!(err.to_string().contains(right.key_id()), "{err}");
        // The id check comes first: even a forged key id with a wrong key fails on the tag,
        // not by returning garbage.
        let mut forged = sealed.clone();
        forged.key_id = wrong.key_id().to_string();
        assert!(matches!(
            open(&wrong, &forged, &id()),
            Err(SecretError::Decrypt { part: "data key" })
        ));
    }

    #[test]
    fn tampering_with_any_part_fails_without_revealing_the_value() {
        let master = MasterKey::generate().unwrap();
        let value = b"hunter2-tamper";
        let sealed = seal(&master, value, &id()).unwrap();
        let mut cases: Vec<(&str, Sealed, Vec<u8>)> = Vec::new();
        let mut s = sealed.clone();
        s.ciphertext[0] ^= 1;
        cases.push(("ciphertext", s, id()));
        let mut s = sealed.clone();
        let last = s.ciphertext.len() - 1;
        s.ciphertext[last] ^= 0x80;
        cases.push(("tag", s, id()));
        let mut s = sealed.clone();
        s.wrapped_dek[NONCE_LEN + 3] ^= 1;
        cases.push(("wrapped key", s, id()));
        let mut s = sealed.clone();
        s.wrapped_dek[0] ^= 1;
        cases.push(("wrapped key nonce", s, id()));
        let mut s = sealed.clone();
        s.nonce[5] ^= 1;
        cases.push(("value nonce", s, id()));
        cases.push((
            "aad of another version",
            sealed.clone(),
            aad(&SecretScope::app("prod", "api"), "database_password", 4),
        ));
        cases.push((
            "aad of another scope",
            sealed.clone(),
            aad(&SecretScope::env("prod"), "database_password", 3),
        ));
        for (what, s, aad) in cases {
            let err = open(&master, &s, &aad).unwrap_err();
            assert!(matches!(err, SecretError::Decrypt { .. }), "{what}: {err}");
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{what}: {text}");
        }
        let mut short = sealed.clone();
        short.wrapped_dek.truncate(10);
        assert!(matches!(
            open(&master, &short, &id()),
            Err(SecretError::Malformed(_))
        ));
        let mut short = sealed;
        short.nonce.pop();
        assert!(matches!(
            open(&master, &short, &id()),
            Err(SecretError::Malformed(_))
        ));
    }

    #[test]
    fn swapping_data_keys_between_values_fails() {
        let master = MasterKey::generate().unwrap();
        let a = seal(&master, b"value a", &id()).unwrap();
        let b = seal(&master, b"value b", &id()).unwrap();
        let mut mixed = a.clone();
        mixed.wrapped_dek = b.wrapped_dek.clone();
        assert!(matches!(
            open(&master, &mixed, &id()),
            Err(SecretError::Decrypt { part: "value" })
        ));
    }

    #[test]
    fn rewrap_changes_only_the_data_key_and_opens_with_the_new_key() {
        let old = MasterKey::generate().unwrap();
        let new = MasterKey::generate().unwrap();
        let sealed = seal(&old, b"rotate me", &id()).unwrap();
        let rewrapped = rewrap(&old, &new, &sealed).unwrap();
        assert_eq!(rewrapped.ciphertext, sealed.ciphertext, "value untouched");
        assert_eq!(rewrapped.nonce, sealed.nonce);
        assert_ne!(rewrapped.wrapped_dek, sealed.wrapped_dek);
        assert_eq!(rewrapped.key_id, new.key_id());
        assert_eq!(
            open(&new, &rewrapped, &id()).unwrap().as_slice(),
            b"rotate me"
        );
        assert!(matches!(
            open(&old, &rewrapped, &id()),
            Err(SecretError::WrongMasterKey { .. })
        ));
        // Rewrapping with a key that is not the sealing key fails the same way as open.
        assert!(matches!(
            rewrap(&new, &old, &sealed),
            Err(SecretError::WrongMasterKey { .. })
        ));
    }

    #[test]
    fn sealed_debug_shows_no_bytes() {
        let master = MasterKey::generate().unwrap();
        let sealed = seal(&master, b"v", &id()).unwrap();
        let shown = format!("{sealed:?}");
        assert!(shown.contains(master.key_id()) && shown.contains("ciphertext_len: 17"));
        assert!(!shown.contains(&hex::encode(&sealed.ciphertext)));
    }
}
