//! Tools, structured output, reasoning and images through the Rust client against the
//! providers of the OpenAI family and Ollama (`openai`, `openai-compatible`,
//! `azure-openai`, `ollama`), each on its faithful mock upstream: a two-turn tool
//! conversation (call, result, final answer) and a schema-constrained JSON answer,
//! streamed and whole, with the exact request each API was sent; reasoning effort,
//! reasoning text and reasoning counts where each API has them.
//!
//! The mocks answer from the request as the real services would: a request with tools
//! and no result yet gets a call of `get_weather`; one whose last turn is a tool result
//! gets "The tool get_weather returned: RESULT"; one asking for JSON gets a JSON object.

use provd_client::{
    Effort, FinishReason, GenerateDone, GenerateEvent, GenerateRequest, Image, Message, Reasoning,
    ResponseFormat, Role, ToolCallDelta, ToolChoice,
};
use provd_tests::apis::{azure, ollama, openai};
use provd_tests::upstream::{Recorded, Reply, Upstream};
use provd_tests::{weather_tool, Daemon};
use serde_json::{json, Value};

const MODEL: &str = "test-model";
/// What the mock's weather tool returns.
const RESULT: &str = "18 degrees and sunny";
/// The id OpenAI's mocks give their call.
const CALL_ID: &str = "call_Wx7aQ2";
/// A 1×1 PNG's first bytes, base64: enough for the request's shape.
const PNG: &str = "iVBORw0KGgo=";
/// The JSON answer the mocks give when asked for JSON.
const CITY: &str = r#"{"name":"Paris","population":2102650}"#;

/// The provider types under test.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    OpenAi,
    Compatible,
    Azure,
    Ollama,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Compatible => "openai-compatible",
            Kind::Azure => "azure-openai",
            Kind::Ollama => "ollama",
        }
    }

    /// The provider's `base_url`: OpenAI's includes the version; Azure's is the
    /// resource endpoint (the v1 API); Ollama's is the server root.
    fn daemon(self, upstream: &Upstream, extra: &str) -> Daemon {
        let base_url = match self {
            Kind::OpenAi | Kind::Compatible => format!("{}/v1", upstream.base_url),
            Kind::Azure | Kind::Ollama => upstream.base_url.clone(),
        };
        Daemon::builder()
            .provider(self.name(), &base_url, 0, extra)
            .env_remove("AZURE_OPENAI_ENDPOINT")
            .start()
    }

    /// The path each API generates at.
    fn path(self) -> &'static str {
        match self {
            Kind::OpenAi | Kind::Compatible => "/v1/chat/completions",
            Kind::Azure => "/openai/v1/chat/completions",
            Kind::Ollama => "/api/chat",
        }
    }
}

/// The mock upstream of `kind`, answering from the request (see the module doc).
async fn upstream(kind: Kind) -> Upstream {
    Upstream::start(move |r| answer(kind, r)).await
}

fn answer(kind: Kind, r: &Recorded) -> Reply {
    let body = r.json();
    let stream = body["stream"] == true;
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.last().cloned().unwrap_or(Value::Null);
    let text = if last["role"] == "tool" {
        let result = last["content"].as_str().unwrap_or_default();
        Some(format!("The tool get_weather returned: {result}"))
    } else if body.get("tools").is_some() {
        None
    } else {
        Some(CITY.to_owned())
    };
    // Pieces the way the services cut them: a few tokens each.
    let pieces = |t: &str| -> Vec<String> {
        let cut = t.char_indices().map(|(i, _)| i).nth(9).unwrap_or(t.len());
        vec![t[..cut].to_owned(), t[cut..].to_owned()]
    };
    let arguments = r#"{"city":"Paris"}"#;
    let calls: [openai::Call; 1] = [(CALL_ID, "get_weather", arguments)];
    match (kind, text, stream) {
        (Kind::Ollama, Some(t), true) => {
            let p = pieces(&t);
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            ollama::stream_reply(&ollama::stream_text(MODEL, &p, "stop", (30, 12)), 11)
        }
        (Kind::Ollama, Some(t), false) => {
            Reply::json(200, &ollama::chat_response(MODEL, &t, "stop", (30, 12)))
        }
        (Kind::Ollama, None, true) => {
            let mut s =
                ollama::tool_calls_line(MODEL, &[("get_weather", json!({"city": "Paris"}))]);
            // Ollama says "stop" after a call.
            s.push_str(&ollama::done_line(MODEL, "stop", (30, 12)));
            ollama::stream_reply(&s, 11)
        }
        (Kind::Ollama, None, false) => Reply::json(
            200,
            &ollama::chat_response_with(
                MODEL,
                json!({"role": "assistant", "content": "", "tool_calls": [
                    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
                ]}),
                "stop",
                (30, 12),
            ),
        ),
        (Kind::Azure, Some(t), true) => {
            let p = pieces(&t);
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            azure::stream_reply(&azure::stream_text(MODEL, &p, "stop", (30, 12)), 13)
        }
        (Kind::Azure, Some(t), false) => {
            Reply::json(200, &azure::completion(MODEL, &t, "stop", (30, 12)))
        }
        (Kind::Azure, None, true) => {
            azure::stream_reply(&azure::stream_tool_calls(MODEL, &calls, (30, 12)), 13)
        }
        (Kind::Azure, None, false) => {
            Reply::json(200, &azure::completion_tool_calls(MODEL, &calls, (30, 12)))
        }
        (_, Some(t), true) => {
            let p = pieces(&t);
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            openai::stream_reply(&openai::stream_text(MODEL, &p, "stop", (30, 12)), 13)
        }
        (_, Some(t), false) => Reply::json(200, &openai::completion(MODEL, &t, "stop", (30, 12))),
        (_, None, true) => {
            openai::stream_reply(&openai::stream_tool_calls(MODEL, &calls, (30, 12)), 13)
        }
        (_, None, false) => {
            Reply::json(200, &openai::completion_tool_calls(MODEL, &calls, (30, 12)))
        }
    }
}

