//! Ollama's native API (<https://docs.ollama.com/api>), for a local `ollama serve` or one
//! behind a proxy.
//!
//! - Generate: `POST {base_url}/api/chat`. Streamed as NDJSON (`application/x-ndjson`),
//!   one object a line: `{"model", "created_at", "message": {"role", "content"},
//!   "done": false}` per piece, then a last line with `"done": true`, `done_reason` and
//!   the counters (`prompt_eval_count`, `eval_count`). With `"stream": false` the answer
//!   is that last object alone, carrying the whole message.
//! - Errors: `{"error": "..."}` with an HTTP status before the stream starts; once it
//!   has started the status can no longer change, so a failure arrives as an
//!   `{"error": "..."}` line instead (<https://docs.ollama.com/api/errors>).
//! - List models: `GET {base_url}/api/tags`.
//! - Auth: none. A configured key is sent as `Authorization: Bearer` for an Ollama
//!   behind an authenticating proxy (or ollama.com's hosted API).
//!
//! `base_url` is the server root without `/api` (`http://127.0.0.1:11434`, Ollama's own
//! default). Ollama sends no response headers until the model is loaded and has produced
//! its first token, so `timeout_seconds` must cover loading the model.
//!
//! # Where `additional_params` go
//!
//! `/api/chat` keeps sampling and runtime settings in an `options` object and request
//! settings at the top level, so a flat parameter is routed by name:
//!
//! - the keys of Ollama's `Options` ([`OPTION_KEYS`]: `seed`, `top_k`, `num_ctx`,
//!   `repeat_penalty`, …) go into `options`;
//! - an `options` object is merged into `options` key by key;
//! - everything else (`format`, `keep_alive`, `think`, `tools`, `logprobs`, …) goes to
//!   the top level;
//! - `model`, `stream` and `messages` are provd's and are refused.
//!
//! Later wins: the request's own fields (`max_tokens` as `num_predict`, `temperature`,
//! `top_p`, `stop`), then flat option keys, then the `options` object. The top-level
//! keys provd maps from the request's typed options (`tools`, `format`, `think`) are
//! refused in `additional_params` when the request sets them too.
//!
//! # How tools, structured output, reasoning and images map
//!
//! - **Tools**: `tools: [{"type": "function", "function": {name, description,
//!   parameters}}]`. Ollama has no `tool_choice`: `auto` is its only behaviour, `none`
//!   is honoured by sending no tools, and `required` or a named tool are refused
//!   (`invalid_request` naming the option and the provider).
//! - **Tool turns**: an assistant turn's calls go as `tool_calls: [{"function": {name,
//!   arguments}}]` with the arguments as a JSON object (Ollama keeps no call ids); a
//!   result as `{"role": "tool", content, tool_name}`, the name found from the call
//!   its id answers. No error flag: a failed call's result is sent as
//!   [`tools::TOOL_ERROR_PREFIX`] + content.
//! - **Calls back**: `message.tool_calls` arrive whole, so each becomes one
//!   [`StreamEvent::ToolCall`] piece with its whole arguments serialized, numbered in
//!   the order they came; without ids the server names them `call_<request id>_<n>`.
//!   `done_reason: "stop"` after a call is [`FinishReason::ToolCalls`].
//! - **Structured output**: `format: "json"` for any JSON object, `format: <the
//!   schema>` for a schema (Ollama has no strict switch: its grammar always holds).
//! - **Reasoning**: `think`: the effort's level (`"low"`, `"medium"`, `"high"`; minimal
//!   is `"low"`; a budget alone maps as [`openai::effort_for_budget`]) for the models
//!   that take levels (gpt-oss); current servers read a level as `true` for the other
//!   thinking models (some older ones refused it: ask for reasoning with neither an
//!   effort nor a budget there). Neither sends `true`. `message.thinking` is
//!   [`StreamEvent::Reasoning`]. Ollama does not count reasoning tokens apart (they
//!   are in `eval_count`).
//! - **Images**: a user turn's `images: [base64, …]`. Ollama takes bytes only: an image
//!   URL is refused (the capability table refuses it first; the check stays here).

