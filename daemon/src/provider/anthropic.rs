//! Anthropic's Messages API (<https://docs.claude.com/en/api/messages>).
//!
//! - Generate: `POST {base_url}/v1/messages`, streamed as named SSE events
//!   (`message_start`, `content_block_start` / `_delta` / `_stop`, `message_delta`,
//!   `message_stop`, `ping`, `error`) or answered with one `Message` object.
//! - List models: `GET {base_url}/v1/models`, paginated with `has_more` / `last_id` /
//!   `after_id`.
//! - Auth: `x-api-key: <key>` and `anthropic-version: 2023-06-01` (the version, and any
//!   `anthropic-beta` flags, can be set in `[providers.<id>.options]`).
//!
//! `base_url` is the API root without the version prefix (`https://api.anthropic.com`),
//! as Anthropic's SDKs expect.
//!
//! Request shape decisions:
//! - The system prompt (the `system` field and any system turns, joined) goes in the
//!   top-level `system` field: the Messages API has no system role.
//! - Consecutive turns of the same role are merged into one turn whose content is the
//!   list of their text blocks. The API documents that it combines such turns itself,
//!   so the model sees the same input; merging here keeps the request valid for
//!   Anthropic-compatible servers and older API versions that insist on alternation.
//! - `max_tokens` is required by the API: the request's, else the config's.
//! - `additional_params` may add any body field, but never contradict the request:
//!   `model`, `stream`, `messages` and `max_tokens` are always provd's (refused), and
//!   `system`, `temperature`, `top_p` and `stop_sequences` are refused only when the
//!   request sets them itself. So a caller without a system prompt may pass the block
//!   form of `system` (with `cache_control`, say), which the request's string cannot
//!   express. Gateway-steering keys are refused as for every provider
//!   ([`super::check_additional_param`]).
//!
//! Only text is carried: thinking, redacted thinking and tool-use blocks are skipped
//! (the finish reason `tool_use` says a tool was asked for).

use std::time::{Duration, SystemTime};

use provd_client::{ErrorCode, FinishReason, GenerateRequest, ModelInfo, Role, Usage};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http::{self, time, Decoder, HttpApi, HttpProvider, Transport};
use super::sse::{SseEvent, SseParser};
use super::{
    check_additional_param, conversation, fold_param, BoxFuture, ProviderError, ProviderSpec,
    ReportedModel, StreamEvent,
};
use crate::settings::ProviderKind;

/// Anthropic's API root.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The API version sent when the config names none: the one the Messages API was
/// released under, which every current model serves.
pub const DEFAULT_API_VERSION: &str = "2023-06-01";

/// Body keys provd always sets itself.
const RESERVED: &[&str] = &["model", "stream", "messages", "max_tokens"];

/// Models asked for per page of `GET /v1/models` (the API's maximum), so one page is
/// the usual case.
const MODELS_PAGE_LIMIT: &str = "1000";

/// The rate-limit reset headers, each with the header that says whether its limit is
/// exhausted (<https://docs.claude.com/en/api/rate-limits#response-headers>).
const RESET_HEADERS: [(&str, &str); 4] = [
    (
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-requests-remaining",
    ),
    (
        "anthropic-ratelimit-tokens-reset",
        "anthropic-ratelimit-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-input-tokens-reset",
        "anthropic-ratelimit-input-tokens-remaining",
    ),
    (
        "anthropic-ratelimit-output-tokens-reset",
        "anthropic-ratelimit-output-tokens-remaining",
    ),
];

/// A bad option: the field and the rule it broke.
pub type OptionError = (String, String);

/// `[providers.<id>.options]` of an `anthropic` provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnthropicOptions {
    /// `anthropic_version`: the `anthropic-version` header, a date such as `2023-06-01`.
    pub version: String,
    /// `anthropic_beta`: beta features, sent joined by commas as `anthropic-beta`.
    pub beta: Vec<String>,
}

impl Default for AnthropicOptions {
    fn default() -> Self {
        AnthropicOptions {
            version: DEFAULT_API_VERSION.to_owned(),
            beta: Vec::new(),
        }
    }
}

