//! Tools, structured output, reasoning and images through the MessagePack protocol and
//! the Rust client, on the built-in mock (which answers them from the request alone):
//! a two-turn tool conversation streamed and whole, parallel calls in order, a JSON
//! answer matching a schema, reasoning shown or hidden and its state sent back, the
//! capability check naming what a provider cannot do, and malformed tool turns refused.

use provd_client::{
    ErrorCode, FinishReason, GenerateDone, GenerateEvent, GenerateRequest, Image, Message,
    Reasoning, ResponseFormat, Role, Tool, ToolCall, ToolChoice,
};
use provd_tests::{generation_error, weather_tool, Daemon};
use serde_json::{json, Value};

fn ask(stream: bool) -> GenerateRequest {
    GenerateRequest {
        messages: vec![Message::text(Role::User, "What is the weather in Paris?")],
        tools: vec![weather_tool()],
        stream,
        ..GenerateRequest::default()
    }
}

/// Everything a generation sent: its text, the tool-call pieces and reasoning pieces of
/// its chunks, and its end.
#[derive(Debug, Default)]
struct Seen {
    text: String,
    pieces: Vec<provd_client::ToolCallDelta>,
    reasoning: String,
    indexes: Vec<u32>,
    done: Option<GenerateDone>,
}

async fn run(daemon: &Daemon, request: GenerateRequest) -> Seen {
    let client = daemon.client().await;
    let mut generation = client.generate(request).await.expect("starts");
    let mut seen = Seen::default();
    while let Some(event) = generation.next().await {
        match event.expect("no error") {
            GenerateEvent::Chunk(c) => {
                seen.indexes.push(c.index);
                seen.text.push_str(&c.text);
                if let Some(piece) = c.tool_call {
                    assert!(c.text.is_empty(), "a tool call chunk carries no text");
                    seen.pieces.push(piece);
                }
                if let Some(r) = c.reasoning {
                    seen.reasoning.push_str(&r);
                }
            }
            GenerateEvent::Done(d) => seen.done = Some(d),
        }
    }
    seen
}

fn args(call: &ToolCall) -> Value {
    serde_json::from_str(&call.arguments).expect("arguments are JSON")
}

#[tokio::test]
async fn a_two_turn_tool_conversation_streams_the_call_then_answers_from_its_result() {
    let daemon = Daemon::start();
    let first = run(&daemon, ask(true)).await;
    let done = first.done.expect("done");
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(first.text, "");
    // The call arrives in pieces: the first names it, the rest add arguments.
    assert!(first.pieces.len() >= 2, "{:?}", first.pieces);
    assert_eq!(first.pieces[0].name.as_deref(), Some("get_weather"));
    assert_eq!(first.pieces[0].id.as_deref(), Some("mock_call_0"));
    assert!(first.pieces[1..]
        .iter()
        .all(|p| p.id.is_none() && p.index == 0));
    let streamed: String = first.pieces.iter().map(|p| p.arguments.as_str()).collect();
    assert_eq!(done.tool_calls.len(), 1);
    let call = &done.tool_calls[0];
    assert_eq!(
        (call.id.as_str(), call.name.as_str()),
        ("mock_call_0", "get_weather")
    );
    assert_eq!(call.arguments, streamed);
    assert_eq!(args(call), json!({"city": "mock"}));
    assert_eq!(
        first.indexes,
        (0..first.indexes.len() as u32).collect::<Vec<_>>()
    );

    let mut second = ask(true);
    second.messages.push(Message::from_done(&done, ""));
    second
        .messages
        .push(Message::tool_result(&call.id, "18 degrees and sunny"));
    let answer = run(&daemon, second).await;
    let done = answer.done.expect("done");
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert!(done.tool_calls.is_empty());
    assert_eq!(
        answer.text,
        "The tool get_weather returned: 18 degrees and sunny"
    );
}

#[tokio::test]
async fn a_whole_answer_carries_the_assembled_calls_and_no_chunks() {
    let daemon = Daemon::start();
    let seen = run(&daemon, ask(false)).await;
    assert!(seen.indexes.is_empty(), "no chunks for stream: false");
    let done = seen.done.unwrap();
    assert_eq!(done.finish_reason, FinishReason::ToolCalls);
    assert_eq!(done.chunks, 0);
    assert_eq!(args(&done.tool_calls[0]), json!({"city": "mock"}));
}

