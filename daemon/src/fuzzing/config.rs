//! The `config` target: TOML text from anywhere, checked against the documented rules.

use std::path::Path;

use provd_client::GenerateRequest;

use crate::config::{Config, Target, MAX_COUNT_OR_SECONDS};
use crate::provider::http::Timeouts;
use crate::provider::registry;
use crate::server::{Daemon, Limits};

/// `config`: the input, if it is UTF-8, as a configuration file.
///
/// Invariants: `Config::parse` never panics; a refusal names the file; an accepted
/// configuration keeps every rule `config.rs` documents (counts and seconds from 1 to
/// [`MAX_COUNT_OR_SECONDS`], `max_frame_bytes >= 1024`, `max_tokens > 0`, provider ids of
/// letters, digits, `-` and `_`, http(s) base URLs, a default provider, aliases and
/// fallbacks that name configured providers, options its type accepts); and the daemon
/// can be built from it and can route to every provider and alias: the deadline of each
/// route and the semaphore and queue the server sizes from the limits exist.
pub fn check_config(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let config = match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => config,
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("config fuzz.toml: "), "{message}");
            return;
        }
    };
    let in_range = |v: u64| (1..=MAX_COUNT_OR_SECONDS).contains(&v);
    let d = &config.daemon;
    assert!(in_range(d.max_connections as u64));
    assert!(in_range(d.max_streams_per_connection as u64));
    assert!(in_range(d.connection_queue_frames as u64));
    assert!(d.drain_timeout_seconds <= MAX_COUNT_OR_SECONDS);
    assert!(d.max_frame_bytes >= 1024);
    if let Some(default) = &d.default_provider {
        assert!(config.providers.contains_key(default), "{default}");
    }
    if let Some(default) = config.default_provider() {
        assert!(config.providers.contains_key(default), "{default}");
    }
    let configured = |target: &str| {
        config
            .providers
            .contains_key(&Target::parse(target).provider)
    };
    for (id, p) in &config.providers {
        assert!(
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{id:?}"
        );
        assert!(in_range(p.timeout_seconds), "{id}: {p:?}");
        assert!(in_range(p.connect_timeout_seconds), "{id}: {p:?}");
        assert!(in_range(p.total_timeout_seconds), "{id}: {p:?}");
        assert!(p.max_tokens > 0, "{id}: {p:?}");
        if let Some(url) = &p.base_url {
            assert!(
                url.starts_with("http://") || url.starts_with("https://"),
                "{url}"
            );
        }
        if let Some(model) = &p.default_model {
            assert!(!model.trim().is_empty());
        }
        assert!(p.fallbacks.iter().all(|t| configured(t)), "{id}: {p:?}");
        registry::row(p.kind)
            .check_options(&p.options)
            .unwrap_or_else(|e| panic!("{id}: accepted options refused: {e:?}"));
        let _ = Timeouts::from_config(p);
        let mut request = GenerateRequest::prompt("fuzz");
        request.provider = Some(id.clone());
        route(&config, &request);
    }
    for (alias, targets) in &config.aliases {
        assert!(!targets.is_empty(), "{alias}");
        assert!(
            targets.iter().all(|t| configured(t)),
            "{alias}: {targets:?}"
        );
        let mut request = GenerateRequest::prompt("fuzz");
        request.model = Some(alias.clone());
        route(&config, &request);
    }
    // What `Server::run` and `connection::serve` size from the limits.
    let limits = Limits::from(&config.daemon);
    let _ = tokio::sync::Semaphore::new(limits.max_connections);
    let _ = tokio::sync::mpsc::channel::<Vec<u8>>(limits.connection_queue_frames);
    let _ = Daemon::new(config);
}

/// Routes a request as `resilience::open` does: its targets are configured, and its
/// deadline is on the clock.
fn route(config: &Config, request: &GenerateRequest) {
    let targets = crate::resilience::targets(config, request);
    for t in &targets {
        assert!(config.providers.contains_key(&t.provider), "{t:?}");
    }
    let _ = crate::resilience::deadline(config, &targets);
}
