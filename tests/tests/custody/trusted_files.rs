//! Files the daemon trusts (issue 11, part 5): the configuration, `[daemon] env_file` and
//! the master key file decide who is admin and where keys go, so the daemon refuses any
//! that a user other than its own and root could change (the file, or a directory above
//! it, symbolic links resolved), at start-up and at reload. And `serve --daemon` never
//! writes its pid or log file through a link or another user's file in a shared directory.
//!
//! Attackers' uids: 61010–61019.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use provd_tests::other_user::{command_as, root_or_skip};
use provd_tests::{provd_bin, run_provd, Daemon, READY_TIMEOUT};

const MOCK: &str = "[providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n";
const MASTER: &str = "8f3a9c2e71d04b6a95e3f0c1d2b7a48e6c5d9f0a1b2c3d4e5f60718293a4b5c6";

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A private directory (the test's own) for sockets, state and trusted files.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        Place {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file as the suite writes its files (umask 022: 0644).
    fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path
    }

    /// `provd serve --config CONFIG` with a socket and state here, and `env`; returns once
    /// it exits, which a refusal makes it do at once. A daemon that does not refuse is
    /// killed after [`READY_TIMEOUT`] (a safety net, not a wait) and the test fails.
    fn serve(&self, config: &Path, env: &[(&str, &str)]) -> Output {
        let child = Command::new(provd_bin())
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(self.path("run/provd.sock"))
            .env_remove("PROVD_SOCKET")
            .env_remove("SECRET_KEY")
            .env_remove("PROVD_MASTER_KEY_FILE")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(out) => out,
            Err(_) => {
                // SAFETY: kill has no memory preconditions; the pid is our own child's.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                panic!("provd serve did not refuse and exit; it was killed");
            }
        }
    }
}

/// Asserts a start-up refused with a message that contains each of `parts`.
fn assert_refused(out: &Output, parts: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for part in parts {
        assert!(stderr.contains(part), "missing {part:?} in: {stderr}");
    }
}

#[test]
fn a_config_file_group_or_others_can_write_is_refused_at_start_with_owner_mode_and_fix() {
    let place = Place::new();
    let config = place.write("provd.toml", MOCK);
    for mode in [0o664, 0o646, 0o666] {
        chmod(&config, mode);
        let out = place.serve(&config, &[]);
        let file = config.display().to_string();
        assert_refused(
            &out,
            &[
                &format!("config {file}: refused"),
                "owned by uid",
                &format!("mode {mode:o}"),
                &format!(
                    "run `chmod go-w {}`",
                    std::fs::canonicalize(&config).unwrap().display()
                ),
            ],
        );
    }
    // A file written as the suite writes its files (0644) passes and is read: its own
    // error is what stops this start.
    let out = place.serve(
        &place.write("bad.toml", "[daemon]\nmax_connections = 0\n"),
        &[],
    );
    assert_refused(&out, &["max_connections must be > 0"]);
}

#[test]
fn a_config_file_in_a_directory_another_user_owns_is_refused_at_start() {
    if !root_or_skip("a_config_file_in_a_directory_another_user_owns_is_refused_at_start") {
        return;
    }
    let attacker = 61010;
    let place = Place::new();
    let config = place.write("theirs/provd.toml", MOCK);
    // Root's file, but in a directory the attacker owns: they can replace it at will.
    std::os::unix::fs::chown(place.path("theirs"), Some(attacker), Some(attacker)).unwrap();
    chmod(&place.path("theirs"), 0o755);
    let out = place.serve(&config, &[]);
    let dir = std::fs::canonicalize(place.path("theirs")).unwrap();
    assert_refused(
        &out,
        &[&format!(
            "{} is owned by uid {attacker}, but every directory above must be owned by root or uid 0",
            dir.display()
        )],
    );
}

