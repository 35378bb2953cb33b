//! Who may ask what (the original design's `AuthProvider`).
//!
//! Identity comes from the kernel (the connection's peer uid and gid, plus the
//! supplementary groups of that uid), never from anything a client says. Policy comes
//! from the config's `[access]` table:
//!
//! ```toml
//! [access]
//! allow_uids = [1001]          # besides the daemon's own uid and root
//! allow_groups = ["llm"]
//! admin_uids = []              # admins: the daemon's uid and root, plus these
//! admin_groups = ["provd-admin"]
//! require_token = false        # true: non-admins must present a token in the hello
//!
//! [access.providers.anthropic] # only these (and admins) may use this provider
//! uids = [1001]
//! groups = ["research"]
//! ```
//!
//! A bearer token (`provd token create --providers a,b`) narrows a connection to its
//! providers; only its SHA-256 is stored, so the token file reveals nothing usable.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use provd_client::{ErrorCode, WireError};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::credentials::hex;
use crate::server::peer::PeerIdentity;

/// The `[access]` table.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Users allowed to connect, besides the daemon's own uid and root.
    pub allow_uids: Vec<u32>,
    /// Groups (names or gids) whose members may connect.
    pub allow_groups: Vec<String>,
    /// Users who may make admin requests, besides the daemon's uid and root.
    pub admin_uids: Vec<u32>,
    /// Groups whose members may make admin requests.
    pub admin_groups: Vec<String>,
    /// Whether non-admin connections must present a token.
    pub require_token: bool,
    /// Per-provider restrictions.
    pub providers: BTreeMap<String, ProviderAccess>,
}

/// Who may use one provider (admins always may).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderAccess {
    /// Users.
    pub uids: Vec<u32>,
    /// Groups (names or gids).
    pub groups: Vec<String>,
}

/// Which providers a connection may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Any (subject to per-provider restrictions).
    All,
    /// Only these, as a token granted.
    Only(BTreeSet<String>),
}

/// What a connection may do: decided when it connects (and narrowed by a token in its
/// hello), and decided again when the policy is reloaded; its token's state is checked on
/// every request ([`AuthProvider::grant_for`], [`TokenStore::current`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The peer.
    pub peer: PeerIdentity,
    /// Every group the peer's uid belongs to (primary and supplementary).
    pub groups: Vec<u32>,
    /// Whether admin requests are allowed.
    pub admin: bool,
    /// Whether the peer's uid is an admin's, whatever its token says: admin uids are
    /// not subject to the per-uid limits of `[limits]` and may use the connections
    /// reserved for admins.
    pub admin_uid: bool,
    /// Providers it may use.
    pub scope: Scope,
    /// The token's id, when one was presented.
    pub token: Option<String>,
}

/// The policy, resolved (group names to gids) once per configuration.
#[derive(Debug)]
pub struct AuthProvider {
    daemon_uid: u32,
    allow_uids: BTreeSet<u32>,
    allow_gids: BTreeSet<u32>,
    admin_uids: BTreeSet<u32>,
    admin_gids: BTreeSet<u32>,
    require_token: bool,
    providers: BTreeMap<String, (BTreeSet<u32>, BTreeSet<u32>)>,
    tokens: TokenStore,
}

fn denied(message: String) -> WireError {
    WireError::new(ErrorCode::PermissionDenied, message)
}

impl AuthProvider {
    /// Resolves a policy. `socket_gid` (the socket group) is allowed to connect, since
    /// the socket's mode already lets it. Unknown group names are an error naming them.
    pub fn new(
        config: &AccessConfig,
        socket_gid: Option<u32>,
        tokens: TokenStore,
    ) -> Result<AuthProvider, String> {
        let resolve = |names: &[String], key: &str| -> Result<BTreeSet<u32>, String> {
            names
                .iter()
                .map(|g| {
                    group_id(g)
                        .ok_or_else(|| format!("access.{key}: '{g}' is not a group on this host"))
                })
                .collect()
        };
        let mut allow_gids = resolve(&config.allow_groups, "allow_groups")?;
        allow_gids.extend(socket_gid);
        let mut providers = BTreeMap::new();
        for (id, p) in &config.providers {
            let gids = resolve(&p.groups, &format!("providers.{id}.groups"))?;
            providers.insert(id.clone(), (p.uids.iter().copied().collect(), gids));
        }
        Ok(AuthProvider {
            daemon_uid: effective_uid(),
            allow_uids: config.allow_uids.iter().copied().collect(),
            allow_gids,
            admin_uids: config.admin_uids.iter().copied().collect(),
            admin_gids: resolve(&config.admin_groups, "admin_groups")?,
            require_token: config.require_token,
            providers,
            tokens,
        })
    }

