//! `provd-ffi-bench`: what a generation costs through the C ABI (libprovd) compared with the
//! Rust client it wraps, on one daemon with the mock provider, in one run.
//!
//! ```text
//! cargo build --release -p provd -p provd-ffi -p provd-tests
//! target/release/provd-ffi-bench [--short N] [--long N] [--chunks N] [--rounds N]
//! ```
//!
//! It starts `provd` (next to this binary), compiles `tests/c/ffi_bench.c` with `cc -O2`
//! against `libprovd.so` (next to this binary), and alternates rounds of three measuring
//! processes of the same shape (one client, one connection): itself as `--child
//! rust_async`, itself as `--child rust_blocking`, and the C program (callback and pull),
//! so that slow drift of a noisy machine hits every path alike. Per request: the duration of a one-chunk generation.
//! Per chunk: the marginal cost, (a long generation − a one-chunk generation) /
//! (chunks − 1). Both at the median and at the 10th percentile: on a busy machine the
//! durations are bimodal (whether a thread's wake-up waits for a core), and the p10 is
//! the figure that noise moves least.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use provd_client::{blocking, Client, GenerateEvent, GenerateRequest};
use provd_tests::{numbered, Daemon};

struct Options {
    short: usize,
    long: usize,
    chunks: u32,
    rounds: usize,
}

fn options() -> Options {
    let mut o = Options {
        short: 2000,
        long: 100,
        chunks: 1000,
        rounds: 20,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = || -> usize {
            pair.get(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", pair[0]))
        };
        match pair[0].as_str() {
            "--short" => o.short = value(),
            "--long" => o.long = value(),
            "--chunks" => o.chunks = value() as u32,
            "--rounds" => o.rounds = value().max(1),
            other => panic!("unknown argument {other}; see the doc comment of ffi_bench.rs"),
        }
    }
    assert!(o.chunks > 1, "--chunks must be at least 2");
    o
}

/// Durations of one series, in nanoseconds.
#[derive(Default)]
struct Series(Vec<f64>);

impl Series {
    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * q).round() as usize]
    }
}

/// One way of running a generation, with its samples.
struct Route {
    name: &'static str,
    short: Series,
    long: Series,
}

impl Route {
    fn new(name: &'static str) -> Route {
        Route {
            name,
            short: Series::default(),
            long: Series::default(),
        }
    }

    /// The per-request cost at quantile `q` of the one-chunk generations, in µs.
    fn per_request_us(&self, q: f64) -> f64 {
        self.short.quantile(q) / 1e3
    }

    /// The marginal per-chunk cost from quantile `q` of both series, in ns.
    fn per_chunk_ns(&self, q: f64, chunks: u32) -> f64 {
        (self.long.quantile(q) - self.short.quantile(q)) / f64::from(chunks - 1)
    }
}

/// What a caller does with a chunk at the least: look at its bytes (as the C side does).
fn consume(text: &str, bytes: &mut usize) {
    *bytes += text.len() + usize::from(text.as_bytes().first().is_some_and(|b| b & 1 == 1));
}

fn time_blocking(client: &blocking::Client, request: &GenerateRequest) -> Duration {
    let mut bytes = 0;
    let start = Instant::now();
    for event in client.generate(request.clone()).expect("generate") {
        match event.expect("event") {
            GenerateEvent::Chunk(c) => consume(&c.text, &mut bytes),
            GenerateEvent::Done(_) => break,
        }
    }
    let took = start.elapsed();
    std::hint::black_box(bytes);
    took
}

async fn time_async(client: &Client, request: &GenerateRequest) -> Duration {
    let mut bytes = 0;
    let start = Instant::now();
    let mut generation = client.generate(request.clone()).await.expect("generate");
    while let Some(event) = generation.next().await {
        match event.expect("event") {
            GenerateEvent::Chunk(c) => consume(&c.text, &mut bytes),
            GenerateEvent::Done(_) => break,
        }
    }
    let took = start.elapsed();
    std::hint::black_box(bytes);
    took
}

/// Runs `run` after a warm-up and prints `name` and each duration in ns, one line, the
/// format the C program prints too.
fn print_series(name: &str, iterations: usize, mut run: impl FnMut() -> Duration) {
    for _ in 0..iterations / 10 + 1 {
        run(); // warm-up, as the C side does
    }
    let samples: Vec<String> = (0..iterations)
        .map(|_| run().as_nanos().to_string())
        .collect();
    println!("{name} {}", samples.join(" "));
}

