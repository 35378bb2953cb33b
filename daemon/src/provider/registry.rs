//! The one table of provider types: everything the rest of the daemon asks about a type,
//! one row per [`ProviderKind`].
//!
//! Like ripgrep's `default_types.rs`, the table is data, and it is the only list: the
//! factory builds instances from [`ProviderType::build`], configuration validation checks
//! options through [`ProviderType::options`] (reached from `config.rs` by the
//! [`TypeRules`] impl below), the key lookup and the `.env` import read
//! [`ProviderType::key_env`] (`credentials/keys.rs`, `credentials/dotenv.rs`), the factory
//! serves [`ProviderType::default_model`] when nothing names a model, and the
//! `provider_streams` fuzz target finds decoders by [`StreamDecoder::name`]. None of them
//! matches on a type.
//!
//! [`ProviderKind`] itself is declared in `crate::settings`, beside the settings a provider
//! is built from, because the configuration (which must not import provider code) parses
//! it; its variants and names are one list there, and this table has a row for each (a
//! test checks every kind has exactly one).
//!
//! # Adding a provider type
//!
//! 1. `crate::settings`: one line in `provider_kinds!`, `Variant => "config-name",` with a
//!    doc line (the name is what `type = "…"` accepts and what `status` shows).
//! 2. `provider/<name>.rs`: the provider (a [`Provider`] built from a
//!    [`ProviderSpec`]), its options parser if it takes `[providers.<id>.options]`, and its
//!    stream decoder; add `pub mod <name>;` to `provider/mod.rs`.
//! 3. This file: one row in [`TYPES`]: the key variables (most preferred first; they are
//!    the defaults of `api_key_env`, looked up in the daemon's environment and taken from
//!    `.env` files), the base-URL variable if the type has one (DECISIONS allow only
//!    `AZURE_OPENAI_ENDPOINT`; none else, so an `OPENAI_BASE_URL` meant for a client never
//!    makes the daemon call itself; the factory reads it when `base_url` is not
//!    configured), the default base URL, the default model if the type has its own, the
//!    constructor, the options check (`None`: the type takes none and refuses any), and
//!    the stream decoder: a new decoder gets a new name, a type reading an existing
//!    format shares that decoder (`openai-compatible` shares `openai`'s).
//! 4. Tests: unit tests beside the provider (its body, decoder, errors), the shared
//!    conformance checks against a faithful mock upstream in `tests/src/apis/`, an
//!    end-to-end `tests/tests/provider_<name>.rs`, seeds for the `provider_streams` corpus
//!    (`stream_bodies` in `tests/tests/fuzz_corpus.rs`, keyed by the decoder's name) and a
//!    `config` seed. The tests of this file check that every kind has its row and that
//!    its name is what the configuration accepts; add a new decoder's name to
//!    `decoder_names_are_unique_per_decoder_and_found_by_name`, which pins the names the
//!    corpus uses.
//! 5. Docs: the README's provider list and configuration, `client/PROTOCOL.md` if the
//!    `creds_import` variables change, `fuzz/README.md`'s `provider_streams` row.
//!
//! Nothing else changes: the factory, configuration validation, the key lookup, the
//! `.env` import and the fuzz target read the row.

use std::sync::Arc;

use super::anthropic::{AnthropicOptions, AnthropicProvider, EventDecoder};
use super::gemini::{GeminiProvider, ResponseDecoder};
use super::http::{Decoder, Framer, Pump};
use super::mock::{MockOptions, MockProvider};
use super::ndjson::NdjsonSplitter;
use super::ollama::{ChatDecoder, OllamaProvider};
use super::openai::{ChunkDecoder, OpenAiProvider};
use super::sse::SseParser;
use super::{Provider, ProviderError, ProviderSpec, StreamEvent};
use crate::settings::{Capability, OptionError, ProviderKind, TypeRules};

