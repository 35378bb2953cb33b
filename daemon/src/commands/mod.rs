//! What each `provd` subcommand does, split by job: [`serve`] runs the daemon (start-up,
//! readiness, signals, `--daemon`, `stop`, `demo`), [`client`] holds the commands any
//! allowed user runs (`generate`, `models`, `providers`, `status`, `usage`, `ping`), and [`admin`]
//! the ones that change the daemon (`reload`, `creds`, `key`, `token`, `shutdown`).
//!
//! `main.rs` parses the arguments (its clap definitions are the one description of the
//! command line: help texts, flags, defaults) and calls these functions with plain Rust
//! values; keeping them in the library lets tests and the demo run them in-process. Where
//! the configuration is found and which socket a command talks to is decided beside the
//! configuration, in [`crate::config::load`], so the daemon's reload reads it from there
//! and never from the command line.

use std::path::Path;

use provd_client::{Client, ClientError};

use crate::config::ConfigError;
use crate::server::listener::ListenError;

pub mod admin;
pub mod client;
pub mod serve;

/// Why a command failed; printed as one line on stderr.
///
/// Every wrapped error already says its cause in its own message, so none is exposed as
/// a [`std::error::Error::source`]: a printer that walks the chain (anyhow's `{:#}`)
/// would say each cause twice.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(ConfigError),
    /// The daemon cannot listen.
    #[error("{0}")]
    Listen(ListenError),
    /// Talking to the daemon failed.
    #[error("{0}")]
    Client(ClientError),
    /// Local I/O failed (stdout closed, temp dir).
    #[error("{0}")]
    Io(std::io::Error),
    /// The socket systemd passed is unusable.
    #[error("{0}")]
    Activation(crate::systemd::ActivationError),
    /// Going to the background, or stopping a daemon there, failed.
    #[cfg(unix)]
    #[error("{0}")]
    Daemonize(crate::daemonize::DaemonizeError),
    /// The credentials cannot be unsealed.
    #[error("{0}")]
    Credentials(crate::reload::CredentialsError),
    /// The command line asks for something that cannot be done (a bad duration, an
    /// empty key).
    #[error("{0}")]
    Usage(String),
    /// The command did part of its work and printed it; this says what failed.
    #[error("{0}")]
    Partial(String),
}

/// `From` for each wrapped error (written out: `#[from]` would expose it as the source).
macro_rules! command_error_from {
    ($($(#[$attr:meta])* $variant:ident($error:ty)),* $(,)?) => {
        $(
            $(#[$attr])*
            impl From<$error> for CommandError {
                fn from(e: $error) -> Self {
                    CommandError::$variant(e)
                }
            }
        )*
    };
}

command_error_from! {
    Config(ConfigError),
    Listen(ListenError),
    Client(ClientError),
    Io(std::io::Error),
    Activation(crate::systemd::ActivationError),
    #[cfg(unix)]
    Daemonize(crate::daemonize::DaemonizeError),
    Credentials(crate::reload::CredentialsError),
}

/// Environment variable a client command reads its bearer token from (never an
/// argument: arguments are visible to every user in `ps`).
pub const TOKEN_ENV: &str = "PROVD_TOKEN";

/// Connects as the CLI, presenting `$PROVD_TOKEN` if set. When nothing listens at the
/// socket, the error says how to start the daemon.
async fn connect(socket: &Path) -> Result<Client, CommandError> {
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    Client::connect_with_token(socket, "provd-cli", token.as_deref())
        .await
        .map_err(|e| match e {
            ClientError::Connect {
                kind: std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused,
                ..
            } => CommandError::Usage(format!("{e}; {START_HINT}")),
            e => e.into(),
        })
}

/// How to start the daemon, for a client that found none.
const START_HINT: &str = "start it with `provd serve` (or `provd serve --daemon`), or `systemctl start provd` where it is installed as a service";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_errors_say_their_cause_once_and_expose_no_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = CommandError::from(io);
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(format!("{:#}", anyhow::Error::from(e)), "gone");
    }
}