/// The first turn: a question with a picture, the weather tool offered.
fn ask(stream: bool) -> GenerateRequest {
    GenerateRequest {
        messages: vec![Message {
            images: vec![Image::Base64 {
                media_type: "image/png".into(),
                data: PNG.into(),
            }],
            ..Message::text(Role::User, "What is the weather where this was taken?")
        }],
        tools: vec![weather_tool()],
        tool_choice: Some(ToolChoice::Auto),
        max_tokens: Some(200),
        stream,
        ..GenerateRequest::default()
    }
}

/// Everything a generation sent.
#[derive(Debug, Default)]
struct Seen {
    text: String,
    pieces: Vec<ToolCallDelta>,
    reasoning: String,
    done: Option<GenerateDone>,
}

impl Seen {
    /// The answer's text, streamed or whole.
    fn answer(&self) -> String {
        match self.done.as_ref().and_then(|d| d.text.clone()) {
            Some(whole) => whole,
            None => self.text.clone(),
        }
    }

    fn done(&self) -> &GenerateDone {
        self.done.as_ref().expect("the generation ended")
    }
}

async fn run(daemon: &Daemon, request: GenerateRequest) -> Seen {
    let client = daemon.client().await;
    let mut generation = client.generate(request).await.expect("starts");
    let mut seen = Seen::default();
    while let Some(event) = generation.next().await {
        match event.expect("no error") {
            GenerateEvent::Chunk(c) => {
                seen.text.push_str(&c.text);
                seen.pieces.extend(c.tool_call);
                if let Some(r) = c.reasoning {
                    seen.reasoning.push_str(&r);
                }
            }
            GenerateEvent::Done(d) => seen.done = Some(d),
        }
    }
    seen
}

/// The tools as Chat Completions and Ollama both take them.
fn wire_tools() -> Value {
    json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }}])
}

/// The body `kind`'s API must have been sent for `messages` (and the tools, the limit,
/// streaming), plus `more` top-level fields.
fn expected_body(kind: Kind, messages: Value, stream: bool, more: Value) -> Value {
    let mut body = json!({"model": MODEL, "messages": messages, "stream": stream});
    match kind {
        Kind::Ollama => body["options"] = json!({"num_predict": 200}),
        Kind::Compatible => body["max_tokens"] = json!(200),
        Kind::OpenAi | Kind::Azure => body["max_completion_tokens"] = json!(200),
    }
    if stream && kind != Kind::Ollama {
        body["stream_options"] = json!({"include_usage": true});
    }
    for (key, value) in more.as_object().cloned().unwrap_or_default() {
        body[key] = value;
    }
    body
}

/// The first user turn as `kind`'s API takes it: image parts, or Ollama's `images`.
fn wire_question(kind: Kind) -> Value {
    let text = "What is the weather where this was taken?";
    match kind {
        Kind::Ollama => json!({"role": "user", "content": text, "images": [PNG]}),
        _ => json!({"role": "user", "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
        ]}),
    }
}

