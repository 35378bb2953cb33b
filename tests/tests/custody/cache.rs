//! Bounded memory and descriptors whatever a client names (issue 11, part 3): every
//! distinct model a client sends makes a provider instance, so the instance cache is
//! capped (`max_provider_instances`), evicts only idle instances, expires idle ones
//! (`provider_idle_seconds`), and the providers' HTTP clients are one per provider; the
//! `status` reply stays small however many models were named.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use provd_client::message::{StatusResult, STATUS_TOP_INSTANCES};
use provd_client::{Client, ErrorCode, GenerateEvent, GenerateRequest};
use provd_tests::apis::openai;
use provd_tests::bench::cache::{self, open_fds};
use provd_tests::upstream::{Part, Recorded, Reply, Upstream};
use provd_tests::{numbered, numbered_text, run_provd, Daemon};
use tokio::sync::Notify;

/// The cap most tests run with: small, so that a few dozen names overflow it.
const CAP: u64 = 8;
/// How long a condition the daemon reaches on its own (an expiry, a released instance)
/// may take before a test gives up: a safety net, not a synchronisation.
const PATIENCE: Duration = Duration::from_secs(60);
/// The pause between two looks at the daemon's `status` while waiting for a condition.
const POLL: Duration = Duration::from_millis(20);

/// A daemon with a mock provider `m` (the default) and, when `base_url` is given, an
/// openai-compatible provider `o` at that upstream; `daemon` is added to `[daemon]`.
fn daemon_with(base_url: Option<&str>, daemon: &str) -> Daemon {
    let mut config = format!(
        "[daemon]\ndefault_provider = \"m\"\nkeepalive_interval_ms = 0\n{daemon}\n\n\
         [providers.m]\ntype = \"mock\"\ndefault_model = \"m-default\"\nretry_attempts = 0\n"
    );
    if let Some(url) = base_url {
        config.push_str(&format!(
            "\n[providers.o]\ntype = \"openai-compatible\"\nbase_url = \"{url}/v1\"\n\
             default_model = \"o-default\"\nretry_attempts = 0\n"
        ));
    }
    Daemon::with_config(&config)
}

/// The upstream's answer: two chunks naming the requested model.
fn answer(r: &Recorded) -> Reply {
    let model = r.json()["model"].as_str().unwrap_or("?").to_owned();
    openai::stream_reply(
        &openai::stream_text(&model, &["one ", "two"], "stop", (3, 2)),
        usize::MAX,
    )
}

fn request(provider: &str, model: &str) -> GenerateRequest {
    let mut r = GenerateRequest::prompt("two words");
    r.provider = Some(provider.to_owned());
    r.model = Some(model.to_owned());
    r
}

async fn generate(client: &Client, provider: &str, model: &str) {
    provd_tests::generation_text(client, request(provider, model)).await;
}

/// Instances in the daemon's cache, over all providers.
fn cached(status: &StatusResult) -> u64 {
    status.provider_counters.iter().map(|p| p.instances).sum()
}

fn requests_of(status: &StatusResult, provider: &str) -> u64 {
    status
        .provider_counters
        .iter()
        .find(|p| p.provider == provider)
        .map_or(0, |p| p.metrics.requests)
}

/// Asks `status` until `f` finds what it waits for, at most [`PATIENCE`].
async fn until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn the_instances_never_exceed_max_provider_instances_whatever_models_clients_name() {
    let upstream = Upstream::start(answer).await;
    let daemon = daemon_with(
        Some(&upstream.base_url),
        &format!("max_provider_instances = {CAP}"),
    );
    let client = daemon.client().await;
    for i in 0..40 {
        generate(&client, "m", &format!("mock-{i}")).await;
        generate(&client, "o", &format!("http-{i}")).await;
        let status = client.status().await.unwrap();
        let listed = status.instances.len() as u64 + status.instances_omitted;
        assert!(
            cached(&status) <= CAP && listed <= CAP,
            "{} cached and {listed} listed after {} names, over the cap of {CAP}",
            cached(&status),
            2 * (i + 1)
        );
    }
    let status = client.status().await.unwrap();
    assert_eq!(status.max_provider_instances, CAP);
    assert_eq!(cached(&status), CAP);
    // Eviction loses no counts: they live per provider.
    assert_eq!(
        (requests_of(&status, "m"), requests_of(&status, "o")),
        (40, 40)
    );
}

