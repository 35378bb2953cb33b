//! OpenAI Chat Completions, and every server that speaks the same protocol at another
//! `base_url` (vLLM, llama.cpp server, LM Studio, LiteLLM, OpenRouter, Groq, Together,
//! DeepSeek, Mistral).
//!
//! - Generate: `POST {base_url}/chat/completions`; streamed as SSE `data:` chunks
//!   (`chat.completion.chunk`) ending with `data: [DONE]`, with
//!   `stream_options.include_usage` so the last chunk before `[DONE]` carries usage.
//! - List models: `GET {base_url}/models`.
//! - Auth: `Authorization: Bearer <key>`; `OpenAI-Organization` / `OpenAI-Project` when
//!   configured. For `openai-compatible` the key is optional.
//!
//! `base_url` includes the version prefix, as OpenAI's own SDKs expect
//! (`https://api.openai.com/v1`, `http://localhost:8000/v1`).
//!
//! # How tools, structured output, reasoning and images map
//!
//! - **Tools**: `tools: [{"type": "function", "function": {name, description,
//!   parameters}}]` (no `strict`: provd's tools carry none, and OpenAI's default is
//!   off); `tool_choice` `"auto"`, `"none"`, `"required"` or `{"type": "function",
//!   "function": {"name"}}`, sent only with tools (OpenAI refuses it alone).
//! - **Tool turns**: an assistant turn's calls go as `tool_calls: [{id, "type":
//!   "function", "function": {name, arguments}}]` with `content: null` when it said
//!   nothing; a result as `{"role": "tool", tool_call_id, content}`. The API has no
//!   error flag, so a failed call's result is sent as [`TOOL_ERROR_PREFIX`] + content.
//! - **Calls back**: streamed `delta.tool_calls` pieces become
//!   [`StreamEvent::ToolCall`] with the upstream's `index`, id and name on the first
//!   piece; a whole answer's `message.tool_calls` become one piece per call;
//!   `finish_reason: "tool_calls"` is [`FinishReason::ToolCalls`].
//! - **Structured output**: `response_format` `{"type": "json_object"}` or
//!   `{"type": "json_schema", "json_schema": {name, schema, strict}}`; free text sends
//!   nothing (it is the default).
//! - **Reasoning**: `reasoning_effort` from the request's effort, else from its budget
//!   ([`effort_for_budget`]); neither sends nothing (the model's default).
//!   `usage.completion_tokens_details.reasoning_tokens` is the reasoning count (already
//!   inside `completion_tokens`). OpenAI's Chat Completions never returns reasoning
//!   text, so `reasoning.show` yields no reasoning there; compatible servers that stream
//!   it as `delta.reasoning_content` (vLLM, DeepSeek, llama.cpp) or `delta.reasoning`
//!   (vLLM, OpenRouter) give [`StreamEvent::Reasoning`], and the same fields of a whole
//!   answer's message.
//! - **Images**: a user turn with images becomes content parts: `{"type": "text"}`
//!   then `{"type": "image_url", "image_url": {"url"}}`, base64 as a `data:` URL.
//! - The typed fields and `additional_params` of the same name do not mix: a request
//!   that sets both is refused, naming the key.

use std::time::Duration;

use provd_client::{
    Effort, ErrorCode, FinishReason, GenerateRequest, Image, ModelInfo, Reasoning, ResponseFormat,
    Role, ToolCallDelta, ToolChoice, Usage,
};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http::{self, time, Decoder, HttpApi, HttpProvider, Transport};
use super::sse::{SseEvent, SseParser};
use super::tools;
use super::{
    conversation, fold_param, json_f32, merge_additional_params, BoxFuture, ProviderError,
    ProviderSpec, ReportedModel, StreamEvent,
};
use crate::settings::ProviderKind;

/// OpenAI's API root.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// Body keys provd sets itself.
const RESERVED: &[&str] = &["model", "stream", "stream_options", "messages"];

/// OpenAI, or a server that speaks its protocol.
pub type OpenAiProvider = HttpProvider<OpenAiApi>;

impl OpenAiProvider {
    /// An instance for `openai` or `openai-compatible`.
    pub fn new(spec: ProviderSpec, kind: ProviderKind) -> Result<OpenAiProvider, ProviderError> {
        let api = OpenAiApi::new(&spec, kind)?;
        HttpProvider::with_api(spec, api)
    }
}