async fn a_two_turn_tool_conversation(kind: Kind, stream: bool) {
    let upstream = upstream(kind).await;
    let daemon = kind.daemon(&upstream, "");

    let first = run(&daemon, ask(stream)).await;
    let done = first.done().clone();
    assert_eq!(done.finish_reason, FinishReason::ToolCalls, "{kind:?}");
    assert_eq!(first.answer(), "", "{kind:?}");
    assert_eq!(done.tool_calls.len(), 1, "{kind:?}");
    let call = &done.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&call.arguments).unwrap(),
        json!({"city": "Paris"})
    );
    if kind == Kind::Ollama {
        // Ollama gives no ids: the daemon names the call.
        assert!(
            call.id.starts_with("call_") && call.id.ends_with("_0"),
            "{}",
            call.id
        );
    } else {
        assert_eq!(call.id, CALL_ID, "the upstream's id is kept");
    }
    if stream {
        assert_eq!(first.pieces[0].name.as_deref(), Some("get_weather"));
        assert_eq!(first.pieces[0].id.as_deref(), Some(call.id.as_str()));
        let streamed: String = first.pieces.iter().map(|p| p.arguments.as_str()).collect();
        assert_eq!(streamed, call.arguments);
        // OpenAI streams a call in pieces; Ollama sends it whole.
        let expected_pieces = if kind == Kind::Ollama { 1 } else { 3 };
        assert_eq!(first.pieces.len(), expected_pieces, "{:?}", first.pieces);
    } else {
        assert!(first.pieces.is_empty());
    }

    let mut second = ask(stream);
    second.messages.push(Message::from_done(&done, ""));
    second.messages.push(Message::tool_result(&call.id, RESULT));
    let answer = run(&daemon, second).await;
    assert_eq!(answer.done().finish_reason, FinishReason::Stop);
    assert!(answer.done().tool_calls.is_empty());
    assert_eq!(
        answer.answer(),
        format!("The tool get_weather returned: {RESULT}")
    );

    let requests = upstream.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path(), kind.path());
    let tool_choice = match kind {
        // Ollama has no tool_choice; "auto" is what it does.
        Kind::Ollama => json!({"tools": wire_tools()}),
        _ => json!({"tools": wire_tools(), "tool_choice": "auto"}),
    };
    assert_eq!(
        requests[0].json(),
        expected_body(
            kind,
            json!([wire_question(kind)]),
            stream,
            tool_choice.clone()
        ),
        "{kind:?}"
    );
    let (assistant, result) = match kind {
        Kind::Ollama => (
            json!({"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            ]}),
            json!({"role": "tool", "content": RESULT, "tool_name": "get_weather"}),
        ),
        _ => (
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": CALL_ID, "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]}),
            json!({"role": "tool", "tool_call_id": CALL_ID, "content": RESULT}),
        ),
    };
    assert_eq!(
        requests[1].json(),
        expected_body(
            kind,
            json!([wire_question(kind), assistant, result]),
            stream,
            tool_choice
        ),
        "{kind:?}"
    );
}

async fn a_schema_constrained_json_answer(kind: Kind, stream: bool) {
    let upstream = upstream(kind).await;
    let daemon = kind.daemon(&upstream, "");
    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string"}, "population": {"type": "integer"}
    }, "required": ["name", "population"], "additionalProperties": false});
    let request = GenerateRequest {
        messages: vec![Message::text(Role::User, "Describe Paris")],
        response_format: Some(ResponseFormat::JsonSchema {
            name: "city".into(),
            schema: schema.clone(),
            strict: true,
        }),
        max_tokens: Some(200),
        stream,
        ..GenerateRequest::default()
    };
    let seen = run(&daemon, request).await;
    assert_eq!(seen.done().finish_reason, FinishReason::Stop);
    let value: Value = serde_json::from_str(&seen.answer()).expect("the answer is JSON");
    assert_eq!(value, json!({"name": "Paris", "population": 2_102_650}));

    let format = match kind {
        Kind::Ollama => json!({"format": schema}),
        _ => json!({"response_format": {"type": "json_schema", "json_schema": {
            "name": "city", "schema": schema, "strict": true
        }}}),
    };
    assert_eq!(
        upstream.requests()[0].json(),
        expected_body(
            kind,
            json!([{"role": "user", "content": "Describe Paris"}]),
            stream,
            format
        ),
        "{kind:?}"
    );
}

#[tokio::test]
async fn openai_runs_a_two_turn_tool_conversation_streamed() {
    a_two_turn_tool_conversation(Kind::OpenAi, true).await;
}

#[tokio::test]
async fn openai_runs_a_two_turn_tool_conversation_whole() {
    a_two_turn_tool_conversation(Kind::OpenAi, false).await;
}

#[tokio::test]
async fn openai_compatible_runs_a_two_turn_tool_conversation_streamed() {
    a_two_turn_tool_conversation(Kind::Compatible, true).await;
}

