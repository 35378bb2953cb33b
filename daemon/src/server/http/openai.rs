//! The OpenAI dialect: `POST /v1/chat/completions` (streamed as `chat.completion.chunk`
//! server-sent events ending with `data: [DONE]`, or one `chat.completion` object) and
//! `GET /v1/models`, with OpenAI's error body `{"error": {"message", "type", "param",
//! "code"}}`.
//!
//! What the API offers and provd cannot honour is refused by name (`n > 1`, tools,
//! `logprobs`, JSON output formats, penalties, images…): silently ignoring it would change
//! the answer the caller asked for. Parameters that only describe the caller or ask for
//! bookkeeping (`user`, `store`, `metadata`, `seed`, `service_tier`…) are accepted and
//! have no effect. The `model` in an answer is `provider/model`, the provider that
//! answered and the model it named, so a caller sees which fallback served it.
//!
//! A streamed answer's status line waits for the first event: an error before any text
//! is an HTTP error with the mapped status; one after the status line is an in-stream
//! `data: {"error": {...}}` event with no `[DONE]` after it, as OpenAI sends it.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use provd_client::message::{FinishReason, GenerateDone, Message, Role};
use provd_client::{ErrorCode, GenerateRequest, Usage};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::core::{self, Event, Generation};
use super::error::ApiError;
use super::{body, json as json_response, Call, Response};

/// `POST /v1/chat/completions`.
pub async fn chat_completions(call: Call) -> Response {
    match chat_completions_inner(call).await {
        Ok(response) => response,
        Err(e) => error_response(&e),
    }
}

async fn chat_completions_inner(call: Call) -> Result<Response, ApiError> {
    let Call {
        request,
        caller,
        front,
    } = call;
    let caller = caller.map_err(ApiError::from)?;
    let config = front.daemon.factory.config();
    let bytes = body::read(request, config.http.max_body_bytes).await?;
    let chat: ChatRequest = body::parse_json(&bytes)?;
    let parsed = chat.into_request(&config)?;
    drop(config);
    let generation = Generation::start(&front, &caller, parsed.request)?;
    if parsed.stream {
        stream(generation, parsed.model, parsed.include_usage).await
    } else {
        let done = core::whole(generation).await.map_err(ApiError::from)?;
        Ok(json_response(StatusCode::OK, &completion(&done)))
    }
}

/// `GET /v1/models`: every model the caller may use as `provider/model`, then the
/// configured aliases.
pub async fn models(call: Call) -> Response {
    let caller = match call.caller {
        Ok(caller) => caller,
        Err(e) => return error_response(&ApiError::from(e)),
    };
    let listed = call
        .front
        .catalogue
        .for_caller(&call.front.daemon, &caller)
        .await;
    let data: Vec<Value> = listed
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": m.created.unwrap_or(0),
                "owned_by": if m.alias { "provd".to_owned() } else { m.provider },
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

/// An error as OpenAI sends it, with the mapped status and `Retry-After`.
pub fn error_response(e: &ApiError) -> Response {
    let mut response = json_response(e.status, &error_body(e));
    e.apply(&mut response);
    response
}

fn error_body(e: &ApiError) -> Value {
    json!({"error": {
        "message": e.wire.message,
        "type": error_type(e),
        "param": e.param,
        "code": e.wire.code.as_str(),
    }})
}

/// OpenAI's `type` for an error.
fn error_type(e: &ApiError) -> &'static str {
    match e.wire.code {
        ErrorCode::InvalidRequest | ErrorCode::ProtocolError | ErrorCode::NotFound => {
            "invalid_request_error"
        }
        ErrorCode::Unauthenticated => "authentication_error",
        ErrorCode::PermissionDenied => "permission_error",
        ErrorCode::RateLimited => "rate_limit_error",
        ErrorCode::Timeout => "timeout_error",
        ErrorCode::Overloaded | ErrorCode::Unavailable => "service_unavailable_error",
        ErrorCode::UpstreamError | ErrorCode::Internal | ErrorCode::Cancelled => "server_error",
    }
}

/// The request body, as far as provd reads it. The other fields land in `other` and are
/// checked by [`refused_option`].
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// A chat request turned into provd's.
struct Parsed {
    request: GenerateRequest,
    /// The model as the caller named it.
    model: String,
    stream: bool,
    include_usage: bool,
}

/// The most stop sequences OpenAI accepts.
const MAX_STOP: usize = 4;

