//! The system-wide error vocabulary: one [`ErrorCode`] enum shared by the daemon, the Rust
//! client, the C header and the documentation, and [`WireError`], the error value that
//! travels in a reply.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::message::Usage;

/// Why a request failed. The wire carries the snake_case name (`"rate_limited"`), the C ABI
/// carries the integer discriminant; both are stable and only ever grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ErrorCode {
    /// The request is malformed or names something it may not (bad params, duplicate id).
    InvalidRequest = 1,
    /// No valid credential: the upstream refused the key, or the caller presented none.
    Unauthenticated = 2,
    /// The caller is known but may not do this.
    PermissionDenied = 3,
    /// The provider, model or request id does not exist.
    NotFound = 4,
    /// A rate limit was hit; `retry_after_ms` says when to try again if known.
    RateLimited = 5,
    /// The daemon or the upstream is over capacity right now.
    Overloaded = 6,
    /// A deadline passed (connect, first byte, idle gap or total).
    Timeout = 7,
    /// The upstream answered with an error or a response the daemon cannot use.
    UpstreamError = 8,
    /// The daemon or the upstream cannot be reached, or is shutting down.
    Unavailable = 9,
    /// The request was cancelled by the client.
    Cancelled = 10,
    /// The bytes on the socket broke the protocol (framing, types, version).
    ProtocolError = 11,
    /// A bug in provd; the message says where.
    Internal = 12,
}

impl ErrorCode {
    /// Every code, in discriminant order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::RateLimited,
        ErrorCode::Overloaded,
        ErrorCode::Timeout,
        ErrorCode::UpstreamError,
        ErrorCode::Unavailable,
        ErrorCode::Cancelled,
        ErrorCode::ProtocolError,
        ErrorCode::Internal,
    ];

    /// The name used on the wire and in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::UpstreamError => "upstream_error",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::Internal => "internal",
        }
    }

    /// Parses a wire name. Names this build does not know map to `None`; callers decide
    /// (the deserializer maps them to [`ErrorCode::Internal`] so a newer daemon never
    /// breaks an older client).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether a request failing with this code may succeed if sent again unchanged.
    pub const fn is_retryable_by_default(self) -> bool {
        matches!(
            self,
            ErrorCode::RateLimited
                | ErrorCode::Overloaded
                | ErrorCode::Timeout
                | ErrorCode::Unavailable
        )
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(ErrorCode::from_name(&name).unwrap_or(ErrorCode::Internal))
    }
}

/// The error half of a reply: what failed, in words a person can act on, and whether
/// retrying can help.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WireError {
    /// The machine-readable kind.
    pub code: ErrorCode,
    /// What failed, with which input, and what to do.
    pub message: String,
    /// Whether sending the same request again may succeed.
    #[serde(default)]
    pub retryable: bool,
    /// How long to wait before retrying, when the daemon or upstream said.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// For a generation that ended early: how many chunks reached the client.
    #[serde(default)]
    pub chunks: Option<u32>,
    /// For a generation that ended early: the token usage known at that point.
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl WireError {
    /// An error with the code's default retryability and no extra detail.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        WireError {
            code,
            message: message.into(),
            retryable: code.is_retryable_by_default(),
            retry_after_ms: None,
            chunks: None,
            usage: None,
        }
    }

    /// Sets the retry-after hint.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after_ms = Some(after.as_millis().try_into().unwrap_or(u64::MAX));
        self
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(ms) = self.retry_after_ms {
            write!(f, " (retry after {ms} ms)")?;
        }
        Ok(())
    }
}

impl std::error::Error for WireError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_by_name() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
            let bytes = rmp_serde::to_vec(&code).unwrap();
            assert_eq!(rmp_serde::from_slice::<ErrorCode>(&bytes).unwrap(), code);
        }
    }

    #[test]
    fn discriminants_are_dense_and_stable() {
        for (i, code) in ErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code as usize, i + 1);
        }
    }

    #[test]
    fn unknown_code_from_a_newer_daemon_decodes_as_internal() {
        let bytes = rmp_serde::to_vec("quota_exhausted").unwrap();
        assert_eq!(
            rmp_serde::from_slice::<ErrorCode>(&bytes).unwrap(),
            ErrorCode::Internal
        );
    }
}
