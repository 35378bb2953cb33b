//! Configuration: the TOML file, its defaults, and validation with errors that name the
//! file, the key and the rule broken.
//!
//! ```toml
//! [daemon]
//! socket = "/run/provd/provd.sock"   # else $PROVD_SOCKET, else the default path
//! default_provider = "anthropic"
//! max_connections = 1024
//!
//! [providers.anthropic]
//! type = "anthropic"
//! default_model = "claude-sonnet-4-5"
//! timeout_seconds = 60
//! ```
//!
//! A `[providers.<id>]` table is a [`ProviderConfig`] of `crate::settings`, which the
//! providers are built from too; this module imports no provider code. The rules that
//! depend on the type (its `options`) are the provider table's, reached through
//! [`TypeRules`].

pub mod load;
pub mod usage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::settings::{ProviderConfig, TypeRules};

/// The largest count (connections, streams, queued frames) or number of seconds the
/// configuration accepts. The server sizes semaphores and queues with the counts and adds
/// the seconds to the clock, where a value near 2^63 overflows and panics; 2^32 - 1
/// seconds is 136 years, which is "never" enough.
pub const MAX_COUNT_OR_SECONDS: u64 = u32::MAX as u64;

/// The `[daemon]` table.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Socket path; `--socket` and `$PROVD_SOCKET` take precedence.
    pub socket: Option<PathBuf>,
    /// Group allowed to connect (name or numeric gid); the socket becomes 0660.
    pub socket_group: Option<String>,
    /// Where the daemon keeps state (sealed credentials, token hashes).
    pub state_dir: Option<PathBuf>,
    /// A `.env` file that is the source of truth for API keys: read at start and on
    /// reload, its keys sealed into the store.
    pub env_file: Option<PathBuf>,
    /// Provider used when a request names none.
    pub default_provider: Option<String>,
    /// Client connections served at once (1 to [`MAX_COUNT_OR_SECONDS`]); more are refused
    /// with `overloaded`.
    pub max_connections: usize,
    /// Generations one connection may run at once (1 to [`MAX_COUNT_OR_SECONDS`]).
    pub max_streams_per_connection: usize,
    /// Largest frame accepted, in bytes.
    pub max_frame_bytes: u32,
    /// Frames queued for one connection before its generations wait for the client to
    /// read: what a slow reader can cost the daemon (1 to [`MAX_COUNT_OR_SECONDS`]).
    pub connection_queue_frames: usize,
    /// How long running generations may go on after SIGTERM before they are ended, in
    /// seconds (at most [`MAX_COUNT_OR_SECONDS`]).
    pub drain_timeout_seconds: u64,
    /// While a generation's upstream is silent, a `keepalive` notification is sent this
    /// often (milliseconds; 0 = never), so client-side timers don't fire while a model
    /// thinks.
    pub keepalive_interval_ms: u64,
    /// How long a connection's socket may accept no byte while frames wait for the
    /// client before the daemon drops the connection and cancels its generations
    /// (seconds, >= 1). A client that stops reading first holds only its own bounded
    /// queue; this bound ends even that, so a stuck client cannot pin streams for ever.
    pub slow_client_timeout_seconds: u64,
    /// Threads serving connections and generations; 0 (the default) means one per CPU.
    /// One thread hands a chunk from the provider's socket to the client's without
    /// waking another, which on a small machine saves a fifth of provd's CPU per chunk
    /// and some first-chunk latency; more threads forward more chunks per second when
    /// many busy connections make provd's own CPU the limit (`provd-bench` shows both).
    pub worker_threads: usize,
    /// How long a new connection may take to complete its hello before the daemon sends
    /// an error naming this setting and closes it (seconds, 1 to
    /// [`MAX_COUNT_OR_SECONDS`]), so idle sockets cannot hold connection slots. Applies
    /// to connections accepted after a reload.
    pub hello_timeout_seconds: u64,
    /// Provider instances (one per provider and model) kept at once, 1 to
    /// [`MAX_COUNT_OR_SECONDS`]. When the cache is full the least recently used idle one
    /// is shut down to make room; when every one is serving a stream, a request for a
    /// new provider and model gets `overloaded`. Models the configuration names
    /// ([`Config::names_model`]) are outside this cap.
    pub max_provider_instances: usize,
    /// An instance unused for this long is shut down (seconds, 1 to
    /// [`MAX_COUNT_OR_SECONDS`]; a sweep every quarter of it checks, so give or take a
    /// quarter); the next request for its model builds a new one.
    pub provider_idle_seconds: u64,
}

/// Default for `[daemon] hello_timeout_seconds`: ample for any client on the same host,
/// short enough that sockets opened and left silent give their slots back at once.
pub const DEFAULT_HELLO_TIMEOUT_SECONDS: u64 = 5;

