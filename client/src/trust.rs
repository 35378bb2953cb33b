//! Who may have put a file or a socket where provd finds it: the one trust rule shared by
//! every client (which socket it will talk to) and by the daemon (which files it will read
//! and where it will listen).
//!
//! The rule, for a uid `U` (the client's, or the daemon's):
//!
//! 1. Symbolic links are resolved and the real path is what is checked.
//! 2. Every directory above the socket's directory (or above a file), up to `/`, is owned
//!    by root or `U`, and is not writable by group or others, unless it is sticky (like
//!    `/tmp`, where nobody can rename or remove what another user made).
//! 3. A socket's own directory is not writable by group or others, sticky or not. It is
//!    owned by root or `U`; or by any uid when its parent is owned by root and not
//!    writable by group or others: only root can have made it, as systemd makes
//!    `/run/provd` for a service user. `/tmp/provd-1002` owned by somebody else is refused.
//! 4. The process listening on a socket (its uid read from the connected socket,
//!    `SO_PEERCRED`) is the socket directory's owner or root. The socket file's own owner
//!    is not checked: only the directory's owner and root can have put it there (systemd's
//!    socket unit makes `/run/provd/provd.sock` owned by the service user in a directory
//!    that may still be root's).
//! 5. A file the daemon reads is a regular file owned by root or `U` and not writable by
//!    group or others.
//!
//! Anyone who could write one of those directories or files could have replaced what is
//! there with their own: a socket that receives the secrets a client sends, or a
//! configuration that makes them admin. A refusal is an [`Untrusted`] naming the path, the
//! owner found and the rule broken.

use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Write permission for the group.
const GROUP_WRITE: u32 = 0o020;
/// Write permission for others.
const OTHER_WRITE: u32 = 0o002;
/// The sticky bit: in such a directory only an entry's owner may rename or remove it.
const STICKY: u32 = 0o1000;

/// Which part of the rule a path broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A directory above must be owned by root or the expected uid.
    AncestorOwner {
        /// The uid that may own it besides root.
        expected: u32,
    },
    /// A directory above must not be writable by group or others unless it is sticky.
    AncestorWritable,
    /// The socket's directory must be owned by root or the expected uid, or sit in a
    /// root-owned directory that group and others cannot write.
    SocketDirectoryOwner {
        /// The uid that may own it besides root.
        expected: u32,
    },
    /// The socket's directory must not be writable by group or others, sticky or not.
    SocketDirectoryWritable,
    /// The process listening must run as the socket directory's owner or root.
    PeerUid {
        /// The directory's owner.
        directory_owner: u32,
    },
    /// A file must be owned by root or the expected uid.
    FileOwner {
        /// The uid that may own it besides root.
        expected: u32,
    },
    /// A file must not be writable by group or others.
    FileWritable,
    /// A file must be a regular file.
    NotRegularFile,
    /// A directory on the way is not a directory.
    NotDirectory,
}