use provd_client::{
    Effort, ErrorCode, FinishReason, GenerateRequest, Image, ModelInfo, ResponseFormat, Role,
    ToolCallDelta, ToolChoice, Usage,
};
use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http::{self, time, Decoder, HttpApi, HttpProvider, Transport};
use super::ndjson::NdjsonSplitter;
use super::{
    conversation, json_f32, merge_additional_params, BoxFuture, ProviderError, ProviderSpec,
    ReportedModel, StreamEvent,
};
use super::{openai, tools};
use crate::settings::ProviderKind;

/// Where `ollama serve` listens unless told otherwise (`OLLAMA_HOST`).
pub const DEFAULT_BASE_URL: &str = "http://127.0.0.1:11434";

/// Body keys provd sets itself.
const RESERVED: &[&str] = &["model", "stream", "messages"];

/// The fields of Ollama's `Options` (api/types.go: the predict options and the runner
/// options), plus the older ones its API docs still list (`mirostat*`,
/// `penalize_newline`, `numa`, `low_vram`, `vocab_only`, `use_mlock`), which older
/// servers honour and newer ones ignore.
pub const OPTION_KEYS: &[&str] = &[
    "num_keep",
    "seed",
    "num_predict",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "repeat_last_n",
    "temperature",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "use_mmap",
    "num_thread",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "penalize_newline",
    "numa",
    "low_vram",
    "vocab_only",
    "use_mlock",
];

/// An Ollama server.
pub type OllamaProvider = HttpProvider<OllamaApi>;

impl OllamaProvider {
    /// An instance for `ollama`.
    pub fn new(spec: ProviderSpec) -> Result<OllamaProvider, ProviderError> {
        let base_url = spec.base_url(DEFAULT_BASE_URL);
        let url = http::endpoint(&spec.id, &base_url, "")?;
        let address = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => "its base_url".to_owned(),
        };
        let api = OllamaApi {
            chat_url: http::endpoint(&spec.id, &base_url, "/api/chat")?,
            tags_url: http::endpoint(&spec.id, &base_url, "/api/tags")?,
            address,
        };
        HttpProvider::with_api(spec, api)
    }
}

/// What Ollama's native API does its own way.
#[derive(Debug)]
pub struct OllamaApi {
    /// `POST` here to generate.
    chat_url: Url,
    /// `GET` here to list models.
    tags_url: Url,
    /// `host:port` of the server, for the "is Ollama running?" hint. Never the whole
    /// URL: a proxy URL may carry credentials.
    address: String,
}

impl HttpApi for OllamaApi {
    type Framer = NdjsonSplitter;
    type Decoder = ChatDecoder;

    fn kind(&self) -> ProviderKind {
        ProviderKind::Ollama
    }

    fn initialize(&self, _: &ProviderSpec) -> Result<(), ProviderError> {
        // No network here: Ollama may start after provd, and the first request reports
        // clearly if it has not.
        Ok(())
    }

    fn authorize(
        &self,
        spec: &ProviderSpec,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, ProviderError> {
        let mut request = request;
        if let Some(key) = &spec.credential {
            let value = http::auth_header(&spec.id, "Bearer ", key)?;
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        Ok(request)
    }

    fn url(&self, _: &ProviderSpec, _: &GenerateRequest) -> Result<Url, ProviderError> {
        Ok(self.chat_url.clone())
    }

    fn body(&self, spec: &ProviderSpec, request: &GenerateRequest) -> Result<Value, ProviderError> {
        let messages = chat_messages(&spec.id, request)?;
        let typed = typed_fields(&spec.id, request)?;

        let mut options = Map::new();
        let max_tokens = request.max_tokens.unwrap_or(spec.config.max_tokens);
        options.insert("num_predict".into(), json!(max_tokens));
        if let Some(t) = request.temperature {
            options.insert("temperature".into(), json_f32(t));
        }
        if let Some(p) = request.top_p {
            options.insert("top_p".into(), json_f32(p));
        }
        if !request.stop.is_empty() {
            options.insert("stop".into(), json!(request.stop));
        }

        // Option keys are routed into `options`; the rest go through the shared merge
        // (which refuses the reserved keys), given only the parameters, not a copy of
        // the whole conversation.
        let mut top_level = GenerateRequest::default();
        let mut explicit_options = None;
        for (key, value) in &request.additional_params {
            if key == "options" {
                explicit_options = Some(value.clone());
            } else if OPTION_KEYS.contains(&key.as_str()) {
                options.insert(key.clone(), value.clone());
            } else {
                top_level
                    .additional_params
                    .insert(key.clone(), value.clone());
            }
        }
        match explicit_options {
            None => {}
            Some(Value::Object(map)) => options.extend(map),
            Some(other) => {
                return Err(ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "additional_params.options must be an object of Ollama options, got {other}"
                    ),
                ))
            }
        }

        let mut body = Map::new();
        body.insert("model".into(), json!(spec.model));
        body.insert("messages".into(), Value::Array(messages));
        merge_additional_params(&mut body, &top_level, RESERVED, spec)?;
        openai::insert_typed(&mut body, typed, &spec.id)?;
        body.insert("options".into(), Value::Object(options));
        body.insert("stream".into(), json!(request.stream));
        Ok(Value::Object(body))
    }

