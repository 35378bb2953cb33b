//! The async client: one connection, many concurrent requests.
//!
//! A background task reads frames and routes each reply or chunk to the request that is
//! waiting for it, by id; writers share the socket behind an async mutex and write each
//! frame whole, so frames of concurrent requests never interleave.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::{GenericFilePath, ToFsName};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{ErrorCode, WireError};
use crate::frame::{self, FrameError, DEFAULT_MAX_FRAME_BYTES, MAX_DEPTH, MAX_REPLY_FRAME_BYTES};
use crate::message::{
    self, method, notification, CancelParams, Chunk, Empty, Envelope, ErrorNotice, GenerateDone,
    GenerateRequest, Hello, HelloResult, ListModelsParams, ModelList, ProviderList, ReloadResult,
    StatusResult, PROTOCOL_VERSION,
};
use crate::socket::SharedStream;

/// What can go wrong talking to the daemon.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The socket could not be reached (no daemon, wrong path, no permission).
    #[error("cannot connect to provd at {path}: {reason}")]
    Connect {
        /// The socket path tried.
        path: PathBuf,
        /// The OS error.
        reason: String,
        /// The OS error kind, to tell "no daemon" from "not allowed".
        kind: std::io::ErrorKind,
    },
    /// The daemon answered with an error.
    #[error("{0}")]
    Server(WireError),
    /// The connection ended before the answer came.
    #[error("connection to provd lost: {0}")]
    Disconnected(String),
    /// The daemon sent bytes this client cannot understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The request was refused before it was sent (too large, not encodable).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A client-side deadline ([`ConnectOptions`]) passed before the daemon answered: the
    /// message names the step and the deadline.
    #[error("{0}")]
    TimedOut(String),
    /// The socket, or the process listening on it, is not one that only the client's own
    /// user, root or the socket directory's owner can have put there: another local user
    /// may be posing as the daemon to collect what the client would send. Nothing was sent.
    #[cfg(unix)]
    #[error("refusing to talk to provd at {}, nothing was sent: {reason}", path.display())]
    UntrustedDaemon {
        /// The socket path the client was given.
        path: PathBuf,
        /// The path found untrusted, its owner (or the listening process's uid) and the
        /// rule it broke.
        reason: crate::trust::Untrusted,
    },
}

impl ClientError {
    /// The system-wide code for this error, as the C ABI reports it.
    pub fn code(&self) -> ErrorCode {
        match self {
            ClientError::Connect { kind, .. } if *kind == std::io::ErrorKind::PermissionDenied => {
                ErrorCode::PermissionDenied
            }
            // The OS refused the path itself (longer than a socket address holds): the
            // caller's argument is wrong and no retry helps, so not "unavailable".
            ClientError::Connect { kind, .. } if *kind == std::io::ErrorKind::InvalidInput => {
                ErrorCode::InvalidRequest
            }
            ClientError::Connect { .. } | ClientError::Disconnected(_) => ErrorCode::Unavailable,
            ClientError::Server(e) => e.code,
            ClientError::Protocol(_) => ErrorCode::ProtocolError,
            ClientError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            ClientError::TimedOut(_) => ErrorCode::Timeout,
            // Not retryable: the socket has to be fixed, or the impostor removed, first.
            #[cfg(unix)]
            ClientError::UntrustedDaemon { .. } => ErrorCode::PermissionDenied,
        }
    }

    /// The error as the daemon would have sent it, for callers that report one shape.
    pub fn to_wire(&self) -> WireError {
        match self {
            ClientError::Server(e) => e.clone(),
            other => WireError::new(other.code(), other.to_string()),
        }
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => ClientError::Disconnected(e.to_string()),
            FrameError::Truncated { .. } => ClientError::Disconnected(e.to_string()),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// How long the client waits for the daemon before giving up with
/// [`ClientError::TimedOut`] (`timeout` on the wire, `PROVD_TIMEOUT` in C).
///
/// A peer that accepts the connection but never answers (a hung daemon, some other
/// program on the socket) would otherwise hold the caller forever. `None` means no
/// deadline for that step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectOptions {
    connect: Option<Duration>,
    hello: Option<Duration>,
    call: Option<Duration>,
}

impl ConnectOptions {
    /// The defaults: 5 s to connect, 5 s for the hello's answer, no deadline per call.
    pub fn new() -> ConnectOptions {
        ConnectOptions {
            connect: Some(DEFAULT_CONNECT_TIMEOUT),
            hello: Some(DEFAULT_HELLO_TIMEOUT),
            call: None,
        }
    }

