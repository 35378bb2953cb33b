//! Ollama's API (<https://docs.ollama.com/api>) as a pure codec: `POST /api/chat` and
//! `POST /api/generate` bodies read into a [`GenerateRequest`], their NDJSON streams and
//! whole answers written, `GET /api/tags` built from provd's models, and Ollama's error
//! shape. Nothing here does I/O or knows the router; the HTTP core calls these functions.
//! The Ollama provider (`provider/ollama.rs`) reads the same wire format from the other
//! side, and the mock upstream (`tests/src/apis/ollama.rs`) writes it.
//!
//! # Requests
//!
//! Both routes: `model` is required and left as the caller wrote it in
//! [`GenerateRequest::model`] (`provider/model`, an alias or a model of the default
//! provider: the core resolves it); `stream` defaults to true; `options` map as follows:
//!
//! - `temperature`, `top_p`, `stop` (an array of strings) go to the request's own
//!   fields, `num_predict` to `max_tokens` (0 or negative, Ollama's "no limit" and "fill
//!   the context", leave the provider's configured `max_tokens`);
//! - the other options Ollama knows ([`OPTION_KEYS`], `seed`, `top_k`, `num_ctx`, …) go
//!   into `additional_params` under their own names: the Ollama provider puts them back
//!   into `options`, an OpenAI-format provider honours `seed`, `presence_penalty` and
//!   `frequency_penalty`, and any other provider answers the ones it does not take with
//!   its own error;
//! - options Ollama itself no longer reads ([`IGNORED_OPTIONS`]: `tfs_z`, `f16_kv`,
//!   `logits_all`, `embedding_only`, still in the Python client's `Options`) are dropped,
//!   as Ollama drops them; any other key is refused, naming it.
//!
//! `keep_alive`, `truncate` and `shift` steer Ollama's own model residency and context
//! handling: they are checked and ignored (an upstream provider manages its own). Unknown
//! top-level fields are ignored, as Ollama's decoder ignores them.
//!
//! Tools, structured output, reasoning and images (any provider behind):
//!
//! - `tools` (`[{type: function, function: {name, description, parameters}}]`, on
//!   `/api/chat`) are [`provd_client::Tool`]s. An assistant message's `tool_calls`
//!   (`{function: {name, arguments}}`, arguments an object) are its calls; Ollama gives
//!   calls no ids, so each is named `call_I_J` by its place unless it has an `id`. A
//!   `tool` message answers the call its `tool_call_id` names, else the first call not
//!   yet answered of its `tool_name` in the last assistant message.
//! - `format` `"json"` is a JSON object answer, a schema object a strict JSON-schema one.
//! - `think` `true` asks for reasoning and shows it; `high`, `medium`, `low` with that
//!   effort; `false` asks nothing. A message's `thinking` (earlier reasoning) is dropped:
//!   no provider takes reasoning text back, and provider state has no place in Ollama's
//!   messages, so it is not carried through this route.
//! - `images` (base64, on user messages and on `/api/generate`) are images whose type is
//!   read from their first bytes (PNG, JPEG, GIF, WebP; anything else is refused). On
//!   `/api/generate` the prompt becomes the one user turn that carries them.
//!
//! Refused with a 400 that names the field, because provd cannot honour them:
//! `logprobs: true`; on `/api/generate` also `raw: true`, a non-empty `template`,
//! `suffix` or `context` (provd's answers carry no token context; keep a conversation
//! with `/api/chat`).
//!
//! A chat without messages, or a generate with an empty prompt, is Ollama's way to load
//! a model (and, with `keep_alive: 0`, to unload it): it parses to [`OllamaCall::Preload`],
//! answered with [`preload_body`] without generating.
//!
//! # Answers
//!
//! Streamed (`application/x-ndjson`, [`NDJSON`]): one object a line per piece of text
//! (`message: {role: assistant, content}` on `/api/chat`, `response` on `/api/generate`,
//! `done: false`) or of reasoning (`message.thinking`, or `thinking`), one line with the
//! turn's calls whole (`message.tool_calls`, `{id, function: {index, name, arguments}}`,
//! as Ollama sends a call whole), then a final object with `done: true`, `done_reason`
//! and the counts. Not streamed (`application/json`): that final object alone, carrying
//! the whole text, reasoning and calls.
//! [`Encoder`] writes both. An error before the first line is a status with
//! `{"error": "..."}` ([`error_body`]); after it, the status (200) can no longer change
//! and the error is the stream's last line ([`error_line`]), as Ollama does.
//!
//! `model` in every object is the name the caller asked for (Ollama echoes the request's
//! model), so it matches the name the caller found in `/api/tags`. `done_reason` is
//! [`done_reason`]'s. No `context` is sent in `/api/generate`'s final object: provd has
//! no token ids to give, and an absent `context` is what Ollama's clients already handle
//! (Ollama omits it when empty).
//!
//! The counts are the provider's (`prompt_eval_count`, `eval_count`). Of the durations
//! (nanoseconds), provd measures what it sees from the request's start:
//! `total_duration` (start to the final object), `prompt_eval_duration` (start to the
//! first piece of text, which includes the upstream's queueing, network and any model
//! loading: provd cannot tell them apart) and `eval_duration` (first piece of text to
//! the final object; 0 when no text came). `load_duration` is always 0: provd does not
//! see an upstream load a model.

use std::time::{Duration, SystemTime};

use provd_client::{
    ErrorCode, FinishReason, GenerateRequest, Image, Message, ModelInfo, Reasoning, ResponseFormat,
    Role, Tool, ToolCall, Usage, WireError,
};
use reqwest::StatusCode;
use serde_json::{json, Map, Value};

use super::generate::{kind, line, present, string};
use crate::provider::tools;

pub use crate::provider::ollama::OPTION_KEYS;

/// The content type of a streamed answer.
pub const NDJSON: &str = "application/x-ndjson";

/// Options the Ollama Python client still lists but Ollama no longer reads (it logs
/// "invalid option provided" and goes on): dropped here the same way.
pub const IGNORED_OPTIONS: &[&str] = &["tfs_z", "f16_kv", "logits_all", "embedding_only"];

/// Which of Ollama's generation routes an answer is for: where the text goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /api/chat`: text in `message.content`.
    Chat,
    /// `POST /api/generate`: text in `response`.
    Generate,
}

/// What an Ollama request asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum OllamaCall {
    /// Generate. `model` holds the caller's model name unresolved and `provider` is
    /// `None`; `stream` is the caller's (Ollama's default: true).
    Generate(Box<GenerateRequest>),
    /// Load the model (`unload: false`) or unload it (`unload: true`, `keep_alive: 0`):
    /// a chat without messages or a generate without a prompt. provd has nothing to load;
    /// the core checks the model may be used (its provider exists and the caller may use
    /// it) and answers [`preload_body`] without generating.
    Preload {
        /// The model named, unresolved.
        model: String,
        /// Whether `keep_alive` was 0.
        unload: bool,
    },
}

/// Reads the body of a request to `route`: [`parse_chat`] or [`parse_generate`].
pub fn parse(route: Route, body: &[u8]) -> Result<OllamaCall, WireError> {
    match route {
        Route::Chat => parse_chat(body),
        Route::Generate => parse_generate(body),
    }
}

/// Reads a `POST /api/chat` body. Every refusal is an `invalid_request` (a 400 through
/// [`error_body`]) naming the field.
pub fn parse_chat(body: &[u8]) -> Result<OllamaCall, WireError> {
    let object = object(body)?;
    let model = model(&object)?;
    common(&object)?;
    let unload = keep_alive_is_zero(&object)?;
    let mut messages: Vec<Message> = Vec::new();
    match present(&object, "messages") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let mut turn = message(i, item)?;
                if turn.role == Role::Tool && turn.tool_call_id.is_none() {
                    turn.tool_call_id = Some(answered_call(i, item, &messages)?);
                }
                messages.push(turn);
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "messages must be an array, got {}",
                kind(other)
            )))
        }
    }
    // Built before the preload answer too, so that bad options are refused either way.
    let mut request = base_request(&object, model.clone())?;
    request.tools = tools(&object)?;
    if messages.is_empty() {
        return Ok(OllamaCall::Preload { model, unload });
    }
    request.messages = messages;
    Ok(OllamaCall::Generate(Box::new(request)))
}

