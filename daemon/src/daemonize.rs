//! Running in the background without systemd: `provd serve --daemon` and `provd stop`.
//!
//! [`detach`] forks with the daemonize crate (double fork, new session, umask 077,
//! chdir /, stdin from /dev/null, stdout and stderr to the log file). It runs before the
//! tokio runtime exists: `fork` copies only the calling thread, so forking a process that
//! already has runtime threads would leave the child with a runtime whose workers do not
//! exist.
//!
//! The pid file and the log file may live in a directory other users can write (a sticky
//! one like `/tmp`), so they are opened here, not by the daemonize crate, and never
//! through a link or another user's file: a new file is created exclusively
//! (`O_CREAT | O_EXCL`, which also refuses a dangling link); an existing one is opened with
//! `O_NOFOLLOW` and must be a regular file with one link, owned by the daemon's user. The
//! pid file is locked before the fork; the lock belongs to the open file, which the
//! daemon inherits and keeps.
//!
//! The parent does not exit as soon as the fork succeeds: it waits on a pipe until the
//! daemon reports that it is serving ([`StartupReport::ready`], sent where systemd would
//! get `READY=1`) or why it could not start ([`StartupReport::failed`]), so
//! `provd serve --daemon && provd ping` works and a start-up error reaches the terminal
//! and the exit status. If the daemon dies without a word, the parent sees the pipe close.
//!
//! The pid file is the daemon's identity: the daemon holds an exclusive `flock` on it for
//! its whole life (the kernel drops the lock when the process ends, however it ends), so
//! a pid file nobody holds locked is stale, whatever pid it names. [`stop`] relies on
//! that rather than on the pid alone, which may have been reused.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sys::{self, Lock};

/// Where `--daemon` writes its pid and its log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachOptions {
    /// The pid file (absolute).
    pub pid_file: PathBuf,
    /// Where stdout and stderr go (absolute).
    pub log_file: PathBuf,
}

/// Why the daemon cannot go to the background, or `provd stop` cannot stop it.
#[derive(Debug, thiserror::Error)]
pub enum DaemonizeError {
    /// A service manager started this process; it must not fork away from it.
    #[error("--daemon is for hosts without systemd, but this process was started by a service manager (${var} is set), which already runs it in the background; drop --daemon and use Type=notify (see systemd/README.md)")]
    UnderServiceManager {
        /// The variable that gave it away.
        var: &'static str,
    },
    /// Another daemon holds the pid file.
    #[error("another provd{} is running with pid file {}; stop it first (`provd stop --pid-file {}`)", pid.map(|p| format!(" (pid {p})")).unwrap_or_default(), path.display(), path.display())]
    AlreadyRunning {
        /// The pid file.
        path: PathBuf,
        /// The pid it names.
        pid: Option<u32>,
    },
    /// No pid file: nothing to stop.
    #[error("no pid file at {}: provd is not running in the background (or was started with another --pid-file)", .0.display())]
    NotRunning(PathBuf),
    /// The pid file is left from a daemon that is gone.
    #[error("provd is not running: {} was left by a daemon that is gone{}; removed it", path.display(), pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Stale {
        /// The pid file.
        path: PathBuf,
        /// The pid it named.
        pid: Option<u32>,
    },
    /// The daemon did not exit in time.
    #[error("provd (pid {pid}) is still running {} s after SIGTERM; it may still be draining (drain_timeout_seconds); run `provd stop` again to end its generations at once", waited.as_secs())]
    StillRunning {
        /// The daemon.
        pid: u32,
        /// How long `stop` waited.
        waited: Duration,
    },
    /// The fork itself failed.
    #[error("cannot daemonize (pid file {}): {source}", pid_file.display())]
    Fork {
        /// The pid file.
        pid_file: PathBuf,
        /// What the daemonize crate said.
        source: ::daemonize::Error,
    },
    /// A pid or log file that is a link or another user's file: writing it would write
    /// wherever that user chose.
    #[error("{what} {}: refused, {reason}; remove it or choose another path", path.display())]
    Refused {
        /// Which file ("pid file", "log file").
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Any other OS failure, with what was being done.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DaemonizeError + 'a {
    move |source| DaemonizeError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Refuses `--daemon` when a service manager started this process: one activation
/// authority at a time.
pub fn check_no_service_manager() -> Result<(), DaemonizeError> {
    for var in [
        crate::systemd::NOTIFY_SOCKET_ENV,
        crate::systemd::LISTEN_FDS_ENV,
    ] {
        if std::env::var_os(var).is_some_and(|v| !v.is_empty()) {
            return Err(DaemonizeError::UnderServiceManager { var });
        }
    }
    Ok(())
}

/// The daemon's end of the start-up pipe. Cloneable; the first report wins and closes
/// the pipe, later ones do nothing.
#[derive(Clone, Debug, Default)]
pub struct StartupReport {
    pipe: Arc<Mutex<Option<File>>>,
}

impl StartupReport {
    /// The daemon is serving: the waiting parent exits 0.
    pub fn ready(&self) {
        self.send(&format!("ready {}\n", std::process::id()));
    }

    /// The daemon cannot start: the waiting parent prints `message` and exits 1, as the
    /// CLI prints its errors ([`crate::one_line::for_terminal`]): a configuration error's
    /// caret diagram keeps its lines.
    pub fn failed(&self, message: &str) {
        self.send(&format!(
            "error {}\n",
            crate::one_line::for_terminal(message)
        ));
    }

    fn send(&self, line: &str) {
        let pipe = self
            .pipe
            .lock()
            .expect("start-up pipe lock poisoned")
            .take();
        if let Some(mut pipe) = pipe {
            // The parent may be gone (killed while waiting); the daemon goes on regardless.
            let _ = pipe.write_all(line.as_bytes());
        }
    }
}

/// The running daemon's hold on its pid file. Dropping it (when `serve` returns) removes
/// the file, if it still names this process; the lock itself lasts until the process
/// exits.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    /// The open file that carries the lock; the lock would go with its last descriptor.
    locked: File,
}

