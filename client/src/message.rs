//! The messages: the msgpack-rpc-shaped envelope and every request, result and
//! notification payload.
//!
//! ```text
//! request       [0, id, method, params]
//! reply         [1, id, error | nil, result | nil]
//! notification  [2, method, params]
//! ```
//!
//! Payloads are maps with named fields. Unknown fields are ignored and optional fields
//! default, so either side can grow the protocol without breaking the other.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::frame::{FrameBuilder, FrameError};
pub use crate::usage::{UsageBy, UsageParams, UsageReport, UsageRow, MAX_USAGE_ROWS};

/// The protocol version this build speaks. Bumped only for incompatible changes; adding
/// optional fields or methods does not bump it.
pub const PROTOCOL_VERSION: u32 = 1;

/// Envelope type tags (the first element of every envelope).
pub mod kind {
    /// `[0, id, method, params]`
    pub const REQUEST: u64 = 0;
    /// `[1, id, error, result]`
    pub const REPLY: u64 = 1;
    /// `[2, method, params]`
    pub const NOTIFICATION: u64 = 2;
}

/// Request method names, and the one list of them.
///
/// Every method is one row of the table below: its name (a constant that clients send),
/// its [`Method`] variant, who may send it ([`Access`]) and whether its params carry a
/// secret. The daemon parses requests into a type with one variant per [`Method`] (an
/// exhaustive match, so a row without a handler does not compile), refuses an unknown
/// method with the list [`SERVED`], and PROTOCOL.md section 7 is checked against it.
/// Adding a method is adding a row.
pub mod method {
    /// Who may send a method, and when.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Access {
        /// Only as the first request on a connection (`hello`), never after.
        Handshake,
        /// Any connection allowed in; what it may reach is checked per request (`reload`
        /// is one of these: anyone may send it, only an admin's is obeyed).
        Common,
        /// Only admins (PROTOCOL.md section 7.8); checked before the params are read.
        Admin,
    }

    /// Defines the name constants, [`Method`] and its tables from one list of rows.
    macro_rules! methods {
        ($(
            $(#[$doc:meta])*
            $konst:ident = $name:literal => $variant:ident, $access:ident, secret: $secret:literal;
        )*) => {
            $( $(#[$doc])* pub const $konst: &str = $name; )*

            /// A request method of the protocol: one variant per row of the table.
            #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
            pub enum Method {
                $( #[doc = concat!("`", $name, "`")] $variant, )*
            }

            impl Method {
                /// Every method, in table order.
                pub const ALL: &'static [Method] = &[$(Method::$variant),*];

                /// The method's name on the wire.
                pub const fn name(self) -> &'static str {
                    match self { $(Method::$variant => $konst,)* }
                }

                /// The method named `name`, if this protocol has one.
                pub fn from_name(name: &str) -> Option<Method> {
                    match name {
                        $($name => Some(Method::$variant),)*
                        _ => None,
                    }
                }

                /// Who may send it.
                pub const fn access(self) -> Access {
                    match self { $(Method::$variant => Access::$access,)* }
                }

                /// Whether its params carry a secret (a key, a `.env`): the daemon wipes
                /// such a frame once handled, whatever the outcome.
                pub const fn carries_secret(self) -> bool {
                    match self { $(Method::$variant => $secret,)* }
                }
            }
        };
    }

    methods! {
        /// Must be the first request on a connection: [`super::Hello`] → [`super::HelloResult`].
        HELLO = "hello" => Hello, Handshake, secret: false;
        /// Liveness and round-trip probe: empty map → empty map.
        PING = "ping" => Ping, Common, secret: false;
        /// [`super::GenerateRequest`] → chunk notifications, then [`super::GenerateDone`].
        GENERATE = "generate" => Generate, Common, secret: false;
        /// [`super::CancelParams`] → empty map; the cancelled generation ends with `cancelled`.
        CANCEL = "cancel" => Cancel, Common, secret: false;
        /// Empty map → [`super::ProviderList`].
        LIST_PROVIDERS = "list_providers" => ListProviders, Common, secret: false;
        /// [`super::ListModelsParams`] → [`super::ModelList`].
        LIST_MODELS = "list_models" => ListModels, Common, secret: false;
        /// Empty map → [`super::StatusResult`].
        STATUS = "status" => Status, Common, secret: false;
        /// [`super::UsageParams`] → [`super::UsageReport`]: who used what, from the usage
        /// ledger. Anyone allowed in; a connection that is not an admin's sees only its
        /// own uid's generations.
        USAGE = "usage" => Usage, Common, secret: false;
        /// Admin: re-read the configuration and credentials. Empty map →
        /// [`super::ReloadResult`]; `permission_denied` for callers other than the daemon's
        /// own user and root.
        RELOAD = "reload" => Reload, Common, secret: false;
        /// Admin: [`super::CredsSetParams`] → empty map. Seals a provider's API key.
        CREDS_SET = "creds_set" => CredsSet, Admin, secret: true;
        /// Admin: empty map → [`super::CredsList`]. Never returns a key.
        CREDS_LIST = "creds_list" => CredsList, Admin, secret: false;
        /// Admin: [`super::ProviderParams`] → empty map.
        CREDS_REMOVE = "creds_remove" => CredsRemove, Admin, secret: false;
        /// Admin: [`super::ProviderParams`] → [`super::ModelList`]: a cheap authenticated call
        /// (list models) with the stored key.
        CREDS_TEST = "creds_test" => CredsTest, Admin, secret: false;
        /// Admin: [`super::CredsImportParams`] → [`super::CredsImportResult`].
        CREDS_IMPORT = "creds_import" => CredsImport, Admin, secret: true;
        /// Admin: [`super::KeyRotateParams`] → [`super::KeyRotateResult`].
        KEY_ROTATE = "key_rotate" => KeyRotate, Admin, secret: true;
        /// Admin: [`super::TokenCreateParams`] → [`super::TokenCreated`].
        TOKEN_CREATE = "token_create" => TokenCreate, Admin, secret: false;
        /// Admin: empty map → [`super::TokenList`].
        TOKEN_LIST = "token_list" => TokenList, Admin, secret: false;
        /// Admin: [`super::TokenRevokeParams`] → empty map.
        TOKEN_REVOKE = "token_revoke" => TokenRevoke, Admin, secret: false;
        /// Admin: empty map → empty map; the daemon then drains and stops.
        SHUTDOWN = "shutdown" => Shutdown, Admin, secret: false;
    }

    /// How many methods a greeted connection may send: all but the handshake.
    const SERVED_COUNT: usize = {
        let mut n = 0;
        let mut i = 0;
        while i < Method::ALL.len() {
            if !matches!(Method::ALL[i].access(), Access::Handshake) {
                n += 1;
            }
            i += 1;
        }
        n
    };

    /// Every method a greeted connection may send, in table order (common ones, then
    /// admin ones), as the daemon lists them when it refuses an unknown one. Derived
    /// from the table at compile time.
    pub const SERVED: [&str; SERVED_COUNT] = {
        let mut served = [""; SERVED_COUNT];
        let (mut i, mut n) = (0, 0);
        while i < Method::ALL.len() {
            if !matches!(Method::ALL[i].access(), Access::Handshake) {
                served[n] = Method::ALL[i].name();
                n += 1;
            }
            i += 1;
        }
        served
    };
}

/// Notification method names.
pub mod notification {
    /// One piece of a generation's text: [`super::Chunk`].
    pub const CHUNK: &str = "chunk";
    /// A connection-level error not tied to a request id (a frame that could not be
    /// parsed far enough to find its id, or a refused connection): [`crate::WireError`].
    pub const ERROR: &str = "error";
    /// Generation `id` is alive but its upstream is silent (a model thinking):
    /// [`super::Keepalive`]. Sent so that client-side timers don't misfire.
    pub const KEEPALIVE: &str = "keepalive";
}

/// One decoded envelope. Payloads stay as undecoded MessagePack slices until the receiver
/// knows which type to expect, so a field of the wrong type becomes an error *for that
/// request id* rather than an unreadable frame.
#[derive(Debug, PartialEq)]
pub enum Envelope<'a> {
    /// `[0, id, method, params]`
    Request {
        /// Client-chosen id, echoed in the reply.
        id: u32,
        /// Method name.
        method: &'a str,
        /// MessagePack of the params.
        params: &'a [u8],
    },
    /// `[1, id, error, result]`
    Reply {
        /// The request's id.
        id: u32,
        /// Either the error or the result.
        outcome: Result<&'a [u8], WireError>,
    },
    /// `[2, method, params]`
    Notification {
        /// Notification name.
        method: &'a str,
        /// MessagePack of the params.
        params: &'a [u8],
    },
}

impl<'a> Envelope<'a> {
    /// Parses a frame payload that [`crate::frame::validate`] has already accepted.
    pub fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, FrameError> {
        let mut rd = bytes;
        let len = rmp::decode::read_array_len(&mut rd)
            .map_err(|_| invalid("the envelope must be an array"))?;
        let tag: u64 =
            rmp::decode::read_int(&mut rd).map_err(|_| invalid("envelope[0] must be 0, 1 or 2"))?;
        match (tag, len) {
            (kind::REQUEST, 4) => {
                let id = read_id(&mut rd)?;
                let method = read_str(&mut rd, "envelope[2] (method) must be a string")?;
                Ok(Envelope::Request {
                    id,
                    method,
                    params: rd,
                })
            }
            (kind::REPLY, 4) => {
                let id = read_id(&mut rd)?;
                let outcome = if rd.first() == Some(&0xc0) {
                    let result = &rd[1..];
                    Ok(result)
                } else {
                    // The error is followed by the result (nil); decode just the error.
                    let mut de = rmp_serde::Deserializer::new(&mut rd);
                    let err = WireError::deserialize(&mut de)
                        .map_err(|e| invalid(format!("reply error is malformed: {e}")))?;
                    Err(err)
                };
                Ok(Envelope::Reply { id, outcome })
            }
            (kind::NOTIFICATION, 3) => {
                let method = read_str(&mut rd, "envelope[1] (method) must be a string")?;
                Ok(Envelope::Notification { method, params: rd })
            }
            (kind::REQUEST | kind::REPLY, n) | (kind::NOTIFICATION, n) => Err(invalid(format!(
                "envelope of type {tag} must have {} elements, got {n}",
                if tag == kind::NOTIFICATION { 3 } else { 4 }
            ))),
            (other, _) => Err(invalid(format!(
                "unknown envelope type {other} (expected 0, 1 or 2)"
            ))),
        }
    }
}

fn invalid(msg: impl Into<String>) -> FrameError {
    FrameError::Invalid(msg.into())
}

fn read_id(rd: &mut &[u8]) -> Result<u32, FrameError> {
    rmp::decode::read_int(rd)
        .map_err(|_| invalid("the request id must be an integer from 0 to 2^32-1"))
}

fn read_str<'a>(rd: &mut &'a [u8], what: &str) -> Result<&'a str, FrameError> {
    let (s, rest) = rmp::decode::read_str_from_slice(*rd).map_err(|_| invalid(what))?;
    *rd = rest;
    Ok(s)
}

