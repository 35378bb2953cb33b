//! The one mapping from provd's [`ErrorCode`] to an HTTP status, and the error every
//! dialect renders in its own shape.
//!
//! | code | status |
//! |---|---|
//! | `invalid_request`, `protocol_error` | 400 |
//! | `unauthenticated` | 401 |
//! | `permission_denied` | 403 |
//! | `not_found` | 404 |
//! | `rate_limited` | 429 + `Retry-After` |
//! | `internal` | 500 |
//! | `upstream_error` | 502 |
//! | `unavailable`, `overloaded` | 503 + `Retry-After` |
//! | `timeout` | 504 |
//! | `cancelled` (the client went away) | 499, logged only: nobody reads it |
//!
//! A body over `[http] max_body_bytes` is 413 (an `invalid_request` with its own status).

use http::{HeaderValue, StatusCode};
use provd_client::{ErrorCode, WireError};

/// The status of a client that closed its connection before the answer (nginx's
/// convention); it appears in the log, never on the wire.
pub const CLIENT_CLOSED: u16 = 499;

/// `Retry-After` when an error that invites one gives no time of its own.
const DEFAULT_RETRY_AFTER_SECONDS: u64 = 1;

/// The HTTP status of an error code.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidRequest | ErrorCode::ProtocolError => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::UpstreamError => StatusCode::BAD_GATEWAY,
        ErrorCode::Unavailable | ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Cancelled => {
            StatusCode::from_u16(CLIENT_CLOSED).expect("499 is a valid status code")
        }
    }
}

/// An error on its way to an HTTP client: the wire error, the request parameter it is
/// about (when one is), and its status (the code's, unless a route says otherwise).
#[derive(Clone, Debug)]
pub struct ApiError {
    /// What failed, as the MessagePack protocol would say it.
    pub wire: WireError,
    /// The request parameter at fault (`n`, `messages[2].content`), for the dialects
    /// that name it.
    pub param: Option<String>,
    /// The status to send.
    pub status: StatusCode,
}

impl ApiError {
    /// An error of `code` with the code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError::from(WireError::new(code, message))
    }

    /// An `invalid_request` about parameter `param`.
    pub fn param(param: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.into()),
            ..ApiError::new(ErrorCode::InvalidRequest, message)
        }
    }

    /// The same error with another status.
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }

    /// The `Retry-After` header this error's status calls for (429 and 503): the
    /// error's own delay rounded up to whole seconds, else one second.
    pub fn retry_after(&self) -> Option<HeaderValue> {
        if !matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            return None;
        }
        let seconds = self
            .wire
            .retry_after_ms
            .map_or(DEFAULT_RETRY_AFTER_SECONDS, |ms| ms.div_ceil(1000).max(1));
        Some(HeaderValue::from(seconds))
    }

    /// Sets the status and `Retry-After` of `response` from this error.
    pub fn apply(&self, response: &mut http::Response<super::Body>) {
        *response.status_mut() = self.status;
        if let Some(after) = self.retry_after() {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, after);
        }
    }
}

impl From<WireError> for ApiError {
    fn from(wire: WireError) -> ApiError {
        ApiError {
            status: status_for(wire.code),
            wire,
            param: None,
        }
    }
}

/// The status of every code as the README's table documents it, which each dialect's
/// tests check its error responses against.
#[cfg(test)]
pub(super) const DOCUMENTED_STATUSES: [(ErrorCode, u16); 12] = [
    (ErrorCode::InvalidRequest, 400),
    (ErrorCode::ProtocolError, 400),
    (ErrorCode::Unauthenticated, 401),
    (ErrorCode::PermissionDenied, 403),
    (ErrorCode::NotFound, 404),
    (ErrorCode::RateLimited, 429),
    (ErrorCode::Cancelled, 499),
    (ErrorCode::Internal, 500),
    (ErrorCode::UpstreamError, 502),
    (ErrorCode::Unavailable, 503),
    (ErrorCode::Overloaded, 503),
    (ErrorCode::Timeout, 504),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_status_the_front_door_documents() {
        assert_eq!(DOCUMENTED_STATUSES.len(), ErrorCode::ALL.len());
        for (code, status) in DOCUMENTED_STATUSES {
            assert_eq!(status_for(code).as_u16(), status, "{code:?}");
        }
    }

    #[test]
    fn retry_after_is_sent_with_429_and_503_only_rounded_up_to_seconds() {
        let mut limited = WireError::new(ErrorCode::RateLimited, "slow down");
        limited.retry_after_ms = Some(1500);
        assert_eq!(
            ApiError::from(limited).retry_after(),
            Some(HeaderValue::from(2u64))
        );
        let overloaded = ApiError::new(ErrorCode::Overloaded, "full");
        assert_eq!(overloaded.retry_after(), Some(HeaderValue::from(1u64)));
        assert_eq!(
            ApiError::new(ErrorCode::UpstreamError, "bad").retry_after(),
            None
        );
    }
}
