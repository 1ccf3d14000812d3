//! The master key: 32 bytes that wrap every data key. It comes from a key file (mode 0600 or
//! stricter) or an environment variable, never from the database, and is identified in stored
//! rows by a public [`MasterKey::key_id`] so that a wrong key is recognised before decrypting.

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::SecretError;

/// Length of a master key in bytes (AES-256).
pub const KEY_LEN: usize = 32;

/// A master key. Its bytes are zeroized on drop and never printed: `Debug` shows the key id.
///
/// Not `Clone` on purpose, so that copies of the key bytes do not spread through memory;
/// share it behind an `Arc`.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: String,
}

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        let bytes = Zeroizing::new(bytes);
        let digest = Sha256::digest(bytes.as_slice());
        MasterKey {
            id: hex::encode(&digest[..8]),
            bytes,
        }
    }

    /// A new random key from the operating system's random source.
    pub fn generate() -> Result<MasterKey, SecretError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        crate::random(bytes.as_mut_slice())?;
        Ok(MasterKey::from_bytes(*bytes))
    }

    /// Parses the text form: 32 bytes as 64 hex digits or as standard base64 (padding
    /// optional), on one line; surrounding whitespace (a trailing newline) is ignored.
    /// `origin` names where the text came from, for the error message only.
    pub fn parse(text: &str, origin: &str) -> Result<MasterKey, SecretError> {
        let invalid = |reason: &str| SecretError::InvalidKey {
            origin: origin.to_string(),
            reason: reason.to_string(),
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if text.contains(['\n', '\r']) {
            return Err(invalid("expected one line"));
        }
        // Hex is tried first: a hex string is also valid base64 (of other lengths), so the
        // other order would reject every hex key as "48 bytes". Base64 of 32 bytes is 43 or 44
        // characters, an odd length or ending in '=', so it is never taken for hex.
        let decoded: Zeroizing<Vec<u8>> =
            if text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
                Zeroizing::new(hex::decode(text).map_err(|_| invalid("bad hex"))?)
            } else {
                let engine = base64::engine::GeneralPurpose::new(
                    &base64::alphabet::STANDARD,
                    base64::engine::GeneralPurposeConfig::new()
                        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
                );
                Zeroizing::new(
                    engine
                        .decode(text)
                        .map_err(|_| invalid("expected 32 bytes as 64 hex digits or as base64"))?,
                )
            };
        let bytes: [u8; KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            invalid(&format!(
                "it decodes to {} bytes, a master key has {KEY_LEN}",
                decoded.len()
            ))
        })?;
        let key = MasterKey::from_bytes(bytes);
        // `bytes` is a Copy array on the stack; clear this copy too.
        let mut bytes = bytes;
        zeroize::Zeroize::zeroize(&mut bytes);
        Ok(key)
    }

    /// Loads the key from a file written by [`MasterKey::write_new`] or by hand (hex or base64,
    /// one line). Refuses a file that group or others may access (`mode & 0o077 != 0`): a key
    /// readable by other users protects nothing.
    pub fn from_file(path: &Path) -> Result<MasterKey, SecretError> {
        let io = |error| SecretError::Io {
            path: path.display().to_string(),
            error,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        // Checked on the open file, not the path, so the file read is the file checked.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretError::KeyFilePermissions {
                    path: path.display().to_string(),
                    mode,
                });
            }
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text).map_err(io)?;
        MasterKey::parse(&text, &format!("file {}", path.display()))
    }

    /// Loads the key from the environment variable `var` (hex or base64, as for files).
    pub fn from_env(var: &str) -> Result<MasterKey, SecretError> {
        match std::env::var_os(var) {
            None => Err(SecretError::KeyEnvMissing {
                var: var.to_string(),
            }),
            Some(value) => {
                let value =
                    Zeroizing::new(value.into_string().map_err(|_| SecretError::InvalidKey {
                        origin: format!("environment variable {var}"),
                        reason: "not valid UTF-8".to_string(),
                    })?);
                MasterKey::parse(&value, &format!("environment variable {var}"))
            }
        }
    }

    /// Writes this key to a new file, hex on one line, with mode 0600. Fails if the file
    /// exists: overwriting a master key would make every stored secret unreadable.
    pub fn write_new(&self, path: &Path) -> Result<(), SecretError> {
        let io = |error| SecretError::Io {
            path: path.display().to_string(),
            error,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let mut text = Zeroizing::new(hex::encode(self.bytes.as_slice()));
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io)?;
        // A key that is lost in a crash after secrets were sealed with it loses those secrets.
        file.sync_all().map_err(io)?;
        Ok(())
    }

    /// The public id of this key: the first 8 bytes of SHA-256 of the key, in hex (16
    /// characters). Stored beside every wrapped data key.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("key_id", &self.id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variable the child test process reads; set only by the parent test.
    const CHILD_VAR: &str = "ROLLGATE_SECRETS_TEST_MASTER_KEY";

    #[test]
    fn key_id_is_first_8_bytes_of_sha256_in_hex() {
        let key = MasterKey::from_bytes([7u8; 32]);
        let digest = Sha256::digest([7u8; 32]);
        assert_eq!(key.key_id(), hex::encode(&digest[..8]));
        assert_eq!(key.key_id().len(), 16);
        assert_ne!(
            MasterKey::from_bytes([8u8; 32]).key_id(),
            key.key_id(),
            "different keys, different ids"
        );
    }

    #[test]
    fn debug_shows_the_key_id_and_never_the_key_bytes() {
        let bytes = [0xabu8; 32];
        let key = MasterKey::from_bytes(bytes);
        let shown = format!("{key:?} {key:#?}");
        assert!(shown.contains(key.key_id()), "{shown}");
        assert!(!shown.contains(&hex::encode(bytes)), "{shown}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(!shown.contains("171"), "decimal key bytes leaked: {shown}");
    }

    #[test]
    fn parses_hex_and_base64_and_rejects_other_lengths() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8);
        let id = MasterKey::from_bytes(bytes).key_id().to_string();
        let hex_text = format!("{}\n", hex::encode(bytes));
        assert_eq!(MasterKey::parse(&hex_text, "t").unwrap().key_id(), id);
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert_eq!(MasterKey::parse(&b64, "t").unwrap().key_id(), id);
        assert_eq!(
            MasterKey::parse(b64.trim_end_matches('='), "t")
                .unwrap()
                .key_id(),
            id
        );
        let short = MasterKey::parse(&hex::encode([1u8; 16]), "file k").unwrap_err();
        assert!(
            short.to_string().contains("16 bytes") && short.to_string().contains("file k"),
            "{short}"
        );
        assert!(MasterKey::parse("", "t").is_err());
        assert!(MasterKey::parse("not a key!", "t").is_err());
        assert!(MasterKey::parse(&format!("{b64}\n{b64}"), "t").is_err());
    }

    #[test]
    fn generated_key_written_with_mode_0600_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let key = MasterKey::generate().unwrap();
        key.write_new(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        assert_eq!(MasterKey::from_file(&path).unwrap().key_id(), key.key_id());
        // Never overwrite a key: the secrets sealed with it would be lost.
        let other = MasterKey::generate().unwrap();
        let err = other.write_new(&path).unwrap_err();
        assert!(
            matches!(&err, SecretError::Io { error, .. } if error.kind() == std::io::ErrorKind::AlreadyExists),
            "{err}"
        );
        assert_eq!(MasterKey::from_file(&path).unwrap().key_id(), key.key_id());
        assert_ne!(other.key_id(), key.key_id());
    }

    #[cfg(unix)]
    #[test]
    fn key_file_readable_by_group_or_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        MasterKey::generate().unwrap().write_new(&path).unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644, 0o610] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = MasterKey::from_file(&path).unwrap_err();
            assert!(
                matches!(err, SecretError::KeyFilePermissions { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        MasterKey::from_file(&path).unwrap();
    }

    #[test]
    fn missing_key_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.key");
        let err = MasterKey::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("absent.key"), "{err}");
    }

    #[test]
    fn missing_env_var_is_a_clear_error() {
        let err = MasterKey::from_env("ROLLGATE_SECRETS_TEST_SURELY_UNSET").unwrap_err();
        assert!(
            matches!(err, SecretError::KeyEnvMissing { ref var } if var == "ROLLGATE_SECRETS_TEST_SURELY_UNSET"),
            "{err}"
        );
    }

    /// Setting a variable in this process is `unsafe` (other threads read the environment),
    /// so the key is given to a child: this test binary itself, running
    /// [`child_reads_key_from_env`] with the variable set.
    #[test]
    fn key_from_environment_variable() {
        let bytes = [0x5au8; 32];
        let expected = MasterKey::from_bytes(bytes).key_id().to_string();
        for text in [
            hex::encode(bytes),
            base64::engine::general_purpose::STANDARD.encode(bytes),
        ] {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "key::tests::child_reads_key_from_env",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CHILD_VAR, &text)
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{stdout}");
            assert!(stdout.contains(&format!("key_id={expected}")), "{stdout}");
            assert!(
                stdout.contains("1 passed"),
                "the child test did not run: {stdout}"
            );
        }
    }

    #[test]
    #[ignore = "run by key_from_environment_variable with the variable set"]
    fn child_reads_key_from_env() {
        let key = MasterKey::from_env(CHILD_VAR).unwrap();
        println!("key_id={}", key.key_id());
    }
}
