//! The provider factory: which type builds which provider, one cached instance per
//! provider id and model, initialized exactly once even when many requests arrive for it
//! at the same moment, and all shut down together when the daemon stops.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use provd_client::message::{InstanceStatus, ProviderFailure, ProviderStatus};
use provd_client::{ErrorCode, ModelList, ProviderInfo};
use tokio::sync::OnceCell;

use crate::config::{Config, ProviderKind};
use crate::provider::anthropic::AnthropicProvider;
use crate::provider::gemini::GeminiProvider;
use crate::provider::mock::MockProvider;
use crate::provider::ollama::OllamaProvider;
use crate::provider::openai::OpenAiProvider;
use crate::provider::{BaseLlmProvider, ProviderError, ProviderSpec};

/// Builds a provider instance from its spec. Cheap and synchronous: network work belongs
/// in [`BaseLlmProvider::initialize`].
pub type Constructor = fn(ProviderSpec) -> Result<Arc<dyn BaseLlmProvider>, ProviderError>;

type Slot = Arc<OnceCell<Arc<dyn BaseLlmProvider>>>;

/// The API key named by a provider's `api_key_env` (or its type's default variable).
fn credential_from_env(config: &crate::config::ProviderConfig) -> Option<crate::secret::Secret> {
    let var = config
        .api_key_env
        .as_deref()
        .or(crate::provider::default_key_env(config.kind))?;
    // Gemini's documented second name applies only to the type's default variable, and
    // also when that one is set but empty.
    let fallback = || {
        (config.kind == ProviderKind::Gemini && config.api_key_env.is_none())
            .then(|| std::env::var("GOOGLE_API_KEY").ok())
            .flatten()
    };
    let value = std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(fallback)?;
    let secret = crate::secret::Secret::new(value);
    (!secret.is_empty()).then_some(secret)
}

/// Hands the environment keys of every configured provider to the scrubber
/// ([`crate::scrub`]): each provider's `api_key_env` or its type's default variable(s),
/// whether or not the provider uses it (a sealed key wins), since the daemon holds it.
fn publish_environment_keys(config: &Config) {
    let mut names: Vec<&str> = Vec::new();
    for p in config.providers.values() {
        let default = crate::provider::default_key_env(p.kind);
        names.extend(p.api_key_env.as_deref().or(default));
        if p.kind == ProviderKind::Gemini && p.api_key_env.is_none() {
            names.push("GOOGLE_API_KEY");
        }
    }
    names.sort_unstable();
    names.dedup();
    let keys = names
        .into_iter()
        .filter_map(|name| {
            let value = std::env::var(name).ok()?;
            let secret = crate::secret::Secret::new(value);
            (!secret.is_empty()).then(|| crate::scrub::HeldKey {
                name: name.to_owned(),
                secret,
            })
        })
        .collect();
    crate::scrub::set_keys(crate::scrub::KeySource::Environment, keys);
}

/// Registry, cache and lifecycle of provider instances (the original design's
/// `LlmProviderFactory`).
pub struct LlmProviderFactory {
    registry: HashMap<ProviderKind, Constructor>,
    config: RwLock<Arc<Config>>,
    // A std mutex: it guards only map look-ups, never an await; the slow part
    // (initialize) runs inside the slot's OnceCell, so other keys are never blocked by it.
    instances: Mutex<BTreeMap<(String, String), Slot>>,
    // Instances a reload took out of the cache, waiting for their last generation to end
    // before they are shut down (see `reload`).
    retired: Mutex<Vec<((String, String), Slot)>>,
    // Sealed API keys; `None` until the daemon opens its store (tests, the demo).
    #[cfg(unix)]
    vault: RwLock<Option<Arc<crate::credentials::Vault>>>,
}

/// What a [`LlmProviderFactory::reload`] changed among the providers.
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

