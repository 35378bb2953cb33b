//! The built-in mock provider: a deterministic answer streamed chunk by chunk, with the
//! knobs tests and benchmarks need (text, chunk count, delay, faults).
//!
//! Options come from `[providers.<id>.options]` and may be overridden per request with
//! `additional_params.mock = { … }`, with the same names:
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `text` | the answer | a sentence about provd |
//! | `chunks` | split the text into this many chunks (0: one chunk per word) | 0 |
//! | `numbered` | ignore `text`; chunk *i* is `"i "` (needs `chunks`) | false |
//! | `chunk_delay_ms` | pause before each chunk after the first | 0 |
//! | `first_chunk_delay_ms` | pause before the first chunk (the generation is still opening) | 0 |
//! | `fault` | `none`, `before_first_chunk` or `mid_stream` | `none` |
//! | `fault_after_chunks` | for `mid_stream`: chunks sent before the failure | half |
//! | `fault_code` | the error code of the fault | `upstream_error` |
//! | `models` | model ids `list_models` returns | the default model |
//! | `init_delay_ms` | how long initializing an instance takes (configuration only) | 0 |
//! | `tool_calls` | the calls a turn with tools makes: `[{"name", "arguments"}, …]` (per request) | one call |
//!
//! Tools, JSON answers, reasoning and images follow from the request alone
//! ([`super::mock_script`]), so a client runs a tool conversation with no scripting.
//!
//! An option given as nil keeps its default, as the protocol's optional fields do.
//!
//! Usage is deterministic too: prompt tokens are the words of the system prompt, the
//! messages and the prompt; each chunk is one completion token, and `max_tokens` cuts the
//! answer short with finish reason `length`. The request's `stop` sequences are honoured:
//! the answer ends just before the first occurrence of any of them (the sequence itself
//! is not sent), with finish reason `stop`.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::stream;
use provd_client::message::ProviderStatus;
use provd_client::{ErrorCode, FinishReason, GenerateRequest, ModelInfo, ToolCallDelta, Usage};
use serde_json::{Map, Value};

use super::{
    word_count, BoxFuture, EventStream, Provider, ProviderError, ProviderSpec, ProviderState,
    StreamEvent,
};
use crate::settings::ProviderKind;

/// The answer when none is configured.
pub const DEFAULT_TEXT: &str = "provd streamed this answer from its built-in mock provider, \
chunk by chunk, over a local socket; configure a real provider to talk to a model.";

/// The model a mock provider serves and lists when its table names none.
pub const DEFAULT_MODEL: &str = "mock-1";

/// Where a mock generation fails, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MockFault {
    /// It doesn't.
    None,
    /// `generate` itself fails, before any chunk.
    BeforeFirstChunk,
    /// The stream fails after `fault_after_chunks` chunks.
    MidStream,
}

/// The mock's knobs; see the module docs.
#[derive(Clone, Debug, PartialEq)]
pub struct MockOptions {
    /// The answer.
    pub text: String,
    /// Chunks to split it into (0: per word).
    pub chunks: u32,
    /// Chunk *i* is `"i "`.
    pub numbered: bool,
    /// Pause between chunks.
    pub chunk_delay: Duration,
    /// Pause before the first chunk.
    pub first_chunk_delay: Duration,
    /// Fault mode.
    pub fault: MockFault,
    /// For a mid-stream fault: chunks before it.
    pub fault_after_chunks: Option<u32>,
    /// Code of the fault.
    pub fault_code: ErrorCode,
    /// What `list_models` returns.
    pub models: Vec<String>,
    /// How long `initialize` takes.
    pub init_delay: Duration,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            text: DEFAULT_TEXT.to_owned(),
            chunks: 0,
            numbered: false,
            chunk_delay: Duration::ZERO,
            first_chunk_delay: Duration::ZERO,
            fault: MockFault::None,
            fault_after_chunks: None,
            fault_code: ErrorCode::UpstreamError,
            models: Vec::new(),
            init_delay: Duration::ZERO,
        }
    }
}

/// A bad option: the field and the rule it broke.
pub type OptionError = (String, String);