/// Decodes a payload slice into its typed form.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(bytes).map_err(|e| invalid(e.to_string()))
}

/// Encodes `[0, id, method, params]`.
pub fn encode_request<T: Serialize + ?Sized>(
    id: u32,
    method: &str,
    params: &T,
) -> Result<Vec<u8>, FrameError> {
    Ok(FrameBuilder::envelope(4)
        .uint(kind::REQUEST)
        .uint(id.into())
        .str(method)
        .value(params)?
        .finish())
}

/// Encodes `[1, id, nil, result]`.
pub fn encode_result<T: Serialize + ?Sized>(id: u32, result: &T) -> Result<Vec<u8>, FrameError> {
    Ok(FrameBuilder::envelope(4)
        .uint(kind::REPLY)
        .uint(id.into())
        .nil()
        .value(result)?
        .finish())
}

/// Encodes `[1, id, error, nil]`.
pub fn encode_error(id: u32, error: &WireError) -> Vec<u8> {
    FrameBuilder::envelope(4)
        .uint(kind::REPLY)
        .uint(id.into())
        .value(error)
        .expect("WireError always encodes")
        .nil()
        .finish()
}

/// Encodes `[2, method, params]`.
pub fn encode_notification<T: Serialize + ?Sized>(
    method: &str,
    params: &T,
) -> Result<Vec<u8>, FrameError> {
    Ok(FrameBuilder::envelope(3)
        .uint(kind::NOTIFICATION)
        .str(method)
        .value(params)?
        .finish())
}

