//! The OpenAI Chat Completions API as documented: `POST /v1/chat/completions` (SSE
//! `chat.completion.chunk` events ending with `data: [DONE]`, or one `chat.completion`
//! object), `GET /v1/models`, and `{"error": {...}}` error bodies.

use serde_json::{json, Value};

use crate::upstream::{split_every, Part, Reply, Upstream};

/// One `chat.completion.chunk` SSE event.
pub fn chunk_event(model: &str, delta: Value, finish_reason: Option<&str>) -> String {
    let chunk = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}],
        "usage": null,
    });
    format!("data: {chunk}\n\n")
}

/// The usage chunk that `stream_options.include_usage` adds before `[DONE]`.
pub fn usage_event(model: &str, prompt: u32, completion: u32) -> String {
    let chunk = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    });
    format!("data: {chunk}\n\n")
}

/// A whole streamed answer: role chunk, one chunk per text, finish, usage, `[DONE]`.
pub fn stream_text(model: &str, texts: &[&str], finish: &str, usage: (u32, u32)) -> String {
    let mut s = chunk_event(model, json!({"role": "assistant", "content": ""}), None);
    for t in texts {
        s.push_str(&chunk_event(model, json!({"content": t}), None));
    }
    s.push_str(&chunk_event(model, json!({}), Some(finish)));
    s.push_str(&usage_event(model, usage.0, usage.1));
    s.push_str("data: [DONE]\n\n");
    s
}

/// A streamed reply whose body is `sse` cut every `step` bytes.
pub fn stream_reply(sse: &str, step: usize) -> Reply {
    Reply::stream("text/event-stream", split_every(sse, step))
}

/// The non-streamed `chat.completion` object.
pub fn completion(model: &str, text: &str, finish: &str, usage: (u32, u32)) -> Value {
    json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": null},
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": {"prompt_tokens": usage.0, "completion_tokens": usage.1, "total_tokens": usage.0 + usage.1},
    })
}

/// An error response as OpenAI sends it.
pub fn error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// `GET /v1/models`.
pub fn models(ids: &[&str]) -> Reply {
    let data: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 1_686_935_002, "owned_by": "openai"}))
        .collect();
    Reply::json(200, &json!({"object": "list", "data": data}))
}

/// Parts that end the body with an error event after some text (how OpenAI reports a
/// failure once streaming has begun).
pub fn error_event(message: &str, kind: &str) -> Part {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": null}});
    Part::Bytes(format!("data: {body}\n\n").into_bytes())
}

/// An OpenAI mock upstream for the client tests: "Hello, SDK" (5 prompt and 3 completion tokens) streamed or
/// whole, a 429 to the prompt "fail", one chunk then silence to the prompt "hold", and
/// the model `gpt-a`.
pub async fn scripted_upstream(model: &'static str) -> Upstream {
    Upstream::start(move |r| {
        if r.path().ends_with("/models") {
            return models(&["gpt-a"]);
        }
        let body = r.json();
        let prompt = body["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if prompt == "hold" {
            let first = chunk_event(
                model,
                json!({"role": "assistant", "content": "first"}),
                None,
            );
            return Reply::stream(
                "text/event-stream",
                vec![Part::Bytes(first.into_bytes()), Part::Stall],
            );
        }
        if prompt == "fail" {
            return error(
                429,
                "slow down",
                "rate_limit_error",
                Some("rate_limit_exceeded"),
            )
            .header("retry-after", "7");
        }
        if body["stream"] == json!(true) {
            stream_reply(
                &stream_text(model, &["Hello", ", ", "SDK"], "stop", (5, 3)),
                9,
            )
        } else {
            Reply::json(200, &completion(model, "Hello, SDK", "stop", (5, 3)))
        }
    })
    .await
}
