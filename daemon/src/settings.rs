//! The settings one configured provider is built from: its type ([`ProviderKind`]) and
//! its `[providers.<id>]` table ([`ProviderConfig`]).
//!
//! Neutral ground between the configuration and the providers. `config.rs` reads these
//! from the file and checks the rules that hold for every type; `provider/` is built from
//! them. Both import this module, and it imports neither: that is what breaks the old
//! cycle (config imported provider modules to check their options, providers imported
//! config for their settings). The alternative, a provider-owned copy of these settings
//! that the factory fills from the configuration, would make every new setting a field
//! written twice and a conversion; one plain data type read by both is simpler.
//!
//! What a provider *type* means beyond its name (its key variables, its default base URL,
//! how to build one, which options it takes, its stream decoder) is not here but in the one
//! table of types, `provider/registry.rs`. Configuration validation reaches that table
//! only through [`TypeRules`], which this module declares and the registry implements, so
//! `config.rs` checks each type's options without importing provider code.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// Declares [`ProviderKind`] from one list of variants and configuration names, so that
/// the names exist once: in `as_str`, in [`ProviderKind::ALL`] and in what the
/// configuration accepts.
macro_rules! provider_kinds {
    ($($(#[doc = $doc:literal])* $variant:ident => $name:literal,)*) => {
        /// Which implementation serves a configured provider: the `type` of a
        /// `[providers.<id>]` table. Each has one row in `provider/registry.rs`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
        pub enum ProviderKind {
            $($(#[doc = $doc])* #[serde(rename = $name)] $variant,)*
        }

        impl ProviderKind {
            /// Every type, in the order of the registry's table.
            pub const ALL: &'static [ProviderKind] = &[$(ProviderKind::$variant),*];

            /// The name used in the config and on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ProviderKind::$variant => $name,)*
                }
            }
        }
    };
}

provider_kinds! {
    /// Anthropic Messages API.
    Anthropic => "anthropic",
    /// OpenAI Chat Completions.
    Openai => "openai",
    /// Any server speaking the OpenAI Chat Completions protocol.
    OpenaiCompatible => "openai-compatible",
    /// Ollama's native API.
    Ollama => "ollama",
    /// Google Gemini API.
    Gemini => "gemini",
    /// Azure OpenAI (Chat Completions on an Azure resource's deployments).
    AzureOpenai => "azure-openai",
    /// The built-in deterministic mock.
    Mock => "mock",
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused option: the field (`text`, or empty for the whole table) and the rule broken
/// with the value found.
pub type OptionError = (String, String);

/// What configuration validation asks of a provider type beyond its name. Declared here
/// (so `config.rs` depends on this module only) and implemented for [`ProviderKind`] by
/// the one table of types, `provider/registry.rs`, which alone knows each type's options.
pub trait TypeRules {
    /// Checks a `[providers.<id>.options]` table against what the type accepts.
    fn check_options(self, options: &toml::Table) -> Result<(), OptionError>;
}

/// What a provider can do beyond streaming text: `capabilities = [...]` in a
/// `[providers.<id>]` table. Unset, the provider type's own list holds
/// (`provider/registry.rs`); set, it is enforced: a request that needs what the list
/// lacks is refused with `invalid_request` naming the option and the provider.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Streams its answer (every type does; listed for clients).
    Streaming,
    /// Tools and tool calls.
    Tools,
    /// `response_format: json_object`.
    JsonObject,
    /// `response_format: json_schema`.
    JsonSchema,
    /// `reasoning` (effort or budget, reasoning text).
    Reasoning,
    /// Images sent as bytes.
    Images,
    /// Images sent as URLs the provider fetches.
    ImageUrls,
}

impl Capability {
    /// Every capability, in the order they are listed.
    pub const ALL: [Capability; 7] = [
        Capability::Streaming,
        Capability::Tools,
        Capability::JsonObject,
        Capability::JsonSchema,
        Capability::Reasoning,
        Capability::Images,
        Capability::ImageUrls,
    ];

    /// The name the configuration and the wire use.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Streaming => "streaming",
            Capability::Tools => "tools",
            Capability::JsonObject => "json_object",
            Capability::JsonSchema => "json_schema",
            Capability::Reasoning => "reasoning",
            Capability::Images => "images",
            Capability::ImageUrls => "image_urls",
        }
    }
}

/// Default per-request upstream timeout.
pub const DEFAULT_TIMEOUT_SECONDS: u64 = 30;
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_SECONDS: u64 = 10;
/// Default bound on a whole request (a long answer from a slow model fits).
pub const DEFAULT_TOTAL_TIMEOUT_SECONDS: u64 = 600;
/// Default retries of a retryable upstream failure.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 3;
/// Default cap on generated tokens when neither request nor config says.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// One `[providers.<id>]` table: the original design's `ProviderConfig`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The provider type.
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    /// The API's base URL; each type has its documented default.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Model used when a request names none.
    #[serde(default)]
    pub default_model: Option<String>,
    /// How long the upstream may stay silent, in seconds (1 to 2^32 - 1 (`config::MAX_COUNT_OR_SECONDS`)):
    /// before the response headers arrive (first byte) and between two pieces of a
    /// streamed body (idle).
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// TCP and TLS connect timeout in seconds (1 to 2^32 - 1 (`config::MAX_COUNT_OR_SECONDS`)).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// The whole request, retries and fallbacks included, in seconds (1 to
    /// 2^32 - 1 (`config::MAX_COUNT_OR_SECONDS`)).
    #[serde(default = "default_total_timeout")]
    pub total_timeout_seconds: u64,
    /// Retries of retryable failures before the first chunk (>= 0).
    #[serde(default = "default_retries")]
    pub retry_attempts: u32,
    /// Cap on generated tokens when the request names none (> 0).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// What the provider can do (see [`Capability`]); unset, its type's own list.
    #[serde(default)]
    pub capabilities: Option<Vec<Capability>>,
    /// The environment variable holding the API key. Without it, the provider's type
    /// says which (its `key_env` in `provider/registry.rs`: `ANTHROPIC_API_KEY` for
    /// `anthropic`, say); some types need none.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// OpenAI organization id (sent as `OpenAI-Organization`).
    #[serde(default)]
    pub organization: Option<String>,
    /// OpenAI project id (sent as `OpenAI-Project`).
    #[serde(default)]
    pub project: Option<String>,
    /// Extra HTTP headers for every request (an OpenRouter `HTTP-Referer`, say). Not for
    /// secrets: these are configuration, shown in logs.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Where a request goes when this provider fails with a retryable error before its
    /// first chunk, in order: `"provider"` (its default model) or `"provider/model"`.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Type-specific settings (the mock's text and faults, say), checked by the type.
    #[serde(default)]
    pub options: toml::Table,
    /// `additional_params` keys that steer a gateway rather than a model (`api_base`,
    /// `api_key`, `extra_headers`, …) and are refused unless listed here, for an upstream
    /// known to use them safely. Matched as the refusal is: case and `-`/`_` ignored.
    /// `model`, `stream` and `messages` cannot be listed.
    #[serde(default)]
    pub allow_additional_params: Vec<String>,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECONDS
}
fn default_connect_timeout() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_SECONDS
}
fn default_total_timeout() -> u64 {
    DEFAULT_TOTAL_TIMEOUT_SECONDS
}
fn default_retries() -> u32 {
    DEFAULT_RETRY_ATTEMPTS
}
fn default_max_tokens() -> u32 {
    DEFAULT_MAX_TOKENS
}