impl PidFile {
    /// The pid file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only the file this daemon holds, and only while it names this process.
        let held = self.locked.metadata().ok();
        let there = std::fs::symlink_metadata(&self.path).ok();
        let same =
            matches!((held, there), (Some(a), Some(b)) if a.dev() == b.dev() && a.ino() == b.ino());
        if same && pid_in(&self.locked) == Some(std::process::id()) {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(pid_file = %self.path.display(), error = %e, "cannot remove the pid file");
            }
        }
    }
}

/// What the daemon (the grandchild) keeps from [`detach`].
#[derive(Debug)]
pub struct Detached {
    /// Tells the waiting parent how start-up went.
    pub report: StartupReport,
    /// Removes the pid file when dropped.
    pub pid_file: PidFile,
}

/// Forks into the background. In the daemon, returns what it needs to report its
/// start-up and release its pid file. In the calling process it **does not return**: it
/// waits for the daemon's start-up report and exits with status 0 (serving) or 1 (with
/// the daemon's error on stderr).
///
/// Must be called before any thread exists (before the tokio runtime is built).
pub fn detach(options: &DetachOptions) -> Result<Detached, DaemonizeError> {
    check_no_service_manager()?;
    let DetachOptions { pid_file, log_file } = options;
    // Locked here, where a refusal can still go to the terminal directly; the daemon
    // inherits the open file and with it the lock.
    let (mut locked, created) = lock_pid_file(pid_file)?;
    let (log, _) = open_own_file(log_file, "log file", Access::Append).inspect_err(|_| {
        // Leave nothing behind for a start that did not happen.
        if created {
            let _ = std::fs::remove_file(pid_file);
        }
    })?;
    let log_err = log
        .try_clone()
        .map_err(io("cannot open the log file", log_file))?;
    let (read_end, write_end) = sys::pipe().map_err(io("cannot create a pipe for", pid_file))?;

    let outcome = ::daemonize::Daemonize::new()
        .umask(0o077)
        .working_directory("/")
        .stdout(log)
        .stderr(log_err)
        .execute();
    match outcome {
        ::daemonize::Outcome::Parent(Err(source)) => Err(DaemonizeError::Fork {
            pid_file: pid_file.clone(),
            source,
        }),
        ::daemonize::Outcome::Parent(Ok(_)) => {
            drop(write_end);
            std::process::exit(wait_for_report(File::from(read_end), options))
        }
        ::daemonize::Outcome::Child(result) => {
            drop(read_end);
            let report = StartupReport {
                pipe: Arc::new(Mutex::new(Some(File::from(write_end)))),
            };
            let written = match result {
                Ok(_) => write_pid(&mut locked).map_err(io("cannot write the pid file", pid_file)),
                Err(source) => Err(DaemonizeError::Fork {
                    pid_file: pid_file.clone(),
                    source,
                }),
            };
            match written {
                Ok(()) => Ok(Detached {
                    report,
                    pid_file: PidFile {
                        path: pid_file.clone(),
                        locked,
                    },
                }),
                Err(e) => {
                    report.failed(&e.to_string());
                    std::process::exit(1)
                }
            }
        }
    }
}

