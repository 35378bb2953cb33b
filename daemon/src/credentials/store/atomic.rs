//! Writes that a crash cannot tear, and the lock that orders writers.
//!
//! A write goes to a temp file in the same directory (created with `O_EXCL`, mode 0600),
//! is written, fsynced, renamed over the target, and the directory is fsynced. `rename`
//! replaces the name atomically, so a crash at any step leaves the old file or the new
//! one, never a torn one; a crash before the rename leaves a stale temp file, which
//! readers ignore and the next [`SecureStorage::open`] removes (under the lock, so never
//! one that another process is still writing).
//!
//! Writers ([`put`](SecureStorage::put), [`remove`](SecureStorage::remove),
//! [`rotate`](SecureStorage::rotate), and the clean-up in `open`) take an exclusive
//! `flock` on `.lock`, opened afresh for each operation: `flock` locks belong to the open
//! file description, so this excludes other threads of the same process as well as other
//! processes, and a crashed holder releases it by dying. Readers take no lock: the rename
//! makes every file they can open a complete one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ring::rand::SecureRandom;

use super::error::{io_err, StoreError};
use super::format::FILE_SUFFIX;
use super::{check_private, SecureStorage};

/// The prefix of a write in progress (or left by a crash): `.tmp-<id>-<16 hex digits>`.
pub(super) const TEMP_PREFIX: &str = ".tmp-";
/// The writers' lock file.
pub(super) const LOCK_NAME: &str = ".lock";

/// The file-system steps of an atomic write. Production uses [`OsSteps`]; tests put a
/// failure (or a simulated crash) before or after any step and check what is left.
pub(super) trait WriteSteps: Send + Sync {
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
pub(super) struct OsSteps;

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

impl SecureStorage {
    /// Removes stale temp files and checks every credential file's type, owner and mode.
    /// Called with the lock held, so no temp file removed here is still being written.
    pub(super) fn sweep(&self) -> Result<(), StoreError> {
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
    pub(super) fn lock(&self) -> Result<File, StoreError> {
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

    /// Replaces `id`'s file with `bytes`: temp file, write, fsync, rename, fsync the
    /// directory. Called with the lock held.
    pub(super) fn write_atomically(&self, id: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let target = self.path_of(id);
        let mut suffix = [0u8; 8];
        self.rng.fill(&mut suffix).map_err(|_| StoreError::Crypto {
            id: id.to_owned(),
            what: "the system random number generator failed",
        })?;
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{id}-{}",
            crate::credentials::hex(&suffix)
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::master_key::tests::{other_key, test_key};
    use crate::credentials::store::tests::{
        fresh, open, private_tempdir, secret, temp_files, value,
    };
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

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
                        "credentials::store::atomic::tests::child_process_writer",
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

    // ---- rotation cut short ---------------------------------------------------------

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
}
