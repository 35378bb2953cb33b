//! Talking to systemd without libsystemd: the readiness protocol (`sd_notify`), socket
//! activation (`sd_listen_fds`) and journald's log priorities. All three are small,
//! stable, documented wire contracts (see `sd_notify(3)`, `sd_listen_fds(3)`,
//! `sd-daemon(3)`), so they are written here by hand rather than linked.
//!
//! - [`Notifier`] sends `READY=1`, `STATUS=…`, `RELOADING=1`, `STOPPING=1` and
//!   `WATCHDOG=1` datagrams to `$NOTIFY_SOCKET` (a path, or an abstract name written
//!   `@name`). Without `$NOTIFY_SOCKET` every call is a no-op, so the daemon calls it
//!   unconditionally.
//! - [`take_listen_fds`] adopts the listening sockets systemd passes from fd 3 on when
//!   `$LISTEN_PID` is this process (the MessagePack socket, and the HTTP front door's,
//!   told apart by name or path), and removes the `LISTEN_*` variables.
//! - [`JournalPriority`] prefixes log lines with `<N>` when stderr is the journal, so
//!   `journalctl -p warning` filters provd's lines by their level.

use std::time::Duration;

/// The environment variable naming systemd's notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
/// How many descriptors systemd passed (from fd 3 on).
pub const LISTEN_FDS_ENV: &str = "LISTEN_FDS";
/// Which process the descriptors are for.
pub const LISTEN_PID_ENV: &str = "LISTEN_PID";
/// Names of the passed descriptors (`FileDescriptorName=`), colon-separated.
pub const LISTEN_FDNAMES_ENV: &str = "LISTEN_FDNAMES";
/// The watchdog period, in microseconds, when `WatchdogSec=` is set.
pub const WATCHDOG_USEC_ENV: &str = "WATCHDOG_USEC";
/// Which process the watchdog is for.
pub const WATCHDOG_PID_ENV: &str = "WATCHDOG_PID";
/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: i32 = 3;
/// How long one notification may wait for room in the receiver's queue: the manager reads
/// promptly, and a stuck one must not stall the daemon.
const NOTIFY_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether systemd (or anything speaking its protocols) started this process: it set
/// `$NOTIFY_SOCKET` or passed sockets. Such a process must not daemonize itself: the
/// service manager already runs it in the background and tracks its pid.
pub fn started_by_service_manager() -> bool {
    [NOTIFY_SOCKET_ENV, LISTEN_FDS_ENV]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// Why the sockets systemd passed cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// A `LISTEN_*` variable is not a number.
    #[error("socket activation: ${var} must be a number, got '{value}'")]
    Malformed {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// provd serves one MessagePack socket and at most one HTTP socket; more were passed.
    #[error("socket activation: provd takes one MessagePack socket and at most one HTTP socket (named `http`, or ending in /http.sock), systemd passed {0}")]
    TooMany(String),
    /// The passed descriptor is not what provd can serve.
    #[error("socket activation: {0}")]
    Unusable(std::io::Error),
}

/// What `LISTEN_PID`/`LISTEN_FDS` say, for this process.
#[derive(Debug, PartialEq, Eq)]
enum ListenFds {
    /// Not socket-activated (no variables, or they are for another process).
    None,
    /// This many descriptors from fd 3 on.
    Count(usize),
}

fn parse_listen_env(
    pid: Option<&str>,
    fds: Option<&str>,
    my_pid: u32,
) -> Result<ListenFds, ActivationError> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(ListenFds::None);
    };
    let pid: u32 = pid.trim().parse().map_err(|_| ActivationError::Malformed {
        var: LISTEN_PID_ENV,
        value: pid.to_owned(),
    })?;
    if pid != my_pid {
        // Inherited through a wrapper that did not unset them: meant for another process.
        return Ok(ListenFds::None);
    }
    let count: usize = fds.trim().parse().map_err(|_| ActivationError::Malformed {
        var: LISTEN_FDS_ENV,
        value: fds.to_owned(),
    })?;
    Ok(match count {
        0 => ListenFds::None,
        n => ListenFds::Count(n),
    })
}

