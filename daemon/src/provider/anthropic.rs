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
//! How tools, structured output, reasoning and images map:
//! - **Tools**: `tools` → `[{name, description, input_schema}]` (no parameters: the
//!   empty object schema); `tool_choice` auto / none / required / one tool →
//!   `{type: auto}` / `{type: none}` / `{type: any}` / `{type: tool, name}`.
//! - **Turns**: an assistant turn's calls → `tool_use` blocks `{id, name, input}` after
//!   its text block; a tool turn → a user turn of one `tool_result` block `{tool_use_id,
//!   content, is_error}` (`is_error` only when set). Runs of tool turns (the results of
//!   parallel calls) and a user turn after them merge into one user turn, as the API
//!   requires, so roles keep alternating.
//! - **Streamed calls**: `content_block_start` of a `tool_use` block → the call's first
//!   piece (index = the content block's index, id, name); `input_json_delta`'s
//!   `partial_json` → argument pieces; a whole answer's `tool_use` block → one piece with
//!   the input. `stop_reason: tool_use` → `tool_calls`.
//! - **Reasoning**: `thinking: {type: enabled, budget_tokens}`, the budget being the
//!   request's, else its effort mapped by [`super::thinking_budget`]. The API wants
//!   `1024 <= budget < max_tokens`, its `max_tokens` counting the thinking: a budget
//!   under 1024 is refused, as is a request's own `max_tokens` at or under the budget
//!   (the caller's cap on all output); the configured default is raised to budget plus
//!   default. `thinking_delta` → reasoning pieces; each `thinking` block with its
//!   `signature_delta`s, and each `redacted_thinking` block with its data, in order,
//!   become one provider state `{"thinking": [blocks]}` before the end, sent back as the
//!   leading blocks of that assistant turn when the turn came from an anthropic provider
//!   ([`super::state_for`]), as the API requires of a tool loop with thinking (kept
//!   shown or not, up to [`MAX_THINKING_BYTES`]). Usage: the API counts thinking in
//!   `output_tokens` and reports no separate figure, so `reasoning_tokens` stays
//!   unknown.
//! - **Structured output**: `json_schema` → `output_config: {format: {type:
//!   json_schema, schema}}`, the API's constrained decoding (generally available, no beta
//!   header; the older `output_format` beta is deprecated). The answer's text is the
//!   JSON and streams as text; this works beside tools and thinking, which the
//!   classical forced-tool trick does not. `json_object` is refused: the API constrains
//!   JSON only to a schema (its objects need `additionalProperties: false`), so there is
//!   no faithful "any object" mode; the type's capabilities leave it out.
//! - **Images**: a user turn's text block, then `{type: image, source: {type: base64,
//!   media_type, data}}` or `{source: {type: url, url}}` blocks.

use std::time::{Duration, SystemTime};

