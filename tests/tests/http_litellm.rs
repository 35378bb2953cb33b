//! The LiteLLM proxy as a gateway whose provider is provd: LiteLLM (from the suite's
//! pinned requirements, one worker) routes its model to provd's loopback OpenAI route
//! with a provd token, and a client of LiteLLM gets the mock provider's answer, streamed
//! and whole, with provd's usage figures.
//!
//! One test with one proxy for both requests: LiteLLM takes seconds to start. The
//! benchmark (`provd-bench --only http`) measures the same path. Without the package the
//! test says SKIPPED, except in CI, which installs it; scripts/test names it when it
//! leaves it out.

use provd_tests::litellm::{self, LiteLlm, MASTER_KEY, MODEL};
use provd_tests::{run_provd, Daemon};
use serde_json::{json, Value};

/// The mock provider's answer, sent one word per chunk.
const ANSWER: &str = "provd answered through the LiteLLM gateway";
/// The user's message: the mock counts its words as prompt tokens.
const QUESTION: &str = "who answers me";

/// A daemon whose provider `m` is the mock answering [`ANSWER`], with the loopback TCP
/// listener on a port the kernel picks.
fn daemon() -> Daemon {
    Daemon::with_config(&format!(
        "[daemon]\ndefault_provider = \"m\"\n\
         [providers.m]\ntype = \"mock\"\ndefault_model = \"mock-1\"\n\
         [providers.m.options]\ntext = \"{ANSWER}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n"
    ))
}

/// `provd token create --providers m`: a token for LiteLLM to present on loopback.
fn token(daemon: &Daemon) -> String {
    let (status, stdout, stderr) =
        run_provd(&["token", "create", "--providers", "m"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    stdout.trim().to_owned()
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// A chat completion asked of LiteLLM: the response's body as text.
async fn ask(proxy: &LiteLlm, body: Value) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", proxy.base_url))
        .bearer_auth(MASTER_KEY)
        .json(&body)
        .send()
        .await
        .expect("LiteLLM answers");
    let status = response.status();
    let text = response.text().await.expect("LiteLLM's body");
    assert!(
        status.is_success(),
        "LiteLLM said {status}: {text}\n{}",
        proxy.log()
    );
    text
}

/// The usage figures the mock gives for [`QUESTION`] and [`ANSWER`].
fn assert_mock_usage(usage: &Value) {
    assert_eq!(usage["prompt_tokens"], words(QUESTION), "{usage}");
    assert_eq!(usage["completion_tokens"], words(ANSWER), "{usage}");
    assert_eq!(
        usage["total_tokens"],
        words(QUESTION) + words(ANSWER),
        "{usage}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litellm_proxy_serves_provds_answer_streamed_and_whole_with_its_usage() {
    let python = provd_tests::python();
    if let Some(why) = litellm::unavailable(&python) {
        // CI installs it, so there a missing one is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    provd_tests::install_crypto_provider();
    let daemon = daemon();
    let port = litellm::provd_loopback_port(&daemon);
    let proxy = LiteLlm::start(
        &python,
        &format!("http://127.0.0.1:{port}/v1"),
        "m/mock-1",
        &token(&daemon),
    )
    .await;
    let question = json!([{"role": "user", "content": QUESTION}]);

    let whole: Value =
        serde_json::from_str(&ask(&proxy, json!({"model": MODEL, "messages": question})).await)
            .expect("a JSON completion");
    assert_eq!(whole["object"], "chat.completion", "{whole}");
    assert_eq!(whole["choices"][0]["message"]["content"], ANSWER, "{whole}");
    assert_eq!(whole["choices"][0]["finish_reason"], "stop", "{whole}");
    assert_mock_usage(&whole["usage"]);

    let body = ask(
        &proxy,
        json!({
            "model": MODEL,
            "messages": question,
            "stream": true,
            "stream_options": {"include_usage": true},
        }),
    )
    .await;
    let data: Vec<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(str::trim)
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{body}");
    let events: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}")))
        .collect();
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, ANSWER, "{body}");
    let content_chunks = events
        .iter()
        .filter(|e| {
            e["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        })
        .count();
    assert!(
        content_chunks > 1,
        "the answer came in several chunks: {body}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "stop"),
        "{body}"
    );
    let usage = events
        .iter()
        .rev()
        .find(|e| e["usage"].is_object())
        .unwrap_or_else(|| panic!("no usage in the stream: {body}"));
    assert_mock_usage(&usage["usage"]);

    // Both went through provd, as the mock's answers show; its counters say so too.
    drop(proxy);
    let (status, out, stderr) = run_provd(&["status", "--json"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    let status: Value = serde_json::from_str(&out).expect("status as JSON");
    let metrics = &status["provider_counters"][0]["metrics"];
    assert_eq!(metrics["requests"], 2, "{status}");
    assert_eq!(metrics["prompt_tokens"], 2 * words(QUESTION), "{status}");
    assert_eq!(metrics["completion_tokens"], 2 * words(ANSWER), "{status}");
}
