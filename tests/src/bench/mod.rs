//! `provd-bench`: the daemon measured against the mock upstreams of this crate, on one
//! machine, in one run, printed as one markdown table with the targets of issue 7.
//!
//! What runs where: the mock upstream has a runtime and thread of its own; the benchmark's
//! clients (direct reqwest and `provd-client`) share one current-thread runtime, so
//! their wake-ups stay on one thread and the figures are the daemon's and the sockets';
//! the daemon is the real release binary in its own process, with its default runtime.
//!
//! Sections: the floor (a raw socket echo and the daemon's ping), generations direct
//! versus through the daemon at concurrency 1, 64 and 512 (with the daemon's CPU time
//! per forwarded chunk), the same at 64 with a stuck client on another connection,
//! cancel-to-upstream latency, and the daemon's RSS idle, with 1,000 idle connections and
//! with 1,000 open streams; and the HTTP front door beside the direct and MessagePack
//! paths (see [`http`]).

pub mod cache;
pub mod http;
pub mod ledger;
pub mod load;
pub mod memory;
pub mod stats;
pub mod system;
pub mod tls;

use std::time::Instant;

use provd_client::Client;

use crate::raw::RawConn;
use crate::upstream::{Part, Reply, Seen, Upstream};
use crate::{apis::openai, Daemon};
use load::{CpuProbe, DaemonPath, DirectPath, Level, PathRun};
use memory::Memory;
use stats::{human, Samples};

/// Streams per connection the daemon allows by default; concurrency above it is spread
/// over several connections.
const STREAMS_PER_CONNECTION: usize = 64;
/// Connections and streams for the memory figures.
const OPEN_COUNT: usize = 1000;
/// Chunks in each of the stuck client's generations: far more than its socket and queue
/// hold, so none can finish; cheap for the mock to produce, so that making them is not
/// charged to the measured round.
const FLOOD_CHUNKS: u32 = 20_000;
/// Log filter for benchmarked daemons: the harness needs "listening"; per-connection
/// info lines would cost the daemon CPU that is not forwarding.
const DAEMON_LOG: &str = "warn,provd::server=info,provd::server::connection=warn";

/// Which parts to run and how long.
#[derive(Clone, Debug)]
pub struct Options {
    /// Fewer samples, for a smoke run (the figures are noisier).
    pub quick: bool,
    /// Run only these sections (`floor`, `c1`, `c64`, `paced`, `c512`, `stuck`, `cancel`,
    /// `memory`, `http`); all when empty. For profiling one path.
    pub only: Vec<String>,
    /// The daemons' `worker_threads`; their default (one per CPU) when `None`.
    pub workers: Option<usize>,
    /// The daemon reaches the main streaming upstream over TLS (a front with a
    /// self-signed certificate, see [`tls`]); the direct path stays plain HTTP.
    pub tls: bool,
}

impl Options {
    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }

    fn scale(&self, full: usize) -> usize {
        if self.quick {
            (full / 5).max(2)
        } else {
            full
        }
    }
}

/// Everything measured, ready to print.
#[derive(Default)]
struct Results {
    floor: Option<Samples>,
    pings: Option<Samples>,
    levels: Vec<Level>,
    stuck: Option<(PathRun, PathRun)>,
    cancel: Option<Samples>,
    memory: Option<Memory>,
    front_door: Option<FrontDoorResults>,
}

