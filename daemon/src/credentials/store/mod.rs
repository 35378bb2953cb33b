//! The sealed credential store (the original design's `SecureStorage`): one file per
//! provider id in a private directory, each sealed with AES-256-GCM under a key derived
//! from the [`MasterKey`].
//!
//! The on-disk format (the directory, the bytes of a file, the key derivations, the error
//! each check gives, and what is and is not detected) is described once, in
//! `daemon/src/credentials/FORMAT.md`.
//!
//! - this file: the API, [`SecureStorage`], and the checks on the directory and its files:
//!   [`SecureStorage::open`] creates the directory 0700 when it is missing and refuses an
//!   existing directory or credential file that grants group or other users any access or
//!   belongs to another user. The encryption protects the secrets from whoever copies the
//!   files; the modes keep the files (and the lock) from other local users.
//! - `format`: the bytes of a file: sealing, parsing and opening, in memory.
//! - `atomic`: crash-safe writes, the writers' lock, and the sweep of what a crash leaves.
//! - `error`: [`StoreError`], one variant per failure, none holding secret material.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use zeroize::Zeroizing;

use super::master_key::{KeyId, MasterKey};
use crate::secret::Secret;

mod atomic;
mod error;
mod format;

use atomic::{OsSteps, WriteSteps};
use error::io_err;
pub use error::StoreError;
use format::{check_id, Header, Payload};
pub use format::{
    is_valid_id, ALGORITHM_AES_256_GCM, FILE_SUFFIX, FORMAT_VERSION, HEADER_BYTES, MAGIC,
    MAX_FILE_BYTES, MAX_ID_BYTES, MAX_SECRET_BYTES, MAX_SOURCE_BYTES, NONCE_BYTES, SALT_BYTES,
    TAG_BYTES,
};

/// Permission bits that must be clear on the directory and every file in it.
const GROUP_OTHER_BITS: u32 = 0o077;

/// A credential as read back: the secret and what is known about it.
#[derive(Debug)]
pub struct StoredCredential {
    /// The provider id.
    pub id: String,
    /// The secret (redacted in Debug).
    pub secret: Secret,
    /// Where it came from (`set`, `import:/path/.env`, …).
    pub source: String,
    /// When it was first stored, unix seconds.
    pub created: u64,
    /// When it was last stored, unix seconds.
    pub updated: u64,
}

/// What [`SecureStorage::list`] tells about a credential: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The provider id.
    pub id: String,
    /// Where it came from.
    pub source: String,
    /// A keyed fingerprint of the secret ([`MasterKey::fingerprint`], 12 hex digits): tells
    /// two credentials apart without showing either. It changes when the master key is
    /// rotated, since its key derives from the master key.
    pub fingerprint: String,
    /// When it was first stored, unix seconds.
    pub created: u64,
    /// When it was last stored, unix seconds.
    pub updated: u64,
}

/// A credential file as read from disk, its header checked; still sealed.
struct SealedFile {
    /// The whole file, in a zeroizing buffer because it is decrypted in place.
    bytes: Zeroizing<Vec<u8>>,
    header: Header,
    path: PathBuf,
}

/// The sealed credential store. `Send + Sync`: share it behind an `Arc`; every method
/// but [`rotate`](SecureStorage::rotate) takes `&self`.
///
/// File I/O is blocking and small; async callers run it in `spawn_blocking`.
pub struct SecureStorage {
    dir: PathBuf,
    master: MasterKey,
    rng: SystemRandom,
    steps: Box<dyn WriteSteps>,
}

impl std::fmt::Debug for SecureStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureStorage")
            .field("dir", &self.dir)
            .field("key_id", &self.master.key_id())
            .finish_non_exhaustive()
    }
}