/// What OpenAI's API (or a compatible server's) does its own way. The format half
/// ([`chat_body`], [`ChunkDecoder`], [`completion_events`], [`error_message`],
/// [`refine`], [`retry_after`]) is public so that another endpoint speaking Chat
/// Completions reuses it with its own URL and auth.
#[derive(Debug)]
pub struct OpenAiApi {
    kind: ProviderKind,
    /// `POST` here to generate.
    chat_url: Url,
    /// `GET` here to list models.
    models_url: Url,
}

impl OpenAiApi {
    fn new(spec: &ProviderSpec, kind: ProviderKind) -> Result<OpenAiApi, ProviderError> {
        let default_url = match kind {
            ProviderKind::Openai => DEFAULT_BASE_URL,
            _ => spec.config.base_url.as_deref().ok_or_else(|| {
                ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "provider '{}' (openai-compatible) needs a base_url",
                        spec.id
                    ),
                )
            })?,
        };
        let base_url = spec.base_url(default_url);
        Ok(OpenAiApi {
            chat_url: http::endpoint(&spec.id, &base_url, "/chat/completions")?,
            models_url: http::endpoint(&spec.id, &base_url, "/models")?,
            kind,
        })
    }
}

impl HttpApi for OpenAiApi {
    type Framer = SseParser;
    type Decoder = ChunkDecoder;

    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn initialize(&self, spec: &ProviderSpec) -> Result<(), ProviderError> {
        // For `openai-compatible` the key is optional.
        if self.kind == ProviderKind::Openai {
            spec.require_credential()?;
        }
        Ok(())
    }

    fn authorize(
        &self,
        spec: &ProviderSpec,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, ProviderError> {
        let mut request = request;
        let key = match self.kind {
            ProviderKind::Openai => Some(spec.require_credential()?),
            _ => spec.credential.as_ref(),
        };
        if let Some(key) = key {
            let value = http::auth_header(&spec.id, "Bearer ", key)?;
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        if let Some(org) = &spec.config.organization {
            request = request.header("OpenAI-Organization", org);
        }
        if let Some(project) = &spec.config.project {
            request = request.header("OpenAI-Project", project);
        }
        Ok(request)
    }

    fn url(&self, _: &ProviderSpec, _: &GenerateRequest) -> Result<Url, ProviderError> {
        Ok(self.chat_url.clone())
    }

    fn body(&self, spec: &ProviderSpec, request: &GenerateRequest) -> Result<Value, ProviderError> {
        // OpenAI's current models take max_completion_tokens and refuse max_tokens;
        // compatible servers mostly know only max_tokens.
        let max_key = match self.kind {
            ProviderKind::Openai => "max_completion_tokens",
            _ => "max_tokens",
        };
        chat_body(spec, request, max_key)
    }

    fn decoder(&self, provider: &str) -> ChunkDecoder {
        ChunkDecoder::new(provider)
    }

    fn whole(
        &self,
        spec: &ProviderSpec,
        http: &Transport,
        body: Vec<u8>,
        streamed: bool,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        completion_events(spec, http, &body, streamed)
    }

    fn list_models(
        provider: &HttpProvider<Self>,
    ) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>> {
        Box::pin(async move {
            let http = provider.transport();
            let request = http.get(provider.api().models_url.clone());
            let list: ModelsPage = http.read_json(provider.send(request).await?).await?;
            Ok(list
                .data
                .into_iter()
                .map(|m| ModelInfo {
                    id: m.id,
                    provider: provider.spec().id.clone(),
                    display_name: None,
                    context_window: m.context_length,
                    created_at: m.created,
                    ..ModelInfo::default()
                })
                .collect())
        })
    }

    fn error_message(body: &[u8]) -> Option<String> {
        error_message(body)
    }

    fn retry_after(headers: &HeaderMap) -> Option<Duration> {
        retry_after(headers)
    }

    fn refine(error: &mut ProviderError, body: &[u8]) {
        refine(error, body)
    }
}

/// A Chat Completions body: the model, the conversation with the system prompt as a
/// first `system` message, the token limit under `max_tokens_key` (`max_tokens`, or
/// `max_completion_tokens` that OpenAI's current models require), sampling,
/// `additional_params`, and streaming with usage in the last chunk.
pub fn chat_body(
    spec: &ProviderSpec,
    request: &GenerateRequest,
    max_tokens_key: &str,
) -> Result<Value, ProviderError> {
    let messages = chat_messages(request);
    let mut typed = Map::new();
    if !request.tools.is_empty() {
        let tools = request.tools.iter().map(|tool| {
            let mut function = Map::new();
            function.insert("name".into(), json!(tool.name));
            if let Some(description) = &tool.description {
                function.insert("description".into(), json!(description));
            }
            function.insert("parameters".into(), tool.parameters_or_empty());
            json!({"type": "function", "function": function})
        });
        typed.insert("tools".into(), Value::Array(tools.collect()));
        if let Some(choice) = &request.tool_choice {
            typed.insert("tool_choice".into(), tool_choice(choice));
        }
    }
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => {
            typed.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        }) => {
            typed.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}),
            );
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(effort) = request.reasoning.as_ref().and_then(effort_of) {
        typed.insert("reasoning_effort".into(), json!(effort.as_str()));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(spec.model));
    body.insert("messages".into(), Value::Array(messages));
    let max_tokens = request.max_tokens.unwrap_or(spec.config.max_tokens);
    body.insert(max_tokens_key.into(), json!(max_tokens));
    if let Some(t) = request.temperature {
        body.insert("temperature".into(), json_f32(t));
    }
    if let Some(p) = request.top_p {
        body.insert("top_p".into(), json_f32(p));
    }
    if !request.stop.is_empty() {
        body.insert("stop".into(), json!(request.stop));
    }
    merge_additional_params(&mut body, request, RESERVED, spec)?;
    insert_typed(&mut body, typed, &spec.id)?;
    body.insert("stream".into(), json!(request.stream));
    if request.stream {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
}

