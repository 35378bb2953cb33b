//! Why the store or one of its credentials cannot be used: one [`StoreError`] variant per
//! failure, so a wrong master key, a damaged file, a truncated file and a file from a
//! newer provd are told apart (`FORMAT.md` lists which check gives which).

use std::path::{Path, PathBuf};

use super::format::{FORMAT_VERSION, MAX_ID_BYTES};
use crate::credentials::master_key::KeyId;

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

/// An [`StoreError::Io`] maker for `map_err`: what was being done, and to which path.
pub(super) fn io_err(
    action: impl Into<String>,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> StoreError {
    let action = action.into();
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}