    /// The deadline for checking the socket and opening the connection.
    pub fn connect_timeout(mut self, deadline: Option<Duration>) -> ConnectOptions {
        self.connect = deadline;
        self
    }

    /// The deadline for the daemon's answer to the hello, once connected.
    pub fn hello_timeout(mut self, deadline: Option<Duration>) -> ConnectOptions {
        self.hello = deadline;
        self
    }

    /// The deadline of each later request: the whole round trip of a short request
    /// (`ping`, lists, `status`, `cancel`, admin requests), the start of a generation,
    /// and the wait for each next event of a generation (a chunk or its end). A
    /// generation whose next event misses the deadline is cancelled in the daemon and
    /// ends with `timeout`. Default: none (a generation may think for long).
    pub fn call_timeout(mut self, deadline: Option<Duration>) -> ConnectOptions {
        self.call = deadline;
        self
    }

    /// The deadline for connecting, if any.
    pub fn connect_deadline(&self) -> Option<Duration> {
        self.connect
    }

    /// The deadline for the hello's answer, if any.
    pub fn hello_deadline(&self) -> Option<Duration> {
        self.hello
    }

    /// The deadline of each later request, if any.
    pub fn call_deadline(&self) -> Option<Duration> {
        self.call
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions::new()
    }
}

/// How long a client waits, by default, to reach the socket.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits, by default, for the daemon's answer to its hello (the daemon
/// answers at once; only a hung daemon or another program on the socket is silent).
pub const DEFAULT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `step` under `deadline` (none: no limit); a miss is [`ClientError::TimedOut`]
/// naming `what`.
async fn within<T>(
    deadline: Option<Duration>,
    what: impl FnOnce() -> String,
    step: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    match deadline {
        None => step.await,
        Some(d) => match tokio::time::timeout(d, step).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::TimedOut(format!(
                "{} within {} ms (a client-side deadline; raise it with ConnectOptions)",
                what(),
                d.as_millis()
            ))),
        },
    }
}

/// One event of a generation's stream.
#[derive(Clone, Debug, PartialEq)]
pub enum GenerateEvent {
    /// A piece of text.
    Chunk(Chunk),
    /// The end: usage and finish reason. Nothing follows it.
    Done(GenerateDone),
}

type Event = Result<GenerateEvent, ClientError>;

/// How long a failed write waits for the reader to learn why the daemon closed.
const CLOSE_REASON_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

enum Waiter {
    Unary(oneshot::Sender<Result<Vec<u8>, ClientError>>),
    // Unbounded on purpose: the daemon already bounds what it sends per connection, and a
    // bounded queue here would let one unread stream block the reader and so every other
    // request on the connection.
    Stream(mpsc::UnboundedSender<Event>),
}

#[derive(Default)]
struct Routes {
    waiters: HashMap<u32, Waiter>,
    /// Set once the reader has stopped; new requests fail fast with it.
    closed: Option<ClientError>,
    /// The last `error` notification, if no other frame came after it: the daemon's
    /// explanation when the connection then closes.
    last_error: Option<WireError>,
}

struct Shared {
    writer: tokio::sync::Mutex<SharedStream>,
    routes: Arc<Mutex<Routes>>,
    next_id: AtomicU32,
    max_frame_bytes: AtomicU32,
    runtime: tokio::runtime::Handle,
    reader: tokio::task::AbortHandle,
    /// Becomes true when the reader has stopped and `routes.closed` says why.
    reader_done: watch::Receiver<bool>,
    /// [`ConnectOptions::call_timeout`].
    call_timeout: Option<Duration>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The reader holds only the routes, not `Shared`, so it would otherwise outlive
        // every handle and keep the connection open.
        self.reader.abort();
    }
}

/// An async connection to the daemon. Cheap to clone; clones share the connection, and
/// any number of requests may run on it at once.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    hello: Arc<HelloResult>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("daemon", &self.hello)
            .finish()
    }
}

