//! The `credential_file` target: a sealed credential file damaged, forged or replaced by
//! the input, read back through [`SecureStorage::get`].

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use crate::credentials::master_key::KEY_ID_BYTES;
use crate::credentials::store::{HEADER_BYTES, MAGIC};
use crate::credentials::{MasterKey, SecureStorage, StoreError};
use crate::secret::Secret;

/// The provider id the fuzzed file belongs to.
const ID: &str = "fuzzed";
/// The secret sealed in the genuine file.
const SECRET: &str = "sk-fuzz-7c1e0b5a93d24f68";
/// The genuine file's source.
const SOURCE: &str = "set";
/// Where the header fields that decide the error sit (FORMAT.md).
const VERSION_AT: usize = MAGIC.len();
const ALGORITHM_AT: usize = VERSION_AT + 1;
const KEY_ID: std::ops::Range<usize> = ALGORITHM_AT + 1..ALGORITHM_AT + 1 + KEY_ID_BYTES;
const SEALED_LEN: std::ops::Range<usize> = HEADER_BYTES - 4..HEADER_BYTES;

/// A store in a temp directory of this process, sealed under a master key drawn at random
/// for this process (so no file from a corpus can be authentic by construction), holding
/// one genuine credential.
struct Fixture {
    store: SecureStorage,
    path: PathBuf,
    genuine: Vec<u8>,
}

/// The store directories are named after their process: a static is never dropped, so
/// each process removes those of processes that are gone instead.
const DIR_PREFIX: &str = "provd-fuzz-credentials-";

fn remove_stale_stores(temp: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let gone =
            matches!(crate::sys::kill(pid, 0), Err(e) if e.raw_os_error() == Some(libc::ESRCH));
        if gone || pid == std::process::id() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let temp = std::env::temp_dir();
        remove_stale_stores(&temp);
        let dir = temp.join(format!("{DIR_PREFIX}{}", std::process::id()));
        let key = MasterKey::generate().expect("a random key");
        let master = MasterKey::from_hex(key.expose().as_bytes(), "fuzz").expect("a valid key");
        let store = SecureStorage::open(dir, master).expect("a new store");
        store
            .put(ID, &Secret::new(SECRET.to_owned()), SOURCE)
            .expect("a credential is stored");
        let path = store.dir().join(format!("{ID}.cred"));
        let genuine = std::fs::read(&path).expect("the sealed file");
        Fixture {
            store,
            path,
            genuine,
        }
    })
}

/// The file the input describes: after a first byte with bit 0 clear, the rest of the
/// input is the whole file; with it set, the rest is a list of edits to the genuine file,
/// three bytes each (`kind`, `position`, `value`): flip bits, cut the file short, insert a
/// byte, remove a byte.
fn file_from(input: &[u8], genuine: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = input.split_first() else {
        return genuine.to_vec();
    };
    if mode & 1 == 0 {
        return rest.to_vec();
    }
    let mut file = genuine.to_vec();
    for edit in rest.chunks_exact(3) {
        let (kind, at, value) = (edit[0], usize::from(edit[1]), edit[2]);
        let len = file.len();
        match kind % 4 {
            0 if len > 0 => file[at % len] ^= value,
            1 => file.truncate(at * len / 256),
            2 => file.insert(at % (len + 1), value),
            3 if len > 0 => {
                file.remove(at % len);
            }
            _ => {}
        }
    }
    file
}

/// `credential_file`: arbitrary bytes, or edits to a genuine sealed file, stored as the
/// credential file of a provider id and read with [`SecureStorage::get`].
///
/// Invariants: `get` never panics; it returns the secret only for the genuine file, byte
/// for byte, and a typed error for anything else (never plaintext, never an I/O error);
/// the error is the one `FORMAT.md` documents for the first damaged field (a cut file is
/// truncated, trailing bytes are corrupt, a changed key id is the wrong key, a changed
/// salt, nonce, ciphertext or tag fails authentication); and no error message carries
/// the secret.
pub fn check_credential_file(input: &[u8]) {
    let fx = fixture();
    let file = file_from(input, &fx.genuine);
    OpenOptions::new()
        .write(true)
        .truncate(true)
        .create(true)
        .mode(0o600)
        .open(&fx.path)
        .and_then(|mut f| f.write_all(&file))
        .expect("write the credential file");
    let result = fx.store.get(ID);
    if file == fx.genuine {
        let credential = result
            .expect("the genuine file opens")
            .expect("the genuine file exists");
        assert_eq!(credential.secret.expose(), SECRET);
        assert_eq!(credential.source, SOURCE);
        return;
    }
    let error = match result {
        Ok(Some(_)) => panic!("a damaged or forged credential file was opened"),
        Ok(None) => panic!("an existing credential file was reported missing"),
        Err(error) => error,
    };
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(
            !text.contains(SECRET),
            "an error carries the secret: {text}"
        );
    }
    let genuine = &fx.genuine[..];
    let kind = |e: &StoreError| -> &'static str {
        match e {
            StoreError::UnknownMagic { .. } => "unknown magic",
            StoreError::UnsupportedVersion { .. } => "unsupported version",
            StoreError::UnknownAlgorithm { .. } => "unknown algorithm",
            StoreError::Truncated { .. } => "truncated",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::WrongKey { .. } => "wrong key",
            StoreError::Authentication { .. } => "authentication",
            other => panic!("reading a file of bytes gave {other:?}"),
        }
    };
    let got = kind(&error);
    let expected = if file.len() < genuine.len() && genuine.starts_with(&file) {
        Some("truncated")
    } else if file.len() > genuine.len() && file.starts_with(genuine) {
        Some("corrupt")
    } else if file.len() == genuine.len() {
        let changed = |range: std::ops::Range<usize>| file[range.clone()] != genuine[range];
        Some(if changed(0..MAGIC.len()) {
            "unknown magic"
        } else if changed(VERSION_AT..VERSION_AT + 1) {
            "unsupported version"
        } else if changed(ALGORITHM_AT..ALGORITHM_AT + 1) {
            "unknown algorithm"
        } else if changed(SEALED_LEN) {
            // Too long or too short for the file, or out of range.
            if matches!(got, "truncated" | "corrupt") {
                got
            } else {
                "truncated or corrupt"
            }
        } else if changed(KEY_ID) {
            "wrong key"
        } else {
            "authentication"
        })
    } else {
        None
    };
    if let Some(expected) = expected {
        assert_eq!(got, expected, "{error}");
    }
}