/// Builds a provider instance from its spec. Cheap and synchronous: network work belongs
/// in [`Provider::initialize`].
pub type Constructor = fn(ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError>;

/// Checks a type's `[providers.<id>.options]` table.
pub type OptionsCheck = fn(&toml::Table) -> Result<(), OptionError>;

/// What a stream decoder made of a body: its events in order, ending with `Done` or an
/// error.
pub type Decoded = Vec<Result<StreamEvent, ProviderError>>;

/// A type's reading of its streamed response body, behind the real `Pump` of
/// `provider::http`, for the `provider_streams` fuzz target and its corpus replay.
#[derive(Clone, Copy)]
pub struct StreamDecoder {
    /// The name a fuzz input starts with to choose this decoder. Types that read the same
    /// stream (`openai`, `openai-compatible`) share one decoder and its name, and a name
    /// never changes once inputs in the corpus use it.
    pub name: &'static str,
    /// Decodes a body fed in these pieces; errors name `provider`.
    pub decode: fn(provider: &str, pieces: &[&[u8]]) -> Decoded,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// One provider type: everything the daemon asks about it.
#[derive(Debug)]
pub struct ProviderType {
    /// The type, whose name (`kind.as_str()`) the configuration and the wire use.
    pub kind: ProviderKind,
    /// The environment variables that hold its key, most preferred first: the default
    /// of `api_key_env`, and the variables a `.env` file gives it (the first is the
    /// primary, the others are alternative names, beaten by the first).
    pub key_env: &'static [&'static str],
    /// The environment variable the daemon reads its base URL from when the configuration
    /// gives none. Only `AZURE_OPENAI_ENDPOINT` may ever be one (DECISIONS, "Structure");
    /// no type has one yet.
    pub base_url_env: Option<&'static str>,
    /// The API root used when the configuration gives no `base_url`; `None` when the type
    /// needs one (`openai-compatible`) or calls nothing (`mock`).
    pub default_base_url: Option<&'static str>,
    /// The model served when neither the request nor `default_model` names one.
    pub default_model: Option<&'static str>,
    /// Builds an instance.
    pub build: Constructor,
    /// Checks its options; `None`: it takes none, and any key is refused.
    pub options: Option<OptionsCheck>,
    /// Its stream decoder; `None` for a type that streams nothing over HTTP (`mock`).
    pub stream: Option<StreamDecoder>,
    /// What its API can do ([`Capability`]), the default of a provider's
    /// `capabilities`: what [`super::capabilities::check`] enforces when the
    /// configuration lists none.
    pub capabilities: &'static [Capability],
}

impl ProviderType {
    /// The name used in the config and on the wire.
    pub fn name(&self) -> &'static str {
        self.kind.as_str()
    }

    /// Checks `[providers.<id>.options]`; a type without options refuses any key.
    pub fn check_options(&self, options: &toml::Table) -> Result<(), OptionError> {
        match self.options {
            Some(check) => check(options),
            None => match options.keys().next() {
                Some(field) => Err((
                    field.clone(),
                    format!("is not an option of type {} (it has none)", self.kind),
                )),
                None => Ok(()),
            },
        }
    }
}

/// Feeds `pieces` through `framer` and `decoder` as `Transport::event_stream` does.
fn pump<F, D>(framer: F, decoder: D, provider: &str, pieces: &[&[u8]]) -> Decoded
where
    F: Framer,
    D: Decoder<Unit = F::Unit>,
{
    let mut pump = Pump::new(provider, framer, decoder);
    for piece in pieces {
        // The body is no longer read once the stream is over.
        if pump.is_finished() {
            break;
        }
        pump.feed(piece);
    }
    pump.end();
    std::iter::from_fn(|| pump.next_item()).collect()
}

const OPENAI_STREAM: StreamDecoder = StreamDecoder {
    name: "openai",
    decode: |provider, pieces| {
        pump(
            SseParser::new(),
            ChunkDecoder::new(provider),
            provider,
            pieces,
        )
    },
};

// The capability names read as a list in each row.
#[allow(clippy::enum_glob_use)]
use Capability::*;