/// Replaces the pid file's content with this process's pid.
fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0)
}

/// The parent: read the daemon's one-line report and turn it into an exit status.
fn wait_for_report(mut pipe: File, options: &DetachOptions) -> i32 {
    let mut report = String::new();
    // EOF comes when the daemon reports (it closes its end) or dies.
    let _ = pipe.read_to_string(&mut report);
    let line = report.lines().next().unwrap_or("");
    if let Some(pid) = line.strip_prefix("ready ") {
        eprintln!(
            "provd: running in the background as pid {pid} (pid file {}, log {})",
            options.pid_file.display(),
            options.log_file.display()
        );
        0
    } else if let Some(message) = report.strip_prefix("error ") {
        // The whole report: a caret diagram spans several lines.
        eprintln!("provd: error: {}", message.trim_end());
        1
    } else {
        eprintln!(
            "provd: error: the daemon exited during start-up without saying why; see {}",
            options.log_file.display()
        );
        1
    }
}

/// How [`open_own_file`] opens.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// For writing at any offset, created if missing (the pid file).
    Write,
    /// For appending, created if missing (the log file).
    Append,
    /// For reading only; never created (`provd stop` reading the pid file).
    Read,
}

/// Opens a file of the daemon's own in a directory that may be shared: created
/// exclusively (mode 0600) when missing; otherwise opened without following a link, and
/// refused unless it is a regular file with one link owned by this process's user (or,
/// for reading, by root). So a link or another user's file put in its place in `/tmp` is
/// never written through. Says whether it made the file.
fn open_own_file(
    path: &Path,
    what: &'static str,
    access: Access,
) -> Result<(File, bool), DaemonizeError> {
    let refused = |reason: String| DaemonizeError::Refused {
        what,
        path: path.to_owned(),
        reason,
    };
    let opening = || {
        let mut options = std::fs::OpenOptions::new();
        match access {
            Access::Write => options.write(true).read(true),
            Access::Append => options.append(true),
            Access::Read => options.read(true),
        };
        // O_NONBLOCK: a FIFO put there must not hang the daemon; it is refused below.
        options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
        options
    };
    if access != Access::Read {
        match opening().create_new(true).mode(0o600).open(path) {
            Ok(file) => return Ok((file, true)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(DaemonizeError::Io {
                    what: "cannot create",
                    path: path.to_owned(),
                    source: e,
                })
            }
        }
    }
    let file = match opening().open(path) {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(refused("it is a symbolic link".into()))
        }
        Err(e) => {
            return Err(DaemonizeError::Io {
                what: "cannot open",
                path: path.to_owned(),
                source: e,
            })
        }
    };
    let meta = file.metadata().map_err(io("cannot inspect", path))?;
    if !meta.is_file() {
        return Err(refused("it is not a regular file".into()));
    }
    let me = sys::effective_uid();
    let owner_ok = meta.uid() == me || (access == Access::Read && meta.uid() == 0);
    if !owner_ok {
        return Err(refused(format!(
            "it is owned by uid {}, not by this user (uid {me})",
            meta.uid()
        )));
    }
    if meta.nlink() != 1 {
        return Err(refused(format!(
            "it has {} hard links, so it may also be another file",
            meta.nlink()
        )));
    }
    Ok((file, false))
}

