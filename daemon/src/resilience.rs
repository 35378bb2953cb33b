//! Retries, fallbacks and the request deadline: the one place that decides whether a
//! failed generation is tried again, and where.
//!
//! A generation is *opened* here: its first provider is asked, and the stream is read up
//! to its first piece of text (or its end). Only then is anything sent to the client, so
//! a retry or a fallback can never duplicate text. A retryable failure before that point
//! is retried on the same provider with exponential backoff and full jitter, honouring
//! the upstream's retry-after, up to the provider's `retry_attempts`; then the next
//! target in the fallback list (or the model alias) is tried. A failure that is final for
//! one provider only (a spent quota, a billing limit) skips the retries and goes straight
//! to the next target. One deadline, the primary
//! provider's `total_timeout_seconds`, bounds all of it together. Nothing below this
//! layer retries (the HTTP client is built with retries off).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use provd_client::{ErrorCode, GenerateRequest, Usage};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::time::Instant;

use crate::config::{Config, Target};
use crate::factory::Providers;
use crate::provider::{EventStream, Outcome, Provider, ProviderError, StreamEvent};
use crate::untrusted::untrusted;

/// First backoff step; doubles per attempt.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Largest backoff step.
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// A generation that has produced its first event and may now stream to the client.
pub struct Opened {
    /// The provider id that answered.
    pub provider_id: String,
    /// The instance that answered; its counters get the rest of the generation.
    pub instance: Arc<dyn Provider>,
    /// Events read while opening (usage reports, then the first text or the end).
    pub first: VecDeque<StreamEvent>,
    /// The rest of the stream.
    pub rest: EventStream,
    /// When the whole request must be over.
    pub deadline: Instant,
}

