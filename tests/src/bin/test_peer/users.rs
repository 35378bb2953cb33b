//! Roles of an ordinary local user of the daemon, for the admission, authorization and
//! visibility tests: one who holds as many connections or streams as it can, and one
//! who runs a session a test drives line by line. Each talks to `$PROVD_SOCKET` in raw
//! frames, so that a refusal (an error notification, then a close) is seen as it is.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use provd_client::message::{self, Empty, Hello, PROTOCOL_VERSION};
use provd_client::{GenerateRequest, WireError};
use provd_tests::raw::{Frame, RawConn};
use serde::Serialize;

fn socket() -> PathBuf {
    std::env::var_os("PROVD_SOCKET")
        .map(PathBuf::from)
        .expect("provd-test-peer: set PROVD_SOCKET")
}

fn number(arg: Option<&String>, what: &str) -> u32 {
    arg.and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("provd-test-peer: expected {what}"))
}

fn shown(e: &WireError) -> String {
    format!("{}: {}", e.code, e.message)
}

/// Sends a request on `conn`, whatever state its socket is in (a refused connection may
/// be closed already; its refusal is then read, not the write error).
fn send<T: Serialize>(conn: &RawConn, id: u32, method: &str, params: &T) {
    let frame = message::encode_request(id, method, params).expect("encode a request");
    let mut stream = conn.stream();
    let _ = stream.write_all(&frame);
}

/// A connection that said hello (with `$PROVD_TOKEN` if set), or why not: the reply's
/// error or the error notification of a refusal.
fn greeted() -> Result<RawConn, String> {
    let mut conn = RawConn::connect(&socket());
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        client: "provd-test-peer".into(),
        token: std::env::var("PROVD_TOKEN").ok(),
    };
    send(&conn, 0, message::method::HELLO, &hello);
    match conn.read_frame() {
        Some(Frame::Result(0, _)) => Ok(conn),
        Some(Frame::Error(0, e)) => Err(shown(&e)),
        Some(Frame::Notification(m, p)) if m == message::notification::ERROR => Err(format!(
            "{}: {}",
            p["code"].as_str().unwrap_or("?"),
            p["message"].as_str().unwrap_or("?")
        )),
        other => Err(format!("unexpected: {other:?}")),
    }
}

/// A mock generation of `chunks` numbered chunks `delay_ms` apart on `provider`.
fn stream_request(provider: Option<&str>, chunks: u32, delay_ms: u32) -> GenerateRequest {
    let mut request = provd_tests::numbered(chunks, delay_ms);
    request.provider = provider.map(str::to_owned);
    request
}

fn wait_for_stdin_eof() {
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

fn summary(done: usize, word: &str, refusals: &[String]) -> String {
    let mut line = format!("{word} {done} refused {}", refusals.len());
    if let Some(first) = refusals.first() {
        line.push_str(&format!(" first refusal: {first}"));
    }
    line
}

/// `hold N`: opens N connections and says hello on each; prints `held H refused R` (and
/// the first refusal), then keeps them open until stdin closes.
pub fn hold(args: &[String]) {
    let n = number(args.first(), "hold N");
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..n {
        match greeted() {
            Ok(conn) => held.push(conn),
            Err(e) => refused.push(e),
        }
    }
    println!("{}", summary(held.len(), "held", &refused));
    wait_for_stdin_eof();
}

/// `streams N CHUNKS DELAY_MS`: opens N connections and starts one long generation on
/// each; prints `streaming S refused R` (and the first refusal) once each has sent its
/// first chunk or been refused, then holds them until stdin closes.
pub fn streams(args: &[String]) {
    let n = number(args.first(), "streams N CHUNKS DELAY_MS");
    let chunks = number(args.get(1), "CHUNKS");
    let delay = number(args.get(2), "DELAY_MS");
    let mut running = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..n {
        let mut conn = match greeted() {
            Ok(conn) => conn,
            Err(e) => {
                refused.push(format!("connection: {e}"));
                continue;
            }
        };
        send(
            &conn,
            1,
            message::method::GENERATE,
            &stream_request(None, chunks, delay),
        );
        match first_chunk_or_end(&mut conn, 1) {
            Ok(()) => running.push(conn),
            Err(e) => refused.push(e),
        }
    }
    println!("{}", summary(running.len(), "streaming", &refused));
    wait_for_stdin_eof();
}

fn first_chunk_or_end(conn: &mut RawConn, id: u32) -> Result<(), String> {
    loop {
        match conn.read_frame() {
            Some(Frame::Notification(m, p))
                if m == message::notification::CHUNK && p["id"] == id =>
            {
                return Ok(())
            }
            Some(Frame::Error(i, e)) if i == id => return Err(shown(&e)),
            Some(Frame::Result(i, _)) if i == id => return Err("ended before a chunk".into()),
            None => return Err("connection closed".into()),
            Some(_) => {}
        }
    }
}

/// `session`: one connection (hello with `$PROVD_TOKEN` if set), driven by commands on
/// stdin, one result line each on stdout (`ok …` or `error <code>: <message>`):
///
/// - `ping`, `status`, `providers`, `tokens` (`token_list`, an admin request)
/// - `generate [PROVIDER]`: a short generation, to its end
/// - `stream PROVIDER CHUNKS DELAY_MS`: starts a generation, answers at its first chunk
///   (`ok <id>`)
/// - `finish ID`: waits for that generation's end (`ok <chunks>`)
/// - `cancel ID`
///
/// The first line is `ready`, or the hello's error.
pub fn session(_: &[String]) {
    let mut conn = match greeted() {
        Ok(conn) => conn,
        Err(e) => {
            println!("error {e}");
            return;
        }
    };
    println!("ready");
    let mut s = Session {
        next_id: 1,
        chunks: HashMap::new(),
        ended: HashMap::new(),
    };
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let answer = s.run(&mut conn, &words);
        println!("{answer}");
        let _ = std::io::stdout().flush();
    }
}

