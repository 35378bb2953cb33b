//! The HTTP listener: accept, admit, serve each connection with hyper, drain on shutdown.
//!
//! A connection is admitted as a MessagePack one is ([`crate::server::admission`]): from
//! the peer's uid as the kernel reports it (`SO_PEERCRED`), before anything is read, under
//! the limits in force. One over its uid's limit is still served, but every request on it
//! gets the `overloaded` refusal (503 with `Retry-After`) in its route's own shape, and
//! the connection closes after it: an HTTP client understands a response, not a dropped
//! socket.
//!
//! Two timers guard a connection ([`Clock`]): once a client starts sending a request it
//! has `header_read_timeout_seconds` to finish its headers, and a connection with no
//! request in flight closes after `keep_alive_idle_seconds`. hyper's own header timeout
//! cannot tell the two apart (it runs while an idle keep-alive connection waits), so both
//! are kept here, from the bytes read and the requests in flight.
//!
//! The optional loopback TCP listener (`[http] listen`) serves the same routes under the
//! same timers and drain. Its connections have no peer uid: they are admitted together
//! as one anonymous peer (under `limits.max_connections_per_uid`), each request is
//! checked for the listener's own `Host` and `Origin` before it is routed
//! ([`super::caller::check_loopback_request`]), and its token says who calls.
//!
//! On shutdown the listener stops accepting and removes its socket, each connection
//! finishes the response in flight and takes no other (hyper's graceful shutdown), and
//! running streams end within the drain deadline like MessagePack ones (the runner sees
//! the same [`Shutdown`]).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::caller::{check_loopback_request, loopback_names, Standing};
use super::{Call, Front};
use crate::server::admission::{Applicant, ConnectionSlot};
use crate::server::listener::UnixSocketListener;
use crate::server::peer::PeerIdentity;
use crate::server::{Daemon, ABORT_GRACE};
use crate::shutdown::Shutdown;
use provd_client::WireError;

/// Pause after an accept error (out of descriptors, say) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The HTTP front door, bound and ready to run.
#[derive(Debug)]
pub struct HttpServer {
    listener: Option<UnixSocketListener>,
    tcp: Option<TcpListener>,
}

impl HttpServer {
    /// Binds the HTTP socket at `path` under the MessagePack socket's rules.
    pub fn bind(
        path: &std::path::Path,
        group: Option<&str>,
    ) -> Result<HttpServer, crate::server::listener::ListenError> {
        Ok(HttpServer {
            listener: Some(UnixSocketListener::bind(path, group)?),
            tcp: None,
        })
    }

    /// The HTTP front door of a daemon whose MessagePack socket is `msgpack`
    /// (`inherited`: systemd passed it), bound where
    /// [`crate::config::load::http_socket`] says, or `None` (logged) when it is off.
    pub fn for_daemon(
        config: &crate::config::Config,
        msgpack: &std::path::Path,
        inherited: bool,
    ) -> Result<Option<HttpServer>, crate::server::listener::ListenError> {
        use crate::config::load::{http_socket, HttpSocket};
        let listener = match http_socket(config, msgpack, inherited) {
            HttpSocket::At(path) => Some(UnixSocketListener::bind(
                &path,
                config.daemon.socket_group.as_deref(),
            )?),
            HttpSocket::Off(why) => {
                tracing::info!(reason = %why, "HTTP front door not opened on a Unix socket");
                None
            }
        };
        HttpServer::with_tcp(config, listener)
    }

    /// `listener` and, when `[http] listen` asks for one, the loopback TCP listener;
    /// `None` when neither is open.
    fn with_tcp(
        config: &crate::config::Config,
        listener: Option<UnixSocketListener>,
    ) -> Result<Option<HttpServer>, crate::server::listener::ListenError> {
        let tcp = match (&config.http.listen, config.http.enabled) {
            (Some(listen), true) => Some(bind_loopback(listen)?),
            _ => None,
        };
        if listener.is_none() && tcp.is_none() {
            return Ok(None);
        }
        Ok(Some(HttpServer { listener, tcp }))
    }

