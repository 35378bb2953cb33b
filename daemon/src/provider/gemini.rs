//! Google's Gemini API (the Generative Language API, `v1beta`).
//!
//! - Generate: `POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse`, an SSE
//!   stream whose every `data:` event is a whole `GenerateContentResponse`; without
//!   streaming, `POST …/models/{model}:generateContent` returns one such object. Both go
//!   through the same `ResponseDecoder`, so streamed and whole answers cannot disagree.
//! - List models: `GET {base_url}/v1beta/models`, paginated with `pageToken` /
//!   `nextPageToken`.
//! - Auth: the key in the `x-goog-api-key` header, never in the URL (the API also takes
//!   `?key=`, but a URL ends up in logs and error messages; a header does not).
//!
//! `base_url` is the API root *without* the version (`https://generativelanguage.googleapis.com`,
//! or a proxy's root); provd appends `/v1beta`.
//!
//! Mapping decisions, each one deliberate:
//!
//! - **End of stream.** Gemini sends no final event: the last chunk carries a
//!   `finishReason` and then the body ends. So `Done` is produced when the body ends
//!   cleanly after some chunk carried a `finishReason`; a body that ends without one, or
//!   that breaks after it, is an error, never a silent success.
//! - **Text.** Only candidate 0 is read: its text parts are text, its parts marked
//!   `thought: true` (thought summaries, sent when `includeThoughts` is on) reasoning,
//!   its `functionCall` parts tool calls; `inlineData`, `executableCode` and the like are
//!   skipped without interrupting the text. Other candidates (`candidateCount > 1`) are
//!   not forwarded; their tokens still count in usage.
//! - **Usage.** Each chunk carries cumulative `usageMetadata`; the latest wins. `prompt` =
//!   `promptTokenCount + toolUsePromptTokenCount` (tool results are fed back to the model
//!   as input), `completion` = `candidatesTokenCount + thoughtsTokenCount` (thinking is
//!   billed as output, and OpenAI's `completion_tokens` include reasoning likewise), so
//!   `total` equals Gemini's `totalTokenCount`; `thoughtsTokenCount` is also the
//!   reasoning count. Streamed and non-streamed agree because both read the same fields.
//! - **Finish reasons.** `STOP` → stop (tool_calls after a `functionCall`), `MAX_TOKENS` →
//!   length; `SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`,
//!   `IMAGE_SAFETY` and the other `IMAGE_*` / `MODEL_ARMOR` blocks → content_filter;
//!   everything else, `MALFORMED_FUNCTION_CALL` and `UNEXPECTED_TOOL_CALL` included, →
//!   other: `tool_calls` would tell the caller a call awaits it, and a malformed one does
//!   not.
//! - **Blocked prompt.** `promptFeedback.blockReason` (no candidates at all) ends the
//!   generation with finish reason content_filter and no text, like an answer the filter
//!   stopped: the request was well-formed, the usage is real, and retrying cannot help.
//! - **Errors.** Bodies are `{"error": {"code", "message", "status", "details"}}`. The
//!   status decides the code as for every API, refined by the body: a refused key
//!   (`ErrorInfo.reason = API_KEY_INVALID`, sent as HTTP 400) is unauthenticated,
//!   `DEADLINE_EXCEEDED` a timeout, and a `google.rpc.RetryInfo.retryDelay` is the retry
//!   hint when no `retry-after` header gave one. The same body inside the stream
//!   (`data: {"error": …}`) ends the generation with that error.
//!
//! How tools, structured output, reasoning and images map:
//!
//! - **Tools**: `tools: [{functionDeclarations: [{name, description,
//!   parametersJsonSchema}]}]`. `parametersJsonSchema` takes the JSON Schema as given
//!   (`v1beta`; `parameters` would take only the OpenAPI subset and need a lossy
//!   translation of `additionalProperties`, `$ref`, `anyOf` …). A tool without
//!   parameters declares none. `tool_choice` → `toolConfig.functionCallingConfig.mode`:
//!   auto `AUTO`, none `NONE`, required `ANY`, one tool `ANY` with
//!   `allowedFunctionNames: [name]`.
//! - **Turns**: an assistant turn → a `model` turn of its text part (when it has text)
//!   and one `functionCall {name, args}` part per call; a tool turn → a
//!   `functionResponse {name, response: {output}}` part (`{error}` when the result is an
//!   error, the keys the API documents) in a user turn, named after the earlier call
//!   with that id; the results of consecutive tool turns share one user turn, as the API
//!   wants the answers to parallel calls.
//! - **Calls**: each `functionCall` part arrives whole → one tool-call piece with the
//!   whole arguments, numbered in order; the API gives no ids, so the server fills
//!   `call_<request id>_<n>`.
//! - **Reasoning**: `generationConfig.thinkingConfig: {thinkingBudget, includeThoughts}`,
//!   the budget being the request's, else its effort mapped by
//!   [`super::thinking_budget`] (Google's own table), `includeThoughts` whether the
//!   reasoning is shown. `thoughtSignature`s are kept per part and reported as one
//!   provider state `{"thought_signatures": {"text": sig, "calls": [sig or null per
//!   call]}}`; the next turn sends each back on its part (the text part, or the call at
//!   that position), and drops them when the turn came from another provider type.
//! - **Structured output**: `json_object` → `responseMimeType: application/json`;
//!   `json_schema` → that plus `responseJsonSchema` (the schema as given, for the same
//!   reason as `parametersJsonSchema`).
//! - **Images**: base64 images → `inlineData {mimeType, data}` parts after the turn's
//!   text. URLs are refused by name: the API takes bytes (or its own Files API URIs) and
//!   provd never fetches a URL; the type's capabilities leave `image_urls` out.
//!
//! `additional_params` are merged into the request body: `generationConfig` (or
//! `generation_config`) merges key by key into the one provd builds, the caller's keys
//! winning (`topK`, `seed`, `thinkingConfig`, `responseMimeType`, or a `maxOutputTokens`
//! that overrides `max_tokens`), except that the keys the request's own
//! `response_format` or `reasoning` set are refused rather than overridden; every other
//! key (`safetySettings`, `tools`, `cachedContent`, even `systemInstruction`) is set as
//! given, except `tools` and `toolConfig` when the request gives tools or a tool
//! choice (refused: set them in one place). `model`, `stream` and `contents` are
//! refused: the model and streaming are in the URL provd chooses, and the conversation
//! comes from `prompt` / `messages`.

use provd_client::{
    ErrorCode, FinishReason, GenerateRequest, Image, ModelInfo, ResponseFormat, Role,
    ToolCallDelta, ToolChoice, Usage,
};
use reqwest::{RequestBuilder, Url};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http::{self, time, Decoder, HttpApi, HttpProvider, Transport};
use super::sse::{SseEvent, SseParser};
use super::tools;
use super::{
    conversation, merge_additional_params, BoxFuture, ProviderError, ProviderSpec, ReportedModel,
    StreamEvent,
};
use crate::settings::ProviderKind;

