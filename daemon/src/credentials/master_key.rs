//! The master key that seals the credential store, where it comes from, and the keys
//! derived from it.
//!
//! # Where the key comes from
//!
//! [`MasterKey::load`] tries, in this order, and returns the first source that exists:
//!
//! 1. the systemd credential `$CREDENTIALS_DIRECTORY/provd-master-key` (`LoadCredential=`
//!    or `LoadCredentialEncrypted=` in the unit): systemd keeps it in a private
//!    per-service directory, which is the best place for a key;
//! 2. the file named by `$PROVD_MASTER_KEY_FILE`, refused unless it is a regular file
//!    owned by the daemon's user (or root) with no group or other permission bits, and
//!    every directory above it (symbolic links resolved) passes the trust rule shared with
//!    the configuration file ([`provd_client::trust`]);
//! 3. the environment variable `$SECRET_KEY` (hex only), the least good: the environment
//!    of a process is readable by its user and inherited by children.
//!
//! A source that is present but unusable (unreadable, loose mode, weak key) is an error,
//! not a reason to fall back to the next one: silently using another key would seal new
//! credentials under a key the operator did not mean.
//!
//! # What a key must carry
//!
//! At least 256 bits: 64 or more hex digits (decoded), or a file of at least 32 raw
//! bytes. A key file whose content is printable text but not hex is taken as raw bytes and
//! must then be at least 43 characters (256 bits at 6 bits a character, base64's density).
//! Decoded keys are then checked against mistakes, not measured for entropy: fewer than
//! [`MIN_DISTINCT_BYTES`] distinct byte values, a repeated pattern (the key equals itself
//! shifted by at most half its length) and a counting sequence (every byte the previous
//! plus a constant) are refused. A random 32-byte key has about 30 distinct values and
//! fails one of these checks with negligible probability (below 2^-100).
//!
//! # What is derived from it
//!
//! All by HKDF-SHA256, so the raw key itself is used for nothing but HKDF input:
//! the [`KeyId`] stored in every sealed file (to tell a wrong key from a damaged file),
//! the HMAC key of credential fingerprints, and one AES-256-GCM key per credential file
//! (salted by the file's random salt). The labels are in the constants below; changing
//! one changes every derived key, so they are part of the file format.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, hkdf, hmac};
use zeroize::Zeroizing;

use crate::secret::Secret;

/// The systemd credential name looked up in `$CREDENTIALS_DIRECTORY`.
pub const SYSTEMD_CREDENTIAL_NAME: &str = "provd-master-key";
/// The variable naming the systemd credentials directory (set by systemd).
pub const CREDENTIALS_DIRECTORY_VAR: &str = "CREDENTIALS_DIRECTORY";
/// The variable naming a key file.
pub const KEY_FILE_VAR: &str = "PROVD_MASTER_KEY_FILE";
/// The variable holding the key itself, in hex.
pub const KEY_ENV_VAR: &str = "SECRET_KEY";
/// The least key material accepted, in bytes (256 bits).
pub const MIN_KEY_BYTES: usize = 32;
/// The least key length accepted for a key file of printable non-hex text, in characters.
pub const MIN_TEXT_KEY_CHARS: usize = 43;
/// The fewest distinct byte values a key may have.
pub const MIN_DISTINCT_BYTES: usize = 16;
/// The largest key file read, in bytes: a key is small, and a bound keeps a mistaken path
/// (a log file, a device) from being read whole.
pub const MAX_KEY_FILE_BYTES: usize = 4096;
/// The length of a [`KeyId`] in bytes.
pub const KEY_ID_BYTES: usize = 8;
/// The length of a credential fingerprint in bytes (shown as twice as many hex digits).
pub const FINGERPRINT_BYTES: usize = 6;

/// HKDF salt for the keys derived once per master key (key id, fingerprint key).
const DERIVATION_SALT: &[u8] = b"provd master key derivation v1";
/// HKDF info of the key id.
const INFO_KEY_ID: &[u8] = b"provd key id v1";
/// HKDF info of the fingerprint HMAC key.
const INFO_FINGERPRINT: &[u8] = b"provd credential fingerprint v1";
/// HKDF info of a credential file's AES-256-GCM key (the salt is the file's own).
const INFO_FILE_KEY: &[u8] = b"provd credential file key v1";

