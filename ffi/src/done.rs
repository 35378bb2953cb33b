//! The end of a successful generation: the done result, its usage and its finish
//! reason, the tool calls the model made, its reasoning and its provider's state.

use std::ffi::c_char;

use ::provd_client::{FinishReason, GenerateDone, ToolCall, Usage};

use crate::args::{self, at};
use crate::panic::accessor;
use crate::status::provd_status;
use crate::{provd_str, NulString};

/// Token counts, normalized across providers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct provd_usage {
    /// Tokens in the prompt, the system prompt and the conversation.
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
    /// The sum of the two.
    pub total_tokens: u32,
}

impl From<Usage> for provd_usage {
    fn from(u: Usage) -> provd_usage {
        provd_usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
        }
    }
}

/// Why a generation stopped.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum provd_finish_reason {
    /// The model finished, or it hit a stop sequence.
    PROVD_FINISH_STOP = 0,
    /// The `max_tokens` cap was reached.
    PROVD_FINISH_LENGTH = 1,
    /// The provider's content filter stopped it.
    PROVD_FINISH_CONTENT_FILTER = 2,
    /// The model called one or more tools: `provd_done_tool_calls_len` and
    /// `provd_done_tool_calls_get` give them (the wire calls this `tool_calls`).
    PROVD_FINISH_TOOL_USE = 3,
    /// Anything else the provider reported. Treat values this header does not know the
    /// same way.
    PROVD_FINISH_OTHER = 4,
}

impl From<FinishReason> for provd_finish_reason {
    fn from(r: FinishReason) -> provd_finish_reason {
        match r {
            FinishReason::Stop => provd_finish_reason::PROVD_FINISH_STOP,
            FinishReason::Length => provd_finish_reason::PROVD_FINISH_LENGTH,
            FinishReason::ContentFilter => provd_finish_reason::PROVD_FINISH_CONTENT_FILTER,
            FinishReason::ToolCalls => provd_finish_reason::PROVD_FINISH_TOOL_USE,
            FinishReason::Other => provd_finish_reason::PROVD_FINISH_OTHER,
        }
    }
}

/// The end of a successful generation: usage, finish reason, who answered, the tool
/// calls the model made, its reasoning and the state its provider wants back. Made by
/// `provd_client_generate`, `provd_client_generate_events` or `provd_stream_finish`, freed
/// by `provd_done_free`. Immutable: any thread may read it.
#[derive(Debug)]
pub struct provd_done {
    provider: NulString,
    model: NulString,
    usage: Usage,
    finish_reason: FinishReason,
    chunks: u32,
    tool_calls: Vec<Call>,
    reasoning: Option<NulString>,
    provider_state_json: Option<NulString>,
    /// The calls and state as the wire has them, for `provd_request_add_turn_from_done`.
    pub(crate) wire_tool_calls: Vec<ToolCall>,
    pub(crate) provider_state: Option<serde_json::Value>,
}

#[derive(Debug)]
struct Call {
    id: NulString,
    name: NulString,
    arguments: NulString,
}

impl provd_done {
    pub(crate) fn new(d: &GenerateDone) -> provd_done {
        provd_done {
            provider: NulString::new(d.provider.clone()),
            model: NulString::new(d.model.clone()),
            usage: d.usage,
            finish_reason: d.finish_reason,
            chunks: d.chunks,
            tool_calls: d
                .tool_calls
                .iter()
                .map(|c| Call {
                    id: NulString::new(c.id.clone()),
                    name: NulString::new(c.name.clone()),
                    arguments: NulString::new(c.arguments.clone()),
                })
                .collect(),
            reasoning: d.reasoning.clone().map(NulString::new),
            provider_state_json: d
                .provider_state
                .as_ref()
                .map(|v| NulString::new(v.to_string())),
            wire_tool_calls: d.tool_calls.clone(),
            provider_state: d.provider_state.clone(),
        }
    }
}

/// One tool call the model made, as views into a `provd_done`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_tool_call {
    /// The call's id, which the tool's result names (`provd_request_add_tool_result`).
    pub id: provd_str,
    /// The tool's name, one of the request's tools.
    pub name: provd_str,
    /// The arguments: complete JSON text, checked by the daemon to parse.
    pub arguments: provd_str,
}

/// The token usage of the generation, through `usage_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_usage(
    done: *const provd_done,
    usage_out: *mut provd_usage,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and a NULL or writable `usage_out`.
        let (d, out) = unsafe {
            (
                args::handle(done, "done")?,
                args::out(usage_out, "usage_out")?,
            )
        };
        out.write(d.usage.into());
        Ok(())
    })
}