/// A path that breaks the trust rule: which path, who owns it, its mode, and the rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Untrusted {
    /// The path that broke the rule (after symbolic links were resolved): the file, the
    /// socket, or one of the directories above them.
    pub path: PathBuf,
    /// Its owner; for [`Rule::PeerUid`], the uid of the process listening.
    pub owner: u32,
    /// Its permission bits (`0o7777`), or 0 for [`Rule::PeerUid`].
    pub mode: u32,
    /// The rule it broke.
    pub rule: Rule,
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, owner, mode) = (self.path.display(), self.owner, self.mode);
        match self.rule {
            Rule::AncestorOwner { expected } => write!(
                f,
                "{path} is owned by uid {owner}, but every directory above must be owned by root or uid {expected}"
            ),
            Rule::AncestorWritable => write!(
                f,
                "{path} (owned by uid {owner}) is writable by group or others (mode {mode:o}) and not sticky, which no directory above may be; run `chmod go-w {path}`"
            ),
            Rule::SocketDirectoryOwner { expected } => write!(
                f,
                "the socket's directory {path} is owned by uid {owner}; it must be owned by root or uid {expected}, or by a service user inside a root-owned directory that group and others cannot write (like /run/provd)"
            ),
            Rule::SocketDirectoryWritable => write!(
                f,
                "the socket's directory {path} (owned by uid {owner}) is writable by group or others (mode {mode:o}); make it 0700"
            ),
            Rule::PeerUid { directory_owner } => write!(
                f,
                "the process listening on {path} runs as uid {owner}; it must run as the socket directory's owner (uid {directory_owner}) or root"
            ),
            Rule::FileOwner { expected } => write!(
                f,
                "{path} is owned by uid {owner}; it must be owned by root or uid {expected} (run `chown {expected} {path}`)"
            ),
            Rule::FileWritable => write!(
                f,
                "{path} (owned by uid {owner}) is writable by group or others (mode {mode:o}); run `chmod go-w {path}`"
            ),
            Rule::NotRegularFile => write!(f, "{path} (owned by uid {owner}) is not a regular file"),
            Rule::NotDirectory => write!(f, "{path} (owned by uid {owner}) is not a directory"),
        }
    }
}

/// Why a path could not be checked or was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    /// The path could not be resolved, opened or inspected (it does not exist, say).
    #[error("{}: {message}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The OS error's kind.
        kind: io::ErrorKind,
        /// The OS error's message.
        message: String,
    },
    /// The path breaks the rule.
    #[error(transparent)]
    Untrusted(#[from] Untrusted),
}

impl TrustError {
    fn io(path: &Path, e: &io::Error) -> TrustError {
        TrustError::Io {
            path: path.to_owned(),
            kind: e.kind(),
            message: e.to_string(),
        }
    }

    /// The error as an `io::Error` of the same kind and message, for callers whose error
    /// types carry one.
    pub fn to_io_error(&self) -> io::Error {
        let kind = match self {
            TrustError::Io { kind, .. } => *kind,
            TrustError::Untrusted(_) => io::ErrorKind::PermissionDenied,
        };
        match self {
            TrustError::Io { message, .. } => io::Error::new(kind, message.clone()),
            other => io::Error::new(kind, other.to_string()),
        }
    }
}

fn untrusted(path: &Path, meta: &Metadata, rule: Rule) -> TrustError {
    TrustError::Untrusted(Untrusted {
        path: path.to_owned(),
        owner: meta.uid(),
        mode: meta.mode() & 0o7777,
        rule,
    })
}

fn lstat(path: &Path) -> Result<Metadata, TrustError> {
    std::fs::symlink_metadata(path).map_err(|e| TrustError::io(path, &e))
}

fn writable_by_group_or_others(meta: &Metadata) -> bool {
    meta.mode() & (GROUP_WRITE | OTHER_WRITE) != 0
}

fn resolve(path: &Path) -> Result<PathBuf, TrustError> {
    std::fs::canonicalize(path).map_err(|e| TrustError::io(path, &e))
}

/// Rule 2 for every directory from `first` up to `/` (`first` is a resolved path).
fn check_ancestors(first: Option<&Path>, uid: u32) -> Result<(), TrustError> {
    for dir in first.into_iter().flat_map(Path::ancestors) {
        let meta = lstat(dir)?;
        if !meta.is_dir() {
            return Err(untrusted(dir, &meta, Rule::NotDirectory));
        }
        if meta.uid() != 0 && meta.uid() != uid {
            return Err(untrusted(dir, &meta, Rule::AncestorOwner { expected: uid }));
        }
        if writable_by_group_or_others(&meta) && meta.mode() & STICKY == 0 {
            return Err(untrusted(dir, &meta, Rule::AncestorWritable));
        }
    }
    Ok(())
}

/// A socket that passed the path part of the rule. Connect to [`Self::real_path`], then
/// call [`Self::check_peer`] with the uid read from the connection before sending
/// anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedSocket {
    /// The socket's path with every symbolic link resolved.
    pub real_path: PathBuf,
    /// The owner of the socket's directory: the uid the daemon must run as (or root).
    pub directory_owner: u32,
}

