//! One client connection: read frames, dispatch requests, write replies and chunks.
//!
//! A connection is two tasks. This one reads and dispatches; a writer task (`outbox`)
//! drains a bounded queue of encoded frames into the socket. Generations run as tasks of
//! their own and push into the same queue, so a client that reads slowly fills only its
//! own queue and slows only its own generations (tokio's bounded channel wakes waiting
//! senders in order, so the connection's streams share it fairly). The daemon's memory per
//! connection is bounded by `connection_queue_frames × max frame`.
//!
//! A client that stops reading altogether is dropped: once its socket has accepted no
//! byte for `slow_client_timeout_seconds` while frames wait for it (`StallGuard`), the
//! connection closes and its generations are cancelled, so a stuck client cannot hold
//! streams and upstream connections for ever.
//!
//! Closing the connection cancels everything it started. Errors that leave the byte
//! stream aligned on a frame boundary get an error frame and the connection goes on;
//! errors that don't (an oversized or truncated frame) close it. End of input from the
//! client (it closed, or shut down its write side) is the client leaving: its
//! generations are cancelled and nothing more is written.
//!
//! A connection that has not completed its hello within `hello_timeout_seconds` is told
//! so and closed, so a socket opened and left silent cannot keep its slot.
//!
//! A request goes through a gate before it is parsed (`Connection::handle_frame`): hello
//! first, a duplicate id refused, the authorization checked (admin rights too, before an
//! admin request's params are read), and only then are its params parsed, once, into a
//! [`Request`] that `Connection::dispatch` matches. The order is part of the protocol:
//! which error a client gets when several apply.
//!
//! Authorization is not frozen at connect: every request but `cancel` is checked against
//! the policy in force and the state of the connection's token
//! ([`Connection::current_grant`]). A revoked or expired token gets `unauthenticated`, a
//! uid no longer allowed `permission_denied`; the connection stays open, its running
//! generations finish, and it may still cancel them.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use provd_client::frame::{self, FrameError, MAX_DEPTH};
use provd_client::message::method::{Access, Method};
use provd_client::message::{
    self, notification, CancelParams, Empty, Envelope, ErrorNotice, GenerateRequest, Hello,
    HelloResult, ListModelsParams, ProviderList, StatusResult, PROTOCOL_VERSION,
};
use provd_client::socket::SharedStream;
use provd_client::{ErrorCode, WireError};
use serde::Serialize;
use tokio::io::BufReader;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admission::ConnectionSlot;
use super::generation::{self, StreamCtx};
use super::outbox::{write_loop, StallGuard, CLOSE_FLUSH_TIMEOUT};
use super::peer::PeerIdentity;
use super::request::{self, encode_reply, Request};
use super::streams::Streams;
use super::Daemon;
use crate::access::{AuthProvider, Grant};
use crate::shutdown::Shutdown;
use crate::untrusted::untrusted;

/// How large a read buffer a connection has: one page-ish.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// A connection the accept loop admitted: who is on the other end, what the policy said
/// of it then, and its place under the limits.
pub(super) struct Admitted {
    pub peer: PeerIdentity,
    /// The policy's verdict on the peer (a refusal is reported in reply to its hello, so
    /// the client learns why).
    pub grant: Result<Grant, WireError>,
    /// The policy that gave it.
    pub policy: Arc<AuthProvider>,
    /// Given back when the connection ends.
    pub slot: ConnectionSlot,
    /// How long the client has to complete its hello.
    pub hello_timeout: Duration,
}

