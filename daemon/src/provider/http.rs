//! What every HTTP provider shares: its [`Transport`] (one pooled client per configured
//! provider, shared by all its instances: rustls on ring, HTTP/2 when the server offers
//! it, no retries or redirects of its own), the timeouts, the mapping of HTTP failures to
//! the system-wide codes, and the driver that turns a streamed body into
//! [`StreamEvent`]s through a framer (SSE or NDJSON) and a provider's decoder.
//!
//! How a body ends matters: a clean end (chunked terminator, content length reached)
//! lets the framer hand over a last unit that had no terminator; a body cut short is an
//! error from the HTTP library, never a clean end, so truncation stays detectable. After
//! the final event the rest of the body is drained off the client's path, so that the
//! connection is reused; a stream dropped before it (a cancel) drops its connection.
//!
//! Retries are not here: the request path owns them (one owner, one deadline), so this
//! layer reports each failure once, classified.
//!
//! Every error that leaves a [`Transport`] is scrubbed ([`crate::scrub`]) of the
//! daemon's keys and the instance's own: error bodies whole, before they are quoted and
//! cut; in-stream error events once the framer assembled them; quoted headers and the
//! HTTP library's own messages. Model text is not touched.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Once;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use provd_client::ErrorCode;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, Response, StatusCode, Url};

use super::ndjson::NdjsonSplitter;
use super::sse::{SseEvent, SseParser};
use super::{EventStream, ProviderError, StreamEvent};
use crate::scrub::Scrubber;
use crate::settings::ProviderConfig;

/// Largest error or non-streamed response body read into memory.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// How much of a body that is not what was expected (an HTML page for a stream) is read
/// to quote its start.
const UNEXPECTED_BODY_BYTES: usize = 64 * 1024;
/// How much of an unparseable error body is quoted in a message.
const QUOTED_BODY_CHARS: usize = 300;
/// How long idle pooled connections are kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

static CRYPTO: Once = Once::new();

/// Makes ring the process's TLS crypto provider (reqwest is built without one, which keeps
/// a second crypto library out of the build). Idempotent.
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        // Err means a provider is installed already, which is all we need.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The per-request time limits of a provider, each named in the error it causes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// From sending the request to the response headers.
    pub first_byte: Duration,
    /// The longest silence between two pieces of the body.
    pub idle: Duration,
}

impl Timeouts {
    /// The limits a provider's config sets.
    pub fn from_config(config: &ProviderConfig) -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(config.connect_timeout_seconds),
            first_byte: Duration::from_secs(config.timeout_seconds),
            idle: Duration::from_secs(config.timeout_seconds),
        }
    }
}

/// The HTTP client (connection pool) of one configured provider, shared by every instance
/// (model) of it, so that the sockets a provider holds do not grow with the number of
/// models clients name. Built by the first instance that needs one; the factory gives a
/// provider a new one when a reload changes its table (its timeouts may have changed).
/// Cloning shares it.
#[derive(Clone, Default)]
pub struct SharedClient(std::sync::Arc<std::sync::OnceLock<reqwest::Client>>);

impl std::fmt::Debug for SharedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedClient")
            .field("built", &self.0.get().is_some())
            .finish()
    }
}

impl SharedClient {
    /// The provider's client, built now with `timeouts` if it is the first use.
    fn get_or_build(&self, timeouts: &Timeouts) -> Result<reqwest::Client, ProviderError> {
        if let Some(client) = self.0.get() {
            return Ok(client.clone());
        }
        // Two first uses at once may both build one; the first set wins and the other
        // is dropped unused (it holds no connection yet).
        let built = client(timeouts)?;
        Ok(self.0.get_or_init(|| built).clone())
    }

    /// Whether two handles share one client.
    #[cfg(test)]
    pub(crate) fn same_as(&self, other: &SharedClient) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Builds an HTTP client with a provider's limits.
fn client(timeouts: &Timeouts) -> Result<reqwest::Client, ProviderError> {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("provd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeouts.connect)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .tcp_nodelay(true)
        .http2_adaptive_window(true)
        // The request path owns retries; a second layer would multiply them.
        .retry(reqwest::retry::never())
        // An API answers where it is configured: a redirect would carry the request (and,
        // to the same host, its key) somewhere the configuration does not name, so it is
        // an error that says where base_url should point (as OpenAI's SDKs do).
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| {
            ProviderError::new(
                ErrorCode::Internal,
                format!("cannot build the HTTP client: {e}"),
            )
        })
}

/// One provider instance's way to its API: the provider's pooled client, the limits,
/// how the API words its failures, and the key to cut out of them. Every HTTP provider
/// sends and reads through one, so a request is classified, timed and scrubbed alike
/// whichever API it goes to.
#[derive(Debug)]
pub struct Transport {
    provider: String,
    client: reqwest::Client,
    timeouts: Timeouts,
    dialect: &'static Dialect,
    /// The key the requests carry, cut out of every error alongside the daemon's other
    /// keys (it is among them in a running daemon; this keeps it so on every path).
    own_key: Scrubber,
}

impl Transport {
    /// The transport of the instance `spec` describes, for an API that speaks `dialect`.
    pub fn new(
        spec: &super::ProviderSpec,
        dialect: &'static Dialect,
    ) -> Result<Transport, ProviderError> {
        let timeouts = Timeouts::from_config(&spec.config);
        Ok(Transport {
            provider: spec.id.clone(),
            client: spec.http.get_or_build(&timeouts)?,
            timeouts,
            dialect,
            own_key: Scrubber::for_key(spec.credential.as_ref()),
        })
    }