#[tokio::test]
async fn parallel_calls_keep_their_order_and_ids() {
    let daemon = Daemon::start();
    let mut request = ask(true);
    request.additional_params.insert(
        "mock".into(),
        json!({"tool_calls": [
            {"name": "get_weather", "arguments": {"city": "Paris"}},
            {"name": "get_weather", "arguments": {"city": "Oslo"}},
            {"name": "get_weather", "arguments": {"city": "Lima"}}
        ]}),
    );
    let done = run(&daemon, request).await.done.unwrap();
    let cities: Vec<Value> = done
        .tool_calls
        .iter()
        .map(|c| args(c)["city"].clone())
        .collect();
    assert_eq!(cities, [json!("Paris"), json!("Oslo"), json!("Lima")]);
    let ids: Vec<&str> = done.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["mock_call_0", "mock_call_1", "mock_call_2"]);
}

#[tokio::test]
async fn tool_choice_none_answers_in_text_and_a_named_tool_is_the_one_called() {
    let daemon = Daemon::start();
    let mut none = ask(false);
    none.tool_choice = Some(ToolChoice::None);
    let done = run(&daemon, none).await.done.unwrap();
    assert!(done.tool_calls.is_empty());
    assert_eq!(done.finish_reason, FinishReason::Stop);
    assert!(!done.text.unwrap().is_empty());

    let mut named = ask(false);
    named
        .tools
        .insert(0, Tool::new("get_time", "", json!({"type": "object"})));
    named.tool_choice = Some(ToolChoice::Tool("get_weather".into()));
    let done = run(&daemon, named).await.done.unwrap();
    assert_eq!(done.tool_calls[0].name, "get_weather");
}

#[tokio::test]
async fn a_json_schema_answer_parses_and_matches_the_schema_streamed_or_whole() {
    let daemon = Daemon::start();
    for stream in [true, false] {
        let request = GenerateRequest {
            prompt: Some("Describe Paris".into()),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "city".into(),
                schema: json!({"type": "object", "properties": {
                    "name": {"type": "string"}, "population": {"type": "integer"},
                    "capital": {"type": "boolean"}
                }, "required": ["name", "population", "capital"]}),
                strict: true,
            }),
            stream,
            ..GenerateRequest::default()
        };
        let seen = run(&daemon, request).await;
        let done = seen.done.unwrap();
        let text = if stream {
            seen.text
        } else {
            done.text.unwrap()
        };
        let value: Value = serde_json::from_str(&text).expect("the answer is JSON");
        assert_eq!(
            value,
            json!({"name": "mock", "population": 1, "capital": true})
        );
    }
}

#[tokio::test]
async fn reasoning_is_streamed_only_when_shown_counted_always_and_its_state_returns() {
    let daemon = Daemon::start();
    let sky = |show, stream| GenerateRequest {
        prompt: Some("why is the sky blue".into()),
        reasoning: Some(Reasoning {
            budget_tokens: Some(1024),
            show,
            ..Reasoning::default()
        }),
        stream,
        ..GenerateRequest::default()
    };
    let hidden = run(&daemon, sky(false, true)).await;
    assert_eq!(hidden.reasoning, "");
    let done = hidden.done.unwrap();
    // "Thinking about: why is the sky blue" is 7 words.
    assert_eq!(done.usage.reasoning_tokens, Some(7));
    assert!(done.usage.completion_tokens > 7, "{:?}", done.usage);

    let shown = run(&daemon, sky(true, true)).await;
    assert_eq!(shown.reasoning, "Thinking about: why is the sky blue");
    let done = shown.done.unwrap();
    let state = done
        .provider_state
        .clone()
        .expect("the mock signs its reasoning");
    assert_eq!(state["type"], "mock");

    let whole = run(&daemon, sky(true, false)).await;
    assert_eq!(
        whole.done.unwrap().reasoning.as_deref(),
        Some("Thinking about: why is the sky blue")
    );

    // The turn goes back with its state; an altered state is refused as the provider
    // would refuse a forged signature.
    let mut next = GenerateRequest::prompt("and at sunset?");
    next.messages = vec![
        Message::text(Role::User, "why is the sky blue"),
        Message::from_done(&done, shown.text.clone()),
    ];
    assert!(run(&daemon, next.clone()).await.done.is_some());
    next.messages[1].provider_state =
        Some(json!({"type": "mock", "state": {"signature": "forged"}}));
    let client = daemon.client().await;
    let wire = generation_error(&client, next).await;
    assert!(wire.message.contains("signature"), "{wire:?}");
}