#[test]
fn a_link_to_a_config_file_another_user_owns_is_refused_at_the_real_file() {
    if !root_or_skip("a_link_to_a_config_file_another_user_owns_is_refused_at_the_real_file") {
        return;
    }
    let attacker = 61011;
    let place = Place::new();
    let real = place.write("elsewhere/provd.toml", MOCK);
    std::os::unix::fs::chown(&real, Some(attacker), Some(attacker)).unwrap();
    let link = place.path("provd.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = place.serve(&link, &[]);
    assert_refused(
        &out,
        &[
            &format!("config {}: refused", link.display()),
            &format!(
                "{} is owned by uid {attacker}; it must be owned by root or uid 0",
                std::fs::canonicalize(&real).unwrap().display()
            ),
        ],
    );
}

#[test]
fn an_env_file_others_can_write_is_refused_at_start() {
    let place = Place::new();
    let state = place.path("state");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o700);
    let env_file = place.write(".env", "OPENAI_BASE_URL=http://127.0.0.1:9/v1\n");
    let config = place.write(
        "provd.toml",
        &format!(
            "[daemon]\nstate_dir = \"{}\"\nenv_file = \"{}\"\n{MOCK}",
            state.display(),
            env_file.display()
        ),
    );
    chmod(&env_file, 0o646);
    let out = place.serve(&config, &[("SECRET_KEY", MASTER)]);
    assert_refused(
        &out,
        &[
            &format!("env file {}: refused", env_file.display()),
            "mode 646",
            "chmod go-w",
        ],
    );
}

#[test]
fn a_master_key_file_in_a_directory_another_user_owns_is_refused_even_through_a_link() {
    if !root_or_skip(
        "a_master_key_file_in_a_directory_another_user_owns_is_refused_even_through_a_link",
    ) {
        return;
    }
    let attacker = 61012;
    let place = Place::new();
    let state = place.path("state");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o700);
    let config = place.write(
        "provd.toml",
        &format!("[daemon]\nstate_dir = \"{}\"\n{MOCK}", state.display()),
    );
    let key = place.write("keys/master.key", MASTER);
    chmod(&key, 0o600);
    std::os::unix::fs::chown(place.path("keys"), Some(attacker), Some(attacker)).unwrap();
    let link = place.path("master.key");
    std::os::unix::fs::symlink(&key, &link).unwrap();
    let keys = std::fs::canonicalize(place.path("keys")).unwrap();
    for named in [&key, &link] {
        let out = place.serve(
            &config,
            &[("PROVD_MASTER_KEY_FILE", named.to_str().unwrap())],
        );
        assert_refused(
            &out,
            &[
                &format!("master key {}: refused", named.display()),
                &format!("{} is owned by uid {attacker}", keys.display()),
            ],
        );
    }
}