/// An empty map: the params of `ping`, `status`, `list_providers` and the result of
/// `ping` and `cancel`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// The params of an `error` notification: the [error object](WireError)'s fields and
/// `id`, which is nil for an error about the connection (a malformed frame, a full house,
/// a client that stopped reading) and names the request for an error about one request
/// that got no reply (a duplicate of a running request's id, PROTOCOL.md section 10).
///
/// The fields repeat [`WireError`]'s rather than `#[serde(flatten)]` it: the wire types
/// avoid `flatten`, which makes serde buffer the map and loses rmp-serde's integer and
/// nil handling; [`ErrorNotice::new`] and [`ErrorNotice::error`] convert between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorNotice {
    /// As [`WireError::code`].
    pub code: crate::error::ErrorCode,
    /// As [`WireError::message`].
    pub message: String,
    /// As [`WireError::retryable`].
    #[serde(default)]
    pub retryable: bool,
    /// As [`WireError::retry_after_ms`].
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// As [`WireError::chunks`].
    #[serde(default)]
    pub chunks: Option<u32>,
    /// As [`WireError::usage`].
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The request this error is about, or nil for the connection.
    #[serde(default)]
    pub id: Option<u32>,
}

impl ErrorNotice {
    /// A notice about the connection (`id` nil) or about request `id`.
    pub fn new(error: WireError, id: Option<u32>) -> ErrorNotice {
        ErrorNotice {
            code: error.code,
            message: error.message,
            retryable: error.retryable,
            retry_after_ms: error.retry_after_ms,
            chunks: error.chunks,
            usage: error.usage,
            id,
        }
    }

    /// The error object, without the id.
    pub fn error(&self) -> WireError {
        WireError {
            code: self.code,
            message: self.message.clone(),
            retryable: self.retryable,
            retry_after_ms: self.retry_after_ms,
            chunks: self.chunks,
            usage: self.usage,
        }
    }
}

/// `hello` params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the client speaks.
    pub protocol_version: u32,
    /// A name for logs (`provd-cli`, `libprovd`, `my-app`); nil or absent is "".
    #[serde(default, deserialize_with = "nil_as_default")]
    pub client: String,
    /// A bearer token (`provd token create`), which narrows the connection to its
    /// providers.
    #[serde(default)]
    pub token: Option<String>,
}

/// `hello` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HelloResult {
    /// The protocol version the daemon speaks.
    pub protocol_version: u32,
    /// The daemon's release.
    pub daemon_version: String,
    /// The largest frame the daemon accepts.
    pub max_frame_bytes: u32,
    /// How many generations this connection may run at once.
    #[serde(default)]
    pub max_streams: u32,
}

/// Who said a message in a conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions; most providers take it apart from the turns.
    System,
    /// The person or program asking.
    #[default]
    User,
    /// The model.
    Assistant,
    /// The result of a tool call ([`Message::tool_call_id`] says which).
    Tool,
}

