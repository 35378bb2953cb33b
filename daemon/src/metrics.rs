//! The daemon's metrics, read by Prometheus (or any OpenMetrics scraper) at `GET
//! /metrics` on the HTTP front door: counters, gauges and histograms kept in memory and
//! rendered as the Prometheus text exposition format 0.0.4, or as OpenMetrics 1.0 text
//! when the scraper asks for it.
//!
//! # Names
//!
//! The OpenTelemetry GenAI semantic conventions' names where one exists, translated to
//! Prometheus as OpenTelemetry's exporters do (dots to underscores, the unit `s` as a
//! `_seconds` suffix, an annotation unit such as `{token}` dropped), with their bucket
//! boundaries; `provd_*` names for the rest.
//!
//! | exported | kind | convention |
//! |---|---|---|
//! | `gen_ai_server_request_duration_seconds` | histogram | `gen_ai.server.request.duration`: provd is the GenAI server its clients call; admission to the end, retries and fallbacks included |
//! | `gen_ai_server_time_to_first_token_seconds` | histogram | `gen_ai.server.time_to_first_token`: admission to the first chunk, completed generations |
//! | `gen_ai_client_token_usage` | histogram | `gen_ai.client.token.usage` (`gen_ai.token.type` `input`/`output`): provd is the upstream's client and reports the counts it gave; completed generations |
//! | `provd_requests_total` | counter | generations by `provider`, `model`, `outcome` (`completed`, `failed`, `cancelled`) |
//! | `provd_errors_total` | counter | generations that ended with an error, by `provider`, `model`, `code` (the wire code, `cancelled` included) |
//! | `provd_tokens_total` | counter | tokens by `provider`, `model`, `type` (`input`, `output`, `reasoning`), every outcome (after a cancel the lower bound the ledger keeps) |
//! | `provd_retries_total` | counter | retries of a target (`provider`, `model`) after a retryable failure before its first chunk |
//! | `provd_fallbacks_total` | counter | targets (`provider`, `model`) given up for the next one of a fallback list or alias |
//! | `provd_upstream_responses_total` | counter | HTTP responses from upstream APIs by `provider` and `status` |
//! | `provd_active_streams` | gauge | generations running now |
//! | `provd_connections` | gauge | connections open now (MessagePack and HTTP) |
//! | `provd_uptime_seconds` | gauge | seconds since the daemon started |
//! | `provd_ledger_records_written_total`, `_dropped_total`, `_lost_total` | counter | the usage ledger's counters (admins only, while the ledger is on) |
//!
//! The GenAI histograms carry `gen_ai_operation_name` (`chat`), `gen_ai_provider_name`
//! (the configured provider id asked for: the name the operator chose, which is what
//! tells two providers of one API apart), `gen_ai_request_model` (the model asked for,
//! aliases resolved, the default filled in), `gen_ai_response_model` (the model the
//! upstream said answered, when one did) and, for a request duration that ended in an
//! error, `error_type`: the wire error code (`timeout`, `rate_limited`, …, `cancelled`).
//! Requests are keyed, like the ledger's prices and budgets, on the provider and model
//! asked for; the fallback that served one shows in `provd_fallbacks_total`.
//!
//! # Labels
//!
//! Every label value comes from a closed set, through [`label`]: a provider is a
//! configured provider id, a model a name the configuration gives (a provider's
//! `default_model` or its type's, an Azure provider's `deployments`, a fallback target's
//! model, an alias or an alias target's model, a `[prices]` key's model); anything else
//! is [`OTHER`] (which a provider configured with the id `other` would share). A client
//! can name any model and an upstream can report any name: neither may grow the number
//! of series or carry text into a label. Codes are the wire's error codes and statuses are
//! numbers. No uid, user, token or prompt text is ever a label. A reload changes the
//! configured set for what is recorded after it; series already recorded stay.
//!
//! # Cost on the request path
//!
//! A generation's end takes one read lock on a map of series (a write lock only the
//! first time its label set is seen) and a few relaxed atomic adds; nothing is touched
//! per chunk. A retry or a fallback adds one more look-up; an upstream response one add
//! to its provider's counters ([`crate::provider::Counters`]), read at scrape time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::{Config, Target};
use crate::ledger::{Outcome, Record};

/// The label value of anything outside the configured set.
pub const OTHER: &str = "other";

