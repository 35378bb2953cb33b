//! Generations direct to the mock upstream versus through the daemon, at a given
//! concurrency: time to first chunk, total time, requests and chunks per second, and the
//! daemon's CPU time per forwarded chunk.
//!
//! Both paths consume the same answer the way an application would: the direct path
//! (reqwest, pooled) splits the SSE body into events and decodes each event's JSON to
//! get its text; the daemon path reads chunk notifications through `provd-client`.
//! Rounds alternate between the paths, so both see the same machine noise.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use provd_client::{Client, GenerateEvent, GenerateRequest};
use serde::Deserialize;

use super::stats::Samples;
use super::system;
use crate::apis::openai;
use crate::upstream::{Part, Reply};

/// Text chunks in every answer of the comparison.
pub const CHUNKS: usize = 200;

/// How long the upstream pauses after its first chunk. A model takes tens of
/// milliseconds per token; without a pause, the first chunk would travel together with
/// the other 199, and time to first chunk would measure how the machine's two cores are
/// shared among upstream, daemon and client while the whole answer is processed.
pub const FIRST_CHUNK_PAUSE: Duration = Duration::from_millis(2);

/// The gap between chunks of the paced answer: a fast model's rate (1,000 tokens/s),
/// several times what hosted models stream at.
pub const PACE: Duration = Duration::from_millis(1);

/// The answer of [`answer`], with [`PACE`] between chunks: a stream the way a model
/// produces it, which leaves the machine's cores idle between chunks.
pub fn paced_answer() -> Reply {
    let mut reply = answer();
    let mut paced = Vec::with_capacity(reply.body.len() * 2);
    for (i, part) in reply.body.drain(..).enumerate() {
        if i > 1 && matches!(part, Part::Bytes(_)) {
            paced.push(Part::Delay(PACE));
        }
        paced.push(part);
    }
    reply.body = paced;
    reply
}

/// The mock upstream's answer: 200 content chunks, finish, usage, `[DONE]`, each event
/// its own HTTP chunk, as the real API sends them; a pause after the first chunk, then
/// the rest as fast as the upstream can send.
pub fn answer() -> Reply {
    let mut parts: Vec<Part> = (0..CHUNKS)
        .map(|i| {
            let delta = serde_json::json!({ "content": format!("{i} ") });
            Part::Bytes(openai::chunk_event("m", delta, None).into_bytes())
        })
        .collect();
    parts.insert(1, Part::Delay(FIRST_CHUNK_PAUSE));
    parts.push(Part::Bytes(
        openai::chunk_event("m", serde_json::json!({}), Some("stop")).into_bytes(),
    ));
    parts.push(Part::Bytes(
        openai::usage_event("m", 1, CHUNKS as u32).into_bytes(),
    ));
    parts.push(Part::Bytes(b"data: [DONE]\n\n".to_vec()));
    Reply::stream("text/event-stream", parts)
}

/// One generation's timing.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// From sending the request to the first text chunk.
    pub first: Duration,
    /// From sending the request to the end.
    pub total: Duration,
    /// Text chunks received.
    pub chunks: usize,
}

#[derive(Deserialize)]
struct ChunkEvent {
    choices: Vec<Choice>,
}

#[derive(Deserialize)]
struct Choice {
    delta: Delta,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
}

/// The streamed chat completion request every OpenAI-dialect path sends.
pub fn chat_request(model: &str) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "q"}],
        "stream": true,
        "stream_options": {"include_usage": true},
    })
}

/// Direct: one streamed chat completion from the upstream, read to `[DONE]`.
pub async fn direct(http: &reqwest::Client, url: &str) -> Timing {
    let start = Instant::now();
    let response = http
        .post(url)
        .json(&chat_request("m"))
        .send()
        .await
        .expect("direct request");
    let mut stream = response.bytes_stream();
    let mut sse = SseChunks::default();
    while let Some(piece) = stream.next().await {
        if sse.feed(&piece.expect("direct body"), start) {
            break;
        }
    }
    sse.timing(start, "directly")
}

/// The text chunks of an OpenAI SSE body, read as an application reads it: the body
/// split into events, each event's JSON decoded to get its text.
#[derive(Debug, Default)]
pub struct SseChunks {
    buf: Vec<u8>,
    first: Option<Duration>,
    chunks: usize,
}

