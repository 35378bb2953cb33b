//! Tools, structured output and reasoning through the Rust client against the faithful
//! Anthropic and Gemini mocks, streamed and whole: a two-turn tool conversation (the
//! call, its result, the final answer), a JSON answer constrained by a schema, and a
//! reasoning turn whose signed state goes back with the next request, and parallel calls
//! whose order and ids hold and whose results go back in one turn. Every request the
//! daemon sends is checked whole against the API's documented shape.

use provd_client::{
    FinishReason, GenerateDone, GenerateRequest, Message, Reasoning, ResponseFormat, Role,
    ToolCall, ToolCallDelta,
};
use provd_tests::apis::anthropic::{self, Block};
use provd_tests::apis::gemini;
use provd_tests::upstream::{Recorded, Reply, Upstream};
use provd_tests::{drain_chunks, weather_schema, weather_tool, Daemon};
use serde_json::{json, Value};

const MAX_TOKENS: u32 = 4096;

fn city_schema() -> Value {
    json!({"type": "object", "properties": {
        "name": {"type": "string"}, "population": {"type": "integer"}
    }, "required": ["name", "population"], "additionalProperties": false})
}

fn ask(stream: bool) -> GenerateRequest {
    GenerateRequest {
        messages: vec![Message::text(Role::User, "What is the weather in Paris?")],
        tools: vec![weather_tool()],
        max_tokens: Some(MAX_TOKENS),
        stream,
        ..GenerateRequest::default()
    }
}

fn json_request(stream: bool) -> GenerateRequest {
    GenerateRequest {
        prompt: Some("Describe Paris".into()),
        response_format: Some(ResponseFormat::JsonSchema {
            name: "city".into(),
            schema: city_schema(),
            strict: true,
        }),
        max_tokens: Some(MAX_TOKENS),
        stream,
        ..GenerateRequest::default()
    }
}

fn reasoning_request(stream: bool) -> GenerateRequest {
    GenerateRequest {
        prompt: Some("Why is the sky blue?".into()),
        reasoning: Some(Reasoning {
            budget_tokens: Some(2048),
            show: true,
            ..Reasoning::default()
        }),
        max_tokens: Some(MAX_TOKENS),
        stream,
        ..GenerateRequest::default()
    }
}

/// What a generation delivered: its text and reasoning (from the chunks when streamed,
/// from the result otherwise), its tool-call pieces, its request id and its end.
#[derive(Debug)]
struct Seen {
    id: u32,
    text: String,
    reasoning: String,
    pieces: Vec<ToolCallDelta>,
    done: GenerateDone,
}

async fn run(daemon: &Daemon, request: GenerateRequest) -> Seen {
    let stream = request.stream;
    let client = daemon.client().await;
    let mut generation = client.generate(request).await.expect("starts");
    let id = generation.id();
    let (chunks, done) = drain_chunks(&mut generation).await;
    let done = done.unwrap_or_else(|e| panic!("the generation failed: {e}"));
    let mut seen = Seen {
        id,
        text: String::new(),
        reasoning: String::new(),
        pieces: Vec::new(),
        done,
    };
    if stream {
        for chunk in chunks {
            seen.text.push_str(&chunk.text);
            seen.reasoning
                .push_str(chunk.reasoning.as_deref().unwrap_or_default());
            seen.pieces.extend(chunk.tool_call);
        }
    } else {
        assert!(chunks.is_empty(), "no chunks for stream: false");
        seen.text = seen.done.text.clone().unwrap_or_default();
        seen.reasoning = seen.done.reasoning.clone().unwrap_or_default();
    }
    seen
}

/// The pieces of one streamed call: the first names it with its id, the rest add
/// arguments, and together they make the assembled call.
fn assert_pieces_make(pieces: &[ToolCallDelta], call: &ToolCall) {
    assert!(!pieces.is_empty());
    assert_eq!(pieces[0].id.as_deref(), Some(call.id.as_str()));
    assert_eq!(pieces[0].name.as_deref(), Some(call.name.as_str()));
    assert!(pieces.iter().all(|p| p.index == 0));
    assert!(pieces[1..].iter().all(|p| p.id.is_none()));
    let arguments: String = pieces.iter().map(|p| p.arguments.as_str()).collect();
    assert_eq!(arguments, call.arguments);
}

