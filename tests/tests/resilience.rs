//! Retries, fallbacks, the request deadline and keepalives, end to end through the real
//! daemon against mock upstreams (OpenAI's wire format; the logic is provider-neutral).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use provd_client::{ErrorCode, GenerateRequest};
use provd_tests::apis::{openai, TEST_KEY};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::upstream::{Part, Reply, Seen, Upstream};
use provd_tests::Daemon;

fn answer() -> Reply {
    openai::stream_reply(&openai::stream_text("m", &["ok"], "stop", (3, 1)), 64)
}

/// An upstream that fails its first `failures` requests with `failure`, then answers.
async fn flaky(failures: usize, failure: Reply) -> Upstream {
    let count = AtomicUsize::new(0);
    Upstream::start(move |_| {
        if count.fetch_add(1, Ordering::SeqCst) < failures {
            failure.clone()
        } else {
            answer()
        }
    })
    .await
}

fn provider(id: &str, upstream: &Upstream, extra: &str) -> String {
    format!(
        "[providers.{id}]\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\ndefault_model = \"{id}-model\"\n{extra}\n",
        upstream.base_url
    )
}

fn daemon(config: &str) -> Daemon {
    Daemon::builder()
        .config(&format!("[daemon]\nkeepalive_interval_ms = 0\n{config}"))
        .env("PROVD_TEST_KEY", TEST_KEY)
        .start()
}

fn rate_limited(retry_after_ms: u64) -> Reply {
    openai::error(429, "Rate limit reached", "requests", None)
        .header("retry-after-ms", &retry_after_ms.to_string())
}

#[tokio::test]
async fn retryable_failures_are_retried_until_one_succeeds() {
    let upstream = flaky(2, rate_limited(1)).await;
    let daemon = daemon(&provider("p", &upstream, "retry_attempts = 3"));
    let client = daemon.client().await;
    let (text, done) = provd_tests::generation_text(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(text, "ok");
    assert_eq!(done.provider, "p");
    assert_eq!(upstream.requests().len(), 3);
    let metrics = client.status().await.unwrap().instances[0].metrics;
    assert_eq!(
        (metrics.requests, metrics.errors),
        (3, 2),
        "each attempt is counted"
    );
}

#[tokio::test]
async fn retries_stop_after_retry_attempts() {
    let upstream = flaky(
        usize::MAX,
        openai::error(503, "overloaded", "server_error", None),
    )
    .await;
    let daemon = daemon(&provider("p", &upstream, "retry_attempts = 2"));
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::Unavailable);
    assert_eq!(
        upstream.requests().len(),
        3,
        "the first try and two retries"
    );
}

#[tokio::test]
async fn errors_that_cannot_succeed_again_are_not_retried() {
    for failure in [
        openai::error(400, "bad request", "invalid_request_error", None),
        openai::error(401, "bad key", "invalid_request_error", None),
        openai::error(404, "no such model", "invalid_request_error", None),
    ] {
        let upstream = flaky(usize::MAX, failure).await;
        let daemon = daemon(&provider("p", &upstream, "retry_attempts = 3"));
        let client = daemon.client().await;
        client
            .generate(GenerateRequest::prompt("q"))
            .await
            .unwrap()
            .collect_text()
            .await
            .unwrap_err();
        assert_eq!(upstream.requests().len(), 1);
    }
}

