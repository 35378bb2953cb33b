//! Cancel tokens: a way to cancel generations from any thread.

use std::sync::{Mutex, MutexGuard, PoisonError};

use ::provd_client::blocking::BlockingCancel;

use crate::args;
use crate::error::{provd_error, Error};
use crate::generate::cancel_quietly;
use crate::panic::{accessor, boundary};
use crate::status::provd_status;

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

    pub(crate) fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Registers a running generation until the returned guard is dropped. If the token
    /// was cancelled since the generation started, cancels it now, so no cancel is lost
    /// between the start and this registration.
    pub(crate) fn attach(&self, handle: BlockingCancel) -> Attached<'_> {
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

pub(crate) struct Attached<'a> {
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
    boundary!(err_out, || {
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
    boundary!(err_out, || {
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
    accessor!(|| {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
