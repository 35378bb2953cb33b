//! Reading a request body: bounded by `[http] max_body_bytes` (a declared length over it
//! is refused before a byte is read; a chunked body is cut where it passes it), then
//! parsed as JSON into a dialect's request type, with errors that say what was wrong.

use http_body_util::BodyExt;
use provd_client::ErrorCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::Request;

/// The body of `request`, at most `max_bytes` long.
pub async fn read(request: Request, max_bytes: u64) -> Result<bytes::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the request body is larger than {max_bytes} bytes (http.max_body_bytes)"),
        )
        .with_status(http::StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes) {
        return Err(too_large());
    }
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(request.into_body(), limit)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("cannot read the request body: {e}"),
        )),
    }
}

/// `bytes` as JSON of type `T`: malformed JSON and wrong types are `invalid_request`
/// errors naming the line and column, and what was expected.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("the request body does not have the expected shape: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Shape {
        #[allow(dead_code)]
        n: u32,
    }

    #[test]
    fn malformed_json_and_wrong_types_are_told_apart() {
        let e = parse_json::<Shape>(b"{\"n\": ").unwrap_err();
        assert!(
            e.wire.message.contains("not valid JSON"),
            "{}",
            e.wire.message
        );
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        let e = parse_json::<Shape>(b"{\"n\": \"two\"}").unwrap_err();
        assert!(
            e.wire.message.contains("expected u32"),
            "{}",
            e.wire.message
        );
    }
}
