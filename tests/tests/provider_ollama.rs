//! The `ollama` provider against a faithful mock of Ollama's native API: request shape,
//! NDJSON streaming at odd byte boundaries, thinking and tool calls, usage parity with
//! the non-streamed API, every error mapping, stream faults, cancel reaching the
//! upstream, model listing, and a server that is not running.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use provd_client::{ErrorCode, FinishReason, GenerateRequest, Usage};
use provd_tests::apis::{
    assert_overrides_refused, assert_streamed_matches_whole, cancel_after_the_first_chunk,
    cancel_before_the_first_byte, ollama, provider_config, TEST_KEY,
};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::upstream::{Part, Reply, Seen, Upstream};
use provd_tests::{generation_outcome, Daemon};
use serde_json::json;

const MODEL: &str = "test-model";

/// A daemon whose provider `p` is an Ollama at `base_url`, with no key (Ollama needs
/// none; `PROVD_TEST_KEY` stays unset).
fn daemon_at(base_url: &str, retries: u32) -> Daemon {
    Daemon::builder()
        .config(&provider_config("ollama", base_url, retries, ""))
        .start()
}

fn daemon_for(upstream: &Upstream, retries: u32) -> Daemon {
    daemon_at(&upstream.base_url, retries)
}

fn full_request() -> GenerateRequest {
    provd_tests::apis::full_request(&[
        ("seed", json!(42)),
        ("keep_alive", json!("5m")),
        ("options", json!({"num_ctx": 4096})),
    ])
}

#[tokio::test]
async fn streams_a_documented_answer_split_at_odd_bytes_and_sends_the_documented_request() {
    const STEPS: [usize; 3] = [1, 5, 7];
    let ndjson = ollama::stream_text(MODEL, &["Hé", "llo", " wörld ✓ 😀"], "stop", (12, 3));
    let served = AtomicUsize::new(0);
    let upstream = Upstream::start(move |_| {
        let step = STEPS[served.fetch_add(1, Ordering::SeqCst) % STEPS.len()];
        ollama::stream_reply(&ndjson, step)
    })
    .await;
    let daemon = daemon_for(&upstream, 0);
    let client = daemon.client().await;
    for step in STEPS {
        let (texts, done) = generation_outcome(&client, full_request()).await;
        let done = done.unwrap_or_else(|e| panic!("split every {step} bytes: {e}"));
        assert_eq!(texts, ["Hé", "llo", " wörld ✓ 😀"], "split every {step}");
        assert_eq!(done.usage, Usage::new(12, 3), "split every {step}");
        assert_eq!(done.finish_reason, FinishReason::Stop, "split every {step}");
        assert_eq!((done.provider.as_str(), done.model.as_str()), ("p", MODEL));
    }

    let requests = upstream.requests();
    assert_eq!(requests.len(), STEPS.len());
    let r = &requests[0];
    assert_eq!((r.method.as_str(), r.path()), ("POST", "/api/chat"));
    assert_eq!(r.header("authorization"), None, "Ollama needs no key");
    assert_eq!(r.header("content-type"), Some("application/json"));
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
            "options": {
                "num_predict": 77,
                "temperature": 0.5,
                "top_p": 0.9,
                "stop": ["END"],
                "seed": 42,
                "num_ctx": 4096,
            },
            "keep_alive": "5m",
            "stream": true,
        })
    );
}

#[tokio::test]
async fn thinking_and_tool_calls_are_skipped_and_the_finish_reason_says_tool_use() {
    let mut ndjson = ollama::thinking_line(MODEL, "The user wants the weather");
    ndjson.push_str(&ollama::thinking_line(MODEL, " in Paris."));
    ndjson.push_str(&ollama::chunk_line(MODEL, "Let me check."));
    ndjson.push_str(&ollama::tool_call_line(
        MODEL,
        "get_weather",
        json!({"city": "Paris"}),
    ));
    ndjson.push_str(&ollama::done_line(MODEL, "stop", (30, 12)));
    let upstream = Upstream::start(move |_| ollama::stream_reply(&ndjson, 9)).await;
    let daemon = daemon_for(&upstream, 0);
    let client = daemon.client().await;
    let (texts, done) =
        generation_outcome(&client, GenerateRequest::prompt("weather in Paris?")).await;
    let done = done.unwrap();
    assert_eq!(texts, ["Let me check."]);
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(done.usage, Usage::new(30, 12));
    assert_eq!(done.chunks, 1);
}