    /// The HTTP front door on a socket systemd passed (`None`, logged, when `[http]
    /// enabled = false`).
    pub fn from_inherited(
        config: &crate::config::Config,
        fd: std::os::fd::OwnedFd,
    ) -> Result<Option<HttpServer>, crate::server::listener::ListenError> {
        if !config.http.enabled {
            tracing::info!("HTTP front door not opened: [http] enabled = false (systemd passed its socket; it is left unserved)");
            return Ok(None);
        }
        let listener = UnixSocketListener::from_inherited(fd)?;
        tracing::info!(socket = %listener.path().display(), "adopted the HTTP socket systemd passed (socket activation); it stays when provd stops");
        HttpServer::with_tcp(config, Some(listener))
    }

    /// The Unix socket's path, when one is open.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.listener.as_ref().map(|l| l.path())
    }

    /// Serves until `shutdown` begins, then drains: connections finish their responses
    /// (running streams until the drain deadline, then the abort grace) and it returns.
    pub async fn run(self, daemon: Arc<Daemon>, shutdown: Shutdown) {
        let front = Arc::new(Front {
            daemon: daemon.clone(),
            shutdown: shutdown.clone(),
            catalogue: Default::default(),
            tasks: TaskTracker::new(),
        });
        let connections = TaskTracker::new();
        if let Some(listener) = &self.listener {
            tracing::info!(socket = %listener.path().display(), "HTTP front door serving");
        }
        let tcp = self.tcp.map(|tcp| {
            let addr = tcp.local_addr().ok();
            if let Some(addr) = addr {
                tracing::info!("http listening on {addr}");
            }
            (tcp, Arc::new(loopback_names(addr.map_or(0, |a| a.port()))))
        });
        loop {
            let accepted = tokio::select! {
                _ = shutdown.stopping() => break,
                accepted = async { self.listener.as_ref().expect("guarded").accept().await }, if self.listener.is_some() => {
                    accepted.map(|stream| connections.spawn(admit(stream, front.clone())))
                }
                accepted = async { tcp.as_ref().expect("guarded").0.accept().await }, if tcp.is_some() => {
                    let names = tcp.as_ref().map(|t| t.1.clone()).expect("guarded");
                    accepted.map(|(stream, _)| connections.spawn(admit_tcp(stream, names, front.clone())))
                }
            };
            if let Err(e) = accepted {
                tracing::warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
        drop(tcp);
        if let Some(listener) = self.listener {
            let path = listener.path().to_owned();
            drop(listener);
            tracing::info!(socket = %path.display(), "HTTP front door closed its socket; draining its connections");
        }
        connections.close();
        front.tasks.close();
        let drained = async {
            connections.wait().await;
            front.tasks.wait().await;
        };
        tokio::select! {
            _ = drained => {}
            // The drain deadline is the MessagePack server's to watch; once it passes,
            // generations end on their own and get the same grace to say so.
            _ = async {
                shutdown.aborting().await;
                tokio::time::sleep(ABORT_GRACE).await;
            } => tracing::warn!("HTTP connections still open after the abort grace; dropping them"),
        }
    }
}

/// Binds the loopback TCP listener of `[http] listen` (validated as loopback with the
/// configuration; checked again here, as it is what exposes the door).
fn bind_loopback(listen: &str) -> Result<TcpListener, crate::server::listener::ListenError> {
    let refused = |source: std::io::Error| crate::server::listener::ListenError::Io {
        what: "cannot listen on [http] listen =",
        path: std::path::PathBuf::from(listen),
        source,
    };
    let addr = crate::config::loopback_address(listen)
        .map_err(|rule| refused(std::io::Error::new(std::io::ErrorKind::InvalidInput, rule)))?;
    let listener = std::net::TcpListener::bind(addr).map_err(refused)?;
    listener.set_nonblocking(true).map_err(refused)?;
    TcpListener::from_std(listener).map_err(refused)
}

/// Admits a loopback TCP connection and serves it: no peer uid, so it counts under the
/// anonymous peer's limit, and each request's token says who calls.
async fn admit_tcp(stream: tokio::net::TcpStream, names: Arc<Vec<String>>, front: Arc<Front>) {
    // A stream is many small writes (one SSE event per chunk): without TCP_NODELAY,
    // Nagle's algorithm holds each behind the client's delayed ACK, tens of ms a chunk.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on an HTTP connection");
    }
    let daemon = &front.daemon;
    let standing = Standing::tcp(daemon.auth());
    let config = daemon.factory.config();
    let admitted = daemon.admission.admit_connection(
        Applicant {
            uid: None,
            admin: false,
        },
        daemon.limits.max_connections,
        &config.limits,
    );
    let timeouts = Timeouts {
        header_read: Duration::from_secs(config.http.header_read_timeout_seconds),
        idle: Duration::from_secs(config.http.keep_alive_idle_seconds),
    };
    drop(config);
    if let Err(refusal) = &admitted {
        tracing::warn!(reason = %refusal.message, "HTTP TCP connection refused: limit reached");
    }
    serve(stream, standing, admitted, timeouts, Some(names), front).await;
}

