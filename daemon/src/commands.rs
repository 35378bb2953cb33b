//! What each `provd` subcommand does. `main.rs` parses arguments and calls these; keeping
//! them in the library lets tests and the demo run them in-process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use provd_client::message;
use provd_client::{Client, ClientError, GenerateEvent, GenerateRequest};
use serde_json::json;

use crate::config::{self, Config, ConfigError};
use crate::reload::Reloader;
use crate::server::listener::{ListenError, SocketListener};
use crate::server::{Daemon, Server};
use crate::shutdown::{Shutdown, TerminationSignals};
use crate::systemd::Notifier;

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

/// Loads `--config FILE`, else the first config file found, else the embedded default.
/// Returns the config and a description of where it came from, for the log.
pub fn load_config(explicit: Option<&Path>) -> Result<(Config, String), ConfigError> {
    let path = explicit
        .map(Path::to_owned)
        .or_else(config::find_config_file);
    match path {
        Some(path) => Ok((Config::load(&path)?, path.display().to_string())),
        None => Ok((Config::embedded(), config::EMBEDDED_NAME.to_owned())),
    }
}

/// The socket to serve on: `--socket`/`$PROVD_SOCKET`, else the config's, else the default.
pub fn serve_socket(flag: Option<PathBuf>, config: &Config) -> PathBuf {
    flag.or_else(|| config.daemon.socket.clone())
        .unwrap_or_else(provd_client::default_socket_path)
}

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
    inherited: Option<std::os::fd::OwnedFd>,
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
    let listener = match inherited {
        Some(fd) => {
            let listener = SocketListener::from_inherited(fd)?;
            tracing::info!(socket = %listener.path().display(), "adopted the listening socket systemd passed (socket activation); it stays when provd stops");
            listener
        }
        None => SocketListener::bind(&socket, config.daemon.socket_group.as_deref())?,
    };
    #[cfg(not(unix))]
    let listener = SocketListener::bind(&socket, config.daemon.socket_group.as_deref())?;
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
    #[cfg(unix)]
    let mut daemon = Daemon::assemble(config, auth, vault);
    #[cfg(not(unix))]
    let mut daemon = Daemon::assemble(config, auth);
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
    Server::new(daemon, listener, shutdown).run().await;
    supervisor.abort();
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

/// Options of `provd generate`.
#[derive(Debug, Default)]
pub struct GenerateOptions {
    /// The request.
    pub request: GenerateRequest,
    /// One JSON object per line instead of text.
    pub json: bool,
}

/// `provd generate`: streams text to stdout as it arrives, usage to stderr at the end.
pub async fn generate(socket: &Path, options: GenerateOptions) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    stream_to_stdout(&client, options).await
}

async fn stream_to_stdout(client: &Client, options: GenerateOptions) -> Result<(), CommandError> {
    let mut generation = client.generate(options.request).await?;
    let stdout = std::io::stdout();
    // Whether text was written without its line end: a failure then ends the line, and
    // a failure before any text prints nothing on stdout.
    let mut open_line = false;
    while let Some(event) = generation.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if options.json {
                    let mut out = stdout.lock();
                    writeln!(out, "{}", json!({"event": "error", "error": e.to_wire()}))?;
                    out.flush()?;
                } else if open_line {
                    println!();
                }
                return Err(e.into());
            }
        };
        let mut out = stdout.lock();
        match event {
            GenerateEvent::Chunk(chunk) if options.json => {
                writeln!(
                    out,
                    "{}",
                    json!({"event": "chunk", "index": chunk.index, "text": chunk.text, "model": chunk.model, "created_at": chunk.created_at})
                )?;
            }
            GenerateEvent::Chunk(chunk) => {
                write!(out, "{}", chunk.text)?;
                open_line |= !chunk.text.is_empty();
            }
            GenerateEvent::Done(done) if options.json => {
                writeln!(out, "{}", json!({"event": "done", "result": done}))?;
            }
            GenerateEvent::Done(done) => {
                if let Some(text) = &done.text {
                    write!(out, "{text}")?;
                }
                writeln!(out)?;
                out.flush()?;
                let u = done.usage;
                eprintln!(
                    "[{}/{}] {} prompt + {} completion = {} tokens, {} chunks, finish: {}",
                    done.provider,
                    done.model,
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.total_tokens,
                    done.chunks,
                    serde_json::to_value(done.finish_reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                );
            }
        }
        out.flush()?;
    }
    Ok(())
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