use provd_client::{
    ErrorCode, FinishReason, GenerateRequest, Image, ModelInfo, ResponseFormat, Role,
    ToolCallDelta, ToolChoice, Usage,
};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http::{self, time, Decoder, HttpApi, HttpProvider, Transport};
use super::sse::{SseEvent, SseParser};
use super::tools;
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
        let messages = alternating_turns(&turns)?;
        if messages.is_empty() {
            return Err(ProviderError::new(
                ErrorCode::InvalidRequest,
                "the request has no user or assistant turn: give a prompt or messages",
            ));
        }
        let mut max_tokens = request.max_tokens.unwrap_or(spec.config.max_tokens);
        let thinking = match &request.reasoning {
            Some(reasoning) => {
                let budget = super::thinking_budget(reasoning);
                max_tokens = thinking_max_tokens(budget, request.max_tokens, max_tokens)?;
                Some(json!({"type": "enabled", "budget_tokens": budget}))
            }
            None => None,
        };
        let mut body = Map::new();
        body.insert("model".into(), json!(spec.model));
        body.insert("messages".into(), Value::Array(messages));
        body.insert("max_tokens".into(), json!(max_tokens));
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
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| {
                    let mut tool = Map::new();
                    tool.insert("name".into(), json!(t.name));
                    if let Some(d) = &t.description {
                        tool.insert("description".into(), json!(d));
                    }
                    tool.insert("input_schema".into(), t.parameters_or_empty());
                    Value::Object(tool)
                })
                .collect();
            body.insert("tools".into(), Value::Array(tools));
        }
        // Without tools, auto and none say what no tool_choice says (and the API wants
        // tools beside one); required and one tool are refused before here.
        if let Some(choice) = request
            .tool_choice
            .as_ref()
            .filter(|_| !request.tools.is_empty())
        {
            body.insert("tool_choice".into(), tool_choice(choice));
        }
        if let Some(thinking) = thinking {
            body.insert("thinking".into(), thinking);
        }
        match &request.response_format {
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                body.insert(
                    "output_config".into(),
                    json!({"format": {"type": "json_schema", "schema": schema}}),
                );
            }
            Some(ResponseFormat::JsonObject) => {
                return Err(ProviderError::new(
                    ErrorCode::InvalidRequest,
                    "response_format json_object is not supported by anthropic: the Messages API \
                     constrains JSON only to a schema; give response_format json_schema",
                ))
            }
            Some(ResponseFormat::Text) | None => {}
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

/// The smallest thinking budget the API takes.
pub const MIN_THINKING_BUDGET: u32 = 1024;

/// `max_tokens` for a request with a thinking budget. The API wants
/// `MIN_THINKING_BUDGET <= budget < max_tokens`, and `max_tokens` counts the thinking.
/// A budget under the minimum is refused (raising it would spend what the caller did not
/// allow); a request's own `max_tokens` that leaves no room is refused too (it is the
/// caller's cap on all output); the configured default is raised to the budget plus
/// itself, so the answer keeps the allowance it has without thinking.
fn thinking_max_tokens(
    budget: u32,
    requested: Option<u32>,
    max_tokens: u32,
) -> Result<u32, ProviderError> {
    if budget < MIN_THINKING_BUDGET {
        return Err(ProviderError::new(
            ErrorCode::InvalidRequest,
            format!(
                "reasoning.budget_tokens {budget} is below anthropic's minimum thinking budget of {MIN_THINKING_BUDGET}"
            ),
        ));
    }
    match requested {
        Some(cap) if cap <= budget => Err(ProviderError::new(
            ErrorCode::InvalidRequest,
            format!(
                "max_tokens {cap} leaves no room for the answer after a thinking budget of {budget} on anthropic (its max_tokens counts the thinking): give a max_tokens above the budget"
            ),
        )),
        Some(_) => Ok(max_tokens),
        None if max_tokens <= budget => Ok(budget.saturating_add(max_tokens)),
        None => Ok(max_tokens),
    }
}

/// The Messages API's `tool_choice` (`required` is its `any`).
fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Required => json!({"type": "any"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    }
}

/// The content blocks of one turn. An assistant turn: its thinking blocks (when its
/// state came from an anthropic provider), its text, its `tool_use` blocks. A tool turn:
/// one `tool_result` block. A user turn: its text, then its images.
fn blocks(turn: &provd_client::Message) -> Result<Vec<Value>, ProviderError> {
    let mut blocks = Vec::new();
    let text = |blocks: &mut Vec<Value>| {
        if !turn.content.is_empty() {
            blocks.push(json!({"type": "text", "text": turn.content}));
        }
    };
    match turn.role {
        Role::Assistant => {
            if let Some(thinking) = super::state_for(turn, "anthropic")
                .and_then(|s| s.get("thinking"))
                .and_then(Value::as_array)
            {
                blocks.extend(thinking.iter().filter_map(returned_thinking_block));
            }
            text(&mut blocks);
            for call in &turn.tool_calls {
                let input = tools::arguments_object(call);
                blocks.push(
                    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": input}),
                );
            }
        }
        Role::Tool => {
            let mut result = json!({
                "type": "tool_result",
                "tool_use_id": turn.tool_call_id.clone().unwrap_or_default(),
                "content": turn.content,
            });
            if turn.is_error {
                result["is_error"] = json!(true);
            }
            blocks.push(result);
        }
        _ => {
            text(&mut blocks);
            for image in &turn.images {
                let source = match image {
                    Image::Base64 { media_type, data } => {
                        json!({"type": "base64", "media_type": media_type, "data": data})
                    }
                    Image::Url { url } => json!({"type": "url", "url": url}),
                };
                blocks.push(json!({"type": "image", "source": source}));
            }
        }
    }
    Ok(blocks)
}