impl MockOptions {
    /// Reads `[providers.<id>.options]`.
    pub fn from_table(table: &toml::Table) -> Result<MockOptions, OptionError> {
        let json = serde_json::to_value(table).map_err(|e| (String::new(), e.to_string()))?;
        let mut options = MockOptions::default();
        if let Value::Object(map) = json {
            options.apply(&map)?;
        }
        Ok(options)
    }

    /// Applies every option present in `map` over the current values.
    pub fn apply(&mut self, map: &Map<String, Value>) -> Result<(), OptionError> {
        let bad =
            |field: &str, rule: &str, v: &Value| (field.to_owned(), format!("{rule}, got {v}"));
        for (key, v) in map {
            if v.is_null() {
                // Optional fields accept nil for "not given" (PROTOCOL.md section 3).
                continue;
            }
            match key.as_str() {
                "text" => {
                    self.text = v
                        .as_str()
                        .ok_or_else(|| bad(key, "must be a string", v))?
                        .to_owned()
                }
                "chunks" => {
                    self.chunks = as_u32(v).ok_or_else(|| bad(key, "must be an integer >= 0", v))?
                }
                "numbered" => {
                    self.numbered = v
                        .as_bool()
                        .ok_or_else(|| bad(key, "must be true or false", v))?
                }
                "chunk_delay_ms" => {
                    self.chunk_delay = Duration::from_millis(
                        v.as_u64()
                            .ok_or_else(|| bad(key, "must be an integer >= 0", v))?,
                    )
                }
                "init_delay_ms" => {
                    self.init_delay = Duration::from_millis(
                        v.as_u64()
                            .ok_or_else(|| bad(key, "must be an integer >= 0", v))?,
                    )
                }
                "first_chunk_delay_ms" => {
                    self.first_chunk_delay = Duration::from_millis(
                        v.as_u64()
                            .ok_or_else(|| bad(key, "must be an integer >= 0", v))?,
                    )
                }
                "fault" => {
                    self.fault = match v.as_str() {
                        Some("none") => MockFault::None,
                        Some("before_first_chunk") => MockFault::BeforeFirstChunk,
                        Some("mid_stream") => MockFault::MidStream,
                        _ => {
                            return Err(bad(
                                key,
                                "must be \"none\", \"before_first_chunk\" or \"mid_stream\"",
                                v,
                            ))
                        }
                    }
                }
                "fault_after_chunks" => {
                    self.fault_after_chunks =
                        Some(as_u32(v).ok_or_else(|| bad(key, "must be an integer >= 0", v))?)
                }
                "fault_code" => {
                    self.fault_code =
                        v.as_str().and_then(ErrorCode::from_name).ok_or_else(|| {
                            bad(
                                key,
                                "must be an error code name such as \"rate_limited\"",
                                v,
                            )
                        })?
                }
                "models" => {
                    self.models = v
                        .as_array()
                        .and_then(|a| a.iter().map(|m| m.as_str().map(str::to_owned)).collect())
                        .ok_or_else(|| bad(key, "must be a list of strings", v))?
                }
                // Scripted tool calls are read with the request (`mock_script`).
                "tool_calls" => {}
                _ => return Err((key.clone(), "is not a mock option".to_owned())),
            }
        }
        if self.numbered && self.chunks == 0 {
            return Err((
                "chunks".into(),
                "must be > 0 when numbered = true, got 0".into(),
            ));
        }
        Ok(())
    }

    /// The answer, split into chunks.
    pub fn chunk_texts(&self) -> Vec<String> {
        if self.numbered {
            return (0..self.chunks).map(|i| format!("{i} ")).collect();
        }
        if self.chunks == 0 {
            return split_words(&self.text);
        }
        split_even(&self.text, self.chunks as usize)
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Words with their trailing whitespace, so the chunks concatenate back to the text.
fn split_words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            in_space = true;
        } else if in_space {
            out.push(text[start..i].to_owned());
            start = i;
            in_space = false;
        }
    }
    if start < text.len() {
        out.push(text[start..].to_owned());
    }
    out
}

/// `n` pieces of near-equal length, cut on character boundaries.
fn split_even(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    (0..n)
        .map(|i| {
            let a = i * chars.len() / n;
            let b = (i + 1) * chars.len() / n;
            chars[a..b].iter().collect()
        })
        .collect()
}

