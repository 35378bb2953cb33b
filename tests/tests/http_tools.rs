//! Tools, structured output, reasoning and images through the HTTP front door's three
//! dialects, on a live daemon: a full tool loop (call, run the tool here, send the
//! result, final answer) streamed and whole in OpenAI's, Anthropic's and Ollama's own
//! shapes; JSON answers from `response_format`, `output_format` and `format`; reasoning
//! shown (`reasoning_content`, `thinking` blocks, `message.thinking`) with its provider
//! state carried back (an altered one refused by the provider, as Anthropic refuses a bad
//! thinking signature); images as data URLs, base64 blocks and Ollama's `images`; what
//! cannot be honoured refused naming the field. Then the official `openai` and
//! `anthropic` Python SDKs run the same loops (`python/sdk_tools.py`).
//!
//! The provider behind is a parameter ([`Backend`]): the built-in mock, which answers
//! tools, JSON, reasoning and images from the request alone. A test against another
//! provider is one more function giving its [`Backend`]: its configuration, what it
//! answers after a tool's result and how it reasons (an upstream mock scripted to answer
//! like the built-in one), and a state it refuses; the image answers (`I see N images.`)
//! and JSON instances checked are the built-in mock's.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use provd_tests::upstream::Upstream;
use provd_tests::Daemon;
use serde_json::{json, Value};

/// The provider a test's daemon sends its requests to: its configuration and the model
/// name a client asks for.
struct Backend {
    /// The daemon's configuration (providers and anything they need).
    config: String,
    /// Environment variables the daemon needs (keys).
    env: Vec<(String, String)>,
    /// The model, as a client names it (`provider/model`).
    model: String,
    /// The answer after the tool's result, `{result}` standing for the result.
    answer: String,
    /// The reasoning about a question, `{question}` standing for the last user text.
    reasoning: String,
    /// A provider state the provider refuses when it comes back (as Anthropic refuses a
    /// bad thinking signature), which proves the state reaches it; `None` skips that.
    forged_state: Option<Value>,
}

impl Backend {
    fn answer(&self, result: &str) -> String {
        self.answer.replace("{result}", result)
    }

    fn reasoning(&self, question: &str) -> String {
        self.reasoning.replace("{question}", question)
    }
}

/// The built-in mock as provider `m`.
fn mock() -> Backend {
    Backend {
        config: "[daemon]\nkeepalive_interval_ms = 0\n\n[providers.m]\ntype = \"mock\"\n".into(),
        env: Vec::new(),
        model: "m/mock-1".into(),
        answer: "The tool get_weather returned: {result}".into(),
        reasoning: "Thinking about: {question}".into(),
        forged_state: Some(json!({"type": "mock", "state": {"signature": "forged"}})),
    }
}

fn start(backend: &Backend) -> Daemon {
    let mut builder = Daemon::builder().config(&backend.config);
    for (name, value) in &backend.env {
        builder = builder.env(name, value);
    }
    builder.start()
}

/// The HTTP socket of a test daemon: beside its MessagePack socket.
fn http_socket(daemon: &Daemon) -> PathBuf {
    daemon.socket.with_file_name("http.sock")
}

/// One POST with a JSON body on a new connection: the status and the whole body.
async fn post(socket: &Path, path: &str, body: &Value) -> (StatusCode, Bytes) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.expect("a response");
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    task.abort();
    (status, bytes)
}

/// POSTs `body` and returns the answer's bytes, asserting it is a 200.
async fn post_ok(socket: &Path, path: &str, body: &Value) -> Bytes {
    let (status, bytes) = post(socket, path, body).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

/// A POST answered with one JSON object.
async fn post_json(socket: &Path, path: &str, body: &Value) -> (StatusCode, Value) {
    let (status, bytes) = post(socket, path, body).await;
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

/// The JSON `data:` payloads of a server-sent event stream (not `[DONE]`).
fn sse(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .split("\n\n")
        .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|data| *data != "[DONE]")
        .map(|data| serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")))
        .collect()
}

fn ndjson(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The tool every test offers, in OpenAI's shape.
fn openai_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }}])
}

/// What the local "tool" answers.
const WEATHER: &str = "15 degrees and sunny";
/// The question of every tool loop.
const QUESTION: &str = "What is the weather in Paris?";

