//! The `openai` and `openai-compatible` providers against a faithful mock of the OpenAI
//! API: request shape, streaming at odd byte boundaries, usage parity with the
//! non-streamed API, every error mapping, stream faults, cancel reaching the upstream.

use provd_client::{ErrorCode, FinishReason, GenerateEvent, GenerateRequest, Usage};
use provd_tests::apis::{
    assert_overrides_refused, assert_streamed_matches_whole, cancel_after_the_first_chunk,
    cancel_before_the_first_byte, openai, provider_config, real_service, TEST_KEY,
};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::upstream::{Part, Reply, Seen, Upstream};
use provd_tests::Daemon;
use serde_json::json;
use std::sync::Arc;

const MODEL: &str = "test-model";

fn daemon_for(upstream: &Upstream, kind: &str, retries: u32, extra: &str) -> Daemon {
    Daemon::for_provider(kind, &format!("{}/v1", upstream.base_url), retries, extra)
}

fn full_request() -> GenerateRequest {
    provd_tests::apis::full_request(&[("seed", json!(42))])
}

#[tokio::test]
async fn streams_a_documented_answer_split_at_odd_bytes_and_sends_the_documented_request() {
    let sse = openai::stream_text(MODEL, &["Hé", "llo", " wörld ✓"], "stop", (12, 3));
    let upstream = Upstream::start(move |_| openai::stream_reply(&sse, 7)).await;
    let daemon = daemon_for(
        &upstream,
        "openai",
        0,
        "organization = \"org-1\"\nproject = \"proj-1\"",
    );
    let client = daemon.client().await;
    let mut generation = client.generate(full_request()).await.unwrap();
    let mut texts = Vec::new();
    let done = loop {
        match generation.next().await.unwrap().unwrap() {
            GenerateEvent::Chunk(c) => texts.push(c.text),
            GenerateEvent::Done(d) => break d,
        }
    };
    assert_eq!(texts, ["Hé", "llo", " wörld ✓"]);
    assert_eq!(done.usage, Usage::new(12, 3));
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!((done.provider.as_str(), done.model.as_str()), ("p", MODEL));

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(
        (r.method.as_str(), r.path()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TEST_KEY}").as_str())
    );
    assert_eq!(r.header("openai-organization"), Some("org-1"));
    assert_eq!(r.header("openai-project"), Some("proj-1"));
    assert_eq!(
        r.json(),
        json!({
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "and now?"},
            ],
            "max_completion_tokens": 77,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": ["END"],
            "seed": 42,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    );
}

#[tokio::test]
async fn usage_and_text_are_the_same_streamed_or_not() {
    let upstream = Upstream::start(|r| {
        if r.json()["stream"] == true {
            openai::stream_reply(
                &openai::stream_text(MODEL, &["The answer", " is 42."], "length", (20, 5)),
                13,
            )
        } else {
            Reply::json(
                200,
                &openai::completion(MODEL, "The answer is 42.", "length", (20, 5)),
            )
        }
    })
    .await;
    let daemon = daemon_for(&upstream, "openai", 0, "");
    let client = daemon.client().await;
    let (whole_text, whole) = assert_streamed_matches_whole(&client).await;
    assert_eq!(whole_text, "The answer is 42.");
    assert_eq!(whole.finish_reason, FinishReason::Length);
    assert_eq!(
        upstream.requests()[1].json().get("stream_options"),
        None,
        "no stream_options without stream"
    );
}