impl Client {
    /// Connects to the daemon at `path` and exchanges hellos.
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        Client::connect_as(path, "provd-client").await
    }

    /// Connects, naming the client in the daemon's logs.
    pub async fn connect_as(path: &Path, client_name: &str) -> Result<Client, ClientError> {
        Client::connect_with_token(path, client_name, None).await
    }

    /// Connects presenting a bearer token (`provd token create`), which narrows what the
    /// connection may use to the token's providers.
    ///
    /// Before anything is written to the socket, the daemon is authenticated
    /// ([`crate::trust`]): the socket's path must be one that only the client's user, root
    /// or the socket directory's owner can have made, and the process listening on it must
    /// run as that directory's owner or root. A socket that fails is
    /// [`ClientError::UntrustedDaemon`]; `$PROVD_SOCKET` or an explicit path does not relax
    /// this.
    ///
    /// Default deadlines apply ([`ConnectOptions::new`]); see [`Client::connect_with_options`].
    pub async fn connect_with_token(
        path: &Path,
        client_name: &str,
        token: Option<&str>,
    ) -> Result<Client, ClientError> {
        Client::connect_with_options(path, client_name, token, &ConnectOptions::new()).await
    }

    /// Connects as [`Client::connect_with_token`] does, with the deadlines of `options`:
    /// reaching the socket, the hello's answer, and each later request. A missed deadline
    /// is [`ClientError::TimedOut`].
    pub async fn connect_with_options(
        path: &Path,
        client_name: &str,
        token: Option<&str>,
        options: &ConnectOptions,
    ) -> Result<Client, ClientError> {
        let connect_err = |e: std::io::Error| ClientError::Connect {
            path: path.to_owned(),
            reason: e.to_string(),
            kind: e.kind(),
        };
        let stream = within(
            options.connect,
            || {
                format!(
                    "cannot connect to provd at {}: no connection",
                    path.display()
                )
            },
            async {
                connect_trusted(path).await.map_err(|e| match e {
                    Refused::Io(e) => connect_err(e),
                    #[cfg(unix)]
                    Refused::Untrusted(reason) => ClientError::UntrustedDaemon {
                        path: path.to_owned(),
                        reason,
                    },
                })
            },
        )
        .await?;
        let send = SharedStream::new(stream);
        let recv = send.clone();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (done_tx, reader_done) = watch::channel(false);
        let reader = tokio::spawn(read_loop(BufReader::new(recv), routes.clone(), done_tx));
        let shared = Arc::new(Shared {
            writer: tokio::sync::Mutex::new(send),
            routes,
            next_id: AtomicU32::new(1),
            max_frame_bytes: AtomicU32::new(DEFAULT_MAX_FRAME_BYTES),
            runtime: tokio::runtime::Handle::current(),
            reader: reader.abort_handle(),
            reader_done,
            call_timeout: options.call,
        });
        let hello: HelloResult = within(
            options.hello,
            || {
                format!(
                    "the process at {} did not answer the hello (is it provd?)",
                    path.display()
                )
            },
            call_with_id(
                &shared,
                0,
                method::HELLO,
                &Hello {
                    protocol_version: PROTOCOL_VERSION,
                    client: client_name.to_owned(),
                    token: token.map(str::to_owned),
                },
            ),
        )
        .await?;
        shared
            .max_frame_bytes
            .store(hello.max_frame_bytes, Ordering::Relaxed);
        Ok(Client {
            shared,
            hello: Arc::new(hello),
        })
    }

    /// What the daemon said about itself in the hello.
    pub fn daemon(&self) -> &HelloResult {
        &self.hello
    }

    /// Sends a `ping` and waits for its reply.
    pub async fn ping(&self) -> Result<(), ClientError> {
        let _: Empty = self.call(method::PING, &Empty {}).await?;
        Ok(())
    }

    /// Lists the configured providers.
    pub async fn list_providers(&self) -> Result<ProviderList, ClientError> {
        self.call(method::LIST_PROVIDERS, &Empty {}).await
    }

    /// Lists models of one provider, or of all when `provider` is `None`.
    pub async fn list_models(&self, provider: Option<&str>) -> Result<ModelList, ClientError> {
        let params = ListModelsParams {
            provider: provider.map(str::to_owned),
        };
        self.call(method::LIST_MODELS, &params).await
    }

    /// The daemon's status: connections, streams, providers and their counters.
    pub async fn status(&self) -> Result<StatusResult, ClientError> {
        self.call(method::STATUS, &Empty {}).await
    }

    /// Who used what: the usage ledger's figures for a window, grouped as `params.by`
    /// says (PROTOCOL.md section 7.9). An admin sees every user; anyone else only their
    /// own uid's generations.
    pub async fn usage(
        &self,
        params: &crate::message::UsageParams,
    ) -> Result<crate::message::UsageReport, ClientError> {
        self.call(method::USAGE, params).await
    }

    /// Asks the daemon to re-read its configuration and credentials (an admin request:
    /// only the daemon's own user and root may). A rejected reload is an error; the
    /// daemon then keeps the configuration in force.
    pub async fn reload(&self) -> Result<ReloadResult, ClientError> {
        self.call(method::RELOAD, &Empty {}).await
    }

    /// Sends any request and decodes its result: the admin requests (`creds_*`,
    /// `token_*`, `key_rotate`, `shutdown`) go through here.
    pub async fn request<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, ClientError> {
        self.call(method, params).await
    }

    /// Starts a generation. Chunks arrive through the returned [`Generation`]; dropping it
    /// before its end cancels the generation in the daemon.
    pub async fn generate(&self, request: GenerateRequest) -> Result<Generation, ClientError> {
        let id = self.shared.allocate_id();
        let frame = message::encode_request(id, method::GENERATE, &request)
            .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared.register(id, Waiter::Stream(tx))?;
        let sent = within(
            self.shared.call_timeout,
            || "the daemon did not take the generate request".to_owned(),
            self.shared.send(&frame),
        )
        .await;
        if let Err(e) = sent {
            self.shared.unregister(id);
            return Err(e);
        }
        Ok(Generation {
            id,
            rx,
            shared: self.shared.clone(),
            finished: false,
        })
    }

    /// Cancels generation `id` (as returned by [`Generation::id`]).
    pub async fn cancel(&self, id: u32) -> Result<(), ClientError> {
        cancel(&self.shared, id).await
    }

    async fn call<P: Serialize, R: DeserializeOwned>(
        &self,
        method: &str,
        params: &P,
    ) -> Result<R, ClientError> {
        let id = self.shared.allocate_id();
        timed_call(&self.shared, id, method, params).await
    }
}

