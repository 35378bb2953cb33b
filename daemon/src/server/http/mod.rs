//! The HTTP front door: the APIs every LLM tool already speaks, on a Unix socket beside
//! the MessagePack one, so pointing a tool's base URL at provd is all it takes; and, when
//! `[http] listen` asks, on a loopback TCP port for tools that take only a URL (there a
//! provd token names the caller, see [`caller`]).
//!
//! Layering: [`connection`] accepts and admits a connection (the peer's uid from
//! `SO_PEERCRED`, the per-uid limits of [`super::admission`]) and serves it with hyper
//! under the header-read and keep-alive timeouts; this module routes each request to one
//! function per route; [`caller`] decides who is calling under the policy in force (a
//! provd token in `Authorization`, `x-api-key` or `api-key` narrows it); [`core`] starts
//! a generation through the same path as the MessagePack `generate` (routing, aliases
//! and fallbacks, admission, the streams registry, one configuration snapshot) and hands
//! its events to the dialect; [`error`] maps the one [`provd_client::ErrorCode`] to an
//! HTTP status; [`body`] reads a bounded JSON body; [`catalogue`] lists the models a
//! caller may use; [`metrics`] renders the daemon's metrics for Prometheus. Each dialect ([`openai`], …) is a codec over those: it parses its
//! request into a [`provd_client::GenerateRequest`] and writes the events in its own
//! shape, errors included.
//!
//! Adding a dialect: a module with one function per route taking a [`Call`], and a line
//! per route in [`route`].

pub mod anthropic;
pub mod body;
pub mod caller;
pub mod catalogue;
pub mod connection;
pub mod content;
pub mod core;
pub mod error;
pub mod generate;
pub mod metrics;
pub mod ollama;
pub mod openai;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

use super::Daemon;
use crate::shutdown::Shutdown;
use caller::Caller;
use provd_client::WireError;

pub use connection::HttpServer;

/// A response body: whole or streamed.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;
/// A response.
pub type Response = http::Response<Body>;
/// A request as hyper hands it over.
pub type Request = http::Request<hyper::body::Incoming>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into()).boxed_unsync()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    let mut response = http::Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// What every request shares: the daemon, its shutdown, the model catalogue.
#[derive(Debug)]
pub struct Front {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// Its shutdown (a generation stops at the drain deadline like a MessagePack one).
    pub shutdown: Shutdown,
    /// The models listed by `/v1/models`, cached.
    pub catalogue: catalogue::Catalogue,
    /// Generations running for HTTP callers, waited for by the drain.
    pub tasks: tokio_util::task::TaskTracker,
}

/// One request on its way to a route: the request, who sent it (or why they may not),
/// and the shared state.
pub struct Call {
    /// The request.
    pub request: Request,
    /// Who is calling, under the policy in force; the error (a uid not allowed, a revoked
    /// token, a connection over its uid's limit) is the reply, in the route's own shape.
    pub caller: Result<Caller, WireError>,
    /// Shared state.
    pub front: Arc<Front>,
}

/// Routes a request: one line per route, each to one function.
pub async fn route(call: Call) -> Response {
    let path = call.request.uri().path().to_owned();
    let method = call.request.method().clone();
    match (path.as_str(), &method) {
        ("/health", &Method::GET | &Method::HEAD) => health(&call.front),
        ("/v1/chat/completions", &Method::POST) => openai::chat_completions(call).await,
        // An Anthropic SDK lists models on the same path; its version header tells it apart.
        ("/v1/models", &Method::GET) if call.request.headers().contains_key("anthropic-version") => {
            anthropic::models(call).await
        }
        ("/v1/models", &Method::GET) => openai::models(call).await,
        (anthropic::MESSAGES_PATH, &Method::POST) => anthropic::messages(call).await,
        ("/api/chat", &Method::POST) => ollama::chat(call).await,
        ("/api/generate", &Method::POST) => ollama::generate(call).await,
        ("/api/tags", &Method::GET) => ollama::tags(call).await,
        ("/generate", &Method::POST) => generate::route(call).await,
        ("/metrics", &Method::GET | &Method::HEAD) => metrics::route(call).await,
        ("/health" | "/v1/models" | "/api/tags" | "/metrics", _) => not_allowed("GET"),
        (
            "/v1/chat/completions" | anthropic::MESSAGES_PATH | "/api/chat" | "/api/generate"
            | "/generate",
            _,
        ) => not_allowed("POST"),
        _ => openai::error_response(&error::ApiError::new(
            provd_client::ErrorCode::NotFound,
            format!(
                "no route for {method} {}; provd serves GET /health, POST /v1/chat/completions, GET /v1/models, POST /v1/messages, POST /api/chat, POST /api/generate, GET /api/tags, POST /generate and GET /metrics",
                crate::server::connection::truncate(&path, 128)
            ),
        )),
    }
}

