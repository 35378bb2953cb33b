//! Generations stream through the real daemon in order, complete, and concurrently.

use futures_util::future::join_all;
use provd_client::{ErrorCode, FinishReason, GenerateEvent, GenerateRequest, Message, Role};
use provd_tests::{mock_request, numbered, numbered_text, Daemon};
use serde_json::json;

#[tokio::test]
async fn chunks_arrive_in_order_and_complete_then_exactly_one_done() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut generation = client.generate(numbered(200, 0)).await.unwrap();
    let mut next_index = 0;
    let mut text = String::new();
    let mut done = None;
    while let Some(event) = generation.next().await {
        match event.unwrap() {
            GenerateEvent::Chunk(c) => {
                assert!(done.is_none(), "a chunk after done");
                assert_eq!(c.index, next_index, "chunks out of order");
                assert_eq!(c.id, generation.id());
                assert_eq!(c.model, "mock-1");
                assert!(
                    c.created_at > 1_600_000_000_000,
                    "created_at is unix millis"
                );
                next_index += 1;
                text.push_str(&c.text);
            }
            GenerateEvent::Done(d) => {
                assert!(done.is_none(), "two terminal frames");
                done = Some(d);
            }
        }
    }
    let done = done.expect("a done frame");
    assert_eq!(text, numbered_text(200));
    assert!(done.done);
    assert_eq!(done.chunks, 200);
    assert_eq!(
        (done.provider.as_str(), done.model.as_str()),
        ("mock", "mock-1")
    );
    assert_eq!(done.usage.prompt_tokens, 3);
    assert_eq!(done.usage.completion_tokens, 200);
    assert_eq!(done.usage.total_tokens, 203);
    assert_eq!(done.finish_reason, FinishReason::Stop);
}

#[tokio::test]
async fn default_mock_answer_streams_word_by_word() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let (text, done) =
        provd_tests::generation_text(&client, GenerateRequest::prompt("hello")).await;
    assert!(text.starts_with("provd streamed this answer"), "{text}");
    assert_eq!(done.chunks as usize, text.split_whitespace().count());
}

#[tokio::test]
async fn non_streaming_request_gets_the_whole_text_in_done() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut req = numbered(5, 0);
    req.stream = false;
    let mut generation = client.generate(req).await.unwrap();
    let first = generation.next().await.unwrap().unwrap();
    let GenerateEvent::Done(done) = first else {
        panic!("a non-streaming request got a chunk: {first:?}")
    };
    assert_eq!(done.text.as_deref(), Some("0 1 2 3 4 "));
    assert_eq!(done.chunks, 0);
    assert_eq!(done.usage.completion_tokens, 5);
    assert!(generation.next().await.is_none());
}

#[tokio::test]
async fn max_tokens_and_messages_shape_the_answer() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut req = numbered(50, 0);
    req.max_tokens = Some(7);
    req.system = Some("be terse".into());
    req.messages = vec![
        Message {
            role: Role::User,
            content: "one two".into(),
        },
        Message {
            role: Role::Assistant,
            content: "three".into(),
        },
    ];
    let (text, done) = provd_tests::generation_text(&client, req).await;
    assert_eq!(text, numbered_text(7));
    assert_eq!(done.finish_reason, FinishReason::Length);
    // "be terse" + "one two" + "three" + "count for me"
    assert_eq!(done.usage.prompt_tokens, 2 + 2 + 1 + 3);
}

#[tokio::test]
async fn many_concurrent_generations_share_one_connection() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let runs = (0..32u32).map(|i| {
        let client = client.clone();
        async move {
            let (text, done) = client
                .generate(numbered(20 + i, 0))
                .await?
                .collect_text()
                .await?;
            Ok::<_, provd_client::ClientError>((i, text, done))
        }
    });
    for result in join_all(runs).await {
        let (i, text, done) = result.unwrap();
        assert_eq!(text, numbered_text(20 + i));
        assert_eq!(done.chunks, 20 + i);
    }
}

