//! One generation: open it on a provider (retries and fallbacks in
//! [`crate::resilience`]), stream its events to the client as chunk notifications, and
//! end with exactly one terminal reply, whatever happens.
//!
//! The task stops at once when the client cancels, the connection closes, the request's
//! deadline passes, or the drain deadline passes: it drops the provider's stream, which
//! closes the upstream request. While the upstream is silent it sends keepalives.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::StreamExt;
use provd_client::message::{self, notification, Chunk, GenerateDone, Keepalive};
use provd_client::{ErrorCode, GenerateRequest, Usage, WireError};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::accounting::{self, Requester};
use super::extras::Extras;
use super::request::encode_reply;
use super::streams::{Registration, Streams};
use super::Daemon;
use crate::config::{Config, Target};
use crate::provider::{Outcome, ProviderError, StreamEvent};
use crate::resilience;
use crate::shutdown::Shutdown;
use crate::untrusted::untrusted;

/// What a generation task needs from its connection.
#[derive(Clone)]
pub(super) struct StreamCtx {
    pub daemon: Arc<Daemon>,
    pub out: mpsc::Sender<Vec<u8>>,
    pub peer_gone: CancellationToken,
    pub shutdown: Shutdown,
    pub streams: Streams,
}

/// Why a generation stopped before its end.
enum Interrupt {
    Cancelled,
    Shutdown,
    Deadline,
}

/// Where a generation may go and under which rules: the one snapshot of the
/// configuration the request was routed with, and the targets chosen from it. The
/// deadline and the retries come from the same snapshot, so a reload while the request
/// runs never mixes old and new settings in one request.
pub(super) struct Plan {
    /// The configuration in force when the request was routed.
    pub config: Arc<Config>,
    /// The providers it may be served by, in order (see [`resilience::targets`]).
    pub targets: Vec<Target>,
    /// Who asked, for the ledger and the budgets.
    pub requester: Requester,
}

/// Runs generation `id` to its terminal reply. `registration` holds its place on the
/// connection (its cancel token is a child of the connection's own) and under the limits.
pub(super) async fn run(
    id: u32,
    request: GenerateRequest,
    plan: Plan,
    registration: Registration,
    ctx: StreamCtx,
) {
    let started = Instant::now();
    let at_ms = crate::ledger::unix_millis();
    let asked = asked(&plan);
    let requester = plan.requester.clone();
    let mut generation = Generation {
        id,
        ctx: &ctx,
        cancel: registration.cancel_token(),
        chunks: 0,
        pieces: 0,
        usage: None,
        first_chunk: None,
        answered: None,
        opened_model: None,
    };
    let result = generation.drive(request, plan).await;
    let record = generation.record(&result, at_ms, started, asked, &requester);
    // Accounted before the client can see the end, so its next request (a report, a
    // budget check) sees this one; then the id is freed, so the client may reuse it.
    accounting::account(&ctx.daemon, &requester, record);
    drop(registration);
    let frame = match result {
        Ok(done) => encode_reply(id, &done),
        Err(e) => message::encode_error(id, &e),
    };
    tokio::select! {
        _ = ctx.peer_gone.cancelled() => {}
        _ = ctx.out.send(frame) => {}
    }
}

struct Generation<'a> {
    id: u32,
    ctx: &'a StreamCtx,
    cancel: &'a CancellationToken,
    /// Chunks sent to the client.
    chunks: u32,
    /// Pieces of text the provider produced (sent as chunks, or kept for a non-streamed
    /// answer): each is at least one token.
    pieces: u32,
    /// The provider's own latest usage report, if it sent one.
    usage: Option<Usage>,
    /// When the first chunk went to the client.
    first_chunk: Option<Instant>,
    /// The provider that answered and the model it named, once one did.
    answered: Option<(String, String)>,
    /// The model of the instance that answered (the provider's choice when the request
    /// named none), once one did.
    opened_model: Option<String>,
}