/// A streamed chat completion's calls, assembled as a client does from `delta.tool_calls`
/// (checking that only a call's first piece carries its id, type and name), its text and
/// its finish reason.
fn assemble_openai(events: &[Value]) -> (Vec<Value>, String, String) {
    let mut calls: Vec<Value> = Vec::new();
    let mut text = String::new();
    let mut finish = String::new();
    for event in events {
        let Some(choice) = event["choices"].get(0) else {
            continue;
        };
        let delta = &choice["delta"];
        text.push_str(delta["content"].as_str().unwrap_or(""));
        for piece in delta["tool_calls"].as_array().into_iter().flatten() {
            let index = piece["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                assert!(
                    piece["id"].is_string(),
                    "a call's first piece has its id: {piece}"
                );
                assert_eq!(piece["type"], "function", "{piece}");
                assert!(piece["function"]["name"].is_string(), "{piece}");
                calls.push(json!({
                    "id": piece["id"], "type": "function",
                    "function": {"name": piece["function"]["name"], "arguments": ""},
                }));
            } else {
                assert!(
                    piece.get("id").is_none() && piece["function"].get("name").is_none(),
                    "a later piece carries arguments only: {piece}"
                );
            }
            let arguments = format!(
                "{}{}",
                calls[index]["function"]["arguments"].as_str().unwrap(),
                piece["function"]["arguments"].as_str().unwrap_or("")
            );
            calls[index]["function"]["arguments"] = json!(arguments);
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            finish = reason.to_owned();
        }
    }
    (calls, text, finish)
}

