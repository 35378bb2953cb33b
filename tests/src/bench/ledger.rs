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

/// One of a round's figures.
type Figure = fn(&Round) -> f64;

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

/// Waits until the ledger has taken every one of `generations` (written, dropped or
/// lost); its counters then.
async fn ledger_caught_up(
    client: &Client,
    generations: usize,
) -> provd_client::message::LedgerStatus {
    loop {
        let s = client.status().await.expect("status").ledger.expect("on");
        if s.written + s.dropped + s.lost >= generations as u64 {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
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
    // Two phases with the start order swapped. In an A/A run (both daemons with the
    // ledger off) on this machine the daemon started first served 5 to 10% less than its
    // twin, whatever it was configured with; so each ratio below is the geometric mean of
    // the two phases' ratios, in which that bias cancels, and both are shown.
    let workloads = [
        (Workload::Upstream, options.per_worker / 4),
        (Workload::Mock, options.per_worker),
    ];
    let rounds = options.rounds.div_ceil(2);
    // Per phase, per workload: the rounds with the ledger on and with it off.
    let mut phases: Vec<Vec<(Vec<Round>, Vec<Round>)>> = Vec::new();
    // Per workload: the daemons' CPU time (the ledger's writer included) and the
    // generations served, with the ledger on and off, over both phases.
    let mut cpu = [[(Duration::ZERO, 0usize); 2]; 2];
    let mut status = provd_client::message::LedgerStatus::default();
    for on_first in [true, false] {
        let (on, off) = if on_first {
            let on = daemon(on_state.path(), &upstream.base_url, true);
            (on, daemon(off_state.path(), &upstream.base_url, false))
        } else {
            let off = daemon(off_state.path(), &upstream.base_url, false);
            (daemon(on_state.path(), &upstream.base_url, true), off)
        };
        let mut generations = 0;
        let phase = rt.block_on(async {
            let (on_client, off_client) = (on.client().await, off.client().await);
            let mut phase = Vec::new();
            for (w, (workload, per_worker)) in workloads.into_iter().enumerate() {
                let before = [system::cpu_time(on.pid()), system::cpu_time(off.pid())];
                // A warm-up round each, not counted.
                round(&on_client, workload, 2).await;
                round(&off_client, workload, 2).await;
                let (mut on_rounds, mut off_rounds) = (Vec::new(), Vec::new());
                for i in 0..rounds {
                    // Alternating which goes first, so neither always follows the other.
                    if i % 2 == 0 {
                        on_rounds.push(round(&on_client, workload, per_worker).await);
                        off_rounds.push(round(&off_client, workload, per_worker).await);
                    } else {
                        off_rounds.push(round(&off_client, workload, per_worker).await);
                        on_rounds.push(round(&on_client, workload, per_worker).await);
                    }
                }
                let served = (rounds * per_worker + 2) * CONCURRENCY;
                generations += served;
                // The ledger's writer is done with this workload before its CPU is read.
                ledger_caught_up(&on_client, generations).await;
                let after = [system::cpu_time(on.pid()), system::cpu_time(off.pid())];
                for side in 0..2 {
                    cpu[w][side].0 += after[side] - before[side];
                    cpu[w][side].1 += served;
                }
                phase.push((on_rounds, off_rounds));
            }
            phase
        });
        let written = rt.block_on(async {
            let client = on.client().await;
            ledger_caught_up(&client, generations).await
        });
        status.written += written.written;
        status.dropped += written.dropped;
        status.lost += written.lost;
        phases.push(phase);
        drop(off);
        on.signal(libc::SIGTERM);
        let _ = on.wait();
    }

    let mut hot_path = String::new();
    for (w, (workload, per_worker)) in workloads.iter().enumerate() {
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
        let figures: [(&str, Figure); 2] = [
            ("requests/s", |r| r.requests_per_s),
            ("chunks/s", |r| r.chunks_per_s),
        ];
        for (figure, value) in figures {
            let of = |rounds: &[Round]| median(rounds.iter().map(value).collect());
            let ratios: Vec<f64> = phases
                .iter()
                .map(|phase| of(&phase[w].0) / of(&phase[w].1))
                .collect();
            // Every round of a side, over both phases.
            let side = |on: bool| {
                let rounds = phases
                    .iter()
                    .flat_map(|phase| if on { &phase[w].0 } else { &phase[w].1 });
                median(rounds.map(value).collect())
            };
            hot_path.push_str(&format!(
                "| {figure}, ledger on / off, {what} | {:.0} / {:.0}; ratio {:.3} (on started first {:.3}, off started first {:.3}) | {target} |\n",
                side(true),
                side(false),
                (ratios[0] * ratios[1]).sqrt(),
                ratios[0],
                ratios[1],
            ));
        }
        let per_generation =
            |(time, served): (Duration, usize)| time.as_secs_f64() * 1e6 / served as f64;
        let (on_us, off_us) = (per_generation(cpu[w][0]), per_generation(cpu[w][1]));
        hot_path.push_str(&format!(
            "| daemon CPU per generation, ledger on / off, {what} | {on_us:.1} µs / {off_us:.1} µs; the ledger's share {:.1}% | |\n",
            (on_us - off_us) / off_us * 100.0,
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
         on one connection; two phases (the start order swapped) of {} rounds per workload and \
         daemon, alternating; medians of the rounds.\n\n\
         | figure | value | target |\n|---|---|---|\n\
         {hot_path}\
         | records written / dropped / lost in those rounds | {} / {} / {} | no loss |\n\
         | ledger file per 1,000,000 generations | {:.1} MiB ({:.0} bytes per row) | |\n\
         {report_line}\n\
         | start to listening on those 1,000,000 rows (the budgets seeded from them) | {:.0} ms | |\n",
        system::machine(),
        system::load_average(),
        started.elapsed().as_secs_f64(),
        rounds,
        status.written,
        status.dropped,
        status.lost,
        size as f64 / (1024.0 * 1024.0),
        size as f64 / MILLION as f64,
        start_up.as_secs_f64() * 1000.0,
    )
}