fn last_turn(r: &Recorded, turns: &str, content: &str) -> Value {
    r.json()[turns]
        .as_array()
        .and_then(|t| t.last())
        .map(|t| t[content].clone())
        .unwrap_or(Value::Null)
}

/// Answers as the Messages API would: a final answer to a tool result, JSON to an
/// output format, a call to a request with tools, thinking to a request asking for it.
fn anthropic_api(r: &Recorded) -> Reply {
    let body = r.json();
    let last = last_turn(r, "messages", "content");
    let answers_a_call = last
        .as_array()
        .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"));
    if answers_a_call {
        anthropic::answer(
            r,
            &[Block::Text(&["It is 18 degrees", " and sunny in Paris."])],
            "end_turn",
            (60, 12),
        )
    } else if body.get("output_config").is_some() {
        anthropic::answer(
            r,
            &[Block::Text(&[
                "{\"name\": \"Paris\",",
                " \"population\": 2102650}",
            ])],
            "end_turn",
            (15, 9),
        )
    } else if body.get("tools").is_some() {
        anthropic::answer(
            r,
            &[
                Block::Text(&["Let me check."]),
                Block::ToolUse {
                    id: "toolu_01A09q90qw90lq917835lq9",
                    name: "get_weather",
                    partial_json: &["", "{\"city\":", " \"Paris\"}"],
                },
            ],
            "tool_use",
            (30, 20),
        )
    } else {
        anthropic::answer(
            r,
            &[
                Block::Thinking(&["The sky scatters", " blue light."]),
                Block::RedactedThinking,
                Block::Text(&["Rayleigh", " scattering."]),
            ],
            "end_turn",
            (12, 70),
        )
    }
}

#[tokio::test]
async fn anthropic_a_two_turn_tool_conversation_carries_the_call_and_its_result() {
    let upstream = Upstream::start(anthropic_api).await;
    let daemon = Daemon::for_provider("anthropic", &upstream.base_url, 0, "");
    for (round, stream) in [true, false].into_iter().enumerate() {
        let first = run(&daemon, ask(stream)).await;
        assert_eq!(first.done.finish_reason, FinishReason::ToolCalls);
        assert_eq!(first.text, "Let me check.");
        let call = ToolCall {
            id: "toolu_01A09q90qw90lq917835lq9".into(),
            name: "get_weather".into(),
            arguments: "{\"city\": \"Paris\"}".into(),
        };
        if stream {
            assert_pieces_make(&first.pieces, &call);
        } else {
            // A whole answer's call is its block's input, as JSON.
            assert_eq!(
                serde_json::from_str::<Value>(&first.done.tool_calls[0].arguments).unwrap(),
                json!({"city": "Paris"})
            );
        }
        assert_eq!(first.done.tool_calls.len(), 1);
        assert_eq!(first.done.tool_calls[0].id, call.id);
        assert_eq!(first.done.usage.completion_tokens, 20);

        let mut second = ask(stream);
        second
            .messages
            .push(Message::from_done(&first.done, first.text.clone()));
        second
            .messages
            .push(Message::tool_result(&call.id, "18 degrees and sunny"));
        let answer = run(&daemon, second).await;
        assert_eq!(answer.text, "It is 18 degrees and sunny in Paris.");
        assert_eq!(answer.done.finish_reason, FinishReason::Stop);
        assert!(answer.done.tool_calls.is_empty());

        let requests = upstream.requests();
        let tools = json!([{
            "name": "get_weather",
            "description": "The weather in a city",
            "input_schema": weather_schema(),
        }]);
        assert_eq!(
            requests[2 * round].json(),
            json!({
                "model": "test-model",
                "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
                "max_tokens": MAX_TOKENS,
                "tools": tools,
                "stream": stream,
            })
        );
        let input: Value = serde_json::from_str(&first.done.tool_calls[0].arguments).unwrap();
        assert_eq!(
            requests[2 * round + 1].json(),
            json!({
                "model": "test-model",
                "messages": [
                    {"role": "user", "content": "What is the weather in Paris?"},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": call.id, "name": "get_weather", "input": input},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": call.id, "content": "18 degrees and sunny"},
                    ]},
                ],
                "max_tokens": MAX_TOKENS,
                "tools": tools,
                "stream": stream,
            })
        );
    }
}