/// One turn of a conversation. Beside its text, a user turn may carry images, an
/// assistant turn the tool calls it made (and the provider's state to send back with
/// them), and a tool turn the result of one call.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said (a tool turn: the tool's result).
    pub content: String,
    /// Images in a user turn, after its text.
    #[serde(
        default,
        deserialize_with = "nil_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub images: Vec<crate::content::Image>,
    /// The calls an assistant turn made, in order.
    #[serde(
        default,
        deserialize_with = "nil_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tool_calls: Vec<crate::content::ToolCall>,
    /// A tool turn: the id of the call this is the result of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// A tool turn: the call failed, and `content` says how.
    #[serde(
        default,
        deserialize_with = "nil_as_default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub is_error: bool,
    /// An assistant turn: the opaque state its provider asked to get back with it
    /// ([`GenerateDone::provider_state`], e.g. Anthropic's signed thinking). Sent as it
    /// came; dropped when the turn goes to another provider type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_state: Option<serde_json::Value>,
}

impl Message {
    /// A turn of plain text.
    pub fn text(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            ..Message::default()
        }
    }

    /// A tool turn: the result of call `tool_call_id`.
    pub fn tool_result(tool_call_id: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: Role::Tool,
            content: content.into(),
            tool_call_id: Some(tool_call_id.into()),
            ..Message::default()
        }
    }

    /// The assistant turn a generation produced, to send back in the next request: its
    /// text, its tool calls and its provider state.
    pub fn from_done(done: &GenerateDone, text: impl Into<String>) -> Message {
        Message {
            role: Role::Assistant,
            content: text.into(),
            tool_calls: done.tool_calls.clone(),
            provider_state: done.provider_state.clone(),
            ..Message::default()
        }
    }
}

/// `generate` params: what to generate, from which provider and model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// Configured provider id; the daemon's default provider when absent.
    #[serde(default)]
    pub provider: Option<String>,
    /// Model id; the provider's default model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// A single user prompt. Appended as the last user turn when `messages` is given too.
    #[serde(default)]
    pub prompt: Option<String>,
    /// The conversation so far.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub messages: Vec<Message>,
    /// System prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// Cap on generated tokens; the provider's configured `max_tokens` when absent.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    #[serde(default)]
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Stop sequences.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub stop: Vec<String>,
    /// Stream chunks as they arrive (default). When false the daemon sends no chunk
    /// notifications and the whole text comes in [`GenerateDone::text`].
    #[serde(default = "yes", deserialize_with = "nil_as_yes")]
    pub stream: bool,
    /// Provider-specific parameters, passed into the upstream request body.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub additional_params: BTreeMap<String, serde_json::Value>,
    /// Tools the model may call.
    #[serde(
        default,
        deserialize_with = "nil_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tools: Vec<crate::content::Tool>,
    /// Whether and which tool the model must call; `auto` when tools are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<crate::content::ToolChoice>,
    /// The shape of the answer: free text, a JSON object, JSON matching a schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<crate::content::ResponseFormat>,
    /// Ask for the model's reasoning, with an effort or budget, shown or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<crate::content::Reasoning>,
}

fn yes() -> bool {
    true
}

/// Clients in languages without a distinction between "absent" and "null" send nil for
/// fields they leave unset; every optional field accepts it.
fn nil_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn nil_as_yes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

impl GenerateRequest {
    /// A streaming request for one prompt on the default provider.
    pub fn prompt(prompt: impl Into<String>) -> Self {
        GenerateRequest {
            prompt: Some(prompt.into()),
            stream: true,
            ..GenerateRequest::default()
        }
    }
}

/// `creds_set` params. The key travels only over the daemon's private socket, and only
/// towards the daemon: no reply ever carries one.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CredsSetParams {
    /// The provider id.
    pub provider: String,
    /// The API key.
    pub secret: String,
}

impl std::fmt::Debug for CredsSetParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredsSetParams")
            .field("provider", &self.provider)
            .field("secret", &"***")
            .finish()
    }
}

/// Params naming one provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderParams {
    /// The provider id.
    pub provider: String,
}

/// One stored credential, described without its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CredentialEntry {
    /// The provider id.
    pub provider: String,
    /// Where it came from (`set`, `import:<file>`, `env-file:<file>`).
    pub source: String,
    /// A keyed fingerprint: tells two keys apart without revealing either.
    pub fingerprint: String,
    /// Last change, Unix seconds.
    pub updated_at: u64,
}

/// `creds_list` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CredsList {
    /// The stored credentials, by provider id.
    pub credentials: Vec<CredentialEntry>,
    /// Files that could not be read (damaged, under another key), with why.
    #[serde(default)]
    pub errors: Vec<ProviderFailure>,
}

/// `creds_import` params: a `.env` file's content, read by the client.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CredsImportParams {
    /// The file's name, for the credentials' source and for errors.
    pub name: String,
    /// Its content.
    pub contents: String,
}

impl std::fmt::Debug for CredsImportParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredsImportParams")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `creds_import` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CredsImportResult {
    /// Provider ids whose key was sealed.
    pub sealed: Vec<String>,
    /// Variables provd does not use.
    pub unknown: Vec<String>,
    /// Known variables not used, with why.
    pub skipped: Vec<String>,
}

