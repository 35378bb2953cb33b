//! # provd
//!
//! The local LLM provider daemon. It owns the connections to LLM providers, the provider
//! cache and the decrypted credentials; local programs talk to it over a Unix
//! socket with the protocol of [`provd_client`].
//!
//! Its modules, one line each:
//!
//! - [`commands`]: what each `provd` subcommand does (serve, client, admin), for `main.rs`.
//! - [`config`]: the TOML configuration and its validation; which file and socket to use.
//! - [`server`]: the socket, connections, requests, dispatch, generations, graceful drain.
//! - [`access`]: who may ask what: peer identity, admins, tokens and provider grants.
//! - [`ledger`]: the usage ledger: every generation recorded in SQLite, off the request path.
//! - [`quota`]: budgets and rate limits per uid, group and token, checked at admission.
//! - [`resilience`]: retries, fallbacks and the request deadline.
//! - [`metrics`]: counters and histograms for Prometheus (`GET /metrics`), in GenAI names.
//! - [`factory`]: provider registry, per-(provider, model) instance cache, lifecycle.
//! - [`provider`]: the [`provider::Provider`] trait and the providers.
//! - [`settings`]: a provider's type and settings, shared by [`config`] and [`provider`].
//! - [`credentials`]: which key a provider uses, and (Unix only) the sealed credential
//!   store, the master key and `.env` import.
//! - [`scrub`]: the one step that cuts every key the daemon holds out of upstream text.
//! - [`secret`]: API keys and tokens in memory: zeroized, redacted in Debug and Display.
//! - [`untrusted`]: strings a client or an upstream chose, made safe to log.
//! - [`one_line`]: errors as a terminal shows them (one line, caret diagrams whole).
//! - [`reload`]: SIGHUP and the `reload` request: re-read the configuration and keys.
//! - [`shutdown`]: graceful shutdown in two phases (stop accepting, then abort).
//! - [`systemd`]: readiness, watchdog and socket activation under systemd, by hand.
//! - [`daemonize`]: `serve --daemon` and `stop` on hosts without systemd.
//! - `sys`: the libc boundary, where every `unsafe` block of the daemon lives.
//! - `fuzzing`: the fuzz targets' invariant checks (feature `fuzzing`; not an API).

pub mod access;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod daemonize;
pub mod factory;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod ledger;
pub mod metrics;
pub mod one_line;
pub mod provider;
pub mod quota;
pub mod reload;
pub mod resilience;
pub mod scrub;
pub mod secret;
pub mod server;
pub mod settings;
pub mod shutdown;
mod sys;
pub mod systemd;
pub mod untrusted;