/// Reads a `POST /api/generate` body, as [`parse_chat`] does.
pub fn parse_generate(body: &[u8]) -> Result<OllamaCall, WireError> {
    let object = object(body)?;
    let model = model(&object)?;
    common(&object)?;
    let unload = keep_alive_is_zero(&object)?;
    if present(&object, "raw").is_some() && boolean(&object, "raw")? {
        return Err(cannot(
            "raw",
            "provd's providers always apply their own prompt format; leave raw out",
        ));
    }
    for (field, why) in [
        (
            "template",
            "a provider's prompt template cannot be replaced through provd",
        ),
        (
            "suffix",
            "provd does not carry fill-in-the-middle (insert) requests",
        ),
    ] {
        if string(&object, field)?.is_some_and(|s| !s.is_empty()) {
            return Err(cannot(field, why));
        }
    }
    let images = images(&object, "images")?;
    non_empty_array(
        &object,
        "context",
        "provd's answers carry no token context to send back; keep a conversation with /api/chat",
    )?;
    let prompt = string(&object, "prompt")?.unwrap_or_default();
    let mut request = base_request(&object, model.clone())?;
    if prompt.is_empty() {
        return Ok(OllamaCall::Preload { model, unload });
    }
    if images.is_empty() {
        request.prompt = Some(prompt);
    } else {
        // provd's images travel on a turn: the prompt becomes the one user turn.
        request.messages = vec![Message {
            images,
            ..Message::text(Role::User, prompt)
        }];
    }
    request.system = string(&object, "system")?.filter(|s| !s.is_empty());
    Ok(OllamaCall::Generate(Box::new(request)))
}

/// The answer to a [`OllamaCall::Preload`], as Ollama gives it: `done: true` and
/// `done_reason` `load` (or `unload`), no text, no counts.
pub fn preload_body(route: Route, model: &str, unload: bool, at: SystemTime) -> Value {
    let mut object = Map::new();
    object.insert("model".into(), json!(model));
    object.insert("created_at".into(), json!(rfc3339(at)));
    match route {
        Route::Chat => object.insert(
            "message".into(),
            json!({"role": "assistant", "content": ""}),
        ),
        Route::Generate => object.insert("response".into(), json!("")),
    };
    object.insert("done".into(), json!(true));
    object.insert(
        "done_reason".into(),
        json!(if unload { "unload" } else { "load" }),
    );
    Value::Object(object)
}

/// Ollama's word for why a generation stopped: `stop` and `length` as Ollama says them;
/// a tool call is `stop` (Ollama says `stop` after one); a content filter, which Ollama
/// has not, is `content_filter`; anything else `stop`, the reason Ollama's clients expect
/// of an answer that ended normally.
pub fn done_reason(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Stop | FinishReason::ToolCalls | FinishReason::Other => "stop",
    }
}

/// Writes one answer of `/api/chat` or `/api/generate`, streamed or whole, and measures
/// the durations of its final object (see the module docs). Times are passed in, so that
/// the output is a function of its inputs.
#[derive(Debug)]
pub struct Encoder {
    route: Route,
    model: String,
    stream: bool,
    started: SystemTime,
    first_text: Option<SystemTime>,
    /// The text so far, for a whole answer only: a stream keeps none.
    whole: String,
    /// The reasoning so far, for a whole answer only.
    thinking: String,
    /// The calls, for a whole answer only.
    calls: Vec<ToolCall>,
}

impl Encoder {
    /// An encoder for an answer to `model` (the caller's name for it) that started at
    /// `started`; `stream` as the request asked.
    pub fn new(route: Route, model: impl Into<String>, stream: bool, started: SystemTime) -> Self {
        Encoder {
            route,
            model: model.into(),
            stream,
            started,
            first_text: None,
            whole: String::new(),
            thinking: String::new(),
            calls: Vec::new(),
        }
    }

    /// The content type of the answer: [`NDJSON`] streamed, `application/json` whole.
    pub fn content_type(&self) -> &'static str {
        if self.stream {
            NDJSON
        } else {
            "application/json"
        }
    }

    /// A piece of text that arrived at `at`: its line when streaming; kept for the
    /// final object otherwise (`None`). Empty text is no line.
    pub fn text(&mut self, text: &str, at: SystemTime) -> Option<Vec<u8>> {
        if text.is_empty() {
            return None;
        }
        self.first_text.get_or_insert(at);
        if !self.stream {
            self.whole.push_str(text);
            return None;
        }
        let mut object = self.head(at);
        self.put_text(&mut object, text);
        object.insert("done".into(), json!(false));
        Some(line(&Value::Object(object)))
    }

    /// A piece of reasoning that arrived at `at`: its line (`thinking` beside empty
    /// text) when streaming; kept for the final object otherwise.
    pub fn reasoning(&mut self, thinking: &str, at: SystemTime) -> Option<Vec<u8>> {
        if thinking.is_empty() {
            return None;
        }
        self.first_text.get_or_insert(at);
        if !self.stream {
            self.thinking.push_str(thinking);
            return None;
        }
        let mut object = self.head(at);
        self.put_text(&mut object, "");
        self.put_thinking(&mut object, thinking);
        object.insert("done".into(), json!(false));
        Some(line(&Value::Object(object)))
    }

    /// The turn's calls, whole (Ollama sends each call whole, in one object): their line
    /// when streaming; kept for the final object otherwise. No calls is no line.
    pub fn tool_calls(&mut self, calls: &[ToolCall], at: SystemTime) -> Option<Vec<u8>> {
        if calls.is_empty() {
            return None;
        }
        if !self.stream {
            self.calls.extend_from_slice(calls);
            return None;
        }
        let mut object = self.head(at);
        self.put_text(&mut object, "");
        put_calls(&mut object, calls);
        object.insert("done".into(), json!(false));
        Some(line(&Value::Object(object)))
    }

    /// The final object, at `at`: the last line of a stream (newline-terminated, no
    /// text), or the whole answer's body (with the text, reasoning and calls).
    pub fn finish(&mut self, usage: Usage, reason: FinishReason, at: SystemTime) -> Vec<u8> {
        let mut object = self.head(at);
        let text = std::mem::take(&mut self.whole);
        self.put_text(&mut object, &text);
        let thinking = std::mem::take(&mut self.thinking);
        if !thinking.is_empty() {
            self.put_thinking(&mut object, &thinking);
        }
        put_calls(&mut object, &std::mem::take(&mut self.calls));
        object.insert("done".into(), json!(true));
        object.insert("done_reason".into(), json!(done_reason(reason)));
        let since = |from: SystemTime| nanos(at.duration_since(from).unwrap_or_default());
        let first = self.first_text.unwrap_or(at);
        object.insert("total_duration".into(), json!(since(self.started)));
        object.insert("load_duration".into(), json!(0));
        object.insert("prompt_eval_count".into(), json!(usage.prompt_tokens));
        object.insert(
            "prompt_eval_duration".into(),
            json!(nanos(
                first.duration_since(self.started).unwrap_or_default()
            )),
        );
        object.insert("eval_count".into(), json!(usage.completion_tokens));
        object.insert("eval_duration".into(), json!(since(first)));
        let value = Value::Object(object);
        if self.stream {
            line(&value)
        } else {
            serde_json::to_vec(&value).unwrap_or_default()
        }
    }

    fn head(&self, at: SystemTime) -> Map<String, Value> {
        let mut object = Map::new();
        object.insert("model".into(), json!(self.model));
        object.insert("created_at".into(), json!(rfc3339(at)));
        object
    }

    /// Reasoning goes beside the text: `message.thinking` or `thinking`.
    fn put_thinking(&self, object: &mut Map<String, Value>, thinking: &str) {
        match self.route {
            Route::Chat => {
                if let Some(message) = object.get_mut("message") {
                    message["thinking"] = json!(thinking);
                }
            }
            Route::Generate => {
                object.insert("thinking".into(), json!(thinking));
            }
        }
    }

    fn put_text(&self, object: &mut Map<String, Value>, text: &str) {
        match self.route {
            Route::Chat => object.insert(
                "message".into(),
                json!({"role": "assistant", "content": text}),
            ),
            Route::Generate => object.insert("response".into(), json!(text)),
        };
    }
}