/// `key_rotate` params.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotateParams {
    /// The new master key, 64+ hex digits.
    pub new_key: String,
}

impl std::fmt::Debug for KeyRotateParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyRotateParams { .. }")
    }
}

/// `key_rotate` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KeyRotateResult {
    /// Credentials re-sealed under the new key.
    pub resealed: u32,
}

/// `token_create` params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenCreateParams {
    /// Providers the token grants.
    pub providers: Vec<String>,
    /// Lifetime in seconds; forever when absent.
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// The uid a request made with the token over the loopback TCP listener acts as;
    /// the creating admin's uid when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<u32>,
}

/// `token_create` result: the token, shown this once.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token. Only its hash is kept by the daemon.
    pub token: String,
    /// Its public id.
    pub id: String,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub expires_at: Option<u64>,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A token, described without the token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id.
    pub id: String,
    /// Providers it grants.
    pub providers: Vec<String>,
    /// Creation, Unix seconds.
    pub created_at: u64,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub expires_at: Option<u64>,
    /// The uid it acts as on the HTTP loopback TCP listener; absent for a token created
    /// before tokens had owners (refused there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<u32>,
}

/// `token_list` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenList {
    /// The tokens.
    pub tokens: Vec<TokenInfo>,
}

/// `token_revoke` params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRevokeParams {
    /// The token's id.
    pub id: String,
}

/// `chunk` notification: one piece of text of generation `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Chunk {
    /// The generation's request id.
    pub id: u32,
    /// 0, 1, 2, … within the generation; lets a client prove nothing was lost.
    pub index: u32,
    /// The text.
    pub text: String,
    /// The model that produced it.
    pub model: String,
    /// When the daemon received it, in milliseconds since the Unix epoch.
    pub created_at: u64,
    /// A piece of a tool call (`text` is then empty). Sent only to requests with tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call: Option<crate::content::ToolCallDelta>,
    /// A piece of the model's reasoning (`text` is then empty). Sent only to requests
    /// whose `reasoning.show` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

/// `keepalive` notification: generation `id` is still running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keepalive {
    /// The generation's request id.
    pub id: u32,
}

/// Token counts, normalized across providers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt, system prompt and conversation.
    pub prompt_tokens: u32,
    /// Tokens generated, reasoning included on every provider.
    pub completion_tokens: u32,
    /// The sum.
    pub total_tokens: u32,
    /// Of `completion_tokens`, those spent reasoning, where the provider reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u32>,
}

impl Usage {
    /// Usage with the total filled in.
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            reasoning_tokens: None,
        }
    }

    /// This usage, saying how many of its completion tokens were reasoning.
    pub fn with_reasoning(self, reasoning_tokens: Option<u32>) -> Self {
        Usage {
            reasoning_tokens,
            ..self
        }
    }
}

/// Why a generation stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model finished, or hit a stop sequence.
    #[default]
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The provider's content filter stopped it.
    ContentFilter,
    /// The model called one or more tools ([`GenerateDone::tool_calls`]). Sent as
    /// `tool_calls`; `tool_use`, its name before tools were carried, is read as it.
    #[serde(rename = "tool_calls", alias = "tool_use")]
    ToolCalls,
    /// Anything else the provider reported.
    #[serde(other)]
    Other,
}

/// The terminal result of a `generate`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerateDone {
    /// Always true; lets a reader that only looks at one field tell the end apart.
    pub done: bool,
    /// The provider that answered.
    pub provider: String,
    /// The model that answered.
    pub model: String,
    /// Token usage.
    pub usage: Usage,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Chunk notifications sent for this generation.
    pub chunks: u32,
    /// The whole text, only for `stream: false`.
    #[serde(default)]
    pub text: Option<String>,
    /// The tool calls the model made, assembled, their arguments checked to parse.
    #[serde(
        default,
        deserialize_with = "nil_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tool_calls: Vec<crate::content::ToolCall>,
    /// The whole reasoning text, for `stream: false` with `reasoning.show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// State the provider needs back with this turn (see [`Message::provider_state`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_state: Option<serde_json::Value>,
}

/// `cancel` params.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelParams {
    /// The id of the generation to cancel.
    pub id: u32,
}

/// `list_models` params.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ListModelsParams {
    /// One provider's models; every provider's when absent.
    #[serde(default)]
    pub provider: Option<String>,
}

/// A model a provider offers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The id to pass as `model`.
    pub id: String,
    /// The provider id it belongs to.
    pub provider: String,
    /// A human name, when the provider has one.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Context window in tokens, when known.
    #[serde(default)]
    pub context_window: Option<u32>,
    /// Creation time in seconds since the Unix epoch, when known.
    #[serde(default)]
    pub created_at: Option<u64>,
    /// What requests to it may use beyond text: `tools`, `json_object`, `json_schema`,
    /// `reasoning`, `images`, `image_urls` (and `streaming`): its provider's
    /// configured `capabilities`, else its provider type's.
    #[serde(
        default,
        deserialize_with = "nil_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub capabilities: Vec<String>,
}