impl AnthropicOptions {
    /// Reads and checks `[providers.<id>.options]`; unknown keys are refused so a typo
    /// is not silently ignored.
    pub fn from_table(table: &toml::Table) -> Result<AnthropicOptions, OptionError> {
        let mut options = AnthropicOptions::default();
        for (key, value) in table {
            match key.as_str() {
                "anthropic_version" => {
                    let version = value
                        .as_str()
                        .filter(|v| is_version_date(v))
                        .ok_or_else(|| {
                            (
                                key.clone(),
                                format!("must be a date string such as \"{DEFAULT_API_VERSION}\", got {}", shown(value)),
                            )
                        })?;
                    options.version = version.to_owned();
                }
                "anthropic_beta" => {
                    let flags: Option<Vec<String>> = value.as_array().and_then(|a| {
                        a.iter()
                            .map(|f| f.as_str().filter(|f| is_beta_flag(f)).map(str::to_owned))
                            .collect()
                    });
                    options.beta = flags.ok_or_else(|| {
                        (
                            key.clone(),
                            format!("must be a list of beta names such as [\"prompt-caching-2024-07-31\"], got {}", shown(value)),
                        )
                    })?;
                }
                _ => {
                    return Err((
                        key.clone(),
                        "is not an anthropic option (anthropic_version, anthropic_beta)".into(),
                    ))
                }
            }
        }
        Ok(options)
    }
}

/// An option's value as it would be written in JSON, for error messages.
fn shown(value: &toml::Value) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "a value of the wrong type".into())
}

/// `YYYY-MM-DD`: the form of every Anthropic API version.
fn is_version_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// A beta name: letters, digits, `-`, `_` and `.`, so it is a valid header token and
/// cannot smuggle a comma or a line break into the header.
fn is_beta_flag(f: &str) -> bool {
    !f.is_empty()
        && f.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The Anthropic Messages API.
pub type AnthropicProvider = HttpProvider<AnthropicApi>;

impl AnthropicProvider {
    /// An instance from its configuration.
    pub fn new(spec: ProviderSpec) -> Result<AnthropicProvider, ProviderError> {
        let options =
            AnthropicOptions::from_table(&spec.config.options).map_err(|(field, rule)| {
                ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!("providers.{}.options.{field} {rule}", spec.id),
                )
            })?;
        let base_url = spec.base_url(DEFAULT_BASE_URL);
        let api = AnthropicApi {
            messages_url: http::endpoint(&spec.id, &base_url, "/v1/messages")?,
            base_url,
            options,
        };
        HttpProvider::with_api(spec, api)
    }
}

/// What the Messages API does its own way.
#[derive(Debug)]
pub struct AnthropicApi {
    options: AnthropicOptions,
    /// The API root, without the version prefix.
    base_url: String,
    /// `POST` here to generate.
    messages_url: Url,
}

impl AnthropicApi {
    fn models_url(
        &self,
        spec: &ProviderSpec,
        after_id: Option<&str>,
    ) -> Result<Url, ProviderError> {
        let mut url = http::endpoint(&spec.id, &self.base_url, "/v1/models")?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", MODELS_PAGE_LIMIT);
            if let Some(after) = after_id {
                query.append_pair("after_id", after);
            }
        }
        Ok(url)
    }
}

