//! Ollama's native API as documented (<https://docs.ollama.com/api>): `POST /api/chat`
//! streamed as NDJSON (`application/x-ndjson`, one `ChatStreamEvent` a line, the last
//! with `"done": true` and the counters) or answered whole, `GET /api/tags`, and
//! `{"error": "..."}` bodies, which arrive as a line of the stream once it has begun.

use serde_json::{json, Value};

use crate::upstream::{split_every, Part, Reply};

/// The timestamp the mock stamps on every line (Ollama's own format: RFC 3339 with
/// nanoseconds).
pub const CREATED_AT: &str = "2025-10-17T23:14:07.414671123Z";

fn line(value: &Value) -> String {
    format!("{value}\n")
}

/// A streamed piece of the answer.
pub fn chunk_line(model: &str, content: &str) -> String {
    line(&json!({
        "model": model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": content},
        "done": false,
    }))
}

/// A streamed piece of a thinking model's reasoning (`think` enabled).
pub fn thinking_line(model: &str, thinking: &str) -> String {
    line(&json!({
        "model": model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": "", "thinking": thinking},
        "done": false,
    }))
}

/// A streamed tool call.
pub fn tool_call_line(model: &str, name: &str, arguments: Value) -> String {
    line(&json!({
        "model": model,
        "created_at": CREATED_AT,
        "message": {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": name, "arguments": arguments}}],
        },
        "done": false,
    }))
}

/// The final object: `done`, `done_reason` and the statistics, around `message`.
fn final_object(model: &str, content: &str, done_reason: &str, usage: (u32, u32)) -> Value {
    json!({
        "model": model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": content},
        "done_reason": done_reason,
        "done": true,
        "total_duration": 4_883_583_458u64,
        "load_duration": 1_334_875,
        "prompt_eval_count": usage.0,
        "prompt_eval_duration": 342_546_000,
        "eval_count": usage.1,
        "eval_duration": 4_535_599_000u64,
    })
}

/// The last line of a stream.
pub fn done_line(model: &str, done_reason: &str, usage: (u32, u32)) -> String {
    line(&final_object(model, "", done_reason, usage))
}

/// A whole streamed answer: one line per text, then the final line.
pub fn stream_text(model: &str, texts: &[&str], done_reason: &str, usage: (u32, u32)) -> String {
    let mut s: String = texts.iter().map(|t| chunk_line(model, t)).collect();
    s.push_str(&done_line(model, done_reason, usage));
    s
}

/// A streamed reply whose body is `ndjson` cut every `step` bytes.
pub fn stream_reply(ndjson: &str, step: usize) -> Reply {
    Reply::stream("application/x-ndjson", split_every(ndjson, step))
}

/// The non-streamed (`"stream": false`) answer.
pub fn chat_response(model: &str, text: &str, done_reason: &str, usage: (u32, u32)) -> Value {
    final_object(model, text, done_reason, usage)
}

/// An error response as Ollama sends it.
pub fn error(status: u16, message: &str) -> Reply {
    Reply::json(status, &json!({"error": message}))
}

/// The line that ends a stream which failed after it began (the status stays 200).
pub fn error_line(message: &str) -> Part {
    Part::Bytes(line(&json!({"error": message})).into_bytes())
}

/// `GET /api/tags` listing `(name, modified_at)` pairs.
pub fn tags(models: &[(&str, &str)]) -> Reply {
    let models: Vec<Value> = models
        .iter()
        .map(|(name, modified_at)| {
            json!({
                "name": name,
                "model": name,
                "modified_at": modified_at,
                "size": 3_825_819_519u64,
                "digest": "fe938a131f40e6f6d40083c9f0f430a515233eb2edaa6d72eb85c50d64f2300e",
                "details": {
                    "format": "gguf",
                    "family": "llama",
                    "families": null,
                    "parameter_size": "7B",
                    "quantization_level": "Q4_0",
                },
            })
        })
        .collect();
    Reply::json(200, &json!({"models": models}))
}

/// A streamed line with several whole calls, as a model that calls tools in parallel
/// sends them: `(name, arguments object)` each, no ids.
pub fn tool_calls_line(model: &str, calls: &[(&str, Value)]) -> String {
    let calls: Vec<Value> = calls
        .iter()
        .map(|(name, arguments)| json!({"function": {"name": name, "arguments": arguments}}))
        .collect();
    line(&json!({
        "model": model,
        "created_at": CREATED_AT,
        "message": {"role": "assistant", "content": "", "tool_calls": calls},
        "done": false,
    }))
}

/// The non-streamed answer with `message` as given (its `thinking`, `tool_calls`).
pub fn chat_response_with(
    model: &str,
    message: Value,
    done_reason: &str,
    usage: (u32, u32),
) -> Value {
    let mut whole = final_object(model, "", done_reason, usage);
    whole["message"] = message;
    whole
}
