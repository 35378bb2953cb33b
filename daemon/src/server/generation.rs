//! One generation: resolve the provider, stream its events to the client as chunk
//! notifications, and end with exactly one terminal reply, whatever happens.
//!
//! The task stops at once when the client cancels, the connection closes, or the drain
//! deadline passes: it drops the provider's stream, which closes the upstream request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use provd_client::message::{self, notification, Chunk, GenerateDone};
use provd_client::{ErrorCode, GenerateRequest, Usage, WireError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::Streams;
use super::Daemon;
use crate::provider::{Outcome, StreamEvent};
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
}

async fn interrupted(cancel: &CancellationToken, shutdown: &Shutdown) -> Interrupt {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Interrupt::Cancelled,
        _ = shutdown.aborting() => Interrupt::Shutdown,
    }
}

/// Runs generation `id` to its terminal reply. `cancel` is registered under `id` in the
/// connection's streams (and is a child of the connection's own token).
pub(super) async fn run(
    id: u32,
    request: GenerateRequest,
    cancel: CancellationToken,
    ctx: StreamCtx,
) {
    let registration = Registration { id, ctx: &ctx };
    let result = drive(id, request, &cancel, &ctx).await;
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

async fn drive(
    id: u32,
    request: GenerateRequest,
    cancel: &CancellationToken,
    ctx: &StreamCtx,
) -> Result<GenerateDone, WireError> {
    let stop = |why: Interrupt, chunks: u32, usage: Option<Usage>| {
        let mut e = match why {
            Interrupt::Cancelled => WireError::new(
                ErrorCode::Cancelled,
                format!("generation {id} was cancelled after {chunks} chunks"),
            ),
            Interrupt::Shutdown => WireError::new(
                ErrorCode::Unavailable,
                format!("provd is shutting down: the drain deadline passed after {chunks} chunks of generation {id}"),
            ),
        };
        e.chunks = Some(chunks);
        e.usage = usage;
        e
    };

    let (provider_id, provider) = tokio::select! {
        biased;
        why = interrupted(cancel, &ctx.shutdown) => return Err(stop(why, 0, None)),
        r = ctx.daemon.factory.get(request.provider.as_deref(), request.model.as_deref()) => r.map_err(|e| {
            let mut e = e.to_wire();
            e.chunks = Some(0);
            e
        })?,
    };
    let state = provider.state();
    let model = provider.model().to_owned();
    let streaming = request.stream;
    state.record_start();

    let mut events = tokio::select! {
        biased;
        why = interrupted(cancel, &ctx.shutdown) => {
            state.record_end(Outcome::Cancelled, Usage::default());
            return Err(stop(why, 0, None));
        }
        r = provider.generate(request) => match r {
            Ok(events) => events,
            Err(e) => {
                state.record_end(Outcome::Failed, Usage::default());
                let mut e = e.to_wire();
                e.chunks = Some(0);
                return Err(e);
            }
        },
    };

    let mut chunks: u32 = 0;
    let mut usage = Usage::default();
    let mut text = String::new();
    loop {
        let event = tokio::select! {
            biased;
            why = interrupted(cancel, &ctx.shutdown) => {
                state.record_end(Outcome::Cancelled, usage);
                return Err(stop(why, chunks, Some(usage)));
            }
            event = events.next() => event,
        };
        match event {
            Some(Ok(StreamEvent::Text(piece))) if streaming => {
                let chunk = Chunk {
                    id,
                    index: chunks,
                    text: piece,
                    model: model.clone(),
                    created_at: unix_millis(),
                };
                let frame =
                    message::encode_notification(notification::CHUNK, &chunk).map_err(|e| {
                        WireError::new(ErrorCode::Internal, format!("cannot encode a chunk: {e}"))
                    })?;
                tokio::select! {
                    biased;
                    why = interrupted(cancel, &ctx.shutdown) => {
                        state.record_end(Outcome::Cancelled, usage);
                        return Err(stop(why, chunks, Some(usage)));
                    }
                    sent = ctx.out.send(frame) => if sent.is_err() {
                        state.record_end(Outcome::Cancelled, usage);
                        return Err(stop(Interrupt::Cancelled, chunks, Some(usage)));
                    },
                }
                chunks += 1;
                state.record_chunk();
            }
            Some(Ok(StreamEvent::Text(piece))) => text.push_str(&piece),
            Some(Ok(StreamEvent::Usage(u))) => usage = u,
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
                    chunks,
                    text: (!streaming).then_some(text),
                });
            }
            Some(Err(e)) => {
                state.record_end(Outcome::Failed, usage);
                let mut e = e.to_wire();
                e.chunks = Some(chunks);
                e.usage = Some(usage);
                return Err(e);
            }
            None => {
                state.record_end(Outcome::Failed, usage);
                let mut e = WireError::new(
                    ErrorCode::UpstreamError,
                    format!("provider '{provider_id}' ended the stream without a final event after {chunks} chunks"),
                );
                e.chunks = Some(chunks);
                e.usage = Some(usage);
                return Err(e);
            }
        }
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().try_into().unwrap_or(u64::MAX))
}