/// Ends the answer just before the earliest occurrence of any `stop` sequence, as real
/// providers do: chunks after it are dropped and the one holding it is cut. Empty
/// sequences are ignored.
fn cut_at_stop(chunks: &mut Vec<String>, stop: &[String]) {
    let text = chunks.concat();
    let Some(end) = stop
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
    else {
        return;
    };
    let mut at = 0;
    let mut kept = Vec::new();
    for chunk in chunks.drain(..) {
        if at + chunk.len() <= end {
            at += chunk.len();
            kept.push(chunk);
            continue;
        }
        // `end` is where a match starts, so a char boundary of `text`, hence of `chunk`.
        let piece = &chunk[..end - at];
        if !piece.is_empty() {
            kept.push(piece.to_owned());
        }
        break;
    }
    *chunks = kept;
}

/// The mock provider instance.
#[derive(Debug)]
pub struct MockProvider {
    spec: ProviderSpec,
    options: MockOptions,
    state: ProviderState,
}

impl MockProvider {
    /// Builds an instance from its configuration.
    pub fn new(spec: ProviderSpec) -> Result<MockProvider, ProviderError> {
        let options = MockOptions::from_table(&spec.config.options).map_err(|(field, rule)| {
            ProviderError::new(
                ErrorCode::Internal,
                format!("providers.{}.options.{field} {rule}", spec.id),
            )
        })?;
        Ok(MockProvider {
            spec,
            options,
            state: ProviderState::default(),
        })
    }

    fn options_for(&self, request: &GenerateRequest) -> Result<MockOptions, ProviderError> {
        let mut options = self.options.clone();
        match request.additional_params.get("mock") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => options.apply(map).map_err(|(field, rule)| {
                ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!("additional_params.mock.{field} {rule}"),
                )
            })?,
            Some(other) => {
                return Err(ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!("additional_params.mock must be a map, got {other}"),
                ))
            }
        }
        Ok(options)
    }
}

fn fault_error(options: &MockOptions, at: &str) -> ProviderError {
    ProviderError::new(options.fault_code, format!("mock fault {at} (configured)"))
}

impl Provider for MockProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Mock
    }

    fn model(&self) -> &str {
        &self.spec.model
    }

    fn state(&self) -> &ProviderState {
        &self.state
    }

    fn initialize(&self) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async {
            if !self.options.init_delay.is_zero() {
                tokio::time::sleep(self.options.init_delay).await;
            }
            self.state.set_status(ProviderStatus::Ready);
            Ok(())
        })
    }

    fn generate(
        &self,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let options = self.options_for(&request)?;
            if options.fault == MockFault::BeforeFirstChunk {
                return Err(fault_error(&options, "before the first chunk"));
            }
            let prompt_tokens = word_count(request.system.as_deref().unwrap_or(""))
                + request
                    .messages
                    .iter()
                    .map(|m| word_count(&m.content))
                    .sum::<u32>()
                + word_count(request.prompt.as_deref().unwrap_or(""));
            let max_tokens = request.max_tokens.unwrap_or(self.spec.config.max_tokens) as usize;
            let script = super::mock_script::script(&request, &options.text)?;
            let mut chunks = match &script.text {
                Some(text) => MockOptions {
                    text: text.clone(),
                    numbered: false,
                    ..options.clone()
                }
                .chunk_texts(),
                None if !script.calls.is_empty() => Vec::new(),
                None => options.chunk_texts(),
            };
            cut_at_stop(&mut chunks, &request.stop);
            let finish_reason = if chunks.len() > max_tokens {
                chunks.truncate(max_tokens);
                FinishReason::Length
            } else if !script.calls.is_empty() {
                FinishReason::ToolCalls
            } else {
                FinishReason::Stop
            };
            let (before, after, reasoning_tokens) = extra_events(script);
            let fail_at = match options.fault {
                MockFault::MidStream => Some(
                    options
                        .fault_after_chunks
                        .map_or(chunks.len() / 2, |n| n as usize),
                ),
                _ => None,
            };
            let state = Playback {
                chunks: chunks.into_iter(),
                sent: 0,
                prompt_tokens,
                delay: options.chunk_delay,
                first_delay: options.first_chunk_delay,
                fail_at,
                finish_reason,
                fault: fault_error(&options, "in the middle of the stream"),
                phase: Phase::Start,
                before,
                after,
                extra: 0,
                reasoning_tokens,
            };
            let events = stream::unfold(state, |mut s| async move {
                let event = s.step().await?;
                Some((event, s))
            });
            Ok(Box::pin(events) as EventStream)
        })
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>> {
        Box::pin(async {
            let ids = if self.options.models.is_empty() {
                vec![self.spec.model.clone()]
            } else {
                self.options.models.clone()
            };
            Ok(ids
                .into_iter()
                .map(|id| ModelInfo {
                    display_name: Some(format!("Mock ({id})")),
                    id,
                    provider: self.spec.id.clone(),
                    context_window: Some(1 << 20),
                    created_at: None,
                    ..ModelInfo::default()
                })
                .collect())
        })
    }
}

