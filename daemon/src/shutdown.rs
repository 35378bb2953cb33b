//! Graceful shutdown in two phases, each a [`CancellationToken`]:
//!
//! 1. `stop`: stop accepting connections and new generations; running generations go on.
//! 2. `abort`: the drain deadline passed; every running generation ends now with an
//!    `unavailable` error frame that names the shutdown.
//!
//! Tokens rather than a broadcast channel because every waiter only needs "has it
//! happened", and a token can be checked and awaited from any number of tasks.

use tokio_util::sync::CancellationToken;

/// The two shutdown phases, shared by every task of the server.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    stop: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    /// A shutdown that has not started.
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins the drain.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Ends the drain: running generations stop now.
    pub fn abort(&self) {
        self.stop.cancel();
        self.abort.cancel();
    }

    /// Whether the drain has begun.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Whether the drain deadline has passed.
    pub fn is_aborting(&self) -> bool {
        self.abort.is_cancelled()
    }

    /// Resolves when the drain begins.
    pub async fn stopping(&self) {
        self.stop.cancelled().await
    }

    /// Resolves when the drain deadline has passed.
    pub async fn aborting(&self) {
        self.abort.cancelled().await
    }
}

/// Resolves on the first SIGINT or SIGTERM (Ctrl-C on Windows).
pub async fn termination_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(windows)]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

/// SIGTERM and SIGINT handlers (Ctrl-C on Windows), installed when this is created: a
/// signal that arrives before anyone awaits it is kept for the next [`Self::recv`]
/// instead of ending the process with the default action. `serve` installs them before
/// it reports readiness, since a service manager may stop the daemon the moment it is
/// ready.
#[derive(Debug)]
pub struct TerminationSignals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl TerminationSignals {
    /// Installs the handlers (needs a tokio runtime).
    pub fn install() -> std::io::Result<TerminationSignals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(TerminationSignals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(windows)]
        Ok(TerminationSignals {})
    }

    /// Resolves on the next signal, with its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(windows)]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
