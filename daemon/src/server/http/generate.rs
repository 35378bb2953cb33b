//! The original design's `POST /generate`, as a pure codec: its `GenerationRequest` body
//! read into a [`GenerateRequest`], and the answers written in its own shapes. Nothing
//! here does I/O or knows the router; the HTTP core calls these functions.
//!
//! # The request
//!
//! A JSON object with the original design's `GenerationRequest` fields:
//!
//! | field | type | becomes |
//! |---|---|---|
//! | `provider_id` | string, optional | [`GenerateRequest::provider`]; the default provider when absent |
//! | `model_id` | string, optional | [`GenerateRequest::model`]; the provider's default model when absent |
//! | `prompt` | string, required, not empty | [`GenerateRequest::prompt`] |
//! | `system_prompt` | string, optional | [`GenerateRequest::system`] |
//! | `max_tokens` | integer ≥ 1, optional | [`GenerateRequest::max_tokens`] |
//! | `temperature` | number, optional | [`GenerateRequest::temperature`] |
//! | `stream` | boolean, default **false** | [`GenerateRequest::stream`] |
//! | `additional_params` | object, optional | [`GenerateRequest::additional_params`], passed to the provider |
//!
//! `null` is the same as absent. With `provider_id` given, `model_id` is that provider's
//! model as is; without it, `model_id` is a model name as every front door reads one
//! (`provider/model`, an alias, or a model of the default provider), which the core
//! resolves. Any other field is refused, naming it: this is provd's own API, and a
//! misspelt `max_token` silently ignored would cost the caller more than a 400.
//! `stream` defaults to false because the original design's answer is one object.
//!
//! # The answers
//!
//! Not streamed (`application/json`), status 200:
//!
//! ```json
//! {"success": true, "data": {"model": "claude-sonnet-4-5", "response": "Hello!",
//!   "tokens": {"prompt": 12, "completion": 3, "total": 15},
//!   "finish_reason": "stop", "done": true}}
//! ```
//!
//! `model` is the model that answered, as its provider names it. `finish_reason` (`stop`,
//! `length`, `content_filter`, `tool_calls` or `other`, provd's [`FinishReason`]) and `done`
//! are provd's additions to the seed's object: without the first a cut-off answer looks
//! like a whole one, and the second marks the last line of a stream.
//!
//! Streamed (`"stream": true`): NDJSON (`application/x-ndjson`), one object a line. Each
//! piece of text is a chunk object:
//!
//! ```json
//! {"success": true, "data": {"model": "claude-sonnet-4-5", "response": "Hel", "done": false}}
//! ```
//!
//! and the last line is the seed's final object above with `response` empty (the text
//! went in the chunks, so memory does not grow with the answer) and `done: true`. A
//! reader tells the last line by `data.done` (or by `data.tokens`, present only there).
//!
//! Errors: `{"success": false, "error": {"code": "not_found", "message": "..."}}` with
//! the status of the code ([`status_for`]). An error after the stream has begun cannot
//! change the status (200 is sent): it is the stream's last line, in the same shape.

use provd_client::{ErrorCode, FinishReason, GenerateRequest, Usage, WireError};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};

/// The content type of a streamed answer.
pub const NDJSON: &str = "application/x-ndjson";

/// The fields a `/generate` body may have, as its refusals list them.
const FIELDS: &[&str] = &[
    "provider_id",
    "model_id",
    "prompt",
    "system_prompt",
    "max_tokens",
    "temperature",
    "stream",
    "additional_params",
];

