//! The dialect-neutral core of the front door: a generation started for an HTTP caller,
//! read as a sequence of [`Event`]s.
//!
//! It goes through the very path of the MessagePack `generate`: the request is routed
//! with one configuration snapshot ([`crate::resilience::targets`]: aliases, fallbacks),
//! the first target must be a provider the caller may use and the others it may not are
//! skipped, the generation holds its uid's place under `limits.max_streams_per_uid` and
//! counts in `status` through the streams registry, and it runs as
//! [`crate::server::generation::run`], whose frames this module reads back. Reusing the
//! runner whole (rather than a second copy of it for HTTP) keeps one place for retries,
//! deadlines, keepalives, the drain and the usage of a cancelled stream; the cost is one
//! MessagePack encode and decode per chunk, a few hundred nanoseconds.
//!
//! Dropping a [`Generation`] (hyper drops the response body when the HTTP client closes
//! its connection) cancels it, which drops the provider's stream and so the upstream
//! request, as a MessagePack `cancel` does.

use provd_client::frame::HEADER_BYTES;
use provd_client::message::{self, notification, Chunk, Envelope, GenerateDone};
use provd_client::{ErrorCode, GenerateRequest, ToolCallDelta, WireError};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::caller::Caller;
use super::error::{ApiError, CLIENT_CLOSED};
use super::Front;
use crate::config::Config;
use crate::server::generation::{self, Plan, StreamCtx};
use crate::server::streams::Streams;

/// The request id a generation has in its own one-request registry.
const GENERATION_ID: u32 = 1;

/// What a running generation yields.
#[derive(Debug)]
pub enum Event {
    /// A piece of text.
    Text(String),
    /// A piece of a tool call (sent only to requests with tools): the first piece of a
    /// call carries its id and name, later ones more of its arguments.
    ToolCall(ToolCallDelta),
    /// A piece of the model's reasoning (sent only to requests that asked to see it).
    Reasoning(String),
    /// The upstream is still working (no text for a while): a dialect may write a
    /// comment or a ping, which also finds out early that the client left.
    Keepalive,
    /// The end: model, usage, finish reason (and the whole text when not streamed).
    Done(GenerateDone),
    /// The end, failed.
    Failed(WireError),
}

/// Where a request's `model` sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRoute {
    /// The provider, or `None` for an alias or the default provider.
    pub provider: Option<String>,
    /// The model, or `None` for the provider's default.
    pub model: Option<String>,
}

/// Resolves a model name: `provider/model` splits at the first `/` only when the prefix
/// is a configured provider id; otherwise the whole name is an alias or a model of the
/// default provider. With no default provider, a name that is neither is a `not_found`
/// listing the configured providers (an unknown model of a known provider is the
/// upstream's to answer).
pub fn route_model(config: &Config, name: &str) -> Result<ModelRoute, WireError> {
    if let Some((prefix, rest)) = name.split_once('/') {
        if config.providers.contains_key(prefix) {
            return Ok(ModelRoute {
                provider: Some(prefix.to_owned()),
                model: (!rest.is_empty()).then(|| rest.to_owned()),
            });
        }
    }
    if name.is_empty() {
        return Ok(ModelRoute {
            provider: None,
            model: None,
        });
    }
    if config.aliases.contains_key(name) || config.default_provider().is_some() {
        return Ok(ModelRoute {
            provider: None,
            model: Some(name.to_owned()),
        });
    }
    let configured = config
        .providers
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let named = match name.split_once('/') {
        Some((prefix, _)) => format!("unknown provider '{}'", untrusted_name(prefix)),
        None => format!(
            "model '{}' is not an alias and there is no default provider",
            untrusted_name(name)
        ),
    };
    Err(WireError::new(
        ErrorCode::NotFound,
        format!("{named}; name a model as provider/model (configured providers: {configured})"),
    ))
}

fn untrusted_name(s: &str) -> String {
    crate::server::connection::truncate(s, 128)
}

/// A generation running for an HTTP caller. Dropping it before its end cancels it.
pub struct Generation {
    events: mpsc::Receiver<Vec<u8>>,
    /// Cancels the generation when dropped.
    cancel: Option<DropGuard>,
    ended: bool,
    what: String,
}

