//! The daemon's credential service: the one owner of the sealed store at run time.
//!
//! At start-up (and on reload) it finds the master key, opens the store, and seals the
//! keys of the configured `.env` file (`[daemon] env_file`, the single source of truth
//! when set). Providers ask it for their key when an instance is built; admin requests
//! change it. A provider whose key changes has its cached instances dropped, so the next
//! request builds one with the new key while running streams keep the old one.
//!
//! Without a master key and without sealed files, the vault is off and keys come from the
//! daemon's environment only (the factory's fallback). Sealed files without a key are a
//! start-up error: the daemon never runs with credentials it was told about but cannot
//! read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use crate::config::Config;
use crate::secret::Secret;

use super::{
    read_dotenv, CredentialInfo, MasterKey, MasterKeyError, ProcessEnvironment, SecureStorage,
    StoreError,
};

/// Why the credentials are unusable.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Sealed credentials exist but no master key was given.
    #[error("sealed credentials exist in {} but no master key was found: {hint}", dir.display())]
    NoKey {
        /// The state directory.
        dir: PathBuf,
        /// How to provide one.
        hint: String,
    },
    /// The master key is unusable.
    #[error(transparent)]
    Key(#[from] MasterKeyError),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `.env` file could not be imported.
    #[error("{0}")]
    EnvFile(String),
    /// A request needs the store, which is off.
    #[error("no credential store: start provd with a master key (provd key generate; then $CREDENTIALS_DIRECTORY/provd-master-key, PROVD_MASTER_KEY_FILE or SECRET_KEY)")]
    Disabled,
    /// A credential this daemon sealed (or found sealed at start) is gone from the store
    /// without a `creds remove`: someone removed or renamed the file behind its back.
    #[error("the sealed credential of provider '{id}' is gone from {} although provd did not remove it; set it again with `provd creds set {id}` (provd does not fall back to the environment for it)", dir.display())]
    Vanished {
        /// The provider id.
        id: String,
        /// The state directory.
        dir: PathBuf,
    },
}

/// The sealed store, when there is one.
#[derive(Debug)]
pub struct Vault {
    store: Option<RwLock<SecureStorage>>,
    dir: PathBuf,
    /// The ids sealed in the store as far as this daemon knows (found at start, set or
    /// removed through it since). A known id whose file is missing was removed behind the
    /// daemon's back, which must not turn into a silent fall-back to the environment.
    sealed: Mutex<BTreeSet<String>>,
}

/// The state directory: `[daemon] state_dir`, else `$STATE_DIRECTORY` (systemd), else
/// `$XDG_STATE_HOME/provd`, else `/var/lib/provd` for root, else `~/.local/state/provd`.
pub fn state_dir(config: &Config) -> PathBuf {
    if let Some(dir) = &config.daemon.state_dir {
        return dir.clone();
    }
    let env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = env("STATE_DIRECTORY") {
        // systemd may pass several, colon-separated; the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned();
        return PathBuf::from(first);
    }
    if let Some(dir) = env("XDG_STATE_HOME") {
        return dir.join("provd");
    }
    if crate::sys::effective_uid() == 0 {
        return PathBuf::from("/var/lib/provd");
    }
    env("HOME")
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".local/state/provd")
}

fn has_sealed_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .ends_with(super::store::FILE_SUFFIX)
            })
        })
        .unwrap_or(false)
}

