//! The `gemini` provider against a faithful mock of the Gemini API: request shape and
//! where the key goes, streaming at odd byte boundaries, thoughts and function calls
//! kept from a request that did not ask for them, images as inline data,
//! usage parity with the non-streamed API, every error mapping, stream faults, cancel
//! reaching the upstream, paginated model lists.

use provd_client::{ErrorCode, FinishReason, GenerateRequest, Usage};
use provd_tests::apis::{
    assert_overrides_refused, assert_streamed_matches_whole, cancel_after_the_first_chunk,
    cancel_before_the_first_byte, gemini, provider_config, real_service, TEST_KEY,
};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::upstream::{Part, Reply, Seen, Upstream};
use provd_tests::{drain_generation, Daemon};
use serde_json::json;
use std::sync::Arc;

const MODEL: &str = "test-model";
const STREAM_PATH: &str = "/v1beta/models/test-model:streamGenerateContent";

fn daemon_for(upstream: &Upstream, retries: u32, extra: &str) -> Daemon {
    Daemon::for_provider("gemini", &upstream.base_url, retries, extra)
}

fn full_request() -> GenerateRequest {
    provd_tests::apis::full_request(&[
        ("generationConfig", json!({"topK": 40})),
        (
            "safetySettings",
            json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}]),
        ),
    ])
}

#[tokio::test]
async fn streams_a_documented_answer_split_at_odd_bytes_and_sends_the_documented_request() {
    for step in [1, 7] {
        let sse = gemini::stream_text(MODEL, &["Hé", "llo", " wörld ✓😀"], "STOP", (12, 3, 5));
        let upstream = Upstream::start(move |_| gemini::stream_reply(&sse, step)).await;
        let daemon = daemon_for(&upstream, 0, "");
        let client = daemon.client().await;
        let mut generation = client.generate(full_request()).await.unwrap();
        let (texts, done) = drain_generation(&mut generation).await;
        let done = done.unwrap_or_else(|e| panic!("step {step}: {e}"));
        assert_eq!(texts, ["Hé", "llo", " wörld ✓😀"], "step {step}");
        assert_eq!(
            done.usage,
            Usage::new(12, 8).with_reasoning(Some(5)),
            "thoughts count as completion, and as reasoning"
        );
        assert_eq!(done.finish_reason, FinishReason::Stop);
        assert_eq!((done.provider.as_str(), done.model.as_str()), ("p", MODEL));

        let requests = upstream.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!((r.method.as_str(), r.path()), ("POST", STREAM_PATH));
        assert_eq!(r.target, format!("{STREAM_PATH}?alt=sse"));
        assert_eq!(r.header("x-goog-api-key"), Some(TEST_KEY));
        assert!(!r.target.contains(TEST_KEY), "the key is in the URL");
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "hello"}]},
                    {"role": "model", "parts": [{"text": "hi"}]},
                    {"role": "user", "parts": [{"text": "and now?"}]},
                ],
                "systemInstruction": {"parts": [{"text": "be brief"}]},
                "generationConfig": {
                    "maxOutputTokens": 77,
                    "temperature": 0.5,
                    "topP": 0.9,
                    "stopSequences": ["END"],
                    "topK": 40,
                },
                "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_ONLY_HIGH"}],
            })
        );
        assert!(!daemon.log().contains(TEST_KEY), "the key is in the log");
    }
}

