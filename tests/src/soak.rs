//! The soak: many connections running many generations of numbered chunks against one
//! daemon, with random cancels, dropped generations and clients that vanish mid-stream,
//! every stream checked chunk by chunk and the daemon's RSS sampled throughout.
//!
//! What is checked:
//!
//! - every generation read to its end has every chunk exactly once and in order
//!   (chunk *i* is `"i "` with index *i*), and a done that agrees (chunk count, usage,
//!   finish reason);
//! - every other generation the client still reads ends with done (a cancel that lost
//!   the race) or a typed error: `cancelled`, carrying the number of chunks received;
//! - generations the client abandoned (dropped, or on a connection that vanished) were
//!   checked up to that point, and the daemon ends with no stream running and no
//!   connection left but the observer's, its counters matching what was started;
//! - the daemon's RSS in the last tenth of the run, after a warm-up, is at most 5% above
//!   its RSS in the first tenth.
//!
//! Randomness comes from a seeded xorshift generator, so a failing run can be repeated
//! with its seed (the timing of a real daemon still varies between runs).
//!
//! The test suite runs a short soak (`tests/tests/soak.rs`); `provd-soak` runs a long one
//! (see the README's Benchmark section).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use provd_client::frame;
use provd_client::message::{self, Chunk, Envelope, GenerateDone, Hello, PROTOCOL_VERSION};
use provd_client::{Client, ErrorCode, FinishReason, GenerateEvent};
use tokio::io::{AsyncWriteExt, BufReader};

use crate::{numbered, rss_kib, Daemon};

/// Failures kept word for word; more are only counted.
const MAX_FAILURE_MESSAGES: usize = 20;
/// The share of the run's RSS samples that is warm-up and not compared.
const WARM_UP_FRACTION: f64 = 0.1;
/// Fewer RSS samples than this cannot be split into meaningful tenths.
pub const MIN_RSS_SAMPLES: usize = 20;
/// How much the RSS of the last tenth may exceed the first tenth's.
pub const RSS_GROWTH_LIMIT: f64 = 0.05;

/// How hard and how long to soak.
#[derive(Clone, Debug)]
pub struct Options {
    /// Connections through `provd-client`, each running `streams` generations at once.
    pub connections: usize,
    /// Generations at once per connection (at most the daemon's
    /// `max_streams_per_connection`).
    pub streams: usize,
    /// Connections that speak the protocol raw and vanish mid-stream, at once.
    pub vanishing: usize,
    /// Stop starting generations after this long…
    pub duration: Option<Duration>,
    /// …or after this many, whichever comes first.
    pub generations: Option<u64>,
    /// Chunks per generation: uniformly 1 to this.
    pub max_chunks: u32,
    /// Pause between chunks: none for half the generations, else 1 ms to this.
    pub max_chunk_delay_ms: u32,
    /// Seeds every random choice.
    pub seed: u64,
    /// How often the daemon's RSS is sampled.
    pub rss_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            connections: 32,
            streams: 8,
            vanishing: 4,
            duration: Some(Duration::from_secs(300)),
            generations: None,
            max_chunks: 64,
            max_chunk_delay_ms: 2,
            seed: 0x5eed_cafe_f00d_d00d,
            rss_every: Duration::from_millis(250),
        }
    }
}

/// What a soak did and found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Generations started.
    pub generations: u64,
    /// Read to their done, every chunk checked.
    pub completed: u64,
    /// Cancelled by their client and ended with `cancelled`.
    pub cancelled: u64,
    /// Dropped by their client mid-stream.
    pub dropped: u64,
    /// On a connection that vanished mid-stream.
    pub vanished: u64,
    /// Connections opened (sessions of `provd-client`, and raw ones).
    pub connections: u64,
    /// Chunks received and checked.
    pub chunks: u64,
    /// Wall time.
    pub duration: Duration,
    /// The daemon's CPU time over the run.
    pub daemon_cpu: Duration,
    /// (seconds since start, RSS in KiB).
    pub rss: Vec<(f64, u64)>,
    /// Broken expectations, the first [`MAX_FAILURE_MESSAGES`] of them.
    pub failures: Vec<String>,
    /// How many expectations broke.
    pub failure_count: u64,
}

