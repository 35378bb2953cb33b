//! The error object.
//!
//! A failing call returns its [`provd_status`] and, through its `err_out` argument, a
//! [`provd_error`] with the rest of the failure: the message, whether a retry may help,
//! the retry-after hint, and for a generation the chunks delivered and the usage known
//! when it ended.

use ::provd_client::{ClientError, ErrorCode, Usage, WireError};

use crate::done::provd_usage;
use crate::panic::accessor;
use crate::status::provd_status;
use crate::{provd_str, NulString};

/// The details of a failure. Made by the library, owned by the caller, freed with
/// `provd_error_free`. Immutable: any thread may read it; one thread frees it.
#[derive(Clone, Debug)]
pub struct provd_error {
    pub(crate) code: provd_status,
    pub(crate) message: NulString,
    pub(crate) retryable: bool,
    pub(crate) retry_after_ms: Option<u64>,
    pub(crate) chunks: Option<u32>,
    pub(crate) usage: Option<Usage>,
    /// Whether the error is about the caller's arguments, so the message gains the name of
    /// the function that refused them.
    pub(crate) local: bool,
}

/// The library's error type: the object it hands to C.
pub(crate) type Error = provd_error;

impl provd_error {
    fn local(code: provd_status, message: String) -> Error {
        provd_error {
            code,
            message: NulString::new(message),
            retryable: false,
            retry_after_ms: None,
            chunks: None,
            usage: None,
            local: true,
        }
    }

    /// A required pointer argument was NULL.
    pub(crate) fn null(arg: &str) -> Error {
        Error::local(
            provd_status::PROVD_NULL_ARGUMENT,
            format!("argument `{arg}` is NULL"),
        )
    }

    /// A string argument was not UTF-8.
    pub(crate) fn utf8(arg: &str, e: std::str::Utf8Error) -> Error {
        Error::local(
            provd_status::PROVD_INVALID_UTF8,
            format!(
                "argument `{arg}` is not valid UTF-8 (the first bad byte is at offset {})",
                e.valid_up_to()
            ),
        )
    }

    /// An argument had a value the function does not accept.
    pub(crate) fn invalid(arg: &str, why: impl std::fmt::Display) -> Error {
        Error::local(
            provd_status::PROVD_INVALID_ARGUMENT,
            format!("argument `{arg}` {why}"),
        )
    }

    /// A bug in the library.
    pub(crate) fn internal(message: String) -> Error {
        let mut e = Error::from_wire(WireError::new(ErrorCode::Internal, message));
        e.local = true;
        e
    }

    /// An error as the daemon (or the client on its behalf) reported it.
    pub(crate) fn from_wire(w: WireError) -> Error {
        provd_error {
            code: provd_status::from_code(w.code),
            message: NulString::new(w.message),
            retryable: w.retryable,
            retry_after_ms: w.retry_after_ms,
            chunks: w.chunks,
            usage: w.usage,
            local: false,
        }
    }

    /// Names the function in the message of an argument error.
    pub(crate) fn add_context(&mut self, function: &str) {
        if self.local {
            self.message = NulString::new(format!("{function}: {}", self.message.as_str()));
            self.local = false;
        }
    }
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Error {
        Error::from_wire(e.to_wire())
    }
}

/// The status code of `err` (never `PROVD_OK`), or `PROVD_NULL_ARGUMENT` when `err` is
/// NULL.
///
/// Thread-safe.
#[no_mangle]
pub extern "C" fn provd_error_code(err: *const provd_error) -> provd_status {
    let mut code = provd_status::PROVD_NULL_ARGUMENT;
    let status = accessor!(|| {
        // SAFETY: the header requires `err` to be NULL or a live error from this library.
        code = unsafe { crate::args::handle(err, "err") }?.code;
        Ok(())
    });
    if status == provd_status::PROVD_OK {
        code
    } else {
        status
    }
}

/// Lends the message of `err` through `message_out`: what failed, with which input, and
/// what to do. It is meant for people; do not parse it. It stays valid until
/// `provd_error_free(err)`.
///
/// Returns `PROVD_NULL_ARGUMENT` if `err` or `message_out` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_error_message(
    err: *const provd_error,
    message_out: *mut provd_str,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires `err` to be NULL or a live error from this library,
        // and `message_out` to be NULL or writable.
        let (err, out) = unsafe {
            (
                crate::args::handle(err, "err")?,
                crate::args::out(message_out, "message_out")?,
            )
        };
        out.write(err.message.lend());
        Ok(())
    })
}

/// Whether sending the same request again unchanged may succeed, through
/// `retryable_out`. Read this rather than guessing from the code: a provider may
/// override the code's default.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_error_retryable(
    err: *const provd_error,
    retryable_out: *mut bool,
) -> provd_status {
    accessor!(|| {
        // SAFETY: as in provd_error_message.
        let (err, out) = unsafe {
            (
                crate::args::handle(err, "err")?,
                crate::args::out(retryable_out, "retryable_out")?,
            )
        };
        out.write(err.retryable);
        Ok(())
    })
}

