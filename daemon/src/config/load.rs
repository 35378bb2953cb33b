//! Which configuration a process uses and which socket it serves or talks to: the search
//! order for the configuration file, and the precedence of `--socket`/`$PROVD_SOCKET` over
//! `[daemon] socket` over the default path.
//!
//! It lives beside the configuration, not in the command line, because three parties
//! decide it the same way: `provd serve` at start-up, the daemon when it reloads
//! ([`crate::reload`]), and a client command looking for the daemon.

use std::path::{Path, PathBuf};

use super::{find_config_file, Config, ConfigError, EMBEDDED_NAME};

/// Loads `--config FILE`, else the first config file found, else the embedded default.
/// Returns the config and a description of where it came from, for the log.
pub fn load_config(explicit: Option<&Path>) -> Result<(Config, String), ConfigError> {
    let path = explicit.map(Path::to_owned).or_else(find_config_file);
    match path {
        Some(path) => Ok((Config::load(&path)?, path.display().to_string())),
        None => Ok((Config::embedded(), EMBEDDED_NAME.to_owned())),
    }
}

/// The socket to serve on: `--socket`/`$PROVD_SOCKET`, else the config's, else the default.
pub fn serve_socket(flag: Option<PathBuf>, config: &Config) -> PathBuf {
    flag.or_else(|| config.daemon.socket.clone())
        .unwrap_or_else(provd_client::default_socket_path)
}

/// Where the HTTP front door listens, or why it does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpSocket {
    /// On this path.
    At(PathBuf),
    /// Not opened, for this reason (logged at start-up).
    Off(String),
}

/// The HTTP socket for a daemon whose MessagePack socket is `msgpack` (`inherited`:
/// systemd passed it): `[http] socket` (a relative path is taken beside the MessagePack
/// socket), else `http.sock` beside the MessagePack socket. Not opened when `[http]
/// enabled = false`; and by default neither in the `/tmp/provd-UID` fallback directory
/// (the path a daemon without `$XDG_RUNTIME_DIR` falls back to, a name any local user
/// could have taken first, so a new socket is not added there unasked) nor beside a
/// socket systemd passed (its directory is systemd's; `provd.socket` passes the HTTP
/// socket too, or `[http] socket` names one).
pub fn http_socket(config: &Config, msgpack: &Path, inherited: bool) -> HttpSocket {
    if !config.http.enabled {
        return HttpSocket::Off("[http] enabled = false".into());
    }
    let dir = msgpack.parent().unwrap_or(Path::new("."));
    match &config.http.socket {
        Some(path) if path.is_absolute() => HttpSocket::At(path.clone()),
        Some(path) => HttpSocket::At(dir.join(path)),
        None if inherited => HttpSocket::Off(
            "the MessagePack socket came from systemd and [http] socket is not set".into(),
        ),
        None if is_tmp_fallback(dir) => HttpSocket::Off(format!(
            "the MessagePack socket is in the fallback directory {}; set [http] socket or $XDG_RUNTIME_DIR to open it",
            dir.display()
        )),
        None => HttpSocket::At(dir.join(HTTP_SOCKET_NAME)),
    }
}

/// The file name of the HTTP socket beside the MessagePack one.
pub const HTTP_SOCKET_NAME: &str = "http.sock";

/// Whether `dir` is `/tmp/provd-UID`, the default socket directory of a user without
/// `$XDG_RUNTIME_DIR` ([`provd_client::default_socket_path`]).
fn is_tmp_fallback(dir: &Path) -> bool {
    #[cfg(unix)]
    {
        dir == Path::new(&format!("/tmp/provd-{}", crate::sys::effective_uid()))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        false
    }
}

/// The socket a client command talks to: where `provd serve` would listen, so
/// `--socket`/`$PROVD_SOCKET`, else the configuration file's `daemon.socket`, else the
/// default path. A configuration that does not load counts as the embedded default: a
/// client needs only the socket, and the daemon reports a bad file itself.
pub fn client_socket(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        let config = load_config(None)
            .map(|(config, _)| config)
            .unwrap_or_else(|_| Config::embedded());
        serve_socket(None, &config)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_socket_is_beside_the_msgpack_one_but_not_in_the_tmp_fallback() {
        let embedded = Config::embedded();
        assert_eq!(
            http_socket(
                &embedded,
                Path::new("/run/user/1000/provd/provd.sock"),
                false
            ),
            HttpSocket::At("/run/user/1000/provd/http.sock".into())
        );
        let fallback = format!("/tmp/provd-{}/provd.sock", crate::sys::effective_uid());
        assert!(matches!(
            http_socket(&embedded, Path::new(&fallback), false),
            HttpSocket::Off(why) if why.contains("fallback directory")
        ));
        assert!(matches!(
            http_socket(&embedded, Path::new("/run/provd/provd.sock"), true),
            HttpSocket::Off(_)
        ));
        let named =
            Config::parse("[http]\nsocket = \"front.sock\"\n", Path::new("t.toml")).unwrap();
        assert_eq!(
            http_socket(&named, Path::new(&fallback), true),
            HttpSocket::At(Path::new(&fallback).with_file_name("front.sock"))
        );
        let off = Config::parse("[http]\nenabled = false\n", Path::new("t.toml")).unwrap();
        assert!(matches!(
            http_socket(&off, Path::new("/run/provd/provd.sock"), false),
            HttpSocket::Off(_)
        ));
    }

    #[test]
    fn the_socket_flag_beats_the_configuration_which_beats_the_default() {
        let config = Config::parse(
            "[daemon]\nsocket = \"/run/from-config.sock\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        assert_eq!(
            serve_socket(Some("/flag.sock".into()), &config),
            Path::new("/flag.sock")
        );
        assert_eq!(
            serve_socket(None, &config),
            Path::new("/run/from-config.sock")
        );
        assert_eq!(
            serve_socket(None, &Config::embedded()),
            provd_client::default_socket_path()
        );
        assert_eq!(
            client_socket(Some("/flag.sock".into())),
            Path::new("/flag.sock")
        );
    }
}