/// Default for `[daemon] max_provider_instances`: far more models than one host uses,
/// few enough that the instances of names a client makes up stay a few megabytes.
pub const DEFAULT_MAX_PROVIDER_INSTANCES: usize = 256;

/// Default for `[daemon] provider_idle_seconds`.
pub const DEFAULT_PROVIDER_IDLE_SECONDS: u64 = 600;

/// Default for `[daemon] slow_client_timeout_seconds`: far longer than any pause of a
/// client that is reading (a GC pause, a busy UI thread), short enough that a stuck one
/// gives its generations and upstream connections back within a minute.
pub const DEFAULT_SLOW_CLIENT_TIMEOUT_SECONDS: u64 = 30;

/// Default for `[daemon] worker_threads`: one per CPU; see
/// [`DaemonConfig::worker_threads`].
pub const DEFAULT_WORKER_THREADS: usize = 0;

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: None,
            socket_group: None,
            state_dir: None,
            env_file: None,
            default_provider: None,
            max_connections: 1024,
            max_streams_per_connection: 64,
            max_frame_bytes: provd_client::frame::DEFAULT_MAX_FRAME_BYTES,
            connection_queue_frames: 64,
            drain_timeout_seconds: 10,
            keepalive_interval_ms: 15_000,
            slow_client_timeout_seconds: DEFAULT_SLOW_CLIENT_TIMEOUT_SECONDS,
            worker_threads: DEFAULT_WORKER_THREADS,
            hello_timeout_seconds: DEFAULT_HELLO_TIMEOUT_SECONDS,
            max_provider_instances: DEFAULT_MAX_PROVIDER_INSTANCES,
            provider_idle_seconds: DEFAULT_PROVIDER_IDLE_SECONDS,
        }
    }
}

/// The `[limits]` table: how much of the daemon one local user may take, so that no user
/// locks the others (or the admins) out. Admin uids (the daemon's uid, root,
/// `access.admin_uids`, `access.admin_groups`) are not subject to the per-uid caps and
/// may use the reserved connections. Read for every new connection and generation, so a
/// reload applies to those that come after it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Connections one non-admin uid may hold open at once (1 to
    /// [`MAX_COUNT_OR_SECONDS`]); more are refused with `overloaded`.
    pub max_connections_per_uid: usize,
    /// Generations one non-admin uid may run at once, over all its connections (1 to
    /// [`MAX_COUNT_OR_SECONDS`]); more are refused with `overloaded`.
    pub max_streams_per_uid: usize,
    /// Of `daemon.max_connections`, how many only admin uids may take, so that
    /// `status`, `reload` and `shutdown` get through when other users fill the rest. At
    /// most `max_connections - 1` are kept ([`LimitsConfig::reserved_for_admins`]).
    pub admin_reserved_connections: usize,
    /// Budgets and rates per user (`[limits.uid.NAME]`, NAME a user name or uid),
    /// enforced from counters the usage ledger seeds at start (see [`usage`]).
    pub uid: BTreeMap<String, usage::Quota>,
    /// Budgets and rates per group, pooled over its members (`[limits.group.NAME]`).
    pub group: BTreeMap<String, usage::Quota>,
    /// Budgets and rates per token id (`[limits.token.ID]`).
    pub token: BTreeMap<String, usage::Quota>,
}

impl LimitsConfig {
    /// The connections kept for admins out of `max_connections`: as configured, but
    /// always leaving one for other users (a small `max_connections` from before the
    /// reserve existed must not lock every other user out).
    pub fn reserved_for_admins(&self, max_connections: usize) -> usize {
        self.admin_reserved_connections
            .min(max_connections.saturating_sub(1))
    }

    /// Every budget table, with its kind as the configuration spells it.
    pub fn quota_tables(&self) -> [(&'static str, &BTreeMap<String, usage::Quota>); 3] {
        [
            ("uid", &self.uid),
            ("group", &self.group),
            ("token", &self.token),
        ]
    }

    /// Whether any budget or rate is configured (none, the common case: nothing to check).
    pub fn has_quotas(&self) -> bool {
        !(self.uid.is_empty() && self.group.is_empty() && self.token.is_empty())
    }
}

/// Default for `[limits] max_connections_per_uid`.
pub const DEFAULT_MAX_CONNECTIONS_PER_UID: usize = 64;
/// Default for `[limits] max_streams_per_uid`.
pub const DEFAULT_MAX_STREAMS_PER_UID: usize = 256;
/// Default for `[limits] admin_reserved_connections`.
pub const DEFAULT_ADMIN_RESERVED_CONNECTIONS: usize = 4;

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_uid: DEFAULT_MAX_CONNECTIONS_PER_UID,
            max_streams_per_uid: DEFAULT_MAX_STREAMS_PER_UID,
            admin_reserved_connections: DEFAULT_ADMIN_RESERVED_CONNECTIONS,
            uid: BTreeMap::new(),
            group: BTreeMap::new(),
            token: BTreeMap::new(),
        }
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Daemon settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// Providers by id.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Who may connect and ask what.
    #[serde(default)]
    pub access: crate::access::AccessConfig,
    /// Model aliases: a request whose model is an alias name (and that names no provider)
    /// is served by the first target that answers, in order (`"provider/model"` or
    /// `"provider"`).
    #[serde(default)]
    pub aliases: BTreeMap<String, Vec<String>>,
    /// Per-uid admission limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The HTTP front door (OpenAI-, Anthropic- and Ollama-compatible routes).
    #[serde(default)]
    pub http: HttpConfig,
    /// The usage ledger.
    #[serde(default)]
    pub ledger: usage::LedgerConfig,
    /// Prices per `"provider/model"`, for the cost in `provd usage`.
    #[serde(default)]
    pub prices: BTreeMap<String, usage::Price>,
}