/// `message.tool_calls` as Ollama writes them: `{function: {index, name, arguments}}`,
/// the arguments an object; provd adds the call's `id`, which a client may send back as
/// a tool message's `tool_call_id` (Ollama's clients send `tool_name`, which works too).
fn put_calls(object: &mut Map<String, Value>, calls: &[ToolCall]) {
    if calls.is_empty() {
        return;
    }
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            json!({
                "id": call.id,
                "function": {
                    "index": index,
                    "name": call.name,
                    // The server checked the arguments parse.
                    "arguments": tools::arguments_object(call),
                },
            })
        })
        .collect();
    if let Some(message) = object.get_mut("message") {
        message["tool_calls"] = Value::Array(calls);
    }
}

/// An error answer before anything was sent: the status of `code` (DECISIONS' table)
/// and Ollama's only error body, `{"error": "..."}`.
pub fn error_body(code: ErrorCode, message: &str) -> (StatusCode, Value) {
    (super::generate::status_for(code), json!({"error": message}))
}

/// The line that ends a stream which failed after it began (the status stays 200).
pub fn error_line(message: &str) -> Vec<u8> {
    line(&json!({"error": message}))
}

/// The body of `GET /api/tags` listing `models`, in the order given.
///
/// Each model is named `provider/model` (the name the chat routes take back), or just
/// its id when `provider` is empty (an alias). The other fields are what provd can say
/// truthfully, in the types Ollama's clients parse: `modified_at` is the model's creation
/// time when its provider tells it, else the Unix epoch; `size` is 0 (nothing is stored
/// here); `digest` is the SHA-256 of the name in hex (stable, and shaped like Ollama's, whose
/// CLI shows its first 12 digits); `details` has Ollama's keys with empty values, `families`
/// null as Ollama sends for a model without any, and `context_length` when the provider
/// tells it.
pub fn tags_body(models: &[ModelInfo]) -> Value {
    let models: Vec<Value> = models
        .iter()
        .map(|m| {
            let name = if m.provider.is_empty() {
                m.id.clone()
            } else {
                format!("{}/{}", m.provider, m.id)
            };
            let modified =
                SystemTime::UNIX_EPOCH + Duration::from_secs(m.created_at.unwrap_or_default());
            let digest = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
            let mut details = json!({
                "parent_model": "",
                "format": "",
                "family": "",
                "families": null,
                "parameter_size": "",
                "quantization_level": "",
            });
            if let Some(window) = m.context_window {
                details["context_length"] = json!(window);
            }
            json!({
                "name": name,
                "model": name,
                "modified_at": rfc3339(modified),
                "size": 0,
                "digest": crate::credentials::hex(digest.as_ref()),
                "details": details,
            })
        })
        .collect();
    json!({ "models": models })
}

/// A time as Ollama writes one: RFC 3339 in UTC with up to nanoseconds, trailing zeros
/// dropped (Go's `time.RFC3339Nano`).
fn rfc3339(at: SystemTime) -> String {
    jiff::Timestamp::try_from(at)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

// ---- reading requests ----

fn invalid(message: impl Into<String>) -> WireError {
    WireError::new(ErrorCode::InvalidRequest, message)
}

/// A refusal of something valid that provd cannot honour.
fn cannot(field: &str, why: &str) -> WireError {
    invalid(format!("{field} cannot be honoured: {why}"))
}

fn object(body: &[u8]) -> Result<Map<String, Value>, WireError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        // Ollama's words for it.
        return Err(invalid("missing request body"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(invalid(format!(
            "the body must be a JSON object, got {}",
            kind(&other)
        ))),
        Err(e) => Err(invalid(format!("the body is not valid JSON: {e}"))),
    }
}

fn model(object: &Map<String, Value>) -> Result<String, WireError> {
    match string(object, "model")? {
        Some(model) if !model.is_empty() => Ok(model),
        // Ollama's words for it.
        _ => Err(invalid("model is required")),
    }
}

/// The fields both routes read the same way and provd can only refuse or ignore.
fn common(object: &Map<String, Value>) -> Result<(), WireError> {
    if present(object, "logprobs").is_some() && boolean(object, "logprobs")? {
        return Err(cannot(
            "logprobs",
            "provd does not carry log probabilities; leave logprobs out",
        ));
    }
    if let Some(v) = present(object, "top_logprobs") {
        // Checked as Ollama checks it, though without logprobs it asks for nothing.
        if v.as_u64().is_none_or(|n| n > 20) {
            return Err(invalid("top_logprobs must be between 0 and 20"));
        }
    }
    for field in ["truncate", "shift", "stream"] {
        if present(object, field).is_some() {
            boolean(object, field)?;
        }
    }
    Ok(())
}

/// Whether `keep_alive` is zero (an unload request when nothing is to be generated). A
/// number is seconds, a string a Go duration (`"5m"`, `"-1s"`), as Ollama reads them;
/// anything else is refused as Ollama refuses it.
fn keep_alive_is_zero(object: &Map<String, Value>) -> Result<bool, WireError> {
    let bad = |v: &Value| {
        invalid(format!(
            "keep_alive must be a duration such as \"5m\" or a number of seconds, got {v}"
        ))
    };
    match present(object, "keep_alive") {
        None => Ok(false),
        Some(Value::Number(n)) => n.as_f64().map(|s| s == 0.0).ok_or_else(|| bad(&json!(n))),
        Some(Value::String(s)) => {
            let text = s.trim();
            if text == "0" {
                return Ok(true);
            }
            let magnitude = text.strip_prefix('-').unwrap_or(text);
            crate::provider::http::time::go_duration(magnitude)
                .map(|d| d.is_zero())
                .ok_or_else(|| bad(&json!(s)))
        }
        Some(other) => Err(bad(other)),
    }
}

/// A request with the fields both routes share: the model, `stream` and `options`.
fn base_request(object: &Map<String, Value>, model: String) -> Result<GenerateRequest, WireError> {
    let mut request = GenerateRequest {
        model: Some(model),
        stream: present(object, "stream").is_none() || boolean(object, "stream")?,
        response_format: format(object)?,
        reasoning: think(object)?,
        ..GenerateRequest::default()
    };
    let options = match present(object, "options") {
        None => return Ok(request),
        Some(Value::Object(options)) => options,
        Some(other) => {
            return Err(invalid(format!(
                "options must be an object, got {}",
                kind(other)
            )))
        }
    };
    for (key, value) in options {
        if value.is_null() || IGNORED_OPTIONS.contains(&key.as_str()) {
            continue;
        }
        match key.as_str() {
            "temperature" => request.temperature = Some(option_f32(key, value)?),
            "top_p" => request.top_p = Some(option_f32(key, value)?),
            "num_predict" => {
                // Go reads a JSON number into an int by truncating it; so does this.
                let n = value
                    .as_f64()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| {
                        invalid(format!(
                            "options.num_predict must be an integer, got {value}"
                        ))
                    })?
                    .trunc();
                request.max_tokens = if n >= 1.0 {
                    Some(u32::try_from(n as u64).map_err(|_| {
                        invalid(format!(
                            "options.num_predict must be at most {}, got {value}",
                            u32::MAX
                        ))
                    })?)
                } else {
                    None
                };
            }
            "stop" => {
                let items = value.as_array().ok_or_else(|| {
                    invalid(format!(
                        "options.stop must be an array of strings, got {}",
                        kind(value)
                    ))
                })?;
                request.stop = items
                    .iter()
                    .map(|s| {
                        s.as_str().map(str::to_owned).ok_or_else(|| {
                            invalid(format!(
                                "options.stop must be an array of strings, got an item that is {}",
                                kind(s)
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?;
            }
            known if OPTION_KEYS.contains(&known) => {
                request.additional_params.insert(key.clone(), value.clone());
            }
            _ => {
                return Err(invalid(format!(
                    "options.{} is not an Ollama option; the options are {}",
                    crate::untrusted::untrusted(key),
                    OPTION_KEYS.join(", ")
                )))
            }
        }
    }
    Ok(request)
}

fn option_f32(key: &str, value: &Value) -> Result<f32, WireError> {
    value
        .as_f64()
        .map(|n| n as f32)
        .filter(|n| n.is_finite())
        .ok_or_else(|| invalid(format!("options.{key} must be a number, got {value}")))
}

/// One of `messages`, at index `i`. A tool message's call is found by
/// [`answered_call`] when it gives no `tool_call_id`.
fn message(i: usize, item: &Value) -> Result<Message, WireError> {
    let Value::Object(m) = item else {
        return Err(invalid(format!(
            "messages[{i}] must be an object with role and content, got {}",
            kind(item)
        )));
    };
    let role = string(m, "role")
        .map_err(|_| invalid(format!("messages[{i}].role must be a string")))?
        .unwrap_or_default();
    // Ollama reads roles in any case.
    let role = match role.to_lowercase().as_str() {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        _ => {
            return Err(invalid(format!(
                "messages[{i}].role must be \"system\", \"user\", \"assistant\" or \"tool\", got \"{}\"",
                crate::untrusted::untrusted(&role)
            )))
        }
    };
    let content = match present(m, "content") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(invalid(format!(
                "messages[{i}].content must be a string, got {}",
                kind(other)
            )))
        }
    };
    let mut turn = Message::text(role, content);
    turn.images = images(m, "images").map_err(|e| at_message(i, e))?;
    if !turn.images.is_empty() && role != Role::User {
        return Err(invalid(format!(
            "messages[{i}].images: provd carries images in user messages only"
        )));
    }
    match present(m, "tool_calls") {
        None => {}
        Some(Value::Array(calls)) if role == Role::Assistant => {
            for (j, call) in calls.iter().enumerate() {
                turn.tool_calls.push(assistant_call(i, j, call)?);
            }
        }
        Some(Value::Array(calls)) if calls.is_empty() => {}
        Some(_) => {
            return Err(invalid(format!(
                "messages[{i}].tool_calls must be an array, in an assistant message"
            )))
        }
    }
    if role == Role::Tool {
        turn.tool_call_id = string(m, "tool_call_id").map_err(|e| at_message(i, e))?;
    }
    Ok(turn)
}

/// Call `j` of assistant message `i`: `{function: {name, arguments}}`, the arguments an
/// object (or JSON text). Ollama gives calls no id; provd names the call by its place
/// (`call_I_J`), and tool messages find it by [`answered_call`].
fn assistant_call(i: usize, j: usize, call: &Value) -> Result<ToolCall, WireError> {
    let at = format!("messages[{i}].tool_calls[{j}]");
    let function = call
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| invalid(format!("{at}.function must be an object")))?;
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("{at}.function.name must be a string")))?;
    let arguments = match function.get("arguments") {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(object @ Value::Object(_)) => object.to_string(),
        Some(other) => {
            return Err(invalid(format!(
                "{at}.function.arguments must be an object, got {}",
                kind(other)
            )))
        }
    };
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map_or_else(|| format!("call_{i}_{j}"), str::to_owned);
    Ok(ToolCall {
        id,
        name: name.to_owned(),
        arguments,
    })
}

/// The call tool message `i` answers, as Ollama's clients name it: by `tool_name`, the
/// first call of that name in the last assistant turn not answered yet (or the first
/// call not answered, without a name).
fn answered_call(i: usize, item: &Value, earlier: &[Message]) -> Result<String, WireError> {
    let name = item.get("tool_name").and_then(Value::as_str);
    let Some(at) = earlier.iter().rposition(|m| m.role == Role::Assistant) else {
        return Err(invalid(format!(
            "messages[{i}] is a tool result with no assistant tool call before it"
        )));
    };
    let answered: Vec<&str> = earlier[at + 1..]
        .iter()
        .filter_map(|m| m.tool_call_id.as_deref())
        .collect();
    earlier[at]
        .tool_calls
        .iter()
        .find(|c| !answered.contains(&c.id.as_str()) && name.is_none_or(|n| n == c.name))
        .map(|c| c.id.clone())
        .ok_or_else(|| {
            invalid(format!(
                "messages[{i}] is a tool result for {}, which the assistant message before it did not call (or whose result was given already)",
                name.map_or_else(|| "a call".to_owned(), |n| format!("\"{}\"", crate::untrusted::untrusted(n)))
            ))
        })
}

/// The array in `field`, empty when the field is absent or null; anything else is
/// refused as not being `what`.
fn array<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    what: &str,
) -> Result<&'a [Value], WireError> {
    match present(object, field) {
        None => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(invalid(format!(
            "{field} must be {what}, got {}",
            kind(other)
        ))),
    }
}