impl Vault {
    /// Opens the store of `config`'s state directory with the master key from the
    /// environment (the log names the key's source, never the key).
    pub fn open(config: &Config) -> Result<Vault, VaultError> {
        let dir = state_dir(config);
        match MasterKey::load(&ProcessEnvironment) {
            Ok((key, source)) => {
                tracing::info!(source = %source, state_dir = %dir.display(), "master key loaded; opening the credential store");
                let store = SecureStorage::open(dir.clone(), key)?;
                // Every sealed file must open now: a wrong key or a damaged file is a
                // start-up error naming the provider, not a surprise at its first request.
                let mut sealed = BTreeSet::new();
                for entry in store.list()? {
                    sealed.insert(entry?.id);
                }
                let vault = Vault {
                    store: Some(RwLock::new(store)),
                    dir,
                    sealed: Mutex::new(sealed),
                };
                vault.publish_keys();
                Ok(vault)
            }
            Err(MasterKeyError::Missing) if !has_sealed_files(&dir) => {
                tracing::info!("no master key: credentials come from the environment only");
                Ok(Vault {
                    store: None,
                    dir,
                    sealed: Mutex::default(),
                })
            }
            Err(MasterKeyError::Missing) => Err(VaultError::NoKey {
                dir,
                hint: "give the key as the systemd credential provd-master-key, in a file named by PROVD_MASTER_KEY_FILE, or in SECRET_KEY".into(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// A vault that holds nothing (no store): keys come from the environment.
    pub fn disabled() -> Vault {
        Vault {
            store: None,
            dir: PathBuf::new(),
            sealed: Mutex::default(),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a store is open.
    pub fn is_enabled(&self) -> bool {
        self.store.is_some()
    }

    fn with_store<T>(
        &self,
        f: impl FnOnce(&SecureStorage) -> Result<T, StoreError>,
    ) -> Result<T, VaultError> {
        let store = self.store.as_ref().ok_or(VaultError::Disabled)?;
        Ok(f(&store.read().expect("store lock poisoned"))?)
    }

    /// Seals the keys of `config`'s `.env` file (if it names one) and applies its base
    /// URL overrides to `config`. Returns the provider ids whose key changed.
    pub fn sync_env_file(&self, config: &mut Config) -> Result<Vec<String>, VaultError> {
        let Some(path) = config.daemon.env_file.clone() else {
            return Ok(Vec::new());
        };
        let import = read_dotenv(&path, config).map_err(|e| VaultError::EnvFile(e.to_string()))?;
        for o in &import.base_urls {
            if let Some(p) = config.providers.get_mut(&o.provider) {
                p.base_url = Some(o.base_url.clone());
            }
        }
        let source = format!("env-file:{}", path.display());
        let mut changed = Vec::new();
        for c in import.credentials {
            if self.replace(&c.provider, &c.secret, &source)? {
                changed.push(c.provider);
            }
        }
        if !import.unknown.is_empty() {
            tracing::info!(file = %path.display(), variables = ?import.unknown, "variables in the env file that provd does not use");
        }
        tracing::info!(file = %path.display(), sealed = changed.len(), "env file imported");
        Ok(changed)
    }

    /// Stores `secret` for `id` unless the same one is stored; returns whether it changed.
    pub fn replace(&self, id: &str, secret: &Secret, source: &str) -> Result<bool, VaultError> {
        let changed = self.with_store(|s| {
            if s.get(id)?.is_some_and(|old| old.secret == *secret) {
                return Ok(false);
            }
            s.put(id, secret, source)?;
            Ok(true)
        })?;
        self.sealed_ids().insert(id.to_owned());
        if changed {
            self.publish_keys();
        }
        Ok(changed)
    }

    /// Hands every sealed key to the scrubber ([`crate::scrub`]), replacing the set it
    /// had: called whenever the store may have changed (open, set, import, remove,
    /// reload), so an upstream echoing any sealed key, not only its own provider's, is
    /// scrubbed. A key that cannot be unsealed now is left out (and logged here).
    pub fn publish_keys(&self) {
        let Some(store) = self.store.as_ref() else {
            return;
        };
        let keys = {
            let store = store.read().expect("store lock poisoned");
            let ids = store.ids().unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot list the sealed credentials to scrub them from upstream text");
                Vec::new()
            });
            ids.into_iter()
                .filter_map(|id| match store.get(&id) {
                    Ok(found) => found.map(|c| crate::scrub::HeldKey {
                        name: id,
                        secret: c.secret,
                    }),
                    Err(e) => {
                        tracing::error!(provider = %id, error = %e, "cannot unseal the provider's credential");
                        None
                    }
                })
                .collect()
        };
        crate::scrub::set_keys(crate::scrub::KeySource::Sealed, keys);
    }

    /// The key of provider `id`: `Ok(None)` when none is sealed (the caller may then look
    /// in the environment). A sealed file that no longer opens (damaged, replaced, its
    /// permissions changed) or that vanished without `creds remove` is an error, never
    /// "absent": falling back to the environment would silently use another key than the
    /// one the administrator sealed.
    pub fn get(&self, id: &str) -> Result<Option<Secret>, VaultError> {
        let Some(store) = self.store.as_ref() else {
            return Ok(None);
        };
        let found = store.read().expect("store lock poisoned").get(id);
        match found {
            Ok(Some(c)) => Ok(Some(c.secret)),
            Ok(None) if self.sealed_ids().contains(id) => Err(VaultError::Vanished {
                id: id.to_owned(),
                dir: self.dir.clone(),
            }),
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes provider `id`'s key.
    pub fn remove(&self, id: &str) -> Result<bool, VaultError> {
        let removed = self.with_store(|s| s.remove(id))?;
        self.sealed_ids().remove(id);
        if removed {
            self.publish_keys();
        }
        Ok(removed)
    }

    fn sealed_ids(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.sealed.lock().expect("sealed ids lock poisoned")
    }

    /// Every stored credential's public facts.
    pub fn list(&self) -> Result<Vec<Result<CredentialInfo, StoreError>>, VaultError> {
        self.with_store(|s| s.list())
    }

    /// Re-seals everything under `new_key`; the vault uses it from now on.
    pub fn rotate(&self, new_key: MasterKey) -> Result<usize, VaultError> {
        let store = self.store.as_ref().ok_or(VaultError::Disabled)?;
        Ok(store
            .write()
            .expect("store lock poisoned")
            .rotate(new_key)?)
    }
}
