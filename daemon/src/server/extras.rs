//! What a generation gathers beside its text: tool calls assembled from their pieces,
//! reasoning kept for a whole answer, and the provider's state for the next turn.
//!
//! Providers report tool calls as they come ([`StreamEvent::ToolCall`] pieces, or one
//! piece with a whole call). Here the pieces get their ids (an upstream that gives none
//! gets `call_<request id>_<index>`, as DECISIONS says), the calls are kept in order,
//! and at the end every call's arguments must parse as JSON, or the generation fails
//! with `upstream_error`: a client must never run a tool on truncated arguments.
//!
//! [`StreamEvent::ToolCall`]: crate::provider::StreamEvent::ToolCall

use provd_client::{ErrorCode, GenerateRequest, ToolCall, ToolCallDelta};
use serde_json::Value;

use crate::provider::ProviderError;
use crate::untrusted::untrusted;

/// The most tool calls one turn may make: more is an upstream gone wrong.
pub const MAX_TOOL_CALLS: usize = 128;
/// The most argument and reasoning text one generation keeps in memory.
pub const MAX_KEPT_BYTES: usize = 8 << 20;

/// The extras of one generation in progress.
#[derive(Debug)]
pub struct Extras {
    request_id: u32,
    /// Whether the request gave tools: calls are forwarded only then.
    tools: bool,
    /// Whether the request asked to see the reasoning.
    show_reasoning: bool,
    /// Whether the reasoning is kept for the result (shown, and not streamed).
    keep_reasoning: bool,
    calls: Vec<ToolCall>,
    /// The upstream's index of each call in `calls`, to place later pieces.
    indexes: Vec<u32>,
    reasoning: String,
    kept: usize,
    provider_state: Option<Value>,
}

impl Extras {
    /// The extras of generation `request_id` for `request`.
    pub fn new(request_id: u32, request: &GenerateRequest) -> Extras {
        let show_reasoning = request.reasoning.as_ref().is_some_and(|r| r.show);
        Extras {
            request_id,
            tools: !request.tools.is_empty(),
            show_reasoning,
            keep_reasoning: show_reasoning && !request.stream,
            calls: Vec::new(),
            indexes: Vec::new(),
            reasoning: String::new(),
            kept: 0,
            provider_state: None,
        }
    }

    /// Takes a piece of a tool call; returns the piece to send the client (its id filled
    /// in on a call's first piece), or `None` when the request gave no tools.
    pub fn tool_call(
        &mut self,
        mut piece: ToolCallDelta,
    ) -> Result<Option<ToolCallDelta>, ProviderError> {
        if !self.tools {
            tracing::debug!("a tool call from the upstream for a request without tools; dropped");
            return Ok(None);
        }
        self.keep(piece.arguments.len())?;
        let upstream_index = piece.index;
        match self.indexes.iter().position(|&i| i == upstream_index) {
            Some(at) => {
                let call = &mut self.calls[at];
                call.arguments.push_str(&piece.arguments);
                if call.name.is_empty() {
                    if let Some(name) = piece.name.take() {
                        call.name = name;
                    }
                }
                piece.index = u32::try_from(at).unwrap_or(u32::MAX);
                piece.id = None;
            }
            None => {
                if self.calls.len() == MAX_TOOL_CALLS {
                    return Err(ProviderError::new(
                        ErrorCode::UpstreamError,
                        format!(
                            "the upstream made more than {MAX_TOOL_CALLS} tool calls in one turn"
                        ),
                    ));
                }
                // Calls are numbered 0, 1, 2 … in the order they began, whatever the
                // upstream's own numbering (Anthropic counts content blocks).
                let index = u32::try_from(self.calls.len()).unwrap_or(u32::MAX);
                let id = piece
                    .id
                    .take()
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{}_{index}", self.request_id));
                self.calls.push(ToolCall {
                    id: id.clone(),
                    name: piece.name.clone().unwrap_or_default(),
                    arguments: piece.arguments.clone(),
                });
                self.indexes.push(upstream_index);
                piece.index = index;
                piece.id = Some(id);
            }
        }
        Ok(Some(piece))
    }