/// `images`: base64 strings, as Ollama takes them, their type read from their first bytes
/// (PNG, JPEG, GIF or WebP: what every provider takes).
fn images(object: &Map<String, Value>, field: &str) -> Result<Vec<Image>, WireError> {
    array(object, field, "an array of base64 strings")?
        .iter()
        .enumerate()
        .map(|(k, item)| {
            let data = item.as_str().ok_or_else(|| {
                invalid(format!(
                    "{field}[{k}] must be a base64 string, got {}",
                    kind(item)
                ))
            })?;
            let media_type = [
                ("iVBORw0KGgo", "image/png"),
                ("/9j/", "image/jpeg"),
                ("R0lGOD", "image/gif"),
                ("UklGR", "image/webp"),
            ]
            .into_iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|(_, media_type)| media_type)
            .ok_or_else(|| {
                invalid(format!(
                    "{field}[{k}] is not a base64 PNG, JPEG, GIF or WebP image"
                ))
            })?;
            Ok(Image::Base64 {
                media_type: media_type.to_owned(),
                data: data.to_owned(),
            })
        })
        .collect()
}

/// `tools`: `[{type: function, function: {name, description, parameters}}]`.
fn tools(object: &Map<String, Value>) -> Result<Vec<Tool>, WireError> {
    array(object, "tools", "an array")?
        .iter()
        .enumerate()
        .map(|(k, item)| {
            let function = item
                .get("function")
                .filter(|f| f.is_object())
                .ok_or_else(|| invalid(format!("tools[{k}].function must be an object")))?;
            let name = function
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("tools[{k}].function.name must be a string")))?;
            Ok(Tool {
                name: name.to_owned(),
                description: function
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                parameters: function.get("parameters").filter(|p| !p.is_null()).cloned(),
            })
        })
        .collect()
}

/// `format`: `"json"` (any JSON object) or a JSON schema; `""` asks nothing.
fn format(object: &Map<String, Value>) -> Result<Option<ResponseFormat>, WireError> {
    match present(object, "format") {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(ResponseFormat::JsonObject)),
        Some(schema @ Value::Object(_)) => Ok(Some(ResponseFormat::JsonSchema {
            name: "response".to_owned(),
            schema: schema.clone(),
            strict: true,
        })),
        Some(other) => Err(invalid(format!(
            "format must be \"json\" or a JSON schema object, got {other}"
        ))),
    }
}

/// `think`: `true` or an effort level (`high`, `medium`, `low`) asks for the reasoning
/// and shows it; `false` asks nothing.
fn think(object: &Map<String, Value>) -> Result<Option<Reasoning>, WireError> {
    let effort = match present(object, "think") {
        None | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => None,
        Some(Value::String(word)) if ["high", "medium", "low"].contains(&word.as_str()) => {
            provd_client::Effort::from_name(word)
        }
        Some(other) => {
            return Err(invalid(format!(
                "think must be true, false, \"high\", \"medium\" or \"low\", got {other}"
            )))
        }
    };
    Ok(Some(Reasoning {
        effort,
        budget_tokens: None,
        show: true,
    }))
}

fn at_message(i: usize, e: WireError) -> WireError {
    invalid(format!("messages[{i}].{}", e.message))
}

