//! The panic boundary around every exported function.
//!
//! Unwinding out of an `extern "C"` function aborts the caller's whole process, so each
//! exported function runs its body inside one of these wrappers, which catch a panic and
//! report it as `PROVD_INTERNAL`. They also own the error out-parameter: it is set to NULL
//! on entry and to a new error object on failure, in exactly one place, so no function
//! can forget it and no failure loses its message.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{provd_error, Error};
use crate::status::provd_status;

/// Runs the body of a fallible exported function.
///
/// `err_out` may be NULL (the caller wants only the status). Otherwise it receives NULL on
/// success and a new error object, which the caller frees, on failure.
pub(crate) fn boundary(
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

/// Runs the body of an accessor: a function whose only failures are NULL arguments or an
/// index out of range, which the status alone describes, so it takes no error object.
pub(crate) fn accessor(body: impl FnOnce() -> Result<(), Error>) -> provd_status {
    match run("accessor", body) {
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
        let status = boundary("provd_test_fn", &mut err, || panic!("boom {}", 7));
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
        assert_eq!(accessor(|| panic!("x")), provd_status::PROVD_INTERNAL);
        free(|| panic!("dropped"));
    }

    #[test]
    fn success_clears_the_error_slot_and_null_slots_are_fine() {
        let mut err: *mut provd_error = std::ptr::dangling_mut();
        assert_eq!(boundary("f", &mut err, || Ok(())), provd_status::PROVD_OK);
        assert!(err.is_null());
        let status = boundary("f", std::ptr::null_mut(), || Err(Error::null("x")));
        assert_eq!(status, provd_status::PROVD_NULL_ARGUMENT);
    }
}