    /// The instance's limits.
    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    /// A `POST` to `url`, to be finished by the provider (headers, body) and sent here.
    pub fn post(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.client.post(url)
    }

    /// A `GET` of `url`.
    pub fn get(&self, url: impl reqwest::IntoUrl) -> RequestBuilder {
        self.client.get(url)
    }

    /// Sends a request and returns the response if its status is a success. Failures
    /// are classified: connection problems are `unavailable`, the first-byte limit
    /// `timeout`, an HTTP error status by [`status_error`] with the provider's own
    /// message and retry hint, which the dialect extracts.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, ProviderError> {
        let (provider, timeouts) = (self.provider.as_str(), &self.timeouts);
        let response = match tokio::time::timeout(timeouts.first_byte, request.send()).await {
            Err(_) => {
                return Err(ProviderError::new(
                    ErrorCode::Timeout,
                    format!(
                        "{provider}: no response within the first-byte timeout of {}s",
                        timeouts.first_byte.as_secs()
                    ),
                ))
            }
            Ok(Err(e)) => return Err(self.scrubbed(transport_error(provider, e, timeouts))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = read_body(provider, response, timeouts, 64 * 1024)
            .await
            .unwrap_or_default();
        let dialect = self.dialect;
        // Scrubbed whole, before quote_body cuts it: a key straddling the cut would
        // otherwise leave its prefix behind.
        let message = match (dialect.error_message)(&body) {
            Some(message) => self.scrub(&message).into_owned(),
            None => quote_body(&self.scrub(&String::from_utf8_lossy(&body))),
        };
        let mut error = status_error(provider, status, &headers, &message);
        if error.retryable {
            error.retry_after = (dialect.retry_after)(&headers);
        }
        (dialect.refine)(&mut error, &body);
        // Again as a whole: the message now quotes a header (a redirect's location) and
        // whatever the refinement added.
        Err(self.scrubbed(error))
    }

    /// `text` without any key the daemon holds nor this instance's own.
    pub fn scrub<'t>(&self, text: &'t str) -> std::borrow::Cow<'t, str> {
        crate::scrub::scrub_also(text, &self.own_key)
    }

    /// `error` with its message scrubbed.
    pub fn scrubbed(&self, mut error: ProviderError) -> ProviderError {
        crate::scrub::scrub_in_place(&mut error.message, &self.own_key);
        error
    }

    /// Reads a whole (non-streamed) body, at most [`MAX_BODY_BYTES`].
    pub async fn read_whole(&self, response: Response) -> Result<Vec<u8>, ProviderError> {
        read_body(&self.provider, response, &self.timeouts, MAX_BODY_BYTES)
            .await
            .map_err(|e| self.scrubbed(e))
    }

    /// Reads and parses a whole JSON body.
    pub async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: Response,
    ) -> Result<T, ProviderError> {
        let body = self.read_whole(response).await?;
        // serde quotes the values it refuses (`invalid type: string "…"`).
        serde_json::from_slice(&body).map_err(|e| self.scrubbed(malformed(&self.provider, e)))
    }

    /// Streams the provider's events from a response body.
    ///
    /// Once the final event is decoded the rest of the body (usually only the chunked
    /// terminator) is read off the client's path, at most [`DRAIN_BYTES`] within
    /// [`DRAIN_TIME`], so that the connection goes back to the pool and the next
    /// generation pays no new TCP and TLS handshake. A stream dropped before its final
    /// event (a cancel, an error) drops its connection instead: that is how a cancel
    /// reaches the upstream.
    pub fn event_stream<F, D>(&self, response: Response, framer: F, decoder: D) -> EventStream
    where
        F: Framer,
        D: Decoder<Unit = F::Unit>,
    {
        let reader = Reader {
            body: Some(body_stream(&self.provider, response, self.timeouts)),
            pump: Pump::new(&self.provider, framer, decoder),
            own_key: self.own_key.clone(),
        };
        Box::pin(stream::unfold(reader, |mut reader| async move {
            let item = reader.next_item().await?;
            Some((item, reader))
        }))
    }

    /// How the response to a streaming request arrived: the stream the API documents,
    /// or one whole `application/json` answer, as some gateways send whatever was asked.
    /// Any other content that cannot be a stream (an HTML page) is a non-retryable error
    /// that says what arrived. A response without a content type, or with another one, is
    /// read as the stream: the decoder refuses it if it is not.
    pub async fn streamed(&self, response: Response) -> Result<Answer, ProviderError> {
        let content_type = media_type(response.headers());
        if content_type == "application/json" || content_type.ends_with("+json") {
            return Ok(Answer::Whole(self.read_whole(response).await?));
        }
        if content_type.starts_with("text/html") {
            let body = read_body(
                &self.provider,
                response,
                &self.timeouts,
                UNEXPECTED_BODY_BYTES,
            )
            .await
            .unwrap_or_default();
            return Err(self.scrubbed(self.unexpected_body(&content_type, &body, "a stream")));
        }
        Ok(Answer::Stream(response))
    }

    /// The body of a response: [`Transport::streamed`] for a streaming request, the
    /// whole body for another.
    pub async fn answer(&self, response: Response, stream: bool) -> Result<Answer, ProviderError> {
        if stream {
            self.streamed(response).await
        } else {
            Ok(Answer::Whole(self.read_whole(response).await?))
        }
    }

    /// A whole answer parsed as the API's non-streamed answer. When it answered a
    /// streaming request (`streamed`), it must also be an object with one of the keys
    /// in `marks` (or an array of such objects): every field of an answer is optional
    /// to serde, and `{"status": "queued"}` must not pass for an empty answer. A body
    /// that is not one is then a non-retryable error quoting what arrived; for a
    /// non-streamed request, a malformed response.
    pub fn parse_whole<T: serde::de::DeserializeOwned>(
        &self,
        body: &[u8],
        streamed: bool,
        expected: &str,
        marks: &[&str],
    ) -> Result<T, ProviderError> {
        let not_an_answer =
            |e: &dyn std::fmt::Display| self.not_an_answer(e, body, streamed, expected);
        if streamed {
            let value: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| not_an_answer(&e))?;
            let marked = |v: &serde_json::Value| marks.iter().any(|m| v.get(m).is_some());
            let answer = match &value {
                serde_json::Value::Array(items) => !items.is_empty() && items.iter().all(marked),
                other => marked(other),
            };
            if !answer {
                return Err(not_an_answer(&"not an answer"));
            }
            return serde_json::from_value(value).map_err(|e| not_an_answer(&e));
        }
        serde_json::from_slice(body).map_err(|e| not_an_answer(&e))
    }

    /// The error for a whole body that is not `expected`: see [`Transport::parse_whole`].
    pub fn not_an_answer(
        &self,
        e: impl std::fmt::Display,
        body: &[u8],
        streamed: bool,
        expected: &str,
    ) -> ProviderError {
        self.scrubbed(if streamed {
            self.unexpected_body("application/json", body, expected)
        } else {
            malformed(&self.provider, e)
        })
    }

    /// The error for a body of `content_type` where `expected` was due: what arrived,
    /// scrubbed whole before the excerpt is cut.
    fn unexpected_body(&self, content_type: &str, body: &[u8], expected: &str) -> ProviderError {
        let excerpt = quote_body(&self.scrub(&String::from_utf8_lossy(body)));
        let mut error = ProviderError::new(
            ErrorCode::UpstreamError,
            format!(
                "{}: a streaming request was answered with {content_type} instead of {expected}: {}",
                self.provider,
                one_line(&excerpt)
            ),
        );
        // The same request would be answered the same way.
        error.retryable = false;
        error
    }
}

