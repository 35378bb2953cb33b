//! The upstream stream targets: `sse`, `ndjson` (the framers) and `provider_streams`
//! (each provider's decoder behind the real [`Pump`]).

use provd_client::Usage;

use super::pieces;
use crate::provider::ndjson::NdjsonSplitter;
use crate::provider::registry;
use crate::provider::sse::{SseError, SseEvent, SseParser, MAX_EVENT_BYTES};
use crate::provider::StreamEvent;

/// What an SSE parser made of a body: the events, then the first error or whether the
/// body ended inside an event.
type SseOutcome = (Vec<SseEvent>, Result<bool, SseError>);

fn parse_sse(pieces: &[&[u8]]) -> SseOutcome {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    for piece in pieces {
        if let Err(e) = parser.push(piece, &mut events) {
            return (events, Err(e));
        }
    }
    (events, Ok(parser.is_mid_event()))
}

/// The event stream interpretation of the WHATWG HTML specification, written for
/// clarity on a whole body: the oracle the incremental parser is compared with.
fn reference_sse(body: &[u8]) -> Vec<SseEvent> {
    let text = String::from_utf8_lossy(body);
    // "One leading U+FEFF BYTE ORDER MARK character must be ignored if any are present."
    let mut rest = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    let mut event: Option<String> = None;
    // A last line without its end is never processed: the stream ended inside it.
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        rest = &rest[end..];
        rest = rest
            .strip_prefix("\r\n")
            .or_else(|| rest.strip_prefix('\r'))
            .or_else(|| rest.strip_prefix('\n'))
            .expect("a line end");
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push(SseEvent {
                    event: event.take(),
                    data,
                });
            }
            event = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => data = Some(value.to_owned()),
            },
            "event" => event = Some(value.to_owned()),
            _ => {}
        }
    }
    events
}

/// An empty `event:` field and none both mean the default type, `message`.
fn normalized(mut events: Vec<SseEvent>) -> Vec<SseEvent> {
    for e in &mut events {
        if e.event.as_deref() == Some("") {
            e.event = None;
        }
    }
    events
}

/// `sse`: a body fed to [`SseParser`] whole, in pieces the input chooses, and one byte at
/// a time.
///
/// Invariants: nothing panics; all three give the same events and the same verdict on
/// whether the body ended inside an event; the events are those of the specification's
/// algorithm (`reference_sse` here); no event's data exceeds [`MAX_EVENT_BYTES`], and no
/// data or event name holds a CR, nor an event name an LF (they end lines).
pub fn check_sse(input: &[u8]) {
    let (pieces, body) = pieces(input);
    let whole = parse_sse(&[body]);
    assert_eq!(parse_sse(&pieces), whole, "fed in pieces");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(parse_sse(&bytes), whole, "fed byte by byte");
    let (events, end) = whole;
    for e in &events {
        assert!(e.data.len() <= MAX_EVENT_BYTES);
        assert!(!e.data.contains('\r'), "{e:?}");
        if let Some(name) = &e.event {
            assert!(!name.contains(['\r', '\n']), "{e:?}");
        }
    }
    if end.is_ok() {
        assert_eq!(
            normalized(events),
            normalized(reference_sse(body)),
            "the specification's algorithm disagrees"
        );
    }
}

/// What the splitter made of a body: its lines, the last one from `finish`, or the
/// first error.
fn split_ndjson(pieces: &[&[u8]]) -> Result<Vec<Vec<u8>>, String> {
    let mut splitter = NdjsonSplitter::new();
    let mut lines = Vec::new();
    for piece in pieces {
        splitter
            .push(piece, &mut lines)
            .map_err(|e| e.to_string())?;
    }
    lines.extend(splitter.finish());
    Ok(lines)
}