#[tokio::test]
async fn anthropic_a_json_schema_answer_is_the_text_and_parses() {
    let upstream = Upstream::start(anthropic_api).await;
    let daemon = Daemon::for_provider("anthropic", &upstream.base_url, 0, "");
    for (round, stream) in [true, false].into_iter().enumerate() {
        let seen = run(&daemon, json_request(stream)).await;
        let value: Value = serde_json::from_str(&seen.text).expect("the answer is JSON");
        assert_eq!(value, json!({"name": "Paris", "population": 2_102_650}));
        assert_eq!(seen.done.finish_reason, FinishReason::Stop);
        assert_eq!(
            upstream.requests()[round].json(),
            json!({
                "model": "test-model",
                "messages": [{"role": "user", "content": "Describe Paris"}],
                "max_tokens": MAX_TOKENS,
                "output_config": {"format": {"type": "json_schema", "schema": city_schema()}},
                "stream": stream,
            })
        );
    }
}

#[tokio::test]
async fn anthropic_thinking_is_shown_and_its_signed_blocks_lead_the_next_turn() {
    let upstream = Upstream::start(anthropic_api).await;
    let daemon = Daemon::for_provider("anthropic", &upstream.base_url, 0, "");
    for (round, stream) in [true, false].into_iter().enumerate() {
        let first = run(&daemon, reasoning_request(stream)).await;
        assert_eq!(first.reasoning, "The sky scatters blue light.");
        assert_eq!(first.text, "Rayleigh scattering.");
        let blocks = json!([
            {"type": "thinking", "thinking": "The sky scatters blue light.", "signature": anthropic::SIGNATURE},
            {"type": "redacted_thinking", "data": anthropic::REDACTED_DATA},
        ]);
        assert_eq!(
            first.done.provider_state,
            Some(json!({"type": "anthropic", "state": {"thinking": blocks}}))
        );
        // Output tokens include the thinking; the API gives no separate count.
        assert_eq!(first.done.usage.completion_tokens, 70);
        assert_eq!(first.done.usage.reasoning_tokens, None);

        let mut next = reasoning_request(stream);
        next.prompt = Some("And at sunset?".into());
        next.messages = vec![
            Message::text(Role::User, "Why is the sky blue?"),
            Message::from_done(&first.done, first.text.clone()),
        ];
        run(&daemon, next).await;

        let requests = upstream.requests();
        let thinking = json!({"type": "enabled", "budget_tokens": 2048});
        assert_eq!(
            requests[2 * round].json(),
            json!({
                "model": "test-model",
                "messages": [{"role": "user", "content": "Why is the sky blue?"}],
                "max_tokens": MAX_TOKENS,
                "thinking": thinking,
                "stream": stream,
            })
        );
        let mut sent_back = blocks.as_array().unwrap().clone();
        sent_back.push(json!({"type": "text", "text": "Rayleigh scattering."}));
        assert_eq!(
            requests[2 * round + 1].json()["messages"],
            json!([
                {"role": "user", "content": "Why is the sky blue?"},
                {"role": "assistant", "content": sent_back},
                {"role": "user", "content": "And at sunset?"},
            ])
        );
    }
}