/// The Gemini API's root.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// The API version provd speaks; `v1beta` is the one with system instructions, thinking
/// and every current model.
const API_VERSION: &str = "v1beta";

/// Body keys provd sets itself (the model and streaming are in the URL, but a body field
/// of that name would be a silent conflict).
const RESERVED: &[&str] = &["model", "stream", "contents"];

/// The header that carries the key.
const KEY_HEADER: &str = "x-goog-api-key";

/// Models per `models.list` page: the documented maximum, so one request usually does.
const MODELS_PAGE_SIZE: u32 = 1000;

/// Gemini, through its own API.
pub type GeminiProvider = HttpProvider<GeminiApi>;

impl GeminiProvider {
    /// An instance for `gemini`.
    pub fn new(spec: ProviderSpec) -> Result<GeminiProvider, ProviderError> {
        let api = GeminiApi {
            base_url: spec.base_url(DEFAULT_BASE_URL),
        };
        HttpProvider::with_api(spec, api)
    }
}

/// What the Gemini API does its own way.
#[derive(Debug)]
pub struct GeminiApi {
    base_url: String,
}

impl GeminiApi {
    /// `{base_url}/v1beta/{path}`, with the query pairs encoded.
    fn endpoint(
        &self,
        spec: &ProviderSpec,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Url, ProviderError> {
        let mut url =
            Url::parse(&format!("{}/{API_VERSION}/{path}", self.base_url)).map_err(|e| {
                // A configuration fault: no retry can fix it.
                let mut error = ProviderError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "providers.{}.base_url '{}' does not make a valid URL: {e}",
                        spec.id, self.base_url
                    ),
                );
                error.retryable = false;
                error
            })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }
}