/// Serves one client until it leaves, breaks the protocol, or the daemon stops.
pub(super) async fn serve(
    stream: Stream,
    admitted: Admitted,
    daemon: Arc<Daemon>,
    shutdown: Shutdown,
) {
    let Admitted {
        peer,
        grant,
        policy,
        slot,
        hello_timeout,
    } = admitted;
    tracing::debug!(%peer, "connection opened");
    daemon.stats.connections.fetch_add(1, Ordering::Relaxed);

    let stream = SharedStream::new(stream);
    let (out, rx) = mpsc::channel(daemon.limits.connection_queue_frames);
    // `peer_gone`: the socket is dead, stop writing. `closing` (its child): stop every
    // generation of this connection. A protocol error cancels only `closing`, so the frame
    // explaining it is still written.
    let peer_gone = CancellationToken::new();
    let closing = peer_gone.child_token();
    let mut writer = tokio::spawn(write_loop(
        StallGuard::new(stream.clone(), daemon.limits.slow_client_timeout),
        rx,
        peer_gone.clone(),
    ));

    let mut conn = Connection {
        ctx: StreamCtx {
            daemon: daemon.clone(),
            out,
            peer_gone: peer_gone.clone(),
            shutdown,
            streams: Streams::default(),
        },
        closing: closing.clone(),
        tasks: TaskTracker::new(),
        greeted: false,
        hello_deadline: tokio::time::Instant::now() + hello_timeout,
        hello_timeout,
        grant,
        policy,
        token: None,
        peer,
        scrub_frame: false,
    };
    conn.read_loop(BufReader::with_capacity(READ_BUFFER_BYTES, stream))
        .await;

    closing.cancel();
    conn.tasks.close();
    conn.tasks.wait().await;
    drop(conn);
    if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        peer_gone.cancel();
        let _ = writer.await;
    }
    daemon.stats.connections.fetch_sub(1, Ordering::Relaxed);
    drop(slot);
    tracing::debug!(%peer, "connection closed");
}

struct Connection {
    ctx: StreamCtx,
    closing: CancellationToken,
    tasks: TaskTracker,
    greeted: bool,
    /// When a connection that has not said hello is closed.
    hello_deadline: tokio::time::Instant,
    hello_timeout: Duration,
    /// What the peer may do, as decided by `policy` (a refusal is reported in reply to
    /// its hello, so the client learns why). Decided again when the policy in force is
    /// another one (a reload).
    grant: Result<Grant, WireError>,
    policy: Arc<AuthProvider>,
    /// The id of the token the hello presented, checked on every request.
    token: Option<String>,
    peer: PeerIdentity,
    /// The frame just handled carried a secret: wipe the read buffer.
    scrub_frame: bool,
}

impl Connection {
    async fn read_loop(&mut self, mut reader: BufReader<SharedStream>) {
        let mut buf = Vec::new();
        let max = self.ctx.daemon.limits.max_frame_bytes;
        let mut draining = false;
        loop {
            let read = tokio::select! {
                biased;
                _ = self.closing.cancelled() => return,
                _ = self.ctx.shutdown.stopping(), if !draining => {
                    draining = true;
                    self.tasks.close();
                    continue;
                }
                // While draining, the connection stays open for cancels and pings until
                // its last generation ends; then the client is told why it closes.
                _ = self.tasks.wait(), if draining => {
                    self.notify_error(ErrorCode::Unavailable, "provd is shutting down; reconnect when it is back").await;
                    return;
                }
                _ = tokio::time::sleep_until(self.hello_deadline), if !self.greeted => {
                    tracing::info!(peer = %self.peer, hello_timeout_s = self.hello_timeout.as_secs(), "closing a connection that did not say hello in time");
                    self.notify_error(ErrorCode::Timeout, format!(
                        "no hello within {}s of connecting (daemon.hello_timeout_seconds); closing the connection",
                        self.hello_timeout.as_secs()
                    ))
                    .await;
                    return;
                }
                read = frame::read_frame(&mut reader, &mut buf, max) => read,
            };
            match read {
                Ok(Some(())) => {
                    let flow = self.handle_frame(&buf).await;
                    if std::mem::take(&mut self.scrub_frame) {
                        zeroize::Zeroize::zeroize(&mut buf);
                    }
                    if flow.is_break() {
                        return;
                    }
                }
                Ok(None) => {
                    tracing::debug!(peer = %self.peer, "client closed the connection");
                    self.ctx.peer_gone.cancel();
                    return;
                }
                Err(e @ FrameError::TooLarge { .. }) => {
                    tracing::warn!(peer = %self.peer, error = %untrusted(&e), "closing connection");
                    self.notify_error(ErrorCode::ProtocolError, format!(
                        "{e} (max_frame_bytes); closing the connection because the rest of the frame cannot be skipped safely"
                    ))
                    .await;
                    return;
                }
                Err(e @ FrameError::Empty) => {
                    self.notify_error(ErrorCode::ProtocolError, e.to_string())
                        .await;
                }
                Err(e) => {
                    // Truncated or I/O: the peer is gone mid-frame; nobody to tell.
                    tracing::debug!(peer = %self.peer, error = %untrusted(&e), "connection broken");
                    self.ctx.peer_gone.cancel();
                    return;
                }
            }
        }
    }