/// The conversation as Chat Completions `messages`: the system prompt first, user turns
/// with their images as content parts, assistant turns with their calls, tool results.
fn chat_messages(request: &GenerateRequest) -> Vec<Value> {
    let (system, turns) = conversation(request);
    let mut messages = Vec::with_capacity(turns.len() + 1);
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in turns {
        messages.push(match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect();
                // The API wants null, not "", beside calls when the turn said nothing.
                let content = (!m.content.is_empty()).then_some(&m.content);
                json!({"role": "assistant", "content": content, "tool_calls": calls})
            }
            Role::Assistant => json!({"role": "assistant", "content": m.content}),
            Role::Tool => json!({
                "role": "tool",
                "tool_call_id": m.tool_call_id,
                "content": tools::tool_result_content(&m),
            }),
            Role::User | Role::System if !m.images.is_empty() => {
                let mut parts = Vec::with_capacity(m.images.len() + 1);
                if !m.content.is_empty() {
                    parts.push(json!({"type": "text", "text": m.content}));
                }
                parts.extend(m.images.iter().map(|image| {
                    let url = match image {
                        Image::Base64 { media_type, data } => {
                            format!("data:{media_type};base64,{data}")
                        }
                        Image::Url { url } => url.clone(),
                    };
                    json!({"type": "image_url", "image_url": {"url": url}})
                }));
                json!({"role": "user", "content": parts})
            }
            Role::User | Role::System => json!({"role": "user", "content": m.content}),
        });
    }
    messages
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::None => json!("none"),
        ToolChoice::Required => json!("required"),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

/// The largest reasoning budget read as `low`, and as `medium`; more is `high`. They
/// invert LiteLLM's effort-to-budget table (low 1024, medium 2048, high 4096 tokens), so
/// a budget moved between providers keeps its level. A budget never asks for
/// `minimal`, which not every reasoning model takes.
pub const BUDGET_LOW_MAX_TOKENS: u32 = 1024;
/// See [`BUDGET_LOW_MAX_TOKENS`].
pub const BUDGET_MEDIUM_MAX_TOKENS: u32 = 2048;

/// The effort level of a budget-only reasoning request: up to
/// [`BUDGET_LOW_MAX_TOKENS`] low, up to [`BUDGET_MEDIUM_MAX_TOKENS`] medium, beyond
/// that high.
pub fn effort_for_budget(budget_tokens: u32) -> Effort {
    if budget_tokens <= BUDGET_LOW_MAX_TOKENS {
        Effort::Low
    } else if budget_tokens <= BUDGET_MEDIUM_MAX_TOKENS {
        Effort::Medium
    } else {
        Effort::High
    }
}

/// The effort a reasoning request asks for: its own, else its budget's, else none (the
/// model's default).
pub fn effort_of(reasoning: &Reasoning) -> Option<Effort> {
    reasoning
        .effort
        .or_else(|| reasoning.budget_tokens.map(effort_for_budget))
}