/// Why the generation stopped, through `reason_out` (a `provd_finish_reason`).
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_finish_reason(
    done: *const provd_done,
    reason_out: *mut provd_finish_reason,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and a NULL or writable `reason_out`.
        let (d, out) = unsafe {
            (
                args::handle(done, "done")?,
                args::out(reason_out, "reason_out")?,
            )
        };
        out.write(d.finish_reason.into());
        Ok(())
    })
}

/// How many chunks the daemon sent for the generation, through `chunks_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_chunks(done: *const provd_done, chunks_out: *mut u32) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and a NULL or writable `chunks_out`.
        let (d, out) = unsafe {
            (
                args::handle(done, "done")?,
                args::out(chunks_out, "chunks_out")?,
            )
        };
        out.write(d.chunks);
        Ok(())
    })
}

/// The model that answered, through `model_out` (pointing into `done`).
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_model(
    done: *const provd_done,
    model_out: *mut provd_str,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and a NULL or writable `model_out`.
        let (d, out) = unsafe {
            (
                args::handle(done, "done")?,
                args::out(model_out, "model_out")?,
            )
        };
        out.write(d.model.lend());
        Ok(())
    })
}

/// The provider id that answered, through `provider_out` (pointing into `done`).
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_provider(
    done: *const provd_done,
    provider_out: *mut provd_str,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and a NULL or writable `provider_out`.
        let (d, out) = unsafe {
            (
                args::handle(done, "done")?,
                args::out(provider_out, "provider_out")?,
            )
        };
        out.write(d.provider.lend());
        Ok(())
    })
}

/// The number of tool calls the model made, through `len_out`; 0 unless the finish
/// reason is `PROVD_FINISH_TOOL_USE`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_tool_calls_len(
    done: *const provd_done,
    len_out: *mut usize,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and a NULL or writable `len_out`.
        let (d, out) = unsafe { (args::handle(done, "done")?, args::out(len_out, "len_out")?) };
        out.write(d.tool_calls.len());
        Ok(())
    })
}

/// Tool call number `index` (in the order the model made them), through `call_out`; its
/// strings point into `done`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if
/// `index` is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_tool_calls_get(
    done: *const provd_done,
    index: usize,
    call_out: *mut provd_tool_call,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and a NULL or writable `call_out`.
        let (d, out) = unsafe {
            (
                args::handle(done, "done")?,
                args::out(call_out, "call_out")?,
            )
        };
        let call = at(&d.tool_calls, index, "tool call list")?;
        out.write(provd_tool_call {
            id: call.id.lend(),
            name: call.name.lend(),
            arguments: call.arguments.lend(),
        });
        Ok(())
    })
}

/// The model's whole reasoning text, through `reasoning_out` (pointing into `done`):
/// present only for a generation that was not streamed and asked to see its reasoning.
/// A streamed generation delivers it in `PROVD_CHUNK_REASONING` chunks instead. Absent
/// (NULL `data`) otherwise.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_reasoning(
    done: *const provd_done,
    reasoning_out: *mut provd_str,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and a NULL or writable `reasoning_out`.
        let (d, out) = unsafe {
            (
                args::handle(done, "done")?,
                args::out(reasoning_out, "reasoning_out")?,
            )
        };
        out.write(NulString::lend_opt(&d.reasoning));
        Ok(())
    })
}

/// How many of the completion tokens (`provd_usage.completion_tokens`, which includes
/// them on every provider) the model spent reasoning: `*present_out` is true and
/// `*tokens_out` the count when the provider reported it; false and 0 otherwise.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_reasoning_tokens(
    done: *const provd_done,
    present_out: *mut bool,
    tokens_out: *mut u32,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and NULL or writable out-parameters.
        let (d, present, tokens) = unsafe {
            (
                args::handle(done, "done")?,
                args::out(present_out, "present_out")?,
                args::out(tokens_out, "tokens_out")?,
            )
        };
        present.write(d.usage.reasoning_tokens.is_some());
        tokens.write(d.usage.reasoning_tokens.unwrap_or(0));
        Ok(())
    })
}

/// The state the provider wants back with this assistant turn, as JSON text, through
/// `state_out` (pointing into `done`); absent (NULL `data`) when there is none.
///
/// The text is opaque: keep it with the turn and give it back unchanged with
/// `provd_request_set_provider_state_json` (or let `provd_request_add_turn_from_done` do
/// both). The daemon drops it when the next turn goes to a provider of another type.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_done_provider_state_json(
    done: *const provd_done,
    state_out: *mut provd_str,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live done and a NULL or writable `state_out`.
        let (d, out) = unsafe {
            (
                args::handle(done, "done")?,
                args::out(state_out, "state_out")?,
            )
        };
        out.write(NulString::lend_opt(&d.provider_state_json));
        Ok(())
    })
}

/// Frees a done result. NULL is ignored.
#[no_mangle]
pub extern "C" fn provd_done_free(done: *mut provd_done) {
    crate::panic::free(|| {
        // SAFETY: the header requires NULL or a done from this library, freed once.
        drop(unsafe { args::take(done) });
    })
}