/// Answers as the Gemini API would: a final answer to a function response, JSON to a
/// response schema, a signed function call to a request with tools, thoughts and signed
/// text to a request with a thinking config.
fn gemini_api(r: &Recorded) -> Reply {
    let body = r.json();
    let last = last_turn(r, "contents", "parts");
    let answers_a_call = last
        .as_array()
        .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
    let config = &body["generationConfig"];
    if answers_a_call {
        gemini::answer(
            r,
            &[
                json!([{"text": "It is 18 degrees"}]),
                json!([{"text": " and sunny in Paris."}]),
            ],
            "STOP",
            (60, 12, 0),
        )
    } else if config.get("responseJsonSchema").is_some() {
        gemini::answer(
            r,
            &[
                json!([{"text": "{\"name\": \"Paris\","}]),
                json!([{"text": " \"population\": 2102650}"}]),
            ],
            "STOP",
            (15, 9, 0),
        )
    } else if body.get("tools").is_some() {
        gemini::answer(
            r,
            &[
                json!([{"text": "Let me check."}]),
                json!([gemini::signed(
                    gemini::function_call("get_weather", json!({"city": "Paris"})),
                    gemini::SIGNATURE
                )]),
            ],
            "STOP",
            (30, 20, 0),
        )
    } else {
        gemini::answer(
            r,
            &[
                json!([gemini::thought("The sky scatters blue light.")]),
                json!([{"text": "Rayleigh"}]),
                json!([gemini::signed(
                    json!({"text": " scattering."}),
                    gemini::SIGNATURE
                )]),
            ],
            "STOP",
            (12, 9, 61),
        )
    }
}

#[tokio::test]
async fn gemini_a_two_turn_tool_conversation_carries_the_call_and_its_result() {
    let upstream = Upstream::start(gemini_api).await;
    let daemon = Daemon::for_provider("gemini", &upstream.base_url, 0, "");
    for (round, stream) in [true, false].into_iter().enumerate() {
        let first = run(&daemon, ask(stream)).await;
        assert_eq!(first.done.finish_reason, FinishReason::ToolCalls);
        assert_eq!(first.text, "Let me check.");
        // Gemini gives no call ids: the daemon names the call after the request.
        let call = ToolCall {
            id: format!("call_{}_0", first.id),
            name: "get_weather".into(),
            arguments: "{\"city\":\"Paris\"}".into(),
        };
        assert_eq!(first.done.tool_calls, std::slice::from_ref(&call));
        if stream {
            assert_eq!(first.pieces.len(), 1, "a Gemini call arrives whole");
            assert_pieces_make(&first.pieces, &call);
        }

        let mut second = ask(stream);
        second
            .messages
            .push(Message::from_done(&first.done, first.text.clone()));
        second
            .messages
            .push(Message::tool_result(&call.id, "18 degrees and sunny"));
        let answer = run(&daemon, second).await;
        assert_eq!(answer.text, "It is 18 degrees and sunny in Paris.");
        assert_eq!(answer.done.finish_reason, FinishReason::Stop);

        let requests = upstream.requests();
        let tools = json!([{"functionDeclarations": [{
            "name": "get_weather",
            "description": "The weather in a city",
            "parametersJsonSchema": weather_schema(),
        }]}]);
        let first_request = &requests[2 * round];
        assert!(
            first_request.target.ends_with(if stream {
                ":streamGenerateContent?alt=sse"
            } else {
                ":generateContent"
            }),
            "{}",
            first_request.target
        );
        assert_eq!(
            first_request.json(),
            json!({
                "contents": [{"role": "user", "parts": [{"text": "What is the weather in Paris?"}]}],
                "tools": tools,
                "generationConfig": {"maxOutputTokens": MAX_TOKENS},
            })
        );
        assert_eq!(
            requests[2 * round + 1].json(),
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "What is the weather in Paris?"}]},
                    {"role": "model", "parts": [
                        {"text": "Let me check."},
                        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                         "thoughtSignature": gemini::SIGNATURE},
                    ]},
                    {"role": "user", "parts": [
                        {"functionResponse": {"name": "get_weather", "response": {"output": "18 degrees and sunny"}}},
                    ]},
                ],
                "tools": tools,
                "generationConfig": {"maxOutputTokens": MAX_TOKENS},
            })
        );
    }
}

