//! The Rust client against a scripted fake daemon, for daemon behaviour a real daemon only
//! shows under faults: error notifications, closes with and without an explanation.

use provd_client::message::{self, notification, Empty, HelloResult, PROTOCOL_VERSION};
use provd_client::{Client, ClientError, ErrorCode, WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Reads one request frame and returns its id.
async fn read_request(s: &mut UnixStream) -> u32 {
    let len = s.read_u32().await.unwrap() as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.unwrap();
    match message::Envelope::parse(&payload).unwrap() {
        message::Envelope::Request { id, .. } => id,
        other => panic!("{other:?}"),
    }
}

async fn hello(s: &mut UnixStream) {
    let id = read_request(s).await;
    let result = HelloResult {
        protocol_version: PROTOCOL_VERSION,
        daemon_version: "fake".into(),
        max_frame_bytes: 1 << 20,
        max_streams: 4,
    };
    s.write_all(&message::encode_result(id, &result).unwrap())
        .await
        .unwrap();
}

fn error_notification(code: ErrorCode, text: &str) -> Vec<u8> {
    message::encode_notification(notification::ERROR, &WireError::new(code, text)).unwrap()
}

async fn fake_daemon() -> (tempfile::TempDir, std::path::PathBuf, UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    (dir, path, listener)
}

#[tokio::test]
async fn a_non_fatal_error_notification_does_not_stop_later_requests() {
    let (_dir, path, listener) = fake_daemon().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        hello(&mut s).await;
        s.write_all(&error_notification(
            ErrorCode::ProtocolError,
            "that frame was odd",
        ))
        .await
        .unwrap();
        for _ in 0..2 {
            let id = read_request(&mut s).await;
            s.write_all(&message::encode_result(id, &Empty {}).unwrap())
                .await
                .unwrap();
        }
    });
    let client = Client::connect(&path).await.unwrap();
    client.ping().await.unwrap();
    client.ping().await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_close_after_an_error_notification_reports_that_error() {
    let (_dir, path, listener) = fake_daemon().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        hello(&mut s).await;
        let _ = read_request(&mut s).await;
        s.write_all(&error_notification(
            ErrorCode::Unavailable,
            "provd is shutting down",
        ))
        .await
        .unwrap();
    });
    let client = Client::connect(&path).await.unwrap();
    let err = client.ping().await.unwrap_err();
    server.await.unwrap();
    assert!(
        matches!(&err, ClientError::Server(e) if e.code == ErrorCode::Unavailable),
        "{err}"
    );
    // Later requests fail fast with the same explanation.
    assert_eq!(
        client.ping().await.unwrap_err().code(),
        ErrorCode::Unavailable
    );
}

#[tokio::test]
async fn a_silent_close_is_a_disconnect() {
    let (_dir, path, listener) = fake_daemon().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        hello(&mut s).await;
        let _ = read_request(&mut s).await;
    });
    let client = Client::connect(&path).await.unwrap();
    let err = client.ping().await.unwrap_err();
    server.await.unwrap();
    assert!(matches!(err, ClientError::Disconnected(_)), "{err}");
    assert_eq!(err.code(), ErrorCode::Unavailable);
}

#[tokio::test]
async fn a_daemon_that_sends_garbage_is_a_protocol_error_not_a_hang() {
    let (_dir, path, listener) = fake_daemon().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        hello(&mut s).await;
        let _ = read_request(&mut s).await;
        s.write_all(&[0, 0, 0, 2, 0xc1, 0xc1]).await.unwrap();
        // Keep the socket open: the client must give up on its own.
        let _ = s.read_u8().await;
    });
    let client = Client::connect(&path).await.unwrap();
    let err = client.ping().await.unwrap_err();
    assert!(err.to_string().contains("unreadable frame"), "{err}");
    // Bytes that are not provd frames are a protocol error, as libprovd's header says.
    assert_eq!(err.code(), ErrorCode::ProtocolError);
    drop(client);
    server.await.unwrap();
}

/// An error notification that names a request (a refused duplicate id) is about that
/// request only: it does not explain a later close of the connection.
#[tokio::test]
async fn an_error_notice_about_one_request_is_not_taken_for_the_connection() {
    let (_dir, path, listener) = fake_daemon().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        hello(&mut s).await;
        let _ = read_request(&mut s).await;
        let notice = message::ErrorNotice::new(
            WireError::new(ErrorCode::InvalidRequest, "request id 77 ignored"),
            Some(77),
        );
        s.write_all(&message::encode_notification(notification::ERROR, &notice).unwrap())
            .await
            .unwrap();
    });
    let client = Client::connect(&path).await.unwrap();
    let err = client.ping().await.unwrap_err();
    server.await.unwrap();
    assert!(matches!(err, ClientError::Disconnected(_)), "{err:?}");
}

/// A client that stops reading is told why it is dropped, where its socket still takes
/// the words: after the frame it was in the middle of, an `overloaded` notice naming
/// `slow_client_timeout_seconds`, then the close.
#[test]
fn a_client_that_stops_reading_gets_a_last_overloaded_notice_naming_the_timeout() {
    let daemon = provd_tests::Daemon::with_config(
        "[daemon]\nslow_client_timeout_seconds = 2\n\
         [providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n",
    );
    let mut stuck = provd_tests::raw::RawConn::greeted(&daemon.socket);
    let mut flood = provd_tests::numbered(200_000, 0);
    flood.max_tokens = Some(200_000);
    stuck.request(1, "generate", &flood);
    daemon.wait_for_log("the client stopped reading");
    // Read again: every frame is whole, and the last one explains the close.
    // (Thousands of buffered chunk frames: read them without expect_close's cap.)
    let mut frames = Vec::new();
    while let Some(frame) = stuck.read_frame() {
        frames.push(frame);
    }
    let Some(provd_tests::raw::Frame::Notification(method, notice)) = frames.last() else {
        panic!("the last frame is not a notification: {:?}", frames.last());
    };
    assert_eq!(method, "error");
    assert_eq!(notice["code"], "overloaded", "{notice}");
    assert_eq!(notice["retryable"], false, "{notice}");
    let text = notice["message"].as_str().unwrap();
    assert!(text.contains("slow_client_timeout_seconds"), "{text}");
    assert!(!frames
        .iter()
        .any(|f| matches!(f, provd_tests::raw::Frame::Error(1, _))));
}

/// A socket path longer than a socket address holds is the caller's mistake, which no
/// retry mends: `invalid_request`, naming the path, not `unavailable`.
#[tokio::test]
async fn a_socket_path_too_long_for_a_socket_address_is_an_invalid_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x".repeat(200)).join("provd.sock");
    let err = Client::connect(&path).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err}");
    assert!(err.to_string().contains(&"x".repeat(200)), "{err}");
    // A path that fits but where nobody listens is still `unavailable`.
    let err = Client::connect(&dir.path().join("none.sock"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
}
