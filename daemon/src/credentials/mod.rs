//! Credentials: which key a provider uses, the sealed store, the master key that seals
//! it, and the import of API keys from a `.env` file.
//!
//! - [`keys`]: the one place a provider's key is looked up, the sealed store first, then
//!   the environment variables its type lists in the provider table; every platform.
//! - [`store`]: [`SecureStorage`], one AES-256-GCM sealed file per provider id under the
//!   daemon's state directory (format in `FORMAT.md` beside this file), with atomic
//!   writes, an advisory lock for concurrent writers, and key rotation.
//! - [`master_key`]: [`MasterKey`], looked up from a systemd credential, a key file or
//!   `$SECRET_KEY`, with checks that refuse short or obviously weak keys.
//! - [`dotenv`]: [`read_dotenv`], which maps the variables of a `.env` file to the
//!   configured providers.
//!
//! Nothing here logs, prints or returns a secret except as a [`crate::secret::Secret`];
//! decrypted bytes live only in zeroizing buffers, and errors name the provider id and the
//! file, never the content.
//!
//! The store's safety rests on POSIX file modes, owners and `flock`, so everything but
//! [`keys`] is built on Unix only; a Windows daemon would need its own store (ACLs, DPAPI).

#[cfg(unix)]
pub mod dotenv;
pub mod keys;
#[cfg(unix)]
pub mod master_key;
#[cfg(unix)]
pub mod store;
#[cfg(unix)]
pub mod vault;

#[cfg(unix)]
pub use dotenv::{
    read_dotenv, BaseUrlOverride, DotenvError, DotenvImport, ImportedCredential, SkipReason,
    SkippedVariable,
};
#[cfg(unix)]
pub use master_key::{
    KeyEnvironment, KeyId, MasterKey, MasterKeyError, MasterKeySource, ProcessEnvironment,
};
#[cfg(unix)]
pub use store::{CredentialInfo, SecureStorage, StoreError, StoredCredential};
#[cfg(unix)]
pub use vault::{state_dir, Vault, VaultError};

#[cfg(unix)]
use std::io::Read;

#[cfg(unix)]
use zeroize::Zeroizing;

/// Lower-case hex of `bytes`: the daemon's one hex encoder (key ids, token ids,
/// fingerprints). Its output is not wiped: a caller encoding a secret wraps it in
/// `Zeroizing` at once.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(unix)]
/// Reads at most `max` bytes into a buffer that is zeroed when dropped, or `Ok(None)` when
/// the reader holds more than `max`. The buffer is allocated once at its full size, so no
/// reallocation leaves a copy of the bytes behind in freed memory.
pub(crate) fn read_bounded(
    reader: &mut impl Read,
    max: usize,
) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    // One byte more than allowed tells "exactly max" from "too long".
    let mut buf = Zeroizing::new(vec![0u8; max + 1]);
    let mut len = 0;
    while len < buf.len() {
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if len > max {
        return Ok(None);
    }
    // Truncating a Vec never reallocates; the Zeroizing wrapper still wipes the whole
    // capacity on drop.
    buf.truncate(len);
    Ok(Some(buf))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn hex_encodes_lower_case() {
        assert_eq!(hex(&[0x00, 0x1f, 0xa0, 0xff]), "001fa0ff");
    }

    #[test]
    fn bounded_read_refuses_one_byte_more_than_the_limit() {
        let data = [7u8; 10];
        let exact = read_bounded(&mut &data[..], 10).unwrap().unwrap();
        assert_eq!(&exact[..], &data[..]);
        assert!(read_bounded(&mut &data[..], 9).unwrap().is_none());
        assert!(read_bounded(&mut &[][..], 9).unwrap().unwrap().is_empty());
    }
}
