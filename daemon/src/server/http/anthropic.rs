//! The Anthropic Messages API dialect of the front door (`POST /v1/messages`), as a pure
//! codec: request bodies in, [`GenerateRequest`]s out; provd's chunks, end and errors in,
//! Anthropic's bytes out. No I/O here: the router reads the body, runs the generation and
//! writes what this module encodes.
//!
//! Sources: <https://docs.claude.com/en/api/messages>,
//! <https://docs.claude.com/en/api/messages-streaming>, <https://docs.claude.com/en/api/errors>.
//!
//! Nothing here knows which provider answers: an Anthropic SDK may be talking to an
//! Ollama model, and the usage it gets is that provider's count.
//!
//! Request decisions ([`parse_request`]):
//! - `model` stays the string the client sent (`provider/model`, an alias or a bare
//!   model), in [`GenerateRequest::model`] with no provider: the router resolves it.
//! - Each text block of a turn becomes one provd turn of that role, in order (a string
//!   content is one block). The Anthropic provider merges a run of same-role turns back
//!   into one turn of text blocks, so a request that goes to Anthropic arrives as sent;
//!   the chat APIs take consecutive same-role messages as they are. A user message's
//!   `image` blocks go with the turn of the text block before them (or a turn of their
//!   own), its `tool_result` blocks are tool turns; an assistant message with `tool_use`
//!   or `thinking` blocks is one turn carrying its text, calls and provider state.
//! - `system` as text blocks is joined with blank lines, as provd joins every system
//!   prompt; an empty one is no system prompt.
//! - `cache_control` (top level and on blocks), `citations` on text blocks and
//!   `diagnostics` (which asks for prompt-cache reports) are accepted and dropped: they
//!   change what a request costs on Anthropic or what it reports, not what the model is
//!   asked. `metadata.user_id` is checked and dropped (it is Anthropic's abuse-tracking
//!   id, not ours to pass to another provider). `temperature` and `top_p` are taken
//!   although the newest SDKs no longer offer them: older clients send them and every
//!   provider has them. A `null` field counts as absent (so a `null` required one is
//!   "field required").
//! - Tools, reasoning, structured output and images map as the next section says.
//! - Refused with `invalid_request_error`, naming the field, because provd cannot honour
//!   them on every provider: server tools (`web_search_…`, `bash_…`: they run on
//!   Anthropic's side), `top_k` (provd has no portable top-k: OpenAI-style APIs have none,
//!   and an `additional_params.top_k` would be ignored by Ollama and refused by OpenAI),
//!   `service_tier: "standard_only"`, `speed: "fast"`, `output_config.effort`,
//!   `container`, `mcp_servers`, `context_management`, `inference_geo`, `document` and
//!   other blocks provd does not carry (and images in assistant turns, tool uses in user
//!   turns), the `system` role in `messages` (the API has a top-level `system` instead),
//!   `max_tokens: 0` (a cache pre-warm, which provd does not do), and any field the API
//!   does not define (as the API does). Client-chosen names quoted in a refusal are
//!   escaped and cut ([`untrusted`]).
//!
//! How tools, reasoning, structured output and images map:
//! - `tools` (`{name, description, input_schema}`, `type` absent or `custom`) are
//!   [`Tool`]s; `tool_choice` `auto`, `any`, `tool` (with `name`) and `none` are
//!   [`ToolChoice`]s `auto`, `required`, the named tool and `none`;
//!   `disable_parallel_tool_use` is accepted and not passed on (a turn's calls come in
//!   order). `tool_use` blocks are [`ToolCall`]s (the input as JSON text), `tool_result`
//!   blocks tool turns (`content` a string or text blocks joined, `is_error`).
//! - `thinking: {type: enabled, budget_tokens}` is [`Reasoning`] with that budget and
//!   shown; `adaptive` lets the provider choose the budget; `disabled` asks nothing.
//! - `output_config.format` and the beta's `output_format` (`{type: json_schema,
//!   schema}`) are a strict [`ResponseFormat::JsonSchema`]; the answer is the JSON text
//!   in the text block.
//! - `image` blocks (`source` `base64` with its media type, or `url`: `https:` only, which
//!   provd never fetches) are [`Image`]s.
//! - The provider state of an answer ([`GenerateDone::provider_state`]) travels in a
//!   `thinking` block's `signature` as a `provd1.` token (see
//!   [`super::content::state_token`]): a client sends its assistant blocks back as they
//!   came, so an Anthropic model behind gets its signed thinking back whole (the state
//!   holds Anthropic's own blocks and signatures; the thinking text a client sends back
//!   is not used). A `signature` provd did not write means nothing to the provider
//!   behind and is dropped, as are `redacted_thinking` blocks (Anthropic's travel inside
//!   the state).
//!
//! Response decisions ([`StreamEncoder`], [`message`]):
//! - provd learns the input token count only at the end of a generation, so
//!   `message_start` says `input_tokens: 0` and the final `message_delta` carries the
//!   real `input_tokens` beside `output_tokens` (the API documents the delta's usage as
//!   cumulative, and the official SDKs take `input_tokens` from it when present).
//!   `input_tokens` is provd's prompt count, which includes cached prompt tokens; the
//!   `cache_*_input_tokens` fields are not reported.
//! - `message_start` is sent with the first chunk (or the end, for an empty answer), so
//!   its `model` is the one the upstream named; a keepalive before then is a bare `ping`,
//!   which the SDKs skip wherever it comes.
//! - provd's `stop` finish reason does not say whether a stop sequence was hit, so it is
//!   `end_turn` with `stop_sequence: null`; `length` is `max_tokens`, `content_filter` is
//!   `refusal`, `tool_calls` is `tool_use`, anything else `end_turn`.
//! - A whole answer is a `thinking` block (when there is reasoning or provider state),
//!   the text block, then a `tool_use` block per call with its parsed `input`
//!   ([`content_blocks`]). A stream opens a block each time the kind of piece changes
//!   (`thinking_delta`, `text_delta`, a `tool_use` block per call with `input: {}` and its
//!   `input_json_delta`s), and ends with a `thinking` block holding only the state's
//!   `signature_delta`, as the state is known only at the end ([`StreamEncoder`]). A
//!   plain answer is one text block at index 0, as before.
//! - Error messages are sent as given: the router passes provd's own, which are scrubbed
//!   of keys where they are made.
//! - Statuses follow the front door's one mapping (400 invalid request, 401, 403, 404,
//!   429, 500 internal, 502 upstream, 503 overloaded or unavailable, 504 timeout), not
//!   Anthropic's 529 for `overloaded_error`; the type stays Anthropic's.

use std::fmt::Write as _;

use bytes::Bytes;
use provd_client::message::GenerateDone;
use provd_client::{
    ErrorCode, FinishReason, GenerateRequest, Image, Message, Reasoning, ResponseFormat, Role,
    Tool, ToolCall, ToolCallDelta, ToolChoice, WireError,
};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::provider::tools;
use crate::untrusted::untrusted;

/// The route this dialect serves.
pub const MESSAGES_PATH: &str = "/v1/messages";

/// The content type of a streamed answer.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "text/event-stream; charset=utf-8";

/// Random bytes in a message id (`msg_` and twice as many hex digits).
const MESSAGE_ID_RANDOM_BYTES: usize = 12;

/// A `POST /v1/messages` body, checked and mapped.
#[derive(Clone, Debug, PartialEq)]
pub struct MessagesRequest {
    /// What to generate. `provider` is `None` and `model` the client's string, for the
    /// router to resolve; `stream` is the body's `stream` (the API's default: false).
    pub generate: GenerateRequest,
}

impl MessagesRequest {
    /// Whether the client asked for an event stream rather than one `message` object.
    pub fn stream(&self) -> bool {
        self.generate.stream
    }
}

/// An error in the API's own shape: the HTTP status, the error `type` and the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// Anthropic's error type (`invalid_request_error`, `overloaded_error`, …).
    pub kind: &'static str,
    /// What failed, with which field, and what to do.
    pub message: String,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            kind: "invalid_request_error",
            message: message.into(),
        }
    }

    /// The 413 `request_too_large` for a body over `max_body_bytes`, for the router to
    /// send when it stops reading a body early too.
    pub fn too_large(max_body_bytes: usize) -> ApiError {
        ApiError {
            status: 413,
            kind: "request_too_large",
            message: format!(
                "the request body is larger than this daemon accepts ([http] max_body_bytes = {max_body_bytes})"
            ),
        }
    }

    /// The error for a provd error code, with the front door's status for it.
    pub fn from_code(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let (status, kind) = status_and_kind(code);
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// `{"type": "error", "error": {"type": …, "message": …}}`.
    pub fn json(&self) -> Value {
        json!({"type": "error", "error": {"type": self.kind, "message": self.message}})
    }

    /// The same as an `error` event, for a failure after the stream began.
    pub fn event(&self) -> Bytes {
        let mut out = String::new();
        push_event(
            &mut out,
            "error",
            &ErrorEvent {
                kind: "error",
                error: ErrorObject {
                    kind: self.kind,
                    message: &self.message,
                },
            },
        );
        Bytes::from(out)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The status and Anthropic error body for a provd error: `(status, {"type": "error",
/// "error": {...}})`. `Retry-After` (for 429 and 503) is the router's to add.
pub fn error_body(code: ErrorCode, message: &str) -> (u16, Value) {
    let e = ApiError::from_code(code, message);
    (e.status, e.json())
}

/// provd's code as the front door's HTTP status and the Anthropic error type that says
/// the same (<https://docs.claude.com/en/api/errors>). Anthropic sends 529 for
/// `overloaded_error`; provd says 503 with `Retry-After`, and keeps the type.
fn status_and_kind(code: ErrorCode) -> (u16, &'static str) {
    match code {
        ErrorCode::InvalidRequest | ErrorCode::ProtocolError => (400, "invalid_request_error"),
        ErrorCode::Unauthenticated => (401, "authentication_error"),
        ErrorCode::PermissionDenied => (403, "permission_error"),
        ErrorCode::NotFound => (404, "not_found_error"),
        ErrorCode::RateLimited => (429, "rate_limit_error"),
        ErrorCode::Internal => (500, "api_error"),
        ErrorCode::UpstreamError => (502, "api_error"),
        ErrorCode::Overloaded => (503, "overloaded_error"),
        // Unreachable or shutting down: not a capacity problem, so not `overloaded_error`.
        ErrorCode::Unavailable => (503, "api_error"),
        ErrorCode::Timeout => (504, "timeout_error"),
        // Only when the client went away; nobody reads it, and the log says 499.
        ErrorCode::Cancelled => (499, "invalid_request_error"),
    }
}

/// The `error` event for a generation that failed after the stream began.
pub fn error_event(code: ErrorCode, message: &str) -> Bytes {
    ApiError::from_code(code, message).event()
}

/// Anthropic's `stop_reason` for provd's finish reason (module docs: why `stop` is
/// always `end_turn`).
pub fn stop_reason(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop | FinishReason::Other => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ContentFilter => "refusal",
        FinishReason::ToolCalls => "tool_use",
    }
}

/// A fresh message id: `msg_` and 24 random hex digits.
pub fn new_message_id() -> String {
    use ring::rand::SecureRandom;
    let mut random = [0u8; MESSAGE_ID_RANDOM_BYTES];
    // The system's random source does not fail once the daemon runs; if it ever did, an
    // id of zeros is still a valid (if not unique) id and not worth failing a request.
    let _ = ring::rand::SystemRandom::new().fill(&mut random);
    format!("msg_{}", crate::credentials::hex(&random))
}

/// The non-streamed answer: a `message` object with its content blocks (see
/// [`content_blocks`]).
pub fn message(id: &str, text: &str, done: &GenerateDone) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "content": content_blocks(text, done),
        "model": done.model,
        "stop_reason": stop_reason(done.finish_reason),
        "stop_sequence": null,
        "usage": {
            "input_tokens": done.usage.prompt_tokens,
            "output_tokens": done.usage.completion_tokens,
        },
    })
}