#[tokio::test]
async fn many_connections_stream_at_once() {
    let daemon = Daemon::start();
    let runs = (0..16u32).map(|i| {
        let socket = daemon.socket.clone();
        async move {
            let client = provd_client::Client::connect(&socket).await?;
            let streams = (0..4).map(|_| {
                let client = client.clone();
                async move {
                    client
                        .generate(numbered(30 + i, 0))
                        .await?
                        .collect_text()
                        .await
                }
            });
            let results = join_all(streams).await;
            Ok::<_, provd_client::ClientError>((i, results))
        }
    });
    for result in join_all(runs).await {
        let (i, results) = result.unwrap();
        for r in results {
            assert_eq!(r.unwrap().0, numbered_text(30 + i));
        }
    }
}

#[tokio::test]
async fn provider_faults_end_the_stream_with_a_typed_error() {
    let daemon = Daemon::start();
    let client = daemon.client().await;

    let req = mock_request(
        "count for me",
        json!({"numbered": true, "chunks": 10, "fault": "mid_stream", "fault_after_chunks": 4, "fault_code": "overloaded"}),
    );
    let mut generation = client.generate(req).await.unwrap();
    let mut chunks = 0;
    let err = loop {
        match generation.next().await.unwrap() {
            Ok(GenerateEvent::Chunk(_)) => chunks += 1,
            Ok(GenerateEvent::Done(d)) => panic!("a failing stream ended with done: {d:?}"),
            Err(e) => break e,
        }
    };
    assert_eq!(chunks, 4);
    let wire = err.to_wire();
    assert_eq!(wire.code, ErrorCode::Overloaded);
    assert!(wire.retryable);
    assert_eq!(wire.chunks, Some(4));
    // The usage the provider reported before failing.
    assert_eq!(wire.usage, Some(provd_client::Usage::new(3, 4)));

    let req = mock_request(
        "x",
        json!({"fault": "before_first_chunk", "fault_code": "rate_limited"}),
    );
    let err = provd_tests::generation_error(&client, req).await;
    assert_eq!(err.code, ErrorCode::RateLimited);
    assert_eq!(err.chunks, Some(0));
}

#[tokio::test]
async fn providers_models_and_status_describe_the_daemon() {
    let daemon = Daemon::with_config(
        r#"
[daemon]
default_provider = "b"
[providers.a]
type = "mock"
default_model = "alpha"
[providers.a.options]
models = ["alpha", "alpha-large"]
[providers.b]
type = "mock"
default_model = "beta"
capabilities = ["streaming", "tools"]
"#,
    );
    let client = daemon.client().await;
    let providers = client.list_providers().await.unwrap().providers;
    let ids: Vec<_> = providers
        .iter()
        .map(|p| (p.id.as_str(), p.is_default))
        .collect();
    assert_eq!(ids, [("a", false), ("b", true)]);
    assert_eq!(providers[1].capabilities, ["streaming", "tools"]);

    let models = client.list_models(None).await.unwrap();
    let ids: Vec<_> = models
        .models
        .iter()
        .map(|m| (m.provider.as_str(), m.id.as_str()))
        .collect();
    assert_eq!(ids, [("a", "alpha"), ("a", "alpha-large"), ("b", "beta")]);
    assert_eq!(client.list_models(Some("a")).await.unwrap().models.len(), 2);
    let err = client.list_models(Some("zzz")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);

    let (_, done) = provd_tests::generation_text(&client, numbered(3, 0)).await;
    assert_eq!(done.provider, "b", "the default provider answered");
    let status = client.status().await.unwrap();
    assert_eq!(status.pid, daemon.pid());
    assert_eq!(status.connections, 1);
    assert_eq!(status.active_streams, 0);
    let b = status
        .instances
        .iter()
        .find(|i| i.provider == "b")
        .expect("instance b/beta");
    assert_eq!(b.model, "beta");
    assert_eq!(b.metrics.requests, 1);
    assert_eq!(b.metrics.chunks, 3);
    assert_eq!(b.metrics.completion_tokens, 3);
    assert_eq!(b.metrics.active, 0);
}

#[tokio::test]
async fn unknown_provider_is_not_found_and_the_connection_goes_on() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let mut req = GenerateRequest::prompt("x");
    req.provider = Some("nope".into());
    let err = provd_tests::generation_error(&client, req).await;
    assert_eq!(err.code, ErrorCode::NotFound);
    assert!(err.to_string().contains("no provider 'nope'"), "{err}");
    client.ping().await.unwrap();
}