#[tokio::test]
async fn openai_compatible_runs_a_two_turn_tool_conversation_whole() {
    a_two_turn_tool_conversation(Kind::Compatible, false).await;
}

#[tokio::test]
async fn azure_openai_runs_a_two_turn_tool_conversation_streamed() {
    a_two_turn_tool_conversation(Kind::Azure, true).await;
}

#[tokio::test]
async fn azure_openai_runs_a_two_turn_tool_conversation_whole() {
    a_two_turn_tool_conversation(Kind::Azure, false).await;
}

#[tokio::test]
async fn ollama_runs_a_two_turn_tool_conversation_streamed() {
    a_two_turn_tool_conversation(Kind::Ollama, true).await;
}

#[tokio::test]
async fn ollama_runs_a_two_turn_tool_conversation_whole() {
    a_two_turn_tool_conversation(Kind::Ollama, false).await;
}

#[tokio::test]
async fn every_provider_here_answers_json_matching_a_schema_streamed_and_whole() {
    for kind in [Kind::OpenAi, Kind::Compatible, Kind::Azure, Kind::Ollama] {
        for stream in [true, false] {
            a_schema_constrained_json_answer(kind, stream).await;
        }
    }
}

#[tokio::test]
async fn json_object_is_openais_json_object_and_ollamas_json_format() {
    for kind in [Kind::OpenAi, Kind::Ollama] {
        let upstream = upstream(kind).await;
        let daemon = kind.daemon(&upstream, "");
        let mut request = GenerateRequest::prompt("Describe Paris as JSON");
        request.response_format = Some(ResponseFormat::JsonObject);
        request.stream = false;
        let seen = run(&daemon, request).await;
        assert!(serde_json::from_str::<Value>(&seen.answer()).is_ok());
        let body = upstream.requests()[0].json();
        match kind {
            Kind::Ollama => assert_eq!(body["format"], "json"),
            _ => assert_eq!(body["response_format"], json!({"type": "json_object"})),
        }
    }
}

