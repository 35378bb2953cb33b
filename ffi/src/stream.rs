//! Pull-driven generation, for callers that own their loop (an event loop, a Go
//! goroutine, a Python generator): start, then ask for the next chunk until the end,
//! then finish to read how it ended.
//!
//! The stream's state sits behind a mutex so that `provd_stream_cancel` (which only
//! needs the cancel handle, outside the mutex) can run from another thread while the
//! owning thread is blocked in `provd_stream_next`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ::provd_client::blocking::{BlockingCancel, Generation};
use ::provd_client::{ClientError, GenerateDone, GenerateEvent};

use crate::args;
use crate::chunk::{provd_chunk, OwnedChunk};
use crate::client::{borrow_client, provd_client};
use crate::done::provd_done;
use crate::error::{provd_error, Error};
use crate::generate::{cancel_quietly, terminal_error};
use crate::panic::accessor;
use crate::panic::boundary;
use crate::provd_str;
use crate::request::provd_request;
use crate::status::provd_status;

/// A running generation read chunk by chunk. Made by `provd_stream_start`, freed by
/// `provd_stream_free`.
///
/// Threads: `provd_stream_next` and `provd_stream_finish` are for one thread at a time
/// (any thread, not necessarily the one that started it); `provd_stream_cancel` may be
/// called from any thread at any time until `provd_stream_free`.
pub struct provd_stream {
    cancel: Option<BlockingCancel>,
    /// Set once the terminal event was read, so a late cancel needs no round trip.
    ended: AtomicBool,
    state: Mutex<State>,
}

struct State {
    generation: Generation,
    /// The last chunk read, lent to the caller until the next call; `None` before the
    /// first chunk and after the end.
    chunk: Option<OwnedChunk>,
    /// How the generation ended, once it has.
    outcome: Option<Result<GenerateDone, Error>>,
    delivered: u32,
}

enum Step {
    Chunk,
    End,
}

impl provd_stream {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic inside a call leaves the state memory-safe; the header says the stream
        // is then unspecified but usable for free.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Reads one event: a chunk (now in `self.chunk`) or the end (now in `outcome`).
    fn step(&mut self, ended: &AtomicBool) -> Step {
        if self.outcome.is_some() {
            return Step::End;
        }
        let outcome = match self.generation.next() {
            Some(Ok(GenerateEvent::Chunk(chunk))) => {
                self.delivered += 1;
                self.chunk = Some(OwnedChunk::new(chunk));
                return Step::Chunk;
            }
            Some(Ok(GenerateEvent::Done(done))) => Ok(done),
            Some(Err(e)) => Err(terminal_error(e, self.delivered)),
            None => Err(terminal_error(
                ClientError::Disconnected("the generation ended without a terminal reply".into()),
                self.delivered,
            )),
        };
        self.outcome = Some(outcome);
        self.chunk = None;
        ended.store(true, Ordering::Release);
        Step::End
    }
}

/// Starts a generation and returns it as a stream in `*stream_out` (NULL on failure),
/// which the caller frees with `provd_stream_free`. The request is sent before this
/// returns; `request` is copied and may be freed or changed at once.
///
/// Errors here are about sending (`PROVD_UNAVAILABLE`, `PROVD_NULL_ARGUMENT`); the
/// daemon's answer, including a refusal such as `PROVD_NOT_FOUND` for an unknown
/// provider, comes from `provd_stream_next` and `provd_stream_finish`.
///
/// Thread-safe: any number of threads may start streams on one client.
#[no_mangle]
pub extern "C" fn provd_stream_start(
    client: *const provd_client,
    request: *const provd_request,
    stream_out: *mut *mut provd_stream,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires a live client and request and a NULL or writable
        // `stream_out`.
        let (out, client, request) = unsafe {
            (
                args::out_object(stream_out, "stream_out")?,
                borrow_client(client)?,
                args::handle(request, "request")?,
            )
        };
        let generation = client.generate(request.inner.clone())?;
        out.write(args::give(provd_stream {
            cancel: generation.cancel_handle(),
            ended: AtomicBool::new(false),
            state: Mutex::new(State {
                generation,
                chunk: None,
                outcome: None,
                delivered: 0,
            }),
        }));
        Ok(())
    })
}

/// Waits for the next chunk of `stream`.
///
/// - A chunk: returns `PROVD_OK` with `*text_out` set to its text (non-NULL `data`,
///   possibly `len` 0), valid until the next call on this stream. A tool-call or
///   reasoning chunk (sent only to requests that ask for them) has empty text here;
///   `provd_stream_chunk` tells the kinds apart.
/// - The successful end: returns `PROVD_OK` with `text_out->data` NULL. Call
///   `provd_stream_finish` for the usage and finish reason.
/// - The generation failed or was cancelled: returns its status with the error object;
///   `text_out->data` is NULL. Calling again returns the same error again.
///
/// So a loop reads: `while (provd_stream_next(s, &text, &err) == PROVD_OK && text.data)`.
///
/// Errors: any daemon code (`PROVD_OVERLOADED` past `provd_client_max_streams`),
/// `PROVD_CANCELLED`, `PROVD_TIMEOUT` (the client's call deadline, `provd_connect_options`,
/// passed before the next chunk; the generation was cancelled), `PROVD_UNAVAILABLE`,
/// `PROVD_NULL_ARGUMENT`. One thread at a time per stream.
#[no_mangle]
pub extern "C" fn provd_stream_next(
    stream: *mut provd_stream,
    text_out: *mut provd_str,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires a live stream and a NULL or writable `text_out`.
        // Only a shared reference is made: `provd_stream_cancel` may read the stream
        // from another thread at the same time.
        let out = unsafe { args::out(text_out, "text_out") }?;
        out.write(provd_str::ABSENT);
        // SAFETY: as above.
        let stream = unsafe { args::handle(stream.cast_const(), "stream") }?;
        let mut state = stream.lock();
        match state.step(&stream.ended) {
            Step::Chunk => {
                if let Some(chunk) = &state.chunk {
                    out.write(chunk.text());
                }
                Ok(())
            }
            Step::End => match state.outcome.as_ref() {
                Some(Err(e)) => Err(e.clone()),
                _ => Ok(()),
            },
        }
    })
}

