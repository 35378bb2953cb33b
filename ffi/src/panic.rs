//! The panic boundary around every exported function.
//!
//! Unwinding out of an `extern "C"` function aborts the caller's whole process, so each
//! exported function runs its body inside one of these wrappers, which catch a panic and
//! report it as `PROVD_INTERNAL`. They also own the error out-parameter: it is set to NULL
//! on entry and to a new error object on failure, in exactly one place, so no function
//! can forget it and no failure loses its message.
//!
//! Exported functions enter the boundary through the macros `boundary!` and
//! `accessor!`, which name the function they are written in (for the "`function`:
//! argument ... is NULL" and "`function` panicked" messages) from the function itself, so
//! a renamed or copied function can never carry another one's name. Free functions use
//! `free`, which has nothing to report and so needs no name.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{provd_error, Error};
use crate::status::provd_status;

/// The name of the function this is written in, e.g. `"provd_client_ping"`.
///
/// A declarative macro cannot see the name of the item around it, but the type name of a
/// nested function is that item's path plus the nested function's own name
/// (`provd::client::provd_client_ping::here`); [`enclosing_function`] keeps the segment
/// before `here`. The unit test `function_name_is_the_enclosing_function` guards the
/// format, which the standard library describes as best effort.
macro_rules! function_name {
    () => {{
        fn here() {}
        $crate::panic::enclosing_function(::std::any::type_name_of_val(&here))
    }};
}

/// Runs the body of a fallible exported function in the panic boundary:
/// `boundary!(err_out, || { ... })` in `provd_x` is [`run_fallible`]`("provd_x", err_out,
/// || { ... })`.
macro_rules! boundary {
    ($err_out:expr, $body:expr $(,)?) => {
        $crate::panic::run_fallible($crate::panic::function_name!(), $err_out, $body)
    };
}

/// Runs the body of an accessor in the panic boundary: `accessor!(|| { ... })` in
/// `provd_x` is [`run_accessor`]`("provd_x", || { ... })`.
macro_rules! accessor {
    ($body:expr $(,)?) => {
        $crate::panic::run_accessor($crate::panic::function_name!(), $body)
    };
}

pub(crate) use {accessor, boundary, function_name};

/// The function a [`function_name!`] stands in, from the type name of its nested `here`:
/// the last path segment before `here`, skipping closures it may be written in.
pub(crate) fn enclosing_function(here: &'static str) -> &'static str {
    let mut path = here.strip_suffix("::here").unwrap_or(here);
    while let Some(outer) = path.strip_suffix("::{{closure}}") {
        path = outer;
    }
    path.rsplit("::").next().unwrap_or(path)
}

/// Runs the body of a fallible exported function named `function` (use [`boundary!`]).
///
/// `err_out` may be NULL (the caller wants only the status). Otherwise it receives NULL on
/// success and a new error object, which the caller frees, on failure.
pub(crate) fn run_fallible(
    function: &'static str,
    err_out: *mut *mut provd_error,
    body: impl FnOnce() -> Result<(), Error>,
) -> provd_status {
    // SAFETY: the header requires `err_out` to be NULL or writable storage for one pointer.
    let slot = unsafe { crate::args::out_opt(err_out) };
    if let Some(slot) = &slot {
        slot.write(std::ptr::null_mut());
    }
    match run(function, body) {
        Ok(()) => provd_status::PROVD_OK,
        Err(mut e) => {
            e.add_context(function);
            let code = e.code;
            if let Some(slot) = &slot {
                slot.write(crate::args::give(e));
            }
            code
        }
    }
}

/// Runs the body of an accessor named `function` (use [`accessor!`]): a function whose
/// only failures are NULL arguments or an index out of range, which the status alone
/// describes, so it takes no error object.
pub(crate) fn run_accessor(
    function: &'static str,
    body: impl FnOnce() -> Result<(), Error>,
) -> provd_status {
    match run(function, body) {
        Ok(()) => provd_status::PROVD_OK,
        Err(e) => e.code,
    }
}

/// Runs the body of a `_free` function, which has no way to report anything: freeing
/// must not fail, and a panic while dropping is swallowed rather than aborting the caller.
pub(crate) fn free(body: impl FnOnce()) {
    let _ = catch_unwind(AssertUnwindSafe(body));
}

fn run(function: &str, body: impl FnOnce() -> Result<(), Error>) -> Result<(), Error> {
    // AssertUnwindSafe: after a panic the caller gets PROVD_INTERNAL, and the objects the
    // call touched are left in a state that is memory-safe but unspecified (the header
    // says so); no lock is held across the boundary.
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|payload| {
        Err(Error::internal(format!(
            "{function} panicked: {}; this is a bug in libprovd",
            panic_message(&*payload)
        )))
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(a non-string panic payload)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_internal_with_an_error_object() {
        let mut err: *mut provd_error = std::ptr::dangling_mut();
        let status = run_fallible("provd_test_fn", &mut err, || panic!("boom {}", 7));
        assert_eq!(status, provd_status::PROVD_INTERNAL);
        // SAFETY: `boundary` stored a fresh error object; it is taken once.
        let e = unsafe { crate::args::take(err) }.expect("an error object");
        assert_eq!(e.code, provd_status::PROVD_INTERNAL);
        assert!(
            e.message
                .as_str()
                .contains("provd_test_fn panicked: boom 7"),
            "{:?}",
            e.message
        );
        assert_eq!(
            run_accessor("f", || panic!("x")),
            provd_status::PROVD_INTERNAL
        );
        free(|| panic!("dropped"));
    }

    #[test]
    fn success_clears_the_error_slot_and_null_slots_are_fine() {
        let mut err: *mut provd_error = std::ptr::dangling_mut();
        assert_eq!(
            run_fallible("f", &mut err, || Ok(())),
            provd_status::PROVD_OK
        );
        assert!(err.is_null());
        let status = run_fallible("f", std::ptr::null_mut(), || Err(Error::null("x")));
        assert_eq!(status, provd_status::PROVD_NULL_ARGUMENT);
    }

    fn provd_probe() -> &'static str {
        function_name!()
    }

    #[test]
    fn function_name_is_the_enclosing_function() {
        assert_eq!(provd_probe(), "provd_probe");
        // Written inside a closure, it still names the function around the closure.
        let in_closure = || function_name!();
        assert_eq!(in_closure(), "function_name_is_the_enclosing_function");
    }

    fn provd_probe_fallible(err_out: *mut *mut provd_error) -> provd_status {
        boundary!(err_out, || Err(Error::null("thing")))
    }

    fn provd_probe_panics(err_out: *mut *mut provd_error) -> provd_status {
        boundary!(err_out, || panic!("on purpose"))
    }

    #[test]
    fn the_boundary_macro_names_the_function_it_is_written_in() {
        let mut err: *mut provd_error = std::ptr::null_mut();
        assert_eq!(
            provd_probe_fallible(&mut err),
            provd_status::PROVD_NULL_ARGUMENT
        );
        // SAFETY: the boundary stored a fresh error object; it is taken once.
        let e = unsafe { crate::args::take(err) }.expect("an error object");
        assert_eq!(
            e.message.as_str(),
            "provd_probe_fallible: argument `thing` is NULL"
        );
        assert_eq!(provd_probe_panics(&mut err), provd_status::PROVD_INTERNAL);
        // SAFETY: as above.
        let e = unsafe { crate::args::take(err) }.expect("an error object");
        assert!(
            e.message
                .as_str()
                .contains("provd_probe_panics panicked: on purpose"),
            "{:?}",
            e.message
        );
    }
}
