//! The generation request, built field by field.
//!
//! A `provd_request` is plain data: the library copies every string it is given, so the
//! caller's buffers may be reused as soon as a setter returns, and one finished request
//! may be used for any number of generations, from any number of threads at once, as long
//! as nobody changes it meanwhile.

use std::ffi::c_char;

use ::provd_client::{GenerateRequest, Message, Role};

use crate::args;
use crate::error::{provd_error, Error};
use crate::panic::{boundary, function_name, run_fallible};
use crate::status::provd_status;

/// Who said a message in a conversation (`provd_request_add_message`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum provd_role {
    /// Instructions; most providers take them apart from the turns.
    PROVD_ROLE_SYSTEM = 0,
    /// The person or program asking.
    PROVD_ROLE_USER = 1,
    /// The model.
    PROVD_ROLE_ASSISTANT = 2,
}

/// What to generate, from which provider and model. Made by `provd_request_new`, freed
/// by `provd_request_free`.
///
/// Unset fields take the daemon's defaults: the default provider, its default model, its
/// configured `max_tokens`, the provider's sampling defaults. A request needs a prompt or
/// at least one message.
#[derive(Debug)]
pub struct provd_request {
    pub(crate) inner: GenerateRequest,
}

/// Makes an empty request in `*request_out`; the caller frees it with
/// `provd_request_free`.
///
/// Errors: `PROVD_NULL_ARGUMENT` if `request_out` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_request_new(
    request_out: *mut *mut provd_request,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires `request_out` to be NULL or writable.
        let out = unsafe { args::out_object(request_out, "request_out") }?;
        out.write(args::give(provd_request {
            inner: GenerateRequest {
                stream: true,
                ..GenerateRequest::default()
            },
        }));
        Ok(())
    })
}

/// Frees a request. NULL is ignored. Generations started from it are not affected (they
/// copied it).
#[no_mangle]
pub extern "C" fn provd_request_free(request: *mut provd_request) {
    crate::panic::free(|| {
        // SAFETY: the header requires `request` to be NULL or a request from
        // provd_request_new, freed only this once and not in use by another thread.
        drop(unsafe { args::take(request) });
    })
}

/// Runs a setter in the panic boundary, named `function` (the setter's
/// [`function_name!`]): checks the request pointer, then lets `set` change it.
fn set(
    function: &'static str,
    request: *mut provd_request,
    err_out: *mut *mut provd_error,
    set: impl FnOnce(&mut GenerateRequest) -> Result<(), Error>,
) -> provd_status {
    run_fallible(function, err_out, || {
        // SAFETY: the header requires `request` to be NULL or a live request that no
        // other thread uses while it is being changed.
        let request = unsafe { args::handle_mut(request, "request") }?;
        set(&mut request.inner)
    })
}

/// Copies an optional string argument: NULL unsets the field.
///
/// # Safety
///
/// As [`args::bytes`].
unsafe fn owned(data: *const c_char, len: usize, name: &str) -> Result<Option<String>, Error> {
    // SAFETY: forwarded contract.
    Ok(unsafe { args::opt_text(data, len, name) }?.map(str::to_owned))
}

/// Sets the provider id (`[providers.<id>]` in the daemon's configuration) from `len`
/// bytes of UTF-8 at `provider`. NULL unsets it: the daemon's default provider answers.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`. An unknown provider is
/// reported by the generation, as `PROVD_NOT_FOUND`.
/// Not thread-safe for one request (it changes it).
#[no_mangle]
pub extern "C" fn provd_request_set_provider(
    request: *mut provd_request,
    provider: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.provider = unsafe { owned(provider, len, "provider") }?;
        Ok(())
    })
}

/// Sets the model id from `len` bytes of UTF-8 at `model`. NULL unsets it: the
/// provider's default model answers.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_model(
    request: *mut provd_request,
    model: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.model = unsafe { owned(model, len, "model") }?;
        Ok(())
    })
}

/// Sets the prompt (one user turn, appended after any messages) from `len` bytes of
/// UTF-8 at `prompt`. NULL unsets it.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_prompt(
    request: *mut provd_request,
    prompt: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.prompt = unsafe { owned(prompt, len, "prompt") }?;
        Ok(())
    })
}

