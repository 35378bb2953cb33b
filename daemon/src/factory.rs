//! The provider factory: which type builds which provider, a bounded cache of instances
//! (one per provider id and model) each initialized exactly once even when many requests
//! arrive for it at the same moment, and their shutdown when evicted, expired, retired
//! by a reload, or when the daemon stops.
//!
//! Clients name models freely, so the cache is bounded: at most
//! `[daemon] max_provider_instances` instances; a new one takes the place of the least
//! recently used idle one, and an instance unused for `provider_idle_seconds` is shut
//! down by a background sweep. An instance is *in use* while anything outside the cache
//! holds it: a generation holds its `Arc` from the moment it is resolved to its terminal
//! reply, a listing for the call, a first use its slot while it initializes. Those are
//! never evicted; when all are in use, a request for a new provider and model gets
//! `overloaded`. Use is seen through those holds (the same test decides when a retired
//! instance may be shut down), not announced, so the sweep measures idleness: one it
//! sees in use counts as used then, and an instance expires within a quarter of
//! `provider_idle_seconds` either side of that time after its last use.
//!
//! What must outlive an instance lives per configured provider instead: its counters and
//! its one HTTP client (connection pool), shared by all its models.
//!
//! The models the configuration names (each provider's `default_model` and the targets of
//! `[aliases]`) are outside the cap: their instances neither count towards it nor are
//! evicted for room, only expired when idle. The administrator chose them, so they are
//! few; and a user who fills every slot with made-up names held busy cannot lock the
//! others out of the models the host is set up to serve.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use provd_client::message::{
    InstanceStatus, ProviderCounters, ProviderFailure, ProviderStatus, STATUS_TOP_INSTANCES,
};
use provd_client::{ErrorCode, ModelInfo, ModelList, ProviderInfo, Usage};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::config::Config;
use crate::credentials::keys;
use crate::provider::http::SharedClient;
use crate::provider::registry::{self, Constructor};
use crate::provider::{Counters, Outcome, Provider, ProviderError, ProviderSpec};
use crate::settings::{ProviderConfig, ProviderKind};

type Slot = Arc<OnceCell<Arc<dyn Provider>>>;
/// A provider id and a model.
type Key = (String, String);

/// The shortest pause of the idle sweep (it runs every quarter of the idle time).
const MIN_SWEEP_PERIOD: Duration = Duration::from_millis(100);
/// The longest pause of the idle sweep.
const MAX_SWEEP_PERIOD: Duration = Duration::from_secs(60);