/// A whole answer's blocks: a `thinking` block first when there is reasoning or provider
/// state (the state as its `signature`, module docs), the text block (also when empty and
/// nothing else was said), then a `tool_use` block per call, its input the parsed
/// arguments.
pub fn content_blocks(text: &str, done: &GenerateDone) -> Vec<Value> {
    let mut blocks = Vec::new();
    if done.reasoning.is_some() || done.provider_state.is_some() {
        blocks.push(json!({
            "type": "thinking",
            "thinking": done.reasoning.as_deref().unwrap_or(""),
            "signature": done.provider_state.as_ref().map(super::content::state_token).unwrap_or_default(),
        }));
    }
    if !text.is_empty() || done.tool_calls.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for call in &done.tool_calls {
        blocks.push(json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            // The server checked the arguments parse; an object is what the API holds.
            "input": tools::arguments_object(call),
        }));
    }
    blocks
}

// ---------------------------------------------------------------------------------------
// Streaming

/// Where a stream is in the event sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing but pings sent.
    Before,
    /// `message_start`, `content_block_start` and `ping` sent: deltas may follow.
    Open,
    /// `message_stop` or `error` sent: nothing more.
    Ended,
}

/// What kind of content block is open in a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BlockKind {
    Text,
    Thinking,
    ToolUse,
}

/// Turns one generation's events into the Messages API's SSE sequence:
///
/// ```text
/// message_start, content_block_start (index 0), ping,
/// content_block_delta per piece (text_delta, thinking_delta, input_json_delta),
/// content_block_stop and content_block_start where the kind of piece changes,
/// [a thinking block holding only a signature_delta: the provider state],
/// content_block_stop, message_delta (stop_reason, usage), message_stop
/// ```
///
/// or an `error` event in place of the rest when the generation fails. A tool call is a
/// `tool_use` block opened with its id, name and `input: {}`, its arguments following as
/// `input_json_delta`s. The provider state is known only at the end, after the text, so
/// it comes as a last `thinking` block of its own (empty thinking, a `signature_delta`);
/// the SDKs collect blocks by index whatever their order. Each method returns the bytes to
/// write (empty when there is nothing to send); every event is `event: NAME\ndata:
/// JSON\n\n`. Calls after the end return nothing.
#[derive(Debug)]
pub struct StreamEncoder {
    id: String,
    phase: Phase,
    /// The open block: its index and kind.
    open_block: Option<(u32, BlockKind)>,
    /// The index the next block gets.
    next_index: u32,
    /// For each call (by provd's call index), its block index.
    calls: Vec<(u32, u32)>,
}

impl StreamEncoder {
    /// An encoder for the message `id` (see [`new_message_id`]).
    pub fn new(id: impl Into<String>) -> StreamEncoder {
        StreamEncoder {
            id: id.into(),
            phase: Phase::Before,
            open_block: None,
            next_index: 0,
            calls: Vec::new(),
        }
    }

    /// One chunk of text from `model` (the model the chunk names). The first one opens
    /// the message.
    pub fn chunk(&mut self, text: &str, model: &str) -> Bytes {
        if self.phase == Phase::Ended {
            return Bytes::new();
        }
        let mut out = String::new();
        self.open(&mut out, model);
        let index = self.block(&mut out, BlockKind::Text, StartBlock::Text { text: "" });
        push_delta(&mut out, index, Delta::Text { text });
        Bytes::from(out)
    }

    /// One piece of the model's reasoning: a `thinking_delta` in a thinking block.
    pub fn reasoning(&mut self, text: &str, model: &str) -> Bytes {
        if self.phase == Phase::Ended {
            return Bytes::new();
        }
        let mut out = String::new();
        self.open(&mut out, model);
        let index = self.block(&mut out, BlockKind::Thinking, EMPTY_THINKING);
        push_delta(&mut out, index, Delta::Thinking { thinking: text });
        Bytes::from(out)
    }

    /// One piece of a tool call: the first (it has the call's id) opens its `tool_use`
    /// block; arguments are `input_json_delta`s in the call's block.
    pub fn tool_call(&mut self, piece: &ToolCallDelta, model: &str) -> Bytes {
        if self.phase == Phase::Ended {
            return Bytes::new();
        }
        let mut out = String::new();
        self.open(&mut out, model);
        let known = self
            .calls
            .iter()
            .find(|(call, _)| *call == piece.index)
            .map(|(_, block)| *block);
        let index = match (known, &piece.id) {
            (Some(block), _) => block,
            (None, id) => {
                self.close(&mut out);
                let index = self.start(
                    &mut out,
                    BlockKind::ToolUse,
                    StartBlock::ToolUse {
                        id: id.as_deref().unwrap_or(""),
                        name: piece.name.as_deref().unwrap_or(""),
                        input: Empty {},
                    },
                );
                self.calls.push((piece.index, index));
                index
            }
        };
        if !piece.arguments.is_empty() {
            push_delta(
                &mut out,
                index,
                Delta::InputJson {
                    partial_json: &piece.arguments,
                },
            );
        }
        Bytes::from(out)
    }

    /// The upstream is silent but alive: a `ping`.
    pub fn keepalive(&mut self) -> Bytes {
        if self.phase == Phase::Ended {
            return Bytes::new();
        }
        let mut out = String::new();
        push_ping(&mut out);
        Bytes::from(out)
    }

    /// The generation ended: the provider state's block if any, closes the open block and
    /// the message, with the stop reason and the usage (the input count too: module docs).
    pub fn done(&mut self, done: &GenerateDone) -> Bytes {
        if self.phase == Phase::Ended {
            return Bytes::new();
        }
        let mut out = String::new();
        self.open(&mut out, &done.model);
        if self.next_index == 0 {
            // An empty answer is still one (empty) text block.
            self.block(&mut out, BlockKind::Text, StartBlock::Text { text: "" });
        }
        if let Some(state) = &done.provider_state {
            self.close(&mut out);
            let index = self.start(&mut out, BlockKind::Thinking, EMPTY_THINKING);
            push_delta(
                &mut out,
                index,
                Delta::Signature {
                    signature: &super::content::state_token(state),
                },
            );
        }
        self.close(&mut out);
        push_event(
            &mut out,
            "message_delta",
            &MessageDelta {
                kind: "message_delta",
                delta: StopDelta {
                    stop_reason: stop_reason(done.finish_reason),
                    stop_sequence: None,
                },
                usage: DeltaUsage {
                    input_tokens: done.usage.prompt_tokens,
                    output_tokens: done.usage.completion_tokens,
                },
            },
        );
        push_event(
            &mut out,
            "message_stop",
            &TypeOnly {
                kind: "message_stop",
            },
        );
        self.phase = Phase::Ended;
        Bytes::from(out)
    }

    /// The generation failed after the response began: an `error` event, which ends the
    /// stream (the API sends nothing after one).
    pub fn error(&mut self, error: &WireError) -> Bytes {
        if self.phase == Phase::Ended {
            return Bytes::new();
        }
        self.phase = Phase::Ended;
        error_event(error.code, &error.message)
    }

    /// Whether `message_stop` or `error` has been sent.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// Writes `message_start` if not done yet.
    fn open(&mut self, out: &mut String, model: &str) {
        if self.phase != Phase::Before {
            return;
        }
        push_event(
            out,
            "message_start",
            &MessageStart {
                kind: "message_start",
                message: StartMessage {
                    id: &self.id,
                    kind: "message",
                    role: "assistant",
                    content: [],
                    model,
                    stop_reason: None,
                    stop_sequence: None,
                    usage: DeltaUsage {
                        input_tokens: 0,
                        output_tokens: 0,
                    },
                },
            },
        );
        self.phase = Phase::Open;
    }

    /// The index of the open block of `kind`, starting one (`start` its opening) after
    /// closing another.
    fn block(&mut self, out: &mut String, kind: BlockKind, start: StartBlock<'_>) -> u32 {
        match self.open_block {
            Some((index, open)) if open == kind => index,
            _ => {
                self.close(out);
                self.start(out, kind, start)
            }
        }
    }

    /// Starts a block; the first is followed by a `ping`, as the API sends it.
    fn start(&mut self, out: &mut String, kind: BlockKind, block: StartBlock<'_>) -> u32 {
        let index = self.next_index;
        push_event(
            out,
            "content_block_start",
            &BlockStart {
                kind: "content_block_start",
                index,
                content_block: block,
            },
        );
        if index == 0 {
            push_ping(out);
        }
        self.next_index += 1;
        self.open_block = Some((index, kind));
        index
    }

    fn close(&mut self, out: &mut String) {
        if let Some((index, _)) = self.open_block.take() {
            push_event(
                out,
                "content_block_stop",
                &BlockStop {
                    kind: "content_block_stop",
                    index,
                },
            );
        }
    }
}

fn push_delta(out: &mut String, index: u32, delta: Delta<'_>) {
    push_event(
        out,
        "content_block_delta",
        &BlockDelta {
            kind: "content_block_delta",
            index,
            delta,
        },
    );
}

/// Appends `event: NAME\ndata: JSON\n\n`. The JSON is one line: serde_json escapes every
/// line break inside strings.
fn push_event(out: &mut String, name: &str, data: &impl Serialize) {
    let json = serde_json::to_string(data).expect("event structs always serialize");
    let _ = write!(out, "event: {name}\ndata: {json}\n\n");
}

fn push_ping(out: &mut String) {
    push_event(out, "ping", &TypeOnly { kind: "ping" });
}

// The events' data, with fields in the order the API writes them.

#[derive(Serialize)]
struct TypeOnly {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct MessageStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: StartMessage<'a>,
}

#[derive(Serialize)]
struct StartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    content: [(); 0],
    model: &'a str,
    stop_reason: Option<&'static str>,
    stop_sequence: Option<&'static str>,
    usage: DeltaUsage,
}

#[derive(Serialize)]
struct DeltaUsage {
    input_tokens: u32,
    output_tokens: u32,
}

/// A thinking block as it opens: its text and signature come in deltas.
const EMPTY_THINKING: StartBlock<'static> = StartBlock::Thinking {
    thinking: "",
    signature: "",
};

/// A block as `content_block_start` opens it.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text {
        text: &'a str,
    },
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

#[derive(Serialize)]
struct Empty {}

/// A `content_block_delta`'s delta.
#[derive(Serialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
struct BlockStart<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: StartBlock<'a>,
}

#[derive(Serialize)]
struct BlockDelta<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: Delta<'a>,
}

#[derive(Serialize)]
struct BlockStop {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
}

#[derive(Serialize)]
struct MessageDelta {
    #[serde(rename = "type")]
    kind: &'static str,
    delta: StopDelta,
    usage: DeltaUsage,
}

#[derive(Serialize)]
struct StopDelta {
    stop_reason: &'static str,
    stop_sequence: Option<&'static str>,
}

#[derive(Serialize)]
struct ErrorEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorObject<'a>,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

// ---------------------------------------------------------------------------------------
// Requests

