//! The end of a successful generation: the done result, its usage and its finish
//! reason.

use std::ffi::c_char;

use ::provd_client::{FinishReason, GenerateDone, Usage};

use crate::args;
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
    /// The model asked to call a tool (provd does not carry tool calls yet).
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

/// The end of a successful generation: usage, finish reason, who answered. Made by
/// `provd_client_generate` or `provd_stream_finish`, freed by `provd_done_free`.
/// Immutable: any thread may read it.
#[derive(Debug)]
pub struct provd_done {
    provider: NulString,
    model: NulString,
    usage: Usage,
    finish_reason: FinishReason,
    chunks: u32,
}

impl provd_done {
    pub(crate) fn new(d: &GenerateDone) -> provd_done {
        provd_done {
            provider: NulString::new(d.provider.clone()),
            model: NulString::new(d.model.clone()),
            usage: d.usage,
            finish_reason: d.finish_reason,
            chunks: d.chunks,
        }
    }
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
}