/// Why [`connect_trusted`] gave no stream.
enum Refused {
    Io(std::io::Error),
    #[cfg(unix)]
    Untrusted(crate::trust::Untrusted),
}

/// Connects to the daemon at `path` once the socket and the process listening on it pass
/// the trust rule; nothing has been written to the stream it returns.
#[cfg(unix)]
async fn connect_trusted(path: &Path) -> Result<Stream, Refused> {
    use std::os::fd::AsFd;

    use crate::trust::{self, TrustError};
    // A path longer than a socket address holds is the caller's mistake whether or not it
    // exists; say so before looking for it.
    std::os::unix::net::SocketAddr::from_pathname(path).map_err(Refused::Io)?;
    let trusted = trust::check_socket(path, trust::effective_uid()).map_err(|e| match e {
        TrustError::Io { kind, message, .. } => Refused::Io(std::io::Error::new(kind, message)),
        TrustError::Untrusted(u) => Refused::Untrusted(u),
    })?;
    // The resolved path, so the socket connected to is the one checked.
    let name = trusted
        .real_path
        .as_path()
        .to_fs_name::<GenericFilePath>()
        .map_err(Refused::Io)?;
    let stream = Stream::connect(name).await.map_err(Refused::Io)?;
    let Stream::UdSocket(uds) = &stream;
    let peer = trust::peer_uid(uds.as_fd()).map_err(Refused::Io)?;
    // Dropping the stream on a refusal closes it with nothing sent.
    trusted.check_peer(peer).map_err(Refused::Untrusted)?;
    Ok(stream)
}

/// Windows named pipes have no directory owner or mode for the trust rule to check; the
/// pipe server's identity is not checked either (Windows is not built or tested here).
#[cfg(not(unix))]
async fn connect_trusted(path: &Path) -> Result<Stream, Refused> {
    let name = path.to_fs_name::<GenericFilePath>().map_err(Refused::Io)?;
    Stream::connect(name).await.map_err(Refused::Io)
}

async fn cancel(shared: &Shared, id: u32) -> Result<(), ClientError> {
    let req_id = shared.allocate_id();
    let _: Empty = timed_call(shared, req_id, method::CANCEL, &CancelParams { id }).await?;
    Ok(())
}

/// A request under the connection's per-call deadline. The waiter is removed when the
/// deadline passes, so a late reply is dropped.
async fn timed_call<P: Serialize, R: DeserializeOwned>(
    shared: &Shared,
    id: u32,
    method: &str,
    params: &P,
) -> Result<R, ClientError> {
    let result = within(
        shared.call_timeout,
        || format!("the daemon did not answer {method}"),
        call_with_id(shared, id, method, params),
    )
    .await;
    if matches!(result, Err(ClientError::TimedOut(_))) {
        shared.unregister(id);
    }
    result
}

