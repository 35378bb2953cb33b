//! Google's Gemini API (`v1beta`) as documented at <https://ai.google.dev/api>:
//! `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` (SSE, each `data:` event a
//! whole `GenerateContentResponse`, the last one carrying `finishReason`, then the body
//! ends; there is no final event), `POST …:generateContent` (one such object),
//! `GET /v1beta/models` (paginated) and `{"error": {code, message, status, details}}`
//! error bodies.
//!
//! Events here end with CRLF CRLF; Google's JavaScript SDK accepts that, LF LF and CR CR
//! alike, and so must the daemon. Chunks carry cumulative `usageMetadata`, `modelVersion`
//! and `responseId`, and the last one its text and `finishReason` together, as recorded
//! responses do.

use serde_json::{json, Value};

use crate::upstream::{split_every, Part, Reply};

/// Token counts of a `usageMetadata`: prompt, candidates, thoughts.
pub type Tokens = (u32, u32, u32);

/// A `usageMetadata` object; `thoughtsTokenCount` only when there were thoughts, as the
/// service omits it for models that do not think.
pub fn usage_metadata((prompt, candidates, thoughts): Tokens) -> Value {
    let mut usage = json!({
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    });
    if thoughts > 0 {
        usage["thoughtsTokenCount"] = json!(thoughts);
    }
    usage
}

/// A `GenerateContentResponse` with candidate 0 made of `parts`.
pub fn response(model: &str, parts: Value, finish: Option<&str>, usage: Tokens) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    json!({
        "candidates": [candidate],
        "usageMetadata": usage_metadata(usage),
        "modelVersion": model,
        "responseId": "resp-test-0001",
    })
}

/// One SSE event carrying `body`.
pub fn event(body: &Value) -> String {
    format!("data: {body}\r\n\r\n")
}

/// One streamed chunk of candidate 0.
pub fn chunk(model: &str, parts: Value, finish: Option<&str>, usage: Tokens) -> String {
    event(&response(model, parts, finish, usage))
}

/// A whole streamed answer, one chunk per text, the last with `finish` and the final
/// usage; the running usage counts one candidate token per chunk, as a real stream's
/// grows, and thoughts from the start.
pub fn stream_text(model: &str, texts: &[&str], finish: &str, usage: Tokens) -> String {
    let (prompt, candidates, thoughts) = usage;
    let mut s = String::new();
    for (i, text) in texts.iter().enumerate() {
        let last = i + 1 == texts.len();
        let running = if last {
            candidates
        } else {
            (i as u32 + 1).min(candidates)
        };
        s.push_str(&chunk(
            model,
            json!([{"text": text}]),
            last.then_some(finish),
            (prompt, running, thoughts),
        ));
    }
    s
}

/// A streamed reply whose body is `sse` cut every `step` bytes.
pub fn stream_reply(sse: &str, step: usize) -> Reply {
    Reply::stream("text/event-stream", split_every(sse, step))
}

/// The non-streamed answer.
pub fn whole(model: &str, text: &str, finish: &str, usage: Tokens) -> Value {
    response(model, json!([{"text": text}]), Some(finish), usage)
}

/// The thought signature the mock signs its parts with (opaque base64, as the API's).
pub const SIGNATURE: &str = "Q2lRQjBlMk43c2lnbmF0dXJl";

/// A `functionCall` part (Gemini sends each call whole, without an id).
pub fn function_call(name: &str, args: Value) -> Value {
    json!({"functionCall": {"name": name, "args": args}})
}

/// A thought-summary part.
pub fn thought(text: &str) -> Value {
    json!({"text": text, "thought": true})
}

/// `part` with a `thoughtSignature`.
pub fn signed(mut part: Value, signature: &str) -> Value {
    part["thoughtSignature"] = json!(signature);
    part
}

/// The answer made of these chunks of parts in the shape `request` asked for: on
/// `streamGenerateContent`, one SSE chunk each, the last with `finish` (the running usage
/// the final one throughout, as thoughts and prompt are known from the start); on
/// `generateContent`, one response holding every part.
pub fn answer(
    request: &crate::upstream::Recorded,
    chunks: &[Value],
    finish: &str,
    usage: Tokens,
) -> Reply {
    const MODEL: &str = "gemini-test-model";
    if request.path().ends_with(":streamGenerateContent") {
        let mut sse = String::new();
        for (i, parts) in chunks.iter().enumerate() {
            let last = i + 1 == chunks.len();
            sse.push_str(&chunk(MODEL, parts.clone(), last.then_some(finish), usage));
        }
        stream_reply(&sse, 10)
    } else {
        let parts: Vec<Value> = chunks
            .iter()
            .flat_map(|c| c.as_array().cloned().unwrap_or_default())
            .collect();
        Reply::json(
            200,
            &response(MODEL, Value::Array(parts), Some(finish), usage),
        )
    }
}

/// A prompt the safety filters refused: no candidates, `promptFeedback.blockReason`.
pub fn blocked(reason: &str, prompt_tokens: u32) -> Value {
    json!({
        "promptFeedback": {"blockReason": reason, "safetyRatings": [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}
        ]},
        "usageMetadata": {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens},
        "modelVersion": "test-model",
        "responseId": "resp-test-0002",
    })
}

/// The `error` object (google.rpc.Status) of an error body.
pub fn status(code: u16, status: &str, message: &str, details: Value) -> Value {
    json!({"code": code, "message": message, "status": status, "details": details})
}

/// An error response as the service sends it.
pub fn error(code: u16, grpc_status: &str, message: &str, details: Value) -> Reply {
    Reply::json(
        code,
        &json!({"error": status(code, grpc_status, message, details)}),
    )
}

/// The `ErrorInfo` detail that comes with a refused key.
pub fn error_info(reason: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    })
}

/// The details of a 429: the quota broken, a help link, and `RetryInfo`.
pub fn quota_details(retry_delay: &str) -> Value {
    json!([
        {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": {"location": "global", "model": "test-model"},
            "quotaValue": "10",
        }]},
        {"@type": "type.googleapis.com/google.rpc.Help", "links": [{
            "description": "Learn more about Gemini API quotas",
            "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
        }]},
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
    ])
}

/// An error event inside the stream, after which the service ends the body.
pub fn error_event(code: u16, grpc_status: &str, message: &str) -> Part {
    Part::Bytes(
        event(&json!({"error": status(code, grpc_status, message, json!([]))})).into_bytes(),
    )
}

/// A `Model` resource; `methods` are its `supportedGenerationMethods`.
pub fn model(id: &str, display_name: &str, input_token_limit: u32, methods: &[&str]) -> Value {
    json!({
        "name": format!("models/{id}"),
        "version": "001",
        "displayName": display_name,
        "description": format!("{display_name}, for tests"),
        "inputTokenLimit": input_token_limit,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": methods,
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
    })
}

/// One `models.list` page; `next_page_token` is omitted on the last page, as the API
/// does.
pub fn models_page(models: Vec<Value>, next_page_token: Option<&str>) -> Reply {
    let mut page = json!({"models": models});
    if let Some(token) = next_page_token {
        page["nextPageToken"] = json!(token);
    }
    Reply::json(200, &page)
}