/// The time stamped on a write, unix seconds.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Refuses a directory or file that another user owns or that grants group or other
/// users any access.
fn check_private(path: &Path, meta: &std::fs::Metadata, fix: u32) -> Result<(), StoreError> {
    let me = crate::sys::effective_uid();
    if meta.uid() != me {
        return Err(StoreError::WrongOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            expected: me,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(StoreError::BadPermissions {
            path: path.to_owned(),
            mode,
            fix,
        });
    }
    Ok(())
}

impl SecureStorage {
    /// Opens the store in `dir`, creating it (mode 0700) if missing. Refuses a directory
    /// or credential file with group/other permission bits or another owner, and removes
    /// temp files left by a crashed write.
    pub fn open(dir: impl Into<PathBuf>, master: MasterKey) -> Result<SecureStorage, StoreError> {
        SecureStorage::open_with(dir.into(), master, Box::new(OsSteps))
    }

    fn open_with(
        dir: PathBuf,
        master: MasterKey,
        steps: Box<dyn WriteSteps>,
    ) -> Result<SecureStorage, StoreError> {
        let meta = match std::fs::metadata(&dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(io_err("create the directory", &dir))?;
                std::fs::metadata(&dir).map_err(io_err("inspect the directory", &dir))?
            }
            Err(e) => return Err(io_err("inspect the directory", &dir)(e)),
        };
        if !meta.is_dir() {
            return Err(StoreError::NotRegular {
                path: dir,
                what: "is not a directory",
            });
        }
        check_private(&dir, &meta, 0o700)?;
        let store = SecureStorage {
            dir,
            master,
            rng: SystemRandom::new(),
            steps,
        };
        let _lock = store.lock()?;
        store.sweep()?;
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of the master key new credentials are sealed with.
    pub fn key_id(&self) -> KeyId {
        self.master.key_id()
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}{FILE_SUFFIX}"))
    }

    /// Seals `secret` for provider `id` and stores it atomically, replacing any previous
    /// credential of that id (whose created time is kept when it can be read). `source`
    /// says where the secret came from (`set`, `import:/path/.env`, `env-file`).
    pub fn put(&self, id: &str, secret: &Secret, source: &str) -> Result<(), StoreError> {
        check_id(id)?;
        let unstorable = |what: String| StoreError::Unstorable {
            id: id.to_owned(),
            what,
        };
        if secret.expose().len() > MAX_SECRET_BYTES {
            return Err(unstorable(format!(
                "the secret is longer than {MAX_SECRET_BYTES} bytes"
            )));
        }
        if source.len() > MAX_SOURCE_BYTES {
            return Err(unstorable(format!(
                "the source is longer than {MAX_SOURCE_BYTES} bytes"
            )));
        }
        if source.chars().any(char::is_control) {
            // Sources are shown by `list`; a newline or escape must not forge output.
            return Err(unstorable("the source contains control characters".into()));
        }
        let _lock = self.lock()?;
        let now = now();
        // A credential that cannot be read (damaged, other key) is being replaced, which
        // is the repair; only its created time is lost.
        let created = match self.with_payload(id, &self.master, |p| p.created) {
            Ok(Some(created)) => created,
            _ => now,
        };
        let payload = Payload {
            created,
            updated: now,
            source,
            secret: secret.expose(),
        };
        let sealed = format::seal(id, &self.master, &payload, &self.rng)?;
        self.write_atomically(id, &sealed)
    }

    /// The credential of provider `id`, or `None` when there is none.
    pub fn get(&self, id: &str) -> Result<Option<StoredCredential>, StoreError> {
        check_id(id)?;
        self.with_payload(id, &self.master, |p| StoredCredential {
            id: id.to_owned(),
            // One exact-size copy, straight into the zeroizing Secret.
            secret: Secret::new(p.secret.to_owned()),
            source: p.source.to_owned(),
            created: p.created,
            updated: p.updated,
        })
    }

    /// Removes provider `id`'s credential; `false` when there was none.
    pub fn remove(&self, id: &str) -> Result<bool, StoreError> {
        check_id(id)?;
        let path = self.path_of(id);
        let _lock = self.lock()?;
        match self.steps.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err(format!("remove credential '{id}'"), &path)(e)),
        }
        self.steps
            .sync_dir(&self.dir)
            .map_err(io_err("fsync the directory", &self.dir))?;
        Ok(true)
    }

    /// The provider ids that have a credential file, sorted.
    pub fn ids(&self) -> Result<Vec<String>, StoreError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(io_err("list the directory", &self.dir))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list the directory", &self.dir))?;
            let name = entry.file_name();
            // Temp files, the lock and anything foreign are not credentials.
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(FILE_SUFFIX)) {
                if is_valid_id(id) {
                    ids.push(id.to_owned());
                }
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Every credential's metadata and fingerprint, sorted by id; a credential that cannot
    /// be read is listed as its error, so one damaged file hides nothing else. Each secret
    /// is decrypted only into a zeroizing buffer, fingerprinted and wiped before the next.
    pub fn list(&self) -> Result<Vec<Result<CredentialInfo, StoreError>>, StoreError> {
        Ok(self
            .ids()?
            .into_iter()
            .filter_map(|id| {
                self.with_payload(&id, &self.master, |p| CredentialInfo {
                    id: id.clone(),
                    source: p.source.to_owned(),
                    fingerprint: self.master.fingerprint(p.secret.as_bytes()),
                    created: p.created,
                    updated: p.updated,
                })
                // Removed between listing and reading: not there any more.
                .transpose()
            })
            .collect())
    }

    /// Re-seals every credential under `new_master` and switches the store to it; returns
    /// how many files were re-sealed.
    ///
    /// Files already under the new key id are left alone (after checking that they open
    /// with it), so a rotation cut short by a crash or an error is finished by running it
    /// again on a store opened with the old key. Nothing is changed unless every file
    /// opens with the old key or the new one. On error the store keeps the old key.
    /// Another process that still uses the old key cannot read re-sealed files: stop or
    /// restart readers with the new key.
    pub fn rotate(&mut self, new_master: MasterKey) -> Result<usize, StoreError> {
        let _lock = self.lock()?;
        let new_id = new_master.key_id();
        let mut pending = Vec::new();
        for id in self.ids()? {
            let Some(sealed) = self.read_sealed(&id)? else {
                continue;
            };
            let key = if sealed.header.key_id == new_id {
                &new_master
            } else {
                pending.push(id.clone());
                &self.master
            };
            drop(sealed);
            // Opens (and wipes) each payload: a file that would fail later fails now,
            // before anything has been changed.
            self.with_payload(&id, key, |_| ())?;
        }
        let mut resealed = 0;
        for id in &pending {
            let sealed = self
                .with_payload(id, &self.master, |p| {
                    format::seal(id, &new_master, p, &self.rng)
                })?
                .transpose()?;
            if let Some(sealed) = sealed {
                self.write_atomically(id, &sealed)?;
                resealed += 1;
            }
        }
        self.master = new_master;
        Ok(resealed)
    }

    /// Reads and checks the header of `id`'s file; `None` when there is no file.
    fn read_sealed(&self, id: &str) -> Result<Option<SealedFile>, StoreError> {
        let path = self.path_of(id);
        // O_NOFOLLOW: a symlink planted in the directory is refused, not followed;
        // O_NONBLOCK: a FIFO planted there cannot hang the daemon.
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(StoreError::NotRegular {
                    path,
                    what: "is a symbolic link",
                })
            }
            Err(e) => return Err(io_err(format!("open credential '{id}'"), &path)(e)),
        };
        let meta = file
            .metadata()
            .map_err(io_err(format!("inspect credential '{id}'"), &path))?;
        if !meta.is_file() {
            return Err(StoreError::NotRegular {
                path,
                what: "is not a regular file",
            });
        }
        check_private(&path, &meta, 0o600)?;
        let bytes = super::read_bounded(&mut file, MAX_FILE_BYTES)
            .map_err(io_err(format!("read credential '{id}'"), &path))?
            .ok_or_else(|| StoreError::Corrupt {
                id: id.to_owned(),
                path: path.clone(),
                detail: "larger than any credential file",
            })?;
        let header = format::parse_header(id, &path, &bytes)?;
        Ok(Some(SealedFile {
            bytes,
            header,
            path,
        }))
    }

    /// Reads, authenticates and decrypts `id`'s file with `key`, and hands the payload to
    /// `f`; the plaintext is wiped when this returns. `None` when there is no file.
    fn with_payload<T>(
        &self,
        id: &str,
        key: &MasterKey,
        f: impl FnOnce(&Payload<'_>) -> T,
    ) -> Result<Option<T>, StoreError> {
        let Some(SealedFile {
            mut bytes,
            header,
            path,
        }) = self.read_sealed(id)?
        else {
            return Ok(None);
        };
        let payload = format::unseal(id, &path, &mut bytes, &header, key)?;
        Ok(Some(f(&payload)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::master_key::tests::{other_key, test_key, OTHER_KEY_HEX};
    use std::os::unix::fs::PermissionsExt;

    pub(super) fn secret(s: &str) -> Secret {
        Secret::new(s.to_owned())
    }

    pub(super) fn open(dir: &Path) -> SecureStorage {
        SecureStorage::open(dir, test_key()).unwrap()
    }

    /// A temp dir with the mode a store directory needs (tempfile makes them 0755 under
    /// the usual umask).
    pub(super) fn private_tempdir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o700);
        tmp
    }

    /// A store in a fresh temp dir (the `TempDir` must outlive the store).
    pub(super) fn fresh() -> (tempfile::TempDir, SecureStorage) {
        let tmp = private_tempdir();
        let store = open(&tmp.path().join("store"));
        (tmp, store)
    }

    pub(super) fn value(store: &SecureStorage, id: &str) -> Option<String> {
        store.get(id).unwrap().map(|c| c.secret.expose().to_owned())
    }

    pub(super) fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    pub(super) fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    pub(super) fn temp_files(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with(atomic::TEMP_PREFIX))
            .collect()
    }

    /// Replaces a credential file's content without touching its mode.
    pub(super) fn overwrite(store: &SecureStorage, id: &str, bytes: &[u8]) {
        std::fs::write(store.path_of(id), bytes).unwrap();
    }

    #[test]
    fn round_trip_keeps_the_secret_source_and_times() {
        let (_tmp, store) = fresh();
        assert!(store.get("anthropic").unwrap().is_none());
        store
            .put("anthropic", &secret("sk-ant-api03-xyz"), "set")
            .unwrap();
        let first = store.get("anthropic").unwrap().unwrap();
        assert_eq!(first.id, "anthropic");
        assert_eq!(first.secret.expose(), "sk-ant-api03-xyz");
        assert_eq!(first.source, "set");
        assert!(first.created > 0 && first.updated >= first.created);
        assert!(!format!("{first:?}").contains("sk-ant"), "Debug redacts");

        store
            .put("anthropic", &secret("sk-ant-second"), "import:/home/u/.env")
            .unwrap();
        let second = store.get("anthropic").unwrap().unwrap();
        assert_eq!(second.secret.expose(), "sk-ant-second");
        assert_eq!(second.source, "import:/home/u/.env");
        assert_eq!(second.created, first.created, "created survives an update");
        assert!(second.updated >= first.updated);

        // A new handle on the same directory reads the same.
        let again = open(store.dir());
        assert_eq!(value(&again, "anthropic").as_deref(), Some("sk-ant-second"));
    }

    #[test]
    fn empty_and_unicode_secrets_round_trip() {
        let (_tmp, store) = fresh();
        for s in ["", "ключ-🔑-鍵", "x"] {
            store.put("p", &secret(s), "set").unwrap();
            assert_eq!(value(&store, "p").as_deref(), Some(s));
        }
    }

    #[test]
    fn remove_reports_whether_there_was_a_credential() {
        let (_tmp, store) = fresh();
        store.put("openai", &secret("sk-1"), "set").unwrap();
        assert!(store.remove("openai").unwrap());
        assert!(!store.remove("openai").unwrap());
        assert!(store.get("openai").unwrap().is_none());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn the_directory_is_0700_files_are_0600_and_hold_no_plaintext() {
        let tmp = private_tempdir();
        let dir = tmp.path().join("a").join("b");
        let store = open(&dir);
        assert_eq!(mode_of(&dir), 0o700);
        store
            .put("gemini", &secret("AIzaSyPLAINTEXTNEVER"), "env-file")
            .unwrap();
        let path = store.path_of("gemini");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(mode_of(&dir.join(atomic::LOCK_NAME)), 0o600);
        let bytes = std::fs::read(&path).unwrap();
        let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!find(b"PLAINTEXT") && !find(b"env-file") && !find(b"gemini"));
    }

    #[test]
    fn ids_that_could_escape_the_directory_are_refused() {
        let (_tmp, store) = fresh();
        let long = "a".repeat(MAX_ID_BYTES + 1);
        for id in [
            "",
            "..",
            "../x",
            "a/b",
            "a.b",
            ".lock",
            "x y",
            "é",
            "a\0b",
            long.as_str(),
        ] {
            assert!(
                matches!(
                    store.put(id, &secret("s"), "set"),
                    Err(StoreError::InvalidId { .. })
                ),
                "put {id:?}"
            );
            assert!(
                matches!(store.get(id), Err(StoreError::InvalidId { .. })),
                "get {id:?}"
            );
            assert!(matches!(
                store.remove(id),
                Err(StoreError::InvalidId { .. })
            ));
        }
        store
            .put(&"a".repeat(MAX_ID_BYTES), &secret("s"), "set")
            .unwrap();
        store.put("My-Provider_2", &secret("s"), "set").unwrap();
    }

    #[test]
    fn unstorable_secrets_and_sources_are_refused_without_echoing_them() {
        let (_tmp, store) = fresh();
        let big = "k".repeat(MAX_SECRET_BYTES + 1);
        let e = store.put("p", &secret(&big), "set").unwrap_err();
        assert!(matches!(e, StoreError::Unstorable { .. }) && !e.to_string().contains("kkk"));
        let e = store
            .put("p", &secret("s"), &"x".repeat(MAX_SOURCE_BYTES + 1))
            .unwrap_err();
        assert!(matches!(e, StoreError::Unstorable { .. }));
        let e = store.put("p", &secret("s"), "set\nfake line").unwrap_err();
        assert!(matches!(e, StoreError::Unstorable { .. }));
        store
            .put(
                "p",
                &secret(&big[..MAX_SECRET_BYTES]),
                &"x".repeat(MAX_SOURCE_BYTES),
            )
            .unwrap();
        assert_eq!(value(&store, "p").unwrap().len(), MAX_SECRET_BYTES);
    }

    #[test]
    fn list_shows_metadata_and_keyed_fingerprints_never_secrets() {
        let (_tmp, store) = fresh();
        store.put("openai", &secret("sk-open"), "set").unwrap();
        store
            .put("anthropic", &secret("sk-ant"), "import:/x/.env")
            .unwrap();
        store.put("same", &secret("sk-ant"), "set").unwrap();
        // Foreign files and temp files are not credentials.
        std::fs::write(store.dir().join("README"), "hi").unwrap();
        let list: Vec<_> = store
            .list()
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let ids: Vec<_> = list.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["anthropic", "openai", "same"]);
        assert_eq!(list[0].source, "import:/x/.env");
        assert_eq!(list[0].fingerprint.len(), 12);
        assert_eq!(list[0].fingerprint, test_key().fingerprint(b"sk-ant"));
        assert_eq!(
            list[0].fingerprint, list[2].fingerprint,
            "same secret, same fingerprint"
        );
        assert_ne!(list[0].fingerprint, list[1].fingerprint);
        assert!(!format!("{list:?}").contains("sk-"));

        // One damaged file is listed as its error; the others are still there.
        let mut bytes = std::fs::read(store.path_of("openai")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        overwrite(&store, "openai", &bytes);
        let list = store.list().unwrap();
        assert!(list[0].is_ok() && list[2].is_ok());
        assert!(matches!(&list[1], Err(StoreError::Authentication { id, .. }) if id == "openai"));
    }

    #[test]
    fn loose_directory_and_file_modes_are_refused() {
        let tmp = private_tempdir();
        let dir = tmp.path().join("store");
        let store = open(&dir);
        store.put("p", &secret("s"), "set").unwrap();
        drop(store);

        chmod(&dir, 0o755);
        let e = SecureStorage::open(&dir, test_key()).unwrap_err();
        assert!(
            matches!(e, StoreError::BadPermissions { mode: 0o755, .. }),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains("0755") && text.contains("store") && text.contains("chmod 700"),
            "{text}"
        );
        chmod(&dir, 0o700);

        let file = dir.join("p.cred");
        chmod(&file, 0o644);
        let e = SecureStorage::open(&dir, test_key()).unwrap_err();
        assert!(
            matches!(e, StoreError::BadPermissions { mode: 0o644, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("p.cred") && e.to_string().contains("chmod 600"));

        // A file loosened after open is refused when read.
        chmod(&file, 0o600);
        let store = open(&dir);
        chmod(&file, 0o640);
        assert!(matches!(
            store.get("p"),
            Err(StoreError::BadPermissions { mode: 0o640, .. })
        ));
        chmod(&file, 0o600);
        assert_eq!(value(&store, "p").as_deref(), Some("s"));
    }

    #[test]
    fn a_store_owned_by_another_user_is_refused() {
        if crate::sys::effective_uid() != 0 {
            println!("skipped: changing an owner needs root (run the suite as root to test it)");
            return;
        }
        let tmp = private_tempdir();
        let dir = tmp.path().join("store");
        let store = open(&dir);
        store.put("p", &secret("s"), "set").unwrap();
        let file = store.path_of("p");
        drop(store);

        std::os::unix::fs::chown(&file, Some(4242), None).unwrap();
        let e = SecureStorage::open(&dir, test_key()).unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::WrongOwner {
                    owner: 4242,
                    expected: 0,
                    ..
                }
            ),
            "{e}"
        );
        std::os::unix::fs::chown(&file, Some(0), None).unwrap();

        std::os::unix::fs::chown(&dir, Some(4242), None).unwrap();
        let e = SecureStorage::open(&dir, test_key()).unwrap_err();
        assert!(
            matches!(e, StoreError::WrongOwner { owner: 4242, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("uid 4242"), "{e}");
    }

    #[test]
    fn symlinks_and_non_directories_are_refused() {
        let (tmp, store) = fresh();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").unwrap();
        chmod(&outside, 0o600);
        std::os::unix::fs::symlink(&outside, store.path_of("evil")).unwrap();
        assert!(matches!(
            store.get("evil"),
            Err(StoreError::NotRegular { .. })
        ));
        assert!(matches!(
            SecureStorage::open(store.dir(), test_key()),
            Err(StoreError::NotRegular { .. })
        ));
        assert!(matches!(
            SecureStorage::open(&outside, test_key()),
            Err(StoreError::NotRegular { .. })
        ));
    }

    // ---- rotation -----------------------------------------------------------------

    #[test]
    fn rotation_reseals_everything_under_the_new_key_and_keeps_metadata() {
        let (_tmp, mut store) = fresh();
        for (id, s) in [("a", "sk-a"), ("b", "sk-b"), ("c", "sk-c")] {
            store.put(id, &secret(s), &format!("import:/{id}")).unwrap();
        }
        let before: Vec<_> = store
            .list()
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(store.rotate(other_key()).unwrap(), 3);
        assert_eq!(store.key_id(), other_key().key_id());
        for (id, s) in [("a", "sk-a"), ("b", "sk-b"), ("c", "sk-c")] {
            let c = store.get(id).unwrap().unwrap();
            assert_eq!(c.secret.expose(), s);
            let old = before.iter().find(|i| i.id == id).unwrap();
            assert_eq!(
                (c.created, c.updated, &c.source),
                (old.created, old.updated, &old.source)
            );
            let bytes = std::fs::read(store.path_of(id)).unwrap();
            assert_eq!(&bytes[10..18], other_key().key_id().as_bytes());
        }
        // Fingerprints are keyed by the master key, so they change with it.
        let after = store.list().unwrap();
        assert_ne!(
            after[0].as_ref().unwrap().fingerprint,
            before[0].fingerprint
        );
        // The old key no longer opens anything; a second rotation to the same key is a no-op.
        assert!(matches!(
            open(store.dir()).get("a"),
            Err(StoreError::WrongKey { .. })
        ));
        assert_eq!(store.rotate(other_key()).unwrap(), 0);
    }

    #[test]
    fn rotation_changes_nothing_unless_every_file_opens() {
        let tmp = private_tempdir();
        let store = open(tmp.path());
        store.put("a", &secret("sk-a"), "set").unwrap();
        store.put("b", &secret("sk-b"), "set").unwrap();
        // "z" is sealed under a third key.
        let third = MasterKey::from_hex(
            b"5b2e9d71c04af38e6d1b7c2a95f0e4d83c6a1f7b2e09d5c48a3f6e1b7d2c9a05",
            "t",
        )
        .unwrap();
        SecureStorage::open(tmp.path(), third)
            .unwrap()
            .put("z", &secret("sk-z"), "set")
            .unwrap();
        let before: Vec<_> = ["a", "b", "z"]
            .iter()
            .map(|id| std::fs::read(tmp.path().join(format!("{id}.cred"))).unwrap())
            .collect();
        let mut store = store;
        let e = store.rotate(other_key()).unwrap_err();
        assert!(
            matches!(&e, StoreError::WrongKey { id, .. } if id == "z"),
            "{e}"
        );
        let after: Vec<_> = ["a", "b", "z"]
            .iter()
            .map(|id| std::fs::read(tmp.path().join(format!("{id}.cred"))).unwrap())
            .collect();
        assert_eq!(before, after, "no file was touched");
        assert_eq!(store.key_id(), test_key().key_id());
        let _ = OTHER_KEY_HEX;
    }
}
