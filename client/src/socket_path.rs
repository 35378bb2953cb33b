//! Where the daemon listens when nobody says otherwise. Shared by the daemon, the CLI and
//! the C ABI so that all of them agree without configuration.

use std::path::PathBuf;

/// Environment variable that names the socket, for the daemon and every client.
pub const SOCKET_ENV: &str = "PROVD_SOCKET";

/// `$PROVD_SOCKET`, else `$XDG_RUNTIME_DIR/provd/provd.sock`, else
/// `/run/provd/provd.sock` for root, else `/tmp/provd-<uid>/provd.sock`.
///
/// The last case exists for users without a login session (no `XDG_RUNTIME_DIR`, as in
/// cron or `su`); the daemon creates that directory 0700 and refuses one it does not own,
/// and a client refuses to talk to whatever listens in one another user made
/// ([`crate::trust`]), whichever rule gave the path.
pub fn default_socket_path() -> PathBuf {
    if let Some(p) = std::env::var_os(SOCKET_ENV).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|p| !p.is_empty()) {
        return PathBuf::from(dir).join("provd").join("provd.sock");
    }
    #[cfg(unix)]
    {
        let uid = current_uid();
        if uid == 0 {
            PathBuf::from("/run/provd/provd.sock")
        } else {
            PathBuf::from(format!("/tmp/provd-{uid}/provd.sock"))
        }
    }
    #[cfg(windows)]
    {
        PathBuf::from(r"\\.\pipe\provd")
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}