/// The body of a response to a streaming request: see [`Transport::streamed`].
#[derive(Debug)]
pub enum Answer {
    /// The documented stream.
    Stream(Response),
    /// One whole `application/json` answer, read.
    Whole(Vec<u8>),
}

/// The media type of a response (`text/event-stream`), lower case, without parameters;
/// empty when there is none.
fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// `text` on one line: a multi-line excerpt would break a log line or the CLI's
/// one-line errors.
fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Most of a body read after its final event to give the connection back to the pool;
/// a longer rest is not worth the reading, and the connection is dropped.
pub const DRAIN_BYTES: usize = 64 * 1024;
/// Longest wait for the rest of a body after its final event.
pub const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The state of [`Transport::event_stream`]: the body, the pump it feeds, and the key to
/// scrub from error events. Dropped after the final event, it drains the body (see
/// [`Transport::event_stream`]).
struct Reader<F, D> {
    /// `None` once the body ended or failed: nothing is left to read or drain.
    body: Option<BodyStream>,
    pump: Pump<F, D>,
    own_key: Scrubber,
}

impl<F, D> Reader<F, D>
where
    F: Framer,
    D: Decoder<Unit = F::Unit>,
{
    async fn next_item(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        loop {
            if let Some(item) = self.pump.next_item() {
                // An error event is scrubbed as the decoder made it from a whole event
                // or line, never piece by piece; text passes untouched.
                return Some(item.map_err(|mut e| {
                    crate::scrub::scrub_in_place(&mut e.message, &self.own_key);
                    e
                }));
            }
            if self.pump.is_finished() {
                return None;
            }
            let body = self.body.as_mut()?;
            match body.next().await {
                Some(Ok(bytes)) => self.pump.feed(&bytes),
                Some(Err(e)) => {
                    self.body = None;
                    self.pump.fail(e);
                }
                None => {
                    self.body = None;
                    body_ended(&self.pump.provider);
                    self.pump.end();
                }
            }
        }
    }
}

