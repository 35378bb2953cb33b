//! What every provider is: the [`Provider`] trait, the events a generation yields,
//! the provider error, and the status and counters each instance keeps.
//!
//! Everything above this module sees only these types; a provider's quirks (wire format,
//! headers, error bodies) stay in its own file.

pub mod anthropic;
pub mod azure;
pub mod capabilities;
pub mod gemini;
pub mod http;
pub mod mock;
pub mod mock_script;
pub mod ndjson;
pub mod ollama;
pub mod openai;
pub mod registry;
pub mod sse;
pub mod tools;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_core::Stream;
use provd_client::message::{ProviderMetrics, ProviderStatus};
use provd_client::{ErrorCode, FinishReason, GenerateRequest, ModelInfo, Usage, WireError};

use crate::settings::{ProviderConfig, ProviderKind};

/// A boxed, sendable future: the trait is used as `dyn`, so its async methods box.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A generation in progress. It owns everything it needs (it is `'static`), so dropping
/// it is the one way to stop it, and dropping it closes the upstream connection.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// One step of a generation.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// Text to forward to the client.
    Text(String),
    /// Usage known so far (Anthropic reports input tokens at the start, say), kept so a
    /// cancelled or failed generation can still report it.
    Usage(Usage),
    /// The model the upstream says is answering (a dated snapshot of the requested
    /// alias, say), as it gave it: unscrubbed and uncut, for the server to clean.
    /// Sent before the text it applies to, and only when it changes.
    Model(String),
    /// A piece of a tool call: the first piece of call `index` names it (and carries
    /// the upstream's id when it gives one), later pieces add argument text. The server
    /// assembles the calls, fills missing ids and checks the arguments parse.
    ToolCall(provd_client::ToolCallDelta),
    /// A piece of the model's reasoning text, forwarded only when the request shows it.
    Reasoning(String),
    /// State the provider needs back with this assistant turn (Anthropic's signed
    /// thinking, Gemini's thought signatures), merged into the result's
    /// `provider_state` under the provider type's name. Opaque to everything else.
    ProviderState(serde_json::Value),
    /// The end. Nothing follows it.
    Done {
        /// Final token usage.
        usage: Usage,
        /// Why the model stopped.
        finish_reason: FinishReason,
    },
}

/// The state an assistant turn carries back for a provider of type `provider_type`
/// (what its [`StreamEvent::ProviderState`] reported, tagged by the server): none when
/// the turn came from another type, whose state means nothing here.
pub fn state_for<'m>(
    message: &'m provd_client::Message,
    provider_type: &str,
) -> Option<&'m serde_json::Value> {
    let state = message.provider_state.as_ref()?;
    (state.get("type")?.as_str()? == provider_type)
        .then(|| state.get("state"))
        .flatten()
}

/// A provider failure, already mapped to the system-wide code.
///
/// Displayed (log fields) and sent ([`ProviderError::to_wire`]) scrubbed of every key the
/// daemon holds ([`crate::scrub`]): the transport scrubs upstream text where it arrives,
/// and these two exits scrub again whatever was composed since.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{code}: {}", crate::scrub::scrub(.message))]
pub struct ProviderError {
    /// The system-wide code.
    pub code: ErrorCode,
    /// What failed; the upstream's own message where there is one, never a credential.
    pub message: String,
    /// Whether retrying may help.
    pub retryable: bool,
    /// When to retry, if the upstream said.
    pub retry_after: Option<Duration>,
    /// Whether a fallback may serve the request although this provider will not for a
    /// while: a spent quota or billing limit is final here, not for another account.
    /// (Retryable failures fall back too.)
    pub try_elsewhere: bool,
}

impl ProviderError {
    /// An error with the code's default retryability.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProviderError {
            code,
            message: message.into(),
            retryable: code.is_retryable_by_default(),
            retry_after: None,
            try_elsewhere: false,
        }
    }

    /// The error as it goes on the wire.
    pub fn to_wire(&self) -> WireError {
        let mut e = WireError::new(self.code, crate::scrub::scrub(&self.message).into_owned());
        e.retryable = self.retryable;
        if let Some(after) = self.retry_after {
            e = e.with_retry_after(after);
        }
        e
    }
}

/// The model an upstream names in its stream, turned into [`StreamEvent::Model`] when it
/// first appears or changes (OpenAI repeats it in every chunk; one event is enough).
#[derive(Debug, Default)]
pub(crate) struct ReportedModel(Option<String>);