/// Takes the listening socket systemd passed, if it passed one to this process, and
/// removes `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` from the environment (they
/// describe this process's descriptors and would mislead any child).
///
/// Call it before any other thread exists: changing the environment races with threads
/// reading it. `main` calls it before it builds the tokio runtime.
#[cfg(unix)]
pub fn take_listen_fds() -> Result<Inherited, ActivationError> {
    let var = |name| std::env::var(name).ok();
    let parsed = parse_listen_env(
        var(LISTEN_PID_ENV).as_deref(),
        var(LISTEN_FDS_ENV).as_deref(),
        std::process::id(),
    );
    let names = var(LISTEN_FDNAMES_ENV).unwrap_or_default();
    for name in [LISTEN_PID_ENV, LISTEN_FDS_ENV, LISTEN_FDNAMES_ENV] {
        std::env::remove_var(name);
    }
    let count = match parsed? {
        ListenFds::None => return Ok(Inherited::default()),
        ListenFds::Count(n) if n > MAX_LISTEN_FDS => {
            return Err(ActivationError::TooMany(n.to_string()))
        }
        ListenFds::Count(n) => n,
    };
    let mut names = names.split(':');
    let mut sockets = Vec::with_capacity(count);
    for fd in (LISTEN_FDS_START..).take(count) {
        let owned =
            crate::sys::adopt_listening_unix_socket(fd).map_err(ActivationError::Unusable)?;
        let name = names.next().unwrap_or_default();
        let listener = std::os::unix::net::UnixListener::from(owned);
        let path = listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(std::path::Path::to_owned));
        sockets.push((is_http_socket(name, path.as_deref()), listener.into()));
    }
    let mut inherited = Inherited::default();
    for (http, fd) in sockets {
        let slot = if http {
            &mut inherited.http
        } else {
            &mut inherited.main
        };
        if slot.replace(fd).is_some() {
            return Err(ActivationError::TooMany(format!(
                "two {} sockets",
                if http { "HTTP" } else { "MessagePack" }
            )));
        }
    }
    Ok(inherited)
}

/// The most sockets provd takes from systemd: its own and the HTTP front door's.
const MAX_LISTEN_FDS: usize = 2;

/// The `FileDescriptorName=` that marks the HTTP front door's socket.
pub const HTTP_FD_NAME: &str = "http";

/// The listening sockets systemd passed.
#[cfg(unix)]
#[derive(Debug, Default)]
pub struct Inherited {
    /// The MessagePack socket.
    pub main: Option<std::os::fd::OwnedFd>,
    /// The HTTP front door's.
    pub http: Option<std::os::fd::OwnedFd>,
}

/// Whether a passed socket is the HTTP front door's: named [`HTTP_FD_NAME`]
/// (`FileDescriptorName=http`), or, since one `.socket` unit gives all its sockets one
/// name, bound to a path whose file name is `http.sock` (`provd.socket`'s second
/// `ListenStream=`).
fn is_http_socket(name: &str, path: Option<&std::path::Path>) -> bool {
    name == HTTP_FD_NAME
        || path.and_then(std::path::Path::file_name)
            == Some(std::ffi::OsStr::new(crate::config::load::HTTP_SOCKET_NAME))
}