impl HttpApi for GeminiApi {
    type Framer = SseParser;
    type Decoder = ResponseDecoder;

    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    fn authorize(
        &self,
        spec: &ProviderSpec,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, ProviderError> {
        let key = spec.require_credential()?;
        let value = http::auth_header(&spec.id, "", key)?;
        Ok(request.header(KEY_HEADER, value))
    }

    fn url(&self, spec: &ProviderSpec, request: &GenerateRequest) -> Result<Url, ProviderError> {
        let resource = model_resource(&spec.model)?;
        if request.stream {
            self.endpoint(
                spec,
                &format!("{resource}:streamGenerateContent"),
                &[("alt", "sse")],
            )
        } else {
            self.endpoint(spec, &format!("{resource}:generateContent"), &[])
        }
    }

    fn body(&self, spec: &ProviderSpec, request: &GenerateRequest) -> Result<Value, ProviderError> {
        let (system, turns) = conversation(request);
        let contents = contents(&turns)?;
        let mut config = Map::new();
        config.insert(
            "maxOutputTokens".into(),
            json!(request.max_tokens.unwrap_or(spec.config.max_tokens)),
        );
        if let Some(t) = request.temperature {
            config.insert("temperature".into(), super::json_f32(t));
        }
        if let Some(p) = request.top_p {
            config.insert("topP".into(), super::json_f32(p));
        }
        if !request.stop.is_empty() {
            config.insert("stopSequences".into(), json!(request.stop));
        }
        // What the request's own options put in generationConfig: a caller's
        // generationConfig may not contradict them.
        let mut options = Map::new();
        match &request.response_format {
            Some(ResponseFormat::JsonObject) => {
                options.insert("responseMimeType".into(), json!("application/json"));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                options.insert("responseMimeType".into(), json!("application/json"));
                options.insert("responseJsonSchema".into(), schema.clone());
            }
            Some(ResponseFormat::Text) | None => {}
        }
        if let Some(reasoning) = &request.reasoning {
            options.insert(
                "thinkingConfig".into(),
                json!({
                    "thinkingBudget": super::thinking_budget(reasoning),
                    "includeThoughts": reasoning.show,
                }),
            );
        }
        let mut body = Map::new();
        body.insert("contents".into(), Value::Array(contents));
        if let Some(system) = system {
            body.insert(
                "systemInstruction".into(),
                json!({"parts": [{"text": system}]}),
            );
        }
        merge_additional_params(&mut body, request, RESERVED, spec)?;
        if !request.tools.is_empty() {
            let declarations: Vec<Value> = request
                .tools
                .iter()
                .map(|t| {
                    let mut declaration = Map::new();
                    declaration.insert("name".into(), json!(t.name));
                    if let Some(d) = &t.description {
                        declaration.insert("description".into(), json!(d));
                    }
                    if let Some(p) = &t.parameters {
                        declaration.insert("parametersJsonSchema".into(), p.clone());
                    }
                    Value::Object(declaration)
                })
                .collect();
            set_own(
                &mut body,
                "tools",
                json!([{"functionDeclarations": declarations}]),
                "tools",
            )?;
        }
        // Without tools, auto and none say what no toolConfig says; required and one
        // tool are refused before here.
        if let Some(choice) = request
            .tool_choice
            .as_ref()
            .filter(|_| !request.tools.is_empty())
        {
            set_own(&mut body, "toolConfig", tool_config(choice), "tool_choice")?;
        }
        for key in ["generationConfig", "generation_config"] {
            match body.remove(key) {
                None => {}
                Some(Value::Object(theirs)) => {
                    if let Some(clash) = theirs.keys().find(|k| options.contains_key(*k)) {
                        return Err(ProviderError::new(
                            ErrorCode::InvalidRequest,
                            format!(
                                "additional_params.{key}.{clash} conflicts with the request's own response_format or reasoning; set it in one place"
                            ),
                        ));
                    }
                    config.extend(theirs)
                }
                Some(_) => {
                    return Err(ProviderError::new(
                        ErrorCode::InvalidRequest,
                        format!("additional_params.{key} must be an object"),
                    ))
                }
            }
        }
        config.extend(options);
        body.insert("generationConfig".into(), Value::Object(config));
        Ok(Value::Object(body))
    }

    fn decoder(&self, provider: &str) -> ResponseDecoder {
        ResponseDecoder::new(provider)
    }

    fn whole(
        &self,
        spec: &ProviderSpec,
        http: &Transport,
        body: Vec<u8>,
        streamed: bool,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        // A streaming request may be answered whole too: one response, or the JSON
        // array of them that streamGenerateContent sends without `alt=sse`.
        let expected = "an event stream or a GenerateContentResponse";
        let marks = ["candidates", "promptFeedback"];
        let wholes: Vec<WireResponse> = if streamed {
            match http.parse_whole(&body, true, expected, &marks)? {
                WholeResponse::One(one) => vec![one],
                WholeResponse::Many(many) => many,
            }
        } else {
            // Parsed as the one response it must be, so that serde's message says
            // what is wrong with it.
            vec![http.parse_whole(&body, false, expected, &marks)?]
        };
        let mut decoder = ResponseDecoder::new(&spec.id);
        let mut events = Vec::new();
        for whole in wholes {
            decoder.response(whole, &mut events)?;
        }
        if decoder.done().is_none() {
            return Err(http::malformed(
                &spec.id,
                "the response has no finishReason",
            ));
        }
        decoder.finish(&mut events)?;
        Ok(events)
    }

    fn list_models(
        provider: &HttpProvider<Self>,
    ) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>> {
        let (spec, transport) = (provider.spec(), provider.transport());
        Box::pin(http::paginated(&spec.id, move |token| async move {
            let page_size = MODELS_PAGE_SIZE.to_string();
            let mut query = vec![("pageSize", page_size.as_str())];
            if let Some(token) = &token {
                query.push(("pageToken", token.as_str()));
            }
            let url = provider.api().endpoint(spec, "models", &query)?;
            let page: ModelsPage = transport
                .read_json(provider.send(transport.get(url)).await?)
                .await?;
            let models = page
                .models
                .unwrap_or_default()
                .into_iter()
                // Embedding and other models cannot serve a generation.
                .filter(|m| {
                    m.supported_generation_methods
                        .iter()
                        .any(|g| g == "generateContent")
                })
                .map(|m| ModelInfo {
                    id: m.name.strip_prefix("models/").unwrap_or(&m.name).to_owned(),
                    provider: spec.id.clone(),
                    display_name: m.display_name,
                    context_window: m.input_token_limit,
                    created_at: None,
                    ..ModelInfo::default()
                })
                .collect();
            Ok((models, page.next_page_token.filter(|t| !t.is_empty())))
        }))
    }

    fn error_message(body: &[u8]) -> Option<String> {
        error_message(body)
    }

    fn refine(error: &mut ProviderError, body: &[u8]) {
        refine(error, body)
    }
}

/// Sets body field `key` from the request's option `option`, refusing an
/// `additional_params` entry of the same name rather than dropping either.
fn set_own(
    body: &mut Map<String, Value>,
    key: &str,
    value: Value,
    option: &str,
) -> Result<(), ProviderError> {
    if body.contains_key(key) {
        return Err(ProviderError::new(
            ErrorCode::InvalidRequest,
            format!(
                "additional_params.{key} conflicts with the request's own {option}; set it in one place"
            ),
        ));
    }
    body.insert(key.to_owned(), value);
    Ok(())
}

/// `toolConfig.functionCallingConfig` for a tool choice: `required` is `ANY`, one tool
/// is `ANY` restricted to its name.
fn tool_config(choice: &ToolChoice) -> Value {
    let config = match choice {
        ToolChoice::Auto => json!({"mode": "AUTO"}),
        ToolChoice::None => json!({"mode": "NONE"}),
        ToolChoice::Required => json!({"mode": "ANY"}),
        ToolChoice::Tool(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    };
    json!({"functionCallingConfig": config})
}

/// The conversation as `contents`. A user turn: its text, then its images as
/// `inlineData`. An assistant (`model`) turn: its text, then one `functionCall` part per
/// call, each part given back the `thoughtSignature` it came with (when the turn's state
/// came from a gemini provider). A tool turn: a `functionResponse` part in a user turn,
/// named after the call it answers; the results of consecutive tool turns share one
/// turn, as the API wants the answers to parallel calls.
fn contents(turns: &[provd_client::Message]) -> Result<Vec<Value>, ProviderError> {
    let mut contents: Vec<Value> = Vec::with_capacity(turns.len());
    let mut tool_run = false;
    for (i, turn) in turns.iter().enumerate() {
        match turn.role {
            Role::Assistant => {
                tool_run = false;
                let signatures = super::state_for(turn, "gemini")
                    .and_then(|s| s.get("thought_signatures"))
                    .cloned()
                    .unwrap_or(Value::Null);
                let mut parts = Vec::new();
                if !turn.content.is_empty() || turn.tool_calls.is_empty() {
                    let mut part = json!({"text": turn.content});
                    if let Some(s) = signatures.get("text").filter(|s| s.is_string()) {
                        part["thoughtSignature"] = s.clone();
                    }
                    parts.push(part);
                }
                for (n, call) in turn.tool_calls.iter().enumerate() {
                    let args = tools::arguments_object(call);
                    let mut part = json!({"functionCall": {"name": call.name, "args": args}});
                    if let Some(s) = signatures
                        .get("calls")
                        .and_then(|c| c.get(n))
                        .filter(|s| s.is_string())
                    {
                        part["thoughtSignature"] = s.clone();
                    }
                    parts.push(part);
                }
                contents.push(json!({"role": "model", "parts": parts}));
            }
            Role::Tool => {
                let id = turn.tool_call_id.as_deref().unwrap_or_default();
                let name = tools::call_name(&turns[..i], id).ok_or_else(|| {
                        ProviderError::new(
                            ErrorCode::InvalidRequest,
                            format!(
                                "the tool result for call {} answers no earlier call, and gemini needs the call's name",
                                crate::untrusted::untrusted(id)
                            ),
                        )
                    })?;
                let key = if turn.is_error { "error" } else { "output" };
                let part =
                    json!({"functionResponse": {"name": name, "response": {key: turn.content}}});
                match contents.last_mut() {
                    Some(last) if tool_run => {
                        if let Some(parts) = last["parts"].as_array_mut() {
                            parts.push(part);
                        }
                    }
                    _ => contents.push(json!({"role": "user", "parts": [part]})),
                }
                tool_run = true;
            }
            _ => {
                tool_run = false;
                let mut parts = vec![json!({"text": turn.content})];
                for image in &turn.images {
                    match image {
                        Image::Base64 { media_type, data } => parts.push(
                            json!({"inlineData": {"mimeType": media_type, "data": data}}),
                        ),
                        Image::Url { .. } => {
                            return Err(ProviderError::new(
                                ErrorCode::InvalidRequest,
                                "image URLs are not supported by gemini (its API takes the bytes inline, and provd never fetches a URL): send the image as base64",
                            ))
                        }
                    }
                }
                contents.push(json!({"role": "user", "parts": parts}));
            }
        }
    }
    Ok(contents)
}

/// The resource name of a model (`models/gemini-2.5-flash`, `tunedModels/my-model`) from
/// the configured or requested model id. Anything that could leave the path (`/..`, `?`,
/// `#`, `%`) is refused rather than escaped: no Gemini model name contains it.
fn model_resource(model: &str) -> Result<String, ProviderError> {
    let valid_segment = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let resource = match model.split_once('/') {
        None if valid_segment(model) => format!("models/{model}"),
        Some((collection, name)) if valid_segment(collection) && valid_segment(name) => {
            model.to_owned()
        }
        _ => {
            return Err(ProviderError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "'{model}' is not a Gemini model name: expected letters, digits, '-', '_' \
                     and '.', optionally after 'models/' or 'tunedModels/'"
                ),
            ))
        }
    };
    Ok(resource)
}