#[tokio::test]
async fn a_fallback_serves_when_the_primary_keeps_failing_and_the_result_says_who_answered() {
    let primary = flaky(
        usize::MAX,
        openai::error(529, "Overloaded", "overloaded_error", None),
    )
    .await;
    let backup = flaky(0, answer()).await;
    let daemon = daemon(&format!(
        "default_provider = \"primary\"\n{}{}",
        provider(
            "primary",
            &primary,
            "retry_attempts = 1\nfallbacks = [\"backup/big-model\"]"
        ),
        provider("backup", &backup, "retry_attempts = 0")
    ));
    let client = daemon.client().await;
    let (text, done) = provd_tests::generation_text(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(text, "ok");
    assert_eq!(
        (done.provider.as_str(), done.model.as_str()),
        ("backup", "m"),
        "the model the upstream says answered"
    );
    assert_eq!(backup.requests()[0].json()["model"], "big-model");
    assert_eq!(
        primary.requests().len(),
        2,
        "the primary got its retry first"
    );
    assert_eq!(backup.requests()[0].json()["model"], "big-model");
}

#[tokio::test]
async fn a_failed_fallback_keeps_the_primarys_failure_and_gives_its_own_code_and_retry_hint() {
    let primary = flaky(
        usize::MAX,
        openai::error(503, "primary is down for maintenance", "server_error", None),
    )
    .await;
    let backup = flaky(usize::MAX, rate_limited(60_000)).await;
    let daemon = daemon(&format!(
        "default_provider = \"primary\"\n{}{}",
        provider(
            "primary",
            &primary,
            "retry_attempts = 0\nfallbacks = [\"backup/big-model\"]"
        ),
        provider("backup", &backup, "retry_attempts = 0")
    ));
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    // What the client may do next is the last target's to say.
    assert_eq!(err.code, ErrorCode::RateLimited, "{err:?}");
    assert!(err.retryable);
    assert_eq!(err.retry_after_ms, Some(60_000));
    // Why each target failed, the requested one first.
    let primary_at = err
        .message
        .find("primary: unavailable: ")
        .unwrap_or_else(|| panic!("{}", err.message));
    let backup_at = err
        .message
        .find("backup/big-model: rate_limited: ")
        .unwrap_or_else(|| panic!("{}", err.message));
    assert!(primary_at < backup_at, "{}", err.message);
    assert!(
        err.message.contains("primary is down for maintenance")
            && err.message.contains("Rate limit reached"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_non_retryable_failure_does_not_fall_back() {
    let primary = flaky(
        usize::MAX,
        openai::error(400, "bad request", "invalid_request_error", None),
    )
    .await;
    let backup = flaky(0, answer()).await;
    let daemon = daemon(&format!(
        "default_provider = \"primary\"\n{}{}",
        provider("primary", &primary, "fallbacks = [\"backup\"]"),
        provider("backup", &backup, "")
    ));
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::InvalidRequest);
    assert!(backup.requests().is_empty());
}

#[tokio::test]
async fn a_model_alias_routes_to_its_targets_in_order() {
    let first = flaky(usize::MAX, openai::error(503, "down", "server_error", None)).await;
    let second = flaky(0, answer()).await;
    let daemon = daemon(&format!(
        "[aliases]\nsmart = [\"a/a-large\", \"b/b-large\"]\n{}{}",
        provider("a", &first, "retry_attempts = 0"),
        provider("b", &second, "retry_attempts = 0")
    ));
    let client = daemon.client().await;
    let mut req = GenerateRequest::prompt("q");
    req.model = Some("smart".into());
    let (_, done) = provd_tests::generation_text(&client, req).await;
    assert_eq!(
        (done.provider.as_str(), done.model.as_str()),
        ("b", "m"),
        "the model the upstream says answered"
    );
    assert_eq!(second.requests()[0].json()["model"], "b-large");
    assert_eq!(first.requests()[0].json()["model"], "a-large");
}

#[tokio::test]
async fn a_retry_after_past_the_deadline_is_not_waited_for() {
    // The upstream asks for 30 s; the request may take 2 s in all: fail now, with the hint.
    let upstream = flaky(usize::MAX, rate_limited(30_000)).await;
    let daemon = daemon(&provider(
        "p",
        &upstream,
        "retry_attempts = 5\ntotal_timeout_seconds = 2",
    ));
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::RateLimited);
    assert_eq!(err.retry_after_ms, Some(30_000));
    assert_eq!(upstream.requests().len(), 1);
}

/// Runs one generation against `upstream` with `limits` in the provider's table and
/// returns its error, which must be a timeout naming `which`, and the daemon, still
/// running.
async fn timed_out(
    upstream: &Upstream,
    limits: &str,
    which: &str,
) -> (provd_client::WireError, Daemon) {
    let daemon = daemon(&provider("p", upstream, limits));
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::Timeout, "{err}");
    assert!(err.message.contains(which), "{}", err.message);
    (err, daemon)
}

#[tokio::test]
async fn the_total_deadline_ends_a_request_whose_upstream_never_answers() {
    let upstream = Upstream::start(|_| answer().after(vec![Part::Stall])).await;
    let limits = "total_timeout_seconds = 1\ntimeout_seconds = 60";
    let (_, _daemon) = timed_out(&upstream, limits, "total timeout of 1s").await;
    // The deadline itself closed the upstream connection: the daemon still runs.
    upstream.wait_for(Seen::ClientClosedEarly(0)).await;
}

#[tokio::test]
async fn the_first_byte_timeout_is_named_in_the_error() {
    let upstream = Upstream::start(|_| answer().after(vec![Part::Stall])).await;
    let limits = "timeout_seconds = 1\nretry_attempts = 0";
    timed_out(&upstream, limits, "first-byte timeout of 1s").await;
}

#[tokio::test]
async fn the_idle_timeout_is_named_in_the_error() {
    let first = openai::chunk_event("m", serde_json::json!({"content": "x"}), None);
    let upstream = Upstream::start(move |_| {
        Reply::stream(
            "text/event-stream",
            vec![Part::Bytes(first.clone().into_bytes()), Part::Stall],
        )
    })
    .await;
    let limits = "timeout_seconds = 1\nretry_attempts = 0";
    let (err, _) = timed_out(&upstream, limits, "idle longer than the idle timeout of 1s").await;
    assert_eq!(err.chunks, Some(1));
}

// Multi-threaded: the raw client blocks its thread while the upstream serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_flow_while_the_upstream_is_silent() {
    let release = Arc::new(tokio::sync::Notify::new());
    let held = release.clone();
    let upstream = Upstream::start(move |_| answer().after(vec![Part::Wait(held.clone())])).await;
    let daemon = Daemon::builder()
        .config(&format!(
            "[daemon]\nkeepalive_interval_ms = 20\n{}",
            provider("p", &upstream, "")
        ))
        .start();
    let mut raw = RawConn::greeted(&daemon.socket);
    raw.request(7, "generate", &GenerateRequest::prompt("think hard"));
    let mut keepalives = 0;
    while keepalives < 3 {
        match raw.read_frame().expect("open") {
            Frame::Notification(m, p) if m == "keepalive" => {
                assert_eq!(p["id"], 7);
                keepalives += 1;
            }
            other => panic!("before the answer only keepalives may come, got {other:?}"),
        }
    }
    release.notify_one();
    let (frame, chunks) = raw.read_reply(7);
    assert!(matches!(frame, Frame::Result(7, _)), "{frame:?}");
    assert_eq!(chunks.len(), 1);
}

