//! Faults, end to end: upstreams that misbehave, clients that misbehave, and a daemon that
//! dies. Each ends with a typed error or a closed connection, bounded in time and memory,
//! and never disturbs anyone else.
//!
//! Some faults are tested where their subject lives; this file does not repeat them:
//!
//! | fault | test |
//! |---|---|
//! | upstream connection reset or closed mid-stream | `a_truncated_or_reset_stream_is_an_error_never_a_silent_success` in `provider_openai.rs` and `provider_anthropic.rs`, and the cut streams of `provider_ollama.rs` and `provider_gemini.rs` |
//! | upstream stall past the first-byte, idle and total timeouts | `the_first_byte_timeout_is_named_in_the_error`, `the_idle_timeout_is_named_in_the_error`, `the_total_deadline_ends_a_request_whose_upstream_never_answers` in `resilience.rs` (the connect timeout is here) |
//! | garbage NDJSON line | `a_garbage_line_is_a_malformed_upstream_response` in `provider_ollama.rs` |
//! | a client that stops reading slows only itself | `a_client_that_stops_reading_slows_only_itself` in `bad_input.rs` |
//! | a client that vanishes mid-stream | `disconnect_cancels_every_generation_of_the_connection` in `cancel.rs`, `a_client_disconnect_closes_the_upstream_connection` in `provider_*.rs` |
//! | the connection limit reached | `connection_limit_gives_a_clear_overloaded_error` in `bad_input.rs` |
//!
//! Here: a stalled TCP handshake, garbage event streams, a huge single event, endless
//! streams, a client that stops reading being dropped at `slow_client_timeout_seconds`, a
//! client that vanishes while its queue is full, a half-close, and SIGKILL with a restart
//! on the same socket.

use std::os::unix::process::ExitStatusExt;

use provd_client::{Client, ErrorCode, GenerateEvent, GenerateRequest};
use provd_tests::apis::openai;
use provd_tests::raw::{Frame, RawConn};
use provd_tests::upstream::{Part, Reply, Seen, Upstream};
use provd_tests::{eventually, generation_outcome, numbered, numbered_text, Daemon};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const MODEL: &str = "test-model";
const SIGKILL: i32 = 9;

/// A well-behaved client gets a whole numbered generation, every chunk once and in order.
async fn assert_served_in_full(client: &Client) {
    let (texts, done) = generation_outcome(client, numbered(50, 0)).await;
    assert_eq!(texts.concat(), numbered_text(50));
    assert_eq!(done.unwrap().chunks, 50);
}

/// The daemon's peak resident set size (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test]
async fn a_garbage_event_stream_is_an_upstream_error_with_the_chunks_so_far() {
    let chunk = |text: &str| {
        Part::Bytes(openai::chunk_event(MODEL, json!({"content": text}), None).into_bytes())
    };
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let cases: Vec<(&str, &str, Vec<Part>, usize, &str)> = vec![
        (
            "data that is not JSON",
            "text/event-stream",
            vec![
                chunk("fine"),
                Part::Bytes(b"data: {\"choices\": [{oops\n\n".to_vec()),
            ],
            1,
            "malformed",
        ),
        (
            "JSON of the wrong shape",
            "text/event-stream",
            vec![Part::Bytes(b"data: {\"choices\": \"none\"}\n\n".to_vec())],
            0,
            "malformed",
        ),
        (
            "binary noise",
            "text/event-stream",
            vec![chunk("fine"), Part::Bytes(binary)],
            1,
            "without its final [DONE] event",
        ),
        (
            "an HTML error page with a 200 status",
            "text/html",
            vec![Part::Bytes(
                b"<html><body><h1>502 Bad Gateway</h1></body></html>\n".to_vec(),
            )],
            0,
            "answered with text/html instead of a stream: <html><body><h1>502 Bad Gateway",
        ),
    ];
    for (what, content_type, parts, chunks, says) in cases {
        let content_type = content_type.to_owned();
        let upstream = Upstream::start(move |_| Reply::stream(&content_type, parts.clone())).await;
        let daemon = Daemon::for_provider(
            "openai-compatible",
            &format!("{}/v1", upstream.base_url),
            0,
            "",
        );
        let client = daemon.client().await;
        let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
        let err = result.expect_err(what);
        assert_eq!(err.code, ErrorCode::UpstreamError, "{what}: {err}");
        assert!(err.message.contains(says), "{what}: {}", err.message);
        assert_eq!(texts.len(), chunks, "{what}");
        assert_eq!(err.chunks, Some(chunks as u32), "{what}");
        // The connection and the daemon go on.
        client.ping().await.unwrap();
    }
}

