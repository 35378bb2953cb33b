//! Start-up, socket ownership, configuration errors and graceful shutdown of the real
//! binary.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;

use provd_client::{ErrorCode, GenerateEvent, GenerateRequest};
use provd_tests::{numbered, provd_bin, Daemon};

const SIGTERM: i32 = 15;
const SIGINT: i32 = 2;

#[tokio::test]
async fn socket_is_private_and_peers_are_identified() {
    let daemon = Daemon::start();
    let meta = std::fs::symlink_metadata(&daemon.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dir = std::fs::metadata(daemon.socket.parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o700);
    daemon.client().await.ping().await.unwrap();
    let line = daemon.wait_for_log("client connected");
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    assert!(line.contains(&format!("uid={uid} ")), "{line}");
    assert!(
        line.contains(&format!("pid={}", std::process::id())),
        "{line}"
    );
}

#[tokio::test]
async fn a_socket_group_opens_the_socket_to_that_group_only() {
    // SAFETY: getegid cannot fail.
    let gid = unsafe { libc::getegid() };
    let daemon = Daemon::with_config(&format!(
        "[daemon]\nsocket_group = \"{gid}\"\n[providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n"
    ));
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(&daemon.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), gid);
    let dir = std::fs::metadata(daemon.socket.parent().unwrap()).unwrap();
    assert_eq!(dir.permissions().mode() & 0o777, 0o710);
    daemon.client().await.ping().await.unwrap();
}

#[tokio::test]
async fn a_directory_others_can_write_to_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = std::process::Command::new(provd_bin())
        .args(["serve", "--socket"])
        .arg(dir.path().join("provd.sock"))
        .env("PROVD_CONFIG", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is writable by group or others (mode 777)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_stale_socket_file_is_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("provd.sock");
    // A dead daemon's leftover: a socket file nobody listens on any more.
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());

    let daemon = Daemon::builder().socket(&socket).start();
    daemon.wait_for_log("reclaiming the stale socket");
    let client = provd_client::Client::connect(&socket).await.unwrap();
    client.ping().await.unwrap();
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let daemon = Daemon::start();
    let second = std::process::Command::new(provd_bin())
        .args(["serve", "--socket"])
        .arg(&daemon.socket)
        .env("PROVD_CONFIG", "")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another provd is already listening on"),
        "{stderr}"
    );
    // The first is untouched.
    daemon.client().await.ping().await.unwrap();
}

#[tokio::test]
async fn something_else_at_the_socket_path_is_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provd.sock");
    std::fs::write(&path, "precious").unwrap();
    let out = std::process::Command::new(provd_bin())
        .args(["serve", "--socket"])
        .arg(&path)
        .env("PROVD_CONFIG", "")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn config_errors_name_file_key_and_rule_and_stop_start_up() {
    let cases = [
        (
            "[providers.a]\ntype = \"mock\"\ntimeout_seconds = 0\n",
            "providers.a.timeout_seconds must be >= 1, got 0",
        ),
        (
            "[providers.a]\ntype = \"mock\"\nmax_tokens = 0\n",
            "providers.a.max_tokens must be > 0, got 0",
        ),
        (
            "[providers.a]\ntype = \"teleport\"\n",
            "unknown variant `teleport`",
        ),
        (
            "[daemon]\nmax_conections = 5\n",
            "unknown field `max_conections`",
        ),
        (
            "[daemon]\ndefault_provider = \"x\"\n",
            "daemon.default_provider names provider 'x'",
        ),
        (
            "[providers.a]\ntype = \"mock\"\n[providers.a.options]\nfault = \"sometimes\"\n",
            "providers.a.options.fault must be",
        ),
        ("not toml at all [", "config "),
    ];
    for (toml, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, toml).unwrap();
        let out = std::process::Command::new(provd_bin())
            .args(["serve", "--config"])
            .arg(&path)
            .arg("--socket")
            .arg(dir.path().join("s.sock"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{toml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("config {}", path.display())),
            "{stderr}"
        );
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
        assert!(
            !dir.path().join("s.sock").exists(),
            "no socket is bound with a bad config"
        );
    }
}

#[tokio::test]
async fn sigterm_lets_running_streams_finish_and_removes_the_socket() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut generation = client.generate(numbered(40, 5)).await.unwrap();
    assert!(matches!(
        generation.next().await,
        Some(Ok(GenerateEvent::Chunk(_)))
    ));

    daemon.signal(SIGTERM);
    daemon.wait_for_log("stopped accepting");
    assert!(
        !daemon.socket.exists(),
        "the socket is removed when accepting stops"
    );
    // New work is refused on the open connection while the old stream drains.
    let refused = provd_tests::generation_error(&client, GenerateRequest::prompt("more")).await;
    assert_eq!(refused.code, ErrorCode::Unavailable);

    let (text, done) = generation.collect_text().await.unwrap();
    assert_eq!(done.chunks, 40);
    assert!(text.ends_with("39 "));
    drop(client);
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn drain_deadline_ends_streams_with_unavailable_naming_the_shutdown() {
    let daemon = Daemon::with_config("[daemon]\ndrain_timeout_seconds = 0\n[providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n");
    let client = daemon.client().await;
    let mut generation = client.generate(numbered(100_000, 10)).await.unwrap();
    assert!(matches!(
        generation.next().await,
        Some(Ok(GenerateEvent::Chunk(_)))
    ));
    daemon.signal(SIGINT);
    let err = generation.collect_text().await.unwrap_err().to_wire();
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert!(
        !err.retryable,
        "chunks were delivered: a plain retry would repeat them"
    );
    assert!(err.message.contains("shutting down"), "{}", err.message);
    assert!(err.chunks.unwrap() >= 1);
    let (status, _) = daemon.wait();
    assert!(status.success());
}

#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once() {
    let daemon = Daemon::start(); // default drain deadline: 10 s
    let client = daemon.client().await;
    let mut generation = client.generate(numbered(100_000, 10)).await.unwrap();
    assert!(matches!(
        generation.next().await,
        Some(Ok(GenerateEvent::Chunk(_)))
    ));
    daemon.signal(SIGTERM);
    daemon.wait_for_log("stopped accepting");
    daemon.signal(SIGTERM);
    let err = generation.collect_text().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    let (status, log) = daemon.wait();
    assert!(status.success());
    assert!(log.contains("second signal"), "{log}");
}

/// After a burst, once no generation has run for a moment, the daemon gives the memory
/// it freed back to the kernel, so a daemon that once served many streams does not keep
/// their memory for the rest of its life (`provd-bench` shows the RSS drop).
#[tokio::test]
async fn freed_memory_is_given_back_once_the_last_generation_ends() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let burst = (0..64).map(|_| async {
        let (text, _) = provd_tests::generation_text(&client, numbered(50, 0)).await;
        assert_eq!(text, provd_tests::numbered_text(50));
    });
    futures_util::future::join_all(burst).await;
    let line = daemon.wait_for_log("gave freed memory back after the last generation ended");
    assert!(line.contains("released="), "{line}");
    // Still serving as before.
    client.ping().await.unwrap();
}
