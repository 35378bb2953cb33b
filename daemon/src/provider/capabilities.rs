//! What a request asks of a provider beyond text, checked before any provider is asked:
//! [`validate`] refuses a malformed request whatever the provider (a tool named twice, a
//! result for no call, an image that is not base64), and [`check`] refuses what the
//! chosen provider cannot honour, naming the option and the provider. Nothing a client
//! asks for is ever silently dropped.

use std::collections::HashSet;

use provd_client::{ErrorCode, GenerateRequest, Image, ResponseFormat, Role, ToolChoice};

use super::registry;
use super::ProviderError;
use crate::settings::{Capability, ProviderConfig};
use crate::untrusted::untrusted;

/// The longest tool or schema name, as the strictest API (OpenAI) allows.
pub const MAX_NAME_CHARS: usize = 64;
/// The most tools one request may give.
pub const MAX_TOOLS: usize = 128;

/// The capabilities in force for a provider: its configured list, else its type's.
pub fn effective(config: &ProviderConfig) -> Vec<Capability> {
    config
        .capabilities
        .clone()
        .unwrap_or_else(|| registry::row(config.kind).capabilities.to_vec())
}

/// What `request` needs, each with the option that needs it (for the refusal).
pub fn needed(request: &GenerateRequest) -> Vec<(Capability, &'static str)> {
    let mut needs = Vec::new();
    let calls_tools = !request.tools.is_empty()
        || request
            .messages
            .iter()
            .any(|m| m.role == Role::Tool || !m.tool_calls.is_empty());
    if calls_tools {
        needs.push((Capability::Tools, "tools"));
    }
    match request.response_format {
        Some(ResponseFormat::JsonObject) => {
            needs.push((Capability::JsonObject, "response_format json_object"))
        }
        Some(ResponseFormat::JsonSchema { .. }) => {
            needs.push((Capability::JsonSchema, "response_format json_schema"))
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if request.reasoning.is_some() {
        needs.push((Capability::Reasoning, "reasoning"));
    }
    let images = request.messages.iter().flat_map(|m| &m.images);
    let (mut bytes, mut urls) = (false, false);
    for image in images {
        match image {
            Image::Base64 { .. } => bytes = true,
            Image::Url { .. } => urls = true,
        }
    }
    if bytes {
        needs.push((Capability::Images, "images"));
    }
    if urls {
        needs.push((Capability::ImageUrls, "image URLs"));
    }
    needs
}

/// Refuses `request` when provider `id` (configured as `config`) lacks something it
/// needs: `invalid_request`, naming the option, the provider and what it can do.
pub fn check(
    id: &str,
    config: &ProviderConfig,
    request: &GenerateRequest,
) -> Result<(), ProviderError> {
    let have = effective(config);
    for (need, option) in needed(request) {
        if !have.contains(&need) {
            let listed: Vec<&str> = have.iter().map(|c| c.as_str()).collect();
            let hint = if need == Capability::ImageUrls && have.contains(&Capability::Images) {
                "; send the image's bytes instead (provd never fetches a URL)"
            } else {
                ""
            };
            return Err(ProviderError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "provider '{}' (type {}) does not support {option}: its capabilities are [{}]{hint}",
                    untrusted(id),
                    config.kind,
                    listed.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn invalid(message: String) -> ProviderError {
    ProviderError::new(ErrorCode::InvalidRequest, message)
}

/// Whether `name` is a tool or schema name every API takes: 1 to 64 of letters, digits,
/// `_` and `-`.
pub fn is_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Refuses a request whose tools, tool turns, response format or images are malformed,
/// whatever provider it goes to.
pub fn validate(request: &GenerateRequest) -> Result<(), ProviderError> {
    if request.tools.len() > MAX_TOOLS {
        return Err(invalid(format!(
            "tools: {} given, at most {MAX_TOOLS}",
            request.tools.len()
        )));
    }
    let mut names = HashSet::new();
    for (i, tool) in request.tools.iter().enumerate() {
        if !is_valid_name(&tool.name) {
            return Err(invalid(format!(
                "tools.{i}.name {} must be 1 to {MAX_NAME_CHARS} letters, digits, '_' or '-'",
                untrusted(&tool.name)
            )));
        }
        if !names.insert(tool.name.as_str()) {
            return Err(invalid(format!(
                "tools.{i}.name {} is given twice",
                untrusted(&tool.name)
            )));
        }
        if let Some(parameters) = &tool.parameters {
            if !is_object_schema(parameters) {
                return Err(invalid(format!(
                    "tools.{i}.parameters must be a JSON Schema object with \"type\": \"object\""
                )));
            }
        }
    }
    match &request.tool_choice {
        Some(ToolChoice::Required) if request.tools.is_empty() => {
            return Err(invalid("tool_choice \"required\" needs tools".to_owned()))
        }
        Some(ToolChoice::Tool(name)) if !names.contains(name.as_str()) => {
            return Err(invalid(format!(
                "tool_choice names tool {}, which is not in tools",
                untrusted(name)
            )))
        }
        _ => {}
    }
    let mut call_ids = HashSet::new();
    for (i, m) in request.messages.iter().enumerate() {
        if !m.tool_calls.is_empty() && m.role != Role::Assistant {
            return Err(invalid(format!(
                "messages.{i}: only an assistant turn carries tool_calls"
            )));
        }
        for (j, call) in m.tool_calls.iter().enumerate() {
            if call.id.is_empty() || !is_valid_name(&call.name) {
                return Err(invalid(format!(
                    "messages.{i}.tool_calls.{j} needs an id and a valid tool name"
                )));
            }
            if serde_json::from_str::<serde_json::Value>(&call.arguments)
                .map_or(true, |v| !v.is_object())
            {
                return Err(invalid(format!(
                    "messages.{i}.tool_calls.{j}.arguments must be a JSON object as text"
                )));
            }
            call_ids.insert(call.id.as_str());
        }
        match (&m.role, &m.tool_call_id) {
            (Role::Tool, None) => {
                return Err(invalid(format!(
                    "messages.{i}: a tool turn needs tool_call_id"
                )))
            }
            (Role::Tool, Some(id)) if !call_ids.contains(id.as_str()) => {
                return Err(invalid(format!(
                    "messages.{i}.tool_call_id {} answers no earlier tool call",
                    untrusted(id)
                )))
            }
            (Role::System | Role::User | Role::Assistant, Some(_)) => {
                return Err(invalid(format!(
                    "messages.{i}: only a tool turn carries tool_call_id"
                )))
            }
            _ => {}
        }
        if !m.images.is_empty() && m.role != Role::User {
            return Err(invalid(format!(
                "messages.{i}: only a user turn carries images"
            )));
        }
        for (j, image) in m.images.iter().enumerate() {
            check_image(image).map_err(|why| invalid(format!("messages.{i}.images.{j}: {why}")))?;
        }
    }
    if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = &request.response_format {
        if !is_valid_name(name) {
            return Err(invalid(format!(
                "response_format.name {} must be 1 to {MAX_NAME_CHARS} letters, digits, '_' or '-'",
                untrusted(name)
            )));
        }
        if !schema.is_object() {
            return Err(invalid(
                "response_format.schema must be a JSON Schema object".to_owned(),
            ));
        }
    }
    if let Some(r) = &request.reasoning {
        if r.budget_tokens == Some(0) {
            return Err(invalid(
                "reasoning.budget_tokens must be at least 1".to_owned(),
            ));
        }
    }
    Ok(())
}

fn is_object_schema(schema: &serde_json::Value) -> bool {
    schema.is_object() && schema.get("type").is_none_or(|t| t == "object")
}

fn check_image(image: &Image) -> Result<(), String> {
    match image {
        Image::Base64 { media_type, data } => {
            if !provd_client::content::IMAGE_MEDIA_TYPES.contains(&media_type.as_str()) {
                return Err(format!(
                    "media_type {} is not one of {}",
                    untrusted(media_type),
                    provd_client::content::IMAGE_MEDIA_TYPES.join(", ")
                ));
            }
            if data.is_empty() || !is_base64(data) {
                return Err("data must be non-empty standard base64".to_owned());
            }
            Ok(())
        }
        Image::Url { url } => {
            if url.starts_with("https://") && url.len() > "https://".len() {
                Ok(())
            } else {
                Err("url must be an https:// URL".to_owned())
            }
        }
    }
}

/// Whether `data` is standard, padded base64 (what every provider takes).
fn is_base64(data: &str) -> bool {
    let bytes = data.as_bytes();
    if bytes.len() % 4 != 0 {
        return false;
    }
    let body = data.trim_end_matches('=');
    bytes.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use provd_client::{Message, Reasoning, Tool, ToolCall};
    use serde_json::json;

    fn config(kind: &str, capabilities: Option<&str>) -> ProviderConfig {
        let caps = capabilities.map_or(String::new(), |c| format!("capabilities = {c}\n"));
        toml::from_str(&format!("type = \"{kind}\"\n{caps}")).unwrap()
    }

    fn with_tools() -> GenerateRequest {
        GenerateRequest {
            prompt: Some("weather?".into()),
            tools: vec![Tool::new("get_weather", "", json!({"type": "object"}))],
            ..GenerateRequest::default()
        }
    }

    fn png() -> Image {
        Image::Base64 {
            media_type: "image/png".into(),
            data: "iVBORw0KGgo=".into(),
        }
    }

    #[test]
    fn a_type_decides_when_capabilities_are_unset_and_a_configured_list_is_enforced() {
        assert!(check("o", &config("ollama", None), &with_tools()).is_ok());
        let e = check(
            "o",
            &config("ollama", Some("[\"streaming\"]")),
            &with_tools(),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(
            e.message
                .contains("provider 'o' (type ollama) does not support tools")
                && e.message.contains("[streaming]"),
            "{e}"
        );
    }

    #[test]
    fn an_image_url_to_a_provider_that_takes_only_bytes_says_to_send_bytes() {
        let mut request = GenerateRequest::prompt("what is this?");
        request.messages.push(Message {
            images: vec![Image::Url {
                url: "https://example.com/a.png".into(),
            }],
            ..Message::text(Role::User, "look")
        });
        let e = check("g", &config("gemini", None), &request).unwrap_err();
        assert!(
            e.message.contains("image URLs") && e.message.contains("never fetches"),
            "{e}"
        );
        request.messages[0].images = vec![png()];
        assert!(check("g", &config("gemini", None), &request).is_ok());
    }

    #[test]
    fn needs_follow_from_the_request() {
        let mut request = with_tools();
        request.response_format = Some(ResponseFormat::JsonObject);
        request.reasoning = Some(Reasoning::default());
        let needs: Vec<Capability> = needed(&request).into_iter().map(|(c, _)| c).collect();
        assert_eq!(
            needs,
            [
                Capability::Tools,
                Capability::JsonObject,
                Capability::Reasoning
            ]
        );
        assert!(needed(&GenerateRequest::prompt("hi")).is_empty());
    }

    #[test]
    fn malformed_tools_and_tool_turns_are_refused_by_name() {
        let cases: Vec<(GenerateRequest, &str)> = vec![
            (
                GenerateRequest {
                    tools: vec![Tool::new("bad name", "", json!({}))],
                    ..GenerateRequest::default()
                },
                "tools.0.name",
            ),
            (
                GenerateRequest {
                    tools: vec![Tool::new("f", "", json!({})), Tool::new("f", "", json!({}))],
                    ..GenerateRequest::default()
                },
                "given twice",
            ),
            (
                GenerateRequest {
                    tools: vec![Tool::new("f", "", json!({"type": "string"}))],
                    ..GenerateRequest::default()
                },
                "tools.0.parameters",
            ),
            (
                GenerateRequest {
                    tool_choice: Some(ToolChoice::Tool("g".into())),
                    ..with_tools()
                },
                "tool_choice names tool",
            ),
            (
                GenerateRequest {
                    tool_choice: Some(ToolChoice::Required),
                    ..GenerateRequest::default()
                },
                "needs tools",
            ),
            (
                GenerateRequest {
                    messages: vec![Message::tool_result("call_1", "sunny")],
                    ..with_tools()
                },
                "answers no earlier tool call",
            ),
            (
                GenerateRequest {
                    messages: vec![Message {
                        tool_calls: vec![ToolCall {
                            id: "c".into(),
                            name: "get_weather".into(),
                            arguments: "[1]".into(),
                        }],
                        ..Message::text(Role::Assistant, "")
                    }],
                    ..with_tools()
                },
                "arguments must be a JSON object",
            ),
            (
                GenerateRequest {
                    messages: vec![Message {
                        images: vec![png()],
                        ..Message::text(Role::Assistant, "")
                    }],
                    ..GenerateRequest::default()
                },
                "only a user turn carries images",
            ),
        ];
        for (request, expected) in cases {
            let e = validate(&request).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert!(e.message.contains(expected), "{expected}: {e}");
        }
    }

    #[test]
    fn a_tool_conversation_that_holds_together_is_valid() {
        let mut request = with_tools();
        request.messages = vec![
            Message::text(Role::User, "weather in Paris?"),
            Message {
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "get_weather".into(),
                    arguments: "{\"city\":\"Paris\"}".into(),
                }],
                ..Message::text(Role::Assistant, "")
            },
            Message::tool_result("call_1", "sunny"),
        ];
        request.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
        assert!(validate(&request).is_ok());
    }

    #[test]
    fn images_must_be_a_known_type_in_base64_or_an_https_url() {
        let bad = [
            Image::Base64 {
                media_type: "image/svg+xml".into(),
                data: "AAAA".into(),
            },
            Image::Base64 {
                media_type: "image/png".into(),
                data: "not base64!".into(),
            },
            Image::Base64 {
                media_type: "image/png".into(),
                data: "AAA".into(),
            },
            Image::Base64 {
                media_type: "image/png".into(),
                data: String::new(),
            },
            Image::Url {
                url: "http://example.com/a.png".into(),
            },
            Image::Url {
                url: "file:///etc/passwd".into(),
            },
        ];
        for image in bad {
            assert!(check_image(&image).is_err(), "{image:?}");
        }
        assert!(check_image(&png()).is_ok());
        assert!(check_image(&Image::Url {
            url: "https://example.com/a.png".into()
        })
        .is_ok());
    }
}
