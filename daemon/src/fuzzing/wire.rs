//! The wire protocol's targets: `frame` (bytes from a hostile client) and
//! `message_roundtrip` (what the crate's own encoders produce parses back unchanged).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use arbitrary::{Arbitrary, Unstructured};
use provd_client::frame::{read_frame, validate, FrameError, HEADER_BYTES, MAX_DEPTH};
use provd_client::message::{
    self, CancelParams, Chunk, Empty, Envelope, GenerateDone, GenerateRequest, Hello, HelloResult,
    Keepalive, ListModelsParams, Message, ModelList, ProviderList, ReloadResult, Role,
    StatusResult,
};
use provd_client::{ErrorCode, FinishReason, Usage, WireError};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

/// The frame limit the `frame` target reads with: small, so that both sides of the
/// check are reached by short inputs.
pub const FUZZ_MAX_FRAME_BYTES: u32 = 64 * 1024;

/// Runs a future that never waits: reading from a byte slice is always ready.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("reading an in-memory frame waited"),
    }
}

/// `frame`: the bytes a client sends, read frame by frame as a connection does
/// (`read_frame` with a 64 KiB limit, then `validate`, `Envelope::parse` and the decode of
/// every payload type).
///
/// Invariants: nothing panics; a frame over the limit is refused after its 4-byte header,
/// with its payload unread and no buffer grown for it; an accepted frame consumed exactly
/// its header and payload; a payload `validate` accepts is exactly one MessagePack value
/// to `rmp_serde` too; a parsed envelope's params or result are themselves one valid
/// value; and every payload type that decodes re-encodes to a fixpoint (decode ∘ encode
/// changes nothing after the first round).
pub fn check_frame(input: &[u8]) {
    let mut reader = input;
    let mut buf = Vec::new();
    loop {
        let before = reader.len();
        let capacity = buf.capacity();
        let read = ready(read_frame(&mut reader, &mut buf, FUZZ_MAX_FRAME_BYTES));
        let consumed = before - reader.len();
        match read {
            Ok(None) => {
                assert_eq!(consumed, 0, "a clean end consumes nothing");
                assert!(reader.is_empty());
                return;
            }
            Ok(Some(())) => {
                assert!(!buf.is_empty() && buf.len() <= FUZZ_MAX_FRAME_BYTES as usize);
                assert_eq!(consumed, HEADER_BYTES + buf.len(), "header plus payload");
                check_payload(&buf);
            }
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(max, FUZZ_MAX_FRAME_BYTES);
                assert!(len > max);
                assert_eq!(
                    consumed, HEADER_BYTES,
                    "the payload of a refused frame is unread"
                );
                assert_eq!(
                    buf.capacity(),
                    capacity,
                    "no buffer grown for a refused frame"
                );
                return;
            }
            Err(e @ FrameError::Empty) => {
                assert!(e.framing_intact());
                assert_eq!(consumed, HEADER_BYTES);
            }
            Err(FrameError::Truncated { got, want }) => {
                assert!(got < want);
                assert!(reader.is_empty(), "a truncated frame ends the input");
                return;
            }
            Err(e) => panic!("read_frame over a byte slice failed with {e:?}"),
        }
    }
}

/// One frame payload, as the daemon's connection (and the client's reader) handle it.
fn check_payload(payload: &[u8]) {
    let validated = validate(payload, MAX_DEPTH);
    if let Err(e) = &validated {
        assert!(matches!(e, FrameError::Malformed(_)), "{e:?}");
        assert!(e.framing_intact());
        return;
    }
    assert_one_value(payload, "a payload validate accepts");
    let envelope = match Envelope::parse(payload) {
        Ok(envelope) => envelope,
        Err(e) => {
            assert!(matches!(e, FrameError::Invalid(_)), "{e:?}");
            return;
        }
    };
    let body = match envelope {
        Envelope::Request { params, .. } => params,
        Envelope::Notification { params, .. } => params,
        Envelope::Reply {
            outcome: Ok(result),
            ..
        } => result,
        Envelope::Reply {
            outcome: Err(e), ..
        } => {
            fixpoint::<WireError>(
                &rmp_serde::to_vec_named(&e).expect("a decoded WireError encodes"),
            );
            return;
        }
    };
    assert!(
        validate(body, MAX_DEPTH).is_ok(),
        "the params of a valid envelope are one valid value"
    );
    assert_one_value(body, "envelope params");
    decode_every_type(body);
}

/// `validate` and `rmp_serde` agree that `bytes` hold exactly one value.
fn assert_one_value(bytes: &[u8], what: &str) {
    let mut rest = bytes;
    let mut de = rmp_serde::Deserializer::new(&mut rest);
    if let Err(e) = IgnoredAny::deserialize(&mut de) {
        panic!("{what}: rmp_serde cannot read it: {e}");
    }
    assert!(
        rest.is_empty(),
        "{what}: rmp_serde left {} bytes",
        rest.len()
    );
}