/// The chunk `provd_stream_next` returned last, through `chunk_out`: its kind, its text,
/// its piece of a tool call or of reasoning. The strings point into `stream` and are
/// valid until the next call on this stream (the same as `provd_stream_next`'s text).
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if there
/// is no current chunk (before the first `provd_stream_next`, or once it reported the
/// end). One thread at a time per stream, as `provd_stream_next`.
#[no_mangle]
pub extern "C" fn provd_stream_chunk(
    stream: *const provd_stream,
    chunk_out: *mut provd_chunk,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live stream and a NULL or writable `chunk_out`.
        let (stream, out) = unsafe {
            (
                args::handle(stream, "stream")?,
                args::out(chunk_out, "chunk_out")?,
            )
        };
        let state = stream.lock();
        let chunk = state.chunk.as_ref().ok_or_else(|| {
            Error::invalid(
                "stream",
                "has no current chunk (call provd_stream_next first; after the end there is none)",
            )
        })?;
        out.write(chunk.view());
        Ok(())
    })
}

/// Waits for the end of `stream`, discarding any chunks not read yet, and reports how it
/// ended: `PROVD_OK` with, if `done_out` is not NULL, a new `provd_done` in `*done_out`
/// (freed by the caller with `provd_done_free`); or the error that ended it (the same one
/// `provd_stream_next` returned), with `*done_out` NULL. May be called again; it returns
/// the same outcome.
///
/// To stop early: `provd_stream_cancel`, then `provd_stream_finish`.
///
/// Errors: as `provd_stream_next`. One thread at a time per stream.
#[no_mangle]
pub extern "C" fn provd_stream_finish(
    stream: *mut provd_stream,
    done_out: *mut *mut provd_done,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: as in provd_stream_next; `done_out` may be NULL.
        let (out, stream) = unsafe {
            (
                args::out_object_opt(done_out),
                args::handle(stream.cast_const(), "stream")?,
            )
        };
        let mut state = stream.lock();
        while let Step::Chunk = state.step(&stream.ended) {}
        match state.outcome.as_ref() {
            Some(Ok(done)) => {
                if let Some(out) = &out {
                    out.write(args::give(provd_done::new(done)));
                }
                Ok(())
            }
            Some(Err(e)) => Err(e.clone()),
            None => Err(Error::internal("a finished stream has no outcome".into())),
        }
    })
}

/// Asks the daemon to cancel the generation of `stream`. Blocks for one round trip. The
/// stream then ends with `PROVD_CANCELLED` (or normally, if it finished first; that race
/// is not an error), which `provd_stream_next`/`provd_stream_finish` report.
///
/// Errors: `PROVD_UNAVAILABLE` (the connection is lost), `PROVD_NULL_ARGUMENT`.
///
/// Thread-safe: may be called from any thread, also while another thread is blocked in
/// `provd_stream_next` on the same stream, until `provd_stream_free`.
#[no_mangle]
pub extern "C" fn provd_stream_cancel(
    stream: *const provd_stream,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires a live stream (not being freed).
        let stream = unsafe { args::handle(stream, "stream") }?;
        if stream.ended.load(Ordering::Acquire) {
            return Ok(());
        }
        match &stream.cancel {
            Some(handle) => cancel_quietly(handle),
            None => Ok(()),
        }
    })
}

/// Frees a stream. NULL is ignored. A generation that has not ended is cancelled in the
/// daemon (without waiting for its end). No other thread may be using the stream.
#[no_mangle]
pub extern "C" fn provd_stream_free(stream: *mut provd_stream) {
    crate::panic::free(|| {
        // SAFETY: the header requires NULL or a stream from provd_stream_start, freed once
        // and not in use by another thread.
        drop(unsafe { args::take(stream) });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::provd_chunk_kind;

    #[test]
    fn the_chunk_accessor_refuses_null_arguments() {
        let mut chunk = provd_chunk {
            kind: provd_chunk_kind::PROVD_CHUNK_TEXT,
            index: 0,
            text: provd_str::ABSENT,
            reasoning: provd_str::ABSENT,
            tool_call_index: 0,
            tool_call_id: provd_str::ABSENT,
            tool_call_name: provd_str::ABSENT,
            tool_call_arguments: provd_str::ABSENT,
        };
        assert_eq!(
            provd_stream_chunk(std::ptr::null(), &mut chunk),
            provd_status::PROVD_NULL_ARGUMENT
        );
    }
}
