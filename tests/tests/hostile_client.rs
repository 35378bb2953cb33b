//! A hostile client against the real daemon: thousands of random and mutated frames over
//! many connections, while a well-behaved client beside it keeps generating and pinging.
//!
//! Every hostile frame must be answered as the protocol says (an error notification, a
//! reply carrying its id, or a close of that connection) within the raw connection's I/O
//! timeout, never by a hang; the good client must be served throughout; the daemon must
//! survive with bounded memory, no panic in its log and no connection left behind.
//!
//! The run is deterministic (a seeded xorshift generator). `PROVD_HOSTILE_FRAMES` sets how
//! many frames to send (default [`DEFAULT_FRAMES`], a few seconds) and
//! `PROVD_HOSTILE_SEED` the seed, for longer or different runs:
//! `PROVD_HOSTILE_FRAMES=200000 cargo nextest run -p provd-tests --test hostile_client`;
//! `PROVD_HOSTILE_TRACE=1` prints every frame before it is sent, to find the one that
//! broke something.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use provd_client::frame::{validate, MAX_DEPTH};
use provd_client::message::{self, Envelope, Hello, PROTOCOL_VERSION};
use provd_client::{ErrorCode, GenerateRequest};
use provd_tests::raw::{Frame, RawConn};
use provd_tests::{Daemon, READY_TIMEOUT};
use serde_json::{json, Value};

/// Frames sent when `PROVD_HOSTILE_FRAMES` is not set.
const DEFAULT_FRAMES: usize = 3000;
/// The daemon's frame limit in this test: small, so oversized frames are cheap to announce.
const MAX_FRAME_BYTES: u32 = 64 * 1024;
/// Hostile frames between two checks that the good client was served meanwhile.
const CHECKPOINT_EVERY: usize = 250;
/// The bound on the daemon's memory after the run.
const MAX_RSS_KIB: u64 = 64 * 1024;

const CONFIG: &str = "[daemon]\ndefault_provider = \"mock\"\nmax_frame_bytes = 65536\n\
    keepalive_interval_ms = 0\n\n[providers.mock]\ntype = \"mock\"\ndefault_model = \"mock-1\"\n";

/// xorshift64*: small, fast, deterministic; quality enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Valid requests (method, params) for the mutations to start from.
fn templates() -> Vec<(&'static str, Value)> {
    let generate = serde_json::to_value(GenerateRequest::prompt("tell me something")).unwrap();
    vec![
        (
            "hello",
            json!({"protocol_version": PROTOCOL_VERSION, "client": "hostile"}),
        ),
        ("ping", json!({})),
        ("status", json!({})),
        ("list_providers", json!({})),
        ("list_models", json!({"provider": "mock"})),
        ("cancel", json!({"id": 7})),
        ("generate", generate),
        (
            "generate",
            json!({"provider": "mock", "model": "mock-1", "system": "be brief",
                   "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                   "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "stop": ["x"], "stream": false,
                   "additional_params": {"seed": 1, "nested": {"a": [1, 2]}}}),
        ),
        ("reload", json!({})),
    ]
}

/// Values of the wrong type for any field.
fn junk(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => json!(null),
        1 => json!(-1),
        2 => json!(u64::MAX),
        3 => json!(1.5e300),
        4 => json!("a string"),
        5 => json!([1, "two", null]),
        6 => json!({"deep": {"er": [{}]}}),
        7 => json!(true),
        _ => json!("x".repeat(rng.below(2000))),
    }
}

const FIELDS: &[&str] = &[
    "protocol_version",
    "client",
    "provider",
    "model",
    "prompt",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "additional_params",
    "id",
];

/// `depth` nested one-element arrays around a nil.
fn nested(depth: usize) -> Vec<u8> {
    let mut v = vec![0x91; depth];
    v.push(0xc0);
    v
}

/// What the test sends: a payload behind a length prefix, possibly lying about it.
struct Hostile {
    /// The length prefix.
    declared: u32,
    /// The bytes after it (fewer than declared for a cut frame).
    body: Vec<u8>,
    what: &'static str,
}