/// The HTTP front door section's figures.
struct FrontDoorResults {
    /// Concurrency 1, 16 and 64, three paths each.
    levels: Vec<http::Level>,
    /// An HTTP client dropping its response → the upstream sees its connection closed.
    cancel: Samples,
    /// The daemon's RSS after start-up, with the HTTP socket open.
    idle_kib: u64,
    /// Why the LiteLLM rows are missing, when they are.
    litellm_absent: Option<String>,
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
    let mut samples = Samples::new();
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

/// An upstream answer that sends one chunk and then nothing until the client leaves: a
/// model thinking, for cancel latency and open-stream memory.
fn first_chunk_then_stall() -> Reply {
    let first = openai::chunk_event("m", serde_json::json!({"content": "x"}), None);
    Reply::stream(
        "text/event-stream",
        vec![Part::Bytes(first.into_bytes()), Part::Stall],
    )
}

/// A provider table forwarding to `base_url` with timeouts far beyond a benchmark run.
fn provider(id: &str, base_url: &str) -> String {
    format!(
        "[providers.{id}]\ntype = \"openai-compatible\"\nbase_url = \"{base_url}/v1\"\n\
         default_model = \"m\"\nretry_attempts = 0\ntimeout_seconds = 600\n"
    )
}

/// Runs the benchmark and returns the markdown report.
pub fn run(options: &Options) -> String {
    crate::install_crypto_provider();
    // The daemon inherits the limit: 1,000 client connections and as many upstream ones.
    let fd_limit = system::raise_fd_limit((OPEN_COUNT * 4 + 1024) as u64);
    let load_before = system::load_average();
    let started = Instant::now();
    let mut results = Results::default();
    if options.runs("floor") {
        results.floor = Some(raw_socket_round_trip(options.scale(20_000)));
    }

    // The upstreams get a runtime (and thread) of their own, so they serve both paths
    // alike and their work is not charged to either side's thread.
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("upstream runtime");
    let answer = load::answer();
    let streaming = upstream_rt.block_on(Upstream::start(move |_| answer.clone()));
    let upstream_tid = upstream_rt
        .block_on(upstream_rt.spawn(async { system::current_thread_id() }))
        .expect("the upstream thread's id");
    let tls_front = options
        .tls
        .then(|| upstream_rt.block_on(tls::front(&streaming.base_url)));
    let daemon_upstream = tls_front
        .as_ref()
        .map_or(streaming.base_url.clone(), |f| f.base_url.clone());
    let paced_answer = load::paced_answer();
    let paced = upstream_rt.block_on(Upstream::start(move |_| paced_answer.clone()));
    let stalling = upstream_rt.block_on(Upstream::start(|_| first_chunk_then_stall()));
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");

    let workers = options
        .workers
        .map_or(String::new(), |n| format!("worker_threads = {n}\n"));
    let needs_main = ["floor", "c1", "c64", "paced", "c512", "stuck", "cancel"]
        .iter()
        .any(|s| options.runs(s));
    // A benchmark daemon on `config` (trusting the TLS front when there is one) and the
    // probe of its CPU time.
    let start_daemon = |config: &str| {
        let mut daemon = Daemon::builder()
            .config(config)
            .env("PROVD_LOG", DAEMON_LOG);
        if let Some(front) = &tls_front {
            daemon = daemon.env("SSL_CERT_FILE", &front.cert_file.display().to_string());
        }
        let daemon = daemon.start();
        let cpu = CpuProbe {
            daemon_pid: daemon.pid(),
            upstream_tid,
        };
        (daemon, cpu)
    };
    if needs_main {
        let config = format!(
            "[daemon]\nkeepalive_interval_ms = 0\ndefault_provider = \"up\"\n\
             slow_client_timeout_seconds = 3600\n{workers}\
             {}{}{}[providers.mock]\ntype = \"mock\"\ndefault_model = \"mock-1\"\n",
            provider("up", &daemon_upstream),
            provider("paced", &paced.base_url),
            provider("stall", &stalling.base_url),
        );
        let (daemon, cpu) = start_daemon(&config);
        client_rt.block_on(main_sections(
            options,
            &daemon,
            cpu,
            [&streaming, &paced],
            &stalling,
            &mut results,
        ));
    }
    if options.runs("http") {
        let config = format!(
            "[daemon]\nkeepalive_interval_ms = 0\nslow_client_timeout_seconds = 3600\n{workers}\
             [http]\nkeep_alive_idle_seconds = 3600\nlisten = \"127.0.0.1:0\"\n\
             [limits]\nmax_connections_per_uid = 4096\n{}{}",
            provider("up", &daemon_upstream),
            provider("stall", &stalling.base_url),
        );
        let (daemon, cpu) = start_daemon(&config);
        results.front_door =
            Some(client_rt.block_on(front_door(options, &daemon, cpu, &streaming, &stalling)));
    }
    if options.runs("memory") {
        let stalling = upstream_rt.block_on(Upstream::start(|_| first_chunk_then_stall()));
        let config = format!(
            "[daemon]\nkeepalive_interval_ms = 0\nmax_connections = {}\n{workers}{}",
            OPEN_COUNT + 16,
            provider("stall", &stalling.base_url),
        );
        let daemon = Daemon::builder()
            .config(&config)
            .env("PROVD_LOG", DAEMON_LOG)
            .start();
        results.memory = Some(client_rt.block_on(memory::measure(&daemon, "stall", OPEN_COUNT)));
    }
    let header = format!(
        "# provd-bench\n\n\
         Machine: {}. Load average {} before, {} after; {:.0} s; descriptor limit {fd_limit}; \
         daemon worker threads: {}{}.\n",
        system::machine(),
        load_before,
        system::load_average(),
        started.elapsed().as_secs_f64(),
        options
            .workers
            .map_or("one per CPU (the default)".to_owned(), |n| n.to_string()),
        match (options.quick, options.tls) {
            (true, true) => "; --quick (fewer samples); --tls (the daemon's upstream over TLS)",
            (true, false) => "; --quick (fewer samples)",
            (false, true) => "; --tls (the daemon's upstream over TLS, the direct path plain)",
            (false, false) => "",
        },
    );
    let tls_note = tls_front.as_ref().map_or(String::new(), |front| {
        format!(
            "\nThe daemon opened {} TLS connections to the upstream.\n",
            front.accepted.load(std::sync::atomic::Ordering::Relaxed)
        )
    });
    format!("{header}{}{tls_note}", report(&mut results))
}

async fn main_sections(
    options: &Options,
    daemon: &Daemon,
    cpu: CpuProbe,
    [streaming, paced]: [&Upstream; 2],
    stalling: &Upstream,
    results: &mut Results,
) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("reqwest");
    let url = format!("{}/v1/chat/completions", streaming.base_url);
    let direct = DirectPath {
        http: &http,
        url: &url,
    };
    let mut clients = Vec::new();
    for _ in 0..512 / STREAMS_PER_CONNECTION {
        clients.push(daemon.client().await);
    }
    let path = |connections: usize| DaemonPath {
        clients: &clients[..connections],
        provider: "up",
        cpu,
    };
    if options.runs("floor") {
        results.pings = Some(load::pings(&clients[0], options.scale(5000)).await);
    }
    if options.runs("c1") {
        let n = options.scale(1000);
        results
            .levels
            .push(load::level(1, 1, 50, n, true, &direct, &path(1)).await);
    }
    if options.runs("c64") {
        let n = options.scale(20);
        results
            .levels
            .push(load::level(64, 2, 2, n, false, &direct, &path(1)).await);
    }
    if options.runs("paced") {
        let url = format!("{}/v1/chat/completions", paced.base_url);
        let direct = DirectPath {
            http: &http,
            url: &url,
        };
        let daemon = DaemonPath {
            provider: "paced",
            ..path(1)
        };
        let n = options.scale(5);
        let mut level = load::level(64, 1, 1, n, false, &direct, &daemon).await;
        level.paced = true;
        results.levels.push(level);
    }
    if options.runs("c512") {
        let n = options.scale(10);
        results
            .levels
            .push(load::level(512, 1, 2, n, false, &direct, &path(8)).await);
    }
    if options.runs("stuck") {
        results.stuck = Some(stuck_client(options.scale(10), daemon, &path(1)).await);
    }
    if options.runs("cancel") {
        results.cancel = Some(cancel_latency(options.scale(200), &clients[0], stalling).await);
    }
}

