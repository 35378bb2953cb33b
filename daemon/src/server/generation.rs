//! One generation: open it on a provider (retries and fallbacks in
//! [`crate::resilience`]), stream its events to the client as chunk notifications, and
//! end with exactly one terminal reply, whatever happens.
//!
//! The task stops at once when the client cancels, the connection closes, the request's
//! deadline passes, or the drain deadline passes: it drops the provider's stream, which
//! closes the upstream request. While the upstream is silent it sends keepalives.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use provd_client::message::{self, notification, Chunk, GenerateDone, Keepalive};
use provd_client::{ErrorCode, GenerateRequest, Usage, WireError};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::Streams;
use super::Daemon;
use crate::provider::{Outcome, ProviderError, StreamEvent};
use crate::resilience;
use crate::shutdown::Shutdown;

/// What a generation task needs from its connection.
#[derive(Clone)]
pub(super) struct StreamCtx {
    pub daemon: Arc<Daemon>,
    pub out: mpsc::Sender<Vec<u8>>,
    pub peer_gone: CancellationToken,
    pub shutdown: Shutdown,
    pub streams: Streams,
}

/// Unregisters the generation however its task ends (even by panic), so its id is free
/// again and the gauges stay true.
struct Registration<'a> {
    id: u32,
    ctx: &'a StreamCtx,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.ctx
            .streams
            .lock()
            .expect("streams lock poisoned")
            .remove(&self.id);
        self.ctx
            .daemon
            .stats
            .active_streams
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a generation stopped before its end.
enum Interrupt {
    Cancelled,
    Shutdown,
    Deadline,
}