/// Decodes `bytes` as every payload type; each that decodes must re-encode to a fixpoint.
fn decode_every_type(bytes: &[u8]) {
    fixpoint::<GenerateRequest>(bytes);
    fixpoint::<Hello>(bytes);
    fixpoint::<HelloResult>(bytes);
    fixpoint::<Empty>(bytes);
    fixpoint::<CancelParams>(bytes);
    fixpoint::<ListModelsParams>(bytes);
    fixpoint::<Chunk>(bytes);
    fixpoint::<Keepalive>(bytes);
    fixpoint::<GenerateDone>(bytes);
    fixpoint::<ModelList>(bytes);
    fixpoint::<ProviderList>(bytes);
    fixpoint::<StatusResult>(bytes);
    fixpoint::<ReloadResult>(bytes);
    fixpoint::<WireError>(bytes);
}

/// If `bytes` decode as `T`: encoding, decoding and encoding again gives the same bytes.
/// (Bytes, not values: a NaN temperature is not equal to itself.)
fn fixpoint<T: Serialize + DeserializeOwned>(bytes: &[u8]) {
    let Ok(first) = message::decode::<T>(bytes) else {
        return;
    };
    let once = rmp_serde::to_vec_named(&first).expect("a decoded value encodes");
    assert!(
        validate(&once, MAX_DEPTH).is_ok(),
        "an encoded value validates"
    );
    let second: T = message::decode(&once).expect("an encoded value decodes");
    let twice = rmp_serde::to_vec_named(&second).expect("a decoded value encodes");
    assert_eq!(once, twice, "decode ∘ encode is not a fixpoint");
}

/// A `generate` request the fuzzer builds field by field.
#[derive(Debug, Arbitrary)]
struct RequestCase {
    id: u32,
    method: String,
    provider: Option<String>,
    model: Option<String>,
    prompt: Option<String>,
    messages: Vec<(u8, String)>,
    system: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Vec<String>,
    stream: bool,
    additional_params: Vec<(String, JsonCase)>,
}

/// A JSON value for `additional_params`, nested as deep as the fuzzer likes.
#[derive(Debug, Arbitrary)]
enum JsonCase {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Array(Vec<JsonCase>),
    Object(Vec<(String, JsonCase)>),
}

impl JsonCase {
    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            JsonCase::Null => Value::Null,
            JsonCase::Bool(b) => Value::Bool(*b),
            JsonCase::Int(i) => Value::from(*i),
            JsonCase::Uint(u) => Value::from(*u),
            JsonCase::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            JsonCase::Str(s) => Value::String(s.clone()),
            JsonCase::Array(items) => Value::Array(items.iter().map(JsonCase::to_json).collect()),
            JsonCase::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// The other messages of a conversation: a chunk, an error reply and a done reply.
#[derive(Debug, Arbitrary)]
struct ReplyCase {
    id: u32,
    index: u32,
    text: String,
    model: String,
    created_at: u64,
    code: u8,
    message: String,
    retryable: bool,
    retry_after_ms: Option<u64>,
    chunks: Option<u32>,
    usage: Option<(u32, u32)>,
    finish: u8,
    done_text: Option<String>,
}

/// Nesting of a JSON value as `validate` counts it: each non-empty array or object is a
/// level (an empty one holds nothing, so it opens none).
fn nesting(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(items) if !items.is_empty() => {
            1 + items.iter().map(nesting).max().unwrap_or(0)
        }
        serde_json::Value::Object(fields) if !fields.is_empty() => {
            1 + fields.values().map(nesting).max().unwrap_or(0)
        }
        _ => 0,
    }
}

