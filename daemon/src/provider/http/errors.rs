//! How a failed HTTP exchange becomes a [`ProviderError`]: an error status and its body
//! (through the API's [`Dialect`]), a failure below HTTP (connect, TLS, reset), and an
//! answer that is not what the API documents. Messages name the provider and where it
//! was tried, never a whole URL; the transport scrubs them of keys.

use std::time::Duration;

use provd_client::ErrorCode;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::time::retry_after;
use super::transport::Timeouts;
use super::HttpApi;
use crate::provider::ProviderError;

/// How much of an unparseable error body is quoted in a message.
pub(super) const QUOTED_BODY_CHARS: usize = 300;

/// How one API reports failures, as the transport holds it: the error half of an
/// [`HttpApi`] ([`HttpApi::error_message`], [`HttpApi::retry_after`],
/// [`HttpApi::refine`]), as plain function pointers so that one non-generic transport
/// serves every API.
#[derive(Clone, Copy)]
pub struct Dialect {
    /// The upstream's own error message from an error body.
    pub error_message: fn(&[u8]) -> Option<String>,
    /// The retry hint from response headers.
    pub retry_after: fn(&HeaderMap) -> Option<Duration>,
    /// Corrects the status-based classification from the error body. Runs last.
    pub refine: fn(&mut ProviderError, &[u8]),
}

impl Dialect {
    /// The dialect of API `A`.
    pub fn of<A: HttpApi>() -> Dialect {
        Dialect {
            error_message: A::error_message,
            retry_after: A::retry_after,
            refine: A::refine,
        }
    }
}

impl std::fmt::Debug for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialect")
    }
}

/// Maps an HTTP error status to the system-wide code; retryable statuses carry the
/// upstream's retry-after hint.
pub fn status_error(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    message: &str,
) -> ProviderError {
    let code = match status.as_u16() {
        400 | 413 | 422 => ErrorCode::InvalidRequest,
        401 => ErrorCode::Unauthenticated,
        // 402: a billing or spend limit (Anthropic's billing_error), which no retry fixes.
        402 | 403 => ErrorCode::PermissionDenied,
        404 => ErrorCode::NotFound,
        408 => ErrorCode::Timeout,
        429 => ErrorCode::RateLimited,
        529 => ErrorCode::Overloaded,
        503 => ErrorCode::Unavailable,
        500..=599 => ErrorCode::UpstreamError,
        _ => ErrorCode::InvalidRequest,
    };
    let redirect = headers
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .filter(|_| status.is_redirection())
        .map_or(String::new(), |l| {
            format!(" (a redirect to {l}: point base_url there)")
        });
    let mut error = ProviderError::new(
        code,
        format!(
            "{provider} returned HTTP {}{redirect}: {message}",
            status.as_u16()
        ),
    );
    error.retryable = code.is_retryable_by_default() || status.is_server_error();
    // A billing limit (Anthropic's billing_error) binds this account only.
    error.try_elsewhere = status == StatusCode::PAYMENT_REQUIRED;
    if error.retryable {
        error.retry_after = retry_after(headers);
    }
    error
}

/// A failure below HTTP: connect, TLS, DNS, reset. The message names where it tried
/// (scheme, host and port), since a wrong `base_url` or a server that is not running is
/// the usual cause.
pub(super) fn transport_error(
    provider: &str,
    e: reqwest::Error,
    timeouts: &Timeouts,
) -> ProviderError {
    let (connect, timeout) = (e.is_connect(), e.is_timeout());
    // Never echo the whole URL (some APIs put keys in query strings): only its origin.
    let target = e.url().map_or_else(
        || "its base_url".to_owned(),
        |url| {
            let host = url.host_str().unwrap_or("?");
            match url.port_or_known_default() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            }
        },
    );
    let detail = error_chain(&e.without_url());
    if connect {
        if timeout {
            return ProviderError::new(
                ErrorCode::Timeout,
                format!(
                    "{provider}: connect timeout of {}s exceeded for {target} ({detail})",
                    timeouts.connect.as_secs()
                ),
            );
        }
        return ProviderError::new(
            ErrorCode::Unavailable,
            format!("{provider}: cannot connect to {target}: {detail}"),
        );
    }
    if timeout {
        return ProviderError::new(
            ErrorCode::Timeout,
            format!("{provider}: request to {target} timed out ({detail})"),
        );
    }
    let mut error = ProviderError::new(
        ErrorCode::Unavailable,
        format!("{provider}: connection to {target} failed: {detail}"),
    );
    error.retryable = true;
    error
}

/// An error with its sources, which is where reqwest keeps the useful part
/// ("connection refused").
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// An unparseable error body quoted in a message, cut at [`QUOTED_BODY_CHARS`]; `text`
/// must be scrubbed already.
pub(super) fn quote_body(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(QUOTED_BODY_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// An upstream response that is not what the API documents.
pub fn malformed(provider: &str, e: impl std::fmt::Display) -> ProviderError {
    let mut error = ProviderError::new(
        ErrorCode::UpstreamError,
        format!("{provider}: malformed response: {e}"),
    );
    error.retryable = false;
    error
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrub::Scrubber;

    #[test]
    fn statuses_map_to_the_system_codes() {
        let h = HeaderMap::new();
        let code = |s: u16| status_error("p", StatusCode::from_u16(s).unwrap(), &h, "m");
        for (s, c, retry) in [
            (400, ErrorCode::InvalidRequest, false),
            (413, ErrorCode::InvalidRequest, false),
            (422, ErrorCode::InvalidRequest, false),
            (401, ErrorCode::Unauthenticated, false),
            (403, ErrorCode::PermissionDenied, false),
            (404, ErrorCode::NotFound, false),
            (408, ErrorCode::Timeout, true),
            (429, ErrorCode::RateLimited, true),
            (529, ErrorCode::Overloaded, true),
            (503, ErrorCode::Unavailable, true),
            (500, ErrorCode::UpstreamError, true),
            (502, ErrorCode::UpstreamError, true),
        ] {
            let e = code(s);
            assert_eq!((e.code, e.retryable), (c, retry), "HTTP {s}");
            assert_eq!(e.message, format!("p returned HTTP {s}: m"));
        }
    }

    #[test]
    fn a_key_straddling_the_quoting_cut_leaves_no_prefix() {
        let key = "sk-straddle-0123456789abcdef";
        let own = Scrubber::new([key]);
        for offset in QUOTED_BODY_CHARS - key.len()..QUOTED_BODY_CHARS + 2 {
            let body = format!("{}{key} and more text after the key", "x".repeat(offset));
            let quoted = quote_body(&crate::scrub::scrub_also(&body, &own));
            assert!(!quoted.contains("sk-straddle"), "offset {offset}: {quoted}");
            assert!(!quoted.contains("sk-"), "offset {offset}: {quoted}");
        }
    }
}