async fn call_with_id<P: Serialize, R: DeserializeOwned>(
    shared: &Shared,
    id: u32,
    method: &str,
    params: &P,
) -> Result<R, ClientError> {
    let frame = message::encode_request(id, method, params)
        .map_err(|e| ClientError::InvalidRequest(e.to_string()))?;
    let (tx, rx) = oneshot::channel();
    shared.register(id, Waiter::Unary(tx))?;
    if let Err(e) = shared.send(&frame).await {
        shared.unregister(id);
        return Err(e);
    }
    let bytes = rx
        .await
        .map_err(|_| ClientError::Disconnected("the reader stopped".into()))??;
    message::decode(&bytes).map_err(|e| ClientError::Protocol(format!("{method} result: {e}")))
}

impl Shared {
    fn allocate_id(&self) -> u32 {
        loop {
            // Id 0 is the hello's; skipping it on wrap-around keeps replies unambiguous.
            // An id still in flight (a generation running since the last wrap-around) is
            // skipped too: the daemon refuses a duplicate, and its answer must not be
            // confused with the running request's.
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0
                && !self
                    .routes
                    .lock()
                    .expect("routes lock poisoned")
                    .waiters
                    .contains_key(&id)
            {
                return id;
            }
        }
    }

    fn register(&self, id: u32, waiter: Waiter) -> Result<(), ClientError> {
        let mut routes = self.routes.lock().expect("routes lock poisoned");
        if let Some(reason) = &routes.closed {
            return Err(reason.clone());
        }
        routes.waiters.insert(id, waiter);
        Ok(())
    }

    fn unregister(&self, id: u32) -> bool {
        let mut routes = self.routes.lock().expect("routes lock poisoned");
        routes.waiters.remove(&id).is_some()
    }

    async fn send(&self, frame: &[u8]) -> Result<(), ClientError> {
        let payload = frame.len() - frame::HEADER_BYTES;
        let max = self.max_frame_bytes.load(Ordering::Relaxed);
        if payload > max as usize {
            return Err(ClientError::InvalidRequest(format!(
                "request of {payload} bytes exceeds the daemon's max_frame_bytes of {max}"
            )));
        }
        let mut writer = self.writer.lock().await;
        let result = async {
            frame::write_frame(&mut *writer, frame).await?;
            writer.flush().await
        }
        .await;
        drop(writer);
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .close_reason(ClientError::Disconnected(e.to_string()))
                .await),
        }
    }

    /// Why the connection is unusable. A write fails when the daemon has closed the
    /// connection, and the daemon may have said why just before (a full house, a protocol
    /// error); that explanation beats the bare "broken pipe", so wait briefly for the
    /// reader to finish reading it.
    async fn close_reason(&self, fallback: ClientError) -> ClientError {
        let mut done = self.reader_done.clone();
        let _ = tokio::time::timeout(CLOSE_REASON_WAIT, done.wait_for(|d| *d)).await;
        let routes = self.routes.lock().expect("routes lock poisoned");
        routes.closed.clone().unwrap_or(fallback)
    }
}

async fn read_loop(
    mut reader: BufReader<SharedStream>,
    routes: Arc<Mutex<Routes>>,
    done: watch::Sender<bool>,
) {
    let mut buf = Vec::new();
    // A lost connection is `Disconnected` (unavailable); bytes that are not provd frames
    // are `Protocol` (protocol_error), as the C header promises for framing errors.
    let reason = loop {
        match frame::read_frame(&mut reader, &mut buf, MAX_REPLY_FRAME_BYTES).await {
            Ok(None) => {
                break ClientError::Disconnected("the daemon closed the connection".to_owned())
            }
            Ok(Some(())) => {}
            Err(e) => break ClientError::from(e),
        }
        if let Err(e) = route(&buf, &routes) {
            break match ClientError::from(e) {
                ClientError::Protocol(e) => {
                    ClientError::Protocol(format!("the daemon sent an unreadable frame: {e}"))
                }
                other => other,
            };
        }
    };
    let (waiters, reason) = {
        let mut routes = routes.lock().expect("routes lock poisoned");
        // An error notification that came before the close explains it better.
        let reason = match routes.last_error.take() {
            Some(explained) => ClientError::Server(explained),
            None => reason,
        };
        let reason = routes.closed.get_or_insert(reason).clone();
        (std::mem::take(&mut routes.waiters), reason)
    };
    for (_, waiter) in waiters {
        let err = reason.clone();
        match waiter {
            Waiter::Unary(tx) => drop(tx.send(Err(err))),
            Waiter::Stream(tx) => drop(tx.send(Err(err))),
        }
    }
    let _ = done.send(true);
}

