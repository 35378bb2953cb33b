//! The soak, short: a few thousand generations over many connections with random
//! cancels, drops and vanishing clients, checked as `provd_tests::soak` describes. The
//! long soak is `provd-soak` (README, Benchmark section).

use std::time::Duration;

use provd_tests::soak::{self, Options, RSS_GROWTH_LIMIT};
use provd_tests::Daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_delivers_every_chunk_once_in_order_and_leaks_nothing() {
    // One worker thread: the soak then also covers the single-threaded runtime that
    // `worker_threads` allows, while the rest of the suite runs the default. Debug
    // logging of thousands of generations would be most of the work.
    let daemon = Daemon::builder()
        .config(
            "[daemon]\nworker_threads = 1\ndefault_provider = \"mock\"\n\
             [providers.mock]\ntype = \"mock\"\ndefault_model = \"mock-1\"\n",
        )
        .env("PROVD_LOG", "warn,provd::server=info")
        .start();
    let report = soak::run(
        &daemon,
        Options {
            connections: 8,
            streams: 4,
            vanishing: 2,
            duration: None,
            generations: Some(2_000),
            max_chunks: 32,
            max_chunk_delay_ms: 2,
            seed: 0x7e57_5eed,
            rss_every: Duration::from_millis(20),
        },
    )
    .await;
    println!("{}", report.markdown());
    assert_eq!(report.failure_count, 0, "{}", report.markdown());
    assert_eq!(report.generations, 2_000);
    for (what, n) in [
        ("completed", report.completed),
        ("cancelled", report.cancelled),
        ("dropped", report.dropped),
        ("vanished", report.vanished),
    ] {
        assert!(n > 0, "no generation was {what}: {}", report.markdown());
    }
    assert!(
        report.rss_growth() <= RSS_GROWTH_LIMIT,
        "{}",
        report.markdown()
    );
}