impl std::fmt::Debug for LlmProviderFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmProviderFactory")
            .field("types", &self.registry.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl LlmProviderFactory {
    /// A factory with no provider types registered.
    pub fn empty(config: Config) -> Self {
        publish_environment_keys(&config);
        LlmProviderFactory {
            registry: HashMap::new(),
            config: RwLock::new(Arc::new(config)),
            instances: Mutex::new(BTreeMap::new()),
            retired: Mutex::new(Vec::new()),
            #[cfg(unix)]
            vault: RwLock::new(None),
        }
    }

    /// A factory with every provider type this build has.
    pub fn with_builtin_providers(config: Config) -> Self {
        let mut f = LlmProviderFactory::empty(config);
        f.register(ProviderKind::Mock, |spec| {
            Ok(Arc::new(MockProvider::new(spec)?) as Arc<dyn BaseLlmProvider>)
        });
        f.register(ProviderKind::Anthropic, |spec| {
            Ok(Arc::new(AnthropicProvider::new(spec)?) as Arc<dyn BaseLlmProvider>)
        });
        f.register(ProviderKind::Openai, |spec| {
            Ok(Arc::new(OpenAiProvider::new(spec, ProviderKind::Openai)?)
                as Arc<dyn BaseLlmProvider>)
        });
        f.register(ProviderKind::OpenaiCompatible, |spec| {
            Ok(
                Arc::new(OpenAiProvider::new(spec, ProviderKind::OpenaiCompatible)?)
                    as Arc<dyn BaseLlmProvider>,
            )
        });
        f.register(ProviderKind::Ollama, |spec| {
            Ok(Arc::new(OllamaProvider::new(spec)?) as Arc<dyn BaseLlmProvider>)
        });
        f.register(ProviderKind::Gemini, |spec| {
            Ok(Arc::new(GeminiProvider::new(spec)?) as Arc<dyn BaseLlmProvider>)
        });
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

    /// Resolves a request's provider and model (defaults applied) to a ready instance,
    /// creating and initializing it on first use.
    pub async fn get(
        &self,
        provider: Option<&str>,
        model: Option<&str>,
    ) -> Result<(String, Arc<dyn BaseLlmProvider>), ProviderError> {
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
        let provider_config = config.providers.get(id).ok_or_else(|| {
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
        })?;
        let model = match model.or(provider_config.default_model.as_deref()) {
            Some(m) => m.to_owned(),
            None => {
                return Err(ProviderError::new(
                    ErrorCode::InvalidRequest,
                    format!("provider '{id}' has no default_model; name a model in the request"),
                ))
            }
        };
        let constructor = *self.registry.get(&provider_config.kind).ok_or_else(|| {
            ProviderError::new(
                ErrorCode::Unavailable,
                format!(
                    "provider type '{}' (providers.{id}) is not available in this build",
                    provider_config.kind
                ),
            )
        })?;
        let slot = {
            let mut instances = self.instances.lock().expect("instances lock poisoned");
            // A reload swaps the config and retires instances under this lock. A slot made
            // here from a config that is no longer in force would keep serving the old
            // table after the reload, so resolve again with the new one.
            if !Arc::ptr_eq(&config, &self.config()) {
                drop(instances);
                return Box::pin(self.get(requested.0, requested.1)).await;
            }
            instances
                .entry((id.to_owned(), model.clone()))
                .or_default()
                .clone()
        };
        let instance = slot
            .get_or_try_init(|| async move {
                // The key is looked up only when an instance is built: a cached instance
                // keeps the key it was built with, so nothing is unsealed per request.
                let spec = ProviderSpec {
                    id: id.to_owned(),
                    model,
                    credential: self.credential(id, provider_config)?,
                    config: provider_config.clone(),
                };
                let instance = constructor(spec)?;
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
                capabilities: p.capabilities.clone(),
                is_default: default == Some(id.as_str()),
            })
            .collect()
    }

    /// Every instance created so far, with state and counters.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        let slots: Vec<_> = self
            .instances
            .lock()
            .expect("instances lock poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        slots
            .into_iter()
            .filter_map(|((provider, model), slot)| {
                let instance = slot.get()?;
                Some(InstanceStatus {
                    provider,
                    kind: instance.kind().to_string(),
                    model,
                    status: instance.status(),
                    metrics: instance.metrics(),
                })
            })
            .collect()
    }

    /// Models of one provider, or of every provider. With every provider, one that fails
    /// is reported in `errors` and the others are still listed.
    pub async fn list_models(&self, provider: Option<&str>) -> Result<ModelList, ProviderError> {
        if let Some(id) = provider {
            let (_, instance) = self.get(Some(id), None).await?;
            return Ok(ModelList {
                models: instance.list_models().await?,
                errors: Vec::new(),
            });
        }
        let ids: Vec<String> = self.config().providers.keys().cloned().collect();
        let mut list = ModelList::default();
        for id in ids {
            let models = async {
                let (_, instance) = self.get(Some(&id), None).await?;
                instance.list_models().await
            };
            match models.await {
                Ok(models) => list.models.extend(models),
                Err(e) => list.errors.push(ProviderFailure {
                    provider: id,
                    error: e.to_wire(),
                }),
            }
        }
        Ok(list)
    }

    /// Puts `config` in force. Requests resolved from now on use it; instances of
    /// providers whose table changed or that are gone leave the cache (the next request
    /// builds a new one) and are retired: generations already running keep them, and
    /// [`Self::shut_down_unused_retired`] shuts each down once nothing uses it.
    pub fn reload(&self, config: Config) -> ProviderChanges {
        let mut instances = self.instances.lock().expect("instances lock poisoned");
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
        publish_environment_keys(&config);
        *self.config.write().expect("config lock poisoned") = Arc::new(config);
        let stale = |id: &str| {
            changes.changed.iter().any(|c| c == id) || changes.removed.iter().any(|r| r == id)
        };
        changes.retired = self.retire_locked(&mut instances, stale);
        changes
    }

    /// Takes provider `id`'s instances out of the cache (its key changed): the next
    /// request builds one with the new key, running generations keep the old one, and
    /// [`Self::shut_down_unused_retired`] shuts each down once nothing uses it.
    pub fn retire_provider(&self, id: &str) -> usize {
        let mut instances = self.instances.lock().expect("instances lock poisoned");
        self.retire_locked(&mut instances, |candidate| candidate == id)
    }

    fn retire_locked(
        &self,
        instances: &mut BTreeMap<(String, String), Slot>,
        stale: impl Fn(&str) -> bool,
    ) -> usize {
        let keys: Vec<_> = instances
            .keys()
            .filter(|(id, _)| stale(id))
            .cloned()
            .collect();
        let mut retired = self.retired.lock().expect("retired lock poisoned");
        let mut count = 0;
        for key in keys {
            if let Some(slot) = instances.remove(&key) {
                retired.push((key, slot));
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

    /// A provider's API key: sealed in the store, else from the daemon's environment.
    fn credential(
        &self,
        id: &str,
        config: &crate::config::ProviderConfig,
    ) -> Result<Option<crate::secret::Secret>, ProviderError> {
        #[cfg(unix)]
        if let Some(vault) = self.vault.read().expect("vault lock poisoned").as_ref() {
            // A sealed key that cannot be read refuses the instance: the environment may
            // hold an older or another user's key, and using it silently would hide that
            // the sealed one was damaged or removed behind the daemon's back.
            match vault.get(id) {
                Ok(Some(secret)) => return Ok(Some(secret)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(provider = id, error = %e, "the provider's sealed credential cannot be used; refusing the request");
                    // Final for this provider until an admin mends the store, but a
                    // fallback with its own key may still serve the request.
                    let mut error = ProviderError::new(
                        ErrorCode::Unavailable,
                        format!("provider '{id}' cannot be used: {e}"),
                    );
                    error.retryable = false;
                    error.try_elsewhere = true;
                    return Err(error);
                }
            }
        }
        Ok(credential_from_env(config))
    }

    /// Shuts down the retired instances nothing uses any more, and returns how many are
    /// still in use.
    pub async fn shut_down_unused_retired(&self) -> usize {
        let unused: Vec<_> = {
            let mut retired = self.retired.lock().expect("retired lock poisoned");
            // Nobody can reach a retired slot or its instance again except through clones
            // taken before it was retired: when ours are the only references left, its
            // last generation (or initialization) has ended.
            let (unused, in_use) = std::mem::take(&mut *retired).into_iter().partition(
                |(_, slot): &((String, String), Slot)| {
                    Arc::strong_count(slot) == 1
                        && slot.get().is_none_or(|i| Arc::strong_count(i) == 1)
                },
            );
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
        let slots: Vec<Slot> =
            std::mem::take(&mut *self.instances.lock().expect("instances lock poisoned"))
                .into_values()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{BoxFuture, EventStream, ProviderState};
    use provd_client::{GenerateRequest, ModelInfo};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static INITS: AtomicUsize = AtomicUsize::new(0);

    struct Counting(ProviderState, String);

    impl BaseLlmProvider for Counting {
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
                INITS.fetch_add(1, Ordering::SeqCst);
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
            Box::pin(async {})
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_use_initializes_exactly_once() {
        let mut f = LlmProviderFactory::empty(Config::embedded());
        f.register(ProviderKind::Mock, |spec| {
            Ok(Arc::new(Counting(ProviderState::default(), spec.model))
                as Arc<dyn BaseLlmProvider>)
        });
        let f = Arc::new(f);
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move {
                    f.get(None, None)
                        .await
                        .map(|(_, p)| Arc::as_ptr(&p) as *const () as usize)
                })
            })
            .collect();
        let mut ptrs = Vec::new();
        for t in tasks {
            ptrs.push(t.await.unwrap().unwrap());
        }
        assert_eq!(INITS.load(Ordering::SeqCst), 1);
        assert!(
            ptrs.windows(2).all(|w| w[0] == w[1]),
            "every caller got the same instance"
        );
        // A different model is a different instance.
        f.get(None, Some("other")).await.unwrap();
        assert_eq!(INITS.load(Ordering::SeqCst), 2);
        assert_eq!(f.instances().len(), 2);
    }

    #[tokio::test]
    async fn unknown_provider_and_missing_model_are_typed_errors() {
        let f = LlmProviderFactory::with_builtin_providers(Config::embedded());
        let e = f.get(Some("nope"), None).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert!(e.message.contains("no provider 'nope'"), "{}", e.message);
        let config = Config::parse(
            "[providers.m]\ntype = \"mock\"\n",
            std::path::Path::new("t"),
        )
        .unwrap();
        let f = LlmProviderFactory::with_builtin_providers(config);
        let e = f.get(None, None).await.err().unwrap();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains("no default_model"), "{}", e.message);
    }

    #[tokio::test]
    async fn reload_replaces_changed_providers_and_retires_their_instances_once_unused() {
        let parse = |t: &str| Config::parse(t, std::path::Path::new("t")).unwrap();
        let f = LlmProviderFactory::with_builtin_providers(parse(
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
}
