//! The sealed credential store (the original design's `SecureStorage`): one file per
//! provider id in a private directory, each sealed with AES-256-GCM under a key derived
//! from the [`MasterKey`].
//!
//! # Directory
//!
//! ```text
//! <state dir>/            mode 0700, owned by the daemon's user
//!     <provider id>.cred  mode 0600, one sealed credential
//!     .lock               mode 0600, flock(2)ed by writers
//!     .tmp-<id>-<random>  a write in progress (or left by a crash; removed on open)
//! ```
//!
//! [`SecureStorage::open`] creates the directory 0700 when it is missing and refuses an
//! existing directory or credential file that grants group or other users any access or
//! belongs to another user: the encryption protects the secrets from whoever copies the
//! files, the modes keep the files (and the lock) from other local users.
//!
//! # File format (version 1)
//!
//! All integers are big-endian. `FORMAT.md` beside this file says the same, with the
//! key derivations and the error for each check.
//!
//! | offset | bytes | field |
//! |-------:|------:|-------|
//! | 0      | 8     | magic `PRVDCRED` ([`MAGIC`]) |
//! | 8      | 1     | format version, 1 ([`FORMAT_VERSION`]) |
//! | 9      | 1     | algorithm id, 1 = HKDF-SHA256 per-file key + AES-256-GCM ([`ALGORITHM_AES_256_GCM`]) |
//! | 10     | 8     | key id of the master key ([`KeyId`]) |
//! | 18     | 32    | HKDF salt, random per write |
//! | 50     | 12    | AES-GCM nonce, random per write |
//! | 62     | 4     | sealed length *n*: ciphertext plus the 16-byte tag |
//! | 66     | *n*   | ciphertext, then the tag |
//!
//! The file key is `HKDF-SHA256(salt = header salt, ikm = master key, info =
//! "provd credential file key v1")`, 32 bytes. The associated data is the 66 header bytes
//! followed by the provider id (UTF-8), so a changed header byte or a file renamed to
//! another provider's name fails authentication.
//!
//! The plaintext (the payload):
//!
//! | offset | bytes | field |
//! |-------:|------:|-------|
//! | 0      | 8     | created, unix seconds |
//! | 8      | 8     | updated, unix seconds |
//! | 16     | 2     | source length *s* (at most [`MAX_SOURCE_BYTES`]) |
//! | 18     | *s*   | source, UTF-8 (`set`, `import:/path/.env`, …) |
//! | 18+*s* | 4     | secret length *k* (at most [`MAX_SECRET_BYTES`]) |
//! | 22+*s* | *k*   | the secret, UTF-8 |
//!
//! and nothing after it. Reading checks, in order: magic, version, algorithm, header
//! length, sealed length against the file length, key id, then authentication; each
//! failure is its own [`StoreError`], so a wrong master key, a damaged file, a truncated
//! file and a file from a newer provd are told apart. There is never a plaintext
//! fallback.
//!
//! # Crash safety
//!
//! A write goes to a temp file in the same directory (created with `O_EXCL`, mode 0600),
//! is written, fsynced, renamed over the target, and the directory is fsynced. `rename`
//! replaces the name atomically, so a crash at any step leaves the old file or the new
//! one, never a torn one; a crash before the rename leaves a stale temp file, which
//! readers ignore and the next [`SecureStorage::open`] removes (under the lock, so never
//! one that another process is still writing).
//!
//! # Concurrency
//!
//! Writers ([`put`](SecureStorage::put), [`remove`](SecureStorage::remove),
//! [`rotate`](SecureStorage::rotate), and the clean-up in `open`) take an exclusive
//! `flock` on `.lock`, opened afresh for each operation: `flock` locks belong to the open
//! file description, so this excludes other threads of the same process as well as other
//! processes, and a crashed holder releases it by dying. Readers take no lock: the rename
//! makes every file they can open a complete one.
//!
//! # Rotation
//!
//! [`SecureStorage::rotate`] re-seals every file under a new master key, one atomic write
//! per file, under the lock. It first opens every file (with the old key, or the new one
//! for files already carrying the new key id) and changes nothing unless all of them
//! open. Files already under the new key id are left alone, so after a crash half-way
//! the store holds a mix of old- and new-key files, and running the same rotation again
//! (opened with the old key, given the new one) finishes it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::master_key::{KeyId, MasterKey, KEY_ID_BYTES};
use crate::secret::Secret;

/// The first bytes of every credential file.
pub const MAGIC: [u8; 8] = *b"PRVDCRED";
/// The file format version this code reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// Algorithm id 1: per-file key by HKDF-SHA256 from the master key and the file's salt,
/// AES-256-GCM with a 96-bit nonce and a 128-bit tag.
pub const ALGORITHM_AES_256_GCM: u8 = 1;
/// HKDF salt length, bytes.
pub const SALT_BYTES: usize = 32;
/// AES-GCM nonce length, bytes.
pub const NONCE_BYTES: usize = aead::NONCE_LEN;
/// AES-GCM tag length, bytes.
pub const TAG_BYTES: usize = 16;
/// Header length, bytes: everything before the ciphertext.
pub const HEADER_BYTES: usize = MAGIC.len() + 2 + KEY_ID_BYTES + SALT_BYTES + NONCE_BYTES + 4;
/// Largest secret stored, bytes; API keys are well under 1 KiB.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;
/// Largest source description stored, bytes.
pub const MAX_SOURCE_BYTES: usize = 1024;
/// Longest provider id, bytes (file names stay far below NAME_MAX).
pub const MAX_ID_BYTES: usize = 128;
/// The fixed part of the payload: two timestamps and two lengths.
const PAYLOAD_FIXED_BYTES: usize = 8 + 8 + 2 + 4;
/// Largest sealed part of a valid file.
const MAX_SEALED_BYTES: usize =
    PAYLOAD_FIXED_BYTES + MAX_SOURCE_BYTES + MAX_SECRET_BYTES + TAG_BYTES;
