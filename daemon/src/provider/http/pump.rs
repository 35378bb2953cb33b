//! The stream pump: body pieces in, [`StreamEvent`]s out, through a [`Framer`] (SSE or
//! NDJSON) and an API's [`Decoder`].
//!
//! How a body ends matters: a clean end (chunked terminator, content length reached)
//! lets the framer hand over a last unit that had no terminator; a body cut short is an
//! error from the HTTP library, never a clean end, so truncation stays detectable. After
//! the final event the rest of the body is drained off the client's path, so that the
//! connection is reused; a stream dropped before it (a cancel) drops its connection.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{stream, StreamExt};

use super::errors::malformed;
use super::transport::BodyStream;
use crate::provider::ndjson::NdjsonSplitter;
use crate::provider::sse::{SseEvent, SseParser};
use crate::provider::{EventStream, ProviderError, StreamEvent};
use crate::scrub::Scrubber;

/// Most of a body read after its final event to give the connection back to the pool;
/// a longer rest is not worth the reading, and the connection is dropped.
pub const DRAIN_BYTES: usize = 64 * 1024;
/// Longest wait for the rest of a body after its final event.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The events of a streamed `body` as `pump` decodes them, error events scrubbed of
/// `own_key` (and every key the daemon holds): see [`super::Transport::event_stream`].
pub(super) fn events<F, D>(body: BodyStream, pump: Pump<F, D>, own_key: Scrubber) -> EventStream
where
    F: Framer,
    D: Decoder<Unit = F::Unit>,
{
    let reader = Reader {
        body: Some(body),
        pump,
        own_key,
    };
    Box::pin(stream::unfold(reader, |mut reader| async move {
        let item = reader.next_item().await?;
        Some((item, reader))
    }))
}

/// The state of [`events`]: the body, the pump it feeds, and the key to scrub from error
/// events. Dropped after the final event, it drains the body.
struct Reader<F, D> {
    /// `None` once the body ended or failed: nothing is left to read or drain.
    body: Option<BodyStream>,
    pump: Pump<F, D>,
    own_key: Scrubber,
}

impl<F, D> Reader<F, D>
where
    F: Framer,
    D: Decoder<Unit = F::Unit>,
{
    async fn next_item(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        loop {
            if let Some(item) = self.pump.next_item() {
                // An error event is scrubbed as the decoder made it from a whole event
                // or line, never piece by piece; text passes untouched.
                return Some(item.map_err(|mut e| {
                    crate::scrub::scrub_in_place(&mut e.message, &self.own_key);
                    e
                }));
            }
            if self.pump.is_finished() {
                return None;
            }
            let body = self.body.as_mut()?;
            match body.next().await {
                Some(Ok(bytes)) => self.pump.feed(&bytes),
                Some(Err(e)) => {
                    self.body = None;
                    self.pump.fail(e);
                }
                None => {
                    self.body = None;
                    body_ended(&self.pump.provider);
                    self.pump.end();
                }
            }
        }
    }
}

