//! `provd-soak`: a long soak of the real daemon (see [`provd_tests::soak`] for what it
//! does and checks).
//!
//! ```text
//! cargo build --release -p provd -p provd-tests
//! target/release/provd-soak [--minutes 5] [--generations N] [--connections 32]
//!                           [--streams 8] [--vanishing 4] [--seed N] [--out FILE]
//! ```
//!
//! Runs until `--minutes` have passed or `--generations` have started, prints a markdown
//! table, writes it to `--out` (default `target/provd-soak.md`), and exits with 1 if any
//! check failed.

use std::path::PathBuf;
use std::time::Duration;

use provd_tests::soak::{self, Options};
use provd_tests::Daemon;

fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    let value = args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))?;
    match value.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            eprintln!("provd-soak: {name} {value}: not a valid value");
            std::process::exit(2);
        }
    }
}

fn main() {
    let defaults = Options::default();
    let generations = arg::<u64>("--generations");
    let minutes = arg::<f64>("--minutes");
    let options = Options {
        connections: arg("--connections").unwrap_or(defaults.connections),
        streams: arg("--streams").unwrap_or(defaults.streams),
        vanishing: arg("--vanishing").unwrap_or(defaults.vanishing),
        // --generations alone runs until that many; --minutes (default 5) bounds either.
        duration: match (minutes, generations) {
            (Some(m), _) => Some(Duration::from_secs_f64(m * 60.0)),
            (None, Some(_)) => None,
            (None, None) => defaults.duration,
        },
        generations,
        seed: arg("--seed").unwrap_or(defaults.seed),
        ..defaults
    };
    let out =
        PathBuf::from(arg::<String>("--out").unwrap_or_else(|| "target/provd-soak.md".into()));
    eprintln!("provd-soak: {options:?}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Info-level lines per connection would be a log of every vanishing client.
    let daemon = Daemon::builder()
        .env(
            "PROVD_LOG",
            "warn,provd::server=info,provd::server::connection=warn",
        )
        .start();
    let report = runtime.block_on(soak::run(&daemon, options));
    let text = format!(
        "# provd-soak\n\nMachine: {}.\n\n{}\n",
        provd_tests::bench::system::machine(),
        report.markdown()
    );
    println!("{text}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).expect("create the report's directory");
    }
    std::fs::write(&out, &text).expect("write the report");
    eprintln!("written to {}", out.display());
    if !report.passed() {
        eprintln!("provd-soak: FAILED");
        std::process::exit(1);
    }
}
