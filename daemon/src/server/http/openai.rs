//! The OpenAI dialect: `POST /v1/chat/completions` (streamed as `chat.completion.chunk`
//! server-sent events ending with `data: [DONE]`, or one `chat.completion` object) and
//! `GET /v1/models`, with OpenAI's error body `{"error": {"message", "type", "param",
//! "code"}}`.
//!
//! What the API offers and provd cannot honour is refused by name (`n > 1`, the legacy
//! `functions`/`function_call`, custom tools, `logprobs`, penalties, `logit_bias`, audio,
//! `prediction`, image URLs other than `https:` and base64 `data:`): silently ignoring it
//! would change the answer the caller asked for. Parameters that only describe the caller
//! or ask for bookkeeping (`user`, `store`, `metadata`, `seed`, `service_tier`…) are
//! accepted and have no effect. The `model` in an answer is `provider/model`, the provider
//! that answered and the model it named, so a caller sees which fallback served it.
//!
//! # How tools, structured output, reasoning and images map
//!
//! - `tools` (`{type: function, function: {name, description, parameters, strict}}`) are
//!   [`Tool`]s; `strict` is accepted (provd checks every call's arguments parse, and a
//!   provider that can hold its model to the schema does). `tool_choice` `none`, `auto`,
//!   `required` and `{type: function, function: {name}}` are [`ToolChoice`]s.
//!   `parallel_tool_calls` is accepted either way: a turn's calls come in order.
//! - An assistant message's `tool_calls` become its [`ToolCall`]s (its `content` may be
//!   null); a `tool` message is [`Message::tool_result`] of its `tool_call_id`.
//! - `response_format` `text` asks nothing; `json_object` and `json_schema` (`name`,
//!   `schema`, `strict`) are [`ResponseFormat`]s.
//! - `reasoning_effort` (`minimal`…`high`; `none` asks nothing) asks for reasoning with
//!   that effort and shows it: Chat Completions has no field for reasoning text, so it is
//!   returned as DeepSeek and vLLM return it, `message.reasoning_content` and streamed
//!   `delta.reasoning_content`, which the SDKs keep as an extra field. Without
//!   `reasoning_effort` nothing is asked and no reasoning is sent.
//!   `usage.completion_tokens_details.reasoning_tokens` is sent when the provider counts.
//! - A provider's state for the next turn ([`GenerateDone::provider_state`]) is
//!   `message.provider_state` (streamed: on the finish chunk's delta), read back from an
//!   assistant message as it came: the SDKs keep unknown fields of a message and send
//!   them back when the message object is appended to the conversation.
//! - `image_url` parts of user messages are [`Image`]s: a base64 `data:` URL with its
//!   media type, an `https:` URL as a URL (provd never fetches it).
//! - Answers: `message.tool_calls` (`content: null` when the turn said nothing) and
//!   `finish_reason: "tool_calls"`; streamed, `delta.tool_calls` pieces whose first
//!   carries the call's `index`, `id`, `type` and `name`, later ones only `index` and
//!   `arguments`, as OpenAI streams them.
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
use provd_client::{
    ErrorCode, GenerateRequest, Image, Reasoning, ResponseFormat, Tool, ToolCall, ToolCallDelta,
    ToolChoice, Usage,
};
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
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    reasoning_effort: Option<String>,
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
    #[serde(default)]
    tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    /// provd's own: the provider state of an earlier answer, sent back as it came.
    #[serde(default)]
    provider_state: Option<Value>,
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
    #[serde(default)]
    image_url: Option<ImageUrl>,
}

#[derive(Debug, Deserialize)]
struct ImageUrl {
    url: String,
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
            match turn(i, m)? {
                Turn::System(text) => system.push(text),
                Turn::Message(message) => turns.push(message),
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
        let tools = self
            .tools
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, t)| tool(i, t))
            .collect::<Result<Vec<_>, _>>()?;
        let tool_choice = match self.tool_choice.filter(|v| !v.is_null()) {
            None => None,
            Some(choice) => Some(tool_choice(&choice)?),
        };
        let response_format = match self.response_format.filter(|v| !v.is_null()) {
            None => None,
            Some(format) => response_format(&format)?,
        };
        let reasoning = match self.reasoning_effort.as_deref() {
            None | Some("none") => None,
            Some(word) => Some(Reasoning {
                effort: Some(provd_client::Effort::from_name(word).ok_or_else(|| {
                    ApiError::param(
                        "reasoning_effort",
                        format!(
                            "reasoning_effort '{}' is not supported: provd takes none, minimal, low, medium or high",
                            crate::server::connection::truncate(word, 32)
                        ),
                    )
                })?),
                budget_tokens: None,
                // Asking for reasoning is asking to see it here: it comes back as
                // `reasoning_content` (module docs).
                show: true,
            }),
        };
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
            tools,
            tool_choice,
            response_format,
            reasoning,
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

