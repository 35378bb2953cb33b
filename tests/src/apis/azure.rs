//! Azure OpenAI's chat completions as the service sends them: the OpenAI wire format with
//! Azure's additions. Two endpoints: the v1 API (`POST {endpoint}/openai/v1/chat/completions`,
//! the deployment named in the body's `model`) and the deployment API
//! (`POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=…`);
//! `GET {endpoint}/openai/v1/models`. A streamed answer starts with a chunk whose `choices`
//! is empty and which carries the prompt's `prompt_filter_results`; each later chunk's
//! choice carries its `content_filter_results` (empty on the role and finish chunks). A
//! prompt the content filter refuses is a 400 with `code: "content_filter"` and the filter
//! results under `innererror`; an answer it stops ends with `finish_reason:
//! "content_filter"`. Other errors are `{"error": {"code", "message"}}` with the HTTP status
//! as a string code for 401 and 429.

use serde_json::{json, Value};

use crate::upstream::{split_every, Reply};

/// The content filter's verdict on a prompt or a piece of answer: every category safe.
pub fn filter_results_safe() -> Value {
    json!({
        "hate": {"filtered": false, "severity": "safe"},
        "self_harm": {"filtered": false, "severity": "safe"},
        "sexual": {"filtered": false, "severity": "safe"},
        "violence": {"filtered": false, "severity": "safe"},
    })
}

/// The first event of every streamed answer: no choice yet, the prompt's filter results,
/// and empty `id`, `model` and `object`.
pub fn prompt_filter_event() -> String {
    let chunk = json!({
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{
            "prompt_index": 0,
            "content_filter_results": {
                "hate": {"filtered": false, "severity": "safe"},
                "jailbreak": {"filtered": false, "detected": false},
                "self_harm": {"filtered": false, "severity": "safe"},
                "sexual": {"filtered": false, "severity": "safe"},
                "violence": {"filtered": false, "severity": "safe"},
            },
        }],
    });
    format!("data: {chunk}\n\n")
}

/// One `chat.completion.chunk` event with Azure's per-choice `content_filter_results`.
pub fn chunk_event(
    model: &str,
    delta: Value,
    filter: Value,
    finish_reason: Option<&str>,
) -> String {
    let chunk = json!({
        "choices": [{
            "content_filter_results": filter,
            "delta": delta,
            "finish_reason": finish_reason,
            "index": 0,
            "logprobs": null,
        }],
        "created": 1_727_000_000,
        "id": "chatcmpl-azure-test",
        "model": model,
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_azure",
    });
    format!("data: {chunk}\n\n")
}

/// The usage chunk that `stream_options.include_usage` adds before `[DONE]`.
pub fn usage_event(model: &str, prompt: u32, completion: u32) -> String {
    let chunk = json!({
        "choices": [],
        "created": 1_727_000_000,
        "id": "chatcmpl-azure-test",
        "model": model,
        "object": "chat.completion.chunk",
        "system_fingerprint": "fp_azure",
        "usage": {"completion_tokens": completion, "prompt_tokens": prompt, "total_tokens": prompt + completion},
    });
    format!("data: {chunk}\n\n")
}

/// A whole streamed answer: the prompt filter event, the role chunk, one chunk per text,
/// the finish chunk (`finish`: `stop`, `length` or `content_filter`), usage, `[DONE]`.
pub fn stream_text(model: &str, texts: &[&str], finish: &str, usage: (u32, u32)) -> String {
    let mut s = prompt_filter_event();
    s.push_str(&chunk_event(
        model,
        json!({"content": "", "refusal": null, "role": "assistant"}),
        json!({}),
        None,
    ));
    for t in texts {
        s.push_str(&chunk_event(
            model,
            json!({"content": t}),
            filter_results_safe(),
            None,
        ));
    }
    s.push_str(&chunk_event(model, json!({}), json!({}), Some(finish)));
    s.push_str(&usage_event(model, usage.0, usage.1));
    s.push_str("data: [DONE]\n\n");
    s
}

/// A streamed reply whose body is `sse` cut every `step` bytes.
pub fn stream_reply(sse: &str, step: usize) -> Reply {
    Reply::stream("text/event-stream", split_every(sse, step))
}

/// The non-streamed `chat.completion` object, with the prompt's and the answer's filter
/// results.
pub fn completion(model: &str, text: &str, finish: &str, usage: (u32, u32)) -> Value {
    json!({
        "choices": [{
            "content_filter_results": filter_results_safe(),
            "finish_reason": finish,
            "index": 0,
            "logprobs": null,
            "message": {"content": text, "refusal": null, "role": "assistant"},
        }],
        "created": 1_727_000_000,
        "id": "chatcmpl-azure-test",
        "model": model,
        "object": "chat.completion",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filter_results_safe()}],
        "system_fingerprint": "fp_azure",
        "usage": {"completion_tokens": usage.1, "prompt_tokens": usage.0, "total_tokens": usage.0 + usage.1},
    })
}

/// An error as Azure sends it: `{"error": {"code", "message"}}`.
pub fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

/// The message Azure sends with a 401 for a wrong key.
pub const ACCESS_DENIED: &str = "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.";

/// A prompt refused by the content filter: 400, `code: "content_filter"`, and the
/// category that tripped it under `innererror`.
pub fn content_filter_error() -> Reply {
    let mut results = filter_results_safe();
    results["violence"] = json!({"filtered": true, "severity": "medium"});
    Reply::json(
        400,
        &json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry.",
            "type": null,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": results,
            },
        }}),
    )
}

/// A 429 as Azure sends it: the wait in the message and in `retry-after` (seconds) and
/// `retry-after-ms`.
pub fn rate_limited(seconds: u64) -> Reply {
    error(
        429,
        "429",
        &format!("Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {seconds} seconds."),
    )
    .header("retry-after", &seconds.to_string())
    .header("retry-after-ms", &(seconds * 1000).to_string())
}

/// A streamed answer that calls tools, as Azure sends it: the prompt filter event, the
/// role chunk, each call's pieces as OpenAI's ([`super::openai::tool_call_deltas`]) with
/// empty filter results, `finish_reason: "tool_calls"`, usage, `[DONE]`.
pub fn stream_tool_calls(model: &str, calls: &[super::openai::Call], usage: (u32, u32)) -> String {
    let mut s = prompt_filter_event();
    s.push_str(&chunk_event(
        model,
        json!({"content": null, "refusal": null, "role": "assistant"}),
        json!({}),
        None,
    ));
    for delta in super::openai::tool_call_deltas(calls) {
        s.push_str(&chunk_event(model, delta, json!({}), None));
    }
    s.push_str(&chunk_event(
        model,
        json!({}),
        json!({}),
        Some("tool_calls"),
    ));
    s.push_str(&usage_event(model, usage.0, usage.1));
    s.push_str("data: [DONE]\n\n");
    s
}

/// The non-streamed answer that calls tools, with Azure's filter results.
pub fn completion_tool_calls(
    model: &str,
    calls: &[super::openai::Call],
    usage: (u32, u32),
) -> Value {
    let mut c = completion(model, "", "tool_calls", usage);
    c["choices"][0]["message"]["content"] = Value::Null;
    c["choices"][0]["message"]["tool_calls"] = super::openai::message_tool_calls(calls);
    c
}