/// `list_models` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    /// The models.
    pub models: Vec<ModelInfo>,
    /// Providers that could not be asked, with why; the others' models are still listed.
    #[serde(default)]
    pub errors: Vec<ProviderFailure>,
}

/// A provider that failed a fan-out request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderFailure {
    /// The provider id.
    pub provider: String,
    /// What went wrong.
    pub error: WireError,
}

/// Lifecycle of a provider instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderStatus {
    /// Configured, never used yet (instances start on first use).
    Idle,
    /// Being set up.
    Initializing,
    /// Serving.
    Ready,
    /// Set-up or the last request failed; the next request retries.
    Error,
    /// The daemon is stopping it.
    ShuttingDown,
}

/// A configured provider.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// The id from the config (`[providers.<id>]`).
    pub id: String,
    /// The provider type (`anthropic`, `openai`, `mock`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// The model used when a request names none.
    #[serde(default)]
    pub default_model: Option<String>,
    /// What it can do: its configured `capabilities`, else its type's (see
    /// [`ModelInfo::capabilities`]).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Whether this is the daemon's default provider.
    #[serde(default)]
    pub is_default: bool,
}

/// `list_providers` result.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderList {
    /// The configured providers, sorted by id.
    pub providers: Vec<ProviderInfo>,
}

/// Counters for one provider instance since the daemon started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderMetrics {
    /// Generations started.
    pub requests: u64,
    /// Generations that ended with an error other than `cancelled`.
    pub errors: u64,
    /// Generations cancelled by their client.
    pub cancelled: u64,
    /// Generations running now.
    pub active: u64,
    /// Chunks forwarded.
    pub chunks: u64,
    /// Prompt tokens reported by the provider.
    pub prompt_tokens: u64,
    /// Completion tokens reported by the provider.
    pub completion_tokens: u64,
}

/// How a provider (or instance) is doing, as its counters show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No generation has ended yet.
    #[default]
    Unused,
    /// At least one generation ended without an error.
    Serving,
    /// Generations ended, and every one that ended failed: none completed, at least one
    /// error. An instance can be `ready` and still failing (a wrong key, say).
    Failing,
}

impl ProviderMetrics {
    /// The health these counters show (see [`Health`]).
    pub fn health(&self) -> Health {
        let ended = self.requests.saturating_sub(self.active);
        let completed = ended
            .saturating_sub(self.errors)
            .saturating_sub(self.cancelled);
        match (ended, completed, self.errors) {
            (0, _, _) => Health::Unused,
            (_, 0, errors) if errors > 0 => Health::Failing,
            _ => Health::Serving,
        }
    }
}

/// One provider instance (a provider id and model) in `status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// The provider id.
    pub provider: String,
    /// The provider type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The model this instance serves.
    pub model: String,
    /// Its lifecycle state.
    pub status: ProviderStatus,
    /// Its counters.
    pub metrics: ProviderMetrics,
}

/// `status` result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusResult {
    /// The daemon's release.
    pub daemon_version: String,
    /// The daemon's protocol version.
    pub protocol_version: u32,
    /// The daemon's process id.
    pub pid: u32,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Client connections open now.
    pub connections: u64,
    /// Generations running now, over all connections.
    pub active_streams: u64,
    /// Configured providers.
    pub providers: Vec<ProviderInfo>,
    /// Provider instances in the daemon's cache now, with their state and counters: at
    /// most [`STATUS_TOP_INSTANCES`] of them, those that served the most requests (ties
    /// by provider and model); `instances_omitted` counts the rest. Empty (and
    /// `instances_omitted` 0) for a connection that is not an admin's: per-model detail
    /// would show other users' model names.
    pub instances: Vec<InstanceStatus>,
    /// Each configured provider's counters over all its models since the daemon
    /// started, including those of instances since evicted, and how many instances it
    /// has now. Empty from a daemon that predates it.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub provider_counters: Vec<ProviderCounters>,
    /// Instances in the cache that `instances` leaves out.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub instances_omitted: u64,
    /// The most instances the daemon keeps (`[daemon] max_provider_instances`); 0 from a
    /// daemon that does not say.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub max_provider_instances: u64,
    /// Connections and generations held now, per uid (what the `[limits]` table caps).
    /// An admin sees every uid; others see only their own.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub uids: Vec<UidUsage>,
    /// The usage ledger's counters since the daemon started: shown to admins only, and
    /// `nil` when the ledger is off (or from a daemon that predates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger: Option<LedgerStatus>,
    /// Per user: requests in the last minute, tokens today and this month (UTC), and the
    /// tightest budget and rate of each kind that binds the user, with what is left. An
    /// admin sees every uid with usage this month, a request in the last minute or a
    /// limit of its own; others see only their own. Empty from a daemon that predates it.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub users: Vec<UserUsage>,
}

/// One user's usage and limits, in `status` (see [`StatusResult::users`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUsage {
    /// The uid.
    pub uid: u32,
    /// Its user name, when the daemon knows it.
    #[serde(default)]
    pub user: Option<String>,
    /// Requests admitted in the last minute (the window `requests_per_minute` counts).
    pub requests_last_minute: u64,
    /// Tokens (prompt and completion) since the start of the UTC day.
    pub tokens_today: u64,
    /// Tokens since the start of the UTC calendar month.
    pub tokens_this_month: u64,
    /// Of the limits that bind the user (its own and its groups'; not its tokens'), the
    /// one with the least left of each kind.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub limits: Vec<LimitUse>,
}

