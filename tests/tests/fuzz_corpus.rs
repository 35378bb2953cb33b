//! The fuzz corpus, replayed on stable Rust: every file under `fuzz/corpus/<target>/`
//! goes through the same invariant check its fuzz target runs (`provd::fuzzing`), so a
//! finding that was fixed stays fixed and the seeds keep meaning what they meant.
//!
//! The seeds themselves (files named `seed-*`) are written by
//! `regenerate_the_seed_corpus`, an ignored test: real frames from the client crate's
//! encoders, recorded-style streams from the mock provider APIs in `provd_tests::apis`,
//! the README's configuration, genuine and damaged credential files. Run it with
//! `cargo nextest run -p provd-tests --test fuzz_corpus --run-ignored only`, then let
//! `cargo fuzz cmin` keep the corpus small.

use std::path::{Path, PathBuf};

use provd::fuzzing::TARGETS;
use provd_client::message::{
    self, method, notification, CancelParams, Chunk, Empty, GenerateDone, GenerateRequest, Hello,
    Keepalive, ListModelsParams, Message, Role, PROTOCOL_VERSION,
};
use provd_client::{ErrorCode, FinishReason, Usage, WireError};
use provd_tests::apis::{anthropic, gemini, ollama, openai};
use serde_json::json;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

fn check(target: &str) -> provd::fuzzing::Check {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"))
        .1
}

/// Runs every file of one target's corpus through its check; a failing file is named.
fn replay(target: &str) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no corpus", dir.display());
    let check = check(target);
    for file in &files {
        let input = std::fs::read(file).expect("a corpus file");
        if let Err(panic) = std::panic::catch_unwind(|| check(&input)) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{target}: {} breaks an invariant: {why}", file.display());
        }
    }
    eprintln!("{target}: {} corpus files replayed", files.len());
}

#[test]
fn every_fuzz_target_has_a_corpus() {
    for (target, _) in TARGETS {
        assert!(
            corpus_dir(target).is_dir(),
            "fuzz/corpus/{target} is missing"
        );
    }
}

#[test]
fn frame_corpus_keeps_its_invariants() {
    replay("frame");
}

#[test]
fn message_roundtrip_corpus_keeps_its_invariants() {
    replay("message_roundtrip");
}

#[test]
fn sse_corpus_keeps_its_invariants() {
    replay("sse");
}

#[test]
fn ndjson_corpus_keeps_its_invariants() {
    replay("ndjson");
}

#[test]
fn provider_streams_corpus_keeps_its_invariants() {
    replay("provider_streams");
}

/// The `provider_streams` corpus once chose its decoder by its first byte modulo 4, in
/// this order; `fuzz/migrations/provider_streams_by_name.py` rewrote it to name the
/// decoder instead, listing each file with its old first byte and the decoder chosen.
const OLD_DECODER_ORDER: [&str; 4] = ["openai", "anthropic", "gemini", "ollama"];