impl ChatRequest {
    fn into_request(self, config: &crate::config::Config) -> Result<Parsed, ApiError> {
        let model = self.model.ok_or_else(|| {
            ApiError::param(
                "model",
                "you must provide a model parameter (provider/model, a model of the default provider, or an alias)",
            )
        })?;
        let route = core::route_model(config, &model)?;
        if let Some(n) = self.n.filter(|&n| n != 1) {
            return Err(ApiError::param(
                "n",
                format!("n = {n} is not supported: provd generates one choice per request"),
            ));
        }
        if let Some((param, why)) = refused_option(&self.other) {
            return Err(ApiError::param(param.clone(), format!("{param}: {why}")));
        }
        let messages = self
            .messages
            .ok_or_else(|| ApiError::param("messages", "missing required parameter: 'messages'"))?;
        let mut system: Vec<String> = Vec::new();
        let mut turns = Vec::new();
        for (i, m) in messages.into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => None,
                "user" => Some(Role::User),
                "assistant" => Some(Role::Assistant),
                other => {
                    return Err(ApiError::param(
                        format!("messages[{i}].role"),
                        format!(
                            "messages[{i}].role '{}' is not supported: provd carries system, developer, user and assistant messages (no tool calls yet)",
                            crate::server::connection::truncate(other, 32)
                        ),
                    ))
                }
            };
            if let Some(key) = ["tool_calls", "function_call", "audio"]
                .into_iter()
                .find(|k| m.other.get(*k).is_some_and(|v| !v.is_null()))
            {
                return Err(ApiError::param(
                    format!("messages[{i}].{key}"),
                    format!("messages[{i}].{key} is not supported: provd does not carry tool calls or audio yet"),
                ));
            }
            let text = content_text(i, m.content)?;
            match role {
                None => system.push(text),
                Some(role) => turns.push(Message::text(role, text)),
            }
        }
        if turns.is_empty() {
            return Err(ApiError::param(
                "messages",
                "messages must hold at least one user or assistant message",
            ));
        }
        let stop = match self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        };
        if stop.len() > MAX_STOP {
            return Err(ApiError::param(
                "stop",
                format!(
                    "stop holds {} sequences; at most {MAX_STOP} are allowed",
                    stop.len()
                ),
            ));
        }
        let stream = self.stream.unwrap_or(false);
        let request = GenerateRequest {
            provider: route.provider,
            model: route.model,
            prompt: None,
            messages: turns,
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            stop,
            stream,
            ..GenerateRequest::default()
        };
        Ok(Parsed {
            request,
            model,
            stream,
            include_usage: self
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

/// A message's text: a string, or text parts joined; any other part is refused by name.
fn content_text(i: usize, content: Option<Content>) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(text)) => Ok(text),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for (j, part) in parts.into_iter().enumerate() {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(t)) => text.push_str(&t),
                    ("text", None) => {
                        return Err(ApiError::param(
                            format!("messages[{i}].content[{j}].text"),
                            format!("messages[{i}].content[{j}] is a text part without text"),
                        ))
                    }
                    (kind, _) => {
                        return Err(ApiError::param(
                            format!("messages[{i}].content[{j}].type"),
                            format!(
                                "messages[{i}].content[{j}].type '{}' is not supported: provd carries text parts only",
                                crate::server::connection::truncate(kind, 32)
                            ),
                        ))
                    }
                }
            }
            Ok(text)
        }
    }
}

