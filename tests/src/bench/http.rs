//! The HTTP front door (`POST /v1/chat/completions` streamed as SSE) on its Unix socket
//! and on loopback TCP, and the LiteLLM proxy in front of the loopback route, beside the
//! direct and MessagePack paths, on the same mock upstream in the same rounds: time to
//! first chunk, throughput, cancel latency when an HTTP client drops the response, and
//! the daemon's idle RSS with both front doors open.
//!
//! Every HTTP path is driven by one client: hyper's HTTP/1.1 client connection over a
//! `UnixStream` (reqwest cannot dial a Unix socket) or a `TcpStream`, one keep-alive
//! connection per worker, reading the SSE body as the direct path does ([`SseChunks`]).
//! LiteLLM (see [`crate::litellm`]) runs with one worker, from `$PROVD_PYTHON`.

use std::path::PathBuf;
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::load::{self, DaemonPath, DirectPath, PathRun, SseChunks, Timing};
use super::stats::Samples;
use crate::upstream::{Seen, Upstream};

/// The OpenAI route of the front door.
const ROUTE: &str = "/v1/chat/completions";

/// The HTTP socket of a daemon: beside its MessagePack socket (the default).
pub fn socket_of(daemon: &crate::Daemon) -> PathBuf {
    daemon.socket.with_file_name("http.sock")
}

/// Where an HTTP path's requests go. Its Debug names the place, never the token.
#[derive(Clone)]
pub enum Endpoint {
    /// The front door's Unix socket: the peer's uid is the identity.
    Unix(PathBuf),
    /// A server on `127.0.0.1:port` that wants `bearer` as its bearer token: provd's
    /// loopback listener with a provd token, or LiteLLM with its master key.
    Tcp {
        /// The port on 127.0.0.1.
        port: u16,
        /// The bearer token.
        bearer: String,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(socket) => write!(f, "{}", socket.display()),
            Endpoint::Tcp { port, .. } => write!(f, "127.0.0.1:{port} (bearer token redacted)"),
        }
    }
}

/// One HTTP/1.1 connection to `endpoint`, driven by a task of its own; the connection
/// closes when the task is aborted or the sender dropped.
async fn connect(endpoint: &Endpoint) -> (SendRequest<Full<Bytes>>, JoinHandle<()>) {
    match endpoint {
        Endpoint::Unix(socket) => {
            let stream = tokio::net::UnixStream::connect(socket)
                .await
                .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
            handshake(stream).await
        }
        Endpoint::Tcp { port, .. } => {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", *port))
                .await
                .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
            // Chunks are small and must not wait for the next one.
            stream.set_nodelay(true).expect("TCP_NODELAY");
            handshake(stream).await
        }
    }
}

/// HTTP/1.1 over `stream`, its connection driven by a task of its own.
async fn handshake<S>(stream: S) -> (SendRequest<Full<Bytes>>, JoinHandle<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

/// Sends one streamed chat completion for `model` to `endpoint` over `sender` and returns
/// its response's body.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    endpoint: &Endpoint,
    model: &str,
) -> hyper::body::Incoming {
    sender.ready().await.expect("the connection is ready");
    let mut request = hyper::Request::post(ROUTE).header("content-type", "application/json");
    request = match endpoint {
        Endpoint::Unix(_) => request.header("host", "localhost"),
        Endpoint::Tcp { port, bearer } => request
            .header("host", format!("127.0.0.1:{port}"))
            .header("authorization", format!("Bearer {bearer}")),
    };
    let request = request
        .body(Full::new(Bytes::from(
            load::chat_request(model).to_string(),
        )))
        .expect("a request");
    let response = sender.send_request(request).await.expect("a response");
    let status = response.status();
    if status != StatusCode::OK {
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        panic!("{endpoint:?} answered {status}: {body:?}");
    }
    response.into_body()
}

/// Where an HTTP path sends its generations: keep-alive connections to an endpoint.
pub struct HttpPath {
    /// Worker `i` uses connection `i % len`, one request at a time.
    connections: Vec<Mutex<SendRequest<Full<Bytes>>>>,
    tasks: Vec<JoinHandle<()>>,
    /// The tasks of connections opened again after the server closed one.
    spare_tasks: Mutex<Vec<JoinHandle<()>>>,
    endpoint: Endpoint,
    /// The model asked for: `provider/model` of the upstream, or LiteLLM's name for it.
    model: String,
}

impl HttpPath {
    /// Opens `count` keep-alive connections to `endpoint`, for `model`.
    pub async fn open(endpoint: &Endpoint, count: usize, model: &str) -> HttpPath {
        let (mut connections, mut tasks) = (Vec::new(), Vec::new());
        for _ in 0..count {
            let (sender, task) = connect(endpoint).await;
            connections.push(Mutex::new(sender));
            tasks.push(task);
        }
        HttpPath {
            connections,
            tasks,
            spare_tasks: Mutex::new(Vec::new()),
            endpoint: endpoint.clone(),
            model: model.to_owned(),
        }
    }

