//! What the providers share when they put a tool conversation into their APIs' shapes:
//! a call's arguments as a JSON value, the name of the call a result answers, and a
//! result's text for an API without an error flag.
//!
//! Each provider module still says how its API spells tools; only logic that would
//! otherwise be written once per provider lives here.

use provd_client::{Message, ToolCall};
use serde_json::{json, Value};

/// What a failed tool call's result starts with where an API has no error flag
/// (OpenAI's `role: tool` messages, Ollama's): the model reads it as a failure.
pub const TOOL_ERROR_PREFIX: &str = "Error: ";

/// A tool result's content as an API without an error flag takes it.
pub fn tool_result_content(message: &Message) -> String {
    if message.is_error {
        format!("{TOOL_ERROR_PREFIX}{}", message.content)
    } else {
        message.content.clone()
    }
}

/// A call's arguments as the JSON object the APIs that take them parsed want
/// (Anthropic's `input`, Gemini's `args`, Ollama's `arguments`). The request's
/// validation already checked they are a JSON object; anything else would be `{}`.
pub fn arguments_object(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}))
}

/// The name of the tool whose call `id` a result answers, for the APIs that name a
/// result by its tool rather than by a call id (Gemini, Ollama): the latest call with
/// that id among `earlier`, the turns before the result.
pub fn call_name<'a>(earlier: &'a [Message], id: &str) -> Option<&'a str> {
    earlier
        .iter()
        .rev()
        .flat_map(|turn| &turn.tool_calls)
        .find(|call| call.id == id)
        .map(|call| call.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use provd_client::Role;

    fn assistant(calls: &[(&str, &str)]) -> Message {
        Message {
            tool_calls: calls
                .iter()
                .map(|(id, name)| ToolCall {
                    id: (*id).into(),
                    name: (*name).into(),
                    arguments: "{}".into(),
                })
                .collect(),
            ..Message::text(Role::Assistant, "")
        }
    }

    #[test]
    fn a_result_is_named_by_the_latest_earlier_call_with_its_id() {
        let turns = [
            assistant(&[("a", "first"), ("b", "other")]),
            Message::tool_result("a", "1"),
            assistant(&[("a", "second")]),
        ];
        assert_eq!(call_name(&turns, "a"), Some("second"));
        assert_eq!(call_name(&turns[..2], "a"), Some("first"));
        assert_eq!(call_name(&turns, "b"), Some("other"));
        assert_eq!(call_name(&turns, "c"), None);
    }

    #[test]
    fn a_failed_result_starts_with_the_error_prefix() {
        let failed = Message {
            is_error: true,
            ..Message::tool_result("a", "offline")
        };
        assert_eq!(tool_result_content(&failed), "Error: offline");
        assert_eq!(
            tool_result_content(&Message::tool_result("a", "18C")),
            "18C"
        );
    }

    #[test]
    fn arguments_that_are_not_an_object_become_an_empty_object() {
        let call = |arguments: &str| ToolCall {
            id: "a".into(),
            name: "t".into(),
            arguments: arguments.into(),
        };
        assert_eq!(arguments_object(&call("{\"x\":1}")), json!({"x": 1}));
        assert_eq!(arguments_object(&call("not json")), json!({}));
    }
}