impl ReportedModel {
    /// Notes the model a unit named, if any, before the unit's text is pushed.
    pub(crate) fn note(&mut self, named: Option<&str>, out: &mut Vec<StreamEvent>) {
        let Some(named) = named.filter(|n| !n.trim().is_empty()) else {
            return;
        };
        if self.0.as_deref() != Some(named) {
            self.0 = Some(named.to_owned());
            out.push(StreamEvent::Model(named.to_owned()));
        }
    }
}

/// What a provider constructor is given.
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    /// The configured id (`[providers.<id>]`).
    pub id: String,
    /// The model this instance serves.
    pub model: String,
    /// Its configuration.
    pub config: ProviderConfig,
    /// Its API key, if it has one. Redacted in Debug.
    pub credential: Option<crate::secret::Secret>,
    /// The provider's one HTTP client (connection pool), shared by all its instances.
    pub http: http::SharedClient,
    /// Whether the daemon has a credential store open: a missing key is then best
    /// sealed with `provd creds set`, else set in the daemon's environment.
    pub store_open: bool,
}

impl ProviderSpec {
    /// A spec for unit tests: provider `id` whose `[providers.<id>]` table (and any
    /// sub-tables after it) is `table`, serving `model`, with `key` as its credential.
    /// The table is read and its options checked as the configuration does, without
    /// reaching for `config.rs` (providers never import it).
    #[cfg(test)]
    pub(crate) fn for_test(id: &str, table: &str, model: &str, key: Option<&str>) -> ProviderSpec {
        let text = format!("[providers.{id}]\n{table}\n");
        let mut file: toml::Table = toml::from_str(&text).unwrap();
        let table = file
            .remove("providers")
            .and_then(|p| p.as_table().and_then(|p| p.get(id)).cloned())
            .unwrap();
        let config: ProviderConfig = table.try_into().unwrap();
        registry::row(config.kind)
            .check_options(&config.options)
            .unwrap();
        ProviderSpec {
            id: id.into(),
            model: model.into(),
            config,
            credential: key.map(|k| crate::secret::Secret::new(k.into())),
            http: http::SharedClient::default(),
            store_open: false,
        }
    }

    /// The configured base URL, else the type's documented default, without a trailing
    /// slash so that paths join cleanly.
    pub fn base_url(&self, default: &str) -> String {
        self.config
            .base_url
            .as_deref()
            .unwrap_or(default)
            .trim_end_matches('/')
            .to_owned()
    }

    /// The API key, or an `unauthenticated` error naming where it should come from.
    pub fn require_credential(&self) -> Result<&crate::secret::Secret, ProviderError> {
        self.credential.as_ref().ok_or_else(|| {
            let variable = self
                .config
                .api_key_env
                .as_deref()
                .or(registry::row(self.config.kind).key_env.first().copied())
                .unwrap_or("its api_key_env");
            let fix = if self.store_open {
                format!("seal one with `provd creds set {}`", self.id)
            } else {
                format!("set {variable} in the daemon's environment")
            };
            ProviderError::new(
                ErrorCode::Unauthenticated,
                format!("provider '{}' has no API key: {fix}", self.id),
            )
        })
    }
}

/// A request's conversation in the shape every API wants: the system prompt apart (the
/// `system` field and any system turns, joined), then the turns, with `prompt` appended
/// as the last user turn.
pub fn conversation(request: &GenerateRequest) -> (Option<String>, Vec<provd_client::Message>) {
    let mut system: Vec<&str> = request.system.iter().map(String::as_str).collect();
    let mut turns = Vec::with_capacity(request.messages.len() + 1);
    for m in &request.messages {
        match m.role {
            provd_client::Role::System => system.push(&m.content),
            _ => turns.push(m.clone()),
        }
    }
    if let Some(prompt) = request.prompt.as_ref().filter(|p| !p.is_empty()) {
        turns.push(provd_client::Message::text(
            provd_client::Role::User,
            prompt.clone(),
        ));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, turns)
}

/// A non-streamed answer's events, as the stream [`Provider::generate`] returns.
pub fn whole_answer(events: Vec<StreamEvent>) -> EventStream {
    Box::pin(futures_util::stream::iter(events.into_iter().map(Ok)))
}

/// The thinking budget of a reasoning request for the APIs that take a token budget
/// (Anthropic, Gemini): its `budget_tokens`, else its effort as Google documents the
/// mapping for Gemini's OpenAI-compatible endpoint (low 1,024, medium 8,192, high 24,576
/// tokens; minimal is the smallest budget Anthropic takes, 1,024), else medium.
pub fn thinking_budget(reasoning: &provd_client::Reasoning) -> u32 {
    use provd_client::Effort;
    reasoning.budget_tokens.unwrap_or(match reasoning.effort {
        Some(Effort::Minimal | Effort::Low) => 1024,
        Some(Effort::Medium) | None => 8192,
        Some(Effort::High) => 24_576,
    })
}