/// Fields the codec refuses, each with why (module docs).
const UNSUPPORTED: &[(&str, &str)] = &[
    ("top_k", "provd has no top-k that every provider honours"),
    ("container", "provd runs no code-execution containers"),
    ("mcp_servers", "provd does not connect to MCP servers"),
    (
        "context_management",
        "provd does not manage the context window",
    ),
    (
        "inference_geo",
        "provd cannot choose where another provider runs a model",
    ),
];

/// Parses and checks a `POST /v1/messages` body. A body over `max_body_bytes` is a 413
/// `request_too_large`; everything else wrong is a 400 `invalid_request_error` whose
/// message names the field (`messages.1.content.0.type: …`).
pub fn parse_request(body: &[u8], max_body_bytes: usize) -> Result<MessagesRequest, ApiError> {
    if body.len() > max_body_bytes {
        return Err(ApiError::too_large(max_body_bytes));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::invalid(format!(
            "the body must be a JSON object, got {}",
            kind_of(&value)
        )));
    };
    let mut generate = GenerateRequest {
        stream: false,
        ..GenerateRequest::default()
    };
    let (mut model, mut max_tokens, mut messages) = (None, None, None);
    for (key, value) in &fields {
        if value.is_null() {
            continue;
        }
        match key.as_str() {
            "model" => model = Some(model_name(value)?),
            "max_tokens" => max_tokens = Some(token_cap(value)?),
            "messages" => messages = Some(turns(value)?),
            "system" => generate.system = system(value)?,
            "temperature" => generate.temperature = Some(number(value, "temperature")?),
            "top_p" => generate.top_p = Some(number(value, "top_p")?),
            "stop_sequences" => generate.stop = strings(value, "stop_sequences")?,
            "stream" => generate.stream = boolean(value, "stream")?,
            "metadata" => check_metadata(value)?,
            "cache_control" | "diagnostics" => {}
            "service_tier" => check_service_tier(value)?,
            "speed" => check_speed(value)?,
            "tools" => generate.tools = tools(value)?,
            "tool_choice" => generate.tool_choice = tool_choice(value)?,
            "thinking" => generate.reasoning = thinking(value)?,
            "output_format" => {
                generate.response_format = Some(output_format(value, "output_format")?)
            }
            "output_config" => generate.response_format = output_config(value)?,
            other => return Err(unsupported_or_unknown(other, "")),
        }
    }
    generate.model = Some(model.ok_or_else(|| required("model"))?);
    generate.max_tokens = Some(max_tokens.ok_or_else(|| required("max_tokens"))?);
    generate.messages = messages.ok_or_else(|| required("messages"))?;
    Ok(MessagesRequest { generate })
}

fn required(field: &str) -> ApiError {
    ApiError::invalid(format!("{field}: field required"))
}

/// A refusal for a field the codec does not take: the listed ones say why, others are
/// unknown (the API refuses extra inputs too). `prefix` is the path of the object.
fn unsupported_or_unknown(key: &str, prefix: &str) -> ApiError {
    if prefix.is_empty() {
        if let Some((_, why)) = UNSUPPORTED.iter().find(|(k, _)| *k == key) {
            return ApiError::invalid(format!(
                "{key}: not supported by provd's Messages API ({why}); remove it"
            ));
        }
    }
    ApiError::invalid(format!(
        "{prefix}{}: extra inputs are not permitted (not a field of the Messages API that provd takes)",
        untrusted(key)
    ))
}

/// What a JSON value is, for "got …" in messages.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong_type(field: &str, wanted: &str, value: &Value) -> ApiError {
    ApiError::invalid(format!("{field}: must be {wanted}, got {}", kind_of(value)))
}

fn model_name(value: &Value) -> Result<String, ApiError> {
    match value.as_str() {
        Some("") => Err(ApiError::invalid("model: must not be empty")),
        Some(name) => Ok(name.to_owned()),
        None => Err(wrong_type("model", "a string", value)),
    }
}

fn token_cap(value: &Value) -> Result<u32, ApiError> {
    let Some(n) = value.as_i64().or_else(|| value.as_u64().map(|_| i64::MAX)) else {
        return Err(wrong_type("max_tokens", "an integer", value));
    };
    match u32::try_from(n) {
        Ok(0) => Err(ApiError::invalid(
            "max_tokens: must be at least 1 (0 asks for a prompt-cache pre-warm, which provd does not do)",
        )),
        Ok(n) => Ok(n),
        Err(_) if n < 0 => Err(ApiError::invalid("max_tokens: must be at least 1")),
        Err(_) => Err(ApiError::invalid(format!(
            "max_tokens: must be at most {}",
            u32::MAX
        ))),
    }
}

fn number(value: &Value, field: &str) -> Result<f32, ApiError> {
    let n = value
        .as_f64()
        .ok_or_else(|| wrong_type(field, "a number", value))?;
    // The request carries f32; a double beyond its range would become infinity.
    let n = n as f32;
    if n.is_finite() {
        Ok(n)
    } else {
        Err(ApiError::invalid(format!("{field}: out of range")))
    }
}

fn boolean(value: &Value, field: &str) -> Result<bool, ApiError> {
    value
        .as_bool()
        .ok_or_else(|| wrong_type(field, "a boolean", value))
}

fn strings(value: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    let items = value
        .as_array()
        .ok_or_else(|| wrong_type(field, "an array of strings", value))?;
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            item.as_str()
                .map(str::to_owned)
                .ok_or_else(|| wrong_type(&format!("{field}.{i}"), "a string", item))
        })
        .collect()
}

fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Map<String, Value>, ApiError> {
    value
        .as_object()
        .ok_or_else(|| wrong_type(field, "an object", value))
}

/// The `type` of an object that has one, as a string.
fn type_of<'a>(fields: &'a Map<String, Value>, path: &str) -> Result<&'a str, ApiError> {
    match fields.get("type") {
        None => Err(required(&format!("{path}.type"))),
        Some(Value::String(kind)) => Ok(kind),
        Some(other) => Err(wrong_type(&format!("{path}.type"), "a string", other)),
    }
}

/// The text of a text block at `path`, or why it is not one the codec takes.
fn text_block<'a>(block: &'a Value, path: &str) -> Result<&'a str, ApiError> {
    let fields = object(block, path)?;
    let kind = type_of(fields, path)?;
    if kind != "text" {
        return Err(ApiError::invalid(format!(
            "{path}.type: {} blocks are not supported by provd's Messages API, which carries text blocks only",
            untrusted(kind)
        )));
    }
    let mut text = None;
    for (key, value) in fields {
        match key.as_str() {
            "type" => {}
            "text" => {
                text = Some(
                    value
                        .as_str()
                        .ok_or_else(|| wrong_type(&format!("{path}.text"), "a string", value))?,
                )
            }
            // Caching and citation marks change cost and presentation, not the prompt.
            "cache_control" | "citations" => {}
            other => return Err(unsupported_or_unknown(other, &format!("{path}."))),
        }
    }
    text.ok_or_else(|| required(&format!("{path}.text")))
}

fn system(value: &Value) -> Result<Option<String>, ApiError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            let texts = blocks
                .iter()
                .enumerate()
                .map(|(i, block)| text_block(block, &format!("system.{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            texts.join("\n\n")
        }
        other => {
            return Err(wrong_type(
                "system",
                "a string or an array of text blocks",
                other,
            ))
        }
    };
    Ok((!text.is_empty()).then_some(text))
}

/// `messages`. A user message's text blocks each become a user turn (its images go with
/// the turn of the text before them, or a turn of their own), and each `tool_result` block
/// a tool turn. An assistant message of text blocks only becomes a turn per block; one with
/// `tool_use` or `thinking` blocks becomes one turn carrying its text, its calls and the
/// provider state its thinking signature holds (module docs).
fn turns(value: &Value) -> Result<Vec<Message>, ApiError> {
    let messages = value
        .as_array()
        .ok_or_else(|| wrong_type("messages", "an array", value))?;
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages: at least one message is required",
        ));
    }
    let mut turns = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let path = format!("messages.{i}");
        let fields = object(message, &path)?;
        let (mut role, mut content) = (None, None);
        for (key, value) in fields {
            match key.as_str() {
                "role" => role = Some(message_role(value, &path)?),
                "content" => content = Some(value),
                other => return Err(unsupported_or_unknown(other, &format!("{path}."))),
            }
        }
        let role = role.ok_or_else(|| required(&format!("{path}.role")))?;
        match content.ok_or_else(|| required(&format!("{path}.content")))? {
            Value::String(text) => turns.push(Message::text(role, text.clone())),
            Value::Array(blocks) if role == Role::User => user_blocks(blocks, &path, &mut turns)?,
            Value::Array(blocks) => assistant_blocks(blocks, &path, &mut turns)?,
            other => {
                return Err(wrong_type(
                    &format!("{path}.content"),
                    "a string or an array of content blocks",
                    other,
                ))
            }
        }
    }
    Ok(turns)
}

/// The `type` of block `path`, with its fields.
fn block<'a>(value: &'a Value, path: &str) -> Result<(&'a str, &'a Map<String, Value>), ApiError> {
    let fields = object(value, path)?;
    Ok((type_of(fields, path)?, fields))
}

fn not_here(kind: &str, path: &str, role: &str) -> ApiError {
    ApiError::invalid(format!(
        "{path}.type: {} blocks are not supported in {role} messages by provd's Messages API",
        untrusted(kind)
    ))
}

fn user_blocks(blocks: &[Value], path: &str, turns: &mut Vec<Message>) -> Result<(), ApiError> {
    // Images join the turn of the text block before them in this message.
    let mut text_turn: Option<usize> = None;
    for (j, value) in blocks.iter().enumerate() {
        let at = format!("{path}.content.{j}");
        match block(value, &at)?.0 {
            "text" => {
                turns.push(Message::text(Role::User, text_block(value, &at)?));
                text_turn = Some(turns.len() - 1);
            }
            "image" => {
                let image = image_block(value, &at)?;
                match text_turn {
                    Some(t) => turns[t].images.push(image),
                    None => {
                        turns.push(Message {
                            images: vec![image],
                            ..Message::text(Role::User, "")
                        });
                        text_turn = Some(turns.len() - 1);
                    }
                }
            }
            "tool_result" => {
                turns.push(tool_result_block(value, &at)?);
                text_turn = None;
            }
            kind => return Err(not_here(kind, &at, "user")),
        }
    }
    Ok(())
}

/// An `image` block: `source` `{type: base64, media_type, data}` or `{type: url, url}`.
fn image_block(value: &Value, path: &str) -> Result<Image, ApiError> {
    let (_, fields) = block(value, path)?;
    let mut source = None;
    for (key, value) in fields {
        match key.as_str() {
            "type" | "cache_control" => {}
            "source" => source = Some(value),
            other => return Err(unsupported_or_unknown(other, &format!("{path}."))),
        }
    }
    let at = format!("{path}.source");
    let source = source.ok_or_else(|| required(&at))?;
    let (kind, fields) = block(source, &at)?;
    let string = |key: &str| -> Result<String, ApiError> {
        match fields.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(wrong_type(&format!("{at}.{key}"), "a string", other)),
            None => Err(required(&format!("{at}.{key}"))),
        }
    };
    match kind {
        "base64" => Ok(Image::Base64 {
            media_type: string("media_type")?,
            data: string("data")?,
        }),
        "url" => {
            let url = string("url")?;
            match super::content::image_from_url(&url) {
                Ok(image) => Ok(image),
                Err(why) => Err(ApiError::invalid(format!("{at}.url: {why}"))),
            }
        }
        other => Err(ApiError::invalid(format!(
            "{at}.type: must be \"base64\" or \"url\", got \"{}\"",
            untrusted(other)
        ))),
    }
}