/// Provider `id`'s table, or a `not_found` error listing the configured ids.
fn configured<'c>(config: &'c Config, id: &str) -> Result<&'c ProviderConfig, ProviderError> {
    config.providers.get(id).ok_or_else(|| {
        ProviderError::new(
            ErrorCode::NotFound,
            format!(
                "no provider '{id}' is configured (configured: {})",
                config
                    .providers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })
}

/// A provider's settings as its instance gets them: without a configured `base_url`, the
/// one in its type's base-URL variable ([`registry::ProviderType::base_url_env`]) when
/// the daemon's environment sets it.
fn with_environment_base_url(config: &ProviderConfig) -> ProviderConfig {
    let mut config = config.clone();
    if config.base_url.is_none() {
        config.base_url = registry::row(config.kind)
            .base_url_env
            .and_then(|var| std::env::var(var).ok())
            .filter(|url| !url.trim().is_empty());
    }
    config
}

/// One cached instance.
struct Entry {
    slot: Slot,
    /// When it was last handed out, or last seen in use by the sweep.
    last_used: Instant,
    /// Rank in the least-recently-used order (larger is more recent).
    used_rank: u64,
    /// A model the configuration names: outside the cap (see the module docs).
    configured: bool,
}

/// What belongs to a configured provider rather than to one of its instances.
struct Shared {
    /// Its counters over all its models; evicting an instance loses none.
    counters: Arc<Counters>,
    /// Its connection pool, given to every instance through its spec.
    http: SharedClient,
}

impl Shared {
    fn new(counters: Arc<Counters>) -> Shared {
        Shared {
            counters,
            http: SharedClient::default(),
        }
    }
}

/// The bounded instance cache and the per-provider state, under one lock.
struct Cache {
    entries: HashMap<Key, Entry>,
    providers: HashMap<String, Shared>,
    /// `[daemon] max_provider_instances` in force.
    max: usize,
    /// `[daemon] provider_idle_seconds` in force.
    idle: Duration,
    /// The last rank given out.
    rank: u64,
    /// Whether a sweep task runs (it ends when the cache is empty).
    sweeping: bool,
}

/// Whether anything outside the cache holds an instance (see the module docs). Called
/// with the cache locked: nothing can take a new hold of a cached slot meanwhile, since
/// holds are only taken under that lock.
fn in_use(slot: &Slot) -> bool {
    Arc::strong_count(slot) > 1 || slot.get().is_some_and(|i| Arc::strong_count(i) > 1)
}

impl Cache {
    fn new(config: &Config) -> Cache {
        Cache {
            entries: HashMap::new(),
            providers: config
                .providers
                .keys()
                .map(|id| (id.clone(), Shared::new(Arc::default())))
                .collect(),
            max: config.daemon.max_provider_instances,
            idle: Duration::from_secs(config.daemon.provider_idle_seconds),
            rank: 0,
            sweeping: false,
        }
    }

    fn next_rank(&mut self) -> u64 {
        self.rank += 1;
        self.rank
    }

    /// Takes out the instances unused for the idle time. One found in use counts as used
    /// now, so its idle time runs from (about) the end of its last use.
    fn expire(&mut self, now: Instant) -> Vec<(Key, Slot)> {
        let idle = self.idle;
        let mut expired = Vec::new();
        self.entries.retain(|key, entry| {
            if in_use(&entry.slot) {
                entry.last_used = now;
                true
            } else if now.duration_since(entry.last_used) >= idle {
                expired.push((key.clone(), entry.slot.clone()));
                false
            } else {
                true
            }
        });
        expired
    }

    /// Makes room for one more instance by taking out the least recently used idle ones
    /// (into `evicted`, to be shut down), or says that every instance is in use.
    fn make_room(&mut self, evicted: &mut Vec<(Key, Slot)>) -> Result<(), ProviderError> {
        while self.entries.values().filter(|e| !e.configured).count() >= self.max {
            let victim = self
                .entries
                .iter()
                .filter(|(_, e)| !e.configured && !in_use(&e.slot))
                .min_by_key(|(_, e)| e.used_rank)
                .map(|(k, _)| k.clone());
            let Some(key) = victim else {
                return Err(ProviderError::new(
                    ErrorCode::Overloaded,
                    format!(
                        "every one of the {} provider instances provd keeps ([daemon] \
                         max_provider_instances) is serving a request; retry shortly, or \
                         raise max_provider_instances",
                        self.max
                    ),
                ));
            };
            let entry = self.entries.remove(&key).expect("the victim is cached");
            evicted.push((key, entry.slot));
        }
        Ok(())
    }

    /// How often the sweep looks for expired instances.
    fn sweep_period(&self) -> Duration {
        (self.idle / 4).clamp(MIN_SWEEP_PERIOD, MAX_SWEEP_PERIOD)
    }
}

/// Shuts down instances taken out of the cache; nothing else holds them.
async fn shut_down(taken: Vec<(Key, Slot)>, why: &'static str) {
    for ((provider, model), slot) in taken {
        if let Some(instance) = slot.get() {
            instance.shutdown().await;
            tracing::debug!(provider, model = ?model, why, "provider instance shut down");
        }
    }
}

/// Expires idle instances every [`Cache::sweep_period`] while the cache has any.
async fn sweep(cache: Weak<Mutex<Cache>>) {
    loop {
        let period = match cache.upgrade() {
            Some(cache) => cache
                .lock()
                .expect("instances lock poisoned")
                .sweep_period(),
            None => return,
        };
        tokio::time::sleep(period).await;
        let Some(cache) = cache.upgrade() else {
            return;
        };
        let (expired, done) = {
            let mut cache = cache.lock().expect("instances lock poisoned");
            let expired = cache.expire(Instant::now());
            let done = cache.entries.is_empty();
            if done {
                cache.sweeping = false;
            }
            (expired, done)
        };
        shut_down(expired, "idle").await;
        if done {
            return;
        }
    }
}

/// Registry, cache and lifecycle of provider instances: the original design's
/// `LlmProviderFactory` (DESIGN.md), named as Rust names a collection of things.
pub struct Providers {
    registry: HashMap<ProviderKind, Constructor>,
    config: RwLock<Arc<Config>>,
    // A std mutex: it guards only map look-ups, never an await; the slow part
    // (initialize) runs inside the slot's OnceCell, so other keys are never blocked by it.
    // Shared with the idle sweep (weakly: the sweep ends with the factory).
    cache: Arc<Mutex<Cache>>,
    // Instances a reload took out of the cache, waiting for their last generation to end
    // before they are shut down (see `reload`).
    retired: Mutex<Vec<(Key, Slot)>>,
    // Sealed API keys; `None` until the daemon opens its store (tests, the demo).
    #[cfg(unix)]
    vault: RwLock<Option<Arc<crate::credentials::Vault>>>,
}

/// What a [`Providers::reload`] changed among the providers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProviderChanges {
    /// Provider ids that are new.
    pub added: Vec<String>,
    /// Provider ids whose table changed.
    pub changed: Vec<String>,
    /// Provider ids that are gone.
    pub removed: Vec<String>,
    /// Instances taken out of the cache, to be shut down once unused.
    pub retired: usize,
}