/// `message_roundtrip`: a `generate` request, a chunk notification, an error reply and a
/// done reply, built from the input by `arbitrary`, encoded with the crate's encoders,
/// framed, validated, parsed and decoded back.
///
/// Invariants: each comes back equal (floats compared by bits), with its id and method;
/// and `validate` refuses a request exactly when its `additional_params` nest deeper than
/// [`MAX_DEPTH`] allows, counting levels independently of `validate`.
pub fn check_message_roundtrip(input: &[u8]) {
    let mut u = Unstructured::new(input);
    let Ok(case) = RequestCase::arbitrary(&mut u) else {
        return;
    };
    let request = GenerateRequest {
        provider: case.provider,
        model: case.model,
        prompt: case.prompt,
        messages: case
            .messages
            .into_iter()
            .map(|(role, content)| {
                Message::text(
                    [Role::System, Role::User, Role::Assistant][usize::from(role % 3)],
                    content,
                )
            })
            .collect(),
        system: case.system,
        max_tokens: case.max_tokens,
        temperature: case.temperature,
        top_p: case.top_p,
        stop: case.stop,
        stream: case.stream,
        additional_params: case
            .additional_params
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect::<BTreeMap<_, _>>(),
        ..GenerateRequest::default()
    };
    let frame =
        message::encode_request(case.id, &case.method, &request).expect("a request always encodes");
    let payload = framed_payload(&frame);
    // Envelope, params map, the additional_params map (when it holds anything), then
    // the values inside it; the top-level value itself is the first level.
    let deepest = request
        .additional_params
        .values()
        .map(nesting)
        .max()
        .map_or(0, |n| n + 1);
    let levels = 2 + deepest;
    match validate(payload, MAX_DEPTH) {
        Ok(()) => assert!(levels < MAX_DEPTH, "validate accepted {levels} levels"),
        Err(e) => {
            assert!(levels >= MAX_DEPTH, "validate refused {levels} levels: {e}");
            assert!(e.to_string().contains("nesting deeper"), "{e}");
            return;
        }
    }
    let Envelope::Request { id, method, params } =
        Envelope::parse(payload).expect("an encoded request parses")
    else {
        panic!("an encoded request parsed as something else");
    };
    assert_eq!((id, method), (case.id, case.method.as_str()));
    let back: GenerateRequest = message::decode(params).expect("an encoded request decodes");
    assert_same_request(&back, &request);

    if let Ok(reply) = ReplyCase::arbitrary(&mut u) {
        check_replies(reply);
    }
}

fn framed_payload(frame: &[u8]) -> &[u8] {
    let (header, payload) = frame.split_at(HEADER_BYTES);
    assert_eq!(
        u32::from_be_bytes(header.try_into().expect("4 bytes")) as usize,
        payload.len(),
        "the length prefix matches the payload"
    );
    payload
}

fn assert_same_request(a: &GenerateRequest, b: &GenerateRequest) {
    let bits = |f: Option<f32>| f.map(f32::to_bits);
    assert_eq!(bits(a.temperature), bits(b.temperature));
    assert_eq!(bits(a.top_p), bits(b.top_p));
    let strip = |r: &GenerateRequest| GenerateRequest {
        temperature: None,
        top_p: None,
        ..r.clone()
    };
    assert_eq!(strip(a), strip(b));
}

fn check_replies(case: ReplyCase) {
    let chunk = Chunk {
        id: case.id,
        index: case.index,
        text: case.text,
        model: case.model.clone(),
        created_at: case.created_at,
        tool_call: None,
        reasoning: None,
    };
    let frame = message::encode_notification(message::notification::CHUNK, &chunk)
        .expect("a chunk always encodes");
    let payload = framed_payload(&frame);
    validate(payload, MAX_DEPTH).expect("an encoded chunk validates");
    let Ok(Envelope::Notification { method, params }) = Envelope::parse(payload) else {
        panic!("an encoded chunk did not parse as a notification");
    };
    assert_eq!(method, message::notification::CHUNK);
    assert_eq!(message::decode::<Chunk>(params).expect("decodes"), chunk);

    let error = WireError {
        code: ErrorCode::ALL[usize::from(case.code) % ErrorCode::ALL.len()],
        message: case.message,
        retryable: case.retryable,
        retry_after_ms: case.retry_after_ms,
        chunks: case.chunks,
        usage: case.usage.map(|(p, c)| Usage::new(p, c)),
    };
    let frame = message::encode_error(case.id, &error);
    let payload = framed_payload(&frame);
    validate(payload, MAX_DEPTH).expect("an encoded error validates");
    assert_eq!(
        Envelope::parse(payload).expect("an encoded error parses"),
        Envelope::Reply {
            id: case.id,
            outcome: Err(error)
        }
    );

    let done = GenerateDone {
        done: true,
        provider: case.model.clone(),
        model: case.model,
        usage: case
            .usage
            .map_or_else(Usage::default, |(p, c)| Usage::new(p, c)),
        finish_reason: [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::ContentFilter,
            FinishReason::ToolCalls,
            FinishReason::Other,
        ][usize::from(case.finish) % 5],
        chunks: case.index,
        text: case.done_text,
        tool_calls: Vec::new(),
        reasoning: None,
        provider_state: None,
    };
    let frame = message::encode_result(case.id, &done).expect("a done reply encodes");
    let payload = framed_payload(&frame);
    validate(payload, MAX_DEPTH).expect("an encoded result validates");
    let Ok(Envelope::Reply {
        id,
        outcome: Ok(result),
    }) = Envelope::parse(payload)
    else {
        panic!("an encoded result did not parse as a result");
    };
    assert_eq!(id, case.id);
    assert_eq!(
        message::decode::<GenerateDone>(result).expect("decodes"),
        done
    );
}
