//! The gateway's API keys and HMAC secrets from rollgate's secret store: every env-wide secret
//! of an environment named `edge-key.<id>` is key `<id>` of that environment's gateway (usable
//! as an API key and for signatures).
//!
//! The gateway asks for keys on the request path, so it must answer from memory: this source
//! keeps the keys' material in a map and [`SecretKeys::refresh`] re-reads only the secrets whose
//! current version changed (a rotation), so the audit trail records a read per change, not per
//! refresh. Values live here only as the hashes and HMAC keys the gateway needs, zeroized on drop.

use std::collections::HashMap;
use std::sync::RwLock;

use rollgate_core::config::edge::KeyUse;
use rollgate_gateway::{KeyMaterial, KeySource};
use rollgate_secrets::{SecretScope, Selector, Stage};
use rollgate_store::SecretFilter;

use crate::secrets::{SecretService, SecretsError};

/// The name prefix of secrets that are gateway keys.
pub const PREFIX: &str = "edge-key.";

/// Keys of one environment's gateway, from the secret store.
pub struct SecretKeys {
    env: String,
    keys: RwLock<HashMap<String, (u64, KeyMaterial)>>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<String> = self.read().keys().cloned().collect();
        f.debug_struct("SecretKeys")
            .field("env", &self.env)
            .field("ids", &ids)
            .finish()
    }
}

impl SecretKeys {
    /// An empty source for `env`; filled by [`SecretKeys::refresh`].
    pub fn new(env: &str) -> SecretKeys {
        SecretKeys {
            env: env.to_string(),
            keys: RwLock::new(HashMap::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, (u64, KeyMaterial)>> {
        // A panic while holding the lock cannot leave half a map: entries are replaced whole.
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Brings the keys in line with the store: new and rotated keys are read (and audited),
    /// deleted ones dropped. Returns how many keys changed.
    pub fn refresh(&self, secrets: &SecretService) -> Result<usize, SecretsError> {
        let filter = SecretFilter {
            env: Some(self.env.clone()),
            app: None,
            include_deleted: false,
        };
        let wanted: Vec<(String, u64)> = secrets
            .infos(&filter)?
            .into_iter()
            .filter(|i| i.scope.app.is_none())
            .filter_map(|i| {
                let id = i.name.strip_prefix(PREFIX)?.to_string();
                Some((id, i.current?))
            })
            .filter(|(id, _)| rollgate_core::signing::valid_key_id(id))
            .collect();
        let known: HashMap<String, u64> = self
            .read()
            .iter()
            .map(|(id, (v, _))| (id.clone(), *v))
            .collect();
        let mut changed = 0;
        let scope = SecretScope::env(&self.env);
        let mut fresh = Vec::new();
        for (id, version) in &wanted {
            if known.get(id) == Some(version) {
                continue;
            }
            let name = format!("{PREFIX}{id}");
            let (version, value) = secrets.get(
                &scope,
                &name,
                Selector::Stage(Stage::Current),
                "rollgate-gateway",
            )?;
            let secret = String::from_utf8_lossy(&value);
            fresh.push((
                id.clone(),
                version,
                KeyMaterial::from_secret(id, secret.trim_end_matches('\n'), KeyUse::Both),
            ));
        }
        let mut keys = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = keys.len();
        keys.retain(|id, _| wanted.iter().any(|(w, _)| w == id));
        changed += before - keys.len();
        for (id, version, material) in fresh {
            keys.insert(id, (version, material));
            changed += 1;
        }
        Ok(changed)
    }
}

impl KeySource for SecretKeys {
    fn key(&self, key_id: &str) -> Option<KeyMaterial> {
        self.read().get(key_id).map(|(_, m)| m.clone())
    }
}
