//! The one result enum of the ABI.
//!
//! [`provd_status`] is `PROVD_OK`, the daemon's wire error codes with their numbers
//! unchanged (1 to 12, as in `client/src/error.rs` and PROTOCOL.md section 11.2), and
//! three codes that only the library produces, from 100 up so the wire codes can keep
//! growing below them.

use std::ffi::c_char;

use ::provd_client::ErrorCode;

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
}