/// The turns as the API wants them: roles alternate (tool results are user turns), and a
/// run of turns with the same role becomes one turn holding all their blocks (what the
/// API itself does with such a run, and what it requires of the results of parallel
/// calls). A turn that is a single text stays a plain string, the API's shorthand.
fn alternating_turns(turns: &[provd_client::Message]) -> Result<Vec<Value>, ProviderError> {
    let mut merged: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(turns.len());
    for turn in turns {
        let role = match turn.role {
            Role::Assistant => "assistant",
            // `conversation` has taken the system turns out already.
            _ => "user",
        };
        let mut content = blocks(turn)?;
        if content.is_empty() {
            content.push(json!({"type": "text", "text": ""}));
        }
        match merged.last_mut() {
            Some((last, blocks)) if *last == role => blocks.extend(content),
            _ => merged.push((role, content)),
        }
    }
    Ok(merged
        .into_iter()
        .map(|(role, blocks)| {
            let content = match blocks.as_slice() {
                [one] if one["type"] == "text" => one["text"].clone(),
                _ => Value::Array(blocks),
            };
            json!({"role": role, "content": content})
        })
        .collect())
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
    #[serde(default)]
    index: u32,
    content_block: WireBlock,
}

#[derive(Deserialize)]
struct BlockDelta {
    #[serde(default)]
    index: u32,
    delta: WireBlock,
}

/// A content block or a delta, with the fields of the kinds provd carries: `text`,
/// `thinking` (+ `signature`), `redacted_thinking` (`data`), `tool_use` (`id`, `name`,
/// `input`), and the deltas `text_delta`, `thinking_delta`, `signature_delta` and
/// `input_json_delta` (`partial_json`).
#[derive(Deserialize)]
struct WireBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    signature: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    partial_json: Option<String>,
}

/// The most thinking (text, signatures, redacted data) one answer may hand back as
/// provider state: it is kept whether or not the client sees it, so an upstream that
/// never stops thinking must not grow the daemon without bound.
pub const MAX_THINKING_BYTES: usize = 8 << 20;

/// The thinking blocks of an answer, in order, as the API wants them back at the head of
/// the assistant turn: each thinking text with its signature, each redacted block's data.
#[derive(Debug, Default)]
struct Thinking {
    blocks: Vec<Value>,
    /// The content-block index of each of `blocks`, to place later deltas.
    indexes: Vec<u32>,
    /// The bytes of text kept so far.
    kept: usize,
}

impl Thinking {
    fn start(&mut self, index: u32, block: Value) {
        self.blocks.push(block);
        self.indexes.push(index);
    }