/// The first option present that would change the answer and cannot be honoured, with
/// why. Options absent, null, or at their neutral value pass.
fn refused_option(other: &Map<String, Value>) -> Option<(String, &'static str)> {
    let set = |key: &str| other.get(key).filter(|v| !v.is_null());
    let nonzero = |key: &str| set(key).is_some_and(|v| v.as_f64() != Some(0.0));
    let checks: [(&str, bool, &'static str); 12] = [
        (
            "tools",
            set("tools").is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())),
            "tool calling is not supported by provd yet",
        ),
        (
            "tool_choice",
            set("tool_choice").is_some_and(|v| v != "none"),
            "tool calling is not supported by provd yet",
        ),
        (
            "functions",
            set("functions").is_some(),
            "function calling is not supported by provd yet",
        ),
        (
            "function_call",
            set("function_call").is_some_and(|v| v != "none"),
            "function calling is not supported by provd yet",
        ),
        (
            "response_format",
            set("response_format")
                .is_some_and(|v| v.get("type").and_then(Value::as_str) != Some("text")),
            "only the text response format is supported",
        ),
        (
            "logprobs",
            set("logprobs").is_some_and(|v| v != &Value::Bool(false)),
            "log probabilities are not supported",
        ),
        (
            "top_logprobs",
            set("top_logprobs").is_some(),
            "log probabilities are not supported",
        ),
        (
            "logit_bias",
            set("logit_bias").is_some_and(|v| v.as_object().is_none_or(|o| !o.is_empty())),
            "logit bias is not supported",
        ),
        (
            "presence_penalty",
            nonzero("presence_penalty"),
            "penalties are not supported",
        ),
        (
            "frequency_penalty",
            nonzero("frequency_penalty"),
            "penalties are not supported",
        ),
        (
            "audio",
            set("audio").is_some(),
            "audio output is not supported",
        ),
        (
            "modalities",
            set("modalities").is_some_and(|v| v != &json!(["text"])),
            "only text output is supported",
        ),
    ];
    checks
        .into_iter()
        .find(|(_, refused, _)| *refused)
        .map(|(key, _, why)| (key.to_owned(), why))
        .or_else(|| {
            set("prediction").map(|_| {
                (
                    "prediction".to_owned(),
                    "predicted outputs are not supported",
                )
            })
        })
}

/// Ids of completions: unique within the daemon's life.
fn completion_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "chatcmpl-provd-{:x}-{:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop | FinishReason::Other => "stop",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
    }
}

fn usage(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    })
}

fn answered_model(done: &GenerateDone) -> String {
    format!("{}/{}", done.provider, done.model)
}

/// The `chat.completion` object of a finished generation.
fn completion(done: &GenerateDone) -> Value {
    json!({
        "id": completion_id(),
        "object": "chat.completion",
        "created": unix_seconds(),
        "model": answered_model(done),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": done.text.clone().unwrap_or_default(), "refusal": null},
            "logprobs": null,
            "finish_reason": finish_reason(done.finish_reason),
        }],
        "usage": usage(&done.usage),
        "system_fingerprint": null,
    })
}

/// The state of a streamed answer.
struct Sse {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Sse {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        event(&chunk)
    }

    fn end(&mut self, done: &GenerateDone) -> Vec<Bytes> {
        self.model = answered_model(done);
        let mut out = vec![self.chunk(json!({}), Some(finish_reason(done.finish_reason)))];
        if self.include_usage {
            out.push(event(&json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "system_fingerprint": null,
                "choices": [],
                "usage": usage(&done.usage),
            })));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }
}