impl Report {
    /// Mean RSS (KiB) of the first and of the last tenth of the samples after warm-up.
    pub fn rss_first_and_last_tenth(&self) -> (f64, f64) {
        if self.rss.len() < MIN_RSS_SAMPLES {
            return (f64::NAN, f64::NAN);
        }
        let after_warm_up = &self.rss[(self.rss.len() as f64 * WARM_UP_FRACTION) as usize..];
        let tenth = (after_warm_up.len() / 10).max(1);
        let mean =
            |s: &[(f64, u64)]| s.iter().map(|&(_, k)| k as f64).sum::<f64>() / s.len() as f64;
        (
            mean(&after_warm_up[..tenth]),
            mean(&after_warm_up[after_warm_up.len() - tenth..]),
        )
    }

    /// Mean RSS (KiB) of each tenth of the samples after warm-up, in order.
    pub fn rss_tenths(&self) -> Vec<f64> {
        if self.rss.len() < MIN_RSS_SAMPLES {
            return Vec::new();
        }
        let after_warm_up = &self.rss[(self.rss.len() as f64 * WARM_UP_FRACTION) as usize..];
        let n = after_warm_up.len();
        (0..10)
            .map(|i| {
                let part = &after_warm_up[i * n / 10..((i + 1) * n / 10).max(i * n / 10 + 1)];
                part.iter().map(|&(_, k)| k as f64).sum::<f64>() / part.len() as f64
            })
            .collect()
    }

    /// Relative RSS change from the first to the last tenth.
    pub fn rss_growth(&self) -> f64 {
        let (first, last) = self.rss_first_and_last_tenth();
        (last - first) / first
    }

    /// Whether every check passed (too few RSS samples to compare tenths is a failure).
    pub fn passed(&self) -> bool {
        self.failure_count == 0 && self.rss_growth() <= RSS_GROWTH_LIMIT
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let (first, last) = self.rss_first_and_last_tenth();
        let secs = self.duration.as_secs_f64();
        let mut out = vec![
            "| soak | value |".to_owned(),
            "|---|---|".to_owned(),
            format!("| duration | {secs:.1} s |"),
            format!(
                "| generations | {} ({:.0}/s) |",
                self.generations,
                self.generations as f64 / secs
            ),
            format!("| read to done, every chunk exactly once and in order | {} |", self.completed),
            format!("| cancelled, ended with `cancelled` and the count received | {} |", self.cancelled),
            format!("| dropped by the client mid-stream | {} |", self.dropped),
            format!("| on a connection that vanished mid-stream | {} |", self.vanished),
            format!("| connections opened | {} |", self.connections),
            format!("| chunks checked | {} ({:.0}/s) |", self.chunks, self.chunks as f64 / secs),
            format!(
                "| daemon CPU | {:.1} s ({:.1} ms per 1,000 chunks) |",
                self.daemon_cpu.as_secs_f64(),
                self.daemon_cpu.as_secs_f64() * 1e6 / self.chunks.max(1) as f64
            ),
            format!(
                "| daemon RSS, first vs last tenth after warm-up ({} samples) | {:.1} → {:.1} MiB ({:+.1}%, limit +{:.0}%) |",
                self.rss.len(),
                first / 1024.0,
                last / 1024.0,
                self.rss_growth() * 100.0,
                RSS_GROWTH_LIMIT * 100.0
            ),
            format!(
                "| daemon RSS by tenth after warm-up | {} MiB |",
                self.rss_tenths()
                    .iter()
                    .map(|k| format!("{:.1}", k / 1024.0))
                    .collect::<Vec<_>>()
                    .join(" · ")
            ),
            format!("| failures | {} |", self.failure_count),
        ];
        out.extend(self.failures.iter().map(|f| format!("| failure | {f} |")));
        out.join("\n")
    }
}

/// xorshift64*: small, fast, seedable, and plenty for choosing what to do next.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for stream `index` of a run seeded with `seed` (splitmix64 spreads the
    /// seeds so that neighbouring streams do not start alike).
    pub fn new(seed: u64, index: u64) -> Rng {
        let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32
    }
}

/// What the workers share.
struct Shared {
    options: Options,
    started: Instant,
    stop: AtomicBool,
    generations: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    dropped: AtomicU64,
    vanished: AtomicU64,
    connections: AtomicU64,
    chunks: AtomicU64,
    failures: Mutex<Vec<String>>,
    failure_count: AtomicU64,
}