impl TrustedSocket {
    /// Rule 4's second half: the uid of the process that listens on the socket, as the
    /// kernel reports it for the connection, must be the directory's owner or root.
    pub fn check_peer(&self, peer_uid: u32) -> Result<(), Untrusted> {
        if peer_uid == 0 || peer_uid == self.directory_owner {
            return Ok(());
        }
        Err(Untrusted {
            path: self.real_path.clone(),
            owner: peer_uid,
            mode: 0,
            rule: Rule::PeerUid {
                directory_owner: self.directory_owner,
            },
        })
    }
}

/// Checks the socket at `path` for a client running as `uid` (rules 1 to 3; rule 4 needs
/// the connection: [`TrustedSocket::check_peer`]). A socket that does not exist is an
/// [`TrustError::Io`] of kind `NotFound`, as connecting to it would be.
pub fn check_socket(path: &Path, uid: u32) -> Result<TrustedSocket, TrustError> {
    let real_path = resolve(path)?;
    let dir = real_path.parent().unwrap_or(Path::new("/"));
    let dir_meta = lstat(dir)?;
    if !dir_meta.is_dir() {
        return Err(untrusted(dir, &dir_meta, Rule::NotDirectory));
    }
    if writable_by_group_or_others(&dir_meta) {
        return Err(untrusted(dir, &dir_meta, Rule::SocketDirectoryWritable));
    }
    let owner = dir_meta.uid();
    if owner != 0 && owner != uid {
        // Only root can have made a directory owned by somebody else inside a root-owned
        // directory that nobody else can write.
        let parent = dir.parent();
        let made_by_root = match parent {
            Some(parent) => {
                let p = lstat(parent)?;
                p.is_dir() && p.uid() == 0 && !writable_by_group_or_others(&p)
            }
            None => false,
        };
        if !made_by_root {
            return Err(untrusted(
                dir,
                &dir_meta,
                Rule::SocketDirectoryOwner { expected: uid },
            ));
        }
    }
    check_ancestors(dir.parent(), uid)?;
    Ok(TrustedSocket {
        real_path,
        directory_owner: owner,
    })
}

/// Checks a directory the daemon running as `uid` will listen in: it and every directory
/// above it are owned by root or `uid`; it is not writable by group or others, and those
/// above it only when sticky. Returns its resolved path.
pub fn check_socket_directory(dir: &Path, uid: u32) -> Result<PathBuf, TrustError> {
    let real = resolve(dir)?;
    let meta = lstat(&real)?;
    if !meta.is_dir() {
        return Err(untrusted(&real, &meta, Rule::NotDirectory));
    }
    if meta.uid() != 0 && meta.uid() != uid {
        return Err(untrusted(
            &real,
            &meta,
            Rule::SocketDirectoryOwner { expected: uid },
        ));
    }
    if writable_by_group_or_others(&meta) {
        return Err(untrusted(&real, &meta, Rule::SocketDirectoryWritable));
    }
    check_ancestors(real.parent(), uid)?;
    Ok(real)
}

/// A file opened at its resolved path, not yet checked: its caller may apply rules of its
/// own to [`Self::metadata`] first (the master key allows no group or other bits at all),
/// then [`Self::check`] applies the shared rule.
#[derive(Debug)]
pub struct OpenedFile {
    file: File,
    metadata: Metadata,
    real_path: PathBuf,
}

/// Opens the file behind `path` for reading: symbolic links resolved, then the resolved
/// path opened without following a link (`O_NOFOLLOW`) and without blocking on a FIFO.
pub fn open_resolved(path: &Path) -> Result<OpenedFile, TrustError> {
    let real_path = resolve(path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&real_path)
        .map_err(|e| TrustError::io(path, &e))?;
    // fstat the opened file, so the file checked is the file read.
    let metadata = file.metadata().map_err(|e| TrustError::io(path, &e))?;
    Ok(OpenedFile {
        file,
        metadata,
        real_path,
    })
}

