//! `provd-bench`: round-trip and streaming figures of the real daemon, measured through
//! its socket by the Rust client, printed as a markdown table.
//!
//! ```text
//! cargo build --release -p provd -p provd-tests
//! target/release/provd-bench [--iterations N] [--out FILE]
//! ```
//!
//! Medians and p99 over many sequential iterations after a warm-up; the machine and its
//! noise are the reader's to judge, so the table says how many samples each line has.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use provd_client::{Client, GenerateEvent, GenerateRequest};
use provd_tests::apis::openai;
use provd_tests::upstream::{Part, Reply, Seen, Upstream};
use provd_tests::{numbered, Daemon};

struct Samples {
    name: String,
    unit: &'static str,
    values: Vec<f64>,
}

impl Samples {
    fn new(name: impl Into<String>, unit: &'static str) -> Self {
        Samples {
            name: name.into(),
            unit,
            values: Vec::new(),
        }
    }

    fn push(&mut self, d: Duration) {
        self.values.push(d.as_secs_f64() * 1e6);
    }

    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            self.name,
            self.values.len(),
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(1.0),
            self.unit
        )
    }
}

async fn time_generation(client: &Client, chunks: u32) -> (Duration, Duration) {
    let start = Instant::now();
    let mut g = client
        .generate(numbered(chunks, 0))
        .await
        .expect("generate");
    let mut first = None;
    while let Some(event) = g.next().await {
        match event.expect("event") {
            GenerateEvent::Chunk(_) => {
                first.get_or_insert_with(|| start.elapsed());
            }
            GenerateEvent::Done(_) => break,
        }
    }
    let total = start.elapsed();
    (first.unwrap_or(total), total)
}

