//! The HTTP front door (`http.sock`, `POST /v1/chat/completions` streamed as SSE) beside
//! the direct and MessagePack paths, on the same mock upstream in the same rounds: time
//! to first chunk, throughput, cancel latency when an HTTP client drops the response, and
//! the daemon's idle RSS with the HTTP socket open.
//!
//! The HTTP client is hyper's HTTP/1.1 client connection over a `UnixStream` (reqwest
//! cannot dial a Unix socket), one keep-alive connection per worker, and it reads the
//! SSE body as the direct path does ([`SseChunks`]).

use std::path::{Path, PathBuf};
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

/// One HTTP/1.1 connection to `socket`, driven by a task of its own; the connection
/// closes when the task is aborted or the sender dropped.
async fn connect(socket: &Path) -> (SendRequest<Full<Bytes>>, JoinHandle<()>) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

/// Sends one streamed chat completion for `model` and returns its response's body.
async fn send(sender: &mut SendRequest<Full<Bytes>>, model: &str) -> hyper::body::Incoming {
    sender.ready().await.expect("the connection is ready");
    let request = hyper::Request::post(ROUTE)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            load::chat_request(model).to_string(),
        )))
        .expect("a request");
    let response = sender.send_request(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::OK, "the front door answered");
    response.into_body()
}

/// Where the HTTP path sends its generations: keep-alive connections to the front door.
pub struct FrontDoor {
    /// Worker `i` uses connection `i % len`, one request at a time.
    connections: Vec<Mutex<SendRequest<Full<Bytes>>>>,
    tasks: Vec<JoinHandle<()>>,
    /// `provider/model` of the upstream.
    model: String,
}

impl FrontDoor {
    /// Opens `count` keep-alive connections to `socket`, for `model`.
    pub async fn open(socket: &Path, count: usize, model: &str) -> FrontDoor {
        let (mut connections, mut tasks) = (Vec::new(), Vec::new());
        for _ in 0..count {
            let (sender, task) = connect(socket).await;
            connections.push(Mutex::new(sender));
            tasks.push(task);
        }
        FrontDoor {
            connections,
            tasks,
            model: model.to_owned(),
        }
    }

    /// One generation on worker `worker`'s connection, its body read to the end so
    /// the connection is kept for the next one.
    pub async fn generate(&self, worker: usize) -> Timing {
        let mut sender = self.connections[worker % self.connections.len()]
            .lock()
            .await;
        let start = Instant::now();
        let mut body = send(&mut sender, &self.model).await;
        let mut sse = SseChunks::default();
        let mut done = false;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("the SSE body").into_data() {
                done |= sse.feed(&data, start);
            }
        }
        assert!(done, "the stream ended with [DONE]");
        sse.timing(start, "through the HTTP front door")
    }
}

impl Drop for FrontDoor {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// One concurrency level, three paths, rounds alternating between them.
#[derive(Debug, Default)]
pub struct Level {
    /// Generations in flight at once.
    pub concurrency: usize,
    /// Direct to the upstream.
    pub direct: PathRun,
    /// Through the MessagePack socket (`provd-client`).
    pub daemon: PathRun,
    /// Through the HTTP front door.
    pub http: PathRun,
}

/// Runs `rounds` rounds of each path, direct → MessagePack → HTTP, after `warmup`
/// unmeasured ones.
pub async fn level(
    concurrency: usize,
    per_worker: usize,
    warmup: usize,
    rounds: usize,
    upstream: &DirectPath<'_>,
    daemon: &DaemonPath<'_>,
    front: &FrontDoor,
) -> Level {
    let clients = daemon.clients;
    let direct_run = |_| load::direct(upstream.http, upstream.url);
    let daemon_run =
        |worker: usize| load::through(&clients[worker % clients.len()], daemon.provider);
    let http_run = |worker: usize| front.generate(worker);
    for _ in 0..warmup {
        load::round(concurrency, per_worker, direct_run).await;
        load::round(concurrency, per_worker, daemon_run).await;
        load::round(concurrency, per_worker, http_run).await;
    }
    let mut level = Level {
        concurrency,
        ..Level::default()
    };
    for _ in 0..rounds {
        level
            .direct
            .measure(concurrency, per_worker, &daemon.cpu, direct_run)
            .await;
        level
            .daemon
            .measure(concurrency, per_worker, &daemon.cpu, daemon_run)
            .await;
        level
            .http
            .measure(concurrency, per_worker, &daemon.cpu, http_run)
            .await;
    }
    level
}

/// From an HTTP client dropping a streamed response after its first chunk (closing its
/// connection, as a client that gives up does) to the upstream seeing its connection
/// closed. `model` routes to `stalling`, which sends one chunk and then waits.
pub async fn cancel_latency(
    rounds: usize,
    socket: &Path,
    model: &str,
    stalling: &Upstream,
) -> Samples {
    let mut samples = Samples::new();
    for _ in 0..rounds {
        let index = stalling.requests().len();
        let (mut sender, task) = connect(socket).await;
        let mut body = send(&mut sender, model).await;
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
