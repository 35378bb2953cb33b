//! The `azure-openai` provider against a faithful mock of Azure OpenAI: the v1 and the
//! deployment endpoints, `api-key` and Entra bearer authentication, the endpoint from the
//! configuration or `AZURE_OPENAI_ENDPOINT`, the prompt-filter first chunk, content-filter
//! refusals and finishes, error bodies, usage parity, configured deployments as models.

use provd_client::{ErrorCode, FinishReason, GenerateEvent, GenerateRequest, Usage};
use provd_tests::apis::{
    assert_overrides_refused, assert_streamed_matches_whole, azure, cancel_after_the_first_chunk,
    real_service, TEST_KEY,
};
use provd_tests::upstream::{Reply, Upstream};
use provd_tests::Daemon;
use serde_json::json;

/// The deployment the tests' requests go to.
const DEPLOYMENT: &str = "chat-prod";
/// The model Azure says answered (a deployment's model is not its name).
const ANSWERING_MODEL: &str = "gpt-4o-2024-08-06";

/// A config with one `azure-openai` provider `p`; `options` is its options table's body.
fn config(options: &str) -> String {
    format!(
        "[daemon]\ndefault_provider = \"p\"\nkeepalive_interval_ms = 0\n\n\
         [providers.p]\ntype = \"azure-openai\"\ndefault_model = \"{DEPLOYMENT}\"\n\
         api_key_env = \"PROVD_TEST_KEY\"\nretry_attempts = 0\ntimeout_seconds = 30\n\n\
         [providers.p.options]\n{options}\n"
    )
}

fn daemon_for(upstream: &Upstream, options: &str) -> Daemon {
    Daemon::builder()
        .config(&config(&format!(
            "endpoint = \"{}\"\n{options}",
            upstream.base_url
        )))
        .env("PROVD_TEST_KEY", TEST_KEY)
        .env_remove("AZURE_OPENAI_ENDPOINT")
        .start()
}

fn answer() -> Reply {
    azure::stream_reply(
        &azure::stream_text(ANSWERING_MODEL, &["Hé", "llo", " wörld ✓"], "stop", (12, 3)),
        7,
    )
}

async fn collect(
    client: &provd_client::Client,
    request: GenerateRequest,
) -> (Vec<String>, provd_client::GenerateDone) {
    let mut generation = client.generate(request).await.unwrap();
    let mut texts = Vec::new();
    loop {
        match generation.next().await.unwrap().unwrap() {
            GenerateEvent::Chunk(c) => texts.push(c.text),
            GenerateEvent::Done(d) => return (texts, d),
        }
    }
}

#[tokio::test]
async fn the_v1_endpoint_gets_the_deployment_as_model_and_the_key_as_api_key() {
    let upstream = Upstream::start(|_| answer()).await;
    let daemon = daemon_for(&upstream, "");
    let client = daemon.client().await;
    let (texts, done) = collect(&client, GenerateRequest::prompt("q")).await;
    // The first chunk (no choices, only the prompt's filter results) adds no text.
    assert_eq!(texts, ["Hé", "llo", " wörld ✓"]);
    assert_eq!(done.usage, Usage::new(12, 3));
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert_eq!(done.provider, "p");
    assert_eq!(
        done.model, ANSWERING_MODEL,
        "the model Azure says answered, never the first chunk's empty name"
    );

    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/openai/v1/chat/completions");
    assert_eq!(r.header("api-key"), Some(TEST_KEY));
    assert_eq!(r.header("authorization"), None);
    let body = r.json();
    assert_eq!(body["model"], DEPLOYMENT);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["messages"], json!([{"role": "user", "content": "q"}]));
}

