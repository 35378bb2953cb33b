//! The ledger's SQLite file: its schema, how it is opened (0600, WAL, a file that cannot
//! be read is set aside rather than deleted), batched inserts and pruning.
//!
//! WAL with `synchronous = NORMAL`: a committed batch is in the write-ahead log before
//! the commit returns, so a SIGKILL of the daemon loses nothing committed and never
//! leaves a torn database; only a power loss may roll back the last batches, never
//! corrupt the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags};

use super::Record;

/// The schema version this daemon writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// The schema. `at_ms` is the Unix time in milliseconds (UTC) when the request was
/// admitted; rows are inserted in about that order, so `id` follows time too.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    uid INTEGER,
    user TEXT,
    token TEXT,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    answered_provider TEXT,
    answered_model TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error_code TEXT,
    first_chunk_ms INTEGER,
    duration_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS generations_at ON generations(at_ms);
";

/// How long a writer or a report waits for the other's lock (WAL makes this rare: only
/// checkpoints and writers exclude each other).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Rows deleted per transaction when pruning, so a prune never holds the write lock for
/// long.
const PRUNE_STEP: i64 = 10_000;

/// Why the ledger file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused (not a database, corrupt, disk full, read-only…).
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file itself (its type, its permissions).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Written by a newer provd, whose schema this one does not know.
    #[error("schema version {0} is newer than this provd's ({SCHEMA_VERSION})")]
    NewerSchema(i64),
}

impl DbError {
    /// Whether the file itself is unusable (corrupt, not a database, of another schema),
    /// as opposed to a passing failure (disk full, busy): the former is set aside.
    pub fn is_unreadable_file(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
            ),
            DbError::Sqlite(_) => false,
            DbError::Io(_) => false,
            DbError::NewerSchema(_) => true,
        }
    }
}

