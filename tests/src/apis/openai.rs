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
    usage_chunk(
        model,
        json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}),
    )
}

/// A usage chunk (no choices) carrying `usage` as given.
fn usage_chunk(model: &str, usage: Value) -> String {
    let chunk = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [],
        "usage": usage,
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

/// A tool call the mock answers with: the id, the tool's name and the arguments as JSON
/// text, as Chat Completions carries them.
pub type Call<'a> = (&'a str, &'a str, &'a str);

/// Every call's pieces as OpenAI streams them: a first piece with the `id`, `type` and
/// name and empty arguments, then the arguments in two fragments. The calls follow one
/// another (OpenAI starts call `n + 1` once call `n` is complete).
pub fn tool_call_deltas(calls: &[Call]) -> Vec<Value> {
    let mut deltas = Vec::new();
    for (index, (id, name, arguments)) in calls.iter().enumerate() {
        deltas.push(json!({"tool_calls": [{
            "index": index, "id": id, "type": "function",
            "function": {"name": name, "arguments": ""},
        }]}));
        let cut = arguments
            .char_indices()
            .map(|(at, _)| at)
            .nth(arguments.chars().count() / 2)
            .unwrap_or(0);
        for fragment in [&arguments[..cut], &arguments[cut..]] {
            deltas.push(
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}),
            );
        }
    }
    deltas
}

/// A streamed answer that calls tools: the role chunk (content null), the calls' pieces
/// ([`tool_call_deltas`]), `finish_reason: "tool_calls"`, usage, `[DONE]`.
pub fn stream_tool_calls(model: &str, calls: &[Call], usage: (u32, u32)) -> String {
    let mut s = chunk_event(
        model,
        json!({"role": "assistant", "content": null, "refusal": null}),
        None,
    );
    for delta in tool_call_deltas(calls) {
        s.push_str(&chunk_event(model, delta, None));
    }
    s.push_str(&chunk_event(model, json!({}), Some("tool_calls")));
    s.push_str(&usage_event(model, usage.0, usage.1));
    s.push_str("data: [DONE]\n\n");
    s
}

/// `message.tool_calls` of a whole answer.
pub fn message_tool_calls(calls: &[Call]) -> Value {
    calls
        .iter()
        .map(|(id, name, arguments)| {
            json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
        })
        .collect()
}

/// The non-streamed answer that calls tools: `content` null, `message.tool_calls`,
/// `finish_reason: "tool_calls"`.
pub fn completion_tool_calls(model: &str, calls: &[Call], usage: (u32, u32)) -> Value {
    let mut c = completion(model, "", "tool_calls", usage);
    c["choices"][0]["message"]["content"] = Value::Null;
    c["choices"][0]["message"]["tool_calls"] = message_tool_calls(calls);
    c
}

/// Usage of a reasoning model: `completion_tokens_details.reasoning_tokens`, which
/// `completion_tokens` already includes.
pub fn reasoning_usage(prompt: u32, completion: u32, reasoning: u32) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

/// A streamed answer of a compatible server that streams its reasoning (vLLM, DeepSeek,
/// llama.cpp): `delta.reasoning_content` pieces before the answer's, then usage whose
/// details count the reasoning.
pub fn stream_reasoning(
    model: &str,
    reasoning: &[&str],
    texts: &[&str],
    usage: (u32, u32, u32),
) -> String {
    let mut s = chunk_event(model, json!({"role": "assistant", "content": ""}), None);
    for r in reasoning {
        s.push_str(&chunk_event(
            model,
            json!({"content": null, "reasoning_content": r}),
            None,
        ));
    }
    for t in texts {
        s.push_str(&chunk_event(model, json!({"content": t}), None));
    }
    s.push_str(&chunk_event(model, json!({}), Some("stop")));
    s.push_str(&usage_chunk(
        model,
        reasoning_usage(usage.0, usage.1, usage.2),
    ));
    s.push_str("data: [DONE]\n\n");
    s
}

/// A model that uses tools, scripted from each request as such a model answers: a call
/// `call_gpt_1` of `get_weather` with `{"city":"Paris"}` when given tools, `GPT says:
/// RESULT` after a tool message, `{"city":"Paris","country":"France"}` when asked for a
/// response format, else `Hello`; streamed or whole as the request asks. What an
/// interface's tool loop against a real provider type is tested with.
pub async fn tool_model(model: &'static str) -> Upstream {
    Upstream::start(move |r| {
        let body = r.json();
        let streamed = body["stream"] == true;
        let text_reply = |text: &str| {
            if streamed {
                stream_reply(&stream_text(model, &[text], "stop", (8, 9)), 9)
            } else {
                Reply::json(200, &completion(model, text, "stop", (8, 9)))
            }
        };
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        if last["role"] == "tool" {
            return text_reply(&format!(
                "GPT says: {}",
                last["content"].as_str().unwrap_or_default()
            ));
        }
        if body.get("tools").is_none() {
            return text_reply(if body.get("response_format").is_some() {
                r#"{"city":"Paris","country":"France"}"#
            } else {
                "Hello"
            });
        }
        let calls = [("call_gpt_1", "get_weather", r#"{"city":"Paris"}"#)];
        if streamed {
            stream_reply(&stream_tool_calls(model, &calls, (30, 10)), 9)
        } else {
            Reply::json(200, &completion_tool_calls(model, &calls, (30, 10)))
        }
    })
    .await
}