impl OpenedFile {
    /// The opened file's metadata (from `fstat`).
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The path that was opened, every symbolic link resolved.
    pub fn real_path(&self) -> &Path {
        &self.real_path
    }

    /// Applies rules 2 and 5 for a reader running as `uid` and returns the file.
    pub fn check(self, uid: u32) -> Result<File, TrustError> {
        let OpenedFile {
            file,
            metadata,
            real_path,
        } = self;
        if !metadata.is_file() {
            return Err(untrusted(&real_path, &metadata, Rule::NotRegularFile));
        }
        if metadata.uid() != 0 && metadata.uid() != uid {
            return Err(untrusted(
                &real_path,
                &metadata,
                Rule::FileOwner { expected: uid },
            ));
        }
        if writable_by_group_or_others(&metadata) {
            return Err(untrusted(&real_path, &metadata, Rule::FileWritable));
        }
        check_ancestors(real_path.parent(), uid)?;
        // The directories above were trusted, so nobody else could have swapped the
        // entry since it was opened; comparing the inode makes that explicit.
        let now = lstat(&real_path)?;
        if now.dev() != metadata.dev() || now.ino() != metadata.ino() {
            return Err(TrustError::Io {
                path: real_path,
                kind: io::ErrorKind::Other,
                message: "was replaced while it was being opened".into(),
            });
        }
        Ok(file)
    }
}

/// Opens `path` and applies the whole rule for a reader running as `uid`:
/// [`open_resolved`] then [`OpenedFile::check`].
pub fn open_trusted_file(path: &Path, uid: u32) -> Result<File, TrustError> {
    open_resolved(path)?.check(uid)
}

/// The uid of the process at the other end of a connected Unix socket (`SO_PEERCRED` on
/// Linux, `getpeereid` elsewhere): for a listening socket's peer, the uid that called
/// `listen`.
pub fn peer_uid(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: an all-zero ucred is a valid value for a plain C struct.
        let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `fd` is a descriptor borrowed for the call; `cred` and `len` are live
        // locals of the size passed, and getsockopt writes at most `len` bytes to `cred`.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(cred.uid)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let (mut uid, mut gid): (libc::uid_t, libc::gid_t) = (0, 0);
        // SAFETY: `fd` is a descriptor borrowed for the call; `uid` and `gid` are live
        // locals that getpeereid writes.
        if unsafe { libc::getpeereid(fd.as_raw_fd(), &mut uid, &mut gid) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(uid)
    }
}

