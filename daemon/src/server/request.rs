//! A request, parsed once from its frame: one variant per method of the protocol, with
//! its params decoded and checked. The connection looks a method up in the protocol's
//! one table ([`Method`], in `provd_client::message::method`), decides whether this
//! connection may send it, parses it here, and matches the result.
//!
//! The match in [`Request::parse`] is exhaustive over [`Method`] and the one in
//! [`Request::method`] over `Request`, so a method added to the table without a variant
//! here (or the other way round) does not compile; the refusal of an unknown method
//! lists the table's methods ([`unknown_method`]). As in mini-redis's
//! `Command::from_frame`, this is the only place that turns a name into a request.

use provd_client::frame::FrameError;
use provd_client::message::method::{Access, Method, SERVED};
use provd_client::message::{
    self, CancelParams, CredsImportParams, CredsSetParams, Empty, GenerateRequest, Hello,
    KeyRotateParams, ListModelsParams, ProviderParams, TokenCreateParams, TokenRevokeParams,
    UsageParams,
};
use provd_client::{ErrorCode, WireError};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A request with its params decoded: one variant per [`Method`]. Its `Debug` shows the
/// method only: params may carry a key or a token.
pub enum Request {
    /// `hello`: the first request on a connection.
    Hello(Hello),
    /// `ping`.
    Ping,
    /// `generate`, with a prompt or messages.
    Generate(Box<GenerateRequest>),
    /// `cancel`.
    Cancel(CancelParams),
    /// `list_providers`.
    ListProviders,
    /// `list_models`.
    ListModels(ListModelsParams),
    /// `status`.
    Status,
    /// `reload` (obeyed only from an admin).
    Reload,
    /// `usage`: a report from the usage ledger.
    Usage(UsageParams),
    /// Admin: `creds_set`.
    CredsSet(CredsSetParams),
    /// Admin: `creds_list`.
    CredsList,
    /// Admin: `creds_remove`.
    CredsRemove(ProviderParams),
    /// Admin: `creds_test`.
    CredsTest(ProviderParams),
    /// Admin: `creds_import`.
    CredsImport(CredsImportParams),
    /// Admin: `key_rotate`.
    KeyRotate(KeyRotateParams),
    /// Admin: `token_create`.
    TokenCreate(TokenCreateParams),
    /// Admin: `token_list`.
    TokenList,
    /// Admin: `token_revoke`.
    TokenRevoke(TokenRevokeParams),
    /// Admin: `shutdown`.
    Shutdown,
}

impl Request {
    /// Decodes the params of a request for `method`. The error is the reply to send:
    /// `invalid_request` naming the method (a `hello` that cannot be read is a
    /// `protocol_error`: nothing else can be understood on that connection).
    pub fn parse(method: Method, params: &[u8]) -> Result<Request, WireError> {
        use Method as M;
        let request = match method {
            M::Hello => Request::Hello(message::decode(params).map_err(|e| {
                WireError::new(ErrorCode::ProtocolError, format!("hello params: {e}"))
            })?),
            M::Ping => empty(method, params, Request::Ping)?,
            M::Generate => {
                let request: GenerateRequest = decode(method, params)?;
                if request.prompt.as_deref().is_none_or(str::is_empty)
                    && request.messages.is_empty()
                {
                    return Err(WireError::new(
                        ErrorCode::InvalidRequest,
                        "a generate request needs a prompt or messages",
                    ));
                }
                Request::Generate(Box::new(request))
            }
            M::Cancel => Request::Cancel(decode(method, params)?),
            M::ListProviders => empty(method, params, Request::ListProviders)?,
            M::ListModels => Request::ListModels(decode(method, params)?),
            M::Status => empty(method, params, Request::Status)?,
            M::Reload => empty(method, params, Request::Reload)?,
            M::Usage => Request::Usage(decode(method, params)?),
            M::CredsSet => Request::CredsSet(decode(method, params)?),
            M::CredsList => empty(method, params, Request::CredsList)?,
            M::CredsRemove => Request::CredsRemove(decode(method, params)?),
            M::CredsTest => Request::CredsTest(decode(method, params)?),
            M::CredsImport => Request::CredsImport(decode(method, params)?),
            M::KeyRotate => Request::KeyRotate(decode(method, params)?),
            M::TokenCreate => Request::TokenCreate(decode(method, params)?),
            M::TokenList => empty(method, params, Request::TokenList)?,
            M::TokenRevoke => Request::TokenRevoke(decode(method, params)?),
            M::Shutdown => empty(method, params, Request::Shutdown)?,
        };
        Ok(request)
    }