#[tokio::test]
async fn an_instance_serving_a_stream_is_never_evicted_while_other_names_churn() {
    let release = Arc::new(Notify::new());
    let held_release = release.clone();
    let upstream = Upstream::start(move |r| {
        if r.json()["model"] != "held" {
            return answer(r);
        }
        let before = openai::chunk_event("held", serde_json::json!({"content": "before "}), None);
        let after = openai::stream_text("held", &["after"], "stop", (3, 2));
        Reply::stream(
            "text/event-stream",
            vec![
                Part::Bytes(before.into_bytes()),
                Part::Wait(held_release.clone()),
                Part::Bytes(after.into_bytes()),
            ],
        )
    })
    .await;
    let daemon = daemon_with(
        Some(&upstream.base_url),
        &format!("max_provider_instances = {CAP}"),
    );
    let holder = daemon.client().await;
    let mut held = holder.generate(request("o", "held")).await.unwrap();
    match held.next().await.unwrap().unwrap() {
        GenerateEvent::Chunk(c) => assert_eq!(c.text, "before "),
        other => panic!("expected the first chunk, got {other:?}"),
    }

    // The held stream cannot end before `release`: every name below is churned through
    // the cache while it runs.
    let churner = daemon.client().await;
    for i in 0..3 * CAP {
        generate(&churner, "m", &format!("churn-mock-{i}")).await;
        generate(&churner, "o", &format!("churn-http-{i}")).await;
        let status = churner.status().await.unwrap();
        assert!(
            status
                .instances
                .iter()
                .any(|s| s.provider == "o" && s.model == "held" && s.metrics.active == 1),
            "the instance serving the held stream left the cache: {:?}",
            status.instances
        );
        assert!(cached(&status) <= CAP);
    }

    release.notify_one();
    let mut text = "before ".to_owned();
    let done = loop {
        match held.next().await.unwrap().unwrap() {
            GenerateEvent::Chunk(c) => text.push_str(&c.text),
            GenerateEvent::Done(d) => break d,
        }
    };
    assert_eq!(text, "before after");
    assert_eq!(done.model, "held");
}