/// A `tool_result` block: `tool_use_id`, `content` (a string or text blocks), `is_error`.
fn tool_result_block(value: &Value, path: &str) -> Result<Message, ApiError> {
    let (_, fields) = block(value, path)?;
    let (mut id, mut content, mut is_error) = (None, String::new(), false);
    for (key, value) in fields {
        match key.as_str() {
            "type" | "cache_control" => {}
            _ if value.is_null() => {}
            "tool_use_id" => {
                id =
                    Some(value.as_str().ok_or_else(|| {
                        wrong_type(&format!("{path}.tool_use_id"), "a string", value)
                    })?)
            }
            "is_error" => is_error = boolean(value, &format!("{path}.is_error"))?,
            "content" => {
                content = match value {
                    Value::String(text) => text.clone(),
                    Value::Array(blocks) => blocks
                        .iter()
                        .enumerate()
                        .map(|(k, b)| text_block(b, &format!("{path}.content.{k}")))
                        .collect::<Result<Vec<_>, _>>()?
                        .join("\n\n"),
                    other => {
                        return Err(wrong_type(
                            &format!("{path}.content"),
                            "a string or an array of text blocks",
                            other,
                        ))
                    }
                }
            }
            other => return Err(unsupported_or_unknown(other, &format!("{path}."))),
        }
    }
    let id = id.ok_or_else(|| required(&format!("{path}.tool_use_id")))?;
    Ok(Message {
        is_error,
        ..Message::tool_result(id, content)
    })
}

fn assistant_blocks(
    blocks: &[Value],
    path: &str,
    turns: &mut Vec<Message>,
) -> Result<(), ApiError> {
    let only_text = blocks
        .iter()
        .all(|b| b.get("type").and_then(Value::as_str) == Some("text"));
    if only_text {
        for (j, value) in blocks.iter().enumerate() {
            let text = text_block(value, &format!("{path}.content.{j}"))?;
            turns.push(Message::text(Role::Assistant, text));
        }
        return Ok(());
    }
    let mut turn = Message::text(Role::Assistant, "");
    for (j, value) in blocks.iter().enumerate() {
        let at = format!("{path}.content.{j}");
        let (kind, fields) = block(value, &at)?;
        match kind {
            "text" => turn.content.push_str(text_block(value, &at)?),
            "tool_use" => turn.tool_calls.push(tool_use_block(fields, &at)?),
            "thinking" => {
                for key in fields.keys() {
                    if !["type", "thinking", "signature", "cache_control"].contains(&key.as_str()) {
                        return Err(unsupported_or_unknown(key, &format!("{at}.")));
                    }
                }
                // The thinking text itself goes back inside the state; a signature provd
                // did not write (another provd, or Anthropic directly) means nothing to
                // the provider behind and is dropped.
                if let Some(state) = fields
                    .get("signature")
                    .and_then(Value::as_str)
                    .and_then(super::content::state_from_token)
                {
                    turn.provider_state = Some(state);
                }
            }
            // Anthropic's encrypted thinking travels inside provd's state token already.
            "redacted_thinking" => {}
            other => return Err(not_here(other, &at, "assistant")),
        }
    }
    turns.push(turn);
    Ok(())
}

/// A `tool_use` block: `{id, name, input}`, its input kept as JSON text.
fn tool_use_block(fields: &Map<String, Value>, path: &str) -> Result<ToolCall, ApiError> {
    let (mut id, mut name, mut input) = (None, None, None);
    for (key, value) in fields {
        match key.as_str() {
            "type" | "cache_control" => {}
            "id" => {
                id = Some(
                    value
                        .as_str()
                        .ok_or_else(|| wrong_type(&format!("{path}.id"), "a string", value))?,
                )
            }
            "name" => {
                name = Some(
                    value
                        .as_str()
                        .ok_or_else(|| wrong_type(&format!("{path}.name"), "a string", value))?,
                )
            }
            "input" => input = Some(object(value, &format!("{path}.input"))?),
            other => return Err(unsupported_or_unknown(other, &format!("{path}."))),
        }
    }
    Ok(ToolCall {
        id: id
            .ok_or_else(|| required(&format!("{path}.id")))?
            .to_owned(),
        name: name
            .ok_or_else(|| required(&format!("{path}.name")))?
            .to_owned(),
        arguments: Value::Object(
            input
                .ok_or_else(|| required(&format!("{path}.input")))?
                .clone(),
        )
        .to_string(),
    })
}

fn message_role(value: &Value, path: &str) -> Result<Role, ApiError> {
    match value.as_str() {
        Some("user") => Ok(Role::User),
        Some("assistant") => Ok(Role::Assistant),
        Some("system") => Err(ApiError::invalid(format!(
            "{path}.role: the Messages API has no \"system\" role in messages; use the top-level system field"
        ))),
        Some(other) => Err(ApiError::invalid(format!(
            "{path}.role: must be \"user\" or \"assistant\", got \"{}\"",
            untrusted(other)
        ))),
        None => Err(wrong_type(&format!("{path}.role"), "a string", value)),
    }
}

/// `metadata`: an object whose `user_id` is a string or null (checked, then dropped).
fn check_metadata(value: &Value) -> Result<(), ApiError> {
    for (key, value) in object(value, "metadata")? {
        match key.as_str() {
            "user_id" if value.is_null() || value.is_string() => {}
            "user_id" => return Err(wrong_type("metadata.user_id", "a string", value)),
            other => return Err(unsupported_or_unknown(other, "metadata.")),
        }
    }
    Ok(())
}

/// `speed`: `standard` is what every provider does; `fast` provd cannot promise.
fn check_speed(value: &Value) -> Result<(), ApiError> {
    match value.as_str() {
        Some("standard") => Ok(()),
        Some("fast") => Err(ApiError::invalid(
            "speed: \"fast\" is not supported by provd's Messages API (provd cannot choose another provider's inference speed); remove it or use \"standard\"",
        )),
        Some(other) => Err(ApiError::invalid(format!(
            "speed: must be \"standard\" or \"fast\", got \"{}\"",
            untrusted(other)
        ))),
        None => Err(wrong_type("speed", "a string", value)),
    }
}

/// `service_tier`: `auto` is what provd does anyway; `standard_only` it cannot promise.
fn check_service_tier(value: &Value) -> Result<(), ApiError> {
    match value.as_str() {
        Some("auto") => Ok(()),
        Some("standard_only") => Err(ApiError::invalid(
            "service_tier: \"standard_only\" is not supported by provd's Messages API (provd cannot choose another provider's capacity tier); remove it or use \"auto\"",
        )),
        Some(other) => Err(ApiError::invalid(format!(
            "service_tier: must be \"auto\" or \"standard_only\", got \"{}\"",
            untrusted(other)
        ))),
        None => Err(wrong_type("service_tier", "a string", value)),
    }
}

/// `tools`: custom tools (`{name, description, input_schema}`, `type` absent or
/// `custom`); Anthropic's server tools (web search, code execution, …) run on Anthropic's
/// side and are refused by their type.
fn tools(value: &Value) -> Result<Vec<Tool>, ApiError> {
    let items = value
        .as_array()
        .ok_or_else(|| wrong_type("tools", "an array", value))?;
    let mut tools = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("tools.{i}");
        let fields = object(item, &path)?;
        let (mut name, mut description, mut schema) = (None, None, None);
        for (key, value) in fields {
            match key.as_str() {
                "type" => match value {
                    Value::Null => {}
                    Value::String(kind) if kind == "custom" => {}
                    Value::String(other) => {
                        return Err(ApiError::invalid(format!(
                            "{path}.type: \"{}\" is a server tool, which runs on Anthropic's side; provd carries custom tools (name, description, input_schema) only",
                            untrusted(other)
                        )))
                    }
                    other => return Err(wrong_type(&format!("{path}.type"), "a string", other)),
                },
                "name" => {
                    name = Some(value.as_str().ok_or_else(|| {
                        wrong_type(&format!("{path}.name"), "a string", value)
                    })?)
                }
                "description" if value.is_null() => {}
                "description" => {
                    description = Some(value.as_str().ok_or_else(|| {
                        wrong_type(&format!("{path}.description"), "a string", value)
                    })?)
                }
                "input_schema" => schema = Some(object(value, &format!("{path}.input_schema"))?),
                // Cost and presentation marks; `strict` asks what provd's providers do when
                // they can (arguments are always checked to parse).
                "cache_control" | "strict" | "defer_loading" | "input_examples" => {}
                other => return Err(unsupported_or_unknown(other, &format!("{path}."))),
            }
        }
        tools.push(Tool {
            name: name
                .ok_or_else(|| required(&format!("{path}.name")))?
                .to_owned(),
            description: description.map(str::to_owned),
            parameters: Some(Value::Object(
                schema
                    .ok_or_else(|| required(&format!("{path}.input_schema")))?
                    .clone(),
            )),
        });
    }
    Ok(tools)
}

/// `tool_choice`: `auto`, `any` (provd's `required`), `tool` with its `name`, `none`.
/// `disable_parallel_tool_use` is accepted and not passed on: a model may still make
/// several calls in a turn, and provd keeps them in order.
fn tool_choice(value: &Value) -> Result<Option<ToolChoice>, ApiError> {
    let fields = object(value, "tool_choice")?;
    for key in fields.keys() {
        if !["type", "name", "disable_parallel_tool_use"].contains(&key.as_str()) {
            return Err(unsupported_or_unknown(key, "tool_choice."));
        }
    }
    Ok(Some(match type_of(fields, "tool_choice")? {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Required,
        "none" => ToolChoice::None,
        "tool" => match fields.get("name") {
            Some(Value::String(name)) => ToolChoice::Tool(name.clone()),
            Some(other) => return Err(wrong_type("tool_choice.name", "a string", other)),
            None => return Err(required("tool_choice.name")),
        },
        other => {
            return Err(ApiError::invalid(format!(
                "tool_choice.type: must be \"auto\", \"any\", \"tool\" or \"none\", got \"{}\"",
                untrusted(other)
            )))
        }
    }))
}

/// `thinking`: `enabled` with `budget_tokens` (or `adaptive`, the model's own budget)
/// asks for the reasoning and shows it; `disabled` asks nothing.
fn thinking(value: &Value) -> Result<Option<Reasoning>, ApiError> {
    let fields = object(value, "thinking")?;
    let budget = match fields.get("budget_tokens").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n >= 1)
                .ok_or_else(|| wrong_type("thinking.budget_tokens", "a positive integer", v))?,
        ),
    };
    for key in fields.keys() {
        if !["type", "budget_tokens", "display"].contains(&key.as_str()) {
            return Err(unsupported_or_unknown(key, "thinking."));
        }
    }
    match type_of(fields, "thinking")? {
        "disabled" => Ok(None),
        "enabled" => Ok(Some(Reasoning {
            effort: None,
            budget_tokens: Some(budget.ok_or_else(|| required("thinking.budget_tokens"))?),
            show: true,
        })),
        "adaptive" => Ok(Some(Reasoning {
            effort: None,
            budget_tokens: budget,
            show: true,
        })),
        other => Err(ApiError::invalid(format!(
            "thinking.type: must be \"enabled\", \"adaptive\" or \"disabled\", got \"{}\"",
            untrusted(other)
        ))),
    }
}