impl HttpApi for AnthropicApi {
    type Framer = SseParser;
    type Decoder = EventDecoder;

    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn authorize(
        &self,
        spec: &ProviderSpec,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, ProviderError> {
        let key = spec.require_credential()?;
        let key_header = http::auth_header(&spec.id, "", key)?;
        let mut request = request
            .header("x-api-key", key_header)
            .header("anthropic-version", &self.options.version);
        if !self.options.beta.is_empty() {
            request = request.header("anthropic-beta", self.options.beta.join(","));
        }
        Ok(request)
    }

    fn url(&self, _: &ProviderSpec, _: &GenerateRequest) -> Result<Url, ProviderError> {
        Ok(self.messages_url.clone())
    }

    fn body(&self, spec: &ProviderSpec, request: &GenerateRequest) -> Result<Value, ProviderError> {
        let (system, turns) = conversation(request);
        let messages = alternating_turns(&turns);
        if messages.is_empty() {
            return Err(ProviderError::new(
                ErrorCode::InvalidRequest,
                "the request has no user or assistant turn: give a prompt or messages",
            ));
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(spec.model));
        body.insert("messages".into(), Value::Array(messages));
        body.insert(
            "max_tokens".into(),
            json!(request.max_tokens.unwrap_or(spec.config.max_tokens)),
        );
        if let Some(system) = system {
            body.insert("system".into(), json!(system));
        }
        if let Some(t) = request.temperature {
            body.insert("temperature".into(), super::json_f32(t));
        }
        if let Some(p) = request.top_p {
            body.insert("top_p".into(), super::json_f32(p));
        }
        if !request.stop.is_empty() {
            body.insert("stop_sequences".into(), json!(request.stop));
        }
        merge_params(&mut body, request, spec)?;
        body.insert("stream".into(), json!(request.stream));
        Ok(Value::Object(body))
    }

    fn decoder(&self, provider: &str) -> EventDecoder {
        EventDecoder::new(provider)
    }

    fn whole(
        &self,
        _: &ProviderSpec,
        http: &Transport,
        body: Vec<u8>,
        streamed: bool,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        let message: WireMessage = http.parse_whole(
            &body,
            streamed,
            "an event stream or a message",
            &["content"],
        )?;
        Ok(message.into_events())
    }

    fn list_models(
        provider: &HttpProvider<Self>,
    ) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>> {
        let (spec, transport) = (provider.spec(), provider.transport());
        Box::pin(http::paginated(&spec.id, move |after| async move {
            let url = provider.api().models_url(spec, after.as_deref())?;
            let page: ModelsPage = transport
                .read_json(provider.send(transport.get(url)).await?)
                .await?;
            let models = page.data.into_iter().map(|m| ModelInfo {
                created_at: m.created_at.as_deref().and_then(unix_seconds),
                id: m.id,
                provider: spec.id.clone(),
                display_name: m.display_name,
                context_window: m.max_input_tokens.filter(|&n| n > 0),
                ..ModelInfo::default()
            });
            // A cursor that does not move would fetch the same page forever.
            let next = page
                .last_id
                .filter(|last| page.has_more && after.as_deref() != Some(last.as_str()));
            Ok((models.collect(), next))
        }))
    }

    fn error_message(body: &[u8]) -> Option<String> {
        error_message(body)
    }

    fn retry_after(headers: &HeaderMap) -> Option<Duration> {
        retry_after(headers)
    }
}

/// The turns as the API wants them: roles alternate, and a run of turns with the same
/// role becomes one turn holding each as a text block (what the API itself does with
/// such a run). A single text stays a plain string, the API's shorthand.
fn alternating_turns(turns: &[provd_client::Message]) -> Vec<Value> {
    let mut merged: Vec<(&'static str, Vec<&str>)> = Vec::with_capacity(turns.len());
    for turn in turns {
        let role = match turn.role {
            Role::Assistant => "assistant",
            // `conversation` has taken the system turns out already.
            _ => "user",
        };
        match merged.last_mut() {
            Some((last, texts)) if *last == role => texts.push(&turn.content),
            _ => merged.push((role, vec![&turn.content])),
        }
    }
    merged
        .into_iter()
        .map(|(role, texts)| {
            let content = match texts.as_slice() {
                [one] => json!(one),
                many => Value::Array(
                    many.iter()
                        .map(|t| json!({"type": "text", "text": t}))
                        .collect(),
                ),
            };
            json!({"role": role, "content": content})
        })
        .collect()
}

/// Copies `additional_params` into the body without letting them contradict the
/// request (the module docs say which keys are refused, and why).
fn merge_params(
    body: &mut Map<String, Value>,
    request: &GenerateRequest,
    spec: &ProviderSpec,
) -> Result<(), ProviderError> {
    for (key, value) in &request.additional_params {
        if let Err(mut e) = check_additional_param(key, RESERVED, spec) {
            if fold_param(key) == "maxtokens" {
                e.message.push_str("; use the request's max_tokens");
            }
            return Err(e);
        }
        if body.contains_key(key) {
            let field = match key.as_str() {
                "stop_sequences" => "stop",
                other => other,
            };
            return Err(ProviderError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "additional_params.{key} conflicts with the request's own {field}; set it in one place"
                ),
            ));
        }
        body.insert(key.clone(), value.clone());
    }
    Ok(())
}