/// Every provider type this build has, one row each.
pub static TYPES: &[ProviderType] = &[
    ProviderType {
        kind: ProviderKind::Anthropic,
        key_env: &["ANTHROPIC_API_KEY"],
        base_url_env: None,
        default_base_url: Some(super::anthropic::DEFAULT_BASE_URL),
        default_model: None,
        build: |spec| Ok(Arc::new(AnthropicProvider::new(spec)?)),
        options: Some(|table| AnthropicOptions::from_table(table).map(drop)),
        stream: Some(StreamDecoder {
            name: "anthropic",
            decode: |provider, pieces| {
                pump(
                    SseParser::new(),
                    EventDecoder::new(provider),
                    provider,
                    pieces,
                )
            },
        }),
        capabilities: &[Streaming, Tools, JsonSchema, Reasoning, Images, ImageUrls],
    },
    ProviderType {
        kind: ProviderKind::Openai,
        key_env: &["OPENAI_API_KEY"],
        base_url_env: None,
        default_base_url: Some(super::openai::DEFAULT_BASE_URL),
        default_model: None,
        build: |spec| Ok(Arc::new(OpenAiProvider::new(spec, ProviderKind::Openai)?)),
        options: None,
        stream: Some(OPENAI_STREAM),
        capabilities: &[
            Streaming, Tools, JsonObject, JsonSchema, Reasoning, Images, ImageUrls,
        ],
    },
    ProviderType {
        kind: ProviderKind::OpenaiCompatible,
        key_env: &[],
        base_url_env: None,
        default_base_url: None,
        default_model: None,
        build: |spec| {
            Ok(Arc::new(OpenAiProvider::new(
                spec,
                ProviderKind::OpenaiCompatible,
            )?))
        },
        options: None,
        stream: Some(OPENAI_STREAM),
        // Reasoning: `reasoning_effort` is sent and `reasoning_content` read; a server
        // that knows neither ignores the first and sends no second.
        capabilities: &[
            Streaming, Tools, JsonObject, JsonSchema, Reasoning, Images, ImageUrls,
        ],
    },
    ProviderType {
        kind: ProviderKind::Ollama,
        key_env: &[],
        base_url_env: None,
        default_base_url: Some(super::ollama::DEFAULT_BASE_URL),
        default_model: None,
        build: |spec| Ok(Arc::new(OllamaProvider::new(spec)?)),
        options: None,
        stream: Some(StreamDecoder {
            name: "ollama",
            decode: |provider, pieces| {
                pump(
                    NdjsonSplitter::new(),
                    ChatDecoder::new(provider),
                    provider,
                    pieces,
                )
            },
        }),
        capabilities: &[Streaming, Tools, JsonObject, JsonSchema, Reasoning, Images],
    },
    ProviderType {
        kind: ProviderKind::Gemini,
        // Google documents both; GEMINI_API_KEY wins when both are set.
        key_env: &["GEMINI_API_KEY", "GOOGLE_API_KEY"],
        base_url_env: None,
        default_base_url: Some(super::gemini::DEFAULT_BASE_URL),
        default_model: None,
        build: |spec| Ok(Arc::new(GeminiProvider::new(spec)?)),
        options: None,
        stream: Some(StreamDecoder {
            name: "gemini",
            decode: |provider, pieces| {
                pump(
                    SseParser::new(),
                    ResponseDecoder::new(provider),
                    provider,
                    pieces,
                )
            },
        }),
        capabilities: &[Streaming, Tools, JsonObject, JsonSchema, Reasoning, Images],
    },
    ProviderType {
        kind: ProviderKind::AzureOpenai,
        key_env: &["AZURE_OPENAI_API_KEY"],
        base_url_env: Some(super::azure::ENDPOINT_ENV),
        default_base_url: None,
        default_model: None,
        build: |spec| Ok(Arc::new(super::azure::new(spec)?)),
        options: Some(|table| super::azure::AzureOptions::from_table(table).map(drop)),
        stream: Some(OPENAI_STREAM),
        capabilities: &[
            Streaming, Tools, JsonObject, JsonSchema, Reasoning, Images, ImageUrls,
        ],
    },
    ProviderType {
        kind: ProviderKind::Mock,
        key_env: &[],
        base_url_env: None,
        default_base_url: None,
        default_model: Some(super::mock::DEFAULT_MODEL),
        build: |spec| Ok(Arc::new(MockProvider::new(spec)?)),
        options: Some(|table| MockOptions::from_table(table).map(drop)),
        stream: None,
        capabilities: &[
            Streaming, Tools, JsonObject, JsonSchema, Reasoning, Images, ImageUrls,
        ],
    },
];

