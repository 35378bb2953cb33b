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
//!
//! On the loopback TCP listener the kernel cannot say who calls, so the token is the
//! identity: a request without a valid provd token is `unauthenticated` (401), and one
//! with a token acts as the token's owner, judged as that uid on the Unix socket would be
//! and narrowed by the token ([`AuthProvider::grant_for_token`]). A browser page can
//! reach 127.0.0.1 too: [`check_loopback_request`] refuses a `Host` that is not one of
//! the listener's own names (DNS rebinding) and any `Origin` that is not one of them.

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
    /// A TCP connection: no peer uid, the token alone says who calls.
    tcp: bool,
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
            tcp: false,
            decided: Mutex::new((policy, verdict)),
        }
    }

    /// A loopback TCP connection, whose requests each name their caller by a token.
    pub fn tcp(policy: Arc<AuthProvider>) -> Standing {
        Standing {
            peer: PeerIdentity::default(),
            tcp: true,
            decided: Mutex::new((
                policy,
                Err(WireError::new(
                    provd_client::ErrorCode::Unauthenticated,
                    "a TCP caller is named by its token",
                )),
            )),
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
        if self.tcp {
            let grant = policy.grant_for_token(provd_token(headers))?;
            return Ok(Caller { grant, policy });
        }
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

/// The names a loopback listener on `port` answers to, as `Host` carries them.
pub fn loopback_names(port: u16) -> Vec<String> {
    vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
}

/// Why a request to the loopback TCP listener is refused before it is routed, if it is:
/// its `Host` is not one of `names` (a page whose DNS name was rebound to 127.0.0.1
/// sends its own name), or it carries an `Origin` (a browser's cross-origin request) that
/// is not `http://` and one of them. A request without `Origin` is not a browser's.
pub fn check_loopback_request(headers: &HeaderMap, names: &[String]) -> Result<(), String> {
    let mut hosts = headers.get_all(http::header::HOST).into_iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().unwrap_or(""),
        _ => return Err("the request must carry exactly one Host header".into()),
    };
    if !names.iter().any(|n| n.eq_ignore_ascii_case(host)) {
        return Err(format!(
            "Host '{}' is not this listener's ({}): refused, as a page whose name was rebound to this address would send it",
            crate::server::connection::truncate(host, 128),
            names.join(", ")
        ));
    }
    for origin in headers.get_all(http::header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .is_some_and(|o| names.iter().any(|n| n.eq_ignore_ascii_case(o)));
        if !own {
            return Err(format!(
                "cross-origin requests are refused (Origin '{}'): provd answers no browser page",
                crate::server::connection::truncate(origin, 128)
            ));
        }
    }
    Ok(())
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

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_listeners_own_host_names_pass_and_any_other_host_is_refused() {
        let names = loopback_names(8080);
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
        ] {
            assert_eq!(
                check_loopback_request(&headers(&[("host", host)]), &names),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "localhost",
            "127.0.0.1",
        ] {
            let refused = check_loopback_request(&headers(&[("host", host)]), &names);
            assert!(refused.unwrap_err().contains("Host"), "{host}");
        }
        assert!(check_loopback_request(&HeaderMap::new(), &names).is_err());
        let two = headers(&[("host", "127.0.0.1:8080"), ("host", "evil.example")]);
        assert!(check_loopback_request(&two, &names).is_err());
    }

    #[test]
    fn only_an_origin_of_the_listeners_own_names_is_accepted() {
        let names = loopback_names(8080);
        let own = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://localhost:8080"),
        ]);
        assert_eq!(check_loopback_request(&own, &names), Ok(()));
        for origin in [
            "http://evil.example",
            "null",
            "https://127.0.0.1:8080",
            "http://127.0.0.1:9999",
            "http://localhost:8080.evil.example",
        ] {
            let cross = headers(&[("host", "127.0.0.1:8080"), ("origin", origin)]);
            let refused = check_loopback_request(&cross, &names);
            assert!(refused.unwrap_err().contains("cross-origin"), "{origin}");
        }
    }
}