/// The providers a request may be served by, in order: an alias's targets, or the named
/// (or default) provider followed by its fallbacks.
pub fn targets(config: &Config, request: &GenerateRequest) -> Vec<Target> {
    if request.provider.is_none() {
        if let Some(alias) = request.model.as_ref().and_then(|m| config.aliases.get(m)) {
            return alias.iter().map(|t| Target::parse(t)).collect();
        }
    }
    let provider = request
        .provider
        .clone()
        .or_else(|| config.default_provider().map(str::to_owned));
    let Some(provider) = provider else {
        // Let the factory produce its "no provider" error.
        return vec![Target {
            provider: String::new(),
            model: request.model.clone(),
        }];
    };
    let fallbacks = config
        .providers
        .get(&provider)
        .map(|p| {
            p.fallbacks
                .iter()
                .map(|t| Target::parse(t))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    std::iter::once(Target {
        provider,
        model: request.model.clone(),
    })
    .chain(fallbacks)
    .collect()
}

/// The deadline of a request: its first target's `total_timeout_seconds` from now.
pub fn deadline(config: &Config, targets: &[Target]) -> Instant {
    let seconds = targets
        .first()
        .and_then(|t| config.providers.get(&t.provider))
        .map_or(crate::settings::DEFAULT_TOTAL_TIMEOUT_SECONDS, |p| {
            p.total_timeout_seconds
        });
    Instant::now() + Duration::from_secs(seconds)
}

/// The error for a request whose deadline passed.
pub fn deadline_error(config: &Config, targets: &[Target], chunks: u32) -> ProviderError {
    let seconds = targets
        .first()
        .and_then(|t| config.providers.get(&t.provider))
        .map_or(crate::settings::DEFAULT_TOTAL_TIMEOUT_SECONDS, |p| {
            p.total_timeout_seconds
        });
    ProviderError::new(
        ErrorCode::Timeout,
        format!("the request's total timeout of {seconds}s (total_timeout_seconds) passed after {chunks} chunks"),
    )
}

/// Opens a generation on the first of `targets` that answers (see [`targets`]; the
/// caller may have removed those the client may not use), retrying and falling back as
/// the module docs say. `config` is the request's one snapshot of the configuration, the
/// one its targets were chosen from: its deadline and retries come from it too, not from
/// whatever a reload has put in force since. `attempted` becomes true once an attempt is
/// counted in the provider's counters, so a caller that drops this future before that
/// can count the generation itself. Retries and fallbacks are counted in `metrics`.
pub async fn open(
    factory: &Providers,
    metrics: &crate::metrics::Metrics,
    config: &Config,
    request: &GenerateRequest,
    targets: &[Target],
    attempted: &std::sync::atomic::AtomicBool,
) -> Result<Opened, ProviderError> {
    crate::provider::capabilities::validate(request)?;
    let deadline = deadline(config, targets);
    let mut failures = Failures::default();
    for (index, target) in targets.iter().enumerate() {
        let provider = (!target.provider.is_empty()).then_some(target.provider.as_str());
        let (provider_id, instance) = match factory.get(provider, target.model.as_deref()).await {
            Ok(found) => found,
            // The first target failing to resolve is the caller's problem to hear
            // about; a broken fallback just passes the turn.
            Err(e) => {
                let stop = index == 0 || !e.retryable;
                failures.push(label(target, &target.provider), e);
                if stop {
                    return Err(failures.into_error());
                }
                if index + 1 < targets.len() {
                    metrics.fallback(config, target);
                }
                continue;
            }
        };
        let label = label(target, &provider_id);
        // The target as the metrics name it: the default provider resolved.
        let resolved = Target {
            provider: provider_id.clone(),
            model: target.model.clone(),
        };
        // What the request needs must be what this provider can do; a fallback that
        // cannot passes the turn, as one that fails to resolve does.
        if let Some(provider_config) = config.providers.get(&provider_id) {
            if let Err(e) =
                crate::provider::capabilities::check(&provider_id, provider_config, request)
            {
                failures.push(label, e);
                if index == 0 {
                    return Err(failures.into_error());
                }
                if index + 1 < targets.len() {
                    metrics.fallback(config, &resolved);
                }
                continue;
            }
        }
        let attempts = config
            .providers
            .get(&provider_id)
            .map_or(0, |p| p.retry_attempts);
        // This target's latest failure: only the last of its retries is reported.
        let mut failed: Option<ProviderError> = None;
        for attempt in 0..=attempts {
            if Instant::now() >= deadline {
                failures.extend(&label, failed.take());
                failures.push(label, deadline_error(config, targets, 0));
                return Err(failures.into_error());
            }
            if attempt > 0 {
                metrics.retry(config, &resolved);
            }
            let state = instance.state();
            let attempt_counted = CountedAttempt::start(state);
            attempted.store(true, std::sync::atomic::Ordering::Relaxed);
            let opened =
                tokio::time::timeout_at(deadline, first_event(instance.as_ref(), request)).await;
            attempt_counted.settled();
            let error = match opened {
                Err(_) => {
                    state.record_end(Outcome::Failed, Usage::default());
                    failures.extend(&label, failed.take());
                    failures.push(label, deadline_error(config, targets, 0));
                    return Err(failures.into_error());
                }
                Ok(Ok((first, rest))) => {
                    if index > 0 || attempt > 0 {
                        tracing::info!(provider = %untrusted(&provider_id), model = %untrusted(instance.model()), attempt, "served after retry or fallback");
                    }
                    return Ok(Opened {
                        provider_id,
                        instance,
                        first,
                        rest,
                        deadline,
                    });
                }
                Ok(Err(e)) => e,
            };
            state.record_end(Outcome::Failed, Usage::default());
            if !error.retryable {
                let elsewhere = error.try_elsewhere;
                if elsewhere {
                    tracing::warn!(provider = %untrusted(&provider_id), error = %untrusted(&error), "final failure of this provider before the first chunk; trying the next");
                }
                failed = Some(error);
                if elsewhere {
                    break;
                }
                failures.extend(&label, failed.take());
                return Err(failures.into_error());
            }
            tracing::warn!(provider = %untrusted(&provider_id), attempt, error = %untrusted(&error), "retryable failure before the first chunk");
            let wait = backoff(attempt, error.retry_after);
            failed = Some(error);
            if attempt == attempts || waits_past(deadline, wait) {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        failures.extend(&label, failed);
        if index + 1 < targets.len() {
            metrics.fallback(config, &resolved);
        }
    }
    if failures.is_empty() {
        return Err(ProviderError::new(
            ErrorCode::Internal,
            "no provider to try",
        ));
    }
    Err(failures.into_error())
}

/// The failures of the targets a request tried, in the order tried (the requested
/// target first), each labelled with its target.
#[derive(Debug, Default)]
struct Failures(Vec<(String, ProviderError)>);

impl Failures {
    fn push(&mut self, label: String, error: ProviderError) {
        self.0.push((label, error));
    }

    fn extend(&mut self, label: &str, error: Option<ProviderError>) {
        if let Some(error) = error {
            self.push(label.to_owned(), error);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The terminal error: the last failure's code, `retryable` and retry-after (what the
    /// client may do next depends on the last target tried), and a message that names
    /// every target's failure, the requested one first, so a fallback's failure never
    /// hides why the requested provider failed. One failure is returned as it is.
    fn into_error(self) -> ProviderError {
        let described: Vec<String> = self.0.iter().map(|(label, e)| describe(label, e)).collect();
        let Some((_, mut last)) = self.0.into_iter().last() else {
            return ProviderError::new(ErrorCode::Internal, "no provider to try");
        };
        if described.len() > 1 {
            last.message = format!(
                "every target tried failed, the requested one first: {}",
                described.join("; ")
            );
        }
        last
    }
}

/// How a failure list names a target: its provider id (`provider` once resolved: the
/// default provider has an empty target) and the model it names, if any.
fn label(target: &Target, provider: &str) -> String {
    let provider = if provider.is_empty() {
        "the default provider"
    } else {
        provider
    };
    match &target.model {
        Some(model) => format!("{provider}/{model}"),
        None => provider.to_owned(),
    }
}

/// One failure in a terminal error's list: `label: code: message`, where a message that
/// already begins with the provider's id does not repeat it.
fn describe(label: &str, e: &ProviderError) -> String {
    let provider = label.split('/').next().unwrap_or(label);
    let message = e
        .message
        .strip_prefix(provider)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(&e.message);
    format!("{label}: {}: {message}", e.code)
}

/// An attempt counted as started: if the opening future is dropped before the attempt
/// settles (the client cancelled, or disconnected, while the provider was still
/// answering), it counts as cancelled, so `status` agrees with what the client saw and
/// `active` does not keep it forever.
struct CountedAttempt<'a> {
    state: Option<&'a crate::provider::ProviderState>,
}

impl<'a> CountedAttempt<'a> {
    fn start(state: &'a crate::provider::ProviderState) -> Self {
        state.record_start();
        CountedAttempt { state: Some(state) }
    }

    /// The attempt came back; whoever holds its result records how it ends.
    fn settled(mut self) {
        self.state = None;
    }
}

impl Drop for CountedAttempt<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.state {
            state.record_end(Outcome::Cancelled, Usage::default());
        }
    }
}

/// Starts a generation and reads it up to its first text or its end.
async fn first_event(
    instance: &dyn Provider,
    request: &GenerateRequest,
) -> Result<(VecDeque<StreamEvent>, EventStream), ProviderError> {
    let mut rest = instance.generate(request.clone()).await?;
    let mut first = VecDeque::new();
    loop {
        match rest.next().await {
            Some(Ok(event @ (StreamEvent::Usage(_) | StreamEvent::Model(_)))) => {
                first.push_back(event)
            }
            Some(Ok(event)) => {
                first.push_back(event);
                return Ok((first, rest));
            }
            Some(Err(e)) => return Err(e),
            None => {
                let mut e = ProviderError::new(
                    ErrorCode::UpstreamError,
                    "the provider's stream ended before its first event",
                );
                e.retryable = true;
                return Err(e);
            }
        }
    }
}

/// Whether waiting `wait` from now reaches `deadline`. A wait too long for the clock (an
/// upstream's retry-after of 1e19 seconds) certainly does, rather than overflowing it.
fn waits_past(deadline: Instant, wait: Duration) -> bool {
    Instant::now()
        .checked_add(wait)
        .is_none_or(|at| at >= deadline)
}

/// How long to wait before retry number `attempt + 1`: the upstream's retry-after when it
/// gave one, else a uniformly random time up to `BACKOFF_BASE × 2^attempt` (full jitter,
/// so that clients that failed together do not retry together).
pub fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after;
    }
    let ceiling = BACKOFF_BASE
        .checked_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX))
        .unwrap_or(BACKOFF_CAP)
        .min(BACKOFF_CAP);
    let mut bytes = [0u8; 8];
    // A failing system RNG only costs the jitter.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return ceiling;
    }
    let fraction = (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64;
    ceiling.mul_f64(fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_honours_retry_after_and_stays_under_the_ceiling() {
        assert_eq!(
            backoff(0, Some(Duration::from_millis(1234))),
            Duration::from_millis(1234)
        );
        for attempt in 0..40 {
            let ceiling = (BACKOFF_BASE * 2u32.saturating_pow(attempt.min(20))).min(BACKOFF_CAP);
            assert!(backoff(attempt, None) <= ceiling);
        }
    }

    #[test]
    fn a_retry_hint_longer_than_the_clock_reaches_the_deadline_without_overflow() {
        let deadline = Instant::now() + Duration::from_secs(3600);
        assert!(waits_past(deadline, Duration::MAX));
        assert!(waits_past(deadline, Duration::from_secs(7200)));
        assert!(!waits_past(deadline, Duration::from_millis(1)));
    }

    #[test]
    fn a_terminal_error_lists_every_failure_and_takes_the_last_ones_code_and_hints() {
        let mut first = ProviderError::new(ErrorCode::Unavailable, "claude: cannot connect");
        first.retry_after = Some(Duration::from_secs(1));
        let mut second = ProviderError::new(ErrorCode::Unauthenticated, "no key for gpt");
        second.try_elsewhere = true;
        let mut failures = Failures::default();
        failures.push("claude".into(), first.clone());
        assert_eq!(
            failures.into_error(),
            first,
            "one failure is returned as it is"
        );
        let mut failures = Failures::default();
        failures.push("claude".into(), first);
        failures.push("gpt/gpt-4o".into(), second);
        let e = failures.into_error();
        assert_eq!(
            (e.code, e.retryable, e.retry_after),
            (ErrorCode::Unauthenticated, false, None)
        );
        assert_eq!(
            e.message,
            "every target tried failed, the requested one first: \
             claude: unavailable: cannot connect; gpt/gpt-4o: unauthenticated: no key for gpt"
        );
    }

    #[test]
    fn targets_follow_aliases_then_fallbacks() {
        let config = Config::parse(
            "[daemon]\ndefault_provider = \"a\"\n[providers.a]\ntype = \"mock\"\nfallbacks = [\"b/big\", \"c\"]\n\
             [providers.b]\ntype = \"mock\"\n[providers.c]\ntype = \"mock\"\n[aliases]\nfast = [\"c/small\", \"b\"]\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let t = |p: &str, m: Option<&str>| Target {
            provider: p.into(),
            model: m.map(str::to_owned),
        };
        let mut req = GenerateRequest::prompt("x");
        assert_eq!(
            targets(&config, &req),
            [t("a", None), t("b", Some("big")), t("c", None)]
        );
        req.model = Some("fast".into());
        assert_eq!(
            targets(&config, &req),
            [t("c", Some("small")), t("b", None)]
        );
        req.provider = Some("b".into());
        assert_eq!(
            targets(&config, &req),
            [t("b", Some("fast"))],
            "an alias applies only without a provider"
        );
    }
}
