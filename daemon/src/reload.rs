//! Reloading what the daemon serves, on SIGHUP or the admin `reload` request: read the
//! configuration again (from where start-up found it), unseal the credentials again, and
//! swap them in without interrupting anything.
//!
//! - The file is the one start-up read (`--config`, or the one it found); if it is gone,
//!   the reload fails rather than falling back to another file.
//! - The file, and `[daemon] env_file`, must still pass the trust rule start-up applied
//!   ([`crate::config::Config::load`]): a file that another user (not root, not the
//!   daemon's) can now change, or that sits in a directory they can, is rejected like an
//!   invalid one.
//! - A configuration that does not load or validate is rejected: the error is logged
//!   (and returned to a `reload` caller), and the configuration in force stays.
//! - Providers whose `[providers.<id>]` table changed, and providers that are gone, have
//!   their cached instances dropped from the factory: the next request builds a new one
//!   from the new table. A generation already running keeps the instance it started
//!   with; an old instance is shut down once no generation uses it any more (checked
//!   every [`RETIRE_CHECK_INTERVAL`], and at the latest when the daemon stops).
//! - The access policy (`[access]`, tokens) applies at once, to open connections too:
//!   each request is checked against the policy in force (`server::connection`).
//! - `[limits]` and `hello_timeout_seconds` apply to connections and generations that
//!   begin after the reload; those already admitted keep their place. The budgets and
//!   rates (`[limits.uid/group/token]`) are resolved again (names to ids) and swapped in;
//!   their counters stay, so usage so far counts against the new limits, and running
//!   generations are charged at their end as before.
//! - `[ledger]` is read once, at start: a change to it needs a restart (`[prices]`
//!   apply at once, to the next report).
//! - `default_provider`, `aliases` and `drain_timeout_seconds` apply at once. The other
//!   `[daemon]` settings shape the socket and every connection, so a change to them is
//!   logged as "needs restart" (and listed in the reply) and takes effect only when provd
//!   restarts.
//! - Under systemd the manager hears `RELOADING=1` when a reload begins and `READY=1`
//!   when it is over, whatever the outcome (the old configuration still serves).
//!
//! Reloads are serialized: a SIGHUP arriving during a `reload` request waits for it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use provd_client::message::ReloadResult;
use provd_client::{ErrorCode, WireError};

use crate::config::{Config, ConfigError, DaemonConfig};
use crate::server::Daemon;
use crate::systemd::Notifier;

/// How often instances retired by a reload are checked for their last user.
pub const RETIRE_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Why the credentials cannot be made available (see [`unseal_credentials`]).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialsError(pub String);

/// Start-up and reload step: make the credentials `config` needs available to the
/// providers. Start-up sends `READY=1` (and lets a `--daemon` parent exit) only after
/// this succeeds; a reload that fails here keeps the configuration and credentials in
/// force.
///
/// The sealed store was opened at start-up with the master key ([`crate::credentials::Vault`]);
/// here the configured `.env` file (`[daemon] env_file`), if any, is read and its keys
/// sealed, and its base URL overrides applied to `config`. Returns the provider ids whose
/// key changed, so their instances can be rebuilt.
#[cfg(unix)]
pub fn unseal_credentials(
    config: &mut Config,
    vault: &crate::credentials::Vault,
) -> Result<Vec<String>, CredentialsError> {
    if config.daemon.env_file.is_some() && !vault.is_enabled() {
        return Err(CredentialsError(
            "daemon.env_file is set but there is no master key to seal its keys with: run `provd key generate` and give the key as the systemd credential provd-master-key, in a file named by PROVD_MASTER_KEY_FILE, or in SECRET_KEY".into(),
        ));
    }
    let rekeyed = vault
        .sync_env_file(config)
        .map_err(|e| CredentialsError(format!("credentials: {e}")))?;
    // The store may also have changed under the daemon (files restored by hand).
    vault.publish_keys();
    Ok(rekeyed)
}

