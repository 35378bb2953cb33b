//! `provd-bench`: the daemon's benchmark table, in one command (see
//! [`provd_tests::bench`] for what is measured and how).
//!
//! ```text
//! cargo build --release -p provd -p provd-tests
//! target/release/provd-bench [--quick] [--only c1,c64,...] [--workers N] [--tls] [--out FILE]
//! ```
//!
//! Prints the markdown table and writes it to `--out` (default
//! `target/provd-bench.md`). `--workers N` sets the daemons' `worker_threads`. The
//! machine is the reader's to judge: the table names it and its load average, and the
//! targets are ratios measured in the same run. `--only http` runs the HTTP front door's
//! section alone (direct, MessagePack socket and `http.sock` side by side).

use std::path::PathBuf;

use provd_tests::bench::{self, Options};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let options = Options {
        quick: std::env::args().any(|a| a == "--quick"),
        only: arg("--only")
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        workers: arg("--workers").map(|n| n.parse().expect("--workers takes a number")),
        tls: std::env::args().any(|a| a == "--tls"),
    };
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| "target/provd-bench.md".into()));
    let report = bench::run(&options);
    println!("{report}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).expect("create the report's directory");
    }
    std::fs::write(&out, format!("{report}\n")).expect("write the report");
    eprintln!("written to {}", out.display());
}
