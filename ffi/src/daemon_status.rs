//! The daemon's status: the answer of `provd_client_status`.
//!
//! One object the caller frees, read through accessors that fill small C structs whose
//! strings ([`provd_str`]) point into the object; views, not copies. The object is
//! immutable, so any thread may read it at once.

use ::provd_client::message::{ProviderMetrics, ProviderStatus, StatusResult};

use crate::args::{self, at};
use crate::panic::accessor;
use crate::status::provd_status;
use crate::{provd_str, NulString};

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
) -> provd_status {
    accessor!(|| {
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
) -> provd_status {
    accessor!(|| {
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
) -> provd_status {
    accessor!(|| {
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
) -> provd_status {
    accessor!(|| {
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