/// The HTTP status of each provd error code (DECISIONS, "Front door"). `cancelled` is
/// 499, the status a client that went away is logged with: nobody reads it.
pub fn status_for(code: ErrorCode) -> StatusCode {
    let status = match code {
        ErrorCode::InvalidRequest | ErrorCode::ProtocolError => 400,
        ErrorCode::Unauthenticated => 401,
        ErrorCode::PermissionDenied => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::RateLimited => 429,
        ErrorCode::Cancelled => 499,
        ErrorCode::Internal => 500,
        ErrorCode::UpstreamError => 502,
        ErrorCode::Unavailable | ErrorCode::Overloaded => 503,
        ErrorCode::Timeout => 504,
    };
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Reads a `/generate` body. Every refusal is `invalid_request` (a 400 through
/// [`error_body`]) and names the field at fault.
pub fn parse_request(body: &[u8]) -> Result<GenerateRequest, WireError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid(
            "the body is empty; send a JSON object with at least \"prompt\"",
        ));
    }
    let object = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            return Err(invalid(format!(
                "the body must be a JSON object (a GenerationRequest), got {}",
                kind(&other)
            )))
        }
        Err(e) => return Err(invalid(format!("the body is not valid JSON: {e}"))),
    };
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field \"{}\"; a GenerationRequest has {}",
            crate::untrusted::untrusted(unknown),
            FIELDS.join(", ")
        )));
    }
    let prompt = string(&object, "prompt")?.ok_or_else(|| invalid("prompt is required"))?;
    if prompt.is_empty() {
        return Err(invalid("prompt must not be empty"));
    }
    let max_tokens = match present(&object, "max_tokens") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "max_tokens must be an integer from 1 to {}, got {v}",
                        u32::MAX
                    ))
                })?,
        ),
    };
    let temperature = match present(&object, "temperature") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .map(|t| t as f32)
                .filter(|t| t.is_finite())
                .ok_or_else(|| invalid(format!("temperature must be a number, got {v}")))?,
        ),
    };
    let stream = match present(&object, "stream") {
        None => false,
        Some(v) => v
            .as_bool()
            .ok_or_else(|| invalid(format!("stream must be true or false, got {v}")))?,
    };
    let additional_params = match present(&object, "additional_params") {
        None => Default::default(),
        Some(Value::Object(params)) => params.clone().into_iter().collect(),
        Some(v) => {
            return Err(invalid(format!(
                "additional_params must be an object, got {}",
                kind(v)
            )))
        }
    };
    Ok(GenerateRequest {
        provider: non_empty(string(&object, "provider_id")?, "provider_id")?,
        model: non_empty(string(&object, "model_id")?, "model_id")?,
        prompt: Some(prompt),
        messages: Vec::new(),
        system: string(&object, "system_prompt")?.filter(|s| !s.is_empty()),
        max_tokens,
        temperature,
        top_p: None,
        stop: Vec::new(),
        stream,
        additional_params,
        ..GenerateRequest::default()
    })
}

/// One streamed piece of text, as a line.
pub fn chunk_line(model: &str, text: &str) -> Vec<u8> {
    line(&json!({
        "success": true,
        "data": {"model": model, "response": text, "done": false},
    }))
}

/// The seed's final object: the answer whole (`response` is the whole text, for a
/// non-streamed answer) or the end of a stream (`response` empty; see
/// [`final_line`]).
pub fn final_object(model: &str, response: &str, usage: Usage, finish: FinishReason) -> Value {
    json!({
        "success": true,
        "data": {
            "model": model,
            "response": response,
            "tokens": {
                "prompt": usage.prompt_tokens,
                "completion": usage.completion_tokens,
                "total": usage.total_tokens,
            },
            "finish_reason": finish,
            "done": true,
        },
    })
}

/// The last line of a stream: [`final_object`] with `response` empty.
pub fn final_line(model: &str, usage: Usage, finish: FinishReason) -> Vec<u8> {
    line(&final_object(model, "", usage, finish))
}

/// An error answer: its status and body.
pub fn error_body(code: ErrorCode, message: &str) -> (StatusCode, Value) {
    (status_for(code), error_object(code, message))
}

/// The line that ends a stream which failed after it began.
pub fn error_line(code: ErrorCode, message: &str) -> Vec<u8> {
    line(&error_object(code, message))
}