/// The watchdog ping interval: half of `$WATCHDOG_USEC` (as `sd_watchdog_enabled(3)`
/// advises), when the watchdog is enabled for this process.
pub fn watchdog_interval() -> Option<Duration> {
    parse_watchdog(
        std::env::var(WATCHDOG_USEC_ENV).ok().as_deref(),
        std::env::var(WATCHDOG_PID_ENV).ok().as_deref(),
        std::process::id(),
    )
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(my_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Where `$NOTIFY_SOCKET` points.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NotifyAddress {
    /// A filesystem socket.
    Path(std::path::PathBuf),
    /// A Linux abstract socket (`@name` in the variable).
    Abstract(Vec<u8>),
}

fn parse_notify_socket(value: &str) -> Option<NotifyAddress> {
    if let Some(name) = value.strip_prefix('@') {
        return Some(NotifyAddress::Abstract(name.as_bytes().to_vec()));
    }
    // Only absolute paths are valid; newer managers also use `vsock:` addresses, which
    // this host-local daemon does not speak.
    value
        .starts_with('/')
        .then(|| NotifyAddress::Path(value.into()))
}

/// Sends state changes to the service manager. Cheap to clone; a no-op when the daemon
/// was not started with `$NOTIFY_SOCKET`. Sending is best effort: a failure is logged at
/// debug level and never stops the daemon.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    target: Option<std::sync::Arc<NotifyTarget>>,
}

/// Notification is a Unix protocol; elsewhere a notifier is always disabled.
#[cfg(not(unix))]
#[derive(Debug)]
enum NotifyTarget {}

#[cfg(unix)]
#[derive(Debug)]
struct NotifyTarget {
    socket: std::os::unix::net::UnixDatagram,
    address: std::os::unix::net::SocketAddr,
    shown: String,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// The notifier `$NOTIFY_SOCKET` asks for (disabled when it is unset or unusable).
    pub fn from_env() -> Notifier {
        match std::env::var(NOTIFY_SOCKET_ENV) {
            Ok(value) if !value.is_empty() => Notifier::to(&value),
            _ => Notifier::disabled(),
        }
    }

    /// A notifier sending to `address` (`/path` or `@abstract`).
    #[cfg(unix)]
    pub fn to(address: &str) -> Notifier {
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let Some(parsed) = parse_notify_socket(address) else {
            tracing::warn!(
                notify_socket = address,
                "$NOTIFY_SOCKET is neither an absolute path nor @abstract; not notifying"
            );
            return Notifier::disabled();
        };
        let target = (|| -> std::io::Result<NotifyTarget> {
            let socket_address = match &parsed {
                NotifyAddress::Path(p) => SocketAddr::from_pathname(p)?,
                #[cfg(any(target_os = "linux", target_os = "android"))]
                NotifyAddress::Abstract(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    SocketAddr::from_abstract_name(name)?
                }
                #[cfg(not(any(target_os = "linux", target_os = "android")))]
                NotifyAddress::Abstract(_) => {
                    return Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
                }
            };
            let socket = UnixDatagram::unbound()?;
            socket.set_write_timeout(Some(NOTIFY_SEND_TIMEOUT))?;
            Ok(NotifyTarget {
                socket,
                address: socket_address,
                shown: address.to_owned(),
            })
        })();
        match target {
            Ok(t) => Notifier {
                target: Some(std::sync::Arc::new(t)),
            },
            Err(e) => {
                tracing::warn!(notify_socket = address, error = %e, "cannot use $NOTIFY_SOCKET; not notifying");
                Notifier::disabled()
            }
        }
    }

    /// A notifier sending to `address`; notification is Unix-only.
    #[cfg(not(unix))]
    pub fn to(_address: &str) -> Notifier {
        Notifier::disabled()
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends one notification: newline-separated `KEY=value` assignments.
    pub fn notify(&self, state: &str) {
        let Some(t) = &self.target else { return };
        #[cfg(unix)]
        match t.socket.send_to_addr(state.as_bytes(), &t.address) {
            Ok(_) => tracing::trace!(notify_socket = %t.shown, state, "notified"),
            Err(e) => {
                tracing::debug!(notify_socket = %t.shown, error = %e, state, "notification not delivered")
            }
        }
        #[cfg(not(unix))]
        match **t {}
    }

    /// Ready to serve (after start-up, and again after a reload).
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    /// A reload began; `READY=1` follows when it is over, whatever its outcome.
    pub fn reloading(&self) {
        #[cfg(unix)]
        let now = crate::sys::monotonic_usec();
        #[cfg(not(unix))]
        let now = 0;
        // MONOTONIC_USEC lets a Type=notify-reload manager match this message to the
        // reload it asked for; older managers ignore it.
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={now}\nSTATUS=reloading the configuration"
        ));
    }

    /// Shutdown began.
    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// A free-form status line (`systemctl status` shows it).
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }

    /// Keeps the watchdog from firing.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }
}