#[test]
fn every_migrated_provider_streams_input_reaches_the_decoder_it_reached_before() {
    let list = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/migrations/provider_streams_by_name.tsv");
    let list = std::fs::read_to_string(&list).expect("the migration's list");
    let mut migrated = 0;
    for line in list.lines().filter(|l| !l.starts_with('#')) {
        let fields: Vec<&str> = line.split('\t').collect();
        let [file, old_byte, decoder] = fields[..] else {
            panic!("a malformed line: {line:?}");
        };
        let old_byte: u8 = old_byte.parse().expect("a byte");
        assert_eq!(
            OLD_DECODER_ORDER[usize::from(old_byte % 4)],
            decoder,
            "{file}: the list disagrees with the old rule"
        );
        let input = std::fs::read(corpus_dir("provider_streams").join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let (chosen, rest) =
            provd::fuzzing::select_decoder(&input).unwrap_or_else(|| panic!("{file}: no decoder"));
        assert_eq!(chosen.name, decoder, "{file}");
        // The pieces header and body that followed the old first byte.
        assert_eq!(
            &input[..input.len() - rest.len()],
            format!("{decoder}\n").as_bytes()
        );
        migrated += 1;
    }
    assert_eq!(migrated, 500, "every input of the old corpus is listed");
}

#[test]
fn config_corpus_keeps_its_invariants() {
    replay("config");
}

#[test]
fn credential_file_corpus_keeps_its_invariants() {
    replay("credential_file");
}

// ---- the seeds ----

/// Writes `fuzz/corpus/<target>/seed-<name>`.
fn seed(target: &str, name: &str, bytes: &[u8]) {
    let dir = corpus_dir(target);
    std::fs::create_dir_all(&dir).expect("the corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("a seed file");
}

/// The start of a `provider_streams` input that chooses `decoder`.
fn named(decoder: &str) -> Vec<u8> {
    format!("{decoder}\n").into_bytes()
}

/// A body fed whole (no piece sizes), for the stream targets.
fn whole(body: &[u8]) -> Vec<u8> {
    let mut input = vec![0u8];
    input.extend_from_slice(body);
    input
}

/// A body fed in pieces of these sizes.
fn in_pieces(sizes: &[u8], body: &[u8]) -> Vec<u8> {
    let mut input = vec![sizes.len() as u8];
    input.extend_from_slice(sizes);
    input.extend_from_slice(body);
    input
}

fn frame_seeds() {
    let mut generate = GenerateRequest::prompt("Say hi");
    generate.provider = Some("mock".into());
    generate.model = Some("mock-1".into());
    generate.system = Some("Be brief.".into());
    generate.messages = vec![
        Message::text(Role::User, "Hello"),
        Message::text(Role::Assistant, "Hi there"),
    ];
    generate.max_tokens = Some(64);
    generate.temperature = Some(0.7);
    generate.top_p = Some(0.9);
    generate.stop = vec!["\n\n".into()];
    generate.additional_params.insert(
        "mock".into(),
        json!({"chunks": 3, "text": "one two three", "nested": {"a": [1, 2.5, null, true]}}),
    );
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        client: "seed".into(),
        token: None,
    };
    let requests = [
        ("hello", message::encode_request(0, method::HELLO, &hello)),
        ("ping", message::encode_request(1, method::PING, &Empty {})),
        (
            "generate",
            message::encode_request(2, method::GENERATE, &generate),
        ),
        (
            "generate-prompt",
            message::encode_request(3, method::GENERATE, &GenerateRequest::prompt("x")),
        ),
        (
            "cancel",
            message::encode_request(4, method::CANCEL, &CancelParams { id: 2 }),
        ),
        (
            "list-models",
            message::encode_request(
                5,
                method::LIST_MODELS,
                &ListModelsParams {
                    provider: Some("mock".into()),
                },
            ),
        ),
        (
            "status",
            message::encode_request(6, method::STATUS, &Empty {}),
        ),
        (
            "reload",
            message::encode_request(7, method::RELOAD, &Empty {}),
        ),
        (
            "chunk",
            message::encode_notification(
                notification::CHUNK,
                &Chunk {
                    id: 2,
                    index: 0,
                    text: "Hi".into(),
                    model: "mock-1".into(),
                    created_at: 1_700_000_000_000,
                    tool_call: None,
                    reasoning: None,
                },
            ),
        ),
        (
            "keepalive",
            message::encode_notification(notification::KEEPALIVE, &Keepalive { id: 2 }),
        ),
        (
            "done",
            message::encode_result(
                2,
                &GenerateDone {
                    done: true,
                    provider: "mock".into(),
                    model: "mock-1".into(),
                    usage: Usage::new(3, 2),
                    finish_reason: FinishReason::Stop,
                    chunks: 2,
                    text: None,
                    ..GenerateDone::default()
                },
            ),
        ),
    ];
    let mut conversation = Vec::new();
    for (name, frame) in requests {
        let frame = frame.expect("a seed frame encodes");
        seed("frame", name, &frame);
        conversation.extend_from_slice(&frame);
    }
    seed("frame", "conversation", &conversation);
    let mut error = WireError::new(ErrorCode::RateLimited, "slow down");
    error.retry_after_ms = Some(1500);
    error.chunks = Some(3);
    error.usage = Some(Usage::new(3, 2));
    seed("frame", "error-reply", &message::encode_error(9, &error));
    let framed = |payload: &[u8]| {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    };
    seed("frame", "oversized", &[0x7f, 0xff, 0xff, 0xff, 0x94, 0x00]);
    seed(
        "frame",
        "just-over-the-limit",
        &[0x00, 0x01, 0x00, 0x01, 0x94],
    );
    seed("frame", "empty-frame", &[0, 0, 0, 0, 0, 0, 0, 1, 0xc0]);
    seed("frame", "truncated", &[0, 0, 0, 50, 0x94, 0x00]);
    seed("frame", "cut-header", &[0, 0]);
    let mut deep = vec![0x91u8; 40];
    deep.push(0xc0);
    seed("frame", "deep-nesting", &framed(&deep));
    seed(
        "frame",
        "forged-array32",
        &framed(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0]),
    );
    seed(
        "frame",
        "ext-and-bin",
        &framed(&[
            0x94, 0x00, 0x01, 0xa4, b'p', b'i', b'n', b'g', 0x82, 0xc4, 0x01, 0x00, 0xd4, 0x01,
            0x02, 0xc7, 0x00, 0x05, 0xc0,
        ]),
    );
    seed(
        "frame",
        "http-request",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    seed(
        "frame",
        "wrong-types",
        &framed(
            &rmp_serde::to_vec_named(&(
                0u8,
                3u32,
                "generate",
                json!({"prompt": 5, "max_tokens": "many"}),
            ))
            .unwrap(),
        ),
    );
}

fn message_roundtrip_seeds() {
    // Raw bytes for `arbitrary` to build requests from: lengths, ids, text, floats.
    seed("message_roundtrip", "zeros", &[0u8; 64]);
    seed("message_roundtrip", "ones", &[0xffu8; 64]);
    seed(
        "message_roundtrip",
        "text",
        b"\x07\x00\x00\x00generate\x01\x04mock\x01\x06mock-1\x01\x0bSay hello!\x02\x01\x05Hello\x00\x03Hi!",
    );
    let counting: Vec<u8> = (0..=255u8).collect();
    seed("message_roundtrip", "counting", &counting);
}

fn stream_bodies() -> Vec<(&'static str, &'static str, String)> {
    // (name, stream decoder by its name in the provider table, body)
    let mut out = vec![
        (
            "openai",
            "openai",
            openai::stream_text("gpt-test", &["Hel", "lo, ", "wörld 😀"], "stop", (9, 3)),
        ),
        (
            "openai-length",
            "openai",
            openai::stream_text("gpt-test", &["cut"], "length", (1, 1)),
        ),
        (
            "openai-tool-calls",
            "openai",
            openai::chunk_event("gpt-test", json!({"tool_calls": [{"index": 0}]}), Some("tool_calls"))
                + "data: [DONE]\n\n",
        ),
        (
            "openai-parallel-tool-calls",
            "openai",
            openai::stream_tool_calls(
                "gpt-test",
                &[("call_1", "f", "{\"a\":\"é\"}"), ("call_2", "g", "{}")],
                (3, 4),
            ),
        ),
        (
            "openai-reasoning-content",
            "openai",
            openai::stream_reasoning("gpt-test", &["hmm ", "so"], &["ok"], (3, 9, 5)),
        ),
        (
            "openai-error",
            "openai",
            openai::chunk_event("gpt-test", json!({"content": "Hi"}), None)
                + "data: {\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\",\"param\":null,\"code\":null}}\n\n",
        ),
        (
            "anthropic",
            "anthropic",
            anthropic::stream_text("claude-test", &["Hel", "lo ✓"], "end_turn", (12, 4)),
        ),
        (
            "anthropic-thinking-and-tools",
            "anthropic",
            anthropic::message_start("claude-test", 5)
                + &anthropic::thinking_block(0, &["hmm"])
                + &anthropic::redacted_thinking_block(1)
                + &anthropic::text_block(2, &["ok"])
                + &anthropic::tool_use_block(3, "search", &["{\"q\":", "\"x\"}"])
                + &anthropic::message_delta("tool_use", 7)
                + &anthropic::message_stop(),
        ),
        (
            "anthropic-error",
            "anthropic",
            anthropic::message_start("claude-test", 5)
                + "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        ),
        (
            "gemini",
            "gemini",
            gemini::stream_text("gemini-test", &["Hi", " there"], "STOP", (4, 2, 1)),
        ),
        (
            "gemini-blocked",
            "gemini",
            gemini::event(&gemini::blocked("SAFETY", 4)),
        ),
        (
            "gemini-function-call",
            "gemini",
            gemini::chunk(
                "gemini-test",
                json!([{"functionCall": {"name": "f", "args": {}}}, {"text": "x", "thought": true}]),
                Some("STOP"),
                (1, 1, 0),
            ),
        ),
        (
            "gemini-error-retry-info",
            "gemini",
            gemini::event(&json!({"error": gemini::status(503, "UNAVAILABLE", "busy", gemini::quota_details("3s"))})),
        ),
        (
            // Regression: a RetryInfo delay too large for a Duration used to panic.
            "gemini-error-huge-retry-delay",
            "gemini",
            gemini::event(&json!({"error": gemini::status(503, "UNAVAILABLE", "busy", gemini::quota_details("1e30s"))})),
        ),
        (
            "ollama",
            "ollama",
            ollama::stream_text("llama-test", &["Hé", "llo 😀"], "stop", (10, 2)),
        ),
        (
            "ollama-tools-and-thinking",
            "ollama",
            ollama::thinking_line("llama-test", "hmm")
                + &ollama::tool_call_line("llama-test", "f", json!({"a": 1}))
                + &ollama::done_line("llama-test", "stop", (1, 1)),
        ),
        (
            "ollama-error",
            "ollama",
            ollama::chunk_line("llama-test", "Hi") + "{\"error\":\"model crashed\"}\n",
        ),
        (
            "ollama-no-final-newline",
            "ollama",
            ollama::chunk_line("llama-test", "Hi") + ollama::done_line("llama-test", "length", (1, 1)).trim_end(),
        ),
    ];
    out.push((
        "crlf-and-comments",
        "anthropic",
        ": keep-alive\r\nevent: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\ndata:no-space\r\r\
         event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
            .to_owned(),
    ));
    out
}

fn stream_seeds() {
    for (name, decoder, body) in stream_bodies() {
        let body = body.as_bytes();
        let mut input = named(decoder);
        input.extend(whole(body));
        seed("provider_streams", name, &input);
        let mut input = named(decoder);
        input.extend(in_pieces(&[1, 7, 0, 64], body));
        seed("provider_streams", &format!("{name}-pieces"), &input);
        let target = if decoder == "ollama" { "ndjson" } else { "sse" };
        seed(target, name, &whole(body));
        seed(
            target,
            &format!("{name}-pieces"),
            &in_pieces(&[3, 1, 0, 200], body),
        );
    }
    seed(
        "sse",
        "every-line-ending",
        &whole(
            b": comment\r\nevent: a\r\ndata: 1\r\n\r\nevent: b\ndata: x\ndata: y\nid: 7\nretry: 9\n\n\
              data:z\r\revent\r\ndata\r\n\r\nfield-without-colon\n\ndata: cut",
        ),
    );
    seed(
        "ndjson",
        "blank-and-cr-lines",
        &whole(b"{\"a\":1}\r\n\r\n   \n\t\n{\"b\":2}\r\r\n{\"c\":3}"),
    );
}

fn config_seeds() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("the README");
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's configuration example");
    seed("config", "readme", example.as_bytes());
    seed(
        "config",
        "embedded-default",
        provd::config::EMBEDDED_DEFAULT.as_bytes(),
    );
    // Every type of the provider table that calls an HTTP API (all but the mock).
    let http_types = provd::provider::registry::TYPES
        .iter()
        .filter(|t| t.stream.is_some());
    for kind in http_types.map(|t| t.name()) {
        seed(
            "config",
            kind,
            provd_tests::apis::provider_config(
                kind,
                "http://127.0.0.1:9/v1",
                2,
                "total_timeout_seconds = 60\nconnect_timeout_seconds = 5\n",
            )
            .as_bytes(),
        );
    }
    seed(
        "config",
        "aliases-and-fallbacks",
        b"[daemon]\ndefault_provider = \"a\"\nmax_connections = 10\nkeepalive_interval_ms = 0\n\
          [providers.a]\ntype = \"mock\"\nfallbacks = [\"b/big\", \"c\"]\n\
          [providers.a.options]\ntext = \"x y\"\nchunks = 2\nfault = \"mid_stream\"\nfault_code = \"rate_limited\"\n\
          [providers.b]\ntype = \"anthropic\"\n[providers.b.options]\nanthropic_version = \"2023-06-01\"\nanthropic_beta = [\"b-1\"]\n\
          [providers.c]\ntype = \"ollama\"\nheaders = { \"X-A\" = \"1\" }\n\
          [aliases]\nfast = [\"c/small\", \"b\"]\n",
    );
    seed(
        "config",
        "broken",
        b"[daemon]\nmax_frame_bytes = 12\n[providers.a]\ntype = \"mock\"\ntimeout_seconds = 0\n",
    );
}

fn credential_seeds() {
    seed("credential_file", "genuine", &[1]);
    seed("credential_file", "flip-salt-byte", &[1, 0, 20, 0xff]);
    seed("credential_file", "flip-key-id", &[1, 0, 12, 0x01]);
    seed("credential_file", "flip-tag", &[1, 0, 255, 0x80]);
    seed("credential_file", "cut-in-half", &[1, 1, 128, 0]);
    seed("credential_file", "trailing-byte", &[1, 2, 255, 0x41]);
    seed("credential_file", "remove-version", &[1, 3, 8, 0]);
    seed("credential_file", "empty-file", &[0]);
    seed("credential_file", "magic-only", b"\x00PRVDCRED");
    seed("credential_file", "version-2", b"\x00PRVDCRED\x02\x01");
    let mut header = b"\x00PRVDCRED\x01\x01".to_vec();
    header.extend_from_slice(&[0xab; 8 + 32 + 12]);
    header.extend_from_slice(&40u32.to_be_bytes());
    header.extend_from_slice(&[0x5a; 40]);
    seed("credential_file", "forged-under-another-key", &header);
}

#[test]
#[ignore = "writes the seed corpus into fuzz/corpus; run by hand"]
fn regenerate_the_seed_corpus() {
    frame_seeds();
    message_roundtrip_seeds();
    stream_seeds();
    config_seeds();
    credential_seeds();
}
