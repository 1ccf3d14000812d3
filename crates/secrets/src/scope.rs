//! Where a secret lives and which of its versions is meant: the scope (environment, and
//! optionally app), the stages of the rotation model, and the associated data that binds a
//! ciphertext to its identity.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::SecretError;

/// Where a secret lives: an environment, and within it either one app or (with `app: None`)
/// every app of the environment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SecretScope {
    pub env: String,
    /// `None`: environment-wide, visible to every app of `env`.
    pub app: Option<String>,
}

impl SecretScope {
    /// An environment-wide scope.
    pub fn env(env: impl Into<String>) -> SecretScope {
        SecretScope {
            env: env.into(),
            app: None,
        }
    }

    /// The scope of one app in one environment.
    pub fn app(env: impl Into<String>, app: impl Into<String>) -> SecretScope {
        SecretScope {
            env: env.into(),
            app: Some(app.into()),
        }
    }
}

impl fmt::Display for SecretScope {
    /// `prod/api`, or `prod/*` for an environment-wide scope.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.env, self.app.as_deref().unwrap_or("*"))
    }
}

/// A stage label of a secret, as in the AWS Secrets Manager rotation model (`AWSCURRENT`,
/// `AWSPENDING`, `AWSPREVIOUS`). Each stage points at most at one version of a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The value in use: what instances get.
    Current,
    /// A new value under rotation, not yet verified; becomes `current` when promoted.
    Pending,
    /// The value `current` had before the last change; kept so a rotation can be undone and
    /// so that instances still running with it can be identified.
    Previous,
}

impl Stage {
    /// All stages, in display order.
    pub const ALL: [Stage; 3] = [Stage::Current, Stage::Pending, Stage::Previous];

    /// The stored and displayed name: `current`, `pending`, `previous`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Current => "current",
            Stage::Pending => "pending",
            Stage::Previous => "previous",
        }
    }

    /// The inverse of [`Stage::as_str`].
    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|stage| stage.as_str() == s)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which version of a secret to read: the one a stage points at, or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selector {
    Stage(Stage),
    Version(u64),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Stage(s) => write!(f, "{s}"),
            Selector::Version(v) => write!(f, "v{v}"),
        }
    }
}

/// Checks a secret name: 1 to 128 characters of `A-Z a-z 0-9 _ . -`. Names become file names
/// and (upper-cased) environment variable names at injection, so nothing else is allowed.
pub fn validate_name(name: &str) -> Result<(), SecretError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SecretError::InvalidName(name.to_string()))
    }
}

/// The associated data of a secret's value: `rollgate-secret/v1/<env>/<app or *>/<name>/<version>`,
/// length-prefixed per part so that no two identities share a byte string.
///
/// Sealing with it binds the ciphertext to the secret and version it was made for: a row copied
/// to another secret, scope or version fails to open instead of yielding the wrong value.
pub fn aad(scope: &SecretScope, name: &str, version: u64) -> Vec<u8> {
    let version = version.to_string();
    let parts: [&[u8]; 4] = [
        scope.env.as_bytes(),
        // A 0xff byte cannot occur in UTF-8, so env-wide never equals an app named "*".
        scope.app.as_deref().map_or(&[0xff][..], str::as_bytes),
        name.as_bytes(),
        version.as_bytes(),
    ];
    let mut out = b"rollgate-secret/v1".to_vec();
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
        }
        assert_eq!(Stage::parse("AWSCURRENT"), None);
    }

    #[test]
    fn scope_displays_env_wide_as_star() {
        assert_eq!(SecretScope::env("prod").to_string(), "prod/*");
        assert_eq!(SecretScope::app("prod", "api").to_string(), "prod/api");
    }

    #[test]
    fn names_are_restricted_to_safe_characters() {
        for ok in ["database_password", "api-key", "tls.crt", "A1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "../x", "é", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn aad_differs_for_every_part_of_the_identity() {
        let base = aad(&SecretScope::app("prod", "api"), "db", 1);
        for other in [
            aad(&SecretScope::app("prod", "api"), "db", 2),
            aad(&SecretScope::app("prod", "api"), "dbx", 1),
            aad(&SecretScope::app("prod", "web"), "db", 1),
            aad(&SecretScope::app("staging", "api"), "db", 1),
            aad(&SecretScope::env("prod"), "db", 1),
            aad(&SecretScope::app("prod", "*"), "db", 1),
            // Shifting a boundary between parts must not give the same bytes.
            aad(&SecretScope::app("prod", "ap"), "idb", 1),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(base, aad(&SecretScope::app("prod", "api"), "db", 1));
    }
}