/// The row of `kind`.
pub fn row(kind: ProviderKind) -> &'static ProviderType {
    TYPES
        .iter()
        .find(|t| t.kind == kind)
        .expect("every provider kind has a row in provider::registry::TYPES")
}

/// The row whose name is `name` (`"anthropic"`), if any.
pub fn by_name(name: &str) -> Option<&'static ProviderType> {
    TYPES.iter().find(|t| t.name() == name)
}

/// Every stream decoder, each once, in the table's order.
pub fn stream_decoders() -> Vec<StreamDecoder> {
    let mut decoders: Vec<StreamDecoder> = Vec::new();
    for decoder in TYPES.iter().filter_map(|t| t.stream) {
        if !decoders.iter().any(|d| d.name == decoder.name) {
            decoders.push(decoder);
        }
    }
    decoders
}

/// The stream decoder named `name`, if any.
pub fn stream_decoder(name: &str) -> Option<StreamDecoder> {
    stream_decoders().into_iter().find(|d| d.name == name)
}

impl TypeRules for ProviderKind {
    fn check_options(self, options: &toml::Table) -> Result<(), OptionError> {
        row(self).check_options(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_exactly_one_row_in_the_order_of_its_declaration() {
        let kinds: Vec<ProviderKind> = TYPES.iter().map(|t| t.kind).collect();
        assert_eq!(kinds, ProviderKind::ALL);
    }

    #[test]
    fn each_row_name_is_what_the_configuration_accepts_as_its_type() {
        for t in TYPES {
            let parsed: toml::Table = toml::from_str(&format!("type = \"{}\"", t.name())).unwrap();
            let kind: ProviderKind = parsed["type"].clone().try_into().unwrap();
            assert_eq!(kind, t.kind);
            assert_eq!(by_name(t.name()).map(|r| r.kind), Some(t.kind));
        }
        assert!(by_name("grok").is_none());
    }

    #[test]
    fn decoder_names_are_unique_per_decoder_and_found_by_name() {
        let names: Vec<&str> = stream_decoders().iter().map(|d| d.name).collect();
        assert_eq!(names, ["anthropic", "openai", "ollama", "gemini"]);
        for name in names {
            assert_eq!(stream_decoder(name).map(|d| d.name), Some(name));
        }
        assert!(stream_decoder("mock").is_none());
    }

    #[test]
    fn no_type_reads_a_base_url_from_the_environment_but_the_one_decisions_allow() {
        for t in TYPES {
            assert!(
                t.base_url_env.is_none_or(|v| v == "AZURE_OPENAI_ENDPOINT"),
                "{}: {:?}",
                t.name(),
                t.base_url_env
            );
        }
    }

    #[test]
    fn a_type_without_options_refuses_any_key_naming_itself() {
        let table: toml::Table = toml::from_str("model_dir = \"x\"").unwrap();
        assert_eq!(
            row(ProviderKind::Ollama).check_options(&table),
            Err((
                "model_dir".to_owned(),
                "is not an option of type ollama (it has none)".to_owned()
            ))
        );
        assert_eq!(
            row(ProviderKind::Ollama).check_options(&toml::Table::new()),
            Ok(())
        );
        assert!(row(ProviderKind::Mock).check_options(&table).is_err());
    }

    #[test]
    fn each_decoder_ends_an_empty_body_with_an_error_naming_the_provider() {
        for d in stream_decoders() {
            let items = (d.decode)("p", &[b""]);
            match items.as_slice() {
                // Gemini's end of body is its end of stream.
                [Ok(StreamEvent::Done { .. })] if d.name == "gemini" => {}
                [Err(e)] => assert!(e.message.starts_with('p'), "{}: {e:?}", d.name),
                other => panic!("{}: {other:?}", d.name),
            }
        }
    }
}
