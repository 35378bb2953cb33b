//! `provd serve` and what surrounds a running daemon: loading the configuration before
//! the runtime exists, binding or adopting the socket, unsealing the credentials, signals
//! and reload, readiness for systemd or a `--daemon` parent; `provd stop` for a daemon
//! that went to the background, and `provd demo`, a daemon and a client in one process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use provd_client::{Client, GenerateRequest};
use serde_json::json;

use super::client::{stream_to_stdout, GenerateOptions};
use super::CommandError;
use crate::config::load::{load_config, serve_socket};
use crate::config::{self, Config};
use crate::reload::Reloader;
use crate::server::listener::SocketListener;
use crate::server::{Daemon, Server};
use crate::shutdown::{Shutdown, TerminationSignals};
use crate::systemd::Notifier;

/// `provd serve` as the command line gave it.
#[derive(Clone, Debug, Default)]
pub struct ServeArgs {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--socket` / `$PROVD_SOCKET`.
    pub socket: Option<PathBuf>,
    /// `--daemon`: detach into the background (hosts without systemd).
    pub daemon: bool,
    /// `--pid-file` [default: beside the socket, `provd.pid`].
    pub pid_file: Option<PathBuf>,
    /// `--log-file` [default: beside the pid file, `provd.log`].
    pub log_file: Option<PathBuf>,
}

/// What [`prepare_serve`] readied for [`serve`]: the loaded configuration and how the
/// daemon was activated.
#[derive(Debug)]
pub struct ServeStart {
    config: Config,
    source: String,
    /// The file the configuration came from (`None`: the embedded default).
    config_path: Option<PathBuf>,
    socket_flag: Option<PathBuf>,
    socket: PathBuf,
    notifier: Notifier,
    #[cfg(unix)]
    inherited: crate::systemd::Inherited,
    #[cfg(unix)]
    detached: Option<crate::daemonize::Detached>,
}

impl ServeStart {
    /// The runtime threads the configuration asks for (`[daemon] worker_threads`);
    /// `None`: one per CPU.
    pub fn worker_threads(&self) -> Option<usize> {
        Some(self.config.daemon.worker_threads).filter(|&n| n > 0)
    }
}

/// The pid file `--daemon` uses when none is given, and `provd stop` looks for: beside
/// the socket, in its private directory.
pub fn default_pid_file(socket: &Path) -> PathBuf {
    socket.with_file_name("provd.pid")
}

/// Everything `provd serve` does before the tokio runtime exists, and must: load and
/// validate the configuration (so its errors reach the terminal), take the socket systemd
/// passed (removing `LISTEN_*` from the environment), and with `--daemon` fork into the
/// background. Call it while the process has one thread.
pub fn prepare_serve(args: ServeArgs) -> Result<ServeStart, CommandError> {
    // The daemon moves to / when it detaches, and a reload reads the config file again.
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    // Resolved once: a reload reads the same file again, and fails if it is gone rather
    // than falling back to another file or the embedded default.
    let config_path = args.config.or_else(config::find_config_file).map(absolute);
    let socket_flag = args.socket.map(absolute);
    let (config, source) = load_config(config_path.as_deref())?;
    let socket = serve_socket(socket_flag.clone(), &config);
    #[cfg(unix)]
    let detached = if args.daemon {
        crate::daemonize::check_no_service_manager()?;
        let pid_file = match args.pid_file {
            Some(p) => absolute(p),
            None => {
                // The default pid file lives in the socket's directory: make it now, as
                // the listener would, for the pid file comes first.
                let gid = config
                    .daemon
                    .socket_group
                    .as_deref()
                    .and_then(crate::sys::group_id);
                crate::server::listener::prepare_directory(&socket, gid)?;
                default_pid_file(&socket)
            }
        };
        let log_file = args
            .log_file
            .map(absolute)
            .unwrap_or_else(|| pid_file.with_extension("log"));
        let options = crate::daemonize::DetachOptions { pid_file, log_file };
        Some(crate::daemonize::detach(&options)?)
    } else {
        None
    };
    #[cfg(unix)]
    let inherited = crate::systemd::take_listen_fds()?;
    Ok(ServeStart {
        config,
        source,
        config_path,
        socket_flag,
        socket,
        notifier: Notifier::from_env(),
        #[cfg(unix)]
        inherited,
        #[cfg(unix)]
        detached,
    })
}

/// How often the service manager's status line is refreshed (only when it changed).
const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// `provd serve`: listens until SIGINT/SIGTERM, then drains and exits. A second signal
/// during the drain ends the remaining generations at once. SIGHUP reloads.
///
/// Start-up order, which readiness depends on: the configuration was validated by
/// [`prepare_serve`]; then the socket listens (bound here, or passed by systemd); then
/// the credentials are unsealed ([`crate::reload::unseal_credentials`]); then signal
/// handlers are installed; only then does the daemon report ready: `READY=1` to systemd,
/// and the `--daemon` parent exits 0. A failure before that point is the start-up error
/// (`--daemon`: the parent prints it and exits 1).
pub async fn serve(start: ServeStart) -> Result<(), CommandError> {
    #[cfg(unix)]
    let report = start.detached.as_ref().map(|d| d.report.clone());
    let result = serve_until_stopped(start).await;
    #[cfg(unix)]
    if let (Err(e), Some(report)) = (&result, report) {
        // Into the log file before the waiting parent exits with it.
        tracing::error!(error = %e, "provd could not start");
        report.failed(&e.to_string());
    }
    result
}

async fn serve_until_stopped(start: ServeStart) -> Result<(), CommandError> {
    // Before any key is read: no core dumps, no ptrace or /proc/PID/mem by other
    // processes of this uid.
    #[cfg(unix)]
    crate::sys::protect_process_memory();
    let ServeStart {
        config,
        source,
        config_path,
        socket_flag,
        socket,
        notifier,
        #[cfg(unix)]
        inherited,
        #[cfg(unix)]
        detached,
    } = start;
    tracing::info!(config = %source, "configuration loaded");
    #[cfg(unix)]
    let listener = match inherited.main {
        Some(fd) => {
            let listener = SocketListener::from_inherited(fd)?;
            tracing::info!(socket = %listener.path().display(), "adopted the listening socket systemd passed (socket activation); it stays when provd stops");
            listener
        }
        None => SocketListener::bind(&socket, config.daemon.socket_group.as_deref())?,
    };
    #[cfg(not(unix))]
    let listener = SocketListener::bind(&socket, config.daemon.socket_group.as_deref())?;
    #[cfg(unix)]
    let http = match inherited.http {
        Some(fd) => crate::server::http::HttpServer::from_inherited(&config, fd)?,
        None => crate::server::http::HttpServer::for_daemon(
            &config,
            listener.path(),
            listener.is_inherited(),
        )?,
    };
    // Credentials: the store (with the master key), then the `.env` file's keys, then the
    // access policy with its tokens. All before READY=1.
    let mut config = config;
    #[cfg(unix)]
    let vault = Arc::new(
        crate::credentials::Vault::open(&config)
            .map_err(|e| crate::reload::CredentialsError(e.to_string()))?,
    );
    #[cfg(unix)]
    crate::reload::unseal_credentials(&mut config, &vault)?;
    #[cfg(unix)]
    let auth = crate::reload::access_policy(&config, vault.dir())?;
    #[cfg(not(unix))]
    let auth = crate::reload::access_policy(&config, &std::env::temp_dir().join("provd"))?;

    let shutdown = Shutdown::new();
    let mut signals = TerminationSignals::install()?;
    #[cfg(unix)]
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;

    let providers = config.providers.len();
    // The ledger, before READY=1: the budgets it seeds must hold from the first request.
    #[cfg(unix)]
    let ledger = crate::ledger::Ledger::open(&config.ledger, vault.dir());
    #[cfg(not(unix))]
    let ledger = crate::ledger::Ledger::open(&config.ledger, &std::env::temp_dir().join("provd"));
    #[cfg(unix)]
    let mut daemon = Daemon::assemble(config, auth, vault);
    #[cfg(not(unix))]
    let mut daemon = Daemon::assemble(config, auth);
    // The budgets count from the ledger's usage of this month, before the first request.
    if let Some(path) = ledger.path() {
        daemon
            .quotas
            .seed_from_ledger(path, crate::ledger::unix_millis());
    }
    daemon.ledger = ledger;
    daemon.reloader = Reloader::new(config_path, &daemon.factory.config(), notifier.clone())
        .with_socket(
            socket_flag,
            listener.path().to_owned(),
            listener.is_inherited(),
        );
    let daemon = Arc::new(daemon);

    let stopper = shutdown.clone();
    tokio::spawn(async move {
        let sig = signals.recv().await;
        tracing::info!(signal = sig, "stopping: draining running generations");
        stopper.stop();
        let sig = signals.recv().await;
        tracing::warn!(
            signal = sig,
            "second signal: ending running generations now"
        );
        stopper.abort();
    });
    #[cfg(unix)]
    {
        let (daemon, shutdown) = (daemon.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.stopping() => return,
                    _ = hangups.recv() => {
                        // The outcome is logged by the reloader; a rejected reload keeps
                        // the configuration in force.
                        let _ = daemon.reloader.reload(&daemon, "SIGHUP").await;
                    }
                }
            }
        });
    }

    let ready = crate::reload::status_line(&daemon, "ready");
    notifier.ready(&ready);
    #[cfg(unix)]
    if let Some(detached) = &detached {
        detached.report.ready();
    }
    tracing::info!(
        providers,
        pid = std::process::id(),
        "provd {} ready",
        env!("CARGO_PKG_VERSION")
    );
    let supervisor = tokio::spawn(supervise(daemon.clone(), notifier, shutdown.clone(), ready));
    let daemon_for_ledger = daemon.clone();
    let server = Server::new(daemon, listener, shutdown);
    #[cfg(unix)]
    let server = server.with_http(http);
    server.run().await;
    supervisor.abort();
    // Every generation has ended: write their records before the process goes.
    let _ = tokio::task::spawn_blocking(move || daemon_for_ledger.ledger.flush()).await;
    // `detached` (the pid file) goes last: the pid file stays until the daemon has stopped.
    #[cfg(unix)]
    drop(detached);
    Ok(())
}

/// Keeps the service manager informed while the daemon runs: `STATUS=` when the numbers
/// change, `STOPPING=1` when the drain begins, and watchdog pings (`WATCHDOG=1` at half
/// of `WatchdogSec=`) until the very end, drain included. Sent from the runtime, so a
/// wedged runtime stops the pings and the watchdog fires.
async fn supervise(daemon: Arc<Daemon>, notifier: Notifier, shutdown: Shutdown, ready: String) {
    if !notifier.is_enabled() {
        return;
    }
    let mut watchdog = crate::systemd::watchdog_interval().map(tokio::time::interval);
    let mut status = tokio::time::interval(STATUS_INTERVAL);
    status.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut state = "ready";
    let mut last = ready;
    loop {
        tokio::select! {
            _ = shutdown.stopping(), if state == "ready" => {
                state = "stopping, draining";
                last = crate::reload::status_line(&daemon, state);
                notifier.stopping(&last);
            }
            _ = async {
                match watchdog.as_mut() {
                    Some(w) => { w.tick().await; }
                    None => std::future::pending().await,
                }
            } => notifier.watchdog(),
            _ = status.tick() => {
                let now = crate::reload::status_line(&daemon, state);
                if now != last {
                    notifier.status(&now);
                    last = now;
                }
            }
        }
    }
}

/// `provd stop`: stops the daemon `provd serve --daemon` started, through its pid file,
/// and waits up to `wait` for it to drain and exit.
#[cfg(unix)]
pub fn stop(pid_file: &Path, wait: Duration) -> Result<(), CommandError> {
    let pid = crate::daemonize::stop(pid_file, wait)?;
    eprintln!("provd (pid {pid}) stopped");
    Ok(())
}

/// `provd stop`: background daemons are a Unix feature.
#[cfg(not(unix))]
pub fn stop(_pid_file: &Path, _wait: Duration) -> Result<(), CommandError> {
    Err(CommandError::Io(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "provd stop works with `provd serve --daemon`, which needs Unix",
    )))
}

/// `provd demo`: a daemon with the embedded mock provider on `socket` (`--socket`),
/// else on a temporary socket, one generation streamed through it, then a clean stop.
pub async fn demo(socket: Option<&Path>) -> Result<(), CommandError> {
    let dir = tempfile::Builder::new().prefix("provd-demo-").tempdir()?;
    let socket = socket.map_or_else(|| dir.path().join("provd.sock"), Path::to_owned);
    let listener = SocketListener::bind(&socket, None)?;
    let shutdown = Shutdown::new();
    let server = tokio::spawn(
        Server::new(
            Arc::new(Daemon::new(Config::embedded())),
            listener,
            shutdown.clone(),
        )
        .run(),
    );
    eprintln!(
        "provd demo: daemon listening on {} with the built-in mock provider",
        socket.display()
    );

    let client = Client::connect_as(&socket, "provd-demo").await?;
    let mut request = GenerateRequest::prompt("Show me that provd streams.");
    // A short pause between chunks so a person can see them arrive one by one.
    request
        .additional_params
        .insert("mock".into(), json!({"chunk_delay_ms": 30}));
    let result = stream_to_stdout(
        &client,
        GenerateOptions {
            request,
            json: false,
        },
    )
    .await;
    drop(client);
    shutdown.stop();
    let _ = server.await;
    eprintln!("provd demo: daemon stopped");
    result
}
