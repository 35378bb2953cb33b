//! Cancel by id and client disconnect stop a generation's provider work at once.

use provd_client::{ErrorCode, GenerateEvent};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::{eventually, mock_request, numbered, Daemon};

#[tokio::test]
async fn cancel_by_id_ends_the_stream_with_cancelled_and_the_count() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut generation = client.generate(numbered(100_000, 10)).await.unwrap();
    let Some(Ok(GenerateEvent::Chunk(first))) = generation.next().await else {
        panic!("no first chunk")
    };
    assert_eq!(first.index, 0);
    client.cancel(generation.id()).await.unwrap();
    let mut seen = 1;
    let err = loop {
        match generation.next().await.expect("a terminal frame") {
            Ok(GenerateEvent::Chunk(_)) => seen += 1,
            Ok(GenerateEvent::Done(_)) => panic!("a cancelled generation finished"),
            Err(e) => break e.to_wire(),
        }
    };
    assert_eq!(err.code, ErrorCode::Cancelled);
    assert!(!err.retryable);
    assert_eq!(
        err.chunks,
        Some(seen),
        "the count matches what the client received"
    );
    assert!(seen < 100_000);
    assert!(
        generation.next().await.is_none(),
        "nothing after the terminal frame"
    );

    let status = client.status().await.unwrap();
    assert_eq!(status.active_streams, 0);
    assert_eq!(status.instances[0].metrics.cancelled, 1);
    assert_eq!(status.instances[0].metrics.active, 0);
}

#[tokio::test]
async fn a_generation_cancelled_while_opening_is_counted_as_cancelled() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    // The provider has started but has not produced its first chunk yet.
    let mut generation = client
        .generate(mock_request(
            "wait",
            serde_json::json!({"first_chunk_delay_ms": 600_000}),
        ))
        .await
        .unwrap();
    let started = eventually(100_000, || async {
        let status = client.status().await.ok()?;
        (status.instances.first()?.metrics.active == 1).then_some(())
    })
    .await;
    assert!(
        started.is_some(),
        "the generation never reached the provider"
    );
    client.cancel(generation.id()).await.unwrap();
    let err = generation.next().await.unwrap().unwrap_err().to_wire();
    assert_eq!(err.code, ErrorCode::Cancelled);
    assert_eq!(err.chunks, Some(0));

    // Counted as the client saw it: one request, cancelled, none still active.
    let status = client.status().await.unwrap();
    let metrics = status.instances[0].metrics;
    assert_eq!(
        (
            metrics.requests,
            metrics.cancelled,
            metrics.errors,
            metrics.active
        ),
        (1, 1, 0, 0),
        "{metrics:?}"
    );
    let provider = &status.provider_counters[0].metrics;
    assert_eq!(
        (provider.cancelled, provider.active),
        (1, 0),
        "{provider:?}"
    );
}

#[tokio::test]
async fn a_generation_cancelled_before_its_provider_was_asked_is_counted() {
    // The instance takes for ever to initialize: the generation never reaches it.
    let daemon = Daemon::with_config(
        "[providers.slow]\ntype = \"mock\"\ndefault_model = \"m\"\n\
         [providers.slow.options]\ninit_delay_ms = 600000\n",
    );
    let client = daemon.client().await;
    let mut generation = client
        .generate(provd_client::GenerateRequest::prompt("hi"))
        .await
        .unwrap();
    let admitted = eventually(100_000, || async {
        (client.status().await.ok()?.active_streams == 1).then_some(())
    })
    .await;
    assert!(admitted.is_some(), "the generation was never admitted");
    client.cancel(generation.id()).await.unwrap();
    let err = generation.next().await.unwrap().unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled);

    let status = client.status().await.unwrap();
    let slow = status
        .provider_counters
        .iter()
        .find(|p| p.provider == "slow")
        .expect("the provider's counters");
    let m = slow.metrics;
    assert_eq!(
        (m.requests, m.cancelled, m.errors, m.active),
        (1, 1, 0, 0),
        "{m:?}"
    );
}

#[tokio::test]
async fn cancel_handle_works_from_another_task() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut generation = client.generate(numbered(100_000, 10)).await.unwrap();
    let handle = generation.cancel_handle();
    let first = generation.next().await.unwrap().unwrap();
    assert!(matches!(first, GenerateEvent::Chunk(_)));
    tokio::spawn(async move { handle.cancel().await })
        .await
        .unwrap()
        .unwrap();
    let err = generation.collect_text().await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Cancelled);
}

#[tokio::test]
async fn cancel_of_an_unknown_id_is_not_found() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let err = client.cancel(4242).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert!(err.to_string().contains("4242"), "{err}");
}

#[tokio::test]
async fn dropping_a_generation_cancels_it_in_the_daemon() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut generation = client.generate(numbered(100_000, 10)).await.unwrap();
    generation.next().await.unwrap().unwrap();
    drop(generation);
    let cancelled = eventually(100_000, || async {
        let s = client.status().await.unwrap();
        (s.active_streams == 0).then_some(s.instances[0].metrics.cancelled)
    })
    .await;
    assert_eq!(cancelled, Some(1));
}

#[tokio::test]
async fn disconnect_cancels_every_generation_of_the_connection() {
    let daemon = Daemon::start();
    let observer = daemon.client().await;
    {
        let mut raw = RawConn::greeted(&daemon.socket);
        for id in 1..=5 {
            raw.request(id, "generate", &numbered(100_000, 10));
        }
        // Wait until every one of them is streaming.
        let mut streaming = std::collections::HashSet::new();
        while streaming.len() < 5 {
            if let Some(Frame::Notification(m, p)) = raw.read_frame() {
                assert_eq!(m, "chunk");
                streaming.insert(p["id"].as_u64().unwrap());
            }
        }
        assert_eq!(observer.status().await.unwrap().active_streams, 5);
    } // the raw socket closes here
    let stopped = eventually(100_000, || async {
        let s = observer.status().await.unwrap();
        (s.active_streams == 0 && s.connections == 1).then_some(s.instances[0].metrics.cancelled)
    })
    .await;
    assert_eq!(
        stopped,
        Some(5),
        "all five stopped as cancelled when the client left"
    );
}
