//! The Ollama front door's codec against a client no one here wrote: the official
//! `ollama` Python client reads the answers provd's encoder writes (through its own
//! NDJSON loop, error handling and pydantic types), and provd's request decoders read
//! the requests that client sends (`tests/python/ollama_client_check.py`).
//!
//! Needs the client in the suite's Python (`PROVD_PYTHON`), installed from
//! `tests/python/requirements.txt`; without it the test says SKIPPED.

use std::process::Command;
use std::time::{Duration, SystemTime};

use provd::server::http::ollama::{
    error_body, error_line, parse_chat, parse_generate, preload_body, tags_body, Encoder,
    OllamaCall, Route,
};
use provd_client::{ErrorCode, FinishReason, ModelInfo, Usage};
use serde_json::{json, Value};

const TEXT: [&str; 3] = ["Hel", "lo, ", "world"];

fn at(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_760_742_847) + Duration::from_millis(ms)
}

fn answer(status: u16, content_type: &str, body: Vec<u8>) -> Value {
    json!({
        "status": status,
        "content_type": content_type,
        "body": String::from_utf8(body).expect("the encoder writes UTF-8"),
    })
}

/// One answer of the encoder for `route`, streamed or whole.
fn encoded(route: Route, stream: bool, reason: FinishReason) -> Value {
    let mut encoder = Encoder::new(route, "anthropic/claude", stream, at(0));
    let mut body = Vec::new();
    for (i, piece) in TEXT.iter().enumerate() {
        body.extend(
            encoder
                .text(piece, at(100 * (i as u64 + 1)))
                .unwrap_or_default(),
        );
    }
    body.extend(encoder.finish(Usage::new(12, 3), reason, at(1000)));
    answer(200, encoder.content_type(), body)
}

fn answers() -> Value {
    let (status, not_found) = error_body(ErrorCode::NotFound, "model 'missing' not found");
    let mut failing = Encoder::new(Route::Chat, "failing", true, at(0));
    let mut failing_body = failing.text("Hel", at(1)).unwrap();
    failing_body.extend(error_line("the upstream went away"));
    let models = [ModelInfo {
        id: "claude-sonnet-4-5".into(),
        provider: "anthropic".into(),
        display_name: None,
        context_window: Some(200_000),
        created_at: Some(1_760_742_847),
        ..ModelInfo::default()
    }];
    let json_answer = |value: Value| answer(200, "application/json", value.to_string().into());
    json!({
        "text": TEXT.concat(),
        "chat_stream": encoded(Route::Chat, true, FinishReason::Stop),
        "chat_whole": encoded(Route::Chat, false, FinishReason::Stop),
        "generate_stream": encoded(Route::Generate, true, FinishReason::Stop),
        "generate_whole": encoded(Route::Generate, false, FinishReason::Length),
        "chat_preload": json_answer(preload_body(Route::Chat, "ollama/llama3.2", false, at(0))),
        "generate_preload": json_answer(preload_body(Route::Generate, "ollama/llama3.2", false, at(0))),
        "tags": json_answer(tags_body(&models)),
        "missing": answer(status.as_u16(), "application/json", not_found.to_string().into()),
        "failing": answer(200, "application/x-ndjson", failing_body),
    })
}

/// Whether the suite's Python can import the `ollama` client.
fn python_with_ollama() -> Result<(), String> {
    let python = provd_tests::python();
    let shown = python.to_string_lossy().into_owned();
    match Command::new(&python).args(["-c", "import ollama"]).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(_) => Err(format!(
            "{shown} cannot import ollama (install tests/python/requirements.txt into \
             the suite's virtual environment: pip install --require-hashes -r \
             tests/python/requirements.txt)"
        )),
        Err(e) => Err(format!("{shown} cannot be run: {e}")),
    }
}

#[test]
fn the_official_ollama_client_reads_the_front_doors_answers_and_its_requests_parse() {
    if let Err(why) = python_with_ollama() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let answers_path = dir.path().join("answers.json");
    let requests_path = dir.path().join("requests.json");
    std::fs::write(&answers_path, answers().to_string()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/ollama_client_check.py");
    let out = Command::new(provd_tests::python())
        .arg(script)
        .arg(&answers_path)
        .arg(&requests_path)
        .output()
        .expect("run the suite's python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the ollama client checks failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.lines().any(|l| l == "8 passed, 0 failed"),
        "{stdout}"
    );

    // What the client sent, read by provd's decoders.
    let sent: Vec<Value> = serde_json::from_slice(&std::fs::read(&requests_path).unwrap()).unwrap();
    let mut generations = 0;
    for request in &sent {
        let body = request["body"].as_str().unwrap().as_bytes();
        let parsed = match request["path"].as_str().unwrap() {
            "/api/chat" => parse_chat(body),
            "/api/generate" => parse_generate(body),
            "/api/tags" => continue,
            other => panic!("the client asked for {other}"),
        };
        let call = parsed.unwrap_or_else(|e| panic!("{request}: {e}"));
        if let OllamaCall::Generate(r) = call {
            generations += 1;
            assert!(r.model.is_some_and(|m| !m.is_empty()), "{request}");
        }
    }
    // Two chats and a generate each streamed and whole, the failing and missing chats.
    assert_eq!(generations, 6, "{sent:?}");
    let first_chat = sent
        .iter()
        .find(|r| r["path"] == "/api/chat")
        .expect("a chat was sent");
    let OllamaCall::Generate(r) = parse_chat(first_chat["body"].as_str().unwrap().as_bytes())
        .expect("the client's chat parses")
    else {
        panic!("the first chat has messages");
    };
    assert_eq!(r.model.as_deref(), Some("anthropic/claude"));
    assert!(r.stream);
    assert_eq!(r.messages.len(), 2);
    assert_eq!(r.temperature, Some(0.2));
    assert_eq!(r.max_tokens, Some(64));
    assert_eq!(r.stop, ["END"]);
    assert_eq!(r.additional_params["seed"], json!(7));
}