/// `GET /health`: 200 while serving, 503 once draining, so a probe sees the stop.
fn health(front: &Front) -> Response {
    if front.shutdown.is_stopping() {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"status": "draining"}),
        )
    } else {
        json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
    }
}

fn not_allowed(allow: &'static str) -> Response {
    let mut response = openai::error_response(&error::ApiError::new(
        provd_client::ErrorCode::InvalidRequest,
        format!("method not allowed here; this route takes {allow}"),
    ));
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    response
}

/// The first event of a generation that is not a keepalive: a failure here is still
/// answered with its HTTP status, before any byte of a stream is sent.
pub async fn first_event(generation: &mut core::Generation) -> Result<core::Event, WireError> {
    loop {
        match generation.next().await {
            Some(core::Event::Keepalive) => continue,
            Some(core::Event::Failed(e)) => return Err(e),
            Some(event) => return Ok(event),
            None => {
                return Err(WireError::new(
                    provd_client::ErrorCode::Internal,
                    "the generation ended without a final reply",
                ))
            }
        }
    }
}

/// A streamed body: `first`, then each later event of `generation`, each written by
/// `encode` (nothing, for an event the dialect does not write), which says (`true`) when
/// the one it wrote was the last. Dropping the body (the client left) drops the
/// generation, which cancels it and its upstream request.
pub fn event_stream<F>(generation: core::Generation, first: core::Event, encode: F) -> Body
where
    F: FnMut(core::Event) -> (Option<Bytes>, bool) + Send + 'static,
{
    let state = (generation, Some(first), false, encode);
    let frames = futures_util::stream::unfold(
        state,
        |(mut generation, mut pending, mut over, mut encode)| async move {
            loop {
                if over {
                    return None;
                }
                let event = match pending.take() {
                    Some(event) => event,
                    None => generation.next().await?,
                };
                let (bytes, last) = encode(event);
                over = last;
                if let Some(bytes) = bytes.filter(|b| !b.is_empty()) {
                    return Some((
                        Ok::<_, Infallible>(hyper::body::Frame::data(bytes)),
                        (generation, pending, over, encode),
                    ));
                }
            }
        },
    );
    http_body_util::StreamBody::new(frames).boxed_unsync()
}

/// A streamed response of `content_type` with `body`.
pub fn streamed(content_type: &'static str, body: Body) -> Response {
    let mut response = http::Response::new(body);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

/// Resolves the model a dialect's request names into its provider and model, as every
/// front door does (see [`core::route_model`]).
pub fn resolve(
    config: &crate::config::Config,
    request: &mut provd_client::GenerateRequest,
) -> Result<(), WireError> {
    if request.provider.is_none() {
        if let Some(name) = request.model.take() {
            let route = core::route_model(config, &name)?;
            request.provider = route.provider;
            request.model = route.model;
        }
    }
    Ok(())
}

/// A refusal the front door decided (who is calling, the body's size, routing, admission)
/// in a dialect's error shape (`shape` gives its body for a code and message), with the
/// front door's status (which may be more precise than the code's: 413) and `Retry-After`.
pub fn refusal(
    e: &error::ApiError,
    shape: impl FnOnce(provd_client::ErrorCode, &str) -> serde_json::Value,
) -> Response {
    let body = shape(e.wire.code, &e.wire.message);
    let mut response = json(e.status, &body);
    e.apply(&mut response);
    response
}
