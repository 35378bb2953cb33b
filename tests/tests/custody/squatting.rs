//! Socket squatting (issue 11, part 1): another local user listens where a victim's client
//! will look for the daemon, to collect the secrets the client sends. The client must
//! authenticate the daemon before it sends a byte: the socket's directory and every one
//! above it must be such that only a trusted user can have made the socket, and the
//! process listening must run as the directory's owner or root.
//!
//! The attacker is `provd-test-peer squat`, run as its own uid; it reports every
//! connection and every byte it receives.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Output, Stdio};

use provd_tests::other_user::{command_as, root_or_skip, test_peer_bin};
use provd_tests::provd_bin;

/// What the test sends the squatter to learn that every earlier connection was reported.
const FLUSH: &str = "custody-squatting-flush";
/// Secrets the victim's commands carry; none may reach the squatter.
const CANARY_KEY: &str = "sk-canary-squatted-key-0123456789";
const CANARY_ENV_KEY: &str = "sk-canary-squatted-env-0123456789";
const CANARY_MASTER: &str = "c4a9f3e28b7d1605a3e9c2f4b8d71e60a5c3f9e2d4b8a7c61e0f3d5a9b2c4e8f";
const CANARY_TOKEN: &str = "pvd_canary_squatted_token_0123456789";

/// A fake daemon run by another uid.
struct Squatter {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    socket: PathBuf,
}

impl Squatter {
    /// Starts `provd-test-peer squat` as `uid` on `socket` (its directory made with
    /// `dir_mode` unless it exists) and waits until it listens.
    fn start(uid: u32, socket: &Path, dir_mode: u32) -> Squatter {
        let mut child = command_as(uid, test_peer_bin())
            .arg("squat")
            .arg(socket)
            .arg(format!("{dir_mode:o}"))
            .arg(FLUSH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the squatter");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "listening", "the squatter did not start");
        Squatter {
            child,
            stdin,
            stdout,
            socket: socket.to_owned(),
        }
    }

    /// Everything the squatter reported, one line per connection, once every connection
    /// made so far has been read to its end; then stops it.
    fn received(mut self) -> Vec<String> {
        let mut flush = std::os::unix::net::UnixStream::connect(&self.socket).unwrap();
        flush.write_all(FLUSH.as_bytes()).unwrap();
        drop(flush);
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "the squatter died; it reported {lines:?}"
            );
            if line.trim() == "flushed" {
                break;
            }
            lines.push(line.trim().to_owned());
        }
        drop(self.stdin.take());
        self.child.wait().unwrap();
        lines
    }
}

/// Removes a directory (the victim's fallback directory under /tmp) when dropped, and
/// any leftover of an earlier run when made.
struct RemoveOnDrop(PathBuf);