impl Generation {
    /// Starts `request` for `caller` (its `provider` and `model` already resolved, see
    /// [`route_model`]). Refused before anything runs: the daemon draining, a provider
    /// the caller may not use, the uid at its stream limit, a spent budget or a full
    /// request window ([`crate::quota`]).
    pub fn start(
        front: &Front,
        caller: &Caller,
        request: GenerateRequest,
    ) -> Result<Generation, ApiError> {
        if front.shutdown.is_stopping() {
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                "provd is shutting down and starts no new generations",
            ));
        }
        let daemon = &front.daemon;
        let config = daemon.factory.config();
        let mut targets = crate::resilience::targets(&config, &request);
        if let Some(first) = targets.first().filter(|t| !t.provider.is_empty()) {
            caller.check_provider(&first.provider)?;
        }
        targets.retain(|t| t.provider.is_empty() || caller.check_provider(&t.provider).is_ok());
        let requester = crate::server::accounting::Requester::of(&caller.grant);
        let cancel = CancellationToken::new();
        let streams = Streams::default();
        let registration = streams.register_generation(
            GENERATION_ID,
            &cancel,
            daemon,
            &requester,
            &config.limits,
        )?;
        let what = format!(
            "{}/{}",
            targets.first().map_or("", |t| t.provider.as_str()),
            request.model.as_deref().unwrap_or("(default model)")
        );
        let (out, events) = mpsc::channel(daemon.limits.connection_queue_frames);
        let ctx = StreamCtx {
            daemon: daemon.clone(),
            out,
            peer_gone: cancel.clone(),
            shutdown: front.shutdown.clone(),
            streams,
        };
        front.tasks.spawn(generation::run(
            GENERATION_ID,
            request,
            Plan {
                config,
                targets,
                requester,
            },
            registration,
            ctx,
        ));
        Ok(Generation {
            events,
            cancel: Some(cancel.drop_guard()),
            ended: false,
            what,
        })
    }

    /// The next event; `None` after the end.
    pub async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            let Some(frame) = self.events.recv().await else {
                self.ended = true;
                return Some(Event::Failed(WireError::new(
                    ErrorCode::Internal,
                    "the generation ended without a final reply",
                )));
            };
            match decode(&frame) {
                Ok(Some(event)) => {
                    if matches!(event, Event::Done(_) | Event::Failed(_)) {
                        self.ended = true;
                        // Ended: nothing left to cancel.
                        if let Some(guard) = self.cancel.take() {
                            guard.disarm();
                        }
                    }
                    return Some(event);
                }
                Ok(None) => continue,
                Err(e) => {
                    self.ended = true;
                    return Some(Event::Failed(e));
                }
            }
        }
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if !self.ended {
            tracing::info!(
                status = CLIENT_CLOSED,
                generation = %crate::untrusted::untrusted(&self.what),
                "HTTP client closed its connection before the end; cancelling the generation"
            );
        }
    }
}

/// The event in one frame of the generation runner (`None`: a frame the HTTP side has
/// no use for).
fn decode(frame: &[u8]) -> Result<Option<Event>, WireError> {
    let internal = |e: provd_client::frame::FrameError| {
        WireError::new(
            ErrorCode::Internal,
            format!("cannot read the generation's frame: {e}"),
        )
    };
    let payload = frame.get(HEADER_BYTES..).unwrap_or_default();
    match Envelope::parse(payload).map_err(internal)? {
        Envelope::Notification { method, params } if method == notification::CHUNK => {
            let chunk: Chunk = message::decode(params).map_err(internal)?;
            Ok(Some(match (chunk.tool_call, chunk.reasoning) {
                (Some(piece), _) => Event::ToolCall(piece),
                (None, Some(reasoning)) => Event::Reasoning(reasoning),
                (None, None) => Event::Text(chunk.text),
            }))
        }
        Envelope::Notification { method, .. } if method == notification::KEEPALIVE => {
            Ok(Some(Event::Keepalive))
        }
        Envelope::Notification { .. } | Envelope::Request { .. } => Ok(None),
        Envelope::Reply {
            outcome: Ok(result),
            ..
        } => Ok(Some(Event::Done(
            message::decode(result).map_err(internal)?,
        ))),
        Envelope::Reply {
            outcome: Err(e), ..
        } => Ok(Some(Event::Failed(e))),
    }
}

/// Collects a generation started with `stream: false`: its final reply carries the text.
pub async fn whole(mut generation: Generation) -> Result<GenerateDone, WireError> {
    let mut text = String::new();
    while let Some(event) = generation.next().await {
        match event {
            Event::Text(piece) => text.push_str(&piece),
            // A whole answer carries its calls and reasoning in the final reply.
            Event::ToolCall(_) | Event::Reasoning(_) | Event::Keepalive => {}
            Event::Done(mut done) => {
                if done.text.is_none() {
                    done.text = Some(text);
                }
                return Ok(done);
            }
            Event::Failed(e) => return Err(e),
        }
    }
    Err(WireError::new(
        ErrorCode::Internal,
        "the generation ended without a final reply",
    ))
}

/// Decides the caller of a call, or the reply to send instead.
pub fn caller(call: &super::Call) -> Result<Caller, ApiError> {
    call.caller.clone().map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn a_model_name_splits_only_at_a_configured_provider_prefix() {
        let c = config(
            "[daemon]\ndefault_provider = \"a\"\n[providers.a]\ntype = \"mock\"\n\
             [providers.b]\ntype = \"mock\"\n[aliases]\nfast = [\"b/x\"]\n",
        );
        let route = |p: Option<&str>, m: Option<&str>| ModelRoute {
            provider: p.map(str::to_owned),
            model: m.map(str::to_owned),
        };
        assert_eq!(
            route_model(&c, "b/m-1").unwrap(),
            route(Some("b"), Some("m-1"))
        );
        assert_eq!(
            route_model(&c, "b/org/m").unwrap(),
            route(Some("b"), Some("org/m"))
        );
        assert_eq!(route_model(&c, "b/").unwrap(), route(Some("b"), None));
        assert_eq!(
            route_model(&c, "meta-llama/llama-3").unwrap(),
            route(None, Some("meta-llama/llama-3"))
        );
        assert_eq!(route_model(&c, "fast").unwrap(), route(None, Some("fast")));
    }

    #[test]
    fn without_a_default_provider_an_unknown_prefix_is_not_found_listing_the_providers() {
        let c = config("[providers.a]\ntype = \"mock\"\n[providers.b]\ntype = \"mock\"\n");
        let e = route_model(&c, "nope/m").unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(
            e.message.contains("unknown provider 'nope'"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("configured providers: a, b"),
            "{}",
            e.message
        );
        assert_eq!(
            route_model(&c, "plain").unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