/// The provider and model a plan asks for, as the ledger keys them: the first target,
/// aliases resolved, the provider's default model when none is named. Both may be a
/// client's words (an unknown provider, any model name), so each is cut to
/// [`MAX_MODEL_CHARS`]: a client cannot make the ledger store a megabyte per row.
fn asked(plan: &Plan) -> (String, String) {
    let Some(first) = plan.targets.first() else {
        return (String::new(), String::new());
    };
    let model = first.model.as_deref().or_else(|| {
        plan.config
            .providers
            .get(&first.provider)
            .and_then(|p| p.default_model.as_deref())
    });
    let bounded = |s: &str| super::connection::truncate(s, MAX_MODEL_CHARS);
    (
        bounded(&first.provider),
        model.map(bounded).unwrap_or_default(),
    )
}

/// Milliseconds in `d`, saturated.
fn millis(d: std::time::Duration) -> u32 {
    d.as_millis().try_into().unwrap_or(u32::MAX)
}

/// The longest model name reported to clients; an upstream's longer one is cut.
const MAX_MODEL_CHARS: usize = 256;

/// The model name an upstream reported, as it may go to a client: scrubbed of every key
/// the daemon holds before it is cut (see [`crate::scrub`]), on one line, bounded.
fn reported_model(named: &str) -> String {
    let scrubbed = crate::scrub::scrub(named);
    scrubbed
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MODEL_CHARS)
        .collect()
}

/// The keepalive timer's period when keepalives are off (it is then never polled).
const KEEPALIVE_OFF: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Resolves after `interval` of silence, or never when keepalives are off.
async fn silence(interval: Option<std::time::Duration>, since: Instant) {
    match interval {
        Some(interval) => tokio::time::sleep_until(since + interval).await,
        None => std::future::pending().await,
    }
}

