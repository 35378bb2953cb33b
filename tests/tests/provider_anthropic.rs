//! The `anthropic` provider against a faithful mock of the Messages API: request shape,
//! streaming at odd byte boundaries, thinking and tool-use blocks kept from a request that
//! did not ask for them, image blocks, usage parity
//! with the non-streamed API, every error mapping and retry hint, stream faults, cancel
//! reaching the upstream, the paginated models list.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use provd_client::{ErrorCode, FinishReason, GenerateRequest, Message, Role, Usage};
use provd_tests::apis::{
    anthropic, assert_streamed_matches_whole, cancel_after_the_first_chunk,
    cancel_before_the_first_byte, provider_config, real_service, TEST_KEY,
};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::upstream::{Part, Reply, Seen, Upstream};
use provd_tests::{generation_outcome, Daemon};
use serde_json::json;

const MODEL: &str = "test-model";

fn daemon_for(upstream: &Upstream, retries: u32, extra: &str) -> Daemon {
    Daemon::for_provider("anthropic", &upstream.base_url, retries, extra)
}

fn full_request() -> GenerateRequest {
    let mut r = provd_tests::apis::full_request(&[("top_k", json!(40))]);
    // A second user turn in a row, which Anthropic's API merges into one turn.
    r.messages.push(Message::text(Role::User, "one more thing"));
    r
}

#[tokio::test]
async fn streams_a_documented_answer_split_at_odd_bytes_and_sends_the_documented_request() {
    let pieces = ["Hé", "llo", " wörld ✓ 😀"];
    let sse = anthropic::stream_text(MODEL, &pieces, "end_turn", (12, 3));
    let served = AtomicUsize::new(0);
    // The first answer arrives 7 bytes at a time, the second one byte at a time: both
    // cut events, JSON and UTF-8 characters in two.
    let upstream = Upstream::start(move |_| {
        let step = [7, 1][served.fetch_add(1, Ordering::SeqCst) % 2];
        anthropic::stream_reply(&sse, step)
    })
    .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    for round in 0..2 {
        let (texts, done) = generation_outcome(&client, full_request()).await;
        let done = done.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(texts, pieces, "round {round}");
        assert_eq!(
            done.usage,
            Usage::new(12, 3),
            "input from message_start, output from message_delta"
        );
        assert_eq!(done.finish_reason, FinishReason::Stop);
        assert_eq!((done.provider.as_str(), done.model.as_str()), ("p", MODEL));
    }

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path()), ("POST", "/v1/messages"));
    assert_eq!(r.header("x-api-key"), Some(TEST_KEY));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("anthropic-beta"), None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.header("authorization"),
        None,
        "the key goes in x-api-key only"
    );
    assert_eq!(
        r.json(),
        json!({
            "model": MODEL,
            "system": "be brief",
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"},
                // Consecutive user turns become one turn of text blocks.
                {"role": "user", "content": [
                    {"type": "text", "text": "one more thing"},
                    {"type": "text", "text": "and now?"},
                ]},
            ],
            "max_tokens": 77,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "top_k": 40,
            "stream": true,
        })
    );
}

#[tokio::test]
async fn without_tools_or_shown_reasoning_only_the_text_of_a_thinking_tool_use_answer_streams() {
    let mut sse = anthropic::message_start(MODEL, 30);
    sse.push_str(&anthropic::thinking_block(
        0,
        &["The user wants", " the weather."],
    ));
    sse.push_str(&anthropic::redacted_thinking_block(1));
    sse.push_str(&anthropic::text_block(2, &["Let me ", "check."]));
    sse.push_str(&anthropic::ping());
    sse.push_str(&anthropic::tool_use_block(
        3,
        "get_weather",
        &["{\"location\": \"San Fra", "ncisco\"}"],
    ));
    sse.push_str(&anthropic::message_delta("tool_use", 89));
    sse.push_str(&anthropic::message_stop());
    let upstream = Upstream::start(move |_| anthropic::stream_reply(&sse, 11)).await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let (texts, done) = generation_outcome(&client, GenerateRequest::prompt("weather?")).await;
    let done = done.unwrap();
    assert_eq!(texts, ["Let me ", "check."]);
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(done.usage, Usage::new(30, 89));
    assert_eq!(done.chunks, 2);
    assert!(done.tool_calls.is_empty(), "the request gave no tools");
    // The signed thinking is kept all the same, for a next turn to send back.
    assert_eq!(
        done.provider_state.unwrap()["state"]["thinking"][0]["signature"],
        anthropic::SIGNATURE
    );
}

