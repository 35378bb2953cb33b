//! The listening socket: a filesystem Unix socket (never the abstract namespace, which
//! has no permissions) in a private directory, or a named pipe on Windows.
//!
//! Binding follows ssh-agent's rules: the directory is created 0700 (0710 with a socket
//! group); the socket is 0600 (0660 with a group); a socket file left by a dead daemon is
//! reclaimed, and a live daemon on the same path makes this one refuse to start. The
//! directory must pass the trust rule clients apply before they talk to the daemon
//! ([`provd_client::trust`]): it is ours or root's and nobody else can write it or any
//! directory above it (sticky ones like `/tmp` excepted above it), so no other user can
//! swap the socket for theirs, and every client will accept it.

use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::{prelude::*, Listener, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};

/// Why the daemon cannot listen.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another daemon answers on the path.
    #[error("another provd is already listening on {}; stop it first or pass another --socket", .0.display())]
    InUse(PathBuf),
    /// Something other than a socket is in the way.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// The socket directory is unsafe to use.
    #[error("socket directory {}: {reason}", path.display())]
    UnsafeDirectory {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The socket directory, or one above it, breaks the trust rule.
    #[cfg(unix)]
    #[error("refusing to listen on {}: {reason}", socket.display())]
    Untrusted {
        /// The socket path.
        socket: PathBuf,
        /// The path that broke the rule, its owner and the rule.
        reason: provd_client::trust::Untrusted,
    },
    /// The configured socket group does not exist.
    #[error("socket_group '{0}' is not a group on this host")]
    UnknownGroup(String),
    /// The socket systemd passed has no filesystem path.
    #[error("the socket systemd passed is not a filesystem socket ({0}); provd serves only sockets with a path, whose permissions guard them (ListenStream=/run/provd/provd.sock)")]
    Inherited(String),
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

/// A plain Unix listening socket bound under the MessagePack socket's rules (its
/// directory prepared and checked by the shared trust rule, a stale socket reclaimed, a
/// live one refused, mode 0600 or 0660 with the socket group): the HTTP front door's.
/// Dropping it removes the socket file.
#[cfg(unix)]
#[derive(Debug)]
pub struct UnixSocketListener {
    listener: tokio::net::UnixListener,
    path: PathBuf,
    /// systemd passed it: it stays when the daemon stops.
    inherited: bool,
}

#[cfg(unix)]
impl UnixSocketListener {
    /// Binds `path` as [`SocketListener::bind`] does.
    pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixSocketListener, ListenError> {
        use std::os::unix::fs::PermissionsExt;
        let gid = group
            .map(|g| crate::sys::group_id(g).ok_or_else(|| ListenError::UnknownGroup(g.to_owned())))
            .transpose()?;
        prepare_directory(path, gid)?;
        reclaim_stale(path)?;
        let io = |what| {
            move |source| ListenError::Io {
                what,
                path: path.to_owned(),
                source,
            }
        };
        let listener = tokio::net::UnixListener::bind(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                ListenError::InUse(path.to_owned())
            } else {
                io("cannot listen on")(e)
            }
        })?;
        // Bound with the umask's mode inside a directory only we can enter; set the group,
        // then the exact mode, before anyone can reach it.
        if let Some(gid) = gid {
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(io("cannot set the group of"))?;
        }
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io("cannot set the mode of"))?;
        Ok(UnixSocketListener {
            listener,
            path: path.to_owned(),
            inherited: false,
        })
    }

    /// Serves a listening socket systemd passed, as [`SocketListener::from_inherited`]
    /// does: used as it is and never unlinked.
    pub fn from_inherited(fd: std::os::fd::OwnedFd) -> Result<UnixSocketListener, ListenError> {
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        let address = std_listener
            .local_addr()
            .map_err(|source| ListenError::Io {
                what: "cannot read the address of the HTTP socket systemd passed",
                path: PathBuf::from("(passed descriptor)"),
                source,
            })?;
        // The abstract namespace has no permissions: anyone on the host could connect.
        let path = address
            .as_pathname()
            .map(Path::to_owned)
            .ok_or_else(|| ListenError::Inherited(format!("{address:?}")))?;
        let io = |source| ListenError::Io {
            what: "cannot serve the HTTP socket systemd passed,",
            path: path.clone(),
            source,
        };
        std_listener.set_nonblocking(true).map_err(io)?;
        let listener = tokio::net::UnixListener::from_std(std_listener).map_err(io)?;
        Ok(UnixSocketListener {
            listener,
            path,
            inherited: true,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> std::io::Result<tokio::net::UnixStream> {
        self.listener.accept().await.map(|(stream, _)| stream)
    }
}

#[cfg(unix)]
impl Drop for UnixSocketListener {
    fn drop(&mut self) {
        // New clients fail fast instead of connecting to a socket nobody serves. One
        // systemd passed stays: it is systemd's, and a connection on it starts provd.
        if !self.inherited {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A bound listener. Dropping it removes the socket file (unless it was inherited).
#[derive(Debug)]
pub struct SocketListener {
    listener: Listener,
    path: PathBuf,
    inherited: bool,
}

impl SocketListener {
    /// Binds `path`, preparing its directory and reclaiming a stale socket.
    pub fn bind(path: &Path, group: Option<&str>) -> Result<SocketListener, ListenError> {
        #[cfg(unix)]
        let mode = {
            let gid = group
                .map(|g| {
                    crate::sys::group_id(g).ok_or_else(|| ListenError::UnknownGroup(g.to_owned()))
                })
                .transpose()?;
            prepare_directory(path, gid)?;
            reclaim_stale(path)?;
            if gid.is_some() {
                0o660
            } else {
                0o600
            }
        };
        let io = |what| {
            move |source| ListenError::Io {
                what,
                path: path.to_owned(),
                source,
            }
        };
        let name = path
            .to_fs_name::<GenericFilePath>()
            .map_err(io("invalid socket name"))?;
        let options = ListenerOptions::new().name(name).reclaim_name(true);
        #[cfg(unix)]
        let options = {
            use interprocess::os::unix::local_socket::ListenerOptionsExt;
            options.mode(mode)
        };
        let listener = options.create_tokio().map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                ListenError::InUse(path.to_owned())
            } else {
                io("cannot listen on")(e)
            }
        })?;
        // The mode given to bind is still filtered by the umask (Linux masks the socket
        // inode's mode with it), so it can only come out tighter than asked. Set the
        // group, then the exact mode.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Some(g) = group {
                let gid = crate::sys::group_id(g);
                std::os::unix::fs::chown(path, None, gid).map_err(io("cannot set the group of"))?;
            }
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(io("cannot set the mode of"))?;
        }
        Ok(SocketListener {
            listener,
            path: path.to_owned(),
            inherited: false,
        })
    }

    /// Serves a listening socket systemd passed (socket activation) instead of binding
    /// one. systemd made it (path, owner, mode: `provd.socket`), so it is used as it is,
    /// and it is never unlinked: interprocess reclaims only names it bound itself, and the
    /// socket must outlive this process so that connections queued on it start the next.
    #[cfg(unix)]
    pub fn from_inherited(fd: std::os::fd::OwnedFd) -> Result<SocketListener, ListenError> {
        let std_listener = std::os::unix::net::UnixListener::from(fd);
        let address = std_listener
            .local_addr()
            .map_err(|source| ListenError::Io {
                what: "cannot read the address of the socket systemd passed",
                path: PathBuf::from("fd 3"),
                source,
            })?;
        // The abstract namespace has no permissions: anyone on the host could connect.
        let path = address
            .as_pathname()
            .map(Path::to_owned)
            .ok_or_else(|| ListenError::Inherited(format!("{address:?}")))?;
        let listener = interprocess::os::unix::uds_local_socket::tokio::Listener::try_from(
            std::os::fd::OwnedFd::from(std_listener),
        )
        .map_err(|source| ListenError::Io {
            what: "cannot serve the socket systemd passed,",
            path: path.clone(),
            source,
        })?
        .into();
        Ok(SocketListener {
            listener,
            path,
            inherited: true,
        })
    }

    /// Whether systemd passed this socket (it stays when the daemon stops).
    pub fn is_inherited(&self) -> bool {
        self.inherited
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> std::io::Result<Stream> {
        self.listener.accept().await
    }
}

/// Creates the socket's directory (0700, 0710 with a group) if it is missing, then checks
/// it with the shared trust rule. `bind` calls it; `--daemon` calls it first, as its pid file lives there.
#[cfg(unix)]
pub(crate) fn prepare_directory(path: &Path, gid: Option<u32>) -> Result<(), ListenError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let unsafe_dir = |reason: String| ListenError::UnsafeDirectory {
        path: dir.to_owned(),
        reason,
    };
    let mode = if gid.is_some() { 0o710 } else { 0o700 };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(dir)
                .map_err(|source| ListenError::Io {
                    what: "cannot create the socket directory",
                    path: dir.to_owned(),
                    source,
                })?;
            // `mode` is filtered by the umask; set it exactly.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(
                |source| ListenError::Io {
                    what: "cannot set the mode of",
                    path: dir.to_owned(),
                    source,
                },
            )?;
            if let Some(gid) = gid {
                std::os::unix::fs::chown(dir, None, Some(gid)).map_err(|source| {
                    ListenError::Io {
                        what: "cannot set the group of",
                        path: dir.to_owned(),
                        source,
                    }
                })?;
            }
        }
        Err(source) => {
            return Err(ListenError::Io {
                what: "cannot inspect the socket directory",
                path: dir.to_owned(),
                source,
            })
        }
        Ok(meta) if !meta.is_dir() && !meta.is_symlink() => {
            return Err(unsafe_dir("is not a directory".into()));
        }
        Ok(_) => {}
    }
    // Checked also when just made: the directories above it count too.
    use provd_client::trust::{self, TrustError};
    trust::check_socket_directory(dir, crate::sys::effective_uid()).map_err(|e| match e {
        TrustError::Untrusted(reason) => ListenError::Untrusted {
            socket: path.to_owned(),
            reason,
        },
        TrustError::Io { .. } => ListenError::Io {
            what: "cannot inspect the socket directory",
            path: dir.to_owned(),
            source: e.to_io_error(),
        },
    })?;
    Ok(())
}

#[cfg(unix)]
fn reclaim_stale(path: &Path) -> Result<(), ListenError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ListenError::Io {
                what: "cannot inspect",
                path: path.to_owned(),
                source,
            })
        }
        Ok(m) => m,
    };
    if !meta.file_type().is_socket() {
        return Err(ListenError::NotASocket(path.to_owned()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ListenError::InUse(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "reclaiming the stale socket of a daemon that is gone");
            std::fs::remove_file(path).map_err(|source| ListenError::Io {
                what: "cannot remove the stale socket",
                path: path.to_owned(),
                source,
            })
        }
        Err(source) => Err(ListenError::Io {
            what: "cannot probe the existing socket",
            path: path.to_owned(),
            source,
        }),
    }
}
