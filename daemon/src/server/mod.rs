//! The server: accept loop, connection limit, graceful drain.
//!
//! Layering follows mini-redis: [`listener`] binds the socket, [`connection`] owns one
//! client (frames in, the gate, dispatch; its writer side is `outbox`), [`request`]
//! parses a frame into a typed request, once (the method list is the protocol's one
//! table, `provd_client::message::method`), `streams` registers the requests running on
//! a connection, [`generation`] runs one streamed generation, [`admin`] serves the admin
//! requests, and this module accepts connections, admits them ([`admission`]: per-uid
//! limits and the admins' reserve, decided from the peer's uid before anything is read)
//! and drains them on shutdown.

pub mod accounting;
pub mod admin;
pub mod admission;
pub mod connection;
pub mod extras;
pub mod generation;
#[cfg(unix)]
pub mod http;
pub mod listener;
mod outbox;
pub mod peer;
pub mod request;
mod streams;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provd_client::{message, WireError};
use tokio::io::AsyncWriteExt;
use tokio_util::task::TaskTracker;

use crate::config::{Config, DaemonConfig};
use crate::factory::Providers;
use crate::shutdown::Shutdown;
use admission::{Admission, Applicant};
use listener::SocketListener;
use peer::PeerIdentity;

/// After the drain deadline, how long ended generations get to write their error frames
/// before the daemon exits regardless (a client that stopped reading cannot hold it up).
pub const ABORT_GRACE: Duration = Duration::from_secs(2);
/// How long a refused connection's error frame may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after an accept error (out of descriptors, say) so the loop does not spin.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The bounds that keep one client from taking the daemon's memory or attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (the admins' reserve included).
    pub max_connections: usize,
    /// Generations per connection.
    pub max_streams_per_connection: usize,
    /// Largest frame accepted.
    pub max_frame_bytes: u32,
    /// Outgoing frames queued per connection.
    pub connection_queue_frames: usize,
    /// How long running generations may go on after a stop signal, as configured at
    /// start-up (the drain itself uses the value in force, which a reload may change).
    pub drain_timeout: Duration,
    /// Silence after which a running generation sends a keepalive (`None`: never).
    pub keepalive_interval: Option<Duration>,
    /// How long a connection's socket may accept nothing while frames are queued for it
    /// before the connection is dropped (see `outbox::write_loop`).
    pub slow_client_timeout: Duration,
}

impl From<&DaemonConfig> for Limits {
    fn from(d: &DaemonConfig) -> Self {
        Limits {
            max_connections: d.max_connections,
            max_streams_per_connection: d.max_streams_per_connection,
            max_frame_bytes: d.max_frame_bytes,
            connection_queue_frames: d.connection_queue_frames,
            drain_timeout: Duration::from_secs(d.drain_timeout_seconds),
            keepalive_interval: (d.keepalive_interval_ms > 0)
                .then(|| Duration::from_millis(d.keepalive_interval_ms)),
            slow_client_timeout: Duration::from_secs(d.slow_client_timeout_seconds),
        }
    }
}

/// Daemon-wide gauges reported by `status`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections open now.
    pub connections: AtomicU64,
    /// Generations running now.
    pub active_streams: AtomicU64,
    /// Notified when a generation ends leaving none running (see
    /// `release_memory_when_quiet`).
    pub last_stream_ended: tokio::sync::Notify,
}

/// How long after the last running generation ends the daemon looks again and, if none
/// runs then, gives freed memory back: long enough that a client running generations
/// back to back rarely pays for it, short enough that a burst's memory is back within
/// two seconds of its end.
const QUIET_BEFORE_RELEASE: Duration = Duration::from_secs(1);

