//! Authorization that changes takes effect on open connections (issue 11, part 6): a
//! revoked or expired token, a uid no longer allowed, a new provider ACL, admin rights
//! taken away by a reload. Each applies to the connection's next request; its running
//! generations finish; the connection stays open (and may still cancel what it runs).
//!
//! Uids 64010–64019.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use provd_client::message::{
    CancelParams, Empty, Hello, TokenCreateParams, TokenRevokeParams, PROTOCOL_VERSION,
};
use provd_client::ErrorCode;
use provd_tests::other_user::{root_or_skip, Peer};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::Daemon;

use crate::admission::{mock_config, mock_daemon};

/// Creates a token for `providers` through an admin connection: (token, id, expires_at).
fn create_token(
    daemon: &Daemon,
    providers: &[&str],
    ttl_seconds: Option<u64>,
) -> (String, String, Option<u64>) {
    let mut admin = RawConn::greeted(&daemon.socket);
    let params = TokenCreateParams {
        providers: providers.iter().map(|p| p.to_string()).collect(),
        ttl_seconds,
        owner_uid: None,
    };
    admin.request(1, "token_create", &params);
    match admin.read_reply(1).0 {
        Frame::Result(_, t) => (
            t["token"].as_str().unwrap().to_owned(),
            t["id"].as_str().unwrap().to_owned(),
            t["expires_at"].as_u64(),
        ),
        other => panic!("token_create: {other:?}"),
    }
}

/// A connection that said hello with `token`.
fn with_token(daemon: &Daemon, token: &str) -> RawConn {
    let mut conn = RawConn::connect(&daemon.socket);
    conn.request(
        0,
        "hello",
        &Hello {
            protocol_version: PROTOCOL_VERSION,
            client: "token user".into(),
            token: Some(token.to_owned()),
        },
    );
    match conn.read_frame() {
        Some(Frame::Result(0, _)) => conn,
        other => panic!("hello with a token: {other:?}"),
    }
}