#[tokio::test]
async fn without_tools_or_shown_reasoning_only_the_text_reaches_the_client_and_the_finish_says_tool_calls(
) {
    let mut sse = gemini::chunk(
        MODEL,
        json!([{"text": "The user wants the weather.", "thought": true}]),
        None,
        (20, 0, 30),
    );
    sse.push_str(&gemini::chunk(
        MODEL,
        json!([{"text": "Checking"}]),
        None,
        (20, 1, 30),
    ));
    sse.push_str(&gemini::chunk(
        MODEL,
        json!([
            {"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}}, "thoughtSignature": "c2lnbmF0dXJl"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
            {"text": " Tokyo."}
        ]),
        Some("STOP"),
        (20, 14, 30),
    ));
    let upstream = Upstream::start(move |_| gemini::stream_reply(&sse, 11)).await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let mut generation = client.generate(GenerateRequest::prompt("q")).await.unwrap();
    let (texts, done) = drain_generation(&mut generation).await;
    let done = done.unwrap();
    assert_eq!(texts, ["Checking", " Tokyo."]);
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(done.usage, Usage::new(20, 44).with_reasoning(Some(30)));
    assert!(done.tool_calls.is_empty(), "the request gave no tools");
    assert_eq!(done.reasoning, None);
    // The signature is kept all the same, for a next turn to send back.
    assert_eq!(
        done.provider_state,
        Some(
            json!({"type": "gemini", "state": {"thought_signatures": {"calls": ["c2lnbmF0dXJl"]}}})
        )
    );
}

#[tokio::test]
async fn base64_images_are_inline_data_and_a_url_is_refused_by_name() {
    let upstream =
        Upstream::start(|_| Reply::json(200, &gemini::whole(MODEL, "A cat.", "STOP", (260, 3, 0))))
            .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let mut request = GenerateRequest {
        messages: vec![provd_client::Message {
            images: vec![provd_client::Image::Base64 {
                media_type: "image/jpeg".into(),
                data: "/9j/4AAQSkZJRg==".into(),
            }],
            ..provd_client::Message::text(provd_client::Role::User, "What is this?")
        }],
        stream: false,
        ..GenerateRequest::default()
    };
    let (text, _) = provd_tests::generation_text(&client, request.clone()).await;
    assert_eq!(text, "A cat.");
    assert_eq!(
        upstream.requests()[0].json()["contents"],
        json!([{"role": "user", "parts": [
            {"text": "What is this?"},
            {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
        ]}])
    );
    request.messages[0].images = vec![provd_client::Image::Url {
        url: "https://example.com/cat.jpg".into(),
    }];
    let e = provd_tests::generation_error(&client, request).await;
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(
        e.message
            .contains("(type gemini) does not support image URLs"),
        "{e}"
    );
    assert_eq!(
        upstream.requests().len(),
        1,
        "the URL never reached the upstream"
    );
}

#[tokio::test]
async fn usage_and_text_are_the_same_streamed_or_not() {
    let upstream = Upstream::start(|r| {
        if r.path().ends_with(":streamGenerateContent") {
            gemini::stream_reply(
                &gemini::stream_text(MODEL, &["The answer", " is 42."], "MAX_TOKENS", (20, 5, 9)),
                13,
            )
        } else {
            Reply::json(
                200,
                &gemini::whole(MODEL, "The answer is 42.", "MAX_TOKENS", (20, 5, 9)),
            )
        }
    })
    .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let (whole_text, whole) = assert_streamed_matches_whole(&client).await;
    assert_eq!(whole_text, "The answer is 42.");
    assert_eq!(whole.usage, Usage::new(20, 14).with_reasoning(Some(9)));
    assert_eq!(whole.finish_reason, FinishReason::Length);
    let requests = upstream.requests();
    assert_eq!(
        requests[1].target, "/v1beta/models/test-model:generateContent",
        "no alt=sse without streaming"
    );
    assert_eq!(requests[1].header("x-goog-api-key"), Some(TEST_KEY));
}

#[tokio::test]
async fn a_blocked_prompt_ends_with_content_filter_and_no_text_streamed_or_not() {
    let upstream = Upstream::start(|r| {
        if r.path().ends_with(":streamGenerateContent") {
            gemini::stream_reply(&gemini::event(&gemini::blocked("SAFETY", 8)), 9)
        } else {
            Reply::json(200, &gemini::blocked("PROHIBITED_CONTENT", 8))
        }
    })
    .await;
    let daemon = daemon_for(&upstream, 3, "");
    let client = daemon.client().await;
    for stream in [true, false] {
        let mut req = GenerateRequest::prompt("something the filter refuses");
        req.stream = stream;
        let (text, done) = provd_tests::generation_text(&client, req).await;
        assert_eq!(text, "", "stream: {stream}");
        assert_eq!(done.finish_reason, FinishReason::ContentFilter);
        assert_eq!(done.usage, Usage::new(8, 0));
        assert_eq!(done.chunks, 0);
    }
    assert_eq!(
        upstream.requests().len(),
        2,
        "a blocked prompt is not retried"
    );
}

#[tokio::test]
async fn http_errors_map_to_system_codes_with_the_upstream_message_and_never_the_key() {
    let cases: Vec<(Reply, ErrorCode, bool, Option<u64>)> = vec![
        (
            gemini::error(
                400,
                "INVALID_ARGUMENT",
                "* GenerateContentRequest.contents: contents is not specified",
                json!([]),
            ),
            ErrorCode::InvalidRequest,
            false,
            None,
        ),
        (
            // Gemini refuses a key with 400, not 401; the ErrorInfo reason says why.
            gemini::error(
                400,
                "INVALID_ARGUMENT",
                &format!("API key not valid. Please pass a valid API key. ({TEST_KEY})"),
                json!([gemini::error_info("API_KEY_INVALID")]),
            ),
            ErrorCode::Unauthenticated,
            false,
            None,
        ),
        (
            gemini::error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers",
                json!([]),
            ),
            ErrorCode::PermissionDenied,
            false,
            None,
        ),
        (
            gemini::error(
                404,
                "NOT_FOUND",
                "models/test-model is not found for API version v1beta",
                json!([]),
            ),
            ErrorCode::NotFound,
            false,
            None,
        ),
        (
            gemini::error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                gemini::quota_details("34s"),
            ),
            ErrorCode::RateLimited,
            true,
            Some(34_000),
        ),
        (
            gemini::error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                gemini::quota_details("34s"),
            )
            .header("retry-after", "7"),
            ErrorCode::RateLimited,
            true,
            Some(7_000),
        ),
        (
            gemini::error(
                500,
                "INTERNAL",
                "An internal error has occurred.",
                json!([]),
            ),
            ErrorCode::UpstreamError,
            true,
            None,
        ),
        (
            gemini::error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                json!([]),
            ),
            ErrorCode::Unavailable,
            true,
            None,
        ),
        (
            gemini::error(
                504,
                "DEADLINE_EXCEEDED",
                "Deadline expired before operation could complete.",
                json!([]),
            ),
            ErrorCode::Timeout,
            true,
            None,
        ),
    ];
    for (reply, code, retryable, retry_after_ms) in cases {
        let status = reply.status;
        let upstream = Upstream::start(move |_| reply.clone()).await;
        let daemon = daemon_for(&upstream, 0, "");
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
        assert_eq!(
            upstream.requests().len(),
            1,
            "HTTP {status}: no retries configured"
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

    // The message is Google's own, with its status.
    let upstream =
        Upstream::start(|_| gemini::error(404, "NOT_FOUND", "models/x is not found", json!([])))
            .await;
    let daemon = daemon_for(&upstream, 0, "");
    let err =
        provd_tests::generation_error(&daemon.client().await, GenerateRequest::prompt("q")).await;
    assert_eq!(
        err.message,
        "p returned HTTP 404: NOT_FOUND: models/x is not found"
    );
}

#[tokio::test]
async fn an_error_event_mid_stream_ends_with_an_error_after_the_chunks_sent() {
    let parts = vec![
        Part::Bytes(
            gemini::chunk(MODEL, json!([{"text": "partial"}]), None, (3, 1, 0)).into_bytes(),
        ),
        gemini::error_event(
            500,
            "INTERNAL",
            "An internal error has occurred while generating",
        ),
    ];
    let upstream =
        Upstream::start(move |_| Reply::stream("text/event-stream", parts.clone())).await;
    let daemon = daemon_for(&upstream, 3, "");
    let client = daemon.client().await;
    let mut generation = client.generate(GenerateRequest::prompt("q")).await.unwrap();
    let (texts, result) = drain_generation(&mut generation).await;
    assert_eq!(texts, ["partial"]);
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::UpstreamError);
    assert!(
        err.message
            .contains("INTERNAL: An internal error has occurred while generating"),
        "{}",
        err.message
    );
    assert_eq!(err.chunks, Some(1));
    assert_eq!(
        err.usage,
        Some(Usage::new(3, 1)),
        "the usage so far is kept"
    );
    assert_eq!(
        upstream.requests().len(),
        1,
        "no retry once a chunk reached the client"
    );
}