    async fn handle_frame(&mut self, bytes: &[u8]) -> ControlFlow<()> {
        let envelope = match frame::validate(bytes, MAX_DEPTH).and_then(|()| Envelope::parse(bytes))
        {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %untrusted(&e), "unreadable frame");
                self.notify_error(ErrorCode::ProtocolError, e.to_string())
                    .await;
                return ControlFlow::Continue(());
            }
        };
        let Envelope::Request {
            id,
            method: name,
            params,
        } = envelope
        else {
            self.notify_error(
                ErrorCode::ProtocolError,
                "clients send only requests ([0, id, method, params]); replies and notifications go from the daemon to clients",
            )
            .await;
            return ControlFlow::Continue(());
        };
        let method = Method::from_name(name);
        // A frame that carries a secret is wiped once handled, whether the request is
        // served or refused (not greeted, a duplicate id, authorization gone).
        self.scrub_frame = method.is_some_and(Method::carries_secret);
        if !self.greeted && method != Some(Method::Hello) {
            let _ = self.reply_error(id, WireError::new(
                ErrorCode::ProtocolError,
                format!("the first request on a connection must be hello (protocol version {PROTOCOL_VERSION}), got '{}'", truncate(name, 64)),
            ))
            .await;
            return ControlFlow::Break(());
        }
        if self.greeted {
            // A reply carrying the id of a running request would read as that request's
            // end, so a duplicate gets a connection-level error instead, and is ignored.
            if self.ctx.streams.contains(id) {
                // The notice names the id, so the client can match it to the request it
                // just sent (PROTOCOL.md section 10).
                let error = WireError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "request id {id} ({}) ignored: a running request on this connection already uses it; ids must be unique among requests in flight",
                        truncate(name, 64)
                    ),
                );
                self.send_notice(ErrorNotice::new(error, Some(id))).await;
                return ControlFlow::Continue(());
            }
            if method == Some(Method::Hello) {
                return self
                    .reply_error(
                        id,
                        WireError::new(
                            ErrorCode::InvalidRequest,
                            "hello was already exchanged on this connection",
                        ),
                    )
                    .await;
            }
        }
        // The gate, before anything else is said about the request: `hello` is what
        // decides the authorization, and cancelling only stops what this connection
        // started, so it is allowed whatever became of its authorization; every other
        // request is checked against the policy in force.
        let grant = match method {
            Some(Method::Hello | Method::Cancel) => None,
            _ => match self.current_grant() {
                Ok(grant) => Some(grant),
                Err(e) => {
                    tracing::info!(
                        peer = %self.peer,
                        request = %untrusted(truncate(name, 64)),
                        error = %untrusted(&e.message),
                        "request refused: the connection's authorization changed"
                    );
                    return self.reply_error(id, e).await;
                }
            },
        };
        let Some(method) = method else {
            return self.reply_error(id, request::unknown_method(name)).await;
        };
        // Admin requests are refused before their params are read.
        if let (Access::Admin, Some(grant)) = (method.access(), &grant) {
            if let Err(e) = self.policy.check_admin(grant, method.name()) {
                return self.reply_error(id, e).await;
            }
            tracing::info!(peer = %grant.peer, request = method.name(), "admin request");
        }
        match Request::parse(method, params) {
            Ok(request) => self.dispatch(id, request, grant).await,
            // A hello that cannot be read ends the connection: nothing after it could be
            // understood.
            Err(e) if method == Method::Hello => {
                let _ = self.reply_error(id, e).await;
                ControlFlow::Break(())
            }
            Err(e) => self.reply_error(id, e).await,
        }
    }

    /// What the connection may do now: its grant, decided again when the policy in
    /// force is not the one that gave it (a reload), and its token's current state
    /// (revoked, expired) checked by id. A map lookup per request; the groups are looked
    /// up again only after a reload.
    fn current_grant(&mut self) -> Result<Grant, WireError> {
        let auth = self.ctx.daemon.auth();
        if Arc::ptr_eq(&auth, &self.policy) {
            if let (Ok(_), Some(id)) = (&self.grant, &self.token) {
                auth.tokens().current(id)?;
            }
        } else {
            self.grant = auth.grant_for(self.peer, self.token.as_deref());
            self.policy = auth;
        }
        self.grant.clone()
    }

    /// Serves a parsed request that passed the gate in [`Self::handle_frame`]; `grant`
    /// is what the gate decided (none for `hello` and `cancel`).
    async fn dispatch(
        &mut self,
        id: u32,
        request: Request,
        grant: Option<Grant>,
    ) -> ControlFlow<()> {
        match (request, grant) {
            (Request::Hello(hello), _) => self.hello(id, hello).await,
            (Request::Cancel(p), _) => self.cancel(id, p).await,
            // The gate decides a grant for every other request; failing closed.
            (_, None) => {
                self.reply_error(
                    id,
                    WireError::new(ErrorCode::Internal, "no authorization was decided"),
                )
                .await
            }
            (Request::Ping, Some(_)) => self.reply(id, &Empty {}).await,
            (Request::Status, Some(grant)) => {
                let status = self.status(&grant).await;
                self.reply(id, &status).await
            }
            (Request::ListProviders, Some(grant)) => {
                let mut providers = self.ctx.daemon.factory.providers();
                visible_providers(&self.policy, &grant, &mut providers);
                self.reply(id, &ProviderList { providers }).await
            }
            (Request::ListModels(p), Some(grant)) => self.list_models(id, p, grant).await,
            (Request::Generate(request), Some(grant)) => self.generate(id, *request, grant).await,
            (Request::Reload, Some(grant)) => self.reload(id, grant).await,
            (Request::Usage(p), Some(grant)) => self.usage(id, p, grant).await,
            (
                admin @ (Request::CredsSet(_)
                | Request::CredsList
                | Request::CredsRemove(_)
                | Request::CredsTest(_)
                | Request::CredsImport(_)
                | Request::KeyRotate(_)
                | Request::TokenCreate(_)
                | Request::TokenList
                | Request::TokenRevoke(_)
                | Request::Shutdown),
                Some(grant),
            ) => {
                let reply =
                    super::admin::handle(&self.ctx.daemon, &grant, id, admin, &self.ctx.shutdown)
                        .await;
                match reply {
                    Ok(frame) => self.send(frame).await,
                    Err(e) => self.reply_error(id, e).await,
                }
            }
        }
    }

    async fn cancel(&mut self, id: u32, p: CancelParams) -> ControlFlow<()> {
        if self.ctx.streams.cancel(p.id) {
            self.reply(id, &Empty {}).await
        } else {
            self.reply_error(id, WireError::new(
                ErrorCode::NotFound,
                format!("no running generation with id {} on this connection (it may have finished already)", p.id),
            ))
            .await
        }
    }

    async fn hello(&mut self, id: u32, hello: Hello) -> ControlFlow<()> {
        if hello.protocol_version != PROTOCOL_VERSION {
            tracing::info!(peer = %self.peer, client_version = hello.protocol_version, "protocol version mismatch");
            let _ = self.reply_error(id, WireError::new(
                ErrorCode::ProtocolError,
                format!(
                    "protocol version mismatch: the client speaks version {}, this daemon speaks version {PROTOCOL_VERSION}; upgrade the older side",
                    hello.protocol_version
                ),
            ))
            .await;
            return ControlFlow::Break(());
        }
        // Access: the peer's identity was judged when it connected (again now if the policy
        // was reloaded since); a token narrows it.
        let auth = self.ctx.daemon.auth();
        if !Arc::ptr_eq(&auth, &self.policy) {
            self.grant = auth.authorize(self.peer);
            self.policy = auth.clone();
        }
        let verdict = match &mut self.grant {
            Ok(grant) => auth.apply_token(grant, hello.token.as_deref()),
            Err(e) => Err(e.clone()),
        };
        if let Err(e) = verdict {
            tracing::warn!(peer = %self.peer, error = %untrusted(&e), "connection refused");
            let _ = self.reply_error(id, e).await;
            return ControlFlow::Break(());
        }
        self.token = self.grant.as_ref().ok().and_then(|g| g.token.clone());
        tracing::info!(peer = %self.peer, client = %untrusted(truncate(&hello.client, 64)), token = ?self.token, "client connected");
        self.greeted = true;
        let limits = &self.ctx.daemon.limits;
        let result = HelloResult {
            protocol_version: PROTOCOL_VERSION,
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            max_frame_bytes: limits.max_frame_bytes,
            max_streams: limits
                .max_streams_per_connection
                .try_into()
                .unwrap_or(u32::MAX),
        };
        self.reply(id, &result).await
    }

    async fn status(&self, grant: &Grant) -> StatusResult {
        let daemon = &self.ctx.daemon;
        let cache = daemon.factory.status();
        let mut status = StatusResult {
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol_version: PROTOCOL_VERSION,
            pid: std::process::id(),
            uptime_ms: daemon
                .started
                .elapsed()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            connections: daemon.stats.connections.load(Ordering::Relaxed),
            active_streams: daemon.stats.active_streams.load(Ordering::Relaxed),
            providers: daemon.factory.providers(),
            instances: cache.instances,
            provider_counters: cache.providers,
            instances_omitted: cache.omitted,
            max_provider_instances: cache.max_instances,
            uids: daemon.admission.usage(),
            ledger: daemon.ledger.is_enabled().then(|| daemon.ledger.status()),
            users: daemon.quotas.users(crate::ledger::unix_millis()),
        };
        visible_status(&self.policy, grant, &mut status);
        // After the filter: only the names this caller will see are looked up.
        daemon.quotas.name_users(&mut status.users).await;
        status
    }

    /// `reload`: re-read the configuration and credentials. An admin request: until the
    /// credentials change brings admin authorization, only peers running as the daemon's
    /// own user or as root may send it (they could send SIGHUP anyway); others get
    /// `permission_denied`. Answered in order: the connection reads its next frame when
    /// the reload is over.
    async fn reload(&mut self, id: u32, grant: Grant) -> ControlFlow<()> {
        if let Err(e) = self.policy.check_admin(&grant, Method::Reload.name()) {
            tracing::warn!(peer = %self.peer, "reload refused: not an admin");
            return self.reply_error(id, e).await;
        }
        if self.ctx.shutdown.is_stopping() {
            return self
                .reply_error(
                    id,
                    WireError::new(
                        ErrorCode::Unavailable,
                        "provd is shutting down and reloads nothing",
                    ),
                )
                .await;
        }
        let daemon = self.ctx.daemon.clone();
        let trigger = format!("reload request from {}", self.peer);
        match daemon.reloader.reload(&daemon, &trigger).await {
            Ok(result) => self.reply(id, &result).await,
            Err(e) => self.reply_error(id, e.to_wire()).await,
        }
    }

    async fn list_models(
        &mut self,
        id: u32,
        params: ListModelsParams,
        grant: Grant,
    ) -> ControlFlow<()> {
        if let Some(provider) = &params.provider {
            if let Err(e) = self.policy.check_provider(&grant, provider) {
                return self.reply_error(id, e).await;
            }
        }
        // Listing may reach an upstream; it must not hold up this connection's reader. It
        // is registered like a generation, so its id is taken and `cancel` reaches it.
        let daemon = self.ctx.daemon.clone();
        let out = self.ctx.out.clone();
        let registration = self.ctx.streams.register_listing(id, &self.closing);
        self.tasks.spawn(async move {
            let result = tokio::select! {
                _ = registration.cancel_token().cancelled() => Err(WireError::new(ErrorCode::Cancelled, format!("list_models {id} was cancelled"))),
                r = daemon.factory.list_models(params.provider.as_deref()) => r.map(|mut list| {
                    // Listing every provider shows only those this client may use.
                    let auth = daemon.auth();
                    list.models.retain(|m| auth.check_provider(&grant, &m.provider).is_ok());
                    list.errors.retain(|f| auth.check_provider(&grant, &f.provider).is_ok());
                    list
                }).map_err(|e| e.to_wire()),
            };
            // Free the id before the client can see the end, so it may reuse it at once.
            drop(registration);
            let frame = match result {
                Ok(list) => encode_reply(id, &list),
                Err(e) => message::encode_error(id, &e),
            };
            let _ = out.send(frame).await;
        });
        ControlFlow::Continue(())
    }

    /// `usage`: a report from the usage ledger. Making it waits for the ledger's writer
    /// and reads the file (and a user name may need a name-service lookup), so it runs
    /// on the blocking pool, answered from a task like `list_models`: this connection's
    /// reader goes on, and `cancel` reaches it.
    async fn usage(
        &mut self,
        id: u32,
        params: provd_client::message::UsageParams,
        grant: Grant,
    ) -> ControlFlow<()> {
        use crate::ledger::report;
        let (since_ms, until_ms) = match report::window(
            params.since_ms,
            params.until_ms,
            crate::ledger::unix_millis(),
        ) {
            Ok(window) => window,
            Err(e) => {
                return self
                    .reply_error(id, WireError::new(ErrorCode::InvalidRequest, e))
                    .await
            }
        };
        let daemon = self.ctx.daemon.clone();
        let config = daemon.factory.config();
        if !daemon.ledger.is_enabled() {
            let why = if config.ledger.enabled {
                "the usage ledger is off: it could not be opened when the daemon started (its log says why), or [ledger] was off then ([ledger] changes take effect at the next start), so there is no usage to report"
            } else {
                "the usage ledger is off ([ledger] enabled = false in the daemon's configuration), so there is no usage to report"
            };
            let mut e = WireError::new(ErrorCode::Unavailable, why);
            e.retryable = false;
            return self.reply_error(id, e).await;
        }
        let out = self.ctx.out.clone();
        let registration = self.ctx.streams.register_listing(id, &self.closing);
        self.tasks.spawn(async move {
            let by = params.by.unwrap_or_default();
            let make = tokio::task::spawn_blocking(move || {
                #[cfg(unix)]
                let lookup = crate::sys::user_id;
                #[cfg(not(unix))]
                let lookup = |name: &str| name.parse::<u32>().ok();
                let uid = report::scope(grant.admin, grant.peer.uid, params.user.as_deref(), lookup)?;
                let query = report::Query {
                    since_ms,
                    until_ms,
                    by,
                    uid,
                };
                report::from_ledger(&daemon.ledger, &query, &config.prices).map_err(|e| {
                    tracing::warn!(error = %e, "usage report failed");
                    WireError::new(ErrorCode::Internal, e.to_string())
                })
            });
            let result = tokio::select! {
                _ = registration.cancel_token().cancelled() => Err(WireError::new(ErrorCode::Cancelled, format!("usage {id} was cancelled"))),
                r = make => r.unwrap_or_else(|e| Err(WireError::new(ErrorCode::Internal, format!("the usage report failed: {e}")))),
            };
            // Free the id before the client can see the end, so it may reuse it at once.
            drop(registration);
            let frame = match result {
                Ok(report) => encode_reply(id, &report),
                Err(e) => message::encode_error(id, &e),
            };
            let _ = out.send(frame).await;
        });
        ControlFlow::Continue(())
    }

    async fn generate(
        &mut self,
        id: u32,
        request: GenerateRequest,
        grant: Grant,
    ) -> ControlFlow<()> {
        if self.ctx.shutdown.is_stopping() {
            return self
                .reply_error(
                    id,
                    WireError::new(
                        ErrorCode::Unavailable,
                        "provd is shutting down and starts no new generations",
                    ),
                )
                .await;
        }
        // Access: the providers this request may be routed to, of those the client may
        // use. The first (the named or default provider, or an alias's first target)
        // must be allowed; fallbacks the client may not use are skipped.
        let auth = &self.policy;
        let config = self.ctx.daemon.factory.config();
        let mut targets = crate::resilience::targets(&config, &request);
        if let Some(first) = targets.first().filter(|t| !t.provider.is_empty()) {
            if let Err(e) = auth.check_provider(&grant, &first.provider) {
                return self.reply_error(id, e).await;
            }
        }
        targets
            .retain(|t| t.provider.is_empty() || auth.check_provider(&grant, &t.provider).is_ok());
        let requester = super::accounting::Requester::of(&grant);
        let registered = self.ctx.streams.register_generation(
            id,
            &self.closing,
            &self.ctx.daemon,
            &requester,
            &config.limits,
        );
        match registered {
            Ok(registration) => {
                // The configuration it was routed with is the one it runs under (its
                // deadline, its retries), whatever a reload puts in force meanwhile.
                self.tasks.spawn(generation::run(
                    id,
                    request,
                    generation::Plan {
                        config,
                        targets,
                        requester,
                    },
                    registration,
                    self.ctx.clone(),
                ));
                ControlFlow::Continue(())
            }
            Err(e) => self.reply_error(id, e).await,
        }
    }

    async fn reply<R: Serialize>(&mut self, id: u32, result: &R) -> ControlFlow<()> {
        self.send(encode_reply(id, result)).await
    }

    async fn reply_error(&mut self, id: u32, error: WireError) -> ControlFlow<()> {
        self.send(message::encode_error(id, &error)).await
    }

    /// An `error` notification about the connection (its `id` is nil).
    async fn notify_error(&mut self, code: ErrorCode, message: impl Into<String>) {
        self.send_notice(ErrorNotice::new(WireError::new(code, message), None))
            .await;
    }

    async fn send_notice(&mut self, notice: ErrorNotice) {
        if let Ok(frame) = message::encode_notification(notification::ERROR, &notice) {
            let _ = self.send(frame).await;
        }
    }

    async fn send(&mut self, frame: Vec<u8>) -> ControlFlow<()> {
        tokio::select! {
            _ = self.ctx.peer_gone.cancelled() => ControlFlow::Break(()),
            r = self.ctx.out.send(frame) => if r.is_ok() { ControlFlow::Continue(()) } else { ControlFlow::Break(()) },
        }
    }
}