/// Sets the system prompt from `len` bytes of UTF-8 at `system`. NULL unsets it.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_system(
    request: *mut provd_request,
    system: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        r.system = unsafe { owned(system, len, "system") }?;
        Ok(())
    })
}

/// Appends one turn to the conversation: `role` is a `provd_role` value, `content` is
/// `len` bytes of UTF-8 (not NULL; an empty turn is `""` with length 0).
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, content), `PROVD_INVALID_UTF8`,
/// `PROVD_INVALID_ARGUMENT` (a role that is no `provd_role`).
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_add_message(
    request: *mut provd_request,
    role: u32,
    content: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // `role` arrives as a plain integer: a C enum may hold any value, and a Rust enum
        // that does is undefined behaviour.
        let role = match role {
            x if x == provd_role::PROVD_ROLE_SYSTEM as u32 => Role::System,
            x if x == provd_role::PROVD_ROLE_USER as u32 => Role::User,
            x if x == provd_role::PROVD_ROLE_ASSISTANT as u32 => Role::Assistant,
            other => {
                return Err(Error::invalid(
                    "role",
                    format!("must be a provd_role (0, 1 or 2), got {other}"),
                ))
            }
        };
        // SAFETY: the header's rule for pointer + length arguments.
        let content = unsafe { args::text(content, len, "content") }?.to_owned();
        r.messages.push(Message::text(role, content));
        Ok(())
    })
}

/// Caps the generated tokens; 0 unsets the cap (the provider's configured `max_tokens`
/// applies).
///
/// Errors: `PROVD_NULL_ARGUMENT` (request). Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_max_tokens(
    request: *mut provd_request,
    max_tokens: u32,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        r.max_tokens = (max_tokens > 0).then_some(max_tokens);
        Ok(())
    })
}

/// Checks a sampling parameter: negative unsets it, NaN and infinities are refused.
fn sampling(value: f64, name: &str) -> Result<Option<f32>, Error> {
    if !value.is_finite() {
        return Err(Error::invalid(
            name,
            format!("must be a finite number, got {value}"),
        ));
    }
    // The wire carries float32, like the Rust client.
    Ok((value >= 0.0).then_some(value as f32))
}

/// Sets the sampling temperature. A negative value unsets it (the provider's default
/// applies); the range a provider accepts is checked by the daemon.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_ARGUMENT` (NaN or infinite).
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_temperature(
    request: *mut provd_request,
    temperature: f64,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        r.temperature = sampling(temperature, "temperature")?;
        Ok(())
    })
}

/// Sets nucleus sampling (`top_p`). A negative value unsets it.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_ARGUMENT` (NaN or infinite).
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_top_p(
    request: *mut provd_request,
    top_p: f64,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        r.top_p = sampling(top_p, "top_p")?;
        Ok(())
    })
}

/// Appends a stop sequence: `len` bytes of UTF-8 at `stop` (not NULL).
///
/// Errors: `PROVD_NULL_ARGUMENT` (request, stop), `PROVD_INVALID_UTF8`.
/// Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_add_stop(
    request: *mut provd_request,
    stop: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let stop = unsafe { args::text(stop, len, "stop") }?;
        r.stop.push(stop.to_owned());
        Ok(())
    })
}