    /// Takes a piece of reasoning; returns it when the client is to see it.
    pub fn reasoning(&mut self, piece: String) -> Result<Option<String>, ProviderError> {
        if !self.show_reasoning {
            return Ok(None);
        }
        if self.keep_reasoning {
            self.keep(piece.len())?;
            self.reasoning.push_str(&piece);
            return Ok(None);
        }
        Ok(Some(piece))
    }

    /// Takes the provider's state for the next turn, tagged with its provider type so
    /// that a turn sent to another type drops it. The last report wins.
    pub fn provider_state(&mut self, provider_type: &str, state: Value) {
        self.provider_state = Some(serde_json::json!({"type": provider_type, "state": state}));
    }

    fn keep(&mut self, bytes: usize) -> Result<(), ProviderError> {
        self.kept = self.kept.saturating_add(bytes);
        if self.kept > MAX_KEPT_BYTES {
            return Err(ProviderError::new(
                ErrorCode::UpstreamError,
                format!("the upstream's tool call arguments and reasoning passed {MAX_KEPT_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// The assembled calls (each one's arguments checked to parse; empty ones are `{}`),
    /// the kept reasoning and the provider state.
    pub fn finish(self) -> Result<Finished, ProviderError> {
        let mut calls = self.calls;
        for call in &mut calls {
            if call.name.is_empty() {
                return Err(ProviderError::new(
                    ErrorCode::UpstreamError,
                    format!(
                        "the upstream's tool call {} has no name",
                        untrusted(&call.id)
                    ),
                ));
            }
            if call.arguments.trim().is_empty() {
                call.arguments = "{}".to_owned();
            }
            if let Err(e) = serde_json::from_str::<Value>(&call.arguments) {
                return Err(ProviderError::new(
                    ErrorCode::UpstreamError,
                    format!(
                        "the arguments of the upstream's call to tool {} are not JSON ({e}); the call is not passed on",
                        untrusted(&call.name)
                    ),
                ));
            }
        }
        Ok(Finished {
            tool_calls: calls,
            // A provider that sends no reasoning text (OpenAI's Chat Completions) leaves
            // none, not an empty one.
            reasoning: (self.keep_reasoning && !self.reasoning.is_empty())
                .then_some(self.reasoning),
            provider_state: self.provider_state,
        })
    }
}

/// What [`Extras::finish`] hands to the result.
#[derive(Debug, Default)]
pub struct Finished {
    /// The calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// The whole reasoning, for a shown, non-streamed one.
    pub reasoning: Option<String>,
    /// `{"type": provider type, "state": …}`.
    pub provider_state: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use provd_client::{Reasoning, Tool};

    fn with_tools(stream: bool) -> GenerateRequest {
        GenerateRequest {
            tools: vec![Tool::new("f", "", serde_json::json!({"type": "object"}))],
            stream,
            reasoning: Some(Reasoning {
                show: true,
                ..Reasoning::default()
            }),
            ..GenerateRequest::default()
        }
    }

    fn piece(index: u32, id: Option<&str>, name: Option<&str>, args: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            name: name.map(str::to_owned),
            arguments: args.to_owned(),
        }
    }

    #[test]
    fn pieces_assemble_into_calls_in_order_with_ids_filled_and_indexes_renumbered() {
        let mut extras = Extras::new(7, &with_tools(true));
        // Anthropic-style block indexes (1 and 3) become calls 0 and 1.
        let first = extras
            .tool_call(piece(1, None, Some("f"), ""))
            .unwrap()
            .unwrap();
        assert_eq!((first.index, first.id.as_deref()), (0, Some("call_7_0")));
        extras
            .tool_call(piece(3, Some("toolu_1"), Some("g"), "{\"a\":"))
            .unwrap();
        let more = extras
            .tool_call(piece(1, None, None, "{\"x\": 1}"))
            .unwrap()
            .unwrap();
        assert_eq!((more.index, more.id), (0, None));
        extras.tool_call(piece(3, None, None, "2}")).unwrap();
        let done = extras.finish().unwrap();
        assert_eq!(
            done.tool_calls,
            vec![
                ToolCall {
                    id: "call_7_0".into(),
                    name: "f".into(),
                    arguments: "{\"x\": 1}".into()
                },
                ToolCall {
                    id: "toolu_1".into(),
                    name: "g".into(),
                    arguments: "{\"a\":2}".into()
                },
            ]
        );
    }

    #[test]
    fn arguments_that_are_not_json_fail_the_generation_and_empty_ones_are_an_empty_object() {
        let mut extras = Extras::new(1, &with_tools(true));
        extras
            .tool_call(piece(0, None, Some("f"), "{\"cut\": "))
            .unwrap();
        let e = extras.finish().unwrap_err();
        assert_eq!(e.code, ErrorCode::UpstreamError);
        assert!(e.message.contains("tool f"), "{e}");
        let mut extras = Extras::new(1, &with_tools(true));
        extras.tool_call(piece(0, None, Some("f"), "")).unwrap();
        assert_eq!(extras.finish().unwrap().tool_calls[0].arguments, "{}");
    }

    #[test]
    fn calls_for_a_request_without_tools_and_hidden_reasoning_go_nowhere() {
        let mut extras = Extras::new(1, &GenerateRequest::default());
        assert_eq!(
            extras.tool_call(piece(0, None, Some("f"), "{}")).unwrap(),
            None
        );
        assert_eq!(extras.reasoning("hmm".into()).unwrap(), None);
        let done = extras.finish().unwrap();
        assert!(done.tool_calls.is_empty() && done.reasoning.is_none());
    }

    #[test]
    fn shown_reasoning_is_streamed_or_kept_whole() {
        let mut streamed = Extras::new(1, &with_tools(true));
        assert_eq!(
            streamed.reasoning("a".into()).unwrap().as_deref(),
            Some("a")
        );
        assert_eq!(streamed.finish().unwrap().reasoning, None);
        let mut whole = Extras::new(1, &with_tools(false));
        assert_eq!(whole.reasoning("a".into()).unwrap(), None);
        whole.reasoning("b".into()).unwrap();
        assert_eq!(whole.finish().unwrap().reasoning.as_deref(), Some("ab"));
        let silent = Extras::new(1, &with_tools(false));
        assert_eq!(
            silent.finish().unwrap().reasoning,
            None,
            "no text is no reasoning"
        );
    }

    #[test]
    fn too_many_calls_or_too_much_text_is_an_upstream_error() {
        let mut extras = Extras::new(1, &with_tools(true));
        for i in 0..MAX_TOOL_CALLS as u32 {
            extras.tool_call(piece(i, None, Some("f"), "{}")).unwrap();
        }
        let e = extras
            .tool_call(piece(999, None, Some("f"), "{}"))
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UpstreamError);
        let mut extras = Extras::new(1, &with_tools(true));
        extras.tool_call(piece(0, None, Some("f"), "")).unwrap();
        let big = "x".repeat(MAX_KEPT_BYTES + 1);
        assert!(extras.tool_call(piece(0, None, None, &big)).is_err());
    }

    #[test]
    fn provider_state_returns_only_to_its_own_provider_type() {
        let mut extras = Extras::new(1, &with_tools(true));
        extras.provider_state("anthropic", serde_json::json!([{"signature": "s"}]));
        let state = extras.finish().unwrap().provider_state;
        let message = provd_client::Message {
            provider_state: state,
            ..provd_client::Message::default()
        };
        assert_eq!(
            crate::provider::state_for(&message, "anthropic").unwrap()[0]["signature"],
            "s"
        );
        assert_eq!(crate::provider::state_for(&message, "gemini"), None);
    }
}
