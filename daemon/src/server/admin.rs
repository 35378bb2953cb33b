//! Admin requests: credentials, tokens, key rotation, shutdown. Each is allowed only to
//! admins ([`crate::access::AuthProvider::check_admin`], checked by the connection
//! before the request's params are read; which methods those are is the protocol's
//! method table), and no reply ever carries a
//! credential: `creds_list` shows fingerprints, a token is shown once, at creation.

use std::sync::Arc;

use provd_client::message::{
    CredentialEntry, CredsImportParams, CredsImportResult, CredsList, Empty, KeyRotateParams,
    KeyRotateResult, ProviderFailure, TokenCreated, TokenInfo, TokenList,
};
use provd_client::{ErrorCode, ModelList, WireError};
use serde::Serialize;

use super::request::{encode_reply, Request};
use super::Daemon;
use crate::access::Grant;
use crate::secret::Secret;

/// The reply frame for a result (see [`encode_reply`]).
fn encoded<R: Serialize>(id: u32, result: &R) -> Result<Vec<u8>, WireError> {
    Ok(encode_reply(id, result))
}

fn failed(e: impl std::fmt::Display) -> WireError {
    WireError::new(ErrorCode::Internal, e.to_string())
}

fn unknown_provider(daemon: &Daemon, id: &str) -> Result<(), WireError> {
    if daemon.factory.config().providers.contains_key(id) {
        return Ok(());
    }
    Err(WireError::new(
        ErrorCode::NotFound,
        format!("no provider '{id}' is configured"),
    ))
}

/// Handles an admin request (the connection checked that the peer is an admin before
/// its params were read); returns the reply frame. `shutdown` is the daemon's stop
/// switch.
pub(super) async fn handle(
    daemon: &Arc<Daemon>,
    grant: &Grant,
    id: u32,
    request: Request,
    shutdown: &crate::shutdown::Shutdown,
) -> Result<Vec<u8>, WireError> {
    #[cfg(unix)]
    let vault = &daemon.vault;
    match request {
        Request::CredsSet(p) => {
            unknown_provider(daemon, &p.provider)?;
            let secret = Secret::new(p.secret);
            if secret.is_empty() {
                return Err(WireError::new(
                    ErrorCode::InvalidRequest,
                    "the key is empty",
                ));
            }
            #[cfg(unix)]
            {
                vault
                    .replace(&p.provider, &secret, "set")
                    .map_err(store_error)?;
                daemon.factory.retire_provider(&p.provider);
            }
            encoded(id, &Empty {})
        }
        Request::CredsList => {
            let mut list = CredsList::default();
            #[cfg(unix)]
            for entry in vault.list().map_err(store_error)? {
                match entry {
                    Ok(c) => list.credentials.push(CredentialEntry {
                        provider: c.id,
                        source: c.source,
                        fingerprint: c.fingerprint,
                        updated_at: c.updated,
                    }),
                    Err(e) => list.errors.push(ProviderFailure {
                        provider: String::new(),
                        error: WireError::new(ErrorCode::Internal, e.to_string()),
                    }),
                }
            }
            encoded(id, &list)
        }
        Request::CredsRemove(p) => {
            #[cfg(unix)]
            {
                if !vault.remove(&p.provider).map_err(store_error)? {
                    return Err(WireError::new(
                        ErrorCode::NotFound,
                        format!("no stored credential for '{}'", p.provider),
                    ));
                }
                daemon.factory.retire_provider(&p.provider);
            }
            encoded(id, &Empty {})
        }
        Request::CredsTest(p) => {
            unknown_provider(daemon, &p.provider)?;
            // The listing's own instance takes the key stored now; the test counts as a
            // request of the provider, so `status` shows what it found.
            let list: ModelList = daemon
                .factory
                .test_credential(&p.provider)
                .await
                .map_err(|e| e.to_wire())?;
            encoded(id, &list)
        }
        Request::CredsImport(p) => encoded(id, &import(daemon, p)?),
        Request::KeyRotate(p) => encoded(id, &rotate(daemon, p)?),
        Request::TokenCreate(p) => {
            if p.providers.is_empty() {
                return Err(WireError::new(
                    ErrorCode::InvalidRequest,
                    "a token must name at least one provider",
                ));
            }
            for provider in &p.providers {
                unknown_provider(daemon, provider)?;
            }
            let created = daemon
                .auth()
                .tokens()
                .create_owned(
                    p.providers,
                    p.ttl_seconds,
                    // The creating admin's, unless it names another.
                    p.owner_uid.or(grant.peer.uid),
                )
                .map_err(failed)?;
            encoded(
                id,
                &TokenCreated {
                    token: created.token.expose().to_owned(),
                    id: created.record.id,
                    expires_at: created.record.expires_at,
                },
            )
        }
        Request::TokenList => {
            let tokens = daemon
                .auth()
                .tokens()
                .list()
                .into_iter()
                .map(|r| TokenInfo {
                    id: r.id,
                    providers: r.providers,
                    created_at: r.created_at,
                    expires_at: r.expires_at,
                    owner_uid: r.owner_uid,
                })
                .collect();
            encoded(id, &TokenList { tokens })
        }
        Request::TokenRevoke(p) => {
            if !daemon.auth().tokens().revoke(&p.id).map_err(failed)? {
                return Err(WireError::new(
                    ErrorCode::NotFound,
                    format!("no token with id '{}'", p.id),
                ));
            }
            encoded(id, &Empty {})
        }
        Request::Shutdown => {
            tracing::info!(peer = %grant.peer, "stopping: shutdown requested");
            shutdown.stop();
            encoded(id, &Empty {})
        }
        // The connection sends only the admin variants here.
        other => Err(WireError::new(
            ErrorCode::InvalidRequest,
            format!("unknown admin method '{}'", other.method().name()),
        )),
    }
}