/// A whole answer: one response, or the array of streamGenerateContent without SSE.
#[derive(Deserialize)]
#[serde(untagged)]
enum WholeResponse {
    One(WireResponse),
    Many(Vec<WireResponse>),
}

/// The `error` object of a Gemini error body (google.rpc.Status in JSON).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GoogleError {
    /// A number, or a string holding one: some gateways send `"400"`.
    #[serde(deserialize_with = "http::lenient_code")]
    code: Option<u16>,
    message: Option<String>,
    status: Option<String>,
    details: Vec<Value>,
}

/// `{"error": {...}}`, or the same wrapped in a one-element array (how the non-SSE
/// streaming endpoint answers).
fn google_error(body: &[u8]) -> Option<GoogleError> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let error = match &v {
        Value::Array(items) => items.first()?.get("error")?,
        _ => v.get("error")?,
    };
    serde_json::from_value(error.clone()).ok()
}

impl GoogleError {
    /// `STATUS: message`, so a log reader sees Google's classification too.
    fn describe(&self) -> Option<String> {
        match (&self.status, &self.message) {
            (Some(status), Some(message)) => Some(format!("{status}: {message}")),
            (None, Some(message)) => Some(message.clone()),
            (Some(status), None) => Some(status.clone()),
            (None, None) => None,
        }
    }

    /// A `google.rpc.*` detail of this type (`ErrorInfo`, `RetryInfo`).
    fn detail(&self, kind: &str) -> impl Iterator<Item = &Value> {
        let suffix = format!("google.rpc.{kind}");
        self.details.iter().filter(move |d| {
            d.get("@type")
                .and_then(Value::as_str)
                .is_some_and(|t| t.ends_with(&suffix))
        })
    }

    fn key_refused(&self) -> bool {
        self.status.as_deref() == Some("UNAUTHENTICATED")
            || self
                .detail("ErrorInfo")
                .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
    }

    fn retry_delay(&self) -> Option<std::time::Duration> {
        self.detail("RetryInfo").find_map(|d| {
            d.get("retryDelay")
                .and_then(Value::as_str)
                .and_then(time::proto_duration)
        })
    }
}

fn error_message(body: &[u8]) -> Option<String> {
    google_error(body)?.describe()
}

/// [`HttpApi::refine`] for Gemini: a refused key is unauthenticated (Gemini says 400
/// INVALID_ARGUMENT), DEADLINE_EXCEEDED is a timeout, and RetryInfo's delay is the
/// retry hint when no header gave one.
fn refine(error: &mut ProviderError, body: &[u8]) {
    let Some(google) = google_error(body) else {
        return;
    };
    if google.key_refused() {
        error.code = ErrorCode::Unauthenticated;
        error.retryable = false;
        error.retry_after = None;
        return;
    }
    if google.status.as_deref() == Some("DEADLINE_EXCEEDED") {
        error.code = ErrorCode::Timeout;
        error.retryable = true;
    }
    if error.retryable && error.retry_after.is_none() {
        error.retry_after = google.retry_delay();
    }
}

/// The system-wide code for a google.rpc status name, as Gemini puts it in `status`.
fn status_code(status: &str) -> ErrorCode {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => ErrorCode::InvalidRequest,
        "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
        "PERMISSION_DENIED" => ErrorCode::PermissionDenied,
        "NOT_FOUND" => ErrorCode::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorCode::RateLimited,
        "UNAVAILABLE" => ErrorCode::Unavailable,
        "DEADLINE_EXCEEDED" => ErrorCode::Timeout,
        _ => ErrorCode::UpstreamError,
    }
}

/// An error object inside the stream (`data: {"error": {...}}`): the generation failed
/// after the headers went out.
fn stream_error(provider: &str, error: &Value) -> ProviderError {
    let google: GoogleError = serde_json::from_value(error.clone()).unwrap_or_default();
    let description = google.describe().unwrap_or_else(|| error.to_string());
    let code = google
        .status
        .as_deref()
        .map_or(ErrorCode::UpstreamError, status_code);
    let mut e = ProviderError::new(code, format!("{provider}: error in stream: {description}"));
    // As with an HTTP status: a server-side failure may pass on a retry.
    e.retryable = e.retryable || google.code.is_some_and(|c| c >= 500);
    if e.retryable {
        e.retry_after = google.retry_delay();
    }
    e
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "STOP" => FinishReason::Stop,
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => FinishReason::ContentFilter,
        // MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, LANGUAGE, OTHER, and values yet to
        // come: see the module docs for why a broken tool call is not tool_use.
        _ => FinishReason::Other,
    }
}

/// One `GenerateContentResponse`: a stream chunk, or the whole non-streamed answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse {
    /// The model that answered (`modelVersion`), when the upstream names it.
    #[serde(default, deserialize_with = "http::lenient_text")]
    model_version: Option<String>,
    #[serde(default)]
    candidates: Option<Vec<WireCandidate>>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
    /// Set only when the stream carries an error instead of a response.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct WireContent {
    #[serde(default)]
    parts: Option<Vec<WirePart>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    /// A thought summary rather than answer text.
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
    /// The model's signed thought context, to be sent back on this part next turn.
    #[serde(default)]
    thought_signature: Option<String>,
}

/// A `functionCall` part: always whole, never in pieces.
#[derive(Debug, Deserialize)]
struct WireFunctionCall {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    args: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct WireUsage {
    prompt_token_count: u32,
    candidates_token_count: u32,
    /// Absent for a model that did not think.
    thoughts_token_count: Option<u32>,
    tool_use_prompt_token_count: u32,
}

impl From<WireUsage> for Usage {
    fn from(u: WireUsage) -> Usage {
        Usage::new(
            u.prompt_token_count
                .saturating_add(u.tool_use_prompt_token_count),
            u.candidates_token_count
                .saturating_add(u.thoughts_token_count.unwrap_or(0)),
        )
        .with_reasoning(u.thoughts_token_count)
    }
}

/// Reads `GenerateContentResponse`s, streamed or whole, into events; see the module docs
/// for every choice it makes.
#[derive(Debug)]
pub struct ResponseDecoder {
    provider: String,
    model: ReportedModel,
    usage: Option<Usage>,
    /// Candidate 0's finish reason, or content_filter for a blocked prompt.
    finish: Option<FinishReason>,
    /// The function calls seen so far (each one's index).
    calls: u32,
    /// The thought signatures seen: of the text, and of each call by index.
    text_signature: Option<String>,
    call_signatures: Vec<Option<String>>,
}

impl ResponseDecoder {
    /// A decoder at the start of a stream; its errors name `provider`.
    pub fn new(provider: &str) -> Self {
        ResponseDecoder {
            provider: provider.to_owned(),
            model: ReportedModel::default(),
            usage: None,
            finish: None,
            calls: 0,
            text_signature: None,
            call_signatures: Vec::new(),
        }
    }