#[tokio::test]
async fn gemini_a_json_schema_answer_is_the_text_and_parses() {
    let upstream = Upstream::start(gemini_api).await;
    let daemon = Daemon::for_provider("gemini", &upstream.base_url, 0, "");
    for (round, stream) in [true, false].into_iter().enumerate() {
        let seen = run(&daemon, json_request(stream)).await;
        let value: Value = serde_json::from_str(&seen.text).expect("the answer is JSON");
        assert_eq!(value, json!({"name": "Paris", "population": 2_102_650}));
        assert_eq!(
            upstream.requests()[round].json(),
            json!({
                "contents": [{"role": "user", "parts": [{"text": "Describe Paris"}]}],
                "generationConfig": {
                    "maxOutputTokens": MAX_TOKENS,
                    "responseMimeType": "application/json",
                    "responseJsonSchema": city_schema(),
                },
            })
        );
    }
}

#[tokio::test]
async fn gemini_thoughts_are_shown_counted_and_their_signature_returns_on_its_part() {
    let upstream = Upstream::start(gemini_api).await;
    let daemon = Daemon::for_provider("gemini", &upstream.base_url, 0, "");
    for (round, stream) in [true, false].into_iter().enumerate() {
        let first = run(&daemon, reasoning_request(stream)).await;
        assert_eq!(first.reasoning, "The sky scatters blue light.");
        assert_eq!(first.text, "Rayleigh scattering.");
        assert_eq!(
            first.done.provider_state,
            Some(json!({"type": "gemini", "state": {
                "thought_signatures": {"text": gemini::SIGNATURE}
            }}))
        );
        // thoughtsTokenCount is the reasoning, and completion counts it too.
        assert_eq!(first.done.usage.reasoning_tokens, Some(61));
        assert_eq!(first.done.usage.completion_tokens, 70);

        let mut next = reasoning_request(stream);
        next.prompt = Some("And at sunset?".into());
        next.messages = vec![
            Message::text(Role::User, "Why is the sky blue?"),
            Message::from_done(&first.done, first.text.clone()),
        ];
        run(&daemon, next).await;

        let requests = upstream.requests();
        let config = json!({
            "maxOutputTokens": MAX_TOKENS,
            "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": true},
        });
        assert_eq!(
            requests[2 * round].json(),
            json!({
                "contents": [{"role": "user", "parts": [{"text": "Why is the sky blue?"}]}],
                "generationConfig": config,
            })
        );
        assert_eq!(
            requests[2 * round + 1].json(),
            json!({
                "contents": [
                    {"role": "user", "parts": [{"text": "Why is the sky blue?"}]},
                    {"role": "model", "parts": [
                        {"text": "Rayleigh scattering.", "thoughtSignature": gemini::SIGNATURE},
                    ]},
                    {"role": "user", "parts": [{"text": "And at sunset?"}]},
                ],
                "generationConfig": config,
            })
        );
    }
}

fn cities() -> GenerateRequest {
    let mut request = ask(true);
    request.messages = vec![Message::text(Role::User, "Weather in Paris and Oslo?")];
    request
}