#[tokio::test]
async fn parallel_openai_calls_keep_their_order_and_ids_streamed_and_whole() {
    let calls: [openai::Call; 3] = [
        ("call_1", "get_weather", r#"{"city":"Paris"}"#),
        ("call_2", "get_weather", r#"{"city":"Oslo"}"#),
        ("call_3", "get_time", r#"{}"#),
    ];
    let upstream = Upstream::start(move |r| {
        if r.json()["stream"] == true {
            openai::stream_reply(&openai::stream_tool_calls(MODEL, &calls, (9, 9)), 17)
        } else {
            Reply::json(200, &openai::completion_tool_calls(MODEL, &calls, (9, 9)))
        }
    })
    .await;
    let daemon = Kind::OpenAi.daemon(&upstream, "");
    for stream in [true, false] {
        let done = run(&daemon, ask(stream)).await.done.unwrap();
        let got: Vec<(&str, &str, &str)> = done
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(got, calls, "stream {stream}");
    }
}

#[tokio::test]
async fn ollama_refuses_a_forced_tool_choice_by_name_without_asking_the_server() {
    let upstream = upstream(Kind::Ollama).await;
    let daemon = Kind::Ollama.daemon(&upstream, "");
    let mut request = ask(true);
    request.tool_choice = Some(ToolChoice::Required);
    let client = daemon.client().await;
    let e = provd_tests::generation_error(&client, request).await;
    assert_eq!(e.code, provd_client::ErrorCode::InvalidRequest);
    assert!(
        e.message
            .contains("(type ollama) does not support tool_choice"),
        "{e}"
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn openai_takes_an_effort_from_a_budget_counts_reasoning_and_streams_no_reasoning_text() {
    let upstream = Upstream::start(|r| {
        // OpenAI's Chat Completions never sends reasoning text; only the count.
        if r.json()["stream"] == true {
            openai::stream_reply(
                &openai::stream_reasoning(MODEL, &[], &["Blue light ", "scatters."], (10, 90, 64)),
                13,
            )
        } else {
            let mut whole = openai::completion(MODEL, "Blue light scatters.", "stop", (10, 90));
            whole["usage"] = openai::reasoning_usage(10, 90, 64);
            Reply::json(200, &whole)
        }
    })
    .await;
    let daemon = Kind::OpenAi.daemon(&upstream, "");
    for stream in [true, false] {
        let request = GenerateRequest {
            prompt: Some("why is the sky blue".into()),
            reasoning: Some(Reasoning {
                budget_tokens: Some(4000),
                show: true,
                ..Reasoning::default()
            }),
            stream,
            ..GenerateRequest::default()
        };
        let seen = run(&daemon, request).await;
        assert_eq!(seen.answer(), "Blue light scatters.");
        assert_eq!(seen.reasoning, "");
        let done = seen.done();
        assert_eq!(done.reasoning.as_deref().unwrap_or_default(), "");
        assert_eq!(done.usage.reasoning_tokens, Some(64));
        assert_eq!(done.usage.completion_tokens, 90, "reasoning is included");
    }
    for r in upstream.requests() {
        assert_eq!(r.json()["reasoning_effort"], "high", "4000 tokens is high");
    }
}

#[tokio::test]
async fn a_compatible_servers_reasoning_content_is_shown_streamed_and_whole() {
    let upstream = Upstream::start(|r| {
        if r.json()["stream"] == true {
            openai::stream_reply(
                &openai::stream_reasoning(
                    MODEL,
                    &["The user asks ", "about the sky."],
                    &["Rayleigh scattering."],
                    (10, 30, 20),
                ),
                11,
            )
        } else {
            let mut whole = openai::completion(MODEL, "Rayleigh scattering.", "stop", (10, 30));
            whole["choices"][0]["message"]["reasoning_content"] =
                json!("The user asks about the sky.");
            whole["usage"] = openai::reasoning_usage(10, 30, 20);
            Reply::json(200, &whole)
        }
    })
    .await;
    let daemon = Kind::Compatible.daemon(
        &upstream,
        "capabilities = [\"streaming\", \"tools\", \"json_object\", \"json_schema\", \"reasoning\"]",
    );
    for stream in [true, false] {
        let request = GenerateRequest {
            prompt: Some("why is the sky blue".into()),
            reasoning: Some(Reasoning {
                effort: Some(Effort::Low),
                show: true,
                ..Reasoning::default()
            }),
            stream,
            ..GenerateRequest::default()
        };
        let seen = run(&daemon, request).await;
        assert_eq!(seen.answer(), "Rayleigh scattering.");
        let reasoning = if stream {
            seen.reasoning.clone()
        } else {
            seen.done().reasoning.clone().unwrap_or_default()
        };
        assert_eq!(reasoning, "The user asks about the sky.", "stream {stream}");
        assert_eq!(seen.done().usage.reasoning_tokens, Some(20));
    }
    for r in upstream.requests() {
        assert_eq!(r.json()["reasoning_effort"], "low");
    }
}

#[tokio::test]
async fn ollama_thinks_at_the_asked_level_and_its_thinking_is_the_reasoning() {
    let upstream = Upstream::start(|r| {
        if r.json()["stream"] == true {
            let mut s = ollama::thinking_line(MODEL, "The sky... ");
            s.push_str(&ollama::thinking_line(MODEL, "scattering."));
            s.push_str(&ollama::stream_text(MODEL, &["Rayleigh."], "stop", (10, 30)));
            ollama::stream_reply(&s, 7)
        } else {
            Reply::json(
                200,
                &ollama::chat_response_with(
                    MODEL,
                    json!({"role": "assistant", "content": "Rayleigh.", "thinking": "The sky... scattering."}),
                    "stop",
                    (10, 30),
                ),
            )
        }
    })
    .await;
    let daemon = Kind::Ollama.daemon(&upstream, "");
    for stream in [true, false] {
        let request = GenerateRequest {
            prompt: Some("why is the sky blue".into()),
            reasoning: Some(Reasoning {
                effort: Some(Effort::High),
                show: true,
                ..Reasoning::default()
            }),
            stream,
            ..GenerateRequest::default()
        };
        let seen = run(&daemon, request).await;
        assert_eq!(seen.answer(), "Rayleigh.");
        let reasoning = if stream {
            seen.reasoning.clone()
        } else {
            seen.done().reasoning.clone().unwrap_or_default()
        };
        assert_eq!(reasoning, "The sky... scattering.", "stream {stream}");
    }
    for r in upstream.requests() {
        assert_eq!(r.json()["think"], "high");
    }
}

#[tokio::test]
async fn image_urls_go_to_openai_as_urls() {
    let upstream = upstream(Kind::OpenAi).await;
    let daemon = Kind::OpenAi.daemon(&upstream, "");
    let request = GenerateRequest {
        messages: vec![Message {
            images: vec![Image::Url {
                url: "https://example.com/sky.jpg".into(),
            }],
            ..Message::text(Role::User, "")
        }],
        stream: false,
        ..GenerateRequest::default()
    };
    run(&daemon, request).await;
    assert_eq!(
        upstream.requests()[0].json()["messages"],
        json!([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/sky.jpg"}}
        ]}])
    );
}