#[cfg(unix)]
fn import(daemon: &Daemon, p: CredsImportParams) -> Result<CredsImportResult, WireError> {
    // The whole `.env`, keys and all, decoded into a plain String: wiped once parsed,
    // whatever the outcome (the parsed keys are zeroizing secrets of their own).
    let contents = zeroize::Zeroizing::new(p.contents);
    let config = daemon.factory.config();
    let import = crate::credentials::dotenv::parse_dotenv(
        contents.as_bytes(),
        std::path::Path::new(&p.name),
        &config,
    )
    .map_err(|e| WireError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    drop(contents);
    let source = format!("import:{}", p.name);
    let mut result = CredsImportResult {
        unknown: import.unknown,
        skipped: import.skipped.iter().map(|s| format!("{s:?}")).collect(),
        ..Default::default()
    };
    for c in import.credentials {
        if daemon
            .vault
            .replace(&c.provider, &c.secret, &source)
            .map_err(store_error)?
        {
            daemon.factory.retire_provider(&c.provider);
        }
        result.sealed.push(c.provider);
    }
    Ok(result)
}

#[cfg(not(unix))]
fn import(_: &Daemon, p: CredsImportParams) -> Result<CredsImportResult, WireError> {
    Err(WireError::new(
        ErrorCode::Unavailable,
        format!(
            "cannot import {}: no credential store on this platform",
            p.name
        ),
    ))
}

#[cfg(unix)]
fn rotate(daemon: &Daemon, p: KeyRotateParams) -> Result<KeyRotateResult, WireError> {
    let key = crate::credentials::MasterKey::from_hex(p.new_key.trim().as_bytes(), "key_rotate")
        .map_err(|e| WireError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    let resealed = daemon.vault.rotate(key).map_err(store_error)?;
    tracing::warn!(
        resealed,
        "credentials re-sealed under a new master key: update the key source before the next start"
    );
    Ok(KeyRotateResult {
        resealed: resealed.try_into().unwrap_or(u32::MAX),
    })
}

#[cfg(not(unix))]
fn rotate(_: &Daemon, _: KeyRotateParams) -> Result<KeyRotateResult, WireError> {
    Err(WireError::new(
        ErrorCode::Unavailable,
        "no credential store on this platform",
    ))
}

#[cfg(unix)]
fn store_error(e: crate::credentials::VaultError) -> WireError {
    match e {
        // Unavailable, but not retryable: no retry brings a master key; the daemon has
        // to be restarted with one.
        crate::credentials::VaultError::Disabled => {
            let mut e = WireError::new(ErrorCode::Unavailable, e.to_string());
            e.retryable = false;
            e
        }
        _ => WireError::new(ErrorCode::Internal, e.to_string()),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn credential_requests_without_a_master_key_are_unavailable_and_not_retryable() {
        let e = store_error(crate::credentials::VaultError::Disabled);
        assert_eq!(e.code, ErrorCode::Unavailable);
        assert!(!e.retryable, "no retry brings a master key");
        assert!(e.message.contains("master key"), "{}", e.message);
    }
}