    fn decoder(&self, provider: &str) -> ChatDecoder {
        ChatDecoder::new(provider)
    }

    fn whole(
        &self,
        spec: &ProviderSpec,
        http: &Transport,
        whole: Vec<u8>,
        streamed: bool,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        // The non-streamed answer is the stream's last line with the whole message,
        // so the same decoder reads it and both modes report the same usage and
        // finish reason. It may answer a streaming request too (a proxy's choice);
        // it is then parsed whole, as it may span several lines.
        let mut decoder = ChatDecoder::new(&spec.id);
        let mut events = Vec::new();
        let expected = "an NDJSON stream or a chat response";
        let line = if streamed {
            let value: serde_json::Value =
                http.parse_whole(&whole, true, expected, &["done", "message"])?;
            serde_json::to_vec(&value).unwrap_or_default()
        } else {
            whole
        };
        decoder.unit(line, &mut events)?;
        if !events.iter().any(|e| matches!(e, StreamEvent::Done { .. })) {
            return Err(http::malformed(
                &spec.id,
                "the non-streamed response is not marked \"done\": true",
            ));
        }
        Ok(events)
    }

    fn list_models(
        provider: &HttpProvider<Self>,
    ) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>> {
        Box::pin(async move {
            let http = provider.transport();
            let request = http.get(provider.api().tags_url.clone());
            let list: Tags = http.read_json(provider.send(request).await?).await?;
            Ok(list
                .models
                .into_iter()
                .map(|m| ModelInfo {
                    created_at: m.modified_at.as_deref().and_then(time::unix_seconds),
                    display_name: Some(m.name.clone()),
                    id: m.name,
                    provider: provider.spec().id.clone(),
                    context_window: None,
                    ..ModelInfo::default()
                })
                .collect())
        })
    }

    fn error_message(body: &[u8]) -> Option<String> {
        error_message(body)
    }

    /// A server that cannot be reached gets an error that says what to check, since
    /// "Ollama is not running" is by far the most common cause.
    fn send_failed(&self, mut e: ProviderError) -> ProviderError {
        // http::errors::transport_error words every failure to connect this way; an
        // HTTP 503 (a busy server) is also `unavailable` but is answered, so no hint.
        if e.code == ErrorCode::Unavailable && e.message.contains(": cannot connect to ") {
            e.message = format!(
                "{}; is Ollama running at {}? (start it with `ollama serve`, or set base_url)",
                e.message, self.address
            );
        }
        e
    }
}

fn refused(provider: &str, what: &str) -> ProviderError {
    ProviderError::new(
        ErrorCode::InvalidRequest,
        format!("provider '{provider}' (type ollama) does not support {what}"),
    )
}