#[tokio::test]
async fn usage_text_and_finish_are_the_same_streamed_or_not() {
    let upstream = Upstream::start(|r| {
        if r.json()["stream"] == true {
            ollama::stream_reply(
                &ollama::stream_text(MODEL, &["The answer", " is 42."], "length", (20, 5)),
                13,
            )
        } else {
            Reply::json(
                200,
                &ollama::chat_response(MODEL, "The answer is 42.", "length", (20, 5)),
            )
        }
    })
    .await;
    let daemon = daemon_for(&upstream, 0);
    let client = daemon.client().await;
    let (whole_text, whole) = assert_streamed_matches_whole(&client).await;
    assert_eq!(whole_text, "The answer is 42.");
    assert_eq!(whole.usage, Usage::new(20, 5));
    assert_eq!(whole.finish_reason, FinishReason::Length);
    let requests = upstream.requests();
    assert_eq!(requests[0].json()["stream"], true);
    assert_eq!(requests[1].json()["stream"], false);
}

#[tokio::test]
async fn http_errors_map_to_system_codes_with_the_upstream_message() {
    let mut not_ollama = Reply::json(404, &json!({}));
    not_ollama.content_type = "text/plain; charset=utf-8".into();
    not_ollama.body = vec![Part::Bytes(b"404 page not found".to_vec())];
    let cases: Vec<(Reply, ErrorCode, bool, Option<u64>, &str)> = vec![
        (
            ollama::error(404, "model 'test-model' not found"),
            ErrorCode::NotFound,
            false,
            None,
            "model 'test-model' not found",
        ),
        (
            // What Go's mux answers for a path it does not serve (a base_url with a
            // path that is not Ollama's root, say).
            not_ollama,
            ErrorCode::NotFound,
            false,
            None,
            "404 page not found",
        ),
        (
            ollama::error(400, "invalid options: num_predict"),
            ErrorCode::InvalidRequest,
            false,
            None,
            "invalid options: num_predict",
        ),
        (
            ollama::error(429, "too many requests").header("retry-after", "2"),
            ErrorCode::RateLimited,
            true,
            Some(2000),
            "too many requests",
        ),
        (
            ollama::error(500, "llama runner process has terminated: exit status 2"),
            ErrorCode::UpstreamError,
            true,
            None,
            "llama runner process has terminated",
        ),
        (
            ollama::error(
                503,
                "server busy, please try again.  maximum pending requests exceeded",
            ),
            ErrorCode::Unavailable,
            true,
            None,
            "server busy",
        ),
        (
            ollama::error(502, "cloud model unreachable"),
            ErrorCode::UpstreamError,
            true,
            None,
            "cloud model unreachable",
        ),
    ];
    for (reply, code, retryable, retry_after_ms, upstream_message) in cases {
        let status = reply.status;
        let upstream = Upstream::start(move |_| reply.clone()).await;
        let daemon = daemon_for(&upstream, 0);
        let client = daemon.client().await;
        let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
        let err = result.unwrap_err();
        assert!(texts.is_empty());
        assert_eq!(err.code, code, "HTTP {status}: {err}");
        assert_eq!(err.retryable, retryable, "HTTP {status}");
        assert_eq!(err.retry_after_ms, retry_after_ms, "HTTP {status}");
        assert!(
            err.message.contains(&format!("HTTP {status}"))
                && err.message.contains(upstream_message),
            "{}",
            err.message
        );
        assert!(
            !err.message.contains("is Ollama running"),
            "an answering server is running: {}",
            err.message
        );
        assert_eq!(err.chunks, Some(0));
    }
}

#[tokio::test]
async fn a_configured_key_is_sent_as_bearer_and_never_leaks() {
    let upstream = Upstream::start(|r| match r.path() {
        "/api/tags" => ollama::tags(&[("llama3.2:latest", "2024-12-06T00:48:09.983619Z")]),
        _ => ollama::error(401, &format!("invalid key {TEST_KEY}")),
    })
    .await;
    // Ollama behind an authenticating proxy: the key comes from `api_key_env`.
    let daemon = Daemon::for_provider("ollama", &upstream.base_url, 0, "");
    let client = daemon.client().await;
    client.list_models(Some("p")).await.unwrap();
    let (_, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(!err.message.contains(TEST_KEY), "the key leaked: {err}");
    assert!(
        !daemon.log().contains(TEST_KEY),
        "the key leaked into the log"
    );
    for r in upstream.requests() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TEST_KEY}").as_str()),
            "{}",
            r.path()
        );
    }
}