/// The access policy of `config`, with its token hashes from the state directory.
pub fn access_policy(
    config: &Config,
    state_dir: &std::path::Path,
) -> Result<crate::access::AuthProvider, CredentialsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| {
                CredentialsError(format!("state directory {}: {e}", state_dir.display()))
            })?;
    }
    let tokens = crate::access::TokenStore::load(state_dir).map_err(CredentialsError)?;
    #[cfg(unix)]
    let socket_gid = config
        .daemon
        .socket_group
        .as_deref()
        .and_then(crate::sys::group_id);
    #[cfg(not(unix))]
    let socket_gid = None;
    crate::access::AuthProvider::new(&config.access, socket_gid, tokens).map_err(CredentialsError)
}

/// Why a reload was rejected. The configuration in force stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration does not load or validate.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The credentials cannot be unsealed.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The reload task failed (a bug).
    #[error("reload failed: {0}")]
    Internal(String),
}

impl ReloadError {
    /// The wire error for a `reload` caller.
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            // The request is fine; what it asks for is not possible with the file as it
            // is. Not retryable unchanged: the file has to be fixed first.
            ReloadError::Config(_) | ReloadError::Credentials(_) => ErrorCode::InvalidRequest,
            ReloadError::Internal(_) => ErrorCode::Internal,
        };
        WireError::new(
            code,
            format!("reload rejected, the previous configuration stays in force: {self}"),
        )
    }
}

/// Where the configuration comes from and what start-up fixed, so a reload reads the same
/// file and can tell which changes need a restart.
#[derive(Debug, Default)]
pub struct Reloader {
    /// The file start-up read, read again by every reload; `None` when the daemon runs
    /// on the embedded default, and then a reload looks for a file as start-up did.
    config_path: Option<PathBuf>,
    /// `--socket`/`$PROVD_SOCKET`, if given (it beats `daemon.socket`).
    socket_flag: Option<PathBuf>,
    /// The socket being served, and whether systemd owns it.
    socket: Option<(PathBuf, bool)>,
    /// The `[daemon]` table start-up applied: the values in force for the settings that
    /// need a restart.
    started_with: DaemonConfig,
    /// The `[http]` table start-up applied (its socket and `enabled` need a restart).
    http_started_with: crate::config::HttpConfig,
    /// The `[ledger]` table start-up applied (the ledger is opened once).
    ledger_started_with: crate::config::usage::LedgerConfig,
    notifier: Notifier,
    serial: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// A reloader for a daemon started with `config`, read from `config_path`.
    pub fn new(config_path: Option<PathBuf>, config: &Config, notifier: Notifier) -> Reloader {
        Reloader {
            config_path,
            started_with: config.daemon.clone(),
            http_started_with: config.http.clone(),
            ledger_started_with: config.ledger.clone(),
            notifier,
            ..Reloader::default()
        }
    }

    /// Records the socket being served (`inherited`: passed by systemd), and the
    /// `--socket` flag, so that a changed `daemon.socket` is reported as needing a restart.
    pub fn with_socket(mut self, flag: Option<PathBuf>, serving: PathBuf, inherited: bool) -> Self {
        self.socket_flag = flag;
        self.socket = Some((serving, inherited));
        self
    }

    /// Reloads the configuration and credentials; `trigger` names the cause in the log
    /// (`SIGHUP`, `reload request from uid=…`).
    pub async fn reload(
        &self,
        daemon: &Arc<Daemon>,
        trigger: &str,
    ) -> Result<ReloadResult, ReloadError> {
        let _one_at_a_time = self.serial.lock().await;
        tracing::info!(trigger, "reloading the configuration");
        self.notifier.reloading();
        let outcome = self.apply(daemon).await;
        match &outcome {
            Ok(r) => {
                tracing::info!(
                    trigger,
                    config = %r.config,
                    providers = r.providers,
                    added = ?r.added,
                    changed = ?r.changed,
                    removed = ?r.removed,
                    "configuration reloaded"
                );
                for setting in &r.needs_restart {
                    tracing::warn!(
                        setting = %setting,
                        "{setting} changed in the configuration but needs restart to take effect; the running daemon keeps its start-up value"
                    );
                }
                self.notifier.ready(&status_line(daemon, "ready"));
            }
            Err(e) => {
                tracing::error!(trigger, error = %e, "reload rejected; the previous configuration stays in force");
                self.notifier.ready(&format!(
                    "{} (the last reload was rejected: {e})",
                    status_line(daemon, "ready")
                ));
            }
        }
        outcome
    }

