//! An incremental parser for server-sent events (the `text/event-stream` format that the
//! Anthropic, OpenAI and Gemini streaming APIs use), following the WHATWG HTML
//! specification's event stream interpretation.
//!
//! Bytes are fed as they arrive, split anywhere: inside a UTF-8 character, between CR and
//! LF, inside a field name. Lines end with CRLF, LF or CR. Lines starting with `:` are
//! comments (keep-alive pings). `data:` lines accumulate, joined by LF. An empty line
//! dispatches the event; an event with no data is dropped, as the spec says. A byte order
//! mark at the very start of the stream is skipped, as the spec says too.
//!
//! Two departures from a browser:
//! - an event larger than [`MAX_EVENT_BYTES`] is an error rather than unbounded memory;
//! - at a *clean* end of the body ([`SseParser::finish`]: the chunked terminator read or
//!   the content length reached), a pending event is dispatched, and so is a last line
//!   without its line ending. The WHATWG rule discards both, but public SDK fixtures and
//!   some servers end their streams that way, and the whole answer did arrive. A body cut
//!   short (short of its content length, chunked framing without its terminator, a reset)
//!   is an error of the HTTP layer and never reaches `finish`, so truncation is still
//!   detected. A body delimited only by the connection's close cannot show truncation at
//!   all (HTTP/1.0 style, no length and no chunking): its end is taken as clean, and a
//!   provider's decoder still refuses a stream whose final event never came.

/// Cap on one event's accumulated data, and on one line. A well-behaved API sends events
/// of a few KiB; this only stops a broken or hostile upstream from exhausting memory.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// One dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` means the default type, `message`.
    pub event: Option<String>,
    /// The `data:` lines joined by LF.
    pub data: String,
}

/// Why the stream cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// An event or line exceeded [`MAX_EVENT_BYTES`].
    #[error("an event-stream event exceeds {MAX_EVENT_BYTES} bytes")]
    TooLarge,
}

/// The parser's state between reads.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: String,
    has_data: bool,
    event: Option<String>,
    /// The previous byte was a CR, so an LF right after it ends nothing new.
    after_cr: bool,
    /// A line has been processed: a byte order mark now is content, not a mark.
    past_first_line: bool,
}