/// The `[http]` table: the HTTP front door on a Unix socket beside the MessagePack one.
/// Who calls is the peer's uid, under the same access policy and per-uid limits as the
/// MessagePack socket.
///
/// ```toml
/// [http]
/// enabled = true                 # default
/// socket = "/run/provd/http.sock" # default: http.sock beside the MessagePack socket
/// max_body_bytes = 33554432      # 32 MiB, the default
/// listen = "127.0.0.1:8080"      # off by default; loopback only, every request needs a token
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether the HTTP socket is opened at all.
    pub enabled: bool,
    /// The socket's path; a relative one is beside the MessagePack socket. Unset:
    /// `http.sock` beside the MessagePack socket, except in the `/tmp/provd-UID`
    /// fallback directory, where it is not opened (see [`load::http_socket`]).
    pub socket: Option<PathBuf>,
    /// The largest request body accepted (1 to [`MAX_COUNT_OR_SECONDS`]); a larger
    /// one is refused with 413 before it is read.
    pub max_body_bytes: u64,
    /// How long a client has to send a request's headers once it sent its first byte
    /// (1 to [`MAX_COUNT_OR_SECONDS`]).
    pub header_read_timeout_seconds: u64,
    /// How long a keep-alive connection may sit idle between requests before it is
    /// closed (1 to [`MAX_COUNT_OR_SECONDS`]).
    pub keep_alive_idle_seconds: u64,
    /// A loopback TCP address to serve too (`127.0.0.1:PORT`, `[::1]:PORT`; port 0 picks
    /// one, logged). Off when unset. A non-loopback address is refused: there is no TLS,
    /// and on TCP the kernel cannot say who calls, so every request carries a provd token.
    pub listen: Option<String>,
}

/// Default for `[http] max_body_bytes`: 32 MiB, room for a long conversation.
pub const DEFAULT_HTTP_MAX_BODY_BYTES: u64 = 32 * 1024 * 1024;
/// Default for `[http] header_read_timeout_seconds`.
pub const DEFAULT_HTTP_HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
/// Default for `[http] keep_alive_idle_seconds`.
pub const DEFAULT_HTTP_KEEP_ALIVE_IDLE_SECONDS: u64 = 60;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            socket: None,
            max_body_bytes: DEFAULT_HTTP_MAX_BODY_BYTES,
            header_read_timeout_seconds: DEFAULT_HTTP_HEADER_READ_TIMEOUT_SECONDS,
            keep_alive_idle_seconds: DEFAULT_HTTP_KEEP_ALIVE_IDLE_SECONDS,
            listen: None,
        }
    }
}

/// The address of `[http] listen`, or why it is refused: it must be an IP address and
/// port (no host name, which could resolve anywhere) on the loopback interface.
pub fn loopback_address(listen: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = listen.parse().map_err(|_| {
        format!("must be a loopback address and port like \"127.0.0.1:8080\" or \"[::1]:8080\", got '{listen}'")
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "must be a loopback address (127.0.0.1 or ::1), got '{listen}': provd serves no TLS and is not exposed beyond this machine"
        ));
    }
    Ok(addr)
}

/// A provider and model a request can be routed to (`"provider"` or `"provider/model"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Provider id.
    pub provider: String,
    /// Model; the provider's default when `None`.
    pub model: Option<String>,
}

impl Target {
    /// Parses `"provider"` or `"provider/model"` (a model may itself contain `/`).
    pub fn parse(s: &str) -> Target {
        match s.split_once('/') {
            Some((provider, model)) => Target {
                provider: provider.to_owned(),
                model: Some(model.to_owned()),
            },
            None => Target {
                provider: s.to_owned(),
                model: None,
            },
        }
    }
}

