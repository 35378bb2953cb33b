//! Lenient readers for single fields of the APIs' JSON, so that one odd field (a `model`
//! of `null`, an error `code` sent as a string) does not fail a whole chunk or error.

/// Deserializes an optional text field leniently: a string, or nothing for anything else
/// (a `model` of `null` or a number), so that one odd field does not fail a whole chunk.
pub fn lenient_text<'de, De>(deserializer: De) -> Result<Option<String>, De::Error>
where
    De: serde::Deserializer<'de>,
{
    let value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// Deserializes an error's numeric `code` leniently: a number, or a string holding one
/// (`"400"`, as some Gemini-format gateways send); anything else is no code, so that the
/// rest of the error (its message) is still read.
pub fn lenient_code<'de, De>(deserializer: De) -> Result<Option<u16>, De::Error>
where
    De: serde::Deserializer<'de>,
{
    let value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}