/// Refuses `field` when it is a non-empty array (`null` and `[]` ask for nothing).
fn non_empty_array(object: &Map<String, Value>, field: &str, why: &str) -> Result<(), WireError> {
    match present(object, field) {
        None => Ok(()),
        Some(Value::Array(items)) if items.is_empty() => Ok(()),
        Some(Value::Array(_)) => Err(cannot(field, why)),
        Some(other) => Err(invalid(format!(
            "{field} must be an array, got {}",
            kind(other)
        ))),
    }
}

fn boolean(object: &Map<String, Value>, key: &str) -> Result<bool, WireError> {
    match present(object, key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(invalid(format!(
            "{key} must be true or false, got {}",
            kind(other)
        ))),
    }
}

/// `POST /api/chat`.
pub async fn chat(call: super::Call) -> super::Response {
    serve(Route::Chat, call)
        .await
        .unwrap_or_else(|refused| refused)
}

/// `POST /api/generate`.
pub async fn generate(call: super::Call) -> super::Response {
    serve(Route::Generate, call)
        .await
        .unwrap_or_else(|refused| refused)
}

/// `GET /api/tags`: every model the caller may use as `provider/model`, then the
/// aliases.
pub async fn tags(call: super::Call) -> super::Response {
    let caller = match call.caller {
        Ok(caller) => caller,
        Err(e) => return refusal(&e.into()),
    };
    let listed = call
        .front
        .catalogue
        .for_caller(&call.front.daemon, &caller)
        .await;
    let models: Vec<ModelInfo> = listed
        .into_iter()
        .map(|m| {
            let model = if m.alias {
                m.id
            } else {
                m.id[m.provider.len() + 1..].to_owned()
            };
            ModelInfo {
                id: model,
                provider: if m.alias { String::new() } else { m.provider },
                display_name: None,
                context_window: None,
                created_at: m.created,
                ..ModelInfo::default()
            }
        })
        .collect();
    super::json(http::StatusCode::OK, &tags_body(&models))
}

async fn serve(route: Route, call: super::Call) -> Result<super::Response, super::Response> {
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
    let mut request = match parse(route, &bytes).map_err(|e| refusal(&e.into()))? {
        OllamaCall::Generate(request) => *request,
        OllamaCall::Preload { model, unload } => {
            // Nothing to load: the answer says whether the model may be used.
            let routed =
                super::core::route_model(&config, &model).map_err(|e| refusal(&e.into()))?;
            let provider = routed
                .provider
                .or_else(|| config.default_provider().map(str::to_owned));
            if let Some(provider) = provider {
                caller
                    .check_provider(&provider)
                    .map_err(|e| refusal(&e.into()))?;
            }
            let body = preload_body(route, &model, unload, SystemTime::now());
            return Ok(super::json(http::StatusCode::OK, &body));
        }
    };
    let requested = request.model.clone().unwrap_or_default();
    let stream = request.stream;
    super::resolve(&config, &mut request).map_err(|e| refusal(&e.into()))?;
    drop(config);
    let started = SystemTime::now();
    let mut generation =
        super::core::Generation::start(&front, &caller, request).map_err(|e| refusal(&e))?;
    let mut encoder = Encoder::new(route, requested, stream, started);
    let content_type = encoder.content_type();
    if !stream {
        let done = super::core::whole(generation)
            .await
            .map_err(|e| refusal(&e.into()))?;
        encoder.reasoning(done.reasoning.as_deref().unwrap_or(""), SystemTime::now());
        encoder.text(done.text.as_deref().unwrap_or(""), SystemTime::now());
        encoder.tool_calls(&done.tool_calls, SystemTime::now());
        let body = encoder.finish(done.usage, done.finish_reason, SystemTime::now());
        return Ok(super::streamed(content_type, super::full(body)));
    }
    let first = super::first_event(&mut generation)
        .await
        .map_err(|e| refusal(&e.into()))?;
    let body = super::event_stream(generation, first, move |event| match event {
        super::core::Event::Text(text) => (
            encoder
                .text(&text, SystemTime::now())
                .map(bytes::Bytes::from),
            false,
        ),
        super::core::Event::Reasoning(text) => (
            encoder
                .reasoning(&text, SystemTime::now())
                .map(bytes::Bytes::from),
            false,
        ),
        // Ollama sends each call whole: they are written from the end's assembled calls.
        super::core::Event::Keepalive | super::core::Event::ToolCall(_) => (None, false),
        super::core::Event::Done(done) => {
            let now = SystemTime::now();
            let mut out = encoder
                .tool_calls(&done.tool_calls, now)
                .unwrap_or_default();
            out.extend(encoder.finish(done.usage, done.finish_reason, now));
            (Some(out.into()), true)
        }
        super::core::Event::Failed(e) => (Some(error_line(&e.message).into()), true),
    });
    Ok(super::streamed(content_type, body))
}

