//! Read-only answers of the short requests: the provider list, the model list and the
//! daemon's status.
//!
//! Each is one object the caller frees, read through `_len`/`_get` accessors that fill
//! small C structs whose strings ([`provd_str`]) point into the object. The structs are
//! views, not copies: they stay valid until the object is freed. All of these objects are
//! immutable, so any thread may read them at once.

use ::provd_client::message::{ProviderMetrics, ProviderStatus, StatusResult};
use ::provd_client::{ModelList, ProviderList};

use crate::args;
use crate::error::{provd_error, Error};
use crate::panic::accessor;
use crate::{provd_str, NulString};

/// Looks up `index` in `items`, or says it is out of range.
fn at<'a, T>(items: &'a [T], index: usize, what: &str) -> Result<&'a T, Error> {
    items.get(index).ok_or_else(|| {
        Error::invalid(
            "index",
            format!("is {index}, but the {what} has {} entries", items.len()),
        )
    })
}

struct Provider {
    id: NulString,
    kind: NulString,
    default_model: Option<NulString>,
    capabilities: Vec<NulString>,
    is_default: bool,
}

/// The configured providers, sorted by id. Made by `provd_client_list_providers`, freed
/// by `provd_provider_list_free`.
pub struct provd_provider_list {
    providers: Vec<Provider>,
}

impl provd_provider_list {
    pub(crate) fn new(list: ProviderList) -> provd_provider_list {
        let providers = list
            .providers
            .into_iter()
            .map(|p| Provider {
                id: NulString::new(p.id),
                kind: NulString::new(p.kind),
                default_model: p.default_model.map(NulString::new),
                capabilities: p.capabilities.into_iter().map(NulString::new).collect(),
                is_default: p.is_default,
            })
            .collect();
        provd_provider_list { providers }
    }
}

/// One configured provider, as a view into a `provd_provider_list`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_provider_info {
    /// The provider id (`[providers.<id>]`), to pass to `provd_request_set_provider`.
    pub id: provd_str,
    /// The provider type (`type` on the wire): `anthropic`, `openai`,
    /// `openai-compatible`, `ollama`, `gemini` or `mock`.
    pub kind: provd_str,
    /// The model used when a request names none; absent (NULL data) if there is none.
    pub default_model: provd_str,
    /// Whether this is the daemon's default provider.
    pub is_default: bool,
    /// How many capabilities `provd_provider_list_capability` can read (index 0 to
    /// `capabilities_len - 1`).
    pub capabilities_len: usize,
}

/// The number of providers in `list`, through `len_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_provider_list_len(
    list: *const provd_provider_list,
    len_out: *mut usize,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live list and a NULL or writable `len_out`.
        let (list, out) = unsafe { (args::handle(list, "list")?, args::out(len_out, "len_out")?) };
        out.write(list.providers.len());
        Ok(())
    })
}

/// Provider number `index` of `list`, through `info_out`; its strings point into `list`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if
/// `index` is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_provider_list_get(
    list: *const provd_provider_list,
    index: usize,
    info_out: *mut provd_provider_info,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live list and a NULL or writable `info_out`.
        let (list, out) = unsafe {
            (
                args::handle(list, "list")?,
                args::out(info_out, "info_out")?,
            )
        };
        let p = at(&list.providers, index, "provider list")?;
        out.write(provd_provider_info {
            id: p.id.lend(),
            kind: p.kind.lend(),
            default_model: NulString::lend_opt(&p.default_model),
            is_default: p.is_default,
            capabilities_len: p.capabilities.len(),
        });
        Ok(())
    })
}

/// Capability number `capability` (such as `streaming`) of provider number `index`,
/// through `capability_out`; it points into `list`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if an
/// index is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_provider_list_capability(
    list: *const provd_provider_list,
    index: usize,
    capability: usize,
    capability_out: *mut provd_str,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live list and a NULL or writable out-pointer.
        let (list, out) = unsafe {
            (
                args::handle(list, "list")?,
                args::out(capability_out, "capability_out")?,
            )
        };
        let p = at(&list.providers, index, "provider list")?;
        out.write(at(&p.capabilities, capability, "capability list")?.lend());
        Ok(())
    })
}

