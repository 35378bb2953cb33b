//! The HTTP provider skeleton: what every provider that talks to an HTTP API shares, and
//! the small trait that says what differs between the APIs.
//!
//! An API file (`openai.rs`, `anthropic.rs`, …) implements [`HttpApi`]: how to authorize
//! a request, the URL and body of a generation, how its stream is framed and decoded,
//! how a whole answer reads, how it words its failures, and how it lists its models.
//! [`HttpProvider`] is the one implementation of [`Provider`] over it: it owns the
//! spec, the [`Transport`] and the state, and runs every generation the same way (body →
//! authorize → send → the event stream, or the whole answer as events).
//!
//! The rest is split by job:
//! - [`transport`]: the pooled client, timeouts, sending and reading bodies;
//! - [`errors`]: an HTTP status and body, or a failure below HTTP, as a [`ProviderError`];
//! - [`pump`]: the stream pump, framers and decoders, clean ends and draining for reuse;
//! - [`time`]: every date and duration an upstream states (retry hints, resets);
//! - [`request`]: URLs, the key's header, configured headers;
//! - [`json`]: lenient readers for odd fields.

pub mod errors;
pub mod json;
pub mod pump;
pub mod request;
pub mod time;
pub mod transport;

use std::future::Future;
use std::time::Duration;

use provd_client::message::ProviderStatus;
use provd_client::{GenerateRequest, ModelInfo};
use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Response, Url};

pub use errors::{malformed, status_error, Dialect};
pub use json::{lenient_code, lenient_text};
// The registry's stream readers (and through them the fuzz targets) drive the real pump.
pub(crate) use pump::Pump;
pub use pump::{Decoder, Framer, DRAIN_BYTES, DRAIN_TIME};
pub use request::{auth_header, endpoint, with_config_headers};
pub use time::retry_after;
pub use transport::{
    install_crypto_provider, Answer, SharedClient, Timeouts, Transport, MAX_BODY_BYTES,
};

use super::{
    whole_answer, BoxFuture, EventStream, Provider, ProviderError, ProviderKind, ProviderSpec,
    ProviderState, StreamEvent,
};

/// What one HTTP API does its own way; everything else is [`HttpProvider`]'s.
///
/// Methods take the instance's [`ProviderSpec`] (its id, model, configuration and key);
/// the implementing type holds only what the API derives from it once (parsed URLs,
/// checked options). An API that speaks another's format (an OpenAI-compatible
/// endpoint with its own URLs and auth header, say) implements the endpoint methods
/// itself and delegates the format methods (`body`, `decoder`, `whole`, the error
/// methods) to that API's public functions, as `openai.rs` offers them.
pub trait HttpApi: std::fmt::Debug + Send + Sync + Sized + 'static {
    /// Cuts the streamed body into units: [`crate::provider::sse::SseParser`] or
    /// [`crate::provider::ndjson::NdjsonSplitter`], a new one for each body.
    type Framer: Framer + Default;
    /// Reads the units into events.
    type Decoder: Decoder<Unit = <Self::Framer as Framer>::Unit>;

    /// The provider type this instance serves.
    fn kind(&self) -> ProviderKind;

    /// What [`Provider::initialize`] checks, without network: by default that
    /// the instance has a key.
    fn initialize(&self, spec: &ProviderSpec) -> Result<(), ProviderError> {
        spec.require_credential().map(|_| ())
    }

    /// Adds the API's auth and fixed headers to a request about to be sent (the
    /// provider's configured headers follow them: [`HttpProvider::authorized`]).
    fn authorize(
        &self,
        spec: &ProviderSpec,
        request: RequestBuilder,
    ) -> Result<RequestBuilder, ProviderError>;

    /// Where a generation is posted.
    fn url(&self, spec: &ProviderSpec, request: &GenerateRequest) -> Result<Url, ProviderError>;

    /// The JSON body of a generation.
    fn body(
        &self,
        spec: &ProviderSpec,
        request: &GenerateRequest,
    ) -> Result<serde_json::Value, ProviderError>;

    /// A decoder for one streamed body; its errors name `provider`.
    fn decoder(&self, provider: &str) -> Self::Decoder;

    /// The events of a whole answer: to a non-streamed request, or to a streamed one
    /// (`streamed`) that a gateway answered whole. [`Transport::parse_whole`] parses it.
    fn whole(
        &self,
        spec: &ProviderSpec,
        http: &Transport,
        body: Vec<u8>,
        streamed: bool,
    ) -> Result<Vec<StreamEvent>, ProviderError>;

    /// The models the API offers; [`HttpProvider::send`] sends authorized requests, and
    /// [`paginated`] follows a list handed out in pages.
    fn list_models(
        provider: &HttpProvider<Self>,
    ) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>>;

    /// The upstream's own message from an error body.
    fn error_message(body: &[u8]) -> Option<String>;

    /// The retry hint of an error response's headers: by default the standard ones
    /// ([`retry_after`]).
    fn retry_after(headers: &HeaderMap) -> Option<Duration> {
        retry_after(headers)
    }

    /// Corrects the status-based classification from the error body: a code the status
    /// gets wrong (Gemini refuses a bad key with 400), a retry hint kept in the body
    /// rather than a header. Runs last; by default changes nothing.
    fn refine(error: &mut ProviderError, body: &[u8]) {
        let _ = (error, body);
    }

    /// A failed send as this API's users need to read it (Ollama adds where it looked
    /// for the server); by default unchanged.
    fn send_failed(&self, error: ProviderError) -> ProviderError {
        error
    }
}

