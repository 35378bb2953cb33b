//! The model list: the answer of `provd_client_list_models`, with the providers that
//! could not be asked.
//!
//! One object the caller frees, read through `_len`/`_get` accessors that fill small C
//! structs whose strings ([`provd_str`]) point into the object; views, not copies. The
//! object is immutable, so any thread may read it at once.

use ::provd_client::ModelList;

use crate::args::{self, at};
use crate::error::{provd_error, Error};
use crate::panic::accessor;
use crate::status::provd_status;
use crate::{provd_str, NulString};

struct Model {
    id: NulString,
    provider: NulString,
    display_name: Option<NulString>,
    context_window: u32,
    created_at: u64,
    capabilities: Vec<NulString>,
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
                capabilities: m.capabilities.into_iter().map(NulString::new).collect(),
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
) -> provd_status {
    accessor!(|| {
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
) -> provd_status {
    accessor!(|| {
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

/// How many capabilities model number `index` of `list` has (what its provider can do:
/// `streaming`, `tools`, `json_object`, `json_schema`, `reasoning`, `images`,
/// `image_urls`), through `len_out`; read them with `provd_model_list_capability`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if
/// `index` is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_model_list_capabilities_len(
    list: *const provd_model_list,
    index: usize,
    len_out: *mut usize,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live list and a NULL or writable `len_out`.
        let (list, out) = unsafe { (args::handle(list, "list")?, args::out(len_out, "len_out")?) };
        out.write(at(&list.models, index, "model list")?.capabilities.len());
        Ok(())
    })
}

/// Capability number `capability` (such as `tools`) of model number `index`, through
/// `capability_out`; it points into `list`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL, `PROVD_INVALID_ARGUMENT` if an
/// index is out of range. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_model_list_capability(
    list: *const provd_model_list,
    index: usize,
    capability: usize,
    capability_out: *mut provd_str,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live list and a NULL or writable out-pointer.
        let (list, out) = unsafe {
            (
                args::handle(list, "list")?,
                args::out(capability_out, "capability_out")?,
            )
        };
        let m = at(&list.models, index, "model list")?;
        out.write(at(&m.capabilities, capability, "capability list")?.lend());
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
) -> provd_status {
    accessor!(|| {
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
) -> provd_status {
    accessor!(|| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use ::provd_client::ModelInfo;

    #[test]
    fn a_models_capabilities_are_read_by_index_and_out_of_range_is_refused() {
        let list = provd_model_list::new(ModelList {
            models: vec![ModelInfo {
                id: "m".into(),
                provider: "p".into(),
                capabilities: vec!["streaming".into(), "tools".into()],
                ..ModelInfo::default()
            }],
            errors: vec![],
        });
        let mut len = 0;
        assert_eq!(
            provd_model_list_capabilities_len(&list, 0, &mut len),
            provd_status::PROVD_OK
        );
        assert_eq!(len, 2);
        let mut cap = provd_str::ABSENT;
        assert_eq!(
            provd_model_list_capability(&list, 0, 1, &mut cap),
            provd_status::PROVD_OK
        );
        assert_eq!(cap.len, 5);
        assert_eq!(
            provd_model_list_capability(&list, 0, 2, &mut cap),
            provd_status::PROVD_INVALID_ARGUMENT
        );
        assert_eq!(
            provd_model_list_capabilities_len(&list, 1, &mut len),
            provd_status::PROVD_INVALID_ARGUMENT
        );
        assert_eq!(
            provd_model_list_capabilities_len(&list, 0, std::ptr::null_mut()),
            provd_status::PROVD_NULL_ARGUMENT
        );
    }
}