async fn openai_tool_loop(backend: &Backend, stream: bool) {
    let daemon = start(backend);
    let socket = http_socket(&daemon);
    let mut messages = vec![json!({"role": "user", "content": QUESTION})];
    let ask = |messages: &[Value]| {
        json!({
            "model": backend.model, "messages": messages, "tools": openai_tools(),
            "tool_choice": "auto", "parallel_tool_calls": true, "stream": stream,
        })
    };
    let bytes = post_ok(&socket, "/v1/chat/completions", &ask(&messages)).await;
    let (calls, text, finish) = if stream {
        assemble_openai(&sse(&bytes))
    } else {
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        let message = &body["choices"][0]["message"];
        assert!(
            message["content"].is_null(),
            "no text beside the call: {message}"
        );
        (
            message["tool_calls"].as_array().unwrap().clone(),
            String::new(),
            body["choices"][0]["finish_reason"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    assert_eq!(finish, "tool_calls");
    assert_eq!(text, "");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let call = &calls[0];
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert!(arguments["city"].is_string(), "{arguments}");
    messages.push(json!({"role": "assistant", "content": null, "tool_calls": calls}));
    messages.push(json!({"role": "tool", "tool_call_id": call["id"], "content": WEATHER}));
    let bytes = post_ok(&socket, "/v1/chat/completions", &ask(&messages)).await;
    let (calls, text, finish) = if stream {
        assemble_openai(&sse(&bytes))
    } else {
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        (
            Vec::new(),
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned(),
            body["choices"][0]["finish_reason"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    };
    assert!(calls.is_empty());
    assert_eq!(finish, "stop");
    assert_eq!(text, backend.answer(WEATHER));
}

#[tokio::test]
async fn openai_clients_run_a_whole_tool_loop_on_the_mock() {
    openai_tool_loop(&mock(), false).await;
}

#[tokio::test]
async fn openai_clients_run_a_streamed_tool_loop_on_the_mock() {
    openai_tool_loop(&mock(), true).await;
}

async fn openai_json_reasoning_and_images(backend: &Backend) {
    let daemon = start(backend);
    let socket = http_socket(&daemon);
    let user = json!([{"role": "user", "content": "Name a city"}]);
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}}, "required": ["city", "rank"], "additionalProperties": false});
    let (status, body) = post_json(
        &socket,
        "/v1/chat/completions",
        &json!({"model": backend.model, "messages": user, "response_format": {
            "type": "json_schema", "json_schema": {"name": "city", "strict": true, "schema": schema}}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(
        answer["city"].is_string() && answer["rank"].is_i64(),
        "{answer}"
    );

    // Reasoning: shown as `reasoning_content`, counted in the usage, and its provider
    // state carried on the message to send back.
    let (status, body) = post_json(
        &socket,
        "/v1/chat/completions",
        &json!({"model": backend.model, "messages": user, "reasoning_effort": "low"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let message = body["choices"][0]["message"].clone();
    assert_eq!(
        message["reasoning_content"],
        backend.reasoning("Name a city")
    );
    assert!(
        body["usage"]["completion_tokens_details"]["reasoning_tokens"].as_u64() > Some(0),
        "{body}"
    );
    assert!(message["provider_state"].is_object(), "{message}");
    let again = |message: Value| {
        json!({"model": backend.model, "reasoning_effort": "low", "messages": [
            {"role": "user", "content": "Name a city"}, message,
            {"role": "user", "content": "Another"}]})
    };
    let (status, body) = post_json(&socket, "/v1/chat/completions", &again(message.clone())).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the state sent back as it came is taken: {body}"
    );
    if let Some(forged) = &backend.forged_state {
        let mut altered = message;
        altered["provider_state"] = forged.clone();
        let (status, body) = post_json(&socket, "/v1/chat/completions", &again(altered)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    }

    // Streamed reasoning comes as `delta.reasoning_content` before the text.
    let (status, bytes) = post(
        &socket,
        "/v1/chat/completions",
        &json!({"model": backend.model, "messages": user, "reasoning_effort": "high", "stream": true}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let events = sse(&bytes);
    let reasoning: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(reasoning, backend.reasoning("Name a city"));

    // Images: a data URL and an https URL; another scheme is refused naming the field.
    let image = |url: &str| json!({"type": "image_url", "image_url": {"url": url}});
    let (status, body) = post_json(
        &socket,
        "/v1/chat/completions",
        &json!({"model": backend.model, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            image("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="),
            image("https://example.com/cat.png"),
        ]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.starts_with("I see 2 images. "), "{text}");
    let (status, body) = post_json(
        &socket,
        "/v1/chat/completions",
        &json!({"model": backend.model, "messages": [{"role": "user", "content": [image("ftp://example.com/cat.png")]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["error"]["param"],
        "messages[0].content[0].image_url.url"
    );
}

#[tokio::test]
async fn openai_clients_get_json_answers_reasoning_with_its_state_and_images_on_the_mock() {
    openai_json_reasoning_and_images(&mock()).await;
}

/// A streamed Messages answer assembled as the SDKs do: blocks by index, text and
/// thinking from their deltas, a tool's input from its JSON pieces, signatures.
fn assemble_anthropic(events: &[Value]) -> (Vec<Value>, String) {
    let mut blocks: Vec<Value> = Vec::new();
    let mut partial: Vec<String> = Vec::new();
    let mut stop = String::new();
    for event in events {
        match event["type"].as_str().unwrap() {
            "content_block_start" => {
                assert_eq!(event["index"].as_u64().unwrap() as usize, blocks.len());
                blocks.push(event["content_block"].clone());
                partial.push(String::new());
            }
            "content_block_delta" => {
                let i = event["index"].as_u64().unwrap() as usize;
                let delta = &event["delta"];
                let append = |block: &mut Value, key: &str, more: &Value| {
                    let now = format!(
                        "{}{}",
                        block[key].as_str().unwrap_or(""),
                        more.as_str().unwrap()
                    );
                    block[key] = json!(now);
                };
                match delta["type"].as_str().unwrap() {
                    "text_delta" => append(&mut blocks[i], "text", &delta["text"]),
                    "thinking_delta" => append(&mut blocks[i], "thinking", &delta["thinking"]),
                    "signature_delta" => blocks[i]["signature"] = delta["signature"].clone(),
                    "input_json_delta" => {
                        partial[i].push_str(delta["partial_json"].as_str().unwrap())
                    }
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = event["index"].as_u64().unwrap() as usize;
                if blocks[i]["type"] == "tool_use" && !partial[i].is_empty() {
                    blocks[i]["input"] = serde_json::from_str(&partial[i]).unwrap();
                }
            }
            "message_delta" => stop = event["delta"]["stop_reason"].as_str().unwrap().to_owned(),
            "message_start" | "message_stop" | "ping" => {}
            other => panic!("unexpected event {other}: {event}"),
        }
    }
    (blocks, stop)
}

async fn anthropic_tool_loop(backend: &Backend, stream: bool) {
    let daemon = start(backend);
    let socket = http_socket(&daemon);
    let tools = json!([{"name": "get_weather", "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let ask = |messages: &Value| {
        json!({"model": backend.model, "max_tokens": 4096, "tools": tools, "stream": stream,
               "thinking": {"type": "enabled", "budget_tokens": 2048}, "messages": messages})
    };
    let mut messages = json!([{"role": "user", "content": "What is the weather in Paris?"}]);
    let turn = |bytes: &Bytes| -> (Vec<Value>, String) {
        if stream {
            assemble_anthropic(&sse(bytes))
        } else {
            let body: Value = serde_json::from_slice(bytes).unwrap();
            assert_eq!(body["type"], "message", "{body}");
            (
                body["content"].as_array().unwrap().clone(),
                body["stop_reason"].as_str().unwrap().to_owned(),
            )
        }
    };
    let bytes = post_ok(&socket, "/v1/messages", &ask(&messages)).await;
    let (blocks, stop) = turn(&bytes);
    assert_eq!(stop, "tool_use");
    let thinking: String = blocks
        .iter()
        .filter(|b| b["type"] == "thinking")
        .filter_map(|b| b["thinking"].as_str())
        .collect();
    assert_eq!(thinking, backend.reasoning(QUESTION));
    assert!(
        blocks.iter().any(|b| b["type"] == "thinking"
            && b["signature"]
                .as_str()
                .is_some_and(|s| s.starts_with("provd1."))),
        "the state rides on a thinking block's signature: {blocks:?}"
    );
    let call = blocks
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap_or_else(|| panic!("a tool_use block: {blocks:?}"))
        .clone();
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"]["city"].is_string(), "{call}");

    // The assistant's blocks go back as they came, then the tool's result.
    let result = |content: Value| json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": content}]});
    let list = messages.as_array_mut().unwrap();
    list.push(json!({"role": "assistant", "content": blocks}));
    list.push(result(json!(WEATHER)));
    let bytes = post_ok(&socket, "/v1/messages", &ask(&messages)).await;
    let (blocks, stop) = turn(&bytes);
    assert_eq!(stop, "end_turn");
    let text: String = blocks
        .iter()
        .filter(|b| b["type"] == "text")
        .filter_map(|b| b["text"].as_str())
        .collect();
    assert_eq!(text, backend.answer(WEATHER));

    // A signature token altered on the way carries state the provider refuses.
    let Some(forged) = backend.forged_state.as_ref().map(provd_token) else {
        return;
    };
    for block in messages[1]["content"].as_array_mut().unwrap() {
        if block["type"] == "thinking" && block["signature"] != "" {
            block["signature"] = json!(forged);
        }
    }
    let (status, body) = post_json(
        &socket,
        "/v1/messages",
        &json!({
            "model": backend.model, "max_tokens": 4096, "tools": tools, "messages": messages,
        }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

/// A provider-state token as provd writes one (`provd1.` and the JSON in hex), made
/// here to forge a state.
fn provd_token(state: &Value) -> String {
    let hex: String = state
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("provd1.{hex}")
}

#[tokio::test]
async fn anthropic_clients_run_a_whole_tool_loop_with_thinking_on_the_mock() {
    anthropic_tool_loop(&mock(), false).await;
}

#[tokio::test]
async fn anthropic_clients_run_a_streamed_tool_loop_with_thinking_on_the_mock() {
    anthropic_tool_loop(&mock(), true).await;
}

async fn anthropic_json_and_images(backend: &Backend) {
    let daemon = start(backend);
    let socket = http_socket(&daemon);
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
    let (status, body) = post_json(
        &socket,
        "/v1/messages",
        &json!({
            "model": backend.model, "max_tokens": 100,
            "messages": [{"role": "user", "content": "Name a city"}],
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(body["content"][0]["text"].as_str().unwrap()).unwrap();
    assert!(answer["city"].is_string(), "{answer}");
    let (status, body) = post_json(&socket, "/v1/messages", &json!({
        "model": backend.model, "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "text", "text": "What is this?"},
        ]}],
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("I see 1 image. "),
        "{body}"
    );
    let (status, body) = post_json(
        &socket,
        "/v1/messages",
        &json!({
            "model": backend.model, "max_tokens": 100,
            "messages": [{"role": "user", "content": "q"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("tools.0.type"),
        "{body}"
    );
}

#[tokio::test]
async fn anthropic_clients_get_structured_output_and_images_on_the_mock() {
    anthropic_json_and_images(&mock()).await;
}

async fn ollama_tool_loop(backend: &Backend, stream: bool) {
    let daemon = start(backend);
    let socket = http_socket(&daemon);
    let mut messages = vec![json!({"role": "user", "content": QUESTION})];
    let ask = |messages: &[Value]| {
        json!({"model": backend.model, "messages": messages, "tools": openai_tools(),
               "think": true, "stream": stream})
    };
    // Each answer read as Ollama's clients read it: the lines' messages merged.
    let read = |bytes: &Bytes| -> (Value, String) {
        let lines = if stream {
            ndjson(bytes)
        } else {
            vec![serde_json::from_slice(bytes).unwrap()]
        };
        let mut merged = json!({"content": "", "thinking": "", "tool_calls": []});
        for line in &lines {
            let m = &line["message"];
            for key in ["content", "thinking"] {
                let now = format!(
                    "{}{}",
                    merged[key].as_str().unwrap(),
                    m[key].as_str().unwrap_or("")
                );
                merged[key] = json!(now);
            }
            for call in m["tool_calls"].as_array().into_iter().flatten() {
                merged["tool_calls"]
                    .as_array_mut()
                    .unwrap()
                    .push(call.clone());
            }
        }
        let last = lines.last().unwrap();
        assert_eq!(last["done"], true, "{last}");
        (merged, last["done_reason"].as_str().unwrap().to_owned())
    };
    let bytes = post_ok(&socket, "/api/chat", &ask(&messages)).await;
    let (message, reason) = read(&bytes);
    assert_eq!(reason, "stop");
    assert_eq!(message["thinking"], backend.reasoning(QUESTION));
    let calls = message["tool_calls"].as_array().unwrap().clone();
    assert_eq!(calls.len(), 1, "{message}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(
        calls[0]["function"]["arguments"]["city"].is_string(),
        "{message}"
    );
    // Sent back as Ollama's clients do: the calls without ids, the result by tool name.
    messages.push(json!({"role": "assistant", "content": "", "tool_calls": [{"function": calls[0]["function"]}]}));
    messages.push(json!({"role": "tool", "tool_name": "get_weather", "content": WEATHER}));
    let bytes = post_ok(&socket, "/api/chat", &ask(&messages)).await;
    let (message, _) = read(&bytes);
    assert_eq!(message["content"], backend.answer(WEATHER));
}

#[tokio::test]
async fn ollama_clients_run_a_whole_tool_loop_with_thinking_on_the_mock() {
    ollama_tool_loop(&mock(), false).await;
}

#[tokio::test]
async fn ollama_clients_run_a_streamed_tool_loop_with_thinking_on_the_mock() {
    ollama_tool_loop(&mock(), true).await;
}

async fn ollama_format_and_images(backend: &Backend) {
    let daemon = start(backend);
    let socket = http_socket(&daemon);
    let (status, body) = post_json(&socket, "/api/chat", &json!({
        "model": backend.model, "stream": false,
        "messages": [{"role": "user", "content": "Name a city"}],
        "format": {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]},
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(body["message"]["content"].as_str().unwrap()).unwrap();
    assert!(answer["age"].is_i64(), "{answer}");
    let (status, body) = post_json(
        &socket,
        "/api/chat",
        &json!({
            "model": backend.model, "stream": false, "format": "json",
            "messages": [{"role": "user", "content": "Name a city"}],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        serde_json::from_str::<Value>(body["message"]["content"].as_str().unwrap())
            .unwrap()
            .is_object()
    );
    let (status, body) = post_json(
        &socket,
        "/api/generate",
        &json!({
            "model": backend.model, "stream": false, "prompt": "What is this?",
            "images": ["iVBORw0KGgoAAAANSUhEUg==", "/9j/4AAQSkZJRg=="],
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["response"]
            .as_str()
            .unwrap()
            .starts_with("I see 2 images. "),
        "{body}"
    );
}

#[tokio::test]
async fn ollama_clients_get_format_answers_and_images_on_the_mock() {
    ollama_format_and_images(&mock()).await;
}

/// Runs `python/sdk_tools.py --sdk SDK` against a daemon on `backend` over the Unix
/// socket (only the tests named in `only`, when it names any) and asserts its `tests`
/// tests passed; false when the SDK is missing and nothing ran.
fn run_sdk_tools(backend: &Backend, sdk: &str, only: &[&str], tests: usize) -> bool {
    let python = provd_tests::python();
    if !provd_tests::have_python_package(sdk) {
        return false;
    }
    let daemon = start(backend);
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("sdk_tools.py");
    let mut command = Command::new(&python);
    command
        .arg(script)
        .args(["--sdk", sdk, "--model", &backend.model])
        .args([
            "--answer",
            &backend.answer,
            "--reasoning",
            &backend.reasoning,
        ])
        .arg("--socket")
        .arg(http_socket(&daemon));
    if let Some(forged) = &backend.forged_state {
        command.args(["--forged-state", &forged.to_string()]);
    }
    if !only.is_empty() {
        command.args(["--only", &only.join(",")]);
    }
    // What the SDKs read from their environment is the test's to set, not the host's.
    for name in provd_tests::SDK_ENV_VARS {
        command.env_remove(name);
    }
    let output = command.stdin(Stdio::null()).output().expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    assert!(
        output.status.success(),
        "sdk_tools.py --sdk {sdk} failed:\n{stdout}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
    let summary = format!("{tests} passed, 0 failed");
    assert!(stdout.lines().any(|l| l.trim() == summary), "{stdout}");
    true
}

#[test]
fn the_official_openai_sdk_runs_tool_loops_and_a_json_schema_request_on_the_mock() {
    run_sdk_tools(&mock(), "openai", &[], 4);
}

#[test]
fn the_official_anthropic_sdk_runs_tool_loops_with_thinking_on_the_mock() {
    run_sdk_tools(&mock(), "anthropic", &[], 3);
}

// ---------------------------------------------------------------------------------------
// Across providers: an SDK of one API driving a model of another

/// The text of a Messages API turn's `tool_result` (a string, or text blocks).
fn anthropic_tool_result(body: &Value) -> Option<String> {
    let last = body["messages"].as_array()?.last()?;
    let block = last["content"]
        .as_array()?
        .iter()
        .find(|b| b["type"] == "tool_result")?;
    Some(match &block["content"] {
        Value::String(text) => text.clone(),
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
        other => other.to_string(),
    })
}

/// A Claude model behind provider `c`: the faithful Anthropic mock, scripted from each
/// request as the model would answer it: a `tool_use` of `get_weather` when given tools,
/// `Claude says: RESULT` after a tool result, a JSON object for an `output_config`
/// schema.
async fn claude() -> (Upstream, Backend) {
    use provd_tests::apis::anthropic::{answer, Block};
    let upstream = Upstream::start(|r| {
        let body = r.json();
        if let Some(result) = anthropic_tool_result(&body) {
            let text = format!("Claude says: {result}");
            return answer(r, &[Block::Text(&[text.as_str()])], "end_turn", (20, 5));
        }
        if body["tools"].as_array().is_some_and(|t| !t.is_empty()) {
            let call = Block::ToolUse {
                id: "toolu_01A",
                name: "get_weather",
                partial_json: &["{\"city\": ", "\"Paris\"}"],
            };
            return answer(r, &[call], "tool_use", (30, 12));
        }
        if body.get("output_config").is_some() {
            let json = ["{\"city\": \"Paris\", ", "\"rank\": 1}"];
            return answer(r, &[Block::Text(&json)], "end_turn", (10, 9));
        }
        answer(r, &[Block::Text(&["Bonjour"])], "end_turn", (5, 1))
    })
    .await;
    let backend = Backend {
        config: provd_tests::apis::provider_config("anthropic", &upstream.base_url, 0, "")
            .replace("providers.p]", "providers.c]")
            .replace("default_provider = \"p\"", "default_provider = \"c\""),
        env: vec![("PROVD_TEST_KEY".into(), provd_tests::apis::TEST_KEY.into())],
        model: "c/claude-test-model".into(),
        answer: "Claude says: {result}".into(),
        reasoning: String::new(),
        forged_state: None,
    };
    (upstream, backend)
}

/// A GPT model behind provider `g`: the faithful OpenAI mock scripted as a model that
/// uses tools ([`provd_tests::apis::openai::tool_model`]): a `get_weather` call when given
/// tools, `GPT says: RESULT` after a tool message, a JSON object when asked for a
/// response format.
async fn gpt() -> (Upstream, Backend) {
    let upstream = provd_tests::apis::openai::tool_model("gpt-test").await;
    let backend = Backend {
        config: provd_tests::apis::provider_config(
            "openai",
            &format!("{}/v1", upstream.base_url),
            0,
            "",
        )
        .replace("providers.p]", "providers.g]")
        .replace("default_provider = \"p\"", "default_provider = \"g\"")
        .replace(
            "default_model = \"test-model\"",
            "default_model = \"gpt-test\"",
        ),
        env: vec![("PROVD_TEST_KEY".into(), provd_tests::apis::TEST_KEY.into())],
        model: "g/gpt-test".into(),
        answer: "GPT says: {result}".into(),
        // OpenAI's Chat Completions shows no reasoning text: the loops run without thinking.
        reasoning: String::new(),
        forged_state: None,
    };
    (upstream, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_sdk_runs_tool_loops_and_json_against_a_claude_model() {
    let (upstream, backend) = claude().await;
    // The upstream answers on this runtime while the script runs on a blocking thread.
    let ran = tokio::task::block_in_place(|| {
        run_sdk_tools(
            &backend,
            "openai",
            &[
                "openai_tool_loop_not_streamed",
                "openai_tool_loop_streamed",
                "openai_json_schema_parse",
            ],
            3,
        )
    });
    if ran {
        // The Claude model really got the Messages API's shapes: tools, the call sent
        // back as a tool_use block and its result as a tool_result block.
        let second = upstream
            .requests()
            .into_iter()
            .map(|r| r.json())
            .find(|b| anthropic_tool_result(b).is_some())
            .expect("a turn with the tool's result reached Claude");
        assert_eq!(second["tools"][0]["name"], "get_weather");
        let assistant = &second["messages"][1];
        assert_eq!(assistant["role"], "assistant");
        assert_eq!(assistant["content"][0]["type"], "tool_use");
        assert_eq!(assistant["content"][0]["id"], "toolu_01A");
        assert_eq!(assistant["content"][0]["input"], json!({"city": "Paris"}));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_anthropic_sdk_runs_tool_loops_and_json_against_an_openai_model() {
    let (upstream, backend) = gpt().await;
    let ran = tokio::task::block_in_place(|| {
        run_sdk_tools(
            &backend,
            "anthropic",
            &[
                "anthropic_tool_loop_not_streamed",
                "anthropic_tool_loop_streamed",
                "anthropic_structured_output_parse",
            ],
            3,
        )
    });
    if ran {
        let second = upstream
            .requests()
            .into_iter()
            .map(|r| r.json())
            .find(|b| {
                b["messages"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|t| t["role"] == "tool"))
            })
            .expect("a turn with the tool's result reached the GPT model");
        assert_eq!(second["tools"][0]["function"]["name"], "get_weather");
        let messages = second["messages"].as_array().unwrap();
        let call = &messages[messages.len() - 2]["tool_calls"][0];
        assert_eq!(call["id"], "call_gpt_1");
        let tool = &messages[messages.len() - 1];
        assert_eq!(
            (tool["tool_call_id"].as_str(), tool["content"].as_str()),
            (Some("call_gpt_1"), Some("15 degrees and sunny"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_clients_run_tool_loops_and_get_json_from_an_openai_model() {
    let (upstream, backend) = gpt().await;
    ollama_tool_loop(&backend, false).await;
    ollama_tool_loop(&backend, true).await;
    // The GPT model got the calls back with their ids (provd matched Ollama's tool_name
    // to the call) and the result as a tool message.
    let bodies: Vec<Value> = upstream.requests().into_iter().map(|r| r.json()).collect();
    let second = bodies
        .iter()
        .find(|b| {
            b["messages"]
                .as_array()
                .is_some_and(|m| m.iter().any(|t| t["role"] == "tool"))
        })
        .expect("the tool's result reached the GPT model");
    let messages = second["messages"].as_array().unwrap();
    let id = messages[messages.len() - 2]["tool_calls"][0]["id"].clone();
    assert_eq!(messages[messages.len() - 1]["tool_call_id"], id);

    let daemon = start(&backend);
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"},
        "country": {"type": "string"}}, "required": ["city", "country"]});
    let (status, answer) = post_json(
        &http_socket(&daemon),
        "/api/chat",
        &json!({"model": backend.model, "stream": false, "format": schema,
                "messages": [{"role": "user", "content": "Name a capital"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let content: Value = serde_json::from_str(answer["message"]["content"].as_str().unwrap())
        .expect("the answer is JSON");
    assert_eq!(content, json!({"city": "Paris", "country": "France"}));
    let asked = upstream.requests().last().unwrap().json();
    assert_eq!(asked["response_format"]["type"], "json_schema");
    assert_eq!(asked["response_format"]["json_schema"]["schema"], schema);
}
