//! Status codes and the error object.
//!
//! [`provd_status`] is the one result enum of the ABI: `PROVD_OK`, the daemon's wire error
//! codes with their numbers unchanged (1 to 12, as in `client/src/error.rs` and
//! PROTOCOL.md section 11.2), and three codes that only the library produces, from 100 up
//! so the wire codes can keep growing below them. [`provd_error`] carries the rest of a
//! failure: the message, whether a retry may help, the retry-after hint, and for a
//! generation the chunks delivered and the usage known when it ended.

use std::ffi::c_char;

use ::provd_client::{ClientError, ErrorCode, Usage, WireError};

use crate::generate::provd_usage;
use crate::panic;
use crate::{provd_str, NulString};

/// The result of every fallible libprovd function.
///
/// Values 1 to 12 are the daemon's error codes (PROTOCOL.md section 11.2), with the same
/// names and numbers in every language; new ones are only ever added. Values from 100 up
/// are produced by the library itself, about arguments the caller passed. A caller should
/// treat an unknown value like `PROVD_INTERNAL`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum provd_status {
    /// Success.
    PROVD_OK = 0,
    /// The request is malformed or names something it may not (bad parameters, no
    /// prompt or messages, a bad `additional_params.mock`).
    PROVD_INVALID_REQUEST = 1,
    /// No valid credential: the upstream refused the key, or the caller presented none.
    PROVD_UNAUTHENTICATED = 2,
    /// The caller is known but may not do this (also: the socket's permissions refused
    /// the connection, or the client refused the daemon: the socket or the process
    /// listening failed the trust check of PROTOCOL.md section 2.4, and nothing was sent).
    PROVD_PERMISSION_DENIED = 3,
    /// The provider, model or request id does not exist.
    PROVD_NOT_FOUND = 4,
    /// A rate limit was hit; see `provd_error_retry_after_ms`.
    PROVD_RATE_LIMITED = 5,
    /// The daemon or the upstream is over capacity right now (also: a generation beyond
    /// the connection's cap, `provd_client_max_streams`, 64 by default; open another
    /// client or wait for one to end).
    PROVD_OVERLOADED = 6,
    /// A deadline passed (connect, first byte, an idle gap, or the total), or one of the
    /// client's own deadlines (`provd_connect_options`).
    PROVD_TIMEOUT = 7,
    /// The upstream answered with an error or a response the daemon cannot use.
    PROVD_UPSTREAM_ERROR = 8,
    /// The daemon or the upstream cannot be reached or is shutting down (also: no daemon
    /// listens at the socket path, or the connection was lost).
    PROVD_UNAVAILABLE = 9,
    /// The generation was cancelled: by a cancel call, a cancel token, or the chunk
    /// callback returning `PROVD_STOP`.
    PROVD_CANCELLED = 10,
    /// The bytes on the socket broke the protocol (framing, types, version mismatch).
    PROVD_PROTOCOL_ERROR = 11,
    /// A bug in provd or libprovd (a panic inside the library ends here too); the
    /// message says where.
    PROVD_INTERNAL = 12,
    /// Library only: a pointer argument that may not be NULL was NULL. Nothing was done.
    PROVD_NULL_ARGUMENT = 100,
    /// Library only: a string argument was not valid UTF-8. Nothing was done.
    PROVD_INVALID_UTF8 = 101,
    /// Library only: an argument had a value the function does not accept (malformed
    /// JSON, a NaN temperature, an unknown role, an index out of range, a socket path
    /// that is empty, holds a NUL byte or is too long). Nothing was done.
    PROVD_INVALID_ARGUMENT = 102,
}

impl provd_status {
    /// The status for a daemon error code; the numbers are equal by construction.
    pub(crate) fn from_code(code: ErrorCode) -> provd_status {
        use provd_status::*;
        // Exhaustive on purpose: a new wire code must be added here (and to the header)
        // before this crate compiles again.
        match code {
            ErrorCode::InvalidRequest => PROVD_INVALID_REQUEST,
            ErrorCode::Unauthenticated => PROVD_UNAUTHENTICATED,
            ErrorCode::PermissionDenied => PROVD_PERMISSION_DENIED,
            ErrorCode::NotFound => PROVD_NOT_FOUND,
            ErrorCode::RateLimited => PROVD_RATE_LIMITED,
            ErrorCode::Overloaded => PROVD_OVERLOADED,
            ErrorCode::Timeout => PROVD_TIMEOUT,
            ErrorCode::UpstreamError => PROVD_UPSTREAM_ERROR,
            ErrorCode::Unavailable => PROVD_UNAVAILABLE,
            ErrorCode::Cancelled => PROVD_CANCELLED,
            ErrorCode::ProtocolError => PROVD_PROTOCOL_ERROR,
            ErrorCode::Internal => PROVD_INTERNAL,
        }
    }