    async fn apply(&self, daemon: &Arc<Daemon>) -> Result<ReloadResult, ReloadError> {
        let path = self.config_path.clone();
        // A small file, but read off the runtime's threads all the same.
        let (config, source) =
            tokio::task::spawn_blocking(move || crate::config::load::load_config(path.as_deref()))
                .await
                .map_err(|e| ReloadError::Internal(e.to_string()))??;
        let mut config = config;
        #[cfg(unix)]
        let rekeyed = unseal_credentials(&mut config, &daemon.vault)?;
        #[cfg(unix)]
        let auth = access_policy(&config, daemon.vault.dir())?;
        #[cfg(not(unix))]
        let auth = access_policy(&config, &std::env::temp_dir().join("provd"))?;
        let needs_restart = self.needs_restart(&config);
        // Resolved before anything is swapped (it may ask the name service).
        let quota_limits = crate::quota::Limits::resolve(&config.limits);
        let providers = config.providers.len().try_into().unwrap_or(u32::MAX);
        let mut changes = daemon.factory.reload(config);
        #[cfg(unix)]
        for id in &rekeyed {
            changes.retired += daemon.factory.retire_provider(id);
        }
        *daemon.auth.write().expect("auth lock poisoned") = std::sync::Arc::new(auth);
        daemon.quotas.set_limits(quota_limits);
        if changes.retired > 0 {
            tokio::spawn(shut_down_retired(daemon.clone()));
        }
        Ok(ReloadResult {
            config: source,
            providers,
            added: changes.added,
            changed: changes.changed,
            removed: changes.removed,
            needs_restart,
        })
    }

    /// The `[daemon]` settings whose new value differs from the one in force and cannot
    /// be applied live.
    fn needs_restart(&self, new: &Config) -> Vec<String> {
        let (old, d) = (&self.started_with, &new.daemon);
        let mut changed = Vec::new();
        if let Some((serving, inherited)) = &self.socket {
            // An inherited socket is systemd's (ListenStream=); the flag beats the file.
            let wanted = crate::config::load::serve_socket(self.socket_flag.clone(), new);
            if !inherited && &wanted != serving {
                changed.push("daemon.socket");
            }
        }
        if old.socket_group != d.socket_group {
            changed.push("daemon.socket_group");
        }
        if old.state_dir != d.state_dir {
            changed.push("daemon.state_dir");
        }
        if old.max_connections != d.max_connections {
            changed.push("daemon.max_connections");
        }
        if old.max_streams_per_connection != d.max_streams_per_connection {
            changed.push("daemon.max_streams_per_connection");
        }
        if old.max_frame_bytes != d.max_frame_bytes {
            changed.push("daemon.max_frame_bytes");
        }
        if old.connection_queue_frames != d.connection_queue_frames {
            changed.push("daemon.connection_queue_frames");
        }
        if old.slow_client_timeout_seconds != d.slow_client_timeout_seconds {
            changed.push("daemon.slow_client_timeout_seconds");
        }
        if old.worker_threads != d.worker_threads {
            changed.push("daemon.worker_threads");
        }
        if self.http_started_with.socket != new.http.socket {
            changed.push("http.socket");
        }
        if self.http_started_with.enabled != new.http.enabled {
            changed.push("http.enabled");
        }
        if self.ledger_started_with != new.ledger {
            changed.push("ledger");
        }
        changed.into_iter().map(str::to_owned).collect()
    }
}

