//! Every kind of bad input gets a typed error where framing survives, a closed connection
//! where it does not, and never disturbs other clients.

use provd_client::message::{CancelParams, Empty, Hello};
use provd_client::{ErrorCode, GenerateRequest};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::Daemon;
use serde_json::json;

fn expect_error_notification(frame: Option<Frame>, code: ErrorCode) -> String {
    match frame {
        Some(Frame::Notification(m, p)) if m == "error" => {
            assert_eq!(p["code"], code.as_str(), "{p}");
            p["message"].as_str().unwrap().to_owned()
        }
        other => panic!("expected an error notification, got {other:?}"),
    }
}

fn expect_error(frame: Frame, id: u32, code: ErrorCode) -> String {
    match frame {
        Frame::Error(i, e) => {
            assert_eq!(i, id);
            assert_eq!(e.code, code, "{e}");
            e.message
        }
        other => panic!("expected an error reply for {id}, got {other:?}"),
    }
}

/// A well-behaved client still gets full service: the daemon survived whatever came before.
async fn assert_still_serving(daemon: &Daemon) {
    let client = daemon.client().await;
    client.ping().await.unwrap();
    let (text, _) =
        provd_tests::generation_text(&client, GenerateRequest::prompt("still there?")).await;
    assert!(!text.is_empty());
}

#[tokio::test]
async fn oversized_frame_is_refused_and_the_connection_closed() {
    let daemon = Daemon::with_config("[daemon]\nmax_frame_bytes = 4096\n[providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n");
    let mut raw = RawConn::greeted(&daemon.socket);
    // Announce 1 GiB; send nothing more. The daemon must not wait for (or allocate) it.
    raw.send_bytes(&(1u32 << 30).to_be_bytes());
    let frames = raw.expect_close();
    let msg = expect_error_notification(frames.into_iter().next(), ErrorCode::ProtocolError);
    assert!(
        msg.contains("1073741824 bytes exceeds the maximum of 4096"),
        "{msg}"
    );
    assert_still_serving(&daemon).await;
}