/// U+FEFF in UTF-8. The spec ignores one at the start of the stream; kept, it would make
/// the first field name `\u{feff}data` and silently drop the first event.
const BYTE_ORDER_MARK: &[u8] = b"\xef\xbb\xbf";

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; complete events are appended to `out`.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        while !bytes.is_empty() {
            if self.after_cr && bytes[0] == b'\n' {
                bytes = &bytes[1..];
                self.after_cr = false;
                continue;
            }
            self.after_cr = false;
            // memchr scans many bytes per step; this loop sees every byte of a stream.
            match memchr::memchr2(b'\n', b'\r', bytes) {
                Some(end) => {
                    self.extend_line(&bytes[..end])?;
                    self.after_cr = bytes[end] == b'\r';
                    bytes = &bytes[end + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&line, out)?;
                    self.line = line;
                    self.line.clear();
                }
                None => {
                    self.extend_line(bytes)?;
                    bytes = &[];
                }
            }
        }
        Ok(())
    }

    /// Whether anything has been received since the last complete event, i.e. whether a
    /// stream ending now would cut an event short.
    pub fn is_mid_event(&self) -> bool {
        !self.line.is_empty() || self.has_data
    }

    /// The body ended cleanly: the pending event, if its data is not empty, with a last
    /// line that had no line ending processed first (see the module docs for why this
    /// departs from the WHATWG rule). The parser is at the start of a stream again.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            // A line is capped already; a field past the data cap is dropped with it.
            let _ = self.process_line(&line, &mut out);
        }
        if self.process_line(b"", &mut out).is_err() {
            return None;
        }
        *self = SseParser::new();
        out.pop()
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            return Err(SseError::TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let line = if self.past_first_line {
            line
        } else {
            self.past_first_line = true;
            line.strip_prefix(BYTE_ORDER_MARK).unwrap_or(line)
        };
        if line.is_empty() {
            if self.has_data {
                // The spec drops the data buffer's last LF: join, don't terminate.
                out.push(SseEvent {
                    event: self.event.take(),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.has_data = false;
            self.event = None;
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        // Lines are cut on CR/LF bytes only, which never occur inside a multi-byte UTF-8
        // sequence, so a complete line decodes on its own. Strict validation first: it
        // is several times faster than the lossy decoder on the valid lines an API
        // sends, and this runs for every line of every stream.
        let line = match std::str::from_utf8(line) {
            Ok(valid) => std::borrow::Cow::Borrowed(valid),
            Err(_) => String::from_utf8_lossy(line),
        };
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&line[..], ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > MAX_EVENT_BYTES {
                    return Err(SseError::TooLarge);
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            // `id` and `retry` serve browser reconnection, which an API stream never uses.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_whole(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(input, &mut out).unwrap();
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    /// A recorded-style stream with every feature the parser must handle.
    const STREAM: &str = ": keep-alive comment\r\n\
        event: message_start\r\n\
        data: {\"type\":\"message_start\"}\r\n\
        \r\n\
        event: ping\n\
        data: {\"type\": \"ping\"}\n\
        \n\
        data: first line\n\
        data: second line é✓😀\n\
        id: 7\n\
        retry: 100\n\
        \n\
        data:no-space\r\r\
        event: unknown_type\r\n\
        data: {\"x\":1}\r\n\r\n\
        event: empty\n\n\
        data: [DONE]\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            ev(Some("message_start"), "{\"type\":\"message_start\"}"),
            ev(Some("ping"), "{\"type\": \"ping\"}"),
            ev(None, "first line\nsecond line é✓😀"),
            ev(None, "no-space"),
            ev(Some("unknown_type"), "{\"x\":1}"),
            ev(None, "[DONE]"),
        ]
    }

    #[test]
    fn parses_every_line_ending_comments_and_multiline_data() {
        assert_eq!(parse_whole(STREAM.as_bytes()), expected());
    }

    #[test]
    fn split_at_every_position_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            let mut p = SseParser::new();
            let mut out = Vec::new();
            p.push(&bytes[..cut], &mut out).unwrap();
            p.push(&bytes[cut..], &mut out).unwrap();
            assert_eq!(out, expected(), "cut at {cut}");
        }
    }

    #[test]
    fn a_byte_order_mark_at_the_start_is_skipped_wherever_the_stream_is_cut() {
        // Found by the `sse` fuzz target: the mark made the first line's field name
        // "\u{feff}data", and the first event (OpenAI's first chunk, Anthropic's
        // message_start) was silently dropped.
        let stream = b"\xef\xbb\xbfdata: first\n\ndata: \xef\xbb\xbfsecond\n\n";
        let expected = vec![ev(None, "first"), ev(None, "\u{feff}second")];
        assert_eq!(parse_whole(stream), expected);
        for cut in 0..=stream.len() {
            let mut p = SseParser::new();
            let mut out = Vec::new();
            p.push(&stream[..cut], &mut out).unwrap();
            p.push(&stream[cut..], &mut out).unwrap();
            assert_eq!(out, expected, "cut at {cut}");
        }
        assert_eq!(
            parse_whole(b"\n\xef\xbb\xbfdata: x\n\n"),
            vec![],
            "only at the very start: later it is part of the field name"
        );
    }

    #[test]
    fn an_unterminated_event_is_reported_as_mid_event() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"data: {\"partial\"", &mut out).unwrap();
        assert!(out.is_empty());
        assert!(p.is_mid_event());
        p.push(b"\n", &mut out).unwrap();
        assert!(
            p.is_mid_event(),
            "data without the blank line is not dispatched"
        );
        p.push(b"\n", &mut out).unwrap();
        assert!(!p.is_mid_event());
        assert_eq!(out.len(), 1);
    }

    fn finished(input: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(input, &mut out).unwrap();
        out.extend(p.finish());
        out
    }

    #[test]
    fn a_clean_end_dispatches_a_pending_event_or_a_last_line_without_its_ending() {
        let want = vec![ev(None, "a"), ev(Some("last"), "{\"x\":1}\nmore")];
        assert_eq!(
            finished(b"data: a\n\nevent: last\ndata: {\"x\":1}\ndata: more\n"),
            want
        );
        assert_eq!(
            finished(b"data: a\n\nevent: last\ndata: {\"x\":1}\r\ndata: more"),
            want
        );
        assert_eq!(finished(b"data: [DONE]"), vec![ev(None, "[DONE]")]);
        assert_eq!(
            finished(b"data: a\n\nevent: x\n: comment"),
            vec![ev(None, "a")],
            "an event without data is still dropped"
        );
        assert_eq!(finished(b"data: a\n\n"), vec![ev(None, "a")]);
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.push(b"data: a", &mut out).unwrap();
        assert!(p.finish().is_some());
        assert!(!p.is_mid_event(), "finish leaves nothing pending");
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn a_huge_event_is_an_error_not_unbounded_memory() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let line = vec![b'a'; 1024 * 1024];
        let mut result = p.push(b"data: ", &mut out);
        while result.is_ok() && p.line.len() < MAX_EVENT_BYTES {
            result = p.push(&line, &mut out);
        }
        assert_eq!(result, Err(SseError::TooLarge));
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_events(cuts in proptest::collection::vec(0usize..STREAM.len(), 0..12)) {
            let bytes = STREAM.as_bytes();
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut p = SseParser::new();
            let mut out = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                p.push(&bytes[start..cut.max(start)], &mut out).unwrap();
                start = cut.max(start);
            }
            prop_assert_eq!(out, expected());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut p = SseParser::new();
            let mut out = Vec::new();
            let _ = p.push(&bytes, &mut out);
        }
    }
}