#[tokio::test]
async fn a_stream_without_a_finish_reason_or_cut_short_is_an_error_never_a_silent_success() {
    let text =
        Part::Bytes(gemini::chunk(MODEL, json!([{"text": "cut"}]), None, (2, 1, 0)).into_bytes());
    let finished = Part::Bytes(
        gemini::chunk(MODEL, json!([{"text": " off"}]), Some("STOP"), (2, 2, 0)).into_bytes(),
    );
    let endings: Vec<(&str, Vec<Part>)> = vec![
        ("a clean end with no finishReason", vec![]),
        ("a reset", vec![Part::Reset]),
        ("a close", vec![Part::Close]),
        (
            "half an event, then the end",
            vec![Part::Bytes(
                b"data: {\"candidates\": [{\"content\"".to_vec(),
            )],
        ),
        // The finish reason alone is not the end: the body must end cleanly too.
        (
            "a reset after the finishReason",
            vec![finished, Part::Reset],
        ),
    ];
    for (ending, tail) in endings {
        let mut parts = vec![text.clone()];
        parts.extend(tail);
        let upstream =
            Upstream::start(move |_| Reply::stream("text/event-stream", parts.clone())).await;
        let daemon = daemon_for(&upstream, 0, "");
        let client = daemon.client().await;
        let mut generation = client.generate(GenerateRequest::prompt("q")).await.unwrap();
        let (texts, result) = drain_generation(&mut generation).await;
        let error = match result {
            Ok(done) => panic!("{ending}: a cut stream succeeded: {done:?}"),
            Err(e) => e,
        };
        assert_eq!(texts.first().map(String::as_str), Some("cut"), "{ending}");
        assert_eq!(error.code, ErrorCode::UpstreamError, "{ending}: {error}");
        assert_eq!(error.chunks, Some(texts.len() as u32), "{ending}");
    }
}