    /// One generation on worker `worker`'s connection, its body read to the end so
    /// the connection is kept for the next one.
    pub async fn generate(&self, worker: usize) -> Timing {
        let mut sender = self.connections[worker % self.connections.len()]
            .lock()
            .await;
        if sender.ready().await.is_err() {
            // The server closed the idle connection (uvicorn, under LiteLLM, after 5 s
            // while the other paths ran): a new one, as any client would, before the clock.
            let (fresh, task) = connect(&self.endpoint).await;
            *sender = fresh;
            self.spare_tasks.lock().await.push(task);
        }
        let start = Instant::now();
        let mut body = send(&mut sender, &self.endpoint, &self.model).await;
        let mut sse = SseChunks::default();
        let mut done = false;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("the SSE body").into_data() {
                done |= sse.feed(&data, start);
            }
        }
        assert!(done, "the stream ended with [DONE]");
        sse.timing(start, &format!("over HTTP to {:?}", self.endpoint))
    }
}

impl Drop for HttpPath {
    fn drop(&mut self) {
        for task in self.tasks.iter().chain(self.spare_tasks.get_mut().iter()) {
            task.abort();
        }
    }
}

/// One concurrency level, every path, rounds alternating between them.
#[derive(Debug, Default)]
pub struct Level {
    /// Generations in flight at once.
    pub concurrency: usize,
    /// Direct to the upstream.
    pub direct: PathRun,
    /// Through the MessagePack socket (`provd-client`).
    pub daemon: PathRun,
    /// Through the HTTP front door on its Unix socket.
    pub http: PathRun,
    /// Through the HTTP front door on loopback TCP, with a token.
    pub loopback: PathRun,
    /// Through the LiteLLM proxy in front of the loopback route; `None` without it.
    pub litellm: Option<PathRun>,
}

/// The HTTP paths of a level, each with a keep-alive connection per worker.
pub struct HttpPaths<'a> {
    /// The front door's Unix socket.
    pub unix: &'a HttpPath,
    /// The front door on loopback TCP.
    pub loopback: &'a HttpPath,
    /// LiteLLM in front of the loopback route, when it runs.
    pub litellm: Option<&'a HttpPath>,
}

/// Runs `rounds` rounds of each path, direct → MessagePack → HTTP on the Unix socket →
/// HTTP on loopback → LiteLLM, after `warmup` unmeasured ones.
pub async fn level(
    concurrency: usize,
    per_worker: usize,
    warmup: usize,
    rounds: usize,
    upstream: &DirectPath<'_>,
    daemon: &DaemonPath<'_>,
    paths: &HttpPaths<'_>,
) -> Level {
    let clients = daemon.clients;
    let direct_run = |_| load::direct(upstream.http, upstream.url);
    let daemon_run =
        |worker: usize| load::through(&clients[worker % clients.len()], daemon.provider);
    let unix_run = |worker: usize| paths.unix.generate(worker);
    let loopback_run = |worker: usize| paths.loopback.generate(worker);
    for _ in 0..warmup {
        load::round(concurrency, per_worker, direct_run).await;
        load::round(concurrency, per_worker, daemon_run).await;
        load::round(concurrency, per_worker, unix_run).await;
        load::round(concurrency, per_worker, loopback_run).await;
        if let Some(litellm) = paths.litellm {
            load::round(concurrency, per_worker, |w| litellm.generate(w)).await;
        }
    }
    let mut level = Level {
        concurrency,
        litellm: paths.litellm.map(|_| PathRun::default()),
        ..Level::default()
    };
    let cpu = &daemon.cpu;
    for _ in 0..rounds {
        let direct = &mut level.direct;
        direct
            .measure(concurrency, per_worker, cpu, direct_run)
            .await;
        let through = &mut level.daemon;
        through
            .measure(concurrency, per_worker, cpu, daemon_run)
            .await;
        let http = &mut level.http;
        http.measure(concurrency, per_worker, cpu, unix_run).await;
        let loopback = &mut level.loopback;
        loopback
            .measure(concurrency, per_worker, cpu, loopback_run)
            .await;
        if let (Some(run), Some(litellm)) = (&mut level.litellm, paths.litellm) {
            run.measure(concurrency, per_worker, cpu, |w| litellm.generate(w))
                .await;
        }
    }
    level
}

/// From an HTTP client dropping a streamed response after its first chunk (closing its
/// connection, as a client that gives up does) to the upstream seeing its connection
/// closed. `model` routes to `stalling`, which sends one chunk and then waits.
pub async fn cancel_latency(
    rounds: usize,
    endpoint: &Endpoint,
    model: &str,
    stalling: &Upstream,
) -> Samples {
    let mut samples = Samples::new();
    for _ in 0..rounds {
        let index = stalling.requests().len();
        let (mut sender, task) = connect(endpoint).await;
        let mut body = send(&mut sender, endpoint, model).await;
        let mut sse = SseChunks::default();
        let start = Instant::now();
        while sse.chunks() == 0 {
            let frame = body.frame().await.expect("a first chunk");
            if let Ok(data) = frame.expect("the SSE body").into_data() {
                sse.feed(&data, start);
            }
        }
        let start = Instant::now();
        drop(body);
        drop(sender);
        task.abort();
        stalling.wait_for(Seen::ClientClosedEarly(index)).await;
        samples.push(start.elapsed());
    }
    samples
}
