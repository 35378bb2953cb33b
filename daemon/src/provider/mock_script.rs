//! What the mock answers beyond plain text, decided from the request alone so that
//! every interface can run a tool conversation, a JSON answer and reasoning against it
//! with no scripting:
//!
//! - **Tools**: with tools given and `tool_choice` not `none`, a turn that does not
//!   follow a tool result calls one tool (the one `tool_choice` names, else the first)
//!   with the least arguments its schema accepts (strings `"mock"`, numbers `1`, `true`,
//!   empty arrays, an enum's first value, the required properties of objects), streamed in
//!   two pieces. `additional_params.mock.tool_calls = [{"name", "arguments"}, …]` scripts
//!   the calls instead (several make a parallel turn).
//! - **After a tool result**: the answer is `The tool NAME returned: RESULT` (or
//!   `… failed: RESULT` for an error result).
//! - **JSON**: `json_schema` answers the least instance of the schema, `json_object`
//!   `{"answer": TEXT}`.
//! - **Reasoning**: asked for, the mock first reasons `Thinking about: LAST USER TEXT`
//!   (counted in the completion and as reasoning tokens) and reports the provider state
//!   `{"signature": "mock-signature"}`, which it checks on the turns sent back to it, as
//!   Anthropic checks its thinking signatures.
//! - **Images**: the answer begins `I see N image(s). `.

use provd_client::{ErrorCode, GenerateRequest, ResponseFormat, Role, ToolChoice};
use serde_json::{json, Map, Value};

use super::ProviderError;

/// The signature the mock signs its reasoning with, and checks when it comes back.
pub const SIGNATURE: &str = "mock-signature";

/// What a mock turn produces beside its plain text.
#[derive(Debug, Default, PartialEq)]
pub struct Script {
    /// Reasoning text, sent before the answer.
    pub reasoning: Option<String>,
    /// Calls to make, as (name, arguments JSON text); when any, the turn has no text.
    pub calls: Vec<(String, String)>,
    /// The answer's text when the request decides it (JSON, a tool's result, images).
    pub text: Option<String>,
    /// State to report for the next turn.
    pub provider_state: Option<Value>,
}

/// The script for `request`, given the text the mock would answer otherwise.
pub fn script(request: &GenerateRequest, plain: &str) -> Result<Script, ProviderError> {
    check_returned_state(request)?;
    let mut script = Script::default();
    if request.reasoning.is_some() {
        script.reasoning = Some(format!("Thinking about: {}", last_user_text(request)));
        script.provider_state = Some(json!({"signature": SIGNATURE}));
    }
    let scripted = scripted_calls(request)?;
    let follows_result = request
        .messages
        .last()
        .is_some_and(|m| m.role == Role::Tool)
        && request.prompt.as_deref().is_none_or(str::is_empty);
    if follows_result {
        script.text = Some(tool_result_answer(request));
    } else if !scripted.is_empty() {
        script.calls = scripted;
    } else if let Some(tool) = chosen_tool(request) {
        let arguments = least_instance(&tool.parameters_or_empty());
        script.calls = vec![(tool.name.clone(), arguments.to_string())];
    } else {
        script.text = match &request.response_format {
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                Some(least_instance(schema).to_string())
            }
            Some(ResponseFormat::JsonObject) => Some(json!({"answer": plain}).to_string()),
            Some(ResponseFormat::Text) | None => None,
        };
    }
    let images = request
        .messages
        .iter()
        .map(|m| m.images.len())
        .sum::<usize>();
    if images > 0 && script.calls.is_empty() && script.text.is_none() {
        let plural = if images == 1 { "" } else { "s" };
        script.text = Some(format!("I see {images} image{plural}. {plain}"));
    }
    Ok(script)
}

/// The tool a turn calls unscripted: none after `tool_choice: none` or without tools.
fn chosen_tool(request: &GenerateRequest) -> Option<&provd_client::Tool> {
    match &request.tool_choice {
        Some(ToolChoice::None) => None,
        Some(ToolChoice::Tool(name)) => request.tools.iter().find(|t| &t.name == name),
        Some(ToolChoice::Auto | ToolChoice::Required) | None => request.tools.first(),
    }
}

/// `additional_params.mock.tool_calls`, checked.
fn scripted_calls(request: &GenerateRequest) -> Result<Vec<(String, String)>, ProviderError> {
    let Some(list) = request
        .additional_params
        .get("mock")
        .and_then(|m| m.get("tool_calls"))
        .filter(|v| !v.is_null())
    else {
        return Ok(Vec::new());
    };
    let bad = || {
        ProviderError::new(
            ErrorCode::InvalidRequest,
            "additional_params.mock.tool_calls must be a list of {\"name\": tool, \"arguments\": object}",
        )
    };
    list.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|call| {
            let name = call.get("name").and_then(Value::as_str).ok_or_else(bad)?;
            if !request.tools.iter().any(|t| t.name == name) {
                return Err(ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "additional_params.mock.tool_calls calls {name:?}, which is not in tools"
                    ),
                ));
            }
            let arguments = call.get("arguments").cloned().unwrap_or_else(|| json!({}));
            Ok((name.to_owned(), arguments.to_string()))
        })
        .collect()
}