/// Adds the fields provd maps from the request's typed options to `body`, refusing one
/// that `additional_params` set as well: which of the two was meant cannot be known.
pub fn insert_typed(
    body: &mut Map<String, Value>,
    typed: Map<String, Value>,
    provider: &str,
) -> Result<(), ProviderError> {
    for (key, value) in typed {
        let folded = fold_param(&key);
        if body.keys().any(|k| fold_param(k) == folded) {
            return Err(ProviderError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "additional_params.{key} conflicts with the request's own option that provider '{provider}' sends as {key}; set one of them"
                ),
            ));
        }
        body.insert(key, value);
    }
    Ok(())
}

/// The events of a whole chat completion (see [`HttpApi::whole`]).
pub fn completion_events(
    spec: &ProviderSpec,
    http: &Transport,
    body: &[u8],
    streamed: bool,
) -> Result<Vec<StreamEvent>, ProviderError> {
    let completion: Completion = http.parse_whole(
        body,
        streamed,
        "an event stream or a chat completion",
        &["choices"],
    )?;
    completion.into_events(&spec.id)
}

/// `{"error": {"message": …}}` (OpenAI), `{"error": "…"}` or `{"message": …}` /
/// `{"detail": …}` (compatible servers).
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = v
        .pointer("/error/message")
        .or_else(|| v.get("error").filter(|e| e.is_string()))
        .or_else(|| v.get("message"))
        .or_else(|| v.get("detail"))?;
    Some(match text {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Error `type`s and `code`s of a 429 that no wait lifts: credits used up, a spend or
/// usage limit reached. They share the status with rate limits, but retrying them only
/// spends the request's deadline (OpenAI says so in its error-code guide).
const QUOTA_EXHAUSTED: [&str; 5] = [
    "insufficient_quota",
    "credit_balance_exhausted",
    "organization_spend_limit_exceeded",
    "project_spend_limit_exceeded",
    "organization_usage_limit_exceeded",
];

/// A quota or spend limit reported as 429 is `permission_denied` and final for this
/// provider, as the 402 of the APIs that use it for billing; a fallback may still serve.
pub fn refine(error: &mut ProviderError, body: &[u8]) {
    if error.code != ErrorCode::RateLimited {
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let exhausted = ["/error/type", "/error/code"].iter().any(|field| {
        v.pointer(field)
            .and_then(Value::as_str)
            .is_some_and(|s| QUOTA_EXHAUSTED.contains(&s))
    });
    if exhausted {
        error.code = ErrorCode::PermissionDenied;
        error.retryable = false;
        error.retry_after = None;
        error.try_elsewhere = true;
    }
}

/// OpenAI's reset headers (`x-ratelimit-reset-requests: 6m0s`, `…-tokens: 20ms`, Go
/// durations) after the standard ones; the later of the two resets is when both limits
/// allow a retry.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    http::retry_after(headers).or_else(|| {
        ["x-ratelimit-reset-requests", "x-ratelimit-reset-tokens"]
            .iter()
            .filter_map(|h| headers.get(*h)?.to_str().ok().and_then(time::go_duration))
            .max()
    })
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "content_filter" => FinishReason::ContentFilter,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        _ => FinishReason::Other,
    }
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u32>,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        // completion_tokens already counts the reasoning, as provd's usage does.
        let reasoning = u.completion_tokens_details.and_then(|d| d.reasoning_tokens);
        Usage::new(u.prompt_tokens, u.completion_tokens).with_reasoning(reasoning)
    }
}

/// One entry of `delta.tool_calls`: a piece of call `index`.
#[derive(Deserialize)]
struct WireCallPiece {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunction>,
}

/// A call's `function`: whole in an answer, in pieces in a stream.
#[derive(Default, Deserialize)]
struct WireFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

/// A whole call of `message.tool_calls`.
#[derive(Deserialize)]
struct WireCall {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: WireFunction,
}

fn call_piece(
    index: u32,
    id: Option<String>,
    function: Option<WireFunction>,
) -> Option<ToolCallDelta> {
    let function = function.unwrap_or_default();
    let piece = ToolCallDelta {
        index,
        id: id.filter(|id| !id.is_empty()),
        name: function.name.filter(|n| !n.is_empty()),
        arguments: function.arguments.unwrap_or_default(),
    };
    // A piece with nothing in it (`{"index": 0}`, `"type"` alone) adds nothing.
    let empty = piece.id.is_none() && piece.name.is_none() && piece.arguments.is_empty();
    (!empty).then_some(piece)
}

