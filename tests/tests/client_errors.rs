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
    drop(client);
    server.await.unwrap();
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
