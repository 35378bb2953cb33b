//! Callback-driven generation.
//!
//! `provd_client_generate` blocks the calling thread and calls the caller's chunk
//! callback on that same thread, once per chunk, in order, between reads of the stream:
//! the library's own thread only reads the socket and never runs caller code. The
//! callback may stop the generation by returning `PROVD_STOP`; another thread may stop it
//! through a `provd_cancel_token`.

use std::ffi::{c_char, c_int, c_void};

use ::provd_client::blocking::BlockingCancel;
use ::provd_client::{ClientError, ErrorCode, GenerateEvent, WireError};

use crate::args;
use crate::cancel_token::provd_cancel_token;
use crate::chunk::{provd_chunk, OwnedChunk};
use crate::client::{borrow_client, provd_client};
use crate::done::provd_done;
use crate::error::{provd_error, Error};
use crate::panic::boundary;
use crate::request::provd_request;
use crate::status::provd_status;

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
/// `index` counts chunks from 0. Return `PROVD_CONTINUE` or `PROVD_STOP`. A tool-call or
/// reasoning chunk (sent only to requests that ask for them) comes as empty text;
/// `provd_client_generate_events` shows what it carries.
///
/// Called on the thread that called `provd_client_generate`. It may call any libprovd
/// function (a nested generation, a cancel) except `provd_client_free` on the client it
/// runs on. It must not unwind (a C++ exception or a Rust panic) into the library.
pub type provd_chunk_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        text: *const c_char,
        len: usize,
        index: u32,
    ) -> c_int,
>;

type CallbackFn = unsafe extern "C" fn(*mut c_void, *const c_char, usize, u32) -> c_int;
type EventFn = unsafe extern "C" fn(*mut c_void, *const provd_chunk) -> c_int;

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
    boundary!(err_out, || {
        let on_chunk = on_chunk.ok_or_else(|| Error::null("on_chunk"));
        let deliver = |on_chunk: CallbackFn, chunk: &OwnedChunk| {
            let lent = chunk.text();
            // SAFETY: the caller gave this callback for this purpose; `lent` points into
            // `chunk`, which outlives the call, and the callback's contract (the header)
            // is not to keep it or unwind.
            unsafe { on_chunk(userdata, lent.data, lent.len, chunk.view().index) }
        };
        // SAFETY: the header's rules for these arguments, which `drive` shares.
        unsafe { drive(client, request, cancel, done_out, on_chunk, deliver) }
    })
}

/// Receives one chunk of a generation run by `provd_client_generate_events`: text, a
/// piece of a tool call or a piece of reasoning (`chunk->kind` says which).
///
/// `userdata` is the pointer given to `provd_client_generate_events`; `chunk` and the
/// strings it points to are valid only until the callback returns (copy what you keep).
/// Return `PROVD_CONTINUE` or `PROVD_STOP`. The same rules as `provd_chunk_callback`: it
/// runs on the calling thread, may call the library except `provd_client_free` on its
/// client, and must not unwind into the library.
pub type provd_chunk_event_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, chunk: *const provd_chunk) -> c_int>;

/// Runs a generation to its end like `provd_client_generate`, but calls
/// `on_event(userdata, &chunk)` with each whole chunk, so the caller sees tool-call and
/// reasoning pieces as well as text (`provd_chunk`). Everything else (blocking, `cancel`,
/// `done_out`, errors, threads) is as `provd_client_generate`.
///
/// Errors: as `provd_client_generate`; `PROVD_NULL_ARGUMENT` for a NULL `on_event`.
/// Thread-safe: any number of threads may generate on one client at once.
#[no_mangle]
pub extern "C" fn provd_client_generate_events(
    client: *const provd_client,
    request: *const provd_request,
    on_event: provd_chunk_event_callback,
    userdata: *mut c_void,
    cancel: *const provd_cancel_token,
    done_out: *mut *mut provd_done,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        let on_event = on_event.ok_or_else(|| Error::null("on_event"));
        let deliver = |on_event: EventFn, chunk: &OwnedChunk| {
            let view = chunk.view();
            // SAFETY: the caller gave this callback for this purpose; `view` and the
            // strings it points to live in `chunk` until after the call, and the
            // callback's contract (the header) is not to keep them or unwind.
            unsafe { on_event(userdata, &view) }
        };
        // SAFETY: the header's rules for these arguments, which `drive` shares.
        unsafe { drive(client, request, cancel, done_out, on_event, deliver) }
    })
}

/// The loop both callback APIs share: starts the generation, hands each chunk to
/// `deliver` (which calls the caller's callback `callback` and says whether to go on),
/// cancels on `PROVD_STOP`, and stores the done result.
///
/// # Safety
///
/// `client`, `request`, `cancel` and `done_out` follow the rules of
/// `provd_client_generate`'s header documentation.
unsafe fn drive<F: Copy>(
    client: *const provd_client,
    request: *const provd_request,
    cancel: *const provd_cancel_token,
    done_out: *mut *mut provd_done,
    callback: Result<F, Error>,
    mut deliver: impl FnMut(F, &OwnedChunk) -> c_int,
) -> Result<(), Error> {
    // SAFETY: the caller's contract: a live client and request, `cancel` NULL or a live
    // token, and `done_out` NULL or writable.
    let (done_out, client, request, token) = unsafe {
        (
            args::out_object_opt(done_out),
            borrow_client(client)?,
            args::handle(request, "request")?,
            cancel.as_ref(),
        )
    };
    let callback = callback?;
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
                let chunk = OwnedChunk::new(chunk);
                let flow = deliver(callback, &chunk);
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