/// Connects and makes one request (the admin commands' shape).
async fn admin<P: serde::Serialize, R: serde::de::DeserializeOwned>(
    socket: &Path,
    method: &str,
    params: &P,
) -> Result<R, CommandError> {
    Ok(connect(socket).await?.request(method, params).await?)
}

/// `provd models`.
pub async fn models(
    socket: &Path,
    provider: Option<&str>,
    as_json: bool,
) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    let list = client.list_models(provider).await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
    } else {
        for m in &list.models {
            println!(
                "{:<16} {:<40} {}",
                m.provider,
                m.id,
                m.display_name.as_deref().unwrap_or("")
            );
        }
        for f in &list.errors {
            eprintln!("{}: {}", f.provider, f.error);
        }
    }
    // What could be listed is printed; the exit status still says that some of it failed.
    if list.errors.is_empty() {
        return Ok(());
    }
    let failed: Vec<&str> = list.errors.iter().map(|f| f.provider.as_str()).collect();
    Err(CommandError::Partial(format!(
        "the models of {} could not be listed",
        failed.join(", ")
    )))
}

/// `provd providers`.
pub async fn providers(socket: &Path, as_json: bool) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    let list = client.list_providers().await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    for p in &list.providers {
        println!(
            "{:<16} {:<18} {:<32}{}",
            p.id,
            p.kind,
            p.default_model.as_deref().unwrap_or("-"),
            if p.is_default { " (default)" } else { "" }
        );
    }
    Ok(())
}

/// `provd status`.
pub async fn status(socket: &Path, as_json: bool) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    let s = client.status().await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
        return Ok(());
    }
    println!(
        "provd {} (protocol {}), pid {}, up {:.1}s, {} connections, {} active streams",
        s.daemon_version,
        s.protocol_version,
        s.pid,
        s.uptime_ms as f64 / 1000.0,
        s.connections,
        s.active_streams
    );
    let counters = |m: &provd_client::message::ProviderMetrics| {
        format!(
            "{} requests, {} errors, {} cancelled, {} active, {} chunks, {}+{} tokens",
            m.requests,
            m.errors,
            m.cancelled,
            m.active,
            m.chunks,
            m.prompt_tokens,
            m.completion_tokens
        )
    };
    for p in &s.provider_counters {
        println!(
            "  provider {} [{}]: {}, {} instance{}, {}",
            p.provider,
            p.kind,
            health(&p.metrics),
            p.instances,
            if p.instances == 1 { "" } else { "s" },
            counters(&p.metrics)
        );
    }
    if !s.instances.is_empty() {
        let cached = s.instances.len() as u64 + s.instances_omitted;
        if s.max_provider_instances > 0 {
            println!(
                "  instances: {cached} cached of at most {}; the busiest:",
                s.max_provider_instances
            );
        }
    }
    for i in &s.instances {
        // Model names are the clients' words: escaped, they cannot forge a line.
        // An instance that initialized but whose every request failed is not ready in
        // any sense a user cares about.
        let state = match (i.status, health(&i.metrics)) {
            (provd_client::message::ProviderStatus::Ready, "failing") => "Failing".to_owned(),
            (status, _) => format!("{status:?}"),
        };
        println!(
            "    {}/{} [{}] {}: {}",
            i.provider,
            i.model.escape_debug(),
            i.kind,
            state,
            counters(&i.metrics)
        );
    }
    if s.instances_omitted > 0 {
        println!("    … and {} more", s.instances_omitted);
    }
    Ok(())
}

/// A provider's (or instance's) health as its counters show it, as `status` prints it.
fn health(m: &provd_client::message::ProviderMetrics) -> &'static str {
    match m.health() {
        provd_client::message::Health::Unused => "unused",
        provd_client::message::Health::Serving => "serving",
        provd_client::message::Health::Failing => "failing",
    }
}

/// `provd ping`: prints the round trip.
pub async fn ping(socket: &Path) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    let start = std::time::Instant::now();
    client.ping().await?;
    println!(
        "pong from provd {} in {:?}",
        client.daemon().daemon_version,
        start.elapsed()
    );
    Ok(())
}