/// How long to wait before retrying, in milliseconds, when the daemon or the upstream
/// said. `*known_out` (if `known_out` is not NULL) tells whether it did; when it did not,
/// `*ms_out` is 0.
///
/// Returns `PROVD_NULL_ARGUMENT` if `err` or `ms_out` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_error_retry_after_ms(
    err: *const provd_error,
    ms_out: *mut u64,
    known_out: *mut bool,
) -> provd_status {
    accessor!(|| {
        // SAFETY: as in provd_error_message; `known_out` may be NULL.
        let (err, out, known) = unsafe {
            (
                crate::args::handle(err, "err")?,
                crate::args::out(ms_out, "ms_out")?,
                crate::args::out_opt(known_out),
            )
        };
        out.write(err.retry_after_ms.unwrap_or(0));
        if let Some(known) = known {
            known.write(err.retry_after_ms.is_some());
        }
        Ok(())
    })
}

/// For a generation that ended with this error: how many chunks reached the caller
/// before it ended. `*known_out` (if not NULL) is false for errors that are not about a
/// generation (a refused connection, say); `*chunks_out` is then 0.
///
/// Returns `PROVD_NULL_ARGUMENT` if `err` or `chunks_out` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_error_chunks(
    err: *const provd_error,
    chunks_out: *mut u32,
    known_out: *mut bool,
) -> provd_status {
    accessor!(|| {
        // SAFETY: as in provd_error_retry_after_ms.
        let (err, out, known) = unsafe {
            (
                crate::args::handle(err, "err")?,
                crate::args::out(chunks_out, "chunks_out")?,
                crate::args::out_opt(known_out),
            )
        };
        out.write(err.chunks.unwrap_or(0));
        if let Some(known) = known {
            known.write(err.chunks.is_some());
        }
        Ok(())
    })
}

/// For a generation that ended with this error: the token usage known at that point
/// (often partial). `*known_out` (if not NULL) is false when no usage was reported;
/// `*usage_out` is then all zeros.
///
/// Returns `PROVD_NULL_ARGUMENT` if `err` or `usage_out` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_error_usage(
    err: *const provd_error,
    usage_out: *mut provd_usage,
    known_out: *mut bool,
) -> provd_status {
    accessor!(|| {
        // SAFETY: as in provd_error_retry_after_ms.
        let (err, out, known) = unsafe {
            (
                crate::args::handle(err, "err")?,
                crate::args::out(usage_out, "usage_out")?,
                crate::args::out_opt(known_out),
            )
        };
        out.write(err.usage.unwrap_or_default().into());
        if let Some(known) = known {
            known.write(err.usage.is_some());
        }
        Ok(())
    })
}

/// Frees an error object. NULL is ignored. Every `provd_error *` the library hands out
/// must be freed exactly once, by any one thread, after which it must not be used.
#[no_mangle]
pub extern "C" fn provd_error_free(err: *mut provd_error) {
    crate::panic::free(|| {
        // SAFETY: the header requires `err` to be NULL or an error from this library that
        // is freed only this once.
        drop(unsafe { crate::args::take(err) });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_keep_code_message_and_retry_hints() {
        let wire = WireError::new(ErrorCode::RateLimited, "slow down")
            .with_retry_after(std::time::Duration::from_millis(1500));
        let e = Error::from(ClientError::Server(wire));
        assert_eq!(e.code, provd_status::PROVD_RATE_LIMITED);
        assert_eq!(e.message.as_str(), "slow down");
        assert!(e.retryable);
        assert_eq!(e.retry_after_ms, Some(1500));

        let e = Error::from(ClientError::Disconnected("gone".into()));
        assert_eq!(e.code, provd_status::PROVD_UNAVAILABLE);
        assert!(e.message.as_str().contains("gone"), "{:?}", e.message);
    }

    #[cfg(unix)]
    #[test]
    fn an_untrusted_daemon_is_permission_denied_with_the_refusal_in_the_message() {
        let e = Error::from(ClientError::UntrustedDaemon {
            path: "/tmp/provd-1000/provd.sock".into(),
            reason: ::provd_client::trust::Untrusted {
                path: "/tmp/provd-1000".into(),
                owner: 1002,
                mode: 0o700,
                rule: ::provd_client::trust::Rule::SocketDirectoryOwner { expected: 1000 },
            },
        });
        assert_eq!(e.code, provd_status::PROVD_PERMISSION_DENIED);
        assert!(!e.retryable);
        let message = e.message.as_str();
        assert!(
            message.contains("nothing was sent") && message.contains("owned by uid 1002"),
            "{message}"
        );
    }

    #[test]
    fn argument_errors_name_the_function_once() {
        let mut e = Error::null("prompt");
        e.add_context("provd_request_set_prompt");
        e.add_context("outer");
        assert_eq!(
            e.message.as_str(),
            "provd_request_set_prompt: argument `prompt` is NULL"
        );
    }

    #[test]
    fn accessors_refuse_null_without_crashing() {
        assert_eq!(
            provd_error_code(std::ptr::null()),
            provd_status::PROVD_NULL_ARGUMENT
        );
        let mut s = provd_str::ABSENT;
        assert_eq!(
            provd_error_message(std::ptr::null(), &mut s),
            provd_status::PROVD_NULL_ARGUMENT
        );
        provd_error_free(std::ptr::null_mut());
    }
}
