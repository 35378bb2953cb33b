//! A scriptable HTTP/1.1 server on loopback that plays a provider's API for tests.
//!
//! Written against raw TCP rather than an HTTP framework so that tests control every byte
//! and every failure: bodies split at odd byte boundaries (each piece its own chunk, sent
//! with TCP_NODELAY), delays, stalls released by the test, truncated bodies, connection
//! resets, and a record of every request received. It reports when a client closes a
//! connection while a response is still in progress, which is how tests observe that a
//! cancel reached the upstream.
//!
//! Provider-specific wire formats (SSE event shapes, error bodies) live in
//! [`crate::apis`]; this module only speaks HTTP.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// Cap on a request head.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Headers with lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// A piece of a response body, or something that happens between pieces.
#[derive(Clone, Debug)]
pub enum Part {
    /// Bytes, sent as one chunk and flushed.
    Bytes(Vec<u8>),
    /// A pause (simulating a slow upstream, never used to synchronise a test).
    Delay(Duration),
    /// Waits until the test calls `notify_one`/`notify_waiters` on it.
    Wait(Arc<Notify>),
    /// Stops sending and keeps the connection open until the client goes away.
    Stall,
    /// Resets the connection (RST) without finishing the body.
    Reset,
    /// Closes the connection without finishing the body.
    Close,
}

/// A scripted response.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers (content-type and framing headers are added).
    pub headers: Vec<(String, String)>,
    /// Content type.
    pub content_type: String,
    /// The body: a whole body is sent with content-length, a streamed one chunked.
    pub body: Vec<Part>,
    /// Stream the body with chunked encoding even if it is one piece.
    pub chunked: bool,
    /// Wait before sending even the status line (a slow first byte).
    pub before_headers: Vec<Part>,
    /// A `content-length` to declare instead of the body's own (a server that lies, or
    /// whose body is then cut short by a `Close`). Only for a body not chunked.
    pub declared_length: Option<usize>,
}

impl Reply {
    /// A JSON body sent whole.
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            content_type: "application/json".into(),
            body: vec![Part::Bytes(body.to_string().into_bytes())],
            chunked: false,
            before_headers: Vec::new(),
            declared_length: None,
        }
    }

    /// A body of any content type sent whole (an HTML page where an API was expected).
    pub fn text(status: u16, content_type: &str, body: &str) -> Reply {
        Reply {
            content_type: content_type.into(),
            body: vec![Part::Bytes(body.as_bytes().to_vec())],
            ..Reply::json(status, &serde_json::Value::Null)
        }
    }

    /// A streamed body of the given content type, from parts.
    pub fn stream(content_type: &str, body: Vec<Part>) -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            content_type: content_type.into(),
            body,
            chunked: true,
            before_headers: Vec::new(),
            declared_length: None,
        }
    }

    /// The same body sent whole with its content-length instead of chunked.
    pub fn whole(mut self) -> Reply {
        self.chunked = false;
        self
    }

    /// Declares `length` as the content-length (the body is then sent whole, not
    /// chunked): with fewer bytes and a `Close`, a body short of its length.
    pub fn declared_length(mut self, length: usize) -> Reply {
        self.chunked = false;
        self.declared_length = Some(length);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the status.
    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    /// Holds the whole response (headers included) behind these parts.
    pub fn after(mut self, parts: Vec<Part>) -> Reply {
        self.before_headers = parts;
        self
    }
}

/// Splits `text` into pieces at every `step` bytes, ignoring UTF-8 boundaries on purpose:
/// the parser under test must cope with a character cut in two.
pub fn split_every(text: &str, step: usize) -> Vec<Part> {
    text.as_bytes()
        .chunks(step.max(1))
        .map(|c| Part::Bytes(c.to_vec()))
        .collect()
}

/// What the server saw happen, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Request number `n` (0-based, over the server's life) arrived.
    Request(usize),
    /// The client closed the connection while the response to request `n` was still
    /// being sent (or held back).
    ClientClosedEarly(usize),
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    /// Connections accepted so far.
    connections: std::sync::atomic::AtomicUsize,
    handler: Box<Handler>,
    seen: mpsc::UnboundedSender<Seen>,
}

