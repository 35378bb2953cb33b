//! The provider list: the answer of `provd_client_list_providers`.
//!
//! One object the caller frees, read through `_len`/`_get` accessors that fill small C
//! structs whose strings ([`provd_str`]) point into the object. The structs are views,
//! not copies: they stay valid until the object is freed. The object is immutable, so any
//! thread may read it at once.

use ::provd_client::ProviderList;

use crate::args::{self, at};
use crate::panic::accessor;
use crate::status::provd_status;
use crate::{provd_str, NulString};

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
) -> provd_status {
    accessor!(|| {
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
) -> provd_status {
    accessor!(|| {
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
) -> provd_status {
    accessor!(|| {
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
