//! Faithful mock versions of each provider's HTTP API, built on [`crate::upstream`]:
//! the documented response bodies, stream event shapes, error bodies and headers, so the
//! daemon's providers are tested against the wire format they will meet.

pub mod anthropic;
pub mod azure;
pub mod gemini;
pub mod hostile;
pub mod ollama;
pub mod openai;

/// A daemon config with one provider of `kind` pointed at `base_url`, its key read from
/// `PROVD_TEST_KEY`, short timeouts and `retry_attempts` retries; `extra` is appended to
/// the provider's table.
pub fn provider_config(kind: &str, base_url: &str, retry_attempts: u32, extra: &str) -> String {
    format!(
        "[daemon]\ndefault_provider = \"p\"\nkeepalive_interval_ms = 0\n\n\
         [providers.p]\ntype = \"{kind}\"\nbase_url = \"{base_url}\"\ndefault_model = \"test-model\"\n\
         api_key_env = \"PROVD_TEST_KEY\"\nretry_attempts = {retry_attempts}\ntimeout_seconds = 30\n{extra}\n"
    )
}

/// The key the test daemons are given; tests assert it reaches the upstream and nothing
/// else.
pub const TEST_KEY: &str = "sk-test-0123456789abcdef-SECRET";

/// A request that sets every field a provider maps (system prompt, a two-turn
/// conversation before the prompt, max_tokens, temperature, top_p, stop), plus the given
/// provider-specific `additional_params`: what each provider's "documented request" test
/// sends.
pub fn full_request(additional: &[(&str, serde_json::Value)]) -> provd_client::GenerateRequest {
    use provd_client::{Message, Role};
    let mut r = provd_client::GenerateRequest::prompt("and now?");
    r.system = Some("be brief".into());
    r.messages = vec![
        Message::text(Role::User, "hello"),
        Message::text(Role::Assistant, "hi"),
    ];
    r.max_tokens = Some(77);
    r.temperature = Some(0.5);
    r.top_p = Some(0.9);
    r.stop = vec!["END".into()];
    for (key, value) in additional {
        r.additional_params.insert((*key).to_owned(), value.clone());
    }
    r
}

/// Asserts that each `(key, value)` in `additional_params` is refused as an invalid
/// request naming `additional_params.<key>`, and that none of them reached `upstream`:
/// what each provider's "additional_params may not override" test checks.
pub async fn assert_overrides_refused(
    client: &provd_client::Client,
    upstream: &crate::upstream::Upstream,
    overrides: &[(&str, serde_json::Value)],
) {
    for (key, value) in overrides {
        let mut request = provd_client::GenerateRequest::prompt("q");
        request
            .additional_params
            .insert((*key).to_owned(), value.clone());
        let err = crate::generation_error(client, request).await;
        assert_eq!(
            err.code,
            provd_client::ErrorCode::InvalidRequest,
            "{key}: {err}"
        );
        assert!(
            err.message.contains(&format!("additional_params.{key}")),
            "{key}: {err}"
        );
    }
    assert!(upstream.requests().is_empty());
}

/// Runs the same prompt streamed and not streamed and asserts that both give the same
/// text, usage and finish reason: the conformance every provider owes. Returns the
/// non-streamed text and done, for the provider's own expectations.
pub async fn assert_streamed_matches_whole(
    client: &provd_client::Client,
) -> (String, provd_client::GenerateDone) {
    let streamed = crate::generation_text(client, provd_client::GenerateRequest::prompt("q")).await;
    let mut request = provd_client::GenerateRequest::prompt("q");
    request.stream = false;
    let whole = crate::generation_text(client, request).await;
    assert_eq!(streamed.0, whole.0);
    assert_eq!(streamed.1.usage, whole.1.usage);
    assert_eq!(streamed.1.finish_reason, whole.1.finish_reason);
    whole
}

/// Starts a generation on `client`, reads its first chunk, cancels it, and asserts that
/// `upstream` saw its connection closed and that the generation ended `cancelled` after
/// that one chunk. Returns the chunk and the terminal error, for the provider's own
/// expectations (the usage known so far).
pub async fn cancel_after_the_first_chunk(
    client: &provd_client::Client,
    upstream: &crate::upstream::Upstream,
) -> (provd_client::Chunk, provd_client::WireError) {
    let mut generation = client
        .generate(provd_client::GenerateRequest::prompt("q"))
        .await
        .expect("the generation starts");
    let first = match generation.next().await {
        Some(Ok(provd_client::GenerateEvent::Chunk(chunk))) => chunk,
        other => panic!("expected a first chunk, got {other:?}"),
    };
    client.cancel(generation.id()).await.expect("cancel");
    upstream
        .wait_for(crate::upstream::Seen::ClientClosedEarly(0))
        .await;
    let err = generation
        .collect_text()
        .await
        .expect_err("a cancelled generation fails")
        .to_wire();
    assert_eq!(err.code, provd_client::ErrorCode::Cancelled, "{err}");
    assert_eq!(err.chunks, Some(1));
    (first, err)
}

/// Starts a generation whose upstream holds its response back, cancels it once the
/// upstream has the request, and asserts that the upstream saw its connection closed and
/// that the generation ended `cancelled`.
pub async fn cancel_before_the_first_byte(
    client: &provd_client::Client,
    upstream: &crate::upstream::Upstream,
) {
    let generation = client
        .generate(provd_client::GenerateRequest::prompt("q"))
        .await
        .expect("the generation starts");
    upstream.wait_for(crate::upstream::Seen::Request(0)).await;
    client.cancel(generation.id()).await.expect("cancel");
    upstream
        .wait_for(crate::upstream::Seen::ClientClosedEarly(0))
        .await;
    let err = generation
        .collect_text()
        .await
        .expect_err("a cancelled generation fails");
    assert_eq!(err.code(), provd_client::ErrorCode::Cancelled, "{err}");
}