#[tokio::test]
async fn http_errors_map_to_system_codes_with_the_upstream_message_and_never_the_key() {
    let cases: Vec<(Reply, ErrorCode, bool, Option<u64>)> = vec![
        (
            openai::error(400, "bad temperature", "invalid_request_error", None),
            ErrorCode::InvalidRequest,
            false,
            None,
        ),
        (
            openai::error(
                401,
                &format!("Incorrect API key provided: {TEST_KEY}"),
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            ErrorCode::Unauthenticated,
            false,
            None,
        ),
        (
            openai::error(403, "region not supported", "invalid_request_error", None),
            ErrorCode::PermissionDenied,
            false,
            None,
        ),
        (
            openai::error(
                404,
                "The model `x` does not exist",
                "invalid_request_error",
                Some("model_not_found"),
            ),
            ErrorCode::NotFound,
            false,
            None,
        ),
        (
            openai::error(
                429,
                "Rate limit reached",
                "requests",
                Some("rate_limit_exceeded"),
            )
            .header("retry-after-ms", "1500"),
            ErrorCode::RateLimited,
            true,
            Some(1500),
        ),
        (
            openai::error(429, "Rate limit reached", "tokens", None)
                .header("x-ratelimit-reset-tokens", "6m0s"),
            ErrorCode::RateLimited,
            true,
            Some(360_000),
        ),
        // Quota and spend limits share 429 with rate limits, but no wait lifts them.
        (
            openai::error(
                429,
                "You exceeded your current quota, please check your plan and billing details.",
                "insufficient_quota",
                Some("insufficient_quota"),
            ),
            ErrorCode::PermissionDenied,
            false,
            None,
        ),
        (
            openai::error(
                429,
                "Your project reached its monthly spend limit.",
                "insufficient_quota",
                Some("project_spend_limit_exceeded"),
            )
            .header("retry-after", "30"),
            ErrorCode::PermissionDenied,
            false,
            None,
        ),
        (
            openai::error(500, "The server had an error", "server_error", None),
            ErrorCode::UpstreamError,
            true,
            None,
        ),
        (
            openai::error(
                503,
                "The engine is currently overloaded",
                "server_error",
                None,
            ),
            ErrorCode::Unavailable,
            true,
            None,
        ),
        (
            Reply::json(502, &json!("<html>bad gateway</html>")),
            ErrorCode::UpstreamError,
            true,
            None,
        ),
    ];
    for (reply, code, retryable, retry_after_ms) in cases {
        let status = reply.status;
        let upstream = Upstream::start(move |_| reply.clone()).await;
        let daemon = daemon_for(&upstream, "openai", 0, "");
        let client = daemon.client().await;
        let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
        assert_eq!(err.code, code, "HTTP {status}: {err}");
        assert_eq!(err.retryable, retryable, "HTTP {status}");
        assert_eq!(err.retry_after_ms, retry_after_ms, "HTTP {status}");
        assert!(
            err.message.contains(&format!("HTTP {status}")),
            "{}",
            err.message
        );
        assert!(
            !err.message.contains(TEST_KEY),
            "the key leaked into: {}",
            err.message
        );
        assert!(
            !daemon.log().contains(TEST_KEY),
            "the key leaked into the log"
        );
        assert_eq!(err.chunks, Some(0));
    }
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_with_an_error_after_the_chunks_sent() {
    let mut parts = vec![Part::Bytes(
        openai::chunk_event(MODEL, json!({"content": "partial"}), None).into_bytes(),
    )];
    parts.push(openai::error_event(
        "The server had an error while processing",
        "server_error",
    ));
    let upstream =
        Upstream::start(move |_| Reply::stream("text/event-stream", parts.clone())).await;
    let daemon = daemon_for(&upstream, "openai", 3, "");
    let client = daemon.client().await;
    let mut generation = client.generate(GenerateRequest::prompt("q")).await.unwrap();
    assert!(
        matches!(generation.next().await, Some(Ok(GenerateEvent::Chunk(c))) if c.text == "partial")
    );
    let err = generation.next().await.unwrap().unwrap_err().to_wire();
    assert_eq!(err.code, ErrorCode::UpstreamError);
    assert!(err.message.contains("while processing"), "{}", err.message);
    assert_eq!(err.chunks, Some(1));
    assert_eq!(
        upstream.requests().len(),
        1,
        "no retry once a chunk reached the client"
    );
}

#[tokio::test]
async fn a_truncated_or_reset_stream_is_an_error_never_a_silent_success() {
    for ending in [None, Some(Part::Reset), Some(Part::Close)] {
        let mut parts = vec![Part::Bytes(
            openai::chunk_event(MODEL, json!({"content": "cut"}), None).into_bytes(),
        )];
        parts.extend(ending.clone());
        let upstream =
            Upstream::start(move |_| Reply::stream("text/event-stream", parts.clone())).await;
        let daemon = daemon_for(&upstream, "openai", 0, "");
        let client = daemon.client().await;
        let (mut text, mut error) = (String::new(), None);
        let mut generation = client.generate(GenerateRequest::prompt("q")).await.unwrap();
        while let Some(event) = generation.next().await {
            match event {
                Ok(GenerateEvent::Chunk(c)) => text.push_str(&c.text),
                Ok(GenerateEvent::Done(d)) => panic!("{ending:?}: a cut stream succeeded: {d:?}"),
                Err(e) => error = Some(e.to_wire()),
            }
        }
        let error = error.expect("an error");
        assert_eq!(text, "cut");
        assert_eq!(error.code, ErrorCode::UpstreamError, "{ending:?}: {error}");
        assert_eq!(error.chunks, Some(1));
    }
}

#[tokio::test]
async fn cancel_closes_the_upstream_connection_while_streaming_and_while_waiting_for_headers() {
    // Streaming: one chunk, then the upstream goes quiet.
    let first = openai::chunk_event(MODEL, json!({"content": "thinking…"}), None);
    let upstream = Upstream::start(move |_| {
        Reply::stream(
            "text/event-stream",
            vec![Part::Bytes(first.clone().into_bytes()), Part::Stall],
        )
    })
    .await;
    let daemon = daemon_for(&upstream, "openai", 0, "");
    let client = daemon.client().await;
    cancel_after_the_first_chunk(&client, &upstream).await;

    // Waiting for the first byte: the response is held back entirely.
    let hold = Arc::new(tokio::sync::Notify::new());
    let held = hold.clone();
    let upstream = Upstream::start(move |_| {
        openai::stream_reply("data: [DONE]\n\n", 100).after(vec![Part::Wait(held.clone())])
    })
    .await;
    let daemon = daemon_for(&upstream, "openai", 0, "");
    let client = daemon.client().await;
    cancel_before_the_first_byte(&client, &upstream).await;
}

// Multi-threaded: the raw client blocks its thread, and the mock upstream must keep
// serving on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_closes_the_upstream_connection() {
    let first = openai::chunk_event(MODEL, json!({"content": "x"}), None);
    let upstream = Upstream::start(move |_| {
        Reply::stream(
            "text/event-stream",
            vec![Part::Bytes(first.clone().into_bytes()), Part::Stall],
        )
    })
    .await;
    let daemon = daemon_for(&upstream, "openai", 0, "");
    {
        let mut raw = RawConn::greeted(&daemon.socket);
        raw.request(1, "generate", &GenerateRequest::prompt("q"));
        assert!(matches!(raw.read_frame(), Some(Frame::Notification(m, _)) if m == "chunk"));
    } // the client's socket closes here, with the generation running
    upstream.wait_for(Seen::ClientClosedEarly(0)).await;
}

#[tokio::test]
async fn list_models_maps_the_models_endpoint() {
    let upstream = Upstream::start(|r| match r.path() {
        "/v1/models" => openai::models(&["gpt-4o", "gpt-4o-mini"]),
        _ => Reply::json(404, &json!({})),
    })
    .await;
    let daemon = daemon_for(&upstream, "openai", 0, "");
    let client = daemon.client().await;
    let models = client.list_models(Some("p")).await.unwrap().models;
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["gpt-4o", "gpt-4o-mini"]);
    assert_eq!(models[0].provider, "p");
    assert_eq!(models[0].created_at, Some(1_686_935_002));
    assert_eq!(
        upstream.requests()[0].header("authorization"),
        Some(format!("Bearer {TEST_KEY}").as_str())
    );
}