/// An open ledger file, for the writer.
pub struct Db {
    conn: Connection,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

/// Creates `path` as an empty 0600 file if it does not exist, and narrows an existing
/// one to 0600 (SQLite gives its `-wal` and `-shm` files the database file's mode).
/// Refuses anything but a regular file: a symlink planted where the ledger goes would
/// make the daemon write through it.
fn prepare_file(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_file() => Err(std::io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        ))),
        Ok(meta) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::{MetadataExt, PermissionsExt};
                // Another user's file is never written (nor its mode changed, which root
                // could do): whoever owns it could read every row.
                let ours = crate::sys::effective_uid();
                if meta.uid() != ours {
                    return Err(std::io::Error::other(format!(
                        "{} belongs to uid {}, not to provd's uid {ours}",
                        path.display(),
                        meta.uid()
                    )));
                }
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
            }
            match options.open(path) {
                Ok(_) => Ok(()),
                // Created meanwhile (another provd starting): checked like any file.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => prepare_file(path),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

impl Db {
    /// Opens (creating if needed) the ledger at `path` for writing, and checks it can be
    /// read: its header, its schema and its version.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        prepare_file(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        // The first statement that reads the file: a file that is not a database fails
        // here, not in the middle of serving.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(DbError::NewerSchema(version));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        // Walks the index to its last row: a file torn there shows now, not mid-serving.
        conn.query_row("SELECT max(id) FROM generations", [], |_| Ok(()))?;
        Ok(Db { conn })
    }

    /// Writes `records` in one transaction: all or none.
    pub fn insert(&mut self, records: &[Record]) -> Result<(), DbError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO generations (at_ms, uid, user, token, provider, model, answered_provider, answered_model, prompt_tokens, completion_tokens, reasoning_tokens, chunks, outcome, error_code, first_chunk_ms, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            for r in records {
                insert.execute(params![
                    r.at_ms,
                    r.uid,
                    r.user,
                    r.token,
                    r.provider,
                    r.model,
                    r.answered_provider,
                    r.answered_model,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.reasoning_tokens,
                    r.chunks,
                    r.outcome.as_str(),
                    r.error_code,
                    r.first_chunk_ms,
                    r.duration_ms,
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes the rows recorded before `before_ms`, a step at a time; how many.
    pub fn prune(&mut self, before_ms: i64) -> Result<u64, DbError> {
        let mut total = 0u64;
        loop {
            let deleted = self.conn.execute(
                "DELETE FROM generations WHERE id IN (SELECT id FROM generations WHERE at_ms < ?1 LIMIT ?2)",
                params![before_ms, PRUNE_STEP],
            )?;
            total += deleted as u64;
            if (deleted as i64) < PRUNE_STEP {
                return Ok(total);
            }
        }
    }
}

/// Opens the ledger at `path` read-only, for a report or for seeding the budgets: WAL
/// lets it read while the writer writes.
pub fn open_read(path: &Path) -> Result<Connection, DbError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A report's sorts and groups stay in memory: no temporary file appears outside the
    // state directory (a hardened unit may have no writable /tmp to give).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

/// Moves an unreadable ledger (and its `-wal` and `-shm`) aside as
/// `NAME.unreadable-UNIXSECONDS`, so that nothing is deleted and a new file can start;
/// the name it now has.
pub fn set_aside(path: &Path, now_s: u64) -> std::io::Result<PathBuf> {
    let aside = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        name.push(format!(".unreadable-{now_s}"));
        PathBuf::from(name)
    };
    let target = aside("");
    std::fs::rename(path, &target)?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if side.exists() {
            std::fs::rename(&side, aside(suffix))?;
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(at_ms: i64, uid: u32, tokens: u32) -> Record {
        Record {
            at_ms,
            uid: Some(uid),
            prompt_tokens: 1,
            completion_tokens: tokens,
            chunks: tokens,
            ..Record::example("m", "mock-1")
        }
    }

    fn count(path: &Path) -> i64 {
        open_read(path)
            .unwrap()
            .query_row("SELECT count(*) FROM generations", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_ledger_is_a_0600_file_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let mut db = Db::open(&path).unwrap();
        db.insert(&[record(1, 7, 3)]).unwrap();
        let mode: String = db
            .conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for name in ["usage.db", "usage.db-wal", "usage.db-shm"] {
                let meta = std::fs::metadata(dir.path().join(name)).unwrap();
                assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            }
        }
    }

    #[test]
    fn an_existing_ledger_with_a_wider_mode_is_narrowed_to_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        drop(Db::open(&path).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            drop(Db::open(&path).unwrap());
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_batch_is_written_whole_and_reopening_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let mut db = Db::open(&path).unwrap();
        let batch: Vec<Record> = (0..100).map(|i| record(i, 1000, 5)).collect();
        db.insert(&batch).unwrap();
        drop(db);
        drop(Db::open(&path).unwrap());
        assert_eq!(count(&path), 100);
        let (uid, tokens, outcome): (u32, i64, String) = open_read(&path)
            .unwrap()
            .query_row(
                "SELECT uid, sum(prompt_tokens + completion_tokens), min(outcome) FROM generations",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((uid, tokens, outcome.as_str()), (1000, 600, "completed"));
    }

    #[test]
    fn pruning_removes_exactly_the_rows_before_the_cut_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let mut db = Db::open(&path).unwrap();
        let n = PRUNE_STEP * 2 + 17;
        let batch: Vec<Record> = (0..n).map(|i| record(i, 1, 1)).collect();
        db.insert(&batch).unwrap();
        let cut = PRUNE_STEP * 2 + 5;
        assert_eq!(db.prune(cut).unwrap(), cut as u64);
        assert_eq!(count(&path), n - cut);
        let first: i64 = open_read(&path)
            .unwrap()
            .query_row("SELECT min(at_ms) FROM generations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(first, cut);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_an_unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let e = Db::open(&path).unwrap_err();
        assert!(e.is_unreadable_file(), "{e}");
    }

    #[test]
    fn a_ledger_of_a_newer_schema_is_not_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        drop(Db::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let e = Db::open(&path).unwrap_err();
        assert!(matches!(e, DbError::NewerSchema(v) if v == SCHEMA_VERSION + 1));
        assert!(e.is_unreadable_file());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_in_the_ledgers_place_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"not yours").unwrap();
        let path = dir.path().join("usage.db");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = Db::open(&path).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
    }

    #[cfg(unix)]
    #[test]
    fn another_users_file_in_the_ledgers_place_is_refused_and_left_as_it_is() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        if crate::sys::effective_uid() != 0 {
            println!("SKIPPED: needs root, to give the file to another uid");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::chown(&path, Some(65_534), Some(65_534)).unwrap();
        let e = Db::open(&path).unwrap_err();
        assert!(e.to_string().contains("belongs to uid 65534"), "{e}");
        assert!(
            !e.is_unreadable_file(),
            "not set aside: it is not ours to move"
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.permissions().mode() & 0o777),
            (65_534, 0o644)
        );
    }

    #[test]
    fn setting_aside_keeps_every_byte_under_a_new_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        std::fs::write(&path, b"garbage").unwrap();
        std::fs::write(dir.path().join("usage.db-wal"), b"wal").unwrap();
        let aside = set_aside(&path, 1234).unwrap();
        assert_eq!(aside, dir.path().join("usage.db.unreadable-1234"));
        assert_eq!(std::fs::read(&aside).unwrap(), b"garbage");
        assert_eq!(
            std::fs::read(dir.path().join("usage.db-wal.unreadable-1234")).unwrap(),
            b"wal"
        );
        assert!(!path.exists());
    }
}