/// A structured-output format: `{type: json_schema, schema}` (the beta's `output_format`
/// and the GA's `output_config.format`).
fn output_format(value: &Value, path: &str) -> Result<ResponseFormat, ApiError> {
    let fields = object(value, path)?;
    match type_of(fields, path)? {
        "json_schema" => {}
        other => {
            return Err(ApiError::invalid(format!(
                "{path}.type: must be \"json_schema\", got \"{}\"",
                untrusted(other)
            )))
        }
    }
    for key in fields.keys() {
        if !["type", "schema"].contains(&key.as_str()) {
            return Err(unsupported_or_unknown(key, &format!("{path}.")));
        }
    }
    let schema = fields
        .get("schema")
        .ok_or_else(|| required(&format!("{path}.schema")))?;
    object(schema, &format!("{path}.schema"))?;
    Ok(ResponseFormat::JsonSchema {
        name: "output".to_owned(),
        schema: schema.clone(),
        strict: true,
    })
}

/// `output_config`: its `format` is a structured-output format; its `effort` (how many
/// tokens Claude spends overall) has no portable equivalent and is refused.
fn output_config(value: &Value) -> Result<Option<ResponseFormat>, ApiError> {
    let mut format = None;
    for (key, value) in object(value, "output_config")? {
        match key.as_str() {
            _ if value.is_null() => {}
            "format" => format = Some(output_format(value, "output_config.format")?),
            "effort" => {
                return Err(ApiError::invalid(
                    "output_config.effort: not supported by provd's Messages API (no other provider has Claude's overall effort setting); remove it, or ask for thinking",
                ))
            }
            other => return Err(unsupported_or_unknown(other, "output_config.")),
        }
    }
    Ok(format)
}

/// `POST /v1/messages`: the Messages API on any configured provider.
pub async fn messages(call: super::Call) -> super::Response {
    match messages_inner(call).await {
        Ok(response) => response,
        Err(response) => response,
    }
}

async fn messages_inner(call: super::Call) -> Result<super::Response, super::Response> {
    let super::Call {
        request,
        caller,
        front,
    } = call;
    let caller = caller.map_err(|e| refusal(&e.into()))?;
    let config = front.daemon.factory.config();
    let max = config.http.max_body_bytes;
    let bytes = super::body::read(request, max)
        .await
        .map_err(|e| refusal(&e))?;
    let parsed =
        parse_request(&bytes, usize::try_from(max).unwrap_or(usize::MAX)).map_err(|e| reply(&e))?;
    let stream = parsed.stream();
    let mut generate = parsed.generate;
    let requested = generate.model.clone().unwrap_or_default();
    super::resolve(&config, &mut generate).map_err(|e| refusal(&e.into()))?;
    drop(config);
    let mut generation =
        super::core::Generation::start(&front, &caller, generate).map_err(|e| refusal(&e))?;
    let id = new_message_id();
    if !stream {
        let done = super::core::whole(generation)
            .await
            .map_err(|e| refusal(&e.into()))?;
        let text = done.text.clone().unwrap_or_default();
        return Ok(super::json(
            http::StatusCode::OK,
            &message(&id, &text, &done),
        ));
    }
    let first = super::first_event(&mut generation)
        .await
        .map_err(|e| refusal(&e.into()))?;
    let mut encoder = StreamEncoder::new(id);
    let body = super::event_stream(generation, first, move |event| match event {
        super::core::Event::Text(text) => (Some(encoder.chunk(&text, &requested)), false),
        super::core::Event::Reasoning(text) => (Some(encoder.reasoning(&text, &requested)), false),
        super::core::Event::ToolCall(piece) => (Some(encoder.tool_call(&piece, &requested)), false),
        super::core::Event::Keepalive => (Some(encoder.keepalive()), false),
        super::core::Event::Done(done) => (Some(encoder.done(&done)), true),
        super::core::Event::Failed(e) => (Some(encoder.error(&e)), true),
    });
    Ok(super::streamed(EVENT_STREAM_CONTENT_TYPE, body))
}

/// The most models one page of `GET /v1/models` holds, as the API caps `limit`.
const MODELS_MAX_LIMIT: usize = 1000;
/// A page's size when the client names none (the API's default).
const MODELS_DEFAULT_LIMIT: usize = 20;

/// `GET /v1/models` from an Anthropic client (it sends `anthropic-version`): the same
/// models as the OpenAI list, in the Models API's shape and pages.
pub async fn models(call: super::Call) -> super::Response {
    let caller = match call.caller {
        Ok(caller) => caller,
        Err(e) => return refusal(&e.into()),
    };
    let query = call.request.uri().query().unwrap_or("").to_owned();
    let listed = call
        .front
        .catalogue
        .for_caller(&call.front.daemon, &caller)
        .await;
    match models_page(&listed, &query) {
        Ok(page) => super::json(http::StatusCode::OK, &page),
        Err(e) => reply(&e),
    }
}

/// One page of the Models API: `limit` (1 to 1000, default 20), then `after_id` or
/// `before_id` for the next or previous page, as the SDKs' auto-pagination asks.
fn models_page(listed: &[super::catalogue::Listed], query: &str) -> Result<Value, ApiError> {
    let (mut limit, mut after, mut before) = (MODELS_DEFAULT_LIMIT, None, None);
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MODELS_MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid(format!(
                            "limit: must be a whole number from 1 to {MODELS_MAX_LIMIT}"
                        ))
                    })?;
            }
            "after_id" => after = Some(value.into_owned()),
            "before_id" => before = Some(value.into_owned()),
            _ => {}
        }
    }
    let position = |id: &str| {
        listed.iter().position(|m| m.id == id).ok_or_else(|| {
            ApiError::from_code(
                ErrorCode::NotFound,
                format!("no model {} in the list", untrusted(id)),
            )
        })
    };
    // `has_more` looks the way the page was asked for: backwards for `before_id`.
    let backwards = before.is_some();
    let (start, end) = match (after, before) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "after_id and before_id: give one or the other".to_owned(),
            ))
        }
        (Some(id), None) => {
            let start = position(&id)? + 1;
            (start, (start + limit).min(listed.len()))
        }
        (None, Some(id)) => {
            let end = position(&id)?;
            (end.saturating_sub(limit), end)
        }
        (None, None) => (0, limit.min(listed.len())),
    };
    let page = &listed[start..end];
    let has_more = if backwards {
        start > 0
    } else {
        end < listed.len()
    };
    let data: Vec<Value> = page
        .iter()
        .map(|m| {
            let created = m
                .created
                .and_then(|s| i64::try_from(s).ok())
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            json!({
                "type": "model",
                "id": m.id,
                "display_name": m.id,
                "created_at": created.to_string(),
            })
        })
        .collect();
    Ok(json!({
        "data": data,
        "has_more": has_more,
        "first_id": page.first().map(|m| m.id.clone()),
        "last_id": page.last().map(|m| m.id.clone()),
    }))
}

fn refusal(e: &super::error::ApiError) -> super::Response {
    super::refusal(e, |code, message| ApiError::from_code(code, message).json())
}