    /// The token store.
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    /// Decides whether `peer` may connect at all, and as what.
    pub fn authorize(&self, peer: PeerIdentity) -> Result<Grant, WireError> {
        // Without peer credentials (a named pipe) the OS ACL on the pipe is the policy.
        let Some(uid) = peer.uid else {
            return Ok(Grant {
                peer,
                groups: Vec::new(),
                admin: false,
                admin_uid: false,
                scope: Scope::All,
                token: None,
            });
        };
        let groups = peer_groups(uid, peer.gid);
        let in_any = |gids: &BTreeSet<u32>| groups.iter().any(|g| gids.contains(g));
        let admin = uid == 0
            || uid == self.daemon_uid
            || self.admin_uids.contains(&uid)
            || in_any(&self.admin_gids);
        let allowed = admin || self.allow_uids.contains(&uid) || in_any(&self.allow_gids);
        if !allowed {
            return Err(denied(format!(
                "uid {uid} may not use provd: add it to access.allow_uids or one of its groups to access.allow_groups"
            )));
        }
        Ok(Grant {
            peer,
            groups,
            admin,
            admin_uid: admin,
            scope: Scope::All,
            token: None,
        })
    }

    /// Applies the hello's token (or its absence) to a grant.
    pub fn apply_token(&self, grant: &mut Grant, token: Option<&str>) -> Result<(), WireError> {
        match token {
            Some(token) => {
                let record = self.tokens.verify(token)?;
                narrow(grant, record);
                Ok(())
            }
            None => self.check_tokenless(grant),
        }
    }

    /// The grant of a connection from `peer` that presented the token with id `token`
    /// (its id, checked when the connection said hello) under this policy, as things
    /// stand now: the peer may have lost its access, the token may have been revoked or
    /// have expired since. The token is looked up by id, never hashed again.
    pub fn grant_for(&self, peer: PeerIdentity, token: Option<&str>) -> Result<Grant, WireError> {
        let mut grant = self.authorize(peer)?;
        match token {
            Some(id) => narrow(&mut grant, self.tokens.current(id)?),
            None => self.check_tokenless(&grant)?,
        }
        Ok(grant)
    }

    /// The grant of a request that only its token identifies (loopback TCP, where the
    /// kernel cannot say who calls): the token's owner, judged by this policy as if it had
    /// connected to the Unix socket, narrowed by the token. No token, an unknown, revoked
    /// or expired one, or one without an owner is `unauthenticated`.
    pub fn grant_for_token(&self, token: Option<&str>) -> Result<Grant, WireError> {
        let Some(token) = token else {
            return Err(WireError::new(
                ErrorCode::Unauthenticated,
                "a provd token is required on the TCP listener: pass one as `Authorization: Bearer`, `x-api-key` or `api-key` (provd token create)",
            ));
        };
        let record = self.tokens.verify(token)?;
        let Some(owner) = record.owner_uid else {
            return Err(WireError::new(
                ErrorCode::Unauthenticated,
                format!("token {} has no owner (it predates token owners): it works on the Unix socket only; create a new one for the TCP listener", record.id),
            ));
        };
        let mut grant = self.authorize(PeerIdentity {
            uid: Some(owner),
            gid: None,
            pid: None,
        })?;
        narrow(&mut grant, record);
        Ok(grant)
    }

    fn check_tokenless(&self, grant: &Grant) -> Result<(), WireError> {
        if self.require_token && !grant.admin {
            return Err(WireError::new(
                ErrorCode::Unauthenticated,
                "this daemon requires a token (access.require_token): pass one in the hello",
            ));
        }
        Ok(())
    }