#[tokio::test]
async fn anthropic_parallel_calls_keep_order_and_ids_and_their_results_share_one_turn() {
    let upstream = Upstream::start(|r| {
        if r.json()["messages"].as_array().unwrap().len() > 1 {
            return anthropic::answer(r, &[Block::Text(&["Mild in both."])], "end_turn", (80, 4));
        }
        anthropic::answer(
            r,
            &[
                Block::Thinking(&["Two cities."]),
                Block::ToolUse {
                    id: "toolu_paris",
                    name: "get_weather",
                    partial_json: &["{\"city\": \"Pa", "ris\"}"],
                },
                Block::ToolUse {
                    id: "toolu_oslo",
                    name: "get_weather",
                    partial_json: &["{\"city\"", ": \"Oslo\"}"],
                },
            ],
            "tool_use",
            (30, 40),
        )
    })
    .await;
    let daemon = Daemon::for_provider("anthropic", &upstream.base_url, 0, "");
    let first = run(&daemon, cities()).await;
    let calls: Vec<(&str, &str)> = first
        .done
        .tool_calls
        .iter()
        .map(|c| (c.id.as_str(), c.arguments.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("toolu_paris", "{\"city\": \"Paris\"}"),
            ("toolu_oslo", "{\"city\": \"Oslo\"}")
        ]
    );
    // The content blocks were 1 and 2; the client sees calls 0 and 1.
    let indexes: Vec<u32> = first.pieces.iter().map(|p| p.index).collect();
    assert_eq!(indexes, [0, 0, 0, 1, 1, 1]);

    let mut second = cities();
    second
        .messages
        .push(Message::from_done(&first.done, first.text.clone()));
    second
        .messages
        .push(Message::tool_result("toolu_paris", "18C"));
    second.messages.push(Message {
        is_error: true,
        ..Message::tool_result("toolu_oslo", "the weather service is down")
    });
    assert_eq!(run(&daemon, second).await.text, "Mild in both.");
    assert_eq!(
        upstream.requests()[1].json()["messages"],
        json!([
            {"role": "user", "content": "Weather in Paris and Oslo?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Two cities.", "signature": anthropic::SIGNATURE},
                {"type": "tool_use", "id": "toolu_paris", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_oslo", "name": "get_weather", "input": {"city": "Oslo"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_paris", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_oslo",
                 "content": "the weather service is down", "is_error": true},
            ]},
        ])
    );
}

#[tokio::test]
async fn gemini_parallel_calls_keep_order_get_ids_and_their_results_share_one_turn() {
    let upstream = Upstream::start(|r| {
        if r.json()["contents"].as_array().unwrap().len() > 1 {
            return gemini::answer(r, &[json!([{"text": "Mild in both."}])], "STOP", (80, 4, 0));
        }
        // Parallel calls come in one chunk; only the first carries the signature.
        gemini::answer(
            r,
            &[json!([
                gemini::signed(
                    gemini::function_call("get_weather", json!({"city": "Paris"})),
                    gemini::SIGNATURE
                ),
                gemini::function_call("get_weather", json!({"city": "Oslo"})),
            ])],
            "STOP",
            (30, 40, 0),
        )
    })
    .await;
    let daemon = Daemon::for_provider("gemini", &upstream.base_url, 0, "");
    let first = run(&daemon, cities()).await;
    assert_eq!(first.done.finish_reason, FinishReason::ToolCalls);
    let calls: Vec<(String, &str)> = first
        .done
        .tool_calls
        .iter()
        .map(|c| (c.id.clone(), c.arguments.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            (format!("call_{}_0", first.id), "{\"city\":\"Paris\"}"),
            (format!("call_{}_1", first.id), "{\"city\":\"Oslo\"}")
        ]
    );

    let mut second = cities();
    second
        .messages
        .push(Message::from_done(&first.done, first.text.clone()));
    second
        .messages
        .push(Message::tool_result(&calls[0].0, "18C"));
    second.messages.push(Message {
        is_error: true,
        ..Message::tool_result(&calls[1].0, "the weather service is down")
    });
    assert_eq!(run(&daemon, second).await.text, "Mild in both.");
    assert_eq!(
        upstream.requests()[1].json()["contents"],
        json!([
            {"role": "user", "parts": [{"text": "Weather in Paris and Oslo?"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                 "thoughtSignature": gemini::SIGNATURE},
                {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}},
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": "18C"}}},
                {"functionResponse": {"name": "get_weather",
                                      "response": {"error": "the weather service is down"}}},
            ]},
        ])
    );
}