impl Generation<'_> {
    /// The ledger's record of this generation, from its terminal reply.
    fn record(
        &self,
        result: &Result<GenerateDone, WireError>,
        at_ms: i64,
        started: Instant,
        (provider, mut model): (String, String),
        requester: &Requester,
    ) -> crate::ledger::Record {
        use crate::ledger::Outcome;
        // No model named and no default configured: the one the provider chose for it.
        if model.is_empty() {
            model = self.opened_model.clone().unwrap_or_default();
        }
        let (usage, chunks, outcome, error_code, answered) = match result {
            Ok(done) => (
                Some(done.usage),
                done.chunks,
                Outcome::Completed,
                None,
                Some((done.provider.clone(), done.model.clone())),
            ),
            Err(e) => (
                e.usage,
                self.chunks,
                if e.code == ErrorCode::Cancelled {
                    Outcome::Cancelled
                } else {
                    Outcome::Failed
                },
                Some(e.code.as_str()),
                self.answered.clone(),
            ),
        };
        let usage = usage.unwrap_or_default();
        let (answered_provider, answered_model) = answered.unzip();
        crate::ledger::Record {
            at_ms,
            uid: requester.uid,
            user: None,
            token: requester.token.clone(),
            provider,
            model,
            answered_provider,
            answered_model,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            reasoning_tokens: usage.reasoning_tokens.unwrap_or(0),
            chunks,
            outcome,
            error_code,
            first_chunk_ms: self.first_chunk.map(|at| millis(at - started)),
            duration_ms: millis(started.elapsed()),
        }
    }

    /// The usage of a generation that ended early: the provider's own count where it
    /// sent one, raised to at least one token per piece of text it produced. A lower
    /// bound, as PROTOCOL.md says.
    fn usage_so_far(&self) -> Usage {
        let reported = self.usage.unwrap_or_default();
        let completion = reported.completion_tokens.max(self.pieces);
        Usage::new(reported.prompt_tokens, completion)
    }

    /// `e` as the terminal error of this generation: with what the client got so far,
    /// and never inviting a plain retry once a chunk was delivered (it would repeat text
    /// the client already has).
    fn terminal(&self, mut e: WireError) -> WireError {
        e.chunks = Some(self.chunks);
        e.usage = (self.usage.is_some() || self.pieces > 0).then(|| self.usage_so_far());
        if self.chunks > 0 {
            e.retryable = false;
        }
        e
    }

    /// The terminal error for an interruption, with what the client got so far.
    fn stop(&self, why: Interrupt, deadline_error: impl FnOnce(u32) -> ProviderError) -> WireError {
        let (id, chunks) = (self.id, self.chunks);
        let e = match why {
            Interrupt::Cancelled => WireError::new(
                ErrorCode::Cancelled,
                format!("generation {id} was cancelled after {chunks} chunks"),
            ),
            Interrupt::Shutdown => WireError::new(
                ErrorCode::Unavailable,
                format!("provd is shutting down: the drain deadline passed after {chunks} chunks of generation {id}"),
            ),
            Interrupt::Deadline => deadline_error(chunks).to_wire(),
        };
        self.terminal(e)
    }

    /// Records that a streaming generation stopped early and returns its terminal error.
    fn end_early(
        &self,
        state: &crate::provider::ProviderState,
        why: Interrupt,
        deadline_error: impl FnOnce(u32) -> ProviderError,
    ) -> WireError {
        let outcome = match why {
            Interrupt::Cancelled => Outcome::Cancelled,
            Interrupt::Shutdown | Interrupt::Deadline => Outcome::Failed,
        };
        state.record_end(outcome, self.usage_so_far());
        self.stop(why, deadline_error)
    }

    fn failed(&self, e: ProviderError) -> WireError {
        self.terminal(e.to_wire())
    }

    async fn keepalive(&self) -> Result<(), ()> {
        let frame =
            message::encode_notification(notification::KEEPALIVE, &Keepalive { id: self.id })
                .expect("a keepalive always encodes");
        self.ctx.out.send(frame).await.map_err(|_| ())
    }

    async fn drive(
        &mut self,
        request: GenerateRequest,
        plan: Plan,
    ) -> Result<GenerateDone, WireError> {
        let daemon = &self.ctx.daemon;
        let keepalive_every = daemon.limits.keepalive_interval;
        let streaming = request.stream;
        let Plan {
            config, targets, ..
        } = plan;
        let deadline_error = |chunks| resilience::deadline_error(&config, &targets, chunks);

        // Opening: retries and fallbacks happen inside; keepalives go out meanwhile.
        let attempted = std::sync::atomic::AtomicBool::new(false);
        let open = resilience::open(
            &daemon.factory,
            &daemon.metrics,
            &config,
            &request,
            &targets,
            &attempted,
        );
        tokio::pin!(open);
        let opening_interrupted = interruption(self.cancel, &self.ctx.shutdown, None);
        tokio::pin!(opening_interrupted);
        let mut quiet_since = Instant::now();
        let opened = loop {
            tokio::select! {
                biased;
                why = &mut opening_interrupted => {
                    // Cancelled before any provider was asked (still queued, or waiting
                    // for its instance): count it as the client saw it. Once an attempt
                    // was counted, dropping `open` counts it as cancelled there.
                    if matches!(why, Interrupt::Cancelled) && !attempted.load(Ordering::Relaxed) {
                        let first = targets.first();
                        daemon.factory.count_cancelled_before_start(
                            first.map(|t| t.provider.as_str()).filter(|p| !p.is_empty()),
                            first.and_then(|t| t.model.as_deref()),
                        );
                    }
                    return Err(self.stop(why, deadline_error));
                }
                opened = &mut open => break opened.map_err(|e| self.failed(e))?,
                _ = silence(keepalive_every, quiet_since) => {
                    if self.keepalive().await.is_err() {
                        return Err(self.stop(Interrupt::Cancelled, deadline_error));
                    }
                    quiet_since = Instant::now();
                }
            }
        };
        let resilience::Opened {
            provider_id,
            instance,
            mut first,
            mut rest,
            deadline,
        } = opened;
        let state = instance.state();
        // The requested (configured) model until the upstream names the one answering;
        // limits and counters keep keying on the instance.
        let mut model = instance.model().to_owned();
        self.answered = Some((provider_id.clone(), model.clone()));
        self.opened_model = Some(model.clone());
        let mut text = String::new();
        let mut extras = Extras::new(self.id, &request);

        // Per event, nothing is registered or allocated beyond the event itself: one
        // interruption future (cancel, shutdown, deadline) and one keepalive timer live
        // for the whole stream and are only polled, and a chunk goes straight into the
        // queue when it has room. A stream forwards tens of thousands of chunks per
        // second, and registering timers and waiters for each one was among the largest
        // costs of forwarding in profiles.
        let (cancel, ctx) = (self.cancel, self.ctx);
        let interrupted = interruption(cancel, &ctx.shutdown, Some(deadline));
        tokio::pin!(interrupted);
        let keepalive = tokio::time::sleep(keepalive_every.unwrap_or(KEEPALIVE_OFF));
        tokio::pin!(keepalive);
        // The keepalive timer is re-armed lazily: when it fires, it checks whether the
        // stream was really silent since `quiet_since`, so events need not reset it.
        quiet_since = Instant::now();

        loop {
            let event = match first.pop_front() {
                Some(event) => Some(Ok(event)),
                None => loop {
                    // The stream first: while events are ready, the interruption future
                    // is not polled at all (its wakers stay registered from the last
                    // wait), and these three loads catch an interruption instead.
                    if let Some(why) = interrupted_now(cancel, &ctx.shutdown, deadline) {
                        return Err(self.end_early(state, why, deadline_error));
                    }
                    tokio::select! {
                        biased;
                        event = rest.next() => {
                            quiet_since = Instant::now();
                            break event;
                        }
                        why = &mut interrupted => return Err(self.end_early(state, why, deadline_error)),
                        _ = &mut keepalive, if keepalive_every.is_some() => {
                            let every = keepalive_every.unwrap_or(KEEPALIVE_OFF);
                            let now = Instant::now();
                            if now >= quiet_since + every {
                                if self.keepalive().await.is_err() {
                                    return Err(self.end_early(state, Interrupt::Cancelled, deadline_error));
                                }
                                quiet_since = now;
                            }
                            keepalive.as_mut().reset(quiet_since + every);
                        }
                    }
                },
            };
            // What goes to the client as a chunk: text when streaming, tool call
            // pieces and shown reasoning when the request asked for them.
            let (piece, tool_call, reasoning) = match event {
                Some(Ok(StreamEvent::Text(piece))) if streaming => {
                    // Produced, so counted in the usage even if the client is gone.
                    self.pieces += 1;
                    (piece, None, None)
                }
                Some(Ok(StreamEvent::ToolCall(delta))) => match extras.tool_call(delta) {
                    Ok(Some(delta)) if streaming => (String::new(), Some(delta), None),
                    Ok(_) => continue,
                    Err(e) => {
                        state.record_end(Outcome::Failed, self.usage_so_far());
                        return Err(self.failed(e));
                    }
                },
                Some(Ok(StreamEvent::Reasoning(piece))) => match extras.reasoning(piece) {
                    Ok(Some(piece)) => (String::new(), None, Some(piece)),
                    Ok(None) => continue,
                    Err(e) => {
                        state.record_end(Outcome::Failed, self.usage_so_far());
                        return Err(self.failed(e));
                    }
                },
                Some(Ok(StreamEvent::ProviderState(value))) => {
                    extras.provider_state(instance.kind().as_str(), value);
                    continue;
                }
                other => match self.after(other, &mut text, &mut model, &provider_id, &*instance) {
                    After::Next => continue,
                    After::Done(usage, finish_reason) => {
                        let finished = match extras.finish() {
                            Ok(finished) => finished,
                            Err(e) => {
                                state.record_end(Outcome::Failed, usage);
                                return Err(self.failed(e));
                            }
                        };
                        state.record_end(Outcome::Completed, usage);
                        return Ok(GenerateDone {
                            done: true,
                            provider: provider_id,
                            model,
                            usage,
                            finish_reason,
                            chunks: self.chunks,
                            text: (!streaming).then_some(text),
                            tool_calls: finished.tool_calls,
                            reasoning: finished.reasoning,
                            provider_state: finished.provider_state,
                        });
                    }
                    After::Failed(e) => {
                        state.record_end(Outcome::Failed, self.usage_so_far());
                        return Err(self.failed(e));
                    }
                },
            };
            let chunk = Chunk {
                id: self.id,
                index: self.chunks,
                text: piece,
                model: model.clone(),
                created_at: u64::try_from(crate::ledger::unix_millis()).unwrap_or(0),
                tool_call,
                reasoning,
            };
            let frame = message::encode_notification(notification::CHUNK, &chunk).map_err(|e| {
                WireError::new(ErrorCode::Internal, format!("cannot encode a chunk: {e}"))
            })?;
            // A slow reader fills the queue and makes this wait; cancel, shutdown
            // and the deadline still cut in.
            let sent = match ctx.out.try_send(frame) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(frame)) => {
                    let sent = tokio::select! {
                        biased;
                        why = &mut interrupted => return Err(self.end_early(state, why, deadline_error)),
                        sent = ctx.out.send(frame) => sent.is_ok(),
                    };
                    // Waiting for the client is not the upstream's silence.
                    quiet_since = Instant::now();
                    sent
                }
            };
            if !sent {
                return Err(self.end_early(state, Interrupt::Cancelled, deadline_error));
            }
            if self.chunks == 0 {
                self.first_chunk = Some(Instant::now());
            }
            self.chunks += 1;
            state.record_chunk();
        }
    }

    /// Handles an event that sends no chunk: text kept for a whole answer, usage, the
    /// model's name, the end, a failure.
    fn after(
        &mut self,
        event: Option<Result<StreamEvent, ProviderError>>,
        text: &mut String,
        model: &mut String,
        provider_id: &str,
        instance: &dyn crate::provider::Provider,
    ) -> After {
        match event {
            Some(Ok(StreamEvent::Text(piece))) => {
                self.pieces += 1;
                text.push_str(&piece);
                After::Next
            }
            Some(Ok(StreamEvent::Usage(u))) => {
                self.usage = Some(u);
                After::Next
            }
            Some(Ok(StreamEvent::Model(named))) => {
                let named = reported_model(&named);
                if !named.is_empty() && named != *model {
                    tracing::debug!(provider = %untrusted(provider_id), requested = %untrusted(instance.model()), answering = %untrusted(&named), "the upstream names the model answering");
                    self.answered = Some((provider_id.to_owned(), named.clone()));
                    *model = named;
                }
                After::Next
            }
            Some(Ok(StreamEvent::Done {
                usage,
                finish_reason,
            })) => After::Done(usage, finish_reason),
            // The chunk-sending events are handled by the caller.
            Some(Ok(
                StreamEvent::ToolCall(_)
                | StreamEvent::Reasoning(_)
                | StreamEvent::ProviderState(_),
            )) => After::Next,
            Some(Err(e)) => After::Failed(e),
            None => {
                let chunks = self.chunks;
                After::Failed(ProviderError::new(
                    ErrorCode::UpstreamError,
                    format!("provider '{provider_id}' ended the stream without a final event after {chunks} chunks"),
                ))
            }
        }
    }
}

