//! `provd-cache-bench`: the daemon's memory and descriptors while clients name model
//! after model (issue 11, part 3). Each provider (the mock, and an openai-compatible one
//! against a loopback mock upstream) serves `names` generations, each for a model name
//! never used before; the daemon's RSS and open descriptors are sampled every
//! `interval` generations. Meanwhile a second connection runs a steady loop (a ping,
//! then a generation for one fixed model), whose latencies show that other clients are
//! served throughout.
//!
//! The figures are printed, not judged, except by the smoke test in the custody suite,
//! which runs a few hundred names and checks the bounds that do not depend on timing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provd_client::{Client, GenerateRequest};

use super::stats::{human, Samples};
use super::system;
use crate::apis::openai;
use crate::upstream::Upstream;
use crate::Daemon;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Generations (distinct model names) per provider.
    pub names: usize,
    /// Generations between two samples.
    pub interval: usize,
    /// Generations in flight at once, on one connection.
    pub concurrency: usize,
    /// The daemon's `max_provider_instances`; 0 leaves the key out (its default), which
    /// also lets the benchmark run against a daemon that predates it.
    pub max_instances: usize,
    /// The daemon's log filter (`PROVD_LOG`); the harness needs its "listening" line.
    pub log: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            names: 100_000,
            interval: 10_000,
            concurrency: 16,
            max_instances: 256,
            log: "warn,provd::server=info,provd::server::connection=warn".into(),
        }
    }
}

/// The daemon at one point of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Generations done so far.
    pub done: usize,
    /// Its resident set, KiB.
    pub rss_kib: u64,
    /// Its open descriptors.
    pub fds: usize,
    /// The provider's instances cached, from `status`.
    pub instances: u64,
}

/// One provider's run.
#[derive(Clone, Debug)]
pub struct Run {
    /// `mock` or `openai-compatible`.
    pub provider: &'static str,
    /// Samples, the first before any generation.
    pub samples: Vec<Sample>,
    /// Generations that failed (`overloaded` included).
    pub failures: usize,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
    /// Wall time of the generations.
    pub elapsed: Duration,
    /// The steady client's pings, µs.
    pub steady_pings: Samples,
    /// The steady client's generations, µs.
    pub steady_generations: Samples,
    /// The steady client's failures.
    pub steady_failures: usize,
    /// Size of the last `status` result, bytes of MessagePack.
    pub status_bytes: usize,
    /// The provider's `requests` counter at the end, from `status`.
    pub counted_requests: u64,
}

/// Open descriptors of a process, from `/proc/PID/fd`.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The configuration: a mock provider `mock` and an openai-compatible `http` at
/// `base_url`.
fn config(base_url: &str, max_instances: usize) -> String {
    let cap = match max_instances {
        0 => String::new(),
        n => format!("max_provider_instances = {n}\n"),
    };
    format!(
        "[daemon]\nkeepalive_interval_ms = 0\n{cap}\n\
         [providers.mock]\ntype = \"mock\"\ndefault_model = \"mock-1\"\nretry_attempts = 0\n\n\
         [providers.http]\ntype = \"openai-compatible\"\nbase_url = \"{base_url}/v1\"\n\
         default_model = \"steady\"\nretry_attempts = 0\n"
    )
}

/// A short upstream answer naming the requested model.
fn upstream_answer(r: &crate::upstream::Recorded) -> crate::upstream::Reply {
    let model = r.json()["model"].as_str().unwrap_or("?").to_owned();
    openai::stream_reply(
        &openai::stream_text(&model, &["one ", "two"], "stop", (3, 2)),
        usize::MAX,
    )
}

fn request(provider: &str, model: String) -> GenerateRequest {
    let mut r = GenerateRequest::prompt("two words");
    r.provider = Some(provider.to_owned());
    r.model = Some(model);
    r
}