fn expect_error(frame: Frame, code: ErrorCode, needle: &str) {
    match frame {
        Frame::Error(_, e) => {
            assert_eq!(e.code, code, "{}", e.message);
            assert!(e.message.contains(needle), "{}", e.message);
        }
        other => panic!("expected {code} naming {needle:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_on_its_next_request_while_its_running_stream_finishes() {
    let daemon = mock_daemon("", "");
    let (token, id, _) = create_token(&daemon, &["mock"], None);
    let mut user = with_token(&daemon, &token);
    user.request(1, "generate", &provd_tests::numbered(40, 50));
    assert!(matches!(user.read_frame(), Some(Frame::Notification(m, _)) if m == "chunk"));

    let mut admin = RawConn::greeted(&daemon.socket);
    admin.request(1, "token_revoke", &TokenRevokeParams { id: id.clone() });
    assert!(matches!(admin.read_reply(1).0, Frame::Result(..)));

    // The next request is refused; the generation is still running when it is.
    user.request(2, "ping", &Empty {});
    let mut chunks = 1;
    let refusal = loop {
        match user.read_frame().expect("the connection stays open") {
            Frame::Notification(m, _) if m == "chunk" => chunks += 1,
            f @ Frame::Error(2, _) => break f,
            other => panic!("before the refusal of request 2: {other:?}"),
        }
    };
    expect_error(
        refusal,
        ErrorCode::Unauthenticated,
        &format!("token {id} was revoked"),
    );
    // It finishes, whole.
    let (end, rest) = user.read_reply(1);
    assert!(matches!(end, Frame::Result(1, _)), "{end:?}");
    assert_eq!(chunks + rest.len(), 40);
    // The connection stays open: it may cancel (nothing left to cancel here), and every
    // other request is refused.
    user.request(3, "cancel", &CancelParams { id: 1 });
    expect_error(
        user.read_reply(3).0,
        ErrorCode::NotFound,
        "no running generation",
    );
    user.request(4, "generate", &provd_tests::numbered(2, 0));
    expect_error(
        user.read_reply(4).0,
        ErrorCode::Unauthenticated,
        "was revoked",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused_on_its_next_request() {
    let daemon = mock_daemon("", "");
    // Expiry is kept in whole seconds: a 2 s token lives 1 to 2 s.
    let (token, _, expires_at) = create_token(&daemon, &["mock"], Some(2));
    let expires_at = expires_at.expect("an expiry");
    let mut user = with_token(&daemon, &token);
    user.request(1, "ping", &Empty {});
    assert!(matches!(user.read_reply(1).0, Frame::Result(..)));

    // Waiting for time itself to pass: at most 2 s.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let until = Duration::from_secs(expires_at).saturating_sub(now);
    tokio::time::sleep(until).await;

    user.request(2, "ping", &Empty {});
    expect_error(
        user.read_reply(2).0,
        ErrorCode::Unauthenticated,
        "has expired",
    );
    user.request(3, "status", &Empty {});
    expect_error(
        user.read_reply(3).0,
        ErrorCode::Unauthenticated,
        "has expired",
    );
}

/// Writes the test daemon's configuration anew and reloads it as root.
fn reload_with(daemon: &Daemon, config: &str) {
    std::fs::write(daemon.dir.path().join("provd.toml"), config).unwrap();
    let (status, _, stderr) = provd_tests::run_provd(&["reload"], &daemon.socket);
    assert!(status.success(), "reload: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_removed_from_allow_uids_by_a_reload_is_refused_on_its_next_request() {
    if !root_or_skip("a_uid_removed_from_allow_uids_by_a_reload_is_refused_on_its_next_request") {
        return;
    }
    let user = 64010;
    let daemon = mock_daemon("", &format!("[access]\nallow_uids = [{user}]\n"));
    let mut session = Peer::start(user, &daemon.socket, &["session"], &[]);
    assert_eq!(session.line(), "ready");
    assert_eq!(session.ask("ping"), "ok {}");
    assert_eq!(session.ask("stream - 40 50"), "ok 2");

    reload_with(&daemon, &mock_config("", "[access]\nallow_uids = []\n"));

    let refused = session.ask("ping");
    assert!(
        refused.starts_with("error permission_denied: uid 64010 may not use provd"),
        "{refused}"
    );
    assert_eq!(
        session.ask("finish 2"),
        "ok 40",
        "the running generation finishes"
    );
    assert!(session.ask("status").starts_with("error permission_denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_acl_added_by_a_reload_refuses_the_next_generate() {
    if !root_or_skip("a_provider_acl_added_by_a_reload_refuses_the_next_generate") {
        return;
    }
    let user = 64011;
    let providers = "[providers.other]\ntype = \"mock\"\ndefault_model = \"mock-2\"\n";
    let daemon = mock_daemon("", &format!("{providers}[access]\nallow_uids = [{user}]\n"));
    let mut session = Peer::start(user, &daemon.socket, &["session"], &[]);
    assert_eq!(session.line(), "ready");
    assert!(session.ask("generate other").starts_with("ok "));

    reload_with(
        &daemon,
        &mock_config(
            "",
            &format!("{providers}[access]\nallow_uids = [{user}]\n[access.providers.other]\nuids = [0]\n"),
        ),
    );

    let refused = session.ask("generate other");
    assert!(
        refused.starts_with("error permission_denied: uid 64011 may not use provider 'other'"),
        "{refused}"
    );
    assert!(session.ask("generate mock").starts_with("ok "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rights_removed_by_a_reload_are_refused_on_the_next_admin_request() {
    if !root_or_skip("admin_rights_removed_by_a_reload_are_refused_on_the_next_admin_request") {
        return;
    }
    let user = 64012;
    let daemon = mock_daemon("", &format!("[access]\nadmin_uids = [{user}]\n"));
    let mut session = Peer::start(user, &daemon.socket, &["session"], &[]);
    assert_eq!(session.line(), "ready");
    assert!(session.ask("tokens").starts_with("ok "));

    reload_with(
        &daemon,
        &mock_config("", &format!("[access]\nallow_uids = [{user}]\n")),
    );

    let refused = session.ask("tokens");
    assert!(
        refused.starts_with("error permission_denied: token_list is an admin request"),
        "{refused}"
    );
    assert_eq!(session.ask("ping"), "ok {}", "an allowed user still");
}