/// What to tell someone whose key is missing or refused.
const HOW_TO_MAKE_ONE: &str =
    "make one with `provd key generate` (64 hex digits from the system's random generator)";

/// A short public identifier of a master key, derived from it by HKDF (not a hash of the
/// key alone, so it is useless for guessing the key). Stored in each sealed file so that a
/// wrong key is told apart from a damaged file, and so that rotation knows which files are
/// already done.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; KEY_ID_BYTES]);

impl KeyId {
    /// The raw bytes, as stored in a file header.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_BYTES] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&super::hex(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Where the master key was found; the caller logs this, never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterKeySource {
    /// The systemd credential at this path.
    SystemdCredential(PathBuf),
    /// The file named by `$PROVD_MASTER_KEY_FILE`.
    KeyFile(PathBuf),
    /// The `$SECRET_KEY` environment variable.
    Environment,
}

impl fmt::Display for MasterKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterKeySource::SystemdCredential(p) => {
                write!(f, "systemd credential {}", p.display())
            }
            MasterKeySource::KeyFile(p) => write!(f, "key file {} (${KEY_FILE_VAR})", p.display()),
            MasterKeySource::Environment => write!(f, "environment variable ${KEY_ENV_VAR}"),
        }
    }
}

/// Where the lookup reads its variables: the process environment in the daemon, a map in
/// tests (which run in parallel threads and must not change the shared environment).
pub trait KeyEnvironment {
    /// The variable's value, if set.
    fn var_os(&self, name: &str) -> Option<OsString>;
}

/// The real process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnvironment;

impl KeyEnvironment for ProcessEnvironment {
    fn var_os(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

impl<K: Borrow<str> + Ord, V: AsRef<OsStr>> KeyEnvironment for BTreeMap<K, V> {
    fn var_os(&self, name: &str) -> Option<OsString> {
        self.get(name).map(|v| v.as_ref().to_owned())
    }
}

/// Why no usable master key was found. Messages name the source and say how to fix it;
/// none contains key material.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// None of the sources is set.
    #[error(
        "no master key: provide the systemd credential {SYSTEMD_CREDENTIAL_NAME} \
         (LoadCredential=), a key file named by ${KEY_FILE_VAR} (mode 0600), or \
         ${KEY_ENV_VAR} (hex); {HOW_TO_MAKE_ONE}"
    )]
    Missing,
    /// A key file could not be opened or read.
    #[error("master key {}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file others may read or change.
    #[error(
        "master key {}: mode {mode:04o} gives {who} access; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    LooseMode {
        /// The file.
        path: PathBuf,
        /// The permission bits found.
        mode: u32,
        /// Whom the mode lets in ("group or other users", "other users").
        who: &'static str,
    },
    /// A key file owned by someone other than the daemon's user or root.
    #[error(
        "master key {}: owned by uid {owner}, expected uid {expected} (the daemon's user) or root",
        path.display()
    )]
    WrongOwner {
        /// The file.
        path: PathBuf,
        /// The owner found.
        owner: u32,
        /// The daemon's effective uid.
        expected: u32,
    },
    /// A directory above the key file could be changed by a user other than the daemon's
    /// and root, who could then swap the key for one they know.
    #[error("master key {}: refused: {reason}", path.display())]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// The path that broke the rule, its owner and mode, and the rule.
        reason: provd_client::trust::Untrusted,
    },
    /// The path is not a regular file (a directory, a FIFO, a device).
    #[error("master key {}: not a regular file", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
    },
    /// The file is larger than a key can be.
    #[error("master key {}: larger than {MAX_KEY_FILE_BYTES} bytes, not a key file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// The key is text but not hex where hex is required.
    #[error("master key from {origin}: must be hex (64 or more hex digits); {HOW_TO_MAKE_ONE}")]
    NotHex {
        /// Where the key came from.
        origin: String,
    },
    /// The key carries fewer than 256 bits.
    #[error(
        "master key from {origin}: carries {bits} bits, at least {} are needed; {HOW_TO_MAKE_ONE}",
        MIN_KEY_BYTES * 8
    )]
    TooShort {
        /// Where the key came from.
        origin: String,
        /// The bits found.
        bits: usize,
    },
    /// The key is long enough but obviously not random.
    #[error("master key from {origin}: refused as weak ({reason}); {HOW_TO_MAKE_ONE}")]
    Weak {
        /// Where the key came from.
        origin: String,
        /// Which check failed.
        reason: String,
    },
    /// The system's random generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The key that seals the credential store. Zeroed on drop, redacted in Debug; only its