    fn response(
        &mut self,
        response: WireResponse,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), ProviderError> {
        if let Some(error) = response.error {
            return Err(stream_error(&self.provider, &error));
        }
        self.model.note(response.model_version.as_deref(), out);
        if let Some(reason) = response.prompt_feedback.and_then(|f| f.block_reason) {
            tracing::debug!(provider = %self.provider, block_reason = %crate::untrusted::untrusted(crate::scrub::Scrubbed(&reason)), "Gemini blocked the prompt");
            self.finish = Some(FinishReason::ContentFilter);
        }
        for candidate in response.candidates.unwrap_or_default() {
            if candidate.index.unwrap_or(0) != 0 {
                continue;
            }
            let parts = candidate.content.and_then(|c| c.parts).unwrap_or_default();
            for part in parts {
                self.part(part, out);
            }
            if let Some(reason) = candidate.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        if let Some(usage) = response.usage_metadata {
            let usage = Usage::from(usage);
            // Every chunk repeats the running totals; only a change is news.
            if self.usage != Some(usage) {
                self.usage = Some(usage);
                out.push(StreamEvent::Usage(usage));
            }
        }
        Ok(())
    }

    /// One part of candidate 0: a function call (whole), a thought, or text.
    fn part(&mut self, part: WirePart, out: &mut Vec<StreamEvent>) {
        if let Some(call) = part.function_call {
            let index = self.calls;
            self.calls += 1;
            self.call_signatures.push(part.thought_signature);
            out.push(StreamEvent::ToolCall(ToolCallDelta {
                index,
                // The Gemini API gives no ids, and an optional one (the Live API's) would
                // have to come back on the response, which is matched by name and order
                // instead: the server names every call.
                id: None,
                name: call.name,
                arguments: call.args.unwrap_or_else(|| json!({})).to_string(),
            }));
            return;
        }
        // A signature on a text or thought part belongs to the turn's text, which
        // provd sends back as one part.
        if let Some(signature) = part.thought_signature {
            self.text_signature = Some(signature);
        }
        let Some(text) = part.text.filter(|t| !t.is_empty()) else {
            return;
        };
        if part.thought == Some(true) {
            out.push(StreamEvent::Reasoning(text));
        } else {
            out.push(StreamEvent::Text(text));
        }
    }

    /// The thought signatures as provider state, when any came.
    fn state(&self) -> Option<StreamEvent> {
        if self.text_signature.is_none() && self.call_signatures.iter().all(Option::is_none) {
            return None;
        }
        let mut signatures = Map::new();
        if let Some(text) = &self.text_signature {
            signatures.insert("text".into(), json!(text));
        }
        if self.call_signatures.iter().any(Option::is_some) {
            signatures.insert("calls".into(), json!(self.call_signatures));
        }
        Some(StreamEvent::ProviderState(
            json!({"thought_signatures": signatures}),
        ))
    }

    /// The final event, once a finish reason was seen.
    fn done(&self) -> Option<StreamEvent> {
        let finish_reason = match self.finish? {
            FinishReason::Stop if self.calls > 0 => FinishReason::ToolCalls,
            reason => reason,
        };
        Some(StreamEvent::Done {
            usage: self.usage.unwrap_or_default(),
            finish_reason,
        })
    }

    /// The events that end the answer: the provider state, if any, then `Done`.
    fn finish(&self, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let done = self.done().ok_or_else(|| self.missing_finish())?;
        out.extend(self.state());
        out.push(done);
        Ok(())
    }

    fn missing_finish(&self) -> ProviderError {
        let mut e = ProviderError::new(
            ErrorCode::UpstreamError,
            format!(
                "{}: the stream ended before any chunk carried a finishReason",
                self.provider
            ),
        );
        e.retryable = true;
        e
    }
}

impl Decoder for ResponseDecoder {
    type Unit = SseEvent;

    fn unit(&mut self, event: SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let response: WireResponse =
            serde_json::from_str(&event.data).map_err(|e| http::malformed(&self.provider, e))?;
        self.response(response, out)
    }

    fn ended_early(&mut self) -> ProviderError {
        self.missing_finish()
    }

    fn ended(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        self.finish(out)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelsPage {
    #[serde(default)]
    models: Option<Vec<WireModel>>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireModel {
    name: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    input_token_limit: Option<u32>,
    #[serde(default)]
    supported_generation_methods: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    /// A stream in the shape the service sends (CRLF-terminated events, cumulative usage,
    /// the finish reason on the last chunk), with a thought summary and a second
    /// candidate mixed in.
    const STREAM: &str = "data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Weighing it\", \"thought\": true}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"totalTokenCount\": 29,\"thoughtsTokenCount\": 20},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n\
        data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"Hé\"}],\"role\": \"model\"},\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 1,\"totalTokenCount\": 30,\"thoughtsTokenCount\": 20},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n\
        data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"other candidate\"}],\"role\": \"model\"},\"index\": 1}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 1,\"totalTokenCount\": 30,\"thoughtsTokenCount\": 20},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n\
        data: {\"candidates\": [{\"content\": {\"parts\": [{\"text\": \"llo ✓\"}],\"role\": \"model\"},\"finishReason\": \"STOP\",\"index\": 0}],\"usageMetadata\": {\"promptTokenCount\": 9,\"candidatesTokenCount\": 3,\"totalTokenCount\": 32,\"thoughtsTokenCount\": 20},\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r1\"}\r\n\r\n";

    fn expected() -> Vec<StreamEvent> {
        let usage = |completion| Usage::new(9, completion).with_reasoning(Some(20));
        vec![
            StreamEvent::Model("gemini-2.5-flash".into()),
            StreamEvent::Reasoning("Weighing it".into()),
            StreamEvent::Usage(usage(20)),
            StreamEvent::Text("Hé".into()),
            StreamEvent::Usage(usage(21)),
            StreamEvent::Text("llo ✓".into()),
            StreamEvent::Usage(usage(23)),
            StreamEvent::Done {
                usage: usage(23),
                finish_reason: FinishReason::Stop,
            },
        ]
    }

    /// Parses and decodes `pieces` in order, then ends the body, as the HTTP pump does.
    fn decode_pieces<'a>(
        pieces: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<StreamEvent>, ProviderError> {
        let mut parser = SseParser::new();
        let mut d = ResponseDecoder::new("gemini");
        let mut out = Vec::new();
        for piece in pieces {
            let mut events = Vec::new();
            parser.push(piece, &mut events).unwrap();
            for e in events {
                d.unit(e, &mut out)?;
            }
        }
        d.ended(&mut out)?;
        Ok(out)
    }

    fn decode(stream: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        decode_pieces([stream.as_bytes()])
    }

    fn chunk(candidate: Value, usage: Value) -> String {
        format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [candidate], "usageMetadata": usage, "modelVersion": "m", "responseId": "r"})
        )
    }

    #[test]
    fn a_documented_stream_decodes_to_thoughts_text_usage_and_done_skipping_other_candidates() {
        assert_eq!(decode(STREAM).unwrap(), expected());
    }