/// `provd reload`: asks the daemon to re-read its configuration and credentials, and
/// prints what changed. A rejected reload is an error (the daemon keeps its configuration).
pub async fn reload(socket: &Path, as_json: bool) -> Result<(), CommandError> {
    let client = connect(socket).await?;
    let r = client.reload().await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
        return Ok(());
    }
    let list = |ids: &[String]| {
        if ids.is_empty() {
            "none".to_owned()
        } else {
            ids.join(", ")
        }
    };
    println!(
        "reloaded {}: {} provider{} (added: {}; changed: {}; removed: {})",
        r.config,
        r.providers,
        if r.providers == 1 { "" } else { "s" },
        list(&r.added),
        list(&r.changed),
        list(&r.removed)
    );
    if !r.needs_restart.is_empty() {
        println!(
            "needs restart to take effect: {}",
            r.needs_restart.join(", ")
        );
    }
    Ok(())
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

/// `provd creds set ID`: the key is read from stdin, or from the terminal without echo;
/// never from an argument.
pub async fn creds_set(socket: &Path, provider: &str) -> Result<(), CommandError> {
    let secret = crate::secret::Secret::new(read_secret(&format!("API key for {provider}: "))?);
    if secret.is_empty() {
        return Err(CommandError::Usage(format!(
            "no key given for '{provider}': type it at the prompt or pipe it on stdin (provd creds set {provider} < keyfile)"
        )));
    }
    let params = message::CredsSetParams {
        provider: provider.to_owned(),
        secret: secret.expose().to_owned(),
    };
    let _: message::Empty = admin(socket, message::method::CREDS_SET, &params).await?;
    eprintln!("sealed the key of '{provider}'; the next request uses it");
    Ok(())
}

fn read_secret(prompt: &str) -> Result<String, CommandError> {
    use std::io::{IsTerminal, Read};
    if std::io::stdin().is_terminal() {
        #[cfg(unix)]
        return Ok(crate::sys::read_password(prompt)?);
    }
    let _ = prompt;
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    Ok(text.trim().to_owned())
}

/// `provd creds list`: ids, sources, fingerprints; never a key.
pub async fn creds_list(socket: &Path, as_json: bool) -> Result<(), CommandError> {
    let list: message::CredsList =
        admin(socket, message::method::CREDS_LIST, &message::Empty {}).await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    for c in &list.credentials {
        println!(
            "{:<16} {:<14} {:<32} updated {}",
            c.provider,
            c.fingerprint,
            c.source,
            utc_date(c.updated_at)
        );
    }
    for e in &list.errors {
        eprintln!("unreadable: {}", e.error);
    }
    Ok(())
}

/// `provd creds remove ID`.
pub async fn creds_remove(socket: &Path, provider: &str) -> Result<(), CommandError> {
    let _: message::Empty = admin(
        socket,
        message::method::CREDS_REMOVE,
        &message::ProviderParams {
            provider: provider.to_owned(),
        },
    )
    .await?;
    eprintln!("removed the key of '{provider}'");
    Ok(())
}

/// `provd creds test ID`: a cheap authenticated call (list models) with the stored key.
pub async fn creds_test(socket: &Path, provider: &str) -> Result<(), CommandError> {
    let list: provd_client::ModelList = admin(
        socket,
        message::method::CREDS_TEST,
        &message::ProviderParams {
            provider: provider.to_owned(),
        },
    )
    .await?;
    println!(
        "ok: '{provider}' accepted its key and lists {} models",
        list.models.len()
    );
    Ok(())
}

/// `provd creds import FILE`: the file is read here and sent to the daemon, which maps
/// its variables to the configured providers and seals the keys.
pub async fn creds_import(socket: &Path, file: &Path) -> Result<(), CommandError> {
    let contents = std::fs::read_to_string(file)
        .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let params = message::CredsImportParams {
        name: file.display().to_string(),
        contents,
    };
    let result: message::CredsImportResult =
        admin(socket, message::method::CREDS_IMPORT, &params).await?;
    println!(
        "sealed: {}",
        if result.sealed.is_empty() {
            "nothing".to_owned()
        } else {
            result.sealed.join(", ")
        }
    );
    if !result.unknown.is_empty() {
        println!("not used by provd: {}", result.unknown.join(", "));
    }
    for s in &result.skipped {
        println!("skipped: {s}");
    }
    Ok(())
}

/// `provd key generate`: a new 256-bit master key, printed once.
pub fn key_generate() -> Result<(), CommandError> {
    #[cfg(unix)]
    {
        let key = crate::credentials::MasterKey::generate()
            .map_err(|e| CommandError::Io(std::io::Error::other(e.to_string())))?;
        println!("{}", key.expose());
    }
    Ok(())
}