/// The SSE parser and the NDJSON splitter cap one event (one line) at 8 MiB. An upstream
/// that sends a single event far larger than that ends the stream with an upstream error
/// when the cap is reached; the daemon never holds the whole event, and it closes the
/// upstream connection rather than reading on.
#[tokio::test]
async fn a_huge_single_event_ends_the_stream_at_the_cap_with_bounded_memory() {
    const MIB: usize = 1024 * 1024;
    const EVENT_MIB: usize = 128;
    let cases = [
        ("openai-compatible", "/v1", "text/event-stream", "data: "),
        ("ollama", "", "application/x-ndjson", "{\"message\": \""),
    ];
    for (kind, path, content_type, start) in cases {
        let content_type = content_type.to_owned();
        let upstream = Upstream::start(move |_| {
            // 128 MiB of one event with no end in sight, then nothing until the client
            // leaves, so that leaving is the only way the request ends.
            let mut parts = vec![Part::Bytes(start.as_bytes().to_vec())];
            parts.extend((0..EVENT_MIB).map(|_| Part::Bytes(vec![b'x'; MIB])));
            parts.push(Part::Stall);
            Reply::stream(&content_type, parts)
        })
        .await;
        let daemon = Daemon::for_provider(kind, &format!("{}{path}", upstream.base_url), 0, "");
        let client = daemon.client().await;
        let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
        let err = result.unwrap_err();
        assert!(texts.is_empty());
        assert_eq!(err.code, ErrorCode::UpstreamError, "{kind}: {err}");
        assert!(
            err.message.contains("exceeds 8388608 bytes"),
            "{kind}: {}",
            err.message
        );
        upstream.wait_for(Seen::ClientClosedEarly(0)).await;
        let peak = peak_rss_kib(daemon.pid());
        assert!(
            peak < (EVENT_MIB * 1024 / 2) as u64,
            "{kind}: the daemon's peak RSS of {peak} KiB suggests it buffered the event"
        );
        client.ping().await.unwrap();
    }
}

/// An upstream that answers every request with `unit` (already framed as one HTTP chunk)
/// repeated for ever, as fast as its client reads, until the client goes away; then it
/// reports how many it sent. The scripted [`Upstream`] plays finite bodies only.
async fn endless_upstream(unit: String) -> (String, mpsc::UnboundedReceiver<u64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    let chunk = format!("{:x}\r\n{unit}\r\n", unit.len()).repeat(16);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let (tx, chunk) = (tx.clone(), chunk.clone());
            tokio::spawn(async move {
                // The request itself does not matter: read up to the end of its head.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let status = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                if stream.write_all(status.as_bytes()).await.is_err() {
                    return;
                }
                let mut sent = 0u64;
                while stream.write_all(chunk.as_bytes()).await.is_ok() {
                    sent += 16;
                }
                let _ = tx.send(sent);
            });
        }
    });
    (base_url, rx)
}

/// A stream that never ends, whether it streams text or only keep-alive comments, is ended
/// by the request's `total_timeout_seconds` with a timeout error, and the upstream
/// connection is closed.
#[tokio::test]
async fn an_endless_stream_is_ended_by_the_total_timeout() {
    let text = openai::chunk_event(MODEL, json!({"content": "more "}), None);
    for (what, unit) in [
        ("endless text", text),
        ("endless keep-alive comments", ": keep-alive\n\n".to_owned()),
    ] {
        let (base_url, mut closed) = endless_upstream(unit).await;
        let daemon = Daemon::for_provider(
            "openai-compatible",
            &format!("{base_url}/v1"),
            0,
            "total_timeout_seconds = 1",
        );
        let client = daemon.client().await;
        let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
        let err = result.unwrap_err();
        assert_eq!(err.code, ErrorCode::Timeout, "{what}: {err}");
        assert!(
            err.message.contains("total timeout of 1s"),
            "{what}: {}",
            err.message
        );
        assert_eq!(err.chunks, Some(texts.len() as u32), "{what}");
        assert!(texts.iter().all(|t| t == "more "), "{what}");
        let sent = closed
            .recv()
            .await
            .expect("the upstream saw its client leave");
        assert!(sent > 0, "{what}");
    }
}