impl Hostile {
    fn framed(payload: Vec<u8>, what: &'static str) -> Hostile {
        Hostile {
            declared: payload.len() as u32,
            body: payload,
            what,
        }
    }
}

fn request_payload(id: u32, method: &str, params: &Value) -> Vec<u8> {
    message::encode_request(id, method, params).unwrap()[4..].to_vec()
}

fn hostile_frame(rng: &mut Rng) -> Hostile {
    let templates = templates();
    let (method, params) = rng.pick(&templates).clone();
    let id = rng.below(64) as u32 + 1;
    let valid = request_payload(id, method, &params);
    match rng.below(14) {
        0 => {
            let mut p = valid;
            for _ in 0..=rng.below(8) {
                let at = rng.below(p.len());
                p[at] ^= 1 << rng.below(8);
            }
            Hostile::framed(p, "bit flips")
        }
        1 => {
            let mut p = valid;
            let keep = rng.below(p.len()).max(1);
            p.truncate(keep);
            Hostile::framed(p, "payload cut, prefix honest")
        }
        2 => {
            let cut = rng.below(valid.len());
            Hostile {
                declared: valid.len() as u32,
                body: valid[..cut].to_vec(),
                what: "frame cut short",
            }
        }
        3 => {
            let mut params = params.clone();
            if let Value::Object(map) = &mut params {
                map.insert((*rng.pick(FIELDS)).to_owned(), junk(rng));
            } else {
                params = junk(rng);
            }
            Hostile::framed(request_payload(id, method, &params), "wrong types")
        }
        4 => {
            let over = rng.below(u32::MAX as usize - MAX_FRAME_BYTES as usize) as u32;
            let tail = rng.below(16);
            Hostile {
                declared: MAX_FRAME_BYTES + 1 + over,
                body: rng.bytes(tail),
                what: "huge declared length",
            }
        }
        5 => {
            let depth = 20 + rng.below(200);
            let mut params = params.clone();
            let mut deep = json!(null);
            for _ in 0..depth {
                deep = json!([deep]);
            }
            params["additional_params"] = json!({ "deep": deep });
            let payload = if rng.chance(50) {
                request_payload(id, "generate", &params)
            } else {
                nested(depth)
            };
            Hostile::framed(payload, "deep nesting")
        }
        6 => {
            let len = 1 + rng.below(24);
            let name: String = (0..len)
                .map(|_| char::from(b' ' + (rng.next() % 95) as u8))
                .collect();
            Hostile::framed(request_payload(id, &name, &params), "random method")
        }
        7 => {
            let len = 1 + rng.below(256);
            Hostile::framed(rng.bytes(len), "random bytes")
        }
        8 => {
            let mut p = valid;
            for _ in 0..=rng.below(4) {
                if rng.chance(50) && p.len() > 1 {
                    let at = rng.below(p.len());
                    p.remove(at);
                } else {
                    let at = rng.below(p.len() + 1);
                    p.insert(at, rng.next() as u8);
                }
            }
            Hostile::framed(p, "bytes inserted or removed")
        }
        9 => {
            let envelope = match rng.below(3) {
                0 => rmp_serde::to_vec(&(1u8, id, (), ())).unwrap(),
                1 => rmp_serde::to_vec(&(2u8, "chunk", json!({}))).unwrap(),
                _ => rmp_serde::to_vec(&(rng.below(256) as u8, id, method, ())).unwrap(),
            };
            Hostile::framed(envelope, "wrong envelope kind")
        }
        10 => Hostile::framed(Vec::new(), "empty frame"),
        11 => {
            // Announces more items than follow: a lie that must not make anyone allocate.
            let mut p = vec![0x94, 0x00, 0x01, 0xa8];
            p.extend_from_slice(b"generate");
            p.extend_from_slice(&[0xdf, 0xff, 0xff, 0xff, 0xff]);
            Hostile::framed(p, "forged container length")
        }
        _ => Hostile::framed(valid, "valid request"),
    }
}

