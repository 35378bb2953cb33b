//! One provider instance's way to its API: the [`Transport`] over the provider's pooled
//! client ([`SharedClient`]: rustls on ring, HTTP/2 when the server offers it, no retries
//! or redirects of its own), the [`Timeouts`], and reading bodies (whole, or as the
//! stream the pump turns into events).
//!
//! Retries are not here: the request path owns them (one owner, one deadline), so this
//! layer reports each failure once, classified ([`super::errors`]).
//!
//! Every error that leaves a [`Transport`] is scrubbed ([`crate::scrub`]) of the
//! daemon's keys and the instance's own: error bodies whole, before they are quoted and
//! cut; in-stream error events once the framer assembled them; quoted headers and the
//! HTTP library's own messages. Model text is not touched.

use std::pin::Pin;
use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use provd_client::ErrorCode;
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response};

use super::errors::{error_chain, malformed, quote_body, status_error, transport_error, Dialect};
use super::pump::{self, Decoder, Framer, Pump};
use crate::provider::{EventStream, ProviderConfig, ProviderError, ProviderSpec, ProviderState};
use crate::scrub::Scrubber;

/// Largest error or non-streamed response body read into memory.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;
/// How much of a body that is not what was expected (an HTML page for a stream) is read
/// to quote its start.
const UNEXPECTED_BODY_BYTES: usize = 64 * 1024;

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
    dialect: Dialect,
    /// The key the requests carry, cut out of every error alongside the daemon's other
    /// keys (it is among them in a running daemon; this keeps it so on every path).
    own_key: Scrubber,
}

impl Transport {
    /// The transport of the instance `spec` describes, for an API that speaks `dialect`.
    pub fn new(spec: &ProviderSpec, dialect: Dialect) -> Result<Transport, ProviderError> {
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
    /// message and retry hint, which the dialect extracts. The status of every response
    /// is counted in `state` (for the metrics).
    pub async fn send(
        &self,
        request: RequestBuilder,
        state: &ProviderState,
    ) -> Result<Response, ProviderError> {
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
        state.record_upstream_status(status.as_u16());
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
    /// terminator) is read off the client's path, at most [`pump::DRAIN_BYTES`] within
    /// [`pump::DRAIN_TIME`], so that the connection goes back to the pool and the next
    /// generation pays no new TCP and TLS handshake. A stream dropped before its final
    /// event (a cancel, an error) drops its connection instead: that is how a cancel
    /// reaches the upstream.
    pub fn event_stream<F, D>(&self, response: Response, framer: F, decoder: D) -> EventStream
    where
        F: Framer,
        D: Decoder<Unit = F::Unit>,
    {
        let body = body_stream(&self.provider, response, self.timeouts);
        let pump = Pump::new(&self.provider, framer, decoder);
        pump::events(body, pump, self.own_key.clone())
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

/// A response body as it arrives, each failure classified.
pub(super) type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, ProviderError>> + Send>>;

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

/// A dialect that finds no message in any body, for tests of the transport itself.
#[cfg(test)]
pub(super) const DIALECT_FOR_TESTS: Dialect = Dialect {
    error_message: |_| None,
    retry_after: super::time::retry_after,
    refine: |_, _| {},
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_from_upstream_messages() {
        let spec = ProviderSpec::for_test("p", "type = \"openai\"", "m", Some("sk-abcdefghijkl"));
        let transport = Transport::new(&spec, DIALECT_FOR_TESTS).unwrap();
        assert_eq!(
            transport.scrub("bad key sk-abcdefghijkl given"),
            "bad key [REDACTED] given"
        );
    }
}