/// The HTTP front door section: the daemon's idle RSS first (started, one MessagePack
/// ping, both front doors open), then direct, MessagePack, HTTP (Unix socket and loopback
/// TCP) and LiteLLM generations at concurrency 1, 16 and 64 in alternating rounds, then
/// cancel latency through HTTP. LiteLLM (one worker, from `$PROVD_PYTHON`) is pointed
/// at provd's loopback route with a token; without the package its rows say why not.
async fn front_door(
    options: &Options,
    daemon: &Daemon,
    cpu: CpuProbe,
    streaming: &Upstream,
    stalling: &Upstream,
) -> FrontDoorResults {
    let client = daemon.client().await;
    client.ping().await.expect("ping");
    let socket = http::socket_of(daemon);
    assert!(socket.exists(), "the HTTP socket is open");
    let port = crate::litellm::provd_loopback_port(daemon);
    let idle_kib = system::rss_kib(daemon.pid());
    let (status, token, stderr) =
        crate::run_provd(&["token", "create", "--providers", "up"], &daemon.socket);
    assert!(status.success(), "a token for the loopback path: {stderr}");
    let unix = http::Endpoint::Unix(socket);
    let loopback = http::Endpoint::Tcp {
        port,
        bearer: token.trim().to_owned(),
    };
    let python = crate::python();
    let litellm_absent = crate::litellm::unavailable(&python);
    let litellm = match &litellm_absent {
        Some(why) => {
            eprintln!("provd-bench: LiteLLM left out: {why}");
            None
        }
        None => Some(
            crate::litellm::LiteLlm::start(
                &python,
                &format!("http://127.0.0.1:{port}/v1"),
                "up/m",
                token.trim(),
            )
            .await,
        ),
    };
    let gateway = litellm.as_ref().map(|proxy| http::Endpoint::Tcp {
        port: proxy
            .base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("LiteLLM's port"),
        bearer: crate::litellm::MASTER_KEY.to_owned(),
    });

    let reqwest = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()
        .expect("reqwest");
    let url = format!("{}/v1/chat/completions", streaming.base_url);
    let direct = DirectPath {
        http: &reqwest,
        url: &url,
    };
    let clients = [client];
    let through = DaemonPath {
        clients: &clients,
        provider: "up",
        cpu,
    };
    let mut levels = Vec::new();
    for (concurrency, per_worker, warmup, rounds) in [
        (1, 1, 50, options.scale(1000)),
        (16, 2, 2, options.scale(20)),
        (64, 2, 2, options.scale(20)),
    ] {
        // A connection per worker, opened for its level: none sits idle through the
        // levels before it.
        let front = http::HttpPath::open(&unix, concurrency, "up/m").await;
        let tcp = http::HttpPath::open(&loopback, concurrency, "up/m").await;
        let proxied = match &gateway {
            Some(endpoint) => {
                Some(http::HttpPath::open(endpoint, concurrency, crate::litellm::MODEL).await)
            }
            None => None,
        };
        let paths = http::HttpPaths {
            unix: &front,
            loopback: &tcp,
            litellm: proxied.as_ref(),
        };
        levels.push(
            http::level(
                concurrency,
                per_worker,
                warmup,
                rounds,
                &direct,
                &through,
                &paths,
            )
            .await,
        );
    }
    drop(litellm);
    let cancel = http::cancel_latency(options.scale(300), &unix, "stall/m", stalling).await;
    FrontDoorResults {
        levels,
        cancel,
        idle_kib,
        litellm_absent,
    }
}