/// A spent quota is final for the primary (no retry) but not for another account: the
/// fallback serves, and the result says so.
#[tokio::test]
async fn a_spent_quota_is_not_retried_but_falls_back() {
    let primary = flaky(
        usize::MAX,
        openai::error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
    )
    .await;
    let backup = flaky(0, answer()).await;
    let daemon = daemon(&format!(
        "default_provider = \"primary\"\n{}{}",
        provider(
            "primary",
            &primary,
            "retry_attempts = 3\nfallbacks = [\"backup\"]"
        ),
        provider("backup", &backup, "retry_attempts = 0")
    ));
    let client = daemon.client().await;
    let (text, done) = provd_tests::generation_text(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(text, "ok");
    assert_eq!(done.provider, "backup");
    assert_eq!(primary.requests().len(), 1, "a spent quota is not retried");
}

/// A loopback port that was just free: nothing listens on it.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn connect_dns_and_tls_failures_name_the_url_tried_for_every_provider_type() {
    // A server that hangs up on every connection at once: a TLS handshake with it fails.
    let hang_up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = hang_up.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = hang_up.accept().await {
            drop(socket);
        }
    });
    let closed = closed_port();
    // (provider type, base URL, the origin the error must name)
    let cases = [
        (
            "anthropic",
            format!("http://127.0.0.1:{closed}"),
            format!("http://127.0.0.1:{closed}"),
        ),
        (
            "openai",
            format!("http://127.0.0.1:{closed}/v1"),
            format!("http://127.0.0.1:{closed}"),
        ),
        (
            "openai-compatible",
            format!("http://127.0.0.1:{closed}/v1"),
            format!("http://127.0.0.1:{closed}"),
        ),
        (
            "gemini",
            format!("http://127.0.0.1:{closed}"),
            format!("http://127.0.0.1:{closed}"),
        ),
        (
            "ollama",
            format!("http://127.0.0.1:{closed}"),
            format!("http://127.0.0.1:{closed}"),
        ),
        // A name that cannot resolve (RFC 6761 reserves .invalid).
        (
            "openai-compatible",
            "http://provd-test.invalid:8080/v1".to_owned(),
            "http://provd-test.invalid:8080".to_owned(),
        ),
        // A TLS handshake that the server ends.
        (
            "anthropic",
            format!("https://127.0.0.1:{plain_port}"),
            format!("https://127.0.0.1:{plain_port}"),
        ),
    ];
    let config: String = cases
        .iter()
        .enumerate()
        .map(|(i, (kind, base_url, _))| {
            format!(
                "[providers.p{i}]\ntype = \"{kind}\"\nbase_url = \"{base_url}\"\ndefault_model = \"m\"\n\
                 api_key_env = \"PROVD_TEST_KEY\"\nretry_attempts = 0\n"
            )
        })
        .collect();
    let daemon = daemon(&config);
    let client = daemon.client().await;
    for (i, (kind, _, origin)) in cases.iter().enumerate() {
        let mut request = GenerateRequest::prompt("q");
        request.provider = Some(format!("p{i}"));
        let err = provd_tests::generation_error(&client, request).await;
        assert!(
            err.message.contains(&format!("{origin}:"))
                || err.message.contains(&format!("{origin} ")),
            "{kind}: {}",
            err.message
        );
    }
}
