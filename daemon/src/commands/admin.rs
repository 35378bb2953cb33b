//! The commands that change the daemon, which it grants only to its administrators (the
//! daemon decides who they are): reload the configuration, manage the sealed keys, the
//! master key and the tokens, and stop the daemon.

use std::path::Path;
use std::time::Duration;

use provd_client::message;

use super::{connect, CommandError, TOKEN_ENV};

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
    let _: message::Empty = request(socket, message::method::CREDS_SET, &params).await?;
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
        request(socket, message::method::CREDS_LIST, &message::Empty {}).await?;
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
    let _: message::Empty = request(
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
    let list: provd_client::ModelList = request(
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
        request(socket, message::method::CREDS_IMPORT, &params).await?;
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
    let result: message::KeyRotateResult = request(
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
    for_user: Option<&str>,
) -> Result<(), CommandError> {
    let ttl_seconds = expires.map(parse_duration).transpose()?;
    let owner_uid = for_user.map(user_id).transpose()?;
    let created: message::TokenCreated = request(
        socket,
        message::method::TOKEN_CREATE,
        &message::TokenCreateParams {
            providers,
            ttl_seconds,
            owner_uid,
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

/// The uid of `--for-user`: a user name or a number.
fn user_id(user: &str) -> Result<u32, CommandError> {
    #[cfg(unix)]
    let uid = crate::sys::user_id(user);
    #[cfg(not(unix))]
    let uid = user.parse().ok();
    uid.ok_or_else(|| CommandError::Usage(format!("--for-user: no user named '{user}'")))
}

/// `provd token list`.
pub async fn token_list(socket: &Path, as_json: bool) -> Result<(), CommandError> {
    let list: message::TokenList =
        request(socket, message::method::TOKEN_LIST, &message::Empty {}).await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    for t in &list.tokens {
        let expires = t.expires_at.map_or_else(|| "never".to_owned(), utc_date);
        let owner = t.owner_uid.map_or_else(
            || "none (Unix socket only)".to_owned(),
            |uid| format!("uid {uid}"),
        );
        println!(
            "{:<14} expires {:<20} {}  owner {owner}",
            t.id,
            expires,
            t.providers.join(",")
        );
    }
    Ok(())
}

/// `provd token revoke ID`.
pub async fn token_revoke(socket: &Path, id: &str) -> Result<(), CommandError> {
    let _: message::Empty = request(
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
    let _: message::Empty = request(socket, message::method::SHUTDOWN, &message::Empty {}).await?;
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

/// Connects and makes one request (the admin commands' shape).
async fn request<P: serde::Serialize, R: serde::de::DeserializeOwned>(
    socket: &Path,
    method: &str,
    params: &P,
) -> Result<R, CommandError> {
    Ok(connect(socket).await?.request(method, params).await?)
}

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
    fn times_print_as_utc_rfc_3339_dates() {
        assert_eq!(utc_date(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_date(1_796_543_403), "2026-12-06T07:50:03Z");
        assert_eq!(utc_date(u64::MAX), u64::MAX.to_string());
    }
}