#[tokio::test]
async fn images_are_sent_as_base64_and_url_blocks_after_the_text() {
    let upstream =
        Upstream::start(|_| anthropic::message_reply(MODEL, "Two cats.", "end_turn", (1600, 3)))
            .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let request = GenerateRequest {
        messages: vec![Message {
            images: vec![
                provd_client::Image::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBORw0KGgo=".into(),
                },
                provd_client::Image::Url {
                    url: "https://upload.wikimedia.org/cat.jpg".into(),
                },
            ],
            ..Message::text(Role::User, "What is in these pictures?")
        }],
        stream: false,
        ..GenerateRequest::default()
    };
    let (text, _) = provd_tests::generation_text(&client, request).await;
    assert_eq!(text, "Two cats.");
    assert_eq!(
        upstream.requests()[0].json()["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "What is in these pictures?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/cat.jpg"}},
        ]}])
    );
}

#[tokio::test]
async fn json_object_is_refused_by_name_and_never_reaches_the_upstream() {
    let upstream =
        Upstream::start(|_| anthropic::message_reply(MODEL, "{}", "end_turn", (1, 1))).await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let mut request = GenerateRequest::prompt("JSON please");
    request.response_format = Some(provd_client::ResponseFormat::JsonObject);
    let e = provd_tests::generation_error(&client, request).await;
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(
        e.message
            .contains("does not support response_format json_object"),
        "{e}"
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn usage_and_text_are_the_same_streamed_or_not() {
    let upstream = Upstream::start(|r| {
        if r.json()["stream"] == true {
            anthropic::stream_reply(
                &anthropic::stream_text(MODEL, &["The answer", " is 42."], "max_tokens", (20, 5)),
                13,
            )
        } else {
            anthropic::message_reply(MODEL, "The answer is 42.", "max_tokens", (20, 5))
        }
    })
    .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let (whole_text, whole) = assert_streamed_matches_whole(&client).await;
    assert_eq!(whole_text, "The answer is 42.");
    assert_eq!(whole.usage, Usage::new(20, 5));
    assert_eq!(whole.finish_reason, FinishReason::Length);
    assert_eq!(upstream.requests()[1].json()["stream"], false);
}

#[tokio::test]
async fn configured_api_version_and_betas_are_sent() {
    let upstream =
        Upstream::start(|_| anthropic::message_reply(MODEL, "ok", "end_turn", (1, 1))).await;
    let daemon = daemon_for(
        &upstream,
        0,
        "max_tokens = 99\n[providers.p.options]\nanthropic_version = \"2023-01-01\"\n\
         anthropic_beta = [\"prompt-caching-2024-07-31\", \"output-128k-2025-02-19\"]",
    );
    let client = daemon.client().await;
    let mut req = GenerateRequest::prompt("q");
    req.stream = false;
    let (text, _) = provd_tests::generation_text(&client, req).await;
    assert_eq!(text, "ok");
    let r = &upstream.requests()[0];
    assert_eq!(r.header("anthropic-version"), Some("2023-01-01"));
    assert_eq!(
        r.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31,output-128k-2025-02-19")
    );
    assert_eq!(
        r.json()["max_tokens"],
        99,
        "the config's max_tokens when the request has none"
    );
}

/// The retry-after a case expects, in ms: lowest and highest accepted (equal for an
/// exact hint; a range for a reset time, which the daemon measures from its own now).
type RetryAfterMs = (u64, u64);

#[tokio::test]
async fn http_errors_map_to_system_codes_with_the_upstream_message_and_never_the_key() {
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let cases: Vec<(Reply, ErrorCode, bool, Option<RetryAfterMs>)> = vec![
        (
            anthropic::error(400, "invalid_request_error", "max_tokens: Field required"),
            ErrorCode::InvalidRequest,
            false,
            None,
        ),
        (
            anthropic::error(
                401,
                "authentication_error",
                &format!("invalid x-api-key {TEST_KEY}"),
            ),
            ErrorCode::Unauthenticated,
            false,
            None,
        ),
        (
            anthropic::error(
                403,
                "permission_error",
                "Your API key does not have permission",
            ),
            ErrorCode::PermissionDenied,
            false,
            None,
        ),
        (
            anthropic::error(404, "not_found_error", "model: claude-nope"),
            ErrorCode::NotFound,
            false,
            None,
        ),
        (
            anthropic::error(413, "request_too_large", "Request exceeds the maximum size"),
            ErrorCode::InvalidRequest,
            false,
            None,
        ),
        (
            anthropic::error(
                429,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit",
            )
            .header("retry-after", "17"),
            ErrorCode::RateLimited,
            true,
            Some((17_000, 17_000)),
        ),
        (
            // No retry-after: the exhausted limit's reset time is the hint; the limits
            // with room left (resetting now) do not shorten it.
            anthropic::rate_limited(
                anthropic::error(429, "rate_limit_error", "input tokens per minute exceeded"),
                "input-tokens",
                in_an_hour,
            ),
            ErrorCode::RateLimited,
            true,
            Some((3_000_000, 3_600_000)),
        ),
        (
            anthropic::error(500, "api_error", "Internal server error"),
            ErrorCode::UpstreamError,
            true,
            None,
        ),
        (
            anthropic::error(504, "timeout_error", "Request timeout"),
            ErrorCode::UpstreamError,
            true,
            None,
        ),
        (
            // Overload is about capacity: the rate-limit headers (all with room) are
            // no hint.
            anthropic::rate_limited(
                anthropic::error(529, "overloaded_error", "Overloaded"),
                "none",
                SystemTime::now(),
            ),
            ErrorCode::Overloaded,
            true,
            None,
        ),
        (
            anthropic::error(529, "overloaded_error", "Overloaded").header("retry-after", "2"),
            ErrorCode::Overloaded,
            true,
            Some((2_000, 2_000)),
        ),
        (
            Reply::json(502, &json!("<html>bad gateway</html>")),
            ErrorCode::UpstreamError,
            true,
            None,
        ),
    ];
    let current: Arc<Mutex<Option<Reply>>> = Arc::default();
    let serving = current.clone();
    let upstream =
        Upstream::start(move |_| serving.lock().unwrap().clone().expect("a case is set")).await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    for (reply, code, retryable, retry_after_ms) in cases {
        let status = reply.status;
        let body = String::from_utf8(match &reply.body[0] {
            Part::Bytes(b) => b.clone(),
            _ => unreachable!(),
        })
        .unwrap();
        *current.lock().unwrap() = Some(reply);
        let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
        let err = result.expect_err("an error status fails the generation");
        assert!(texts.is_empty());
        assert_eq!(err.code, code, "HTTP {status}: {err}");
        assert_eq!(err.retryable, retryable, "HTTP {status}");
        match (err.retry_after_ms, retry_after_ms) {
            (None, None) => {}
            (Some(got), Some((low, high))) => assert!(
                (low..=high).contains(&got),
                "HTTP {status}: retry-after {got} ms not in {low}..={high}"
            ),
            (got, want) => panic!("HTTP {status}: retry-after {got:?}, wanted {want:?}"),
        }
        assert!(
            err.message.contains(&format!("HTTP {status}")),
            "{}",
            err.message
        );
        // The upstream's own words, its error type and request id are kept.
        let upstream_message: serde_json::Value = serde_json::from_str(&body).unwrap();
        if let Some(kind) = upstream_message
            .pointer("/error/type")
            .and_then(|t| t.as_str())
        {
            assert!(err.message.contains(kind), "{}", err.message);
            assert!(
                err.message.contains(anthropic::REQUEST_ID),
                "{}",
                err.message
            );
            let words = upstream_message["error"]["message"].as_str().unwrap();
            let words = words.replace(TEST_KEY, "[REDACTED]");
            assert!(
                err.message.contains(&words),
                "{} lacks {words}",
                err.message
            );
        }
        assert!(
            !err.message.contains(TEST_KEY),
            "the key leaked into: {}",
            err.message
        );
        assert_eq!(err.chunks, Some(0));
    }
    assert!(
        !daemon.log().contains(TEST_KEY),
        "the key leaked into the log"
    );
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_with_an_error_after_the_chunks_sent() {
    let mut start = anthropic::message_start(MODEL, 15);
    start.push_str(&anthropic::text_delta(0, "partial"));
    let parts = vec![
        Part::Bytes(start.into_bytes()),
        anthropic::error_event("overloaded_error", "Overloaded"),
    ];
    let upstream = Upstream::start(move |_| anthropic::stream_parts(parts.clone())).await;
    let daemon = daemon_for(&upstream, 3, "");
    let client = daemon.client().await;
    let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(texts, ["partial"]);
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::Overloaded, "{err}");
    assert!(
        err.message.contains("overloaded_error: Overloaded"),
        "{}",
        err.message
    );
    assert_eq!(err.chunks, Some(1));
    assert_eq!(err.usage.map(|u| u.prompt_tokens), Some(15));
    assert_eq!(
        upstream.requests().len(),
        1,
        "no retry once a chunk reached the client"
    );
}

#[tokio::test]
async fn an_overloaded_error_event_before_any_text_is_retried() {
    let served = AtomicUsize::new(0);
    let upstream = Upstream::start(move |_| {
        if served.fetch_add(1, Ordering::SeqCst) == 0 {
            anthropic::stream_parts(vec![
                Part::Bytes(anthropic::message_start(MODEL, 9).into_bytes()),
                anthropic::error_event("overloaded_error", "Overloaded"),
            ])
        } else {
            anthropic::stream_reply(
                &anthropic::stream_text(MODEL, &["ok"], "end_turn", (9, 1)),
                64,
            )
        }
    })
    .await;
    let daemon = daemon_for(&upstream, 1, "");
    let client = daemon.client().await;
    let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(texts, ["ok"]);
    assert_eq!(result.unwrap().usage, Usage::new(9, 1));
    assert_eq!(upstream.requests().len(), 2);
}

#[tokio::test]
async fn a_truncated_or_reset_stream_is_an_error_never_a_silent_success() {
    for ending in [None, Some(Part::Reset), Some(Part::Close)] {
        let mut sse = anthropic::message_start(MODEL, 12);
        sse.push_str(&anthropic::text_delta(0, "cut"));
        if ending.is_none() {
            // Everything but message_stop, and the body ends cleanly.
            sse.push_str(&anthropic::block_stop(0));
            sse.push_str(&anthropic::message_delta("end_turn", 5));
        }
        let mut parts = vec![Part::Bytes(sse.into_bytes())];
        parts.extend(ending.clone());
        let upstream = Upstream::start(move |_| anthropic::stream_parts(parts.clone())).await;
        let daemon = daemon_for(&upstream, 0, "");
        let client = daemon.client().await;
        let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
        let error = match result {
            Ok(d) => panic!("{ending:?}: a cut stream succeeded: {d:?}"),
            Err(e) => e,
        };
        assert_eq!(texts, ["cut"], "{ending:?}");
        assert_eq!(error.code, ErrorCode::UpstreamError, "{ending:?}: {error}");
        assert_eq!(error.chunks, Some(1));
        let usage = error.usage.expect("the usage known so far");
        assert_eq!(usage.prompt_tokens, 12, "{ending:?}");
        if ending.is_none() {
            assert!(error.message.contains("message_stop"), "{}", error.message);
            assert_eq!(usage, Usage::new(12, 5));
        }
    }
}

#[tokio::test]
async fn cancel_closes_the_upstream_connection_while_streaming_and_while_waiting_for_headers() {
    // Streaming: message_start, one text delta, then the upstream goes quiet.
    let mut first = anthropic::message_start(MODEL, 42);
    first.push_str(&anthropic::text_delta(0, "thinking…"));
    let upstream = Upstream::start(move |_| {
        anthropic::stream_parts(vec![Part::Bytes(first.clone().into_bytes()), Part::Stall])
    })
    .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let (first, err) = cancel_after_the_first_chunk(&client, &upstream).await;
    assert_eq!(first.text, "thinking…");
    assert_eq!(
        err.usage.map(|u| u.prompt_tokens),
        Some(42),
        "the input tokens of message_start survive the cancel"
    );

    // Waiting for the first byte: the response is held back entirely.
    let hold = Arc::new(tokio::sync::Notify::new());
    let held = hold.clone();
    let upstream = Upstream::start(move |_| {
        anthropic::stream_reply(&anthropic::message_stop(), 100)
            .after(vec![Part::Wait(held.clone())])
    })
    .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    cancel_before_the_first_byte(&client, &upstream).await;
}

// Multi-threaded: the raw client blocks its thread, and the mock upstream must keep
// serving on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_closes_the_upstream_connection() {
    let mut first = anthropic::message_start(MODEL, 5);
    first.push_str(&anthropic::text_delta(0, "x"));
    let upstream = Upstream::start(move |_| {
        anthropic::stream_parts(vec![Part::Bytes(first.clone().into_bytes()), Part::Stall])
    })
    .await;
    let daemon = daemon_for(&upstream, 0, "");
    {
        let mut raw = RawConn::greeted(&daemon.socket);
        raw.request(1, "generate", &GenerateRequest::prompt("q"));
        assert!(matches!(raw.read_frame(), Some(Frame::Notification(m, _)) if m == "chunk"));
    } // the client's socket closes here, with the generation running
    upstream.wait_for(Seen::ClientClosedEarly(0)).await;
}

#[tokio::test]
async fn list_models_follows_every_page() {
    let upstream = Upstream::start(|r| {
        if r.path() != "/v1/models" {
            return anthropic::error(404, "not_found_error", "no such path");
        }
        if r.target.contains("after_id=claude-sonnet-4-5-20250929") {
            anthropic::models_page(
                &[(
                    "claude-3-haiku-20240307",
                    "Claude Haiku 3",
                    "2024-03-07T00:00:00Z",
                )],
                false,
            )
        } else {
            anthropic::models_page(
                &[
                    (
                        "claude-opus-4-1-20250805",
                        "Claude Opus 4.1",
                        "2025-08-05T00:00:00Z",
                    ),
                    (
                        "claude-sonnet-4-5-20250929",
                        "Claude Sonnet 4.5",
                        "2025-09-29T00:00:00Z",
                    ),
                ],
                true,
            )
        }
    })
    .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let models = client.list_models(Some("p")).await.unwrap().models;
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "claude-opus-4-1-20250805",
            "claude-sonnet-4-5-20250929",
            "claude-3-haiku-20240307"
        ]
    );
    assert_eq!(models[0].provider, "p");
    assert_eq!(models[0].display_name.as_deref(), Some("Claude Opus 4.1"));
    assert_eq!(models[0].created_at, Some(1_754_352_000));
    assert_eq!(models[2].created_at, Some(1_709_769_600));

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].target, "/v1/models?limit=1000");
    assert_eq!(
        requests[1].target,
        "/v1/models?limit=1000&after_id=claude-sonnet-4-5-20250929"
    );
    for r in &requests {
        assert_eq!(r.header("x-api-key"), Some(TEST_KEY));
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    }
}