    #[test]
    fn parallel_function_calls_are_whole_pieces_and_their_signatures_the_state() {
        let stream = chunk(
            json!({"content": {"parts": [{"text": "Let me look."}], "role": "model"}, "index": 0}),
            json!({"promptTokenCount": 5, "candidatesTokenCount": 3}),
        ) + &chunk(
            json!({"content": {"parts": [
                {"functionCall": {"name": "getWeather", "args": {"location": "Tokyo"}}, "thoughtSignature": "c2ln"},
                {"functionCall": {"name": "getWeather", "args": {"location": "Oslo"}}},
                {"functionCall": {"name": "now"}}
            ], "role": "model"}, "finishReason": "STOP", "index": 0}),
            json!({"promptTokenCount": 5, "candidatesTokenCount": 14}),
        );
        let call = |index, name: &str, arguments: &str| {
            StreamEvent::ToolCall(ToolCallDelta {
                index,
                id: None,
                name: Some(name.into()),
                arguments: arguments.into(),
            })
        };
        assert_eq!(
            decode(&stream).unwrap(),
            vec![
                StreamEvent::Model("m".into()),
                StreamEvent::Text("Let me look.".into()),
                StreamEvent::Usage(Usage::new(5, 3)),
                call(0, "getWeather", "{\"location\":\"Tokyo\"}"),
                call(1, "getWeather", "{\"location\":\"Oslo\"}"),
                call(2, "now", "{}"),
                StreamEvent::Usage(Usage::new(5, 14)),
                StreamEvent::ProviderState(
                    json!({"thought_signatures": {"calls": ["c2ln", null, null]}})
                ),
                StreamEvent::Done {
                    usage: Usage::new(5, 14),
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
    }

    #[test]
    fn a_signature_on_a_text_or_thought_part_is_the_texts() {
        let stream = chunk(
            json!({"content": {"parts": [{"text": "Hmm", "thought": true}], "role": "model"}, "index": 0}),
            json!({"promptTokenCount": 5, "thoughtsTokenCount": 7}),
        ) + &chunk(
            json!({"content": {"parts": [{"text": "Blue.", "thoughtSignature": "dGV4dA=="}], "role": "model"},
                   "finishReason": "STOP", "index": 0}),
            json!({"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 7}),
        );
        let events = decode(&stream).unwrap();
        assert_eq!(events[1], StreamEvent::Reasoning("Hmm".into()));
        assert_eq!(
            events[events.len() - 2],
            StreamEvent::ProviderState(json!({"thought_signatures": {"text": "dGV4dA=="}}))
        );
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Done {
                usage: Usage::new(5, 9).with_reasoning(Some(7)),
                finish_reason: FinishReason::Stop
            })
        );
    }

    #[test]
    fn finish_reasons_map_to_the_system_reasons() {
        for (gemini, ours) in [
            ("STOP", FinishReason::Stop),
            ("MAX_TOKENS", FinishReason::Length),
            ("SAFETY", FinishReason::ContentFilter),
            ("RECITATION", FinishReason::ContentFilter),
            ("BLOCKLIST", FinishReason::ContentFilter),
            ("PROHIBITED_CONTENT", FinishReason::ContentFilter),
            ("SPII", FinishReason::ContentFilter),
            ("IMAGE_SAFETY", FinishReason::ContentFilter),
            ("MALFORMED_FUNCTION_CALL", FinishReason::Other),
            ("UNEXPECTED_TOOL_CALL", FinishReason::Other),
            ("LANGUAGE", FinishReason::Other),
            ("OTHER", FinishReason::Other),
            ("SOMETHING_NEW", FinishReason::Other),
        ] {
            let stream = chunk(
                json!({"content": {"parts": [], "role": "model"}, "finishReason": gemini, "index": 0}),
                json!({"promptTokenCount": 1}),
            );
            let events = decode(&stream).unwrap();
            assert_eq!(
                events.last(),
                Some(&StreamEvent::Done {
                    usage: Usage::new(1, 0),
                    finish_reason: ours
                }),
                "{gemini}"
            );
        }
    }

    #[test]
    fn usage_counts_tool_results_as_prompt_and_thoughts_as_completion() {
        let usage: WireUsage = serde_json::from_value(json!({
            "promptTokenCount": 10, "toolUsePromptTokenCount": 4,
            "candidatesTokenCount": 7, "thoughtsTokenCount": 30, "totalTokenCount": 51
        }))
        .unwrap();
        let usage = Usage::from(usage);
        assert_eq!(usage, Usage::new(14, 37).with_reasoning(Some(30)));
        assert_eq!(
            usage.total_tokens, 51,
            "the total is Gemini's totalTokenCount"
        );
    }

    #[test]
    fn a_blocked_prompt_ends_with_content_filter_and_no_text() {
        let stream = format!(
            "data: {}\r\n\r\n",
            json!({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
                   "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8}})
        );
        assert_eq!(
            decode(&stream).unwrap(),
            vec![
                StreamEvent::Usage(Usage::new(8, 0)),
                StreamEvent::Done {
                    usage: Usage::new(8, 0),
                    finish_reason: FinishReason::ContentFilter
                }
            ]
        );
    }

    #[test]
    fn a_stream_without_a_finish_reason_is_an_error() {
        let stream = chunk(
            json!({"content": {"parts": [{"text": "cut"}], "role": "model"}, "index": 0}),
            json!({"promptTokenCount": 1, "candidatesTokenCount": 1}),
        );
        let err = decode(&stream).unwrap_err();
        assert_eq!(err.code, ErrorCode::UpstreamError);
        assert!(err.retryable);
        assert!(err.message.contains("finishReason"), "{}", err.message);
        assert!(decode("").is_err(), "an empty body is no answer");
    }

    #[test]
    fn an_error_code_given_as_a_string_keeps_the_message() {
        // A gateway's `"code": "400"` used to fail the whole error object, and the body
        // was quoted cut off instead of its message.
        for code in ["\"400\"", "400", "\"bad\"", "null", "1e9"] {
            let body = format!(
                "{{\"error\": {{\"code\": {code}, \"message\": \"API key not valid\", \"status\": \"INVALID_ARGUMENT\"}}}}"
            );
            assert_eq!(
                error_message(body.as_bytes()).as_deref(),
                Some("INVALID_ARGUMENT: API key not valid"),
                "code {code}"
            );
        }
        let e = stream_error(
            "g",
            &json!({"code": "503", "message": "busy", "status": "UNAVAILABLE"}),
        );
        assert!(e.retryable);
        assert_eq!(e.message, "g: error in stream: UNAVAILABLE: busy");
        let e = stream_error("g", &json!({"code": "500", "message": "oops"}));
        assert!(e.retryable, "a string 500 is a server error too");
    }

    #[test]
    fn an_error_inside_the_stream_is_typed_by_its_status() {
        let stream = format!(
            "data: {}\r\n\r\n",
            json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
                   "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}]}})
        );
        let err = decode(&stream).unwrap_err();
        assert_eq!(err.code, ErrorCode::RateLimited);
        assert!(err.retryable);
        assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
        assert!(
            err.message
                .contains("RESOURCE_EXHAUSTED: Resource has been exhausted"),
            "{}",
            err.message
        );
        let err = stream_error(
            "g",
            &json!({"code": 500, "message": "boom", "status": "INTERNAL"}),
        );
        assert_eq!((err.code, err.retryable), (ErrorCode::UpstreamError, true));
    }

    #[test]
    fn malformed_json_is_a_non_retryable_error() {
        let err = decode("data: {\"candidates\": [\r\n\r\n").unwrap_err();
        assert_eq!(err.code, ErrorCode::UpstreamError);
        assert!(!err.retryable);
    }

    #[test]
    fn error_bodies_yield_status_message_and_refinements() {
        let body = |status: &str, message: &str, details: Value| {
            json!({"error": {"code": 400, "message": message, "status": status, "details": details}})
                .to_string()
                .into_bytes()
        };
        let bad_key = body(
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
        );
        assert_eq!(
            error_message(&bad_key).as_deref(),
            Some("INVALID_ARGUMENT: API key not valid. Please pass a valid API key.")
        );
        let mut e = ProviderError::new(ErrorCode::InvalidRequest, "m");
        refine(&mut e, &bad_key);
        assert_eq!((e.code, e.retryable), (ErrorCode::Unauthenticated, false));

        let quota = body(
            "RESOURCE_EXHAUSTED",
            "quota",
            json!([{"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                   {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34s"}]),
        );
        let mut e = ProviderError::new(ErrorCode::RateLimited, "m");
        refine(&mut e, &quota);
        assert_eq!(e.retry_after, Some(Duration::from_secs(34)));
        let mut e = ProviderError::new(ErrorCode::RateLimited, "m");
        e.retry_after = Some(Duration::from_secs(7));
        refine(&mut e, &quota);
        assert_eq!(
            e.retry_after,
            Some(Duration::from_secs(7)),
            "a retry-after header wins"
        );

        let mut e = ProviderError::new(ErrorCode::UpstreamError, "m");
        e.retryable = true;
        refine(&mut e, &body("DEADLINE_EXCEEDED", "slow", json!([])));
        assert_eq!((e.code, e.retryable), (ErrorCode::Timeout, true));

        let array = format!(
            "[{}]",
            String::from_utf8(body("NOT_FOUND", "no model", json!([]))).unwrap()
        );
        assert_eq!(
            error_message(array.as_bytes()).as_deref(),
            Some("NOT_FOUND: no model")
        );
        assert_eq!(error_message(b"<html>"), None);
    }

    #[test]
    fn an_absurd_retry_delay_in_a_stream_error_is_no_hint() {
        // An upstream's RetryInfo of 1e30 seconds used to panic the generation task in
        // Duration::from_secs_f64 (found reviewing the retry hints; the corpus of the
        // `provider_streams` fuzz target replays it).
        let err = decode(
            "data: {\"error\": {\"code\": 503, \"status\": \"UNAVAILABLE\", \"message\": \"busy\", \
             \"details\": [{\"@type\": \"type.googleapis.com/google.rpc.RetryInfo\", \"retryDelay\": \"1e30s\"}]}}\r\n\r\n",
        )
        .unwrap_err();
        assert_eq!((err.code, err.retry_after), (ErrorCode::Unavailable, None));
    }

    #[test]
    fn model_names_become_resources_and_nothing_can_leave_the_path() {
        assert_eq!(
            model_resource("gemini-2.5-flash").unwrap(),
            "models/gemini-2.5-flash"
        );
        assert_eq!(
            model_resource("models/gemini-2.0-flash-001").unwrap(),
            "models/gemini-2.0-flash-001"
        );
        assert_eq!(
            model_resource("tunedModels/my_model").unwrap(),
            "tunedModels/my_model"
        );
        for bad in [
            "", "..", "a/b/c", "m?key=x", "m#x", "m%2F", "../v1/x", "models/", "m:x", "m x",
        ] {
            let e = model_resource(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad:?}");
        }
    }

    fn provider(extra: &str) -> GeminiProvider {
        let table = format!("type = \"gemini\"\nmax_tokens = 100\n{extra}");
        GeminiProvider::new(ProviderSpec::for_test(
            "g",
            &table,
            "gemini-2.5-flash",
            None,
        ))
        .unwrap()
    }

    #[test]
    fn generation_config_merges_key_by_key_and_other_params_pass_through() {
        let p = provider("");
        let mut r = GenerateRequest::prompt("hi");
        r.temperature = Some(0.5);
        r.additional_params.insert(
            "generationConfig".into(),
            json!({"topK": 40, "maxOutputTokens": 7, "thinkingConfig": {"thinkingBudget": 0}}),
        );
        r.additional_params.insert(
            "safetySettings".into(),
            json!([{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]),
        );
        assert_eq!(
            p.body(&r).unwrap(),
            json!({
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "generationConfig": {"maxOutputTokens": 7, "temperature": 0.5, "topK": 40, "thinkingConfig": {"thinkingBudget": 0}},
                "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            })
        );
        r.additional_params
            .insert("generationConfig".into(), json!("hot"));
        assert_eq!(p.body(&r).unwrap_err().code, ErrorCode::InvalidRequest);
        for key in RESERVED {
            let mut r = GenerateRequest::prompt("hi");
            r.additional_params.insert((*key).into(), json!(1));
            let e = p.body(&r).unwrap_err();
            assert!(
                e.message.contains(&format!("additional_params.{key}")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_key_is_required_and_the_url_never_carries_it() {
        let p = provider("base_url = \"http://proxy.local/gemini/\"");
        assert_eq!(
            p.api()
                .endpoint(
                    p.spec(),
                    "models/m:streamGenerateContent",
                    &[("alt", "sse")]
                )
                .unwrap()
                .as_str(),
            "http://proxy.local/gemini/v1beta/models/m:streamGenerateContent?alt=sse"
        );
        assert_eq!(
            p.api()
                .endpoint(p.spec(), "models", &[("pageToken", "a/b+c")])
                .unwrap()
                .query(),
            Some("pageToken=a%2Fb%2Bc")
        );
        let e = p.authorized(p.transport().get("http://x")).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        assert!(e.message.contains("GEMINI_API_KEY"), "{}", e.message);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..16)) {
            let bytes = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                pieces.push(&bytes[start..cut.max(start)]);
                start = cut.max(start);
            }
            prop_assert_eq!(decode_pieces(pieces).unwrap(), expected());
        }
    }

    fn weather() -> provd_client::Tool {
        provd_client::Tool::new(
            "get_weather",
            "The weather in a city",
            json!({"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": false}),
        )
    }

    #[test]
    fn tools_are_function_declarations_with_their_json_schema_and_choices_modes() {
        let p = provider("");
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
            json!([{"functionDeclarations": [
                {"name": "get_weather", "description": "The weather in a city",
                 "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"], "additionalProperties": false}},
                {"name": "now"},
            ]}])
        );
        assert!(body.get("toolConfig").is_none());
        for (choice, config) in [
            (ToolChoice::Auto, json!({"mode": "AUTO"})),
            (ToolChoice::None, json!({"mode": "NONE"})),
            (ToolChoice::Required, json!({"mode": "ANY"})),
            (
                ToolChoice::Tool("now".into()),
                json!({"mode": "ANY", "allowedFunctionNames": ["now"]}),
            ),
        ] {
            r.tool_choice = Some(choice);
            assert_eq!(
                p.body(&r).unwrap()["toolConfig"],
                json!({"functionCallingConfig": config})
            );
        }
        r.additional_params
            .insert("tools".into(), json!([{"googleSearch": {}}]));
        let e = p.body(&r).unwrap_err();
        assert!(
            e.message.contains("additional_params.tools conflicts"),
            "{e}"
        );
        // Without tools, a choice of none is what the API does anyway.
        r.additional_params.clear();
        r.tools.clear();
        r.tool_choice = Some(ToolChoice::None);
        assert!(p.body(&r).unwrap().get("toolConfig").is_none());
    }

    #[test]
    fn calls_and_results_are_function_parts_named_by_the_call_with_signatures_back() {
        let p = provider("");
        let call = |id: &str, city: &str| provd_client::ToolCall {
            id: id.into(),
            name: "get_weather".into(),
            arguments: format!("{{\"city\":\"{city}\"}}"),
        };
        let mut r = GenerateRequest::prompt("and Rome?");
        r.tools = vec![weather()];
        r.messages = vec![
            provd_client::Message::text(Role::User, "Paris and Oslo?"),
            provd_client::Message {
                tool_calls: vec![call("call_1_0", "Paris"), call("call_1_1", "Oslo")],
                provider_state: Some(json!({"type": "gemini", "state": {
                    "thought_signatures": {"calls": ["c2ln", null]}
                }})),
                ..provd_client::Message::text(Role::Assistant, "")
            },
            provd_client::Message::tool_result("call_1_0", "18C"),
            provd_client::Message {
                is_error: true,
                ..provd_client::Message::tool_result("call_1_1", "no such city")
            },
        ];
        let contents = p.body(&r).unwrap()["contents"].clone();
        assert_eq!(
            contents,
            json!([
                {"role": "user", "parts": [{"text": "Paris and Oslo?"}]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2ln"},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                    {"functionResponse": {"name": "get_weather", "response": {"error": "no such city"}}},
                ]},
                {"role": "user", "parts": [{"text": "and Rome?"}]},
            ])
        );
        // State from another provider type is dropped; a text signature rides the text.
        r.messages[1].provider_state = Some(json!({"type": "anthropic", "state": {
            "thought_signatures": {"calls": ["c2ln", null]}
        }}));
        assert!(p.body(&r).unwrap()["contents"][1]["parts"][0]
            .get("thoughtSignature")
            .is_none());
        r.messages[1].content = "Checking.".into();
        r.messages[1].provider_state = Some(json!({"type": "gemini", "state": {
            "thought_signatures": {"text": "dGV4dA=="}
        }}));
        assert_eq!(
            p.body(&r).unwrap()["contents"][1]["parts"][0],
            json!({"text": "Checking.", "thoughtSignature": "dGV4dA=="})
        );
    }

    #[test]
    fn response_formats_and_reasoning_set_generation_config() {
        let p = provider("");
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let mut r = GenerateRequest::prompt("a?");
        r.response_format = Some(ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: schema.clone(),
            strict: false,
        });
        r.reasoning = Some(provd_client::Reasoning {
            effort: Some(provd_client::Effort::Low),
            budget_tokens: None,
            show: true,
        });
        assert_eq!(
            p.body(&r).unwrap()["generationConfig"],
            json!({
                "maxOutputTokens": 100,
                "responseMimeType": "application/json",
                "responseJsonSchema": schema,
                "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true},
            })
        );
        r.response_format = Some(ResponseFormat::JsonObject);
        r.reasoning = Some(provd_client::Reasoning {
            budget_tokens: Some(300),
            ..provd_client::Reasoning::default()
        });
        assert_eq!(
            p.body(&r).unwrap()["generationConfig"],
            json!({
                "maxOutputTokens": 100,
                "responseMimeType": "application/json",
                "thinkingConfig": {"thinkingBudget": 300, "includeThoughts": false},
            })
        );
        r.additional_params.insert(
            "generationConfig".into(),
            json!({"thinkingConfig": {"thinkingBudget": 0}}),
        );
        let e = p.body(&r).unwrap_err();
        assert!(
            e.message
                .contains("additional_params.generationConfig.thinkingConfig conflicts"),
            "{e}"
        );
    }

    #[test]
    fn base64_images_are_inline_data_and_urls_are_refused_naming_gemini() {
        let p = provider("");
        let mut r = GenerateRequest {
            messages: vec![provd_client::Message {
                images: vec![Image::Base64 {
                    media_type: "image/jpeg".into(),
                    data: "/9j/4AAQ".into(),
                }],
                ..provd_client::Message::text(Role::User, "what is this?")
            }],
            ..GenerateRequest::default()
        };
        assert_eq!(
            p.body(&r).unwrap()["contents"][0]["parts"],
            json!([{"text": "what is this?"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}}])
        );
        r.messages[0].images = vec![Image::Url {
            url: "https://example.com/a.png".into(),
        }];
        let e = p.body(&r).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message.contains("image URLs are not supported by gemini"),
            "{e}"
        );
    }

    #[test]
    fn a_whole_answer_gives_the_events_of_its_stream() {
        let p = provider("");
        let body = json!({"candidates": [{"content": {"parts": [
            {"text": "Plan", "thought": true},
            {"functionCall": {"name": "now", "args": {}}, "thoughtSignature": "c2ln"}
        ], "role": "model"}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 3, "thoughtsTokenCount": 6}});
        let events = p
            .api()
            .whole(
                p.spec(),
                p.transport(),
                body.to_string().into_bytes(),
                false,
            )
            .unwrap();
        assert_eq!(
            events,
            vec![
                StreamEvent::Reasoning("Plan".into()),
                StreamEvent::ToolCall(ToolCallDelta {
                    index: 0,
                    id: None,
                    name: Some("now".into()),
                    arguments: "{}".into(),
                }),
                StreamEvent::Usage(Usage::new(4, 9).with_reasoning(Some(6))),
                StreamEvent::ProviderState(json!({"thought_signatures": {"calls": ["c2ln"]}})),
                StreamEvent::Done {
                    usage: Usage::new(4, 9).with_reasoning(Some(6)),
                    finish_reason: FinishReason::ToolCalls
                },
            ]
        );
    }
}