/// What a connection may see of the daemon in `status` (issue 11, part 7): an admin sees
/// everything; any other connection sees only the providers it may use (its uid's
/// provider ACLs and its token's scope), no per-model detail (which would show other
/// users' model names) and only its own uid's connections. The one place that decides
/// it: a field added to `status` is filtered here.
fn visible_status(auth: &AuthProvider, grant: &Grant, status: &mut StatusResult) {
    visible_providers(auth, grant, &mut status.providers);
    if !grant.admin {
        // Provider-level figures of the providers it may use; nothing per model, which
        // would show other users' model names.
        status
            .provider_counters
            .retain(|p| auth.check_provider(grant, &p.provider).is_ok());
        status.instances.clear();
        status.instances_omitted = 0;
        status.uids.retain(|u| u.uid == grant.peer.uid);
        status.ledger = None;
        // Its own budgets (its groups' included: it is bound by them), nobody else's.
        status.users.retain(|u| Some(u.uid) == grant.peer.uid);
    }
}

/// The providers of `list_providers` (and `status`) a connection may see: those it may
/// use.
fn visible_providers(
    auth: &AuthProvider,
    grant: &Grant,
    providers: &mut Vec<provd_client::message::ProviderInfo>,
) {
    providers.retain(|p| auth.check_provider(grant, &p.id).is_ok());
}