impl<F, D> Drop for Reader<F, D> {
    fn drop(&mut self) {
        if !self.pump.saw_done {
            // Cancelled or failed: dropping the body drops the connection.
            return;
        }
        let (Some(body), Ok(runtime)) = (self.body.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        runtime.spawn(drain(self.pump.provider.clone(), body));
    }
}

/// Streamed bodies read to their end since the daemon started: numbered in the log line
/// that says so, which is how tests wait for a connection to be back in the pool.
static ENDED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Reads the rest of a body whose final event was decoded, within [`DRAIN_BYTES`] and
/// [`DRAIN_TIME`]; reaching its end returns the connection to the pool, giving up
/// drops it.
async fn drain(provider: String, mut body: BodyStream) {
    let ended = tokio::time::timeout(DRAIN_TIME, async move {
        let mut read = 0;
        loop {
            match body.next().await {
                None => return true,
                Some(Ok(piece)) => {
                    read += piece.len();
                    if read > DRAIN_BYTES {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
            }
        }
    })
    .await;
    if ended == Ok(true) {
        body_ended(&provider);
    } else {
        let provider = crate::untrusted::untrusted(&provider);
        tracing::debug!(%provider, "the rest of a streamed body exceeds {DRAIN_BYTES} bytes or {DRAIN_TIME:?}: its connection is dropped");
    }
}

/// Counts and logs a streamed body read to its clean end, drained or not.
fn body_ended(provider: &str) {
    let n = ENDED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let provider = crate::untrusted::untrusted(provider);
    tracing::debug!(%provider, "streamed body #{n} read to its end: its connection returns to the pool");
}

/// Deserializes an optional text field leniently: a string, or nothing for anything else
/// (a `model` of `null` or a number), so that one odd field does not fail a whole chunk.
pub fn lenient_text<'de, De>(deserializer: De) -> Result<Option<String>, De::Error>
where
    De: serde::Deserializer<'de>,
{
    let value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// Deserializes an error's numeric `code` leniently: a number, or a string holding one
/// (`"400"`, as some Gemini-format gateways send); anything else is no code, so that the
/// rest of the error (its message) is still read.
pub fn lenient_code<'de, De>(deserializer: De) -> Result<Option<u16>, De::Error>
where
    De: serde::Deserializer<'de>,
{
    let value = <serde_json::Value as serde::Deserialize>::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// The value of an auth header (`x-api-key`, `Authorization: Bearer …`,
/// `x-goog-api-key`, `api-key`): `prefix` then the key, marked sensitive so that the HTTP
/// stack redacts it in Debug output and HTTP/2 sends it never-indexed (out of HPACK's
/// table). Built in a zeroizing buffer, so the only plain copy left is the header's own.
pub fn auth_header(
    provider: &str,
    prefix: &str,
    key: &crate::secret::Secret,
) -> Result<HeaderValue, ProviderError> {
    let mut text =
        zeroize::Zeroizing::new(String::with_capacity(prefix.len() + key.expose().len()));
    text.push_str(prefix);
    text.push_str(key.expose());
    let mut value = HeaderValue::from_str(&text).map_err(|_| {
        // Never quote the key, not even a malformed one.
        ProviderError::new(
            ErrorCode::Unauthenticated,
            format!(
                "provider '{provider}': the API key contains characters an HTTP header cannot carry"
            ),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// Adds the configured `headers` of a provider. They are configuration, not secrets,
/// but one named like a credential (`Authorization`, `*-key`, `*token*`, cookies) is
/// marked sensitive all the same, in case someone put a key there.
pub fn with_config_headers(
    mut request: RequestBuilder,
    headers: &std::collections::BTreeMap<String, String>,
) -> RequestBuilder {
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        let credential = ["auth", "key", "token", "secret", "cookie", "password"]
            .iter()
            .any(|word| lower.contains(word));
        match HeaderValue::from_str(value) {
            Ok(mut v) if credential => {
                v.set_sensitive(true);
                request = request.header(name, v);
            }
            // An invalid value is reported by reqwest when the request is sent.
            _ => request = request.header(name, value),
        }
    }
    request
}

/// An API endpoint's URL: `base_url` followed by `path`, parsed once per provider
/// instance. Parsing it for every request (host validation included) was a visible part
/// of a request's CPU in profiles.
pub fn endpoint(provider: &str, base_url: &str, path: &str) -> Result<Url, ProviderError> {
    Url::parse(&format!("{base_url}{path}")).map_err(|e| {
        ProviderError::new(
            ErrorCode::InvalidRequest,
            format!("provider '{provider}': base_url is not a URL: {e}"),
        )
    })
}

/// How one API reports failures: where its error bodies keep the message, which
/// headers carry its rate-limit reset hints besides the standard ones, and what else its
/// error bodies say that the status alone does not.
#[derive(Clone, Copy)]
pub struct Dialect {
    /// The upstream's own error message from an error body.
    pub error_message: fn(&[u8]) -> Option<String>,
    /// The retry hint from response headers.
    pub retry_after: fn(&HeaderMap) -> Option<Duration>,
    /// Corrects the status-based classification from the error body: a code the status
    /// gets wrong (Gemini refuses a bad key with 400), a retry hint kept in the body
    /// rather than a header. Runs last; most APIs need [`no_refinement`].
    pub refine: fn(&mut ProviderError, &[u8]),
}

/// A [`Dialect::refine`] for APIs whose status and headers say it all.
pub fn no_refinement(_: &mut ProviderError, _: &[u8]) {}

impl std::fmt::Debug for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dialect")
    }
}

/// Maps an HTTP error status to the system-wide code; retryable statuses carry the
/// upstream's retry-after hint.
pub fn status_error(
    provider: &str,
    status: StatusCode,
    headers: &HeaderMap,
    message: &str,
) -> ProviderError {
    let code = match status.as_u16() {
        400 | 413 | 422 => ErrorCode::InvalidRequest,
        401 => ErrorCode::Unauthenticated,
        // 402: a billing or spend limit (Anthropic's billing_error), which no retry fixes.
        402 | 403 => ErrorCode::PermissionDenied,
        404 => ErrorCode::NotFound,
        408 => ErrorCode::Timeout,
        429 => ErrorCode::RateLimited,
        529 => ErrorCode::Overloaded,
        503 => ErrorCode::Unavailable,
        500..=599 => ErrorCode::UpstreamError,
        _ => ErrorCode::InvalidRequest,
    };
    let redirect = headers
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .filter(|_| status.is_redirection())
        .map_or(String::new(), |l| {
            format!(" (a redirect to {l}: point base_url there)")
        });
    let mut error = ProviderError::new(
        code,
        format!(
            "{provider} returned HTTP {}{redirect}: {message}",
            status.as_u16()
        ),
    );
    error.retryable = code.is_retryable_by_default() || status.is_server_error();
    // A billing limit (Anthropic's billing_error) binds this account only.
    error.try_elsewhere = status == StatusCode::PAYMENT_REQUIRED;
    if error.retryable {
        error.retry_after = retry_after(headers);
    }
    error
}

/// The upstream's retry hint: `retry-after-ms` (OpenAI, Anthropic), else `retry-after`
/// in seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    // `try_from`: a hint too large for a Duration (`1e30`) is no hint, not a panic.
    if let Some(after) = text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
    {
        return Some(after);
    }
    let value = text("retry-after")?;
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = httpdate_to_system_time(value)?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Parses the IMF-fixdate form of an HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`), the only
/// form a current server sends.
fn httpdate_to_system_time(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    // Two-digit fields and a four-digit year, as the format has them: larger numbers
    // would overflow the arithmetic below.
    let number = |s: &str, digits: usize| -> Option<i64> {
        (s.len() == digits && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (day, year) = (number(day, 2)?, number(year, 4)?);
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| number(p, 2))
        .collect::<Option<_>>()?;
    let [h, m, sec] = hms.as_slice() else {
        return None;
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + sec;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A failure below HTTP: connect, TLS, DNS, reset. The message names where it tried
/// (scheme, host and port), since a wrong `base_url` or a server that is not running is
/// the usual cause.
fn transport_error(provider: &str, e: reqwest::Error, timeouts: &Timeouts) -> ProviderError {
    let (connect, timeout) = (e.is_connect(), e.is_timeout());
    // Never echo the whole URL (some APIs put keys in query strings): only its origin.
    let target = e.url().map_or_else(
        || "its base_url".to_owned(),
        |url| {
            let host = url.host_str().unwrap_or("?");
            match url.port_or_known_default() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            }
        },
    );
    let detail = error_chain(&e.without_url());
    if connect {
        if timeout {
            return ProviderError::new(
                ErrorCode::Timeout,
                format!(
                    "{provider}: connect timeout of {}s exceeded for {target} ({detail})",
                    timeouts.connect.as_secs()
                ),
            );
        }
        return ProviderError::new(
            ErrorCode::Unavailable,
            format!("{provider}: cannot connect to {target}: {detail}"),
        );
    }
    if timeout {
        return ProviderError::new(
            ErrorCode::Timeout,
            format!("{provider}: request to {target} timed out ({detail})"),
        );
    }
    let mut error = ProviderError::new(
        ErrorCode::Unavailable,
        format!("{provider}: connection to {target} failed: {detail}"),
    );
    error.retryable = true;
    error
}

/// An error with its sources, which is where reqwest keeps the useful part
/// ("connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// An unparseable error body quoted in a message, cut at [`QUOTED_BODY_CHARS`]; `text`
/// must be scrubbed already.
fn quote_body(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    match text.char_indices().nth(QUOTED_BODY_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Reads a whole (non-streamed or error) body, at most `limit` bytes, with the idle
/// timeout between pieces.
async fn read_body(
    provider: &str,
    response: Response,
    timeouts: &Timeouts,
    limit: usize,
) -> Result<Vec<u8>, ProviderError> {
    let mut body = body_stream(provider, response, *timeouts);
    let mut out = Vec::new();
    while let Some(piece) = body.next().await {
        let piece = piece?;
        if out.len() + piece.len() > limit {
            return Err(ProviderError::new(
                ErrorCode::UpstreamError,
                format!("{provider}: response body exceeds {limit} bytes"),
            ));
        }
        out.extend_from_slice(&piece);
    }
    Ok(out)
}

/// An upstream response that is not what the API documents.
pub fn malformed(provider: &str, e: impl std::fmt::Display) -> ProviderError {
    let mut error = ProviderError::new(
        ErrorCode::UpstreamError,
        format!("{provider}: malformed response: {e}"),
    );
    error.retryable = false;
    error
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>;

/// The body as it arrives, with the idle timeout between pieces; a reset or a silence
/// past the limit ends it with a classified error.
fn body_stream(provider: &str, response: Response, timeouts: Timeouts) -> BodyStream {
    let body = Body {
        provider: provider.to_owned(),
        pieces: Box::pin(response.bytes_stream()),
        idle: timeouts.idle,
        idle_timer: Box::pin(tokio::time::sleep(timeouts.idle)),
        failed: false,
    };
    Box::pin(stream::unfold(body, |mut body| async move {
        let piece = body.next_piece().await?;
        Some((piece, body))
    }))
}

/// The state of [`body_stream`].
struct Body {
    provider: String,
    pieces: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    idle: Duration,
    /// One timer for the whole body, re-armed only when it fires: pieces arrive far more
    /// often than the idle timeout, and registering a timer per piece cost more than
    /// reading the piece.
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    failed: bool,
}

impl Body {
    async fn next_piece(&mut self) -> Option<Result<Bytes, ProviderError>> {
        if self.failed {
            return None;
        }
        // Silence is counted from when this piece was asked for, not from the last one:
        // time spent waiting for a slow client is not the upstream's.
        let waiting_since = tokio::time::Instant::now();
        loop {
            tokio::select! {
                biased;
                piece = self.pieces.next() => return match piece {
                    None => None,
                    Some(Ok(bytes)) => Some(Ok(bytes)),
                    Some(Err(e)) => {
                        self.failed = true;
                        let mut error = ProviderError::new(
                            ErrorCode::UpstreamError,
                            format!("{}: the connection broke mid-response: {}", self.provider, error_chain(&e.without_url())),
                        );
                        error.retryable = true;
                        Some(Err(error))
                    }
                },
                () = &mut self.idle_timer => {
                    let due = waiting_since + self.idle;
                    if tokio::time::Instant::now() >= due {
                        self.failed = true;
                        return Some(Err(ProviderError::new(
                            ErrorCode::Timeout,
                            format!("{}: the stream was idle longer than the idle timeout of {}s", self.provider, self.idle.as_secs()),
                        )));
                    }
                    self.idle_timer.as_mut().reset(due);
                }
            }
        }
    }
}

/// Cuts a byte stream into units: SSE events or NDJSON lines.
pub trait Framer: Send + 'static {
    /// What comes out.
    type Unit: Send;
    /// Feeds bytes; complete units go to `out`.
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Self::Unit>) -> Result<(), String>;
    /// The stream ended; a last unit, if the format allows one without a terminator.
    fn finish(&mut self) -> Option<Self::Unit>;
}

impl Framer for SseParser {
    type Unit = SseEvent;
    fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        SseParser::push(self, bytes, out).map_err(|e| e.to_string())
    }
    fn finish(&mut self) -> Option<SseEvent> {
        // Only a clean end of body gets here (a cut-short body is an error of the HTTP
        // layer), so a pending complete event is the server's last word, not a fragment:
        // see `sse`'s module docs for this departure from the WHATWG rule.
        SseParser::finish(self)
    }
}

impl Framer for NdjsonSplitter {
    type Unit = Vec<u8>;
    fn push(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) -> Result<(), String> {
        NdjsonSplitter::push(self, bytes, out).map_err(|e| e.to_string())
    }
    fn finish(&mut self) -> Option<Vec<u8>> {
        NdjsonSplitter::finish(self)
    }
}

/// A provider's reading of its stream format: each unit becomes zero or more events, and
/// the end of the body is checked (a stream that ends without its final event is an
/// error, never a silent success).
pub trait Decoder: Send + 'static {
    /// The framer's unit.
    type Unit;
    /// Decodes one unit. Returning [`StreamEvent::Done`] ends the stream.
    fn unit(&mut self, unit: Self::Unit, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError>;
    /// The body ended without `Done`: the error to report.
    fn ended_early(&mut self) -> ProviderError;
    /// The body ended cleanly without `Done` having been decoded. A format with a final
    /// event (the default) reports [`Decoder::ended_early`]; a format whose end *is* the
    /// end of the body (Gemini sends no final event) pushes its `Done` here instead.
    fn ended(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
        let _ = out;
        Err(self.ended_early())
    }
}

/// The synchronous heart of [`Transport::event_stream`]: body pieces in, events out.
///
/// It owns the rules every provider stream obeys, whatever its wire format: units are
/// decoded in order; nothing follows [`StreamEvent::Done`] or an error; a body that ends
/// without `Done` is checked by [`Decoder::ended`], so the stream never ends silently.
/// Kept apart from the HTTP body so that the fuzz targets and their corpus replay drive
/// exactly this code with arbitrary bytes.
pub(crate) struct Pump<F, D> {
    provider: String,
    framer: F,
    decoder: D,
    pending: VecDeque<Result<StreamEvent, ProviderError>>,
    finished: bool,
    /// The final event was decoded: the rest of the body may be drained for reuse.
    saw_done: bool,
}

impl<F, D> Pump<F, D>
where
    F: Framer,
    D: Decoder<Unit = F::Unit>,
{
    /// A pump at the start of a body.
    pub(crate) fn new(provider: &str, framer: F, decoder: D) -> Self {
        Pump {
            provider: provider.to_owned(),
            framer,
            decoder,
            pending: VecDeque::new(),
            finished: false,
            saw_done: false,
        }
    }

    /// Whether the stream's last item is already queued: read no more of the body.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next queued item.
    pub(crate) fn next_item(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        self.pending.pop_front()
    }

    /// Feeds one piece of the body. Ignored once finished.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        if self.finished {
            return;
        }
        let mut units = Vec::new();
        let framed = self.framer.push(bytes, &mut units);
        // Units completed before a framing error are decoded first, so that where the
        // body happens to be cut into pieces changes nothing.
        self.decode(units);
        if let Err(e) = framed {
            self.fail(malformed(&self.provider, e));
        }
    }

    /// The body failed (a reset, the idle timeout): the error ends the stream.
    pub(crate) fn fail(&mut self, error: ProviderError) {
        if !self.finished {
            self.finished = true;
            self.pending.push_back(Err(error));
        }
    }

    /// The body ended cleanly: the framer's last unit, then the decoder's verdict on a
    /// stream without `Done`.
    pub(crate) fn end(&mut self) {
        if self.finished {
            return;
        }
        let last: Vec<F::Unit> = self.framer.finish().into_iter().collect();
        self.decode(last);
        if self.finished {
            return;
        }
        self.finished = true;
        let mut events = Vec::new();
        let ended = self.decoder.ended(&mut events);
        self.pending.extend(events.into_iter().map(Ok));
        if let Err(e) = ended {
            self.pending.push_back(Err(e));
        }
    }

    fn decode(&mut self, units: Vec<F::Unit>) {
        let mut events = Vec::new();
        for unit in units {
            if self.finished {
                break;
            }
            if let Err(e) = self.decoder.unit(unit, &mut events) {
                self.finished = true;
                self.pending.extend(events.drain(..).map(Ok));
                self.pending.push_back(Err(e));
                return;
            }
            if events.iter().any(|e| matches!(e, StreamEvent::Done { .. })) {
                // Nothing after the final event matters: the stream closes as soon as
                // its end is known, and the rest of the body is drained off its path.
                self.finished = true;
                self.saw_done = true;
            }
        }
        self.pending.extend(events.into_iter().map(Ok));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_system_codes() {
        let h = HeaderMap::new();
        let code = |s: u16| status_error("p", StatusCode::from_u16(s).unwrap(), &h, "m");
        for (s, c, retry) in [
            (400, ErrorCode::InvalidRequest, false),
            (413, ErrorCode::InvalidRequest, false),
            (422, ErrorCode::InvalidRequest, false),
            (401, ErrorCode::Unauthenticated, false),
            (403, ErrorCode::PermissionDenied, false),
            (404, ErrorCode::NotFound, false),
            (408, ErrorCode::Timeout, true),
            (429, ErrorCode::RateLimited, true),
            (529, ErrorCode::Overloaded, true),
            (503, ErrorCode::Unavailable, true),
            (500, ErrorCode::UpstreamError, true),
            (502, ErrorCode::UpstreamError, true),
        ] {
            let e = code(s);
            assert_eq!((e.code, e.retryable), (c, retry), "HTTP {s}");
            assert_eq!(e.message, format!("p returned HTTP {s}: m"));
        }
    }

    #[test]
    fn retry_after_reads_milliseconds_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(
            retry_after(&h),
            Some(Duration::from_millis(1500)),
            "the finer header wins"
        );
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a past date means now"
        );
        assert_eq!(
            httpdate_to_system_time("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn absurd_retry_hints_are_ignored_not_a_panic() {
        // Each used to panic the request task: Duration::from_secs_f64 on a value too
        // large for a Duration, or integer overflow on an over-long date field.
        for (name, value) in [
            ("retry-after", "1e30"),
            ("retry-after", "184467440737095516160"),
            ("retry-after-ms", "1e300"),
            ("retry-after", "Sun, 06 Nov 99999999999999999 08:49:37 GMT"),
            (
                "retry-after",
                "Sun, 06 Nov 1994 99999999999999999:49:37 GMT",
            ),
            (
                "retry-after",
                "Sun, 9999999999999999999 Nov 1994 08:49:37 GMT",
            ),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            assert_eq!(retry_after(&h), None, "{name}: {value}");
        }
        let mut h = HeaderMap::new();
        h.insert("retry-after-ms", HeaderValue::from_static("1e300"));
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(
            retry_after(&h),
            Some(Duration::from_secs(2)),
            "an unusable ms hint falls back to retry-after"
        );
    }

    #[test]
    fn secrets_are_scrubbed_from_upstream_messages() {
        let spec = super::super::ProviderSpec::for_test(
            "p",
            "type = \"openai\"",
            "m",
            Some("sk-abcdefghijkl"),
        );
        let transport = Transport::new(&spec, &DIALECT_FOR_TESTS).unwrap();
        assert_eq!(
            transport.scrub("bad key sk-abcdefghijkl given"),
            "bad key [REDACTED] given"
        );
    }

    #[test]
    fn a_key_straddling_the_quoting_cut_leaves_no_prefix() {
        let key = "sk-straddle-0123456789abcdef";
        let own = Scrubber::new([key]);
        for offset in QUOTED_BODY_CHARS - key.len()..QUOTED_BODY_CHARS + 2 {
            let body = format!("{}{key} and more text after the key", "x".repeat(offset));
            let quoted = quote_body(&crate::scrub::scrub_also(&body, &own));
            assert!(!quoted.contains("sk-straddle"), "offset {offset}: {quoted}");
            assert!(!quoted.contains("sk-"), "offset {offset}: {quoted}");
        }
    }

    #[test]
    fn debug_of_every_provider_spec_transport_and_request_shows_no_key() {
        use crate::provider::{
            anthropic::AnthropicProvider, gemini::GeminiProvider, mock::MockProvider,
            ollama::OllamaProvider, openai::OpenAiProvider,
        };
        use crate::settings::ProviderKind;
        let key = "sk-debug-canary-0123456789";
        for kind in [
            "anthropic",
            "openai",
            "openai-compatible",
            "ollama",
            "gemini",
            "mock",
        ] {
            let spec = super::super::ProviderSpec::for_test(
                "p",
                &format!("type = \"{kind}\"\nbase_url = \"http://127.0.0.1:9/v1\""),
                "m",
                Some(key),
            );
            let instance = match kind {
                "anthropic" => format!("{:?}", AnthropicProvider::new(spec.clone()).unwrap()),
                "openai" => format!(
                    "{:?}",
                    OpenAiProvider::new(spec.clone(), ProviderKind::Openai).unwrap()
                ),
                "openai-compatible" => format!(
                    "{:?}",
                    OpenAiProvider::new(spec.clone(), ProviderKind::OpenaiCompatible).unwrap()
                ),
                "ollama" => format!("{:?}", OllamaProvider::new(spec.clone()).unwrap()),
                "gemini" => format!("{:?}", GeminiProvider::new(spec.clone()).unwrap()),
                _ => format!("{:?}", MockProvider::new(spec.clone()).unwrap()),
            };
            let transport = format!("{:?}", Transport::new(&spec, &DIALECT_FOR_TESTS).unwrap());
            for shown in [format!("{spec:?}"), instance, transport] {
                assert!(!shown.contains("debug-canary"), "{kind}: {shown}");
            }
        }
        let spec = super::super::ProviderSpec::for_test("p", "type = \"openai\"", "m", Some(key));
        let transport = Transport::new(&spec, &DIALECT_FOR_TESTS).unwrap();
        let secret = spec.credential.as_ref().unwrap();
        let request = transport
            .post("http://127.0.0.1:9/")
            .header(
                reqwest::header::AUTHORIZATION,
                auth_header("p", "Bearer ", secret).unwrap(),
            )
            .header("x-api-key", auth_header("p", "", secret).unwrap())
            .build()
            .unwrap();
        let shown = format!("{request:?} {:?}", request.headers());
        assert!(!shown.contains("debug-canary"), "{shown}");
        assert!(request.headers().values().all(HeaderValue::is_sensitive));
    }

    #[test]
    fn configured_headers_named_like_credentials_are_sensitive() {
        let spec = super::super::ProviderSpec::for_test("p", "type = \"openai\"", "m", None);
        let transport = Transport::new(&spec, &DIALECT_FOR_TESTS).unwrap();
        let headers: std::collections::BTreeMap<String, String> = [
            ("Authorization", "Bearer sk-config-canary-123"),
            ("X-Custom-Api-Key", "sk-config-canary-456"),
            ("HTTP-Referer", "https://example.org"),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
        let request = with_config_headers(transport.get("http://127.0.0.1:9/"), &headers)
            .build()
            .unwrap();
        let h = request.headers();
        assert!(h["authorization"].is_sensitive());
        assert!(h["x-custom-api-key"].is_sensitive());
        assert!(!h["http-referer"].is_sensitive());
        assert!(!format!("{h:?}").contains("config-canary"));
    }

    const DIALECT_FOR_TESTS: Dialect = Dialect {
        error_message: |_| None,
        retry_after,
        refine: no_refinement,
    };

    /// Splits on `;`; a `!` is a framing error after the units before it.
    struct Semicolons(Vec<u8>);

    impl Framer for Semicolons {
        type Unit = String;
        fn push(&mut self, bytes: &[u8], out: &mut Vec<String>) -> Result<(), String> {
            for &b in bytes {
                match b {
                    b'!' => return Err("bang".into()),
                    b';' => out.push(String::from_utf8(std::mem::take(&mut self.0)).unwrap()),
                    _ => self.0.push(b),
                }
            }
            Ok(())
        }
        fn finish(&mut self) -> Option<String> {
            None
        }
    }

    /// `done` ends the stream, `fail` is an error, anything else is text.
    struct Words;

    impl Decoder for Words {
        type Unit = String;
        fn unit(&mut self, unit: String, out: &mut Vec<StreamEvent>) -> Result<(), ProviderError> {
            match unit.as_str() {
                "done" => out.push(StreamEvent::Done {
                    usage: provd_client::Usage::default(),
                    finish_reason: provd_client::FinishReason::Stop,
                }),
                "fail" => return Err(ProviderError::new(ErrorCode::UpstreamError, "p: fail")),
                _ => out.push(StreamEvent::Text(unit)),
            }
            Ok(())
        }
        fn ended_early(&mut self) -> ProviderError {
            ProviderError::new(ErrorCode::UpstreamError, "p: ended early")
        }
    }

    fn pumped(pieces: &[&str]) -> Vec<Result<StreamEvent, ProviderError>> {
        let mut pump = Pump::new("p", Semicolons(Vec::new()), Words);
        for piece in pieces {
            pump.feed(piece.as_bytes());
        }
        pump.end();
        std::iter::from_fn(|| pump.next_item()).collect()
    }

    fn text(t: &str) -> Result<StreamEvent, ProviderError> {
        Ok(StreamEvent::Text(t.into()))
    }

    #[test]
    fn units_before_a_framing_error_are_decoded_wherever_the_body_is_cut() {
        let whole = pumped(&["a;b;!c;"]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[..2], [text("a"), text("b")]);
        assert!(matches!(&whole[2], Err(e) if e.message.contains("malformed response: bang")));
        assert_eq!(pumped(&["a;", "b;!c;"]), whole);
        assert_eq!(pumped(&["a;b", ";!"]), whole);
    }

    #[test]
    fn nothing_follows_done_or_an_error_and_a_body_without_done_is_an_error() {
        let done = Ok(StreamEvent::Done {
            usage: provd_client::Usage::default(),
            finish_reason: provd_client::FinishReason::Stop,
        });
        assert_eq!(pumped(&["a;done;b;"]), [text("a"), done.clone()]);
        assert_eq!(pumped(&["a;", "done;", "b;!"]), [text("a"), done]);
        let failed = pumped(&["a;fail;b;"]);
        assert_eq!(failed.len(), 2);
        assert!(matches!(&failed[1], Err(e) if e.message == "p: fail"));
        let early = pumped(&["a;b"]);
        assert_eq!(early.len(), 2);
        assert!(matches!(&early[1], Err(e) if e.message == "p: ended early"));
    }
}
