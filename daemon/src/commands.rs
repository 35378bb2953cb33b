//! What each `provd` subcommand does. `main.rs` parses arguments and calls these; keeping
//! them in the library lets tests and the demo run them in-process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use provd_client::{Client, ClientError, GenerateEvent, GenerateRequest};
use serde_json::json;

use crate::config::{self, Config, ConfigError};
use crate::server::listener::{ListenError, SocketListener};
use crate::server::{Daemon, Server};
use crate::shutdown::{termination_signal, Shutdown};

/// Why a command failed; printed as one line on stderr.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon cannot listen.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// Talking to the daemon failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Local I/O failed (stdout closed, temp dir).
    #[error("{0}")]
    Io(#[from] std::io::Error),
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

/// `provd serve`: listens until SIGINT/SIGTERM, then drains and exits. A second signal
/// during the drain ends the remaining generations at once.
pub async fn serve(config: Config, socket: &Path) -> Result<(), CommandError> {
    let listener = SocketListener::bind(socket, config.daemon.socket_group.as_deref())?;
    let providers = config.providers.len();
    let daemon = Arc::new(Daemon::new(config));
    let shutdown = Shutdown::new();
    let signals = shutdown.clone();
    tokio::spawn(async move {
        match termination_signal().await {
            Ok(sig) => tracing::info!(signal = sig, "stopping: draining running generations"),
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers; stopping");
            }
        }
        signals.stop();
        if let Ok(sig) = termination_signal().await {
            tracing::warn!(
                signal = sig,
                "second signal: ending running generations now"
            );
            signals.abort();
        }
    });
    tracing::info!(
        providers,
        pid = std::process::id(),
        "provd {} ready",
        env!("CARGO_PKG_VERSION")
    );
    Server::new(daemon, listener, shutdown).run().await;
    Ok(())
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
    let client = Client::connect_as(socket, "provd-cli").await?;
    stream_to_stdout(&client, options).await
}

async fn stream_to_stdout(client: &Client, options: GenerateOptions) -> Result<(), CommandError> {
    let mut generation = client.generate(options.request).await?;
    let stdout = std::io::stdout();
    while let Some(event) = generation.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                if options.json {
                    let mut out = stdout.lock();
                    writeln!(out, "{}", json!({"event": "error", "error": e.to_wire()}))?;
                    out.flush()?;
                } else {
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
            GenerateEvent::Chunk(chunk) => write!(out, "{}", chunk.text)?,
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

/// `provd models`.
pub async fn models(
    socket: &Path,
    provider: Option<&str>,
    as_json: bool,
) -> Result<(), CommandError> {
    let client = Client::connect_as(socket, "provd-cli").await?;
    let list = client.list_models(provider).await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
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
    Ok(())
}

/// `provd providers`.
pub async fn providers(socket: &Path, as_json: bool) -> Result<(), CommandError> {
    let client = Client::connect_as(socket, "provd-cli").await?;
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
    let client = Client::connect_as(socket, "provd-cli").await?;
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
    for i in &s.instances {
        let m = i.metrics;
        println!(
            "  {}/{} [{}] {:?}: {} requests, {} errors, {} cancelled, {} active, {} chunks, {}+{} tokens",
            i.provider, i.model, i.kind, i.status, m.requests, m.errors, m.cancelled, m.active, m.chunks, m.prompt_tokens, m.completion_tokens
        );
    }
    Ok(())
}

/// `provd ping`: prints the round trip.
pub async fn ping(socket: &Path) -> Result<(), CommandError> {
    let client = Client::connect_as(socket, "provd-cli").await?;
    let start = std::time::Instant::now();
    client.ping().await?;
    println!(
        "pong from provd {} in {:?}",
        client.daemon().daemon_version,
        start.elapsed()
    );
    Ok(())
}

/// `provd demo`: a daemon on a temporary socket with the embedded mock provider, one
/// generation streamed through it, then a clean stop.
pub async fn demo() -> Result<(), CommandError> {
    let dir = tempfile::Builder::new().prefix("provd-demo-").tempdir()?;
    let socket = dir.path().join("provd.sock");
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
