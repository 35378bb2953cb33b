//! The bytes of a credential file, as `FORMAT.md` beside the store describes them: the
//! header, the sealed payload, the associated data, and the checks a reader makes in
//! file order. Sealing and opening happen here, on bytes in memory; reading and writing
//! the files is the store's (`mod.rs`, `atomic.rs`).

use std::path::Path;

use ring::aead;
use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use super::error::StoreError;
use crate::credentials::master_key::{KeyId, MasterKey, KEY_ID_BYTES};

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

/// [`is_valid_id`] as a check whose error shows the id escaped.
pub(super) fn check_id(id: &str) -> Result<(), StoreError> {
    if is_valid_id(id) {
        Ok(())
    } else {
        Err(StoreError::InvalidId {
            id: id.escape_default().to_string(),
        })
    }
}

/// The parsed header of a credential file.
pub(super) struct Header {
    pub(super) key_id: KeyId,
    salt: [u8; SALT_BYTES],
    nonce: [u8; NONCE_BYTES],
}

/// A decrypted payload, borrowed from the zeroizing buffer it was decrypted in.
pub(super) struct Payload<'a> {
    pub(super) created: u64,
    pub(super) updated: u64,
    pub(super) source: &'a str,
    pub(super) secret: &'a str,
}

/// The complete file for `payload`, sealed under `key` with a fresh salt and nonce.
pub(super) fn seal(
    id: &str,
    key: &MasterKey,
    payload: &Payload<'_>,
    rng: &dyn SecureRandom,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let crypto = |what| StoreError::Crypto {
        id: id.to_owned(),
        what,
    };
    let mut salt = [0u8; SALT_BYTES];
    let mut nonce = [0u8; NONCE_BYTES];
    rng.fill(&mut salt)
        .and_then(|()| rng.fill(&mut nonce))
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

/// Authenticates and decrypts a checked file (`bytes`, its `header` parsed) in place with
/// `key`, and splits the plaintext into its fields. The payload borrows the decrypted
/// bytes: the caller's zeroizing buffer holds the only plaintext.
pub(super) fn unseal<'a>(
    id: &str,
    path: &Path,
    bytes: &'a mut [u8],
    header: &Header,
    key: &MasterKey,
) -> Result<Payload<'a>, StoreError> {
    if header.key_id != key.key_id() {
        return Err(StoreError::WrongKey {
            id: id.to_owned(),
            path: path.to_owned(),
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
            path: path.to_owned(),
        })?;
    parse_payload(plain).ok_or_else(|| StoreError::Corrupt {
        id: id.to_owned(),
        path: path.to_owned(),
        detail: "the authenticated payload is malformed",
    })
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
pub(super) fn parse_header(id: &str, path: &Path, bytes: &[u8]) -> Result<Header, StoreError> {
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
    use crate::credentials::master_key::tests::{other_key, test_key, TEST_KEY_HEX};
    use crate::credentials::store::tests::{
        fresh, open, overwrite, private_tempdir, secret, value,
    };
    use crate::credentials::store::SecureStorage;
    use proptest::prelude::*;

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