/// Client-chosen strings echoed in errors and logs are cut, so a hostile client cannot
/// make the daemon amplify its input.
pub(super) fn truncate(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provd_client::message::GenerateDone;
    use serde::de::DeserializeOwned;

    fn config(total_timeout_seconds: u64) -> crate::config::Config {
        crate::config::Config::parse(
            &format!(
                "[daemon]\ndefault_provider = \"m\"\n\
                 [providers.m]\ntype = \"mock\"\ntotal_timeout_seconds = {total_timeout_seconds}\n"
            ),
            std::path::Path::new("test.toml"),
        )
        .unwrap()
    }

    /// A greeted connection of this process's uid to `daemon`, and the queue its frames
    /// go to.
    fn connection(daemon: Arc<Daemon>) -> (Connection, mpsc::Receiver<Vec<u8>>) {
        let (out, rx) = mpsc::channel(64);
        let peer = PeerIdentity {
            uid: Some(crate::sys::effective_uid()),
            gid: None,
            pid: None,
        };
        let policy = daemon.auth();
        let grant = policy.authorize(peer);
        let peer_gone = CancellationToken::new();
        let conn = Connection {
            closing: peer_gone.child_token(),
            ctx: StreamCtx {
                daemon,
                out,
                peer_gone,
                shutdown: Shutdown::new(),
                streams: Default::default(),
            },
            tasks: TaskTracker::new(),
            greeted: true,
            hello_deadline: tokio::time::Instant::now(),
            hello_timeout: Duration::from_secs(5),
            grant,
            policy,
            token: None,
            peer,
            scrub_frame: false,
        };
        (conn, rx)
    }

    /// The reply to request `id` among the frames a connection queued.
    fn reply<R: DeserializeOwned>(
        rx: &mut mpsc::Receiver<Vec<u8>>,
        id: u32,
    ) -> Result<R, WireError> {
        while let Ok(frame) = rx.try_recv() {
            if let Ok(Envelope::Reply { id: got, outcome }) = Envelope::parse(&frame[4..]) {
                assert_eq!(got, id);
                return outcome.map(|bytes| message::decode(bytes).unwrap());
            }
        }
        panic!("no reply to request {id}");
    }

    /// Sends request `id` to `conn` as a client would.
    async fn send<P: Serialize>(conn: &mut Connection, id: u32, method: &str, params: &P) {
        let frame = message::encode_request(id, method, params).unwrap();
        assert!(conn.handle_frame(&frame[4..]).await.is_continue());
    }

    /// A map whose `provider` is a number: no method's params accept it.
    fn malformed() -> serde_json::Value {
        serde_json::json!({ "provider": 5, "id": "x" })
    }

    #[tokio::test]
    async fn a_non_admin_is_refused_an_admin_request_before_its_params_are_read() {
        let daemon = Arc::new(Daemon::new(config(60)));
        let (mut conn, mut rx) = connection(daemon);
        if let Ok(grant) = &mut conn.grant {
            grant.admin = false;
        }
        send(&mut conn, 1, "creds_set", &malformed()).await;
        assert!(
            std::mem::take(&mut conn.scrub_frame),
            "a frame that may carry a key is wiped, even when refused"
        );
        let e = reply::<Empty>(&mut rx, 1).unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied, "{}", e.message);
        assert!(
            e.message.starts_with("creds_set is an admin request"),
            "{}",
            e.message
        );
        // `reload` is a common method: its params are read first, as they always were.
        send(&mut conn, 2, "reload", &7u8).await;
        assert!(!conn.scrub_frame);
        let e = reply::<Empty>(&mut rx, 2).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
        // An admin's malformed admin request is told what is wrong with its params.
        conn.grant.as_mut().unwrap().admin = true;
        send(&mut conn, 3, "creds_set", &malformed()).await;
        let e = reply::<Empty>(&mut rx, 3).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", e.message);
        assert!(e.message.starts_with("creds_set params: "), "{}", e.message);
    }

    #[tokio::test]
    async fn an_unknown_method_and_a_greeted_hello_are_refused_and_the_connection_goes_on() {
        let daemon = Arc::new(Daemon::new(config(60)));
        let (mut conn, mut rx) = connection(daemon);
        send(&mut conn, 1, "format_disk", &Empty {}).await;
        let e = reply::<Empty>(&mut rx, 1).unwrap_err();
        assert_eq!(e, request::unknown_method("format_disk"));
        // A second hello is refused whatever its params.
        send(&mut conn, 2, "hello", &7u8).await;
        let e = reply::<Empty>(&mut rx, 2).unwrap_err();
        assert_eq!(e.message, "hello was already exchanged on this connection");
        send(&mut conn, 3, "ping", &Empty {}).await;
        assert_eq!(reply::<Empty>(&mut rx, 3), Ok(Empty {}));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_after_routing_leaves_the_request_on_the_configuration_it_was_routed_with() {
        // Routed while the provider allows 600 s; a reload to 1 s lands before the
        // generation opens; the answer takes 2 s (virtual time). One snapshot per request:
        // its deadline is the one it was routed with, so it completes.
        let daemon = Arc::new(Daemon::new(config(600)));
        let (mut conn, mut rx) = connection(daemon.clone());
        let mut request = GenerateRequest::prompt("hello there");
        request.additional_params.insert(
            "mock".into(),
            serde_json::json!({ "first_chunk_delay_ms": 2000 }),
        );
        let frame = message::encode_request(1, "generate", &request).unwrap();
        assert!(conn.handle_frame(&frame[4..]).await.is_continue());
        daemon.factory.reload(config(1));
        conn.tasks.close();
        conn.tasks.wait().await;
        let done: GenerateDone = reply(&mut rx, 1).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(done.done);
    }
}