/// [`KeyId`] is ever shown.
pub struct MasterKey {
    material: Zeroizing<Vec<u8>>,
    id: KeyId,
    fingerprint_key: hmac::Key,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id {}, ***)", self.id)
    }
}

/// An HKDF output length, for derivations that are not keys of a ring algorithm.
struct OutputLen(usize);

impl hkdf::KeyType for OutputLen {
    fn len(&self) -> usize {
        self.0
    }
}

impl MasterKey {
    /// Looks the key up in the documented order (systemd credential, `$PROVD_MASTER_KEY_FILE`,
    /// `$SECRET_KEY`) and says which source was used.
    pub fn load(env: &dyn KeyEnvironment) -> Result<(MasterKey, MasterKeySource), MasterKeyError> {
        if let Some(dir) = env
            .var_os(CREDENTIALS_DIRECTORY_VAR)
            .filter(|d| !d.is_empty())
        {
            let path = PathBuf::from(dir).join(SYSTEMD_CREDENTIAL_NAME);
            // systemd sets the directory for every service with any credential; only a
            // missing provd credential lets the lookup go on.
            match read_key_file(&path, FilePolicy::Systemd) {
                Ok(bytes) => {
                    let origin = format!("systemd credential {}", path.display());
                    let key = MasterKey::from_file_contents(&bytes, &origin)?;
                    return Ok((key, MasterKeySource::SystemdCredential(path)));
                }
                Err(MasterKeyError::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if let Some(file) = env.var_os(KEY_FILE_VAR).filter(|f| !f.is_empty()) {
            // Named explicitly, so a missing file is an error, not a fall-through.
            let path = PathBuf::from(file);
            let bytes = read_key_file(&path, FilePolicy::Private)?;
            let origin = format!("key file {}", path.display());
            let key = MasterKey::from_file_contents(&bytes, &origin)?;
            return Ok((key, MasterKeySource::KeyFile(path)));
        }
        if let Some(value) = env.var_os(KEY_ENV_VAR).filter(|v| !v.is_empty()) {
            let origin = format!("${KEY_ENV_VAR}");
            let text = Zeroizing::new(value.into_encoded_bytes());
            let key = MasterKey::from_hex(&text, &origin)?;
            return Ok((key, MasterKeySource::Environment));
        }
        Err(MasterKeyError::Missing)
    }

    /// A key from hex digits (surrounding ASCII whitespace ignored); `origin` names where
    /// it came from in errors.
    pub fn from_hex(text: &[u8], origin: &str) -> Result<MasterKey, MasterKeyError> {
        let text = text.trim_ascii();
        let not_hex = || MasterKeyError::NotHex {
            origin: origin.to_owned(),
        };
        if text.is_empty() || !text.iter().all(u8::is_ascii_hexdigit) {
            return Err(not_hex());
        }
        if text.len() < MIN_KEY_BYTES * 2 {
            return Err(MasterKeyError::TooShort {
                origin: origin.to_owned(),
                bits: text.len() * 4,
            });
        }
        if text.len() % 2 != 0 {
            return Err(not_hex());
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() / 2));
        for pair in text.chunks_exact(2) {
            bytes.push((hex_value(pair[0]) << 4) | hex_value(pair[1]));
        }
        MasterKey::from_material(bytes, origin)
    }

    /// A key from the bytes of a key file: hex when the content (whitespace trimmed) is all
    /// hex digits, else the raw bytes (text trimmed of surrounding whitespace and held to
    /// [`MIN_TEXT_KEY_CHARS`], binary taken as is).
    pub fn from_file_contents(bytes: &[u8], origin: &str) -> Result<MasterKey, MasterKeyError> {
        let trimmed = bytes.trim_ascii();
        if !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_hexdigit) {
            return MasterKey::from_hex(trimmed, origin);
        }
        let is_text = !trimmed.is_empty() && trimmed.iter().all(|b| (0x20..0x7f).contains(b));
        if is_text {
            // Printable text carries at most ~6.5 bits a character; base64 of 32 random
            // bytes is the shortest honest text key.
            if trimmed.len() < MIN_TEXT_KEY_CHARS {
                return Err(MasterKeyError::TooShort {
                    origin: origin.to_owned(),
                    bits: trimmed.len() * 6,
                });
            }
            return MasterKey::from_material(Zeroizing::new(trimmed.to_vec()), origin);
        }
        MasterKey::from_material(Zeroizing::new(bytes.to_vec()), origin)
    }

    /// A key from raw bytes, after the length and weakness checks.
    fn from_material(
        material: Zeroizing<Vec<u8>>,
        origin: &str,
    ) -> Result<MasterKey, MasterKeyError> {
        if material.len() < MIN_KEY_BYTES {
            return Err(MasterKeyError::TooShort {
                origin: origin.to_owned(),
                bits: material.len() * 8,
            });
        }
        if let Some(reason) = weakness(&material) {
            return Err(MasterKeyError::Weak {
                origin: origin.to_owned(),
                reason,
            });
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, DERIVATION_SALT).extract(&material);
        let mut id = [0u8; KEY_ID_BYTES];
        prk.expand(&[INFO_KEY_ID], OutputLen(KEY_ID_BYTES))
            .and_then(|okm| okm.fill(&mut id))
            .map_err(|_| MasterKeyError::Random)?;
        let fingerprint_key = prk
            .expand(&[INFO_FINGERPRINT], hmac::HMAC_SHA256)
            .map(hmac::Key::from)
            .map_err(|_| MasterKeyError::Random)?;
        Ok(MasterKey {
            material,
            id: KeyId(id),
            fingerprint_key,
        })
    }

    /// A new random key as 64 hex digits, for `provd key generate`.
    pub fn generate() -> Result<Secret, MasterKeyError> {
        let mut bytes = Zeroizing::new([0u8; MIN_KEY_BYTES]);
        SystemRandom::new()
            .fill(&mut bytes[..])
            .map_err(|_| MasterKeyError::Random)?;
        Ok(Secret::new(super::hex(&bytes[..])))
    }

    /// This key's identifier.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// The fingerprint of a secret under this key: the first [`FINGERPRINT_BYTES`] of an
    /// HMAC-SHA256 keyed by a key derived from the master key, in hex. Lets an operator
    /// tell two credentials apart without the secret, and reveals nothing to anyone
    /// without the master key (a plain hash of a short key could be brute-forced).
    pub fn fingerprint(&self, secret: &[u8]) -> String {
        let tag = hmac::sign(&self.fingerprint_key, secret);
        super::hex(&tag.as_ref()[..FINGERPRINT_BYTES])
    }

    /// The AES-256-GCM key of one credential file, derived with the file's salt. The key
    /// lives only inside ring's types.
    pub(crate) fn file_key(&self, salt: &[u8]) -> aead::LessSafeKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.material);
        let okm = prk
            .expand(&[INFO_FILE_KEY], &aead::AES_256_GCM)
            // ring refuses only outputs longer than 255 hash lengths; 32 bytes never is.
            .expect("HKDF can always produce a 32-byte key");
        aead::LessSafeKey::new(aead::UnboundKey::from(okm))
    }
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