#[tokio::test]
async fn a_reload_after_the_config_became_another_users_is_refused_and_the_old_config_serves() {
    if !root_or_skip(
        "a_reload_after_the_config_became_another_users_is_refused_and_the_old_config_serves",
    ) {
        return;
    }
    let attacker = 61013;
    let daemon = Daemon::with_config(MOCK);
    let config = daemon.dir.path().join("provd.toml");
    // The attacker now owns the file, and writes a provider of their own into it.
    std::fs::write(
        &config,
        format!("{MOCK}[providers.evil]\ntype = \"mock\"\ndefault_model = \"e\"\n"),
    )
    .unwrap();
    std::os::unix::fs::chown(&config, Some(attacker), Some(attacker)).unwrap();
    let (status, _, stderr) = run_provd(&["reload"], &daemon.socket);
    assert!(!status.success());
    assert!(
        stderr.contains("reload rejected, the previous configuration stays in force")
            && stderr.contains(&format!("config {}: refused", config.display()))
            && stderr.contains(&format!("is owned by uid {attacker}")),
        "{stderr}"
    );
    let client = daemon.client().await;
    let ids = |list: provd_client::ProviderList| -> Vec<String> {
        list.providers.into_iter().map(|p| p.id).collect()
    };
    assert_eq!(ids(client.list_providers().await.unwrap()), ["mock"]);
    // SIGHUP takes the same path.
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_log("reload rejected");
    // Group-writable is refused too, whoever owns it.
    std::os::unix::fs::chown(&config, Some(0), Some(0)).unwrap();
    chmod(&config, 0o664);
    let (status, _, stderr) = run_provd(&["reload"], &daemon.socket);
    assert!(!status.success() && stderr.contains("mode 664"), "{stderr}");
    assert_eq!(ids(client.list_providers().await.unwrap()), ["mock"]);
    // Made private again, the same file reloads.
    chmod(&config, 0o644);
    let (status, _, stderr) = run_provd(&["reload"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        ids(client.list_providers().await.unwrap()),
        ["evil", "mock"]
    );
}

/// `provd serve --daemon` with its pid and log files in `shared` (a sticky directory
/// anyone can write, like /tmp). Stops any daemon that did start, so a failing test
/// leaves nothing running.
fn serve_detached(place: &Place, pid_file: &Path, log_file: &Path) -> Output {
    let config = place.write("provd.toml", MOCK);
    let out = Command::new(provd_bin())
        .args(["serve", "--daemon", "--config"])
        .arg(&config)
        .arg("--socket")
        .arg(place.path("run/provd.sock"))
        .arg("--pid-file")
        .arg(pid_file)
        .arg("--log-file")
        .arg(log_file)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("PROVD_SOCKET")
        .output()
        .unwrap();
    if out.status.success() {
        let _ = Command::new(provd_bin())
            .arg("stop")
            .arg("--pid-file")
            .arg(pid_file)
            .output();
    }
    out
}

#[test]
fn serve_daemon_never_writes_through_another_users_link_or_file_in_a_sticky_directory() {
    if !root_or_skip(
        "serve_daemon_never_writes_through_another_users_link_or_file_in_a_sticky_directory",
    ) {
        return;
    }
    let attacker = 61014;
    let place = Place::new();
    let shared = place.path("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o1777);
    // A file of root's the attacker would like the daemon to overwrite.
    let precious = place.write("precious", "precious\n");
    let as_attacker = |program: &str, args: &[&Path]| {
        let status = command_as(attacker, program).args(args).status().unwrap();
        assert!(status.success(), "{program} as the attacker failed");
    };

    // A link at the pid file's path.
    let pid_link = shared.join("provd.pid");
    as_attacker("ln", &[Path::new("-s"), &precious, &pid_link]);
    let out = serve_detached(&place, &pid_link, &shared.join("a.log"));
    assert_refused(
        &out,
        &[&format!(
            "pid file {}: refused, it is a symbolic link",
            pid_link.display()
        )],
    );
    assert!(
        !shared.join("a.log").exists(),
        "no log file made for a start refused"
    );

    // A dangling link at the log file's path: following it would create a file of the
    // attacker's choosing as root.
    let log_link = shared.join("b.log");
    let target = place.path("created-through-the-link");
    as_attacker("ln", &[Path::new("-s"), &target, &log_link]);
    let out = serve_detached(&place, &shared.join("b.pid"), &log_link);
    assert_refused(
        &out,
        &[&format!(
            "log file {}: refused, it is a symbolic link",
            log_link.display()
        )],
    );
    assert!(!target.exists());
    assert!(
        !shared.join("b.pid").exists(),
        "the pid file made for it was removed"
    );

    // The attacker's own files at both paths.
    let theirs_pid = shared.join("c.pid");
    let theirs_log = shared.join("c.log");
    as_attacker("touch", &[&theirs_pid, &theirs_log]);
    let out = serve_detached(&place, &theirs_pid, &shared.join("d.log"));
    assert_refused(
        &out,
        &[&format!(
            "pid file {}: refused, it is owned by uid {attacker}, not by this user (uid 0)",
            theirs_pid.display()
        )],
    );
    let out = serve_detached(&place, &shared.join("d.pid"), &theirs_log);
    assert_refused(
        &out,
        &[&format!(
            "log file {}: refused, it is owned by uid {attacker}",
            theirs_log.display()
        )],
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "precious\n");
    for file in [&theirs_pid, &theirs_log] {
        assert_eq!(
            std::fs::read(file).unwrap(),
            b"",
            "{} was written",
            file.display()
        );
    }
    // Paths nobody has taken are created by the daemon, exclusively and private.
    let pid_file = shared.join("e.pid");
    let log_file = shared.join("e.log");
    let out = Command::new(provd_bin())
        .args(["serve", "--daemon", "--config"])
        .arg(place.write("provd.toml", MOCK))
        .arg("--socket")
        .arg(place.path("run/provd.sock"))
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--log-file")
        .arg(&log_file)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&pid_file), mode(&log_file)), (0o600, 0o600));
    let stop = Command::new(provd_bin())
        .arg("stop")
        .arg("--pid-file")
        .arg(&pid_file)
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", text(&stop.stderr));
}
