//! # provd
//!
//! The local LLM provider daemon. It owns the connections to LLM providers, the provider
//! cache and the decrypted credentials; local programs talk to it over a Unix
//! socket with the protocol of [`provd_client`].
//!
//! - [`server`]: the socket, connections, dispatch, generations, graceful drain.
//! - [`factory`]: provider registry, per-(provider, model) instance cache, lifecycle.
//! - [`provider`]: the [`provider::BaseLlmProvider`] trait and the providers.
//! - [`config`]: the TOML configuration and its validation.
//! - [`settings`]: a provider's type and settings, shared by [`config`] and [`provider`].
//! - [`credentials`]: which key a provider uses, and (Unix only) the sealed credential
//!   store, the master key and `.env` import.
//! - [`scrub`]: the one step that cuts every key the daemon holds out of upstream text.
//! - [`commands`]: what the `provd` command does, for `main.rs` to call.
//! - [`systemd`], [`daemonize`], [`reload`]: running as a service: readiness and socket
//!   activation under systemd, `--daemon` without it, SIGHUP and the `reload` request.
//! - [`untrusted`]: strings a client or an upstream chose, made safe to log.

pub mod access;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod daemonize;
pub mod factory;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod one_line;
pub mod provider;
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
