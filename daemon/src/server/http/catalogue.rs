//! The models the front door lists (`GET /v1/models`, and the other dialects' lists):
//! every configured provider's models and the configured aliases, asked of the providers
//! at most once a minute, then filtered per caller.
//!
//! Tools list models often (at start, on every settings page), and a provider's list may
//! be slow or failing; so the whole list is cached for [`CACHE_TTL`] (and dropped when a
//! reload puts another configuration in force), each provider gets [`PER_PROVIDER`] to
//! answer, and a provider that fails or is too slow is left out and logged, not an error
//! for the caller.

use std::sync::Arc;
use std::time::Duration;

use provd_client::message::ModelInfo;
use tokio::time::Instant;

use super::caller::Caller;
use crate::config::Config;
use crate::server::Daemon;

/// How long a fetched list is served.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long each provider has to list its models.
pub const PER_PROVIDER: Duration = Duration::from_secs(5);

/// One entry of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The name to pass as `model`: `provider/model`, or an alias.
    pub id: String,
    /// The provider it belongs to; for an alias, its first target's provider.
    pub provider: String,
    /// Creation time in seconds since the Unix epoch, when the provider says.
    pub created: Option<u64>,
    /// Whether it is an alias.
    pub alias: bool,
}

/// The cached list of every provider's models.
#[derive(Debug, Default)]
pub struct Catalogue {
    cached: tokio::sync::Mutex<Option<Fetched>>,
}

#[derive(Debug)]
struct Fetched {
    at: Instant,
    config: Arc<Config>,
    models: Arc<Vec<ModelInfo>>,
}

impl Catalogue {
    /// The models and aliases `caller` may use, models first (by provider, then as each
    /// provider lists them), then aliases by name.
    pub async fn for_caller(&self, daemon: &Daemon, caller: &Caller) -> Vec<Listed> {
        let config = daemon.factory.config();
        let models = self.models(daemon, &config).await;
        let mut listed: Vec<Listed> = models
            .iter()
            .filter(|m| caller.check_provider(&m.provider).is_ok())
            .map(|m| Listed {
                id: format!("{}/{}", m.provider, m.id),
                provider: m.provider.clone(),
                created: m.created_at,
                alias: false,
            })
            .collect();
        for (alias, targets) in &config.aliases {
            let first = crate::config::Target::parse(&targets[0]).provider;
            // An alias is usable when its first target is (as for a generation).
            if caller.check_provider(&first).is_ok() {
                listed.push(Listed {
                    id: alias.clone(),
                    provider: first,
                    created: None,
                    alias: true,
                });
            }
        }
        listed
    }

    /// Every provider's models under `config`: cached, or fetched now.
    async fn models(&self, daemon: &Daemon, config: &Arc<Config>) -> Arc<Vec<ModelInfo>> {
        // Held while fetching: callers arriving meanwhile wait for this one fetch rather
        // than each asking every provider.
        let mut cached = self.cached.lock().await;
        if let Some(fetched) = cached.as_ref() {
            if fetched.at.elapsed() < CACHE_TTL && Arc::ptr_eq(&fetched.config, config) {
                return fetched.models.clone();
            }
        }
        let asks = config.providers.keys().map(|id| async move {
            let listed =
                tokio::time::timeout(PER_PROVIDER, daemon.factory.list_models(Some(id))).await;
            match listed {
                Ok(Ok(list)) => list.models,
                Ok(Err(e)) => {
                    tracing::warn!(provider = %id, error = %crate::untrusted::untrusted(&e.to_wire().message), "leaving a provider out of the HTTP model list: listing its models failed");
                    Vec::new()
                }
                Err(_) => {
                    tracing::warn!(provider = %id, timeout_s = PER_PROVIDER.as_secs(), "leaving a provider out of the HTTP model list: it did not list its models in time");
                    Vec::new()
                }
            }
        });
        let models: Vec<ModelInfo> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        let models = Arc::new(models);
        *cached = Some(Fetched {
            at: Instant::now(),
            config: config.clone(),
            models: models.clone(),
        });
        models
    }
}
