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