    /// The method this request was parsed for.
    pub fn method(&self) -> Method {
        match self {
            Request::Hello(_) => Method::Hello,
            Request::Ping => Method::Ping,
            Request::Generate(_) => Method::Generate,
            Request::Cancel(_) => Method::Cancel,
            Request::ListProviders => Method::ListProviders,
            Request::ListModels(_) => Method::ListModels,
            Request::Status => Method::Status,
            Request::Reload => Method::Reload,
            Request::Usage(_) => Method::Usage,
            Request::CredsSet(_) => Method::CredsSet,
            Request::CredsList => Method::CredsList,
            Request::CredsRemove(_) => Method::CredsRemove,
            Request::CredsTest(_) => Method::CredsTest,
            Request::CredsImport(_) => Method::CredsImport,
            Request::KeyRotate(_) => Method::KeyRotate,
            Request::TokenCreate(_) => Method::TokenCreate,
            Request::TokenList => Method::TokenList,
            Request::TokenRevoke(_) => Method::TokenRevoke,
            Request::Shutdown => Method::Shutdown,
        }
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Request").field(&self.method()).finish()
    }
}

/// The refusal of a method this daemon does not serve, listing those it does.
pub fn unknown_method(name: &str) -> WireError {
    WireError::new(
        ErrorCode::InvalidRequest,
        format!(
            "unknown method '{}' (this daemon serves: {})",
            super::connection::truncate(name, 64),
            SERVED.join(", ")
        ),
    )
}

/// A method's params of type `P`. The error texts differ by who may send the method,
/// as they always have: an admin method's error keeps the decoder's own prefix.
fn decode<P: DeserializeOwned>(method: Method, params: &[u8]) -> Result<P, WireError> {
    message::decode(params).map_err(|e| {
        let detail = match (method.access(), e) {
            (Access::Admin, e) => e.to_string(),
            (_, FrameError::Invalid(s)) => s,
            (_, other) => other.to_string(),
        };
        WireError::new(
            ErrorCode::InvalidRequest,
            format!("{} params: {detail}", method.name()),
        )
    })
}

/// A method whose params are an empty map (fields are ignored; anything else is not).
fn empty(method: Method, params: &[u8], request: Request) -> Result<Request, WireError> {
    decode::<Empty>(method, params).map(|_| request)
}