/// How the protocol says the daemon answers a frame.
#[derive(Debug, PartialEq)]
enum Expect {
    /// An `error` notification; the connection goes on.
    Notification,
    /// An `error` notification, then the connection closes.
    NotificationThenClose,
    /// The connection closes, maybe after frames (the peer stopped mid-frame).
    Close,
    /// A reply to this id (chunks first, for a generation).
    Reply(u32),
    /// A reply to this id, then the connection closes (the first request was not a valid
    /// hello).
    ReplyThenClose(u32),
    /// A successful hello.
    Greeted(u32),
}

/// Decides the expected answer with the protocol's own rules (the client crate's
/// `validate` and `Envelope::parse`).
fn expect(frame: &Hostile, greeted: bool) -> Expect {
    if frame.declared > MAX_FRAME_BYTES {
        return Expect::NotificationThenClose;
    }
    if frame.body.len() < frame.declared as usize {
        return Expect::Close;
    }
    if frame.declared == 0 {
        return Expect::Notification;
    }
    let payload = &frame.body;
    if validate(payload, MAX_DEPTH).is_err() {
        return Expect::Notification;
    }
    let Ok(Envelope::Request { id, method, params }) = Envelope::parse(payload) else {
        return Expect::Notification;
    };
    if greeted {
        return Expect::Reply(id);
    }
    let hello = (method == "hello")
        .then(|| message::decode::<Hello>(params).ok())
        .flatten();
    match hello {
        Some(h) if h.protocol_version == PROTOCOL_VERSION => Expect::Greeted(id),
        _ => Expect::ReplyThenClose(id),
    }
}

/// Reads until the answer `expect` describes; returns whether the connection is still
/// usable. Panics on any other answer, and (through the connection's I/O timeout) on a
/// hang.
fn await_answer(conn: &mut RawConn, expect: &Expect, what: &str) -> bool {
    loop {
        let frame = conn.read_frame();
        match (expect, frame) {
            (Expect::Close, None) => return false,
            (Expect::Close, Some(_)) => {}
            (
                Expect::Notification | Expect::NotificationThenClose,
                Some(Frame::Notification(m, p)),
            ) if m == "error" => {
                assert_eq!(p["code"], ErrorCode::ProtocolError.as_str(), "{what}: {p}");
                if *expect == Expect::NotificationThenClose {
                    let rest = conn.expect_close();
                    assert!(
                        rest.is_empty(),
                        "{what}: frames after the close notice: {rest:?}"
                    );
                    return false;
                }
                return true;
            }
            (
                Expect::Reply(id) | Expect::ReplyThenClose(id) | Expect::Greeted(id),
                Some(Frame::Notification(m, p)),
            ) if (m == "chunk" || m == "keepalive") && p["id"] == *id => {}
            (Expect::Reply(id), Some(Frame::Result(i, _) | Frame::Error(i, _))) if i == *id => {
                return true
            }
            (Expect::ReplyThenClose(id), Some(Frame::Error(i, e))) if i == *id => {
                assert_eq!(e.code, ErrorCode::ProtocolError, "{what}: {e}");
                let rest = conn.expect_close();
                assert!(
                    rest.is_empty(),
                    "{what}: frames after the refusal: {rest:?}"
                );
                return false;
            }
            (Expect::Greeted(id), Some(Frame::Result(i, _))) if i == *id => return true,
            (expect, frame) => panic!("{what}: expected {expect:?}, got {frame:?}"),
        }
    }
}

/// The good client: generations and pings in a loop until told to stop, each one
/// counted and reported.
fn good_client(
    daemon: &Daemon,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicUsize>,
    tick: mpsc::Sender<()>,
) -> thread::JoinHandle<()> {
    let socket = daemon.socket.clone();
    thread::spawn(move || {
        let client = provd_client::blocking::Client::connect_as(&socket, "good-client")
            .expect("the good client connects");
        while !stop.load(Ordering::Relaxed) {
            let (text, done) = client
                .generate(GenerateRequest::prompt("are you still there?"))
                .expect("the good client's generation starts")
                .collect_text()
                .expect("the good client's generation completes");
            assert!(!text.is_empty() && done.done);
            client.ping().expect("the good client's ping");
            served.fetch_add(1, Ordering::Relaxed);
            // The hostile side may have finished and stopped listening.
            let _ = tick.send(());
        }
    })
}