/// `{"type": "error", "error": {"type": …, "message": …}, "request_id": …}`, the shape of
/// every Anthropic error (<https://docs.claude.com/en/api/errors#error-shapes>); the
/// request id is what Anthropic's support asks for.
fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let message = v
        .pointer("/error/message")
        .or_else(|| v.get("message"))
        .and_then(Value::as_str)?;
    let mut text = match v.pointer("/error/type").and_then(Value::as_str) {
        Some(kind) => format!("{kind}: {message}"),
        None => message.to_owned(),
    };
    if let Some(id) = v.get("request_id").and_then(Value::as_str) {
        text.push_str(&format!(" (request_id {id})"));
    }
    Some(text)
}

/// The standard hints (`retry-after`, `retry-after-ms`) first; else the latest reset of
/// the rate limits that are exhausted.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    http::retry_after(headers).or_else(|| reset_hint(headers, SystemTime::now()))
}

/// When every exhausted limit has reset, from the `anthropic-ratelimit-*-reset` headers
/// (RFC 3339 times). A limit counts as exhausted when its `-remaining` header is `0` or
/// absent: resets of limits with room left say nothing about when a retry will pass
/// (and a 529, which is about capacity, carries them too).
fn reset_hint(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    RESET_HEADERS
        .iter()
        .filter(|(_, remaining)| text(remaining).is_none_or(|r| r == "0"))
        .filter_map(|(reset, _)| time::rfc3339(text(reset)?))
        .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
        .max()
}

/// A model's `created_at` in Unix seconds. The API sets the epoch itself when a release
/// date is unknown, which is reported as unknown rather than as 1970.
fn unix_seconds(s: &str) -> Option<u64> {
    time::unix_seconds(s).filter(|&seconds| seconds > 0)
}

/// Anthropic's stop reasons (<https://docs.claude.com/en/api/handling-stop-reasons>).
fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        // Both cut the answer short at a token limit: the documentation says to treat
        // a response that filled the context window as truncated.
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // pause_turn (a server tool paused a long turn) and anything newer.
        _ => FinishReason::Other,
    }
}

/// The system-wide code of an Anthropic error type, and whether retrying may help
/// (<https://docs.claude.com/en/api/errors#http-errors>).
fn error_code(kind: &str) -> (ErrorCode, bool) {
    match kind {
        "invalid_request_error" | "request_too_large" => (ErrorCode::InvalidRequest, false),
        "authentication_error" => (ErrorCode::Unauthenticated, false),
        "permission_error" | "billing_error" => (ErrorCode::PermissionDenied, false),
        "not_found_error" => (ErrorCode::NotFound, false),
        "rate_limit_error" => (ErrorCode::RateLimited, true),
        "timeout_error" => (ErrorCode::Timeout, true),
        "overloaded_error" => (ErrorCode::Overloaded, true),
        // An internal error, HTTP 500 outside a stream, which is retried there too.
        "api_error" => (ErrorCode::UpstreamError, true),
        _ => (ErrorCode::UpstreamError, false),
    }
}

/// An `error` event: the stream's way of reporting what would have been an HTTP error
/// had it happened before the headers (an `overloaded_error` for a 529, say).
fn stream_error(provider: &str, error: &WireError) -> ProviderError {
    let (code, retryable) = error_code(&error.kind);
    let mut e = ProviderError::new(
        code,
        format!(
            "{provider}: error in stream: {}: {}",
            error.kind, error.message
        ),
    );
    e.retryable = retryable;
    e
}

#[derive(Clone, Copy, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u32>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u32>,
    #[serde(default)]
    cache_read_input_tokens: Option<u32>,
    #[serde(default)]
    output_tokens: Option<u32>,
}

/// Token counts as the stream reveals them: `message_start` gives them all, each
/// `message_delta` repeats the cumulative ones it knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tokens {
    input: u32,
    cache_creation: u32,
    cache_read: u32,
    output: u32,
}

impl Tokens {
    /// Takes every count present in `u`, keeping the others.
    fn update(&mut self, u: WireUsage) {
        self.input = u.input_tokens.unwrap_or(self.input);
        self.cache_creation = u.cache_creation_input_tokens.unwrap_or(self.cache_creation);
        self.cache_read = u.cache_read_input_tokens.unwrap_or(self.cache_read);
        self.output = u.output_tokens.unwrap_or(self.output);
    }