/// `result` as the reply to request `id`, or an `internal` error reply when it cannot be
/// encoded: the one place a reply is encoded, so no request is left without an answer.
pub fn encode_reply<R: Serialize>(id: u32, result: &R) -> Vec<u8> {
    message::encode_result(id, result).unwrap_or_else(|e| {
        message::encode_error(
            id,
            &WireError::new(ErrorCode::Internal, format!("cannot encode the reply: {e}")),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use provd_client::message::{Message, Role};

    fn named<T: Serialize>(params: &T) -> Vec<u8> {
        rmp_serde::to_vec_named(params).unwrap()
    }

    /// Params that a request of `method` accepts.
    fn valid_params(method: Method) -> Vec<u8> {
        match method {
            Method::Hello => named(&Hello {
                protocol_version: 1,
                client: String::new(),
                token: None,
            }),
            Method::Generate => named(&GenerateRequest::prompt("hi")),
            Method::Cancel => named(&CancelParams { id: 7 }),
            Method::ListModels => named(&ListModelsParams::default()),
            Method::Usage => named(&UsageParams::default()),
            Method::CredsSet => named(&CredsSetParams {
                provider: "p".into(),
                secret: "k".into(),
            }),
            Method::CredsRemove | Method::CredsTest => named(&ProviderParams {
                provider: "p".into(),
            }),
            Method::CredsImport => named(&CredsImportParams {
                name: ".env".into(),
                contents: String::new(),
            }),
            Method::KeyRotate => named(&KeyRotateParams {
                new_key: String::new(),
            }),
            Method::TokenCreate => named(&TokenCreateParams {
                providers: vec!["p".into()],
                ttl_seconds: None,
                owner_uid: None,
            }),
            Method::TokenRevoke => named(&TokenRevokeParams { id: "t".into() }),
            Method::Ping
            | Method::ListProviders
            | Method::Status
            | Method::Reload
            | Method::CredsList
            | Method::TokenList
            | Method::Shutdown => named(&Empty {}),
        }
    }

    #[test]
    fn every_method_parses_into_the_variant_that_names_it() {
        for &method in Method::ALL {
            let request = Request::parse(method, &valid_params(method))
                .unwrap_or_else(|e| panic!("{}: {e:?}", method.name()));
            assert_eq!(request.method(), method);
            assert_eq!(Method::from_name(request.method().name()), Some(method));
        }
    }

    #[test]
    fn the_unknown_method_refusal_lists_every_served_method_and_not_hello() {
        let e = unknown_method("format_disk");
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        let listed = e
            .message
            .strip_prefix("unknown method 'format_disk' (this daemon serves: ")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{}", e.message));
        let listed: Vec<&str> = listed.split(", ").collect();
        let served: Vec<&str> = Method::ALL
            .iter()
            .filter(|m| m.access() != Access::Handshake)
            .map(|m| m.name())
            .collect();
        assert_eq!(listed, served);
        assert!(!listed.contains(&"hello"));
    }

    #[test]
    fn bad_params_name_the_method_as_each_kind_always_did() {
        let not_a_map = rmp_serde::to_vec(&7u8).unwrap();
        let e = Request::parse(Method::Ping, &not_a_map).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.starts_with("ping params: "), "{}", e.message);
        assert!(!e.message.contains("invalid message"), "{}", e.message);
        let e = Request::parse(Method::TokenList, &not_a_map).unwrap_err();
        assert!(
            e.message
                .starts_with("token_list params: invalid message: "),
            "{}",
            e.message
        );
        let e = Request::parse(Method::Hello, &not_a_map).unwrap_err();
        assert_eq!(e.code, ErrorCode::ProtocolError);
        assert!(e.message.starts_with("hello params: "), "{}", e.message);
    }

    #[test]
    fn a_generate_request_without_a_prompt_or_messages_is_refused() {
        let empty = rmp_serde::to_vec_named(&GenerateRequest::default()).unwrap();
        let e = Request::parse(Method::Generate, &empty).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                ErrorCode::InvalidRequest,
                "a generate request needs a prompt or messages"
            )
        );
        let mut with_messages = GenerateRequest::default();
        with_messages.messages.push(Message::text(Role::User, "hi"));
        let bytes = rmp_serde::to_vec_named(&with_messages).unwrap();
        assert!(Request::parse(Method::Generate, &bytes).is_ok());
    }

    #[test]
    fn a_request_debug_shows_its_method_and_never_its_params() {
        let hello = Hello {
            protocol_version: 1,
            client: String::new(),
            token: Some("provd_tok_do-not-print".into()),
        };
        let request = Request::parse(Method::Hello, &named(&hello)).unwrap();
        assert_eq!(format!("{request:?}"), "Request(Hello)");
    }

    #[test]
    fn only_the_key_carrying_methods_are_wiped() {
        let wiped: Vec<&str> = Method::ALL
            .iter()
            .filter(|m| m.carries_secret())
            .map(|m| m.name())
            .collect();
        assert_eq!(wiped, ["creds_set", "creds_import", "key_rotate"]);
    }
}