/// The process's effective uid: the one the kernel checks files against.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn me() -> u32 {
        effective_uid()
    }

    /// A private directory under the system's temp dir, and a socket bound in `run/`.
    fn socket_in(mode: u32) -> (tempfile::TempDir, PathBuf, std::os::unix::net::UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        chmod(&run, mode);
        let sock = run.join("provd.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        (dir, sock, listener)
    }

    fn rule_of(e: TrustError) -> (PathBuf, Rule) {
        match e {
            TrustError::Untrusted(u) => (u.path, u.rule),
            other => panic!("expected a refusal, got {other}"),
        }
    }

    #[test]
    fn a_private_socket_directory_passes_and_its_owner_is_the_expected_daemon() {
        let (_dir, sock, _l) = socket_in(0o700);
        let trusted = check_socket(&sock, me()).unwrap();
        assert_eq!(trusted.real_path, std::fs::canonicalize(&sock).unwrap());
        assert_eq!(trusted.directory_owner, me());
        trusted.check_peer(me()).unwrap();
        trusted.check_peer(0).unwrap();
    }

    #[test]
    fn a_listener_of_another_uid_is_refused_and_named() {
        let (_dir, sock, _l) = socket_in(0o700);
        let trusted = check_socket(&sock, me()).unwrap();
        let other = me().wrapping_add(4242);
        let e = trusted.check_peer(other).unwrap_err();
        assert_eq!(e.owner, other);
        assert_eq!(
            e.rule,
            Rule::PeerUid {
                directory_owner: me()
            }
        );
        assert!(
            e.to_string().contains(&format!("runs as uid {other}")),
            "{e}"
        );
    }

    #[test]
    fn a_socket_directory_others_can_write_is_refused_even_when_sticky() {
        for mode in [0o770, 0o702, 0o1777] {
            let (_dir, sock, _l) = socket_in(mode);
            let (path, rule) = rule_of(check_socket(&sock, me()).unwrap_err());
            assert_eq!(rule, Rule::SocketDirectoryWritable, "mode {mode:o}");
            assert_eq!(path, std::fs::canonicalize(sock.parent().unwrap()).unwrap());
        }
    }

    #[test]
    fn a_writable_directory_above_is_refused_unless_sticky() {
        let (dir, sock, _l) = socket_in(0o700);
        chmod(dir.path(), 0o777);
        let e = check_socket(&sock, me()).unwrap_err();
        let text = e.to_string();
        let (path, rule) = rule_of(e);
        assert_eq!(rule, Rule::AncestorWritable);
        assert_eq!(path, std::fs::canonicalize(dir.path()).unwrap());
        assert!(
            text.contains("mode 777") && text.contains("chmod go-w"),
            "{text}"
        );
        // Sticky, like /tmp: nobody else can rename or remove what is ours in it.
        chmod(dir.path(), 0o1777);
        check_socket(&sock, me()).unwrap();
    }

    #[test]
    fn a_symlink_is_resolved_and_its_target_checked() {
        let (dir, sock, _l) = socket_in(0o700);
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&sock, &link).unwrap();
        let trusted = check_socket(&link, me()).unwrap();
        assert_eq!(trusted.real_path, std::fs::canonicalize(&sock).unwrap());
        // A link from a private place into a directory others can write does not launder it.
        chmod(sock.parent().unwrap(), 0o777);
        let (_, rule) = rule_of(check_socket(&link, me()).unwrap_err());
        assert_eq!(rule, Rule::SocketDirectoryWritable);
    }

    #[test]
    fn a_missing_socket_is_an_io_error_of_kind_not_found() {
        let dir = tempfile::tempdir().unwrap();
        match check_socket(&dir.path().join("nope.sock"), me()).unwrap_err() {
            TrustError::Io { kind, .. } => assert_eq!(kind, io::ErrorKind::NotFound),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn ownership_rules_hold_for_other_uids() {
        if me() != 0 {
            println!("skipped: changing owners needs root");
            return;
        }
        // Expected uid 61090 (the "client"); 61091 another user.
        let (client, other) = (61090, 61091);
        let (dir, sock, _l) = socket_in(0o700);
        let run = sock.parent().unwrap().to_owned();
        // The client's own directory, the socket made by the client's daemon.
        std::os::unix::fs::chown(&run, Some(client), None).unwrap();
        std::os::unix::fs::chown(&sock, Some(client), None).unwrap();
        check_socket(&sock, client).unwrap();
        // Another user's directory inside a root-owned 0700 directory: made by root.
        std::os::unix::fs::chown(&run, Some(other), None).unwrap();
        std::os::unix::fs::chown(&sock, Some(other), None).unwrap();
        let trusted = check_socket(&sock, client).unwrap();
        assert_eq!(trusted.directory_owner, other);
        trusted.check_peer(other).unwrap();
        assert!(trusted.check_peer(client).is_err());
        // …but not inside a sticky directory anyone can write (the /tmp squat).
        chmod(dir.path(), 0o1777);
        let (path, rule) = rule_of(check_socket(&sock, client).unwrap_err());
        assert_eq!(path, std::fs::canonicalize(&run).unwrap());
        assert_eq!(rule, Rule::SocketDirectoryOwner { expected: client });
        chmod(dir.path(), 0o700);
        // systemd's socket unit: the service user's socket in a directory still root's.
        // Only root can have put it there; who listens is for the peer check.
        std::os::unix::fs::chown(&run, Some(0), None).unwrap();
        let trusted = check_socket(&sock, client).unwrap();
        assert_eq!(trusted.directory_owner, 0);
        trusted.check_peer(0).unwrap();
        assert!(trusted.check_peer(other).is_err());
        // A directory above owned by another user.
        std::os::unix::fs::chown(&run, Some(client), None).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(other), None).unwrap();
        let (path, rule) = rule_of(check_socket(&sock, client).unwrap_err());
        assert_eq!(path, std::fs::canonicalize(dir.path()).unwrap());
        assert_eq!(rule, Rule::AncestorOwner { expected: client });
    }

    #[test]
    fn the_daemon_refuses_a_socket_directory_others_can_write() {
        let dir = tempfile::tempdir().unwrap();
        check_socket_directory(dir.path(), me()).unwrap();
        chmod(dir.path(), 0o777);
        let e = check_socket_directory(dir.path(), me()).unwrap_err();
        assert!(
            e.to_string()
                .contains("is writable by group or others (mode 777)"),
            "{e}"
        );
        chmod(dir.path(), 0o1777);
        let (_, rule) = rule_of(check_socket_directory(dir.path(), me()).unwrap_err());
        assert_eq!(rule, Rule::SocketDirectoryWritable);
    }

    fn file_in(mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provd.toml");
        std::fs::write(&path, "x = 1\n").unwrap();
        chmod(&path, mode);
        (dir, path)
    }

    #[test]
    fn a_file_only_its_owner_can_write_is_trusted() {
        for mode in [0o600, 0o644, 0o444, 0o640] {
            let (_dir, path) = file_in(mode);
            let mut text = String::new();
            io::Read::read_to_string(&mut open_trusted_file(&path, me()).unwrap(), &mut text)
                .unwrap();
            assert_eq!(text, "x = 1\n");
        }
    }

    #[test]
    fn a_file_group_or_others_can_write_is_refused_with_the_fix() {
        for mode in [0o664, 0o622, 0o606, 0o666] {
            let (_dir, path) = file_in(mode);
            let e = open_trusted_file(&path, me()).unwrap_err();
            let text = e.to_string();
            assert!(
                text.contains(&format!("mode {mode:o}")) && text.contains("chmod go-w"),
                "{text}"
            );
            assert_eq!(rule_of(e).1, Rule::FileWritable);
        }
    }

    #[test]
    fn a_file_in_a_directory_others_can_write_is_refused() {
        let (dir, path) = file_in(0o600);
        chmod(dir.path(), 0o757);
        let (where_, rule) = rule_of(open_trusted_file(&path, me()).unwrap_err());
        assert_eq!(rule, Rule::AncestorWritable);
        assert_eq!(where_, std::fs::canonicalize(dir.path()).unwrap());
    }

    #[test]
    fn a_link_to_a_file_others_can_write_is_refused_at_the_target() {
        let (dir, path) = file_in(0o666);
        let private = tempfile::tempdir().unwrap();
        let link = private.path().join("provd.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let (where_, rule) = rule_of(open_trusted_file(&link, me()).unwrap_err());
        assert_eq!(rule, Rule::FileWritable);
        assert_eq!(where_, std::fs::canonicalize(&path).unwrap());
        drop(dir);
    }

    #[test]
    fn a_directory_is_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, rule) = rule_of(open_trusted_file(dir.path(), me()).unwrap_err());
        assert_eq!(rule, Rule::NotRegularFile);
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        if me() != 0 {
            println!("skipped: changing owners needs root");
            return;
        }
        let (_dir, path) = file_in(0o644);
        std::os::unix::fs::chown(&path, Some(61092), None).unwrap();
        let e = open_trusted_file(&path, 0).unwrap_err();
        assert!(e.to_string().contains("owned by uid 61092"), "{e}");
        assert_eq!(rule_of(e).1, Rule::FileOwner { expected: 0 });
        // Its owner may.
        open_trusted_file(&path, 61092).unwrap();
    }
}