/// `--child rust_async|rust_blocking SOCKET SHORT LONG CHUNKS`: one Rust path in a process
/// of its own, so that every path runs in a process of the same shape (one client, one
/// connection, one client runtime), as the C program does.
fn child(args: &[String]) {
    let [kind, socket, short, long, chunks] = args else {
        panic!("--child needs: KIND SOCKET SHORT LONG CHUNKS");
    };
    let socket = Path::new(socket);
    let number = |s: &str| s.parse::<u32>().expect("a number");
    let (short, long) = (number(short) as usize, number(long) as usize);
    let short_request = numbered(1, 0);
    let long_request = numbered(number(chunks), 0);
    match kind.as_str() {
        "rust_async" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let client = runtime.block_on(Client::connect(socket)).expect("connect");
            print_series("rust_async_short", short, || {
                runtime.block_on(time_async(&client, &short_request))
            });
            print_series("rust_async_long", long, || {
                runtime.block_on(time_async(&client, &long_request))
            });
        }
        "rust_blocking" => {
            let client = blocking::Client::connect(socket).expect("connect");
            print_series("rust_blocking_short", short, || {
                time_blocking(&client, &short_request)
            });
            print_series("rust_blocking_long", long, || {
                time_blocking(&client, &long_request)
            });
        }
        other => panic!("unknown child kind {other}"),
    }
}

fn compile_c_bench(lib_dir: &Path, out: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let exe = out.join("ffi_bench_c");
    let status = Command::new("cc")
        .args(["-std=c11", "-O2", "-Wall", "-Werror"])
        .arg(format!("-I{}", root.join("include").display()))
        .arg(root.join("tests/c/ffi_bench.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib_dir.display()))
        .arg("-lprovd")
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .status()
        .expect("run cc");
    assert!(status.success(), "cc tests/c/ffi_bench.c failed");
    exe
}

/// Runs one measuring process and files its series under the right paths.
fn collect(cmd: &mut Command, paths: &mut [Route; 4]) {
    let out = cmd.output().expect("run a benchmark process");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut words = line.split_whitespace();
        let (index, is_short) = match words.next() {
            Some("rust_async_short") => (0, true),
            Some("rust_async_long") => (0, false),
            Some("rust_blocking_short") => (1, true),
            Some("rust_blocking_long") => (1, false),
            Some("c_callback_short") => (2, true),
            Some("c_callback_long") => (2, false),
            Some("c_stream_short") => (3, true),
            Some("c_stream_long") => (3, false),
            _ => continue,
        };
        let series = if is_short {
            &mut paths[index].short
        } else {
            &mut paths[index].long
        };
        series.0.extend(words.filter_map(|w| w.parse::<f64>().ok()));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
        return;
    }
    let o = options();
    let exe = std::env::current_exe().expect("current_exe");
    let exe_dir = exe.parent().expect("exe dir").to_owned();
    assert!(
        exe_dir.join("libprovd.so").exists(),
        "no libprovd.so next to {}: cargo build --release -p provd-ffi",
        exe_dir.display()
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let c_bench = compile_c_bench(&exe_dir, tmp.path());
    let daemon = Daemon::start();

    let mut paths = [
        Route::new("Rust async client"),
        Route::new("Rust blocking client"),
        Route::new("C ABI, callback (provd_client_generate)"),
        Route::new("C ABI, pull (provd_stream_next)"),
    ];
    let (short, long) = (o.short / o.rounds, o.long / o.rounds);
    let sizes = [short.to_string(), long.to_string(), o.chunks.to_string()];
    for round in 0..o.rounds {
        eprintln!("round {}/{}", round + 1, o.rounds);
        for kind in ["rust_async", "rust_blocking"] {
            collect(
                Command::new(&exe)
                    .arg("--child")
                    .arg(kind)
                    .arg(&daemon.socket)
                    .args(&sizes),
                &mut paths,
            );
        }
        collect(
            Command::new(&c_bench).arg(&daemon.socket).args(&sizes),
            &mut paths,
        );
    }

    println!(
        "mock generations on one connection; {} one-chunk and {} {}-chunk generations per path, in {} rounds\n",
        paths[0].short.0.len(),
        paths[0].long.0.len(),
        o.chunks,
        o.rounds
    );
    println!("| path | per request p50 (µs) | per request p10 (µs) | per chunk p50 (ns) | per chunk p10 (ns) |");
    println!("|---|---:|---:|---:|---:|");
    for p in &paths {
        println!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.0} |",
            p.name,
            p.per_request_us(0.5),
            p.per_request_us(0.1),
            p.per_chunk_ns(0.5, o.chunks),
            p.per_chunk_ns(0.1, o.chunks),
        );
    }
    let base = &paths[1];
    println!();
    for p in &paths[2..] {
        for (label, q) in [("p50", 0.5), ("p10", 0.1)] {
            println!(
                "{} vs the Rust blocking client, {label}: {:+.1} µs per request ({:.2}×), {:+.0} ns per chunk ({:.2}×)",
                p.name,
                p.per_request_us(q) - base.per_request_us(q),
                p.per_request_us(q) / base.per_request_us(q),
                p.per_chunk_ns(q, o.chunks) - base.per_chunk_ns(q, o.chunks),
                p.per_chunk_ns(q, o.chunks) / base.per_chunk_ns(q, o.chunks),
            );
        }
    }
}
