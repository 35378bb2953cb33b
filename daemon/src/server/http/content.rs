//! What the dialects share when they carry more than text: images given as data URLs,
//! the provider state of an assistant turn written as an opaque token, and reasoning
//! effort words.
//!
//! # The provider-state token
//!
//! A provider may need state back with an assistant turn (Anthropic's signed thinking,
//! Gemini's thought signatures): provd gives it as [`GenerateDone::provider_state`], a
//! JSON value tagged with the provider type. A dialect whose answer has a string field the
//! client sends back unread (Anthropic's thinking `signature`) carries it there as
//! `provd1.` and the value's JSON in lower-case hex: a string any client keeps verbatim,
//! that provd can tell from a signature it did not write. Hex rather than base64 because
//! the daemon has no base64 crate and the token is a few kilobytes at most.
//!
//! [`GenerateDone::provider_state`]: provd_client::GenerateDone::provider_state

use provd_client::Image;
use serde_json::Value;

/// The prefix of a provider-state token.
const STATE_TOKEN_PREFIX: &str = "provd1.";

/// `state` as a token (module docs).
pub fn state_token(state: &Value) -> String {
    let json = state.to_string();
    format!(
        "{STATE_TOKEN_PREFIX}{}",
        crate::credentials::hex(json.as_bytes())
    )
}

/// The state a token carries; `None` for a string provd did not write (a signature from
/// another source, or a token altered on the way).
pub fn state_from_token(token: &str) -> Option<Value> {
    let hex = token.strip_prefix(STATE_TOKEN_PREFIX)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = hex
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            let digits = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(digits, 16).ok()
        })
        .collect::<Option<Vec<u8>>>()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// An image given as a URL: a `data:` URL with base64 data becomes the bytes with their
/// media type, an `https:` URL stays a URL (the provider fetches it, or refuses it if its
/// API needs bytes: provd never fetches). Anything else is refused with why.
pub fn image_from_url(url: &str) -> Result<Image, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((header, data)) = rest.split_once(',') else {
            return Err("a data: URL needs a comma before its data".to_owned());
        };
        let Some(media_type) = header.strip_suffix(";base64") else {
            return Err("only base64 data: URLs are taken (data:image/png;base64,...)".to_owned());
        };
        // Parameters (`;charset=…`) say nothing about an image's type.
        let media_type = media_type.split(';').next().unwrap_or_default();
        return Ok(Image::Base64 {
            media_type: media_type.trim().to_ascii_lowercase(),
            data: data.to_owned(),
        });
    }
    let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
    if scheme.eq_ignore_ascii_case("https") {
        return Ok(Image::Url {
            url: url.to_owned(),
        });
    }
    Err(format!(
        "an image URL must be https: or a base64 data: URL, got scheme \"{}\"",
        crate::untrusted::untrusted(&crate::server::connection::truncate(scheme, 16))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_state_token_round_trips_and_foreign_or_altered_tokens_are_none() {
        let state =
            json!({"type": "anthropic", "state": {"thinking": [{"signature": "EqQBCkYI\"x"}]}});
        let token = state_token(&state);
        assert!(token.starts_with("provd1."), "{token}");
        assert_eq!(state_from_token(&token), Some(state));
        assert_eq!(state_from_token("EqQBCkYIARgCIkA"), None);
        assert_eq!(state_from_token(&format!("{token}0")), None);
        assert_eq!(state_from_token("provd1.zz"), None);
        assert_eq!(
            state_from_token(&state_token(&json!("not an object"))),
            None
        );
    }

    #[test]
    fn data_urls_become_bytes_https_stays_a_url_and_other_schemes_are_refused() {
        assert_eq!(
            image_from_url("data:image/PNG;base64,iVBORw0KGgo=").unwrap(),
            Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }
        );
        assert_eq!(
            image_from_url("data:image/webp;name=cat.webp;base64,UklGR").unwrap(),
            Image::Base64 {
                media_type: "image/webp".into(),
                data: "UklGR".into()
            }
        );
        assert_eq!(
            image_from_url("https://example.com/cat.jpg").unwrap(),
            Image::Url {
                url: "https://example.com/cat.jpg".into()
            }
        );
        for (url, says) in [
            ("http://example.com/cat.jpg", "scheme \"http\""),
            ("file:///etc/passwd", "scheme \"file\""),
            ("data:image/png,rawbytes", "only base64"),
            ("data:image/png;base64", "comma"),
        ] {
            let e = image_from_url(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
