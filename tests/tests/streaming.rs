//! Generations stream through the real daemon in order, complete, and concurrently; and
//! for every HTTP provider type, how a stream's end is read: a clean end with its last
//! event pending, a body cut short, the connection reused, a whole answer instead of a
//! stream, and the model the upstream names.

use futures_util::future::join_all;
use std::sync::atomic::{AtomicUsize, Ordering};

use provd_client::{ErrorCode, FinishReason, GenerateEvent, GenerateRequest, Message, Role, Usage};
use provd_tests::apis::{every_api, provider_config, TEST_KEY};
use provd_tests::upstream::{split_every, Part, Reply, Upstream};
use provd_tests::{generation_chunks, mock_request, numbered, numbered_text, Daemon};
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
        Message::text(Role::User, "one two"),
        Message::text(Role::Assistant, "three"),
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
    assert!(
        !wire.retryable,
        "4 chunks were delivered: a plain retry would repeat them"
    );
    assert_eq!(wire.chunks, Some(4));
    // The usage the provider reported before failing.
    assert_eq!(wire.usage, Some(provd_client::Usage::new(3, 4)));

    let req = mock_request(
        "x",
        json!({"fault": "before_first_chunk", "fault_code": "rate_limited"}),
    );
    let err = provd_tests::generation_error(&client, req).await;
    assert_eq!(err.code, ErrorCode::RateLimited);
    assert!(err.retryable, "no chunk was delivered: {err}");
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

/// The model every mock upstream below names as the one answering; the daemon is
/// configured with `test-model`.
const ANSWERING: &str = "answering-model-2025";