/// The name of a finish reason: `"stop"`, `"length"`, `"content_filter"`, `"tool_use"`,
/// `"other"`, or `"unknown"` for a number that is none of them. A static NUL-terminated
/// string; never free it. Thread-safe; never fails.
#[no_mangle]
pub extern "C" fn provd_finish_reason_name(reason: u32) -> *const c_char {
    use provd_finish_reason::*;
    let name = match reason {
        x if x == PROVD_FINISH_STOP as u32 => c"stop",
        x if x == PROVD_FINISH_LENGTH as u32 => c"length",
        x if x == PROVD_FINISH_CONTENT_FILTER as u32 => c"content_filter",
        x if x == PROVD_FINISH_TOOL_USE as u32 => c"tool_use",
        x if x == PROVD_FINISH_OTHER as u32 => c"other",
        _ => c"unknown",
    };
    name.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn finish_reasons_have_their_wire_names() {
        for (reason, name) in [
            (FinishReason::Stop, "stop"),
            (FinishReason::Length, "length"),
            (FinishReason::ContentFilter, "content_filter"),
            (FinishReason::ToolCalls, "tool_use"),
            (FinishReason::Other, "other"),
        ] {
            let r = provd_finish_reason::from(reason) as u32;
            // SAFETY: static NUL-terminated strings.
            let got = unsafe { CStr::from_ptr(provd_finish_reason_name(r)) };
            assert_eq!(got.to_str().unwrap(), name);
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(provd_finish_reason_name(77)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown");
    }

    fn lent(s: provd_str) -> Option<String> {
        // SAFETY: the views point into a done result alive for the whole test.
        (!s.data.is_null()).then(|| {
            unsafe { CStr::from_ptr(s.data) }
                .to_str()
                .unwrap()
                .to_owned()
        })
    }

    #[test]
    fn tool_calls_reasoning_and_state_are_read_back_and_absent_ones_say_so() {
        let done = provd_done::new(&GenerateDone {
            finish_reason: FinishReason::ToolCalls,
            usage: Usage::new(3, 9).with_reasoning(Some(5)),
            tool_calls: vec![
                ToolCall {
                    id: "c0".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into(),
                },
                ToolCall {
                    id: "c1".into(),
                    name: "now".into(),
                    arguments: "{}".into(),
                },
            ],
            reasoning: Some("Thinking".into()),
            provider_state: Some(serde_json::json!({"type": "mock", "state": {"signature": "s"}})),
            ..GenerateDone::default()
        });
        let mut len = 0;
        assert_eq!(
            provd_done_tool_calls_len(&done, &mut len),
            provd_status::PROVD_OK
        );
        assert_eq!(len, 2);
        let mut call = provd_tool_call {
            id: provd_str::ABSENT,
            name: provd_str::ABSENT,
            arguments: provd_str::ABSENT,
        };
        assert_eq!(
            provd_done_tool_calls_get(&done, 1, &mut call),
            provd_status::PROVD_OK
        );
        assert_eq!(
            (lent(call.id), lent(call.name), lent(call.arguments)),
            (Some("c1".into()), Some("now".into()), Some("{}".into()))
        );
        assert_eq!(
            provd_done_tool_calls_get(&done, 2, &mut call),
            provd_status::PROVD_INVALID_ARGUMENT
        );
        let (mut present, mut tokens) = (false, 0);
        assert_eq!(
            provd_done_reasoning_tokens(&done, &mut present, &mut tokens),
            provd_status::PROVD_OK
        );
        assert_eq!((present, tokens), (true, 5));
        let mut s = provd_str::ABSENT;
        assert_eq!(provd_done_reasoning(&done, &mut s), provd_status::PROVD_OK);
        assert_eq!(lent(s).as_deref(), Some("Thinking"));
        assert_eq!(
            provd_done_provider_state_json(&done, &mut s),
            provd_status::PROVD_OK
        );
        let state: serde_json::Value = serde_json::from_str(&lent(s).unwrap()).unwrap();
        assert_eq!(state["state"]["signature"], "s");

        let plain = provd_done::new(&GenerateDone::default());
        assert_eq!(
            provd_done_reasoning_tokens(&plain, &mut present, &mut tokens),
            provd_status::PROVD_OK
        );
        assert_eq!((present, tokens), (false, 0));
        assert_eq!(
            provd_done_provider_state_json(&plain, &mut s),
            provd_status::PROVD_OK
        );
        assert!(s.data.is_null());
        assert_eq!(
            provd_done_reasoning_tokens(&plain, std::ptr::null_mut(), &mut tokens),
            provd_status::PROVD_NULL_ARGUMENT
        );
    }
}
