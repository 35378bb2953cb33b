//! `provd-ledger-bench`: what the usage ledger costs and holds (issue 16).
//!
//! 1. **The hot path.** Two daemons, one with the ledger on and one with `[ledger] enabled
//!    = false`, each driven at concurrency 64 (64 streams on one connection) in rounds
//!    that alternate between them, so the machine's noise falls on both alike; medians of
//!    requests/s and chunks/s per round, and their ratio (target: within 3%). Two
//!    workloads: `provd-bench`'s c = 64 one (an OpenAI-format upstream on loopback, 200
//!    chunks per generation), which the target is for, and the worst case for the
//!    ledger's share: the built-in mock, which makes no upstream request, with 20 chunks
//!    per generation, so the daemon's own work is all there is and the per-generation
//!    record weighs as much as it ever does.
//! 2. **Size.** The rows the ledger-on daemon wrote are multiplied (in SQL, in the
//!    daemon's own schema, with times one after another over 30 days and 20 users) to a
//!    million; the file's size is the size per million generations.
//! 3. **Reports.** The ledger-on daemon is started again on that file and
//!    `provd usage --since 30d --by user` is timed, end to end through the command line
//!    (target: under one second).

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use provd_client::{Client, GenerateEvent};

use super::stats::Samples;
use super::system;
use crate::upstream::Upstream;
use crate::{mock_request, Daemon};

/// Generations running at once.
const CONCURRENCY: usize = 64;
/// Chunks per generation of the worst case: short answers, so per-generation costs (the
/// ledger's record) weigh as much as they ever do.
const CHUNKS: u32 = 20;

/// What the rounds ask for.
#[derive(Clone, Copy)]
enum Workload {
    /// `provd-bench`'s: the upstream's 200-chunk answer.
    Upstream,
    /// The built-in mock's [`CHUNKS`] numbered chunks.
    Mock,
}

impl Workload {
    fn request(self) -> provd_client::GenerateRequest {
        match self {
            Workload::Upstream => provd_client::GenerateRequest {
                provider: Some("up".into()),
                ..provd_client::GenerateRequest::prompt("q")
            },
            Workload::Mock => mock_request(
                "a short question",
                serde_json::json!({"numbered": true, "chunks": CHUNKS}),
            ),
        }
    }
}
/// Rows the size and report figures are measured on.
const MILLION: i64 = 1_000_000;
/// Distinct users among the million rows.
const USERS: i64 = 20;

/// How long to run.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Alternating rounds per daemon.
    pub rounds: usize,
    /// Generations per worker per round.
    pub per_worker: usize,
    /// Times `provd usage` runs.
    pub reports: usize,
}

/// One round's figures.
struct Round {
    requests_per_s: f64,
    chunks_per_s: f64,
}

/// A daemon with the mock provider and `up` at `upstream`, the ledger on or off, on
/// `state`.
fn daemon(state: &Path, upstream: &str, ledger: bool) -> Daemon {
    Daemon::builder()
        .config(&format!(
            "[daemon]\nkeepalive_interval_ms = 0\ndefault_provider = \"mock\"\n\
             [providers.mock]\ntype = \"mock\"\n\
             [providers.up]\ntype = \"openai-compatible\"\nbase_url = \"{upstream}/v1\"\n\
             default_model = \"m\"\nretry_attempts = 0\ntimeout_seconds = 600\n\
             [ledger]\nenabled = {ledger}\n"
        ))
        .env("STATE_DIRECTORY", state.to_str().expect("a UTF-8 path"))
        .env("PROVD_LOG", "warn,provd::server=info")
        .start()
}