/// `error` as a response.
fn reply(error: &ApiError) -> super::Response {
    let status = http::StatusCode::from_u16(error.status).unwrap_or(http::StatusCode::BAD_REQUEST);
    super::json(status, &error.json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use provd_client::Usage;

    const LIMIT: usize = 1 << 20;

    fn listed(ids: &[&str]) -> Vec<crate::server::http::catalogue::Listed> {
        ids.iter()
            .map(|id| crate::server::http::catalogue::Listed {
                id: (*id).to_owned(),
                provider: "p".to_owned(),
                created: Some(1_700_000_000),
                alias: false,
            })
            .collect()
    }

    fn ids(page: &Value) -> Vec<&str> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_models_list_pages_forward_and_back_in_the_models_apis_shape() {
        let all = listed(&["p/a", "p/b", "p/c", "p/d", "p/e"]);
        let first = models_page(&all, "limit=2").unwrap();
        assert_eq!(ids(&first), ["p/a", "p/b"]);
        assert_eq!(first["has_more"], true);
        assert_eq!(first["first_id"], "p/a");
        assert_eq!(first["last_id"], "p/b");
        assert_eq!(first["data"][0]["type"], "model");
        assert_eq!(first["data"][0]["created_at"], "2023-11-14T22:13:20Z");
        let next = models_page(&all, "limit=2&after_id=p%2Fb").unwrap();
        assert_eq!(ids(&next), ["p/c", "p/d"]);
        let last = models_page(&all, "limit=2&after_id=p/d").unwrap();
        assert_eq!(ids(&last), ["p/e"]);
        assert_eq!(last["has_more"], false);
        let back = models_page(&all, "limit=2&before_id=p/c").unwrap();
        assert_eq!(ids(&back), ["p/a", "p/b"]);
        assert_eq!(back["has_more"], false);
        let whole = models_page(&all, "").unwrap();
        assert_eq!(ids(&whole).len(), 5);
        assert_eq!(whole["has_more"], false);
        let empty = models_page(&[], "").unwrap();
        assert_eq!(empty["first_id"], Value::Null);
    }

    #[test]
    fn a_bad_models_page_request_is_an_invalid_request_or_not_found() {
        let all = listed(&["p/a"]);
        for query in [
            "limit=0",
            "limit=1001",
            "limit=x",
            "after_id=p/a&before_id=p/a",
        ] {
            let e = models_page(&all, query).unwrap_err();
            assert_eq!(e.status, 400, "{query}");
        }
        let e = models_page(&all, "after_id=%3Cnope%3E").unwrap_err();
        assert_eq!(e.status, 404);
    }

    fn parse(body: Value) -> Result<MessagesRequest, ApiError> {
        parse_request(body.to_string().as_bytes(), LIMIT)
    }

    fn minimal() -> Value {
        json!({
            "model": "ollama/llama3.2",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "Hello"}],
        })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut body = minimal();
        body[field] = value;
        body
    }

    fn refusal(body: Value) -> String {
        let e = parse(body).unwrap_err();
        assert_eq!((e.status, e.kind), (400, "invalid_request_error"), "{e}");
        e.message
    }

    fn turn(role: Role, content: &str) -> Message {
        Message::text(role, content)
    }

    #[test]
    fn a_minimal_request_maps_to_a_generate_request_for_the_router_to_resolve() {
        let r = parse(minimal()).unwrap();
        assert_eq!(
            r.generate,
            GenerateRequest {
                provider: None,
                model: Some("ollama/llama3.2".into()),
                messages: vec![turn(Role::User, "Hello")],
                max_tokens: Some(1024),
                stream: false,
                ..GenerateRequest::default()
            }
        );
        assert!(!r.stream(), "the API's default is not streamed");
    }

    #[test]
    fn every_supported_field_maps_to_its_generate_field() {
        let r = parse(json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 7,
            "system": "be brief",
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Bye"},
            ],
            "temperature": 0.25,
            "top_p": 0.5,
            "stop_sequences": ["END", "\n\nHuman:"],
            "stream": true,
            "metadata": {"user_id": "u-1"},
            "cache_control": {"type": "ephemeral"},
            "service_tier": "auto",
            "speed": "standard",
            "diagnostics": {"previous_message_id": null},
            "tools": [],
            "tool_choice": {"type": "auto"},
            "thinking": {"type": "disabled"},
        }))
        .unwrap();
        let g = &r.generate;
        assert_eq!(g.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(g.max_tokens, Some(7));
        assert_eq!(g.system.as_deref(), Some("be brief"));
        assert_eq!(
            g.messages,
            [
                turn(Role::User, "Hi"),
                turn(Role::Assistant, "Hello."),
                turn(Role::User, "Bye")
            ]
        );
        assert_eq!((g.temperature, g.top_p), (Some(0.25), Some(0.5)));
        assert_eq!(g.stop, ["END", "\n\nHuman:"]);
        assert!(r.stream());
        assert!(g.prompt.is_none() && g.provider.is_none() && g.additional_params.is_empty());
    }

    #[test]
    fn each_text_block_becomes_a_turn_of_its_role_and_marks_are_dropped() {
        let r = parse(with(
            "messages",
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "one", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "two"},
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "three", "citations": null},
                ]},
                {"role": "user", "content": []},
            ]),
        ))
        .unwrap();
        assert_eq!(
            r.generate.messages,
            [
                turn(Role::User, "one"),
                turn(Role::User, "two"),
                turn(Role::Assistant, "three")
            ]
        );
    }

    #[test]
    fn system_blocks_are_joined_with_blank_lines_and_an_empty_system_is_none() {
        let blocks = json!([
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in English.", "cache_control": {"type": "ephemeral"}},
        ]);
        let r = parse(with("system", blocks)).unwrap();
        assert_eq!(
            r.generate.system.as_deref(),
            Some("You are terse.\n\nAnswer in English.")
        );
        assert_eq!(
            parse(with("system", json!(""))).unwrap().generate.system,
            None
        );
        assert_eq!(
            parse(with("system", json!([]))).unwrap().generate.system,
            None
        );
    }

    #[test]
    fn a_null_optional_field_counts_as_absent() {
        for field in [
            "system",
            "temperature",
            "top_p",
            "stop_sequences",
            "stream",
            "metadata",
            "tools",
            "tool_choice",
            "thinking",
            "top_k",
        ] {
            let r = parse(with(field, Value::Null)).unwrap();
            assert_eq!(r, parse(minimal()).unwrap(), "{field}");
        }
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        for (field, value, says) in [
            (
                "tools",
                json!([{"type": "web_search_20250305", "name": "web_search"}]),
                "tools.0.type: \"web_search_20250305\" is a server tool",
            ),
            (
                "tool_choice",
                json!({"type": "sometimes"}),
                "tool_choice.type: must be",
            ),
            (
                "thinking",
                json!({"type": "enabled"}),
                "thinking.budget_tokens: field required",
            ),
            (
                "output_config",
                json!({"effort": "high"}),
                "output_config.effort: not supported",
            ),
            (
                "output_config",
                json!({"format": {"type": "json_schema"}}),
                "output_config.format.schema: field required",
            ),
            ("top_k", json!(5), "top_k: not supported"),
            ("container", json!("c-1"), "container: not supported"),
            ("mcp_servers", json!([]), "mcp_servers: not supported"),
            (
                "context_management",
                json!({}),
                "context_management: not supported",
            ),
            ("inference_geo", json!("us"), "inference_geo: not supported"),
            (
                "service_tier",
                json!("standard_only"),
                "service_tier: \"standard_only\" is not supported",
            ),
            ("speed", json!("fast"), "speed: \"fast\" is not supported"),
            (
                "frequency_penalty",
                json!(1),
                "frequency_penalty: extra inputs are not permitted",
            ),
        ] {
            let message = refusal(with(field, value));
            assert!(message.starts_with(says), "{field}: {message}");
        }
    }

    #[test]
    fn blocks_provd_does_not_carry_are_refused_with_their_path() {
        for (role, block, path) in [
            (
                "user",
                json!({"type": "document", "source": {"type": "text", "data": "x"}}),
                "document blocks are not supported in user messages",
            ),
            (
                "user",
                json!({"type": "tool_use", "id": "t", "name": "n", "input": {}}),
                "tool_use blocks are not supported in user messages",
            ),
            (
                "assistant",
                json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}),
                "image blocks are not supported in assistant messages",
            ),
            (
                "assistant",
                json!({"type": "server_tool_use", "id": "t", "name": "web_search", "input": {}}),
                "server_tool_use blocks are not supported in assistant messages",
            ),
        ] {
            let body = with(
                "messages",
                json!([{"role": role, "content": [{"type": "text", "text": "a"}, block]}]),
            );
            let message = refusal(body);
            assert!(
                message.starts_with(&format!("messages.0.content.1.type: {path}")),
                "{message}"
            );
        }
        let url = with(
            "messages",
            json!([{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://x/a.png"}}]}]),
        );
        assert!(refusal(url)
            .starts_with("messages.0.content.0.source.url: an image URL must be https:"));
        let system = with("system", json!([{"type": "image"}]));
        assert!(refusal(system).starts_with("system.0.type: image blocks"));
    }

    #[test]
    fn missing_required_fields_are_named() {
        for field in ["model", "max_tokens", "messages"] {
            let mut body = minimal();
            body.as_object_mut().unwrap().remove(field);
            assert_eq!(refusal(body), format!("{field}: field required"));
            assert_eq!(
                refusal(with(field, Value::Null)),
                format!("{field}: field required")
            );
        }
        let no_role = with("messages", json!([{"content": "x"}]));
        assert_eq!(refusal(no_role), "messages.0.role: field required");
        let no_content = with("messages", json!([{"role": "user"}]));
        assert_eq!(refusal(no_content), "messages.0.content: field required");
        let no_text = with(
            "messages",
            json!([{"role": "user", "content": [{"type": "text"}]}]),
        );
        assert_eq!(
            refusal(no_text),
            "messages.0.content.0.text: field required"
        );
        let no_type = with("system", json!([{"text": "x"}]));
        assert_eq!(refusal(no_type), "system.0.type: field required");
    }

    #[test]
    fn wrong_types_are_named_with_what_was_expected() {
        for (field, value, message) in [
            ("model", json!(3), "model: must be a string, got a number"),
            ("model", json!(""), "model: must not be empty"),
            ("max_tokens", json!("10"), "max_tokens: must be an integer, got a string"),
            ("max_tokens", json!(1.5), "max_tokens: must be an integer, got a number"),
            ("max_tokens", json!(-1), "max_tokens: must be at least 1"),
            ("max_tokens", json!(1u64 << 40), "max_tokens: must be at most 4294967295"),
            ("max_tokens", json!(u64::MAX), "max_tokens: must be at most 4294967295"),
            ("messages", json!({}), "messages: must be an array, got an object"),
            ("messages", json!([]), "messages: at least one message is required"),
            ("messages", json!(["hi"]), "messages.0: must be an object, got a string"),
            (
                "messages",
                json!([{"role": "user", "content": 5}]),
                "messages.0.content: must be a string or an array of content blocks, got a number",
            ),
            (
                "messages",
                json!([{"role": "robot", "content": "x"}]),
                "messages.0.role: must be \"user\" or \"assistant\", got \"robot\"",
            ),
            (
                "messages",
                json!([{"role": "system", "content": "x"}]),
                "messages.0.role: the Messages API has no \"system\" role in messages; use the top-level system field",
            ),
            (
                "messages",
                json!([{"role": "user", "content": "x", "name": "bob"}]),
                "messages.0.name: extra inputs are not permitted (not a field of the Messages API that provd takes)",
            ),
            (
                "messages",
                json!([{"role": "user", "content": [{"type": "text", "text": 1}]}]),
                "messages.0.content.0.text: must be a string, got a number",
            ),
            ("system", json!(1), "system: must be a string or an array of text blocks, got a number"),
            ("temperature", json!("hot"), "temperature: must be a number, got a string"),
            ("temperature", json!(1e300), "temperature: out of range"),
            ("top_p", json!(true), "top_p: must be a number, got a boolean"),
            ("stop_sequences", json!("END"), "stop_sequences: must be an array of strings, got a string"),
            ("stop_sequences", json!(["a", 2]), "stop_sequences.1: must be a string, got a number"),
            ("stream", json!("yes"), "stream: must be a boolean, got a string"),
            ("metadata", json!([]), "metadata: must be an object, got an array"),
            ("metadata", json!({"user_id": 5}), "metadata.user_id: must be a string, got a number"),
            ("tools", json!({}), "tools: must be an array, got an object"),
            ("tool_choice", json!("auto"), "tool_choice: must be an object, got a string"),
            ("thinking", json!({}), "thinking.type: field required"),
            ("service_tier", json!("gold"), "service_tier: must be \"auto\" or \"standard_only\", got \"gold\""),
            ("speed", json!(1), "speed: must be a string, got a number"),
        ] {
            assert_eq!(refusal(with(field, value)), message, "{field}");
        }
    }

    #[test]
    fn max_tokens_of_zero_is_refused_as_a_cache_pre_warm() {
        let message = refusal(with("max_tokens", json!(0)));
        assert!(
            message.starts_with("max_tokens: must be at least 1"),
            "{message}"
        );
        assert!(message.contains("pre-warm"), "{message}");
        assert_eq!(
            parse(with("max_tokens", json!(u32::MAX)))
                .unwrap()
                .generate
                .max_tokens,
            Some(u32::MAX)
        );
    }

    #[test]
    fn malformed_json_and_non_objects_are_invalid_requests() {
        for body in [
            &b"{\"model\": "[..],
            b"",
            b"\xff\xfe",
            b"[1,2]",
            b"\"text\"",
            b"null",
        ] {
            let e = parse_request(body, LIMIT).unwrap_err();
            assert_eq!((e.status, e.kind), (400, "invalid_request_error"));
            assert!(e.message.starts_with("the body "), "{}", e.message);
        }
    }

    #[test]
    fn a_deeply_nested_body_is_an_invalid_request_not_a_stack_overflow() {
        let depth = 100_000;
        for body in [
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
            format!(
                "{{\"model\":\"m\",\"max_tokens\":1,\"messages\":[],\"metadata\":{}{}}}",
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            ),
        ] {
            let e = parse_request(body.as_bytes(), LIMIT).unwrap_err();
            assert_eq!((e.status, e.kind), (400, "invalid_request_error"));
            assert!(e.message.contains("recursion limit"), "{}", e.message);
        }
    }

    #[test]
    fn a_body_over_the_limit_is_request_too_large_before_it_is_parsed() {
        let body = minimal().to_string();
        let e = parse_request(body.as_bytes(), body.len() - 1).unwrap_err();
        assert_eq!((e.status, e.kind), (413, "request_too_large"));
        assert!(e.message.contains("max_body_bytes"), "{}", e.message);
        // Not parsed: garbage over the limit is too large, not malformed.
        assert_eq!(parse_request(b"{{{{", 3).unwrap_err().status, 413);
        assert!(parse_request(body.as_bytes(), body.len()).is_ok());
    }

    #[test]
    fn client_chosen_names_are_escaped_and_cut_in_messages() {
        let key = format!("evil\n{}", "x".repeat(10_000));
        let mut body = minimal();
        body[key.as_str()] = json!(1);
        let message = refusal(body);
        assert!(!message.contains('\n'), "{message}");
        assert!(message.starts_with("evil\\nxxx"), "{message}");
        assert!(message.len() < 1_000, "{} bytes", message.len());
    }

    fn done(model: &str, usage: Usage, finish_reason: FinishReason) -> GenerateDone {
        GenerateDone {
            done: true,
            provider: "any".into(),
            model: model.into(),
            usage,
            finish_reason,
            chunks: 2,
            text: None,
            ..GenerateDone::default()
        }
    }

    const PREAMBLE: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"llama3.2:1b\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: ping\n\
data: {\"type\":\"ping\"}\n\n";

    fn delta(text: &str) -> String {
        format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":{}}}}}\n\n",
            serde_json::to_string(text).unwrap()
        )
    }

    fn text(bytes: Bytes) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_small_answer_streams_as_the_documented_event_sequence() {
        let mut e = StreamEncoder::new("msg_1");
        let mut out = text(e.chunk("Hello", "llama3.2:1b"));
        out += &text(e.chunk(" world\n\"!\"", "llama3.2:1b"));
        out += &text(e.done(&done("llama3.2:1b", Usage::new(12, 3), FinishReason::Stop)));
        let expected = format!(
            "{PREAMBLE}{}{}\
event: content_block_stop\n\
data: {{\"type\":\"content_block_stop\",\"index\":0}}\n\n\
event: message_delta\n\
data: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"input_tokens\":12,\"output_tokens\":3}}}}\n\n\
event: message_stop\n\
data: {{\"type\":\"message_stop\"}}\n\n",
            delta("Hello"),
            delta(" world\n\"!\"")
        );
        assert_eq!(out, expected);
        assert!(e.is_ended());
        assert!(e.chunk("late", "m").is_empty() && e.keepalive().is_empty());
        assert!(e
            .done(&done("m", Usage::default(), FinishReason::Stop))
            .is_empty());
    }

    #[test]
    fn the_stream_decodes_with_provds_own_anthropic_client_to_the_same_answer() {
        use crate::provider::anthropic::EventDecoder;
        use crate::provider::http::Decoder;
        use crate::provider::sse::SseParser;
        use crate::provider::StreamEvent;

        let mut e = StreamEncoder::new(new_message_id());
        let mut wire = Vec::new();
        wire.extend_from_slice(&e.keepalive());
        wire.extend_from_slice(&e.chunk("Bonjour", "mistral-small"));
        wire.extend_from_slice(&e.keepalive());
        wire.extend_from_slice(&e.chunk(", ça va ?", "mistral-small"));
        wire.extend_from_slice(&e.done(&done(
            "mistral-small",
            Usage::new(40, 7),
            FinishReason::Length,
        )));
        let mut units = Vec::new();
        SseParser::new().push(&wire, &mut units).unwrap();
        let mut decoder = EventDecoder::new("loop");
        let mut events = Vec::new();
        for unit in units {
            decoder.unit(unit, &mut events).unwrap();
        }
        assert_eq!(
            events,
            [
                StreamEvent::Model("mistral-small".into()),
                StreamEvent::Usage(Usage::new(0, 0)),
                StreamEvent::Text("Bonjour".into()),
                StreamEvent::Text(", ça va ?".into()),
                StreamEvent::Usage(Usage::new(40, 7)),
                StreamEvent::Done {
                    usage: Usage::new(40, 7),
                    finish_reason: FinishReason::Length
                },
            ]
        );
    }

    #[test]
    fn every_event_names_its_type_in_both_lines() {
        let mut e = StreamEncoder::new("msg_1");
        let mut all = text(e.keepalive());
        all += &text(e.chunk("a", "m"));
        all += &text(e.done(&done("m", Usage::new(1, 1), FinishReason::ContentFilter)));
        all += &text(error_event(ErrorCode::Overloaded, "busy"));
        let events: Vec<&str> = all.strip_suffix("\n\n").unwrap().split("\n\n").collect();
        assert_eq!(events.len(), 9);
        for event in events {
            let (name, data) = event
                .strip_prefix("event: ")
                .and_then(|rest| rest.split_once("\ndata: "))
                .unwrap_or_else(|| panic!("malformed event {event:?}"));
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], name, "{event}");
        }
    }

    #[test]
    fn an_error_mid_stream_is_an_error_event_that_ends_the_stream() {
        let mut e = StreamEncoder::new("msg_1");
        let mut out = text(e.chunk("Hel", "llama3.2:1b"));
        let error = WireError::new(ErrorCode::UpstreamError, "ollama: connection reset");
        out += &text(e.error(&error));
        assert_eq!(
            out,
            format!(
                "{PREAMBLE}{}event: error\n\
data: {{\"type\":\"error\",\"error\":{{\"type\":\"api_error\",\"message\":\"ollama: connection reset\"}}}}\n\n",
                delta("Hel")
            )
        );
        assert!(e.is_ended());
        assert!(e.chunk("lo", "llama3.2:1b").is_empty());
        assert!(e.error(&error).is_empty(), "one error event at most");
        assert!(e
            .done(&done("m", Usage::default(), FinishReason::Stop))
            .is_empty());
    }

    #[test]
    fn an_error_before_any_chunk_is_the_error_event_alone() {
        let mut e = StreamEncoder::new("msg_1");
        let ping = text(e.keepalive());
        assert_eq!(ping, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
        let out = text(e.error(&WireError::new(ErrorCode::Timeout, "no first byte in 30 s")));
        assert_eq!(
            out,
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"no first byte in 30 s\"}}\n\n"
        );
    }

    #[test]
    fn an_empty_answer_still_opens_and_closes_the_message_with_the_model_that_answered() {
        let mut e = StreamEncoder::new("msg_1");
        let out = text(e.done(&done("llama3.2:1b", Usage::new(5, 0), FinishReason::Length)));
        assert!(out.starts_with(PREAMBLE), "{out}");
        assert!(out.contains("\"stop_reason\":\"max_tokens\""), "{out}");
        assert!(!out.contains("content_block_delta"), "{out}");
        assert!(out.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }

    #[test]
    fn keepalives_after_the_start_are_pings_between_deltas() {
        let mut e = StreamEncoder::new("msg_1");
        let first = text(e.chunk("a", "llama3.2:1b"));
        assert_eq!(first, format!("{PREAMBLE}{}", delta("a")));
        assert_eq!(
            text(e.keepalive()),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
        assert_eq!(text(e.chunk("b", "llama3.2:1b")), delta("b"));
    }

    /// The tool-use conversation of Anthropic's tool-use guide, with thinking on: the
    /// assistant's thinking (signed with provd's token), its call, and the result.
    #[test]
    fn a_tool_conversation_with_thinking_maps_tools_calls_results_and_state() {
        let state = json!({"type": "anthropic", "state": {"blocks": [{"type": "thinking", "signature": "EqQBCkYIARgC"}]}});
        let r = parse(json!({
            "model": "m/mock-1",
            "max_tokens": 4096,
            "tools": [{
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
                "cache_control": {"type": "ephemeral"},
            }],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What's the weather like in San Francisco?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
                    {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "I should call get_weather.", "signature": super::super::content::state_token(&state)},
                    {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix"},
                    {"type": "text", "text": "I'll check."},
                    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9", "content": [{"type": "text", "text": "15 degrees"}]},
                    {"type": "tool_result", "tool_use_id": "toolu_02", "content": "no such city", "is_error": true},
                    {"type": "text", "text": "And tomorrow?"},
                ]},
            ],
        }))
        .unwrap()
        .generate;
        assert_eq!(r.tools.len(), 1);
        assert_eq!(r.tools[0].name, "get_weather");
        assert_eq!(
            r.tools[0].parameters.as_ref().unwrap()["required"],
            json!(["location"])
        );
        assert_eq!(r.tool_choice, Some(ToolChoice::Required));
        assert_eq!(
            r.reasoning,
            Some(Reasoning {
                effort: None,
                budget_tokens: Some(2048),
                show: true
            })
        );
        assert_eq!(r.messages.len(), 5, "{:?}", r.messages);
        assert_eq!(
            r.messages[0].images,
            [
                Image::Base64 {
                    media_type: "image/jpeg".into(),
                    data: "/9j/4AAQ".into()
                },
                Image::Url {
                    url: "https://upload.wikimedia.org/a.jpg".into()
                }
            ]
        );
        let assistant = &r.messages[1];
        assert_eq!(assistant.content, "I'll check.");
        assert_eq!(
            assistant.tool_calls,
            [ToolCall {
                id: "toolu_01A09q90qw90lq917835lq9".into(),
                name: "get_weather".into(),
                arguments: "{\"location\":\"San Francisco, CA\"}".into()
            }]
        );
        assert_eq!(assistant.provider_state, Some(state));
        assert_eq!(
            r.messages[2],
            Message::tool_result("toolu_01A09q90qw90lq917835lq9", "15 degrees")
        );
        assert_eq!(
            r.messages[3],
            Message {
                is_error: true,
                ..Message::tool_result("toolu_02", "no such city")
            }
        );
        assert_eq!(r.messages[4], turn(Role::User, "And tomorrow?"));
        for (choice, expected) in [
            (json!({"type": "auto"}), ToolChoice::Auto),
            (json!({"type": "none"}), ToolChoice::None),
            (
                json!({"type": "tool", "name": "get_weather"}),
                ToolChoice::Tool("get_weather".into()),
            ),
        ] {
            assert_eq!(
                parse(with("tool_choice", choice))
                    .unwrap()
                    .generate
                    .tool_choice,
                Some(expected)
            );
        }
    }

    #[test]
    fn a_signature_provd_did_not_write_is_dropped_and_disabled_thinking_asks_nothing() {
        let r = parse(with(
            "messages",
            json!([
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "EqQBCkYIARgCIkA"},
                    {"type": "text", "text": "a"},
                ]},
            ]),
        ))
        .unwrap()
        .generate;
        assert_eq!(r.messages[1].provider_state, None);
        assert_eq!(r.messages[1].content, "a");
        let r = parse(with("thinking", json!({"type": "disabled"})))
            .unwrap()
            .generate;
        assert_eq!(r.reasoning, None);
    }

    #[test]
    fn structured_output_maps_from_the_beta_and_the_ga_fields() {
        let schema = json!({"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]});
        let expected = Some(ResponseFormat::JsonSchema {
            name: "output".into(),
            schema: schema.clone(),
            strict: true,
        });
        let beta = parse(with(
            "output_format",
            json!({"type": "json_schema", "schema": schema}),
        ))
        .unwrap()
        .generate;
        assert_eq!(beta.response_format, expected);
        let ga = parse(with(
            "output_config",
            json!({"format": {"type": "json_schema", "schema": schema}}),
        ))
        .unwrap()
        .generate;
        assert_eq!(ga.response_format, expected);
    }

    fn done_with_calls() -> GenerateDone {
        GenerateDone {
            tool_calls: vec![ToolCall {
                id: "toolu_01".into(),
                name: "get_weather".into(),
                arguments: "{\"location\":\"Paris\"}".into(),
            }],
            reasoning: Some("Thinking about: weather".into()),
            provider_state: Some(json!({"type": "mock", "state": {"signature": "mock-signature"}})),
            ..done("mock-1", Usage::new(10, 5), FinishReason::ToolCalls)
        }
    }

    #[test]
    fn a_whole_answer_has_thinking_with_the_state_as_signature_then_text_then_tool_use() {
        let done = done_with_calls();
        let body = message("msg_1", "Let me check.", &done);
        assert_eq!(body["stop_reason"], "tool_use");
        let token = super::super::content::state_token(done.provider_state.as_ref().unwrap());
        assert_eq!(
            body["content"],
            json!([
                {"type": "thinking", "thinking": "Thinking about: weather", "signature": token},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"location": "Paris"}},
            ])
        );
        let calls_only = message(
            "msg_1",
            "",
            &GenerateDone {
                reasoning: None,
                provider_state: None,
                ..done
            },
        );
        assert_eq!(calls_only["content"].as_array().unwrap().len(), 1);
        assert_eq!(calls_only["content"][0]["type"], "tool_use");
    }

    /// The data of each event of a stream, in order.
    fn events(wire: &str) -> Vec<Value> {
        wire.strip_suffix("\n\n")
            .unwrap()
            .split("\n\n")
            .map(|e| serde_json::from_str(e.split_once("\ndata: ").unwrap().1).unwrap())
            .collect()
    }

    #[test]
    fn a_streamed_turn_opens_thinking_text_and_tool_use_blocks_in_turn_and_signs_at_the_end() {
        let mut e = StreamEncoder::new("msg_1");
        let mut wire = text(e.reasoning("Thinking ", "m"));
        wire += &text(e.reasoning("about it", "m"));
        wire += &text(e.chunk("Checking.", "m"));
        wire += &text(e.tool_call(
            &ToolCallDelta {
                index: 0,
                id: Some("toolu_01".into()),
                name: Some("get_weather".into()),
                arguments: "{\"loc".into(),
            },
            "m",
        ));
        wire += &text(e.tool_call(
            &ToolCallDelta {
                index: 0,
                id: None,
                name: None,
                arguments: "ation\":\"Paris\"}".into(),
            },
            "m",
        ));
        let done = done_with_calls();
        wire += &text(e.done(&done));
        let token = super::super::content::state_token(done.provider_state.as_ref().unwrap());
        let got: Vec<Value> = events(&wire)
            .into_iter()
            .filter(|e| e["type"] != "ping")
            .map(|mut e| {
                if let Some(m) = e.get_mut("message") {
                    *m = json!("…");
                }
                e
            })
            .collect();
        assert_eq!(
            got,
            [
                json!({"type": "message_start", "message": "…"}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Thinking "}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "about it"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Checking."}}),
                json!({"type": "content_block_stop", "index": 1}),
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}}),
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"loc"}}),
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "ation\":\"Paris\"}"}}),
                json!({"type": "content_block_stop", "index": 2}),
                json!({"type": "content_block_start", "index": 3, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
                json!({"type": "content_block_delta", "index": 3, "delta": {"type": "signature_delta", "signature": token}}),
                json!({"type": "content_block_stop", "index": 3}),
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"input_tokens": 10, "output_tokens": 5}}),
                json!({"type": "message_stop"}),
            ]
        );
    }

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        for (finish, reason) in [
            (FinishReason::Stop, "end_turn"),
            (FinishReason::Length, "max_tokens"),
            (FinishReason::ContentFilter, "refusal"),
            (FinishReason::ToolCalls, "tool_use"),
            (FinishReason::Other, "end_turn"),
        ] {
            assert_eq!(stop_reason(finish), reason, "{finish:?}");
        }
    }

    #[test]
    fn the_whole_answer_is_a_message_object_with_the_providers_usage() {
        let body = message(
            "msg_1",
            "Hello!",
            &done("gpt-4o-mini", Usage::new(9, 2), FinishReason::Length),
        );
        assert_eq!(
            body,
            json!({
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "Hello!"}],
                "model": "gpt-4o-mini",
                "stop_reason": "max_tokens",
                "stop_sequence": null,
                "usage": {"input_tokens": 9, "output_tokens": 2},
            })
        );
    }

    #[test]
    fn every_error_code_has_its_status_and_anthropic_type() {
        for (code, status, kind) in [
            (ErrorCode::InvalidRequest, 400, "invalid_request_error"),
            (ErrorCode::ProtocolError, 400, "invalid_request_error"),
            (ErrorCode::Unauthenticated, 401, "authentication_error"),
            (ErrorCode::PermissionDenied, 403, "permission_error"),
            (ErrorCode::NotFound, 404, "not_found_error"),
            (ErrorCode::RateLimited, 429, "rate_limit_error"),
            (ErrorCode::Internal, 500, "api_error"),
            (ErrorCode::UpstreamError, 502, "api_error"),
            (ErrorCode::Overloaded, 503, "overloaded_error"),
            (ErrorCode::Unavailable, 503, "api_error"),
            (ErrorCode::Timeout, 504, "timeout_error"),
            (ErrorCode::Cancelled, 499, "invalid_request_error"),
        ] {
            let (s, body) = error_body(code, "it failed");
            assert_eq!(s, status, "{code}");
            assert_eq!(
                body,
                json!({"type": "error", "error": {"type": kind, "message": "it failed"}}),
                "{code}"
            );
            let event = text(error_event(code, "it failed"));
            assert_eq!(
                event,
                format!("event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":\"it failed\"}}}}\n\n")
            );
        }
        assert_eq!(ErrorCode::ALL.len(), 12, "a new code needs a row above");
    }

    #[test]
    fn message_ids_are_msg_and_24_random_hex_digits() {
        let (a, b) = (new_message_id(), new_message_id());
        for id in [&a, &b] {
            let hex = id.strip_prefix("msg_").unwrap();
            assert_eq!(hex.len(), 24);
            assert!(hex.bytes().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        assert_ne!(a, b);
    }

    /// The codec's output, as tests/python/anthropic_sdk.py serves it to the SDK, with
    /// what the SDK must make of it.
    fn sdk_fixtures() -> Value {
        let model = "llama3.2:1b";
        let text_one = "Hello";
        let text_two = ", wörld\n\"quoted\" </s>";
        let mut stream = StreamEncoder::new("msg_sdk_stream");
        let mut sse = String::new();
        sse += &text(stream.keepalive());
        sse += &text(stream.chunk(text_one, model));
        sse += &text(stream.keepalive());
        sse += &text(stream.chunk(text_two, model));
        sse += &text(stream.done(&done(model, Usage::new(21, 4), FinishReason::Stop)));

        let mut failing = StreamEncoder::new("msg_sdk_error");
        let mut failed = text(failing.chunk("Hel", model));
        failed += &text(failing.error(&WireError::new(
            ErrorCode::Overloaded,
            "ollama: the upstream is busy",
        )));

        let whole = message(
            "msg_sdk_whole",
            "A whole answer.",
            &done("gpt-4o-mini", Usage::new(9, 3), FinishReason::Length),
        );

        let sse_reply = |body: String| json!({"status": 200, "content_type": EVENT_STREAM_CONTENT_TYPE, "body": body});
        let mut replies = json!({
            "stream": sse_reply(sse),
            "stream_error": sse_reply(failed),
            "message": {"status": 200, "content_type": "application/json", "body": whole.to_string()},
        });
        let mut errors = Vec::new();
        let mut add_error = |name: String, e: ApiError| {
            replies[name.as_str()] = json!({
                "status": e.status, "content_type": "application/json", "body": e.json().to_string(),
            });
            errors.push(
                json!({"model": name, "status": e.status, "type": e.kind, "message": e.message}),
            );
        };
        for code in ErrorCode::ALL {
            add_error(
                format!("error_{code}"),
                ApiError::from_code(code, format!("{code}: it failed")),
            );
        }
        add_error("error_too_large".into(), ApiError::too_large(1024));
        add_error(
            "error_refused".into(),
            parse(with("top_k", json!(3))).unwrap_err(),
        );
        json!({
            "replies": replies,
            "errors": errors,
            "stream": {
                "event_types": [
                    "message_start", "content_block_start", "content_block_delta",
                    "content_block_delta", "content_block_stop", "message_delta", "message_stop",
                ],
                "id": "msg_sdk_stream",
                "model": model,
                "text": format!("{text_one}{text_two}"),
                "stop_reason": "end_turn",
                "input_tokens": 21,
                "output_tokens": 4,
            },
            "stream_error": {
                "text_before": "Hel",
                "type": "overloaded_error",
                "message": "ollama: the upstream is busy",
            },
            "message": {
                "id": "msg_sdk_whole",
                "model": "gpt-4o-mini",
                "text": "A whole answer.",
                "stop_reason": "max_tokens",
                "input_tokens": 9,
                "output_tokens": 3,
            },
        })
    }

    #[test]
    fn the_official_anthropic_sdk_reads_what_the_codec_writes_and_sends_what_it_parses() {
        // The suite's Python: `$PROVD_PYTHON`, which scripts/test points at its virtual
        // environment, else `python3`.
        let python = std::env::var_os("PROVD_PYTHON")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".into());
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures.json");
        let requests = dir.path().join("requests.json");
        std::fs::write(&fixtures, sdk_fixtures().to_string()).unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/python/anthropic_sdk.py"
        );
        let ran = std::process::Command::new(&python)
            .arg(script)
            .arg(&fixtures)
            .arg(&requests)
            .output();
        let skip = |why: String| {
            // CI installs the SDK, so there a missing one is a failure, not a skip.
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("SKIPPED: {why} (scripts/test installs tests/python/requirements.txt into the suite's virtual environment and sets PROVD_PYTHON to it)");
        };
        let shown = python.to_string_lossy();
        let out = match ran {
            Ok(out) => out,
            Err(e) => return skip(format!("{shown} cannot be run: {e}")),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(77) {
            return skip(format!("{shown}: {}", stdout.trim()));
        }
        assert!(out.status.success(), "{stdout}\n{stderr}");
        assert!(stdout.lines().any(|l| l.ends_with(" 0 failed")), "{stdout}");

        // Every body the SDK sent is one the codec takes.
        let sent: Vec<Value> = serde_json::from_slice(&std::fs::read(&requests).unwrap()).unwrap();
        assert!(sent.len() > ErrorCode::ALL.len(), "{} requests", sent.len());
        let mut parsed = Vec::new();
        for body in &sent {
            let r = parse_request(body.to_string().as_bytes(), LIMIT)
                .unwrap_or_else(|e| panic!("{e}: {body}"));
            assert_eq!(r.generate.model.as_deref(), body["model"].as_str());
            assert_eq!(r.stream(), body["stream"] == json!(true), "{body}");
            parsed.push(r);
        }
        let helper = parsed
            .iter()
            .find(|r| r.generate.system.is_some())
            .expect("the stream helper's request");
        let g = &helper.generate;
        assert_eq!(g.system.as_deref(), Some("Be brief.\n\nBe kind."));
        assert_eq!(
            g.messages,
            [
                turn(Role::User, "Hi"),
                turn(Role::Assistant, "Hello."),
                turn(Role::User, "How are you?"),
            ]
        );
        assert_eq!((g.temperature, g.top_p), (Some(0.5), Some(0.9)));
        assert_eq!(
            (g.stop.as_slice(), g.max_tokens),
            (&["END".to_owned()][..], Some(64))
        );
        assert!(helper.stream());
    }

    /// JSON values of any shape, a few levels deep.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-z_ ]{0,8}".prop_map(Value::from),
            prop_oneof![
                Just("user"),
                Just("assistant"),
                Just("text"),
                Just("image"),
                Just("auto"),
                Just("disabled")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(field_name(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Mostly the API's own field names, so the checks deep inside are reached.
    fn field_name() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "model",
                "max_tokens",
                "messages",
                "system",
                "temperature",
                "top_p",
                "top_k",
                "stop_sequences",
                "stream",
                "metadata",
                "user_id",
                "tools",
                "tool_choice",
                "thinking",
                "role",
                "content",
                "type",
                "text",
                "cache_control",
                "service_tier",
            ])
            .prop_map(str::to_owned),
            "[a-z]{1,6}",
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_a_refusal_is_a_4xx(body in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Err(e) = parse_request(&body, 128) {
                prop_assert!((400..500).contains(&e.status));
            }
        }

        #[test]
        fn arbitrary_json_never_panics_and_is_a_request_or_a_4xx(mut body in any_json(), base in any::<bool>()) {
            // Half the cases start from a valid request, so one bad field is what fails.
            if base {
                if let Value::Object(extra) = body {
                    let mut valid = minimal();
                    valid.as_object_mut().unwrap().extend(extra);
                    body = valid;
                }
            }
            match parse_request(body.to_string().as_bytes(), LIMIT) {
                Ok(r) => {
                    prop_assert!(r.generate.model.is_some_and(|m| !m.is_empty()));
                    prop_assert!(r.generate.max_tokens.is_some_and(|n| n >= 1));
                }
                Err(e) => {
                    prop_assert_eq!(e.status, 400);
                    prop_assert_eq!(e.kind, "invalid_request_error");
                    prop_assert!(!e.message.is_empty());
                }
            }
        }
    }
}