/// The instance cache as `status` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheStatus {
    /// The [`STATUS_TOP_INSTANCES`] instances that served the most requests.
    pub instances: Vec<InstanceStatus>,
    /// How many other instances are cached.
    pub omitted: u64,
    /// Every configured provider's counters and instance count.
    pub providers: Vec<ProviderCounters>,
    /// `[daemon] max_provider_instances` in force.
    pub max_instances: u64,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("types", &self.registry.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Providers {
    /// A factory with no provider types registered.
    pub fn empty(config: Config) -> Self {
        keys::publish_environment_keys(&config);
        Providers {
            registry: HashMap::new(),
            cache: Arc::new(Mutex::new(Cache::new(&config))),
            config: RwLock::new(Arc::new(config)),
            retired: Mutex::new(Vec::new()),
            #[cfg(unix)]
            vault: RwLock::new(None),
        }
    }

    /// A factory with every provider type this build has: the constructors of the
    /// provider table ([`registry::TYPES`]).
    pub fn with_builtin_providers(config: Config) -> Self {
        let mut f = Providers::empty(config);
        for t in registry::TYPES {
            f.register(t.kind, t.build);
        }
        f
    }

    /// Registers (or replaces) the constructor for a type.
    pub fn register(&mut self, kind: ProviderKind, constructor: Constructor) {
        self.registry.insert(kind, constructor);
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().expect("config lock poisoned").clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().expect("instances lock poisoned")
    }

    /// Resolves a request's provider and model (defaults applied) to a ready instance,
    /// creating and initializing it on first use. A new instance may take the place of
    /// the least recently used idle one; when every cached instance is in use it is
    /// refused with `overloaded`. The caller uses the instance for as long as it holds
    /// it, and the cache keeps it meanwhile (see the module docs).
    pub async fn get(
        &self,
        provider: Option<&str>,
        model: Option<&str>,
    ) -> Result<(String, Arc<dyn Provider>), ProviderError> {
        let requested = (provider, model);
        let config = self.config();
        let id = match provider {
            Some(id) => id,
            None => config.default_provider().ok_or_else(|| {
                ProviderError::new(
                    ErrorCode::InvalidRequest,
                    "no provider named and no default_provider configured; pass a provider id",
                )
            })?,
        };
        let provider_config = configured(&config, id)?;
        let model = match model
            .or(provider_config.default_model.as_deref())
            .or(registry::row(provider_config.kind).default_model)
        {
            Some(m) => m.to_owned(),
            None => {
                return Err(ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!("provider '{id}' has no default_model; name a model in the request"),
                ))
            }
        };
        let constructor = self.constructor(id, provider_config)?;
        let mut evicted = Vec::new();
        let resolved = {
            let mut cache = self.lock();
            // A reload swaps the config and retires instances under this lock. A slot made
            // here from a config that is no longer in force would keep serving the old
            // table after the reload, so resolve again with the new one.
            if !Arc::ptr_eq(&config, &self.config()) {
                drop(cache);
                return Box::pin(self.get(requested.0, requested.1)).await;
            }
            let key = (id.to_owned(), model.clone());
            let now = Instant::now();
            let rank = cache.next_rank();
            // Asked only for a new instance: a cached one knows already.
            let mut configured = false;
            let room = match cache.entries.get_mut(&key) {
                Some(entry) => {
                    entry.last_used = now;
                    entry.used_rank = rank;
                    Ok(())
                }
                None if config.names_model(id, &model) => {
                    configured = true;
                    Ok(())
                }
                None => cache.make_room(&mut evicted),
            };
            if room.is_ok() && !cache.entries.contains_key(&key) {
                cache.entries.insert(
                    key.clone(),
                    Entry {
                        slot: Slot::default(),
                        last_used: now,
                        used_rank: rank,
                        configured,
                    },
                );
                if !cache.sweeping {
                    cache.sweeping = true;
                    tokio::spawn(sweep(Arc::downgrade(&self.cache)));
                }
            }
            room.map(|()| {
                let slot = cache.entries[&key].slot.clone();
                let shared = cache
                    .providers
                    .entry(id.to_owned())
                    .or_insert_with(|| Shared::new(Arc::default()));
                (slot, (shared.counters.clone(), shared.http.clone()))
            })
        };
        shut_down(evicted, "evicted to make room").await;
        let (slot, shared) = resolved?;
        let instance = slot
            .get_or_try_init(|| async move {
                let (counters, http) = shared;
                // The key is looked up only when an instance is built: a cached instance
                // keeps the key it was built with, so nothing is unsealed per request.
                let spec = ProviderSpec {
                    id: id.to_owned(),
                    model,
                    credential: self.credential(id, provider_config)?,
                    config: with_environment_base_url(provider_config),
                    http,
                    store_open: self.store_open(),
                };
                let instance = constructor(spec)?;
                instance.state().count_for_provider(counters);
                tracing::info!(provider = id, model = instance.model(), kind = %instance.kind(), "initializing provider");
                if let Err(e) = instance.initialize().await {
                    instance.state().set_status(ProviderStatus::Error);
                    tracing::warn!(provider = id, error = %crate::untrusted::untrusted(&e), "provider failed to initialize");
                    return Err(e);
                }
                Ok(instance)
            })
            .await?;
        Ok((id.to_owned(), instance.clone()))
    }

    /// The configured providers, sorted by id.
    pub fn providers(&self) -> Vec<ProviderInfo> {
        let config = self.config();
        let default = config.default_provider();
        config
            .providers
            .iter()
            .map(|(id, p)| ProviderInfo {
                id: id.clone(),
                kind: p.kind.to_string(),
                default_model: p.default_model.clone(),
                capabilities: capability_names(p),
                is_default: default == Some(id.as_str()),
            })
            .collect()
    }

    /// Counts a generation its client cancelled before any provider was asked (still
    /// queued, or waiting for its instance to initialize) as one cancelled request of the
    /// provider and model it was for, so `status` agrees with the client. Nothing is
    /// built for it: without a ready instance, only the provider's counters move.
    pub fn count_cancelled_before_start(&self, provider: Option<&str>, model: Option<&str>) {
        let config = self.config();
        let Some(id) = provider.or_else(|| config.default_provider()) else {
            return;
        };
        let model = model.or_else(|| {
            config
                .providers
                .get(id)
                .and_then(|p| p.default_model.as_deref())
        });
        let cache = self.lock();
        let instance = model
            .and_then(|m| cache.entries.get(&(id.to_owned(), m.to_owned())))
            .and_then(|e| e.slot.get().cloned());
        match instance {
            Some(instance) => {
                // Counts for the provider too.
                let state = instance.state();
                state.record_start();
                state.record_end(crate::provider::Outcome::Cancelled, Default::default());
            }
            None => {
                if let Some(shared) = cache.providers.get(id) {
                    shared.counters.count_cancelled_before_start();
                }
            }
        }
    }

    /// Every cached instance that is initialized, with state and counters, sorted by
    /// provider and model.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        let mut all = self.instances_locked(&self.lock());
        all.sort_by(|a, b| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)));
        all
    }

    fn instances_locked(&self, cache: &Cache) -> Vec<InstanceStatus> {
        // Read under the lock, without cloning a slot: a clone would make the instance
        // look in use to a concurrent eviction.
        cache
            .entries
            .iter()
            .filter_map(|((provider, model), entry)| {
                let instance = entry.slot.get()?;
                Some(InstanceStatus {
                    provider: provider.clone(),
                    kind: instance.kind().to_string(),
                    model: model.clone(),
                    status: instance.status(),
                    metrics: instance.metrics(),
                })
            })
            .collect()
    }

    /// Every provider's upstream HTTP responses by status, as its counters kept them
    /// (for the metrics): (provider id, status, count), by provider then status.
    pub fn upstream_statuses(&self) -> Vec<(String, u16, u64)> {
        let cache = self.lock();
        let mut statuses: Vec<(String, u16, u64)> = cache
            .providers
            .iter()
            .flat_map(|(id, shared)| {
                shared
                    .counters
                    .upstream_statuses()
                    .into_iter()
                    .map(move |(status, count)| (id.clone(), status, count))
            })
            .collect();
        statuses.sort();
        statuses
    }

    /// What `status` shows of the providers and instances: every configured provider's
    /// counters, and the [`STATUS_TOP_INSTANCES`] instances that served the most
    /// requests (ties by provider and model) with a count of the others, so its size does
    /// not grow with the models clients name.
    pub fn status(&self) -> CacheStatus {
        let config = self.config();
        let cache = self.lock();
        let mut instances = self.instances_locked(&cache);
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for i in &instances {
            *counts.entry(i.provider.as_str()).or_default() += 1;
        }
        let providers = config
            .providers
            .iter()
            .map(|(id, p)| {
                let metrics = cache
                    .providers
                    .get(id)
                    .map(|s| s.counters.metrics())
                    .unwrap_or_default();
                ProviderCounters {
                    provider: id.clone(),
                    kind: p.kind.to_string(),
                    instances: counts.get(id.as_str()).copied().unwrap_or(0),
                    metrics,
                    health: metrics.health(),
                }
            })
            .collect();
        let max_instances = cache.max as u64;
        drop(cache);
        instances.sort_by(|a, b| {
            b.metrics
                .requests
                .cmp(&a.metrics.requests)
                .then_with(|| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)))
        });
        let omitted = instances.len().saturating_sub(STATUS_TOP_INSTANCES) as u64;
        instances.truncate(STATUS_TOP_INSTANCES);
        CacheStatus {
            instances,
            omitted,
            providers,
            max_instances,
        }
    }

    /// The constructor of provider `id`'s type, or `unavailable` if this build lacks it.
    fn constructor(
        &self,
        id: &str,
        provider_config: &ProviderConfig,
    ) -> Result<Constructor, ProviderError> {
        self.registry
            .get(&provider_config.kind)
            .copied()
            .ok_or_else(|| {
                ProviderError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "provider type '{}' (providers.{id}) is not available in this build",
                        provider_config.kind
                    ),
                )
            })
    }

    /// Models of one provider, or of every provider. With every provider, one that fails
    /// is reported in `errors` and the others are still listed.
    pub async fn list_models(&self, provider: Option<&str>) -> Result<ModelList, ProviderError> {
        if let Some(id) = provider {
            return Ok(ModelList {
                models: self.list_provider(id, false).await?,
                errors: Vec::new(),
            });
        }
        let ids: Vec<String> = self.config().providers.keys().cloned().collect();
        let mut list = ModelList::default();
        for id in ids {
            match self.list_provider(&id, false).await {
                Ok(models) => list.models.extend(models),
                Err(e) => list.errors.push(ProviderFailure {
                    provider: id,
                    error: e.to_wire(),
                }),
            }
        }
        Ok(list)
    }

    /// `creds test`: lists provider `id`'s models with the key it has now, counted as a
    /// request (an error when it fails) in the provider's counters, so that `status`
    /// shows what the test found.
    pub async fn test_credential(&self, id: &str) -> Result<ModelList, ProviderError> {
        Ok(ModelList {
            models: self.list_provider(id, true).await?,
            errors: Vec::new(),
        })
    }

    /// Models of provider `id`, from an instance made for this listing alone and shut
    /// down after it. It is never cached, so listing neither fills nor pins a slot of the
    /// bounded cache, and it needs no model: `default_model`, else the type's own, else
    /// none (listing does not use it). It takes the key in force now, and the
    /// provider's HTTP client and counters (a request counted only when `counted`).
    async fn list_provider(
        &self,
        id: &str,
        counted: bool,
    ) -> Result<Vec<ModelInfo>, ProviderError> {
        let (config, counters, http) = {
            // Read under the cache lock, which a reload holds while it swaps both: the
            // provider's shared part then belongs to the configuration read.
            let mut cache = self.lock();
            let config = self.config();
            configured(&config, id)?;
            let shared = cache
                .providers
                .entry(id.to_owned())
                .or_insert_with(|| Shared::new(Arc::default()));
            (config, shared.counters.clone(), shared.http.clone())
        };
        let provider_config = configured(&config, id)?;
        let constructor = self.constructor(id, provider_config)?;
        let model = provider_config
            .default_model
            .as_deref()
            .or(registry::row(provider_config.kind).default_model)
            .unwrap_or_default()
            .to_owned();
        let spec = ProviderSpec {
            id: id.to_owned(),
            model,
            credential: self.credential(id, provider_config)?,
            config: with_environment_base_url(provider_config),
            http,
            store_open: self.store_open(),
        };
        let instance = constructor(spec)?;
        let state = instance.state();
        // Attached either way: the upstream's statuses count for the metrics whatever
        // the listing is for; only a counted listing records a request.
        state.count_for_provider(counters);
        if counted {
            state.record_start();
        }
        let result = async {
            instance.initialize().await?;
            instance.list_models().await
        }
        .await;
        if counted {
            let outcome = if result.is_ok() {
                Outcome::Completed
            } else {
                Outcome::Failed
            };
            state.record_end(outcome, Usage::default());
        }
        instance.shutdown().await;
        let capabilities = capability_names(provider_config);
        result.map(|mut models| {
            for model in &mut models {
                model.capabilities.clone_from(&capabilities);
            }
            models
        })
    }

    /// Puts `config` in force. Requests resolved from now on use it; instances of
    /// providers whose table changed or that are gone leave the cache (the next request
    /// builds a new one, with a new HTTP client) and are retired: generations already
    /// running keep them, and [`Self::shut_down_unused_retired`] shuts each down once
    /// nothing uses it. Provider counters are kept; those of removed providers dropped.
    /// The cache's bounds take effect at once (a lower cap on the next new instance).
    pub fn reload(&self, config: Config) -> ProviderChanges {
        let mut cache = self.lock();
        let old = self.config();
        let mut changes = ProviderChanges::default();
        for (id, table) in &config.providers {
            match old.providers.get(id) {
                None => changes.added.push(id.clone()),
                Some(previous) if previous != table => changes.changed.push(id.clone()),
                Some(_) => {}
            }
        }
        changes.removed = old
            .providers
            .keys()
            .filter(|id| !config.providers.contains_key(*id))
            .cloned()
            .collect();
        keys::publish_environment_keys(&config);
        for id in &changes.removed {
            cache.providers.remove(id);
        }
        for id in changes.added.iter().chain(&changes.changed) {
            let counters = cache
                .providers
                .remove(id)
                .map(|s| s.counters)
                .unwrap_or_default();
            cache.providers.insert(id.clone(), Shared::new(counters));
        }
        cache.max = config.daemon.max_provider_instances;
        cache.idle = Duration::from_secs(config.daemon.provider_idle_seconds);
        *self.config.write().expect("config lock poisoned") = Arc::new(config);
        let stale = |id: &str| {
            changes.changed.iter().any(|c| c == id) || changes.removed.iter().any(|r| r == id)
        };
        changes.retired = self.retire_locked(&mut cache, stale);
        changes
    }

    /// Takes provider `id`'s instances out of the cache (its key changed): the next
    /// request builds one with the new key, running generations keep the old one, and
    /// [`Self::shut_down_unused_retired`] shuts each down once nothing uses it.
    pub fn retire_provider(&self, id: &str) -> usize {
        let mut cache = self.lock();
        self.retire_locked(&mut cache, |candidate| candidate == id)
    }

    fn retire_locked(&self, cache: &mut Cache, stale: impl Fn(&str) -> bool) -> usize {
        let keys: Vec<_> = cache
            .entries
            .keys()
            .filter(|(id, _)| stale(id))
            .cloned()
            .collect();
        let mut retired = self.retired.lock().expect("retired lock poisoned");
        let mut count = 0;
        for key in keys {
            if let Some(entry) = cache.entries.remove(&key) {
                retired.push((key, entry.slot));
                count += 1;
            }
        }
        count
    }

    /// Gives the factory the sealed store to take API keys from.
    #[cfg(unix)]
    pub fn set_vault(&self, vault: Arc<crate::credentials::Vault>) {
        *self.vault.write().expect("vault lock poisoned") = Some(vault);
    }

    /// Whether a credential store is open, with its master key (where a missing key is
    /// best sealed).
    fn store_open(&self) -> bool {
        #[cfg(unix)]
        return self
            .vault
            .read()
            .expect("vault lock poisoned")
            .as_ref()
            .is_some_and(|vault| vault.is_enabled());
        #[cfg(not(unix))]
        false
    }

    /// A provider's API key: sealed in the store, else from the daemon's environment
    /// ([`keys::resolve`]).
    fn credential(
        &self,
        id: &str,
        config: &ProviderConfig,
    ) -> Result<Option<crate::secret::Secret>, ProviderError> {
        #[cfg(unix)]
        return keys::resolve(
            self.vault.read().expect("vault lock poisoned").as_deref(),
            id,
            config,
        );
        #[cfg(not(unix))]
        {
            let _ = id;
            Ok(keys::from_environment(config))
        }
    }

    /// Shuts down the retired instances nothing uses any more, and returns how many are
    /// still in use.
    pub async fn shut_down_unused_retired(&self) -> usize {
        let unused: Vec<_> = {
            let mut retired = self.retired.lock().expect("retired lock poisoned");
            // Nobody can reach a retired slot or its instance again except through clones
            // taken before it was retired: when ours are the only references left, its
            // last generation (or initialization) has ended.
            let (unused, in_use) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|(_, slot): &(Key, Slot)| !in_use(slot));
            *retired = in_use;
            unused
        };
        for ((provider, model), slot) in unused {
            if let Some(instance) = slot.get() {
                instance.shutdown().await;
                tracing::info!(
                    provider,
                    model,
                    "retired provider instance shut down after a reload"
                );
            }
        }
        self.retired.lock().expect("retired lock poisoned").len()
    }

    /// Shuts every instance down; called once when the daemon stops.
    pub async fn shutdown_all(&self) {
        let retired = std::mem::take(&mut *self.retired.lock().expect("retired lock poisoned"));
        let slots: Vec<Slot> = std::mem::take(&mut self.lock().entries)
            .into_values()
            .map(|entry| entry.slot)
            .chain(retired.into_iter().map(|(_, slot)| slot))
            .collect();
        for slot in slots {
            if let Some(instance) = slot.get() {
                instance.shutdown().await;
                tracing::debug!(model = instance.model(), kind = %instance.kind(), "provider instance shut down");
            }
        }
    }
}