/// Frees a provider list. NULL is ignored; views into it become invalid.
#[no_mangle]
pub extern "C" fn provd_provider_list_free(list: *mut provd_provider_list) {
    crate::panic::free(|| {
        // SAFETY: the header requires NULL or a list from this library, freed once.
        drop(unsafe { args::take(list) });
    })
}

struct Model {
    id: NulString,
    provider: NulString,
    display_name: Option<NulString>,
    context_window: u32,
    created_at: u64,
}

struct Failure {
    provider: NulString,
    error: Error,
}

/// Models offered by one or every provider. Made by `provd_client_list_models`, freed by
/// `provd_model_list_free`.
pub struct provd_model_list {
    models: Vec<Model>,
    failures: Vec<Failure>,
}

impl provd_model_list {
    pub(crate) fn new(list: ModelList) -> provd_model_list {
        let models = list
            .models
            .into_iter()
            .map(|m| Model {
                id: NulString::new(m.id),
                provider: NulString::new(m.provider),
                display_name: m.display_name.map(NulString::new),
                context_window: m.context_window.unwrap_or(0),
                created_at: m.created_at.unwrap_or(0),
            })
            .collect();
        let failures = list
            .errors
            .into_iter()
            .map(|f| Failure {
                provider: NulString::new(f.provider),
                error: Error::from_wire(f.error),
            })
            .collect();
        provd_model_list { models, failures }
    }
}

/// One model, as a view into a `provd_model_list`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_model_info {
    /// The model id, to pass to `provd_request_set_model`.
    pub id: provd_str,
    /// The id of the provider that offers it.
    pub provider: provd_str,
    /// A human-readable name; absent (NULL data) if the provider has none.
    pub display_name: provd_str,
    /// The context window in tokens; 0 when unknown.
    pub context_window: u32,
    /// The creation time in seconds since the Unix epoch; 0 when unknown.
    pub created_at: u64,
}

/// The number of models in `list`, through `len_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_model_list_len(
    list: *const provd_model_list,
    len_out: *mut usize,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live list and a NULL or writable `len_out`.
        let (list, out) = unsafe { (args::handle(list, "list")?, args::out(len_out, "len_out")?) };
        out.write(list.models.len());
        Ok(())
    })
}

/// Model number `index` of `list`, through `info_out`; its strings point into `list`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if
/// `index` is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_model_list_get(
    list: *const provd_model_list,
    index: usize,
    info_out: *mut provd_model_info,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live list and a NULL or writable `info_out`.
        let (list, out) = unsafe {
            (
                args::handle(list, "list")?,
                args::out(info_out, "info_out")?,
            )
        };
        let m = at(&list.models, index, "model list")?;
        out.write(provd_model_info {
            id: m.id.lend(),
            provider: m.provider.lend(),
            display_name: NulString::lend_opt(&m.display_name),
            context_window: m.context_window,
            created_at: m.created_at,
        });
        Ok(())
    })
}

/// The number of providers that could not be asked for their models (only when every
/// provider was listed), through `len_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_model_list_failures_len(
    list: *const provd_model_list,
    len_out: *mut usize,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live list and a NULL or writable `len_out`.
        let (list, out) = unsafe { (args::handle(list, "list")?, args::out(len_out, "len_out")?) };
        out.write(list.failures.len());
        Ok(())
    })
}

/// Failure number `index`: the provider id through `provider_out` (pointing into
/// `list`) and why, as a new error object through `error_out`, which the caller frees
/// with `provd_error_free`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if
/// `index` is out of range (then `*error_out` is NULL). Thread-safe.
#[no_mangle]
pub extern "C" fn provd_model_list_failure(
    list: *const provd_model_list,
    index: usize,
    provider_out: *mut provd_str,
    error_out: *mut *mut provd_error,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live list and NULL or writable out-pointers.
        let (error, list, provider) = unsafe {
            (
                args::out_object(error_out, "error_out")?,
                args::handle(list, "list")?,
                args::out(provider_out, "provider_out")?,
            )
        };
        let f = at(&list.failures, index, "failure list")?;
        provider.write(f.provider.lend());
        error.write(args::give(f.error.clone()));
        Ok(())
    })
}