/// `provd key rotate`: re-seals every credential under a new key (read from a file or
/// stdin); the daemon uses it at once, and its key source must be updated before the
/// next start.
pub async fn key_rotate(socket: &Path, new_key_file: Option<&Path>) -> Result<(), CommandError> {
    let new_key = match new_key_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CommandError::Usage(format!("cannot read {}: {e}", path.display())))?
            .trim()
            .to_owned(),
        None => read_secret("new master key (hex): ")?,
    };
    let result: message::KeyRotateResult = admin(
        socket,
        message::method::KEY_ROTATE,
        &message::KeyRotateParams { new_key },
    )
    .await?;
    println!(
        "re-sealed {} credentials under the new key; give provd the new key before it next starts",
        result.resealed
    );
    Ok(())
}

/// `provd token create`: prints the token once.
pub async fn token_create(
    socket: &Path,
    providers: Vec<String>,
    expires: Option<&str>,
) -> Result<(), CommandError> {
    let ttl_seconds = expires.map(parse_duration).transpose()?;
    let created: message::TokenCreated = admin(
        socket,
        message::method::TOKEN_CREATE,
        &message::TokenCreateParams {
            providers,
            ttl_seconds,
        },
    )
    .await?;
    println!("{}", created.token);
    eprintln!(
        "token {} created; it is shown only now (clients pass it in ${TOKEN_ENV})",
        created.id
    );
    Ok(())
}

/// `provd token list`.
pub async fn token_list(socket: &Path, as_json: bool) -> Result<(), CommandError> {
    let list: message::TokenList =
        admin(socket, message::method::TOKEN_LIST, &message::Empty {}).await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    for t in &list.tokens {
        let expires = t.expires_at.map_or_else(|| "never".to_owned(), utc_date);
        println!(
            "{:<14} expires {:<20} {}",
            t.id,
            expires,
            t.providers.join(",")
        );
    }
    Ok(())
}

/// `provd token revoke ID`.
pub async fn token_revoke(socket: &Path, id: &str) -> Result<(), CommandError> {
    let _: message::Empty = admin(
        socket,
        message::method::TOKEN_REVOKE,
        &message::TokenRevokeParams { id: id.to_owned() },
    )
    .await?;
    eprintln!("revoked token {id}");
    Ok(())
}

/// `provd shutdown`: the daemon drains and stops.
pub async fn shutdown(socket: &Path) -> Result<(), CommandError> {
    let _: message::Empty = admin(socket, message::method::SHUTDOWN, &message::Empty {}).await?;
    eprintln!("provd is draining and will stop");
    Ok(())
}

/// Parses `90s`, `15m`, `12h`, `30d` (any duration [`humantime`] reads, such as
/// `1h 30m`) or plain seconds, to whole seconds.
pub fn parse_duration(text: &str) -> Result<u64, CommandError> {
    let text = text.trim();
    let seconds = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok()
    } else {
        humantime::parse_duration(text).ok().map(|d| d.as_secs())
    };
    seconds.ok_or_else(|| {
        CommandError::Usage(format!(
            "'{text}' is not a duration like 90s, 15m, 12h or 30d"
        ))
    })
}

/// Seconds since the Unix epoch as an RFC 3339 date in UTC (`2026-12-06T07:50:03Z`); a
/// time too far out for the calendar is printed as the number it is.
pub fn utc_date(unix_seconds: u64) -> String {
    std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(unix_seconds))
        .filter(|t| *t <= std::time::UNIX_EPOCH + Duration::from_secs(MAX_DATE_SECONDS))
        .map_or_else(
            || unix_seconds.to_string(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        )
}

/// 9999-12-31T23:59:59Z, the last moment RFC 3339 can write.
const MAX_DATE_SECONDS: u64 = 253_402_300_799;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_in_any_unit_and_a_bad_one_is_named_once() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("15m").unwrap(), 900);
        assert_eq!(parse_duration("12h").unwrap(), 43_200);
        assert_eq!(parse_duration("30d").unwrap(), 2_592_000);
        assert_eq!(parse_duration("1h 30m").unwrap(), 5400);
        let e = parse_duration("30x").unwrap_err();
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(
            e.to_string(),
            "'30x' is not a duration like 90s, 15m, 12h or 30d"
        );
    }

    #[test]
    fn wrapped_errors_say_their_cause_once_and_expose_no_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = CommandError::from(io);
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(format!("{:#}", anyhow::Error::from(e)), "gone");
    }

    #[test]
    fn times_print_as_utc_rfc_3339_dates() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(1_796_543_403), "2026-12-06T07:50:03Z");
        assert_eq!(utc_date(u64::MAX), u64::MAX.to_string());
    }
}