/// Gives the memory freed after a burst back to the kernel once generations stop. The
/// allocator keeps freed memory for reuse, so without this a daemon that once served a
/// thousand streams would hold their memory for the rest of its life.
async fn release_memory_when_quiet(daemon: Arc<Daemon>) {
    loop {
        // A notification that came while this task was sleeping is kept (one permit):
        // every quiet period after a burst is seen.
        daemon.stats.last_stream_ended.notified().await;
        tokio::time::sleep(QUIET_BEFORE_RELEASE).await;
        if daemon.stats.active_streams.load(Ordering::Relaxed) == 0 {
            let released = tokio::task::spawn_blocking(crate::sys::release_free_memory).await;
            tracing::debug!(
                released = released.unwrap_or(false),
                "gave freed memory back after the last generation ended"
            );
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub struct Daemon {
    /// Providers.
    pub factory: Providers,
    /// Bounds.
    pub limits: Limits,
    /// Gauges.
    pub stats: Stats,
    /// Start time, for uptime.
    pub started: Instant,
    /// Reloads the configuration (SIGHUP, the `reload` request).
    pub reloader: crate::reload::Reloader,
    /// Who may ask what; replaced whole on reload.
    pub auth: std::sync::RwLock<Arc<crate::access::AuthProvider>>,
    /// Connections and generations held per uid.
    pub admission: Arc<Admission>,
    /// The sealed credentials.
    #[cfg(unix)]
    pub vault: Arc<crate::credentials::Vault>,
    /// The usage ledger (off in [`Daemon::new`]; `provd serve` opens the configured one).
    pub ledger: crate::ledger::Ledger,
    /// Budgets and rate limits (`[limits.uid/group/token]`) and their counters; the
    /// limits are replaced on reload, the counters stay.
    pub quotas: crate::quota::Quotas,
    /// The metrics `GET /metrics` renders.
    pub metrics: crate::metrics::Metrics,
}

impl Daemon {
    /// Daemon state for a configuration, with every built-in provider type, the access
    /// policy of its `[access]` table (tokens in memory) and no credential store: for the
    /// demo and tests. `provd serve` uses [`Daemon::assemble`].
    pub fn new(config: Config) -> Daemon {
        let auth = crate::access::AuthProvider::new(
            &config.access,
            None,
            crate::access::TokenStore::in_memory(),
        )
        .unwrap_or_else(|e| panic!("the [access] table of an in-process daemon is invalid: {e}"));
        #[cfg(unix)]
        return Daemon::assemble(
            config,
            auth,
            Arc::new(crate::credentials::Vault::disabled()),
        );
        #[cfg(not(unix))]
        return Daemon::assemble(config, auth);
    }

    /// Daemon state from its parts.
    pub fn assemble(
        config: Config,
        auth: crate::access::AuthProvider,
        #[cfg(unix)] vault: Arc<crate::credentials::Vault>,
    ) -> Daemon {
        let factory = Providers::with_builtin_providers(config.clone());
        #[cfg(unix)]
        factory.set_vault(vault.clone());
        Daemon {
            limits: Limits::from(&config.daemon),
            reloader: crate::reload::Reloader::new(None, &config, Default::default()),
            factory,
            stats: Stats::default(),
            started: Instant::now(),
            auth: std::sync::RwLock::new(Arc::new(auth)),
            admission: Arc::default(),
            #[cfg(unix)]
            vault,
            ledger: crate::ledger::Ledger::disabled(),
            quotas: crate::quota::Quotas::new(&config.limits),
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// The access policy in force.
    pub fn auth(&self) -> Arc<crate::access::AuthProvider> {
        self.auth.read().expect("auth lock poisoned").clone()
    }
}

/// A bound server, ready to run.
#[derive(Debug)]
pub struct Server {
    daemon: Arc<Daemon>,
    listener: SocketListener,
    shutdown: Shutdown,
    /// The HTTP front door, served and drained with the MessagePack socket.
    #[cfg(unix)]
    http: Option<http::HttpServer>,
}

impl Server {
    /// A server for `daemon` on `listener`; `shutdown` stops it.
    pub fn new(daemon: Arc<Daemon>, listener: SocketListener, shutdown: Shutdown) -> Server {
        Server {
            daemon,
            listener,
            shutdown,
            #[cfg(unix)]
            http: None,
        }
    }

    /// Serves the HTTP front door too (see [`http`]), under the same shutdown and drain.
    #[cfg(unix)]
    pub fn with_http(mut self, http: Option<http::HttpServer>) -> Server {
        self.http = http;
        self
    }

    /// Serves until `shutdown` begins, drains, shuts the providers down and returns.
    pub async fn run(self) {
        let Server {
            daemon,
            listener,
            shutdown,
            #[cfg(unix)]
            http,
        } = self;
        let connections = TaskTracker::new();
        // Tracked with the connections: the drain waits for its streams too, under the
        // same deadline.
        #[cfg(unix)]
        if let Some(http) = http {
            connections.spawn(http.run(daemon.clone(), shutdown.clone()));
        }
        let releaser = tokio::spawn(release_memory_when_quiet(daemon.clone()));
        tracing::info!(socket = %listener.path().display(), "listening");
        loop {
            let accepted = tokio::select! {
                _ = shutdown.stopping() => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            };
            connections.spawn(admit(stream, daemon.clone(), shutdown.clone()));
        }
        // Removing the socket now makes new clients fail fast instead of queueing on a
        // listener nobody accepts from. A socket systemd passed stays: it is systemd's,
        // and connections queued on it start the next instance.
        let path = listener.path().to_owned();
        drop(listener);
        let active = daemon.stats.active_streams.load(Ordering::Relaxed);
        // The deadline in force now: a reload may have changed it.
        let drain_timeout =
            Duration::from_secs(daemon.factory.config().daemon.drain_timeout_seconds);
        tracing::info!(socket = %path.display(), active_streams = active, drain_timeout_s = drain_timeout.as_secs(), "stopped accepting; draining");
        connections.close();
        if tokio::time::timeout(drain_timeout, connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                active_streams = daemon.stats.active_streams.load(Ordering::Relaxed),
                "drain deadline passed; ending the remaining generations"
            );
            shutdown.abort();
            let _ = tokio::time::timeout(ABORT_GRACE, connections.wait()).await;
        }
        releaser.abort();
        daemon.factory.shutdown_all().await;
        tracing::info!("stopped");
    }
}

/// Admits a new connection and serves it, or refuses it. The decision is made from the
/// peer's uid as the kernel reports it, before anything is read, under the limits in
/// force now (a reload applies to the connections that come after it). It runs in the
/// connection's own task: finding an admin's groups may ask the name service, which must
/// not hold up the accept loop.
async fn admit(
    stream: interprocess::local_socket::tokio::Stream,
    daemon: Arc<Daemon>,
    shutdown: Shutdown,
) {
    let peer = match PeerIdentity::of(&stream) {
        Ok(peer) => peer,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing the connection");
            return;
        }
    };
    let policy = daemon.auth();
    let grant = policy.authorize(peer);
    let applicant = Applicant {
        uid: peer.uid,
        admin: grant.as_ref().is_ok_and(|g| g.admin_uid),
    };
    let config = daemon.factory.config();
    let admitted =
        daemon
            .admission
            .admit_connection(applicant, daemon.limits.max_connections, &config.limits);
    match admitted {
        Ok(slot) => {
            let admitted = connection::Admitted {
                peer,
                grant,
                policy,
                slot,
                hello_timeout: Duration::from_secs(config.daemon.hello_timeout_seconds),
            };
            drop(config);
            connection::serve(stream, admitted, daemon, shutdown).await;
        }
        Err(error) => refuse(stream, peer, error).await,
    }
}

/// Tells a client over a connection limit why, instead of leaving it to hang.
async fn refuse(
    stream: interprocess::local_socket::tokio::Stream,
    peer: PeerIdentity,
    error: WireError,
) {
    tracing::warn!(%peer, reason = %error.message, "connection refused: limit reached");
    let Ok(frame) = message::encode_notification(message::notification::ERROR, &error) else {
        return;
    };
    let mut stream = provd_client::socket::SharedStream::new(stream);
    let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        stream.write_all(&frame).await?;
        stream.flush().await
    })
    .await;
}