/// Largest valid file; anything longer is refused before it is read whole.
pub const MAX_FILE_BYTES: usize = HEADER_BYTES + MAX_SEALED_BYTES;

/// Header field offsets.
const VERSION_AT: usize = 8;
const ALGORITHM_AT: usize = 9;
const KEY_ID_AT: usize = 10;
const SALT_AT: usize = KEY_ID_AT + KEY_ID_BYTES;
const NONCE_AT: usize = SALT_AT + SALT_BYTES;
const SEALED_LEN_AT: usize = NONCE_AT + NONCE_BYTES;

/// The ending of every sealed credential file (`<provider id>.cred`).
pub const FILE_SUFFIX: &str = ".cred";
const TEMP_PREFIX: &str = ".tmp-";
const LOCK_NAME: &str = ".lock";
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

/// Why the store or one of its credentials cannot be used. Every variant about a
/// credential names its provider id and file; none contains secret material.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A provider id that could name a path outside the store.
    #[error("credential id '{id}': must be 1 to {MAX_ID_BYTES} letters, digits, '-' or '_'")]
    InvalidId {
        /// The id given (safe to show: it is not a secret, and is only shown escaped).
        id: String,
    },
    /// The directory or a file grants access to group or other users.
    #[error(
        "credential store {}: mode {mode:04o} gives group or other users access; run `chmod {fix:o} {}`",
        path.display(),
        path.display()
    )]
    BadPermissions {
        /// The directory or file.
        path: PathBuf,
        /// The permission bits found.
        mode: u32,
        /// The mode to set.
        fix: u32,
    },
    /// The directory or a file belongs to another user.
    #[error(
        "credential store {}: owned by uid {owner}, but the daemon runs as uid {expected}",
        path.display()
    )]
    WrongOwner {
        /// The directory or file.
        path: PathBuf,
        /// The owner found.
        owner: u32,
        /// The daemon's effective uid.
        expected: u32,
    },
    /// Something other than a regular file (a symlink, a directory) where a credential
    /// file or the store directory should be.
    #[error("credential store {}: {what}", path.display())]
    NotRegular {
        /// The path.
        path: PathBuf,
        /// What is wrong (`is a symbolic link`, `is not a directory`, …).
        what: &'static str,
    },
    /// The file does not start with the credential magic: not a provd credential file.
    #[error("credential '{id}' ({}): not a provd credential file (unknown magic bytes)", path.display())]
    UnknownMagic {
        /// The provider id.
        id: String,
        /// The file.
        path: PathBuf,
    },
    /// A format version this provd does not know (written by a newer one, or damaged).
    #[error(
        "credential '{id}' ({}): format version {version} is not supported (this provd reads version {FORMAT_VERSION}); upgrade provd or set the credential again",
        path.display()
    )]
    UnsupportedVersion {
        /// The provider id.
        id: String,
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u8,
    },
    /// An algorithm id this provd does not know.
    #[error(
        "credential '{id}' ({}): sealed with unknown algorithm {algorithm}",
        path.display()
    )]
    UnknownAlgorithm {
        /// The provider id.
        id: String,
        /// The file.
        path: PathBuf,
        /// The algorithm id found.
        algorithm: u8,
    },
    /// The file ends before its header says it does.
    #[error(
        "credential '{id}' ({}): truncated ({len} bytes, {expected} expected); set the credential again",
        path.display()
    )]
    Truncated {
        /// The provider id.
        id: String,
        /// The file.
        path: PathBuf,
        /// The file's length.
        len: usize,
        /// The length needed to go on reading.
        expected: usize,
    },
    /// The file is structurally wrong in another way (trailing bytes, an impossible
    /// length, a malformed payload).
    #[error("credential '{id}' ({}): corrupt: {detail}; set the credential again", path.display())]
    Corrupt {
        /// The provider id.
        id: String,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: &'static str,
    },
    /// The file was sealed under another master key.
    #[error(
        "credential '{id}' ({}): sealed under master key id {file_key}, but the daemon's master key has id {key}: wrong master key (or a damaged key id field); use the key it was sealed with, or finish a rotation",
        path.display()
    )]
    WrongKey {
        /// The provider id.
        id: String,
        /// The file.
        path: PathBuf,
        /// The key id in the file.
        file_key: KeyId,
        /// The key id of the master key in use.
        key: KeyId,
    },
    /// Authentication failed although the key id matches: the file was changed after it
    /// was sealed, or it belongs to another provider id.
    #[error(
        "credential '{id}' ({}): failed authentication with the right master key: the file was modified, damaged, or renamed from another provider's name; set the credential again",
        path.display()
    )]
    Authentication {
        /// The provider id.
        id: String,
        /// The file.
        path: PathBuf,
    },
    /// A secret or source too large to store, or a source with control characters.
    #[error("credential '{id}': {what}")]
    Unstorable {
        /// The provider id.
        id: String,
        /// What is wrong (never the secret itself).
        what: String,
    },
    /// The system's random generator or the AEAD failed (not expected to happen).
    #[error("credential '{id}': sealing failed: {what}")]
    Crypto {
        /// The provider id.
        id: String,
        /// What failed.
        what: &'static str,
    },
    /// An operating-system error.
    #[error("credential store {}: {action}: {source}", path.display())]
    Io {
        /// What was being done, naming the provider id where there is one.
        action: String,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Whether `id` can name a credential: 1 to [`MAX_ID_BYTES`] ASCII letters, digits, `-`
/// or `_`, which is also what the configuration accepts as a provider id. No `.` or `/`,
/// so an id can never leave the store directory or collide with the lock or temp files.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn check_id(id: &str) -> Result<(), StoreError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::InvalidId {
            id: id.escape_default().to_string(),
        })
    }
}