/// A message of the request: a system prompt, or a turn.
enum Turn {
    System(String),
    Message(Message),
}

/// Message `i`: its role decides which fields it may carry.
fn turn(i: usize, m: ChatMessage) -> Result<Turn, ApiError> {
    if let Some(key) = ["function_call", "audio"]
        .into_iter()
        .find(|k| m.other.get(*k).is_some_and(|v| !v.is_null()))
    {
        return Err(ApiError::param(
            format!("messages[{i}].{key}"),
            format!("messages[{i}].{key} is not supported: provd carries tool_calls, not the legacy function_call, and no audio"),
        ));
    }
    let calls = m.tool_calls.unwrap_or_default();
    match m.role.as_str() {
        "system" | "developer" => Ok(Turn::System(content(i, m.content, false)?.0)),
        "user" => {
            let (text, images) = content(i, m.content, true)?;
            Ok(Turn::Message(Message {
                images,
                ..Message::text(Role::User, text)
            }))
        }
        "assistant" => {
            let text = content(i, m.content, false)?.0;
            let tool_calls = calls
                .iter()
                .enumerate()
                .map(|(j, call)| assistant_call(i, j, call))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Turn::Message(Message {
                tool_calls,
                provider_state: m.provider_state.filter(Value::is_object),
                ..Message::text(Role::Assistant, text)
            }))
        }
        "tool" => {
            let id = m.tool_call_id.ok_or_else(|| {
                ApiError::param(
                    format!("messages[{i}].tool_call_id"),
                    format!("messages[{i}] has role 'tool' but no tool_call_id"),
                )
            })?;
            let text = content(i, m.content, false)?.0;
            Ok(Turn::Message(Message::tool_result(id, text)))
        }
        other => Err(ApiError::param(
            format!("messages[{i}].role"),
            format!(
                "messages[{i}].role '{}' is not supported: provd carries system, developer, user, assistant and tool messages",
                crate::server::connection::truncate(other, 32)
            ),
        )),
    }
}

/// Call `j` of assistant message `i`: `{id, type: function, function: {name, arguments}}`.
fn assistant_call(i: usize, j: usize, call: &Value) -> Result<ToolCall, ApiError> {
    let at = format!("messages[{i}].tool_calls[{j}]");
    let field = |path: &str| -> Result<String, ApiError> {
        call.pointer(path)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::param(
                    format!("{at}{}", path.replace('/', ".")),
                    format!("{at}{} must be a string", path.replace('/', ".")),
                )
            })
    };
    if let Some(kind) = call.get("type").and_then(Value::as_str) {
        if kind != "function" {
            return Err(ApiError::param(
                format!("{at}.type"),
                format!(
                    "{at}.type '{}' is not supported: provd carries function calls",
                    crate::server::connection::truncate(kind, 32)
                ),
            ));
        }
    }
    Ok(ToolCall {
        id: field("/id")?,
        name: field("/function/name")?,
        arguments: field("/function/arguments")?,
    })
}

/// Tool `i`: `{type: function, function: {name, description, parameters, strict}}`.
/// `strict` is accepted: provd checks that a call's arguments parse, and the providers
/// that can hold a model to a schema do so when they are given one.
fn tool(i: usize, value: &Value) -> Result<Tool, ApiError> {
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    if kind != "function" {
        return Err(ApiError::param(
            format!("tools[{i}].type"),
            format!(
                "tools[{i}].type '{}' is not supported: provd carries function tools",
                crate::server::connection::truncate(kind, 32)
            ),
        ));
    }
    let function = value
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| {
            ApiError::param(
                format!("tools[{i}].function"),
                format!("tools[{i}].function must be an object with a name"),
            )
        })?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::param(
                format!("tools[{i}].function.name"),
                format!("tools[{i}].function.name must be a string"),
            )
        })?;
    Ok(Tool {
        name: name.to_owned(),
        description: function
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        parameters: function.get("parameters").filter(|p| !p.is_null()).cloned(),
    })
}