#[tokio::test]
async fn a_new_model_gets_overloaded_naming_the_limit_when_every_instance_is_busy() {
    let daemon = daemon_with(None, "max_provider_instances = 2");
    let client = daemon.client().await;
    // Two mock streams far longer than the test: they hold both slots until cancelled.
    let mut slow = Vec::new();
    for model in ["slow-a", "slow-b"] {
        let mut r = numbered(100_000, 100);
        r.model = Some(model.to_owned());
        let mut g = client.generate(r).await.unwrap();
        assert!(matches!(
            g.next().await.unwrap().unwrap(),
            GenerateEvent::Chunk(_)
        ));
        slow.push(g);
    }

    let mut third = numbered(3, 0);
    third.model = Some("third".into());
    let e = provd_tests::generation_error(&client, third.clone()).await;
    assert_eq!(e.code, ErrorCode::Overloaded, "{e:?}");
    assert!(e.retryable);
    assert!(
        e.message.contains("max_provider_instances"),
        "{}",
        e.message
    );

    // The model the configuration names is outside the cap: made-up names held busy
    // (by another user, say) cannot lock anyone out of it.
    let mut configured = numbered(3, 0);
    configured.model = Some("m-default".into());
    let (text, _) = provd_tests::generation_text(&client, configured).await;
    assert_eq!(text, numbered_text(3));

    // A busy model that is cached is still served: the cap counts instances, not streams.
    let mut again = numbered(3, 0);
    again.model = Some("slow-a".into());
    let (text, _) = provd_tests::generation_text(&client, again).await;
    assert_eq!(text, numbered_text(3));

    // Once a stream ends, its instance may make room.
    let b = slow.pop().unwrap();
    b.cancel_handle().cancel().await.unwrap();
    drop(b);
    let text = until("a slot freed by the cancelled stream", || {
        let (client, third) = (&client, third.clone());
        async move {
            match client.generate(third).await.unwrap().collect_text().await {
                Ok((text, _)) => Some(text),
                Err(e) if e.code() == ErrorCode::Overloaded => None,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
    })
    .await;
    assert_eq!(text, numbered_text(3));
    let status = client.status().await.unwrap();
    let models: Vec<&str> = status.instances.iter().map(|i| i.model.as_str()).collect();
    assert!(
        models.contains(&"slow-a") && models.contains(&"third"),
        "{models:?}"
    );
    // The cap's two, and the configured model beside them.
    assert_eq!(cached(&status), 2 + 1);
}

#[tokio::test]
async fn idle_instances_expire_after_provider_idle_seconds() {
    let daemon = daemon_with(None, "provider_idle_seconds = 1");
    let client = daemon.client().await;
    for model in ["idle-1", "idle-2", "idle-3"] {
        generate(&client, "m", model).await;
    }
    let status = client.status().await.unwrap();
    assert_eq!(cached(&status), 3);
    let status = until("the idle instances to expire", || async {
        let status = client.status().await.unwrap();
        (cached(&status) == 0).then_some(status)
    })
    .await;
    assert!(status.instances.is_empty());
    assert_eq!(requests_of(&status, "m"), 3, "expiry loses no counts");
    // A new request for an expired model builds it again.
    generate(&client, "m", "idle-1").await;
    assert_eq!(cached(&client.status().await.unwrap()), 1);
}

#[tokio::test]
async fn status_stays_small_however_many_models_are_cached() {
    let daemon = daemon_with(None, "max_provider_instances = 300");
    let client = daemon.client().await;
    let names = 250u64;
    for i in 0..names {
        // Model i serves i % 3 + 1 requests, so that the top is a real choice.
        for _ in 0..i % 3 + 1 {
            generate(&client, "m", &format!("many-{i:03}")).await;
        }
    }
    let status = client.status().await.unwrap();
    assert_eq!(status.instances.len(), STATUS_TOP_INSTANCES);
    assert_eq!(
        status.instances_omitted,
        names - STATUS_TOP_INSTANCES as u64
    );
    assert_eq!(cached(&status), names);
    assert!(
        status.instances.iter().all(|i| i.metrics.requests == 3),
        "the busiest come first: {:?}",
        status.instances
    );
    let bytes = rmp_serde::to_vec_named(&status).unwrap().len();
    assert!(bytes < 8 * 1024, "status is {bytes} bytes");

    let (ok, out, err) = run_provd(&["status"], &daemon.socket);
    assert!(ok.success(), "{err}");
    assert!(out.contains(&format!("… and {} more", names - 20)), "{out}");
    assert!(out.lines().count() < 30, "{out}");
}

#[tokio::test]
async fn open_descriptors_stay_bounded_when_clients_name_many_models_of_an_http_provider() {
    let upstream = Upstream::start(answer).await;
    let daemon = daemon_with(Some(&upstream.base_url), "");
    let client = daemon.client().await;
    generate(&client, "o", "warm-up").await;
    let before = open_fds(daemon.pid());
    for i in 0..300 {
        generate(&client, "o", &format!("fd-{i}")).await;
    }
    let after = open_fds(daemon.pid());
    // One pool for the provider: one generation at a time reuses one connection.
    assert!(
        after <= before + 4,
        "{before} descriptors before and {after} after 300 model names"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_benchmark_stays_flat_over_a_few_hundred_names() {
    let options = cache::Options {
        names: 400,
        interval: 100,
        concurrency: 8,
        max_instances: 64,
        ..cache::Options::default()
    };
    let (mut runs, _daemon) = cache::run(&options).await;
    let report = cache::report(&options, &mut runs);
    for run in &runs {
        assert_eq!(run.failures, 0, "{report}");
        assert_eq!(run.steady_failures, 0, "{report}");
        // The cap, plus the providers' default models (the steady client's), which the
        // configuration names and so are outside it.
        assert!(
            run.samples.iter().all(|s| s.instances <= 64 + 2),
            "{report}"
        );
        let first = run.samples[0].fds;
        assert!(
            run.samples
                .iter()
                .all(|s| s.fds <= first + options.concurrency + 4),
            "{report}"
        );
        assert!(run.status_bytes < 8 * 1024, "{report}");
    }
}