    /// Whether the connection may use `provider`.
    pub fn check_provider(&self, grant: &Grant, provider: &str) -> Result<(), WireError> {
        if let Scope::Only(allowed) = &grant.scope {
            if !allowed.contains(provider) {
                return Err(denied(format!(
                    "this connection's token does not cover provider '{provider}' (it covers: {})",
                    allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        if grant.admin {
            return Ok(());
        }
        if let Some((uids, gids)) = self.providers.get(provider) {
            let uid = grant.peer.uid.unwrap_or(u32::MAX);
            if !uids.contains(&uid) && !grant.groups.iter().any(|g| gids.contains(g)) {
                return Err(denied(format!(
                    "uid {uid} may not use provider '{provider}' (access.providers.{provider})"
                )));
            }
        }
        Ok(())
    }

    /// Whether the connection may make admin requests (`what` names the request).
    pub fn check_admin(&self, grant: &Grant, what: &str) -> Result<(), WireError> {
        if grant.admin {
            return Ok(());
        }
        Err(denied(format!(
            "{what} is an admin request: only the daemon's own user, root, access.admin_uids and access.admin_groups may make it"
        )))
    }
}

/// Narrows `grant` to what a token grants.
fn narrow(grant: &mut Grant, record: TokenRecord) {
    grant.scope = Scope::Only(record.providers.into_iter().collect());
    grant.token = Some(record.id);
    // A token narrows; it never makes anyone an admin.
    grant.admin = false;
}

#[cfg(unix)]
fn effective_uid() -> u32 {
    crate::sys::effective_uid()
}

#[cfg(not(unix))]
fn effective_uid() -> u32 {
    u32::MAX
}

#[cfg(unix)]
fn group_id(name: &str) -> Option<u32> {
    crate::sys::group_id(name)
}

#[cfg(not(unix))]
fn group_id(name: &str) -> Option<u32> {
    name.parse().ok()
}

#[cfg(unix)]
fn peer_groups(uid: u32, gid: Option<u32>) -> Vec<u32> {
    let mut groups = crate::sys::user_groups(uid, gid.unwrap_or(u32::MAX));
    groups.extend(gid);
    groups.sort_unstable();
    groups.dedup();
    groups
}

#[cfg(not(unix))]
fn peer_groups(_: u32, gid: Option<u32>) -> Vec<u32> {
    gid.into_iter().collect()
}

/// A stored token: its hash, never the token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// A short public id, to list and revoke it by.
    pub id: String,
    /// Hex SHA-256 of the token. Tokens carry 256 random bits, so a plain hash is enough:
    /// there is nothing to guess.
    pub sha256: String,
    /// Providers it grants.
    pub providers: Vec<String>,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Expiry, Unix seconds; `None` never expires.
    pub expires_at: Option<u64>,
    /// The uid a request made with it over loopback TCP acts as (`provd token create
    /// --for-user`, by default the admin who created it). Absent in tokens created before
    /// tokens had owners: those still narrow a Unix socket connection, whose uid the
    /// kernel gives, but are refused on TCP, where nothing else says who calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<u32>,
}

/// A token as handed out once: the secret and its public record.
pub struct NewToken {
    /// The token to give to the client. Shown once, never stored.
    pub token: crate::secret::Secret,
    /// Its record.
    pub record: TokenRecord,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("record", &self.record)
            .finish_non_exhaustive()
    }
}

/// Prefix that makes provd tokens recognisable in a secret scanner.
pub const TOKEN_PREFIX: &str = "provd_";

/// Token records in `<state_dir>/tokens.json` (0600), written atomically. In memory they
/// are kept by id, because every request of a connection that presented a token looks
/// its record up ([`TokenStore::current`]).
#[derive(Debug)]
pub struct TokenStore {
    path: Option<PathBuf>,
    records: Mutex<BTreeMap<String, TokenRecord>>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TokenStore {
    /// A store that keeps tokens in memory only (tests, a daemon without a state dir).
    pub fn in_memory() -> TokenStore {
        TokenStore {
            path: None,
            records: Mutex::new(BTreeMap::new()),
        }
    }

    /// Loads `<dir>/tokens.json`, or starts empty when it does not exist.
    pub fn load(dir: &Path) -> Result<TokenStore, String> {
        let path = dir.join("tokens.json");
        let records: Vec<TokenRecord> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a token file: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(TokenStore {
            path: Some(path),
            records: Mutex::new(records.into_iter().map(|r| (r.id.clone(), r)).collect()),
        })
    }

    /// Creates a token for `providers`, valid for `ttl_seconds` (forever when `None`),
    /// with no owner (usable on the Unix socket only).
    pub fn create(
        &self,
        providers: Vec<String>,
        ttl_seconds: Option<u64>,
    ) -> Result<NewToken, String> {
        self.create_owned(providers, ttl_seconds, None)
    }

    /// Creates a token as [`TokenStore::create`] does, owned by `owner_uid`: a request
    /// made with it over loopback TCP acts as that uid.
    pub fn create_owned(
        &self,
        providers: Vec<String>,
        ttl_seconds: Option<u64>,
        owner_uid: Option<u32>,
    ) -> Result<NewToken, String> {
        let rng = SystemRandom::new();
        let mut secret = [0u8; 32];
        let mut id = [0u8; 6];
        rng.fill(&mut secret)
            .map_err(|_| "the system RNG failed".to_owned())?;
        rng.fill(&mut id)
            .map_err(|_| "the system RNG failed".to_owned())?;
        // The secret's hex is wiped once it is in the token.
        let secret_hex = zeroize::Zeroizing::new(hex(&secret));
        let token = crate::secret::Secret::new(format!("{TOKEN_PREFIX}{}", secret_hex.as_str()));
        let created_at = now();
        let record = TokenRecord {
            id: hex(&id),
            sha256: hex(digest(&SHA256, token.expose().as_bytes()).as_ref()),
            providers,
            created_at,
            expires_at: ttl_seconds.map(|t| created_at.saturating_add(t)),
            owner_uid,
        };
        let mut records = self.records.lock().expect("token lock poisoned");
        records.insert(record.id.clone(), record.clone());
        if let Err(e) = self.save(&records) {
            records.remove(&record.id);
            return Err(e);
        }
        Ok(NewToken { token, record })
    }

    /// The record of a valid token, or `unauthenticated`.
    pub fn verify(&self, token: &str) -> Result<TokenRecord, WireError> {
        let hash = hex(digest(&SHA256, token.as_bytes()).as_ref());
        let records = self.records.lock().expect("token lock poisoned");
        let record = records.values().find(|r| r.sha256 == hash).ok_or_else(|| {
            WireError::new(ErrorCode::Unauthenticated, "unknown or revoked token")
        })?;
        unexpired(record, now())?;
        Ok(record.clone())
    }

    /// The record of the token with id `id` as it stands now: `unauthenticated` once it
    /// was revoked or has expired. What every request of a connection that presented a
    /// token is checked against: a map lookup, no hashing.
    pub fn current(&self, id: &str) -> Result<TokenRecord, WireError> {
        self.current_at(id, now())
    }

    /// [`TokenStore::current`] at the time `now` (Unix seconds).
    pub fn current_at(&self, id: &str, now: u64) -> Result<TokenRecord, WireError> {
        let records = self.records.lock().expect("token lock poisoned");
        let record = records.get(id).ok_or_else(|| {
            WireError::new(
                ErrorCode::Unauthenticated,
                format!("token {id} was revoked (provd token revoke): this connection may no longer make requests; reconnect with a valid token"),
            )
        })?;
        unexpired(record, now)?;
        Ok(record.clone())
    }

    /// Every record (hashes included; they are not secrets), oldest first.
    pub fn list(&self) -> Vec<TokenRecord> {
        Self::in_order(&self.records.lock().expect("token lock poisoned"))
    }

    fn in_order(records: &BTreeMap<String, TokenRecord>) -> Vec<TokenRecord> {
        let mut list: Vec<TokenRecord> = records.values().cloned().collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        list
    }

    /// Revokes a token by id.
    pub fn revoke(&self, id: &str) -> Result<bool, String> {
        let mut records = self.records.lock().expect("token lock poisoned");
        let Some(record) = records.remove(id) else {
            return Ok(false);
        };
        if let Err(e) = self.save(&records) {
            records.insert(record.id.clone(), record);
            return Err(e);
        }
        Ok(true)
    }

    fn save(&self, records: &BTreeMap<String, TokenRecord>) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let bytes =
            serde_json::to_vec_pretty(&Self::in_order(records)).map_err(|e| e.to_string())?;
        write_atomically(dir, path, &bytes).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// `unauthenticated` when `record` has expired at `now`.
fn unexpired(record: &TokenRecord, now: u64) -> Result<(), WireError> {
    if record.expires_at.is_some_and(|at| at <= now) {
        return Err(WireError::new(
            ErrorCode::Unauthenticated,
            format!("token {} has expired: ask an admin for a new one (provd token create) and reconnect with it", record.id),
        ));
    }
    Ok(())
}

/// Temp file in the same directory (0600), fsync, rename, fsync of the directory: a
/// crash leaves the old file or the new one.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tokens.")
        .tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerIdentity {
        PeerIdentity {
            uid: Some(uid),
            gid: Some(gid),
            pid: Some(1),
        }
    }

    fn auth(config: &str) -> AuthProvider {
        let config: AccessConfig = toml::from_str(config).unwrap();
        AuthProvider::new(&config, None, TokenStore::in_memory()).unwrap()
    }

    #[test]
    fn the_daemon_user_and_root_are_admins_and_strangers_are_refused() {
        let a = auth("");
        let me = effective_uid();
        assert!(a.authorize(peer(me, 12345)).unwrap().admin);
        assert!(a.authorize(peer(0, 0)).unwrap().admin);
        let stranger = 4_000_000_001;
        if me != stranger {
            let err = a.authorize(peer(stranger, 4_000_000_001)).unwrap_err();
            assert_eq!(err.code, ErrorCode::PermissionDenied);
            assert!(err.message.contains("access.allow_uids"), "{}", err.message);
        }
    }

    #[test]
    fn allowed_users_may_connect_but_not_administer_or_use_restricted_providers() {
        let a = auth("allow_uids = [4000000001]\n[providers.secret]\nuids = [4000000002]\n");
        let grant = a.authorize(peer(4_000_000_001, 4_000_000_001)).unwrap();
        assert!(!grant.admin);
        assert_eq!(
            a.check_admin(&grant, "creds_set").unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        assert!(a.check_provider(&grant, "open").is_ok());
        assert_eq!(
            a.check_provider(&grant, "secret").unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        let allowed = a.authorize(peer(4_000_000_002, 1)).unwrap_err();
        assert_eq!(
            allowed.code,
            ErrorCode::PermissionDenied,
            "per-provider lists do not grant connecting"
        );
    }

    #[test]
    fn groups_grant_by_primary_gid_too() {
        let a = auth("allow_groups = [\"4000000005\"]\nadmin_groups = [\"4000000006\"]\n");
        assert!(
            !a.authorize(peer(4_000_000_001, 4_000_000_005))
                .unwrap()
                .admin
        );
        assert!(
            a.authorize(peer(4_000_000_001, 4_000_000_006))
                .unwrap()
                .admin
        );
    }

    #[test]
    fn tokens_narrow_scope_expire_and_revoke_and_only_their_hash_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::load(dir.path()).unwrap();
        let t = store.create(vec!["a".into()], None).unwrap();
        assert!(t.token.expose().starts_with(TOKEN_PREFIX));
        let file = std::fs::read_to_string(dir.path().join("tokens.json")).unwrap();
        assert!(
            !file.contains(t.token.expose()),
            "the token itself is never stored"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tokens.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let reloaded = TokenStore::load(dir.path()).unwrap();
        assert_eq!(reloaded.verify(t.token.expose()).unwrap().providers, ["a"]);

        let a = AuthProvider::new(&AccessConfig::default(), None, reloaded).unwrap();
        let mut grant = a.authorize(peer(effective_uid(), 0)).unwrap();
        a.apply_token(&mut grant, Some(t.token.expose())).unwrap();
        assert!(!grant.admin, "a token never makes an admin");
        assert!(a.check_provider(&grant, "a").is_ok());
        assert_eq!(
            a.check_provider(&grant, "b").unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        assert_eq!(
            a.apply_token(&mut grant, Some("provd_nope"))
                .unwrap_err()
                .code,
            ErrorCode::Unauthenticated
        );

        assert!(a.tokens().revoke(&t.record.id).unwrap());
        assert_eq!(
            a.tokens().verify(t.token.expose()).unwrap_err().code,
            ErrorCode::Unauthenticated
        );

        let expired = a.tokens().create(vec![], Some(0)).unwrap();
        let err = a.tokens().verify(expired.token.expose()).unwrap_err();
        assert!(err.message.contains("expired"), "{}", err.message);
    }

    #[test]
    fn a_token_alone_acts_as_its_owner_narrowed_by_its_scope() {
        let a = AuthProvider::new(
            &toml::from_str("allow_uids = [4000000001]").unwrap(),
            None,
            TokenStore::in_memory(),
        )
        .unwrap();
        let owned = a
            .tokens()
            .create_owned(vec!["a".into()], None, Some(4_000_000_001))
            .unwrap();
        let grant = a.grant_for_token(Some(owned.token.expose())).unwrap();
        assert_eq!(grant.peer.uid, Some(4_000_000_001));
        assert!(!grant.admin && !grant.admin_uid);
        assert!(a.check_provider(&grant, "a").is_ok());
        assert!(a.check_provider(&grant, "b").is_err());

        let stranger = a
            .tokens()
            .create_owned(vec!["a".into()], None, Some(4_000_000_002))
            .unwrap();
        let err = a
            .grant_for_token(Some(stranger.token.expose()))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PermissionDenied);
        assert!(err.message.contains("uid 4000000002"), "{}", err.message);

        let ownerless = a.tokens().create(vec!["a".into()], None).unwrap();
        let err = a
            .grant_for_token(Some(ownerless.token.expose()))
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Unauthenticated);
        assert!(err.message.contains("no owner"), "{}", err.message);
        for missing in [None, Some("provd_nope")] {
            assert_eq!(
                a.grant_for_token(missing).unwrap_err().code,
                ErrorCode::Unauthenticated
            );
        }
    }

    #[test]
    fn a_token_file_from_before_owners_loads_with_no_owner_and_a_new_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("tokens.json"),
            r#"[{"id":"abc","sha256":"00","providers":["a"],"created_at":1,"expires_at":null}]"#,
        )
        .unwrap();
        let store = TokenStore::load(dir.path()).unwrap();
        assert_eq!(store.list()[0].owner_uid, None);
        store.create_owned(vec!["a".into()], None, Some(7)).unwrap();
        let reloaded = TokenStore::load(dir.path()).unwrap();
        let owners: Vec<_> = reloaded.list().iter().map(|r| r.owner_uid).collect();
        assert!(
            owners.contains(&Some(7)) && owners.contains(&None),
            "{owners:?}"
        );
    }

    #[test]
    fn a_grant_decided_again_sees_revocation_expiry_and_the_new_policy() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::load(dir.path()).unwrap();
        let t = store.create(vec!["a".into()], Some(60)).unwrap();
        let id = t.record.id.clone();
        let a = AuthProvider::new(
            &toml::from_str("allow_uids = [4000000001]").unwrap(),
            None,
            store,
        )
        .unwrap();
        let user = peer(4_000_000_001, 4_000_000_001);
        let mut grant = a.authorize(user).unwrap();
        a.apply_token(&mut grant, Some(t.token.expose())).unwrap();
        assert_eq!(a.grant_for(user, Some(&id)).unwrap(), grant);
        // Expiry, at a time past it, without waiting for it.
        let expires = t.record.expires_at.unwrap();
        assert!(a.tokens().current_at(&id, expires - 1).is_ok());
        let e = a.tokens().current_at(&id, expires).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        assert!(e.message.contains("has expired"), "{}", e.message);
        // Revocation, by id.
        assert!(a.tokens().revoke(&id).unwrap());
        let e = a.grant_for(user, Some(&id)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        assert!(e.message.contains("was revoked"), "{}", e.message);
        // A policy that no longer allows the uid.
        let stricter = auth("");
        assert_eq!(
            stricter.grant_for(user, None).unwrap_err().code,
            ErrorCode::PermissionDenied
        );
        // A policy that now requires a token of a connection that gave none.
        let tokens_only = auth("allow_uids = [4000000001]\nrequire_token = true\n");
        assert_eq!(
            tokens_only.grant_for(user, None).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
    }

    #[test]
    fn require_token_refuses_non_admins_without_one() {
        let a = auth("allow_uids = [4000000001]\nrequire_token = true\n");
        let mut grant = a.authorize(peer(4_000_000_001, 4_000_000_001)).unwrap();
        assert_eq!(
            a.apply_token(&mut grant, None).unwrap_err().code,
            ErrorCode::Unauthenticated
        );
        let mut admin = a.authorize(peer(effective_uid(), 0)).unwrap();
        assert!(a.apply_token(&mut admin, None).is_ok());
    }
}
