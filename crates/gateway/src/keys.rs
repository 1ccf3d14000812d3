//! Where the auth phase finds a key's material: the [`KeySource`] trait (implemented by
//! rollgate's secret store in the control plane, and here by [`StaticKeys`]), the
//! [`KeyMaterial`] it hands out, and the loading of the keys that `rollgate.toml` references
//! (environment variables and a key file with mode 0600). Secrets never appear in `Debug`
//! output, errors or logs, and are cleared from memory when dropped.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rollgate_core::config::ConfigErrors;
use rollgate_core::config::edge::{AuthConfig, KeyUse, parse_keys_file};
use rollgate_core::signing::{api_key, api_key_sha256};
use rustc_hash::FxHashMap;
use zeroize::Zeroizing;

/// Shortest secret accepted, in bytes: shorter ones can be guessed.
pub const MIN_SECRET_LEN: usize = 16;

/// The material of one key: the SHA-256 of its API key and/or its HMAC secret. Either may be
/// absent (a key only for signatures has no API key hash, and one stored only as a hash
/// cannot sign). Cleared from memory on drop; `Debug` shows only which parts are present.
#[derive(Clone, Default)]
pub struct KeyMaterial {
    api_key_sha256: Option<Zeroizing<[u8; 32]>>,
    hmac_secret: Option<Zeroizing<Vec<u8>>>,
}

impl KeyMaterial {
    /// Material from its parts: the SHA-256 of the full API key `rg_<id>_<secret>`, and the
    /// secret whose bytes are the HMAC-SHA256 key.
    pub fn new(api_key_sha256: Option<[u8; 32]>, hmac_secret: Option<Vec<u8>>) -> Self {
        KeyMaterial {
            api_key_sha256: api_key_sha256.map(Zeroizing::new),
            hmac_secret: hmac_secret.map(Zeroizing::new),
        }
    }

    /// Material of key `id` with `secret`, for the uses `usage` allows: the API key
    /// `rg_<id>_<secret>` is kept only as its hash.
    pub fn from_secret(id: &str, secret: &str, usage: KeyUse) -> Self {
        let hash = matches!(usage, KeyUse::Both | KeyUse::ApiKey).then(|| {
            let key = Zeroizing::new(api_key(id, secret));
            api_key_sha256(&key)
        });
        let hmac =
            matches!(usage, KeyUse::Both | KeyUse::Signature).then(|| secret.as_bytes().to_vec());
        KeyMaterial::new(hash, hmac)
    }

    /// SHA-256 of the key's API key, if it may be used as one.
    pub fn api_key_sha256(&self) -> Option<&[u8; 32]> {
        self.api_key_sha256.as_deref()
    }

    /// The HMAC-SHA256 key, if the key may sign.
    pub fn hmac_secret(&self) -> Option<&[u8]> {
        self.hmac_secret.as_deref().map(Vec::as_slice)
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("api_key", &self.api_key_sha256.as_ref().map(|_| "<sha256>"))
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Looks up keys by id for the auth phase. Called on the request path, so it must answer
/// from memory (a cache), never wait on I/O. The control plane's secret store implements it;
/// [`StaticKeys`] holds the keys `rollgate.toml` references.
pub trait KeySource: Send + Sync {
    /// The material of key `key_id`, or `None` when there is no such key.
    fn key(&self, key_id: &str) -> Option<KeyMaterial>;
}

/// Why the keys referenced by `[env.NAME.edge.auth]` could not be loaded. Never carries a
/// secret.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A `keys` entry names an environment variable that is not set (or not UTF-8).
    #[error("{origin}: environment variable {var} is not set")]
    MissingEnv {
        /// `FILE: KEY` of the entry.
        origin: String,
        /// The variable.
        var: String,
    },
    /// A secret is shorter than [`MIN_SECRET_LEN`].
    #[error("{origin}: the secret is shorter than {MIN_SECRET_LEN} characters")]
    ShortSecret {
        /// `FILE: KEY` of the entry.
        origin: String,
    },
    /// The key file cannot be read.
    #[error("{}: cannot read the key file: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The key file can be read by users other than its owner.
    #[error(
        "{}: mode {mode:04o} lets group or others read the keys; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file has errors (each naming the file and the key).
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The same key id is both in `keys` and in the key file.
    #[error("{}: key id {id:?} is also configured in rollgate.toml's `keys`", path.display())]
    Duplicate {
        /// The key file.
        path: PathBuf,
        /// The id.
        id: String,
    },
}

/// Keys held in memory: those `rollgate.toml` references, or any given to [`StaticKeys::insert`].
#[derive(Default)]
pub struct StaticKeys {
    /// Hashed with FxHash: built once from the configuration, never grown by clients (a
    /// client's key id is only looked up).
    keys: FxHashMap<String, KeyMaterial>,
}

impl fmt::Debug for StaticKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("StaticKeys").field("ids", &ids).finish()
    }
}

