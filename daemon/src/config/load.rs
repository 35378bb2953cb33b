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
