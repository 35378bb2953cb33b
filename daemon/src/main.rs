//! The `provd` command: argument parsing and logging set-up only; the work is in
//! [`provd::commands`] (`serve`, `client` and `admin` commands).
//!
//! The clap definitions stay here rather than beside each command: they are the one
//! place that describes the whole command line (help texts, flags, defaults), and the
//! library's commands take plain Rust values, so tests and `provd demo` call them
//! without an argument parser (mini-redis keeps its `clap` in its binaries likewise).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use provd::commands::client::GenerateOptions;
use provd::commands::{admin, client, serve};
use provd_client::{GenerateRequest, SOCKET_ENV};

/// provd: a local LLM provider daemon. Programs talk to it over a Unix socket and never
/// hold an API key.
#[derive(Debug, Parser)]
#[command(name = "provd", version, about, propagate_version = true)]
struct Cli {
    /// More logging (-v debug, -vv trace). PROVD_LOG overrides, e.g. PROVD_LOG=provd=debug.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// The daemon's socket [default: $XDG_RUNTIME_DIR/provd/provd.sock]
    #[arg(long, global = true, env = SOCKET_ENV, value_name = "PATH")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: in the foreground, under systemd (socket activation and readiness
    /// are automatic), or with --daemon in the background. SIGHUP reloads the
    /// configuration; SIGTERM/SIGINT drain and stop.
    Serve {
        /// Configuration file [default: $PROVD_CONFIG, ~/.config/provd/provd.toml,
        /// /etc/provd/provd.toml, else a built-in mock provider]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Detach into the background (for hosts without systemd); returns once the
        /// daemon serves, or fails with its start-up error. Refused under systemd.
        #[arg(long)]
        daemon: bool,
        /// With --daemon: the pid file, locked while the daemon runs [default: provd.pid
        /// beside the socket]
        #[arg(long, value_name = "FILE", requires = "daemon")]
        pid_file: Option<PathBuf>,
        /// With --daemon: where the daemon's log goes [default: provd.log beside the pid
        /// file]
        #[arg(long, value_name = "FILE", requires = "daemon")]
        log_file: Option<PathBuf>,
    },
    /// Stop the daemon `serve --daemon` started (SIGTERM through its pid file) and wait
    /// for it to drain and exit.
    Stop {
        /// Its pid file [default: provd.pid beside the socket]
        #[arg(long, value_name = "FILE")]
        pid_file: Option<PathBuf>,
        /// How long to wait for it to exit, in seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 60)]
        timeout: u64,
    },
    /// Make the daemon re-read its configuration and credentials (its own user and root
    /// only). Running generations go on; a bad configuration is rejected and the old one
    /// stays.
    Reload {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stream a generation through the daemon.
    Generate {
        /// Provider id [default: the daemon's default provider]
        #[arg(long)]
        provider: Option<String>,
        /// Model [default: the provider's default model]
        #[arg(long)]
        model: Option<String>,
        /// System prompt.
        #[arg(long)]
        system: Option<String>,
        /// Cap on generated tokens.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Sampling temperature.
        #[arg(long)]
        temperature: Option<f32>,
        /// Print one JSON event per line.
        #[arg(long)]
        json: bool,
        /// The prompt; read from stdin when absent.
        prompt: Option<String>,
    },
    /// List models.
    Models {
        /// Only this provider's.
        #[arg(long)]
        provider: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List configured providers.
    Providers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the daemon's state and counters.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Who used what: generations, tokens and cost from the daemon's usage ledger, per
    /// user, provider, model, token or day. Admins see every user; others their own.
    Usage {
        /// The window's start: a duration before now (7d, 12h, 30m), an RFC 3339
        /// instant (2026-03-01T12:00:00Z) or a date (2026-03-01, UTC) [default: 7d]
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// The window's end, in the same forms [default: now]
        #[arg(long, value_name = "WHEN")]
        until: Option<String>,
        /// One row per user, provider, model, token or day [default: user]
        #[arg(long, value_name = "KEY")]
        by: Option<String>,
        /// Only this user's generations (a name or a uid; others than yourself: admins
        /// only).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure one round trip to the daemon.
    Ping,
    /// Manage the sealed API keys (admin).
    Creds {
        #[command(subcommand)]
        action: CredsAction,
    },
    /// Master key: generate one, or rotate the store to a new one (admin).
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Bearer tokens that restrict a client to some providers (admin).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Ask the daemon to drain and stop (admin).
    Shutdown,
    /// Start a daemon on a temporary socket (or on --socket), stream one generation
    /// from the built-in mock provider through it, and stop.
    Demo,
}

#[derive(Debug, Subcommand)]
enum CredsAction {
    /// Seal a provider's API key, read from stdin or typed without echo.
    Set {
        /// The provider id.
        provider: String,
    },
    /// List stored keys: provider, fingerprint, source, last change (never the key).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a provider's key.
    Remove {
        /// The provider id.
        provider: String,
    },
    /// Check a provider's key with a cheap authenticated call (list models).
    Test {
        /// The provider id.
        provider: String,
    },
    /// Seal the keys of a .env file (ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY,
    /// PROVD_<ID>_API_KEY, …).
    Import {
        /// The .env file.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum KeyAction {
    /// Print a new 256-bit master key (hex).
    Generate,
    /// Re-seal every stored key under a new master key (read from the file, or stdin).
    Rotate {
        /// A file holding the new key in hex.
        #[arg(long, value_name = "FILE")]
        new_key_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum TokenAction {
    /// Create a token for some providers; it is printed once.
    Create {
        /// Providers it grants, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        providers: Vec<String>,
        /// Lifetime: 90s, 15m, 12h, 30d [default: never expires]
        #[arg(long)]
        expires: Option<String>,
        /// The user (name or uid) a request made with it on the loopback TCP listener
        /// acts as [default: you]
        #[arg(long, value_name = "NAME")]
        for_user: Option<String>,
    },
    /// List tokens (ids, providers, expiry; never the token).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token.
    Revoke {
        /// The token's id.
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve { .. });
    let detaching = matches!(cli.command, Command::Serve { daemon: true, .. });
    init_logging(cli.verbose, serving, detaching);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provd: error: {}", printed(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error as the CLI prints it: on one line (an upstream's multi-line message has its
/// line breaks replaced by ` / `), except a configuration parse error, whose caret
/// diagram points at the fault and means nothing flattened.
fn printed(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    use provd::commands::CommandError;
    use provd::config::ConfigError;
    // `CommandError::Config` is transparent: its `ConfigError` is not a link of the chain.
    let config_parse = e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<ConfigError>(),
            Some(ConfigError::Parse { .. })
        ) || matches!(
            cause.downcast_ref::<CommandError>(),
            Some(CommandError::Config(ConfigError::Parse { .. }))
        )
    });
    if config_parse || provd::one_line::has_caret_diagram(&text) {
        return text;
    }
    provd::one_line::one_line(&text)
}

/// Logs go to stderr: the terminal, the journal under systemd, or the log file of
/// `--daemon`. Colours only on a terminal; in the journal no timestamps (it has its own)
/// and a `<N>` priority prefix, so `journalctl -p warning` selects by level.
fn init_logging(verbose: u8, serving: bool, detaching: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = match (verbose, serving) {
        (0, true) => "info",
        (0, false) => "warn",
        (1, _) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("PROVD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let journal = provd::systemd::stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!detaching && !journal && std::io::stderr().is_terminal())
        .with_target(false);
    if journal {
        let format = tracing_subscriber::fmt::format()
            .with_target(false)
            .with_ansi(false)
            .without_time();
        builder
            .event_format(provd::systemd::JournalPriority(format))
            .init();
    } else {
        builder.init();
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // The runtime is built here, not by #[tokio::main], so that self-daemonizing can fork
    // before any runtime thread exists: `prepare_serve` forks (--daemon) and edits the
    // environment (LISTEN_*) while the process still has one thread.
    let prepared = match &cli.command {
        Command::Serve {
            config,
            daemon,
            pid_file,
            log_file,
        } => Some(serve::prepare_serve(serve::ServeArgs {
            config: config.clone(),
            socket: cli.socket.clone(),
            daemon: *daemon,
            pid_file: pid_file.clone(),
            log_file: log_file.clone(),
        })?),
        _ => None,
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = prepared.as_ref().and_then(|s| s.worker_threads()) {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().thread_name("provd").build()?;
    // Clients find the daemon where `provd serve` would listen; looked up only by the
    // commands that talk to it.
    let client_socket = || provd::config::load::client_socket(cli.socket.clone());
    runtime.block_on(async {
        match cli.command {
            Command::Serve { .. } => {
                if let Some(start) = prepared {
                    serve::serve(start).await?;
                }
            }
            Command::Stop { pid_file, timeout } => {
                let pid_file =
                    pid_file.unwrap_or_else(|| serve::default_pid_file(&client_socket()));
                serve::stop(&pid_file, std::time::Duration::from_secs(timeout))?;
            }
            Command::Reload { json } => admin::reload(&client_socket(), json).await?,
            Command::Creds { action } => {
                let socket = client_socket();
                match action {
                    CredsAction::Set { provider } => admin::creds_set(&socket, &provider).await?,
                    CredsAction::List { json } => admin::creds_list(&socket, json).await?,
                    CredsAction::Remove { provider } => {
                        admin::creds_remove(&socket, &provider).await?
                    }
                    CredsAction::Test { provider } => admin::creds_test(&socket, &provider).await?,
                    CredsAction::Import { file } => admin::creds_import(&socket, &file).await?,
                }
            }
            Command::Key { action } => match action {
                KeyAction::Generate => admin::key_generate()?,
                KeyAction::Rotate { new_key_file } => {
                    admin::key_rotate(&client_socket(), new_key_file.as_deref()).await?
                }
            },
            Command::Token { action } => {
                let socket = client_socket();
                match action {
                    TokenAction::Create {
                        providers,
                        expires,
                        for_user,
                    } => {
                        admin::token_create(
                            &socket,
                            providers,
                            expires.as_deref(),
                            for_user.as_deref(),
                        )
                        .await?
                    }
                    TokenAction::List { json } => admin::token_list(&socket, json).await?,
                    TokenAction::Revoke { id } => admin::token_revoke(&socket, &id).await?,
                }
            }
            Command::Shutdown => admin::shutdown(&client_socket()).await?,
            Command::Generate {
                provider,
                model,
                system,
                max_tokens,
                temperature,
                json,
                prompt,
            } => {
                let prompt = match prompt {
                    Some(p) => p,
                    None => {
                        let mut p = String::new();
                        std::io::stdin().read_to_string(&mut p)?;
                        p
                    }
                };
                let request = GenerateRequest {
                    provider,
                    model,
                    system,
                    max_tokens,
                    temperature,
                    ..GenerateRequest::prompt(prompt)
                };
                client::generate(&client_socket(), GenerateOptions { request, json }).await?;
            }
            Command::Models { provider, json } => {
                client::models(&client_socket(), provider.as_deref(), json).await?
            }
            Command::Providers { json } => client::providers(&client_socket(), json).await?,
            Command::Status { json } => client::status(&client_socket(), json).await?,
            Command::Usage {
                since,
                until,
                by,
                user,
                json,
            } => {
                let options = client::UsageOptions {
                    since,
                    until,
                    by,
                    user,
                    json,
                };
                client::usage(&client_socket(), options).await?
            }
            Command::Ping => client::ping(&client_socket()).await?,
            Command::Demo => serve::demo(cli.socket.as_deref()).await?,
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_message_over_several_lines_is_printed_on_one() {
        let e = anyhow::anyhow!(
            "upstream_error: p returned HTTP 400: first line\r\n\n  second line\nthird"
        );
        assert_eq!(
            printed(&e),
            "upstream_error: p returned HTTP 400: first line / second line / third"
        );
    }

    #[test]
    fn a_configuration_parse_error_keeps_its_caret_diagram() {
        let diagram =
            "TOML parse error at line 1, column 8\n  |\n1 | [daemon\n  |        ^\nunclosed table";
        let e = anyhow::Error::from(provd::config::ConfigError::Parse {
            path: "t.toml".into(),
            message: diagram.into(),
        });
        assert_eq!(printed(&e), format!("config t.toml: {diagram}"));
        let e = anyhow::Error::from(provd::commands::CommandError::Config(
            provd::config::ConfigError::Parse {
                path: "t.toml".into(),
                message: "line 1\nline 2".into(),
            },
        ));
        assert_eq!(
            printed(&e),
            "config t.toml: line 1\nline 2",
            "found down the chain"
        );
        let reloaded = anyhow::anyhow!(
            "invalid_request: config t.toml: TOML parse error at line 1, column 8\n  |\n1 | [daemon\n  |        ^\ninvalid table header"
        );
        assert_eq!(printed(&reloaded), format!("{reloaded:#}"));
    }
}
