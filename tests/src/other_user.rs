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
    command_in_group(uid, uid, program)
}

/// `program` run as `uid` and gid `gid`, with no supplementary groups: uids sharing a
/// group, for the group budgets.
pub fn command_in_group(uid: u32, gid: u32, program: impl AsRef<Path>) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
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

/// Lets every local user reach `daemon`'s socket (its directories 0711, the socket
/// 0666), so that the access policy alone decides who is served, as on a host where the
/// socket's group or mode lets other users in.
pub fn let_every_user_connect(daemon: &crate::Daemon) {
    use std::os::unix::fs::PermissionsExt;
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    };
    chmod(daemon.dir.path(), 0o711);
    if let Some(dir) = daemon.socket.parent().filter(|d| *d != daemon.dir.path()) {
        chmod(dir, 0o711);
    }
    chmod(&daemon.socket, 0o666);
}

/// A `provd-test-peer` role running as another uid, spoken to through its stdin and
/// stdout, one line at a time. Its stdin closes (and so the role ends) when it is
/// dropped.
pub struct Peer {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl Peer {
    /// Starts `provd-test-peer <args>` as `uid` against `socket`, with `env` added.
    pub fn start(uid: u32, socket: &Path, args: &[&str], env: &[(&str, &str)]) -> Peer {
        Peer::start_in_group(uid, uid, socket, args, env)
    }

    /// [`Peer::start`] with gid `gid` (see [`command_in_group`]).
    pub fn start_in_group(
        uid: u32,
        gid: u32,
        socket: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Peer {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = command_in_group(uid, gid, test_peer_bin())
            .args(args)
            .env("PROVD_SOCKET", socket)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start provd-test-peer through setpriv");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout piped");
        Peer {
            child,
            stdin,
            lines: std::io::BufReader::new(stdout).lines(),
        }
    }

    /// The role's next line of output (blocks until it prints one).
    pub fn line(&mut self) -> String {
        match self.lines.next() {
            Some(Ok(line)) => line,
            other => panic!("provd-test-peer ended without a line: {other:?}"),
        }
    }

    /// Sends one command line and returns the answer line.
    pub fn ask(&mut self, command: &str) -> String {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("write to provd-test-peer");
        stdin.flush().expect("flush");
        self.line()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}