async fn generate(client: &Client, request: GenerateRequest) -> Result<(), String> {
    match client.generate(request).await {
        Ok(g) => g
            .collect_text()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Until `stop`: a ping, then a generation of `provider`'s default model, each timed.
async fn steady_loop(
    client: Client,
    provider: &'static str,
    stop: Arc<AtomicBool>,
) -> (Samples, Samples, usize) {
    let (mut pings, mut generations) = (Samples::new(), Samples::new());
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        if client.ping().await.is_err() {
            failures += 1;
        }
        pings.push(start.elapsed());
        let start = Instant::now();
        let mut r = GenerateRequest::prompt("steady");
        r.provider = Some(provider.to_owned());
        if generate(&client, r).await.is_err() {
            failures += 1;
        }
        generations.push(start.elapsed());
    }
    (pings, generations, failures)
}

async fn sample(daemon: &Daemon, client: &Client, provider: &str, done: usize) -> Sample {
    let status = client.status().await.expect("status");
    Sample {
        done,
        rss_kib: system::rss_kib(daemon.pid()),
        fds: open_fds(daemon.pid()),
        instances: status
            .provider_counters
            .iter()
            .filter(|p| p.provider == provider)
            .map(|p| p.instances)
            .sum(),
    }
}

/// Runs `names` distinct-model generations on provider `provider` of `daemon`.
pub async fn run_provider(daemon: &Daemon, provider: &'static str, options: &Options) -> Run {
    let client = daemon.client().await;
    let observer = daemon.client().await;
    // Warm up: the first generation opens what stays open (the upstream connection).
    generate(&client, request(provider, "warm-up".into()))
        .await
        .expect("the warm-up generation succeeds");
    let stop = Arc::new(AtomicBool::new(false));
    let steady = tokio::spawn(steady_loop(daemon.client().await, provider, stop.clone()));
    let mut samples = vec![sample(daemon, &observer, provider, 0).await];
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let first_failure = Arc::new(std::sync::Mutex::new(None));
    let start = Instant::now();
    let mut done = 0;
    while done < options.names {
        let round = options.interval.min(options.names - done);
        let end = done + round;
        let workers: Vec<_> = (0..options.concurrency.min(round))
            .map(|_| {
                let (client, next, failures, first_failure) = (
                    client.clone(),
                    next.clone(),
                    failures.clone(),
                    first_failure.clone(),
                );
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= end {
                            return;
                        }
                        let model = format!("{provider}-name-{i:06}");
                        if let Err(e) = generate(&client, request(provider, model)).await {
                            failures.fetch_add(1, Ordering::Relaxed);
                            first_failure.lock().unwrap().get_or_insert(e);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("a worker panicked");
        }
        next.store(end, Ordering::Relaxed);
        done = end;
        samples.push(sample(daemon, &observer, provider, done).await);
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (steady_pings, steady_generations, steady_failures) =
        steady.await.expect("the steady client panicked");
    let status = observer.status().await.expect("status");
    let status_bytes = rmp_serde::to_vec_named(&status).map_or(0, |v| v.len());
    let counted_requests = status
        .provider_counters
        .iter()
        .find(|p| p.provider == provider)
        .map_or(0, |p| p.metrics.requests);
    let first_failure = first_failure.lock().unwrap().take();
    Run {
        provider,
        samples,
        failures: failures.load(Ordering::Relaxed),
        first_failure,
        elapsed,
        steady_pings,
        steady_generations,
        steady_failures,
        status_bytes,
        counted_requests,
    }
}

/// Starts the loopback upstream and the daemon, runs both providers.
pub async fn run(options: &Options) -> (Vec<Run>, Daemon) {
    let upstream = Upstream::start(upstream_answer).await;
    let daemon = Daemon::builder()
        .config(&config(&upstream.base_url, options.max_instances))
        .env("PROVD_LOG", &options.log)
        .start();
    let mut runs = Vec::new();
    for provider in ["mock", "http"] {
        runs.push(run_provider(&daemon, provider, options).await);
    }
    drop(upstream);
    (runs, daemon)
}

/// The runs as a markdown report.
pub fn report(options: &Options, runs: &mut [Run]) -> String {
    let mut out = format!(
        "# provd-cache-bench\n\nMachine: {}. Load average {}. {} generations with distinct \
         model names per provider, {} at once, max_provider_instances = {}.\n",
        system::machine(),
        system::load_average(),
        options.names,
        options.concurrency,
        match options.max_instances {
            0 => "left to the daemon".to_owned(),
            n => n.to_string(),
        }
    );
    for run in runs.iter_mut() {
        out.push_str(&format!(
            "\n## {}\n\n{} generations in {:.1} s ({:.0}/s), {} failed{}; the provider counted \
             {} requests (with the warm-up and the steady client's); last status frame {} \
             bytes.\n\n\
             | generations | RSS MiB | open fds | instances |\n|---:|---:|---:|---:|\n",
            run.provider,
            options.names,
            run.elapsed.as_secs_f64(),
            options.names as f64 / run.elapsed.as_secs_f64(),
            run.failures,
            run.first_failure
                .as_deref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
            run.counted_requests,
            run.status_bytes,
        ));
        for s in &run.samples {
            out.push_str(&format!(
                "| {} | {:.1} | {} | {} |\n",
                s.done,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.instances
            ));
        }
        out.push_str(&format!(
            "\nSteady client on a second connection, {} failed: {} pings, median {}, p99 {}, \
             max {}; {} generations, median {}, p99 {}, max {}.\n",
            run.steady_failures,
            run.steady_pings.len(),
            human(run.steady_pings.p50()),
            human(run.steady_pings.p99()),
            human(run.steady_pings.max()),
            run.steady_generations.len(),
            human(run.steady_generations.p50()),
            human(run.steady_generations.p99()),
            human(run.steady_generations.max()),
        ));
    }
    out
}