fn event(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// A streamed answer: waits for the first event so an early failure gets its status,
/// then the role chunk, a chunk per piece of text, the finish chunk, the usage chunk
/// when asked, and `[DONE]`; a later failure is an in-stream error event.
async fn stream(
    mut generation: Generation,
    requested: String,
    include_usage: bool,
) -> Result<Response, ApiError> {
    let first = loop {
        match generation.next().await {
            Some(Event::Keepalive) => continue,
            Some(Event::Failed(e)) => return Err(ApiError::from(e)),
            Some(event) => break event,
            None => {
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    "the generation ended without a final reply",
                ))
            }
        }
    };
    // Until the end names the model that answered, chunks name the one requested.
    let sse = Sse {
        id: completion_id(),
        created: unix_seconds(),
        model: match &first {
            Event::Done(done) => answered_model(done),
            _ => requested,
        },
        include_usage,
    };
    let opening = vec![sse.chunk(json!({"role": "assistant", "content": ""}), None)];
    let state = (Some(first), generation, sse, opening, false);
    let body = futures_util::stream::unfold(
        state,
        |(mut pending, mut generation, mut sse, mut queued, mut over)| async move {
            loop {
                if !queued.is_empty() {
                    let bytes = queued.remove(0);
                    return Some((
                        Ok::<_, Infallible>(hyper::body::Frame::data(bytes)),
                        (pending, generation, sse, queued, over),
                    ));
                }
                if over {
                    return None;
                }
                let next = match pending.take() {
                    Some(next) => next,
                    None => generation.next().await?,
                };
                match next {
                    Event::Text(text) => queued.push(sse.chunk(json!({"content": text}), None)),
                    Event::Keepalive => queued.push(Bytes::from_static(b": keepalive\n\n")),
                    Event::Done(done) => {
                        queued.extend(sse.end(&done));
                        over = true;
                    }
                    Event::Failed(e) => {
                        tracing::info!(
                            code = e.code.as_str(),
                            "HTTP stream ended by an error after its status line"
                        );
                        queued.push(event(&error_body(&ApiError::from(e))));
                        over = true;
                    }
                }
            }
        },
    );
    let mut response = http::Response::new(http_body_util::StreamBody::new(body).boxed_unsync());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use provd_client::WireError;
    use std::path::Path;

    fn config() -> crate::config::Config {
        crate::config::Config::parse("[providers.p]\ntype = \"mock\"\n", Path::new("t.toml"))
            .unwrap()
    }

    fn parse(body: Value) -> Result<Parsed, ApiError> {
        body::parse_json::<ChatRequest>(body.to_string().as_bytes())?.into_request(&config())
    }

    #[test]
    fn messages_and_sampling_options_map_onto_the_generate_request() {
        let parsed = parse(json!({
            "model": "p/m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
                {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]},
                {"role": "assistant", "content": "hi", "name": "bot"},
                {"role": "user", "content": "and now?"},
            ],
            "max_tokens": 10,
            "max_completion_tokens": 77,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "someone",
            "seed": 4,
        }))
        .unwrap();
        let r = parsed.request;
        assert_eq!(
            (r.provider.as_deref(), r.model.as_deref()),
            (Some("p"), Some("m"))
        );
        assert_eq!(r.system.as_deref(), Some("be brief\n\nand kind"));
        let turns: Vec<_> = r
            .messages
            .iter()
            .map(|m| (m.role, m.content.as_str()))
            .collect();
        assert_eq!(
            turns,
            [
                (Role::User, "hello"),
                (Role::Assistant, "hi"),
                (Role::User, "and now?")
            ]
        );
        assert_eq!(r.max_tokens, Some(77));
        assert_eq!((r.temperature, r.top_p), (Some(0.5), Some(0.9)));
        assert_eq!(r.stop, ["END"]);
        assert!(parsed.stream && parsed.include_usage && r.stream);
    }

    #[test]
    fn options_that_would_change_the_answer_are_refused_by_name() {
        let base = json!({"model": "p/m", "messages": [{"role": "user", "content": "q"}]});
        for (key, value) in [
            ("n", json!(2)),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("response_format", json!({"type": "json_object"})),
            ("logprobs", json!(true)),
            ("presence_penalty", json!(0.5)),
            ("logit_bias", json!({"50256": -100})),
        ] {
            let mut body = base.clone();
            body[key] = value;
            let e = parse(body)
                .err()
                .unwrap_or_else(|| panic!("{key} accepted"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{key}");
            assert_eq!(e.param.as_deref(), Some(key));
            assert!(e.wire.message.contains(key), "{}", e.wire.message);
        }
        for (key, value) in [
            ("n", json!(1)),
            ("tools", json!([])),
            ("response_format", json!({"type": "text"})),
            ("logprobs", json!(false)),
            ("presence_penalty", json!(0)),
            ("tool_choice", json!("none")),
        ] {
            let mut body = base.clone();
            body[key] = value;
            assert!(parse(body).is_ok(), "{key} at its neutral value is refused");
        }
    }

    #[test]
    fn non_text_parts_and_tool_roles_are_refused_naming_where() {
        let e = parse(json!({"model": "p/m", "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}
        ]}))
        .err()
        .unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[0].content[0].type"));
        let e = parse(json!({"model": "p/m", "messages": [
            {"role": "user", "content": "q"}, {"role": "tool", "content": "r", "tool_call_id": "c"}
        ]}))
        .err()
        .unwrap();
        assert_eq!(e.param.as_deref(), Some("messages[1].role"));
        let e = parse(json!({"messages": [{"role": "user", "content": "q"}]}))
            .err()
            .unwrap();
        assert_eq!(e.param.as_deref(), Some("model"));
    }

    #[test]
    fn errors_have_openais_shape_with_the_mapped_status() {
        let mut limited = WireError::new(ErrorCode::RateLimited, "slow down");
        limited.retry_after_ms = Some(3000);
        let response = error_response(&ApiError::from(limited));
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[http::header::RETRY_AFTER], "3");
        let body = error_body(&ApiError::param("n", "no"));
        assert_eq!(
            body,
            json!({"error": {"message": "no", "type": "invalid_request_error", "param": "n", "code": "invalid_request"}})
        );
    }
}