/// The events a script adds around the text: reasoning before it (one piece per word),
/// tool calls (each in two pieces) and the provider state after it; and the reasoning's
/// token count, when the request asked for reasoning.
fn extra_events(
    script: super::mock_script::Script,
) -> (VecDeque<StreamEvent>, VecDeque<StreamEvent>, Option<u32>) {
    let reasoning = script
        .reasoning
        .as_deref()
        .map(split_words)
        .unwrap_or_default();
    let reasoning_tokens = script.reasoning.is_some().then_some(reasoning.len() as u32);
    let before = reasoning.into_iter().map(StreamEvent::Reasoning).collect();
    let mut after = VecDeque::new();
    for (index, (name, arguments)) in script.calls.into_iter().enumerate() {
        let index = index as u32;
        let half = arguments
            .char_indices()
            .map(|(i, _)| i)
            .nth(arguments.chars().count() / 2)
            .unwrap_or(arguments.len());
        after.push_back(StreamEvent::ToolCall(ToolCallDelta {
            index,
            id: Some(format!("mock_call_{index}")),
            name: Some(name),
            arguments: arguments[..half].to_owned(),
        }));
        after.push_back(StreamEvent::ToolCall(ToolCallDelta {
            index,
            arguments: arguments[half..].to_owned(),
            ..ToolCallDelta::default()
        }));
    }
    if let Some(state) = script.provider_state {
        after.push_back(StreamEvent::ProviderState(state));
    }
    (before, after, reasoning_tokens)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Streaming,
    Failing,
    Finished,
}

struct Playback {
    chunks: std::vec::IntoIter<String>,
    sent: usize,
    prompt_tokens: u32,
    delay: Duration,
    first_delay: Duration,
    fail_at: Option<usize>,
    finish_reason: FinishReason,
    fault: ProviderError,
    phase: Phase,
    /// Reasoning, sent before the text.
    before: VecDeque<StreamEvent>,
    /// Tool calls and state, sent after it.
    after: VecDeque<StreamEvent>,
    /// Pieces of `before` and `after` sent: each is a completion token.
    extra: u32,
    reasoning_tokens: Option<u32>,
}