/// What [`Generation::after`] says comes next.
enum After {
    /// Read the next event.
    Next,
    /// The provider's end: its usage and finish reason.
    Done(Usage, provd_client::FinishReason),
    /// The provider failed.
    Failed(ProviderError),
}

/// Whether the generation must stop early, checked without waiting: see [`interruption`].
fn interrupted_now(
    cancel: &CancellationToken,
    shutdown: &Shutdown,
    deadline: Instant,
) -> Option<Interrupt> {
    if cancel.is_cancelled() {
        Some(Interrupt::Cancelled)
    } else if shutdown.is_aborting() {
        Some(Interrupt::Shutdown)
    } else if Instant::now() >= deadline {
        Some(Interrupt::Deadline)
    } else {
        None
    }
}

/// Resolves when the generation must stop early: cancelled (by its client or because
/// the connection closed), the drain deadline passed, or the request's deadline passed.
/// Created once per stage of a generation and polled by every wait in it.
async fn interruption(
    cancel: &CancellationToken,
    shutdown: &Shutdown,
    deadline: Option<Instant>,
) -> Interrupt {
    let deadline = async {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Interrupt::Cancelled,
        _ = shutdown.aborting() => Interrupt::Shutdown,
        _ = deadline => Interrupt::Deadline,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_model_name_is_cleaned_to_one_bounded_line() {
        assert_eq!(reported_model("gpt-4o-2024-08-06"), "gpt-4o-2024-08-06");
        assert_eq!(
            reported_model("evil\nINFO forged\r\x1b[31m"),
            "evilINFO forged[31m"
        );
        let long = "m".repeat(MAX_MODEL_CHARS * 2);
        assert_eq!(reported_model(&long).chars().count(), MAX_MODEL_CHARS);
    }
}