fn error_object(code: ErrorCode, message: &str) -> Value {
    json!({"success": false, "error": {"code": code, "message": message}})
}

/// A value as one NDJSON line.
pub(super) fn line(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidRequest, message)
}

/// A field's value, `null` counted as absent (as Go's decoder, Ollama's, reads it too).
pub(super) fn present<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

/// A string field, `null` as absent.
pub(super) fn string(object: &Map<String, Value>, key: &str) -> Result<Option<String>, WireError> {
    match present(object, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(format!(
            "{key} must be a string, got {}",
            kind(other)
        ))),
    }
}

fn non_empty(value: Option<String>, key: &str) -> Result<Option<String>, WireError> {
    match value {
        Some(s) if s.is_empty() => Err(invalid(format!(
            "{key} must not be empty; leave it out for the default"
        ))),
        other => Ok(other),
    }
}

/// A JSON value's type, as refusals name it.
pub(super) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `POST /generate`: the original design's route.
pub async fn route(call: super::Call) -> super::Response {
    serve(call).await.unwrap_or_else(|refused| refused)
}

async fn serve(call: super::Call) -> Result<super::Response, super::Response> {
    let super::Call {
        request,
        caller,
        front,
    } = call;
    let caller = caller.map_err(|e| refusal(&e.into()))?;
    let config = front.daemon.factory.config();
    let bytes = super::body::read(request, config.http.max_body_bytes)
        .await
        .map_err(|e| refusal(&e))?;
    let mut request = parse_request(&bytes).map_err(|e| refusal(&e.into()))?;
    let requested = request.model.clone().unwrap_or_default();
    let stream = request.stream;
    super::resolve(&config, &mut request).map_err(|e| refusal(&e.into()))?;
    drop(config);
    let mut generation =
        super::core::Generation::start(&front, &caller, request).map_err(|e| refusal(&e))?;
    if !stream {
        let done = super::core::whole(generation)
            .await
            .map_err(|e| refusal(&e.into()))?;
        let text = done.text.clone().unwrap_or_default();
        let body = final_object(&done.model, &text, done.usage, done.finish_reason);
        return Ok(super::json(http::StatusCode::OK, &body));
    }
    let first = super::first_event(&mut generation)
        .await
        .map_err(|e| refusal(&e.into()))?;
    let body = super::event_stream(generation, first, move |event| match event {
        super::core::Event::Text(text) => (Some(chunk_line(&requested, &text).into()), false),
        // This route asks for neither tools nor reasoning.
        super::core::Event::Keepalive
        | super::core::Event::ToolCall(_)
        | super::core::Event::Reasoning(_) => (None, false),
        super::core::Event::Done(done) => (
            Some(final_line(&done.model, done.usage, done.finish_reason).into()),
            true,
        ),
        super::core::Event::Failed(e) => (Some(error_line(e.code, &e.message).into()), true),
    });
    Ok(super::streamed("application/x-ndjson", body))
}

