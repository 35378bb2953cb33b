//! Which key a provider uses: the one place it is looked up.
//!
//! A provider's key is the one sealed in the credential store under its id, else the
//! first of its key variables set (not blank) in the daemon's environment. Its key
//! variables are its `api_key_env` when the configuration names one, else those its type
//! lists in the provider table (`provider/registry.rs`, [`ProviderType::key_env`]): the
//! same names the `.env` import gives the type ([`super::dotenv`]) and the scrubber is
//! told to cut ([`publish_environment_keys`]).
//!
//! [`ProviderType::key_env`]: crate::provider::registry::ProviderType::key_env

use crate::config::Config;
use crate::provider::registry;
#[cfg(unix)]
use crate::provider::ProviderError;
use crate::secret::Secret;
use crate::settings::ProviderConfig;

/// The environment variables that hold a provider's key, most preferred first: its
/// `api_key_env` alone, else its type's variables.
pub fn key_variables(config: &ProviderConfig) -> Vec<&str> {
    match config.api_key_env.as_deref() {
        Some(var) => vec![var],
        None => registry::row(config.kind).key_env.to_vec(),
    }
}

/// The key of a provider in the daemon's environment: its first [`key_variables`] when
/// set and not blank, else the first of the others that is set and not empty.
pub fn from_environment(config: &ProviderConfig) -> Option<Secret> {
    first_set(&key_variables(config), |var| std::env::var(var).ok())
}

/// The first of `variables` that `lookup` finds set: the first not blank, the others
/// not empty. (The Gemini lookup this generalizes took `GOOGLE_API_KEY` whenever it was
/// non-empty; a blank alternative is kept as it was, a behaviour this restructuring does
/// not change.)
fn first_set(variables: &[&str], lookup: impl Fn(&str) -> Option<String>) -> Option<Secret> {
    variables.iter().enumerate().find_map(|(i, var)| {
        let value = lookup(var).filter(|v| {
            if i == 0 {
                !v.trim().is_empty()
            } else {
                !v.is_empty()
            }
        })?;
        Some(Secret::new(value))
    })
}

/// Provider `id`'s key: sealed in `vault` (when the daemon has a store), else from the
/// daemon's environment ([`from_environment`]).
///
/// A sealed key that cannot be read refuses the provider rather than falling back: the
/// environment may hold an older or another user's key, and using it silently would
/// hide that the sealed one was damaged or removed behind the daemon's back.
#[cfg(unix)]
pub fn resolve(
    vault: Option<&super::Vault>,
    id: &str,
    config: &ProviderConfig,
) -> Result<Option<Secret>, ProviderError> {
    if let Some(vault) = vault {
        match vault.get(id) {
            Ok(Some(secret)) => return Ok(Some(secret)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(provider = id, error = %e, "the provider's sealed credential cannot be used; refusing the request");
                // Final for this provider until an admin mends the store, but a
                // fallback with its own key may still serve the request.
                let mut error = ProviderError::new(
                    provd_client::ErrorCode::Unavailable,
                    format!("provider '{id}' cannot be used: {e}"),
                );
                error.retryable = false;
                error.try_elsewhere = true;
                return Err(error);
            }
        }
    }
    Ok(from_environment(config))
}

/// Hands the environment keys of every configured provider to the scrubber
/// ([`crate::scrub`]): each provider's [`key_variables`], whether or not the provider
/// uses them (a sealed key wins), since the daemon holds them.
pub fn publish_environment_keys(config: &Config) {
    let mut names: Vec<&str> = config.providers.values().flat_map(key_variables).collect();
    names.sort_unstable();
    names.dedup();
    let keys = names
        .into_iter()
        .filter_map(|name| {
            let value = std::env::var(name).ok()?;
            let secret = Secret::new(value);
            (!secret.is_empty()).then(|| crate::scrub::HeldKey {
                name: name.to_owned(),
                secret,
            })
        })
        .collect();
    crate::scrub::set_keys(crate::scrub::KeySource::Environment, keys);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(table: &str) -> ProviderConfig {
        toml::from_str(table).unwrap()
    }

    #[test]
    fn api_key_env_replaces_the_type_variables() {
        assert_eq!(
            key_variables(&provider("type = \"gemini\"")),
            ["GEMINI_API_KEY", "GOOGLE_API_KEY"]
        );
        assert_eq!(
            key_variables(&provider("type = \"gemini\"\napi_key_env = \"MY_KEY\"")),
            ["MY_KEY"]
        );
        assert!(key_variables(&provider("type = \"ollama\"")).is_empty());
    }

    #[test]
    fn a_blank_first_variable_gives_way_to_the_next_name_and_none_set_is_no_key() {
        let gemini = provider("type = \"gemini\"");
        let names = key_variables(&gemini);
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| {
                pairs
                    .iter()
                    .find(|(name, _)| *name == var)
                    .map(|(_, value)| (*value).to_owned())
            }
        };
        let found = |pairs| first_set(&names, env(pairs)).map(|s| s.expose().to_owned());
        assert_eq!(
            found(&[("GEMINI_API_KEY", "gem"), ("GOOGLE_API_KEY", "goo")]),
            Some("gem".into())
        );
        assert_eq!(
            found(&[("GEMINI_API_KEY", " "), ("GOOGLE_API_KEY", "goo")]),
            Some("goo".into())
        );
        assert_eq!(found(&[("GOOGLE_API_KEY", "goo")]), Some("goo".into()));
        assert_eq!(found(&[("GOOGLE_API_KEY", "")]), None);
        assert_eq!(found(&[]), None);
        let own = provider("type = \"gemini\"\napi_key_env = \"K\"");
        let own = key_variables(&own);
        assert_eq!(first_set(&own, |_| Some(" ".into())).map(|_| ()), None);
    }
}