impl SseChunks {
    /// Takes the next piece of the body of a request sent at `start`; true once
    /// `[DONE]` arrived.
    pub fn feed(&mut self, piece: &[u8], start: Instant) -> bool {
        self.buf.extend_from_slice(piece);
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            let data = event[..end]
                .strip_prefix(b"data: ")
                .unwrap_or(&event[..end]);
            if data == b"[DONE]" {
                return true;
            }
            let event: ChunkEvent = serde_json::from_slice(data).expect("a chunk event");
            for choice in event.choices {
                if choice.delta.content.is_some_and(|t| !t.is_empty()) {
                    self.chunks += 1;
                    self.first.get_or_insert_with(|| start.elapsed());
                }
            }
        }
        false
    }

    /// Text chunks so far.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// The generation's timing, now that it ended; every chunk of [`answer`] must
    /// have arrived (`how` names the path in the panic).
    pub fn timing(self, start: Instant, how: &str) -> Timing {
        assert_eq!(self.chunks, CHUNKS, "every chunk arrived {how}");
        Timing {
            first: self.first.expect("a chunk"),
            total: start.elapsed(),
            chunks: self.chunks,
        }
    }
}

/// Through the daemon: client → socket → daemon → upstream, and back.
pub async fn through(client: &Client, provider: &str) -> Timing {
    let start = Instant::now();
    let mut request = GenerateRequest::prompt("q");
    request.provider = Some(provider.to_owned());
    let mut g = client.generate(request).await.expect("generate");
    let (mut first, mut chunks) = (None, 0usize);
    while let Some(event) = g.next().await {
        match event.expect("event") {
            GenerateEvent::Chunk(_) => {
                chunks += 1;
                first.get_or_insert_with(|| start.elapsed());
            }
            GenerateEvent::Done(_) => break,
        }
    }
    assert_eq!(chunks, CHUNKS, "every chunk arrived through provd");
    Timing {
        first: first.expect("a chunk"),
        total: start.elapsed(),
        chunks,
    }
}

/// What one path did over all the rounds of a level.
#[derive(Debug, Default)]
pub struct PathRun {
    /// Time to first chunk, per request.
    pub first: Samples,
    /// Total time, per request.
    pub total: Samples,
    /// Requests completed.
    pub requests: usize,
    /// Chunks received.
    pub chunks: usize,
    /// Wall time of the rounds, summed.
    pub wall: Duration,
    /// The daemon's CPU time during the rounds.
    pub daemon_cpu: Duration,
    /// The benchmark process's CPU time during the rounds, but the upstream's thread:
    /// the client.
    pub client_cpu: Duration,
    /// The mock upstream's thread's CPU time during the rounds.
    pub upstream_cpu: Duration,
}

impl PathRun {
    /// Adds a round's timings and wall time.
    pub fn add(&mut self, timings: Vec<Timing>, wall: Duration) {
        for t in timings {
            self.first.push(t.first);
            self.total.push(t.total);
            self.requests += 1;
            self.chunks += t.chunks;
        }
        self.wall += wall;
    }

    /// Requests per second over the rounds.
    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }

    /// Chunks per second over the rounds.
    pub fn chunks_per_s(&self) -> f64 {
        self.chunks as f64 / self.wall.as_secs_f64()
    }

    /// CPU milliseconds per 1,000 chunks of `cpu`.
    pub fn per_1000_chunks(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e3 / (self.chunks as f64 / 1000.0)
    }

    /// CPU milliseconds per 1,000 chunks, all processes: daemon, client and upstream.
    pub fn total_per_1000_chunks(&self) -> f64 {
        self.per_1000_chunks(self.daemon_cpu + self.client_cpu + self.upstream_cpu)
    }

    /// Runs one round of `run`, charging its wall and CPU times to this path.
    pub async fn measure<F, Fut>(
        &mut self,
        concurrency: usize,
        per_worker: usize,
        cpu: &CpuProbe,
        run: F,
    ) where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Timing>,
    {
        let before = cpu.read();
        let (timings, wall) = round(concurrency, per_worker, run).await;
        let after = cpu.read();
        self.daemon_cpu += after.0.saturating_sub(before.0);
        self.client_cpu += after.1.saturating_sub(before.1);
        self.upstream_cpu += after.2.saturating_sub(before.2);
        self.add(timings, wall);
    }
}