#[tokio::test]
async fn with_an_api_version_the_deployment_endpoint_is_used() {
    let upstream = Upstream::start(|_| answer()).await;
    let daemon = daemon_for(&upstream, "api_version = \"2024-10-21\"");
    let client = daemon.client().await;
    let mut request = GenerateRequest::prompt("q");
    request.model = Some("chat-eu".into());
    let (texts, _) = collect(&client, request).await;
    assert_eq!(texts.concat(), "Héllo wörld ✓");
    let r = &upstream.requests()[0];
    assert_eq!(
        r.target,
        "/openai/deployments/chat-eu/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(r.header("api-key"), Some(TEST_KEY));
}

#[tokio::test]
async fn a_client_chosen_model_never_leaves_the_deployment_path() {
    // A hostile client names models that would climb out of, or add to, the deployment
    // API's path; none reaches Azure.
    let upstream = Upstream::start(|_| answer()).await;
    let daemon = daemon_for(&upstream, "api_version = \"2024-10-21\"");
    let client = daemon.client().await;
    for hostile in [
        "../../openai/v1/files",
        "chat/../../x",
        "chat?api-version=1",
        "chat#x",
        "..",
        "%2e%2e",
    ] {
        let mut request = GenerateRequest::prompt("q");
        request.model = Some(hostile.into());
        let err = provd_tests::generation_error(&client, request).await;
        assert_eq!(err.code, ErrorCode::InvalidRequest, "{hostile}: {err}");
        assert!(err.message.contains("deployment name"), "{hostile}: {err}");
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn an_entra_token_goes_as_a_bearer_token_and_never_as_api_key() {
    let upstream = Upstream::start(|_| answer()).await;
    let daemon = daemon_for(&upstream, "auth = \"entra\"");
    let client = daemon.client().await;
    collect(&client, GenerateRequest::prompt("q")).await;
    let r = &upstream.requests()[0];
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {TEST_KEY}").as_str())
    );
    assert_eq!(r.header("api-key"), None);
}

#[tokio::test]
async fn the_endpoint_may_come_from_azure_openai_endpoint() {
    let upstream = Upstream::start(|_| answer()).await;
    let daemon = Daemon::builder()
        .config(&config(""))
        .env("PROVD_TEST_KEY", TEST_KEY)
        .env("AZURE_OPENAI_ENDPOINT", &format!("{}/", upstream.base_url))
        .start();
    let client = daemon.client().await;
    collect(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(
        upstream.requests()[0].target,
        "/openai/v1/chat/completions",
        "a trailing slash on the endpoint is not doubled"
    );
}

#[tokio::test]
async fn without_an_endpoint_a_request_fails_saying_where_to_put_one() {
    let daemon = Daemon::builder()
        .config(&config(""))
        .env("PROVD_TEST_KEY", TEST_KEY)
        .env_remove("AZURE_OPENAI_ENDPOINT")
        .start();
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{err}");
    assert!(err.message.contains("options.endpoint"), "{err}");
    assert!(err.message.contains("AZURE_OPENAI_ENDPOINT"), "{err}");
}

#[test]
fn unknown_options_and_a_bad_auth_are_refused_at_start() {
    for (options, needle) in [
        (
            "endpoint = \"http://127.0.0.1:9\"\nauth = \"password\"",
            "auth",
        ),
        (
            "endpoint = \"http://127.0.0.1:9\"\ndeployment = \"x\"",
            "deployment",
        ),
        ("endpoint = \"not a url\"", "endpoint"),
    ] {
        let (status, log) = Daemon::builder()
            .config(&config(options))
            .env_remove("AZURE_OPENAI_ENDPOINT")
            .spawn()
            .wait();
        assert!(!status.success(), "{options}");
        assert!(log.contains(needle), "{options}: {log}");
    }
}

#[tokio::test]
async fn usage_and_text_are_the_same_streamed_or_not() {
    let upstream = Upstream::start(|r| {
        if r.json()["stream"] == true {
            azure::stream_reply(
                &azure::stream_text(
                    ANSWERING_MODEL,
                    &["The answer", " is 42."],
                    "length",
                    (20, 5),
                ),
                13,
            )
        } else {
            Reply::json(
                200,
                &azure::completion(ANSWERING_MODEL, "The answer is 42.", "length", (20, 5)),
            )
        }
    })
    .await;
    let daemon = daemon_for(&upstream, "");
    let client = daemon.client().await;
    let (whole_text, whole) = assert_streamed_matches_whole(&client).await;
    assert_eq!(whole_text, "The answer is 42.");
    assert_eq!(whole.finish_reason, FinishReason::Length);
    assert_eq!(whole.model, ANSWERING_MODEL);
}

#[tokio::test]
async fn a_prompt_the_content_filter_refuses_is_an_invalid_request_saying_so() {
    let upstream = Upstream::start(|_| azure::content_filter_error()).await;
    let daemon = daemon_for(&upstream, "");
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::InvalidRequest, "{err}");
    assert!(!err.retryable);
    assert!(err.message.contains("content management policy"), "{err}");
    assert_eq!(upstream.requests().len(), 1, "not retried");
}

#[tokio::test]
async fn an_answer_the_content_filter_stops_ends_with_content_filter() {
    let upstream = Upstream::start(|_| {
        azure::stream_reply(
            &azure::stream_text(ANSWERING_MODEL, &["Once upon"], "content_filter", (9, 2)),
            11,
        )
    })
    .await;
    let daemon = daemon_for(&upstream, "");
    let client = daemon.client().await;
    let (texts, done) = collect(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(texts, ["Once upon"]);
    assert_eq!(done.finish_reason, FinishReason::ContentFilter);
}

#[tokio::test]
async fn azure_errors_map_to_system_codes_and_never_show_the_key() {
    let cases = [
        (
            azure::error(401, "401", azure::ACCESS_DENIED),
            ErrorCode::Unauthenticated,
            None,
        ),
        (
            azure::error(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
            ),
            ErrorCode::NotFound,
            None,
        ),
        (azure::rate_limited(6), ErrorCode::RateLimited, Some(6000)),
        (
            azure::error(500, "InternalServerError", &format!("echo {TEST_KEY}")),
            ErrorCode::UpstreamError,
            None,
        ),
    ];
    for (reply, code, retry_after) in cases {
        let upstream = Upstream::start(move |_| reply.clone()).await;
        let daemon = daemon_for(&upstream, "");
        let client = daemon.client().await;
        let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
        assert_eq!(err.code, code, "{err}");
        assert_eq!(err.retry_after_ms, retry_after, "{err}");
        assert!(!err.message.contains(TEST_KEY), "{err}");
        assert!(!daemon.log().contains(TEST_KEY));
    }
}

#[tokio::test]
async fn list_models_returns_the_configured_deployments_without_asking_azure() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    let daemon = daemon_for(&upstream, "deployments = [\"chat-prod\", \"chat-eu\"]");
    let client = daemon.client().await;
    let models = client.list_models(Some("p")).await.unwrap().models;
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["chat-prod", "chat-eu"]);
    assert!(models.iter().all(|m| m.provider == "p"));
    assert!(upstream.requests().is_empty());

    // Without a list, the default deployment is the one model.
    let daemon = daemon_for(&upstream, "");
    let client = daemon.client().await;
    let models = client.list_models(Some("p")).await.unwrap().models;
    let ids: Vec<_> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [DEPLOYMENT]);
}