fn last_user_text(request: &GenerateRequest) -> String {
    if let Some(prompt) = request.prompt.as_deref().filter(|p| !p.is_empty()) {
        return prompt.to_owned();
    }
    request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// The answer to the tool result that ends the conversation.
fn tool_result_answer(request: &GenerateRequest) -> String {
    let Some((result, earlier)) = request.messages.split_last() else {
        return String::new();
    };
    let id = result.tool_call_id.as_deref().unwrap_or_default();
    let name = super::tools::call_name(earlier, id).unwrap_or("?");
    let verb = if result.is_error {
        "failed"
    } else {
        "returned"
    };
    format!("The tool {name} {verb}: {}", result.content)
}

/// Refuses an assistant turn whose mock state was altered, as Anthropic refuses thinking
/// whose signature does not match.
fn check_returned_state(request: &GenerateRequest) -> Result<(), ProviderError> {
    for (i, m) in request.messages.iter().enumerate() {
        if let Some(state) = super::state_for(m, "mock") {
            if state.get("signature").and_then(Value::as_str) != Some(SIGNATURE) {
                return Err(ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!("messages.{i}.provider_state: the mock's signature does not match"),
                ));
            }
        }
    }
    Ok(())
}

/// The least JSON value `schema` accepts, as far as the mock needs: the types, `enum`,
/// `const`, and the required (else all) properties of objects.
pub fn least_instance(schema: &Value) -> Value {
    least(schema, 0)
}

fn least(schema: &Value, depth: u32) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    if let Some(value) = schema.get("const") {
        return value.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    let kind = match schema.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types.iter().find_map(Value::as_str).unwrap_or("null"),
        // No type: an object, as a schema with `properties` (or none at all) describes.
        _ => "object",
    };
    match kind {
        "string" => json!("mock"),
        "integer" | "number" => json!(1),
        "boolean" => json!(true),
        "array" => json!([]),
        "null" => Value::Null,
        _ => {
            let properties = schema.get("properties").and_then(Value::as_object);
            let required: Option<Vec<&str>> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect());
            let mut object = Map::new();
            for (name, sub) in properties.into_iter().flatten() {
                if required.as_ref().is_none_or(|r| r.contains(&name.as_str())) {
                    object.insert(name.clone(), least(sub, depth + 1));
                }
            }
            Value::Object(object)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provd_client::{Message, Reasoning, Tool, ToolCall};

    fn weather() -> Tool {
        Tool::new(
            "get_weather",
            "",
            json!({"type": "object", "properties": {
                "city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer"}
            }, "required": ["city", "unit"]}),
        )
    }

    #[test]
    fn a_turn_with_tools_calls_the_chosen_tool_with_the_least_arguments() {
        let request = GenerateRequest {
            prompt: Some("weather?".into()),
            tools: vec![Tool::new("other", "", json!({"type": "object"})), weather()],
            tool_choice: Some(ToolChoice::Tool("get_weather".into())),
            ..GenerateRequest::default()
        };
        let script = script(&request, "plain").unwrap();
        assert_eq!(
            script.calls,
            [(
                "get_weather".to_owned(),
                r#"{"city":"mock","unit":"c"}"#.to_owned()
            )]
        );
        let none = GenerateRequest {
            tool_choice: Some(ToolChoice::None),
            ..request
        };
        assert!(script_of(&none).calls.is_empty());
    }

    fn script_of(request: &GenerateRequest) -> Script {
        script(request, "plain").unwrap()
    }

    #[test]
    fn after_a_tool_result_the_mock_answers_with_it() {
        let request = GenerateRequest {
            tools: vec![weather()],
            messages: vec![
                Message::text(Role::User, "weather?"),
                Message {
                    tool_calls: vec![ToolCall {
                        id: "call_1".into(),
                        name: "get_weather".into(),
                        arguments: "{}".into(),
                    }],
                    ..Message::text(Role::Assistant, "")
                },
                Message::tool_result("call_1", "sunny"),
            ],
            ..GenerateRequest::default()
        };
        let script = script_of(&request);
        assert_eq!(
            script.text.as_deref(),
            Some("The tool get_weather returned: sunny")
        );
        assert!(script.calls.is_empty());
    }

    #[test]
    fn json_formats_answer_json_and_reasoning_is_signed() {
        let request = GenerateRequest {
            prompt: Some("give me JSON".into()),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "out".into(),
                schema: weather().parameters.unwrap(),
                strict: true,
            }),
            reasoning: Some(Reasoning::default()),
            ..GenerateRequest::default()
        };
        let script = script_of(&request);
        assert_eq!(
            script.text.as_deref(),
            Some(r#"{"city":"mock","unit":"c"}"#)
        );
        assert_eq!(
            script.reasoning.as_deref(),
            Some("Thinking about: give me JSON")
        );
        assert_eq!(script.provider_state, Some(json!({"signature": SIGNATURE})));
    }

    #[test]
    fn an_altered_signature_sent_back_is_refused() {
        let request = GenerateRequest {
            messages: vec![Message {
                provider_state: Some(json!({"type": "mock", "state": {"signature": "forged"}})),
                ..Message::text(Role::Assistant, "hi")
            }],
            ..GenerateRequest::default()
        };
        assert_eq!(
            script(&request, "").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn scripted_calls_make_a_parallel_turn_and_must_name_given_tools() {
        let mut request = GenerateRequest {
            prompt: Some("two cities".into()),
            tools: vec![weather()],
            ..GenerateRequest::default()
        };
        request.additional_params.insert(
            "mock".into(),
            json!({"tool_calls": [
                {"name": "get_weather", "arguments": {"city": "Paris"}},
                {"name": "get_weather", "arguments": {"city": "Oslo"}}
            ]}),
        );
        assert_eq!(script_of(&request).calls.len(), 2);
        request
            .additional_params
            .insert("mock".into(), json!({"tool_calls": [{"name": "nope"}]}));
        assert!(script(&request, "").is_err());
    }
}
