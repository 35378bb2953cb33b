//! The writer side of a connection: one task drains the connection's bounded queue of
//! encoded frames into its socket, batching a burst of frames into one syscall, and drops
//! a client that stops reading ([`StallGuard`]) after telling it why.
//!
//! Everything that writes to a client (replies, chunks, notices) goes through the queue,
//! so frames never interleave and a slow reader fills only its own queue.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use provd_client::message::{self, notification, ErrorNotice};
use provd_client::socket::SharedStream;
use provd_client::{ErrorCode, WireError};
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::untrusted::untrusted;

/// How long a closing connection may take to flush its last frames (an error frame that
/// explains the close) before it is dropped anyway.
pub(super) const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The socket's write buffer: it batches a burst of small chunk frames into one syscall.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Drains the connection's queue into its socket until the queue closes or the peer is
/// gone. A write that fails, including a [`StallGuard`] timeout, ends the connection.
pub(super) async fn write_loop(
    stream: StallGuard<SharedStream>,
    mut rx: mpsc::Receiver<Vec<u8>>,
    peer_gone: CancellationToken,
) {
    let mut w = BufWriter::with_capacity(WRITE_BUFFER_BYTES, stream);
    // One wait for the whole connection, polled by every select below: a fresh one per
    // frame would register with (and leave) the token's waiter list each time.
    let gone = peer_gone.cancelled();
    tokio::pin!(gone);
    loop {
        let frame = tokio::select! {
            biased;
            _ = &mut gone => return,
            frame = rx.recv() => frame,
        };
        let Some(frame) = frame else {
            let _ = w.flush().await;
            return;
        };
        // Write everything already queued before flushing: under load, many chunk
        // frames leave in one syscall; when idle, each frame leaves at once. `current`
        // and `at` track the frame being written, so that after a stall the connection
        // can still be ended on a frame boundary.
        let (mut current, mut at) = (frame, 0);
        let written = tokio::select! {
            _ = &mut gone => return,
            r = async {
                write_tracked(&mut w, &current, &mut at).await?;
                while let Ok(frame) = rx.try_recv() {
                    (current, at) = (frame, 0);
                    write_tracked(&mut w, &current, &mut at).await?;
                }
                w.flush().await
            } => r,
        };
        if let Err(e) = written {
            if e.kind() == io::ErrorKind::TimedOut {
                let limit = w.get_ref().limit;
                tracing::warn!(
                    slow_client_timeout_s = limit.as_secs(),
                    queued_frames = rx.len(),
                    "the client stopped reading: its socket accepted nothing for slow_client_timeout_seconds; dropping the connection and cancelling its generations"
                );
                // Generations stop now; the explanation goes out after.
                peer_gone.cancel();
                drop(rx);
                explain_slow_client(&mut w, &current[at..], limit).await;
            } else {
                tracing::debug!(error = %untrusted(&e), "client socket failed; closing the connection");
                peer_gone.cancel();
            }
            return;
        }
    }
}

/// Writes `frame[*at..]`, advancing `at` by what the writer took, so a caller whose write
/// failed knows how much of the frame is still owed.
async fn write_tracked<W: AsyncWrite + Unpin>(
    w: &mut W,
    frame: &[u8],
    at: &mut usize,
) -> io::Result<()> {
    while *at < frame.len() {
        match w.write(&frame[*at..]).await? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => *at += n,
        }
    }
    Ok(())
}

/// The last words to a client that stopped reading: the rest of the frame it was in the
/// middle of (so framing holds), then an `overloaded` error notification naming
/// `slow_client_timeout_seconds`; the frames still queued are dropped, their generations
/// cancelled. Best effort: it gets there only if the client reads again within
/// [`CLOSE_FLUSH_TIMEOUT`] (or the limit, if shorter); otherwise the connection just
/// closes.
async fn explain_slow_client<W: AsyncWrite + Unpin>(w: &mut W, rest: &[u8], limit: Duration) {
    let mut error = WireError::new(
        ErrorCode::Overloaded,
        format!(
            "provd closed this connection: the client read nothing for {}s while replies waited (slow_client_timeout_seconds); its generations were cancelled",
            limit.as_secs()
        ),
    );
    // Chunks were likely delivered already: a plain retry would repeat text.
    error.retryable = false;
    let Ok(notice) =
        message::encode_notification(notification::ERROR, &ErrorNotice::new(error, None))
    else {
        return;
    };
    let _ = tokio::time::timeout(limit.min(CLOSE_FLUSH_TIMEOUT), async {
        w.write_all(rest).await?;
        w.write_all(&notice).await?;
        w.flush().await
    })
    .await;
}

/// A socket writer that fails with [`io::ErrorKind::TimedOut`] when the socket accepts
/// no byte for `limit` while there is something to write. Any accepted byte resets the
/// clock, so a client that reads slowly but steadily is never dropped; the writer only
/// writes when frames are queued, so an idle connection is never dropped either.
pub(super) struct StallGuard<W> {
    inner: W,
    limit: Duration,
    /// Armed when a write or flush first returns `Pending`; disarmed by any progress.
    /// One timer per connection, reset rather than reallocated.
    deadline: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl<W> StallGuard<W> {
    pub(super) fn new(inner: W, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }

    /// After the inner writer returned `Pending`: `Pending` too, or the timeout error
    /// once the socket has been stuck for `limit`.
    fn stalled<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            let at = tokio::time::Instant::now() + self.limit;
            self.deadline.as_mut().reset(at);
            self.armed = true;
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.armed = false;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client's socket accepted nothing for {}s (slow_client_timeout_seconds)",
                        self.limit.as_secs()
                    ),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for StallGuard<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.stalled(cx),
            ready => {
                this.armed = false;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.stalled(cx),
            ready => {
                this.armed = false;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_socket_fails_with_timed_out_after_the_limit() {
        // A peer with a 64-byte buffer that never reads.
        let (near, _far) = tokio::io::duplex(64);
        let mut w = StallGuard::new(near, Duration::from_secs(30));
        let e = w.write_all(&[7u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("slow_client_timeout_seconds"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_slowly_but_steadily_is_never_timed_out() {
        // The reader takes 64 bytes every 0.9 × the limit: the whole write lasts hundreds
        // of limits (in paused, virtual time), yet every pause is shorter than one.
        let limit = Duration::from_secs(10);
        let (near, mut far) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 64];
            loop {
                tokio::time::sleep(limit.mul_f64(0.9)).await;
                match far.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n,
                }
            }
        });
        let started = tokio::time::Instant::now();
        let mut w = StallGuard::new(near, limit);
        w.write_all(&[7u8; 16 * 1024]).await.unwrap();
        w.flush().await.unwrap();
        w.shutdown().await.unwrap();
        drop(w);
        assert_eq!(reader.await.unwrap(), 16 * 1024);
        assert!(
            started.elapsed() > limit * 100,
            "the write outlasted many limits"
        );
    }
}
