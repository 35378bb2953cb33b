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

use std::time::Duration;

use provd_client::{ErrorCode, FinishReason, GenerateRequest, ModelInfo, Usage};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http::{self, time, Decoder, HttpApi, HttpProvider, Transport};
use super::sse::{SseEvent, SseParser};
use super::{
    chat_messages, json_f32, merge_additional_params, BoxFuture, ProviderError, ProviderSpec,
    ReportedModel, StreamEvent,
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
    body.insert("stream".into(), json!(request.stream));
    if request.stream {
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(Value::Object(body))
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
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage::new(u.prompt_tokens, u.completion_tokens)
    }
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
}

/// Reads `chat.completion.chunk` events up to `[DONE]`.
pub struct ChunkDecoder {
    provider: String,
    model: ReportedModel,
    usage: Option<Usage>,
    finish: Option<FinishReason>,
}

impl ChunkDecoder {
    /// A decoder at the start of a stream; its errors name `provider`.
    pub fn new(provider: &str) -> Self {
        ChunkDecoder {
            provider: provider.to_owned(),
            model: ReportedModel::default(),
            usage: None,
            finish: None,
        }
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
            // Tool calls, reasoning and audio deltas are not carried (yet); they are
            // skipped, and the finish reason (tool_calls → tool_use) says so.
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(text));
            }
            if let Some(text) = choice.delta.refusal.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(text));
            }
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
        let text: String = choice
            .message
            .content
            .into_iter()
            .chain(choice.message.refusal)
            .collect();
        if !text.is_empty() {
            events.push(StreamEvent::Text(text));
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