#[tokio::test]
async fn cancel_closes_the_upstream_connection_while_streaming_and_while_waiting_for_headers() {
    // Streaming: one chunk, then the upstream goes quiet.
    let first = gemini::chunk(MODEL, json!([{"text": "thinking…"}]), None, (1, 1, 0));
    let upstream = Upstream::start(move |_| {
        Reply::stream(
            "text/event-stream",
            vec![Part::Bytes(first.clone().into_bytes()), Part::Stall],
        )
    })
    .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    cancel_after_the_first_chunk(&client, &upstream).await;

    // Waiting for the first byte: the response is held back entirely.
    let hold = Arc::new(tokio::sync::Notify::new());
    let held = hold.clone();
    let upstream = Upstream::start(move |_| {
        gemini::stream_reply(
            &gemini::stream_text(MODEL, &["late"], "STOP", (1, 1, 0)),
            100,
        )
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
    let first = gemini::chunk(MODEL, json!([{"text": "x"}]), None, (1, 1, 0));
    let upstream = Upstream::start(move |_| {
        Reply::stream(
            "text/event-stream",
            vec![Part::Bytes(first.clone().into_bytes()), Part::Stall],
        )
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
async fn list_models_follows_the_pages_and_keeps_the_models_that_generate() {
    const TOKEN: &str = "Ch1tb2RlbHMv/Z2VtaW5p+LTIuNQ==";
    let upstream = Upstream::start(|r| {
        if r.path() != "/v1beta/models" {
            return gemini::error(404, "NOT_FOUND", "no such path", json!([]));
        }
        if r.target.contains("pageToken=") {
            gemini::models_page(
                vec![
                    gemini::model(
                        "gemini-2.5-pro",
                        "Gemini 2.5 Pro",
                        1_048_576,
                        &[
                            "generateContent",
                            "countTokens",
                            "createCachedContent",
                            "batchGenerateContent",
                        ],
                    ),
                    gemini::model(
                        "text-embedding-004",
                        "Text Embedding 004",
                        2048,
                        &["embedContent"],
                    ),
                ],
                None,
            )
        } else {
            gemini::models_page(
                vec![
                    gemini::model(
                        "gemini-2.5-flash",
                        "Gemini 2.5 Flash",
                        1_048_576,
                        &["generateContent", "countTokens"],
                    ),
                    gemini::model("embedding-001", "Embedding 001", 2048, &["embedContent"]),
                ],
                Some(TOKEN),
            )
        }
    })
    .await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let models = client.list_models(Some("p")).await.unwrap().models;
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["gemini-2.5-flash", "gemini-2.5-pro"]);
    assert_eq!(models[0].provider, "p");
    assert_eq!(models[0].display_name.as_deref(), Some("Gemini 2.5 Flash"));
    assert_eq!(models[1].context_window, Some(1_048_576));

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].target, "/v1beta/models?pageSize=1000");
    assert_eq!(
        requests[1].target,
        "/v1beta/models?pageSize=1000&pageToken=Ch1tb2RlbHMv%2FZ2VtaW5p%2BLTIuNQ%3D%3D"
    );
    for r in &requests {
        assert_eq!(r.method, "GET");
        assert_eq!(r.header("x-goog-api-key"), Some(TEST_KEY));
        assert!(!r.target.contains(TEST_KEY));
    }
}

#[tokio::test]
async fn a_missing_key_is_unauthenticated_and_names_the_variable() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    // Empty values, so a key in the developer's own environment cannot stand in.
    let daemon = Daemon::builder()
        .config(&provider_config("gemini", &upstream.base_url, 0, ""))
        .env("PROVD_TEST_KEY", "")
        .env("GOOGLE_API_KEY", "")
        .start();
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.to_string().contains("PROVD_TEST_KEY"), "{err}");
    let listed = client.list_models(Some("p")).await.unwrap_err();
    assert_eq!(listed.code(), ErrorCode::Unauthenticated);
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn additional_params_may_not_override_the_model_streaming_or_the_conversation() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let overrides = ["model", "stream", "contents"].map(|key| (key, json!("x")));
    assert_overrides_refused(&client, &upstream, &overrides).await;
}