impl Playback {
    async fn step(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        let usage = Usage::new(self.prompt_tokens, self.sent as u32 + self.extra)
            .with_reasoning(self.reasoning_tokens);
        match self.phase {
            Phase::Finished => None,
            Phase::Failing => {
                self.phase = Phase::Finished;
                Some(Err(self.fault.clone()))
            }
            Phase::Start => {
                self.phase = Phase::Streaming;
                Some(Ok(StreamEvent::Usage(usage)))
            }
            Phase::Streaming => {
                if let Some(event) = self.before.pop_front() {
                    self.extra += 1;
                    return Some(Ok(event));
                }
                if self.fail_at == Some(self.sent) {
                    // Report the usage so far first, as a real upstream's last usage
                    // event would, so the failure carries it.
                    self.phase = Phase::Failing;
                    return Some(Ok(StreamEvent::Usage(usage)));
                }
                let Some(text) = self.chunks.next() else {
                    if let Some(event) = self.after.pop_front() {
                        self.extra += u32::from(matches!(event, StreamEvent::ToolCall(_)));
                        return Some(Ok(event));
                    }
                    let usage = Usage::new(self.prompt_tokens, self.sent as u32 + self.extra)
                        .with_reasoning(self.reasoning_tokens);
                    self.phase = Phase::Finished;
                    return Some(Ok(StreamEvent::Done {
                        usage,
                        finish_reason: self.finish_reason,
                    }));
                };
                let delay = if self.sent == 0 {
                    self.first_delay
                } else {
                    self.delay
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                self.sent += 1;
                Some(Ok(StreamEvent::Text(text)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn provider(options: &str) -> MockProvider {
        let table = format!("type = \"mock\"\n[providers.m.options]\n{options}");
        MockProvider::new(ProviderSpec::for_test("m", &table, "mock-1", None)).unwrap()
    }

    async fn run(
        p: &MockProvider,
        req: GenerateRequest,
    ) -> Vec<Result<StreamEvent, ProviderError>> {
        match p.generate(req).await {
            Ok(s) => s.collect().await,
            Err(e) => vec![Err(e)],
        }
    }

    #[tokio::test]
    async fn chunks_concatenate_to_the_text_and_usage_counts_them() {
        let p = provider("");
        let mut req = GenerateRequest::prompt("three word prompt");
        req.system = Some("be brief".into());
        let events = run(&p, req).await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(StreamEvent::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, DEFAULT_TEXT);
        let n = split_words(DEFAULT_TEXT).len() as u32;
        assert_eq!(
            events.last().unwrap().as_ref().unwrap(),
            &StreamEvent::Done {
                usage: Usage::new(5, n),
                finish_reason: FinishReason::Stop
            }
        );
    }

    #[tokio::test]
    async fn max_tokens_cuts_the_answer_with_finish_reason_length() {
        let p = provider("numbered = true\nchunks = 10");
        let mut req = GenerateRequest::prompt("x");
        req.max_tokens = Some(3);
        let events = run(&p, req).await;
        assert_eq!(events.len(), 1 + 3 + 1);
        assert!(matches!(
            events.last().unwrap(),
            Ok(StreamEvent::Done { finish_reason: FinishReason::Length, usage }) if usage.completion_tokens == 3
        ));
    }

    #[tokio::test]
    async fn faults_fail_where_configured() {
        let p = provider("fault = \"before_first_chunk\"\nfault_code = \"rate_limited\"");
        let events = run(&p, GenerateRequest::prompt("x")).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].as_ref().unwrap_err().code, ErrorCode::RateLimited);

        let p =
            provider("numbered = true\nchunks = 6\nfault = \"mid_stream\"\nfault_after_chunks = 4");
        let events = run(&p, GenerateRequest::prompt("x")).await;
        let texts = events
            .iter()
            .filter(|e| matches!(e, Ok(StreamEvent::Text(_))))
            .count();
        assert_eq!(texts, 4);
        assert!(events.last().unwrap().is_err());
    }

    #[tokio::test]
    async fn request_overrides_are_checked() {
        let p = provider("");
        let mut req = GenerateRequest::prompt("x");
        req.additional_params
            .insert("mock".into(), serde_json::json!({"chunks": "many"}));
        let events = run(&p, req).await;
        let err = events[0].as_ref().unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(
            err.message
                .contains("additional_params.mock.chunks must be an integer"),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn stop_sequences_end_the_answer_before_them() {
        let p = provider("text = \"one two three. four five\"");
        let mut req = GenerateRequest::prompt("x");
        req.stop = vec!["zzz".into(), "ee. f".into(), "four".into()];
        let events = run(&p, req).await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(StreamEvent::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "one two thr");
        assert!(matches!(
            events.last().unwrap(),
            Ok(StreamEvent::Done { finish_reason: FinishReason::Stop, usage }) if usage.completion_tokens == 3
        ));
    }

    #[tokio::test]
    async fn options_given_as_nil_keep_their_defaults() {
        let p = provider("numbered = true\nchunks = 3");
        let mut req = GenerateRequest::prompt("x");
        req.additional_params.insert(
            "mock".into(),
            serde_json::json!({"chunks": null, "fault": null, "text": null}),
        );
        let events = run(&p, req.clone()).await;
        assert_eq!(events.len(), 1 + 3 + 1, "{events:?}");
        req.additional_params
            .insert("mock".into(), serde_json::Value::Null);
        assert_eq!(run(&p, req).await.len(), 1 + 3 + 1);
    }

    #[test]
    fn even_split_respects_utf8_boundaries() {
        let parts = split_even("héllo wörld ✓", 5);
        assert_eq!(parts.len(), 5);
        assert_eq!(parts.concat(), "héllo wörld ✓");
    }
}