/// Shuts down the instances a reload retired as each loses its last user; ends when none
/// is left. Several may run after quick reloads; each instance is taken by one of them.
async fn shut_down_retired(daemon: Arc<Daemon>) {
    while daemon.factory.shut_down_unused_retired().await > 0 {
        tokio::time::sleep(RETIRE_CHECK_INTERVAL).await;
    }
}

/// The one-line state shown by `systemctl status` (`STATUS=`).
pub fn status_line(daemon: &Daemon, state: &str) -> String {
    let providers = daemon.factory.config().providers.len();
    let streams = daemon.stats.active_streams.load(Ordering::Relaxed);
    format!(
        "{state}: {providers} provider{}, {streams} active stream{}",
        if providers == 1 { "" } else { "s" },
        if streams == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn only_settings_that_cannot_change_live_need_a_restart() {
        let started = config("[daemon]\nmax_connections = 10\n[providers.m]\ntype = \"mock\"\n");
        let reloader = Reloader::new(None, &started, Notifier::disabled()).with_socket(
            None,
            crate::config::load::serve_socket(None, &started),
            false,
        );
        let same = config(
            "[daemon]\nmax_connections = 10\ndrain_timeout_seconds = 3\ndefault_provider = \"n\"\n[providers.n]\ntype = \"mock\"\n",
        );
        assert!(reloader.needs_restart(&same).is_empty());
        // The admission settings are read for every new connection.
        let admission = config(
            "[daemon]\nmax_connections = 10\nhello_timeout_seconds = 1\n[limits]\nmax_connections_per_uid = 1\nmax_streams_per_uid = 1\nadmin_reserved_connections = 0\n",
        );
        assert!(reloader.needs_restart(&admission).is_empty());
        // The HTTP limits are read per connection and request; its socket is bound once.
        let http = config(
            "[daemon]\nmax_connections = 10\n[http]\nmax_body_bytes = 1024\nkeep_alive_idle_seconds = 5\n",
        );
        assert!(reloader.needs_restart(&http).is_empty());
        let http_moved = config(
            "[daemon]\nmax_connections = 10\n[http]\nsocket = \"/x/h.sock\"\nenabled = false\n",
        );
        assert_eq!(
            reloader.needs_restart(&http_moved),
            ["http.socket", "http.enabled"]
        );
        // The ledger is opened once; budgets and prices are read per request and report.
        let ledger = config(
            "[daemon]\nmax_connections = 10\n[ledger]\nretention_days = 7\n[limits.uid.root]\ntokens_per_day = 5\n",
        );
        assert_eq!(reloader.needs_restart(&ledger), ["ledger"]);
        let moved = config(
            "[daemon]\nmax_connections = 11\nsocket = \"/elsewhere/provd.sock\"\nmax_frame_bytes = 2048\n",
        );
        assert_eq!(
            reloader.needs_restart(&moved),
            [
                "daemon.socket",
                "daemon.max_connections",
                "daemon.max_frame_bytes"
            ]
        );
        // systemd's socket is not ours to move.
        let inherited = Reloader::new(None, &started, Notifier::disabled()).with_socket(
            None,
            "/run/provd/provd.sock".into(),
            true,
        );
        assert_eq!(
            inherited.needs_restart(&moved),
            ["daemon.max_connections", "daemon.max_frame_bytes"]
        );
    }

    #[test]
    fn a_rejected_reload_says_the_old_configuration_stays() {
        let e = ReloadError::Config(ConfigError::Invalid {
            path: "p.toml".into(),
            key: "providers.m.max_tokens".into(),
            rule: "must be > 0, got 0".into(),
        });
        let w = e.to_wire();
        assert_eq!(w.code, ErrorCode::InvalidRequest);
        assert_eq!(
            w.message,
            "reload rejected, the previous configuration stays in force: config p.toml: providers.m.max_tokens must be > 0, got 0"
        );
    }
}
