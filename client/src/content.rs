//! What a generation carries beside plain text: tools and the calls a model makes to
//! them, structured output, reasoning, and images. Provider-neutral: the daemon maps each
//! to every provider's own API, and refuses by name what a provider cannot honour.
//!
//! All of it is optional on the wire and sent only to a request that asks for it
//! (`tools` given, `reasoning` asked), so a client that knows none of it sees what it
//! always saw.

use serde::{Deserialize, Serialize};

/// A tool the model may call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Its name, as the model will call it: letters, digits, `_` and `-`, 1 to 64.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The JSON Schema of its arguments (an object schema). Absent: no arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
}

impl Tool {
    /// A tool with a description and an argument schema.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: serde_json::Value,
    ) -> Tool {
        Tool {
            name: name.into(),
            description: Some(description.into()),
            parameters: Some(parameters),
        }
    }

    /// The argument schema, or the schema of no arguments.
    pub fn parameters_or_empty(&self) -> serde_json::Value {
        self.parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}))
    }
}

/// Whether and which tool the model must call. On the wire: `"auto"`, `"none"`,
/// `"required"`, or `{"tool": "name"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides (the default when tools are given).
    Auto,
    /// The model must not call a tool.
    None,
    /// The model must call at least one tool.
    Required,
    /// The model must call this tool.
    Tool(String),
}

/// A call the model made: in an assistant turn sent back, and in a generation's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, which its result names. Providers that give none get
    /// `call_<request id>_<index>`.
    pub id: String,
    /// The tool called.
    pub name: String,
    /// The arguments as JSON text (an object); in a result, checked to parse.
    pub arguments: String,
}

/// A piece of a tool call, in a `chunk`: the first piece of call `index` carries its id
/// and name, the following ones more of its `arguments` text. Providers that send a whole
/// call at once send one piece with all of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the turn, 0, 1, 2 … in the order the model made them.
    pub index: u32,
    /// The call's id (first piece only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The tool's name (first piece only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// More of the arguments' JSON text; concatenated in order they make the whole.
    #[serde(default)]
    pub arguments: String,
}

/// The shape of the answer's text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text (the default).
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// The schema's name (some providers require one): letters, digits, `_`, `-`.
        name: String,
        /// The JSON Schema.
        schema: serde_json::Value,
        /// Ask the provider to enforce the schema exactly where it can.
        #[serde(default)]
        strict: bool,
    },
}

/// How hard the model should think, where the provider takes an effort level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effort {
    /// As little as the model allows.
    Minimal,
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
}

impl Effort {
    /// Every level, least first.
    pub const ALL: [Effort; 4] = [Effort::Minimal, Effort::Low, Effort::Medium, Effort::High];

    /// Its name on the wire, which the APIs that take an effort spell the same way.
    pub fn as_str(self) -> &'static str {
        match self {
            Effort::Minimal => "minimal",
            Effort::Low => "low",
            Effort::Medium => "medium",
            Effort::High => "high",
        }
    }

    /// The level named `name`, if it is one.
    pub fn from_name(name: &str) -> Option<Effort> {
        Effort::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// A request for the model's reasoning ("thinking").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reasoning {
    /// An effort level (OpenAI-style providers; mapped to a budget elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<Effort>,
    /// A token budget for the reasoning (Anthropic, Gemini; mapped to an effort elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u32>,
    /// Send the reasoning text to the client: as `reasoning` chunks when streaming, whole
    /// in the result otherwise. Off: the model reasons, the client sees only the count.
    #[serde(default)]
    pub show: bool,
}

/// An image in a user turn.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Image {
    /// The bytes, base64-encoded (standard alphabet, padded).
    Base64 {
        /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
        media_type: String,
        /// The base64 text.
        data: String,
    },
    /// An `https` URL the provider fetches (the daemon never does).
    Url {
        /// The URL.
        url: String,
    },
}

impl std::fmt::Debug for Image {
    // Megabytes of base64 in a log line help no one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Image::Base64 { media_type, data } => f
                .debug_struct("Base64")
                .field("media_type", media_type)
                .field("data_bytes", &data.len())
                .finish(),
            Image::Url { url } => f.debug_struct("Url").field("url", url).finish(),
        }
    }
}

/// The media types every image-taking provider accepts.
pub const IMAGE_MEDIA_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        value: &T,
    ) -> serde_json::Value {
        let bytes = rmp_serde::to_vec_named(value).unwrap();
        let back: T = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(&back, value);
        serde_json::to_value(value).unwrap()
    }

    #[test]
    fn an_efforts_name_is_its_wire_name_and_reads_back() {
        for effort in Effort::ALL {
            assert_eq!(roundtrip(&effort), effort.as_str());
            assert_eq!(Effort::from_name(effort.as_str()), Some(effort));
        }
        assert_eq!(Effort::from_name("extreme"), None);
    }

    #[test]
    fn tool_choice_is_a_word_or_a_map_naming_the_tool() {
        assert_eq!(roundtrip(&ToolChoice::Auto), "auto");
        assert_eq!(roundtrip(&ToolChoice::Required), "required");
        assert_eq!(
            roundtrip(&ToolChoice::Tool("get_weather".into())),
            serde_json::json!({"tool": "get_weather"})
        );
    }

    #[test]
    fn response_formats_are_tagged_by_type() {
        assert_eq!(
            roundtrip(&ResponseFormat::JsonObject)["type"],
            "json_object"
        );
        let schema = ResponseFormat::JsonSchema {
            name: "answer".into(),
            schema: serde_json::json!({"type": "object"}),
            strict: true,
        };
        let v = roundtrip(&schema);
        assert_eq!(v["type"], "json_schema");
        assert_eq!(v["schema"]["type"], "object");
    }

    #[test]
    fn an_images_debug_output_gives_its_size_not_its_bytes() {
        let image = Image::Base64 {
            media_type: "image/png".into(),
            data: "QUJD".repeat(100),
        };
        let shown = format!("{image:?}");
        assert!(
            shown.contains("data_bytes: 400") && !shown.contains("QUJD"),
            "{shown}"
        );
        assert_eq!(roundtrip(&image)["type"], "base64");
    }
}
