//! Fair admission (issue 11, part 4): a local user who opens as many connections or
//! streams as it can locks out neither root nor the other users; a socket left silent
//! is closed after the hello deadline; the per-uid counts never leak.
//!
//! Uids 64001–64009 and 64030–64039.

use std::process::Output;

use provd_client::message::UidUsage;
use provd_client::ErrorCode;
use provd_tests::other_user::{command_as, is_root, let_every_user_connect, root_or_skip, Peer};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::{provd_bin, Daemon};

/// A daemon of mock providers with these `[daemon]` settings and the rest of the file
/// (`[limits]`, `[access]`, more providers), its state (tokens) in a directory of its
/// own, and its socket open to every uid (the access policy decides who is served).
pub(crate) fn mock_daemon(daemon: &str, rest: &str) -> Daemon {
    let d = Daemon::with_config(&mock_config(daemon, rest));
    let_every_user_connect(&d);
    d
}

/// The configuration of [`mock_daemon`], to write back changed before a reload.
pub(crate) fn mock_config(daemon: &str, rest: &str) -> String {
    use std::sync::OnceLock;
    // One state directory per test process (nextest runs each test in its own).
    static STATE: OnceLock<std::path::PathBuf> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        dir
    });
    format!(
        "[daemon]\nkeepalive_interval_ms = 0\nstate_dir = \"{}\"\ndefault_provider = \"mock\"\n{daemon}\n\
         [providers.mock]\ntype = \"mock\"\ndefault_model = \"mock-1\"\n{rest}\n",
        state.display()
    )
}

/// A mock-only daemon with these `[daemon]` settings, `[limits]` and `allow_uids`.
fn daemon_with(daemon: &str, limits: &str, allow_uids: &[u32]) -> Daemon {
    mock_daemon(
        daemon,
        &format!("[limits]\n{limits}\n[access]\nallow_uids = {allow_uids:?}\n"),
    )
}

/// `held H refused R [first refusal: …]` (or `streaming …`) → (H, R, first refusal).
fn counts(line: &str) -> (u32, u32, String) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| -> u32 {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .unwrap_or_else(|| panic!("not a provd-test-peer summary: {line}"))
    };
    let first = line
        .split_once("first refusal: ")
        .map_or(String::new(), |(_, r)| r.to_owned());
    (n(1), n(3), first)
}

/// `provd <args>` run as `uid` against `daemon`.
pub(crate) fn provd_as(uid: u32, daemon: &Daemon, args: &[&str]) -> Output {
    command_as(uid, provd_bin())
        .args(args)
        .env("PROVD_SOCKET", &daemon.socket)
        .env("NO_COLOR", "1")
        .output()
        .expect("run provd as another uid")
}

pub(crate) fn served(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} was not served: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn uid_usage(uids: &[UidUsage], uid: u32) -> Option<UidUsage> {
    uids.iter().copied().find(|u| u.uid == Some(uid))
}