fn route(bytes: &[u8], routes: &Mutex<Routes>) -> Result<(), FrameError> {
    frame::validate(bytes, MAX_DEPTH)?;
    let envelope = Envelope::parse(bytes)?;
    // Any frame after an error notification shows that the connection survived it.
    routes.lock().expect("routes lock poisoned").last_error = None;
    match envelope {
        Envelope::Reply { id, outcome } => {
            let waiter = routes
                .lock()
                .expect("routes lock poisoned")
                .waiters
                .remove(&id);
            match waiter {
                Some(Waiter::Unary(tx)) => {
                    let _ = tx.send(outcome.map(<[u8]>::to_vec).map_err(ClientError::Server));
                }
                Some(Waiter::Stream(tx)) => {
                    let event = match outcome {
                        Ok(bytes) => message::decode::<GenerateDone>(bytes)
                            .map(GenerateEvent::Done)
                            .map_err(|e| ClientError::Protocol(format!("generate result: {e}"))),
                        Err(e) => Err(ClientError::Server(e)),
                    };
                    let _ = tx.send(event);
                }
                // A reply for a request nobody waits for any more (a dropped generation).
                None => {}
            }
        }
        Envelope::Notification { method, params } if method == notification::CHUNK => {
            let chunk: Chunk = message::decode(params)?;
            let routes = routes.lock().expect("routes lock poisoned");
            if let Some(Waiter::Stream(tx)) = routes.waiters.get(&chunk.id) {
                let _ = tx.send(Ok(GenerateEvent::Chunk(chunk)));
            }
        }
        Envelope::Notification { method, params } if method == notification::ERROR => {
            let notice: ErrorNotice = message::decode(params)?;
            // One about a request (a refused duplicate id) concerns a request this client
            // never sends, as it reuses no id in flight; it leaves the running request
            // with that id alone and explains no close.
            if notice.id.is_none() {
                // Not every error notification ends the connection (a malformed frame
                // does not); remember it as the explanation in case the close follows.
                routes.lock().expect("routes lock poisoned").last_error = Some(notice.error());
                return Ok(());
            }
        }
        // Notifications added by newer daemons (keep-alives, progress) are skippable.
        Envelope::Notification { .. } => {}
        Envelope::Request { method, .. } => {
            return Err(FrameError::Invalid(format!(
                "the daemon sent a request ({method}); clients serve none"
            )))
        }
    }
    Ok(())
}

/// A running generation: a stream of [`GenerateEvent`]s that ends after `Done` or an
/// error. Dropping it before then cancels the generation in the daemon.
pub struct Generation {
    id: u32,
    rx: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Shared>,
    finished: bool,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("finished", &self.finished)
            .finish()
    }
}

impl Generation {
    /// The request id, as used by `cancel`.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The next event, or `None` after the terminal one. Under a
    /// [`ConnectOptions::call_timeout`], a next event that does not come in time ends the
    /// generation with [`ClientError::TimedOut`] and cancels it in the daemon.
    pub async fn next(&mut self) -> Option<Event> {
        let Some(deadline) = self.shared.call_timeout.filter(|_| !self.finished) else {
            return std::future::poll_fn(|cx| self.poll_event(cx)).await;
        };
        match tokio::time::timeout(deadline, std::future::poll_fn(|cx| self.poll_event(cx))).await {
            Ok(event) => event,
            Err(_) => {
                self.cancel_in_daemon();
                Some(Err(ClientError::TimedOut(format!(
                    "generation {} had no next event within {} ms (a client-side \
                     deadline; it was cancelled)",
                    self.id,
                    deadline.as_millis()
                ))))
            }
        }
    }

    /// Stops routing events here and asks the daemon to cancel, once.
    fn cancel_in_daemon(&mut self) {
        let was_running = !self.finished;
        self.finished = true;
        if !was_running || !self.shared.unregister(self.id) {
            return;
        }
        let shared = self.shared.clone();
        let id = self.id;
        // Best effort: if the connection is gone, the daemon has cancelled it already.
        self.shared.runtime.spawn(async move {
            let _ = cancel(&shared, id).await;
        });
    }

