//! The Anthropic Messages API as documented: `POST /v1/messages` (named SSE events from
//! `message_start` to `message_stop`, or one `Message` object), `GET /v1/models`
//! (paginated), `{"type": "error", "error": {...}}` error bodies and the
//! `anthropic-ratelimit-*` headers.
//!
//! Sources: <https://docs.claude.com/en/api/messages-streaming>,
//! <https://docs.claude.com/en/api/messages>, <https://docs.claude.com/en/api/errors>,
//! <https://docs.claude.com/en/api/models-list>, <https://docs.claude.com/en/api/rate-limits>.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::upstream::{split_every, Part, Reply};

/// The request id every mock reply carries, as Anthropic's do (`request-id` header and
/// `request_id` in error bodies).
pub const REQUEST_ID: &str = "req_011CTestRequest";

/// One named SSE event: `event: <type>` then its JSON data, which repeats the type.
pub fn event(data: &Value) -> String {
    let kind = data["type"].as_str().expect("an event has a type");
    format!("event: {kind}\ndata: {data}\n\n")
}

/// `message_start`: a `Message` with empty content and the input token count.
pub fn message_start(model: &str, input_tokens: u32) -> String {
    event(&json!({
        "type": "message_start",
        "message": {
            "id": "msg_01Test",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 1,
                "service_tier": "standard",
            },
        },
    }))
}

/// A text block: start, one `text_delta` per piece, stop.
pub fn text_block(index: u32, pieces: &[&str]) -> String {
    let mut s = event(&json!({
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "text", "text": ""},
    }));
    for piece in pieces {
        s.push_str(&text_delta(index, piece));
    }
    s.push_str(&block_stop(index));
    s
}

/// One `text_delta`.
pub fn text_delta(index: u32, text: &str) -> String {
    event(&json!({
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "text_delta", "text": text},
    }))
}

/// `content_block_stop`.
pub fn block_stop(index: u32) -> String {
    event(&json!({"type": "content_block_stop", "index": index}))
}

/// The signature that ends every mock thinking block (an opaque base64 string, as the
/// API's are).
pub const SIGNATURE: &str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3h";

/// The data of every mock redacted-thinking block.
pub const REDACTED_DATA: &str = "EmwKAhgBEgy3va3pzix/LafPsn4a";

/// An extended-thinking block: `thinking_delta`s, then the `signature_delta` that ends
/// every thinking block.
pub fn thinking_block(index: u32, thinking: &[&str]) -> String {
    let mut s = event(&json!({
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
    }));
    for piece in thinking {
        s.push_str(&event(&json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "thinking_delta", "thinking": piece},
        })));
    }
    s.push_str(&event(&json!({
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "signature_delta", "signature": SIGNATURE},
    })));
    s.push_str(&block_stop(index));
    s
}

/// A redacted-thinking block: its whole content comes in the start event.
pub fn redacted_thinking_block(index: u32) -> String {
    let mut s = event(&json!({
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "redacted_thinking", "data": REDACTED_DATA},
    }));
    s.push_str(&block_stop(index));
    s
}

/// A tool-use block whose input arrives as `input_json_delta` pieces of partial JSON.
pub fn tool_use_block(index: u32, name: &str, partial_json: &[&str]) -> String {
    tool_use_block_with_id(index, "toolu_01Test", name, partial_json)
}

/// [`tool_use_block`] with the call's id.
pub fn tool_use_block_with_id(index: u32, id: &str, name: &str, partial_json: &[&str]) -> String {
    let mut s = event(&json!({
        "type": "content_block_start",
        "index": index,
        "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}},
    }));
    for piece in partial_json {
        s.push_str(&event(&json!({
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": piece},
        })));
    }
    s.push_str(&block_stop(index));
    s
}

/// `message_delta`: the stop reason and the cumulative output token count.
pub fn message_delta(stop_reason: &str, output_tokens: u32) -> String {
    event(&json!({
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": output_tokens},
    }))
}

/// `message_stop`, the last event.
pub fn message_stop() -> String {
    event(&json!({"type": "message_stop"}))
}

/// `ping`, sent any number of times (the documented example has a space after the
/// colon).
pub fn ping() -> String {
    "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_owned()
}

/// A whole streamed answer as the documentation shows it: `message_start`, a ping, one
/// text block with a delta per piece, `message_delta`, `message_stop`.
pub fn stream_text(model: &str, pieces: &[&str], stop_reason: &str, usage: (u32, u32)) -> String {
    let mut s = message_start(model, usage.0);
    s.push_str(&ping());
    s.push_str(&text_block(0, pieces));
    s.push_str(&message_delta(stop_reason, usage.1));
    s.push_str(&message_stop());
    s
}

/// A streamed reply whose body is `sse` cut every `step` bytes.
pub fn stream_reply(sse: &str, step: usize) -> Reply {
    Reply::stream("text/event-stream; charset=utf-8", split_every(sse, step))
        .header("request-id", REQUEST_ID)
}

/// A streamed reply of these parts, whole.
pub fn stream_parts(parts: Vec<Part>) -> Reply {
    Reply::stream("text/event-stream; charset=utf-8", parts).header("request-id", REQUEST_ID)
}

/// The non-streamed `Message` object.
pub fn message(model: &str, text: &str, stop_reason: &str, usage: (u32, u32)) -> Value {
    json!({
        "id": "msg_01Test",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "model": model,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {
            "input_tokens": usage.0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": usage.1,
            "service_tier": "standard",
        },
    })
}