    /// Anthropic's `input_tokens` counts only the prompt after the last cache breakpoint;
    /// the prompt is that plus what was written to and read from the cache.
    fn usage(&self) -> Usage {
        let prompt = self
            .input
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read);
        Usage::new(prompt, self.output)
    }
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct MessageStart {
    message: MessageStartBody,
}

#[derive(Deserialize)]
struct MessageStartBody {
    /// The model that answered, when the upstream names it.
    #[serde(default, deserialize_with = "http::lenient_text")]
    model: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
struct BlockStart {
    content_block: WireBlock,
}

#[derive(Deserialize)]
struct BlockDelta {
    delta: WireBlock,
}

/// A content block or a delta: only `type` and, for text, `text` matter here.
#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct MessageDelta {
    #[serde(default)]
    delta: MessageDeltaBody,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Default, Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEvent {
    error: WireError,
}

/// Reads the Messages stream up to `message_stop`.
pub struct EventDecoder {
    provider: String,
    tokens: Tokens,
    finish: Option<FinishReason>,
}

impl EventDecoder {
    /// A decoder at the start of a stream; its errors name `provider`.
    pub fn new(provider: &str) -> Self {
        EventDecoder {
            provider: provider.to_owned(),
            tokens: Tokens::default(),
            finish: None,
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        v: Value,
    ) -> Result<T, ProviderError> {
        serde_json::from_value(v)
            .map_err(|e| http::malformed(&self.provider, format!("{kind} event: {e}")))
    }
}

impl Decoder for EventDecoder {
    type Unit = SseEvent;

    fn unit(&mut self, event: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let data: Value =
            serde_json::from_str(&event.data).map_err(|e| http::malformed(&self.provider, e))?;
        // The data repeats the event name as `type`; either will do.
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or(event.event)
            .unwrap_or_default();
        match kind.as_str() {
            "message_start" => {
                let start: MessageStart = self.parse(&kind, data)?;
                ReportedModel::default().note(start.message.model.as_deref(), out);
                self.tokens.update(start.message.usage);
                // Reported at once, so a generation cancelled or failed from here on
                // still says what its prompt cost.
                out.push(StreamEvent::Usage(self.tokens.usage()));
            }
            "content_block_start" => {
                let start: BlockStart = self.parse(&kind, data)?;
                // A text block starts empty in practice, but its initial text is text.
                if start.content_block.kind == "text" {
                    if let Some(text) = start.content_block.text.filter(|t| !t.is_empty()) {
                        out.push(StreamEvent::Text(text));
                    }
                }
            }
            "content_block_delta" => {
                let delta: BlockDelta = self.parse(&kind, data)?;
                // thinking_delta, signature_delta, input_json_delta, citations_delta and
                // future kinds belong to blocks provd does not carry.
                if delta.delta.kind == "text_delta" {
                    if let Some(text) = delta.delta.text.filter(|t| !t.is_empty()) {
                        out.push(StreamEvent::Text(text));
                    }
                }
            }
            "message_delta" => {
                let delta: MessageDelta = self.parse(&kind, data)?;
                if let Some(reason) = delta.delta.stop_reason {
                    self.finish = Some(finish_reason(&reason));
                }
                self.tokens.update(delta.usage);
                out.push(StreamEvent::Usage(self.tokens.usage()));
            }
            "message_stop" => out.push(StreamEvent::Done {
                usage: self.tokens.usage(),
                finish_reason: self.finish.unwrap_or(FinishReason::Other),
            }),
            "error" => {
                let error: ErrorEvent = self.parse(&kind, data)?;
                return Err(stream_error(&self.provider, &error.error));
            }
            // content_block_stop and ping carry nothing provd needs; the API may add
            // event types and asks clients to ignore those they do not know.
            _ => {}
        }
        Ok(())
    }