/// Admits a connection and serves it.
async fn admit(stream: UnixStream, front: Arc<Front>) {
    let peer = match stream.peer_cred() {
        Ok(cred) => PeerIdentity {
            uid: Some(cred.uid()),
            gid: Some(cred.gid()),
            pid: cred.pid().and_then(|p| u32::try_from(p).ok()),
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the HTTP peer's credentials; closing the connection");
            return;
        }
    };
    let daemon = &front.daemon;
    let policy = daemon.auth();
    let verdict = policy.authorize(peer);
    let admin = verdict.as_ref().is_ok_and(|g| g.admin_uid);
    let standing = Standing::new(peer, policy, verdict);
    let config = daemon.factory.config();
    let admitted = daemon.admission.admit_connection(
        Applicant {
            uid: peer.uid,
            admin,
        },
        daemon.limits.max_connections,
        &config.limits,
    );
    let timeouts = Timeouts {
        header_read: Duration::from_secs(config.http.header_read_timeout_seconds),
        idle: Duration::from_secs(config.http.keep_alive_idle_seconds),
    };
    drop(config);
    match admitted {
        Ok(slot) => serve(stream, standing, Ok(slot), timeouts, None, front).await,
        Err(refusal) => {
            tracing::warn!(%peer, reason = %refusal.message, "HTTP connection refused: limit reached");
            serve(stream, standing, Err(refusal), timeouts, None, front).await;
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
}

/// Serves one connection until the client closes it, a timer closes it, or the drain
/// has finished its response in flight. `loopback` (a TCP connection): the names its
/// requests' `Host` and `Origin` must carry.
async fn serve<S>(
    stream: S,
    standing: Standing,
    slot: Result<ConnectionSlot, WireError>,
    timeouts: Timeouts,
    loopback: Option<Arc<Vec<String>>>,
    front: Arc<Front>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stats = &front.daemon.stats;
    let peer = standing.peer();
    let standing = Arc::new(standing);
    stats.connections.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(%peer, "HTTP connection opened");
    let clock = Arc::new(Clock::new(timeouts));
    let refusal = slot.as_ref().err().cloned();
    let service = {
        let (front, clock, standing) = (front.clone(), clock.clone(), standing.clone());
        let loopback = loopback.clone();
        hyper::service::service_fn(move |request: super::Request| {
            let busy = Busy::start(clock.clone());
            let front = front.clone();
            let misdirected = loopback
                .as_ref()
                .and_then(|names| check_loopback_request(request.headers(), names).err());
            let caller = match &refusal {
                Some(refusal) => Err(refusal.clone()),
                None => standing.caller(front.daemon.auth(), request.headers()),
            };
            let refused = refusal.is_some();
            async move {
                let mut response = match misdirected {
                    Some(why) => {
                        tracing::warn!(reason = %why, "HTTP TCP request refused");
                        super::openai::error_response(&super::error::ApiError::new(
                            provd_client::ErrorCode::PermissionDenied,
                            why,
                        ))
                    }
                    None => {
                        super::route(Call {
                            request,
                            caller,
                            front,
                        })
                        .await
                    }
                };
                if refused {
                    response.headers_mut().insert(
                        http::header::CONNECTION,
                        http::HeaderValue::from_static("close"),
                    );
                }
                // The request stays in flight until its body is sent or dropped.
                let response = response.map(|inner| {
                    http_body_util::BodyExt::boxed_unsync(InFlight { inner, _busy: busy })
                });
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let io = TokioIo::new(ClockedStream {
        inner: stream,
        clock: clock.clone(),
    });
    let mut builder = http1::Builder::new();
    builder.header_read_timeout(None).keep_alive(slot.is_ok());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
                break;
            }
            _ = front.shutdown.stopping(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            why = clock.expired() => {
                tracing::debug!(%peer, reason = why, "closing an HTTP connection");
                break;
            }
        }
    }
    drop(slot);
    stats.connections.fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(%peer, "HTTP connection closed");
}

/// The two timers of a connection, driven by the requests in flight and the bytes read.
struct Clock {
    timeouts: Timeouts,
    state: Mutex<ClockState>,
    changed: Notify,
}

struct ClockState {
    in_flight: usize,
    /// When the connection last had no request in flight.
    idle_since: Instant,
    /// While idle: when the first byte of the next request arrived.
    head_started: Option<Instant>,
}

impl Clock {
    fn new(timeouts: Timeouts) -> Clock {
        Clock {
            timeouts,
            state: Mutex::new(ClockState {
                in_flight: 0,
                idle_since: Instant::now(),
                head_started: None,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockState> {
        self.state.lock().expect("clock lock poisoned")
    }

    /// Resolves when a timer fires, with which.
    async fn expired(&self) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let deadline = {
                let state = self.lock();
                if state.in_flight > 0 {
                    None
                } else if let Some(started) = state.head_started {
                    Some((
                        started + self.timeouts.header_read,
                        "request headers not complete within http.header_read_timeout_seconds",
                    ))
                } else {
                    Some((
                        state.idle_since + self.timeouts.idle,
                        "idle for http.keep_alive_idle_seconds",
                    ))
                }
            };
            match deadline {
                Some((at, why)) => tokio::select! {
                    _ = tokio::time::sleep_until(at) => return why,
                    _ = changed => {}
                },
                None => changed.await,
            }
        }
    }

    fn bytes_read(&self) {
        let mut state = self.lock();
        if state.in_flight == 0 && state.head_started.is_none() {
            state.head_started = Some(Instant::now());
            drop(state);
            self.changed.notify_waiters();
        }
    }
}

/// A request in flight; the connection is idle again when the last one is dropped.
struct Busy(Arc<Clock>);

impl Busy {
    fn start(clock: Arc<Clock>) -> Busy {
        {
            let mut state = clock.lock();
            state.in_flight += 1;
            state.head_started = None;
        }
        clock.changed.notify_waiters();
        Busy(clock)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut state = self.0.lock();
            state.in_flight -= 1;
            if state.in_flight == 0 {
                state.idle_since = Instant::now();
                state.head_started = None;
            }
        }
        self.0.changed.notify_waiters();
    }
}

/// A response body that keeps its request in flight until it is sent or dropped; its
/// size is the inner body's, so a whole body keeps its `content-length`.
struct InFlight {
    inner: super::Body,
    _busy: Busy,
}

impl http_body::Body for InFlight {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, telling the clock when bytes arrive.
struct ClockedStream<S> {
    inner: S,
    clock: Arc<Clock>,
}

impl<S: AsyncRead + Unpin> AsyncRead for ClockedStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClockedStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