impl Shared {
    /// Takes a generation from the budget; false once the run is over.
    fn claim(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        let over_time = self
            .options
            .duration
            .is_some_and(|d| self.started.elapsed() >= d);
        let n = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let over_count = self.options.generations.is_some_and(|g| n > g);
        if over_time || over_count {
            self.generations.fetch_sub(1, Ordering::Relaxed);
            self.stop.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn fail(&self, what: String) {
        self.failure_count.fetch_add(1, Ordering::Relaxed);
        let mut failures = self.failures.lock().expect("failures lock");
        if failures.len() < MAX_FAILURE_MESSAGES {
            failures.push(what);
        }
    }

    /// A random generation: (chunks, delay between them in ms).
    fn shape(&self, rng: &mut Rng) -> (u32, u32) {
        let chunks = rng.below(self.options.max_chunks) + 1;
        let delay = match rng.below(2) {
            0 => 0,
            _ => rng.below(self.options.max_chunk_delay_ms.max(1)) + 1,
        };
        (chunks, delay)
    }
}

/// What a client does with one generation.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// Reads it to its end.
    Complete,
    /// Cancels it after this many chunks, then reads to its end.
    Cancel(u32),
    /// Drops it after this many chunks.
    Drop(u32),
}

/// Runs a soak against `daemon` (which must serve the built-in mock provider as its
/// default) and returns what happened.
pub async fn run(daemon: &Daemon, options: Options) -> Report {
    let shared = Arc::new(Shared {
        options: options.clone(),
        started: Instant::now(),
        stop: AtomicBool::new(false),
        generations: AtomicU64::new(0),
        completed: AtomicU64::new(0),
        cancelled: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        vanished: AtomicU64::new(0),
        connections: AtomicU64::new(0),
        chunks: AtomicU64::new(0),
        failures: Mutex::new(Vec::new()),
        failure_count: AtomicU64::new(0),
    });
    let pid = daemon.pid();
    let cpu_before = crate::bench::system::cpu_time(pid);
    let observer = daemon.client().await;

    let sampler = {
        let shared = shared.clone();
        let every = options.rss_every;
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(every);
            while !shared.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                samples.push((shared.started.elapsed().as_secs_f64(), rss_kib(pid)));
            }
            samples
        })
    };
    let mut workers = Vec::new();
    for c in 0..options.connections {
        let (shared, socket) = (shared.clone(), daemon.socket.clone());
        workers.push(tokio::spawn(async move {
            connection_worker(&socket, &shared, c as u64).await
        }));
    }
    for v in 0..options.vanishing {
        let (shared, socket) = (shared.clone(), daemon.socket.clone());
        let index = (options.connections + v) as u64 * 1_000_003;
        workers.push(tokio::spawn(async move {
            vanishing_worker(&socket, &shared, index).await
        }));
    }
    for worker in join_all(workers).await {
        if let Err(e) = worker {
            shared.fail(format!("a worker panicked: {e}"));
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    let rss = sampler.await.unwrap_or_default();
    let duration = shared.started.elapsed();

    // Everything the clients left behind must be gone from the daemon: cancelled,
    // dropped and vanished generations included.
    let mut settled = None;
    for _ in 0..1_000_000 {
        let s = observer.status().await.expect("status");
        if s.connections == 1 && s.active_streams == 0 {
            settled = Some(s);
            break;
        }
        tokio::task::yield_now().await;
    }
    match settled {
        None => shared.fail("the daemon never returned to no streams and one connection".into()),
        Some(status) => {
            // A generation cancelled before it reached the provider, or sent by a client
            // that vanished before the daemon read it, is not counted: at most as many.
            let started = shared.generations.load(Ordering::Relaxed);
            let checked = shared.chunks.load(Ordering::Relaxed);
            let sum = |f: fn(&provd_client::message::ProviderMetrics) -> u64| -> u64 {
                status.instances.iter().map(|i| f(&i.metrics)).sum()
            };
            let (requests, active, errors, chunks) = (
                sum(|m| m.requests),
                sum(|m| m.active),
                sum(|m| m.errors),
                sum(|m| m.chunks),
            );
            if requests > started || active != 0 || errors != 0 || chunks < checked {
                shared.fail(format!(
                    "the daemon counted {requests} generations ({active} active, {errors} failed) and {chunks} chunks; \
                     the clients started {started} and checked {checked} chunks"
                ));
            }
        }
    }
    let failures = shared.failures.lock().expect("failures lock").clone();
    Report {
        generations: shared.generations.load(Ordering::Relaxed),
        completed: shared.completed.load(Ordering::Relaxed),
        cancelled: shared.cancelled.load(Ordering::Relaxed),
        dropped: shared.dropped.load(Ordering::Relaxed),
        vanished: shared.vanished.load(Ordering::Relaxed),
        connections: shared.connections.load(Ordering::Relaxed),
        chunks: shared.chunks.load(Ordering::Relaxed),
        duration,
        daemon_cpu: crate::bench::system::cpu_time(pid).saturating_sub(cpu_before),
        rss,
        failures,
        failure_count: shared.failure_count.load(Ordering::Relaxed),
    }
}

/// Sessions of `provd-client` connections, one after another: each runs `streams`
/// generation loops for a random number of generations, then closes.
async fn connection_worker(socket: &std::path::Path, shared: &Shared, index: u64) {
    let mut rng = Rng::new(shared.options.seed, index);
    while !shared.stop.load(Ordering::Relaxed) {
        let client = match Client::connect_as(socket, "provd-soak").await {
            Ok(c) => c,
            Err(e) => {
                shared.fail(format!("connect: {e}"));
                return;
            }
        };
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let per_stream = 20 + rng.below(200);
        let loops = (0..shared.options.streams).map(|s| {
            let rng = Rng::new(rng.next_u64(), s as u64);
            stream_loop(&client, shared, rng, per_stream)
        });
        join_all(loops).await;
    }
}

/// Runs up to `count` generations one after another on `client`.
async fn stream_loop(client: &Client, shared: &Shared, mut rng: Rng, count: u32) {
    for _ in 0..count {
        if !shared.claim() {
            return;
        }
        let (chunks, delay) = shared.shape(&mut rng);
        let plan = match rng.below(100) {
            0..=79 => Plan::Complete,
            80..=91 => Plan::Cancel(rng.below(chunks + 1)),
            _ => Plan::Drop(rng.below(chunks + 1)),
        };
        generation(client, shared, chunks, delay, plan).await;
    }
}

/// One generation through `provd-client`, checked chunk by chunk.
async fn generation(client: &Client, shared: &Shared, chunks: u32, delay: u32, plan: Plan) {
    let what = |detail: String| format!("generation of {chunks} chunks ({plan:?}): {detail}");
    let mut g = match client.generate(numbered(chunks, delay)).await {
        Ok(g) => g,
        Err(e) => return shared.fail(what(format!("generate: {e}"))),
    };
    let mut next = 0u32;
    let mut cancel_sent = false;
    loop {
        match plan {
            Plan::Drop(at) if at == next => {
                drop(g);
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Plan::Cancel(at) if at == next && !cancel_sent => {
                cancel_sent = true;
                match g.cancel_handle().cancel().await {
                    // Not found: it ended before the cancel arrived; its done follows.
                    Ok(()) => {}
                    Err(e) if e.code() == ErrorCode::NotFound => {}
                    Err(e) => return shared.fail(what(format!("cancel: {e}"))),
                }
            }
            _ => {}
        }
        match g.next().await {
            Some(Ok(GenerateEvent::Chunk(c))) => {
                if c.index != next || c.text != format!("{next} ") {
                    return shared.fail(what(format!(
                        "expected chunk {next}, got index {} text {:?}",
                        c.index, c.text
                    )));
                }
                next += 1;
                shared.chunks.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(GenerateEvent::Done(done))) => {
                if let Err(e) = check_done(&done, next, chunks) {
                    return shared.fail(what(e));
                }
                shared.completed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(Err(e)) => {
                let wire = e.to_wire();
                if cancel_sent && wire.code == ErrorCode::Cancelled && wire.chunks == Some(next) {
                    shared.cancelled.fetch_add(1, Ordering::Relaxed);
                } else {
                    shared.fail(what(format!(
                        "after {next} chunks: {e} (chunks {:?})",
                        wire.chunks
                    )));
                }
                return;
            }
            None => return shared.fail(what("the stream ended without done or error".into())),
        }
    }
}

/// A done agrees with what was received: all `chunks` of them, counted in its usage.
fn check_done(done: &GenerateDone, received: u32, chunks: u32) -> Result<(), String> {
    if received != chunks
        || done.chunks != chunks
        || done.usage.completion_tokens != chunks
        || done.finish_reason != FinishReason::Stop
    {
        return Err(format!(
            "done after {received} chunks: chunks {}, completion tokens {}, finish {:?}",
            done.chunks, done.usage.completion_tokens, done.finish_reason
        ));
    }
    Ok(())
}

/// Raw connections, one after another, that start a few generations, read a random
/// number of frames (checking each stream's chunks so far) and vanish: the socket is
/// dropped with the generations running.
async fn vanishing_worker(socket: &std::path::Path, shared: &Shared, index: u64) {
    let mut rng = Rng::new(shared.options.seed, index);
    while !shared.stop.load(Ordering::Relaxed) {
        if let Err(e) = vanishing_session(socket, shared, &mut rng).await {
            shared.fail(format!("vanishing connection: {e}"));
            return;
        }
    }
}

async fn vanishing_session(
    socket: &std::path::Path,
    shared: &Shared,
    rng: &mut Rng,
) -> Result<(), String> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    shared.connections.fetch_add(1, Ordering::Relaxed);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut buf = Vec::new();
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        client: "provd-soak-vanishing".into(),
        token: None,
    };
    write
        .write_all(&message::encode_request(0, "hello", &hello).expect("hello encodes"))
        .await
        .map_err(|e| format!("hello: {e}"))?;
    // (expected chunks, next index) per generation id.
    let mut streams: Vec<(u32, u32, bool)> = Vec::new();
    let count = rng.below(4) + 1;
    for id in 1..=count {
        if !shared.claim() {
            break;
        }
        let (chunks, delay) = shared.shape(rng);
        let request = message::encode_request(id, "generate", &numbered(chunks, delay))
            .expect("a generate request encodes");
        write
            .write_all(&request)
            .await
            .map_err(|e| format!("generate: {e}"))?;
        streams.push((chunks, 0, false));
    }
    if streams.is_empty() {
        return Ok(());
    }
    let total: u32 = streams.iter().map(|s| s.0 + 1).sum();
    let vanish_after = rng.below(total) + 1;
    let mut frames = 0;
    let mut greeted = false;
    while frames < vanish_after && streams.iter().any(|s| !s.2) {
        match frame::read_frame(&mut read, &mut buf, frame::MAX_REPLY_FRAME_BYTES).await {
            Ok(Some(())) => {}
            Ok(None) => return Err("the daemon closed the connection".into()),
            Err(e) => return Err(format!("read: {e}")),
        }
        match Envelope::parse(&buf).map_err(|e| e.to_string())? {
            Envelope::Reply { id: 0, outcome } => {
                outcome.map_err(|e| format!("hello refused: {e}"))?;
                greeted = true;
            }
            Envelope::Reply { id, outcome } => {
                let stream = streams
                    .get_mut(id as usize - 1)
                    .ok_or_else(|| format!("a reply for unknown id {id}"))?;
                let done: GenerateDone =
                    message::decode(outcome.map_err(|e| format!("generation {id} failed: {e}"))?)
                        .map_err(|e| e.to_string())?;
                check_done(&done, stream.1, stream.0)?;
                stream.2 = true;
                shared.completed.fetch_add(1, Ordering::Relaxed);
                frames += 1;
            }
            Envelope::Notification {
                method: "chunk",
                params,
            } => {
                let chunk: Chunk = message::decode(params).map_err(|e| e.to_string())?;
                let stream = streams
                    .get_mut(chunk.id as usize - 1)
                    .ok_or_else(|| format!("a chunk for unknown id {}", chunk.id))?;
                if !greeted || chunk.index != stream.1 || chunk.text != format!("{} ", stream.1) {
                    return Err(format!(
                        "generation {}: expected chunk {}, got index {} text {:?}",
                        chunk.id, stream.1, chunk.index, chunk.text
                    ));
                }
                stream.1 += 1;
                shared.chunks.fetch_add(1, Ordering::Relaxed);
                frames += 1;
            }
            Envelope::Notification { .. } => {}
            Envelope::Request { .. } => return Err("the daemon sent a request".into()),
        }
    }
    let left = streams.iter().filter(|s| !s.2).count() as u64;
    shared.vanished.fetch_add(left, Ordering::Relaxed);
    // Dropping both halves closes the socket with the generations still running.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_is_seeded_and_spreads() {
        let (mut a, mut b) = (Rng::new(7, 0), Rng::new(7, 0));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(Rng::new(7, 0).next_u64(), Rng::new(7, 1).next_u64());
        let mut counts = [0u32; 4];
        for _ in 0..4000 {
            counts[a.below(4) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn rss_tenths_skip_the_warm_up() {
        let mut report = Report {
            rss: (0..100)
                .map(|i| (i as f64, if i < 10 { i } else { 100 }))
                .collect(),
            ..Report::default()
        };
        for s in &mut report.rss[91..] {
            s.1 = 104;
        }
        let (first, last) = report.rss_first_and_last_tenth();
        assert_eq!((first, last), (100.0, 104.0));
        assert!(report.rss_growth() <= RSS_GROWTH_LIMIT);
    }
}
