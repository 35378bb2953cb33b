//! `provd-ledger-bench`: the usage ledger's cost on the hot path, its size per million
//! generations and the time of a report over a million rows (see
//! [`provd_tests::bench::ledger`]).
//!
//! ```text
//! cargo build --release -p provd -p provd-tests
//! target/release/provd-ledger-bench [--quick] [--out FILE]
//! ```

use std::path::PathBuf;

use provd_tests::bench::ledger::{self, Options};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map_or_else(
            || PathBuf::from("target/provd-ledger-bench.md"),
            PathBuf::from,
        );
    let options = if quick {
        Options {
            rounds: 5,
            per_worker: 40,
            reports: 3,
        }
    } else {
        Options {
            rounds: 15,
            per_worker: 200,
            reports: 7,
        }
    };
    let report = ledger::run(options);
    println!("{report}");
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).expect("create the report's directory");
    }
    std::fs::write(&out, format!("{report}\n")).expect("write the report");
    eprintln!("written to {}", out.display());
}