/// Concurrency 64 through the daemon, in rounds that alternate between a quiet daemon and
/// one where another connection has stopped reading with its queue full (its four
/// generations blocked): (quiet, with the stuck client). The daemon's slow-client bound
/// is set far beyond the run, so the stuck client stays.
async fn stuck_client(rounds: usize, daemon: &Daemon, path: &DaemonPath<'_>) -> (PathRun, PathRun) {
    let client = &path.clients[0];
    let run =
        |worker: usize| load::through(&path.clients[worker % path.clients.len()], path.provider);
    let mut flood = crate::numbered(FLOOD_CHUNKS, 0);
    flood.provider = Some("mock".into());
    let (mut quiet, mut stuck) = (PathRun::default(), PathRun::default());
    for _ in 0..rounds {
        let (timings, wall) = load::round(64, 2, run).await;
        quiet.add(timings, wall);
        // Blocking std I/O on the client thread: short writes the daemon reads at once.
        let mut raw = RawConn::greeted(&daemon.socket);
        for id in 1..=4 {
            raw.request(id, "generate", &flood);
        }
        memory::until(client, |_, active| active == 4).await;
        blocked(client).await;
        let (timings, wall) = load::round(64, 2, run).await;
        stuck.add(timings, wall);
        drop(raw);
        memory::until(client, |_, active| active == 0).await;
    }
    (quiet, stuck)
}