/// One budget or rate and how much of it is used, in `status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitUse {
    /// The limit's key as configured: `limits.group.interns.tokens_per_month`.
    pub limit: String,
    /// Its value.
    pub value: u64,
    /// How much of it is used (for a group, by all its members together).
    pub used: u64,
    /// How much is left (0 when spent).
    pub left: u64,
    /// When a token budget resets (RFC 3339, UTC); nil for a request rate, whose window
    /// slides.
    #[serde(default)]
    pub resets_at: Option<String>,
}

/// The usage ledger's counters, in `status`: whether every generation was recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerStatus {
    /// Records written to the ledger file.
    pub written: u64,
    /// Records dropped because the writer's queue was full (a slow or full disk).
    pub dropped: u64,
    /// Records lost because their batch could not be written.
    pub lost: u64,
    /// Rows pruned past their retention.
    pub pruned: u64,
}

/// How many instances `status` details at most (see [`StatusResult::instances`]).
pub const STATUS_TOP_INSTANCES: usize = 20;

/// One configured provider in `status`: its counters summed over every model it served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderCounters {
    /// The provider id.
    pub provider: String,
    /// The provider type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its instances (models) in the cache now.
    pub instances: u64,
    /// Its counters since the daemon started (a reload keeps them; a provider removed by
    /// a reload drops out).
    pub metrics: ProviderMetrics,
    /// What those counters show: `failing` when every generation that ended failed.
    /// `unused` from a daemon that predates it.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub health: Health,
}

/// One uid's connections and generations, in `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UidUsage {
    /// The uid (`nil` when the OS does not tell a peer's uid).
    pub uid: Option<u32>,
    /// Connections it holds open.
    pub connections: u64,
    /// Generations it runs.
    pub streams: u64,
}

/// `reload` result: what the reload changed. A rejected reload is an error reply instead,
/// and the configuration in force stays.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadResult {
    /// Where the configuration was read from (a path, or `<embedded default>`).
    pub config: String,
    /// Providers configured now.
    pub providers: u32,
    /// Provider ids that are new.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub added: Vec<String>,
    /// Provider ids whose configuration changed; their instances are replaced (running
    /// generations finish on the old one).
    #[serde(default, deserialize_with = "nil_as_default")]
    pub changed: Vec<String>,
    /// Provider ids no longer configured.
    #[serde(default, deserialize_with = "nil_as_default")]
    pub removed: Vec<String>,
    /// Settings that changed in the file but take effect only when the daemon restarts
    /// (`daemon.max_connections`, …).
    #[serde(default, deserialize_with = "nil_as_default")]
    pub needs_restart: Vec<String>,
}

#[cfg(test)]
mod tests {

    #[test]
    fn health_is_failing_only_when_every_ended_generation_failed() {
        let m = |requests, errors, cancelled, active| ProviderMetrics {
            requests,
            errors,
            cancelled,
            active,
            ..ProviderMetrics::default()
        };
        assert_eq!(m(0, 0, 0, 0).health(), Health::Unused);
        assert_eq!(m(2, 0, 0, 2).health(), Health::Unused, "none ended yet");
        assert_eq!(m(3, 3, 0, 0).health(), Health::Failing);
        assert_eq!(
            m(3, 2, 1, 0).health(),
            Health::Failing,
            "cancels are not successes"
        );
        assert_eq!(m(3, 2, 0, 0).health(), Health::Serving, "one completed");
        assert_eq!(
            m(2, 0, 2, 0).health(),
            Health::Serving,
            "cancelled, not failing"
        );
    }
    /// The hex dump of the first fenced block after `heading` in PROTOCOL.md, as bytes.
    fn documented_frame(heading: &str) -> Vec<u8> {
        let doc = include_str!("../PROTOCOL.md");
        let section = &doc[doc.find(heading).expect("the section exists")..];
        let block = section.split("```").nth(1).expect("a fenced block");
        block
            .lines()
            .flat_map(|line| line.split_whitespace().skip(1))
            .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
            .collect()
    }

    #[test]
    fn the_documented_error_notification_is_what_the_daemon_encodes() {
        let notice = ErrorNotice::new(
            WireError::new(
                crate::ErrorCode::ProtocolError,
                "malformed MessagePack: reserved marker 0xc1",
            ),
            None,
        );
        let frame = encode_notification(notification::ERROR, &notice).unwrap();
        assert_eq!(frame, documented_frame("### 15.13 Notification `error`"));
        // A client that only knows the error object still reads it.
        let (_, params) = match Envelope::parse(&frame[4..]).unwrap() {
            Envelope::Notification { method, params } => (method.to_owned(), params),
            other => panic!("{other:?}"),
        };
        let error: WireError = decode(params).unwrap();
        assert_eq!(error, notice.error());
    }