/// A request of a few bytes for a generation of `chunks` small numbered chunks: enough to
/// fill any socket buffer and the connection's queue when nobody reads. The request itself
/// is small so that a client that never reads can still send it whole: a large one could
/// still be half-written when the daemon gives up on that client (a broken pipe).
fn flood(chunks: u32) -> GenerateRequest {
    let mut request = numbered(chunks, 0);
    request.max_tokens = Some(chunks);
    request
}

/// A client that stops reading fills its socket and then its own queue, and its
/// generations wait (`bad_input.rs` shows that this slows only that client). Once its
/// socket has accepted nothing for `slow_client_timeout_seconds`, the daemon drops the
/// connection and cancels its generations. Another client streams in full meanwhile and
/// afterwards; its throughput is the benchmark's to measure, not a test's.
// Multi-threaded: the raw client's blocking reads must not stall the async client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_at_the_bound_and_its_generations_cancelled() {
    let daemon = Daemon::with_config(
        "[daemon]\nslow_client_timeout_seconds = 1\n\
         [providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n",
    );
    let other = daemon.client().await;
    let mut stuck = RawConn::greeted(&daemon.socket);
    for id in 1..=4 {
        stuck.request(id, "generate", &flood(200_000));
    }
    // All four run, blocked on the full queue (12 MB each asked for, a few hundred KB taken).
    let running = eventually(100_000, || async {
        let s = other.status().await.unwrap();
        (s.active_streams == 4).then_some(())
    })
    .await;
    assert!(running.is_some(), "the stuck client's generations started");
    for _ in 0..3 {
        assert_served_in_full(&other).await;
    }

    daemon.wait_for_log("the client stopped reading");
    let status = eventually(100_000, || async {
        let s = other.status().await.unwrap();
        (s.active_streams == 0 && s.connections == 1).then_some(s)
    })
    .await
    .expect("the stuck connection closes and its generations end");
    let metrics = status.instances[0].metrics;
    assert_eq!(
        (metrics.requests, metrics.cancelled, metrics.errors),
        (7, 4, 0)
    );
    // The stuck client finds what its socket had buffered, then the end of the stream.
    // (Bytes, not frames: the connection was dropped in the middle of writing one, which
    // a client reads as a truncated frame, i.e. a lost connection.)
    let mut rest = Vec::new();
    std::io::Read::read_to_end(&mut stuck.stream(), &mut rest)
        .expect("the stuck client reads to the end of a closed connection");
    assert!(!rest.is_empty());
    assert_served_in_full(&other).await;
}

/// A client that vanishes while its queue is full (it never read, then closed its socket)
/// is noticed at once, from the end of its input, not at the slow-client bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_with_a_full_queue_is_cleaned_up_at_once() {
    // The default bound (30 s) is far beyond what the round trips below can take.
    let daemon = Daemon::start();
    let observer = daemon.client().await;
    let mut stuck = RawConn::greeted(&daemon.socket);
    for id in 1..=4 {
        stuck.request(id, "generate", &flood(200_000));
    }
    // Started on the provider's instance, not only registered: a generation cancelled
    // while still waiting for its instance is counted by the provider alone.
    eventually(100_000, || async {
        let s = observer.status().await.unwrap();
        (s.active_streams == 4 && s.instances.first().is_some_and(|i| i.metrics.requests == 4))
            .then_some(())
    })
    .await
    .expect("the generations started");
    drop(stuck);
    let status = eventually(100_000, || async {
        let s = observer.status().await.unwrap();
        (s.active_streams == 0 && s.connections == 1).then_some(s)
    })
    .await
    .expect("the vanished client's generations end");
    assert_eq!(status.instances[0].metrics.cancelled, 4);
    assert!(!daemon.log().contains("the client stopped reading"));
}