/// `tool_choice`: `none`, `auto`, `required` or `{type: function, function: {name}}`.
fn tool_choice(value: &Value) -> Result<ToolChoice, ApiError> {
    let named = value
        .get("function")
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str);
    match (value.as_str(), value.get("type").and_then(Value::as_str), named) {
        (Some("none"), ..) => Ok(ToolChoice::None),
        (Some("auto"), ..) => Ok(ToolChoice::Auto),
        (Some("required"), ..) => Ok(ToolChoice::Required),
        (None, Some("function"), Some(name)) => Ok(ToolChoice::Tool(name.to_owned())),
        _ => Err(ApiError::param(
            "tool_choice",
            "tool_choice must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
        )),
    }
}

/// `response_format`: `text` (no format), `json_object`, or `json_schema` with its
/// `json_schema: {name, schema, strict}`.
fn response_format(value: &Value) -> Result<Option<ResponseFormat>, ApiError> {
    match value.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let spec = value.get("json_schema");
            let schema = spec
                .and_then(|s| s.get("schema"))
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    ApiError::param(
                        "response_format.json_schema.schema",
                        "response_format.json_schema.schema must be a JSON schema object",
                    )
                })?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: spec
                    .and_then(|s| s.get("name"))
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_owned(),
                schema: schema.clone(),
                strict: spec
                    .and_then(|s| s.get("strict"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }))
        }
        _ => Err(ApiError::param(
            "response_format.type",
            "response_format.type must be text, json_object or json_schema",
        )),
    }
}

/// A message's text and, where `images` allows (user messages), its images: a string, or
/// text and `image_url` parts; any other part is refused by name.
fn content(
    i: usize,
    content: Option<Content>,
    images: bool,
) -> Result<(String, Vec<Image>), ApiError> {
    match content {
        None => Ok((String::new(), Vec::new())),
        Some(Content::Text(text)) => Ok((text, Vec::new())),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            let mut found = Vec::new();
            for (j, part) in parts.into_iter().enumerate() {
                match (part.kind.as_str(), part.text, part.image_url) {
                    ("text", Some(t), _) => text.push_str(&t),
                    ("text", None, _) => {
                        return Err(ApiError::param(
                            format!("messages[{i}].content[{j}].text"),
                            format!("messages[{i}].content[{j}] is a text part without text"),
                        ))
                    }
                    ("image_url", _, Some(image)) if images => {
                        let image = super::content::image_from_url(&image.url).map_err(|why| {
                            ApiError::param(
                                format!("messages[{i}].content[{j}].image_url.url"),
                                format!("messages[{i}].content[{j}].image_url.url: {why}"),
                            )
                        })?;
                        found.push(image);
                    }
                    (kind, _, _) => {
                        return Err(ApiError::param(
                            format!("messages[{i}].content[{j}].type"),
                            format!(
                                "messages[{i}].content[{j}].type '{}' is not supported here: provd carries text parts, and image_url parts in user messages",
                                crate::server::connection::truncate(kind, 32)
                            ),
                        ))
                    }
                }
            }
            Ok((text, found))
        }
    }
}

/// The first option present that would change the answer and cannot be honoured, with
/// why. Options absent, null, or at their neutral value pass.
fn refused_option(other: &Map<String, Value>) -> Option<(String, &'static str)> {
    let set = |key: &str| other.get(key).filter(|v| !v.is_null());
    let nonzero = |key: &str| set(key).is_some_and(|v| v.as_f64() != Some(0.0));
    let checks: [(&str, bool, &'static str); 9] = [
        (
            "functions",
            set("functions").is_some(),
            "the legacy function calling is not supported; use tools",
        ),
        (
            "function_call",
            set("function_call").is_some_and(|v| v != "none"),
            "the legacy function calling is not supported; use tools",
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
    let mut usage = json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
    });
    if let Some(reasoning) = u.reasoning_tokens {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": reasoning});
    }
    usage
}

/// The whole `message` of a finished generation: `content` is null when the turn made
/// calls and said nothing, as OpenAI writes it.
fn whole_message(done: &GenerateDone) -> Value {
    let text = done.text.clone().unwrap_or_default();
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !done.tool_calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !done.tool_calls.is_empty() {
        message["tool_calls"] = done
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                })
            })
            .collect();
    }
    if let Some(reasoning) = &done.reasoning {
        message["reasoning_content"] = json!(reasoning);
    }
    if let Some(state) = &done.provider_state {
        message["provider_state"] = state.clone();
    }
    message
}