/// Opens the pid file as [`open_own_file`] does and takes its exclusive lock; says whether
/// it made the file. Refuses a pid file that a live daemon holds, and a directory that
/// does not exist.
fn lock_pid_file(path: &Path) -> Result<(File, bool), DaemonizeError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        if !dir.is_dir() {
            return Err(DaemonizeError::Io {
                what: "the directory of the pid file does not exist:",
                path: dir.to_owned(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
    }
    let (file, created) = open_own_file(path, "pid file", Access::Write)?;
    match sys::flock(&file, Lock::ExclusiveTry) {
        // Stale or new: this daemon takes it over.
        Ok(()) => Ok((file, created)),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            Err(DaemonizeError::AlreadyRunning {
                path: path.to_owned(),
                pid: pid_in(&file),
            })
        }
        Err(e) => Err(io("cannot lock the pid file", path)(e)),
    }
}

/// The pid an open pid file names, if it names one.
fn pid_in(file: &File) -> Option<u32> {
    let mut buf = [0u8; 32];
    let n = file.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// `provd stop`: sends SIGTERM to the daemon holding `pid_file` and waits up to `wait`
/// for it to exit (its drain included). Returns the daemon's pid.
///
/// A pid file that no process holds locked is stale: it is removed and reported as
/// [`DaemonizeError::Stale`], and no signal is sent (its pid may belong to anyone now).
///
/// The pid file must be this user's (or root's) and not a link: a pid file another user
/// wrote could name any process, and `stop` would signal it.
pub fn stop(pid_file: &Path, wait: Duration) -> Result<u32, DaemonizeError> {
    let file = match open_own_file(pid_file, "pid file", Access::Read) {
        Ok((f, _)) => f,
        Err(DaemonizeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(DaemonizeError::NotRunning(pid_file.to_owned()))
        }
        Err(e) => return Err(e),
    };
    match sys::flock(&file, Lock::SharedTry) {
        Ok(()) => {
            // Removed while we hold the lock, so a daemon starting right now either
            // locked it before us (and we would not be here) or fails to lock it and says so.
            let pid = pid_in(&file);
            std::fs::remove_file(pid_file)
                .map_err(io("cannot remove the stale pid file", pid_file))?;
            return Err(DaemonizeError::Stale {
                path: pid_file.to_owned(),
                pid,
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(io("cannot lock the pid file", pid_file)(e)),
    }
    // Locked, so a daemon is alive. It writes its pid once it has forked, after taking
    // the lock; an empty file means that daemon is a moment from writing it.
    let pid = pid_in(&file).ok_or_else(|| DaemonizeError::Io {
        what: "the pid file names no pid yet (the daemon is starting); try again:",
        path: pid_file.to_owned(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidData),
    })?;
    match sys::kill(pid, libc::SIGTERM) {
        Ok(()) => {}
        // It exited between the lock check and the signal.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(pid),
        Err(e) => return Err(io("cannot signal the daemon of", pid_file)(e)),
    }
    // The lock goes when the process ends: wait for it in a thread of our own, so that
    // `wait` can end the wait (a thread blocked in flock cannot be interrupted; it dies
    // with this short-lived process).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sys::flock(&file, Lock::SharedWait));
    });
    match rx.recv_timeout(wait) {
        Ok(Ok(())) => Ok(pid),
        Ok(Err(e)) => Err(io("cannot wait for the lock on", pid_file)(e)),
        Err(_) => Err(DaemonizeError::StillRunning { pid, waited: wait }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_nobody_holds_is_stale_and_removed_by_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provd.pid");
        std::fs::write(&path, "4194303\n").unwrap();
        let e = stop(&path, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(
            e,
            DaemonizeError::Stale {
                pid: Some(4194303),
                ..
            }
        ));
        assert!(e.to_string().contains("provd is not running"), "{e}");
        assert!(!path.exists());
        assert!(matches!(
            stop(&path, Duration::from_secs(1)).unwrap_err(),
            DaemonizeError::NotRunning(_)
        ));
    }

    #[test]
    fn a_locked_pid_file_refuses_a_second_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provd.pid");
        std::fs::write(&path, "12345\n").unwrap();
        drop(lock_pid_file(&path).unwrap());
        // Another open file description holding the lock stands in for a live daemon.
        let holder = File::open(&path).unwrap();
        sys::flock(&holder, Lock::ExclusiveTry).unwrap();
        let e = lock_pid_file(&path).unwrap_err();
        assert!(
            e.to_string()
                .contains("another provd (pid 12345) is running"),
            "{e}"
        );
        let e = lock_pid_file(&dir.path().join("nope/provd.pid")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn new_pid_and_log_files_are_created_private_and_existing_own_ones_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pid = dir.path().join("provd.pid");
        let (mut file, _) = lock_pid_file(&pid).unwrap();
        write_pid(&mut file).unwrap();
        let meta = std::fs::metadata(&pid).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(pid_in(&file), Some(std::process::id()));
        drop(file);
        // A stale pid file of ours is taken over, its old content replaced.
        std::fs::write(&pid, "4194303 and more text than a pid\n").unwrap();
        let (mut file, _) = lock_pid_file(&pid).unwrap();
        write_pid(&mut file).unwrap();
        assert_eq!(
            std::fs::read_to_string(&pid).unwrap(),
            format!("{}\n", std::process::id())
        );
        let log = dir.path().join("provd.log");
        std::fs::write(&log, "earlier\n").unwrap();
        let (mut appended, created) = open_own_file(&log, "log file", Access::Append).unwrap();
        assert!(!created);
        appended.write_all(b"later\n").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "earlier\nlater\n");
    }

    #[test]
    fn links_at_the_pid_or_log_path_are_refused_and_their_targets_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("victim");
        std::fs::write(&target, "precious\n").unwrap();
        let dangling = dir.path().join("not-yet");
        for (name, to) in [("provd.pid", &target), ("dangling.pid", &dangling)] {
            let link = dir.path().join(name);
            std::os::unix::fs::symlink(to, &link).unwrap();
            let e = lock_pid_file(&link).unwrap_err();
            assert!(
                matches!(e, DaemonizeError::Refused { .. })
                    && e.to_string().contains("symbolic link"),
                "{e}"
            );
            let e = open_own_file(&link, "log file", Access::Append).unwrap_err();
            assert!(
                e.to_string().contains("log file") && e.to_string().contains("symbolic link"),
                "{e}"
            );
            // `provd stop` does not follow one either.
            let e = stop(&link, Duration::from_secs(1)).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
        assert!(
            !dangling.exists(),
            "nothing was created through the dangling link"
        );
        // A hard link to another file is refused too.
        let hard = dir.path().join("hard.pid");
        std::fs::hard_link(&target, &hard).unwrap();
        let e = lock_pid_file(&hard).unwrap_err();
        assert!(e.to_string().contains("2 hard links"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn another_users_pid_or_log_file_is_refused_and_left_alone() {
        if sys::effective_uid() != 0 {
            println!("skipped: changing a file's owner needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for name in ["provd.pid", "provd.log"] {
            let path = dir.path().join(name);
            std::fs::write(&path, "theirs\n").unwrap();
            std::os::unix::fs::chown(&path, Some(61093), Some(61093)).unwrap();
            let e = if name.ends_with("pid") {
                lock_pid_file(&path).unwrap_err()
            } else {
                open_own_file(&path, "log file", Access::Append).unwrap_err()
            };
            assert!(
                e.to_string()
                    .contains("owned by uid 61093, not by this user (uid 0)"),
                "{e}"
            );
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "theirs\n");
        }
        // Their pid file could name any process: `stop` signals none.
        let e = stop(&dir.path().join("provd.pid"), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, DaemonizeError::Refused { .. }), "{e}");
    }

    #[test]
    fn the_first_start_up_report_wins() {
        let (r, w) = sys::pipe().unwrap();
        let report = StartupReport {
            pipe: Arc::new(Mutex::new(Some(File::from(w)))),
        };
        report.failed("cannot bind\nsecond line");
        report.ready();
        drop(report);
        let mut text = String::new();
        File::from(r).read_to_string(&mut text).unwrap();
        assert_eq!(text, "error cannot bind / second line\n");
    }
}