fn my_uid() -> u32 {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holding_every_connection_it_may_locks_out_neither_root_nor_another_user() {
    if !root_or_skip(
        "a_user_holding_every_connection_it_may_locks_out_neither_root_nor_another_user",
    ) {
        return;
    }
    let (hog, other) = (64001, 64002);
    let daemon = daemon_with(
        "max_connections = 16",
        "max_connections_per_uid = 8\nadmin_reserved_connections = 2",
        &[hog, other],
    );
    // Before the limits, this user took all 16 and root's own `ping` and `shutdown`
    // answered `overloaded`.
    let mut holder = Peer::start(hog, &daemon.socket, &["hold", "16"], &[]);
    let (held, refused, why) = counts(&holder.line());
    println!(
        "fairness: uid {hog} asked for 16 connections (max_connections 16): held {held}, refused {refused}"
    );
    assert_eq!((held, refused), (8, 8), "{why}");
    assert!(
        why.starts_with("overloaded:") && why.contains("max_connections_per_uid"),
        "{why}"
    );

    // Another user is served in full.
    served(&provd_as(other, &daemon, &["ping"]), "uid 64002's ping");
    let text = served(
        &provd_as(other, &daemon, &["generate", "hi"]),
        "uid 64002's generate",
    );
    assert!(!text.trim().is_empty());
    let status: serde_json::Value = serde_json::from_str(&served(
        &provd_as(other, &daemon, &["status", "--json"]),
        "uid 64002's status",
    ))
    .unwrap();
    assert_eq!(
        status["uids"],
        serde_json::json!([{"uid": other, "connections": 1, "streams": 0}]),
        "a user sees its own counts only"
    );

    // And so is root, admin requests included.
    let client = daemon.client().await;
    client.ping().await.unwrap();
    provd_tests::generation_text(&client, provd_client::GenerateRequest::prompt("hi")).await;
    let status = client.status().await.unwrap();
    assert_eq!(uid_usage(&status.uids, hog).map(|u| u.connections), Some(8));
    let (ok, _, err) = provd_tests::run_provd(&["reload"], &daemon.socket);
    assert!(ok.success(), "root's reload: {err}");
    println!(
        "fairness: uid {other} and root were served (ping, generate, status, reload, shutdown)"
    );

    // The held connections are given back when their holder leaves.
    drop(holder);
    let gone = provd_tests::eventually(10_000, || async {
        let s = client.status().await.unwrap();
        uid_usage(&s.uids, hog).is_none().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "uid {hog}'s connections were never given back"
    );

    let (ok, _, err) = provd_tests::run_provd(&["shutdown"], &daemon.socket);
    assert!(ok.success(), "root's shutdown: {err}");
    drop(client);
    let (exit, log) = daemon.wait();
    assert!(exit.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_connections_are_kept_for_admins_when_other_users_fill_the_rest() {
    if !root_or_skip("the_last_connections_are_kept_for_admins_when_other_users_fill_the_rest") {
        return;
    }
    let daemon = daemon_with(
        "max_connections = 6",
        "max_connections_per_uid = 2\nadmin_reserved_connections = 2",
        &[64003, 64004, 64005],
    );
    let mut first = Peer::start(64003, &daemon.socket, &["hold", "3"], &[]);
    assert_eq!(counts(&first.line()).0, 2);
    let mut second = Peer::start(64004, &daemon.socket, &["hold", "3"], &[]);
    assert_eq!(counts(&second.line()).0, 2);
    // Four of six are taken: the other two are the admins'.
    let mut third = Peer::start(64005, &daemon.socket, &["hold", "1"], &[]);
    let (held, refused, why) = counts(&third.line());
    assert_eq!((held, refused), (0, 1));
    assert!(
        why.starts_with("overloaded:") && why.contains("admin_reserved_connections"),
        "{why}"
    );

    let client = daemon.client().await;
    assert_eq!(client.status().await.unwrap().connections, 5);
    client.reload().await.unwrap();
    let (ok, _, err) = provd_tests::run_provd(&["shutdown"], &daemon.socket);
    assert!(
        ok.success(),
        "root's shutdown on the last reserved connection: {err}"
    );
    drop((first, second, third, client));
    let (exit, log) = daemon.wait();
    assert!(exit.success(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_does_not_say_hello_in_time_is_told_and_closed() {
    let daemon = daemon_with("hello_timeout_seconds = 1", "", &[]);
    let silent = RawConn::connect(&daemon.socket);
    let mut halfway = RawConn::connect(&daemon.socket);
    // Two bytes of a length prefix, then nothing.
    halfway.send_bytes(&[0, 0]);
    for mut conn in [silent, halfway] {
        // Reading until the daemon closes: before the deadline, this waited forever.
        let frames = conn.expect_close();
        match frames.as_slice() {
            [Frame::Notification(method, error)] if method == "error" => {
                assert_eq!(error["code"], "timeout", "{error}");
                let message = error["message"].as_str().unwrap();
                assert!(
                    message.contains("daemon.hello_timeout_seconds"),
                    "{message}"
                );
            }
            other => panic!("expected one error notification, got {other:?}"),
        }
    }
    // Their places are given back.
    let client = daemon.client().await;
    let settled = provd_tests::eventually(10_000, || async {
        let s = client.status().await.unwrap();
        (uid_usage(&s.uids, my_uid()).map(|u| u.connections) == Some(1)).then_some(())
    })
    .await;
    assert!(
        settled.is_some(),
        "{:?}",
        client.status().await.unwrap().uids
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_its_stream_cap_is_refused_with_overloaded_naming_max_streams_per_uid() {
    if !root_or_skip(
        "a_user_over_its_stream_cap_is_refused_with_overloaded_naming_max_streams_per_uid",
    ) {
        return;
    }
    let daemon = daemon_with("", "max_streams_per_uid = 2", &[64006, 64007]);
    // One connection per stream: the cap is the uid's, over all its connections.
    let mut greedy = Peer::start(64006, &daemon.socket, &["streams", "3", "1000", "50"], &[]);
    let (running, refused, why) = counts(&greedy.line());
    assert_eq!((running, refused), (2, 1), "{why}");
    assert!(
        why.starts_with("overloaded:") && why.contains("limits.max_streams_per_uid"),
        "{why}"
    );
    let mut other = Peer::start(64007, &daemon.socket, &["streams", "1", "1000", "50"], &[]);
    assert_eq!(counts(&other.line()).0, 1, "another user still streams");
    let client = daemon.client().await;
    provd_tests::generation_text(&client, provd_client::GenerateRequest::prompt("hi")).await;
    let status = client.status().await.unwrap();
    assert_eq!(uid_usage(&status.uids, 64006).map(|u| u.streams), Some(2));
    drop((greedy, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_uid_counts_return_to_zero_after_many_connections_come_and_go() {
    let daemon = daemon_with(
        "",
        "max_connections_per_uid = 2\nmax_streams_per_uid = 1",
        &[64008, 64009],
    );
    for _ in 0..40 {
        // Said hello, pinged, left.
        daemon.client().await.ping().await.unwrap();
        // Never said hello.
        drop(RawConn::connect(&daemon.socket));
        // Left in the middle of a generation.
        let mut conn = RawConn::greeted(&daemon.socket);
        conn.request(1, "generate", &provd_tests::numbered(1000, 20));
        assert!(matches!(conn.read_frame(), Some(Frame::Notification(m, _)) if m == "chunk"));
        drop(conn);
        // A generation to its end.
        let client = daemon.client().await;
        provd_tests::generation_text(&client, provd_client::GenerateRequest::prompt("hi")).await;
        // A refused generation (cancelled before it starts would do too).
        let e = provd_tests::generation_error(&client, {
            let mut r = provd_client::GenerateRequest::prompt("hi");
            r.provider = Some("nope".into());
            r
        })
        .await;
        assert_eq!(e.code, ErrorCode::NotFound);
    }
    if is_root() {
        // Refused connections and refused streams of a capped user.
        for _ in 0..5 {
            let mut holder = Peer::start(64008, &daemon.socket, &["hold", "3"], &[]);
            // At least one refused (more while the last round's are being given back).
            assert!(counts(&holder.line()).1 >= 1);
            let mut streams =
                Peer::start(64009, &daemon.socket, &["streams", "2", "1000", "20"], &[]);
            assert!(counts(&streams.line()).1 >= 1);
        }
    }
    let client = daemon.client().await;
    let me = UidUsage {
        uid: Some(my_uid()),
        connections: 1,
        streams: 0,
    };
    let settled = provd_tests::eventually(10_000, || async {
        let s = client.status().await.unwrap();
        (s.uids == [me] && s.connections == 1 && s.active_streams == 0).then_some(())
    })
    .await;
    let s = client.status().await.unwrap();
    assert!(
        settled.is_some(),
        "the counts did not return to zero: {:?}, {} connections, {} streams",
        s.uids,
        s.connections,
        s.active_streams
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_changed_by_a_reload_apply_to_the_connections_that_come_after_it() {
    if !root_or_skip("limits_changed_by_a_reload_apply_to_the_connections_that_come_after_it") {
        return;
    }
    let user = 64030;
    let rest = |per_uid: u32| {
        format!("[limits]\nmax_connections_per_uid = {per_uid}\n[access]\nallow_uids = [{user}]\n")
    };
    let daemon = mock_daemon("", &rest(4));
    let mut first = Peer::start(user, &daemon.socket, &["hold", "3"], &[]);
    assert_eq!(counts(&first.line()), (3, 0, String::new()));

    std::fs::write(
        daemon.dir.path().join("provd.toml"),
        mock_config("", &rest(2)),
    )
    .unwrap();
    let (ok, _, err) = provd_tests::run_provd(&["reload"], &daemon.socket);
    assert!(ok.success(), "reload: {err}");

    let mut second = Peer::start(user, &daemon.socket, &["hold", "1"], &[]);
    let (held, refused, why) = counts(&second.line());
    assert_eq!((held, refused), (0, 1));
    assert!(why.contains("limits.max_connections_per_uid = 2"), "{why}");
    // The connections admitted before the reload keep their place.
    let status = daemon.client().await.status().await.unwrap();
    assert_eq!(
        uid_usage(&status.uids, user).map(|u| u.connections),
        Some(3)
    );
    drop((first, second));
}