#[test]
fn a_hostile_client_gets_answers_or_closes_and_the_daemon_serves_on() {
    let frames = env_or("PROVD_HOSTILE_FRAMES", DEFAULT_FRAMES);
    let mut rng = Rng(env_or("PROVD_HOSTILE_SEED", 0x9e37_79b9_7f4a_7c15u64).max(1));
    let trace = std::env::var_os("PROVD_HOSTILE_TRACE").is_some();
    let daemon = Daemon::with_config(CONFIG);

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let (tick, ticks) = mpsc::channel();
    let good = good_client(&daemon, stop.clone(), served.clone(), tick);

    let mut sent: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut connections = 0usize;
    let mut closes = 0usize;
    let mut conn: Option<(RawConn, bool)> = None;
    for n in 0..frames {
        if n % CHECKPOINT_EVERY == 0 {
            // The good client finished a generation since the last checkpoint: it is
            // served while the hostile one runs, not only before or after.
            let before = served.load(Ordering::Relaxed);
            while served.load(Ordering::Relaxed) == before {
                ticks
                    .recv_timeout(READY_TIMEOUT)
                    .expect("the good client is still being served");
            }
        }
        let (mut raw, greeted) = match conn.take() {
            Some(c) => c,
            None => {
                connections += 1;
                if rng.chance(85) {
                    (RawConn::greeted(&daemon.socket), true)
                } else {
                    (RawConn::connect(&daemon.socket), false)
                }
            }
        };
        let frame = hostile_frame(&mut rng);
        *sent.entry(frame.what).or_default() += 1;
        let expected = expect(&frame, greeted);
        if trace {
            eprintln!(
                "#{n} {}: expect {expected:?}; length prefix {}, {} bytes: {:02x?}",
                frame.what,
                frame.declared,
                frame.body.len(),
                &frame.body[..frame.body.len().min(256)]
            );
        }
        // One write: the daemon may close as soon as it has read a lying header, and a
        // second write would then race its close.
        let mut bytes = frame.declared.to_be_bytes().to_vec();
        bytes.extend_from_slice(&frame.body);
        raw.send_bytes(&bytes);
        if expected == Expect::Close {
            raw.shutdown_write();
        }
        if await_answer(&mut raw, &expected, frame.what) {
            let greeted = greeted || matches!(expected, Expect::Greeted(_));
            // Now and then a client just leaves, with whatever it started.
            if !rng.chance(5) {
                conn = Some((raw, greeted));
            }
        } else {
            closes += 1;
        }
    }
    drop(conn);

    stop.store(true, Ordering::Relaxed);
    good.join().expect("the good client never failed");
    let generations = served.load(Ordering::Relaxed);

    let rss_kib = daemon.rss_kib();
    let checker = provd_client::blocking::Client::connect(&daemon.socket).expect("connect");
    checker.ping().expect("the daemon still answers");
    // Every hostile connection is gone: only the checker's remains.
    let mut open = checker.status().expect("status").connections;
    for _ in 0..10_000 {
        if open == 1 {
            break;
        }
        checker.ping().expect("ping");
        open = checker.status().expect("status").connections;
    }
    assert_eq!(open, 1, "connections left open in the daemon");
    let log = daemon.log();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
    eprintln!(
        "hostile client: {frames} frames over {connections} connections ({closes} closed by the \
         daemon or the frame); good client: {generations} generations and pings; daemon RSS \
         {rss_kib} KiB; frames by kind: {sent:?}"
    );
    assert!(
        rss_kib > 0 && rss_kib < MAX_RSS_KIB,
        "daemon RSS {rss_kib} KiB"
    );
}