#[derive(Deserialize)]
struct StreamChunk {
    /// The model that answered, when the upstream names it.
    #[serde(default, deserialize_with = "http::lenient_text")]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<StreamChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireCallPiece>>,
    /// vLLM's, DeepSeek's and llama.cpp's reasoning text; OpenAI sends none.
    #[serde(default)]
    reasoning_content: Option<String>,
    /// The same under the name newer vLLM and OpenRouter use.
    #[serde(default)]
    reasoning: Option<String>,
}

/// The reasoning text of a delta or message: `reasoning_content`, else `reasoning`
/// (a server sending both sends the same text twice).
fn reasoning_text(content: Option<String>, other: Option<String>) -> Option<String> {
    content
        .filter(|t| !t.is_empty())
        .or(other)
        .filter(|t| !t.is_empty())
}

/// Reads `chat.completion.chunk` events up to `[DONE]`.
pub struct ChunkDecoder {
    provider: String,
    model: ReportedModel,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
    /// One more than the highest call index seen: where a call without one goes.
    next_call: u32,
    /// The call the last piece belonged to.
    last_call: u32,
}

impl ChunkDecoder {
    /// A decoder at the start of a stream; its errors name `provider`.
    pub fn new(provider: &str) -> Self {
        ChunkDecoder {
            provider: provider.to_owned(),
            model: ReportedModel::default(),
            usage: None,
            finish: None,
            next_call: 0,
            last_call: 0,
        }
    }

    /// The index of a streamed piece: the API's own, or for a server that leaves it out
    /// (some compatible servers send each call whole, one a chunk), a new call when the
    /// piece names one, else the call the last piece belonged to.
    fn call_index(&mut self, piece: &WireCallPiece) -> u32 {
        let starts = piece.id.as_deref().is_some_and(|id| !id.is_empty())
            || piece
                .function
                .as_ref()
                .and_then(|f| f.name.as_deref())
                .is_some_and(|n| !n.is_empty());
        let index = match piece.index {
            Some(index) => index,
            None if starts => self.next_call,
            None => self.last_call,
        };
        self.next_call = self.next_call.max(index.saturating_add(1));
        self.last_call = index;
        index
    }
}

impl Decoder for ChunkDecoder {
    type Unit = SseEvent;

    fn unit(&mut self, event: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        if event.data.trim() == "[DONE]" {
            out.push(StreamEvent::Done {
                usage: self.usage.unwrap_or_default(),
                finish_reason: self.finish.unwrap_or(FinishReason::Other),
            });
            return Ok(());
        }
        let chunk: StreamChunk =
            serde_json::from_str(&event.data).map_err(|e| http::malformed(&self.provider, e))?;
        if let Some(error) = chunk.error {
            return Err(stream_error(&self.provider, &error));
        }
        self.model.note(chunk.model.as_deref(), out);
        for choice in chunk.choices {
            let delta = choice.delta;
            if let Some(text) = reasoning_text(delta.reasoning_content, delta.reasoning) {
                out.push(StreamEvent::Reasoning(text));
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(text));
            }
            if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(text));
            }
            for piece in delta.tool_calls.unwrap_or_default() {
                let index = self.call_index(&piece);
                if let Some(piece) = call_piece(index, piece.id, piece.function) {
                    out.push(StreamEvent::ToolCall(piece));
                }
            }
            // Audio deltas are not carried.
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        if let Some(usage) = chunk.usage {
            let usage = Usage::from(usage);
            self.usage = Some(usage);
            out.push(StreamEvent::Usage(usage));
        }
        Ok(())
    }

    fn ended_early(&mut self) -> ProviderError {
        let mut e = ProviderError::new(
            ErrorCode::UpstreamError,
            format!(
                "{}: the stream ended without its final [DONE] event",
                self.provider
            ),
        );
        e.retryable = true;
        e
    }
}

/// An error sent inside a stream (`data: {"error": {...}}`), as some compatible servers
/// and OpenAI itself do when a generation fails after the headers went out.
fn stream_error(provider: &str, error: &Value) -> ProviderError {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| error.to_string());
    let kind = error
        .get("type")
        .or_else(|| error.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let code = match kind {
        "invalid_request_error" => ErrorCode::InvalidRequest,
        "authentication_error" | "invalid_api_key" => ErrorCode::Unauthenticated,
        "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" => {
            ErrorCode::RateLimited
        }
        "server_overloaded" | "overloaded_error" => ErrorCode::Overloaded,
        _ => ErrorCode::UpstreamError,
    };
    ProviderError::new(code, format!("{provider}: error in stream: {message}"))
}