/// A client that shuts down its write side has left, as far as the daemon is concerned:
/// the end of its input is the end of the client (the protocol asks a client to keep its
/// write side open while it wants replies). Its generations are cancelled and the daemon
/// closes the connection instead of streaming into a socket nobody may read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_client_is_treated_as_gone_and_its_generations_cancelled() {
    let daemon = Daemon::start();
    let observer = daemon.client().await;
    let mut raw = RawConn::greeted(&daemon.socket);
    raw.request(1, "generate", &numbered(100_000, 10));
    assert!(matches!(raw.read_frame(), Some(Frame::Notification(m, _)) if m == "chunk"));
    raw.shutdown_write();
    let frames = raw.expect_close();
    assert!(
        frames
            .iter()
            .all(|f| matches!(f, Frame::Notification(m, _) if m == "chunk")),
        "no terminal reply goes to a client that left: {:?}",
        frames.last()
    );
    let cancelled = eventually(100_000, || async {
        let s = observer.status().await.unwrap();
        (s.active_streams == 0 && s.connections == 1).then_some(s.instances[0].metrics.cancelled)
    })
    .await;
    assert_eq!(cancelled, Some(1));
}

/// A master key for the daemons with a credential store.
const MASTER: &str = "8f3a9c2e71d04b6a95e3f0c1d2b7a48e6c5d9f0a1b2c3d4e5f60718293a4b5c6";

/// The `n`th API key the credential writer seals.
fn nth_key(n: u32) -> String {
    format!("sk-killed-while-writing-{n:06}-AAAAAAAAAAAAAAAA")
}

/// Seals `a`'s key to [`nth_key`]`(n)`.
async fn seal(client: &Client, n: u32) -> Result<(), provd_client::ClientError> {
    let params = provd_client::message::CredsSetParams {
        provider: "a".into(),
        secret: nth_key(n),
    };
    client
        .request::<_, serde::de::IgnoredAny>(provd_client::message::method::CREDS_SET, &params)
        .await
        .map(drop)
}

