//! Callback-driven generation, cancel tokens, and the done result.
//!
//! `provd_client_generate` blocks the calling thread and calls the caller's chunk
//! callback on that same thread, once per chunk, in order, between reads of the stream:
//! the library's own thread only reads the socket and never runs caller code. The
//! callback may stop the generation by returning `PROVD_STOP`; another thread may stop it
//! through a `provd_cancel_token`.

use std::ffi::{c_char, c_int, c_void};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ::provd_client::blocking::BlockingCancel;
use ::provd_client::{
    ClientError, ErrorCode, FinishReason, GenerateDone, GenerateEvent, Usage, WireError,
};

use crate::args;
use crate::client::{borrow_client, provd_client};
use crate::error::{provd_error, provd_status, Error};
use crate::panic::{accessor, boundary};
use crate::request::provd_request;
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
            FinishReason::ToolUse => provd_finish_reason::PROVD_FINISH_TOOL_USE,
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
    accessor(|| {
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
    accessor(|| {
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
    accessor(|| {
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
    accessor(|| {
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
    accessor(|| {
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

/// Returned by a chunk callback to receive the next chunk.
pub const PROVD_CONTINUE: c_int = 0;
/// Returned by a chunk callback to stop the generation (any non-zero value does): the
/// library cancels it in the daemon, delivers no further chunk, and
/// `provd_client_generate` returns `PROVD_CANCELLED`.
pub const PROVD_STOP: c_int = 1;

/// Receives one chunk of a generation.
///
/// `userdata` is the pointer given to `provd_client_generate`; `text` is `len` bytes of
/// UTF-8 followed by a NUL, valid only until the callback returns (copy what you keep);
/// `index` counts chunks from 0. Return `PROVD_CONTINUE` or `PROVD_STOP`.
///
/// Called on the thread that called `provd_client_generate`. It may call any libprovd
/// function (a nested generation, a cancel) except `provd_client_close` on the client it
/// runs on. It must not unwind (a C++ exception or a Rust panic) into the library.
pub type provd_chunk_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        text: *const c_char,
        len: usize,
        index: u32,
    ) -> c_int,
>;

/// Cancels a generation, treating "it already ended" as done: that race is normal, and
/// the generation's own terminal result says how it ended.
pub(crate) fn cancel_quietly(handle: &BlockingCancel) -> Result<(), Error> {
    match handle.cancel() {
        Ok(()) => Ok(()),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The error that ended a generation, with the chunks the caller received filled in when
/// the daemon could not say (the connection broke, say).
pub(crate) fn terminal_error(e: ClientError, delivered: u32) -> Error {
    let mut e = Error::from(e);
    e.chunks.get_or_insert(delivered);
    e
}

/// A way to cancel generations from any thread. Made by `provd_cancel_token_new`, freed
/// by `provd_cancel_token_free`.
///
/// Pass it to `provd_client_generate`; `provd_cancel_token_cancel` then cancels every
/// generation running with it, and every later generation given it fails at once with
/// `PROVD_CANCELLED`: like a fuse, a token is cancelled for good. One token may serve
/// several generations, in turn or at once.
///
/// Thread-safe: any function may be called on one token from any number of threads at
/// once, except `provd_cancel_token_free`.
#[derive(Debug, Default)]
pub struct provd_cancel_token {
    state: Mutex<TokenState>,
}

#[derive(Debug, Default)]
struct TokenState {
    cancelled: bool,
    running: Vec<(u64, BlockingCancel)>,
    next_key: u64,
}

impl provd_cancel_token {
    fn lock(&self) -> MutexGuard<'_, TokenState> {
        // A panic while the lock was held left the state consistent (pushes and removes
        // are single steps), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Registers a running generation until the returned guard is dropped. If the token
    /// was cancelled since the generation started, cancels it now, so no cancel is lost
    /// between the start and this registration.
    fn attach(&self, handle: BlockingCancel) -> Attached<'_> {
        let mut state = self.lock();
        if state.cancelled {
            // Best effort: if this fails, the connection is gone and the generation ends
            // with that error instead.
            let _ = cancel_quietly(&handle);
        }
        let key = state.next_key;
        state.next_key += 1;
        state.running.push((key, handle));
        Attached { token: self, key }
    }

    fn cancel(&self) -> Result<(), Error> {
        // The lock stays held during the round trips on purpose: a generation cannot
        // detach (and its client cannot go away) while its cancel is in flight. The
        // generating threads do not need the lock to receive the reply.
        let mut state = self.lock();
        state.cancelled = true;
        let mut first_error = None;
        for (_, handle) in &state.running {
            if let Err(e) = cancel_quietly(handle) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

struct Attached<'a> {
    token: &'a provd_cancel_token,
    key: u64,
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        self.token.lock().running.retain(|(k, _)| *k != self.key);
    }
}

/// Makes a cancel token in `*token_out`; the caller frees it with
/// `provd_cancel_token_free`.
///
/// Errors: `PROVD_NULL_ARGUMENT` (token_out). Thread-safe.
#[no_mangle]
pub extern "C" fn provd_cancel_token_new(
    token_out: *mut *mut provd_cancel_token,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary("provd_cancel_token_new", err_out, || {
        // SAFETY: the header requires `token_out` to be NULL or writable.
        let out = unsafe { args::out_object(token_out, "token_out") }?;
        out.write(args::give(provd_cancel_token::default()));
        Ok(())
    })
}

/// Cancels every generation running with `token` and marks it cancelled for good. Blocks
/// for one round trip to the daemon per running generation; the generations then end
/// with `PROVD_CANCELLED` (or normally, if they finished first).
///
/// Errors: `PROVD_NULL_ARGUMENT`, `PROVD_UNAVAILABLE` (the connection of a generation is
/// lost; that generation ends with the same error). A generation that has just finished
/// is not an error.
///
/// Thread-safe: call it from any thread, including from a chunk callback.
#[no_mangle]
pub extern "C" fn provd_cancel_token_cancel(
    token: *const provd_cancel_token,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary("provd_cancel_token_cancel", err_out, || {
        // SAFETY: the header requires a live token (not being freed).
        unsafe { args::handle(token, "token") }?.cancel()
    })
}

/// Whether `token` has been cancelled, through `cancelled_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_cancel_token_is_cancelled(
    token: *const provd_cancel_token,
    cancelled_out: *mut bool,
) -> provd_status {
    accessor(|| {
        // SAFETY: the header requires a live token and a NULL or writable out-pointer.
        let (token, out) = unsafe {
            (
                args::handle(token, "token")?,
                args::out(cancelled_out, "cancelled_out")?,
            )
        };
        out.write(token.is_cancelled());
        Ok(())
    })
}

/// Frees a cancel token. NULL is ignored. No generation may be running with it.
#[no_mangle]
pub extern "C" fn provd_cancel_token_free(token: *mut provd_cancel_token) {
    crate::panic::free(|| {
        // SAFETY: the header requires NULL or a token from this library, freed once, with
        // no generation using it.
        drop(unsafe { args::take(token) });
    })
}

/// Runs a generation to its end, calling `on_chunk(userdata, text, len, index)` for each
/// chunk as it arrives.
///
/// Blocks the calling thread until the generation ends; `on_chunk` runs on this thread
/// (see `provd_chunk_callback`). `request` is copied at the start and may be freed or
/// changed once this returns (or used by other threads at the same time, unchanged).
/// `cancel` may be NULL; otherwise `provd_cancel_token_cancel` on it, from any thread,
/// cancels this generation.
///
/// On success, returns `PROVD_OK` and, if `done_out` is not NULL, stores in `*done_out` a
/// new `provd_done` (usage, finish reason, model) that the caller frees with
/// `provd_done_free`. On failure `*done_out` is NULL, and the error object (if `err_out`
/// is not NULL) carries the message, retryability, and the chunks delivered and usage
/// known when it ended (`provd_error_chunks`, `provd_error_usage`).
///
/// Errors: `PROVD_CANCELLED` (the callback returned `PROVD_STOP`, or the token was
/// cancelled), any daemon code such as `PROVD_NOT_FOUND` for an unknown provider or
/// `PROVD_INVALID_REQUEST` for a request without prompt or messages or one larger than
/// `provd_client_max_frame_bytes`, `PROVD_OVERLOADED` (the client already runs
/// `provd_client_max_streams` generations), `PROVD_TIMEOUT` (the client's call deadline,
/// `provd_connect_options`, passed between two chunks; the generation was cancelled),
/// `PROVD_UNAVAILABLE` (the connection was lost), `PROVD_NULL_ARGUMENT` (client, request,
/// on_chunk).
///
/// Thread-safe: any number of threads may generate on one client at once.
#[no_mangle]
pub extern "C" fn provd_client_generate(
    client: *const provd_client,
    request: *const provd_request,
    on_chunk: provd_chunk_callback,
    userdata: *mut c_void,
    cancel: *const provd_cancel_token,
    done_out: *mut *mut provd_done,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary("provd_client_generate", err_out, || {
        // SAFETY: the header requires a live client and request, `cancel` NULL or a live
        // token, and `done_out` NULL or writable.
        let (done_out, client, request, token) = unsafe {
            (
                args::out_object_opt(done_out),
                borrow_client(client)?,
                args::handle(request, "request")?,
                cancel.as_ref(),
            )
        };
        let on_chunk = on_chunk.ok_or_else(|| Error::null("on_chunk"))?;
        if token.is_some_and(provd_cancel_token::is_cancelled) {
            let mut e = Error::from_wire(WireError::new(
                ErrorCode::Cancelled,
                "the cancel token was already cancelled; the generation was not started",
            ));
            e.chunks = Some(0);
            return Err(e);
        }

        let mut generation = client.generate(request.inner.clone())?;
        let handle = generation.cancel_handle();
        let _attached = token.zip(handle.clone()).map(|(t, h)| t.attach(h));
        let mut delivered = 0u32;
        let mut stopped = false;
        let outcome = loop {
            match generation.next() {
                Some(Ok(GenerateEvent::Chunk(chunk))) => {
                    if stopped {
                        // Chunks already in flight when the callback said stop.
                        continue;
                    }
                    let index = chunk.index;
                    let text = NulString::new(chunk.text);
                    let lent = text.lend();
                    // SAFETY: the caller gave this callback for this purpose; `lent`
                    // points into `text`, which outlives the call, and the callback's
                    // contract (the header) is not to keep it or unwind.
                    let flow = unsafe { on_chunk(userdata, lent.data, lent.len, index) };
                    delivered += 1;
                    if flow != PROVD_CONTINUE {
                        stopped = true;
                        if let Some(handle) = &handle {
                            // If this fails the connection is gone, and the next read
                            // reports that.
                            let _ = cancel_quietly(handle);
                        }
                    }
                }
                Some(Ok(GenerateEvent::Done(done))) => break Ok(done),
                Some(Err(e)) => break Err(e),
                None => {
                    break Err(ClientError::Disconnected(
                        "the generation ended without a terminal reply".into(),
                    ))
                }
            }
        };
        let cancelled_by_us = matches!(
            &outcome,
            Ok(_)
                | Err(ClientError::Server(WireError {
                    code: ErrorCode::Cancelled,
                    ..
                }))
        );
        if stopped && cancelled_by_us {
            // Stopped by the callback: report that, whichever way the daemon ended it.
            let usage = match &outcome {
                Ok(done) => Some(done.usage),
                Err(ClientError::Server(w)) => w.usage,
                Err(_) => None,
            };
            let mut e = Error::from_wire(WireError::new(
                ErrorCode::Cancelled,
                format!(
                    "the chunk callback returned PROVD_STOP after {delivered} chunks; \
                     the generation was cancelled"
                ),
            ));
            e.chunks = Some(delivered);
            e.usage = usage;
            return Err(e);
        }
        match outcome {
            Ok(done) => {
                if let Some(out) = &done_out {
                    out.write(args::give(provd_done::new(&done)));
                }
                Ok(())
            }
            Err(e) => Err(terminal_error(e, delivered)),
        }
    })
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
            (FinishReason::ToolUse, "tool_use"),
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

    #[test]
    fn a_cancelled_token_stays_cancelled() {
        let mut token = std::ptr::null_mut();
        assert_eq!(
            provd_cancel_token_new(&mut token, std::ptr::null_mut()),
            provd_status::PROVD_OK
        );
        let mut cancelled = true;
        assert_eq!(
            provd_cancel_token_is_cancelled(token, &mut cancelled),
            provd_status::PROVD_OK
        );
        assert!(!cancelled);
        assert_eq!(
            provd_cancel_token_cancel(token, std::ptr::null_mut()),
            provd_status::PROVD_OK
        );
        provd_cancel_token_is_cancelled(token, &mut cancelled);
        assert!(cancelled);
        provd_cancel_token_free(token);
    }

    #[test]
    fn generate_refuses_null_arguments() {
        let mut err = std::ptr::null_mut();
        let status = provd_client_generate(
            std::ptr::null(),
            std::ptr::null(),
            None,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null_mut(),
            &mut err,
        );
        assert_eq!(status, provd_status::PROVD_NULL_ARGUMENT);
        // SAFETY: a fresh error object, taken once.
        let e = unsafe { args::take(err) }.unwrap();
        assert_eq!(
            e.message.as_str(),
            "provd_client_generate: argument `client` is NULL"
        );
    }
}