async fn round(client: &Client, workload: Workload, per_worker: usize) -> Round {
    let started = Instant::now();
    let workers = (0..CONCURRENCY).map(|_| async {
        let mut chunks = 0u64;
        for _ in 0..per_worker {
            let mut generation = client.generate(workload.request()).await.expect("starts");
            while let Some(event) = generation.next().await {
                match event.expect("no error") {
                    GenerateEvent::Chunk(_) => chunks += 1,
                    GenerateEvent::Done(_) => break,
                }
            }
        }
        chunks
    });
    let chunks: u64 = join_all(workers).await.into_iter().sum();
    let elapsed = started.elapsed().as_secs_f64();
    Round {
        requests_per_s: (CONCURRENCY * per_worker) as f64 / elapsed,
        chunks_per_s: chunks as f64 / elapsed,
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Multiplies the rows of the ledger at `path` into `MILLION` rows, one after another
/// over the last 30 days, among `USERS` uids; returns the file's size in bytes after a
/// checkpoint.
fn fill_to_a_million(path: &Path) -> u64 {
    let conn = rusqlite::Connection::open(path).expect("the ledger opens");
    let sample: i64 = conn
        .query_row("SELECT count(*) FROM generations", [], |r| r.get(0))
        .expect("count");
    assert!(sample > 0, "the hot-path rounds wrote no rows");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let span_ms: i64 = 30 * 86_400_000 - 60_000;
    let copy = format!(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {max}) \
         INSERT INTO generations (at_ms, uid, user, token, provider, model, answered_provider, \
         answered_model, prompt_tokens, completion_tokens, reasoning_tokens, chunks, outcome, \
         error_code, first_chunk_ms, duration_ms) \
         SELECT {start} + n.i * {step}, 10000 + n.i % {USERS}, 'user' || (n.i % {USERS}), \
         token, provider, model, answered_provider, answered_model, prompt_tokens, \
         completion_tokens, reasoning_tokens, chunks, outcome, error_code, first_chunk_ms, \
         duration_ms FROM n JOIN generations g ON g.id = (SELECT min(id) FROM generations) + n.i % {sample}",
        max = MILLION - sample - 1,
        start = now_ms - span_ms,
        step = span_ms / MILLION,
    );
    conn.execute_batch(&format!("BEGIN; {copy}; COMMIT;"))
        .expect("the rows are multiplied");
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(conn);
    std::fs::metadata(path).expect("the file").len()
}

/// Runs the benchmark; the markdown report.
pub fn run(options: Options) -> String {
    let load_before = system::load_average();
    let started = Instant::now();
    let on_state = tempfile::tempdir().expect("tempdir");
    let off_state = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // The upstream gets a runtime (and thread) of its own, so it serves both daemons
    // alike and its work is not charged to either.
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("upstream runtime");
    let answer = super::load::answer();
    let upstream = upstream_rt.block_on(Upstream::start(move |_| answer.clone()));
    let on = daemon(on_state.path(), &upstream.base_url, true);
    let off = daemon(off_state.path(), &upstream.base_url, false);
    let mut figures = Vec::new();
    let mut generations = 0;
    rt.block_on(async {
        let (on_client, off_client) = (on.client().await, off.client().await);
        for (workload, per_worker) in [
            (Workload::Upstream, options.per_worker / 4),
            (Workload::Mock, options.per_worker),
        ] {
            // A warm-up round each, not counted.
            round(&on_client, workload, 2).await;
            round(&off_client, workload, 2).await;
            let (mut on_rounds, mut off_rounds) = (Vec::new(), Vec::new());
            for i in 0..options.rounds {
                // Alternating which goes first, so neither always follows the other.
                if i % 2 == 0 {
                    on_rounds.push(round(&on_client, workload, per_worker).await);
                    off_rounds.push(round(&off_client, workload, per_worker).await);
                } else {
                    off_rounds.push(round(&off_client, workload, per_worker).await);
                    on_rounds.push(round(&on_client, workload, per_worker).await);
                }
            }
            generations += (options.rounds * per_worker + 2) * CONCURRENCY;
            figures.push((workload, per_worker, on_rounds, off_rounds));
        }
    });
    let status = rt.block_on(async {
        let client = on.client().await;
        // Everything written before the figures are read.
        let total = generations as u64;
        for _ in 0..10_000 {
            let s = client.status().await.expect("status").ledger.expect("on");
            if s.written + s.dropped + s.lost >= total {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        client.status().await.expect("status").ledger.expect("on")
    });
    drop(off);
    on.signal(libc::SIGTERM);
    let _ = on.wait();

    let requests = |rounds: &[Round]| median(rounds.iter().map(|r| r.requests_per_s).collect());
    let chunks = |rounds: &[Round]| median(rounds.iter().map(|r| r.chunks_per_s).collect());
    let mut hot_path = String::new();
    for (workload, per_worker, on_rounds, off_rounds) in &figures {
        let (req_on, req_off) = (requests(on_rounds), requests(off_rounds));
        let (chunks_on, chunks_off) = (chunks(on_rounds), chunks(off_rounds));
        let what = match workload {
            Workload::Upstream => format!(
                "provd-bench's c = 64 (OpenAI-format upstream, {} chunks), {} generations per round",
                super::load::CHUNKS,
                per_worker * CONCURRENCY
            ),
            Workload::Mock => format!(
                "worst case: built-in mock, {CHUNKS} chunks, {} generations per round",
                per_worker * CONCURRENCY
            ),
        };
        let target = match workload {
            Workload::Upstream => "≥ 0.97",
            Workload::Mock => "(shown)",
        };
        hot_path.push_str(&format!(
            "| requests/s, ledger on / off (medians), {what} | {req_on:.0} / {req_off:.0} = {:.3} | {target} |\n\
             | chunks/s, ledger on / off (medians), {what} | {chunks_on:.0} / {chunks_off:.0} = {:.3} | {target} |\n",
            req_on / req_off,
            chunks_on / chunks_off,
        ));
    }

    let path = on_state.path().join("usage.db");
    let size = fill_to_a_million(&path);

    // Reports over the million rows, through the command line as an admin types it.
    // Start-up reads the ledger too (the budgets' counters are seeded from this month's
    // rows): the time to listening on a million rows.
    let t = Instant::now();
    let daemon = daemon(on_state.path(), &upstream.base_url, true);
    let start_up = t.elapsed();
    let mut report = Samples::new();
    let mut failure = None;
    for _ in 0..options.reports {
        let t = Instant::now();
        let (status, out, err) =
            crate::run_provd(&["usage", "--since", "30d", "--by", "user"], &daemon.socket);
        report.push(t.elapsed());
        if !status.success() {
            failure = Some(err.lines().next().unwrap_or_default().to_owned());
            break;
        }
        assert!(out.contains("user1"), "the report lists the users: {out}");
    }
    drop(daemon);

    let report_line = match failure {
        Some(e) => format!("| `provd usage --since 30d --by user`, 1,000,000 rows | failed: {e} | < 1 s |"),
        None => format!(
            "| `provd usage --since 30d --by user`, 1,000,000 rows (median of {}, max) | {:.0} ms, {:.0} ms | < 1 s |",
            report.len(),
            report.p50() / 1000.0,
            report.max() / 1000.0
        ),
    };
    format!(
        "# provd-ledger-bench\n\n\
         Machine: {}. Load average {load_before} before, {} after; {:.0} s. Concurrency {CONCURRENCY} \
         on one connection, {} rounds per workload and daemon, alternating.\n\n\
         | figure | value | target |\n|---|---|---|\n\
         {hot_path}\
         | records written / dropped / lost in those rounds | {} / {} / {} | no loss |\n\
         | ledger file per 1,000,000 generations | {:.1} MiB ({:.0} bytes per row) | |\n\
         {report_line}\n\
         | start to listening on those 1,000,000 rows (the budgets seeded from them) | {:.0} ms | |\n",
        system::machine(),
        system::load_average(),
        started.elapsed().as_secs_f64(),
        options.rounds,
        status.written,
        status.dropped,
        status.lost,
        size as f64 / (1024.0 * 1024.0),
        size as f64 / MILLION as f64,
        start_up.as_secs_f64() * 1000.0,
    )
}