    /// The snake_case name: the wire name for daemon codes.
    pub(crate) fn name(self) -> &'static std::ffi::CStr {
        use provd_status::*;
        match self {
            PROVD_OK => c"ok",
            PROVD_INVALID_REQUEST => c"invalid_request",
            PROVD_UNAUTHENTICATED => c"unauthenticated",
            PROVD_PERMISSION_DENIED => c"permission_denied",
            PROVD_NOT_FOUND => c"not_found",
            PROVD_RATE_LIMITED => c"rate_limited",
            PROVD_OVERLOADED => c"overloaded",
            PROVD_TIMEOUT => c"timeout",
            PROVD_UPSTREAM_ERROR => c"upstream_error",
            PROVD_UNAVAILABLE => c"unavailable",
            PROVD_CANCELLED => c"cancelled",
            PROVD_PROTOCOL_ERROR => c"protocol_error",
            PROVD_INTERNAL => c"internal",
            PROVD_NULL_ARGUMENT => c"null_argument",
            PROVD_INVALID_UTF8 => c"invalid_utf8",
            PROVD_INVALID_ARGUMENT => c"invalid_argument",
        }
    }

    /// Every status, for lookups by number.
    const ALL: [provd_status; 16] = {
        use provd_status::*;
        [
            PROVD_OK,
            PROVD_INVALID_REQUEST,
            PROVD_UNAUTHENTICATED,
            PROVD_PERMISSION_DENIED,
            PROVD_NOT_FOUND,
            PROVD_RATE_LIMITED,
            PROVD_OVERLOADED,
            PROVD_TIMEOUT,
            PROVD_UPSTREAM_ERROR,
            PROVD_UNAVAILABLE,
            PROVD_CANCELLED,
            PROVD_PROTOCOL_ERROR,
            PROVD_INTERNAL,
            PROVD_NULL_ARGUMENT,
            PROVD_INVALID_UTF8,
            PROVD_INVALID_ARGUMENT,
        ]
    };
}

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

/// The name of a status, e.g. `"rate_limited"` for `PROVD_RATE_LIMITED` (the wire name
/// for the daemon's codes), or `"unknown"` for a number that is no status. A static
/// NUL-terminated string; never free it.
///
/// `status` is an `unsigned int` rather than a `provd_status` so that any number is safe
/// to pass. Thread-safe; never fails.
#[no_mangle]
pub extern "C" fn provd_status_name(status: u32) -> *const c_char {
    provd_status::ALL
        .into_iter()
        .find(|s| *s as u32 == status)
        .map_or(c"unknown", provd_status::name)
        .as_ptr()
}

/// The status code of `err` (never `PROVD_OK`), or `PROVD_NULL_ARGUMENT` when `err` is
/// NULL.
///
/// Thread-safe.
#[no_mangle]
pub extern "C" fn provd_error_code(err: *const provd_error) -> provd_status {
    let mut code = provd_status::PROVD_NULL_ARGUMENT;
    let status = panic::accessor(|| {
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
    panic::accessor(|| {
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
    panic::accessor(|| {
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
    panic::accessor(|| {
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
    panic::accessor(|| {
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
    panic::accessor(|| {
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
    panic::free(|| {
        // SAFETY: the header requires `err` to be NULL or an error from this library that
        // is freed only this once.
        drop(unsafe { crate::args::take(err) });
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn wire_codes_keep_their_numbers_and_names() {
        for code in ErrorCode::ALL {
            let status = provd_status::from_code(code);
            assert_eq!(status as u32, code as u32);
            assert_eq!(status.name().to_str().unwrap(), code.as_str());
        }
        assert_eq!(provd_status::PROVD_OK as u32, 0);
    }

    #[test]
    fn status_names_cover_every_number_and_unknown_ones() {
        for status in provd_status::ALL {
            // SAFETY: provd_status_name returns static NUL-terminated strings.
            let name = unsafe { CStr::from_ptr(provd_status_name(status as u32)) };
            assert_eq!(name, status.name());
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(provd_status_name(55)) };
        assert_eq!(unknown.to_str().unwrap(), "unknown");
    }

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