/// `ndjson`: a body fed to [`NdjsonSplitter`] whole, in pieces the input chooses, and one
/// byte at a time.
///
/// Invariants: nothing panics; all three give the same lines; they are the body cut at
/// each LF, without one CR before it, and the unterminated rest, blank lines dropped;
/// no line holds an LF.
pub fn check_ndjson(input: &[u8]) {
    let (pieces, body) = pieces(input);
    let whole = split_ndjson(&[body]);
    assert_eq!(split_ndjson(&pieces), whole, "fed in pieces");
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(split_ndjson(&bytes), whole, "fed byte by byte");
    let lines = whole.expect("short bodies fit in a line");
    let mut segments: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    // The last segment had no LF after it: it comes from `finish`, with any CR kept.
    let unterminated = segments.pop().unwrap_or_default();
    let reference: Vec<Vec<u8>> = segments
        .into_iter()
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .chain([unterminated])
        .filter(|line| line.iter().any(|b| !b.is_ascii_whitespace()))
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(lines, reference);
    for line in &lines {
        assert!(!line.contains(&b'\n'));
    }
}

/// The provider id the decoders are given; every error must name it.
const PROVIDER: &str = "fuzzed";

/// The stream decoder a `provider_streams` input names, and the rest of the input: the
/// input starts with the decoder's name (`"openai"`, [`registry::StreamDecoder::name`])
/// and a newline. `None` when its first line names no decoder of the provider table.
///
/// By name rather than by a byte modulo the number of decoders, so that a type added to
/// the table changes nothing the committed corpus means.
pub fn select_decoder(input: &[u8]) -> Option<(registry::StreamDecoder, &[u8])> {
    let end = input.iter().position(|&b| b == b'\n')?;
    let name = std::str::from_utf8(&input[..end]).ok()?;
    Some((registry::stream_decoder(name)?, &input[end + 1..]))
}

fn assert_usage(u: &Usage) {
    assert_eq!(
        u.total_tokens,
        u.prompt_tokens.saturating_add(u.completion_tokens),
        "{u:?}"
    );
}

/// `provider_streams`: the first line names a stream decoder of the provider table
/// ([`select_decoder`]; OpenAI, Anthropic and Gemini read SSE, Ollama NDJSON); the rest
/// is a response body, fed whole and in pieces the input chooses through the decoder and
/// the real `Pump` of `provider::http`. An input naming no decoder is skipped.
///
/// Invariants: nothing panics; both feedings give the same items; the stream never ends
/// silently (its last item is `Done` or an error) and nothing follows `Done` or an error;
/// text events are not empty; usage totals add up; every error names the provider.
pub fn check_provider_streams(input: &[u8]) {
    let Some((api, rest)) = select_decoder(input) else {
        return;
    };
    let (pieces, body) = pieces(rest);
    let items = (api.decode)(PROVIDER, &[body]);
    assert_eq!(
        (api.decode)(PROVIDER, &pieces),
        items,
        "{api:?} fed in pieces"
    );
    let (last, before) = items.split_last().expect("a stream never ends silently");
    assert!(
        matches!(last, Ok(StreamEvent::Done { .. }) | Err(_)),
        "{api:?}: the stream ended with {last:?}"
    );
    for item in before {
        assert!(
            matches!(
                item,
                Ok(StreamEvent::Text(_)
                    | StreamEvent::Usage(_)
                    | StreamEvent::Model(_)
                    | StreamEvent::ToolCall(_)
                    | StreamEvent::Reasoning(_)
                    | StreamEvent::ProviderState(_))
            ),
            "{api:?}: {item:?} before the end"
        );
    }
    for item in &items {
        match item {
            Ok(StreamEvent::Text(text))
            | Ok(StreamEvent::Model(text))
            | Ok(StreamEvent::Reasoning(text)) => {
                assert!(!text.is_empty())
            }
            Ok(StreamEvent::ToolCall(_) | StreamEvent::ProviderState(_)) => {}
            Ok(StreamEvent::Usage(usage)) | Ok(StreamEvent::Done { usage, .. }) => {
                assert_usage(usage)
            }
            Err(e) => assert!(e.message.starts_with(PROVIDER), "{api:?}: {e:?}"),
        }
    }
}