#[tokio::test]
async fn an_error_line_mid_stream_ends_with_an_error_after_the_chunks_sent() {
    let parts = vec![
        Part::Bytes(ollama::chunk_line(MODEL, "partial").into_bytes()),
        ollama::error_line("an error was encountered while running the model"),
    ];
    let upstream =
        Upstream::start(move |_| Reply::stream("application/x-ndjson", parts.clone())).await;
    let daemon = daemon_for(&upstream, 3);
    let client = daemon.client().await;
    let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
    let err = result.unwrap_err();
    assert_eq!(texts, ["partial"]);
    assert_eq!(err.code, ErrorCode::UpstreamError);
    assert!(
        err.message
            .contains("an error was encountered while running the model"),
        "{}",
        err.message
    );
    assert_eq!(err.chunks, Some(1));
    assert_eq!(
        upstream.requests().len(),
        1,
        "no retry once a chunk reached the client"
    );
}

#[tokio::test]
async fn a_stream_without_its_done_line_or_cut_or_reset_is_an_error_never_a_success() {
    for ending in [None, Some(Part::Reset), Some(Part::Close)] {
        let mut parts = vec![Part::Bytes(ollama::chunk_line(MODEL, "cut").into_bytes())];
        parts.extend(ending.clone());
        let upstream =
            Upstream::start(move |_| Reply::stream("application/x-ndjson", parts.clone())).await;
        let daemon = daemon_for(&upstream, 0);
        let client = daemon.client().await;
        let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
        let err = match result {
            Ok(done) => panic!("{ending:?}: a cut stream succeeded: {done:?}"),
            Err(e) => e,
        };
        assert_eq!(texts, ["cut"]);
        assert_eq!(err.code, ErrorCode::UpstreamError, "{ending:?}: {err}");
        assert_eq!(err.chunks, Some(1));
        if ending.is_none() {
            assert!(err.message.contains("\"done\": true"), "{}", err.message);
        }
    }
}

#[tokio::test]
async fn a_garbage_line_is_a_malformed_upstream_response() {
    let parts = vec![
        Part::Bytes(ollama::chunk_line(MODEL, "fine").into_bytes()),
        Part::Bytes(b"<html><body>502 Bad Gateway</body></html>\n".to_vec()),
        Part::Bytes(ollama::done_line(MODEL, "stop", (1, 1)).into_bytes()),
    ];
    let upstream =
        Upstream::start(move |_| Reply::stream("application/x-ndjson", parts.clone())).await;
    let daemon = daemon_for(&upstream, 0);
    let client = daemon.client().await;
    let (texts, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
    let err = result.unwrap_err();
    assert_eq!(texts, ["fine"]);
    assert_eq!(err.code, ErrorCode::UpstreamError);
    assert!(err.message.contains("malformed"), "{}", err.message);
    assert_eq!(err.chunks, Some(1));
}

#[tokio::test]
async fn cancel_closes_the_upstream_connection_while_streaming_and_while_waiting_for_headers() {
    // Streaming: one chunk, then the upstream goes quiet.
    let first = ollama::chunk_line(MODEL, "thinking…");
    let upstream = Upstream::start(move |_| {
        Reply::stream(
            "application/x-ndjson",
            vec![Part::Bytes(first.clone().into_bytes()), Part::Stall],
        )
    })
    .await;
    let daemon = daemon_for(&upstream, 0);
    let client = daemon.client().await;
    cancel_after_the_first_chunk(&client, &upstream).await;

    // Waiting for the first byte (Ollama loading the model): nothing is sent at all.
    let hold = Arc::new(tokio::sync::Notify::new());
    let held = hold.clone();
    let upstream = Upstream::start(move |_| {
        ollama::stream_reply(&ollama::done_line(MODEL, "stop", (1, 0)), 100)
            .after(vec![Part::Wait(held.clone())])
    })
    .await;
    let daemon = daemon_for(&upstream, 0);
    let client = daemon.client().await;
    cancel_before_the_first_byte(&client, &upstream).await;
}

// Multi-threaded: the raw client blocks its thread, and the mock upstream must keep
// serving on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnect_closes_the_upstream_connection() {
    let first = ollama::chunk_line(MODEL, "x");
    let upstream = Upstream::start(move |_| {
        Reply::stream(
            "application/x-ndjson",
            vec![Part::Bytes(first.clone().into_bytes()), Part::Stall],
        )
    })
    .await;
    let daemon = daemon_for(&upstream, 0);
    {
        let mut raw = RawConn::greeted(&daemon.socket);
        raw.request(1, "generate", &GenerateRequest::prompt("q"));
        assert!(matches!(raw.read_frame(), Some(Frame::Notification(m, _)) if m == "chunk"));
    } // the client's socket closes here, with the generation running
    upstream.wait_for(Seen::ClientClosedEarly(0)).await;
}