#[tokio::test]
async fn openai_compatible_servers_get_max_tokens_and_need_no_key() {
    let upstream = Upstream::start(|_| {
        openai::stream_reply(&openai::stream_text(MODEL, &["ok"], "stop", (1, 1)), 5)
    })
    .await;
    // No PROVD_TEST_KEY in this daemon's environment.
    let daemon = Daemon::builder()
        .config(&provider_config(
            "openai-compatible",
            &format!("{}/v1", upstream.base_url),
            0,
            "",
        ))
        .start();
    let client = daemon.client().await;
    let (text, _) = provd_tests::generation_text(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(text, "ok");
    let r = &upstream.requests()[0];
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.json()["max_tokens"], 4096);
    assert_eq!(r.json().get("max_completion_tokens"), None);
}

#[tokio::test]
async fn a_missing_key_is_unauthenticated_and_names_the_variable() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    let daemon = Daemon::builder()
        .config(&provider_config(
            "openai",
            &format!("{}/v1", upstream.base_url),
            0,
            "",
        ))
        .start();
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.to_string().contains("PROVD_TEST_KEY"), "{err}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn additional_params_may_not_override_the_model_or_streaming() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    let daemon = daemon_for(&upstream, "openai", 0, "");
    let client = daemon.client().await;
    assert_overrides_refused(
        &client,
        &upstream,
        &[("model", json!("x")), ("stream", json!("x"))],
    )
    .await;
}

