//! `provd-creds-bench`: how long a provider whose key was just set takes to serve its
//! first request (the key sealed, the cached instance retired, a new one built with the
//! unsealed key, the upstream called), against a mock upstream on loopback.
//!
//! ```text
//! cargo build --release -p provd -p provd-tests
//! target/release/provd-creds-bench [--rounds N]
//! ```

use std::time::{Duration, Instant};

use provd_client::message::{self, CredsSetParams, Empty};
use provd_client::{GenerateEvent, GenerateRequest};
use provd_tests::apis::openai;
use provd_tests::upstream::Upstream;
use provd_tests::Daemon;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let upstream_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let upstream = upstream_rt.block_on(Upstream::start(|_| {
        openai::stream_reply(&openai::stream_text("m", &["ok"], "stop", (1, 1)), 64)
    }));
    let state = tempfile::tempdir().expect("tempdir");
    let state_dir = state.path().join("state");
    let config = format!(
        "[daemon]\nstate_dir = \"{}\"\nkeepalive_interval_ms = 0\n[providers.p]\ntype = \"openai\"\nbase_url = \"{}/v1\"\ndefault_model = \"m\"\nretry_attempts = 0\napi_key_env = \"PROVD_BENCH_UNSET\"\n",
        state_dir.display(),
        upstream.base_url
    );
    let daemon = Daemon::builder()
        .config(&config)
        .env(
            "SECRET_KEY",
            "8f3a9c2e71d04b6a95e3f0c1d2b7a48e6c5d9f0a1b2c3d4e5f60718293a4b5c6",
        )
        .env("PROVD_LOG", "info")
        .start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = daemon.client().await;
        let (mut set, mut first_request, mut warm_request) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..rounds {
            let params = CredsSetParams { provider: "p".into(), secret: format!("sk-bench-{i:08}-xxxxxxxxxxxxxxxx") };
            let start = Instant::now();
            let _: Empty = client.request(message::method::CREDS_SET, &params).await.expect("creds_set");
            set.push(start.elapsed());
            for samples in [&mut first_request, &mut warm_request] {
                let start = Instant::now();
                let mut g = client.generate(GenerateRequest::prompt("q")).await.expect("generate");
                while let Some(event) = g.next().await {
                    if let GenerateEvent::Chunk(_) = event.expect("event") {
                        samples.push(start.elapsed());
                        break;
                    }
                }
                while g.next().await.is_some() {}
            }
        }
        println!("| measurement ({rounds} rounds) | p50 |\n|---|---|");
        println!("| creds_set (seal + fsync + rename, admin request round trip) | {:?} |", median(set));
        println!("| first chunk of the first request after the key changed (instance rebuilt, key unsealed) | {:?} |", median(first_request));
        println!("| first chunk of the next request (cached instance) | {:?} |", median(warm_request));
    });
}