fn texts(chunks: &[provd_client::Chunk]) -> String {
    chunks.iter().map(|c| c.text.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_ending_cleanly_with_its_last_event_pending_succeeds_for_every_provider_type() {
    for api in every_api() {
        // Request n gets variant n: without the dispatching blank line or also without
        // the last line's ending, each chunked and with a content-length.
        let variants: Vec<Reply> = [true, false]
            .into_iter()
            .flat_map(|blank| {
                let body = api.stream_unterminated(ANSWERING, &["Hel", "lo"], blank);
                let chunked = Reply::stream(api.content_type, split_every(&body, 7));
                [chunked.clone(), chunked.whole()]
            })
            .collect();
        let count = variants.len();
        let served = AtomicUsize::new(0);
        let upstream = Upstream::start(move |_| {
            variants[served.fetch_add(1, Ordering::SeqCst) % count].clone()
        })
        .await;
        let daemon = api.daemon(&upstream.base_url, &[]);
        let client = daemon.client().await;
        for variant in 0..count {
            let (chunks, done) = generation_chunks(&client, GenerateRequest::prompt("q")).await;
            let kind = api.kind;
            let done = done.unwrap_or_else(|e| panic!("{kind}, variant {variant}: {e}"));
            assert_eq!(texts(&chunks), "Hello", "{kind}, variant {variant}");
            assert_eq!(done.usage, Usage::new(5, 2), "{kind}, variant {variant}");
            assert_eq!(done.finish_reason, FinishReason::Stop, "{kind}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_cut_short_is_an_error_for_every_provider_type() {
    for api in every_api() {
        let body = api.stream_unterminated(ANSWERING, &["Hel", "lo"], true);
        let length = body.len();
        let parts = vec![Part::Bytes(body.into_bytes()), Part::Close];
        let variants = [
            // Chunked framing without its terminator.
            Reply::stream(api.content_type, parts.clone()),
            // A body short of its declared length.
            Reply::stream(api.content_type, parts).declared_length(length + 64),
        ];
        let served = AtomicUsize::new(0);
        let upstream =
            Upstream::start(move |_| variants[served.fetch_add(1, Ordering::SeqCst) % 2].clone())
                .await;
        let daemon = api.daemon(&upstream.base_url, &[]);
        let client = daemon.client().await;
        for variant in ["no chunked terminator", "short of its content-length"] {
            let (chunks, end) = generation_chunks(&client, GenerateRequest::prompt("q")).await;
            let kind = api.kind;
            let err = end.expect_err(&format!("{kind}, {variant}: a cut body must fail"));
            // Gemini's last text rides on its last event, which the cut loses.
            let text = texts(&chunks);
            assert!(
                !text.is_empty() && "Hello".starts_with(&text),
                "{kind}, {variant}: {text}"
            );
            assert_eq!(
                err.code,
                ErrorCode::UpstreamError,
                "{kind}, {variant}: {err}"
            );
            assert!(
                err.message.contains("broke mid-response"),
                "{kind}, {variant}: {err}"
            );
            assert!(
                !err.retryable,
                "{kind}, {variant}: chunks were delivered, so no plain retry: {err}"
            );
            assert_eq!(err.chunks, Some(chunks.len() as u32), "{kind}, {variant}");
            let usage = err.usage.expect("usage known so far");
            assert!(
                usage.completion_tokens as usize >= chunks.len(),
                "{kind}, {variant}: a lower bound of what was delivered: {usage:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_sequential_streamed_generations_use_one_connection_for_every_provider_type() {
    for api in every_api() {
        let body = (api.stream)(ANSWERING, &["Hel", "lo"]);
        let content_type = api.content_type;
        // The chunked terminator comes a moment after the final event, as servers send
        // it once their generator returns. (Right behind the event, the HTTP library
        // reads it even from a dropped body, which hid the bug from a local test.)
        let upstream = Upstream::start(move |_| {
            let mut parts = split_every(&body, 9);
            parts.push(Part::Delay(std::time::Duration::from_millis(20)));
            Reply::stream(content_type, parts)
        })
        .await;
        // One worker thread: the HTTP client puts a finished connection back in its pool
        // from a task of its own, woken as the body ends; with one worker it runs before
        // the daemon next polls its sockets, so before the ping below is even read.
        // (With two, a loaded machine could let the next request overtake it.)
        let config = provider_config(api.kind, &upstream.base_url, 0, "").replacen(
            "[daemon]\n",
            "[daemon]\nworker_threads = 1\n",
            1,
        );
        let daemon = Daemon::builder()
            .config(&config)
            .env("PROVD_TEST_KEY", TEST_KEY)
            .env("PROVD_LOG", "info,provd::provider::http=debug")
            .start();
        let client = daemon.client().await;
        for n in 1..=20 {
            let (chunks, done) = generation_chunks(&client, GenerateRequest::prompt("q")).await;
            done.unwrap_or_else(|e| panic!("{}: {e}", api.kind));
            assert_eq!(texts(&chunks), "Hello");
            // The body's rest is read after the terminal reply: wait for it before the
            // next request, then make a round trip through the daemon, which it reads
            // only after the pool's task (see above) has run.
            daemon.wait_for_log(&format!("streamed body #{n} read to its end"));
            client.ping().await.expect("ping");
        }
        assert_eq!(upstream.connections(), 1, "{}", api.kind);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chunks_and_done_name_the_model_the_upstream_says_answered_for_every_provider_type() {
    for api in every_api() {
        let body = (api.stream)(ANSWERING, &["Hel", "lo"]);
        let content_type = api.content_type;
        let upstream =
            Upstream::start(move |_| Reply::stream(content_type, split_every(&body, 5))).await;
        let daemon = api.daemon(&upstream.base_url, &[]);
        let client = daemon.client().await;
        let (chunks, done) = generation_chunks(&client, GenerateRequest::prompt("q")).await;
        let done = done.unwrap_or_else(|e| panic!("{}: {e}", api.kind));
        assert!(!chunks.is_empty());
        for chunk in &chunks {
            assert_eq!(chunk.model, ANSWERING, "{}", api.kind);
        }
        assert_eq!(
            (done.provider.as_str(), done.model.as_str()),
            ("p", ANSWERING),
            "{}",
            api.kind
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streaming_request_answered_with_one_whole_json_answer_succeeds_for_every_provider_type()
{
    for api in every_api() {
        let whole = (api.whole)(ANSWERING, "Hello");
        let upstream = Upstream::start(move |_| Reply::json(200, &whole)).await;
        let daemon = api.daemon(&upstream.base_url, &[]);
        let client = daemon.client().await;
        let (chunks, done) = generation_chunks(&client, GenerateRequest::prompt("q")).await;
        let done = done.unwrap_or_else(|e| panic!("{}: {e}", api.kind));
        assert_eq!(texts(&chunks), "Hello", "{}", api.kind);
        assert_eq!(done.usage, Usage::new(5, 2), "{}", api.kind);
        assert_eq!(done.model, ANSWERING, "{}", api.kind);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streaming_request_answered_with_something_else_fails_once_saying_what_arrived() {
    for api in every_api() {
        let served = AtomicUsize::new(0);
        let upstream = Upstream::start(move |_| match served.fetch_add(1, Ordering::SeqCst) % 2 {
            0 => Reply::json(
                200,
                &json!({"status": "queued", "note": "line one\nline two"}),
            ),
            _ => Reply::text(
                200,
                "text/html; charset=utf-8",
                "<html>\n<body>Gateway login</body>\n</html>\n",
            ),
        })
        .await;
        let daemon = Daemon::for_provider(api.kind, &upstream.base_url, 3, "");
        let client = daemon.client().await;
        for (arrived, excerpt) in [
            ("application/json", "\"status\":\"queued\""),
            ("text/html", "Gateway login"),
        ] {
            let before = upstream.requests().len();
            let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
            let kind = api.kind;
            assert_eq!(err.code, ErrorCode::UpstreamError, "{kind}: {err}");
            assert!(!err.retryable, "{kind}: {err}");
            assert!(err.message.contains(arrived), "{kind}: {err}");
            assert!(err.message.contains(excerpt), "{kind}: {err}");
            assert!(!err.message.contains('\n'), "{kind}: {err}");
            assert_eq!(
                upstream.requests().len(),
                before + 1,
                "{kind}: not retried although retry_attempts = 3"
            );
        }
    }
}