fn refusal(e: &super::error::ApiError) -> super::Response {
    super::refusal(e, |code, message| error_body(code, message).1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(body: Value) -> Result<GenerateRequest, WireError> {
        parse_request(body.to_string().as_bytes())
    }

    fn refusal(body: &[u8]) -> String {
        let e = parse_request(body).expect_err("the body should be refused");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert_eq!(error_body(e.code, &e.message).0, StatusCode::BAD_REQUEST);
        e.message
    }

    fn lines(bytes: &[u8]) -> Vec<Value> {
        assert!(bytes.ends_with(b"\n"), "a line ends with a newline");
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn every_field_of_a_generation_request_is_mapped() {
        let r = parse(json!({
            "provider_id": "anthropic",
            "model_id": "claude-sonnet-4-5",
            "prompt": "Say hi",
            "system_prompt": "Be brief.",
            "max_tokens": 64,
            "temperature": 0.5,
            "stream": true,
            "additional_params": {"top_k": 5, "metadata": {"user_id": "u"}},
        }))
        .unwrap();
        assert_eq!(r.provider.as_deref(), Some("anthropic"));
        assert_eq!(r.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(r.prompt.as_deref(), Some("Say hi"));
        assert_eq!(r.system.as_deref(), Some("Be brief."));
        assert_eq!(r.max_tokens, Some(64));
        assert_eq!(r.temperature, Some(0.5));
        assert!(r.stream);
        assert_eq!(r.additional_params["top_k"], json!(5));
        assert_eq!(r.additional_params["metadata"], json!({"user_id": "u"}));
        assert!(r.messages.is_empty() && r.stop.is_empty() && r.top_p.is_none());
    }

    #[test]
    fn a_bare_prompt_is_not_streamed_on_the_default_provider_and_model() {
        let r = parse(json!({"prompt": "hi"})).unwrap();
        assert_eq!(r.provider, None);
        assert_eq!(r.model, None);
        assert!(!r.stream, "the original design answers with one object");
        assert_eq!(r.max_tokens, None);
        assert!(r.additional_params.is_empty());
    }

    #[test]
    fn null_fields_are_absent_fields() {
        let r = parse(json!({
            "prompt": "hi", "provider_id": null, "model_id": null, "system_prompt": null,
            "max_tokens": null, "temperature": null, "stream": null, "additional_params": null,
        }))
        .unwrap();
        assert_eq!(r, parse(json!({"prompt": "hi"})).unwrap());
    }

    #[test]
    fn a_model_id_without_a_provider_is_left_for_the_core_to_resolve() {
        let r = parse(json!({"prompt": "hi", "model_id": "openai/gpt-4o"})).unwrap();
        assert_eq!(r.provider, None);
        assert_eq!(r.model.as_deref(), Some("openai/gpt-4o"));
    }

    #[test]
    fn bad_bodies_are_refused_naming_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "the body is empty"),
            (b"  \n", "the body is empty"),
            (b"{", "not valid JSON"),
            (b"[]", "must be a JSON object"),
            (b"{}", "prompt is required"),
            (br#"{"prompt": ""}"#, "prompt must not be empty"),
            (br#"{"prompt": 1}"#, "prompt must be a string, got a number"),
            (
                br#"{"prompt": "a", "max_token": 5}"#,
                "unknown field \"max_token\"",
            ),
            (
                br#"{"prompt": "a", "max_tokens": 0}"#,
                "max_tokens must be an integer from 1",
            ),
            (
                br#"{"prompt": "a", "max_tokens": -3}"#,
                "max_tokens must be",
            ),
            (
                br#"{"prompt": "a", "max_tokens": 1.5}"#,
                "max_tokens must be",
            ),
            (
                br#"{"prompt": "a", "max_tokens": 4294967296}"#,
                "max_tokens must be",
            ),
            (
                br#"{"prompt": "a", "temperature": "hot"}"#,
                "temperature must be a number",
            ),
            (
                br#"{"prompt": "a", "temperature": 1e300}"#,
                "temperature must be a number",
            ),
            (
                br#"{"prompt": "a", "stream": "yes"}"#,
                "stream must be true or false",
            ),
            (
                br#"{"prompt": "a", "additional_params": [1]}"#,
                "additional_params must be an object",
            ),
            (
                br#"{"prompt": "a", "provider_id": ""}"#,
                "provider_id must not be empty",
            ),
            (
                br#"{"prompt": "a", "model_id": ""}"#,
                "model_id must not be empty",
            ),
            (
                br#"{"prompt": "a", "system_prompt": {}}"#,
                "system_prompt must be a string",
            ),
        ];
        for (body, expected) in cases {
            let message = refusal(body);
            assert!(
                message.contains(expected),
                "{}: {message:?} should say {expected:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn an_unknown_field_refusal_lists_the_fields_there_are() {
        let message = refusal(br#"{"prompt": "a", "n": 2}"#);
        for field in FIELDS {
            assert!(message.contains(field), "{message}");
        }
    }

    #[test]
    fn every_error_code_has_its_status_and_the_seed_shape() {
        let expected = crate::server::http::error::DOCUMENTED_STATUSES;
        assert_eq!(expected.len(), ErrorCode::ALL.len(), "every code is listed");
        for (code, status) in expected {
            let (got, body) = error_body(code, "what failed");
            assert_eq!(got.as_u16(), status, "{code}");
            assert_eq!(
                body,
                json!({"success": false, "error": {"code": code.as_str(), "message": "what failed"}})
            );
        }
    }

    #[test]
    fn the_whole_answer_is_the_seed_object() {
        let body = final_object(
            "claude-sonnet-4-5",
            "Hello!",
            Usage::new(12, 3),
            FinishReason::Stop,
        );
        assert_eq!(
            body,
            json!({"success": true, "data": {
                "model": "claude-sonnet-4-5",
                "response": "Hello!",
                "tokens": {"prompt": 12, "completion": 3, "total": 15},
                "finish_reason": "stop",
                "done": true,
            }})
        );
    }

    #[test]
    fn a_stream_is_chunk_objects_then_the_final_object_with_an_empty_response() {
        let mut out = Vec::new();
        out.extend(chunk_line("m", "Hel"));
        out.extend(chunk_line("m", "lo"));
        out.extend(final_line("m", Usage::new(4, 2), FinishReason::Length));
        let lines = lines(&out);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            json!({"success": true, "data": {"model": "m", "response": "Hel", "done": false}})
        );
        assert_eq!(lines[1]["data"]["response"], "lo");
        assert_eq!(
            lines[2],
            final_object("m", "", Usage::new(4, 2), FinishReason::Length)
        );
        assert_eq!(lines[2]["data"]["finish_reason"], "length");
        let text: String = lines
            .iter()
            .map(|l| l["data"]["response"].as_str().unwrap())
            .collect();
        assert_eq!(text, "Hello");
    }

    #[test]
    fn a_failure_mid_stream_is_a_last_line_in_the_error_shape() {
        let mut out = chunk_line("m", "Hel");
        out.extend(error_line(
            ErrorCode::UpstreamError,
            "the upstream went away",
        ));
        let lines = lines(&out);
        assert_eq!(
            lines[1],
            json!({"success": false, "error": {"code": "upstream_error", "message": "the upstream went away"}})
        );
    }

    #[test]
    fn text_with_newlines_stays_on_one_line() {
        let out = chunk_line("m", "a\nb\r\n\"c\"");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        assert_eq!(lines(&out)[0]["data"]["response"], "a\nb\r\n\"c\"");
    }

    /// JSON values shaped like `/generate` bodies: the real field names with values of
    /// every type, and stray names.
    fn bodies() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            ".{0,8}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        let key = prop_oneof![
            prop::sample::select(FIELDS).prop_map(str::to_owned),
            ".{0,10}",
        ];
        prop_oneof![
            prop::collection::btree_map(key, value.clone(), 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            value,
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_refusals_are_4xx(body in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Err(e) = parse_request(&body) {
                prop_assert!(error_body(e.code, &e.message).0.is_client_error());
            }
        }

        #[test]
        fn arbitrary_bodies_are_read_or_refused_with_a_400(body in bodies()) {
            match parse_request(body.to_string().as_bytes()) {
                Ok(r) => prop_assert!(r.prompt.is_some_and(|p| !p.is_empty())),
                Err(e) => {
                    prop_assert_eq!(e.code, ErrorCode::InvalidRequest);
                    prop_assert_eq!(error_body(e.code, &e.message).0, StatusCode::BAD_REQUEST);
                }
            }
        }
    }
}