/// `gen_ai.operation.name` of every generation: provd's generations are chats (a
/// prompt is a one-message chat).
pub const OPERATION: &str = "chat";

/// Bucket boundaries of the duration histograms, in seconds: the conventions' advice
/// for `gen_ai.server.request.duration`.
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Bucket boundaries of the time to first token, in seconds: the conventions' advice for
/// `gen_ai.server.time_to_first_token`.
pub const FIRST_TOKEN_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Bucket boundaries of token counts: the conventions' advice for
/// `gen_ai.client.token.usage`.
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Which label a value is for, in [`label`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// A provider id.
    Provider,
    /// A model name.
    Model,
}

/// The label policy, in one place: `value` when the configuration names it as a
/// `kind`, else [`OTHER`] (see the module docs). Builds the configured set each call: for
/// cold paths and tests; a generation's end uses the set [`Metrics`] keeps per
/// configuration.
pub fn label<'v>(config: &Config, kind: Label, value: &'v str) -> &'v str {
    Names::of(config).label(kind, value)
}

/// The names a configuration gives providers and models: the label policy's closed set,
/// collected once per configuration (a reload makes a new one) instead of walking the
/// aliases, fallbacks and prices at every generation's end.
#[derive(Debug, Default)]
pub struct Names {
    providers: HashSet<String>,
    models: HashSet<String>,
}

impl Names {
    /// The names `config` gives: provider ids; models anywhere a model is named (a
    /// provider's `default_model` or its type's, an Azure provider's `deployments`, a
    /// fallback target's model, an alias or an alias target's model, a `[prices]` key's
    /// model).
    pub fn of(config: &Config) -> Names {
        let mut models: HashSet<String> = HashSet::new();
        let targets = config.aliases.values().flatten();
        let targets = targets.chain(config.providers.values().flat_map(|p| &p.fallbacks));
        models.extend(targets.filter_map(|t| Target::parse(t).model));
        models.extend(config.aliases.keys().cloned());
        for p in config.providers.values() {
            models.extend(p.default_model.clone());
            models.extend(
                crate::provider::registry::row(p.kind)
                    .default_model
                    .map(str::to_owned),
            );
            // An Azure provider's deployments are its configured models.
            let deployments = p.options.get("deployments").and_then(toml::Value::as_array);
            models.extend(
                deployments
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str().map(str::to_owned)),
            );
        }
        models.extend(
            config
                .prices
                .keys()
                .filter_map(|key| key.split_once('/').map(|(_, m)| m.to_owned())),
        );
        models.remove("");
        Names {
            providers: config.providers.keys().cloned().collect(),
            models,
        }
    }

    /// `value` when this set names it as a `kind`, else [`OTHER`].
    pub fn label<'v>(&self, kind: Label, value: &'v str) -> &'v str {
        let set = match kind {
            Label::Provider => &self.providers,
            Label::Model => &self.models,
        };
        if set.contains(value) {
            value
        } else {
            OTHER
        }
    }
}

/// A histogram's counts: per bucket (not cumulative: added up when rendered), their
/// sum in the unit observed (milliseconds or tokens), and the count.
#[derive(Debug)]
struct Histogram {
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            // One more: the +Inf bucket.
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Counts `value` (in units), which `bounds` measure in units / `scale`.
    fn observe(&self, bounds: &[f64], scale: f64, value: u64) {
        let measured = value as f64 / scale;
        let index = bounds
            .iter()
            .position(|&b| measured <= b)
            .unwrap_or(bounds.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    fn snapshot(&self, scale: f64) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum.load(Ordering::Relaxed) as f64 / scale,
        }
    }
}

/// A histogram as read: counts per bucket (the last is `+Inf`) and the sum.
#[derive(Clone, Debug, Default, PartialEq)]
struct HistogramSnapshot {
    buckets: Vec<u64>,
    sum: f64,
}

impl HistogramSnapshot {
    fn merge(&mut self, other: &HistogramSnapshot) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; other.buckets.len()];
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum += other.sum;
    }

    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// Series keyed by their labels: read-locked to find one, write-locked only to add one.
#[derive(Debug)]
struct Family<K, V> {
    series: RwLock<HashMap<K, Arc<V>>>,
}