#[derive(Deserialize)]
struct Completion {
    /// The model that answered, when the upstream names it.
    #[serde(default, deserialize_with = "http::lenient_text")]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<CompletionChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    message: CompletionMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CompletionMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireCall>>,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
}

impl Completion {
    fn into_events(self, provider: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        let choice = self
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| http::malformed(provider, "no choices in the completion"))?;
        let mut events = Vec::new();
        ReportedModel::default().note(self.model.as_deref(), &mut events);
        let message = choice.message;
        if let Some(text) = reasoning_text(message.reasoning_content, message.reasoning) {
            events.push(StreamEvent::Reasoning(text));
        }
        let text: String = message.content.into_iter().chain(message.refusal).collect();
        if !text.is_empty() {
            events.push(StreamEvent::Text(text));
        }
        let calls = message.tool_calls.unwrap_or_default().into_iter();
        for (index, call) in (0u32..).zip(calls) {
            let mut piece =
                call_piece(index, call.id, Some(call.function)).unwrap_or(ToolCallDelta {
                    index,
                    ..ToolCallDelta::default()
                });
            // A call with no arguments given has none: `{}`, as the server assumes.
            if piece.arguments.is_empty() {
                piece.arguments = "{}".into();
            }
            events.push(StreamEvent::ToolCall(piece));
        }
        events.push(StreamEvent::Done {
            usage: self.usage.map(Usage::from).unwrap_or_default(),
            finish_reason: choice
                .finish_reason
                .as_deref()
                .map_or(FinishReason::Other, finish_reason),
        });
        Ok(events)
    }
}

#[derive(Deserialize)]
struct ModelsPage {
    #[serde(default)]
    data: Vec<WireModel>,
}