/// Runs generation `id` to its terminal reply. `cancel` is registered under `id` in the
/// connection's streams (and is a child of the connection's own token).
pub(super) async fn run(
    id: u32,
    request: GenerateRequest,
    targets: Vec<crate::config::Target>,
    cancel: CancellationToken,
    ctx: StreamCtx,
) {
    let registration = Registration { id, ctx: &ctx };
    let result = Generation {
        id,
        ctx: &ctx,
        cancel: &cancel,
        chunks: 0,
        usage: None,
    }
    .drive(request, targets)
    .await;
    // Free the id before the client can see the end, so it may reuse it at once.
    drop(registration);
    let frame = match result {
        Ok(done) => message::encode_result(id, &done).unwrap_or_else(|e| {
            message::encode_error(
                id,
                &WireError::new(
                    ErrorCode::Internal,
                    format!("cannot encode the result: {e}"),
                ),
            )
        }),
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
    chunks: u32,
    usage: Option<Usage>,
}

/// Resolves after `interval` of silence, or never when keepalives are off.
async fn silence(interval: Option<std::time::Duration>, since: Instant) {
    match interval {
        Some(interval) => tokio::time::sleep_until(since + interval).await,
        None => std::future::pending().await,
    }
}

impl Generation<'_> {
    async fn interrupted(&self, deadline: Option<Instant>) -> Interrupt {
        let deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Interrupt::Cancelled,
            _ = self.ctx.shutdown.aborting() => Interrupt::Shutdown,
            _ = deadline => Interrupt::Deadline,
        }
    }

    /// The terminal error for an interruption, with what the client got so far.
    fn stop(&self, why: Interrupt, deadline_error: impl FnOnce(u32) -> ProviderError) -> WireError {
        let (id, chunks) = (self.id, self.chunks);
        let mut e = match why {
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
        e.chunks = Some(chunks);
        e.usage = self.usage;
        e
    }

    fn failed(&self, e: ProviderError) -> WireError {
        let mut e = e.to_wire();
        e.chunks = Some(self.chunks);
        e.usage = self.usage;
        e
    }

    async fn keepalive(&self) -> Result<(), ()> {
        let frame =
            message::encode_notification(notification::KEEPALIVE, &Keepalive { id: self.id })
                .expect("a keepalive always encodes");
        self.ctx.out.send(frame).await.map_err(|_| ())
    }

    async fn drive(
        mut self,
        request: GenerateRequest,
        targets: Vec<crate::config::Target>,
    ) -> Result<GenerateDone, WireError> {
        let daemon = &self.ctx.daemon;
        let keepalive_every = daemon.limits.keepalive_interval;
        let streaming = request.stream;
        let config = daemon.factory.config();
        let deadline_error = |chunks| resilience::deadline_error(&config, &targets, chunks);

        // Opening: retries and fallbacks happen inside; keepalives go out meanwhile.
        let open = resilience::open(&daemon.factory, &request, &targets);
        tokio::pin!(open);
        let mut quiet_since = Instant::now();
        let opened = loop {
            tokio::select! {
                biased;
                why = self.interrupted(None) => return Err(self.stop(why, deadline_error)),
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
        let model = instance.model().to_owned();
        let mut text = String::new();

        loop {
            let event = match first.pop_front() {
                Some(event) => Some(Ok(event)),
                None => {
                    quiet_since = Instant::now();
                    loop {
                        tokio::select! {
                            biased;
                            why = self.interrupted(Some(deadline)) => {
                                let outcome = match why {
                                    Interrupt::Cancelled => Outcome::Cancelled,
                                    _ => Outcome::Failed,
                                };
                                state.record_end(outcome, self.usage.unwrap_or_default());
                                return Err(self.stop(why, deadline_error));
                            }
                            event = rest.next() => break event,
                            _ = silence(keepalive_every, quiet_since) => {
                                if self.keepalive().await.is_err() {
                                    state.record_end(Outcome::Cancelled, self.usage.unwrap_or_default());
                                    return Err(self.stop(Interrupt::Cancelled, deadline_error));
                                }
                                quiet_since = Instant::now();
                            }
                        }
                    }
                }
            };
            match event {
                Some(Ok(StreamEvent::Text(piece))) if streaming => {
                    let chunk = Chunk {
                        id: self.id,
                        index: self.chunks,
                        text: piece,
                        model: model.clone(),
                        created_at: unix_millis(),
                    };
                    let frame =
                        message::encode_notification(notification::CHUNK, &chunk).map_err(|e| {
                            WireError::new(
                                ErrorCode::Internal,
                                format!("cannot encode a chunk: {e}"),
                            )
                        })?;
                    // A slow reader makes this wait; cancel and shutdown still cut in.
                    tokio::select! {
                        biased;
                        why = self.interrupted(Some(deadline)) => {
                            let outcome = match why {
                                Interrupt::Cancelled => Outcome::Cancelled,
                                _ => Outcome::Failed,
                            };
                            state.record_end(outcome, self.usage.unwrap_or_default());
                            return Err(self.stop(why, deadline_error));
                        }
                        sent = self.ctx.out.send(frame) => if sent.is_err() {
                            state.record_end(Outcome::Cancelled, self.usage.unwrap_or_default());
                            return Err(self.stop(Interrupt::Cancelled, deadline_error));
                        },
                    }
                    self.chunks += 1;
                    state.record_chunk();
                }
                Some(Ok(StreamEvent::Text(piece))) => text.push_str(&piece),
                Some(Ok(StreamEvent::Usage(u))) => self.usage = Some(u),
                Some(Ok(StreamEvent::Done {
                    usage,
                    finish_reason,
                })) => {
                    state.record_end(Outcome::Completed, usage);
                    return Ok(GenerateDone {
                        done: true,
                        provider: provider_id,
                        model,
                        usage,
                        finish_reason,
                        chunks: self.chunks,
                        text: (!streaming).then_some(text),
                    });
                }
                Some(Err(e)) => {
                    state.record_end(Outcome::Failed, self.usage.unwrap_or_default());
                    return Err(self.failed(e));
                }
                None => {
                    state.record_end(Outcome::Failed, self.usage.unwrap_or_default());
                    let chunks = self.chunks;
                    return Err(self.failed(ProviderError::new(
                        ErrorCode::UpstreamError,
                        format!("provider '{provider_id}' ended the stream without a final event after {chunks} chunks"),
                    )));
                }
            }
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX))
}