impl RemoveOnDrop {
    fn new(path: PathBuf) -> RemoveOnDrop {
        let _ = std::fs::remove_dir_all(&path);
        RemoveOnDrop(path)
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `provd ARGS` as `uid`, as a user without a login session: no `XDG_RUNTIME_DIR`, no
/// `PROVD_SOCKET` (unless `env` sets it), no configuration file.
fn provd_as(uid: u32, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    provd_tests::output_with_stdin(
        command_as(uid, provd_bin())
            .args(args)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("PROVD_SOCKET")
            .env_remove("PROVD_TOKEN")
            .env("PROVD_CONFIG", "")
            .env("XDG_CONFIG_HOME", "/nonexistent/provd-custody")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied()),
        stdin,
    )
}

/// One victim command: its arguments, its stdin and extra environment.
type Run<'a> = (&'a [&'a str], &'a str, &'a [(&'a str, &'a str)]);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A directory of files the victim can read (the `.env` to import, the new master key).
fn victims_files() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = dir.path().join("victim.env");
    std::fs::write(&env, format!("OPENAI_API_KEY={CANARY_ENV_KEY}\n")).unwrap();
    let key = dir.path().join("new.key");
    std::fs::write(&key, format!("{CANARY_MASTER}\n")).unwrap();
    (dir, env, key)
}

/// Asserts that a victim's command failed with the typed refusal and sent nothing.
fn assert_refused(out: &Output, socket: &Path, why: &str) {
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the command succeeded: {stderr}");
    assert!(
        stderr.contains(&format!(
            "refusing to talk to provd at {}, nothing was sent",
            socket.display()
        )) && stderr.contains(why),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    for canary in [CANARY_KEY, CANARY_ENV_KEY, CANARY_MASTER, CANARY_TOKEN] {
        assert!(!stderr.contains(canary) && !text(&out.stdout).contains(canary));
    }
}

#[test]
fn a_fake_daemon_run_by_a_second_uid_in_the_fallback_directory_receives_nothing() {
    if !root_or_skip("a_fake_daemon_run_by_a_second_uid_in_the_fallback_directory_receives_nothing")
    {
        return;
    }
    let (victim, attacker) = (61000, 61001);
    let fallback = RemoveOnDrop::new(PathBuf::from(format!("/tmp/provd-{victim}")));
    let socket = fallback.0.join("provd.sock");
    // The attacker made the victim's fallback directory first, readable by all so the
    // victim's client can reach the socket in it.
    let squatter = Squatter::start(attacker, &socket, 0o755);
    let (_files, env_file, key_file) = victims_files();
    let (env_file, key_file) = (env_file.to_str().unwrap(), key_file.to_str().unwrap());
    let why = format!(
        "the socket's directory {} is owned by uid {attacker}",
        fallback.0.display()
    );
    let explicit = [("PROVD_SOCKET", socket.to_str().unwrap())];
    let token = [("PROVD_TOKEN", CANARY_TOKEN)];
    let runs: [Run; 7] = [
        (&["creds", "set", "x"], CANARY_KEY, &[]),
        (&["creds", "import", env_file], "", &[]),
        (&["key", "rotate", "--new-key-file", key_file], "", &[]),
        (&["token", "create", "--providers", "openai"], "", &[]),
        (&["ping"], "", &token),
        (&["generate", "hello"], "", &token),
        // Naming the socket explicitly does not make it trusted.
        (&["creds", "set", "x"], CANARY_KEY, &explicit),
    ];
    for (args, stdin, env) in runs {
        let out = provd_as(victim, args, stdin, env);
        assert_refused(&out, &socket, &why);
    }
    // The key on stdin, via the same path as `provd key rotate` without a file.
    let out = provd_as(victim, &["key", "rotate"], CANARY_MASTER, &explicit);
    assert_refused(&out, &socket, &why);
    assert_eq!(
        squatter.received(),
        Vec::<String>::new(),
        "the squatter got connections"
    );
}

#[test]
fn a_fake_daemon_in_a_fallback_directory_anyone_can_write_receives_nothing() {
    if !root_or_skip("a_fake_daemon_in_a_fallback_directory_anyone_can_write_receives_nothing") {
        return;
    }
    let (victim, attacker) = (61002, 61003);
    let fallback = RemoveOnDrop::new(PathBuf::from(format!("/tmp/provd-{victim}")));
    let socket = fallback.0.join("provd.sock");
    let squatter = Squatter::start(attacker, &socket, 0o777);
    let out = provd_as(victim, &["creds", "set", "x"], CANARY_KEY, &[]);
    assert_refused(
        &out,
        &socket,
        "is writable by group or others (mode 777); make it 0700",
    );
    assert_eq!(squatter.received(), Vec::<String>::new());
}

/// The path rules cannot see who listens: a socket can be passed on (renamed into place
/// by a privileged helper, here the test) after another uid bound it. The peer's uid,
/// read from the connection, catches it: the connection is made, and closed unused.
#[test]
fn a_listener_of_another_uid_behind_a_trusted_path_gets_a_connection_and_not_one_byte() {
    if !root_or_skip(
        "a_listener_of_another_uid_behind_a_trusted_path_gets_a_connection_and_not_one_byte",
    ) {
        return;
    }
    let (victim, attacker) = (61004, 61005);
    let base = tempfile::tempdir().unwrap();
    std::fs::set_permissions(base.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Root's directory: it and all above it pass for any client.
    let run = base.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = base.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(attacker), Some(attacker)).unwrap();
    let squatter = Squatter::start(attacker, &theirs.join("provd.sock"), 0o755);
    let socket = run.join("provd.sock");
    std::fs::rename(theirs.join("provd.sock"), &socket).unwrap();
    std::os::unix::fs::lchown(&socket, Some(0), Some(0)).unwrap();
    let squatter = Squatter {
        socket: socket.clone(),
        ..squatter
    };

    let explicit = [("PROVD_SOCKET", socket.to_str().unwrap())];
    let out = provd_as(victim, &["creds", "set", "x"], CANARY_KEY, &explicit);
    assert_refused(
        &out,
        &socket,
        &format!(
            "the process listening on {} runs as uid {attacker}; it must run as the socket directory's owner (uid 0) or root",
            socket.display()
        ),
    );
    assert_eq!(squatter.received(), ["received 0 bytes: \"\""]);
}

/// The rule keeps the fallback usable: the victim's own daemon, in the directory it made
/// itself, is trusted by the victim's client.
#[test]
fn the_users_own_daemon_in_the_fallback_directory_is_trusted() {
    if !root_or_skip("the_users_own_daemon_in_the_fallback_directory_is_trusted") {
        return;
    }
    let user = 61006;
    let fallback = RemoveOnDrop::new(PathBuf::from(format!("/tmp/provd-{user}")));
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(user), Some(user)).unwrap();
    let mut daemon = command_as(user, provd_bin())
        .arg("serve")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("PROVD_SOCKET")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env("PROVD_CONFIG", "")
        .env("XDG_CONFIG_HOME", "/nonexistent/provd-custody")
        .env("HOME", home.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = BufReader::new(daemon.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            log.read_line(&mut line).unwrap() > 0,
            "provd exited: {seen}"
        );
        seen.push_str(&line);
        if line.contains("listening") {
            break;
        }
    }
    // Keep draining the log so the daemon never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    let out = provd_as(user, &["ping"], "", &[]);
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&fallback.0).unwrap());
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        owner, user,
        "the daemon made the fallback directory its own"
    );
}