/// A whole (non-streamed) `Message` reply.
pub fn message_reply(model: &str, text: &str, stop_reason: &str, usage: (u32, u32)) -> Reply {
    Reply::json(200, &message(model, text, stop_reason, usage)).header("request-id", REQUEST_ID)
}

/// A content block of an answer, described once for its streamed and its whole shape.
#[derive(Clone, Copy, Debug)]
pub enum Block<'a> {
    /// A text block, streamed as these `text_delta`s.
    Text(&'a [&'a str]),
    /// A thinking block of these `thinking_delta`s, signed with [`SIGNATURE`].
    Thinking(&'a [&'a str]),
    /// A redacted-thinking block holding [`REDACTED_DATA`].
    RedactedThinking,
    /// A tool-use block whose input streams as these pieces of partial JSON.
    ToolUse {
        /// The call's id (`toolu_…`).
        id: &'a str,
        /// The tool called.
        name: &'a str,
        /// The input's JSON text, in pieces.
        partial_json: &'a [&'a str],
    },
}

/// A streamed answer of these blocks: `message_start`, each block at its index, a ping,
/// `message_delta`, `message_stop`.
pub fn stream_blocks(
    model: &str,
    blocks: &[Block],
    stop_reason: &str,
    usage: (u32, u32),
) -> String {
    let mut s = message_start(model, usage.0);
    for (index, block) in (0u32..).zip(blocks) {
        s.push_str(&match *block {
            Block::Text(pieces) => text_block(index, pieces),
            Block::Thinking(pieces) => thinking_block(index, pieces),
            Block::RedactedThinking => redacted_thinking_block(index),
            Block::ToolUse {
                id,
                name,
                partial_json,
            } => tool_use_block_with_id(index, id, name, partial_json),
        });
    }
    s.push_str(&ping());
    s.push_str(&message_delta(stop_reason, usage.1));
    s.push_str(&message_stop());
    s
}

/// The non-streamed `Message` of the same blocks.
pub fn message_blocks(
    model: &str,
    blocks: &[Block],
    stop_reason: &str,
    usage: (u32, u32),
) -> Value {
    let content: Vec<Value> = blocks
        .iter()
        .map(|block| match *block {
            Block::Text(pieces) => json!({"type": "text", "text": pieces.concat()}),
            Block::Thinking(pieces) => {
                json!({"type": "thinking", "thinking": pieces.concat(), "signature": SIGNATURE})
            }
            Block::RedactedThinking => json!({"type": "redacted_thinking", "data": REDACTED_DATA}),
            Block::ToolUse {
                id,
                name,
                partial_json,
            } => {
                let input: Value =
                    serde_json::from_str(&partial_json.concat()).expect("the pieces make JSON");
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        })
        .collect();
    let mut message = message(model, "", stop_reason, usage);
    message["content"] = Value::Array(content);
    message
}

/// The answer of these blocks in the shape `request` asked for: streamed when its body
/// says `"stream": true`, else whole.
pub fn answer(
    request: &crate::upstream::Recorded,
    blocks: &[Block],
    stop_reason: &str,
    usage: (u32, u32),
) -> Reply {
    if request.json()["stream"] == true {
        stream_reply(
            &stream_blocks("claude-test-model", blocks, stop_reason, usage),
            9,
        )
    } else {
        Reply::json(
            200,
            &message_blocks("claude-test-model", blocks, stop_reason, usage),
        )
        .header("request-id", REQUEST_ID)
    }
}

/// An error response as Anthropic sends it.
pub fn error(status: u16, kind: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": REQUEST_ID,
        }),
    )
    .header("request-id", REQUEST_ID)
}

/// An `error` event, how the API reports a failure once the stream has begun.
pub fn error_event(kind: &str, message: &str) -> Part {
    Part::Bytes(
        event(&json!({"type": "error", "error": {"type": kind, "message": message}})).into_bytes(),
    )
}

/// One page of `GET /v1/models`: `(id, display_name, created_at)` entries.
pub fn models_page(models: &[(&str, &str, &str)], has_more: bool) -> Reply {
    let data: Vec<Value> = models
        .iter()
        .map(|(id, name, created)| {
            json!({"type": "model", "id": id, "display_name": name, "created_at": created})
        })
        .collect();
    Reply::json(
        200,
        &json!({
            "data": data,
            "has_more": has_more,
            "first_id": models.first().map(|m| m.0),
            "last_id": models.last().map(|m| m.0),
        }),
    )
    .header("request-id", REQUEST_ID)
}

/// The rate-limit headers of a 429 on which one limit is exhausted: `limit` (`requests`,
/// `tokens`, `input-tokens` or `output-tokens`) has 0 remaining and resets at `reset`;
/// the others have room and reset sooner.
pub fn rate_limited(reply: Reply, limit: &str, reset: SystemTime) -> Reply {
    let mut reply = reply;
    for other in ["requests", "tokens", "input-tokens", "output-tokens"] {
        let (remaining, at) = if other == limit {
            ("0", reset)
        } else {
            ("1000", SystemTime::now())
        };
        reply = reply
            .header(&format!("anthropic-ratelimit-{other}-limit"), "50000")
            .header(&format!("anthropic-ratelimit-{other}-remaining"), remaining)
            .header(&format!("anthropic-ratelimit-{other}-reset"), &rfc3339(at));
    }
    reply
}

/// A time as RFC 3339 in UTC with whole seconds (`2025-08-21T12:40:59Z`), the form of
/// Anthropic's reset headers.
pub fn rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc_seconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_755_780_059);
        assert_eq!(rfc3339(at), "2025-08-21T12:40:59Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(rfc3339(leap), "2024-02-29T00:00:00Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }
}
