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
use provd_client::{Client, GenerateEvent};
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
        lines.join("\n")
    });
    println!("{report}");
    if let Some(path) = out {
        std::fs::write(&path, format!("{report}\n")).expect("write the report");
        eprintln!("written to {path}");
    }
}