/// Why a key of sufficient length is obviously not random, if it is. These catch
/// mistakes (a placeholder, a pattern typed by hand), not a clever low-entropy key.
fn weakness(key: &[u8]) -> Option<String> {
    let mut seen = [false; 256];
    for &b in key {
        seen[usize::from(b)] = true;
    }
    let distinct = seen.iter().filter(|s| **s).count();
    if distinct < MIN_DISTINCT_BYTES {
        return Some(format!(
            "only {distinct} distinct byte values, a random key has about 30 in 32 bytes"
        ));
    }
    if let Some(period) = (1..=key.len() / 2).find(|&p| key[p..] == key[..key.len() - p]) {
        return Some(format!("a pattern of {period} bytes repeated"));
    }
    let step = key[1].wrapping_sub(key[0]);
    if key.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step) {
        return Some("a counting sequence".into());
    }
    None
}

/// How strictly a key file's permissions are checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FilePolicy {
    /// A file the operator manages: owned by the daemon's user or root, no group or other
    /// permission bits.
    Private,
    /// A systemd credential: systemd owns it and may share it with the service's group
    /// through ACLs or a 0440 mode, so only access for other users is refused.
    Systemd,
}

/// Opens and checks a key file, then reads it into a zeroizing buffer.
fn read_key_file(path: &Path, policy: FilePolicy) -> Result<Zeroizing<Vec<u8>>, MasterKeyError> {
    use provd_client::trust::{self, TrustError};
    let read_err = |source| MasterKeyError::Read {
        path: path.to_owned(),
        source,
    };
    let trust_err = |e: TrustError| match e {
        TrustError::Untrusted(reason) => MasterKeyError::Untrusted {
            path: path.to_owned(),
            reason,
        },
        io => read_err(io.to_io_error()),
    };
    let mut file = match policy {
        // systemd made the directory and the file and answers for them; it is opened as
        // it is (a credential may be a link systemd placed there).
        FilePolicy::Systemd => {
            // O_NONBLOCK: opening a FIFO must not hang the daemon; it is refused below.
            let file = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(read_err)?;
            // fstat the opened file, not the path, so the file checked is the file read.
            check_key_file_metadata(path, &file.metadata().map_err(read_err)?, policy)?;
            file
        }
        // Symbolic links resolved and the real file opened (without following a link,
        // without blocking on a FIFO); its own stricter rules first, then the shared walk.
        FilePolicy::Private => {
            let opened = trust::open_resolved(path).map_err(trust_err)?;
            check_key_file_metadata(path, opened.metadata(), policy)?;
            opened
                .check(crate::sys::effective_uid())
                .map_err(trust_err)?
        }
    };
    super::read_bounded(&mut file, MAX_KEY_FILE_BYTES)
        .map_err(read_err)?
        .ok_or_else(|| MasterKeyError::TooLarge {
            path: path.to_owned(),
        })
}

