//! The blocking client (the one the C ABI builds on) from plain threads, no runtime.

use provd_client::blocking::Client;
use provd_client::{ErrorCode, GenerateEvent};
use provd_tests::{numbered, Daemon};

#[test]
fn blocking_client_streams_lists_and_reports() {
    let daemon = Daemon::start();
    let client = Client::connect(&daemon.socket).unwrap();
    assert_eq!(
        client.daemon().protocol_version,
        provd_client::PROTOCOL_VERSION
    );
    client.ping().unwrap();
    assert_eq!(client.list_providers().unwrap().providers[0].id, "mock");
    assert_eq!(client.list_models(None).unwrap().models[0].id, "mock-1");

    let mut indexes = Vec::new();
    let mut done = None;
    for event in client.generate(numbered(12, 0)).unwrap() {
        match event.unwrap() {
            GenerateEvent::Chunk(c) => indexes.push(c.index),
            GenerateEvent::Done(d) => done = Some(d),
        }
    }
    assert_eq!(indexes, (0..12).collect::<Vec<_>>());
    assert_eq!(done.unwrap().chunks, 12);
    assert_eq!(client.status().unwrap().instances[0].metrics.requests, 1);
}

#[test]
fn blocking_generations_run_concurrently_from_many_threads_on_one_client() {
    let daemon = Daemon::start();
    let client = Client::connect(&daemon.socket).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u32)
            .map(|i| {
                let client = &client;
                s.spawn(move || {
                    client
                        .generate(numbered(10 + i, 0))
                        .unwrap()
                        .collect_text()
                        .unwrap()
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let (text, done) = h.join().unwrap();
            assert_eq!(done.chunks, 10 + i as u32);
            assert!(text.ends_with(&format!("{} ", 9 + i)), "{text}");
        }
    });
}

#[test]
fn blocking_cancel_from_another_thread_ends_the_stream() {
    let daemon = Daemon::start();
    let client = Client::connect(&daemon.socket).unwrap();
    let mut generation = client.generate(numbered(100_000, 10)).unwrap();
    assert!(matches!(
        generation.next(),
        Some(Ok(GenerateEvent::Chunk(_)))
    ));
    let cancel = generation.cancel_handle().unwrap();
    std::thread::spawn(move || cancel.cancel())
        .join()
        .unwrap()
        .unwrap();
    let err = generation
        .find_map(|e| e.err())
        .expect("the stream ends with an error");
    assert_eq!(err.code(), ErrorCode::Cancelled);
}

#[test]
fn connecting_to_a_missing_daemon_is_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let err = Client::connect(&dir.path().join("none.sock")).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(
        err.to_string().contains("cannot connect to provd at"),
        "{err}"
    );
}

/// A per-call deadline ends a generation whose next event does not come in time, with
/// `timeout`, and cancels it in the daemon rather than leaving it running there.
#[test]
fn a_call_deadline_times_out_a_silent_generation_and_cancels_it_in_the_daemon() {
    let daemon = Daemon::start();
    let options = provd_client::ConnectOptions::new()
        .call_timeout(Some(std::time::Duration::from_millis(300)));
    let client =
        Client::connect_with_options(&daemon.socket, "deadline-test", None, &options).unwrap();
    let mut generation = client
        .generate(provd_tests::mock_request(
            "wait",
            serde_json::json!({"first_chunk_delay_ms": 600_000}),
        ))
        .unwrap();
    let err = generation.next().unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert!(err.to_string().contains("300 ms"), "{err}");
    assert!(generation.next().is_none(), "nothing after the timeout");
    // The daemon was told: the generation ends there too.
    let observer = Client::connect(&daemon.socket).unwrap();
    let mut cancelled = false;
    for _ in 0..100_000 {
        let status = observer.status().unwrap();
        if status.active_streams == 0 {
            cancelled = status.instances[0].metrics.cancelled == 1;
            break;
        }
        std::thread::yield_now();
    }
    assert!(
        cancelled,
        "the timed-out generation was cancelled in the daemon"
    );
}