/// The real service, when a key is in the environment.
#[tokio::test]
async fn real_openai_streams_a_short_answer() {
    let config = "[providers.openai]\ntype = \"openai\"\ndefault_model = \"gpt-4o-mini\"\n";
    let Some(daemon) = real_service("OpenAI", "OPENAI_API_KEY", config) else {
        return;
    };
    let client = daemon.client().await;
    let mut req = GenerateRequest::prompt("Reply with the single word: pong");
    req.max_tokens = Some(10);
    let (text, done) = provd_tests::generation_text(&client, req).await;
    assert!(!text.is_empty());
    assert!(done.usage.prompt_tokens > 0 && done.usage.completion_tokens > 0);
}

/// A used-up quota is final: with retries configured, the upstream is asked once.
#[tokio::test]
async fn an_exhausted_quota_is_not_retried() {
    let upstream = Upstream::start(|_| {
        openai::error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            Some("insufficient_quota"),
        )
    })
    .await;
    let daemon = daemon_for(&upstream, "openai", 3, "");
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::PermissionDenied, "{err}");
    assert!(err.message.contains("exceeded your current quota"), "{err}");
    assert_eq!(upstream.requests().len(), 1);
}

/// A redirect is not followed (it would carry the request and its key somewhere the
/// configuration does not name): the error says where base_url should point.
#[tokio::test]
async fn a_redirect_is_an_error_naming_the_new_place_and_is_not_followed() {
    let upstream = Upstream::start(|r| match r.path() {
        "/v1/chat/completions" => {
            Reply::json(307, &json!({"moved": true})).header("location", "/v2/chat/completions")
        }
        _ => openai::stream_reply(&openai::stream_text(MODEL, &["x"], "stop", (1, 1)), 64),
    })
    .await;
    let daemon = daemon_for(&upstream, "openai", 2, "");
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{err}");
    assert!(
        err.message
            .contains("HTTP 307 (a redirect to /v2/chat/completions: point base_url there)"),
        "{}",
        err.message
    );
    let paths: Vec<String> = upstream
        .requests()
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert_eq!(paths, ["/v1/chat/completions"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_prints_a_multi_line_upstream_message_on_one_line() {
    let upstream = Upstream::start(|_| {
        openai::error(
            400,
            "Invalid prompt:\n  line 2 is wrong\r\n\nsee the docs",
            "invalid_request_error",
            None,
        )
    })
    .await;
    let daemon = daemon_for(&upstream, "openai", 0, "");
    let socket = daemon.socket.clone();
    let (status, _, stderr) = tokio::task::spawn_blocking(move || {
        provd_tests::run_provd(&["generate", "hello"], &socket)
    })
    .await
    .unwrap();
    assert!(!status.success());
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("provd: error: ")
            && lines[0].ends_with("Invalid prompt: / line 2 is wrong / see the docs"),
        "{stderr}"
    );
}