    /// A handle that can cancel this generation from another task or thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        CancelHandle {
            id: self.id,
            shared: self.shared.clone(),
        }
    }

    /// Reads to the end and returns the whole text with the terminal result.
    pub async fn collect_text(mut self) -> Result<(String, GenerateDone), ClientError> {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            match event? {
                GenerateEvent::Chunk(c) => text.push_str(&c.text),
                GenerateEvent::Done(done) => {
                    if let Some(t) = &done.text {
                        text.push_str(t);
                    }
                    return Ok((text, done));
                }
            }
        }
        Err(ClientError::Disconnected(
            "the generation ended without a terminal frame".into(),
        ))
    }

    /// Reads to the end and returns everything the generation produced: its text, its
    /// shown reasoning and its terminal result, which holds the assembled tool calls and
    /// the provider state ([`Collected::tool_calls`], [`Collected::turn`]). Works the same
    /// for `stream: false`, whose text and reasoning come whole in the result.
    pub async fn collect(mut self) -> Result<Collected, ClientError> {
        let mut text = String::new();
        let mut reasoning = String::new();
        while let Some(event) = self.next().await {
            match event? {
                GenerateEvent::Chunk(c) => {
                    text.push_str(&c.text);
                    if let Some(r) = &c.reasoning {
                        reasoning.push_str(r);
                    }
                }
                GenerateEvent::Done(done) => {
                    text.push_str(done.text.as_deref().unwrap_or_default());
                    reasoning.push_str(done.reasoning.as_deref().unwrap_or_default());
                    return Ok(Collected {
                        text,
                        reasoning,
                        done,
                    });
                }
            }
        }
        Err(ClientError::Disconnected(
            "the generation ended without a terminal frame".into(),
        ))
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                if !matches!(event, Ok(GenerateEvent::Chunk(_))) {
                    self.finished = true;
                }
                Poll::Ready(Some(event))
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Err(ClientError::Disconnected(
                    "the connection closed mid-generation".into(),
                ))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures_core::Stream for Generation {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel_in_daemon();
    }
}

/// Everything a generation produced, read to its end by [`Generation::collect`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    /// The answer's text: the text chunks joined, or the whole text of `stream: false`.
    pub text: String,
    /// The reasoning the model showed (empty unless `reasoning.show` was asked).
    pub reasoning: String,
    /// The terminal result: usage, finish reason, tool calls, provider state.
    pub done: GenerateDone,
}

impl Collected {
    /// The tool calls the model made, assembled, in order (empty unless the finish
    /// reason is [`FinishReason::ToolCalls`](crate::FinishReason::ToolCalls)).
    pub fn tool_calls(&self) -> &[crate::content::ToolCall] {
        &self.done.tool_calls
    }

    /// The assistant turn to send back in the next request: the text, the tool calls
    /// and the provider state ([`Message::from_done`](crate::Message::from_done)).
    pub fn turn(&self) -> crate::message::Message {
        crate::message::Message::from_done(&self.done, self.text.clone())
    }
}

/// Cancels one generation from anywhere (another task, another thread).
#[derive(Clone)]
pub struct CancelHandle {
    id: u32,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CancelHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelHandle")
            .field("id", &self.id)
            .finish()
    }
}

impl CancelHandle {
    /// Asks the daemon to cancel the generation. The generation's stream then ends with a
    /// `cancelled` error (or with its done, if it finished first).
    pub async fn cancel(&self) -> Result<(), ClientError> {
        cancel(&self.shared, self.id).await
    }