/// The file-system steps of an atomic write. Production uses [`OsSteps`]; tests put a
/// failure (or a simulated crash) before or after any step and check what is left.
trait WriteSteps: Send + Sync {
    /// Creates the temp file exclusively, mode 0600.
    fn create(&self, path: &Path) -> std::io::Result<File>;
    /// Writes all bytes.
    fn write(&self, file: &mut File, bytes: &[u8]) -> std::io::Result<()>;
    /// Flushes the file's data to disk.
    fn sync_file(&self, file: &File) -> std::io::Result<()>;
    /// Renames over the target.
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()>;
    /// Flushes the directory, making the rename (or removal) durable.
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()>;
    /// Removes a file (a credential, or a temp file after a failed write).
    fn remove(&self, path: &Path) -> std::io::Result<()>;
}

/// The real steps.
struct OsSteps;

impl WriteSteps for OsSteps {
    fn create(&self, path: &Path) -> std::io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
    }

    fn write(&self, file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
        file.write_all(bytes)
    }

    fn sync_file(&self, file: &File) -> std::io::Result<()> {
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove(&self, path: &Path) -> std::io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// The parsed header of a credential file.
struct Header {
    key_id: KeyId,
    salt: [u8; SALT_BYTES],
    nonce: [u8; NONCE_BYTES],
}

/// A credential file as read from disk, its header checked; still sealed.
struct SealedFile {
    /// The whole file, in a zeroizing buffer because it is decrypted in place.
    bytes: Zeroizing<Vec<u8>>,
    header: Header,
    path: PathBuf,
}

/// A decrypted payload, borrowed from the zeroizing buffer it was decrypted in.
struct Payload<'a> {
    created: u64,
    updated: u64,
    source: &'a str,
    secret: &'a str,
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

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn io_err(action: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let action = action.into();
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
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

    /// Removes stale temp files and checks every credential file's type, owner and mode.
    /// Called with the lock held, so no temp file removed here is still being written.
    fn sweep(&self) -> Result<(), StoreError> {
        let entries =
            std::fs::read_dir(&self.dir).map_err(io_err("list the directory", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list the directory", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.starts_with(TEMP_PREFIX) {
                match self.steps.remove(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err("remove a stale temp file", &path)(e)),
                }
            } else if name.ends_with(FILE_SUFFIX) || name == LOCK_NAME {
                let meta = std::fs::symlink_metadata(&path)
                    .map_err(io_err("inspect a credential file", &path))?;
                if !meta.is_file() {
                    return Err(StoreError::NotRegular {
                        path,
                        what: "is not a regular file",
                    });
                }
                check_private(&path, &meta, 0o600)?;
            }
        }
        Ok(())
    }

    /// Takes the writers' lock; released when the returned file is dropped.
    fn lock(&self) -> Result<File, StoreError> {
        let path = self.dir.join(LOCK_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io_err("open the lock file", &path))?;
        crate::sys::flock(&file, crate::sys::Lock::ExclusiveWait)
            .map_err(io_err("lock the store", &path))?;
        Ok(file)
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
        let sealed = self.seal(id, &self.master, &payload)?;
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
                .with_payload(id, &self.master, |p| self.seal(id, &new_master, p))?
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
        let header = parse_header(id, &path, &bytes)?;
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
        if header.key_id != key.key_id() {
            return Err(StoreError::WrongKey {
                id: id.to_owned(),
                path,
                file_key: header.key_id,
                key: key.key_id(),
            });
        }
        let aad = associated_data(&bytes[..HEADER_BYTES], id);
        let file_key = key.file_key(&header.salt);
        let nonce = aead::Nonce::assume_unique_for_key(header.nonce);
        let plain = file_key
            .open_in_place(nonce, aead::Aad::from(&aad[..]), &mut bytes[HEADER_BYTES..])
            .map_err(|_| StoreError::Authentication {
                id: id.to_owned(),
                path: path.clone(),
            })?;
        let payload = parse_payload(plain).ok_or_else(|| StoreError::Corrupt {
            id: id.to_owned(),
            path,
            detail: "the authenticated payload is malformed",
        })?;
        Ok(Some(f(&payload)))
    }

    /// The complete file for `payload`, sealed under `key` with a fresh salt and nonce.
    fn seal(
        &self,
        id: &str,
        key: &MasterKey,
        payload: &Payload<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let crypto = |what| StoreError::Crypto {
            id: id.to_owned(),
            what,
        };
        let mut salt = [0u8; SALT_BYTES];
        let mut nonce = [0u8; NONCE_BYTES];
        self.rng
            .fill(&mut salt)
            .and_then(|()| self.rng.fill(&mut nonce))
            .map_err(|_| crypto("the system random number generator failed"))?;
        let plain_len = PAYLOAD_FIXED_BYTES + payload.source.len() + payload.secret.len();
        let sealed_len = plain_len + TAG_BYTES;
        // Allocated once at full size: the plaintext is never copied by a reallocation.
        let mut out = Zeroizing::new(Vec::with_capacity(HEADER_BYTES + sealed_len));
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT_VERSION);
        out.push(ALGORITHM_AES_256_GCM);
        out.extend_from_slice(key.key_id().as_bytes());
        out.extend_from_slice(&salt);
        out.extend_from_slice(&nonce);
        // Bounded by MAX_SEALED_BYTES (put checks the parts), far below u32::MAX.
        out.extend_from_slice(&(sealed_len as u32).to_be_bytes());
        out.extend_from_slice(&payload.created.to_be_bytes());
        out.extend_from_slice(&payload.updated.to_be_bytes());
        out.extend_from_slice(&(payload.source.len() as u16).to_be_bytes());
        out.extend_from_slice(payload.source.as_bytes());
        out.extend_from_slice(&(payload.secret.len() as u32).to_be_bytes());
        out.extend_from_slice(payload.secret.as_bytes());
        let (header, body) = out.split_at_mut(HEADER_BYTES);
        let aad = associated_data(header, id);
        let tag = key
            .file_key(&salt)
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(&aad[..]),
                body,
            )
            .map_err(|_| crypto("AES-GCM refused to seal"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Replaces `id`'s file with `bytes`: temp file, write, fsync, rename, fsync the
    /// directory. Called with the lock held.
    fn write_atomically(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let target = self.path_of(id);
        let mut suffix = [0u8; 8];
        self.rng.fill(&mut suffix).map_err(|_| StoreError::Crypto {
            id: id.to_owned(),
            what: "the system random number generator failed",
        })?;
        let temp = self
            .dir
            .join(format!("{TEMP_PREFIX}{id}-{}", super::hex(&suffix)));
        let steps = &*self.steps;
        let mut file = steps
            .create(&temp)
            .map_err(io_err(format!("create a temp file for '{id}'"), &temp))?;
        let written = steps
            .write(&mut file, bytes)
            .map_err(|e| ("write", e))
            .and_then(|()| steps.sync_file(&file).map_err(|e| ("fsync", e)))
            .and_then(|()| {
                drop(file);
                steps.rename(&temp, &target).map_err(|e| ("rename", e))
            });
        if let Err((step, e)) = written {
            // The old credential is untouched; the temp file is garbage. Should removing
            // it fail too, the next open() sweeps it.
            let _ = steps.remove(&temp);
            return Err(io_err(
                format!("{step} the new credential for '{id}'"),
                &temp,
            )(e));
        }
        // After the rename the new credential is in place; an error here only means it
        // may not survive a power loss.
        steps.sync_dir(&self.dir).map_err(io_err(
            format!("fsync the directory after storing '{id}'"),
            &self.dir,
        ))
    }
}

/// The AEAD associated data: the header bytes, then the provider id.
fn associated_data(header: &[u8], id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + id.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(id.as_bytes());
    aad
}

/// Checks the header fields in file order, so that each kind of damage gets its own
/// error, and the sealed length against the file's.
fn parse_header(id: &str, path: &Path, bytes: &[u8]) -> Result<Header, StoreError> {
    let len = bytes.len();
    let truncated = |expected| StoreError::Truncated {
        id: id.to_owned(),
        path: path.to_owned(),
        len,
        expected,
    };
    let seen = len.min(MAGIC.len());
    if bytes[..seen] != MAGIC[..seen] {
        return Err(StoreError::UnknownMagic {
            id: id.to_owned(),
            path: path.to_owned(),
        });
    }
    let Some(&version) = bytes.get(VERSION_AT) else {
        return Err(truncated(HEADER_BYTES));
    };
    if version != FORMAT_VERSION {
        return Err(StoreError::UnsupportedVersion {
            id: id.to_owned(),
            path: path.to_owned(),
            version,
        });
    }
    let Some(&algorithm) = bytes.get(ALGORITHM_AT) else {
        return Err(truncated(HEADER_BYTES));
    };
    if algorithm != ALGORITHM_AES_256_GCM {
        return Err(StoreError::UnknownAlgorithm {
            id: id.to_owned(),
            path: path.to_owned(),
            algorithm,
        });
    }
    if len < HEADER_BYTES {
        return Err(truncated(HEADER_BYTES));
    }
    let field = |at: usize, n: usize| &bytes[at..at + n];
    let mut sealed_len = [0u8; 4];
    sealed_len.copy_from_slice(field(SEALED_LEN_AT, 4));
    let sealed_len = u32::from_be_bytes(sealed_len) as usize;
    let corrupt = |detail| StoreError::Corrupt {
        id: id.to_owned(),
        path: path.to_owned(),
        detail,
    };
    if !(PAYLOAD_FIXED_BYTES + TAG_BYTES..=MAX_SEALED_BYTES).contains(&sealed_len) {
        return Err(corrupt("the header states an impossible length"));
    }
    let expected = HEADER_BYTES + sealed_len;
    if len < expected {
        return Err(truncated(expected));
    }
    if len > expected {
        return Err(corrupt("bytes follow the sealed credential"));
    }
    let mut key_id = [0u8; KEY_ID_BYTES];
    key_id.copy_from_slice(field(KEY_ID_AT, KEY_ID_BYTES));
    let mut salt = [0u8; SALT_BYTES];
    salt.copy_from_slice(field(SALT_AT, SALT_BYTES));
    let mut nonce = [0u8; NONCE_BYTES];
    nonce.copy_from_slice(field(NONCE_AT, NONCE_BYTES));
    Ok(Header {
        key_id: KeyId(key_id),
        salt,
        nonce,
    })
}

/// Splits an authenticated plaintext into its fields; `None` when it is malformed (which
/// only a bug or a forger holding the master key could cause).
fn parse_payload(plain: &[u8]) -> Option<Payload<'_>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    fn be_u64(b: &[u8]) -> u64 {
        b.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x))
    }
    let mut rest = plain;
    let created = be_u64(take(&mut rest, 8)?);
    let updated = be_u64(take(&mut rest, 8)?);
    let source_len = be_u64(take(&mut rest, 2)?) as usize;
    let source = std::str::from_utf8(take(&mut rest, source_len)?).ok()?;
    let secret_len = be_u64(take(&mut rest, 4)?) as usize;
    let secret = std::str::from_utf8(take(&mut rest, secret_len)?).ok()?;
    rest.is_empty().then_some(Payload {
        created,
        updated,
        source,
        secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::master_key::tests::{other_key, test_key, OTHER_KEY_HEX, TEST_KEY_HEX};
    use proptest::prelude::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_owned())
    }

    fn open(dir: &Path) -> SecureStorage {
        SecureStorage::open(dir, test_key()).unwrap()
    }

    /// A temp dir with the mode a store directory needs (tempfile makes them 0755 under
    /// the usual umask).
    fn private_tempdir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o700);
        tmp
    }

    /// A store in a fresh temp dir (the `TempDir` must outlive the store).
    fn fresh() -> (tempfile::TempDir, SecureStorage) {
        let tmp = private_tempdir();
        let store = open(&tmp.path().join("store"));
        (tmp, store)
    }

    fn value(store: &SecureStorage, id: &str) -> Option<String> {
        store.get(id).unwrap().map(|c| c.secret.expose().to_owned())
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn temp_files(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.unwrap().file_name().into_string().ok())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect()
    }

    /// Replaces a credential file's content without touching its mode.
    fn overwrite(store: &SecureStorage, id: &str, bytes: &[u8]) {
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
        assert_eq!(mode_of(&dir.join(LOCK_NAME)), 0o600);
        let bytes = std::fs::read(&path).unwrap();
        let find = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!find(b"PLAINTEXT") && !find(b"env-file") && !find(b"gemini"));
    }

    #[test]
    fn the_header_is_laid_out_as_documented() {
        let (_tmp, store) = fresh();
        store.put("p1", &secret("sk-abc"), "set").unwrap();
        let a = std::fs::read(store.path_of("p1")).unwrap();
        assert_eq!(&a[..8], b"PRVDCRED");
        assert_eq!(a[8], FORMAT_VERSION);
        assert_eq!(a[9], ALGORITHM_AES_256_GCM);
        assert_eq!(&a[10..18], store.key_id().as_bytes());
        assert_eq!(HEADER_BYTES, 66);
        assert_eq!(MAX_FILE_BYTES, 66 + 17_446, "the bound FORMAT.md states");
        let sealed = u32::from_be_bytes(a[62..66].try_into().unwrap()) as usize;
        assert_eq!(sealed, 8 + 8 + 2 + "set".len() + 4 + "sk-abc".len() + 16);
        assert_eq!(a.len(), HEADER_BYTES + sealed);

        // The same secret sealed again gets a fresh salt, nonce and ciphertext.
        store.put("p1", &secret("sk-abc"), "set").unwrap();
        let b = std::fs::read(store.path_of("p1")).unwrap();
        assert_ne!(a[18..50], b[18..50], "salt");
        assert_ne!(a[50..62], b[50..62], "nonce");
        assert_ne!(a[HEADER_BYTES..], b[HEADER_BYTES..], "ciphertext");
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

    /// What every byte of a sealed file is, for the flip test.
    fn expected_for_flip(at: usize) -> &'static str {
        match at {
            0..8 => "magic",
            8 => "version",
            9 => "algorithm",
            10..18 => "key id",
            18..62 => "authentication", // salt and nonce
            62..66 => "length",
            _ => "authentication",
        }
    }

    #[test]
    fn flipping_any_byte_gives_the_error_for_that_field() {
        let (_tmp, store) = fresh();
        store
            .put("anthropic", &secret("sk-ant-api03-abcdef"), "set")
            .unwrap();
        let good = std::fs::read(store.path_of("anthropic")).unwrap();
        for at in 0..good.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= mask;
                overwrite(&store, "anthropic", &bad);
                let e = store
                    .get("anthropic")
                    .expect_err("a flipped byte never opens");
                let ok = matches!(
                    (expected_for_flip(at), &e),
                    ("magic", StoreError::UnknownMagic { .. })
                        | ("version", StoreError::UnsupportedVersion { .. })
                        | ("algorithm", StoreError::UnknownAlgorithm { .. })
                        | ("key id", StoreError::WrongKey { .. })
                        | ("authentication", StoreError::Authentication { .. })
                        | (
                            "length",
                            StoreError::Truncated { .. } | StoreError::Corrupt { .. }
                        )
                );
                assert!(ok, "byte {at} ^ {mask:#x}: {e}");
                assert!(e.to_string().contains("'anthropic'"), "{e}");
                // list() reports the same damage instead of failing as a whole.
                assert!(store.list().unwrap()[0].is_err());
            }
        }
        overwrite(&store, "anthropic", &good);
        assert_eq!(
            value(&store, "anthropic").as_deref(),
            Some("sk-ant-api03-abcdef")
        );
    }

    #[test]
    fn a_file_cut_at_any_length_is_reported_truncated() {
        let (_tmp, store) = fresh();
        store.put("openai", &secret("sk-proj-1234"), "set").unwrap();
        let good = std::fs::read(store.path_of("openai")).unwrap();
        for len in 0..good.len() {
            overwrite(&store, "openai", &good[..len]);
            match store.get("openai") {
                Err(StoreError::Truncated { len: found, .. }) => assert_eq!(found, len),
                other => panic!("cut at {len}: expected Truncated, got {other:?}"),
            }
        }
        let mut longer = good.clone();
        longer.push(0);
        overwrite(&store, "openai", &longer);
        assert!(matches!(
            store.get("openai"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn unknown_magic_version_and_algorithm_are_named() {
        let (_tmp, store) = fresh();
        store.put("p", &secret("s"), "set").unwrap();
        let good = std::fs::read(store.path_of("p")).unwrap();

        overwrite(&store, "p", b"ANTHROPIC_API_KEY=sk-plaintext\n");
        let e = store.get("p").unwrap_err();
        assert!(matches!(e, StoreError::UnknownMagic { .. }), "{e}");
        assert!(
            !e.to_string().contains("sk-plaintext"),
            "no plaintext fallback or echo"
        );

        let mut v2 = good.clone();
        v2[8] = 2;
        overwrite(&store, "p", &v2);
        let e = store.get("p").unwrap_err();
        assert!(
            matches!(e, StoreError::UnsupportedVersion { version: 2, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("format version 2"), "{e}");

        let mut alg = good.clone();
        alg[9] = 7;
        overwrite(&store, "p", &alg);
        let e = store.get("p").unwrap_err();
        assert!(
            matches!(e, StoreError::UnknownAlgorithm { algorithm: 7, .. }),
            "{e}"
        );
    }

    #[test]
    fn a_wrong_master_key_is_told_apart_from_damage() {
        let tmp = private_tempdir();
        let store = open(tmp.path());
        store.put("anthropic", &secret("sk-ant"), "set").unwrap();
        let wrong = SecureStorage::open(tmp.path(), other_key()).unwrap();
        let e = wrong.get("anthropic").unwrap_err();
        match &e {
            StoreError::WrongKey { file_key, key, .. } => {
                assert_eq!(*file_key, test_key().key_id());
                assert_eq!(*key, other_key().key_id());
            }
            other => panic!("expected WrongKey, got {other:?}"),
        }
        assert!(e.to_string().contains("wrong master key"), "{e}");
        assert!(!e.to_string().contains(&TEST_KEY_HEX[..12]));
    }

    #[test]
    fn a_file_renamed_to_another_provider_does_not_open() {
        let (_tmp, store) = fresh();
        store.put("anthropic", &secret("sk-ant"), "set").unwrap();
        std::fs::rename(store.path_of("anthropic"), store.path_of("openai")).unwrap();
        assert!(matches!(
            store.get("openai"),
            Err(StoreError::Authentication { id, .. }) if id == "openai"
        ));
        std::fs::copy(store.path_of("openai"), store.path_of("anthropic")).unwrap();
        assert_eq!(value(&store, "anthropic").as_deref(), Some("sk-ant"));
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

    #[test]
    fn stale_temp_files_are_ignored_and_swept_on_open() {
        let (_tmp, store) = fresh();
        store.put("p", &secret("s"), "set").unwrap();
        let stale = store.dir().join(format!("{TEMP_PREFIX}p-0011223344556677"));
        std::fs::write(&stale, b"PRVDCRED half a file").unwrap();
        assert_eq!(value(&store, "p").as_deref(), Some("s"));
        assert_eq!(store.list().unwrap().len(), 1);
        let store = open(store.dir());
        assert!(!stale.exists());
        assert_eq!(value(&store, "p").as_deref(), Some("s"));
    }

    #[test]
    fn the_writers_lock_excludes_other_open_file_descriptions() {
        let (_tmp, store) = fresh();
        let held = store.lock().unwrap();
        // Another description of the same file, as another thread or process would have.
        let other = File::open(store.dir().join(LOCK_NAME)).unwrap();
        let try_lock = || crate::sys::flock(&other, crate::sys::Lock::ExclusiveTry);
        assert_eq!(
            try_lock().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        drop(held);
        try_lock().unwrap();
    }

    // ---- failure injection ------------------------------------------------------

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Step {
        Create,
        Write,
        SyncFile,
        Rename,
        SyncDir,
        Remove,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum When {
        /// The step fails without taking effect (a write fails half-way).
        Before,
        /// The step takes effect, then the failure comes.
        After,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Failure {
        /// The step returns an error and the process goes on (cleans up, reports).
        Error,
        /// The process dies at that point: nothing it does afterwards reaches the disk.
        Crash,
    }

    /// Real steps, with one failure injected at the `nth` occurrence of `step`. The
    /// action passed to `gate` is told whether the failure strikes before it completes.
    struct Faulty {
        step: Step,
        when: When,
        failure: Failure,
        nth: usize,
        seen: AtomicUsize,
        dead: AtomicBool,
    }

    impl Faulty {
        fn new(step: Step, when: When, failure: Failure, nth: usize) -> Faulty {
            Faulty {
                step,
                when,
                failure,
                nth,
                seen: AtomicUsize::new(0),
                dead: AtomicBool::new(false),
            }
        }

        fn gate<T>(
            &self,
            step: Step,
            act: impl FnOnce(bool) -> std::io::Result<T>,
        ) -> std::io::Result<T> {
            let injected = || std::io::Error::other(format!("injected failure at {step:?}"));
            if self.dead.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("the process has crashed"));
            }
            if step != self.step || self.seen.fetch_add(1, Ordering::SeqCst) != self.nth {
                return act(false);
            }
            if self.failure == Failure::Crash {
                self.dead.store(true, Ordering::SeqCst);
            }
            match self.when {
                When::Before => {
                    act(true)?;
                    Err(injected())
                }
                When::After => {
                    act(false)?;
                    Err(injected())
                }
            }
        }
    }

    impl WriteSteps for Faulty {
        fn create(&self, path: &Path) -> std::io::Result<File> {
            let mut file = None;
            self.gate(Step::Create, |before| {
                if !before {
                    file = Some(OsSteps.create(path)?);
                }
                Ok(())
            })?;
            Ok(file.expect("created when no failure was injected"))
        }

        fn write(&self, file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
            self.gate(Step::Write, |torn| {
                // A failure before the write completes leaves half of it on disk.
                let n = if torn { bytes.len() / 2 } else { bytes.len() };
                OsSteps.write(file, &bytes[..n])
            })
        }

        fn sync_file(&self, file: &File) -> std::io::Result<()> {
            self.gate(Step::SyncFile, |skip| {
                if skip {
                    Ok(())
                } else {
                    OsSteps.sync_file(file)
                }
            })
        }

        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.gate(Step::Rename, |skip| {
                if skip {
                    Ok(())
                } else {
                    OsSteps.rename(from, to)
                }
            })
        }

        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            self.gate(Step::SyncDir, |skip| {
                if skip {
                    Ok(())
                } else {
                    OsSteps.sync_dir(dir)
                }
            })
        }

        fn remove(&self, path: &Path) -> std::io::Result<()> {
            self.gate(Step::Remove, |skip| {
                if skip {
                    Ok(())
                } else {
                    OsSteps.remove(path)
                }
            })
        }
    }

    fn faulty_store(dir: &Path, steps: Faulty) -> SecureStorage {
        SecureStorage::open_with(dir.to_owned(), test_key(), Box::new(steps)).unwrap()
    }

    #[test]
    fn a_write_failing_or_crashing_at_any_step_leaves_the_old_or_the_new_value() {
        let steps = [
            Step::Create,
            Step::Write,
            Step::SyncFile,
            Step::Rename,
            Step::SyncDir,
        ];
        for step in steps {
            for when in [When::Before, When::After] {
                for failure in [Failure::Error, Failure::Crash] {
                    for had_old in [true, false] {
                        let case = format!("{step:?} {when:?} {failure:?} old={had_old}");
                        let tmp = private_tempdir();
                        if had_old {
                            open(tmp.path()).put("p", &secret("old"), "set").unwrap();
                        }
                        let store = faulty_store(tmp.path(), Faulty::new(step, when, failure, 0));
                        let e = store.put("p", &secret("new"), "set").expect_err(&case);
                        assert!(matches!(e, StoreError::Io { .. }), "{case}: {e}");
                        drop(store);

                        // The daemon restarts: the store opens and holds exactly one value.
                        let renamed =
                            step == Step::SyncDir || (step == Step::Rename && when == When::After);
                        let store = open(tmp.path());
                        let expected = match (renamed, had_old) {
                            (true, _) => Some("new"),
                            (false, true) => Some("old"),
                            (false, false) => None,
                        };
                        assert_eq!(value(&store, "p").as_deref(), expected, "{case}");
                        assert!(temp_files(tmp.path()).is_empty(), "{case}: garbage left");
                        assert!(store.list().unwrap().iter().all(Result::is_ok), "{case}");
                        store.put("p", &secret("later"), "set").unwrap();
                        assert_eq!(value(&store, "p").as_deref(), Some("later"), "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_failed_write_that_is_not_a_crash_cleans_up_its_temp_file_at_once() {
        let tmp = private_tempdir();
        let store = faulty_store(
            tmp.path(),
            Faulty::new(Step::SyncFile, When::After, Failure::Error, 0),
        );
        store.put("p", &secret("new"), "set").unwrap_err();
        assert!(temp_files(tmp.path()).is_empty());
        assert_eq!(value(&store, "p"), None);
    }

    #[test]
    fn a_failed_remove_leaves_the_credential_readable() {
        let tmp = private_tempdir();
        open(tmp.path()).put("p", &secret("old"), "set").unwrap();
        let store = faulty_store(
            tmp.path(),
            Faulty::new(Step::Remove, When::Before, Failure::Crash, 0),
        );
        store.remove("p").unwrap_err();
        assert_eq!(value(&open(tmp.path()), "p").as_deref(), Some("old"));
    }

    // ---- concurrency --------------------------------------------------------------

    #[test]
    fn concurrent_writers_and_readers_never_see_a_torn_credential() {
        const THREADS: usize = 4;
        const ROUNDS: usize = 12;
        let (_tmp, store) = fresh();
        let store = Arc::new(store);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let store = &store;
                s.spawn(move || {
                    for r in 0..ROUNDS {
                        store
                            .put("shared", &secret(&format!("t{t}-r{r}")), "set")
                            .unwrap();
                        store
                            .put(&format!("own-{t}"), &secret(&format!("r{r}")), "set")
                            .unwrap();
                    }
                });
            }
            let store = &store;
            s.spawn(move || {
                for _ in 0..THREADS * ROUNDS * 2 {
                    // Absent before the first write, a complete value after: never an error.
                    if let Some(c) = store.get("shared").unwrap() {
                        assert!(c.secret.expose().starts_with('t'));
                    }
                    for item in store.list().unwrap() {
                        item.unwrap();
                    }
                }
            });
        });
        let last: Vec<_> = (0..THREADS)
            .map(|t| format!("t{t}-r{}", ROUNDS - 1))
            .collect();
        assert!(last.contains(&value(&store, "shared").unwrap()));
        for t in 0..THREADS {
            assert_eq!(
                value(&store, &format!("own-{t}")),
                Some(format!("r{}", ROUNDS - 1))
            );
        }
        assert!(temp_files(store.dir()).is_empty());
    }

    /// Environment variables handing the child process its work.
    const CHILD_DIR: &str = "PROVD_TEST_STORE_CHILD_DIR";
    const CHILD_TAG: &str = "PROVD_TEST_STORE_CHILD_TAG";
    const PROCESS_ROUNDS: usize = 10;

    fn write_rounds(store: &SecureStorage, tag: &str) {
        for r in 0..PROCESS_ROUNDS {
            store
                .put("shared", &secret(&format!("{tag}-r{r}")), "set")
                .unwrap();
            store
                .put(&format!("own-{tag}"), &secret(&format!("r{r}")), "set")
                .unwrap();
            store.get("shared").unwrap().unwrap();
        }
    }

    /// Not a test: the body of the child processes of the test below.
    #[test]
    #[ignore = "helper run as a child process by two_processes_writing_at_once_do_not_corrupt_the_store"]
    fn child_process_writer() {
        let (Some(dir), Some(tag)) = (std::env::var_os(CHILD_DIR), std::env::var(CHILD_TAG).ok())
        else {
            return;
        };
        write_rounds(&open(Path::new(&dir)), &tag);
    }

    #[test]
    fn two_processes_writing_at_once_do_not_corrupt_the_store() {
        let (_tmp, store) = fresh();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = ["child1", "child2"]
            .iter()
            .map(|tag| {
                std::process::Command::new(&exe)
                    .args([
                        "credentials::store::tests::child_process_writer",
                        "--exact",
                        "--ignored",
                        "--nocapture",
                    ])
                    .env(CHILD_DIR, store.dir())
                    .env(CHILD_TAG, tag)
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        write_rounds(&store, "parent");
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "child failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains("1 passed"),
                "the child ran the helper: {stdout}"
            );
        }
        let last: Vec<_> = ["parent", "child1", "child2"]
            .iter()
            .map(|t| format!("{t}-r{}", PROCESS_ROUNDS - 1))
            .collect();
        assert!(last.contains(&value(&store, "shared").unwrap()));
        for tag in ["parent", "child1", "child2"] {
            assert_eq!(
                value(&store, &format!("own-{tag}")),
                Some(format!("r{}", PROCESS_ROUNDS - 1))
            );
        }
        assert!(temp_files(store.dir()).is_empty());
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
    fn a_rotation_cut_short_is_finished_by_running_it_again() {
        for failure in [Failure::Crash, Failure::Error] {
            let tmp = private_tempdir();
            let plain = open(tmp.path());
            for id in ["a", "b", "c", "d"] {
                plain.put(id, &secret(&format!("sk-{id}")), "set").unwrap();
            }
            drop(plain);
            // The third file's rename fails: a and b are re-sealed, c and d are not.
            let mut store = faulty_store(
                tmp.path(),
                Faulty::new(Step::Rename, When::Before, failure, 2),
            );
            store.rotate(other_key()).unwrap_err();
            assert_eq!(
                store.key_id(),
                test_key().key_id(),
                "the old key stays on error"
            );
            drop(store);

            let new_key_files = |dir: &Path| {
                ["a", "b", "c", "d"]
                    .iter()
                    .filter(|id| {
                        let bytes = std::fs::read(dir.join(format!("{id}.cred"))).unwrap();
                        bytes[10..18] == other_key().key_id().as_bytes()[..]
                    })
                    .count()
            };
            assert_eq!(new_key_files(tmp.path()), 2, "{failure:?}: half-way");

            // Restart with the old key and run the same rotation: only the rest is done.
            let mut store = open(tmp.path());
            assert!(temp_files(tmp.path()).is_empty());
            assert_eq!(store.rotate(other_key()).unwrap(), 2, "{failure:?}");
            assert_eq!(new_key_files(tmp.path()), 4);
            for id in ["a", "b", "c", "d"] {
                assert_eq!(value(&store, id), Some(format!("sk-{id}")));
            }
            let reopened = SecureStorage::open(tmp.path(), other_key()).unwrap();
            assert_eq!(
                reopened
                    .list()
                    .unwrap()
                    .iter()
                    .filter(|r| r.is_ok())
                    .count(),
                4
            );
        }
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

    // ---- arbitrary content ----------------------------------------------------------

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_as_a_credential_file_never_open_or_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let (_tmp, store) = fresh();
            overwrite(&store, "p", &bytes);
            prop_assert!(store.get("p").is_err());
            prop_assert!(store.list().unwrap()[0].is_err());
        }

        #[test]
        fn arbitrary_damage_to_a_real_file_never_opens_or_panics(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
            cut in proptest::option::of(any::<usize>()),
        ) {
            let (_tmp, store) = fresh();
            store.put("p", &secret("sk-value"), "set").unwrap();
            let good = std::fs::read(store.path_of("p")).unwrap();
            let mut bad = good.clone();
            for (at, x) in edits {
                let at = at % bad.len();
                bad[at] ^= x;
            }
            if let Some(cut) = cut {
                bad.truncate(cut % (bad.len() + 1));
            }
            overwrite(&store, "p", &bad);
            match store.get("p") {
                Ok(found) => {
                    prop_assert_eq!(&bad, &good, "only an undamaged file opens");
                    let found = found.unwrap().secret;
                    prop_assert_eq!(found.expose(), "sk-value");
                }
                Err(_) => prop_assert_ne!(&bad, &good),
            }
        }
    }
}
