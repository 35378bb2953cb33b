//! `provd-cache-bench`: the daemon's RSS and open descriptors while clients name 100,000
//! distinct models, for the mock and an openai-compatible provider against a loopback
//! upstream, with a second client served throughout (see [`provd_tests::bench::cache`]).
//!
//! ```text
//! cargo build --release -p provd -p provd-tests
//! target/release/provd-cache-bench [--names N] [--interval N] [--concurrency N]
//!                                  [--max-instances N] [--out FILE]
//! ```
//!
//! Prints a markdown report and writes it to `--out` (default
//! `target/provd-cache-bench.md`). The daemon is `target/release/provd` beside this
//! binary, or `$PROVD_BIN`.

use std::path::PathBuf;

use provd_tests::bench::cache::{self, Options};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(name: &str, default: usize) -> usize {
    arg(name).map_or(default, |n| {
        n.parse()
            .unwrap_or_else(|_| panic!("{name} takes a number, got {n:?}"))
    })
}

fn main() {
    let defaults = Options::default();
    let options = Options {
        names: number("--names", defaults.names),
        interval: number("--interval", defaults.interval).max(1),
        concurrency: number("--concurrency", defaults.concurrency).max(1),
        max_instances: number("--max-instances", defaults.max_instances),
        log: defaults.log,
    };
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "target/provd-cache-bench.md".into()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (mut runs, daemon) = runtime.block_on(cache::run(&options));
    drop(daemon);
    let report = cache::report(&options, &mut runs);
    println!("{report}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).expect("create the report's directory");
    }
    std::fs::write(&out, format!("{report}\n")).expect("write the report");
    eprintln!("written to {}", out.display());
}