/// A sampling parameter as JSON. The wire carries `f32`; widening it to `f64` directly
/// would send `0.8999999761581421` for 0.9, so it goes through its shortest decimal form.
pub fn json_f32(value: f32) -> serde_json::Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Copies `additional_params` into a JSON request body, each key checked by
/// [`check_additional_param`].
pub fn merge_additional_params(
    body: &mut serde_json::Map<String, serde_json::Value>,
    request: &GenerateRequest,
    reserved: &[&str],
    spec: &ProviderSpec,
) -> Result<(), ProviderError> {
    for (key, value) in &request.additional_params {
        check_additional_param(key, reserved, spec)?;
        body.insert(key.clone(), value.clone());
    }
    Ok(())
}

/// `additional_params` keys that steer a gateway rather than a model: a gateway that
/// honours them in the request body (LiteLLM's client-side credentials, the pattern of
/// CVE-2024-6587) would send the request, and the key provd added, where a local client
/// says, or bill another account. Folded as [`fold_param`] folds.
const GATEWAY_PARAMS: &[&str] = &[
    "apibase",
    "baseurl",
    "apikey",
    "apiversion",
    "apitype",
    "extraheaders",
    "headers",
    "defaultheaders",
    "extrabody",
    "extraquery",
    "organization",
    "project",
    "deploymentid",
    "userapikey",
    "userconfig",
    "modellist",
    "customllmprovider",
    "accesstoken",
    "clientsecret",
    "tenantid",
    "authorization",
    // LangChain's spellings, which some gateways accept too.
    "openaiapikey",
    "openaiapibase",
    "openaiorganization",
];

/// Prefixes of gateway-steering families (LiteLLM's `aws_*`, `vertex_*`, `azure_*`
/// credentials and regions, its `litellm_*` settings), folded.
const GATEWAY_PREFIXES: &[&str] = &["aws", "vertex", "azure", "litellm"];