    /// Counts `bytes` more kept; past [`MAX_THINKING_BYTES`] the answer is refused.
    fn keep(&mut self, provider: &str, bytes: usize) -> Result<(), ProviderError> {
        self.kept = self.kept.saturating_add(bytes);
        if self.kept > MAX_THINKING_BYTES {
            return Err(ProviderError::new(
                ErrorCode::UpstreamError,
                format!("{provider}: the answer's thinking passed {MAX_THINKING_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// The block at content-block `index`, if it is a thinking block.
    fn at(&mut self, index: u32) -> Option<&mut Value> {
        let at = self.indexes.iter().position(|&i| i == index)?;
        self.blocks.get_mut(at)
    }

    /// Appends `piece` to field `field` (`thinking`, `signature`) of the block at `index`.
    fn append(&mut self, index: u32, field: &str, piece: &str) {
        if let Some(Value::Object(block)) = self.at(index) {
            let text = block
                .entry(field)
                .or_insert_with(|| Value::String(String::new()));
            if let Value::String(text) = text {
                text.push_str(piece);
            }
        }
    }

    /// The provider state for the next turn, once the answer is over.
    fn state(&mut self) -> Option<StreamEvent> {
        (!self.blocks.is_empty()).then(|| {
            StreamEvent::ProviderState(json!({"thinking": std::mem::take(&mut self.blocks)}))
        })
    }
}

/// A thinking or redacted-thinking block as sent back.
fn thinking_block(block: &WireBlock) -> Option<Value> {
    match block.kind.as_str() {
        "thinking" => Some(json!({
            "type": "thinking",
            "thinking": block.thinking.clone().unwrap_or_default(),
            "signature": block.signature.clone().unwrap_or_default(),
        })),
        "redacted_thinking" => Some(json!({
            "type": "redacted_thinking",
            "data": block.data.clone().unwrap_or_default(),
        })),
        _ => None,
    }
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
    thinking: Thinking,
    /// The content-block indexes of the `tool_use` blocks, whose deltas are arguments.
    tool_blocks: Vec<u32>,
}

impl EventDecoder {
    /// A decoder at the start of a stream; its errors name `provider`.
    pub fn new(provider: &str) -> Self {
        EventDecoder {
            provider: provider.to_owned(),
            tokens: Tokens::default(),
            finish: None,
            thinking: Thinking::default(),
            tool_blocks: Vec::new(),
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

    fn block_start(
        &mut self,
        index: u32,
        block: WireBlock,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ProviderError> {
        match block.kind.as_str() {
            // A text block starts empty in practice, but its initial text is text.
            "text" => {
                if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Text(text));
                }
            }
            "thinking" | "redacted_thinking" => {
                if let Some(text) = block.thinking.as_ref().filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Reasoning(text.clone()));
                }
                if let Some(kept) = thinking_block(&block) {
                    self.thinking.keep(&self.provider, kept.to_string().len())?;
                    self.thinking.start(index, kept);
                }
            }
            "tool_use" => {
                self.tool_blocks.push(index);
                // The input streams as input_json_delta; a start that already holds a
                // non-empty input (a gateway's) is that input whole.
                let arguments = block
                    .input
                    .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                    .map(|i| i.to_string())
                    .unwrap_or_default();
                out.push(StreamEvent::ToolCall(ToolCallDelta {
                    index,
                    id: block.id,
                    name: block.name,
                    arguments,
                }));
            }
            // server_tool_use, web_search_tool_result and other blocks provd does not
            // carry.
            _ => {}
        }
        Ok(())
    }

    fn block_delta(
        &mut self,
        index: u32,
        delta: WireBlock,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ProviderError> {
        match delta.kind.as_str() {
            "text_delta" => {
                if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                    out.push(StreamEvent::Text(text));
                }
            }
            "thinking_delta" => {
                if let Some(text) = delta.thinking.filter(|t| !t.is_empty()) {
                    self.thinking.keep(&self.provider, text.len())?;
                    self.thinking.append(index, "thinking", &text);
                    out.push(StreamEvent::Reasoning(text));
                }
            }
            "signature_delta" => {
                if let Some(signature) = delta.signature {
                    self.thinking.keep(&self.provider, signature.len())?;
                    self.thinking.append(index, "signature", &signature);
                }
            }
            "input_json_delta" if self.tool_blocks.contains(&index) => {
                if let Some(piece) = delta.partial_json.filter(|p| !p.is_empty()) {
                    out.push(StreamEvent::ToolCall(ToolCallDelta {
                        index,
                        arguments: piece,
                        ..ToolCallDelta::default()
                    }));
                }
            }
            // citations_delta and future kinds.
            _ => {}
        }
        Ok(())
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
                self.block_start(start.index, start.content_block, out)?;
            }
            "content_block_delta" => {
                let delta: BlockDelta = self.parse(&kind, data)?;
                self.block_delta(delta.index, delta.delta, out)?;
            }
            "message_delta" => {
                let delta: MessageDelta = self.parse(&kind, data)?;
                if let Some(reason) = delta.delta.stop_reason {
                    self.finish = Some(finish_reason(&reason));
                }
                self.tokens.update(delta.usage);
                out.push(StreamEvent::Usage(self.tokens.usage()));
            }
            "message_stop" => {
                out.extend(self.thinking.state());
                out.push(StreamEvent::Done {
                    usage: self.tokens.usage(),
                    finish_reason: self.finish.unwrap_or(FinishReason::Other),
                });
            }
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
    /// The events the same answer yields when streamed: usage, the reasoning, the text
    /// blocks joined as the stream would deliver them, the tool calls, the thinking
    /// blocks as provider state, the end.
    fn into_events(self) -> Vec<StreamEvent> {
        let mut tokens = Tokens::default();
        tokens.update(self.usage);
        let usage = tokens.usage();
        let mut events = Vec::new();
        ReportedModel::default().note(self.model.as_deref(), &mut events);
        events.push(StreamEvent::Usage(usage));
        let (mut reasoning, mut text, mut calls) = (String::new(), String::new(), Vec::new());
        let mut thinking = Thinking::default();
        for (index, block) in (0u32..).zip(self.content) {
            match block.kind.as_str() {
                "text" => text.push_str(block.text.as_deref().unwrap_or_default()),
                "thinking" | "redacted_thinking" => {
                    reasoning.push_str(block.thinking.as_deref().unwrap_or_default());
                    if let Some(kept) = thinking_block(&block) {
                        thinking.start(index, kept);
                    }
                }
                "tool_use" => calls.push(StreamEvent::ToolCall(ToolCallDelta {
                    index,
                    arguments: block.input.unwrap_or_else(|| json!({})).to_string(),
                    id: block.id,
                    name: block.name,
                })),
                _ => {}
            }
        }
        if !reasoning.is_empty() {
            events.push(StreamEvent::Reasoning(reasoning));
        }
        if !text.is_empty() {
            events.push(StreamEvent::Text(text));
        }
        events.extend(calls);
        events.extend(thinking.state());
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

/// A thinking block from a turn's provider state, as it may go back to the API: only
/// `thinking` (its text and signature) and `redacted_thinking` (its data), with string
/// fields. The state comes from the client, so anything else in it (a `tool_use`, an
/// `image` by URL, `cache_control`) is dropped rather than passed around the checks that
/// the request's own fields go through.
fn returned_thinking_block(block: &Value) -> Option<Value> {
    let text = |key: &str| block.get(key).and_then(Value::as_str);
    match text("type")? {
        "thinking" => Some(json!({
            "type": "thinking",
            "thinking": text("thinking")?,
            "signature": text("signature")?,
        })),
        "redacted_thinking" => Some(json!({"type": "redacted_thinking", "data": text("data")?})),
        _ => None,
    }
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
    fn a_documented_stream_decodes_to_usage_reasoning_text_calls_state_and_done() {
        assert_eq!(
            decode(STREAM).unwrap(),
            vec![
                StreamEvent::Model("claude-sonnet-4-5".into()),
                StreamEvent::Usage(Usage::new(25, 1)),
                StreamEvent::Reasoning("Let me see".into()),
                StreamEvent::Text("Hello".into()),
                StreamEvent::Text("!".into()),
                StreamEvent::ToolCall(ToolCallDelta {
                    index: 2,
                    id: Some("toolu_1".into()),
                    name: Some("get_weather".into()),
                    arguments: String::new(),
                }),
                StreamEvent::ToolCall(ToolCallDelta {
                    index: 2,
                    arguments: "{\"location\": ".into(),
                    ..ToolCallDelta::default()
                }),
                StreamEvent::Usage(Usage::new(25, 15)),
                StreamEvent::ProviderState(json!({"thinking": [
                    {"type": "thinking", "thinking": "Let me see", "signature": "EqQB"}
                ]})),
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
                StreamEvent::Reasoning("hmm".into()),
                StreamEvent::Text("Hello!".into()),
                StreamEvent::ToolCall(ToolCallDelta {
                    index: 2,
                    id: Some("t".into()),
                    name: Some("n".into()),
                    arguments: "{}".into(),
                }),
                StreamEvent::ProviderState(json!({"thinking": [
                    {"type": "thinking", "thinking": "hmm", "signature": "x"}
                ]})),
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

    fn weather() -> provd_client::Tool {
        provd_client::Tool::new(
            "get_weather",
            "The weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        )
    }

    fn call(id: &str, city: &str) -> provd_client::ToolCall {
        provd_client::ToolCall {
            id: id.into(),
            name: "get_weather".into(),
            arguments: format!("{{\"city\":\"{city}\"}}"),
        }
    }

    #[test]
    fn tools_and_each_tool_choice_map_to_the_messages_api() {
        let p = provider("", "");
        let mut r = GenerateRequest::prompt("weather?");
        r.tools = vec![
            weather(),
            provd_client::Tool {
                name: "now".into(),
                description: None,
                parameters: None,
            },
        ];
        let body = p.body(&r).unwrap();
        assert_eq!(
            body["tools"],
            json!([
                {"name": "get_weather", "description": "The weather in a city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
                {"name": "now", "input_schema": {"type": "object", "properties": {}}},
            ])
        );
        assert!(
            body.get("tool_choice").is_none(),
            "unset means the API's auto"
        );
        for (choice, wire) in [
            (ToolChoice::Auto, json!({"type": "auto"})),
            (ToolChoice::None, json!({"type": "none"})),
            (ToolChoice::Required, json!({"type": "any"})),
            (
                ToolChoice::Tool("now".into()),
                json!({"type": "tool", "name": "now"}),
            ),
        ] {
            r.tool_choice = Some(choice);
            assert_eq!(p.body(&r).unwrap()["tool_choice"], wire);
        }
        r.tools.clear();
        r.tool_choice = Some(ToolChoice::None);
        assert!(p.body(&r).unwrap().get("tool_choice").is_none());
    }

    #[test]
    fn calls_become_tool_use_blocks_and_consecutive_results_one_user_turn() {
        let p = provider("", "");
        let mut r = GenerateRequest::prompt("thanks; and Rome?");
        r.tools = vec![weather()];
        r.messages = vec![
            turn(Role::User, "Paris and Oslo?"),
            provd_client::Message {
                tool_calls: vec![call("toolu_1", "Paris"), call("toolu_2", "Oslo")],
                ..turn(Role::Assistant, "Checking both.")
            },
            provd_client::Message::tool_result("toolu_1", "18C"),
            provd_client::Message {
                is_error: true,
                ..provd_client::Message::tool_result("toolu_2", "no such city")
            },
        ];
        assert_eq!(
            p.body(&r).unwrap()["messages"],
            json!([
                {"role": "user", "content": "Paris and Oslo?"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no such city", "is_error": true},
                    {"type": "text", "text": "thanks; and Rome?"},
                ]},
            ])
        );
        // A turn of calls alone has no text block.
        r.messages[1].content.clear();
        assert_eq!(
            p.body(&r).unwrap()["messages"][1]["content"][0]["type"],
            "tool_use"
        );
    }

    #[test]
    fn thinking_blocks_lead_their_turn_only_when_an_anthropic_provider_signed_them() {
        let p = provider("", "");
        let blocks = json!([
            {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
            {"type": "redacted_thinking", "data": "opaque"},
        ]);
        let mut r = GenerateRequest::prompt("and then?");
        r.messages = vec![
            turn(Role::User, "why?"),
            provd_client::Message {
                provider_state: Some(
                    json!({"type": "anthropic", "state": {"thinking": blocks.clone()}}),
                ),
                ..turn(Role::Assistant, "because")
            },
        ];
        let mut expected = blocks.as_array().unwrap().clone();
        expected.push(json!({"type": "text", "text": "because"}));
        assert_eq!(
            p.body(&r).unwrap()["messages"][1]["content"],
            Value::Array(expected)
        );
        r.messages[1].provider_state =
            Some(json!({"type": "gemini", "state": {"thinking": blocks}}));
        assert_eq!(p.body(&r).unwrap()["messages"][1]["content"], "because");
    }

    #[test]
    fn reasoning_asks_for_a_thinking_budget_that_max_tokens_must_exceed() {
        let p = provider("", "max_tokens = 4096");
        let mut r = GenerateRequest::prompt("why?");
        r.reasoning = Some(provd_client::Reasoning {
            budget_tokens: Some(2000),
            ..provd_client::Reasoning::default()
        });
        let body = p.body(&r).unwrap();
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 2000})
        );
        assert_eq!(body["max_tokens"], 4096);
        // An effort maps to a budget; the configured max_tokens grows to hold it.
        r.reasoning = Some(provd_client::Reasoning {
            effort: Some(provd_client::Effort::High),
            ..provd_client::Reasoning::default()
        });
        let body = p.body(&r).unwrap();
        assert_eq!(body["thinking"]["budget_tokens"], 24_576);
        assert_eq!(body["max_tokens"], 24_576 + 4096);
        // The request's own cap is the caller's: refused rather than raised.
        r.max_tokens = Some(1000);
        let e = p.body(&r).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("max_tokens 1000"), "{e}");
        r.reasoning = Some(provd_client::Reasoning {
            budget_tokens: Some(500),
            ..provd_client::Reasoning::default()
        });
        r.max_tokens = None;
        let e = p.body(&r).unwrap_err();
        assert!(e.message.contains("minimum thinking budget of 1024"), "{e}");
    }

    #[test]
    fn a_json_schema_is_the_output_format_and_json_object_is_refused() {
        let p = provider("", "");
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}},
                            "required": ["a"], "additionalProperties": false});
        let mut r = GenerateRequest::prompt("a?");
        r.response_format = Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: schema.clone(),
            strict: true,
        });
        assert_eq!(
            p.body(&r).unwrap()["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}})
        );
        r.response_format = Some(ResponseFormat::JsonObject);
        let e = p.body(&r).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message.contains("json_object") && e.message.contains("anthropic"),
            "{e}"
        );
    }

    #[test]
    fn images_follow_the_text_as_base64_and_url_blocks() {
        let p = provider("", "");
        let r = GenerateRequest {
            messages: vec![provd_client::Message {
                images: vec![
                    Image::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgo=".into(),
                    },
                    Image::Url {
                        url: "https://example.com/a.jpg".into(),
                    },
                ],
                ..turn(Role::User, "what is this?")
            }],
            ..GenerateRequest::default()
        };
        assert_eq!(
            p.body(&r).unwrap()["messages"][0]["content"],
            json!([
                {"type": "text", "text": "what is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
            ])
        );
    }

    #[test]
    fn parallel_tool_calls_stream_as_pieces_indexed_by_content_block() {
        let stream = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Both.\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_a\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_b\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" \\\"Oslo\\\"}\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":2}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":40}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";
        let piece = |index, id: Option<&str>, arguments: &str| {
            StreamEvent::ToolCall(ToolCallDelta {
                index,
                id: id.map(str::to_owned),
                name: id.map(|_| "get_weather".to_owned()),
                arguments: arguments.into(),
            })
        };
        assert_eq!(
            decode(stream).unwrap(),
            vec![
                StreamEvent::Model("m".into()),
                StreamEvent::Usage(Usage::new(5, 1)),
                StreamEvent::Text("Both.".into()),
                piece(1, Some("toolu_a"), ""),
                piece(1, None, "{\"city\": \"Paris\"}"),
                piece(2, Some("toolu_b"), ""),
                piece(2, None, "{\"city\":"),
                piece(2, None, " \"Oslo\"}"),
                StreamEvent::Usage(Usage::new(5, 40)),
                StreamEvent::Done {
                    usage: Usage::new(5, 40),
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
    }

    #[test]
    fn thinking_with_its_signature_and_redacted_thinking_are_one_state_in_order() {
        let stream = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"First, \"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"the sky.\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQBCgIYAhIM\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"redacted_thinking\",\"data\":\"EmwKAhgB\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"text_delta\",\"text\":\"Blue.\"}}\n\n\
event: content_block_stop\n\
data: {\"type\":\"content_block_stop\",\"index\":2}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":90}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";
        let events = decode(stream).unwrap();
        assert_eq!(
            events[1..],
            [
                StreamEvent::Reasoning("First, ".into()),
                StreamEvent::Reasoning("the sky.".into()),
                StreamEvent::Text("Blue.".into()),
                StreamEvent::Usage(Usage::new(5, 90)),
                StreamEvent::ProviderState(json!({"thinking": [
                    {"type": "thinking", "thinking": "First, the sky.", "signature": "EqQBCgIYAhIM"},
                    {"type": "redacted_thinking", "data": "EmwKAhgB"},
                ]})),
                StreamEvent::Done {
                    usage: Usage::new(5, 90),
                    finish_reason: FinishReason::Stop
                },
            ]
        );
        // Anthropic reports no separate count of thinking tokens: output includes them.
        assert!(events
            .iter()
            .all(|e| !matches!(e, StreamEvent::Usage(u) if u.reasoning_tokens.is_some())));
    }

    #[test]
    fn thinking_past_its_bound_ends_the_answer_with_an_error() {
        let piece = "x".repeat(1 << 20);
        let mut stream = String::from(
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
        );
        for _ in 0..=MAX_THINKING_BYTES >> 20 {
            stream.push_str(&format!(
                "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"thinking_delta\",\"thinking\":\"{piece}\"}}}}\n\n"
            ));
        }
        let e = decode(&stream).unwrap_err();
        assert_eq!(e.code, ErrorCode::UpstreamError);
        assert!(e.message.contains("thinking passed"), "{e}");
    }

    #[test]
    fn only_thinking_blocks_go_back_from_a_turns_state() {
        let kept = [
            json!({"type": "thinking", "thinking": "hm", "signature": "sig", "cache_control": {"type": "ephemeral"}}),
            json!({"type": "redacted_thinking", "data": "opaque"}),
        ];
        assert_eq!(
            returned_thinking_block(&kept[0]),
            Some(json!({"type": "thinking", "thinking": "hm", "signature": "sig"}))
        );
        assert_eq!(returned_thinking_block(&kept[1]), Some(kept[1].clone()));
        for dropped in [
            json!({"type": "tool_use", "id": "x", "name": "f", "input": {}}),
            json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}),
            json!({"type": "thinking", "thinking": "no signature"}),
            json!({"type": "redacted_thinking", "data": 7}),
            json!("thinking"),
        ] {
            assert_eq!(returned_thinking_block(&dropped), None, "{dropped}");
        }
    }
}
