//! How long unsealing one credential takes: `SecureStorage::open` (directory checks,
//! lock, sweep) plus `get` (read, HKDF, AES-256-GCM open), as the daemon does when it
//! first needs a provider's key.
//!
//! ```text
//! cargo run --release -p provd --example unseal_bench [iterations]
//! ```
//!
//! Prints the median and the 10th/90th percentiles; a benchmark prints, it does not
//! assert. Timings on a shared machine are noisy: compare medians of several runs.

use std::time::{Duration, Instant};

use provd::credentials::{MasterKey, SecureStorage};
use provd::secret::Secret;

/// Iterations when none is given on the command line.
const DEFAULT_ITERATIONS: usize = 2000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let iterations = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => DEFAULT_ITERATIONS,
    };
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("credentials");
    let hex = MasterKey::generate()?;
    let key = || MasterKey::from_hex(hex.expose().as_bytes(), "benchmark");

    let store = SecureStorage::open(&dir, key()?)?;
    store.put(
        "anthropic",
        &Secret::new("sk-ant-api03-".to_owned() + &"x".repeat(95)),
        "set",
    )?;
    drop(store);

    let mut open_get = Vec::with_capacity(iterations);
    let mut get_only = Vec::with_capacity(iterations);
    // Deriving the master key's own sub-keys (key id, fingerprint key) is part of
    // start-up, not of unsealing; it is done outside the timed region.
    let keys: Vec<MasterKey> = (0..iterations).map(|_| key()).collect::<Result<_, _>>()?;
    for master in keys {
        let started = Instant::now();
        let store = SecureStorage::open(&dir, master)?;
        let credential = store.get("anthropic")?.ok_or("credential missing")?;
        open_get.push(started.elapsed());
        assert!(!credential.secret.is_empty());

        let started = Instant::now();
        let credential = store.get("anthropic")?.ok_or("credential missing")?;
        get_only.push(started.elapsed());
        assert!(!credential.secret.is_empty());
    }
    report("open + get", &mut open_get);
    report("get (store already open)", &mut get_only);
    Ok(())
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what}: median {:.1} µs (p10 {:.1} µs, p90 {:.1} µs) over {} iterations",
        micros(at(0.5)),
        micros(at(0.1)),
        micros(at(0.9)),
        samples.len()
    );
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