/// A parameter name as refusals compare it: lower case, without `-` and `_`, so that
/// `Api-Base`, `API_BASE` and `apiBase` are all `apibase` (Go's JSON decoder, Ollama's,
/// matches field names case-insensitively, and gateways differ on separators).
pub fn fold_param(key: &str) -> String {
    key.chars()
        .filter(|c| !matches!(c, '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether `additional_params.<key>` may go into a request body: keys provd sets
/// itself (`reserved`: the model, streaming, the messages) never; gateway-steering keys
/// only when the provider's `allow_additional_params` lists them. Refused keys are an
/// `invalid_request` naming the key, so the caller learns why rather than finding the
/// parameter silently ignored.
pub fn check_additional_param(
    key: &str,
    reserved: &[&str],
    spec: &ProviderSpec,
) -> Result<(), ProviderError> {
    let folded = fold_param(key);
    if reserved.iter().any(|r| fold_param(r) == folded) {
        return Err(ProviderError::new(
            ErrorCode::InvalidRequest,
            format!("additional_params.{key} is set by provd and may not be overridden"),
        ));
    }
    let steers = GATEWAY_PARAMS.contains(&folded.as_str())
        || GATEWAY_PREFIXES.iter().any(|p| folded.starts_with(p));
    let allowed = || {
        spec.config
            .allow_additional_params
            .iter()
            .any(|a| fold_param(a) == folded)
    };
    if steers && !allowed() {
        return Err(ProviderError::new(
            ErrorCode::InvalidRequest,
            format!(
                "additional_params.{key} would steer the upstream gateway (where the request and its key go, or whose account pays) and is refused; if provider '{}' should pass it on, list it in providers.{}.allow_additional_params",
                spec.id, spec.id
            ),
        ));
    }
    Ok(())
}

/// Status and counters of one provider instance, updated lock-free from the request path.
#[derive(Debug)]
pub struct ProviderState {
    status: AtomicU8,
    counters: Counters,
    // The configured provider's counters, which outlive this instance (the factory's
    // cache evicts instances): everything recorded here is recorded there too.
    provider: OnceLock<Arc<Counters>>,
}

impl Default for ProviderState {
    fn default() -> Self {
        ProviderState {
            status: AtomicU8::new(status_to_u8(ProviderStatus::Initializing)),
            counters: Counters::default(),
            provider: OnceLock::new(),
        }
    }
}

/// Generation counters, updated lock-free: one set per instance and one per configured
/// provider.
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    cancelled: AtomicU64,
    active: AtomicU64,
    chunks: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Upstream HTTP responses by status, for the metrics. A map under a lock rather
    /// than atomics: few statuses ever appear, and it is touched once per response
    /// (never per chunk), under this provider's lock alone.
    upstream_statuses: std::sync::Mutex<std::collections::BTreeMap<u16, u64>>,
}

impl Counters {
    /// A generation for this provider that its client cancelled before any instance
    /// was asked: one request, cancelled.
    pub fn count_cancelled_before_start(&self) {
        self.start();
        self.end(Outcome::Cancelled, Usage::default());
    }

    fn start(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    fn chunk(&self) {
        self.chunks.fetch_add(1, Ordering::Relaxed);
    }

    fn end(&self, outcome: Outcome, usage: Usage) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.prompt_tokens
            .fetch_add(usage.prompt_tokens.into(), Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(usage.completion_tokens.into(), Ordering::Relaxed);
        match outcome {
            Outcome::Completed => {}
            Outcome::Failed => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Cancelled => {
                self.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn upstream_status(&self, status: u16) {
        *self
            .upstream_statuses
            .lock()
            .expect("status counts lock poisoned")
            .entry(status)
            .or_default() += 1;
    }

    /// How many upstream HTTP responses had each status, by status.
    pub fn upstream_statuses(&self) -> Vec<(u16, u64)> {
        self.upstream_statuses
            .lock()
            .expect("status counts lock poisoned")
            .iter()
            .map(|(status, count)| (*status, *count))
            .collect()
    }

    /// A snapshot.
    pub fn metrics(&self) -> ProviderMetrics {
        ProviderMetrics {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            chunks: self.chunks.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
        }
    }
}

fn status_to_u8(s: ProviderStatus) -> u8 {
    match s {
        ProviderStatus::Idle => 0,
        ProviderStatus::Initializing => 1,
        ProviderStatus::Ready => 2,
        ProviderStatus::Error => 3,
        ProviderStatus::ShuttingDown => 4,
    }
}

/// How a generation ended, for the counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Completed,
    /// Ended with an error.
    Failed,
    /// Cancelled by the client or its disconnect.
    Cancelled,
}

impl ProviderState {
    /// The current lifecycle state.
    pub fn status(&self) -> ProviderStatus {
        match self.status.load(Ordering::Acquire) {
            0 => ProviderStatus::Idle,
            1 => ProviderStatus::Initializing,
            2 => ProviderStatus::Ready,
            3 => ProviderStatus::Error,
            _ => ProviderStatus::ShuttingDown,
        }
    }

    /// Moves to another lifecycle state.
    pub fn set_status(&self, status: ProviderStatus) {
        self.status.store(status_to_u8(status), Ordering::Release);
    }

    /// Makes every later record count for the configured provider's `counters` too.
    /// Set once, by the factory, before the instance serves anything.
    pub fn count_for_provider(&self, counters: Arc<Counters>) {
        let _ = self.provider.set(counters);
    }

    /// A generation started.
    pub fn record_start(&self) {
        self.counters.start();
        if let Some(p) = self.provider.get() {
            p.start();
        }
    }

    /// A chunk was forwarded.
    pub fn record_chunk(&self) {
        self.counters.chunk();
        if let Some(p) = self.provider.get() {
            p.chunk();
        }
    }

    /// An upstream HTTP response arrived with `status`. Counted for the configured
    /// provider only: the metrics read statuses per provider, and an instance's own
    /// counters are what `status` details, which shows none.
    pub fn record_upstream_status(&self, status: u16) {
        if let Some(p) = self.provider.get() {
            p.upstream_status(status);
        }
    }

    /// A generation ended.
    pub fn record_end(&self, outcome: Outcome, usage: Usage) {
        self.counters.end(outcome, usage);
        if let Some(p) = self.provider.get() {
            p.end(outcome, usage);
        }
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> ProviderMetrics {
        self.counters.metrics()
    }
}

/// A provider instance: one configured provider id serving one model.
///
/// Instances are created and initialized by the [`crate::factory::Providers`],
/// shared behind `Arc` by every request for that provider and model, and shut down once:
/// when the factory's bounded cache evicts or expires them, a reload retires them, or
/// the daemon stops.
///
/// This is the original design's `BaseLlmProvider` (DESIGN.md), renamed as Rust names a
/// trait; its methods keep the design's names. `Debug` is required so that any instance
/// can be shown in a log or a test, and is checked never to show its key.
pub trait Provider: std::fmt::Debug + Send + Sync + 'static {
    /// The provider type.
    fn kind(&self) -> ProviderKind;

    /// The model this instance serves.
    fn model(&self) -> &str;

    /// Status and counters.
    fn state(&self) -> &ProviderState;

    /// Prepares the instance (HTTP client, credentials). Called exactly once before the
    /// first request; a failure leaves the instance uncached so the next request retries.
    fn initialize(&self) -> BoxFuture<'_, Result<(), ProviderError>>;

    /// Starts a generation. Errors before the first event come back here; later ones in
    /// the stream.
    fn generate(
        &self,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<EventStream, ProviderError>>;

    /// The models the provider offers.
    fn list_models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>>;

    /// Releases the instance's resources; no request follows. HTTP providers hold
    /// nothing that dropping does not release (the pooled connections belong to the
    /// provider's shared client, not to the instance), so by default this only records
    /// the state.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async { self.state().set_status(ProviderStatus::ShuttingDown) })
    }

    /// The current lifecycle state.
    fn status(&self) -> ProviderStatus {
        self.state().status()
    }

    /// A snapshot of the counters.
    fn metrics(&self) -> ProviderMetrics {
        self.state().metrics()
    }
}

/// Counts whitespace-separated words: the mock's stand-in for a tokenizer, and nothing
/// else's.
pub(crate) fn word_count(text: &str) -> u32 {
    text.split_whitespace()
        .count()
        .try_into()
        .unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_statuses_count_for_the_configured_provider_by_status() {
        let provider = Arc::new(Counters::default());
        let state = ProviderState::default();
        state.record_upstream_status(200);
        state.count_for_provider(provider.clone());
        for status in [200, 429, 200] {
            state.record_upstream_status(status);
        }
        assert_eq!(provider.upstream_statuses(), [(200, 2), (429, 1)]);
        assert_eq!(state.counters.upstream_statuses(), []);
    }

    #[test]
    fn the_missing_key_hint_names_creds_set_when_a_store_is_open() {
        let mut spec = ProviderSpec::for_test("claude", "type = \"anthropic\"", "m", None);
        let e = spec.require_credential().unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        assert!(
            e.message
                .ends_with("set ANTHROPIC_API_KEY in the daemon's environment"),
            "{}",
            e.message
        );
        spec.store_open = true;
        let e = spec.require_credential().unwrap_err();
        assert!(
            e.message
                .ends_with("seal one with `provd creds set claude`"),
            "{}",
            e.message
        );
    }

    fn spec(allow: &str) -> ProviderSpec {
        ProviderSpec::for_test(
            "gw",
            &format!("type = \"openai\"\nallow_additional_params = [{allow}]"),
            "m",
            None,
        )
    }

    #[test]
    fn gateway_steering_params_are_refused_in_any_spelling() {
        let spec = spec("");
        for key in [
            "api_base",
            "Api-Base",
            "API_BASE",
            "apiBase",
            "base_url",
            "api_key",
            "api_version",
            "extra_headers",
            "headers",
            "organization",
            "project",
            "deployment_id",
            "default_headers",
            "extra_body",
            "user_api_key",
            "user_config",
            "aws_secret_access_key",
            "vertex_credentials",
            "azure_ad_token",
            "litellm_params",
            "Authorization",
            "openai_api_base",
        ] {
            let e = check_additional_param(key, &["model"], &spec).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{key}");
            assert!(
                e.message.contains(&format!("additional_params.{key} ")),
                "{}",
                e.message
            );
            assert!(
                e.message.contains("providers.gw.allow_additional_params"),
                "{}",
                e.message
            );
        }
        for key in ["temperature_x", "seed", "response_format", "metadata"] {
            check_additional_param(key, &["model"], &spec).unwrap();
        }
    }

    #[test]
    fn reserved_params_are_refused_in_any_spelling_even_when_allowed() {
        // Go's JSON decoder (Ollama's) takes "Model" for "model".
        let spec = spec("\"api_base\"");
        for key in [
            "model",
            "Model",
            "MODEL",
            "stream-options",
            "Stream_Options",
        ] {
            let e = check_additional_param(key, &["model", "stream_options"], &spec).unwrap_err();
            assert!(
                e.message.contains("is set by provd"),
                "{key}: {}",
                e.message
            );
        }
    }

    #[test]
    fn the_allow_list_lets_the_keys_it_names_through_in_any_spelling() {
        let spec = spec("\"Api-Base\", \"extra_headers\"");
        for key in ["api_base", "API-BASE", "extraHeaders"] {
            check_additional_param(key, &["model"], &spec).unwrap();
        }
        assert!(check_additional_param("api_key", &["model"], &spec).is_err());
    }
}