/// A provider's capabilities in force, by name.
fn capability_names(config: &crate::settings::ProviderConfig) -> Vec<String> {
    crate::provider::capabilities::effective(config)
        .into_iter()
        .map(|c| c.as_str().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::mock::MockProvider;
    use crate::provider::{BoxFuture, EventStream, ProviderState};
    use provd_client::{GenerateRequest, ModelInfo};

    /// The models whose instances [`Probe`] initialized, and those it shut down, in
    /// order. Tests use model names of their own, so they never read each other's.
    static INITIALIZED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static SHUT_DOWN: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// A provider that records its initialization in [`INITIALIZED`] and its shutdown in
    /// [`SHUT_DOWN`], and serves nothing.
    #[derive(Debug)]
    struct Probe(ProviderState, String);

    fn probe(spec: ProviderSpec) -> Result<Arc<dyn Provider>, ProviderError> {
        Ok(Arc::new(Probe(ProviderState::default(), spec.model)))
    }

    fn recorded(log: &Mutex<Vec<String>>, model: &str) -> usize {
        log.lock().unwrap().iter().filter(|m| *m == model).count()
    }

    impl Provider for Probe {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Mock
        }
        fn model(&self) -> &str {
            &self.1
        }
        fn state(&self) -> &ProviderState {
            &self.0
        }
        fn initialize(&self) -> BoxFuture<'_, Result<(), ProviderError>> {
            Box::pin(async {
                INITIALIZED.lock().unwrap().push(self.1.clone());
                // Yield so that concurrent callers really do overlap with this one.
                tokio::task::yield_now().await;
                Ok(())
            })
        }
        fn generate(
            &self,
            _: GenerateRequest,
        ) -> BoxFuture<'_, Result<EventStream, ProviderError>> {
            Box::pin(async { Err(ProviderError::new(ErrorCode::Internal, "unused")) })
        }
        fn list_models(&self) -> BoxFuture<'_, Result<Vec<ModelInfo>, ProviderError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn shutdown(&self) -> BoxFuture<'_, ()> {
            Box::pin(async { SHUT_DOWN.lock().unwrap().push(self.1.clone()) })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_use_initializes_exactly_once() {
        let mut f = Providers::empty(Config::embedded());
        f.register(ProviderKind::Mock, probe);
        let f = Arc::new(f);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move {
                    f.get(None, Some("concurrent-first"))
                        .await
                        .map(|(_, p)| Arc::as_ptr(&p) as *const () as usize)
                })
            })
            .collect();
        let mut ptrs = Vec::new();
        for t in tasks {
            ptrs.push(t.await.unwrap().unwrap());
        }
        assert_eq!(recorded(&INITIALIZED, "concurrent-first"), 1);
        assert!(
            ptrs.windows(2).all(|w| w[0] == w[1]),
            "every caller got the same instance"
        );
        // A different model is a different instance.
        f.get(None, Some("concurrent-other")).await.unwrap();
        assert_eq!(recorded(&INITIALIZED, "concurrent-other"), 1);
        assert_eq!(f.instances().len(), 2);
    }

    #[test]
    fn the_builtin_factory_builds_every_type_of_the_provider_table() {
        let f = Providers::with_builtin_providers(Config::embedded());
        for kind in ProviderKind::ALL {
            assert!(f.registry.contains_key(kind), "{kind}");
        }
    }

    #[tokio::test]
    async fn unknown_provider_and_missing_model_are_typed_errors() {
        let f = Providers::with_builtin_providers(Config::embedded());
        let e = f.get(Some("nope"), None).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(e.message.contains("no provider 'nope'"), "{}", e.message);
        let config = Config::parse(
            "[providers.o]\ntype = \"ollama\"\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let f = Providers::with_builtin_providers(config);
        let e = f.get(None, None).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("no default_model"), "{}", e.message);
    }

    #[tokio::test]
    async fn a_mock_without_default_model_serves_and_lists_its_own_default_model() {
        let f = mock_factory("", "[providers.m]\ntype = \"mock\"\n");
        let (_, instance) = f.get(None, None).await.unwrap();
        assert_eq!(instance.model(), crate::provider::mock::DEFAULT_MODEL);
        let list = f.list_models(Some("m")).await.unwrap();
        let ids: Vec<_> = list.models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, [crate::provider::mock::DEFAULT_MODEL]);
    }

    #[tokio::test]
    async fn listing_needs_no_model_and_neither_fills_nor_pins_the_cache() {
        let f = mock_factory(
            "max_provider_instances = 1",
            "[providers.m]\ntype = \"mock\"\n[providers.m.options]\nmodels = [\"x\", \"y\"]\n\
             [providers.n]\ntype = \"mock\"\ndefault_model = \"n0\"\n",
        );
        let list = f.list_models(None).await.unwrap();
        assert!(list.errors.is_empty(), "{:?}", list.errors);
        let mut ids: Vec<_> = list.models.iter().map(|m| m.id.as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, ["n0", "x", "y"]);
        assert!(cached_models(&f).is_empty(), "{:?}", cached_models(&f));
        // The one slot is still free for a model a client names.
        f.get(Some("m"), Some("free")).await.unwrap();
    }

    #[tokio::test]
    async fn a_credential_test_counts_as_a_request_of_the_provider() {
        let f = mock_factory("", ONE_MOCK);
        f.test_credential("m").await.unwrap();
        let status = f.status();
        let m = &status.providers[0].metrics;
        assert_eq!((m.requests, m.errors, m.active), (1, 0, 0));
        assert!(status.instances.is_empty(), "the test leaves no instance");
        let f = mock_factory(
            "",
            "[providers.a]\ntype = \"anthropic\"\napi_key_env = \"PROVD_UNIT_TEST_UNSET_KEY\"\n",
        );
        let e = f.test_credential("a").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        let m = &f.status().providers[0].metrics;
        assert_eq!((m.requests, m.errors, m.active), (1, 1, 0));
    }

    #[tokio::test]
    async fn reload_replaces_changed_providers_and_retires_their_instances_once_unused() {
        let parse = |t: &str| Config::parse(t, std::path::Path::new("t")).unwrap();
        let f = Providers::with_builtin_providers(parse(
            "[providers.a]\ntype = \"mock\"\ndefault_model = \"a1\"\n\
             [providers.b]\ntype = \"mock\"\ndefault_model = \"b1\"\n\
             [providers.c]\ntype = \"mock\"\ndefault_model = \"c1\"\n",
        ));
        let (_, a) = f.get(Some("a"), None).await.unwrap();
        let (_, b) = f.get(Some("b"), None).await.unwrap();
        drop(f.get(Some("c"), None).await.unwrap());

        // a unchanged, b changed, c removed, d added.
        let changes = f.reload(parse(
            "[providers.a]\ntype = \"mock\"\ndefault_model = \"a1\"\n\
             [providers.b]\ntype = \"mock\"\ndefault_model = \"b1\"\nmax_tokens = 7\n\
             [providers.d]\ntype = \"mock\"\ndefault_model = \"d1\"\n",
        ));
        assert_eq!(
            changes,
            ProviderChanges {
                added: vec!["d".into()],
                changed: vec!["b".into()],
                removed: vec!["c".into()],
                retired: 2,
            }
        );
        // The unchanged instance is kept; the changed one is new; the removed one is gone.
        let (_, a2) = f.get(Some("a"), None).await.unwrap();
        assert!(Arc::ptr_eq(&a, &a2));
        let (_, b2) = f.get(Some("b"), None).await.unwrap();
        assert!(!Arc::ptr_eq(&b, &b2));
        assert_eq!(
            f.get(Some("c"), None).await.err().unwrap().code,
            ErrorCode::NotFound
        );
        // c's instance is unused and shuts down; b's old one is still held ("running").
        assert_eq!(f.shut_down_unused_retired().await, 1);
        assert_eq!(b.status(), ProviderStatus::Ready);
        drop(b2);
        let old_b = b.clone();
        drop(b);
        assert_eq!(
            f.shut_down_unused_retired().await,
            1,
            "a clone is still out"
        );
        drop(old_b);
        assert_eq!(f.shut_down_unused_retired().await, 0);
    }

    fn mock_factory(daemon: &str, providers: &str) -> Providers {
        Providers::with_builtin_providers(
            Config::parse(
                &format!("[daemon]\n{daemon}\n{providers}"),
                std::path::Path::new("t"),
            )
            .unwrap(),
        )
    }

    const ONE_MOCK: &str = "[providers.m]\ntype = \"mock\"\ndefault_model = \"m0\"\n";

    fn cached_models(f: &Providers) -> Vec<String> {
        f.instances().into_iter().map(|i| i.model).collect()
    }

    async fn use_once(f: &Providers, model: &str) -> std::sync::Weak<dyn Provider> {
        let (_, instance) = f.get(Some("m"), Some(model)).await.unwrap();
        Arc::downgrade(&instance)
    }

    #[tokio::test]
    async fn a_full_cache_evicts_the_least_recently_used_idle_instance() {
        let f = mock_factory("max_provider_instances = 3", ONE_MOCK);
        let a = use_once(&f, "a").await;
        let b = use_once(&f, "b").await;
        use_once(&f, "c").await;
        // Using a again makes b the least recently used.
        use_once(&f, "a").await;
        use_once(&f, "d").await;
        assert_eq!(cached_models(&f), ["a", "c", "d"]);
        assert!(b.upgrade().is_none(), "the evicted instance is gone");
        assert!(a.upgrade().is_some(), "the cache still holds a");
        use_once(&f, "e").await;
        assert_eq!(cached_models(&f), ["a", "d", "e"], "then c, the oldest");
    }

    #[tokio::test]
    async fn configured_models_are_outside_the_cap_and_never_evicted_for_room() {
        let f = mock_factory(
            "max_provider_instances = 1",
            "[providers.m]\ntype = \"mock\"\ndefault_model = \"m0\"\nfallbacks = [\"m/fb\"]\n\
             [aliases]\nfast = [\"m/aliased\"]\n",
        );
        // A made-up name held busy fills the one slot.
        let (_, busy) = f.get(Some("m"), Some("made-up")).await.unwrap();
        // The configured models are still served: default, fallback and alias targets.
        for model in ["m0", "fb", "aliased"] {
            f.get(Some("m"), Some(model))
                .await
                .unwrap_or_else(|e| panic!("{model}: {e}"));
        }
        let e = f.get(Some("m"), Some("another")).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::Overloaded);
        drop(busy);
        // Room for a made-up name is made from made-up names only.
        use_once(&f, "another").await;
        let mut cached = cached_models(&f);
        cached.sort();
        assert_eq!(cached, ["aliased", "another", "fb", "m0"]);
    }

    #[tokio::test(start_paused = true)]
    async fn evicted_and_expired_instances_are_shut_down() {
        let config = Config::parse(
            "[daemon]\nmax_provider_instances = 1\nprovider_idle_seconds = 1\n[providers.m]\ntype = \"mock\"\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let mut f = Providers::empty(config);
        f.register(ProviderKind::Mock, probe);
        let shut = |name: &str| recorded(&SHUT_DOWN, name) > 0;
        use_once(&f, "probe-evicted").await;
        use_once(&f, "probe-expired").await;
        assert!(shut("probe-evicted"));
        assert!(!shut("probe-expired"));
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert!(shut("probe-expired"));
    }

    #[tokio::test]
    async fn instances_in_use_are_never_evicted_and_a_cache_all_in_use_is_overloaded() {
        let f = mock_factory("max_provider_instances = 2", ONE_MOCK);
        let (_, a) = f.get(Some("m"), Some("a")).await.unwrap();
        let (_, b) = f.get(Some("m"), Some("b")).await.unwrap();
        let e = f.get(Some("m"), Some("c")).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::Overloaded);
        assert!(e.retryable);
        assert!(
            e.message.contains("max_provider_instances"),
            "{}",
            e.message
        );
        // A model already cached is still served.
        let (_, a2) = f.get(Some("m"), Some("a")).await.unwrap();
        assert!(Arc::ptr_eq(&a, &a2));
        drop(a2);
        // Releasing b (the more recently used) makes it the only candidate: a, though
        // older, is still in use.
        drop(b);
        f.get(Some("m"), Some("c")).await.unwrap();
        assert_eq!(cached_models(&f), ["a", "c"]);
        let (_, a3) = f.get(Some("m"), Some("a")).await.unwrap();
        assert!(Arc::ptr_eq(&a, &a3), "a was kept while in use");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_instances_expire_and_an_instance_in_use_only_after_its_use_ends() {
        let f = mock_factory("provider_idle_seconds = 1", ONE_MOCK);
        use_once(&f, "idle").await;
        let (_, busy) = f.get(Some("m"), Some("busy")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert_eq!(cached_models(&f), ["busy"]);
        // In use for far longer than the idle time, then released.
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(busy);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            cached_models(&f),
            ["busy"],
            "its idle time starts when its use ends"
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(cached_models(&f).is_empty());
        // The sweep stopped with the cache empty; a new instance starts it again.
        use_once(&f, "again").await;
        assert_eq!(cached_models(&f), ["again"]);
        tokio::time::sleep(Duration::from_millis(1600)).await;
        assert!(cached_models(&f).is_empty());
    }

    #[tokio::test]
    async fn provider_counters_outlive_evicted_instances() {
        let f = mock_factory("max_provider_instances = 1", ONE_MOCK);
        for model in ["a", "b", "c"] {
            let (_, instance) = f.get(Some("m"), Some(model)).await.unwrap();
            let state = instance.state();
            state.record_start();
            state.record_chunk();
            state.record_end(crate::provider::Outcome::Failed, Default::default());
        }
        let status = f.status();
        assert_eq!(status.instances.len(), 1);
        assert_eq!(status.instances[0].metrics.requests, 1);
        assert_eq!(status.providers.len(), 1);
        let p = &status.providers[0];
        assert_eq!((p.provider.as_str(), p.instances), ("m", 1));
        assert_eq!(
            (
                p.metrics.requests,
                p.metrics.chunks,
                p.metrics.errors,
                p.metrics.active
            ),
            (3, 3, 3, 0)
        );
        assert_eq!(status.max_instances, 1);
    }

    #[tokio::test]
    async fn status_details_the_busiest_instances_and_counts_the_rest() {
        let f = mock_factory("", ONE_MOCK);
        for n in 0..25u64 {
            let (_, instance) = f
                .get(Some("m"), Some(&format!("model-{n:02}")))
                .await
                .unwrap();
            for _ in 0..n {
                instance.state().record_start();
            }
        }
        let status = f.status();
        assert_eq!(status.instances.len(), STATUS_TOP_INSTANCES);
        assert_eq!(status.omitted, 5);
        let requests: Vec<u64> = status
            .instances
            .iter()
            .map(|i| i.metrics.requests)
            .collect();
        assert_eq!(requests, (5..25).rev().collect::<Vec<u64>>());
        assert_eq!(status.providers[0].instances, 25);
        assert_eq!(status.providers[0].metrics.requests, (0..25).sum::<u64>());
    }

    static CLIENTS: Mutex<Vec<(String, SharedClient)>> = Mutex::new(Vec::new());

    #[tokio::test]
    async fn the_models_of_a_provider_share_its_http_client_until_its_table_changes() {
        let parse = |t: &str| Config::parse(t, std::path::Path::new("t")).unwrap();
        let providers =
            "[providers.share-p]\ntype = \"mock\"\n[providers.share-q]\ntype = \"mock\"\n";
        let mut f = Providers::empty(parse(providers));
        f.register(ProviderKind::Mock, |spec| {
            CLIENTS
                .lock()
                .unwrap()
                .push((format!("{}/{}", spec.id, spec.model), spec.http.clone()));
            Ok(Arc::new(MockProvider::new(spec)?) as Arc<dyn Provider>)
        });
        for (p, m) in [("share-p", "a"), ("share-p", "b"), ("share-q", "a")] {
            f.get(Some(p), Some(m)).await.unwrap();
        }
        f.reload(parse(&format!("{providers}max_tokens = 9\n")));
        f.get(Some("share-p"), Some("c")).await.unwrap();
        f.get(Some("share-q"), Some("b")).await.unwrap();
        let clients: HashMap<String, SharedClient> = CLIENTS
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("share-"))
            .cloned()
            .collect();
        let same = |x: &str, y: &str| clients[x].same_as(&clients[y]);
        assert!(same("share-p/a", "share-p/b"), "one client per provider");
        assert!(!same("share-p/a", "share-q/a"), "not one for all providers");
        assert!(
            same("share-p/a", "share-p/c"),
            "an unchanged table keeps it"
        );
        assert!(
            !same("share-q/a", "share-q/b"),
            "a changed table gets a new one"
        );
    }

    #[tokio::test]
    async fn a_reload_that_lowers_the_cap_evicts_down_to_it_on_the_next_new_instance() {
        let parse = |t: &str| Config::parse(t, std::path::Path::new("t")).unwrap();
        let f = mock_factory("max_provider_instances = 4", ONE_MOCK);
        for model in ["a", "b", "c", "d"] {
            use_once(&f, model).await;
        }
        let (_, d) = f.get(Some("m"), Some("d")).await.unwrap();
        let changes = f.reload(parse(&format!(
            "[daemon]\nmax_provider_instances = 2\n{ONE_MOCK}"
        )));
        assert_eq!(changes, ProviderChanges::default(), "no provider changed");
        assert_eq!(f.status().max_instances, 2);
        use_once(&f, "e").await;
        assert_eq!(cached_models(&f), ["d", "e"], "the oldest idle ones left");
        drop(d);
    }

    #[tokio::test]
    async fn a_model_whose_initialization_failed_does_not_pin_a_slot() {
        // An openai provider without a key fails to initialize.
        let f = mock_factory(
            "max_provider_instances = 1",
            "[providers.o]\ntype = \"openai\"\napi_key_env = \"PROVD_UNSET_KEY_FOR_THIS_TEST\"\n",
        );
        let e = f.get(Some("o"), Some("x")).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::Unauthenticated);
        let e = f.get(Some("o"), Some("y")).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::Unauthenticated, "not overloaded: {e}");
        assert!(cached_models(&f).is_empty());
    }
}