/// Frees a model list. NULL is ignored; views into it become invalid.
#[no_mangle]
pub extern "C" fn provd_model_list_free(list: *mut provd_model_list) {
    crate::panic::free(|| {
        // SAFETY: the header requires NULL or a list from this library, freed once.
        drop(unsafe { args::take(list) });
    })
}

/// Counters of one provider instance since the daemon started.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct provd_metrics {
    /// Generations started.
    pub requests: u64,
    /// Generations that ended with an error other than `cancelled`.
    pub errors: u64,
    /// Generations cancelled (by a cancel or by their client disconnecting).
    pub cancelled: u64,
    /// Generations running now.
    pub active: u64,
    /// Chunks forwarded.
    pub chunks: u64,
    /// Prompt tokens reported.
    pub prompt_tokens: u64,
    /// Completion tokens reported.
    pub completion_tokens: u64,
}

struct Instance {
    provider: NulString,
    kind: NulString,
    model: NulString,
    state: NulString,
    metrics: provd_metrics,
}

struct ProviderTotals {
    provider: NulString,
    kind: NulString,
    instances: u64,
    metrics: provd_metrics,
}

/// The daemon's status. Made by `provd_client_status`, freed by
/// `provd_daemon_status_free`.
pub struct provd_daemon_status {
    daemon_version: NulString,
    result: StatusResult,
    instances: Vec<Instance>,
    providers: Vec<ProviderTotals>,
}

fn metrics(m: &ProviderMetrics) -> provd_metrics {
    provd_metrics {
        requests: m.requests,
        errors: m.errors,
        cancelled: m.cancelled,
        active: m.active,
        chunks: m.chunks,
        prompt_tokens: m.prompt_tokens,
        completion_tokens: m.completion_tokens,
    }
}

fn state_name(status: ProviderStatus) -> &'static str {
    match status {
        ProviderStatus::Idle => "idle",
        ProviderStatus::Initializing => "initializing",
        ProviderStatus::Ready => "ready",
        ProviderStatus::Error => "error",
        ProviderStatus::ShuttingDown => "shutting_down",
    }
}

impl provd_daemon_status {
    pub(crate) fn new(result: StatusResult) -> provd_daemon_status {
        let instances = result
            .instances
            .iter()
            .map(|i| Instance {
                provider: NulString::new(i.provider.clone()),
                kind: NulString::new(i.kind.clone()),
                model: NulString::new(i.model.clone()),
                state: NulString::new(state_name(i.status)),
                metrics: metrics(&i.metrics),
            })
            .collect();
        let providers = result
            .provider_counters
            .iter()
            .map(|p| ProviderTotals {
                provider: NulString::new(p.provider.clone()),
                kind: NulString::new(p.kind.clone()),
                instances: p.instances,
                metrics: metrics(&p.metrics),
            })
            .collect();
        provd_daemon_status {
            daemon_version: NulString::new(result.daemon_version.clone()),
            result,
            instances,
            providers,
        }
    }
}

/// The daemon-wide part of a `provd_daemon_status`, as a view into it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_daemon_info {
    /// The daemon's release, e.g. `0.1.0`.
    pub daemon_version: provd_str,
    /// The protocol version the daemon speaks.
    pub protocol_version: u32,
    /// The daemon's process id.
    pub pid: u32,
    /// Milliseconds since the daemon started.
    pub uptime_ms: u64,
    /// Client connections open now, including this one.
    pub connections: u64,
    /// Generations running now, on all connections.
    pub active_streams: u64,
    /// How many provider instances `provd_daemon_status_instance` can read: at most the
    /// 20 that served the most requests (`provd_cache_info` counts the others).
    pub instances_len: usize,
}

