//! Running part of a test as another local user, for the custody suite: an attacker (or a
//! victim) with a uid of its own on the same host.
//!
//! Tests switch to numeric uids with `setpriv --reuid/--regid --clear-groups` (no
//! `useradd`: nothing is left on the host), a distinct uid per test so that tests running
//! in parallel never share a `/tmp/provd-<uid>` directory or a per-uid limit. Only root can
//! do that; elsewhere the tests print why they are skipped and pass.

use std::path::Path;
use std::process::Command;

/// Whether this process runs as root (and so may switch to other uids).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// `true` when the test may run; otherwise prints a skip message naming the test and
/// returns `false`, so that a non-root run says what it left out.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    println!("SKIPPED: {test} needs root, to run part of it as another uid (setpriv)");
    false
}

/// `program` run as `uid` (and gid `uid`), with no supplementary groups.
pub fn command_as(uid: u32, program: impl AsRef<Path>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--"])
        .arg(program.as_ref());
    cmd
}

/// The `provd-test-peer` helper binary (see `src/bin/test_peer.rs`), which a test runs as
/// another uid to play a hostile or ordinary local program.
pub fn test_peer_bin() -> std::path::PathBuf {
    let provd = crate::provd_bin();
    provd.with_file_name("provd-test-peer")
}
