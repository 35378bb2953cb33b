//! Who is calling over HTTP: the peer's uid as the kernel reports it, judged by the
//! access policy in force when each request arrives (a reload applies to the next
//! request), narrowed by a provd token when the request carries one.
//!
//! HTTP SDKs insist on sending a key (`Authorization: Bearer`, `x-api-key`, `api-key`).
//! A value that is a provd token (it starts with [`TOKEN_PREFIX`]) counts exactly as a
//! token in the MessagePack hello: verified, and the caller's providers narrowed to its
//! scope; a revoked or unknown one is `unauthenticated`. Any other value is ignored: over
//! the Unix socket the uid is the identity, and the SDK's placeholder key is not a secret
//! of ours.

use std::sync::{Arc, Mutex};

use http::HeaderMap;
use provd_client::WireError;

use crate::access::{AuthProvider, Grant, TOKEN_PREFIX};
use crate::server::peer::PeerIdentity;

/// A caller the policy admitted, with the policy that did.
#[derive(Clone, Debug)]
pub struct Caller {
    /// What the caller may do.
    pub grant: Grant,
    /// The policy that decided it (provider checks use the same one).
    pub policy: Arc<AuthProvider>,
}

/// What the policy says of a connection's peer: decided when it connects and again only
/// when a reload puts another policy in force (finding the peer's groups may ask the
/// name service, too slow to do per request), then narrowed by each request's token.
#[derive(Debug)]
pub struct Standing {
    peer: PeerIdentity,
    decided: Mutex<(Arc<AuthProvider>, Result<Grant, WireError>)>,
}

impl Standing {
    /// `verdict` is what `policy` said of `peer` when it connected.
    pub fn new(
        peer: PeerIdentity,
        policy: Arc<AuthProvider>,
        verdict: Result<Grant, WireError>,
    ) -> Standing {
        Standing {
            peer,
            decided: Mutex::new((policy, verdict)),
        }
    }

    /// The peer.
    pub fn peer(&self) -> PeerIdentity {
        self.peer
    }

    /// Who is calling in a request with these headers, under `policy`, the one in force.
    pub fn caller(
        &self,
        policy: Arc<AuthProvider>,
        headers: &HeaderMap,
    ) -> Result<Caller, WireError> {
        let mut grant = {
            let mut decided = self.decided.lock().expect("standing lock poisoned");
            if !Arc::ptr_eq(&decided.0, &policy) {
                *decided = (policy.clone(), policy.authorize(self.peer));
            }
            decided.1.clone()?
        };
        policy.apply_token(&mut grant, provd_token(headers))?;
        Ok(Caller { grant, policy })
    }
}

impl Caller {
    /// Whether the caller may use `provider`.
    pub fn check_provider(&self, provider: &str) -> Result<(), WireError> {
        self.policy.check_provider(&self.grant, provider)
    }
}

/// The provd token among the request's keys, if one of them is one.
fn provd_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get_all(http::header::AUTHORIZATION)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let keys = ["x-api-key", "api-key"]
        .into_iter()
        .flat_map(|name| headers.get_all(name).into_iter())
        .filter_map(|v| v.to_str().ok());
    bearer
        .chain(keys)
        .map(str::trim)
        .find(|v| v.starts_with(TOKEN_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_value_that_looks_like_a_provd_token_is_taken_from_any_key_header() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer sk-placeholder".parse().unwrap());
        assert_eq!(provd_token(&headers), None);
        headers.insert("x-api-key", "provd_abc".parse().unwrap());
        assert_eq!(provd_token(&headers), Some("provd_abc"));
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer provd_def".parse().unwrap());
        assert_eq!(provd_token(&headers), Some("provd_def"));
        let mut headers = HeaderMap::new();
        headers.insert("api-key", "provd_ghi".parse().unwrap());
        assert_eq!(provd_token(&headers), Some("provd_ghi"));
    }
}