/// The key file's own rules: a regular file, no permission for other users (nor, outside
/// systemd, for the group), owned by the daemon's user or root.
fn check_key_file_metadata(
    path: &Path,
    meta: &std::fs::Metadata,
    policy: FilePolicy,
) -> Result<(), MasterKeyError> {
    if !meta.is_file() {
        return Err(MasterKeyError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    let (forbidden, who) = match policy {
        FilePolicy::Private => (0o077, "group or other users"),
        FilePolicy::Systemd => (0o007, "other users"),
    };
    if mode & forbidden != 0 {
        return Err(MasterKeyError::LooseMode {
            path: path.to_owned(),
            mode,
            who,
        });
    }
    let me = crate::sys::effective_uid();
    if policy == FilePolicy::Private && meta.uid() != me && meta.uid() != 0 {
        return Err(MasterKeyError::WrongOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            expected: me,
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A fixed valid key for tests (64 hex digits, random-looking).
    pub(crate) const TEST_KEY_HEX: &str =
        "3f9a1c0e7b52d4a8c61e9f0b2d7a4c3e8f1b6a5d0c9e2f7b4a1d8c3e6f0b9a27";
    /// A second valid key, for rotation and wrong-key tests.
    pub(crate) const OTHER_KEY_HEX: &str =
        "c4e81f2a9b073d65e1f8a2c4b96d037e5a1c8f2b4d96e03a7c15f82b9d4e6a10";

    pub(crate) fn test_key() -> MasterKey {
        MasterKey::from_hex(TEST_KEY_HEX.as_bytes(), "test").unwrap()
    }

    pub(crate) fn other_key() -> MasterKey {
        MasterKey::from_hex(OTHER_KEY_HEX.as_bytes(), "test").unwrap()
    }

    fn env(pairs: &[(&str, &OsStr)]) -> BTreeMap<String, OsString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn write_key(dir: &Path, name: &str, content: &[u8], mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn debug_shows_the_key_id_and_never_the_key() {
        let key = test_key();
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("MasterKey(id {}, ***)", key.key_id()));
        assert!(!shown.contains(&TEST_KEY_HEX[..16]));
    }

    #[test]
    fn key_id_is_derived_not_a_prefix_of_the_key_and_differs_between_keys() {
        let (a, b) = (test_key(), other_key());
        assert_ne!(a.key_id(), b.key_id());
        assert!(!TEST_KEY_HEX.contains(&a.key_id().to_string()));
        assert_eq!(a.key_id(), test_key().key_id(), "stable for one key");
        assert_eq!(a.key_id().to_string().len(), KEY_ID_BYTES * 2);
    }

    #[test]
    fn fingerprints_are_short_keyed_and_not_plain_hashes() {
        let (a, b) = (test_key(), other_key());
        let fp = a.fingerprint(b"sk-ant-123");
        assert_eq!(fp.len(), FINGERPRINT_BYTES * 2);
        assert_eq!(fp, a.fingerprint(b"sk-ant-123"));
        assert_ne!(fp, a.fingerprint(b"sk-ant-124"));
        assert_ne!(fp, b.fingerprint(b"sk-ant-123"), "keyed by the master key");
        let plain = ring::digest::digest(&ring::digest::SHA256, b"sk-ant-123");
        assert!(!super::super::hex(plain.as_ref()).starts_with(&fp));
    }

    #[test]
    fn generated_keys_are_64_hex_digits_and_accepted() {
        let a = MasterKey::generate().unwrap();
        let b = MasterKey::generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(a.expose().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.expose(), b.expose());
        MasterKey::from_hex(a.expose().as_bytes(), "generated").unwrap();
    }

    #[test]
    fn short_and_malformed_hex_is_refused_with_how_to_make_one() {
        let e = MasterKey::from_hex(&TEST_KEY_HEX.as_bytes()[..62], "$SECRET_KEY").unwrap_err();
        assert!(
            matches!(e, MasterKeyError::TooShort { bits: 248, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("provd key generate"), "{e}");
        let odd = format!("{TEST_KEY_HEX}a");
        assert!(matches!(
            MasterKey::from_hex(odd.as_bytes(), "x"),
            Err(MasterKeyError::NotHex { .. })
        ));
        let not_hex = format!("{}zz", &TEST_KEY_HEX[..62]);
        let e = MasterKey::from_hex(not_hex.as_bytes(), "x").unwrap_err();
        assert!(matches!(e, MasterKeyError::NotHex { .. }));
        assert!(!e.to_string().contains(&TEST_KEY_HEX[..20]), "never echoed");
        // Surrounding whitespace (a newline from `echo`) is fine; 128 digits are fine.
        MasterKey::from_hex(format!(" {TEST_KEY_HEX}\n").as_bytes(), "x").unwrap();
        MasterKey::from_hex(format!("{TEST_KEY_HEX}{OTHER_KEY_HEX}").as_bytes(), "x").unwrap();
    }

    #[test]
    fn weak_keys_are_refused() {
        let weak = |hex: String| match MasterKey::from_hex(hex.as_bytes(), "x") {
            Err(MasterKeyError::Weak { reason, .. }) => reason,
            other => panic!("expected a weak-key refusal, got {other:?}"),
        };
        assert!(weak("00".repeat(32)).contains("1 distinct"));
        assert!(weak("ab".repeat(40)).contains("distinct"));
        // The classic placeholder: 0123456789abcdef… decodes to 8 distinct bytes.
        assert!(weak("0123456789abcdef".repeat(4)).contains("distinct"));
        // 16 distinct bytes, repeated twice.
        let pattern: String = (0u8..16).map(|b| format!("{:02x}", b * 17)).collect();
        assert!(weak(pattern.repeat(2)).contains("pattern of 16"));
        // 32 distinct bytes, but counting.
        let counting: String = (0u8..32)
            .map(|b| format!("{:02x}", b.wrapping_mul(3)))
            .collect();
        assert_eq!(weak(counting), "a counting sequence");
    }

    #[test]
    fn key_files_may_hold_hex_raw_bytes_or_long_text() {
        let random: Vec<u8> = (0u8..32)
            .map(|i| i.wrapping_mul(97).wrapping_add(i.wrapping_mul(i)))
            .collect();
        assert!(weakness(&random).is_none());
        let raw = MasterKey::from_file_contents(&random, "f").unwrap();
        let hexed = MasterKey::from_file_contents(
            format!("{}\n", super::super::hex(&random)).as_bytes(),
            "f",
        )
        .unwrap();
        assert_eq!(
            raw.key_id(),
            hexed.key_id(),
            "hex and raw of the same bytes agree"
        );
        let e = MasterKey::from_file_contents(&random[..31], "f").unwrap_err();
        assert!(
            matches!(e, MasterKeyError::TooShort { bits: 248, .. }),
            "{e}"
        );
        // Text that is not hex: base64 of 32 bytes passes, a 40-character phrase does not.
        MasterKey::from_file_contents(b"q3J0bV9kS2ZmN1R2eE1wUWhZc2xBdW9OcmVpZ0tXeg==\n", "f")
            .unwrap();
        let e = MasterKey::from_file_contents(b"correct horse battery staple and more!!!", "f")
            .unwrap_err();
        assert!(matches!(e, MasterKeyError::TooShort { .. }), "{e}");
    }

    #[test]
    fn lookup_prefers_systemd_then_key_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        let systemd = write_key(
            &creds,
            SYSTEMD_CREDENTIAL_NAME,
            TEST_KEY_HEX.as_bytes(),
            0o400,
        );
        let file = write_key(dir.path(), "master.key", OTHER_KEY_HEX.as_bytes(), 0o600);
        let env_hex = MasterKey::generate().unwrap();
        let env_key = OsStr::new(env_hex.expose());

        let all = env(&[
            (CREDENTIALS_DIRECTORY_VAR, creds.as_os_str()),
            (KEY_FILE_VAR, file.as_os_str()),
            (KEY_ENV_VAR, env_key),
        ]);
        let (key, source) = MasterKey::load(&all).unwrap();
        assert_eq!(source, MasterKeySource::SystemdCredential(systemd));
        assert_eq!(key.key_id(), test_key().key_id());

        // A credentials directory without provd's credential is passed over.
        let other_creds = dir.path().join("other-creds");
        std::fs::create_dir(&other_creds).unwrap();
        let (key, source) = MasterKey::load(&env(&[
            (CREDENTIALS_DIRECTORY_VAR, other_creds.as_os_str()),
            (KEY_FILE_VAR, file.as_os_str()),
            (KEY_ENV_VAR, env_key),
        ]))
        .unwrap();
        assert_eq!(source, MasterKeySource::KeyFile(file.clone()));
        assert_eq!(key.key_id(), other_key().key_id());
        assert!(source.to_string().contains("master.key"));

        let (key, source) = MasterKey::load(&env(&[(KEY_ENV_VAR, env_key)])).unwrap();
        assert_eq!(source, MasterKeySource::Environment);
        let expected = MasterKey::from_hex(env_hex.expose().as_bytes(), "x").unwrap();
        assert_eq!(key.key_id(), expected.key_id());

        let e = MasterKey::load(&env(&[])).unwrap_err();
        assert!(matches!(e, MasterKeyError::Missing));
        assert!(e.to_string().contains("provd key generate"), "{e}");
        // Empty variables count as unset.
        let empty = OsStr::new("");
        assert!(matches!(
            MasterKey::load(&env(&[(KEY_FILE_VAR, empty), (KEY_ENV_VAR, empty)])),
            Err(MasterKeyError::Missing)
        ));
    }

    #[test]
    fn a_present_but_bad_source_is_an_error_not_a_fall_through() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.key");
        let e = MasterKey::load(&env(&[
            (KEY_FILE_VAR, missing.as_os_str()),
            (KEY_ENV_VAR, OsStr::new(TEST_KEY_HEX)),
        ]))
        .unwrap_err();
        assert!(matches!(e, MasterKeyError::Read { .. }), "{e}");
        assert!(e.to_string().contains("nope.key"), "{e}");

        let weak = write_key(dir.path(), "weak.key", "00".repeat(32).as_bytes(), 0o600);
        let e = MasterKey::load(&env(&[
            (KEY_FILE_VAR, weak.as_os_str()),
            (KEY_ENV_VAR, OsStr::new(TEST_KEY_HEX)),
        ]))
        .unwrap_err();
        assert!(matches!(e, MasterKeyError::Weak { .. }), "{e}");
        assert!(e.to_string().contains("weak.key"), "{e}");
    }

    #[test]
    fn key_files_with_loose_modes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o644, 0o660, 0o610] {
            let path = write_key(dir.path(), "master.key", TEST_KEY_HEX.as_bytes(), mode);
            let e = MasterKey::load(&env(&[(KEY_FILE_VAR, path.as_os_str())])).unwrap_err();
            match &e {
                MasterKeyError::LooseMode { mode: found, .. } => assert_eq!(*found, mode),
                other => panic!("mode {mode:o}: expected LooseMode, got {other:?}"),
            }
            let text = e.to_string();
            assert!(
                text.contains(&format!("{mode:04o}")) && text.contains("chmod 600"),
                "{text}"
            );
        }
        for mode in [0o600, 0o400] {
            let path = write_key(dir.path(), "master.key", TEST_KEY_HEX.as_bytes(), mode);
            MasterKey::load(&env(&[(KEY_FILE_VAR, path.as_os_str())])).unwrap();
        }
        // A systemd credential may be group-readable (systemd decides), not world-readable.
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        write_key(
            &creds,
            SYSTEMD_CREDENTIAL_NAME,
            TEST_KEY_HEX.as_bytes(),
            0o440,
        );
        MasterKey::load(&env(&[(CREDENTIALS_DIRECTORY_VAR, creds.as_os_str())])).unwrap();
        write_key(
            &creds,
            SYSTEMD_CREDENTIAL_NAME,
            TEST_KEY_HEX.as_bytes(),
            0o444,
        );
        let e =
            MasterKey::load(&env(&[(CREDENTIALS_DIRECTORY_VAR, creds.as_os_str())])).unwrap_err();
        assert!(
            matches!(e, MasterKeyError::LooseMode { mode: 0o444, .. }),
            "{e}"
        );
    }

    #[test]
    fn a_key_file_in_a_directory_others_can_write_is_refused_even_through_a_link() {
        let shared = tempfile::tempdir().unwrap();
        let path = write_key(shared.path(), "master.key", TEST_KEY_HEX.as_bytes(), 0o600);
        MasterKey::load(&env(&[(KEY_FILE_VAR, path.as_os_str())])).unwrap();
        // Others could swap the file for a key they know.
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o733)).unwrap();
        let e = MasterKey::load(&env(&[(KEY_FILE_VAR, path.as_os_str())])).unwrap_err();
        assert!(matches!(e, MasterKeyError::Untrusted { .. }), "{e}");
        assert!(e.to_string().contains("mode 733"), "{e}");
        // A link from a private directory does not help: the real path is checked.
        let private = tempfile::tempdir().unwrap();
        let link = private.path().join("master.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = MasterKey::load(&env(&[(KEY_FILE_VAR, link.as_os_str())])).unwrap_err();
        assert!(matches!(e, MasterKeyError::Untrusted { .. }), "{e}");
        // A systemd credential is trusted as systemd made it.
        let creds = shared.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        write_key(
            &creds,
            SYSTEMD_CREDENTIAL_NAME,
            TEST_KEY_HEX.as_bytes(),
            0o400,
        );
        MasterKey::load(&env(&[(CREDENTIALS_DIRECTORY_VAR, creds.as_os_str())])).unwrap();
    }

    #[test]
    fn key_file_owned_by_another_user_is_refused() {
        if crate::sys::effective_uid() != 0 {
            println!("skipped: changing a file's owner needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = write_key(dir.path(), "master.key", TEST_KEY_HEX.as_bytes(), 0o600);
        std::os::unix::fs::chown(&path, Some(4242), None).unwrap();
        let e = MasterKey::load(&env(&[(KEY_FILE_VAR, path.as_os_str())])).unwrap_err();
        assert!(
            matches!(e, MasterKeyError::WrongOwner { owner: 4242, .. }),
            "{e}"
        );
    }

    #[test]
    fn directories_fifos_and_huge_files_are_not_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = MasterKey::load(&env(&[(KEY_FILE_VAR, sub.as_os_str())])).unwrap_err();
        assert!(matches!(e, MasterKeyError::NotRegularFile { .. }), "{e}");

        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg("-m")
            .arg("600")
            .arg(&fifo)
            .status();
        if matches!(status, Ok(s) if s.success()) {
            let e = MasterKey::load(&env(&[(KEY_FILE_VAR, fifo.as_os_str())])).unwrap_err();
            assert!(matches!(e, MasterKeyError::NotRegularFile { .. }), "{e}");
        }

        let big = write_key(
            dir.path(),
            "big.key",
            &vec![b'a'; MAX_KEY_FILE_BYTES + 1],
            0o600,
        );
        let e = MasterKey::load(&env(&[(KEY_FILE_VAR, big.as_os_str())])).unwrap_err();
        assert!(matches!(e, MasterKeyError::TooLarge { .. }), "{e}");
    }
}