/// Waits until the stuck client's generations have stopped producing: the daemon's
/// chunk count unchanged over many status round trips (a bench may guess; a test may
/// not).
async fn blocked(client: &Client) {
    let chunks = || async {
        let status = client.status().await.expect("status");
        status
            .instances
            .iter()
            .map(|i| i.metrics.chunks)
            .sum::<u64>()
    };
    let (mut last, mut same) = (chunks().await, 0);
    while same < 100 {
        let now = chunks().await;
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
}

/// From a cancel request to the upstream seeing its connection closed.
async fn cancel_latency(rounds: usize, client: &Client, stalling: &Upstream) -> Samples {
    use provd_client::{GenerateEvent, GenerateRequest};
    let mut samples = Samples::new();
    for _ in 0..rounds {
        let index = stalling.requests().len();
        let mut request = GenerateRequest::prompt("q");
        request.provider = Some("stall".into());
        let mut g = client.generate(request).await.expect("generate");
        assert!(matches!(g.next().await, Some(Ok(GenerateEvent::Chunk(_)))));
        let start = Instant::now();
        g.cancel_handle().cancel().await.expect("cancel");
        stalling.wait_for(Seen::ClientClosedEarly(index)).await;
        samples.push(start.elapsed());
        drop(g);
    }
    samples
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn report(r: &mut Results) -> String {
    let mut out = Vec::<String>::new();
    let mut ping_p50 = f64::NAN;
    if r.floor.is_some() || r.pings.is_some() || !r.levels.is_empty() {
        out.push("\n## Floor\n".into());
        out.push("| measurement | samples | p50 | p99 | max |".into());
        out.push("|---|---|---|---|---|".into());
    }
    if let Some(floor) = &mut r.floor {
        out.push(format!(
            "| raw Unix socket echo, 16 bytes, no protocol (machine floor) | {} | {} | {} | {} |",
            floor.len(),
            human(floor.p50()),
            human(floor.p99()),
            human(floor.max())
        ));
    }
    if let Some(pings) = &mut r.pings {
        out.push(format!(
            "| ping round trip through provd, back to back (the protocol's floor) | {} | {} | {} | {} |",
            pings.len(),
            human(pings.p50()),
            human(pings.p99()),
            human(pings.max())
        ));
    }
    if let Some(c1) = r.levels.iter_mut().find(|l| l.concurrency == 1) {
        ping_p50 = c1.ping.p50();
        out.push(format!(
            "| ping round trip through provd, each after a direct generation (as the c = 1 generations through provd are) | {} | {} | {} | {} |",
            c1.ping.len(),
            human(c1.ping.p50()),
            human(c1.ping.p99()),
            human(c1.ping.max())
        ));
    }
    if !r.levels.is_empty() {
        out.push(format!(
            "\n## Generations: direct to the upstream vs through provd ({} chunks each)\n",
            load::CHUNKS
        ));
        out.push("| path | c | connections | requests | first chunk p50 | p99 | max | total p50 | p99 | max | requests/s | chunks/s | CPU ms per 1,000 chunks: daemon | client | upstream |".into());
        out.push("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".into());
        for level in &mut r.levels {
            let c = if level.paced {
                format!("{}, paced", level.concurrency)
            } else {
                level.concurrency.to_string()
            };
            for (name, run, conns) in [
                ("direct", &mut level.direct, "—".to_owned()),
                (
                    "through provd",
                    &mut level.daemon,
                    level.connections.to_string(),
                ),
            ] {
                out.push(format!(
                "| {name} | {c} | {conns} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} |",
                run.requests,
                human(run.first.p50()),
                human(run.first.p99()),
                human(run.first.max()),
                human(run.total.p50()),
                human(run.total.p99()),
                human(run.total.max()),
                run.requests_per_s(),
                run.chunks_per_s(),
                run.per_1000_chunks(run.daemon_cpu),
                run.per_1000_chunks(run.client_cpu),
                run.per_1000_chunks(run.upstream_cpu),
            ));
            }
        }
        out.push(String::new());
        out.push(format!(
        "Direct: reqwest with a connection pool, splitting the SSE body into events and decoding each event's JSON, as an application would. \
         Through provd: `provd-client`, one connection for c ≤ {STREAMS_PER_CONNECTION}; c = 512 is spread over 8 connections × 64 streams \
         (`max_streams_per_connection`). Each of c workers runs its generations back to back; direct and daemon rounds alternate. \
         CPU: utime + stime from /proc over each path's rounds, of the daemon, of the benchmark process but its upstream thread (the client), and of the mock upstream's thread."
    ));
    }

    if let Some((quiet, stuck)) = &mut r.stuck {
        out.push("\n## A stuck client on another connection (c = 64 through provd)\n".into());
        out.push("| the daemon | requests | first chunk p50 | total p50 | chunks/s |".into());
        out.push("|---|---|---|---|---|".into());
        for (name, run) in [
            ("quiet daemon", quiet),
            ("another connection stopped reading, its queue full", stuck),
        ] {
            out.push(format!(
                "| {name} | {} | {} | {} | {:.0} |",
                run.requests,
                human(run.first.p50()),
                human(run.total.p50()),
                run.chunks_per_s()
            ));
        }
    }

    if let Some(cancel) = &mut r.cancel {
        out.push("\n## Cancel\n".into());
        out.push("| measurement | samples | p50 | p99 | max |".into());
        out.push("|---|---|---|---|---|".into());
        out.push(format!(
            "| cancel request → the upstream sees its connection closed | {} | {} | {} | {} |",
            cancel.len(),
            human(cancel.p50()),
            human(cancel.p99()),
            human(cancel.max())
        ));
    }

    if let Some(m) = &r.memory {
        out.push("\n## Daemon memory (RSS)\n".into());
        out.push("| state | RSS | per connection or stream |".into());
        out.push("|---|---|---|".into());
        out.push(format!(
            "| idle (started, one client pinged and left) | {} | |",
            mib(m.idle_kib)
        ));
        out.push(format!(
            "| {} idle connections | {} | {:.1} KiB per connection |",
            m.count,
            mib(m.connections_kib),
            m.per_connection_kib()
        ));
        out.push(format!(
            "| {} streams open at once, one per connection, each on its own upstream HTTP connection | {} | {:.1} KiB per stream |",
            m.count,
            mib(m.streams_kib),
            m.per_stream_kib()
        ));
        out.push(format!(
            "| after they all closed, once the RSS settled (provd gives freed memory back a second after its last generation) | {} | |",
            mib(m.after_kib)
        ));
    }

    if let Some(f) = &mut r.front_door {
        out.push(format!(
            "\n## HTTP front door: direct vs MessagePack socket vs HTTP on `http.sock` ({} chunks each)\n",
            load::CHUNKS
        ));
        out.push("| path | c | requests | first chunk p50 | p99 | total p50 | requests/s | chunks/s | CPU ms per 1,000 chunks: daemon | client |".into());
        out.push("|---|---|---|---|---|---|---|---|---|---|".into());
        for level in &mut f.levels {
            let c = level.concurrency;
            let mut rows = vec![
                ("direct", &mut level.direct),
                (
                    "MessagePack socket (`provd-client`, 1 connection)",
                    &mut level.daemon,
                ),
                (
                    "HTTP front door on `http.sock` (hyper, keep-alive connection per worker)",
                    &mut level.http,
                ),
                (
                    "HTTP front door on loopback TCP (same, with a token)",
                    &mut level.loopback,
                ),
            ];
            if let Some(litellm) = &mut level.litellm {
                rows.push(("LiteLLM proxy (1 worker) → provd's loopback route", litellm));
            }
            for (name, run) in rows {
                out.push(format!(
                    "| {name} | {c} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} |",
                    run.requests,
                    human(run.first.p50()),
                    human(run.first.p99()),
                    human(run.total.p50()),
                    run.requests_per_s(),
                    run.chunks_per_s(),
                    run.per_1000_chunks(run.daemon_cpu),
                    run.per_1000_chunks(run.client_cpu),
                ));
            }
        }
        out.push(String::new());
        out.push(format!(
            "| measurement | samples | p50 | p99 | max |\n|---|---|---|---|---|\n\
             | HTTP client drops the response after its first chunk → the upstream sees its connection closed | {} | {} | {} | {} |",
            f.cancel.len(),
            human(f.cancel.p50()),
            human(f.cancel.p99()),
            human(f.cancel.max())
        ));
        out.push(String::new());
        out.push(format!(
            "Idle RSS with the HTTP socket open (started, one MessagePack ping): {}. \
             HTTP: `POST /v1/chat/completions` with `stream: true`, the SSE body split into events and each event's JSON decoded, as the direct path does. \
             Rounds alternate direct → MessagePack → HTTP on `http.sock` → HTTP on loopback → LiteLLM; each of c workers runs its generations back to back. \
             LiteLLM: {}; the daemon's CPU column counts provd's share of that path, not LiteLLM's.",
            mib(f.idle_kib),
            f.litellm_absent.as_ref().map_or_else(
                || "the proxy from PyPI (tests/python/requirements.txt), one worker, offline, its model routed to provd's loopback OpenAI route with a provd token".to_owned(),
                |why| format!("**not measured**: {why}"),
            ),
        ));
    }

    out.push("\n## Targets\n".into());
    out.push("| target | measured | |".into());
    out.push("|---|---|---|".into());
    if let Some(c1) = r.levels.iter_mut().find(|l| l.concurrency == 1) {
        let added = c1.daemon.first.p50() - c1.direct.first.p50();
        let ratio = added / ping_p50;
        // Both floors are measured; the verdict takes the stricter one, since the ping
        // after a direct generation swings with how deeply the daemon's threads slept.
        let mut worst = ratio;
        let back_to_back = r.pings.as_mut().map_or(String::new(), |p| {
            worst = worst.max(added / p.p50());
            format!(
                "; {:.1}× the back-to-back ping ({})",
                added / p.p50(),
                human(p.p50())
            )
        });
        out.push(format!(
            "| added median time to first chunk (c = 1) ≤ 3× ping (both floors) | {} − {} = {} = {ratio:.2}× the ping after a direct generation ({}){back_to_back} | {} |",
            human(c1.daemon.first.p50()),
            human(c1.direct.first.p50()),
            human(added),
            human(ping_p50),
            verdict(worst <= 3.0)
        ));
    }
    let paced_ratio = r
        .levels
        .iter()
        .find(|l| l.paced)
        .map_or(String::new(), |l| {
            format!(
                "; with the upstream at a model's pace (c = 64, paced): {:.0}%",
                100.0 * l.daemon.chunks_per_s() / l.direct.chunks_per_s()
            )
        });
    if let Some(c64) = r.levels.iter().find(|l| l.concurrency == 64 && !l.paced) {
        let ratio = c64.daemon.chunks_per_s() / c64.direct.chunks_per_s();
        let cpu_bound = c64.direct.total_per_1000_chunks() / c64.daemon.total_per_1000_chunks();
        out.push(format!(
            "| chunks/s through provd ≥ 90% of direct (c = 64) | {:.0} / {:.0} = {:.0}% (CPU per chunk, all processes: direct {:.2} ms, through provd {:.2} ms per 1,000: {:.0}% if the cores are the limit){paced_ratio} | {} |",
            c64.daemon.chunks_per_s(),
            c64.direct.chunks_per_s(),
            ratio * 100.0,
            c64.direct.total_per_1000_chunks(),
            c64.daemon.total_per_1000_chunks(),
            cpu_bound * 100.0,
            verdict(ratio >= 0.9)
        ));
    }
    if let Some(m) = &r.memory {
        out.push(format!(
            "| idle RSS ≤ 16 MiB | {} | {} |",
            mib(m.idle_kib),
            verdict(m.idle_kib <= 16 * 1024)
        ));
        out.push(format!(
            "| RSS per open stream ≤ 64 KiB | {:.1} KiB | {} |",
            m.per_stream_kib(),
            verdict(m.per_stream_kib() <= 64.0)
        ));
    }
    if let Some(f) = &mut r.front_door {
        if let Some(c1) = f.levels.iter_mut().find(|l| l.concurrency == 1) {
            let direct = c1.direct.first.p50();
            let (msgpack, http) = (c1.daemon.first.p50() - direct, c1.http.first.p50() - direct);
            out.push(format!(
                "| HTTP front door adds ≤ 2× what the MessagePack socket adds to the median first chunk (c = 1) | HTTP {} − direct {} = {}; MessagePack {} − direct = {}: {:.2}× | {} |",
                human(c1.http.first.p50()),
                human(direct),
                human(http),
                human(c1.daemon.first.p50()),
                human(msgpack),
                http / msgpack,
                verdict(http <= 2.0 * msgpack.max(0.0))
            ));
        }
        out.push(format!(
            "| HTTP cancel (client drops the response → upstream closed), median < 10 ms | {} | {} |",
            human(f.cancel.p50()),
            verdict(f.cancel.p50() < 10_000.0)
        ));
        out.push(format!(
            "| idle RSS with the HTTP socket open ≤ 16 MiB | {} | {} |",
            mib(f.idle_kib),
            verdict(f.idle_kib <= 16 * 1024)
        ));
        out.extend(litellm_targets(&mut f.levels, f.litellm_absent.as_deref()));
    }
    out.join("\n")
}

/// The targets against LiteLLM: what it adds to the median first chunk (c = 1) over
/// what the HTTP front door adds, and its streamed requests/s at c = 16.
fn litellm_targets(levels: &mut [http::Level], absent: Option<&str>) -> Vec<String> {
    if let Some(why) = absent {
        return vec![format!(
            "| HTTP front door vs LiteLLM | not measured: {why} | – |"
        )];
    }
    let mut out = Vec::new();
    if let Some(c1) = levels.iter_mut().find(|l| l.concurrency == 1) {
        let direct = c1.direct.first.p50();
        let http = c1.http.first.p50() - direct;
        let loopback = c1.loopback.first.p50() - direct;
        if let Some(litellm) = &mut c1.litellm {
            let added = litellm.first.p50() - direct;
            let ratio = added / http;
            out.push(format!(
                "| HTTP front door adds ≥ 50× less than LiteLLM to the median first chunk (c = 1) | LiteLLM {} − direct {} = {}; HTTP on `http.sock` adds {}: {ratio:.0}× less (on loopback TCP {}: {:.0}×; LiteLLM's own share, over the loopback path it calls, {}) | {} |",
                human(litellm.first.p50()),
                human(direct),
                human(added),
                human(http),
                human(loopback),
                added / loopback,
                human(litellm.first.p50() - c1.loopback.first.p50()),
                verdict(http > 0.0 && ratio >= 50.0)
            ));
        }
    }
    if let Some(c16) = levels.iter().find(|l| l.concurrency == 16) {
        if let Some(litellm) = &c16.litellm {
            let ratio = c16.http.requests_per_s() / litellm.requests_per_s();
            out.push(format!(
                "| HTTP front door serves ≥ 30× LiteLLM's streamed requests/s (c = 16) | `http.sock` {:.0} / LiteLLM {:.1} = {ratio:.0}× (loopback TCP {:.0}: {:.0}×) | {} |",
                c16.http.requests_per_s(),
                litellm.requests_per_s(),
                c16.loopback.requests_per_s(),
                c16.loopback.requests_per_s() / litellm.requests_per_s(),
                verdict(ratio >= 30.0)
            ));
        }
    }
    out
}