    #[test]
    fn the_documented_unknown_method_list_is_the_served_list() {
        let doc = include_str!("../PROTOCOL.md");
        let expected = format!("(this daemon serves: {})", method::SERVED.join(", "));
        let section = &doc[doc.find("## 7. Methods").unwrap()..doc.find("### 7.1").unwrap()];
        assert!(
            section.contains(&expected),
            "section 7 must list {expected}"
        );
        // Every method section 7 documents in its tables is served.
        for served in method::SERVED {
            assert!(
                doc.contains(&format!("| `{served}` |")),
                "{served} is undocumented"
            );
        }
    }

    #[test]
    fn every_method_is_found_by_its_name_and_no_two_share_one() {
        let mut names = std::collections::HashSet::new();
        for &m in method::Method::ALL {
            assert_eq!(method::Method::from_name(m.name()), Some(m));
            assert!(names.insert(m.name()), "{} is listed twice", m.name());
        }
        assert_eq!(method::Method::from_name("format_disk"), None);
    }

    #[test]
    fn the_served_list_is_every_method_but_hello_common_ones_first() {
        use method::{Access, Method};
        assert_eq!(method::SERVED.len(), Method::ALL.len() - 1);
        assert!(!method::SERVED.contains(&method::HELLO));
        let admin_from = method::SERVED
            .iter()
            .position(|&n| Method::from_name(n).unwrap().access() == Access::Admin)
            .unwrap();
        assert!(method::SERVED[admin_from..]
            .iter()
            .all(|&n| Method::from_name(n).unwrap().access() == Access::Admin));
        assert_eq!(method::SERVED[admin_from - 1], method::RELOAD);
    }

    #[test]
    fn a_hello_with_nil_client_decodes_as_an_empty_name() {
        #[derive(Serialize)]
        struct NilHello {
            protocol_version: u32,
            client: Option<String>,
            token: Option<String>,
        }
        let bytes = rmp_serde::to_vec_named(&NilHello {
            protocol_version: 1,
            client: None,
            token: None,
        })
        .unwrap();
        let hello: Hello = decode(&bytes).unwrap();
        assert_eq!(hello.client, "");
    }

    use super::*;
    use crate::error::ErrorCode;
    use crate::frame::{validate, MAX_DEPTH};

    fn payload(frame: &[u8]) -> &[u8] {
        &frame[4..]
    }

    #[test]
    fn request_round_trips_with_named_fields() {
        let req = GenerateRequest::prompt("hi");
        let frame = encode_request(7, method::GENERATE, &req).unwrap();
        validate(payload(&frame), MAX_DEPTH).unwrap();
        let Envelope::Request { id, method, params } = Envelope::parse(payload(&frame)).unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!((id, method), (7, "generate"));
        assert_eq!(decode::<GenerateRequest>(params).unwrap(), req);
        // Named fields: the key text is in the bytes, so other languages read by name.
        assert!(params.windows(6).any(|w| w == b"prompt"));
    }

    #[test]
    fn reply_carries_either_error_or_result() {
        let err = WireError::new(ErrorCode::NotFound, "no provider 'x'");
        let frame = encode_error(3, &err);
        assert_eq!(
            Envelope::parse(payload(&frame)).unwrap(),
            Envelope::Reply {
                id: 3,
                outcome: Err(err)
            }
        );
        let frame = encode_result(4, &Empty {}).unwrap();
        assert_eq!(
            Envelope::parse(payload(&frame)).unwrap(),
            Envelope::Reply {
                id: 4,
                outcome: Ok(&[0x80][..])
            }
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_optionals_default() {
        #[derive(Serialize)]
        struct Newer<'a> {
            prompt: &'a str,
            some_future_field: u8,
        }
        let bytes = rmp_serde::to_vec_named(&Newer {
            prompt: "p",
            some_future_field: 1,
        })
        .unwrap();
        let req: GenerateRequest = decode(&bytes).unwrap();
        assert_eq!(req.prompt.as_deref(), Some("p"));
        assert!(req.stream, "stream defaults to true");
    }

    #[test]
    fn nil_is_accepted_for_every_optional_field() {
        let bytes = rmp_serde::to_vec_named(&serde_json::json!({
            "prompt": "p", "provider": null, "model": null, "messages": null, "system": null,
            "max_tokens": null, "temperature": null, "top_p": null, "stop": null,
            "stream": null, "additional_params": null,
        }))
        .unwrap();
        let req: GenerateRequest = decode(&bytes).unwrap();
        assert_eq!(req, GenerateRequest::prompt("p"));
    }

    #[test]
    fn wrong_field_type_is_an_error_not_a_panic() {
        let bytes = rmp_serde::to_vec_named(&serde_json::json!({"prompt": 5})).unwrap();
        assert!(decode::<GenerateRequest>(&bytes).is_err());
    }

    #[test]
    fn envelope_shape_errors_are_typed() {
        for bad in [
            rmp_serde::to_vec(&(0u8, 1u32, "ping")).unwrap(),
            rmp_serde::to_vec(&(9u8, 1u32, "ping", ())).unwrap(),
            rmp_serde::to_vec(&(0u8, -1i32, "ping", ())).unwrap(),
            rmp_serde::to_vec(&(0u8, 1u32, 5u8, ())).unwrap(),
            rmp_serde::to_vec("not an array").unwrap(),
        ] {
            assert!(matches!(Envelope::parse(&bad), Err(FrameError::Invalid(_))));
        }
    }
}