fn refusal(e: &super::error::ApiError) -> super::Response {
    super::refusal(e, |code, message| error_body(code, message).1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::http::Decoder;
    use crate::provider::StreamEvent;
    use proptest::prelude::*;

    fn at(ms: u64) -> SystemTime {
        // 2025-10-17T23:14:07Z plus `ms`.
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_742_847) + Duration::from_millis(ms)
    }

    fn chat(body: Value) -> Result<OllamaCall, WireError> {
        parse_chat(body.to_string().as_bytes())
    }

    fn generate(body: Value) -> Result<OllamaCall, WireError> {
        parse_generate(body.to_string().as_bytes())
    }

    fn request(call: Result<OllamaCall, WireError>) -> GenerateRequest {
        match call {
            Ok(OllamaCall::Generate(r)) => *r,
            other => panic!("expected a generation, got {other:?}"),
        }
    }

    fn refused(call: Result<OllamaCall, WireError>, expected: &str) {
        let e = call.expect_err("should be refused");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert_eq!(error_body(e.code, &e.message).0, StatusCode::BAD_REQUEST);
        assert!(
            e.message.contains(expected),
            "{:?} should say {expected:?}",
            e.message
        );
    }

    fn user(text: &str) -> Value {
        json!([{"role": "user", "content": text}])
    }

    fn lines(bytes: &[u8]) -> Vec<Value> {
        assert!(bytes.ends_with(b"\n"));
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn a_chat_maps_the_model_unresolved_the_messages_and_streams_by_default() {
        let r = request(chat(json!({
            "model": "anthropic/claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello.", "thinking": "greet back"},
                {"role": "USER", "content": "Again"},
            ],
        })));
        assert_eq!(r.model.as_deref(), Some("anthropic/claude-sonnet-4-5"));
        assert_eq!(r.provider, None, "the core resolves provider/model");
        assert!(r.stream);
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(r.messages[2].content, "Hello.");
        assert_eq!(r.prompt, None);
        assert!(r.additional_params.is_empty());
    }

    #[test]
    fn stream_false_asks_for_a_whole_answer() {
        let r = request(chat(
            json!({"model": "m", "messages": user("x"), "stream": false}),
        ));
        assert!(!r.stream);
        let r = request(chat(
            json!({"model": "m", "messages": user("x"), "stream": null}),
        ));
        assert!(r.stream, "null is absent, and absent is true");
    }

    #[test]
    fn options_map_to_the_request_and_to_additional_params() {
        let r = request(chat(json!({
            "model": "m",
            "messages": user("x"),
            "options": {
                "temperature": 0.2, "top_p": 0.9, "num_predict": 128, "stop": ["\n\n", "END"],
                "seed": 42, "top_k": 40, "num_ctx": 8192, "repeat_penalty": 1.1,
                "tfs_z": 1.0, "f16_kv": true, "mirostat": null,
            },
        })));
        assert_eq!(r.temperature, Some(0.2));
        assert_eq!(r.top_p, Some(0.9));
        assert_eq!(r.max_tokens, Some(128));
        assert_eq!(r.stop, ["\n\n", "END"]);
        let passed: Vec<&str> = r.additional_params.keys().map(String::as_str).collect();
        assert_eq!(passed, ["num_ctx", "repeat_penalty", "seed", "top_k"]);
        assert_eq!(r.additional_params["seed"], json!(42));
    }

    #[test]
    fn num_predict_of_zero_or_less_leaves_the_configured_limit() {
        for n in [json!(0), json!(-1), json!(-2)] {
            let r = request(chat(
                json!({"model": "m", "messages": user("x"), "options": {"num_predict": n}}),
            ));
            assert_eq!(r.max_tokens, None, "{n}");
        }
        let r = request(chat(
            json!({"model": "m", "messages": user("x"), "options": {"num_predict": 7.9}}),
        ));
        assert_eq!(r.max_tokens, Some(7), "truncated as Go reads it");
    }

    #[test]
    fn every_option_ollama_knows_is_accepted() {
        for key in OPTION_KEYS.iter().chain(IGNORED_OPTIONS) {
            let value = match *key {
                "stop" => json!(["x"]),
                _ => json!(1),
            };
            let body = json!({"model": "m", "messages": user("x"), "options": {*key: value}});
            assert!(chat(body).is_ok(), "options.{key}");
        }
    }

    #[test]
    fn bad_options_are_refused_naming_them() {
        let cases = [
            (
                json!({"temprature": 0.5}),
                "options.temprature is not an Ollama option",
            ),
            (
                json!({"temperature": "hot"}),
                "options.temperature must be a number",
            ),
            (json!({"top_p": [1]}), "options.top_p must be a number"),
            (
                json!({"num_predict": "5"}),
                "options.num_predict must be an integer",
            ),
            (
                json!({"num_predict": 1e12}),
                "options.num_predict must be at most",
            ),
            (
                json!({"stop": "END"}),
                "options.stop must be an array of strings",
            ),
            (json!({"stop": ["a", 1]}), "an item that is a number"),
        ];
        for (options, expected) in cases {
            refused(
                chat(json!({"model": "m", "messages": user("x"), "options": options})),
                expected,
            );
        }
        refused(
            chat(json!({"model": "m", "messages": user("x"), "options": [1]})),
            "options must be an object",
        );
    }

    #[test]
    fn what_provd_cannot_honour_is_refused_naming_it() {
        let cases = [
            (
                json!({"format": "yaml"}),
                "format must be \"json\" or a JSON schema",
            ),
            (json!({"think": "max"}), "think must be true, false"),
            (json!({"logprobs": true}), "logprobs cannot be honoured"),
            (
                json!({"top_logprobs": 21}),
                "top_logprobs must be between 0 and 20",
            ),
        ];
        for (extra, expected) in cases {
            let mut body = json!({"model": "m", "messages": user("x")});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            refused(chat(body.clone()), expected);
            body.as_object_mut().unwrap().remove("messages");
            body["prompt"] = json!("x");
            refused(generate(body), expected);
        }
        refused(
            chat(
                json!({"model": "m", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}),
            ),
            "messages[0].images[0] is not a base64 PNG, JPEG, GIF or WebP image",
        );
        refused(
            chat(json!({"model": "m", "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
                {"role": "tool", "content": "1", "tool_name": "g"},
            ]})),
            "messages[2] is a tool result for \"g\", which the assistant message before it did not call",
        );
        refused(
            chat(
                json!({"model": "m", "messages": [{"role": "tool", "content": "42", "tool_name": "f"}]}),
            ),
            "messages[0] is a tool result with no assistant tool call before it",
        );
    }

    #[test]
    fn generate_refuses_raw_template_suffix_and_context() {
        let cases = [
            (json!({"raw": true}), "raw cannot be honoured"),
            (
                json!({"template": "{{ .Prompt }}"}),
                "template cannot be honoured",
            ),
            (json!({"suffix": "return x"}), "suffix cannot be honoured"),
            (json!({"context": [1, 2, 3]}), "context cannot be honoured"),
        ];
        for (extra, expected) in cases {
            let mut body = json!({"model": "m", "prompt": "x"});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            refused(generate(body), expected);
        }
    }

    #[test]
    fn empty_or_false_forms_of_unsupported_fields_ask_for_nothing() {
        let r = request(chat(json!({
            "model": "m", "messages": user("x"), "tools": [], "format": "", "think": false,
            "logprobs": false, "top_logprobs": 0, "keep_alive": "5m", "truncate": true,
            "shift": false, "images": null, "some_future_field": {"x": 1},
        })));
        assert_eq!(r.messages.len(), 1);
        let r = request(generate(json!({
            "model": "m", "prompt": "x", "raw": false, "template": "", "suffix": "",
            "images": [], "context": [], "keep_alive": -1,
        })));
        assert_eq!(r.prompt.as_deref(), Some("x"));
    }

    #[test]
    fn malformed_bodies_get_ollamas_messages_or_name_the_field() {
        refused(parse_chat(b""), "missing request body");
        refused(parse_generate(b" "), "missing request body");
        refused(parse_chat(b"{"), "not valid JSON");
        refused(parse_chat(b"[1]"), "must be a JSON object");
        refused(chat(json!({"messages": user("x")})), "model is required");
        refused(
            chat(json!({"model": "", "messages": user("x")})),
            "model is required",
        );
        refused(
            chat(json!({"model": 5, "messages": user("x")})),
            "model must be a string",
        );
        refused(
            chat(json!({"model": "m", "messages": "hi"})),
            "messages must be an array",
        );
        refused(
            chat(json!({"model": "m", "messages": ["hi"]})),
            "messages[0] must be an object",
        );
        refused(
            chat(json!({"model": "m", "messages": [{"role": "narrator", "content": "x"}]})),
            "messages[0].role must be",
        );
        refused(
            chat(json!({"model": "m", "messages": [{"role": "user", "content": ["x"]}]})),
            "messages[0].content must be a string",
        );
        refused(
            chat(json!({"model": "m", "messages": user("x"), "stream": "yes"})),
            "stream must be true or false",
        );
        refused(
            chat(json!({"model": "m", "messages": user("x"), "think": 1})),
            "think must be",
        );
        refused(
            chat(json!({"model": "m", "messages": user("x"), "keep_alive": "soon"})),
            "keep_alive must be a duration",
        );
        refused(
            chat(json!({"model": "m", "messages": user("x"), "keep_alive": [5]})),
            "keep_alive must be a duration",
        );
        refused(
            generate(json!({"model": "m", "prompt": 1})),
            "prompt must be a string",
        );
        refused(
            generate(json!({"model": "m", "prompt": "x", "raw": "yes"})),
            "raw must be true or false",
        );
    }

    #[test]
    fn generate_maps_prompt_and_system() {
        let r = request(generate(json!({
            "model": "ollama/llama3.2", "prompt": "Why is the sky blue?", "system": "Be brief.",
            "stream": false, "options": {"temperature": 0},
        })));
        assert_eq!(r.model.as_deref(), Some("ollama/llama3.2"));
        assert_eq!(r.prompt.as_deref(), Some("Why is the sky blue?"));
        assert_eq!(r.system.as_deref(), Some("Be brief."));
        assert!(r.messages.is_empty());
        assert!(!r.stream);
        assert_eq!(r.temperature, Some(0.0));
    }

    #[test]
    fn no_messages_or_no_prompt_is_a_preload_and_keep_alive_zero_an_unload() {
        let preload = |unload| OllamaCall::Preload {
            model: "m".into(),
            unload,
        };
        assert_eq!(chat(json!({"model": "m"})).unwrap(), preload(false));
        assert_eq!(
            chat(json!({"model": "m", "messages": []})).unwrap(),
            preload(false)
        );
        assert_eq!(
            generate(json!({"model": "m", "prompt": ""})).unwrap(),
            preload(false)
        );
        for zero in [json!(0), json!("0"), json!("0s"), json!("0m")] {
            assert_eq!(
                chat(json!({"model": "m", "keep_alive": zero})).unwrap(),
                preload(true)
            );
            assert_eq!(
                generate(json!({"model": "m", "keep_alive": zero})).unwrap(),
                preload(true)
            );
        }
        assert_eq!(
            generate(json!({"model": "m", "keep_alive": "10m"})).unwrap(),
            preload(false)
        );
        refused(
            chat(json!({"model": "m", "options": {"temperature": "hot"}})),
            "options.temperature must be a number",
        );
        assert_eq!(
            parse(Route::Generate, br#"{"model": "m"}"#).unwrap(),
            preload(false)
        );

        let chat_body = preload_body(Route::Chat, "m", false, at(0));
        assert_eq!(
            chat_body,
            json!({"model": "m", "created_at": "2025-10-17T23:14:07Z",
                   "message": {"role": "assistant", "content": ""},
                   "done": true, "done_reason": "load"})
        );
        let generate_body = preload_body(Route::Generate, "m", true, at(0));
        assert_eq!(generate_body["response"], "");
        assert_eq!(generate_body["done_reason"], "unload");
    }

    #[test]
    fn a_streamed_chat_is_chunk_lines_then_the_final_line_with_the_counts() {
        let mut e = Encoder::new(Route::Chat, "anthropic/claude", true, at(0));
        assert_eq!(e.content_type(), NDJSON);
        let mut out = Vec::new();
        out.extend(e.text("Hel", at(250)).unwrap());
        assert_eq!(e.text("", at(300)), None, "empty text is no line");
        out.extend(e.text("lo", at(400)).unwrap());
        out.extend(e.finish(Usage::new(12, 2), FinishReason::Stop, at(1250)));
        let lines = lines(&out);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            json!({"model": "anthropic/claude", "created_at": "2025-10-17T23:14:07.25Z",
                   "message": {"role": "assistant", "content": "Hel"}, "done": false})
        );
        assert_eq!(lines[1]["message"]["content"], "lo");
        assert_eq!(
            lines[2],
            json!({"model": "anthropic/claude", "created_at": "2025-10-17T23:14:08.25Z",
                   "message": {"role": "assistant", "content": ""},
                   "done": true, "done_reason": "stop",
                   "total_duration": 1_250_000_000u64, "load_duration": 0,
                   "prompt_eval_count": 12, "prompt_eval_duration": 250_000_000u64,
                   "eval_count": 2, "eval_duration": 1_000_000_000u64})
        );
    }

    #[test]
    fn a_streamed_generate_carries_text_in_response_and_no_context() {
        let mut e = Encoder::new(Route::Generate, "m", true, at(0));
        let mut out = e.text("Blue", at(10)).unwrap();
        out.extend(e.finish(Usage::new(5, 1), FinishReason::Length, at(20)));
        let lines = lines(&out);
        assert_eq!(lines[0]["response"], "Blue");
        assert!(lines[0].get("message").is_none());
        assert_eq!(lines[1]["response"], "");
        assert_eq!(lines[1]["done_reason"], "length");
        assert!(lines[1].get("context").is_none());
    }

    #[test]
    fn a_whole_answer_is_one_object_with_all_the_text() {
        for route in [Route::Chat, Route::Generate] {
            let mut e = Encoder::new(route, "m", false, at(0));
            assert_eq!(e.content_type(), "application/json");
            assert_eq!(e.text("Hel", at(100)), None);
            assert_eq!(e.text("lo", at(200)), None);
            let body = e.finish(Usage::new(3, 2), FinishReason::Stop, at(300));
            assert!(!body.contains(&b'\n'));
            let body: Value = serde_json::from_slice(&body).unwrap();
            let text = match route {
                Route::Chat => &body["message"]["content"],
                Route::Generate => &body["response"],
            };
            assert_eq!(text, "Hello");
            assert_eq!(body["done"], true);
            assert_eq!(body["prompt_eval_count"], 3);
            assert_eq!(body["eval_count"], 2);
            assert_eq!(body["prompt_eval_duration"], 100_000_000u64);
            assert_eq!(body["eval_duration"], 200_000_000u64);
        }
    }

    /// The tool-calling exchange of Ollama's API docs (`docs/api.md`, "Chat request
    /// (with tools)"), carried on to the tool's result, with `format`, `think` and an
    /// image.
    #[test]
    fn a_tool_conversation_maps_tools_calls_results_format_think_and_images() {
        let r = request(chat(json!({
            "model": "llama3.2",
            "messages": [
                {"role": "user", "content": "What is the weather today in Paris?", "images": ["iVBORw0KGgoAAAANSUhEUg"]},
                {"role": "assistant", "content": "", "thinking": "I should look.", "tool_calls": [
                    {"function": {"name": "get_current_weather", "arguments": {"format": "celsius", "location": "Paris, FR"}}},
                    {"function": {"name": "get_time", "arguments": {}}},
                ]},
                {"role": "tool", "content": "11 degrees", "tool_name": "get_current_weather"},
                {"role": "tool", "content": "noon", "tool_call_id": "call_1_1"},
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_current_weather",
                "description": "Get the current weather for a location",
                "parameters": {"type": "object", "properties": {
                    "location": {"type": "string", "description": "The location to get the weather for, e.g. San Francisco, CA"},
                    "format": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                    "required": ["location", "format"]},
            }}],
            "format": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
            "think": "low",
            "stream": false,
        })));
        assert_eq!(r.tools.len(), 1);
        assert_eq!(r.tools[0].name, "get_current_weather");
        assert_eq!(
            r.tools[0].parameters.as_ref().unwrap()["required"],
            json!(["location", "format"])
        );
        assert_eq!(
            r.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "response".into(),
                schema: json!({"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}),
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
        assert_eq!(
            r.messages[0].images,
            [Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgoAAAANSUhEUg".into()
            }]
        );
        let calls = &r.messages[1].tool_calls;
        assert_eq!(calls[0].id, "call_1_0");
        assert_eq!(calls[0].name, "get_current_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&calls[0].arguments).unwrap(),
            json!({"format": "celsius", "location": "Paris, FR"})
        );
        assert_eq!(
            r.messages[2],
            Message::tool_result("call_1_0", "11 degrees")
        );
        assert_eq!(r.messages[3], Message::tool_result("call_1_1", "noon"));
        let json_mode = request(chat(
            json!({"model": "m", "messages": user("x"), "format": "json", "think": true}),
        ));
        assert_eq!(json_mode.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(
            json_mode.reasoning.map(|r| (r.effort, r.show)),
            Some((None, true))
        );
        let with_image = request(generate(
            json!({"model": "m", "prompt": "what is this?", "images": ["/9j/4AAQSkZJRg"]}),
        ));
        assert_eq!(with_image.prompt, None);
        assert_eq!(with_image.messages[0].content, "what is this?");
        assert_eq!(with_image.messages[0].images.len(), 1);
    }

    #[test]
    fn calls_and_thinking_are_written_in_ollamas_shapes_streamed_and_whole() {
        let calls = [ToolCall {
            id: "call_7".into(),
            name: "get_current_weather".into(),
            arguments: "{\"format\":\"celsius\",\"location\":\"Paris, FR\"}".into(),
        }];
        let mut e = Encoder::new(Route::Chat, "llama3.2", true, at(0));
        let thinking = lines(&e.reasoning("Let me look.", at(10)).unwrap());
        assert_eq!(
            thinking[0]["message"],
            json!({"role": "assistant", "content": "", "thinking": "Let me look."})
        );
        let call = lines(&e.tool_calls(&calls, at(20)).unwrap());
        assert_eq!(
            call[0]["message"],
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "call_7", "function": {
                "index": 0, "name": "get_current_weather",
                "arguments": {"format": "celsius", "location": "Paris, FR"}}}]})
        );
        assert_eq!(call[0]["done"], false);
        let last = lines(&e.finish(Usage::new(3, 2), FinishReason::ToolCalls, at(30)));
        assert_eq!(last[0]["done_reason"], "stop");
        assert!(last[0]["message"].get("tool_calls").is_none());

        let mut whole = Encoder::new(Route::Chat, "llama3.2", false, at(0));
        assert_eq!(whole.reasoning("Let me look.", at(10)), None);
        assert_eq!(whole.tool_calls(&calls, at(20)), None);
        let body: Value = serde_json::from_slice(&whole.finish(
            Usage::new(3, 2),
            FinishReason::ToolCalls,
            at(30),
        ))
        .unwrap();
        assert_eq!(body["message"]["thinking"], "Let me look.");
        assert_eq!(
            body["message"]["tool_calls"][0]["function"]["name"],
            "get_current_weather"
        );
        let mut generate = Encoder::new(Route::Generate, "m", false, at(0));
        generate.reasoning("hm", at(1));
        let body: Value =
            serde_json::from_slice(&generate.finish(Usage::new(1, 1), FinishReason::Stop, at(2)))
                .unwrap();
        assert_eq!(body["thinking"], "hm");
    }

    #[test]
    fn an_answer_without_text_has_no_eval_duration() {
        let mut e = Encoder::new(Route::Chat, "m", true, at(0));
        let last = lines(&e.finish(Usage::new(3, 0), FinishReason::Stop, at(500)))[0].clone();
        assert_eq!(last["total_duration"], 500_000_000u64);
        assert_eq!(last["prompt_eval_duration"], 500_000_000u64);
        assert_eq!(last["eval_duration"], 0);
    }

    #[test]
    fn a_clock_that_steps_back_gives_zero_durations_not_a_panic() {
        let mut e = Encoder::new(Route::Chat, "m", true, at(1000));
        e.text("x", at(500));
        let last = lines(&e.finish(Usage::default(), FinishReason::Stop, at(0)))[0].clone();
        assert_eq!(last["total_duration"], 0);
        assert_eq!(last["eval_duration"], 0);
    }

    #[test]
    fn done_reasons_are_ollamas_words() {
        assert_eq!(done_reason(FinishReason::Stop), "stop");
        assert_eq!(done_reason(FinishReason::Length), "length");
        assert_eq!(done_reason(FinishReason::ToolCalls), "stop");
        assert_eq!(done_reason(FinishReason::Other), "stop");
        assert_eq!(done_reason(FinishReason::ContentFilter), "content_filter");
    }

    /// The Ollama provider reads Ollama's wire format: what the front door writes, it
    /// reads back as the same text, counts and finish reason.
    #[test]
    fn the_ollama_provider_reads_back_what_the_front_door_writes() {
        for (reason, expected) in [
            (FinishReason::Stop, FinishReason::Stop),
            (FinishReason::Length, FinishReason::Length),
        ] {
            let mut e = Encoder::new(Route::Chat, "m", true, at(0));
            let mut out = Vec::new();
            for piece in ["Why ", "the sky\n", "is \"blue\""] {
                out.extend(e.text(piece, at(5)).unwrap());
            }
            out.extend(e.finish(Usage::new(9, 4), reason, at(9)));
            let mut decoder = crate::provider::ollama::ChatDecoder::new("up");
            let mut events = Vec::new();
            for l in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                decoder.unit(l.to_vec(), &mut events).unwrap();
            }
            let text: String = events
                .iter()
                .filter_map(|ev| match ev {
                    StreamEvent::Text(t) => Some(t.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(text, "Why the sky\nis \"blue\"");
            assert_eq!(
                events.last(),
                Some(&StreamEvent::Done {
                    usage: Usage::new(9, 4),
                    finish_reason: expected
                })
            );
        }
        let mut decoder = crate::provider::ollama::ChatDecoder::new("up");
        let err = decoder
            .unit(
                error_line("model crashed").trim_ascii_end().to_vec(),
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(err.message.contains("model crashed"));
    }

    #[test]
    fn a_failure_mid_stream_is_a_last_error_line() {
        let mut e = Encoder::new(Route::Chat, "m", true, at(0));
        let mut out = e.text("Hel", at(1)).unwrap();
        out.extend(error_line("the upstream went away"));
        let lines = lines(&out);
        assert_eq!(lines[1], json!({"error": "the upstream went away"}));
    }

    #[test]
    fn every_error_code_has_its_status_and_ollamas_shape() {
        let expected = crate::server::http::error::DOCUMENTED_STATUSES;
        assert_eq!(expected.len(), ErrorCode::ALL.len(), "every code is listed");
        for (code, status) in expected {
            let (got, body) = error_body(code, "model 'x' not found");
            assert_eq!(got.as_u16(), status, "{code}");
            assert_eq!(body, json!({"error": "model 'x' not found"}));
        }
    }

    #[test]
    fn tags_list_every_model_as_provider_slash_model_in_ollamas_fields() {
        let models = [
            ModelInfo {
                id: "claude-sonnet-4-5".into(),
                provider: "anthropic".into(),
                display_name: Some("Claude Sonnet 4.5".into()),
                context_window: Some(200_000),
                created_at: Some(1_760_742_847),
                ..ModelInfo::default()
            },
            ModelInfo {
                id: "fast".into(),
                provider: String::new(),
                display_name: None,
                context_window: None,
                created_at: None,
                ..ModelInfo::default()
            },
        ];
        let body = tags_body(&models);
        let listed = body["models"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        let first = &listed[0];
        assert_eq!(first["name"], "anthropic/claude-sonnet-4-5");
        assert_eq!(first["model"], "anthropic/claude-sonnet-4-5");
        assert_eq!(first["modified_at"], "2025-10-17T23:14:07Z");
        assert_eq!(first["size"], 0);
        let digest = first["digest"].as_str().unwrap();
        assert_eq!(digest.len(), 64);
        assert!(digest
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(
            first["details"],
            json!({"parent_model": "", "format": "", "family": "", "families": null,
                   "parameter_size": "", "quantization_level": "", "context_length": 200_000})
        );
        let alias = &listed[1];
        assert_eq!(alias["name"], "fast");
        assert_eq!(alias["modified_at"], "1970-01-01T00:00:00Z");
        assert!(alias["details"].get("context_length").is_none());
        assert_ne!(alias["digest"], first["digest"]);
        assert_eq!(tags_body(&models), body, "digests are stable");
        assert_eq!(tags_body(&[]), json!({"models": []}));
    }

    fn bodies() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            prop::sample::select(&["", "0", "5m", "user", "assistant", "tool", "json", "x"][..])
                .prop_map(|s| json!(s)),
            ".{0,8}".prop_map(Value::String),
        ];
        let names: &'static [&str] = &[
            "model",
            "messages",
            "stream",
            "options",
            "format",
            "keep_alive",
            "think",
            "tools",
            "images",
            "prompt",
            "system",
            "raw",
            "context",
            "template",
            "suffix",
            "role",
            "content",
            "tool_calls",
            "logprobs",
            "top_logprobs",
            "temperature",
            "num_predict",
            "stop",
            "seed",
            "top_p",
        ];
        let key = prop_oneof![
            prop::sample::select(names).prop_map(str::to_owned),
            ".{0,6}",
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_refusals_are_4xx(body in prop::collection::vec(any::<u8>(), 0..256)) {
            for parsed in [parse_chat(&body), parse_generate(&body)] {
                if let Err(e) = parsed {
                    prop_assert!(error_body(e.code, &e.message).0.is_client_error());
                }
            }
        }

        #[test]
        fn arbitrary_bodies_are_read_or_refused_with_a_400(body in bodies()) {
            let bytes = body.to_string().into_bytes();
            for parsed in [parse_chat(&bytes), parse_generate(&bytes)] {
                match parsed {
                    Ok(OllamaCall::Generate(r)) => prop_assert!(r.model.is_some_and(|m| !m.is_empty())),
                    Ok(OllamaCall::Preload { model, .. }) => prop_assert!(!model.is_empty()),
                    Err(e) => {
                        prop_assert_eq!(e.code, ErrorCode::InvalidRequest);
                        prop_assert_eq!(error_body(e.code, &e.message).0, StatusCode::BAD_REQUEST);
                    }
                }
            }
        }

        #[test]
        fn any_text_streams_as_one_line_per_piece(pieces in prop::collection::vec(".{1,12}", 0..6)) {
            let mut e = Encoder::new(Route::Chat, "m", true, at(0));
            let mut out = Vec::new();
            for p in &pieces {
                out.extend(e.text(p, at(1)).unwrap());
            }
            out.extend(e.finish(Usage::default(), FinishReason::Stop, at(2)));
            let lines = lines(&out);
            prop_assert_eq!(lines.len(), pieces.len() + 1);
            for (l, p) in lines.iter().zip(&pieces) {
                prop_assert_eq!(l["message"]["content"].as_str(), Some(p.as_str()));
            }
        }
    }
}