/// A provider instance over an HTTP API: the one [`Provider`] of every HTTP
/// provider type, `A` saying what its API does its own way.
#[derive(Debug)]
pub struct HttpProvider<A> {
    spec: ProviderSpec,
    api: A,
    http: Transport,
    state: ProviderState,
}

impl<A: HttpApi> HttpProvider<A> {
    /// The instance `spec` describes, speaking `api`.
    pub fn with_api(spec: ProviderSpec, api: A) -> Result<HttpProvider<A>, ProviderError> {
        Ok(HttpProvider {
            http: Transport::new(&spec, Dialect::of::<A>())?,
            spec,
            api,
            state: ProviderState::default(),
        })
    }

    /// The instance's spec.
    pub fn spec(&self) -> &ProviderSpec {
        &self.spec
    }

    /// The API's own part.
    pub fn api(&self) -> &A {
        &self.api
    }

    /// The instance's transport.
    pub fn transport(&self) -> &Transport {
        &self.http
    }

    /// `request` with the API's auth and headers, then the provider's configured ones.
    pub fn authorized(&self, request: RequestBuilder) -> Result<RequestBuilder, ProviderError> {
        let request = self.api.authorize(&self.spec, request)?;
        Ok(with_config_headers(request, &self.spec.config.headers))
    }

    /// Authorizes and sends a request; a success status is returned, anything else is
    /// classified ([`Transport::send`], [`HttpApi::send_failed`]).
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, ProviderError> {
        let request = self.authorized(request)?;
        self.http
            .send(request, &self.state)
            .await
            .map_err(|e| self.api.send_failed(e))
    }

    /// The JSON body of a generation.
    pub fn body(&self, request: &GenerateRequest) -> Result<serde_json::Value, ProviderError> {
        self.api.body(&self.spec, request)
    }
}

impl<A: HttpApi> Provider for HttpProvider<A> {
    fn kind(&self) -> ProviderKind {
        self.api.kind()
    }

    fn model(&self) -> &str {
        &self.spec.model
    }

    fn state(&self) -> &ProviderState {
        &self.state
    }

    fn initialize(&self) -> BoxFuture<'_, Result<(), ProviderError>> {
        Box::pin(async {
            self.api.initialize(&self.spec)?;
            self.state.set_status(ProviderStatus::Ready);
            Ok(())
        })
    }

    fn generate(
        &self,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
        Box::pin(async move {
            let url = self.api.url(&self.spec, &request)?;
            let body = self.body(&request)?;
            let response = self.send(self.http.post(url).json(&body)).await?;
            match self.http.answer(response, request.stream).await? {
                Answer::Stream(response) => Ok(self.http.event_stream(
                    response,
                    A::Framer::default(),
                    self.api.decoder(&self.spec.id),
                )),
                // A whole answer serves a streaming request too (some gateways send one).
                Answer::Whole(body) => {
                    let events = self
                        .api
                        .whole(&self.spec, &self.http, body, request.stream)?;
                    Ok(whole_answer(events))
                }
            }
        })
    }

    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>> {
        A::list_models(self)
    }
}

/// Pages of a paginated model list followed before giving up on the rest: a bound
/// against an upstream whose cursor never runs out, far above the few dozen models an
/// API lists.
pub const MAX_MODEL_PAGES: usize = 20;

/// A model list that an API hands out in pages: `page` fetches the page after `cursor`
/// (the first for `None`) and gives its models and the next page's cursor, `None` on
/// the last page. Past [`MAX_MODEL_PAGES`] the pages read so far are the list, with a
/// warning.
pub async fn paginated<F, Fut>(provider: &str, mut page: F) -> Result<Vec<ModelInfo>, ProviderError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<ModelInfo>, Option<String>), ProviderError>>,
{
    let mut models = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_MODEL_PAGES {
        let (listed, next) = page(cursor).await?;
        models.extend(listed);
        cursor = next;
        if cursor.is_none() {
            return Ok(models);
        }
    }
    tracing::warn!(
        provider = %provider,
        pages = MAX_MODEL_PAGES,
        listed = models.len(),
        "the models list still had more pages; listing the first ones only"
    );
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn debug_of_every_provider_spec_transport_and_request_shows_no_key() {
        let key = "sk-debug-canary-0123456789";
        for row in crate::provider::registry::TYPES {
            let kind = row.name();
            let spec = ProviderSpec::for_test(
                "p",
                &format!("type = \"{kind}\"\nbase_url = \"http://127.0.0.1:9/v1\""),
                "m",
                Some(key),
            );
            let instance = format!("{:?}", (row.build)(spec.clone()).unwrap());
            let transport = format!(
                "{:?}",
                Transport::new(&spec, transport::DIALECT_FOR_TESTS).unwrap()
            );
            for shown in [format!("{spec:?}"), instance, transport] {
                assert!(!shown.contains("debug-canary"), "{kind}: {shown}");
            }
        }
        let spec = ProviderSpec::for_test("p", "type = \"openai\"", "m", Some(key));
        let transport = Transport::new(&spec, transport::DIALECT_FOR_TESTS).unwrap();
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
}