    fn ended_early(&mut self) -> ProviderError {
        let mut e = ProviderError::new(
            ErrorCode::UpstreamError,
            format!(
                "{}: the stream ended without its final message_stop event",
                self.provider
            ),
        );
        e.retryable = true;
        e
    }
}

/// A non-streamed `Message`.
#[derive(Deserialize)]
struct WireMessage {
    /// The model that answered, when the upstream names it.
    #[serde(default, deserialize_with = "http::lenient_text")]
    model: Option<String>,
    #[serde(default)]
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

impl WireMessage {
    /// The events the same answer yields when streamed: usage, the text blocks joined
    /// as the stream would deliver them, the end.
    fn into_events(self) -> Vec<StreamEvent> {
        let mut tokens = Tokens::default();
        tokens.update(self.usage);
        let usage = tokens.usage();
        let text: String = self
            .content
            .into_iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text)
            .collect();
        let mut events = Vec::new();
        ReportedModel::default().note(self.model.as_deref(), &mut events);
        events.push(StreamEvent::Usage(usage));
        if !text.is_empty() {
            events.push(StreamEvent::Text(text));
        }
        events.push(StreamEvent::Done {
            usage,
            finish_reason: self
                .stop_reason
                .as_deref()
                .map_or(FinishReason::Other, finish_reason),
        });
        events
    }
}

#[derive(Deserialize)]
struct ModelsPage {
    #[serde(default)]
    data: Vec<WireModel>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

#[derive(Deserialize)]
struct WireModel {
    id: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    /// Newer API versions report the context window.
    #[serde(default)]
    max_input_tokens: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(stream: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        parser.push(stream.as_bytes(), &mut events).unwrap();
        let mut d = EventDecoder::new("anthropic");
        let mut out = Vec::new();
        for e in events {
            d.unit(e, &mut out)?;
        }
        Ok(out)
    }