impl<K, V> Default for Family<K, V> {
    fn default() -> Self {
        Family {
            series: RwLock::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, V> Family<K, V> {
    fn get(&self, key: &K, new: impl FnOnce() -> V) -> Arc<V> {
        if let Some(series) = self.series.read().expect("metrics lock poisoned").get(key) {
            return series.clone();
        }
        self.series
            .write()
            .expect("metrics lock poisoned")
            .entry(key.clone())
            .or_insert_with(|| Arc::new(new()))
            .clone()
    }

    fn all(&self) -> Vec<(K, Arc<V>)> {
        self.series
            .read()
            .expect("metrics lock poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The labels of one generation's end (see the module docs for their policy).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct GenerationKey {
    provider: String,
    model: String,
    response_model: Option<String>,
    outcome: &'static str,
    code: Option<&'static str>,
}

/// What the generations of one label set add up to.
#[derive(Debug)]
struct GenerationSeries {
    count: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    reasoning_tokens: AtomicU64,
    /// In milliseconds.
    duration: Histogram,
    /// In milliseconds; completed generations with a first chunk.
    first_chunk: Histogram,
    /// Completed generations.
    input_usage: Histogram,
    output_usage: Histogram,
}

impl GenerationSeries {
    fn new() -> GenerationSeries {
        GenerationSeries {
            count: AtomicU64::new(0),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            reasoning_tokens: AtomicU64::new(0),
            duration: Histogram::new(DURATION_BUCKETS),
            first_chunk: Histogram::new(FIRST_TOKEN_BUCKETS),
            input_usage: Histogram::new(TOKEN_BUCKETS),
            output_usage: Histogram::new(TOKEN_BUCKETS),
        }
    }
}

/// A fallback or retry target's labels.
type TargetKey = (String, String);

/// Milliseconds per second, the scale of the duration histograms.
const MS: f64 = 1000.0;

/// The daemon's metrics (on [`crate::server::Daemon`] as `metrics`).
#[derive(Debug, Default)]
pub struct Metrics {
    generations: Family<GenerationKey, GenerationSeries>,
    retries: Family<TargetKey, AtomicU64>,
    fallbacks: Family<TargetKey, AtomicU64>,
    /// The configured names of the configuration last seen, and that configuration.
    names: RwLock<Option<(Arc<Config>, Arc<Names>)>>,
}

impl Metrics {
    /// The configured names of `config`: those kept from the last call while the
    /// configuration is the same one, else collected anew (after a reload).
    fn names(&self, config: &Arc<Config>) -> Arc<Names> {
        if let Some((seen, names)) = &*self.names.read().expect("names lock poisoned") {
            if Arc::ptr_eq(seen, config) {
                return names.clone();
            }
        }
        let names = Arc::new(Names::of(config));
        *self.names.write().expect("names lock poisoned") = Some((config.clone(), names.clone()));
        names
    }

    /// Counts a generation's end (from [`crate::server::accounting`]); `config` is the
    /// configuration in force, which decides its labels.
    pub fn generation(&self, config: &Arc<Config>, record: &Record) {
        let names = self.names(config);
        let key = GenerationKey {
            provider: names.label(Label::Provider, &record.provider).to_owned(),
            model: names.label(Label::Model, &record.model).to_owned(),
            response_model: record
                .answered_model
                .as_deref()
                .map(|m| names.label(Label::Model, m).to_owned()),
            outcome: record.outcome.as_str(),
            code: record.error_code,
        };
        let series = self.generations.get(&key, GenerationSeries::new);
        series.count.fetch_add(1, Ordering::Relaxed);
        series
            .input_tokens
            .fetch_add(record.prompt_tokens.into(), Ordering::Relaxed);
        series
            .output_tokens
            .fetch_add(record.completion_tokens.into(), Ordering::Relaxed);
        series
            .reasoning_tokens
            .fetch_add(record.reasoning_tokens.into(), Ordering::Relaxed);
        series
            .duration
            .observe(DURATION_BUCKETS, MS, record.duration_ms.into());
        if record.outcome == Outcome::Completed {
            if let Some(first) = record.first_chunk_ms {
                series
                    .first_chunk
                    .observe(FIRST_TOKEN_BUCKETS, MS, first.into());
            }
            series
                .input_usage
                .observe(TOKEN_BUCKETS, 1.0, record.prompt_tokens.into());
            series
                .output_usage
                .observe(TOKEN_BUCKETS, 1.0, record.completion_tokens.into());
        }
    }

    /// Counts a retry of `target` (from [`crate::resilience`]).
    pub fn retry(&self, config: &Config, target: &Target) {
        Self::count_target(&self.retries, config, target);
    }

    /// Counts a fallback away from `target` (from [`crate::resilience`]).
    pub fn fallback(&self, config: &Config, target: &Target) {
        Self::count_target(&self.fallbacks, config, target);
    }

    fn count_target(family: &Family<TargetKey, AtomicU64>, config: &Config, target: &Target) {
        let model = match &target.model {
            Some(model) => model.as_str(),
            // The provider's default model, as the request would use it.
            None => config
                .providers
                .get(&target.provider)
                .and_then(|p| {
                    p.default_model
                        .as_deref()
                        .or(crate::provider::registry::row(p.kind).default_model)
                })
                .unwrap_or(""),
        };
        let key = (
            label(config, Label::Provider, &target.provider).to_owned(),
            label(config, Label::Model, model).to_owned(),
        );
        family
            .get(&key, || AtomicU64::new(0))
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The metrics as `format` writes them, as `view` may see them, with the daemon-wide
    /// figures of `daemon`.
    pub fn render(&self, daemon: &DaemonFigures, view: &View<'_>, format: Format) -> String {
        let mut out = Exposition::new(format);
        // What counts as `other` is no provider a non-admin may use.
        let provider = |p: &str| {
            ((view.admin || p != OTHER) && (view.provider_visible)(p)).then(|| p.to_owned())
        };
        let model = |m: &str| view.admin.then(|| m.to_owned());

        let generations = self.generations.all();
        let mut requests = Aggregate::default();
        let mut errors = Aggregate::default();
        let mut tokens = Aggregate::default();
        let mut durations = HistogramAggregate::default();
        let mut first_chunks = HistogramAggregate::default();
        let mut usage = HistogramAggregate::default();
        for (key, series) in &generations {
            let Some(p) = provider(&key.provider) else {
                continue;
            };
            let m = model(&key.model);
            let response = key.response_model.as_deref().and_then(&model);
            let base = Labels::new()
                .with("provider", Some(p.clone()))
                .with("model", m.clone());
            let count = series.count.load(Ordering::Relaxed);
            requests.add(
                base.clone().with("outcome", Some(key.outcome.into())),
                count,
            );
            if let Some(code) = key.code {
                errors.add(base.clone().with("code", Some(code.into())), count);
            }
            for (kind, counter) in [
                ("input", &series.input_tokens),
                ("output", &series.output_tokens),
                ("reasoning", &series.reasoning_tokens),
            ] {
                tokens.add(
                    base.clone().with("type", Some(kind.into())),
                    counter.load(Ordering::Relaxed),
                );
            }
            let gen_ai = Labels::new()
                .with("gen_ai_operation_name", Some(OPERATION.into()))
                .with("gen_ai_provider_name", Some(p))
                .with("gen_ai_request_model", m)
                .with("gen_ai_response_model", response);
            durations.add(
                gen_ai
                    .clone()
                    .with("error_type", key.code.map(str::to_owned)),
                series.duration.snapshot(MS),
            );
            if key.outcome == Outcome::Completed.as_str() {
                first_chunks.add(gen_ai.clone(), series.first_chunk.snapshot(MS));
                for (kind, histogram) in [
                    ("input", &series.input_usage),
                    ("output", &series.output_usage),
                ] {
                    usage.add(
                        gen_ai.clone().with("gen_ai_token_type", Some(kind.into())),
                        histogram.snapshot(1.0),
                    );
                }
            }
        }
        out.histogram(
            "gen_ai_server_request_duration_seconds",
            "GenAI server request duration: from admission to the end of a generation, retries and fallbacks included.",
            DURATION_BUCKETS,
            &durations,
        );
        out.histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to generate the first token for successful responses: from admission to the first chunk.",
            FIRST_TOKEN_BUCKETS,
            &first_chunks,
        );
        out.histogram(
            "gen_ai_client_token_usage",
            "Number of input and output tokens used, as the upstream reported them, per completed generation.",
            TOKEN_BUCKETS,
            &usage,
        );
        out.counter(
            "provd_requests",
            "Generations by the provider and model asked for, and how they ended.",
            &requests,
        );
        out.counter(
            "provd_errors",
            "Generations that ended with an error, by provider, model and error code.",
            &errors,
        );
        out.counter(
            "provd_tokens",
            "Tokens by provider, model and type (a lower bound after a cancel).",
            &tokens,
        );
        for (name, help, family) in [
            (
                "provd_retries",
                "Retries of a target after a retryable failure before its first chunk.",
                &self.retries,
            ),
            (
                "provd_fallbacks",
                "Targets given up for the next one of a fallback list or alias.",
                &self.fallbacks,
            ),
        ] {
            let mut counts = Aggregate::default();
            for ((p, m), count) in family.all() {
                if let Some(p) = provider(&p) {
                    counts.add(
                        Labels::new()
                            .with("provider", Some(p))
                            .with("model", model(&m)),
                        count.load(Ordering::Relaxed),
                    );
                }
            }
            out.counter(name, help, &counts);
        }
        let mut statuses = Aggregate::default();
        for (p, status, count) in &daemon.upstream_statuses {
            if let Some(p) = provider(p) {
                statuses.add(
                    Labels::new()
                        .with("provider", Some(p))
                        .with("status", Some(status.to_string())),
                    *count,
                );
            }
        }
        out.counter(
            "provd_upstream_responses",
            "HTTP responses from upstream APIs by provider and status code.",
            &statuses,
        );
        out.gauge(
            "provd_active_streams",
            "Generations running now.",
            daemon.active_streams as f64,
        );
        out.gauge(
            "provd_connections",
            "Connections open now, MessagePack and HTTP.",
            daemon.connections as f64,
        );
        out.gauge(
            "provd_uptime_seconds",
            "Seconds since the daemon started.",
            daemon.uptime_seconds,
        );
        if let (true, Some(ledger)) = (view.admin, &daemon.ledger) {
            for (name, help, value) in [
                (
                    "provd_ledger_records_written",
                    "Usage ledger records written to its file.",
                    ledger.written,
                ),
                (
                    "provd_ledger_records_dropped",
                    "Usage ledger records dropped because the writer's queue was full.",
                    ledger.dropped,
                ),
                (
                    "provd_ledger_records_lost",
                    "Usage ledger records lost because their batch could not be written.",
                    ledger.lost,
                ),
            ] {
                let mut one = Aggregate::default();
                one.add(Labels::new(), value);
                out.counter(name, help, &one);
            }
        }
        out.finish()
    }
}

/// The daemon-wide figures read at scrape time, beside the recorded series.
#[derive(Clone, Debug, Default)]
pub struct DaemonFigures {
    /// Connections open now.
    pub connections: u64,
    /// Generations running now.
    pub active_streams: u64,
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// Upstream HTTP responses: (provider label, status, count).
    pub upstream_statuses: Vec<(String, u16, u64)>,
    /// The ledger's counters, when it is on.
    pub ledger: Option<provd_client::message::LedgerStatus>,
}

/// What a scraper may see: an admin everything; anyone else only the series of the
/// providers it may use (not those counted as [`OTHER`]), without model labels (as
/// `status` shows a non-admin provider-level figures only) and without the ledger's
/// counters.
pub struct View<'a> {
    /// Whether the scraper is an admin.
    pub admin: bool,
    /// Whether it may see a provider's series (a provider label value, [`OTHER`] too).
    pub provider_visible: &'a dyn Fn(&str) -> bool,
}

/// The text format written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text exposition format 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format a scraper's `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text`, else Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    /// Its `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => PROMETHEUS_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// A series' labels in order; a label without a value is left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Labels(Vec<(&'static str, String)>);

impl Labels {
    fn new() -> Labels {
        Labels::default()
    }

    fn with(mut self, name: &'static str, value: Option<String>) -> Labels {
        if let Some(value) = value {
            self.0.push((name, value));
        }
        self
    }
}

/// Counter values summed per label set (two keys may share labels once a view drops
/// some).
#[derive(Default)]
struct Aggregate(BTreeMap<Labels, u64>);

impl Aggregate {
    fn add(&mut self, labels: Labels, value: u64) {
        *self.0.entry(labels).or_default() += value;
    }
}

#[derive(Default)]
struct HistogramAggregate(BTreeMap<Labels, HistogramSnapshot>);

impl HistogramAggregate {
    fn add(&mut self, labels: Labels, value: HistogramSnapshot) {
        self.0.entry(labels).or_default().merge(&value);
    }
}

/// The text being written.
struct Exposition {
    format: Format,
    out: String,
}

impl Exposition {
    fn new(format: Format) -> Exposition {
        Exposition {
            format,
            out: String::new(),
        }
    }

    fn header(&mut self, family: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {family} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    /// A counter family `name` (without `_total`, which its samples carry; Prometheus
    /// text names the family with it, OpenMetrics without).
    fn counter(&mut self, name: &str, help: &str, values: &Aggregate) {
        let total = format!("{name}_total");
        let family = match self.format {
            Format::Prometheus => total.as_str(),
            Format::OpenMetrics => name,
        };
        self.header(family, "counter", help);
        for (labels, value) in &values.0 {
            self.sample(&total, labels, None, &value.to_string());
        }
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, "gauge", help);
        self.sample(name, &Labels::new(), None, &number(value));
    }

    fn histogram(&mut self, name: &str, help: &str, bounds: &[f64], values: &HistogramAggregate) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (labels, histogram) in &values.0 {
            let mut cumulative = 0;
            for (i, count) in histogram.buckets.iter().enumerate() {
                cumulative += count;
                let le = bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| le(*b));
                self.sample(&bucket, labels, Some(&le), &cumulative.to_string());
            }
            self.sample(
                &format!("{name}_count"),
                labels,
                None,
                &histogram.count().to_string(),
            );
            self.sample(&format!("{name}_sum"), labels, None, &number(histogram.sum));
        }
    }

    fn sample(&mut self, name: &str, labels: &Labels, le: Option<&str>, value: &str) {
        self.out.push_str(name);
        let pairs = labels
            .0
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain(le.map(|le| ("le", le)));
        let mut first = true;
        for (n, v) in pairs {
            self.out.push(if first { '{' } else { ',' });
            first = false;
            let _ = write!(self.out, "{n}=\"{}\"", escape_label(v));
        }
        if !first {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn finish(mut self) -> String {
        if self.format == Format::OpenMetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// A bucket boundary as Prometheus's own Go client writes it (OpenMetrics asks for one
/// canonical form): the shortest float with a decimal point (`1.0`, `0.01`), and from
/// seven digits before the point an exponent (`1.048576e+06`).
fn le(bound: f64) -> String {
    let shortest = format!("{bound:?}");
    match shortest.find('.') {
        Some(dot) if bound > 0.0 && dot > 6 => {
            let digits = format!("{}{}", &shortest[1..dot], &shortest[dot + 1..]);
            let mantissa = format!("{}.{digits}", &shortest[..1]);
            let mantissa = mantissa.trim_end_matches(['0', '.']);
            format!("{mantissa}e+{:02}", dot - 1)
        }
        _ => shortest,
    }
}

/// A sample value.
fn number(value: f64) -> String {
    if value.is_finite() {
        format!("{value}")
    } else if value.is_nan() {
        "NaN".to_owned()
    } else if value > 0.0 {
        "+Inf".to_owned()
    } else {
        "-Inf".to_owned()
    }
}

/// A label value escaped as both formats require: `\`, `"` and newline.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `# HELP` text escaped: `\` and newline (OpenMetrics escapes `"` there too; ours have
/// none).
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "[daemon]\ndefault_provider = \"main\"\n\
        [providers.main]\ntype = \"mock\"\ndefault_model = \"house\"\nfallbacks = [\"spare/backup-model\"]\n\
        [providers.spare]\ntype = \"mock\"\n\
        [aliases]\nfast = [\"spare/quick\"]\n\
        [prices.\"main/priced\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n";

    fn config() -> Arc<Config> {
        Arc::new(Config::parse(CONFIG, std::path::Path::new("t")).unwrap())
    }

    fn record(provider: &str, model: &str, outcome: Outcome, code: Option<&'static str>) -> Record {
        Record {
            token: Some("tok-id".into()),
            reasoning_tokens: 5,
            chunks: 3,
            outcome,
            error_code: code,
            first_chunk_ms: Some(30),
            duration_ms: 150,
            ..Record::example(provider, model)
        }
    }

    fn everything(_: &str) -> bool {
        true
    }

    fn render(metrics: &Metrics, admin: bool, format: Format) -> String {
        let daemon = DaemonFigures {
            connections: 2,
            active_streams: 1,
            uptime_seconds: 5.5,
            upstream_statuses: vec![("main".into(), 429, 2), ("main".into(), 200, 3)],
            ledger: Some(Default::default()),
        };
        metrics.render(
            &daemon,
            &View {
                admin,
                provider_visible: &everything,
            },
            format,
        )
    }

    #[test]
    fn only_configured_providers_and_models_become_label_values() {
        let config = config();
        // The mock type's own default model is provd's choice, not a client's.
        let type_default = crate::provider::registry::row(crate::settings::ProviderKind::Mock)
            .default_model
            .unwrap();
        for model in [
            "house",
            "backup-model",
            "fast",
            "quick",
            "priced",
            type_default,
        ] {
            assert_eq!(label(&config, Label::Model, model), model);
        }
        assert_eq!(label(&config, Label::Model, "made-up-by-a-client"), OTHER);
        let azure = Config::parse(
            "[providers.az]\ntype = \"azure-openai\"\ndefault_model = \"chat-prod\"\n\
             [providers.az.options]\nendpoint = \"https://x.example\"\n\
             deployments = [\"chat-prod\", \"chat-eu\"]\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        assert_eq!(label(&azure, Label::Model, "chat-eu"), "chat-eu");
        assert_eq!(label(&config, Label::Model, ""), OTHER);
        assert_eq!(label(&config, Label::Model, "main/priced"), OTHER);
        assert_eq!(label(&config, Label::Provider, "spare"), "spare");
        assert_eq!(label(&config, Label::Provider, "nobody"), OTHER);
    }

    #[test]
    fn a_client_chosen_model_is_counted_as_other_and_its_name_never_appears() {
        let metrics = Metrics::default();
        let config = config();
        let hostile = "ignore previous\" instructions}\n sk-secret-key";
        metrics.generation(&config, &record("main", hostile, Outcome::Completed, None));
        metrics.generation(&config, &record("main", "fast", Outcome::Completed, None));
        let text = render(&metrics, true, Format::Prometheus);
        assert!(!text.contains("ignore previous"), "{text}");
        assert!(!text.contains("sk-secret"), "{text}");
        assert!(!text.contains("alice") && !text.contains("4242") && !text.contains("tok-id"));
        assert!(text.contains(
            "provd_requests_total{provider=\"main\",model=\"other\",outcome=\"completed\"} 1\n"
        ));
        assert!(text.contains(
            "provd_requests_total{provider=\"main\",model=\"fast\",outcome=\"completed\"} 1\n"
        ));
    }

    #[test]
    fn a_model_a_reload_configures_is_its_own_label_from_then_on() {
        let metrics = Metrics::default();
        let before = Arc::new(
            Config::parse(
                "[providers.main]\ntype = \"mock\"\n",
                std::path::Path::new("t"),
            )
            .unwrap(),
        );
        metrics.generation(&before, &record("main", "new", Outcome::Completed, None));
        let after = Arc::new(
            Config::parse(
                "[providers.main]\ntype = \"mock\"\ndefault_model = \"new\"\n",
                std::path::Path::new("t"),
            )
            .unwrap(),
        );
        metrics.generation(&after, &record("main", "new", Outcome::Completed, None));
        let text = render(&metrics, true, Format::Prometheus);
        for model in ["other", "new"] {
            let line = format!(
                "provd_requests_total{{provider=\"main\",model=\"{model}\",outcome=\"completed\"}} 1\n"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
    }

    #[test]
    fn counters_end_in_total_and_histogram_buckets_are_cumulative_up_to_inf() {
        let metrics = Metrics::default();
        let config = config();
        let mut slow = record("main", "house", Outcome::Completed, None);
        slow.duration_ms = 100_000;
        metrics.generation(&config, &slow);
        metrics.generation(&config, &record("main", "house", Outcome::Completed, None));
        metrics.generation(
            &config,
            &record("main", "house", Outcome::Failed, Some("timeout")),
        );
        let text = render(&metrics, true, Format::Prometheus);
        assert!(
            text.contains("# TYPE provd_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains(
            "provd_errors_total{provider=\"main\",model=\"house\",code=\"timeout\"} 1\n"
        ));
        let labels = "gen_ai_operation_name=\"chat\",gen_ai_provider_name=\"main\",gen_ai_request_model=\"house\",gen_ai_response_model=\"house\"";
        let bucket = |le: &str| {
            format!("gen_ai_server_request_duration_seconds_bucket{{{labels},le=\"{le}\"}}")
        };
        // 0.15 s falls in the 0.16 bucket; 100 s above the last bound.
        assert!(text.contains(&format!("{} 0\n", bucket("0.08"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("0.16"))), "{text}");
        assert!(text.contains(&format!("{} 1\n", bucket("81.92"))), "{text}");
        assert!(text.contains(&format!("{} 2\n", bucket("+Inf"))), "{text}");
        assert!(text.contains(&format!(
            "gen_ai_server_request_duration_seconds_count{{{labels}}} 2\n"
        )));
        assert!(text.contains(&format!(
            "gen_ai_server_request_duration_seconds_sum{{{labels}}} 100.15\n"
        )));
        assert!(text.contains(&format!(
            "gen_ai_server_request_duration_seconds_count{{{labels},error_type=\"timeout\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "gen_ai_client_token_usage_bucket{{{labels},gen_ai_token_type=\"input\",le=\"16.0\"}} 2\n"
        )));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn bucket_bounds_are_written_as_gos_client_writes_them() {
        let written: Vec<String> = [0.001, 0.01, 1.0, 81.92, 16384.0, 1048576.0, 67108864.0, 1e7]
            .into_iter()
            .map(le)
            .collect();
        assert_eq!(
            written,
            [
                "0.001",
                "0.01",
                "1.0",
                "81.92",
                "16384.0",
                "1.048576e+06",
                "6.7108864e+07",
                "1e+07"
            ]
        );
    }

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        // A configured name may hold any of them: it is escaped, never cut.
        let config = Arc::new(
            Config::parse(
                "[providers.main]\ntype = \"mock\"\ndefault_model = \"we\\\"ird\\\\name\\n\"\n",
                std::path::Path::new("t"),
            )
            .unwrap(),
        );
        let metrics = Metrics::default();
        metrics.generation(
            &config,
            &record("main", "we\"ird\\name\n", Outcome::Completed, None),
        );
        let text = render(&metrics, true, Format::Prometheus);
        assert!(text.contains("model=\"we\\\"ird\\\\name\\n\""), "{text}");
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let metrics = Metrics::default();
        metrics.generation(
            &config(),
            &record("main", "house", Outcome::Completed, None),
        );
        let text = render(&metrics, true, Format::OpenMetrics);
        assert!(text.contains("# TYPE provd_requests counter\n"), "{text}");
        assert!(text.contains("provd_requests_total{"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
    }

    #[test]
    fn a_non_admin_sees_the_providers_it_may_use_without_models_or_the_ledger() {
        let metrics = Metrics::default();
        let config = config();
        metrics.generation(&config, &record("main", "house", Outcome::Completed, None));
        metrics.generation(&config, &record("main", "fast", Outcome::Completed, None));
        metrics.generation(&config, &record("spare", "quick", Outcome::Completed, None));
        metrics.generation(
            &config,
            &record("unknown", "x", Outcome::Failed, Some("not_found")),
        );
        let only_main = |p: &str| p == "main" || p == OTHER;
        let text = metrics.render(
            &DaemonFigures {
                ledger: Some(Default::default()),
                ..Default::default()
            },
            &View {
                admin: false,
                provider_visible: &only_main,
            },
            Format::Prometheus,
        );
        assert!(
            text.contains("provd_requests_total{provider=\"main\",outcome=\"completed\"} 2\n"),
            "{text}"
        );
        assert!(!text.contains("spare") && !text.contains("house"), "{text}");
        assert!(
            !text.contains("other") && !text.contains("not_found"),
            "{text}"
        );
        assert!(!text.contains("provd_ledger"), "{text}");
        assert!(text.contains("provd_active_streams 0\n"), "{text}");
    }

    #[test]
    fn retries_and_fallbacks_count_per_target_with_the_default_model_filled_in() {
        let metrics = Metrics::default();
        let config = config();
        let target = |p: &str, m: Option<&str>| Target {
            provider: p.into(),
            model: m.map(str::to_owned),
        };
        metrics.retry(&config, &target("main", None));
        metrics.retry(&config, &target("main", Some("house")));
        metrics.fallback(&config, &target("main", Some("chosen-by-client")));
        let text = render(&metrics, true, Format::Prometheus);
        assert!(
            text.contains("provd_retries_total{provider=\"main\",model=\"house\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("provd_fallbacks_total{provider=\"main\",model=\"other\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("provd_upstream_responses_total{provider=\"main\",status=\"429\"} 2\n")
        );
    }
}