/// The conversation as `/api/chat` `messages`: the system prompt first, user turns with
/// their `images`, assistant turns with their calls, tool results named by their tool.
fn chat_messages(provider: &str, request: &GenerateRequest) -> Result<Vec<Value>, ProviderError> {
    let (system, turns) = conversation(request);
    let mut messages = Vec::with_capacity(turns.len() + 1);
    if let Some(system) = system {
        messages.push(json!({"role": "system", "content": system}));
    }
    for (i, m) in turns.iter().enumerate() {
        let message = match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => {
                let calls: Vec<Value> = m
                    .tool_calls
                    .iter()
                    .map(|c| {
                        json!({"function": {"name": c.name, "arguments": tools::arguments_object(c)}})
                    })
                    .collect();
                json!({"role": "assistant", "content": m.content, "tool_calls": calls})
            }
            Role::Assistant => json!({"role": "assistant", "content": m.content}),
            Role::Tool => {
                let mut message = json!({"role": "tool", "content": tools::tool_result_content(m)});
                // Ollama names a result by its tool, not by a call id.
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                let name = tools::call_name(&turns[..i], id);
                if let Some(name) = name {
                    message["tool_name"] = json!(name);
                }
                message
            }
            Role::User | Role::System if !m.images.is_empty() => {
                let images = m
                    .images
                    .iter()
                    .map(|image| match image {
                        Image::Base64 { data, .. } => Ok(json!(data)),
                        Image::Url { .. } => Err(refused(
                            provider,
                            "image URLs: Ollama takes only the image's bytes; send them base64 (provd never fetches a URL)",
                        )),
                    })
                    .collect::<Result<Vec<Value>, ProviderError>>()?;
                json!({"role": "user", "content": m.content, "images": images})
            }
            Role::User | Role::System => json!({"role": "user", "content": m.content}),
        };
        messages.push(message);
    }
    Ok(messages)
}

/// The top-level fields mapped from the request's typed options: `tools`, `format`,
/// `think`.
fn typed_fields(
    provider: &str,
    request: &GenerateRequest,
) -> Result<Map<String, Value>, ProviderError> {
    let mut typed = Map::new();
    let send_tools = match &request.tool_choice {
        None | Some(ToolChoice::Auto) => true,
        // No tools offered, no tool called: what `none` asks.
        Some(ToolChoice::None) => false,
        Some(ToolChoice::Required) => {
            return Err(refused(
                provider,
                "tool_choice \"required\": Ollama lets the model choose whether to call a tool",
            ))
        }
        Some(ToolChoice::Tool(_)) => {
            return Err(refused(
                provider,
                "tool_choice naming a tool: Ollama lets the model choose which tool to call",
            ))
        }
    };
    if send_tools && !request.tools.is_empty() {
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
    }
    match &request.response_format {
        Some(ResponseFormat::JsonObject) => {
            typed.insert("format".into(), json!("json"));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            typed.insert("format".into(), schema.clone());
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if let Some(reasoning) = &request.reasoning {
        let think = match openai::effort_of(reasoning) {
            None => json!(true),
            // Ollama's levels are low, medium and high.
            Some(Effort::Minimal | Effort::Low) => json!("low"),
            Some(Effort::Medium) => json!("medium"),
            Some(Effort::High) => json!("high"),
        };
        typed.insert("think".into(), think);
    }
    Ok(typed)
}

/// `{"error": "..."}`, Ollama's only error body.
fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match v.get("error")? {
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// One NDJSON line of `/api/chat`, or its non-streamed response. Fields provd does not
/// use (`created_at`, the durations, `message.images`, `logprobs`) are ignored.
#[derive(Deserialize)]
struct ChatLine {
    /// The model that answered, when the upstream names it.
    #[serde(default, deserialize_with = "http::lenient_text")]
    model: Option<String>,
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u32>,
    #[serde(default)]
    eval_count: Option<u32>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: Option<String>,
    /// A thinking model's reasoning (`think` on).
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireCall>>,
}

/// One whole call of `message.tool_calls`.
#[derive(Deserialize)]
struct WireCall {
    /// Newer servers may name their calls; older ones never do.
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Deserialize)]
struct WireFunction {
    name: String,
    /// A JSON object (not text, as OpenAI's).
    #[serde(default)]
    arguments: Option<Value>,
}

/// Reads `/api/chat` lines up to the one with `"done": true`.
pub struct ChatDecoder {
    provider: String,
    model: ReportedModel,
    /// How many calls the answer has made so far: the next call's index.
    calls: u32,
}

impl ChatDecoder {
    /// A decoder at the start of a stream; its errors name `provider`.
    pub fn new(provider: &str) -> Self {
        ChatDecoder {
            provider: provider.to_owned(),
            model: ReportedModel::default(),
            calls: 0,
        }
    }

    fn finish_reason(&self, done_reason: Option<&str>) -> FinishReason {
        match done_reason {
            // A cut-off answer is reported as such even if it called a tool: the call
            // itself may be the part that was cut.
            Some("length") => FinishReason::Length,
            // Ollama says "stop" after a tool call; the caller needs to know the answer
            // is a call it did not receive.
            _ if self.calls > 0 => FinishReason::ToolCalls,
            Some("stop") => FinishReason::Stop,
            // "load", "unload", an empty reason (a dropped runner connection) or one
            // added later.
            _ => FinishReason::Other,
        }
    }
}

impl Decoder for ChatDecoder {
    type Unit = Vec<u8>;

    fn unit(&mut self, line: Vec<u8>, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let line: ChatLine =
            serde_json::from_slice(&line).map_err(|e| http::malformed(&self.provider, e))?;
        if let Some(error) = line.error {
            let message = match error {
                Value::String(s) => s,
                other => other.to_string(),
            };
            return Err(ProviderError::new(
                ErrorCode::UpstreamError,
                format!("{}: error in stream: {message}", self.provider),
            ));
        }
        self.model.note(line.model.as_deref(), out);
        if let Some(message) = line.message {
            if let Some(text) = message.thinking.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Reasoning(text));
            }
            if let Some(text) = message.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::Text(text));
            }
            for call in message.tool_calls.unwrap_or_default() {
                let arguments = match call.function.arguments {
                    None | Some(Value::Null) => "{}".to_owned(),
                    // A proxy that re-encodes calls OpenAI's way sends text.
                    Some(Value::String(text)) => text,
                    Some(arguments) => arguments.to_string(),
                };
                out.push(StreamEvent::ToolCall(ToolCallDelta {
                    index: self.calls,
                    id: call.id.filter(|id| !id.is_empty()),
                    name: Some(call.function.name),
                    arguments,
                }));
                self.calls = self.calls.saturating_add(1);
            }
        }
        if line.done {
            out.push(StreamEvent::Done {
                usage: Usage::new(
                    line.prompt_eval_count.unwrap_or(0),
                    line.eval_count.unwrap_or(0),
                ),
                finish_reason: self.finish_reason(line.done_reason.as_deref()),
            });
        }
        Ok(())
    }

    fn ended_early(&mut self) -> ProviderError {
        let mut e = ProviderError::new(
            ErrorCode::UpstreamError,
            format!(
                "{}: the stream ended without its final line (\"done\": true)",
                self.provider
            ),
        );
        e.retryable = true;
        e
    }
}