#[tokio::test]
async fn list_models_maps_the_tags_endpoint() {
    let upstream = Upstream::start(|r| match r.path() {
        "/api/tags" => ollama::tags(&[
            ("llama3.2:latest", "2024-12-06T00:48:09.983619Z"),
            ("codellama:13b", "2023-11-04T14:56:49.277302595-07:00"),
            ("odd:1", "not a date"),
        ]),
        _ => ollama::error(404, "not found"),
    })
    .await;
    let daemon = daemon_for(&upstream, 0);
    let client = daemon.client().await;
    let models = client.list_models(Some("p")).await.unwrap().models;
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["llama3.2:latest", "codellama:13b", "odd:1"]);
    assert!(models.iter().all(|m| m.provider == "p"));
    assert_eq!(models[0].display_name.as_deref(), Some("llama3.2:latest"));
    let created: Vec<_> = models.iter().map(|m| m.created_at).collect();
    assert_eq!(created, [Some(1_733_446_089), Some(1_699_135_009), None]);
    let r = &upstream.requests()[0];
    assert_eq!((r.method.as_str(), r.path()), ("GET", "/api/tags"));
    assert_eq!(r.header("authorization"), None);
}

#[tokio::test]
async fn a_server_that_is_not_running_is_unavailable_and_says_so() {
    // A loopback port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = daemon_at(&format!("http://127.0.0.1:{port}"), 0);
    let client = daemon.client().await;
    let (_, result) = generation_outcome(&client, GenerateRequest::prompt("q")).await;
    let err = result.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(err.retryable);
    assert!(err.message.contains("cannot connect"), "{}", err.message);
    assert!(
        err.message
            .contains(&format!("is Ollama running at 127.0.0.1:{port}?")),
        "{}",
        err.message
    );
    let err = client.list_models(Some("p")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable, "{err}");
}

#[tokio::test]
async fn additional_params_may_not_override_the_model_streaming_or_messages() {
    let upstream = Upstream::start(|_| ollama::error(500, "unreachable")).await;
    let daemon = daemon_for(&upstream, 0);
    let client = daemon.client().await;
    let overrides = [
        ("model", json!("x")),
        ("stream", json!(false)),
        ("messages", json!([])),
        ("options", json!("fast")),
    ];
    assert_overrides_refused(&client, &upstream, &overrides).await;
}

/// The real server, when asked for (`PROVD_REAL_TESTS=1`) and one answers on Ollama's
/// default address. Not asked for, the port is not even probed: whatever else listens
/// there must not fail the suite.
#[tokio::test]
async fn real_ollama_streams_a_short_answer() {
    if !provd_tests::apis::real_tests_asked_for("Ollama") {
        return;
    }
    if tokio::net::TcpStream::connect("127.0.0.1:11434")
        .await
        .is_err()
    {
        eprintln!("SKIPPED: nothing listens on 127.0.0.1:11434; the real Ollama is not called");
        return;
    }
    // No base_url: the documented default is what is tested. Loading a model can take a
    // while on a cold start, and Ollama sends nothing until it has.
    let daemon = Daemon::builder()
        .config(
            "[providers.ollama]\ntype = \"ollama\"\ntimeout_seconds = 300\nretry_attempts = 0\n",
        )
        .start();
    let client = daemon.client().await;
    let models = client.list_models(Some("ollama")).await.unwrap().models;
    // Embedding models cannot chat.
    let Some(model) = models.iter().find(|m| !m.id.contains("embed")) else {
        eprintln!("SKIPPED: the Ollama on 127.0.0.1:11434 has no chat model pulled");
        return;
    };
    let mut req = GenerateRequest::prompt("Reply with the single word: pong");
    req.model = Some(model.id.clone());
    req.max_tokens = Some(16);
    req.temperature = Some(0.0);
    let (text, done) = provd_tests::generation_text(&client, req.clone()).await;
    eprintln!("{}: {text:?} {done:?}", model.id);
    assert!(done.usage.prompt_tokens > 0 && done.usage.completion_tokens > 0);
    assert!(matches!(
        done.finish_reason,
        FinishReason::Stop | FinishReason::Length
    ));
    req.stream = false;
    let (_, whole) = provd_tests::generation_text(&client, req).await;
    assert!(whole.usage.completion_tokens > 0);
}