    /// The generation's id.
    pub fn id(&self) -> u32 {
        self.id
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_socket_others_could_have_planted_gets_no_connection_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let path = run.join("provd.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        // Anyone may write the directory: anyone could have put this socket there.
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = Client::connect_with_token(&path, "t", Some("pvd_secret"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::PermissionDenied);
        match &err {
            ClientError::UntrustedDaemon { path: p, reason } => {
                assert_eq!(p, &path);
                assert_eq!(reason.rule, crate::trust::Rule::SocketDirectoryWritable);
            }
            other => panic!("expected UntrustedDaemon, got {other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("refusing to talk to provd at")
                && text.contains("nothing was sent")
                && text.contains("mode 777")
                && !text.contains('\n'),
            "{text}"
        );
        // The check comes before connect: the listener never saw a connection.
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        // Once the directory is private again, the same socket is accepted as far as
        // the connection (nothing speaks the protocol on it).
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        listener.set_nonblocking(false).unwrap();
        let accepting = tokio::task::spawn_blocking(move || drop(listener.accept().unwrap()));
        let err = Client::connect(&path).await.unwrap_err();
        accepting.await.unwrap();
        assert!(matches!(err, ClientError::Disconnected(_)), "{err:?}");
    }

    /// A socket in a private directory, so it passes the trust rule.
    fn private_listener() -> (tempfile::TempDir, PathBuf, std::os::unix::net::UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = dir.path().join("provd.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    fn short_hello() -> ConnectOptions {
        ConnectOptions::new().hello_timeout(Some(Duration::from_millis(200)))
    }

    #[tokio::test]
    async fn a_listener_that_never_accepts_times_out_the_hello() {
        // connect() completes from the backlog; nobody ever reads the hello.
        let (_dir, path, _listener) = private_listener();
        let err = Client::connect_with_options(&path, "t", None, &short_hello())
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err:?}");
        let text = err.to_string();
        assert!(text.contains("did not answer the hello"), "{text}");
        assert!(text.contains("200 ms"), "{text}");
    }

    #[tokio::test]
    async fn a_peer_that_accepts_and_stays_silent_times_out_the_hello() {
        let (_dir, path, listener) = private_listener();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let acceptor = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            // Keep the connection open, saying nothing, until the client gave up.
            held_rx.recv().unwrap();
            drop(conn);
        });
        let err = Client::connect_with_options(&path, "t", None, &short_hello())
            .await
            .unwrap_err();
        held_tx.send(()).unwrap();
        acceptor.join().unwrap();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err:?}");
    }

    #[tokio::test]
    async fn a_call_deadline_ends_a_request_the_daemon_never_answers() {
        let (_dir, path, listener) = private_listener();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        // Answers the hello, then reads requests and answers none.
        let peer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            conn.read_exact(&mut len).unwrap();
            let mut hello = vec![0; u32::from_be_bytes(len) as usize];
            conn.read_exact(&mut hello).unwrap();
            let result = HelloResult {
                protocol_version: PROTOCOL_VERSION,
                daemon_version: "test".into(),
                max_frame_bytes: 1 << 20,
                max_streams: 64,
            };
            let reply = message::encode_result(0, &result).unwrap();
            conn.write_all(&reply).unwrap();
            held_rx.recv().unwrap();
        });
        let options = ConnectOptions::new().call_timeout(Some(Duration::from_millis(200)));
        let client = Client::connect_with_options(&path, "t", None, &options)
            .await
            .unwrap();
        assert_eq!(client.daemon().max_streams, 64);
        let err = client.ping().await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err:?}");
        assert!(err.to_string().contains("did not answer ping"), "{err}");
        let mut generation = client
            .generate(GenerateRequest::prompt("hi"))
            .await
            .unwrap();
        let err = generation.next().await.unwrap().unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout, "{err:?}");
        assert!(
            generation.next().await.is_none(),
            "a timed-out generation is over"
        );
        held_tx.send(()).unwrap();
        peer.join().unwrap();
    }

    #[tokio::test]
    async fn bytes_that_are_not_provd_frames_are_a_protocol_error() {
        let (_dir, path, listener) = private_listener();
        let peer = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().unwrap();
            let mut len = [0u8; 4];
            conn.read_exact(&mut len).unwrap();
            // An HTTP server on the wrong socket: its first four bytes announce a frame of
            // about 1.2 GB, more than a client accepts.
            conn.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        });
        let err = Client::connect(&path).await.unwrap_err();
        peer.join().unwrap();
        assert_eq!(err.code(), ErrorCode::ProtocolError, "{err:?}");
    }

    #[test]
    fn an_untrusted_daemon_is_permission_denied_on_the_wire() {
        let reason = crate::trust::Untrusted {
            path: "/tmp/provd-1000".into(),
            owner: 1002,
            mode: 0o700,
            rule: crate::trust::Rule::SocketDirectoryOwner { expected: 1000 },
        };
        let err = ClientError::UntrustedDaemon {
            path: "/tmp/provd-1000/provd.sock".into(),
            reason,
        };
        let wire = err.to_wire();
        assert_eq!(wire.code, ErrorCode::PermissionDenied);
        assert!(!wire.retryable);
        assert!(
            wire.message
                .contains("/tmp/provd-1000 is owned by uid 1002"),
            "{}",
            wire.message
        );
    }
}