impl<F, D> Drop for Reader<F, D> {
    fn drop(&mut self) {
        if !self.pump.saw_done {
            // Cancelled or failed: dropping the body drops the connection.
            return;
        }
        let (Some(body), Ok(runtime)) = (self.body.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(drain(self.pump.provider.clone(), body));
    }
}

/// Streamed bodies read to their end since the daemon started: numbered in the log line
/// that says so, which is how tests wait for a connection to be back in the pool.
static ENDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Reads the rest of a body whose final event was decoded, within [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`]; reaching its end returns the connection to the pool, giving up
/// drops it.
async fn drain(provider: String, mut body: BodyStream) {
    let ended = tokio::time::timeout(DRAIN_TIME, async move {
        let mut read = 0;
        loop {
            match body.next().await {
                None => return true,
                Some(Ok(piece)) => {
                    read += piece.len();
                    if read > DRAIN_BYTES {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
            }
        }
    })
    .await;
    if ended == Ok(true) {
        body_ended(&provider);
    } else {
        let provider = crate::untrusted::untrusted(&provider);
        tracing::debug!(%provider, "the rest of a streamed body exceeds {DRAIN_BYTES} bytes or {DRAIN_TIME:?}: its connection is dropped");
    }
}

/// Counts and logs a streamed body read to its clean end, drained or not.
fn body_ended(provider: &str) {
    let n = ENDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let provider = crate::untrusted::untrusted(provider);
    tracing::debug!(%provider, "streamed body #{n} read to its end: its connection returns to the pool");
}

/// Cuts a byte stream into units: SSE events or NDJSON lines.
pub trait Framer: Send + 'static {
    /// What comes out.
    type Unit: Send;
    /// Feeds bytes; complete units go to `out`.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Self::Unit>) -> Result<(), String>;
    /// The stream ended; a last unit, if the format allows one without a terminator.
    fn finish(&mut self) -> Option<Self::Unit>;
}

impl Framer for SseParser {
    type Unit = SseEvent;
    fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        SseParser::push(self, bytes, out).map_err(|e| e.to_string())
    }
    fn finish(&mut self) -> Option<SseEvent> {
        // Only a clean end of body gets here (a cut-short body is an error of the HTTP
        // layer), so a pending complete event is the server's last word, not a fragment:
        // see `sse`'s module docs for this departure from the WHATWG rule.
        SseParser::finish(self)
    }
}

impl Framer for NdjsonSplitter {
    type Unit = Vec<u8>;
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), String> {
        NdjsonSplitter::push(self, bytes, out).map_err(|e| e.to_string())
    }
    fn finish(&mut self) -> Option<Vec<u8>> {
        NdjsonSplitter::finish(self)
    }
}

/// A provider's reading of its stream format: each unit becomes zero or more events, and
/// the end of the body is checked (a stream that ends without its final event is an
/// error, never a silent success).
pub trait Decoder: Send + 'static {
    /// The framer's unit.
    type Unit;
    /// Decodes one unit. Returning [`StreamEvent::Done`] ends the stream.
    fn unit(&mut self, unit: Self::Unit, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError>;
    /// The body ended without `Done`: the error to report.
    fn ended_early(&mut self) -> ProviderError;
    /// The body ended cleanly without `Done` having been decoded. A format with a final
    /// event (the default) reports [`Decoder::ended_early`]; a format whose end *is* the
    /// end of the body (Gemini sends no final event) pushes its `Done` here instead.
    fn ended(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let _ = out;
        Err(self.ended_early())
    }
}

/// The synchronous heart of [`super::Transport::event_stream`]: body pieces in, events out.
///
/// It owns the rules every provider stream obeys, whatever its wire format: units are
/// decoded in order; nothing follows [`StreamEvent::Done`] or an error; a body that ends
/// without `Done` is checked by [`Decoder::ended`], so the stream never ends silently.
/// Kept apart from the HTTP body so that the fuzz targets and their corpus replay drive
/// exactly this code with arbitrary bytes.
pub(crate) struct Pump<F, D> {
    provider: String,
    framer: F,
    decoder: D,
    pending: VecDeque<Result<StreamEvent, ProviderError>>,
    finished: bool,
    /// The final event was decoded: the rest of the body may be drained for reuse.
    saw_done: bool,
}

impl<F, D> Pump<F, D>
where
    F: Framer,
    D: Decoder<Unit = F::Unit>,
{
    /// A pump at the start of a body.
    pub(crate) fn new(provider: &str, framer: F, decoder: D) -> Self {
        Pump {
            provider: provider.to_owned(),
            framer,
            decoder,
            pending: VecDeque::new(),
            finished: false,
            saw_done: false,
        }
    }

    /// Whether the stream's last item is already queued: read no more of the body.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next queued item.
    pub(crate) fn next_item(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        self.pending.pop_front()
    }

    /// Feeds one piece of the body. Ignored once finished.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.finished {
            return;
        }
        let mut units = Vec::new();
        let framed = self.framer.push(bytes, &mut units);
        // Units completed before a framing error are decoded first, so that where the
        // body happens to be cut into pieces changes nothing.
        self.decode(units);
        if let Err(e) = framed {
            self.fail(malformed(&self.provider, e));
        }
    }

    /// The body failed (a reset, the idle timeout): the error ends the stream.
    pub(crate) fn fail(&mut self, error: ProviderError) {
        if !self.finished {
            self.finished = true;
            self.pending.push_back(Err(error));
        }
    }

    /// The body ended cleanly: the framer's last unit, then the decoder's verdict on a
    /// stream without `Done`.
    pub(crate) fn end(&mut self) {
        if self.finished {
            return;
        }
        let last: Vec<F::Unit> = self.framer.finish().into_iter().collect();
        self.decode(last);
        if self.finished {
            return;
        }
        self.finished = true;
        let mut events = Vec::new();
        let ended = self.decoder.ended(&mut events);
        self.pending.extend(events.into_iter().map(Ok));
        if let Err(e) = ended {
            self.pending.push_back(Err(e));
        }
    }

    fn decode(&mut self, units: Vec<F::Unit>) {
        let mut events = Vec::new();
        for unit in units {
            if self.finished {
                break;
            }
            if let Err(e) = self.decoder.unit(unit, &mut events) {
                self.finished = true;
                self.pending.extend(events.drain(..).map(Ok));
                self.pending.push_back(Err(e));
                return;
            }
            if events.iter().any(|e| matches!(e, StreamEvent::Done { .. })) {
                // Nothing after the final event matters: the stream closes as soon as
                // its end is known, and the rest of the body is drained off its path.
                self.finished = true;
                self.saw_done = true;
            }
        }
        self.pending.extend(events.into_iter().map(Ok));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provd_client::ErrorCode;

    /// Splits on `;`; a `!` is a framing error after the units before it.
    struct Semicolons(Vec<u8>);

    impl Framer for Semicolons {
        type Unit = String;
        fn push(&mut self, bytes: &[u8], out: &mut Vec<String>) -> Result<(), String> {
            for &b in bytes {
                match b {
                    b'!' => return Err("bang".into()),
                    b';' => out.push(String::from_utf8(std::mem::take(&mut self.0)).unwrap()),
                    _ => self.0.push(b),
                }
            }
            Ok(())
        }
        fn finish(&mut self) -> Option<String> {
            None
        }
    }

    /// `done` ends the stream, `fail` is an error, anything else is text.
    struct Words;

    impl Decoder for Words {
        type Unit = String;
        fn unit(&mut self, unit: String, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
            match unit.as_str() {
                "done" => out.push(StreamEvent::Done {
                    usage: provd_client::Usage::default(),
                    finish_reason: provd_client::FinishReason::Stop,
                }),
                "fail" => return Err(ProviderError::new(ErrorCode::UpstreamError, "p: fail")),
                _ => out.push(StreamEvent::Text(unit)),
            }
            Ok(())
        }
        fn ended_early(&mut self) -> ProviderError {
            ProviderError::new(ErrorCode::UpstreamError, "p: ended early")
        }
    }

    fn pumped(pieces: &[&str]) -> Vec<Result<StreamEvent, ProviderError>> {
        let mut pump = Pump::new("p", Semicolons(Vec::new()), Words);
        for piece in pieces {
            pump.feed(piece.as_bytes());
        }
        pump.end();
        std::iter::from_fn(|| pump.next_item()).collect()
    }

    fn text(t: &str) -> Result<StreamEvent, ProviderError> {
        Ok(StreamEvent::Text(t.into()))
    }

    #[test]
    fn units_before_a_framing_error_are_decoded_wherever_the_body_is_cut() {
        let whole = pumped(&["a;b;!c;"]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[..2], [text("a"), text("b")]);
        assert!(matches!(&whole[2], Err(e) if e.message.contains("malformed response: bang")));
        assert_eq!(pumped(&["a;", "b;!c;"]), whole);
        assert_eq!(pumped(&["a;b", ";!"]), whole);
    }

    #[test]
    fn nothing_follows_done_or_an_error_and_a_body_without_done_is_an_error() {
        let done = Ok(StreamEvent::Done {
            usage: provd_client::Usage::default(),
            finish_reason: provd_client::FinishReason::Stop,
        });
        assert_eq!(pumped(&["a;done;b;"]), [text("a"), done.clone()]);
        assert_eq!(pumped(&["a;", "done;", "b;!"]), [text("a"), done]);
        let failed = pumped(&["a;fail;b;"]);
        assert_eq!(failed.len(), 2);
        assert!(matches!(&failed[1], Err(e) if e.message == "p: fail"));
        let early = pumped(&["a;b"]);
        assert_eq!(early.len(), 2);
        assert!(matches!(&early[1], Err(e) if e.message == "p: ended early"));
    }
}
