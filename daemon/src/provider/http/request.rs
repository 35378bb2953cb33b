//! What a request to an API carries besides its body: the endpoint's URL, the key's
//! header (sensitive, built without a plain copy), and the provider's configured headers.

use provd_client::ErrorCode;
use reqwest::header::HeaderValue;
use reqwest::{RequestBuilder, Url};

use crate::provider::ProviderError;

/// The value of an auth header (`x-api-key`, `Authorization: Bearer …`,
/// `x-goog-api-key`, `api-key`): `prefix` then the key, marked sensitive so that the HTTP
/// stack redacts it in Debug output and HTTP/2 sends it never-indexed (out of HPACK's
/// table). Built in a zeroizing buffer, so the only plain copy left is the header's own.
pub fn auth_header(
    provider: &str,
    prefix: &str,
    key: &crate::secret::Secret,
) -> Result<HeaderValue, ProviderError> {
    let mut text =
        zeroize::Zeroizing::new(String::with_capacity(prefix.len() + key.expose().len()));
    text.push_str(prefix);
    text.push_str(key.expose());
    let mut value = HeaderValue::from_str(&text).map_err(|_| {
        // Never quote the key, not even a malformed one.
        ProviderError::new(
            ErrorCode::Unauthenticated,
            format!(
                "provider '{provider}': the API key contains characters an HTTP header cannot carry"
            ),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Adds the configured `headers` of a provider. They are configuration, not secrets,
/// but one named like a credential (`Authorization`, `*-key`, `*token*`, cookies) is
/// marked sensitive all the same, in case someone put a key there.
pub fn with_config_headers(
    mut request: RequestBuilder,
    headers: &std::collections::BTreeMap<String, String>,
) -> RequestBuilder {
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let credential = ["auth", "key", "token", "secret", "cookie", "password"]
            .iter()
            .any(|word| lower.contains(word));
        match HeaderValue::from_str(value) {
            Ok(mut v) if credential => {
                v.set_sensitive(true);
                request = request.header(name, v);
            }
            // An invalid value is reported by reqwest when the request is sent.
            _ => request = request.header(name, value),
        }
    }
    request
}

/// An API endpoint's URL: `base_url` followed by `path`, parsed once per provider
/// instance. Parsing it for every request (host validation included) was a visible part
/// of a request's CPU in profiles.
pub fn endpoint(provider: &str, base_url: &str, path: &str) -> Result<Url, ProviderError> {
    Url::parse(&format!("{base_url}{path}")).map_err(|e| {
        ProviderError::new(
            ErrorCode::InvalidRequest,
            format!("provider '{provider}': base_url is not a URL: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_headers_named_like_credentials_are_sensitive() {
        let spec = crate::provider::ProviderSpec::for_test("p", "type = \"openai\"", "m", None);
        let transport =
            super::super::Transport::new(&spec, super::super::transport::DIALECT_FOR_TESTS)
                .unwrap();
        let headers: std::collections::BTreeMap<String, String> = [
            ("Authorization", "Bearer sk-config-canary-123"),
            ("X-Custom-Api-Key", "sk-config-canary-456"),
            ("HTTP-Referer", "https://example.org"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
        let request = with_config_headers(transport.get("http://127.0.0.1:9/"), &headers)
            .build()
            .unwrap();
        let h = request.headers();
        assert!(h["authorization"].is_sensitive());
        assert!(h["x-custom-api-key"].is_sensitive());
        assert!(!h["http-referer"].is_sensitive());
        assert!(!format!("{h:?}").contains("config-canary"));
    }
}