#[tokio::test]
async fn a_model_name_that_could_leave_the_url_path_is_refused_before_any_request() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    for model in ["x:generateContent?key=1#", "../../v1/models/x", "a/b/c"] {
        let mut req = GenerateRequest::prompt("q");
        req.model = Some(model.into());
        let err = provd_tests::generation_error(&client, req).await;
        assert_eq!(err.code, ErrorCode::InvalidRequest, "{model}: {err}");
    }
    assert!(upstream.requests().is_empty());
}

/// The real service, when a key is in the environment.
#[tokio::test]
async fn real_gemini_streams_a_short_answer_and_lists_models() {
    let config = "[providers.gemini]\ntype = \"gemini\"\ndefault_model = \"gemini-2.5-flash\"\n";
    let Some(daemon) = real_service("Gemini", "GEMINI_API_KEY", config) else {
        return;
    };
    let key = std::env::var("GEMINI_API_KEY").expect("real_service found it");
    let client = daemon.client().await;
    let mut req = GenerateRequest::prompt("Reply with the single word: pong");
    req.max_tokens = Some(20);
    // Thinking would spend the small token budget before any text.
    req.additional_params.insert(
        "generationConfig".into(),
        json!({"thinkingConfig": {"thinkingBudget": 0}}),
    );
    for stream in [true, false] {
        req.stream = stream;
        let (text, done) = provd_tests::generation_text(&client, req.clone()).await;
        assert!(!text.is_empty(), "stream: {stream}");
        assert!(done.usage.prompt_tokens > 0 && done.usage.completion_tokens > 0);
        assert!(matches!(
            done.finish_reason,
            FinishReason::Stop | FinishReason::Length
        ));
    }
    let models = client.list_models(Some("gemini")).await.unwrap().models;
    assert!(
        models.iter().any(|m| m.id.starts_with("gemini-")),
        "{models:?}"
    );
    assert!(!daemon.log().contains(&key), "the key is in the log");
}

#[tokio::test]
async fn a_streaming_request_answered_with_the_json_array_of_responses_streams_them() {
    // streamGenerateContent without `alt=sse` answers with a JSON array of the chunks;
    // a gateway that drops the parameter sends that.
    let array = json!([
        gemini::response(
            "gemini-2.5-flash-001",
            json!([{"text": "Hel"}]),
            None,
            (5, 1, 0)
        ),
        gemini::response(
            "gemini-2.5-flash-001",
            json!([{"text": "lo"}]),
            Some("STOP"),
            (5, 2, 0)
        ),
    ]);
    let upstream = Upstream::start(move |_| Reply::json(200, &array)).await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let (text, done) = provd_tests::generation_text(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(text, "Hello");
    assert_eq!(done.usage, Usage::new(5, 2));
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!(done.model, "gemini-2.5-flash-001");
    assert_eq!(upstream.requests()[0].path(), STREAM_PATH);
}

#[tokio::test]
async fn an_error_whose_code_is_a_string_keeps_its_message() {
    let body = json!({"error": {"code": "400", "message": "API key expired. Please renew.", "status": "INVALID_ARGUMENT"}});
    let upstream = Upstream::start(move |_| Reply::json(400, &body)).await;
    let daemon = daemon_for(&upstream, 0, "");
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert!(
        err.message
            .ends_with("returned HTTP 400: INVALID_ARGUMENT: API key expired. Please renew."),
        "{err}"
    );
}
