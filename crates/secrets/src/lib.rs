//! Envelope encryption of rollgate's secrets, and the words the rest of rollgate uses for them.
//!
//! Every value is encrypted under its own random data key (AES-256-GCM); the data key is
//! encrypted ("wrapped") under the [`MasterKey`], which comes from a key file or an
//! environment variable and never from the database. The database therefore holds only
//! [`Sealed`] bytes, and rotating the master key ([`rewrap`]) re-encrypts 60-byte data keys
//! without touching any value.
//!
//! - [`key`]: the master key: loading (file with strict permissions, or environment variable),
//!   generation, its public id.
//! - [`envelope`]: [`seal`], [`open`], [`rewrap`] and the [`Sealed`] form.
//! - [`scope`]: where a secret lives ([`SecretScope`]), its stages ([`Stage`]) and the
//!   associated data that binds a ciphertext to its identity ([`aad`]).
//! - [`redact`]: keeping values out of logs and listings ([`Redacted`], [`mask`]).
//!
//! This crate depends on nothing else of rollgate's, so the store can depend on it.

pub mod envelope;
pub mod key;
pub mod redact;
pub mod scope;

pub use envelope::{Sealed, open, rewrap, seal};
pub use key::MasterKey;
pub use redact::{Redacted, mask};
pub use scope::{SecretScope, Selector, Stage, aad, validate_name};

/// Errors of key handling and encryption. None of them ever carries key bytes or a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The value was sealed under another master key. Detected from the key ids alone, before
    /// any decryption is tried, so a wrong key fails fast and clearly.
    #[error(
        "this secret was sealed with master key {expected}, but the loaded master key is {found}; \
         start rollgate with the master key that was used to store it"
    )]
    WrongMasterKey { expected: String, found: String },
    /// Authentication failed: the stored bytes were altered, or belong to another secret.
    #[error(
        "cannot decrypt the {part} of this secret: the stored bytes were altered or belong to another secret"
    )]
    Decrypt { part: &'static str },
    /// A sealed value has the wrong shape (lengths), e.g. a corrupt database row.
    #[error("malformed sealed secret: {0}")]
    Malformed(String),
    /// A master key text that is not 32 bytes in hex or base64.
    #[error("invalid master key in {origin}: {reason}")]
    InvalidKey { origin: String, reason: String },
    /// The key file may be read by group or others.
    #[error(
        "master key file {path} has mode {mode:03o}; it must not be accessible to group or others \
         (run: chmod 600 {path})"
    )]
    KeyFilePermissions { path: String, mode: u32 },
    /// The environment variable that should hold the master key is not set.
    #[error("the environment variable {var} that should hold the master key is not set")]
    KeyEnvMissing { var: String },
    #[error("{path}: {error}")]
    Io {
        path: String,
        #[source]
        error: std::io::Error,
    },
    /// The operating system's random source failed.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
    /// A secret name outside the allowed characters.
    #[error("invalid secret name {0:?}: use 1 to 128 of A-Z a-z 0-9 _ . -")]
    InvalidName(String),
}

/// Fills `buf` from the operating system's random source.
pub(crate) fn random(buf: &mut [u8]) -> Result<(), SecretError> {
    getrandom::fill(buf).map_err(|e| SecretError::Random(e.to_string()))
}