/// A streamed piece of a call as a `delta.tool_calls` entry: the first piece of a call
/// carries its id, type and name, later ones only more arguments.
fn call_delta(piece: &ToolCallDelta) -> Value {
    let mut function = json!({"arguments": piece.arguments});
    if let Some(name) = &piece.name {
        function["name"] = json!(name);
    }
    let mut entry = json!({"index": piece.index, "function": function});
    if let Some(id) = &piece.id {
        entry["id"] = json!(id);
        entry["type"] = json!("function");
    }
    json!({"tool_calls": [entry]})
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
            "message": whole_message(done),
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
        // The state for the next turn is known only now: it rides on the last delta.
        let delta = match &done.provider_state {
            Some(state) => json!({"provider_state": state}),
            None => json!({}),
        };
        let mut out = vec![self.chunk(delta, Some(finish_reason(done.finish_reason)))];
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
                    Event::ToolCall(piece) => queued.push(sse.chunk(call_delta(&piece), None)),
                    Event::Reasoning(text) => {
                        queued.push(sse.chunk(json!({"reasoning_content": text}), None))
                    }
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
            ("functions", json!([{"name": "f"}])),
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
    fn unsupported_parts_roles_and_tools_are_refused_naming_where() {
        let user = |content: Value| json!({"model": "p/m", "messages": [{"role": "user", "content": content}]});
        for (body, param) in [
            (
                user(
                    json!([{"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]),
                ),
                "messages[0].content[0].type",
            ),
            (
                user(json!([{"type": "image_url", "image_url": {"url": "http://x/cat.png"}}])),
                "messages[0].content[0].image_url.url",
            ),
            (
                json!({"model": "p/m", "messages": [{"role": "function", "name": "f", "content": "r"}]}),
                "messages[0].role",
            ),
            (
                json!({"model": "p/m", "messages": [{"role": "tool", "content": "r"}]}),
                "messages[0].tool_call_id",
            ),
            (
                json!({"model": "p/m", "messages": [{"role": "user", "content": "q"}],
                       "tools": [{"type": "custom", "custom": {"name": "f"}}]}),
                "tools[0].type",
            ),
            (
                json!({"model": "p/m", "messages": [{"role": "user", "content": "q"}],
                       "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"model": "p/m", "messages": [{"role": "user", "content": "q"}],
                       "reasoning_effort": "xhigh"}),
                "reasoning_effort",
            ),
            (
                json!({"messages": [{"role": "user", "content": "q"}]}),
                "model",
            ),
        ] {
            let e = parse(body)
                .err()
                .unwrap_or_else(|| panic!("{param} accepted"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.param.as_deref(), Some(param), "{}", e.wire.message);
        }
    }

    /// The request of OpenAI's function-calling guide, one turn after the call: the
    /// tools, the assistant's call (content null) and the tool's result.
    #[test]
    fn a_tool_conversation_maps_tools_calls_and_results() {
        let parsed = parse(json!({
            "model": "p/m",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What's the weather like in Paris today? "},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ", "detail": "low"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/paris.png"}},
                ]},
                {"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                    {"id": "call_12345xyz", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris, France\"}"}}
                ], "provider_state": {"type": "mock", "state": {"signature": "s"}}},
                {"role": "tool", "tool_call_id": "call_12345xyz", "content": "14 degrees"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Get current temperature for a given location.",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                               "required": ["location"], "additionalProperties": false},
                "strict": true,
            }}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": false,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "weather", "strict": true, "schema": {"type": "object"}}},
            "reasoning_effort": "low",
        }))
        .unwrap();
        let r = parsed.request;
        assert_eq!(r.tools.len(), 1);
        assert_eq!(r.tools[0].name, "get_weather");
        assert_eq!(
            r.tools[0].description.as_deref(),
            Some("Get current temperature for a given location.")
        );
        assert_eq!(
            r.tools[0].parameters.as_ref().unwrap()["required"],
            json!(["location"])
        );
        assert_eq!(r.tool_choice, Some(ToolChoice::Tool("get_weather".into())));
        assert_eq!(
            r.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "weather".into(),
                schema: json!({"type": "object"}),
                strict: true
            })
        );
        assert_eq!(
            r.reasoning,
            Some(Reasoning {
                effort: Some(provd_client::Effort::Low),
                budget_tokens: None,
                show: true
            })
        );
        let user = &r.messages[0];
        assert_eq!(user.content, "What's the weather like in Paris today? ");
        assert_eq!(
            user.images,
            [
                Image::Base64 {
                    media_type: "image/jpeg".into(),
                    data: "/9j/4AAQ".into()
                },
                Image::Url {
                    url: "https://example.com/paris.png".into()
                }
            ]
        );
        let assistant = &r.messages[1];
        assert_eq!(
            (assistant.role, assistant.content.as_str()),
            (Role::Assistant, "")
        );
        assert_eq!(
            assistant.tool_calls,
            [ToolCall {
                id: "call_12345xyz".into(),
                name: "get_weather".into(),
                arguments: "{\"location\":\"Paris, France\"}".into()
            }]
        );
        assert_eq!(
            assistant.provider_state,
            Some(json!({"type": "mock", "state": {"signature": "s"}}))
        );
        assert_eq!(
            r.messages[2],
            Message::tool_result("call_12345xyz", "14 degrees")
        );
        for (choice, expected) in [
            (json!("auto"), ToolChoice::Auto),
            (json!("required"), ToolChoice::Required),
            (json!("none"), ToolChoice::None),
        ] {
            let r = parse(json!({"model": "p/m", "messages": [{"role": "user", "content": "q"}], "tool_choice": choice}))
                .unwrap()
                .request;
            assert_eq!(r.tool_choice, Some(expected));
        }
        let r = parse(json!({"model": "p/m", "messages": [{"role": "user", "content": "q"}],
                             "response_format": {"type": "json_object"}, "reasoning_effort": "none"}))
        .unwrap()
        .request;
        assert_eq!(r.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(r.reasoning, None);
    }

    fn done_with_calls() -> GenerateDone {
        GenerateDone {
            done: true,
            provider: "m".into(),
            model: "mock-1".into(),
            usage: Usage::new(20, 9).with_reasoning(Some(4)),
            finish_reason: FinishReason::ToolCalls,
            text: Some(String::new()),
            tool_calls: vec![ToolCall {
                id: "call_abc".into(),
                name: "get_weather".into(),
                arguments: "{\"location\":\"Paris\"}".into(),
            }],
            reasoning: Some("Thinking about: weather".into()),
            provider_state: Some(json!({"type": "mock", "state": {"signature": "mock-signature"}})),
            ..GenerateDone::default()
        }
    }

    #[test]
    fn a_whole_answer_with_calls_has_null_content_the_calls_and_reasoning_tokens() {
        let body = completion(&done_with_calls());
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        assert_eq!(
            choice["message"],
            json!({
                "role": "assistant",
                "content": null,
                "refusal": null,
                "tool_calls": [{"id": "call_abc", "type": "function",
                                "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}],
                "reasoning_content": "Thinking about: weather",
                "provider_state": {"type": "mock", "state": {"signature": "mock-signature"}},
            })
        );
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29,
                   "completion_tokens_details": {"reasoning_tokens": 4}})
        );
        let plain = completion(&GenerateDone {
            text: Some("hi".into()),
            ..GenerateDone::default()
        });
        assert_eq!(plain["choices"][0]["message"]["content"], "hi");
        assert!(plain["choices"][0]["message"].get("tool_calls").is_none());
        assert!(plain["usage"].get("completion_tokens_details").is_none());
    }

    #[test]
    fn streamed_call_pieces_carry_id_type_and_name_first_then_only_arguments() {
        let first = call_delta(&ToolCallDelta {
            index: 0,
            id: Some("call_abc".into()),
            name: Some("get_weather".into()),
            arguments: "{\"loc".into(),
        });
        assert_eq!(
            first,
            json!({"tool_calls": [{"index": 0, "id": "call_abc", "type": "function",
                                   "function": {"name": "get_weather", "arguments": "{\"loc"}}]})
        );
        let later = call_delta(&ToolCallDelta {
            index: 1,
            id: None,
            name: None,
            arguments: "ation\"}".into(),
        });
        assert_eq!(
            later,
            json!({"tool_calls": [{"index": 1, "function": {"arguments": "ation\"}"}}]})
        );
        let mut sse = Sse {
            id: "c".into(),
            created: 0,
            model: "p/m".into(),
            include_usage: false,
        };
        let end = sse.end(&done_with_calls());
        let last: Value = serde_json::from_slice(
            end[0]
                .strip_prefix(b"data: ")
                .unwrap()
                .strip_suffix(b"\n\n")
                .unwrap(),
        )
        .unwrap();
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            last["choices"][0]["delta"]["provider_state"]["state"]["signature"],
            "mock-signature"
        );
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