#[tokio::test]
async fn a_missing_key_is_unauthenticated_and_names_the_variable() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    let daemon = Daemon::builder()
        .config(
            &config(&format!("endpoint = \"{}\"", upstream.base_url))
                .replace("api_key_env = \"PROVD_TEST_KEY\"\n", ""),
        )
        .env_remove("AZURE_OPENAI_API_KEY")
        .start();
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(err.to_string().contains("AZURE_OPENAI_API_KEY"), "{err}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn cancel_closes_the_upstream_connection() {
    let upstream = Upstream::start(|_| {
        Reply::stream(
            "text/event-stream",
            vec![
                provd_tests::upstream::Part::Bytes(azure::prompt_filter_event().into_bytes()),
                provd_tests::upstream::Part::Bytes(
                    azure::chunk_event(
                        ANSWERING_MODEL,
                        json!({"content": "first"}),
                        azure::filter_results_safe(),
                        None,
                    )
                    .into_bytes(),
                ),
                provd_tests::upstream::Part::Stall,
            ],
        )
    })
    .await;
    let daemon = daemon_for(&upstream, "");
    let client = daemon.client().await;
    let (chunk, _) = cancel_after_the_first_chunk(&client, &upstream).await;
    assert_eq!(chunk.text, "first");
}

#[tokio::test]
async fn additional_params_may_not_override_the_model_or_streaming() {
    let upstream = Upstream::start(|_| Reply::json(500, &json!({}))).await;
    let daemon = daemon_for(&upstream, "");
    let client = daemon.client().await;
    assert_overrides_refused(
        &client,
        &upstream,
        &[("model", json!("x")), ("stream", json!("x"))],
    )
    .await;
}

/// The real service, when asked for (`PROVD_REAL_TESTS=1`) and a key and endpoint are in
/// the environment (`AZURE_OPENAI_API_KEY`, `AZURE_OPENAI_ENDPOINT`,
/// `AZURE_OPENAI_DEPLOYMENT`).
#[tokio::test]
async fn real_azure_openai_streams_a_short_answer() {
    let Ok(deployment) = std::env::var("AZURE_OPENAI_DEPLOYMENT") else {
        println!("SKIPPED: AZURE_OPENAI_DEPLOYMENT is not set (and PROVD_REAL_TESTS=1, AZURE_OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT)");
        return;
    };
    let Some(daemon) = real_service(
        "Azure OpenAI",
        "AZURE_OPENAI_API_KEY",
        &format!(
            "[daemon]\ndefault_provider = \"azure\"\n[providers.azure]\ntype = \"azure-openai\"\ndefault_model = \"{deployment}\"\n"
        ),
    ) else {
        return;
    };
    let client = daemon.client().await;
    let mut request = GenerateRequest::prompt("Say hello in one word.");
    request.max_tokens = Some(16);
    let (text, done) = provd_tests::generation_text(&client, request).await;
    assert!(!text.is_empty());
    assert!(done.usage.completion_tokens > 0);
}