/// One provider instance (a provider id and a model, started on first use and kept in
/// the daemon's bounded cache), as a view into a `provd_daemon_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_instance_info {
    /// The provider id.
    pub provider: provd_str,
    /// The provider type.
    pub kind: provd_str,
    /// The model this instance serves.
    pub model: provd_str,
    /// `idle`, `initializing`, `ready`, `error` or `shutting_down`.
    pub state: provd_str,
    /// Its counters.
    pub metrics: provd_metrics,
}

/// The daemon-wide figures of `status`, through `info_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_daemon_status_get(
    status: *const provd_daemon_status,
    info_out: *mut provd_daemon_info,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live status and a NULL or writable `info_out`.
        let (s, out) = unsafe {
            (
                args::handle(status, "status")?,
                args::out(info_out, "info_out")?,
            )
        };
        out.write(provd_daemon_info {
            daemon_version: s.daemon_version.lend(),
            protocol_version: s.result.protocol_version,
            pid: s.result.pid,
            uptime_ms: s.result.uptime_ms,
            connections: s.result.connections,
            active_streams: s.result.active_streams,
            instances_len: s.instances.len(),
        });
        Ok(())
    })
}

/// Provider instance number `index` of `status`, through `info_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if
/// `index` is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_daemon_status_instance(
    status: *const provd_daemon_status,
    index: usize,
    info_out: *mut provd_instance_info,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live status and a NULL or writable `info_out`.
        let (s, out) = unsafe {
            (
                args::handle(status, "status")?,
                args::out(info_out, "info_out")?,
            )
        };
        let i = at(&s.instances, index, "instance list")?;
        out.write(provd_instance_info {
            provider: i.provider.lend(),
            kind: i.kind.lend(),
            model: i.model.lend(),
            state: i.state.lend(),
            metrics: i.metrics,
        });
        Ok(())
    })
}

/// The daemon's instance cache and providers in a `provd_daemon_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_cache_info {
    /// How many providers `provd_daemon_status_provider` can read.
    pub providers_len: usize,
    /// Instances in the cache that `provd_daemon_status_instance` does not list.
    pub instances_omitted: u64,
    /// The most instances the daemon keeps (`[daemon] max_provider_instances`; 0 from a
    /// daemon that does not say).
    pub max_provider_instances: u64,
}

/// One configured provider's counters over all its models, as a view into a
/// `provd_daemon_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_provider_counters {
    /// The provider id.
    pub provider: provd_str,
    /// The provider type.
    pub kind: provd_str,
    /// Its instances (models) in the daemon's cache now.
    pub instances: u64,
    /// Its counters since the daemon started, evicted instances included.
    pub metrics: provd_metrics,
}

/// The instance cache's figures of `status`, through `info_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_daemon_status_cache(
    status: *const provd_daemon_status,
    info_out: *mut provd_cache_info,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live status and a NULL or writable `info_out`.
        let (s, out) = unsafe {
            (
                args::handle(status, "status")?,
                args::out(info_out, "info_out")?,
            )
        };
        out.write(provd_cache_info {
            providers_len: s.providers.len(),
            instances_omitted: s.result.instances_omitted,
            max_provider_instances: s.result.max_provider_instances,
        });
        Ok(())
    })
}

/// Provider number `index` of `status` (sorted by id), through `info_out`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if
/// `index` is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_daemon_status_provider(
    status: *const provd_daemon_status,
    index: usize,
    info_out: *mut provd_provider_counters,
) -> crate::error::provd_status {
    accessor(|| {
        // SAFETY: the header requires a live status and a NULL or writable `info_out`.
        let (s, out) = unsafe {
            (
                args::handle(status, "status")?,
                args::out(info_out, "info_out")?,
            )
        };
        let p = at(&s.providers, index, "provider list")?;
        out.write(provd_provider_counters {
            provider: p.provider.lend(),
            kind: p.kind.lend(),
            instances: p.instances,
            metrics: p.metrics,
        });
        Ok(())
    })
}

/// Frees a daemon status. NULL is ignored; views into it become invalid.
#[no_mangle]
pub extern "C" fn provd_daemon_status_free(status: *mut provd_daemon_status) {
    crate::panic::free(|| {
        // SAFETY: the header requires NULL or a status from this library, freed once.
        drop(unsafe { args::take(status) });
    })
}