#[tokio::test]
async fn images_reach_the_provider() {
    let daemon = Daemon::start();
    let request = GenerateRequest {
        messages: vec![Message {
            images: vec![Image::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into(),
            }],
            ..Message::text(Role::User, "What is in this picture?")
        }],
        stream: false,
        ..GenerateRequest::default()
    };
    let done = run(&daemon, request).await.done.unwrap();
    assert!(done.text.unwrap().starts_with("I see 1 image. "));
}

#[tokio::test]
async fn a_provider_without_a_capability_refuses_the_option_by_name() {
    let daemon =
        Daemon::with_config("[providers.plain]\ntype = \"mock\"\ncapabilities = [\"streaming\"]\n");
    let client = daemon.client().await;
    let wire = generation_error(&client, ask(true)).await;
    assert_eq!(wire.code, ErrorCode::InvalidRequest);
    assert!(
        wire.message
            .contains("provider 'plain' (type mock) does not support tools"),
        "{wire:?}"
    );
    let providers = client.list_providers().await.unwrap();
    assert_eq!(providers.providers[0].capabilities, ["streaming"]);
    let models = client.list_models(None).await.unwrap();
    assert_eq!(models.models[0].capabilities, ["streaming"]);

    let typed = Daemon::start();
    let models = typed.client().await.list_models(None).await.unwrap();
    assert!(models.models[0].capabilities.contains(&"tools".to_owned()));
}

#[tokio::test]
async fn a_tool_result_for_no_call_is_an_invalid_request() {
    let daemon = Daemon::start();
    let mut request = ask(true);
    request
        .messages
        .push(Message::tool_result("call_nowhere", "42"));
    let client = daemon.client().await;
    let wire = generation_error(&client, request).await;
    assert_eq!(wire.code, ErrorCode::InvalidRequest);
    assert!(
        wire.message.contains("answers no earlier tool call"),
        "{wire:?}"
    );
}

#[tokio::test]
async fn collect_returns_the_text_the_calls_and_a_turn_to_send_back() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let first = client
        .generate(ask(true))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(first.text, "");
    assert_eq!(first.tool_calls().len(), 1);
    assert_eq!(first.tool_calls()[0].id, "mock_call_0");
    let turn = first.turn();
    assert_eq!((turn.role, turn.tool_calls.len()), (Role::Assistant, 1));

    let mut second = ask(false);
    second.messages.push(turn);
    second
        .messages
        .push(Message::tool_result("mock_call_0", "sunny"));
    second.reasoning = Some(Reasoning {
        show: true,
        ..Reasoning::default()
    });
    let answer = client
        .generate(second)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(answer.text, "The tool get_weather returned: sunny");
    assert!(
        answer.reasoning.starts_with("Thinking about: "),
        "{answer:?}"
    );
    assert!(answer.tool_calls().is_empty());
}

#[tokio::test]
async fn a_hostile_clients_tools_and_images_are_refused_by_name_and_the_daemon_keeps_serving() {
    let daemon = Daemon::start();
    let client = daemon.client().await;
    let tool = |name: &str| Tool::new(name, "", json!({"type": "object"}));
    let many = GenerateRequest {
        tools: (0..129).map(|i| tool(&format!("t{i}"))).collect(),
        ..ask(true)
    };
    // A name with a forged log line and terminal escapes, long enough to be cut.
    let forged = format!("x\nINFO forged\x1b[31m{}", "y".repeat(300));
    let named = GenerateRequest {
        tools: vec![tool(&forged)],
        ..ask(true)
    };
    let mut pictured = ask(true);
    pictured.messages[0].images = vec![Image::Url {
        url: "file:///etc/shadow".into(),
    }];
    for (request, expected) in [
        (many, "at most 128"),
        (named, "tools.0.name"),
        (pictured, "https:// URL"),
    ] {
        let wire = generation_error(&client, request).await;
        assert_eq!(wire.code, ErrorCode::InvalidRequest, "{wire:?}");
        assert!(wire.message.contains(expected), "{expected}: {wire:?}");
        assert!(
            !wire.message.contains('\n') && !wire.message.contains('\x1b'),
            "the client's text is escaped: {wire:?}"
        );
        assert!(
            wire.message.len() < 1024,
            "the client's text is cut: {wire:?}"
        );
    }
    // The daemon still serves, and the refusing connection still works.
    client.ping().await.unwrap();
    let done = run(&daemon, ask(false)).await.done.unwrap();
    assert_eq!(done.tool_calls[0].name, "get_weather");
}