    /// The stream of the Messages streaming documentation, with a thinking block, a
    /// tool-use block and a ping in it.
    const STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me see\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"!\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": \"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":2}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn a_documented_stream_decodes_to_usage_text_and_done() {
        assert_eq!(
            decode(STREAM).unwrap(),
            vec![
                StreamEvent::Model("claude-sonnet-4-5".into()),
                StreamEvent::Usage(Usage::new(25, 1)),
                StreamEvent::Text("Hello".into()),
                StreamEvent::Text("!".into()),
                StreamEvent::Usage(Usage::new(25, 15)),
                StreamEvent::Done {
                    usage: Usage::new(25, 15),
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
    }

    #[test]
    fn cached_prompt_tokens_count_as_prompt_and_a_delta_may_update_them() {
        let stream = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"cache_creation_input_tokens\":100,\"cache_read_input_tokens\":1000,\"output_tokens\":1}}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":4,\"output_tokens\":9}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";
        let events = decode(stream).unwrap();
        assert_eq!(events[0], StreamEvent::Usage(Usage::new(1103, 1)));
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Done {
                usage: Usage::new(1104, 9),
                finish_reason: FinishReason::Stop
            })
        );
    }

    #[test]
    fn an_error_event_is_typed_and_keeps_the_message() {
        for (kind, code, retryable) in [
            ("overloaded_error", ErrorCode::Overloaded, true),
            ("rate_limit_error", ErrorCode::RateLimited, true),
            ("api_error", ErrorCode::UpstreamError, true),
            ("invalid_request_error", ErrorCode::InvalidRequest, false),
            ("authentication_error", ErrorCode::Unauthenticated, false),
            ("permission_error", ErrorCode::PermissionDenied, false),
            ("not_found_error", ErrorCode::NotFound, false),
            ("request_too_large", ErrorCode::InvalidRequest, false),
            ("timeout_error", ErrorCode::Timeout, true),
            ("something_new", ErrorCode::UpstreamError, false),
        ] {
            let stream = format!(
                "event: content_block_delta\n\
data: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"par\"}}}}\n\n\
event: error\n\
data: {{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":\"it broke\"}}}}\n\n"
            );
            let mut parser = SseParser::new();
            let mut units = Vec::new();
            parser.push(stream.as_bytes(), &mut units).unwrap();
            let mut d = EventDecoder::new("a");
            let mut out = Vec::new();
            d.unit(units.remove(0), &mut out).unwrap();
            assert_eq!(out, [StreamEvent::Text("par".into())]);
            let err = d.unit(units.remove(0), &mut out).unwrap_err();
            assert_eq!((err.code, err.retryable), (code, retryable), "{kind}");
            assert_eq!(err.message, format!("a: error in stream: {kind}: it broke"));
        }
    }

    #[test]
    fn unknown_events_and_deltas_are_ignored() {
        let stream = "event: brand_new_event\n\
data: {\"type\":\"brand_new_event\",\"x\":1}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"citations_delta\",\"citation\":{}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"abc\"}}\n\n\
event: ping\n\
data: {\"type\": \"ping\"}\n\n";
        assert_eq!(decode(stream).unwrap(), vec![]);
    }

    #[test]
    fn an_event_named_only_by_its_sse_name_still_decodes() {
        let stream = "event: message_stop\ndata: {}\n\n";
        assert_eq!(
            decode(stream).unwrap(),
            vec![StreamEvent::Done {
                usage: Usage::default(),
                finish_reason: FinishReason::Other
            }]
        );
        let err = decode("data: {not json\n\n").unwrap_err();
        assert_eq!(err.code, ErrorCode::UpstreamError);
        assert!(!err.retryable);
    }

    #[test]
    fn a_message_yields_the_events_its_stream_would() {
        let message: WireMessage = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Hello"},
                {"type": "tool_use", "id": "t", "name": "n", "input": {}},
                {"type": "text", "text": "!"}
            ],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 15}
        }))
        .unwrap();
        assert_eq!(
            message.into_events(),
            vec![
                StreamEvent::Model("m".into()),
                StreamEvent::Usage(Usage::new(25, 15)),
                StreamEvent::Text("Hello!".into()),
                StreamEvent::Done {
                    usage: Usage::new(25, 15),
                    finish_reason: FinishReason::Length
                },
            ]
        );
    }

    #[test]
    fn stop_reasons_map_to_finish_reasons() {
        for (reason, finish) in [
            ("end_turn", FinishReason::Stop),
            ("stop_sequence", FinishReason::Stop),
            ("max_tokens", FinishReason::Length),
            ("model_context_window_exceeded", FinishReason::Length),
            ("tool_use", FinishReason::ToolCalls),
            ("refusal", FinishReason::ContentFilter),
            ("pause_turn", FinishReason::Other),
            ("whatever_next", FinishReason::Other),
        ] {
            assert_eq!(finish_reason(reason), finish, "{reason}");
        }
    }

    #[test]
    fn model_creation_times_are_rfc3339_and_the_epoch_means_unknown() {
        assert_eq!(unix_seconds("2025-02-19T00:00:00Z"), Some(1_739_923_200));
        assert_eq!(
            unix_seconds("1970-01-01T00:00:00Z"),
            None,
            "epoch means unknown"
        );
    }

    #[test]
    fn reset_headers_hint_the_latest_reset_of_the_exhausted_limits() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_755_780_000);
        let mut h = HeaderMap::new();
        let set = |h: &mut HeaderMap, name: &'static str, v: &'static str| {
            h.insert(name, reqwest::header::HeaderValue::from_static(v));
        };
        assert_eq!(reset_hint(&h, now), None);
        // Limits with room left say nothing.
        set(&mut h, "anthropic-ratelimit-requests-remaining", "999");
        set(
            &mut h,
            "anthropic-ratelimit-requests-reset",
            "2025-08-21T12:50:00Z",
        );
        assert_eq!(reset_hint(&h, now), None);
        set(&mut h, "anthropic-ratelimit-input-tokens-remaining", "0");
        set(
            &mut h,
            "anthropic-ratelimit-input-tokens-reset",
            "2025-08-21T12:40:30Z",
        );
        assert_eq!(reset_hint(&h, now), Some(Duration::from_secs(30)));
        // A reset without its remaining header counts; the later one wins.
        set(
            &mut h,
            "anthropic-ratelimit-output-tokens-reset",
            "2025-08-21T12:40:45.5Z",
        );
        assert_eq!(reset_hint(&h, now), Some(Duration::from_millis(45_500)));
        // A past reset means now.
        let later = now + Duration::from_secs(3600);
        assert_eq!(reset_hint(&h, later), Some(Duration::ZERO));
        // retry-after wins over the resets.
        set(&mut h, "retry-after", "7");
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn error_bodies_yield_type_message_and_request_id() {
        assert_eq!(
            error_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_011"}"#
            )
            .as_deref(),
            Some("overloaded_error: Overloaded (request_id req_011)")
        );
        assert_eq!(
            error_message(
                br#"{"type":"error","error":{"type":"not_found_error","message":"model: x"}}"#
            )
            .as_deref(),
            Some("not_found_error: model: x")
        );
        assert_eq!(
            error_message(br#"{"message":"proxy says no"}"#).as_deref(),
            Some("proxy says no")
        );
        assert_eq!(error_message(b"<html>"), None);
    }

    fn provider(options: &str, extra: &str) -> AnthropicProvider {
        let table = format!("type = \"anthropic\"\n{extra}\n[providers.a.options]\n{options}");
        AnthropicProvider::new(ProviderSpec::for_test(
            "a",
            &table,
            "claude-x",
            Some("sk-ant-test"),
        ))
        .unwrap()
    }

    fn turn(role: Role, content: &str) -> provd_client::Message {
        provd_client::Message::text(role, content)
    }

    #[test]
    fn the_body_has_top_level_system_alternating_turns_and_max_tokens() {
        let p = provider("", "max_tokens = 321");
        let mut r = GenerateRequest::prompt("and now?");
        r.system = Some("be brief".into());
        r.messages = vec![
            turn(Role::System, "in English"),
            turn(Role::User, "hello"),
            turn(Role::User, "are you there?"),
            turn(Role::Assistant, "hi"),
        ];
        r.stop = vec!["END".into()];
        let body = p.body(&r).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "claude-x",
                "system": "be brief\n\nin English",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "hello"},
                        {"type": "text", "text": "are you there?"},
                    ]},
                    {"role": "assistant", "content": "hi"},
                    {"role": "user", "content": "and now?"},
                ],
                "max_tokens": 321,
                "stop_sequences": ["END"],
                "stream": true,
            })
        );
        let e = p.body(&GenerateRequest::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message.contains("no user or assistant turn"),
            "{}",
            e.message
        );
    }

    #[test]
    fn additional_params_add_fields_but_never_contradict_the_request() {
        let p = provider("", "");
        let with = |key: &str, value: Value, system: Option<&str>| {
            let mut r = GenerateRequest::prompt("q");
            r.system = system.map(str::to_owned);
            r.temperature = Some(0.5);
            r.additional_params.insert(key.into(), value);
            p.body(&r)
        };
        let body = with("top_k", json!(5), None).unwrap();
        assert_eq!(body["top_k"], 5);
        let blocks =
            json!([{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}]);
        assert_eq!(
            with("system", blocks.clone(), None).unwrap()["system"],
            blocks
        );
        for key in ["model", "stream", "messages", "max_tokens"] {
            let e = with(key, json!(1), None).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert!(
                e.message
                    .contains(&format!("additional_params.{key} is set by provd")),
                "{}",
                e.message
            );
        }
        for (key, system) in [("system", Some("s")), ("temperature", None)] {
            let e = with(key, json!(1), system).unwrap_err();
            assert!(
                e.message.contains("conflicts with the request's own"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn options_are_checked_and_unknown_ones_refused() {
        let table = |s: &str| s.parse::<toml::Table>().unwrap();
        assert_eq!(
            AnthropicOptions::from_table(&table("")).unwrap(),
            AnthropicOptions::default()
        );
        let o = AnthropicOptions::from_table(&table(
            "anthropic_version = \"2023-01-01\"\nanthropic_beta = [\"a-1\", \"b_2.0\"]",
        ))
        .unwrap();
        assert_eq!(o.version, "2023-01-01");
        assert_eq!(o.beta, ["a-1", "b_2.0"]);
        for (text, field) in [
            ("anthropic_version = \"latest\"", "anthropic_version"),
            ("anthropic_version = 2023", "anthropic_version"),
            ("anthropic_beta = \"x\"", "anthropic_beta"),
            ("anthropic_beta = [\"a,b\"]", "anthropic_beta"),
            ("anthropic_versoin = \"2023-06-01\"", "anthropic_versoin"),
        ] {
            let (f, _) = AnthropicOptions::from_table(&table(text)).unwrap_err();
            assert_eq!(f, field, "{text}");
        }
        // The config file is checked when loaded, naming the key.
        let e = crate::config::Config::parse(
            "[providers.a]\ntype = \"anthropic\"\n[providers.a.options]\nanthropic_version = \"v1\"\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "config t.toml: providers.a.options.anthropic_version must be a date string such as \"2023-06-01\", got \"v1\""
        );
    }
}