#[tokio::test]
async fn a_request_larger_than_the_limit_is_refused_by_the_client_before_sending() {
    let daemon = Daemon::with_config("[daemon]\nmax_frame_bytes = 4096\n[providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n");
    let client = daemon.client().await;
    let err = client
        .generate(GenerateRequest::prompt("x".repeat(10_000)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    assert!(err.to_string().contains("max_frame_bytes of 4096"), "{err}");
    client.ping().await.unwrap();
}

#[tokio::test]
async fn garbage_payload_gets_a_protocol_error_and_the_connection_goes_on() {
    let daemon = Daemon::start();
    let mut raw = RawConn::greeted(&daemon.socket);
    for garbage in [
        &[0xc1u8][..],
        &[0x93, 0x00],
        &[0xdd, 0xff, 0xff, 0xff, 0xff],
        b"hello world",
    ] {
        raw.send_payload(garbage);
        expect_error_notification(raw.read_frame(), ErrorCode::ProtocolError);
    }
    // Deeply nested value.
    let mut deep = vec![0x91u8; 100];
    deep.push(0xc0);
    raw.send_payload(&deep);
    let msg = expect_error_notification(raw.read_frame(), ErrorCode::ProtocolError);
    assert!(msg.contains("nesting"), "{msg}");
    // Not an envelope / a reply from a client.
    raw.send_payload(&rmp_serde::to_vec(&(7u8, 1u8, "x", ())).unwrap());
    expect_error_notification(raw.read_frame(), ErrorCode::ProtocolError);
    raw.send_payload(&rmp_serde::to_vec(&(1u8, 1u8, (), ())).unwrap());
    expect_error_notification(raw.read_frame(), ErrorCode::ProtocolError);
    // Zero-length frame.
    raw.send_bytes(&[0, 0, 0, 0]);
    let frame = raw.read_frame();
    expect_error_notification(frame.clone(), ErrorCode::ProtocolError);
    // A notice about the connection, not a request: its id is nil, and present.
    let Some(Frame::Notification(_, params)) = frame else {
        unreachable!()
    };
    assert_eq!(params.get("id"), Some(&serde_json::Value::Null), "{params}");
    // Still aligned: a ping works on the same connection.
    raw.request(9, "ping", &Empty {});
    assert_eq!(raw.read_frame(), Some(Frame::Result(9, json!({}))));
    assert_still_serving(&daemon).await;
}

#[tokio::test]
async fn random_bytes_as_a_length_prefix_close_only_that_connection() {
    let daemon = Daemon::start();
    let mut raw = RawConn::greeted(&daemon.socket);
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let frames = raw.expect_close();
    expect_error_notification(frames.into_iter().next(), ErrorCode::ProtocolError);
    assert_still_serving(&daemon).await;
}

#[tokio::test]
async fn truncated_frame_closes_the_connection_quietly() {
    let daemon = Daemon::start();
    let mut raw = RawConn::greeted(&daemon.socket);
    raw.send_bytes(&[0, 0, 0, 50, 0x94, 0x00]);
    raw.shutdown_write();
    assert_eq!(raw.expect_close(), Vec::new());
    let line = daemon.wait_for_log("connection broken");
    assert!(line.contains("in the middle of a frame"), "{line}");
    assert_still_serving(&daemon).await;
}

#[tokio::test]
async fn wrong_field_types_get_invalid_request_for_that_id() {
    let daemon = Daemon::start();
    let mut raw = RawConn::greeted(&daemon.socket);
    raw.request(3, "generate", &json!({"prompt": 5}));
    let msg = expect_error(raw.read_frame().unwrap(), 3, ErrorCode::InvalidRequest);
    assert!(msg.starts_with("generate params:"), "{msg}");
    raw.request(4, "generate", &json!({"prompt": "x", "max_tokens": "many"}));
    expect_error(raw.read_frame().unwrap(), 4, ErrorCode::InvalidRequest);
    raw.request(5, "cancel", &json!({"id": "seven"}));
    expect_error(raw.read_frame().unwrap(), 5, ErrorCode::InvalidRequest);
    raw.request(
        6,
        "generate",
        &json!({"messages": [{"role": "robot", "content": "x"}]}),
    );
    expect_error(raw.read_frame().unwrap(), 6, ErrorCode::InvalidRequest);
    raw.request(7, "generate", &json!({}));
    let msg = expect_error(raw.read_frame().unwrap(), 7, ErrorCode::InvalidRequest);
    assert!(msg.contains("needs a prompt or messages"), "{msg}");
    raw.request(8, "ping", &Empty {});
    assert_eq!(raw.read_frame(), Some(Frame::Result(8, json!({}))));
}

/// MessagePack ext values follow PROTOCOL.md section 3.1: ignored under a key the daemon
/// ignores, an `invalid_request` reply where params are read, an `error` notification
/// elsewhere in the envelope.
#[tokio::test]
async fn ext_values_get_the_answer_section_3_1_gives() {
    let daemon = Daemon::start();
    let mut raw = RawConn::greeted(&daemon.socket);
    let ext = [0xd4u8, 0x01, 0x00]; // fixext 1, type 1
    let ping = [0xa4u8, b'p', b'i', b'n', b'g'];
    // Under a key ping ignores: accepted like any unknown key.
    let mut frame = vec![0x94, 0x00, 0x01];
    frame.extend(ping);
    frame.extend([0x81, 0xa1, b'x']);
    frame.extend(ext);
    raw.send_payload(&frame);
    assert_eq!(raw.read_frame(), Some(Frame::Result(1, json!({}))));
    // As the params value itself: a reply to that request.
    let mut frame = vec![0x94, 0x00, 0x02];
    frame.extend(ping);
    frame.extend(ext);
    raw.send_payload(&frame);
    let msg = expect_error(raw.read_frame().unwrap(), 2, ErrorCode::InvalidRequest);
    assert!(msg.starts_with("ping params:"), "{msg}");
    // In a field the method reads: a reply to that request.
    let mut frame = vec![0x94, 0x00, 0x03, 0xa8];
    frame.extend(b"generate");
    frame.extend([0x81, 0xa6]);
    frame.extend(b"prompt");
    frame.extend(ext);
    raw.send_payload(&frame);
    expect_error(raw.read_frame().unwrap(), 3, ErrorCode::InvalidRequest);
    // As the method: no request to answer, so an error notification.
    let mut frame = vec![0x94, 0x00, 0x04];
    frame.extend(ext);
    frame.push(0x80);
    raw.send_payload(&frame);
    expect_error_notification(raw.read_frame(), ErrorCode::ProtocolError);
    raw.request(5, "ping", &Empty {});
    assert_eq!(raw.read_frame(), Some(Frame::Result(5, json!({}))));
}

/// `hello`'s optional fields accept nil as PROTOCOL.md section 5 says of every optional
/// field.
#[tokio::test]
async fn a_hello_with_nil_optional_fields_is_answered() {
    let daemon = Daemon::start();
    let mut raw = RawConn::connect(&daemon.socket);
    raw.request(
        0,
        "hello",
        &json!({"protocol_version": 1, "client": null, "token": null}),
    );
    match raw.read_frame() {
        Some(Frame::Result(0, result)) => assert_eq!(result["protocol_version"], 1),
        other => panic!("hello with nil fields refused: {other:?}"),
    }
    raw.request(1, "ping", &Empty {});
    assert_eq!(raw.read_frame(), Some(Frame::Result(1, json!({}))));
}

#[tokio::test]
async fn unknown_method_gets_invalid_request_naming_it() {
    let daemon = Daemon::start();
    let mut raw = RawConn::greeted(&daemon.socket);
    raw.request(11, "format_disk", &Empty {});
    let msg = expect_error(raw.read_frame().unwrap(), 11, ErrorCode::InvalidRequest);
    assert!(msg.contains("unknown method 'format_disk'"), "{msg}");
    // It lists every method, admin ones included, from the one list.
    let served = provd_client::message::method::SERVED.join(", ");
    assert!(
        msg.ends_with(&format!("(this daemon serves: {served})")),
        "{msg}"
    );
    assert!(
        msg.contains("creds_set") && msg.contains("shutdown"),
        "{msg}"
    );
    raw.request(
        12,
        "hello",
        &Hello {
            protocol_version: 1,
            client: String::new(),
            token: None,
        },
    );
    expect_error(raw.read_frame().unwrap(), 12, ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn duplicate_running_id_is_refused_and_the_first_stream_continues() {
    let daemon = Daemon::start();
    let mut raw = RawConn::greeted(&daemon.socket);
    let mut slow = GenerateRequest::prompt("x");
    slow.additional_params.insert(
        "mock".into(),
        json!({"numbered": true, "chunks": 1000, "chunk_delay_ms": 5}),
    );
    raw.request(1, "generate", &slow);
    // Wait until it streams, so it is certainly running.
    assert!(matches!(raw.read_frame(), Some(Frame::Notification(m, _)) if m == "chunk"));
    raw.request(1, "generate", &GenerateRequest::prompt("again"));
    raw.request(1, "ping", &Empty {});
    // Both duplicates are refused with connection-level errors, never with a reply that
    // carries id 1 (which would read as the end of the running stream).
    let mut refusals = 0;
    while refusals < 2 {
        match raw.read_frame().unwrap() {
            Frame::Notification(m, p) if m == "error" => {
                assert_eq!(p["code"], "invalid_request");
                assert!(
                    p["message"].as_str().unwrap().contains("request id 1"),
                    "{p}"
                );
                // The notice names the refused request's id, so the client can match it.
                assert_eq!(p["id"], 1, "{p}");
                refusals += 1;
            }
            Frame::Notification(m, _) if m == "chunk" => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    raw.request(2, "cancel", &CancelParams { id: 1 });
    let mut cancelled = false;
    let mut cancel_ok = false;
    while !(cancelled && cancel_ok) {
        match raw.read_frame().unwrap() {
            Frame::Result(2, _) => cancel_ok = true,
            Frame::Error(1, e) => {
                assert_eq!(e.code, ErrorCode::Cancelled);
                cancelled = true;
            }
            Frame::Notification(..) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn requests_before_hello_and_version_mismatch_are_refused_then_closed() {
    let daemon = Daemon::start();
    let mut raw = RawConn::connect(&daemon.socket);
    raw.request(1, "ping", &Empty {});
    let frames = raw.expect_close();
    let msg = expect_error(frames[0].clone(), 1, ErrorCode::ProtocolError);
    assert!(
        msg.contains("first request on a connection must be hello"),
        "{msg}"
    );

    let mut raw = RawConn::connect(&daemon.socket);
    raw.request(
        0,
        "hello",
        &Hello {
            protocol_version: 99,
            client: "future".into(),
            token: None,
        },
    );
    let frames = raw.expect_close();
    let msg = expect_error(frames[0].clone(), 0, ErrorCode::ProtocolError);
    assert!(
        msg.contains("client speaks version 99, this daemon speaks version 1"),
        "{msg}"
    );
    assert_still_serving(&daemon).await;
}

#[tokio::test]
async fn max_streams_per_connection_is_enforced_with_a_retryable_error() {
    let daemon = Daemon::with_config("[daemon]\nmax_streams_per_connection = 2\n[providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n");
    let mut raw = RawConn::greeted(&daemon.socket);
    let mut slow = GenerateRequest::prompt("x");
    slow.additional_params.insert(
        "mock".into(),
        json!({"numbered": true, "chunks": 100000, "chunk_delay_ms": 10}),
    );
    raw.request(1, "generate", &slow);
    raw.request(2, "generate", &slow);
    raw.request(3, "generate", &slow);
    let (frame, _) = raw.read_reply(3);
    match frame {
        Frame::Error(3, e) => {
            assert_eq!(e.code, ErrorCode::Overloaded);
            assert!(e.retryable);
            assert!(
                e.message.contains("max_streams_per_connection"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn connection_limit_gives_a_clear_overloaded_error() {
    let daemon = Daemon::with_config(
        "[daemon]\nmax_connections = 2\n[providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n",
    );
    let first = daemon.client().await;
    let _second = daemon.client().await;
    let err = provd_client::Client::connect(&daemon.socket)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Overloaded, "{err}");
    assert!(
        err.to_string().contains("maximum of 2 connections"),
        "{err}"
    );
    first.ping().await.unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_slows_only_itself() {
    let daemon = Daemon::start();
    // This client asks for 50 × 400 KB of chunks and never reads one. (It stays under
    // max_streams_per_connection: past it, the daemon's refusals would queue behind the
    // unread chunks too, and the client would block itself writing.)
    let mut stuck = RawConn::greeted(&daemon.socket);
    let mut flood = GenerateRequest::prompt("x");
    flood.additional_params.insert(
        "mock".into(),
        json!({"text": "y".repeat(40_000), "chunks": 10}),
    );
    for id in 1..=50 {
        stuck.request(id, "generate", &flood);
    }
    // Everyone else is served in full meanwhile.
    for _ in 0..3 {
        assert_still_serving(&daemon).await;
    }
    let client = daemon.client().await;
    let status = client.status().await.unwrap();
    assert!(
        status.active_streams > 0,
        "the stuck client's streams wait, they are not dropped"
    );
    // Its memory stays bounded by the per-connection queue, not by what it asked for.
    assert!(
        daemon.rss_kib() < 200 * 1024,
        "rss {} KiB",
        daemon.rss_kib()
    );
}