/// Whether stderr is the journal: `$JOURNAL_STREAM` is set (by systemd, to the
/// `device:inode` of the stream it connected) and names stderr, not an inherited value
/// from some parent whose stderr went elsewhere.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
            return false;
        };
        let meta = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .map(std::fs::File::from)
            .and_then(|f| f.metadata());
        match meta {
            Ok(m) => dev.parse() == Ok(m.dev()) && ino.parse() == Ok(m.ino()),
            Err(_) => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = value;
        false
    }
}

/// A log line formatter that prefixes each line with its syslog priority (`<3>` error,
/// `<4>` warning, `<6>` info, `<7>` debug and trace), which journald reads as the entry's
/// priority (`SyslogLevelPrefix=`, on by default) and strips from the message.
#[derive(Debug)]
pub struct JournalPriority<F>(pub F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalPriority<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_are_taken_only_when_meant_for_this_process() {
        assert_eq!(
            parse_listen_env(None, None, 7).unwrap(),
            ListenFds::None,
            "not socket-activated"
        );
        assert_eq!(
            parse_listen_env(Some("7"), Some("1"), 7).unwrap(),
            ListenFds::Count(1)
        );
        assert_eq!(
            parse_listen_env(Some("8"), Some("1"), 7).unwrap(),
            ListenFds::None,
            "for another process"
        );
        assert_eq!(
            parse_listen_env(Some("7"), Some("0"), 7).unwrap(),
            ListenFds::None
        );
        assert_eq!(
            parse_listen_env(Some("7"), None, 7).unwrap(),
            ListenFds::None
        );
        let e = parse_listen_env(Some("7"), Some("two"), 7).unwrap_err();
        assert_eq!(
            e.to_string(),
            "socket activation: $LISTEN_FDS must be a number, got 'two'"
        );
        assert!(parse_listen_env(Some("x"), Some("1"), 7).is_err());
    }

    #[test]
    fn the_http_socket_is_told_apart_by_its_name_or_its_file_name() {
        use std::path::Path;
        assert!(is_http_socket(
            "http",
            Some(Path::new("/run/provd/front.sock"))
        ));
        assert!(is_http_socket(
            "provd.socket",
            Some(Path::new("/run/provd/http.sock"))
        ));
        assert!(!is_http_socket(
            "provd.socket",
            Some(Path::new("/run/provd/provd.sock"))
        ));
        assert!(!is_http_socket("", None));
    }

    #[test]
    fn notify_socket_is_a_path_or_an_abstract_name() {
        assert_eq!(
            parse_notify_socket("/run/systemd/notify"),
            Some(NotifyAddress::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_notify_socket("@/org/freedesktop/systemd1/notify/123"),
            Some(NotifyAddress::Abstract(
                b"/org/freedesktop/systemd1/notify/123".to_vec()
            ))
        );
        assert_eq!(parse_notify_socket("relative/path"), None);
        assert_eq!(parse_notify_socket("vsock:2:1234"), None);
    }

    #[test]
    fn watchdog_pings_at_half_the_period_for_this_process_only() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(None, None, 7), None);
        assert_eq!(parse_watchdog(Some("soon"), None, 7), None);
    }

    #[cfg(unix)]
    #[test]
    fn notifications_arrive_as_datagrams_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(path.to_str().unwrap());
        assert!(notifier.is_enabled());
        notifier.ready("ready: 1 provider, 0 active streams");
        notifier.stopping("stopping");
        let mut buf = [0u8; 512];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"READY=1\nSTATUS=ready: 1 provider, 0 active streams"
        );
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=stopping");
        // Disabled: nothing is sent and nothing fails.
        Notifier::disabled().ready("x");
    }
}