/// Where CPU time is read from: the daemon, this process, and this process's upstream
/// thread.
#[derive(Clone, Copy, Debug)]
pub struct CpuProbe {
    /// The daemon's pid.
    pub daemon_pid: u32,
    /// The thread the mock upstream runs on.
    pub upstream_tid: u32,
}

impl CpuProbe {
    /// (daemon, client: this process but the upstream thread, upstream thread).
    fn read(&self) -> (Duration, Duration, Duration) {
        let me = std::process::id();
        let upstream = system::thread_cpu_time(me, self.upstream_tid);
        let daemon = system::cpu_time(self.daemon_pid);
        (
            daemon,
            system::cpu_time(me).saturating_sub(upstream),
            upstream,
        )
    }
}

/// `concurrency` workers, each running `per_worker` generations back to back; returns
/// every timing and the wall time of the whole round.
pub async fn round<F, Fut>(concurrency: usize, per_worker: usize, run: F) -> (Vec<Timing>, Duration)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Timing>,
{
    let run = &run;
    let start = Instant::now();
    let timings = join_all((0..concurrency).map(|worker| async move {
        let mut timings = Vec::with_capacity(per_worker);
        for _ in 0..per_worker {
            timings.push(run(worker).await);
        }
        timings
    }))
    .await;
    (timings.into_iter().flatten().collect(), start.elapsed())
}

/// One concurrency level, both paths.
#[derive(Debug, Default)]
pub struct Level {
    /// Generations in flight at once.
    pub concurrency: usize,
    /// Whether the upstream streamed at [`PACE`] rather than as fast as it can.
    pub paced: bool,
    /// Client connections the daemon path spreads them over.
    pub connections: usize,
    /// Direct to the upstream.
    pub direct: PathRun,
    /// Through the daemon.
    pub daemon: PathRun,
    /// Ping round trips, each right after a direct generation: in the conditions of
    /// the daemon path's requests, which also follow a direct generation (c = 1 only).
    pub ping: Samples,
}

/// Where the direct path sends its generations.
pub struct DirectPath<'a> {
    /// The pooled HTTP client.
    pub http: &'a reqwest::Client,
    /// The upstream's chat completions URL.
    pub url: &'a str,
}

/// Where the daemon path sends its generations.
pub struct DaemonPath<'a> {
    /// Connections to the daemon; worker `i` uses `clients[i % len]`.
    pub clients: &'a [Client],
    /// The provider id that forwards to the upstream.
    pub provider: &'a str,
    /// Where CPU time is read.
    pub cpu: CpuProbe,
}

/// Runs `rounds` alternating rounds of each path after `warmup` unmeasured ones. With
/// `ping`, each round is direct, through the daemon, direct again, then one ping: the
/// ping, like the generation through the daemon, follows a direct generation during
/// which the daemon was idle. On a virtual machine whose idle CPUs sleep, how recently a
/// process ran changes its wake-up time by tens of microseconds, so a ping taken
/// back to back with others would be a floor the generations never see.
pub async fn level(
    concurrency: usize,
    per_worker: usize,
    warmup: usize,
    rounds: usize,
    ping: bool,
    upstream: &DirectPath<'_>,
    daemon: &DaemonPath<'_>,
) -> Level {
    let clients = daemon.clients;
    let direct_run = |_| direct(upstream.http, upstream.url);
    let daemon_run = |worker: usize| through(&clients[worker % clients.len()], daemon.provider);
    for _ in 0..warmup {
        round(concurrency, per_worker, direct_run).await;
        round(concurrency, per_worker, daemon_run).await;
    }
    let mut level = Level {
        concurrency,
        connections: clients.len().min(concurrency),
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
        if ping {
            level
                .direct
                .measure(concurrency, per_worker, &daemon.cpu, direct_run)
                .await;
            let start = Instant::now();
            clients[0].ping().await.expect("ping");
            level.ping.push(start.elapsed());
        }
    }
    level
}

/// `count` pings back to back on one connection: the protocol's round trip with every
/// process awake.
pub async fn pings(client: &Client, count: usize) -> Samples {
    let mut samples = Samples::new();
    for i in 0..count + count / 10 {
        let start = Instant::now();
        client.ping().await.expect("ping");
        if i >= count / 10 {
            samples.push(start.elapsed());
        }
    }
    samples
}