/// The machine's floor: a 16-byte round trip over a Unix socket pair to an echo thread,
/// with blocking std I/O and no protocol at all.
fn raw_socket_round_trip(iterations: usize) -> Samples {
    use std::io::{Read, Write};
    let (mut a, mut b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 16];
        while b.read_exact(&mut buf).is_ok() {
            if b.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut samples = Samples::new("raw socket echo, no protocol (machine floor)", "µs");
    let mut buf = [0u8; 16];
    for i in 0..iterations + iterations / 10 {
        let start = Instant::now();
        a.write_all(&buf).expect("write");
        a.read_exact(&mut buf).expect("read");
        if i >= iterations / 10 {
            samples.push(start.elapsed());
        }
    }
    drop(a);
    echo.join().expect("echo thread");
    samples
}

/// Chunks in the streamed answer of the upstream comparison.
const UPSTREAM_CHUNKS: usize = 200;

/// The mock upstream's answer: 200 content chunks, finish, usage, `[DONE]`, each event a
/// separate HTTP chunk as a real API sends them.
fn upstream_answer() -> Reply {
    let texts: Vec<String> = (0..UPSTREAM_CHUNKS).map(|i| format!("{i} ")).collect();
    let mut parts = Vec::new();
    for t in &texts {
        parts.push(Part::Bytes(
            openai::chunk_event("m", serde_json::json!({"content": t}), None).into_bytes(),
        ));
    }
    parts.push(Part::Bytes(
        openai::chunk_event("m", serde_json::json!({}), Some("stop")).into_bytes(),
    ));
    parts.push(Part::Bytes(
        openai::usage_event("m", 1, UPSTREAM_CHUNKS as u32).into_bytes(),
    ));
    parts.push(Part::Bytes(b"data: [DONE]\n\n".to_vec()));
    Reply::stream("text/event-stream", parts)
}

/// Direct: reqwest to the upstream, counting SSE events; returns (first event, all done).
async fn direct_generation(http: &reqwest::Client, url: &str) -> (Duration, Duration) {
    let start = Instant::now();
    let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": true});
    let response = http
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("direct request");
    let mut stream = response.bytes_stream();
    let (mut first, mut events, mut last) = (None, 0usize, 0u8);
    while let Some(piece) = stream.next().await {
        let piece = piece.expect("direct body");
        for &b in piece.iter() {
            if b == b'\n' && last == b'\n' {
                events += 1;
                first.get_or_insert_with(|| start.elapsed());
            }
            last = b;
        }
    }
    assert_eq!(events, UPSTREAM_CHUNKS + 3, "every event arrived");
    (first.expect("an event"), start.elapsed())
}

/// Through the daemon: client → socket → daemon → upstream.
async fn daemon_generation(client: &Client) -> (Duration, Duration) {
    let start = Instant::now();
    let mut g = client
        .generate(GenerateRequest::prompt("q"))
        .await
        .expect("generate");
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
    assert_eq!(chunks, UPSTREAM_CHUNKS);
    (first.expect("a chunk"), start.elapsed())
}

/// The issue-3 comparison: direct vs through the daemon, at concurrency 1 and 64, plus
/// the time from a cancel to the upstream seeing its connection closed.
fn upstream_section(rounds: usize, ping_p50: f64) -> Vec<String> {
    // The upstream gets a runtime (and thread) of its own, so it serves both paths alike.
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("upstream runtime");
    let streaming = upstream_rt.block_on(Upstream::start(|_| upstream_answer()));
    let first_chunk = openai::chunk_event("m", serde_json::json!({"content": "x"}), None);
    let stalling = upstream_rt.block_on(Upstream::start(move |_| {
        Reply::stream(
            "text/event-stream",
            vec![Part::Bytes(first_chunk.clone().into_bytes()), Part::Stall],
        )
    }));
    let config = |base: &str| {
        format!(
            "[daemon]\nkeepalive_interval_ms = 0\ndefault_provider = \"up\"\n\
             [providers.up]\ntype = \"openai-compatible\"\nbase_url = \"{base}/v1\"\ndefault_model = \"m\"\nretry_attempts = 0\n\
             [providers.stall]\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\ndefault_model = \"m\"\nretry_attempts = 0\n",
            stalling.base_url
        )
    };
    let daemon = Daemon::builder()
        .config(&config(&streaming.base_url))
        .env("PROVD_LOG", "info")
        .start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        provd_tests::install_crypto_provider();
        let http = reqwest::Client::builder().pool_max_idle_per_host(128).build().expect("reqwest");
        let url = format!("{}/v1/chat/completions", streaming.base_url);
        let client = daemon.client().await;
        // Warm both paths (pooled connections, provider instance).
        for _ in 0..20 {
            direct_generation(&http, &url).await;
            daemon_generation(&client).await;
        }
        let mut direct_first = Samples::new("direct, c=1: first chunk", "µs");
        let mut direct_total = Samples::new("direct, c=1: all 200 chunks", "µs");
        let mut daemon_first = Samples::new("through provd, c=1: first chunk", "µs");
        let mut daemon_total = Samples::new("through provd, c=1: all 200 chunks", "µs");
        // Interleaved, so both paths see the same machine noise.
        for _ in 0..rounds {
            let (f, t) = direct_generation(&http, &url).await;
            direct_first.push(f);
            direct_total.push(t);
            let (f, t) = daemon_generation(&client).await;
            daemon_first.push(f);
            daemon_total.push(t);
        }
        let mut direct_64 = Samples::new("direct, c=64: first chunk", "µs");
        let mut daemon_64 = Samples::new("through provd, c=64: first chunk", "µs");
        let mut direct_64_wall = Samples::new("direct, c=64: all done (wall)", "µs");
        let mut daemon_64_wall = Samples::new("through provd, c=64: all done (wall)", "µs");
        for _ in 0..(rounds / 10).max(10) {
            let start = Instant::now();
            for (f, _) in join_all((0..64).map(|_| direct_generation(&http, &url))).await {
                direct_64.push(f);
            }
            direct_64_wall.push(start.elapsed());
            let start = Instant::now();
            for (f, _) in join_all((0..64).map(|_| daemon_generation(&client))).await {
                daemon_64.push(f);
            }
            daemon_64_wall.push(start.elapsed());
        }
        let mut cancel = Samples::new("cancel → upstream sees its connection closed", "µs");
        for request_index in 0..rounds.min(200) {
            let mut req = GenerateRequest::prompt("q");
            req.provider = Some("stall".into());
            let mut g = client.generate(req).await.expect("generate");
            assert!(matches!(g.next().await, Some(Ok(GenerateEvent::Chunk(_)))));
            let start = Instant::now();
            g.cancel_handle().cancel().await.expect("cancel");
            stalling.wait_for(Seen::ClientClosedEarly(request_index)).await;
            cancel.push(start.elapsed());
            drop(g);
        }

        let added_first = daemon_first.quantile(0.5) - direct_first.quantile(0.5);
        let rate = |wall: &Samples| 64.0 * UPSTREAM_CHUNKS as f64 / (wall.quantile(0.5) / 1e6);
        let mut lines = vec![
            String::new(),
            "| upstream comparison (OpenAI-format mock upstream on loopback) | samples | p50 | p99 | max | unit |".to_owned(),
            "|---|---|---|---|---|---|".to_owned(),
        ];
        for s in [&direct_first, &daemon_first, &direct_total, &daemon_total, &direct_64, &daemon_64, &direct_64_wall, &daemon_64_wall, &cancel] {
            lines.push(s.row());
        }
        lines.push(String::new());
        lines.push("| upstream figure | value | target |".to_owned());
        lines.push("|---|---|---|".to_owned());
        lines.push(format!(
            "| added time to first chunk, c=1 (p50 through − p50 direct) | {added_first:.1} µs = {:.2}× ping p50 ({ping_p50:.1} µs) | ≤ 3× ping |",
            added_first / ping_p50
        ));
        lines.push(format!(
            "| chunks/s at c=64: through provd / direct | {:.0} / {:.0} = {:.0}% | ≥ 90% |",
            rate(&daemon_64_wall),
            rate(&direct_64_wall),
            100.0 * rate(&daemon_64_wall) / rate(&direct_64_wall)
        ));
        lines.push(format!("| cancel → upstream closed (p50) | {:.2} ms | < 10 ms |", cancel.quantile(0.5) / 1000.0));
        lines
    })
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let iterations: usize = arg("--iterations")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let out = arg("--out");
    // One thread for the client side: every wake-up stays on it, so the figures are the
    // daemon's and the socket's, not the benchmark's own thread hops.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let floor = raw_socket_round_trip(iterations);
    let daemon = Daemon::builder().env("PROVD_LOG", "info").start();
    let idle_rss_kib = daemon.rss_kib();
    let report = runtime.block_on(async {
        let client = daemon.client().await;
        let warmup = iterations / 10;

        let mut ping = Samples::new("ping round trip", "µs");
        for i in 0..iterations + warmup {
            let start = Instant::now();
            client.ping().await.expect("ping");
            if i >= warmup {
                ping.push(start.elapsed());
            }
        }

        let mut short_first = Samples::new("5-chunk mock generation: first chunk", "µs");
        let mut short_total = Samples::new("5-chunk mock generation: done", "µs");
        for i in 0..iterations + warmup {
            let (first, total) = time_generation(&client, 5).await;
            if i >= warmup {
                short_first.push(first);
                short_total.push(total);
            }
        }

        let rounds = (iterations / 50).max(20);
        let mut long_total = Samples::new("200-chunk mock generation: done", "µs");
        for _ in 0..rounds {
            long_total.push(time_generation(&client, 200).await.1);
        }
        let single_chunks_per_s = 200.0 / (long_total.quantile(0.5) / 1e6);

        let mut concurrent = Samples::new("64 concurrent 200-chunk generations: all done", "µs");
        for _ in 0..rounds {
            let start = Instant::now();
            join_all((0..64).map(|_| time_generation(&client, 200))).await;
            concurrent.push(start.elapsed());
        }
        let concurrent_chunks_per_s = 64.0 * 200.0 / (concurrent.quantile(0.5) / 1e6);
        let loaded_rss_kib = daemon.rss_kib();

        let mut lines = vec![
            "| measurement | samples | p50 | p99 | max | unit |".to_owned(),
            "|---|---|---|---|---|---|".to_owned(),
        ];
        for s in [
            &floor,
            &ping,
            &short_first,
            &short_total,
            &long_total,
            &concurrent,
        ] {
            lines.push(s.row());
        }
        lines.push(String::new());
        lines.push("| figure | value |".to_owned());
        lines.push("|---|---|".to_owned());
        lines.push(format!(
            "| ping / raw socket echo (p50) | {:.2}× |",
            ping.quantile(0.5) / floor.quantile(0.5)
        ));
        lines.push(format!(
            "| first chunk of a short generation / ping (p50) | {:.2}× |",
            short_first.quantile(0.5) / ping.quantile(0.5)
        ));
        lines.push(format!(
            "| chunks/s, one stream (p50) | {single_chunks_per_s:.0} |"
        ));
        lines.push(format!(
            "| chunks/s, 64 streams on one connection (p50) | {concurrent_chunks_per_s:.0} |"
        ));
        lines.push(format!(
            "| daemon RSS idle (after start) | {:.1} MiB |",
            idle_rss_kib as f64 / 1024.0
        ));
        lines.push(format!(
            "| daemon RSS after the runs above | {:.1} MiB |",
            loaded_rss_kib as f64 / 1024.0
        ));
        (lines, ping.quantile(0.5))
    });
    let (mut lines, ping_p50) = report;
    drop(daemon);
    if !std::env::args().any(|a| a == "--no-upstream") {
        lines.extend(upstream_section((iterations / 10).max(50), ping_p50));
    }
    let report = lines.join("\n");
    println!("{report}");
    if let Some(path) = out {
        std::fs::write(&path, format!("{report}\n")).expect("write the report");
        eprintln!("written to {path}");
    }
}