/// Replaces the provider-specific parameters with a JSON object: `len` bytes of UTF-8 at
/// `json`, such as `{"mock": {"chunks": 3}}`. They are passed through to the upstream
/// request (the mock provider reads `mock`). NULL removes them all.
///
/// Errors: `PROVD_NULL_ARGUMENT` (request), `PROVD_INVALID_UTF8`, `PROVD_INVALID_ARGUMENT`
/// (not JSON, or JSON that is not an object; the message says where). On error the
/// request keeps its previous parameters. Not thread-safe for one request.
#[no_mangle]
pub extern "C" fn provd_request_set_additional_params_json(
    request: *mut provd_request,
    json: *const c_char,
    len: usize,
    err_out: *mut *mut provd_error,
) -> provd_status {
    set(function_name!(), request, err_out, |r| {
        // SAFETY: the header's rule for pointer + length arguments.
        let Some(json) = (unsafe { args::opt_text(json, len, "json") })? else {
            r.additional_params.clear();
            return Ok(());
        };
        let value: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| Error::invalid("json", format!("is not valid JSON: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(Error::invalid(
                "json",
                format!("must be a JSON object, got {value}"),
            ));
        };
        r.additional_params = map.into_iter().collect();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_request() -> *mut provd_request {
        let mut r = std::ptr::null_mut();
        assert_eq!(
            provd_request_new(&mut r, std::ptr::null_mut()),
            provd_status::PROVD_OK
        );
        r
    }

    fn inner(r: *mut provd_request) -> &'static GenerateRequest {
        // SAFETY: test requests are live until freed at the end of each test.
        unsafe { &(*r).inner }
    }

    #[test]
    fn setters_copy_fields_and_null_unsets() {
        let r = new_request();
        let none = std::ptr::null_mut();
        let s = |v: &str| (v.as_ptr().cast::<c_char>(), v.len());
        let (p, n) = s("hello");
        assert_eq!(
            provd_request_set_prompt(r, p, n, none),
            provd_status::PROVD_OK
        );
        let (p, n) = s("mock");
        assert_eq!(
            provd_request_set_provider(r, p, n, none),
            provd_status::PROVD_OK
        );
        let (p, n) = s("be brief");
        assert_eq!(
            provd_request_add_message(r, provd_role::PROVD_ROLE_USER as u32, p, n, none),
            provd_status::PROVD_OK
        );
        assert_eq!(
            provd_request_set_max_tokens(r, 7, none),
            provd_status::PROVD_OK
        );
        assert_eq!(
            provd_request_set_temperature(r, 0.5, none),
            provd_status::PROVD_OK
        );
        assert_eq!(
            provd_request_set_top_p(r, -1.0, none),
            provd_status::PROVD_OK
        );
        let (p, n) = s("END");
        assert_eq!(
            provd_request_add_stop(r, p, n, none),
            provd_status::PROVD_OK
        );
        let (p, n) = s(r#"{"mock": {"chunks": 3}}"#);
        assert_eq!(
            provd_request_set_additional_params_json(r, p, n, none),
            provd_status::PROVD_OK
        );
        let req = inner(r);
        assert_eq!(req.prompt.as_deref(), Some("hello"));
        assert_eq!(req.provider.as_deref(), Some("mock"));
        assert_eq!(req.messages.len(), 1);
        assert_eq!(
            (req.max_tokens, req.temperature, req.top_p),
            (Some(7), Some(0.5), None)
        );
        assert_eq!(req.stop, vec!["END".to_owned()]);
        assert_eq!(req.additional_params["mock"]["chunks"], 3);
        assert!(req.stream);

        assert_eq!(
            provd_request_set_provider(r, std::ptr::null(), 0, none),
            provd_status::PROVD_OK
        );
        assert_eq!(inner(r).provider, None);
        provd_request_free(r);
    }

    #[test]
    fn bad_arguments_are_refused_with_the_request_unchanged() {
        let r = new_request();
        let mut err = std::ptr::null_mut();
        let bad_json = "[1, 2]";
        let status = provd_request_set_additional_params_json(
            r,
            bad_json.as_ptr().cast(),
            bad_json.len(),
            &mut err,
        );
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        // SAFETY: `err` is a fresh error object, taken once.
        let e = unsafe { args::take(err) }.unwrap();
        assert!(e
            .message
            .as_str()
            .starts_with("provd_request_set_additional_params_json: "));
        assert!(e.message.as_str().contains("must be a JSON object"));
        assert!(inner(r).additional_params.is_empty());

        let none = std::ptr::null_mut();
        assert_eq!(
            provd_request_set_temperature(r, f64::NAN, none),
            provd_status::PROVD_INVALID_ARGUMENT
        );
        assert_eq!(
            provd_request_add_message(r, 9, c"x".as_ptr(), 1, none),
            provd_status::PROVD_INVALID_ARGUMENT
        );
        assert_eq!(
            provd_request_add_stop(r, std::ptr::null(), 0, none),
            provd_status::PROVD_NULL_ARGUMENT
        );
        assert_eq!(
            provd_request_set_prompt(std::ptr::null_mut(), c"x".as_ptr(), 1, none),
            provd_status::PROVD_NULL_ARGUMENT
        );
        assert!(inner(r).messages.is_empty() && inner(r).stop.is_empty());
        provd_request_free(r);
    }
}
