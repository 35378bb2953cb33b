//! `provd-service-bench`: how fast the daemon becomes ready and how long it takes to stop
//! with streams in flight, measured from the outside as a service manager sees it.
//!
//! ```text
//! cargo build --release -p provd -p provd-tests
//! target/release/provd-service-bench [--runs N] [--streams N]
//! ```
//!
//! - **Cold start to READY=1**: from `spawn()` of `provd serve` (embedded mock config, a
//!   fresh socket directory) to the `READY=1` datagram on `NOTIFY_SOCKET`. "Cold" is the
//!   process, not the disk: the binary is in the page cache after the first run.
//! - **Drain, streams finish**: N streams in flight (each 100 chunks 10 ms apart, so at
//!   most ~1 s left), SIGTERM, generous drain deadline: time to `STOPPING=1`, to the last
//!   stream's done, and to process exit.
//! - **Drain, deadline 0**: N endless streams, `drain_timeout_seconds = 0`: time from
//!   SIGTERM until every stream has its `unavailable` error and the process has exited;
//!   the daemon's own shutdown cost.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use provd_client::{Client, ErrorCode, GenerateEvent};
use provd_tests::{numbered, Daemon};

fn notify_socket() -> (tempfile::TempDir, UnixDatagram, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    (dir, socket, path.display().to_string())
}

fn wait_for(socket: &UnixDatagram, prefix: &str) {
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).expect("notification");
        if buf[..n].starts_with(prefix.as_bytes()) {
            return;
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    format!(
        "median {median:.1} ms, min {:.1} ms, max {:.1} ms ({} runs)",
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

fn cold_start(runs: usize) -> Vec<f64> {
    (0..runs)
        .map(|_| {
            let (_dir, notify, address) = notify_socket();
            let start = Instant::now();
            let daemon = Daemon::builder()
                .env("NOTIFY_SOCKET", &address)
                .env("PROVD_LOG", "provd=info")
                .spawn();
            wait_for(&notify, "READY=1");
            let elapsed = start.elapsed();
            daemon.signal(libc::SIGTERM);
            let (status, log) = daemon.wait();
            assert!(status.success(), "{log}");
            ms(elapsed)
        })
        .collect()
}

struct Drain {
    to_stopping: Duration,
    to_last_stream: Duration,
    to_exit: Duration,
    done: usize,
    ended: usize,
}

async fn drain(streams: usize, drain_timeout_seconds: u32, chunks: u32) -> Drain {
    let (_dir, notify, address) = notify_socket();
    let daemon = Daemon::builder()
        .config(&format!(
            "[daemon]\ndrain_timeout_seconds = {drain_timeout_seconds}\n\
             [providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n"
        ))
        .env("NOTIFY_SOCKET", &address)
        .env("PROVD_LOG", "provd=info")
        .spawn();
    wait_for(&notify, "READY=1");
    // 25 streams per connection, well under max_streams_per_connection.
    let mut clients = Vec::new();
    for _ in 0..streams.div_ceil(25) {
        clients.push(Client::connect(&daemon.socket).await.expect("connect"));
    }
    let mut generations = Vec::new();
    for i in 0..streams {
        let mut g = clients[i / 25]
            .generate(numbered(chunks, 10))
            .await
            .expect("generate");
        match g.next().await {
            Some(Ok(GenerateEvent::Chunk(_))) => {}
            other => panic!("no first chunk: {other:?}"),
        }
        generations.push(g);
    }
    let start = Instant::now();
    daemon.signal(libc::SIGTERM);
    let followers = generations.into_iter().map(|mut g| async move {
        loop {
            match g.next().await {
                Some(Ok(GenerateEvent::Chunk(_))) => {}
                Some(Ok(GenerateEvent::Done(_))) => return (true, start.elapsed()),
                Some(Err(e)) => {
                    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
                    return (false, start.elapsed());
                }
                None => panic!("a stream ended silently"),
            }
        }
    });
    let stopping = tokio::task::spawn_blocking(move || {
        wait_for(&notify, "STOPPING=1");
        start.elapsed()
    });
    let results = join_all(followers).await;
    let to_stopping = stopping.await.expect("stopping");
    drop(clients);
    let exit = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .expect("wait");
    let to_exit = start.elapsed();
    assert!(exit.0.success(), "{}", exit.1);
    Drain {
        to_stopping,
        to_last_stream: results.iter().map(|r| r.1).max().unwrap_or_default(),
        to_exit,
        done: results.iter().filter(|r| r.0).count(),
        ended: results.iter().filter(|r| !r.0).count(),
    }
}

fn main() {
    let mut runs = 15;
    let mut streams = 100;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = |args: &mut dyn Iterator<Item = String>| {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{a} needs a number"))
        };
        match a.as_str() {
            "--runs" => runs = value(&mut args),
            "--streams" => streams = value(&mut args),
            other => panic!("unknown argument {other}; use --runs N --streams N"),
        }
    }
    println!(
        "provd service benchmark ({} logical CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!("cold start to READY=1: {}", summary(cold_start(runs)));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut finish = Vec::new();
    let mut abort = Vec::new();
    for _ in 0..3 {
        finish.push(runtime.block_on(drain(streams, 30, 100)));
        abort.push(runtime.block_on(drain(streams, 0, 1_000_000)));
    }
    let show = |name: &str, d: &[Drain]| {
        println!("{name}:");
        println!(
            "  SIGTERM to STOPPING=1:   {}",
            summary(d.iter().map(|d| ms(d.to_stopping)).collect())
        );
        println!(
            "  SIGTERM to last stream:  {}",
            summary(d.iter().map(|d| ms(d.to_last_stream)).collect())
        );
        println!(
            "  SIGTERM to exit:         {}",
            summary(d.iter().map(|d| ms(d.to_exit)).collect())
        );
        println!(
            "  streams ended with done / unavailable: {} / {} (per run)",
            d[0].done, d[0].ended
        );
    };
    show(
        &format!("drain, {streams} streams in flight finishing (<= 1 s of chunks left each), deadline 30 s"),
        &finish,
    );
    show(
        &format!("drain, {streams} endless streams, drain_timeout_seconds = 0"),
        &abort,
    );
}