/// Seals `a`'s key over and over until the daemon goes away: returns the last key whose
/// write was acknowledged and the one in flight when the connection broke.
async fn seal_until_killed(client: Client, mut n: u32) -> (String, String) {
    loop {
        let sealed = seal(&client, n + 1).await;
        match sealed {
            Ok(_) => n += 1,
            Err(e) => {
                assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
                return (nth_key(n), nth_key(n + 1));
            }
        }
    }
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// SIGKILL mid-stream and mid-write of a credential: the client's stream ends with
/// `unavailable` (never a hang, never a silent end), new requests on that connection fail
/// the same way, connecting to the dead socket is refused with `unavailable`, and a new
/// daemon on the same path reclaims the stale socket, opens the credential store (it
/// refuses to start on any file it cannot open) holding the last acknowledged key or the
/// one in flight, never a torn one, and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_stream_fails_its_clients_cleanly_and_a_restart_reclaims_the_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("provd.sock");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
    let up = Upstream::start(|_| {
        openai::stream_reply(&openai::stream_text(MODEL, &["ok"], "stop", (2, 1)), 64)
    })
    .await;
    let config = format!(
        "[daemon]\nstate_dir = \"{}\"\ndefault_provider = \"mock\"\n\
         [providers.mock]\ntype = \"mock\"\ndefault_model = \"mock-1\"\n\
         [providers.a]\ntype = \"openai\"\nbase_url = \"{}/v1\"\ndefault_model = \"{MODEL}\"\n\
         retry_attempts = 0\napi_key_env = \"PROVD_UNSET_A\"\n",
        state.display(),
        up.base_url
    );
    let start = || {
        Daemon::builder()
            .config(&config)
            .socket(&socket)
            .env("SECRET_KEY", MASTER)
            .start()
    };
    let daemon = start();
    let client = Client::connect(&socket).await.unwrap();
    let mut generation = client.generate(numbered(100_000, 10)).await.unwrap();
    assert!(matches!(
        generation.next().await,
        Some(Ok(GenerateEvent::Chunk(_)))
    ));
    // One key acknowledged before the kill, then writes back to back while it lands.
    let admin = Client::connect(&socket).await.unwrap();
    seal(&admin, 1).await.unwrap();
    let writer = tokio::spawn(seal_until_killed(admin, 1));

    daemon.signal(SIGKILL);
    let (status, _) = daemon.wait();
    assert_eq!(status.signal(), Some(SIGKILL));
    let err = loop {
        match generation.next().await.expect("a terminal event") {
            Ok(GenerateEvent::Chunk(_)) => {}
            Ok(GenerateEvent::Done(d)) => panic!("a killed daemon's stream finished: {d:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
    assert!(
        err.to_string().contains("connection to provd lost"),
        "{err}"
    );
    assert_eq!(
        client.ping().await.unwrap_err().code(),
        ErrorCode::Unavailable
    );
    let (last_acked, in_flight) = writer.await.unwrap();

    // The dead daemon could not remove its socket; nobody listens on it.
    assert!(socket.exists());
    let refused = Client::connect(&socket).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Unavailable, "{refused}");
    assert!(refused.to_string().contains("cannot connect"), "{refused}");

    let restarted = start();
    restarted.wait_for_log("reclaiming the stale socket");
    let client = Client::connect(&socket).await.unwrap();
    assert_served_in_full(&client).await;

    let listing: provd_client::message::CredsList = client
        .request(provd_client::message::method::CREDS_LIST, &json!({}))
        .await
        .unwrap();
    assert!(listing.errors.is_empty(), "{:?}", listing.errors);
    let providers: Vec<&str> = listing
        .credentials
        .iter()
        .map(|c| c.provider.as_str())
        .collect();
    assert_eq!(providers, ["a"]);
    let mut request = GenerateRequest::prompt("q");
    request.provider = Some("a".into());
    let (texts, done) = generation_outcome(&client, request).await;
    done.unwrap();
    assert_eq!(texts.concat(), "ok");
    let used = up
        .requests()
        .last()
        .unwrap()
        .header("authorization")
        .map(str::to_owned);
    assert!(
        used == Some(format!("Bearer {last_acked}")) || used == Some(format!("Bearer {in_flight}")),
        "the store holds neither the last acknowledged key nor the one in flight: {used:?}"
    );
    // A write the kill cut short left a temp file at most, and opening the store removed it.
    let stray: Vec<_> = files_under(&state)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// A loopback TCP listener nobody accepts from, with its accept queue already full: the
/// kernel drops the SYN of every further connection, so connecting to it stalls until
/// the connecting side gives up. Returns its base URL, and the listener and the
/// connection filling its queue, to keep open.
async fn unconnectable() -> (String, tokio::net::TcpListener, tokio::net::TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
    // A backlog of 0: one completed connection fills the accept queue.
    let listener = socket.listen(0).unwrap();
    let address = listener.local_addr().unwrap();
    let filler = tokio::net::TcpStream::connect(address)
        .await
        .expect("fill the queue");
    (format!("http://{address}"), listener, filler)
}

/// An upstream whose TCP handshake never completes is ended by `connect_timeout_seconds`
/// with a timeout error that names it (the first-byte, idle and total timeouts are
/// tested in `resilience.rs`).
#[tokio::test]
async fn an_upstream_that_never_completes_the_handshake_is_ended_by_the_connect_timeout() {
    let (base_url, _listener, _filler) = unconnectable().await;
    let daemon = Daemon::for_provider(
        "openai-compatible",
        &format!("{base_url}/v1"),
        0,
        "connect_timeout_seconds = 1",
    );
    let client = daemon.client().await;
    let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
    let err = result.unwrap_err();
    assert!(texts.is_empty());
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(
        err.message.contains("connect timeout of 1s"),
        "{}",
        err.message
    );
    client.ping().await.unwrap();
}