#[derive(Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<TagModel>,
}

#[derive(Deserialize)]
struct TagModel {
    name: String,
    /// When the model was last pulled or created: the nearest Ollama has to a creation
    /// time.
    #[serde(default)]
    modified_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &str = "{\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"message\":{\"role\":\"assistant\",\"content\":\"Hé\"},\"done\":false}\n\
        {\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T08:52:19.385406455-07:00\",\"message\":{\"role\":\"assistant\",\"content\":\"llo 😀\"},\"done\":false}\n\
        {\"model\":\"llama3.2\",\"created_at\":\"2023-08-04T19:22:45.499127Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done_reason\":\"stop\",\"done\":true,\"total_duration\":4883583458,\"load_duration\":1334875,\"prompt_eval_count\":26,\"prompt_eval_duration\":342546000,\"eval_count\":282,\"eval_duration\":4535599000}\n";

    /// Splits `stream` into lines at the given cuts and decodes it the way the HTTP
    /// driver does, stopping at `Done`.
    fn decode_chunks(chunks: &[&[u8]]) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut splitter = NdjsonSplitter::new();
        let mut lines = Vec::new();
        for c in chunks {
            splitter.push(c, &mut lines).unwrap();
        }
        lines.extend(splitter.finish());
        let mut d = ChatDecoder::new("ollama");
        let mut out = Vec::new();
        for line in lines {
            d.unit(line, &mut out)?;
            if out.iter().any(|e| matches!(e, StreamEvent::Done { .. })) {
                return Ok(out);
            }
        }
        Err(d.ended_early())
    }

    fn decode(stream: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        decode_chunks(&[stream.as_bytes()])
    }

    #[test]
    fn a_documented_stream_decodes_to_text_and_done_with_usage() {
        assert_eq!(
            decode(STREAM).unwrap(),
            vec![
                StreamEvent::Model("llama3.2".into()),
                StreamEvent::Text("Hé".into()),
                StreamEvent::Text("llo 😀".into()),
                StreamEvent::Done {
                    usage: Usage::new(26, 282),
                    finish_reason: FinishReason::Stop
                },
            ]
        );
    }

    proptest! {
        #[test]
        fn any_chunking_decodes_the_same(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
            let b = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([b.len()]) {
                chunks.push(&b[start..cut.max(start)]);
                start = cut.max(start);
            }
            prop_assert_eq!(decode_chunks(&chunks).unwrap(), decode(STREAM).unwrap());
        }
    }

    #[test]
    fn done_reasons_map_to_finish_reasons() {
        let done = |reason: &str| {
            let line = if reason.is_empty() {
                "{\"done\":true}".to_owned()
            } else {
                format!("{{\"done\":true,\"done_reason\":\"{reason}\"}}")
            };
            match decode(&line).unwrap().pop() {
                Some(StreamEvent::Done { finish_reason, .. }) => finish_reason,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(done("stop"), FinishReason::Stop);
        assert_eq!(done("length"), FinishReason::Length);
        assert_eq!(done("load"), FinishReason::Other);
        assert_eq!(done("unload"), FinishReason::Other);
        assert_eq!(done(""), FinishReason::Other);
    }

    fn call(index: u32, name: &str, arguments: &str) -> StreamEvent {
        StreamEvent::ToolCall(ToolCallDelta {
            index,
            id: None,
            name: Some(name.into()),
            arguments: arguments.into(),
        })
    }

    #[test]
    fn thinking_is_reasoning_and_each_whole_call_is_one_numbered_piece() {
        // Two calls in one line, a third in a later one: numbered in the order they came.
        let stream = "{\"model\":\"qwen3\",\"created_at\":\"2025-10-17T23:14:07.414671123Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"Let me think\"},\"done\":false}\n\
            {\"model\":\"qwen3\",\"created_at\":\"2025-10-17T23:14:07.414671123Z\",\"message\":{\"role\":\"assistant\",\"content\":\"Checking.\"},\"done\":false}\n\
            {\"model\":\"qwen3\",\"created_at\":\"2025-10-17T23:14:07.414671123Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}},{\"function\":{\"index\":1,\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\",\"days\":2}}}]},\"done\":false}\n\
            {\"model\":\"qwen3\",\"created_at\":\"2025-10-17T23:14:07.414671123Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"now\",\"arguments\":{}}}]},\"done\":false}\n\
            {\"model\":\"qwen3\",\"created_at\":\"2025-10-17T23:14:07.414671123Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":5,\"eval_count\":9}\n";
        assert_eq!(
            decode(stream).unwrap(),
            vec![
                StreamEvent::Model("qwen3".into()),
                StreamEvent::Reasoning("Let me think".into()),
                StreamEvent::Text("Checking.".into()),
                call(0, "get_weather", "{\"city\":\"Paris\"}"),
                call(1, "get_weather", "{\"city\":\"Oslo\",\"days\":2}"),
                call(2, "now", "{}"),
                StreamEvent::Done {
                    usage: Usage::new(5, 9),
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
        // A call cut off by the token limit is reported as cut off.
        let cut = "{\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":{}}}]},\"done\":true,\"done_reason\":\"length\"}\n";
        assert!(matches!(
            decode(cut).unwrap().pop(),
            Some(StreamEvent::Done {
                finish_reason: FinishReason::Length,
                ..
            })
        ));
        // Null and empty tool call lists are no calls.
        let none = "{\"message\":{\"role\":\"assistant\",\"content\":\"x\",\"tool_calls\":null},\"done\":false}\n\
            {\"message\":{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[]},\"done\":true,\"done_reason\":\"stop\"}\n";
        assert!(matches!(
            decode(none).unwrap().pop(),
            Some(StreamEvent::Done {
                finish_reason: FinishReason::Stop,
                ..
            })
        ));
    }

    #[test]
    fn a_whole_answer_carries_its_thinking_and_calls() {
        let whole = "{\"model\":\"qwen3\",\"created_at\":\"2025-10-17T23:14:07.414671123Z\",\"message\":{\"role\":\"assistant\",\"content\":\"\",\"thinking\":\"Two cities.\",\"tool_calls\":[{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}},{\"function\":{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}}]},\"done_reason\":\"stop\",\"done\":true,\"prompt_eval_count\":20,\"eval_count\":30}";
        assert_eq!(
            decode(whole).unwrap(),
            vec![
                StreamEvent::Model("qwen3".into()),
                StreamEvent::Reasoning("Two cities.".into()),
                call(0, "get_weather", "{\"city\":\"Paris\"}"),
                call(1, "get_weather", "{\"city\":\"Oslo\"}"),
                StreamEvent::Done {
                    usage: Usage::new(20, 30),
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
    }

    fn weather() -> provd_client::Tool {
        provd_client::Tool::new(
            "get_weather",
            "The weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        )
    }

    #[test]
    fn tools_tool_turns_images_format_and_think_take_ollamas_shapes() {
        use provd_client::{Message, Reasoning, ToolCall};
        let p = provider("");
        let mut r = GenerateRequest {
            system: Some("be brief".into()),
            messages: vec![
                Message {
                    images: vec![Image::Base64 {
                        media_type: "image/png".into(),
                        data: "iVBORw0KGgo=".into(),
                    }],
                    ..Message::text(Role::User, "Weather here and in Oslo?")
                },
                Message {
                    tool_calls: vec![
                        ToolCall {
                            id: "call_7_0".into(),
                            name: "get_weather".into(),
                            arguments: "{\"city\":\"Paris\"}".into(),
                        },
                        ToolCall {
                            id: "call_7_1".into(),
                            name: "now".into(),
                            arguments: "{}".into(),
                        },
                    ],
                    ..Message::text(Role::Assistant, "Checking.")
                },
                Message::tool_result("call_7_0", "18C"),
                Message {
                    is_error: true,
                    ..Message::tool_result("call_7_1", "clock broken")
                },
            ],
            tools: vec![weather()],
            tool_choice: Some(ToolChoice::Auto),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "report".into(),
                schema: json!({"type": "object", "properties": {"t": {"type": "number"}}}),
                strict: true,
            }),
            reasoning: Some(Reasoning {
                effort: Some(Effort::Medium),
                ..Reasoning::default()
            }),
            stream: false,
            ..GenerateRequest::default()
        };
        assert_eq!(
            p.body(&r).unwrap(),
            json!({
                "model": "llama3.2",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "Weather here and in Oslo?", "images": ["iVBORw0KGgo="]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                        {"function": {"name": "now", "arguments": {}}},
                    ]},
                    {"role": "tool", "content": "18C", "tool_name": "get_weather"},
                    {"role": "tool", "content": "Error: clock broken", "tool_name": "now"},
                ],
                "tools": [{"type": "function", "function": {
                    "name": "get_weather",
                    "description": "The weather in a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                }}],
                "format": {"type": "object", "properties": {"t": {"type": "number"}}},
                "think": "medium",
                "options": {"num_predict": 100},
                "stream": false,
            })
        );
        // json_object is "json"; none sends no tools; a budget alone or no level maps.
        r.response_format = Some(ResponseFormat::JsonObject);
        r.tool_choice = Some(ToolChoice::None);
        for (reasoning, think) in [
            (
                Reasoning {
                    budget_tokens: Some(4096),
                    ..Reasoning::default()
                },
                json!("high"),
            ),
            (
                Reasoning {
                    effort: Some(Effort::Minimal),
                    ..Reasoning::default()
                },
                json!("low"),
            ),
            (
                Reasoning {
                    show: true,
                    ..Reasoning::default()
                },
                json!(true),
            ),
        ] {
            r.reasoning = Some(reasoning);
            let body = p.body(&r).unwrap();
            assert_eq!(body["format"], "json");
            assert_eq!(body.get("tools"), None);
            assert_eq!(body["think"], think);
        }
    }

    #[test]
    fn what_ollama_cannot_honour_is_refused_naming_it() {
        let p = provider("");
        let mut r = GenerateRequest::prompt("hi");
        r.tools = vec![weather()];
        for (choice, named) in [
            (ToolChoice::Required, "tool_choice \"required\""),
            (
                ToolChoice::Tool("get_weather".into()),
                "tool_choice naming a tool",
            ),
        ] {
            r.tool_choice = Some(choice);
            let e = p.body(&r).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert!(
                e.message.contains(named) && e.message.contains("'o' (type ollama)"),
                "{e}"
            );
        }
        let mut r = GenerateRequest::prompt("hi");
        r.messages = vec![provd_client::Message {
            images: vec![Image::Url {
                url: "https://example.com/a.png".into(),
            }],
            ..provd_client::Message::text(Role::User, "what is it?")
        }];
        let e = p.body(&r).unwrap_err();
        assert!(e.message.contains("image URLs"), "{e}");
        let mut r = GenerateRequest::prompt("hi");
        r.response_format = Some(ResponseFormat::JsonObject);
        r.additional_params.insert("format".into(), json!("json"));
        let e = p.body(&r).unwrap_err();
        assert!(e.message.contains("additional_params.format"), "{e}");
    }

    #[test]
    fn an_error_line_is_an_upstream_error_with_its_message() {
        let stream = "{\"message\":{\"role\":\"assistant\",\"content\":\"I\"},\"done\":false}\n\
            {\"error\":\"an error was encountered while running the model\"}\n";
        let mut d = ChatDecoder::new("ollama");
        let mut out = Vec::new();
        let mut lines = Vec::new();
        NdjsonSplitter::new()
            .push(stream.as_bytes(), &mut lines)
            .unwrap();
        let mut lines = lines.into_iter();
        d.unit(lines.next().unwrap(), &mut out).unwrap();
        let err = d.unit(lines.next().unwrap(), &mut out).unwrap_err();
        assert_eq!(out, vec![StreamEvent::Text("I".into())]);
        assert_eq!(err.code, ErrorCode::UpstreamError);
        assert_eq!(
            err.message,
            "ollama: error in stream: an error was encountered while running the model"
        );
    }

    #[test]
    fn garbage_is_malformed_and_a_missing_done_line_is_an_error() {
        let err =
            decode("{\"message\":{\"content\":\"a\"},\"done\":false}\nnot json\n").unwrap_err();
        assert_eq!(err.code, ErrorCode::UpstreamError);
        assert!(err.message.contains("malformed"), "{}", err.message);
        assert!(!err.retryable);
        let err = decode("[1,2]\n").unwrap_err();
        assert!(err.message.contains("malformed"), "{}", err.message);
        let err = decode("{\"message\":{\"content\":\"a\"},\"done\":false}\n").unwrap_err();
        assert!(
            err.message.contains("without its final line"),
            "{}",
            err.message
        );
        assert!(err.retryable);
    }

    #[test]
    fn error_bodies_yield_their_message() {
        assert_eq!(
            error_message(br#"{"error":"model 'llama9' not found"}"#).as_deref(),
            Some("model 'llama9' not found")
        );
        assert_eq!(error_message(b"404 page not found"), None);
        assert_eq!(error_message(br#"{"message":"x"}"#), None);
    }

    fn provider(additional: &str) -> OllamaProvider {
        let table = format!("type = \"ollama\"\nmax_tokens = 100\n{additional}");
        OllamaProvider::new(ProviderSpec::for_test("o", &table, "llama3.2", None)).unwrap()
    }

    #[test]
    fn additional_params_are_routed_into_options_or_the_top_level() {
        let p = provider("");
        let mut r = GenerateRequest::prompt("hi");
        r.temperature = Some(0.5);
        r.additional_params.insert("seed".into(), json!(7));
        r.additional_params
            .insert("temperature".into(), json!(0.25));
        r.additional_params
            .insert("options".into(), json!({"num_ctx": 8192, "seed": 8}));
        r.additional_params
            .insert("keep_alive".into(), json!("10m"));
        r.additional_params.insert("think".into(), json!(false));
        let body = p.body(&r).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "llama3.2",
                "messages": [{"role": "user", "content": "hi"}],
                "options": {"num_predict": 100, "temperature": 0.25, "seed": 8, "num_ctx": 8192},
                "keep_alive": "10m",
                "think": false,
                "stream": true,
            })
        );
        let mut r = GenerateRequest::prompt("hi");
        r.additional_params.insert("options".into(), json!([1]));
        assert_eq!(p.body(&r).unwrap_err().code, ErrorCode::InvalidRequest);
        for key in ["model", "stream", "messages"] {
            let mut r = GenerateRequest::prompt("hi");
            r.additional_params.insert(key.into(), json!("x"));
            let err = p.body(&r).unwrap_err();
            assert!(err.message.contains(&format!("additional_params.{key}")));
        }
    }

    #[test]
    fn the_default_base_url_is_the_local_server() {
        let p = provider("");
        assert_eq!(p.api().chat_url.as_str(), "http://127.0.0.1:11434/api/chat");
        assert_eq!(p.api().address, "127.0.0.1:11434");
        let p = provider("base_url = \"https://user:pw@ollama.example/\"");
        assert_eq!(p.api().address, "ollama.example:443");
    }
}