struct Session {
    next_id: u32,
    /// Chunks seen per generation.
    chunks: HashMap<u32, usize>,
    /// Terminal replies read while waiting for another one.
    ended: HashMap<u32, Frame>,
}

impl Session {
    fn run(&mut self, conn: &mut RawConn, words: &[&str]) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let provider = |i: usize| words.get(i).copied().filter(|p| *p != "-");
        let arg = |i: usize| {
            words
                .get(i)
                .and_then(|w| w.parse::<u32>().ok())
                .unwrap_or(0)
        };
        match words.first().copied().unwrap_or("") {
            "ping" => send(conn, id, message::method::PING, &Empty {}),
            "status" => send(conn, id, message::method::STATUS, &Empty {}),
            "providers" => send(conn, id, message::method::LIST_PROVIDERS, &Empty {}),
            "tokens" => send(conn, id, message::method::TOKEN_LIST, &Empty {}),
            "generate" => send(
                conn,
                id,
                message::method::GENERATE,
                &stream_request(provider(1), 2, 0),
            ),
            "stream" => {
                send(
                    conn,
                    id,
                    message::method::GENERATE,
                    &stream_request(provider(1), arg(2), arg(3)),
                );
                return loop {
                    if self.chunks.get(&id).is_some_and(|c| *c > 0) {
                        break format!("ok {id}");
                    }
                    if let Some(end) = self.ended.remove(&id) {
                        break line(end);
                    }
                    if !self.read_one(conn) {
                        break "error closed".into();
                    }
                };
            }
            "finish" => return self.wait(conn, arg(1), true),
            "cancel" => send(
                conn,
                id,
                message::method::CANCEL,
                &message::CancelParams { id: arg(1) },
            ),
            other => return format!("error unknown command '{other}'"),
        }
        self.wait(conn, id, false)
    }

    /// Waits for the end of request `id`; for a generation (`count`), answers with the
    /// number of its chunks.
    fn wait(&mut self, conn: &mut RawConn, id: u32, count: bool) -> String {
        loop {
            if let Some(end) = self.ended.remove(&id) {
                return match end {
                    Frame::Result(..) if count => {
                        format!("ok {}", self.chunks.get(&id).copied().unwrap_or(0))
                    }
                    end => line(end),
                };
            }
            if !self.read_one(conn) {
                return "error closed".into();
            }
        }
    }

    fn read_one(&mut self, conn: &mut RawConn) -> bool {
        match conn.read_frame() {
            None => false,
            Some(Frame::Notification(m, p)) if m == message::notification::CHUNK => {
                let id = p["id"].as_u64().unwrap_or(0) as u32;
                *self.chunks.entry(id).or_default() += 1;
                true
            }
            Some(Frame::Notification(..)) => true,
            Some(f @ (Frame::Result(id, _) | Frame::Error(id, _))) => {
                self.ended.insert(id, f);
                true
            }
        }
    }
}

fn line(frame: Frame) -> String {
    match frame {
        Frame::Result(_, v) => format!("ok {v}"),
        Frame::Error(_, e) => format!("error {}", shown(&e)),
        Frame::Notification(m, p) => format!("error unexpected {m} {p}"),
    }
}