/// A running mock upstream. Stops when dropped.
pub struct Upstream {
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    shared: Arc<Shared>,
    seen: tokio::sync::Mutex<mpsc::UnboundedReceiver<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// Starts a server whose every response `handler` decides.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            connections: std::sync::atomic::AtomicUsize::new(0),
            handler: Box::new(handler),
            seen: tx,
        });
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                accept_shared
                    .connections
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(serve(stream, accept_shared.clone()));
            }
        });
        Upstream {
            base_url: format!("http://{addr}"),
            shared,
            seen: tokio::sync::Mutex::new(rx),
            task,
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// How many TCP connections the server has accepted: one per request means the
    /// client never reused a connection.
    pub fn connections(&self) -> usize {
        self.shared
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits for the next thing the server sees.
    pub async fn next_seen(&self) -> Seen {
        tokio::time::timeout(Duration::from_secs(60), self.seen.lock().await.recv())
            .await
            .expect("the upstream saw nothing for 60 s")
            .expect("the upstream stopped")
    }

    /// Waits until the server has seen `wanted`, skipping other events.
    pub async fn wait_for(&self, wanted: Seen) {
        loop {
            if self.next_seen().await == wanted {
                return;
            }
        }
    }
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        let index = {
            let mut requests = shared.requests.lock().unwrap();
            requests.push(request.clone());
            requests.len() - 1
        };
        let _ = shared.seen.send(Seen::Request(index));
        let reply = (shared.handler)(&request);
        match respond(&mut stream, &reply).await {
            Outcome::Complete => {}
            Outcome::ClientGone => {
                let _ = shared.seen.send(Seen::ClientClosedEarly(index));
                return;
            }
            Outcome::Ended => return,
        }
    }
}

async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return None;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let target = request_line.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    buf.drain(..head_end + 4);
    while buf.len() < length {
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..length).collect();
    Some(Recorded {
        method,
        target,
        headers,
        body,
    })
}

enum Outcome {
    /// The response went out whole; the connection may carry another request.
    Complete,
    /// The client closed the connection before the response was complete.
    ClientGone,
    /// The script ended the connection (reset or close).
    Ended,
}

/// Runs `fut` unless the client closes the connection first.
async fn unless_client_leaves<F: std::future::Future>(
    stream: &mut TcpStream,
    fut: F,
) -> Option<F::Output> {
    let mut probe = [0u8; 1];
    tokio::select! {
        out = fut => Some(out),
        // A request never pipelines behind an unfinished response here, so readable
        // means closed (0 bytes) or broken.
        _ = stream.peek(&mut probe) => None,
    }
}

async fn play(stream: &mut TcpStream, part: &Part, chunked: bool) -> Result<(), Outcome> {
    match part {
        Part::Bytes(bytes) => {
            let mut out = Vec::with_capacity(bytes.len() + 16);
            if chunked {
                if bytes.is_empty() {
                    // A zero-length chunk would end the body.
                    return Ok(());
                }
                out.extend_from_slice(format!("{:x}\r\n", bytes.len()).as_bytes());
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(bytes);
            }
            if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
                return Err(Outcome::ClientGone);
            }
        }
        Part::Delay(d) => {
            if unless_client_leaves(stream, tokio::time::sleep(*d))
                .await
                .is_none()
            {
                return Err(Outcome::ClientGone);
            }
        }
        Part::Wait(n) => {
            if unless_client_leaves(stream, n.notified()).await.is_none() {
                return Err(Outcome::ClientGone);
            }
        }
        Part::Stall => {
            unless_client_leaves(stream, std::future::pending::<()>()).await;
            return Err(Outcome::ClientGone);
        }
        Part::Reset => {
            // A zero linger makes close send RST at once; it never blocks, which is what the
            // deprecation warns about for non-zero values.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            return Err(Outcome::Ended);
        }
        Part::Close => {
            let _ = stream.shutdown().await;
            return Err(Outcome::Ended);
        }
    }
    Ok(())
}

async fn respond(stream: &mut TcpStream, reply: &Reply) -> Outcome {
    for part in &reply.before_headers {
        if let Err(outcome) = play(stream, part, false).await {
            return outcome;
        }
    }
    let reason = match reply.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Site Overloaded",
        _ => "Status",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\n",
        reply.status, reply.content_type
    );
    for (n, v) in &reply.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    if reply.chunked {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
    } else {
        let length: usize = reply.declared_length.unwrap_or_else(|| {
            reply
                .body
                .iter()
                .map(|p| match p {
                    Part::Bytes(b) => b.len(),
                    _ => 0,
                })
                .sum()
        });
        head.push_str(&format!("content-length: {length}\r\n\r\n"));
    }
    if stream.write_all(head.as_bytes()).await.is_err() {
        return Outcome::ClientGone;
    }
    for part in &reply.body {
        if let Err(outcome) = play(stream, part, reply.chunked).await {
            return outcome;
        }
    }
    if reply.chunked && stream.write_all(b"0\r\n\r\n").await.is_err() {
        return Outcome::ClientGone;
    }
    let _ = stream.flush().await;
    Outcome::Complete
}