/// The variable that asks for the tests against real services (`PROVD_REAL_TESTS=1`).
pub const REAL_TESTS_ENV: &str = "PROVD_REAL_TESTS";

/// Whether the tests against real services were asked for: `PROVD_REAL_TESTS=1`. Without
/// it none of them calls out, or even probes a well-known port, whatever keys the
/// environment holds or whatever happens to listen there. Prints a SKIPPED line when not.
pub fn real_tests_asked_for(name: &str) -> bool {
    let asked = real_tests_value_asks(std::env::var_os(REAL_TESTS_ENV).as_deref());
    if !asked {
        eprintln!("SKIPPED: {REAL_TESTS_ENV}=1 is not set; the real {name} is not called");
    }
    asked
}

/// `PROVD_REAL_TESTS`'s value asks for the real-service tests only when it is `1`.
fn real_tests_value_asks(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v == "1")
}

/// A daemon for a test against the real service `name`: one provider configured by
/// `config`, given the key in `$key_env`. `None`, with a SKIPPED line, unless
/// `PROVD_REAL_TESTS=1` and the key is in the environment (tests never need a key to
/// pass).
pub fn real_service(name: &str, key_env: &str, config: &str) -> Option<crate::Daemon> {
    if !real_tests_asked_for(&format!("{name} API")) {
        return None;
    }
    let Ok(key) = std::env::var(key_env) else {
        eprintln!("SKIPPED: {key_env} is not set; the real {name} API is not called");
        return None;
    };
    Some(
        crate::Daemon::builder()
            .config(config)
            .env(key_env, &key)
            .start(),
    )
}

/// One provider type as the tests that every type must pass drive it: its mock's
/// streamed answer, the same answer whole, and the error body it sends.
#[derive(Clone, Copy)]
pub struct Api {
    /// The `type` in the provider's table.
    pub kind: &'static str,
    /// The content type of its stream.
    pub content_type: &'static str,
    /// Its streamed answer of these texts, naming this model: what the upstream sends.
    pub stream: fn(model: &str, texts: &[&str]) -> String,
    /// Its non-streamed answer of this text, naming this model.
    pub whole: fn(model: &str, text: &str) -> serde_json::Value,
    /// Whether its wire format is SSE (else NDJSON).
    pub sse: bool,
}

/// Every HTTP provider type; tests that must hold for each loop over this.
pub fn every_api() -> [Api; 6] {
    let openai = Api {
        kind: "openai",
        content_type: "text/event-stream",
        stream: |model, texts| openai::stream_text(model, texts, "stop", (5, 2)),
        whole: |model, text| openai::completion(model, text, "stop", (5, 2)),
        sse: true,
    };
    [
        openai,
        Api {
            kind: "openai-compatible",
            ..openai
        },
        Api {
            kind: "anthropic",
            content_type: "text/event-stream; charset=utf-8",
            stream: |model, texts| anthropic::stream_text(model, texts, "end_turn", (5, 2)),
            whole: |model, text| anthropic::message(model, text, "end_turn", (5, 2)),
            sse: true,
        },
        Api {
            kind: "gemini",
            content_type: "text/event-stream",
            stream: |model, texts| gemini::stream_text(model, texts, "STOP", (5, 2, 0)),
            whole: |model, text| gemini::whole(model, text, "STOP", (5, 2, 0)),
            sse: true,
        },
        Api {
            kind: "ollama",
            content_type: "application/x-ndjson",
            stream: |model, texts| ollama::stream_text(model, texts, "stop", (5, 2)),
            whole: |model, text| ollama::chat_response(model, text, "stop", (5, 2)),
            sse: false,
        },
        Api {
            kind: "azure-openai",
            content_type: "text/event-stream",
            stream: |model, texts| azure::stream_text(model, texts, "stop", (5, 2)),
            whole: |model, text| azure::completion(model, text, "stop", (5, 2)),
            sse: true,
        },
    ]
}

impl Api {
    /// Its streamed answer without the line ending(s) after the last event: `blank`
    /// drops only the blank line that dispatches an SSE event, otherwise the last
    /// line's own ending goes too (a last `data:` or NDJSON line without its newline).
    pub fn stream_unterminated(&self, model: &str, texts: &[&str], blank: bool) -> String {
        let whole = (self.stream)(model, texts);
        let trimmed = whole.trim_end_matches(['\r', '\n']);
        if blank && self.sse {
            // Keep the last line's ending, as the server wrote it.
            let ending = if whole.ends_with("\r\n\r\n") {
                "\r\n"
            } else {
                "\n"
            };
            format!("{trimmed}{ending}")
        } else {
            trimmed.to_owned()
        }
    }

    /// A daemon whose provider `p` is of this type at `base_url`, with the test key and
    /// no retries; `env` adds environment variables.
    pub fn daemon(&self, base_url: &str, env: &[(&str, &str)]) -> crate::Daemon {
        let mut builder = crate::Daemon::builder().provider(self.kind, base_url, 0, "");
        for (key, value) in env {
            builder = builder.env(key, value);
        }
        builder.start()
    }
}

#[cfg(test)]
mod tests {
    use super::real_tests_value_asks;

    #[test]
    fn real_service_tests_run_only_when_provd_real_tests_is_1() {
        assert!(real_tests_value_asks(Some("1".as_ref())));
        for other in ["", "0", "true", "yes", " 1"] {
            assert!(!real_tests_value_asks(Some(other.as_ref())), "{other:?}");
        }
        assert!(!real_tests_value_asks(None));
    }
}