#[derive(Deserialize)]
struct WireModel {
    id: String,
    #[serde(default)]
    created: Option<u64>,
    /// OpenRouter and some gateways report the context window.
    #[serde(default)]
    context_length: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(stream: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        parser.push(stream.as_bytes(), &mut events).unwrap();
        let mut d = ChunkDecoder::new("openai");
        let mut out = Vec::new();
        for e in events {
            d.unit(e, &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn a_documented_stream_decodes_to_text_usage_and_done() {
        let stream = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n\
            data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}],\"usage\":null}\n\n\
            data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0}]},\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n\
            data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n\
            data: [DONE]\n\n";
        let events = decode(stream).unwrap();
        assert_eq!(
            events,
            vec![
                StreamEvent::Model("gpt-4o".into()),
                StreamEvent::Text("Hi".into()),
                StreamEvent::Usage(Usage::new(9, 2)),
                StreamEvent::Done {
                    usage: Usage::new(9, 2),
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
    }

    fn weather() -> provd_client::Tool {
        provd_client::Tool::new(
            "get_weather",
            "The weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        )
    }

    fn spec() -> ProviderSpec {
        ProviderSpec::for_test("o", "type = \"openai\"", "gpt-4o", Some("k-0123456789"))
    }

    /// A tool conversation's second turn: the question with an image, the call, its
    /// failed and successful results, with a schema, an effort and a forced tool.
    fn tool_turn() -> GenerateRequest {
        use provd_client::{Message, ToolCall};
        let mut request = GenerateRequest {
            system: Some("be brief".into()),
            messages: vec![
                Message {
                    images: vec![
                        Image::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgo=".into(),
                        },
                        Image::Url {
                            url: "https://example.com/a.jpg".into(),
                        },
                    ],
                    ..Message::text(Role::User, "Weather here and in Oslo?")
                },
                Message {
                    tool_calls: vec![
                        ToolCall {
                            id: "call_a".into(),
                            name: "get_weather".into(),
                            arguments: "{\"city\":\"Paris\"}".into(),
                        },
                        ToolCall {
                            id: "call_b".into(),
                            name: "get_weather".into(),
                            arguments: "{\"city\":\"Oslo\"}".into(),
                        },
                    ],
                    ..Message::text(Role::Assistant, "")
                },
                Message::tool_result("call_a", "18C"),
                Message {
                    is_error: true,
                    ..Message::tool_result("call_b", "station offline")
                },
            ],
            tools: vec![weather()],
            tool_choice: Some(ToolChoice::Tool("get_weather".into())),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "report".into(),
                schema: json!({"type": "object"}),
                strict: true,
            }),
            reasoning: Some(Reasoning {
                effort: Some(Effort::High),
                ..Reasoning::default()
            }),
            stream: false,
            ..GenerateRequest::default()
        };
        request.max_tokens = Some(50);
        request
    }

    #[test]
    fn tools_tool_turns_images_schema_and_effort_take_the_documented_shapes() {
        let body = chat_body(&spec(), &tool_turn(), "max_completion_tokens").unwrap();
        assert_eq!(
            body,
            json!({
                "model": "gpt-4o",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather here and in Oslo?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
                    ]},
                    {"role": "assistant", "content": null, "tool_calls": [
                        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
                    {"role": "tool", "tool_call_id": "call_b", "content": "Error: station offline"},
                ],
                "max_completion_tokens": 50,
                "tools": [{"type": "function", "function": {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                }}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "response_format": {"type": "json_schema", "json_schema": {"name": "report", "schema": {"type": "object"}, "strict": true}},
                "reasoning_effort": "high",
                "stream": false,
            })
        );
    }

    #[test]
    fn tool_choices_json_object_and_plain_turns_keep_their_simple_forms() {
        let mut request = GenerateRequest::prompt("hi");
        request.messages = vec![provd_client::Message::text(Role::Assistant, "said")];
        let body = chat_body(&spec(), &request, "max_tokens").unwrap();
        // No tools: no tool_choice (OpenAI refuses one alone); text turns stay strings.
        assert_eq!(body.get("tools"), None);
        assert_eq!(
            body["messages"][0],
            json!({"role": "assistant", "content": "said"})
        );
        assert_eq!(
            body["messages"][1],
            json!({"role": "user", "content": "hi"})
        );
        request.tools = vec![weather()];
        for (choice, wire) in [
            (None, None),
            (Some(ToolChoice::Auto), Some(json!("auto"))),
            (Some(ToolChoice::None), Some(json!("none"))),
            (Some(ToolChoice::Required), Some(json!("required"))),
        ] {
            request.tool_choice = choice;
            let body = chat_body(&spec(), &request, "max_tokens").unwrap();
            assert_eq!(body.get("tool_choice"), wire.as_ref());
        }
        request.response_format = Some(ResponseFormat::JsonObject);
        let body = chat_body(&spec(), &request, "max_tokens").unwrap();
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        request.response_format = Some(ResponseFormat::Text);
        let body = chat_body(&spec(), &request, "max_tokens").unwrap();
        assert_eq!(body.get("response_format"), None);
    }

    #[test]
    fn a_budget_alone_maps_to_an_effort_by_the_documented_thresholds() {
        for (budget, effort) in [
            (1, "low"),
            (1024, "low"),
            (1025, "medium"),
            (2048, "medium"),
            (2049, "high"),
            (32_000, "high"),
        ] {
            let mut request = GenerateRequest::prompt("hi");
            request.reasoning = Some(Reasoning {
                budget_tokens: Some(budget),
                ..Reasoning::default()
            });
            let body = chat_body(&spec(), &request, "max_tokens").unwrap();
            assert_eq!(body["reasoning_effort"], effort, "{budget}");
        }
        let mut request = GenerateRequest::prompt("hi");
        request.reasoning = Some(Reasoning {
            effort: Some(Effort::Minimal),
            budget_tokens: Some(9000),
            show: true,
        });
        let body = chat_body(&spec(), &request, "max_tokens").unwrap();
        assert_eq!(body["reasoning_effort"], "minimal", "the effort wins");
        request.reasoning = Some(Reasoning {
            show: true,
            ..Reasoning::default()
        });
        let body = chat_body(&spec(), &request, "max_tokens").unwrap();
        assert_eq!(body.get("reasoning_effort"), None);
    }

    #[test]
    fn a_typed_option_also_set_in_additional_params_is_refused_by_name() {
        let mut request = tool_turn();
        request
            .additional_params
            .insert("Reasoning_Effort".into(), json!("low"));
        let e = chat_body(&spec(), &request, "max_tokens").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message.contains("additional_params.reasoning_effort"),
            "{e}"
        );
        // Without the typed option the parameter passes as before.
        let mut request = GenerateRequest::prompt("hi");
        request
            .additional_params
            .insert("tool_choice".into(), json!("auto"));
        let body = chat_body(&spec(), &request, "max_tokens").unwrap();
        assert_eq!(body["tool_choice"], "auto");
    }

    /// Two calls made in parallel, streamed as OpenAI does: each call's first piece has
    /// its id, type and name with empty arguments, then argument fragments; the second
    /// call starts while the first's arguments are still coming in the same chunk.
    const PARALLEL: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"call_p\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}],\"refusal\":null},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
        data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\": \"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
        data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}},{\"index\":1,\"id\":\"call_o\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
        data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"function\":{\"arguments\":\"{\\\"city\\\": \\\"Oslo\\\"}\"}}]},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n\
        data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"tool_calls\"}],\"usage\":null}\n\n\
        data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":80,\"completion_tokens\":40,\"total_tokens\":120,\"completion_tokens_details\":{\"reasoning_tokens\":16,\"audio_tokens\":0}}}\n\n\
        data: [DONE]\n\n";

    fn piece(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> StreamEvent {
        StreamEvent::ToolCall(ToolCallDelta {
            index,
            id: id.map(Into::into),
            name: name.map(Into::into),
            arguments: arguments.into(),
        })
    }

    #[test]
    fn parallel_streamed_calls_become_pieces_with_the_upstreams_indexes() {
        let usage = Usage::new(80, 40).with_reasoning(Some(16));
        assert_eq!(
            decode(PARALLEL).unwrap(),
            vec![
                StreamEvent::Model("gpt-4o".into()),
                piece(0, Some("call_p"), Some("get_weather"), ""),
                piece(0, None, None, "{\"city\": "),
                piece(0, None, None, "\"Paris\"}"),
                piece(1, Some("call_o"), Some("get_weather"), ""),
                piece(1, None, None, "{\"city\": \"Oslo\"}"),
                StreamEvent::Usage(usage),
                StreamEvent::Done {
                    usage,
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
    }

    #[test]
    fn calls_without_an_index_are_numbered_in_the_order_they_start() {
        // Whole calls one a chunk, and one in two pieces, none with an index.
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"id\":\"b\",\"type\":\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{\\\"x\\\"\"}}]}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
            data: [DONE]\n\n";
        let events = decode(stream).unwrap();
        assert_eq!(
            events[..3],
            [
                piece(0, Some("a"), Some("f"), "{}"),
                piece(1, Some("b"), Some("g"), "{\"x\""),
                piece(1, None, None, ":1}"),
            ]
        );
    }

    #[test]
    fn reasoning_content_or_reasoning_deltas_are_reasoning() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,\"reasoning_content\":\"Hmm, \"}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning\":\"Paris.\"}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"twice\",\"reasoning\":\"twice\"}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Paris\",\"reasoning_content\":null}}]}\n\n\
            data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
            data: [DONE]\n\n";
        let events = decode(stream).unwrap();
        assert_eq!(
            events[..4],
            [
                StreamEvent::Reasoning("Hmm, ".into()),
                StreamEvent::Reasoning("Paris.".into()),
                StreamEvent::Reasoning("twice".into()),
                StreamEvent::Text("Paris".into()),
            ]
        );
    }

    #[test]
    fn a_whole_answer_gives_its_calls_reasoning_and_reasoning_tokens() {
        let completion: Completion = serde_json::from_value(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": "o4-mini",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": null,
                    "reasoning_content": "They want two cities.",
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
                    ],
                    "refusal": null,
                },
                "logprobs": null,
                "finish_reason": "tool_calls",
            }],
            "usage": {"prompt_tokens": 50, "completion_tokens": 30, "total_tokens": 80,
                "completion_tokens_details": {"reasoning_tokens": 12}},
        }))
        .unwrap();
        let usage = Usage::new(50, 30).with_reasoning(Some(12));
        assert_eq!(
            completion.into_events("openai").unwrap(),
            vec![
                StreamEvent::Model("o4-mini".into()),
                StreamEvent::Reasoning("They want two cities.".into()),
                piece(
                    0,
                    Some("call_1"),
                    Some("get_weather"),
                    "{\"city\":\"Paris\"}"
                ),
                piece(1, Some("call_2"), Some("now"), "{}"),
                StreamEvent::Done {
                    usage,
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
    }

    #[test]
    fn an_error_inside_the_stream_is_typed() {
        let err = decode(
            "data: {\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\"}}\n\n",
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert!(err.message.contains("slow down"));
    }

    #[test]
    fn error_bodies_of_every_flavour_yield_their_message() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad key","type":"invalid_request_error"}}"#)
                .as_deref(),
            Some("bad key")
        );
        assert_eq!(
            error_message(br#"{"error":"model not loaded"}"#).as_deref(),
            Some("model not loaded")
        );
        assert_eq!(
            error_message(br#"{"object":"error","message":"too long"}"#).as_deref(),
            Some("too long")
        );
        assert_eq!(error_message(b"<html>"), None);
    }
}