/// A configuration that cannot be used, and exactly why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file, or a directory above it, could be changed by a user other than the
    /// daemon's and root: whoever can write it could make themselves admin or send the
    /// keys to their own server.
    #[cfg(unix)]
    #[error("config {}: refused, only root and the daemon's user may be able to change it: {reason}", path.display())]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// The path that broke the rule, its owner and mode, and the rule.
        reason: provd_client::trust::Untrusted,
    },
    /// The TOML is malformed or a value has the wrong type.
    #[error("config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
    /// A value breaks a rule.
    #[error("config {}: {key} {rule}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The dotted key (`providers.anthropic.timeout_seconds`).
        key: String,
        /// The rule and the value found (`must be >= 1, got 0`).
        rule: String,
    },
}

/// The configuration used when no file exists: one mock provider, so a new user sees a
/// generation stream through the daemon with no key and no setup.
pub const EMBEDDED_DEFAULT: &str = r#"
[daemon]
default_provider = "mock"

[providers.mock]
type = "mock"
default_model = "mock-1"
"#;

/// Where the embedded default claims to come from in error messages.
pub const EMBEDDED_NAME: &str = "<embedded default>";

impl Config {
    /// Reads and validates a file. On Unix the file must pass the trust rule for the
    /// daemon's uid ([`provd_client::trust`]): it and every directory above it (symbolic
    /// links resolved) owned by root or that uid and not writable by group or others
    /// (directories above: unless sticky). This is checked at start-up and at every reload.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_err = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        #[cfg(unix)]
        let text = {
            use provd_client::trust::{self, TrustError};
            let mut file = trust::open_trusted_file(path, crate::sys::effective_uid()).map_err(
                |e| match e {
                    TrustError::Untrusted(reason) => ConfigError::Untrusted {
                        path: path.to_owned(),
                        reason,
                    },
                    io => read_err(io.to_io_error()),
                },
            )?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text).map_err(read_err)?;
            text
        };
        #[cfg(not(unix))]
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Config::parse(&text, path)
    }

    /// The embedded default (one mock provider).
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_DEFAULT, Path::new(EMBEDDED_NAME))
            .expect("the embedded default config is valid")
    }

    /// Parses and validates TOML text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // Multi-line on purpose: the parser's caret diagram shows where the error is,
            // at start-up and in a rejected reload's reply.
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: String, rule: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            rule,
        };
        let d = &self.daemon;
        let positive = [
            ("max_connections", d.max_connections as u64),
            (
                "max_streams_per_connection",
                d.max_streams_per_connection as u64,
            ),
            ("max_frame_bytes", u64::from(d.max_frame_bytes)),
            ("connection_queue_frames", d.connection_queue_frames as u64),
            ("slow_client_timeout_seconds", d.slow_client_timeout_seconds),
            ("max_provider_instances", d.max_provider_instances as u64),
            ("provider_idle_seconds", d.provider_idle_seconds),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(
                    format!("daemon.{key}"),
                    "must be > 0, got 0".into(),
                ));
            }
        }
        for (key, value) in positive
            .into_iter()
            .chain([("drain_timeout_seconds", d.drain_timeout_seconds)])
        {
            if value > MAX_COUNT_OR_SECONDS {
                return Err(invalid(
                    format!("daemon.{key}"),
                    format!("must be <= {MAX_COUNT_OR_SECONDS}, got {value}"),
                ));
            }
        }
        // Admission (issue 11): counts and seconds, each at least 1.
        let l = &self.limits;
        for (key, value) in [
            ("daemon.hello_timeout_seconds", d.hello_timeout_seconds),
            (
                "limits.max_connections_per_uid",
                l.max_connections_per_uid as u64,
            ),
            ("limits.max_streams_per_uid", l.max_streams_per_uid as u64),
            ("http.max_body_bytes", self.http.max_body_bytes),
            (
                "http.header_read_timeout_seconds",
                self.http.header_read_timeout_seconds,
            ),
            (
                "http.keep_alive_idle_seconds",
                self.http.keep_alive_idle_seconds,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key.into(), "must be > 0, got 0".into()));
            }
            if value > MAX_COUNT_OR_SECONDS {
                return Err(invalid(
                    key.into(),
                    format!("must be <= {MAX_COUNT_OR_SECONDS}, got {value}"),
                ));
            }
        }
        for (key, value, min, max) in self.ledger.bounds() {
            if !(min..=max).contains(&value) {
                return Err(invalid(
                    format!("ledger.{key}"),
                    format!("must be {min} to {max}, got {value}"),
                ));
            }
        }
        usage::check_ledger_path(&self.ledger.path)
            .map_err(|rule| invalid("ledger.path".into(), rule))?;
        for (kind, table) in self.limits.quota_tables() {
            for (name, quota) in table {
                usage::check_quota(kind, name, quota).map_err(|(k, rule)| invalid(k, rule))?;
            }
        }
        for (target, price) in &self.prices {
            usage::check_price(target, price, |p| self.providers.contains_key(p))
                .map_err(|(k, rule)| invalid(k, rule))?;
        }
        if let Some(listen) = &self.http.listen {
            loopback_address(listen).map_err(|rule| invalid("http.listen".into(), rule))?;
        }
        if d.max_frame_bytes < 1024 {
            return Err(invalid(
                "daemon.max_frame_bytes".into(),
                format!("must be >= 1024, got {}", d.max_frame_bytes),
            ));
        }
        if let Some(default) = &d.default_provider {
            if !self.providers.contains_key(default) {
                return Err(invalid(
                    "daemon.default_provider".into(),
                    format!(
                        "names provider '{default}', which is not configured (configured: {})",
                        self.provider_ids()
                    ),
                ));
            }
        }
        for (alias, targets) in &self.aliases {
            if targets.is_empty() {
                return Err(invalid(
                    format!("aliases.{alias}"),
                    "must name at least one target".into(),
                ));
            }
            for (i, target) in targets.iter().enumerate() {
                self.check_target(target, &format!("aliases.{alias}[{i}]"), path)?;
            }
        }
        for (id, p) in &self.providers {
            let key = |field: &str| format!("providers.{id}.{field}");
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    format!("providers.{id}"),
                    "id must be letters, digits, '-' or '_'".into(),
                ));
            }
            for (field, value) in [
                ("timeout_seconds", p.timeout_seconds),
                ("connect_timeout_seconds", p.connect_timeout_seconds),
                ("total_timeout_seconds", p.total_timeout_seconds),
            ] {
                if value < 1 {
                    return Err(invalid(key(field), format!("must be >= 1, got {value}")));
                }
                if value > MAX_COUNT_OR_SECONDS {
                    return Err(invalid(
                        key(field),
                        format!("must be <= {MAX_COUNT_OR_SECONDS}, got {value}"),
                    ));
                }
            }
            if p.max_tokens == 0 {
                return Err(invalid(key("max_tokens"), "must be > 0, got 0".into()));
            }
            if let Some(url) = &p.base_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        key("base_url"),
                        format!("must start with http:// or https://, got '{url}'"),
                    ));
                }
            }
            if let Some(model) = &p.default_model {
                if model.trim().is_empty() {
                    return Err(invalid(key("default_model"), "must not be empty".into()));
                }
            }
            for (i, target) in p.fallbacks.iter().enumerate() {
                self.check_target(target, &key(&format!("fallbacks[{i}]")), path)?;
            }
            for (i, param) in p.allow_additional_params.iter().enumerate() {
                // The same folding as the refusal's (case, `-` and `_` ignored), so no
                // spelling of these slips through either.
                let folded: String = param
                    .chars()
                    .filter(|c| !matches!(c, '-' | '_'))
                    .flat_map(char::to_lowercase)
                    .collect();
                if folded.is_empty() {
                    return Err(invalid(
                        key(&format!("allow_additional_params[{i}]")),
                        "must name a parameter, got an empty string".into(),
                    ));
                }
                if ["model", "stream", "messages"].contains(&folded.as_str()) {
                    return Err(invalid(
                        key(&format!("allow_additional_params[{i}]")),
                        format!("'{param}' cannot be allowed: provd sets the request's model, stream and messages itself"),
                    ));
                }
            }
            // Each type checks its own options (the provider table, through
            // `TypeRules`): a typo in a type that takes none must not pass silently either.
            p.kind
                .check_options(&p.options)
                .map_err(|(field, rule)| invalid(key(&format!("options.{field}")), rule))?;
        }
        Ok(())
    }

    fn check_target(&self, target: &str, key: &str, path: &Path) -> Result<(), ConfigError> {
        let t = Target::parse(target);
        if !self.providers.contains_key(&t.provider) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: key.to_owned(),
                rule: format!(
                    "names provider '{}', which is not configured (configured: {})",
                    t.provider,
                    self.provider_ids()
                ),
            });
        }
        Ok(())
    }

    /// Whether the configuration itself names `model` of provider `id`: its
    /// `default_model`, a provider's fallback target or an alias target. Such models are
    /// the administrator's choice, so few; the instance cache keeps them outside its cap.
    pub fn names_model(&self, id: &str, model: &str) -> bool {
        let Some(provider) = self.providers.get(id) else {
            return false;
        };
        if provider.default_model.as_deref() == Some(model) {
            return true;
        }
        let fallbacks = self.providers.values().flat_map(|p| &p.fallbacks);
        fallbacks
            .chain(self.aliases.values().flatten())
            .map(|t| Target::parse(t))
            .any(|t| t.provider == id && t.model.as_deref() == Some(model))
    }

    /// The default provider: the configured one, else the only one, else none.
    pub fn default_provider(&self) -> Option<&str> {
        match &self.daemon.default_provider {
            Some(p) => Some(p),
            None if self.providers.len() == 1 => self.providers.keys().next().map(String::as_str),
            None => None,
        }
    }

    fn provider_ids(&self) -> String {
        if self.providers.is_empty() {
            return "none".into();
        }
        self.providers
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The config file to use when `--config` is not given: `$PROVD_CONFIG`, else
/// `$XDG_CONFIG_HOME/provd/provd.toml` (or `~/.config/…`), else `/etc/provd/provd.toml`,
/// the first that exists; `None` means the embedded default.
pub fn find_config_file() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PROVD_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("provd").join("provd.toml"));
    user.into_iter()
        .chain([PathBuf::from("/etc/provd/provd.toml")])
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ProviderKind;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("t.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn embedded_default_serves_a_mock() {
        let c = Config::embedded();
        assert_eq!(c.default_provider(), Some("mock"));
        assert_eq!(c.providers["mock"].kind, ProviderKind::Mock);
        assert_eq!(c.providers["mock"].timeout_seconds, 30);
        assert_eq!(c.providers["mock"].retry_attempts, 3);
    }

    #[test]
    fn http_listen_takes_only_a_loopback_address_and_port() {
        let listen = |addr: &str| {
            Config::parse(
                &format!("[providers.a]\ntype = \"mock\"\n[http]\nlisten = \"{addr}\"\n"),
                Path::new("t.toml"),
            )
            .map(|c| c.http.listen)
            .map_err(|e| e.to_string())
        };
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1:0",
            "[::1]:8080",
            "127.0.0.2:80",
        ] {
            assert_eq!(listen(ok), Ok(Some(ok.to_owned())), "{ok}");
        }
        for refused in ["0.0.0.0:8080", "[::]:8080", "192.168.1.2:8080"] {
            let e = listen(refused).unwrap_err();
            assert!(e.contains("http.listen must be a loopback address"), "{e}");
            assert!(e.contains(refused), "{e}");
        }
        // A host name could resolve anywhere; no port means no listener.
        for refused in ["localhost:8080", "127.0.0.1", "example.com:80"] {
            let e = listen(refused).unwrap_err();
            assert!(
                e.contains("http.listen must be a loopback address and port"),
                "{e}"
            );
        }
        assert_eq!(Config::embedded().http.listen, None, "off by default");
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_rule() {
        assert_eq!(
            err("[providers.a]\ntype = \"mock\"\ntimeout_seconds = 0\n"),
            "config t.toml: providers.a.timeout_seconds must be >= 1, got 0"
        );
        assert_eq!(
            err("[providers.a]\ntype = \"mock\"\nmax_tokens = 0\n"),
            "config t.toml: providers.a.max_tokens must be > 0, got 0"
        );
        assert!(err("[daemon]\ndefault_provider = \"x\"\n")
            .contains("daemon.default_provider names provider 'x'"));
        assert!(
            err("[providers.a]\ntype = \"mock\"\nbase_url = \"ftp://x\"\n")
                .contains("providers.a.base_url must start with")
        );
    }

    #[test]
    fn the_ledger_budgets_and_prices_are_read_and_checked_naming_the_key() {
        let config = Config::parse(
            "[providers.a]\ntype = \"mock\"\n[ledger]\nretention_days = 7\n\
             [limits]\nmax_streams_per_uid = 3\n[limits.uid.alice]\ntokens_per_day = 100\n\
             [limits.group.1001]\nrequests_per_minute = 5\n[limits.token.ci]\ntokens_per_month = 9\n\
             [prices.\"a/big\"]\ninput_per_mtok = 3.0\noutput_per_mtok = 15\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(config.ledger.retention_days, 7);
        assert!(config.ledger.enabled, "on by default");
        assert_eq!(config.limits.max_streams_per_uid, 3);
        assert_eq!(config.limits.uid["alice"].tokens_per_day, Some(100));
        assert_eq!(config.limits.group["1001"].requests_per_minute, Some(5));
        assert_eq!(config.limits.token["ci"].tokens_per_month, Some(9));
        assert!(config.limits.has_quotas());
        assert!(!Config::embedded().limits.has_quotas());
        let price = config.prices["a/big"];
        assert_eq!(price.cost(1_000_000, 2_000_000), 33.0);

        let mock = "[providers.a]\ntype = \"mock\"\n";
        for (table, rule) in [
            (
                "[ledger]\nretention_days = 0",
                "ledger.retention_days must be 1 to 36500, got 0",
            ),
            (
                "[ledger]\nqueue_records = 99999999",
                "ledger.queue_records must be 1 to 1048576, got 99999999",
            ),
            (
                "[ledger]\npath = \"/tmp/usage.db\"",
                "ledger.path must be a relative path inside the state directory",
            ),
            (
                "[ledger]\npath = \"../usage.db\"",
                "ledger.path must be a relative path inside the state directory",
            ),
            (
                "[limits.uid.bob]\ntokens_per_day = 0",
                "limits.uid.bob.tokens_per_day must be > 0, got 0",
            ),
            ("[limits.group.staff]\n", "limits.group.staff sets no limit"),
            (
                "[prices.\"b/m\"]\ninput_per_mtok = 1\noutput_per_mtok = 1",
                "prices.\"b/m\" must name a configured provider",
            ),
            (
                "[prices.a]\ninput_per_mtok = 1\noutput_per_mtok = 1",
                "prices.\"a\" must be \"provider/model\"",
            ),
            (
                "[prices.\"a/m\"]\ninput_per_mtok = -1\noutput_per_mtok = 1",
                "prices.\"a/m\".input_per_mtok must be a finite number >= 0, got -1",
            ),
        ] {
            let e = err(&format!("{mock}{table}\n"));
            assert!(e.contains(rule), "{e}");
        }
        // A misspelt key is an error, not a silently absent limit.
        assert!(
            err(&format!("{mock}[limits.uid.bob]\ntokens_per_dya = 5\n"))
                .contains("tokens_per_dya")
        );
        assert!(err(&format!("{mock}[ledger]\nretention = 5\n")).contains("retention"));
    }

    #[test]
    fn counts_and_seconds_the_server_cannot_use_are_refused() {
        // Each of these used to be accepted, then panicked the daemon at start-up (a
        // semaphore of max_connections permits), in every connection (a queue of
        // connection_queue_frames) or in every generation (now + total_timeout_seconds
        // overflowed the clock).
        let huge = i64::MAX;
        for (table, key) in [
            ("daemon", "max_connections"),
            ("daemon", "max_streams_per_connection"),
            ("daemon", "connection_queue_frames"),
            ("daemon", "drain_timeout_seconds"),
            ("providers.a", "timeout_seconds"),
            ("providers.a", "connect_timeout_seconds"),
            ("providers.a", "total_timeout_seconds"),
        ] {
            let text = match table {
                "daemon" => format!("[providers.a]\ntype = \"mock\"\n[daemon]\n{key} = {huge}\n"),
                _ => format!("[providers.a]\ntype = \"mock\"\n{key} = {huge}\n"),
            };
            assert_eq!(
                err(&text),
                format!("config t.toml: {table}.{key} must be <= 4294967295, got {huge}")
            );
            let text = text.replace(&huge.to_string(), &MAX_COUNT_OR_SECONDS.to_string());
            let config = Config::parse(&text, Path::new("t.toml")).unwrap();
            let targets = [Target::parse("a")];
            // The largest accepted deadline is still on the clock.
            crate::resilience::deadline(&config, &targets);
        }
    }

    #[test]
    fn allow_additional_params_cannot_re_allow_what_provd_sets() {
        let c = Config::parse(
            "[providers.a]\ntype = \"mock\"\nallow_additional_params = [\"api_base\"]\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.providers["a"].allow_additional_params, ["api_base"]);
        for name in ["model", "Stream", "MESSAGES", "mes-sages"] {
            let text = format!(
                "[providers.a]\ntype = \"mock\"\nallow_additional_params = [\"x\", \"{name}\"]\n"
            );
            assert_eq!(
                err(&text),
                format!("config t.toml: providers.a.allow_additional_params[1] '{name}' cannot be allowed: provd sets the request's model, stream and messages itself")
            );
        }
        assert!(
            err("[providers.a]\ntype = \"mock\"\nallow_additional_params = [\"-\"]\n")
                .contains("allow_additional_params[0] must name a parameter")
        );
    }

    #[test]
    fn slow_client_timeout_and_worker_threads_are_read_and_checked() {
        let c = Config::parse(
            "[daemon]\nslow_client_timeout_seconds = 5\nworker_threads = 1\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            (
                c.daemon.slow_client_timeout_seconds,
                c.daemon.worker_threads
            ),
            (5, 1)
        );
        let default = Config::embedded().daemon;
        assert_eq!(
            (default.slow_client_timeout_seconds, default.worker_threads),
            (30, 0)
        );
        assert_eq!(
            err("[daemon]\nslow_client_timeout_seconds = 0\n"),
            "config t.toml: daemon.slow_client_timeout_seconds must be > 0, got 0"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_config_file_others_can_change_is_refused_naming_owner_mode_and_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("provd.toml");
        std::fs::write(&path, EMBEDDED_DEFAULT).unwrap();
        // Written as the suite writes its files (umask 022): accepted.
        Config::load(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = Config::load(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Untrusted { .. }), "{e}");
        let uid = crate::sys::effective_uid();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("config {}: refused", path.display()))
                && text.contains(&format!("owned by uid {uid}"))
                && text.contains("mode 664")
                && text.contains("chmod go-w"),
            "{text}"
        );
        // A link to it from a private place is no better: the real file is checked.
        let private = tempfile::tempdir().unwrap();
        let link = private.path().join("provd.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            Config::load(&link).unwrap_err(),
            ConfigError::Untrusted { .. }
        ));
        // Nor a private file in a directory others can write.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Config::load(&path).unwrap_err();
        assert!(e.to_string().contains("mode 777"), "{e}");
        // A missing file is still a read error.
        let e = Config::load(&private.path().join("nope.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }

    #[test]
    fn admission_limits_and_the_hello_deadline_are_read_and_checked() {
        let c = Config::parse(
            "[daemon]\nhello_timeout_seconds = 2\n[limits]\nmax_connections_per_uid = 3\nmax_streams_per_uid = 4\nadmin_reserved_connections = 0\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(c.daemon.hello_timeout_seconds, 2);
        assert_eq!(
            c.limits,
            LimitsConfig {
                max_connections_per_uid: 3,
                max_streams_per_uid: 4,
                admin_reserved_connections: 0,
                ..LimitsConfig::default()
            }
        );
        let default = Config::embedded();
        assert_eq!(default.daemon.hello_timeout_seconds, 5);
        assert_eq!(
            (
                default.limits.max_connections_per_uid,
                default.limits.max_streams_per_uid,
                default.limits.admin_reserved_connections
            ),
            (64, 256, 4)
        );
        assert_eq!(
            err("[daemon]\nhello_timeout_seconds = 0\n"),
            "config t.toml: daemon.hello_timeout_seconds must be > 0, got 0"
        );
        assert_eq!(
            err("[limits]\nmax_streams_per_uid = 0\n"),
            "config t.toml: limits.max_streams_per_uid must be > 0, got 0"
        );
        assert_eq!(
            err("[limits]\nmax_connections_per_uid = 4294967296\n"),
            "config t.toml: limits.max_connections_per_uid must be <= 4294967295, got 4294967296"
        );
        let small = Config::parse("[daemon]\nmax_connections = 2\n", Path::new("t.toml")).unwrap();
        assert_eq!(
            small.limits.reserved_for_admins(2),
            1,
            "one is left for others"
        );
        assert_eq!(default.limits.reserved_for_admins(1024), 4);
        assert!(err("[limits]\nmax_conections_per_uid = 1\n").contains("unknown field"));
    }

    #[test]
    fn instance_cache_bounds_are_read_and_checked() {
        let c = Config::parse(
            "[daemon]\nmax_provider_instances = 8\nprovider_idle_seconds = 1\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            (
                c.daemon.max_provider_instances,
                c.daemon.provider_idle_seconds
            ),
            (8, 1)
        );
        let default = Config::embedded().daemon;
        assert_eq!(
            (
                default.max_provider_instances,
                default.provider_idle_seconds
            ),
            (256, 600)
        );
        for key in ["max_provider_instances", "provider_idle_seconds"] {
            assert_eq!(
                err(&format!("[daemon]\n{key} = 0\n")),
                format!("config t.toml: daemon.{key} must be > 0, got 0")
            );
            assert_eq!(
                err(&format!("[daemon]\n{key} = 4294967296\n")),
                format!("config t.toml: daemon.{key} must be <= 4294967295, got 4294967296")
            );
        }
    }

    #[test]
    fn each_type_checks_its_own_options_naming_the_key() {
        assert_eq!(
            err("[providers.a]\ntype = \"anthropic\"\n[providers.a.options]\nanthropic_version = \"v1\"\n"),
            "config t.toml: providers.a.options.anthropic_version must be a date string such as \"2023-06-01\", got \"v1\""
        );
        assert!(
            err("[providers.a]\ntype = \"mock\"\n[providers.a.options]\nchunks = \"x\"\n")
                .starts_with("config t.toml: providers.a.options.chunks must be an integer")
        );
        assert_eq!(
            err("[providers.a]\ntype = \"gemini\"\n[providers.a.options]\nx = 1\n"),
            "config t.toml: providers.a.options.x is not an option of type gemini (it has none)"
        );
    }

    #[test]
    fn type_errors_and_unknown_keys_are_reported_with_their_place() {
        let e = err("[providers.a]\ntype = \"mock\"\nretry_attempts = -1\n");
        assert!(
            e.starts_with("config t.toml:") && e.contains("line 3"),
            "{e}"
        );
        let e = err("[providers.a]\ntype = \"mock\"\ntimeout_secs = 5\n");
        assert!(e.contains("unknown field `timeout_secs`"), "{e}");
        let e = err("[providers.a]\ntype = \"grok\"\n");
        assert!(e.contains("unknown variant `grok`"), "{e}");
    }
}