#[tokio::test]
async fn a_missing_key_is_unauthenticated_and_names_the_variable() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    // The configured variable (PROVD_TEST_KEY) is not set for this daemon.
    let daemon = Daemon::builder()
        .config(&provider_config("anthropic", &upstream.base_url, 0, ""))
        .start();
    let client = daemon.client().await;
    let (_, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.message.contains("PROVD_TEST_KEY"), "{err}");

    // No api_key_env: the type's default, ANTHROPIC_API_KEY (set empty, which is unset,
    // whatever the developer's own environment holds).
    let daemon = Daemon::builder()
        .config(&format!(
            "[providers.p]\ntype = \"anthropic\"\nbase_url = \"{}\"\ndefault_model = \"{MODEL}\"\n",
            upstream.base_url
        ))
        .env("ANTHROPIC_API_KEY", "")
        .start();
    let client = daemon.client().await;
    let (_, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.message.contains("ANTHROPIC_API_KEY"), "{err}");
    let err = client.list_models(Some("p")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn additional_params_may_not_override_what_provd_sets_or_contradict_the_request() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    for key in ["model", "stream", "messages", "max_tokens"] {
        let mut req = GenerateRequest::prompt("q");
        req.additional_params.insert(key.into(), json!("x"));
        let (_, result) = generation_outcome(&client, req).await;
        let err = result.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(
            err.message
                .contains(&format!("additional_params.{key} is set by provd")),
            "{err}"
        );
    }
    let mut req = GenerateRequest::prompt("q");
    req.system = Some("be brief".into());
    req.additional_params
        .insert("system".into(), json!([{"type": "text", "text": "other"}]));
    let (_, result) = generation_outcome(&client, req).await;
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert!(
        err.message
            .contains("conflicts with the request's own system"),
        "{err}"
    );
    assert!(upstream.requests().is_empty());
}

/// The real service, when a key is in the environment.
#[tokio::test]
async fn real_anthropic_streams_a_short_answer() {
    let model =
        std::env::var("ANTHROPIC_TEST_MODEL").unwrap_or_else(|_| "claude-haiku-4-5".to_owned());
    let config =
        format!("[providers.anthropic]\ntype = \"anthropic\"\ndefault_model = \"{model}\"\n");
    let Some(daemon) = real_service("Anthropic", "ANTHROPIC_API_KEY", &config) else {
        return;
    };
    let client = daemon.client().await;
    let mut req = GenerateRequest::prompt("Reply with the single word: pong");
    req.max_tokens = Some(10);
    let (text, done) = provd_tests::generation_text(&client, req).await;
    assert!(!text.is_empty());
    assert!(done.usage.prompt_tokens > 0 && done.usage.completion_tokens > 0);
    let models = client.list_models(Some("anthropic")).await.unwrap().models;
    assert!(!models.is_empty());
    assert!(models.iter().all(|m| m.display_name.is_some()));
}