impl StaticKeys {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces key `id`.
    pub fn insert(&mut self, id: &str, material: KeyMaterial) {
        self.keys.insert(id.to_owned(), material);
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Loads the keys `auth` references: each `keys` entry from its environment variable, and
    /// every `[[key]]` of `keys_file`, which must not be readable by group or others.
    pub fn load(auth: &AuthConfig) -> Result<StaticKeys, KeyError> {
        Self::load_with(auth, |var| std::env::var(var).ok())
    }

    /// [`StaticKeys::load`] with `env` as the environment.
    pub fn load_with(
        auth: &AuthConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<StaticKeys, KeyError> {
        let mut keys = StaticKeys::new();
        for key in &auth.keys {
            let secret =
                Zeroizing::new(env(&key.secret_env).ok_or_else(|| KeyError::MissingEnv {
                    origin: key.origin.clone(),
                    var: key.secret_env.clone(),
                })?);
            if secret.len() < MIN_SECRET_LEN {
                return Err(KeyError::ShortSecret {
                    origin: key.origin.clone(),
                });
            }
            keys.insert(
                &key.id,
                KeyMaterial::from_secret(&key.id, &secret, key.usage),
            );
        }
        if let Some(path) = &auth.keys_file {
            for entry in read_keys_file(path)? {
                if keys.keys.contains_key(&entry.id) {
                    return Err(KeyError::Duplicate {
                        path: path.clone(),
                        id: entry.id.clone(),
                    });
                }
                let material = KeyMaterial::from_secret(&entry.id, &entry.secret, entry.usage);
                keys.insert(&entry.id, material);
            }
        }
        Ok(keys)
    }
}

impl KeySource for StaticKeys {
    fn key(&self, key_id: &str) -> Option<KeyMaterial> {
        self.keys.get(key_id).cloned()
    }
}

/// Reads a key file after checking that only its owner can read it.
fn read_keys_file(path: &Path) -> Result<Vec<rollgate_core::config::edge::KeyFileEntry>, KeyError> {
    let read_err = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mode = file.metadata().map_err(read_err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = Zeroizing::new(std::io::read_to_string(file).map_err(read_err)?);
    parse_keys_file(&text, &path.display().to_string()).map_err(KeyError::Invalid)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    use rollgate_core::config::edge::KeyRef;

    use super::*;

    fn keys_file(dir: &Path, mode: u32, text: &str) -> PathBuf {
        let path = dir.join("keys.toml");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .expect("create key file");
        f.write_all(text.as_bytes()).expect("write key file");
        path
    }

    #[test]
    fn keys_come_from_the_environment_and_the_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = keys_file(
            dir.path(),
            0o600,
            "[[key]]\nid = \"file-key\"\nsecret = \"0123456789abcdef-file\"\nuse = \"signature\"\n",
        );
        let auth = AuthConfig {
            keys: vec![KeyRef {
                id: "env-key".into(),
                secret_env: "TEST_KEY".into(),
                usage: KeyUse::Both,
                origin: "r.toml: env.e.edge.auth.keys[0].secret_env".into(),
            }],
            keys_file: Some(file),
            ..AuthConfig::default()
        };
        let keys = StaticKeys::load_with(&auth, |v| {
            (v == "TEST_KEY").then(|| "0123456789abcdef-env".to_owned())
        })
        .expect("keys load");
        assert_eq!(keys.len(), 2);
        let env_key = keys.key("env-key").expect("env key");
        assert_eq!(
            env_key.api_key_sha256(),
            Some(&api_key_sha256("rg_env-key_0123456789abcdef-env"))
        );
        assert_eq!(env_key.hmac_secret(), Some(&b"0123456789abcdef-env"[..]));
        let file_key = keys.key("file-key").expect("file key");
        assert_eq!(file_key.api_key_sha256(), None);
        assert!(file_key.hmac_secret().is_some());
        // Debug output never shows secrets.
        let shown = format!("{env_key:?} {keys:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");

        let missing = StaticKeys::load_with(&auth, |_| None).expect_err("unset variable");
        assert_eq!(
            missing.to_string(),
            "r.toml: env.e.edge.auth.keys[0].secret_env: environment variable TEST_KEY is not set"
        );
        let short = StaticKeys::load_with(&auth, |_| Some("short".into())).expect_err("short");
        assert!(short.to_string().contains("shorter than 16"), "{short}");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = keys_file(dir.path(), 0o644, "");
        let auth = AuthConfig {
            keys_file: Some(file.clone()),
            ..AuthConfig::default()
        };
        let err = StaticKeys::load_with(&auth, |_| None).expect_err("mode 0644");
        assert_eq!(
            err.to_string(),
            format!(
                "{}: mode 0644 lets group or others read the keys; run `chmod 600 {}`",
                file.display(),
                file.display()
            )
        );
    }

    #[test]
    fn key_file_errors_name_the_file_and_key_but_never_the_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = keys_file(
            dir.path(),
            0o600,
            "[[key]]\nid = \"a_b\"\nsecret = \"tooshort\"\ncolour = 1\n[[key]]\nsecret = \"0123456789abcdef\"\n",
        );
        let auth = AuthConfig {
            keys_file: Some(file.clone()),
            ..AuthConfig::default()
        };
        let shown = StaticKeys::load_with(&auth, |_| None)
            .expect_err("invalid")
            .to_string();
        let f = file.display();
        for needle in [
            format!("{f}: key[0].id: expected 1 to 64 of A-Z a-z 0-9 '-'"),
            format!("{f}: key[0].secret: expected a secret of at least 16 characters"),
            format!("{f}: key[0].colour: unknown key"),
            format!("{f}: key[1].id: expected the key id"),
        ] {
            assert!(shown.contains(&needle), "missing {needle:?} in {shown}");
        }
        assert!(!shown.contains("tooshort") && !shown.contains("0123456789abcdef"));
    }
}
