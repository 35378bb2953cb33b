//! Checks on what C hands the library: handles, out-pointers and borrowed strings.
//!
//! Each helper turns a raw pointer into a Rust value only after the checks a C caller can
//! get wrong without UB on our side (NULL, invalid UTF-8, an absurd length); what it
//! cannot check (a dangling pointer, a length longer than the buffer) is the caller's
//! contract, stated in the header and in each helper's `# Safety`.

use std::ffi::c_char;

use crate::error::Error;

/// Borrows a handle the caller lends for the duration of a call.
///
/// # Safety
///
/// `ptr` is NULL or points to a live `T` made by this library and not yet freed, which
/// no other thread mutates during the call (the header's threading rules).
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Error> {
    // SAFETY: non-NULL pointers are valid by this function's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| Error::null(name))
}

/// Borrows a handle mutably for the duration of a call.
///
/// # Safety
///
/// As [`handle`], and no other thread uses the handle at all during the call.
pub(crate) unsafe fn handle_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Error> {
    // SAFETY: non-NULL pointers are valid and unaliased by this function's contract.
    unsafe { ptr.as_mut() }.ok_or_else(|| Error::null(name))
}

/// Gives a new object to the caller, who frees it with the matching `_free`.
pub(crate) fn give<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Takes back an object the caller frees; `None` for NULL.
///
/// # Safety
///
/// `ptr` is NULL or came from [`give`] with the same `T`, and is not used again.
pub(crate) unsafe fn take<T>(ptr: *mut T) -> Option<Box<T>> {
    // SAFETY: by this function's contract the pointer came from Box::into_raw.
    (!ptr.is_null()).then(|| unsafe { Box::from_raw(ptr) })
}

/// An out-parameter that was checked for NULL. Writing never reads the old value, so the
/// caller may pass uninitialised storage.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    /// Stores `value`. A previous value is overwritten without being dropped (out types
    /// are plain C data: pointers, numbers, `provd_str`).
    pub(crate) fn write(&self, value: T) {
        // SAFETY: `Out` is only made by `out`/`out_opt`, whose contract is that the
        // pointer is writable for a `T` during the call; `write` reads nothing.
        unsafe { self.0.write(value) }
    }
}

/// Checks an out-parameter that may not be NULL.
///
/// # Safety
///
/// `ptr` is NULL or points to storage for one `T`, writable during the call.
pub(crate) unsafe fn out<T>(ptr: *mut T, name: &str) -> Result<Out<T>, Error> {
    if ptr.is_null() {
        return Err(Error::null(name));
    }
    Ok(Out(ptr))
}

/// An out-parameter the caller may leave NULL when it does not want the value.
///
/// # Safety
///
/// As [`out`].
pub(crate) unsafe fn out_opt<T>(ptr: *mut T) -> Option<Out<T>> {
    (!ptr.is_null()).then_some(Out(ptr))
}

/// Checks an out-parameter for a new object and stores NULL in it at once, so that on any
/// later failure the caller finds NULL there, never a stale pointer.
///
/// # Safety
///
/// As [`out`].
pub(crate) unsafe fn out_object<T>(ptr: *mut *mut T, name: &str) -> Result<Out<*mut T>, Error> {
    // SAFETY: forwarded contract.
    let out = unsafe { out(ptr, name) }?;
    out.write(std::ptr::null_mut());
    Ok(out)
}

/// Like [`out_object`] for an out-parameter the caller may leave NULL.
///
/// # Safety
///
/// As [`out`].
pub(crate) unsafe fn out_object_opt<T>(ptr: *mut *mut T) -> Option<Out<*mut T>> {
    // SAFETY: forwarded contract.
    let out = unsafe { out_opt(ptr) };
    if let Some(out) = &out {
        out.write(std::ptr::null_mut());
    }
    out
}

/// Borrows `len` bytes at `data`.
///
/// # Safety
///
/// `data` is NULL or points to `len` readable bytes that nobody changes during the call.
pub(crate) unsafe fn bytes<'a>(
    data: *const c_char,
    len: usize,
    name: &str,
) -> Result<&'a [u8], Error> {
    if data.is_null() {
        return Err(Error::null(name));
    }
    if len > isize::MAX as usize {
        // Certainly a bug (a negative length cast to size_t); from_raw_parts would be UB.
        return Err(Error::invalid(
            name,
            format!("has an impossible length {len}"),
        ));
    }
    // SAFETY: non-NULL, the length fits an allocation, and the caller promises `len`
    // readable bytes (the header's rule for pointer + length arguments).
    Ok(unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
}

/// Borrows a UTF-8 string given as pointer + length; no NUL terminator is needed.
///
/// # Safety
///
/// As [`bytes`].
pub(crate) unsafe fn text<'a>(
    data: *const c_char,
    len: usize,
    name: &str,
) -> Result<&'a str, Error> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { bytes(data, len, name) }?;
    std::str::from_utf8(bytes).map_err(|e| Error::utf8(name, e))
}

/// Like [`text`], but NULL means "absent" instead of an error.
///
/// # Safety
///
/// As [`bytes`].
pub(crate) unsafe fn opt_text<'a>(
    data: *const c_char,
    len: usize,
    name: &str,
) -> Result<Option<&'a str>, Error> {
    if data.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { text(data, len, name) }.map(Some)
}

/// Looks up `index` in `items`, or says it is out of range.
pub(crate) fn at<'a, T>(items: &'a [T], index: usize, what: &str) -> Result<&'a T, Error> {
    items.get(index).ok_or_else(|| {
        Error::invalid(
            "index",
            format!("is {index}, but the {what} has {} entries", items.len()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::provd_status;

    #[test]
    fn strings_are_checked_for_null_and_utf8() {
        let good = "grüß";
        // SAFETY: the pointers and lengths describe live local buffers.
        unsafe {
            assert_eq!(text(good.as_ptr().cast(), good.len(), "s").unwrap(), good);
            assert_eq!(
                text(std::ptr::null(), 0, "s").unwrap_err().code,
                provd_status::PROVD_NULL_ARGUMENT
            );
            assert_eq!(opt_text(std::ptr::null(), 3, "s").unwrap(), None);
            let bad = [b'o', b'k', 0xff, b'!'];
            let e = text(bad.as_ptr().cast(), bad.len(), "prompt").unwrap_err();
            assert_eq!(e.code, provd_status::PROVD_INVALID_UTF8);
            assert!(e.message.as_str().contains("offset 2"), "{:?}", e.message);
            // A length is taken as given: interior NULs are text, not terminators.
            let with_nul = "a\0b";
            assert_eq!(text(with_nul.as_ptr().cast(), 3, "s").unwrap(), "a\0b");
            let e = bytes(good.as_ptr().cast(), usize::MAX, "s").unwrap_err();
            assert_eq!(e.code, provd_status::PROVD_INVALID_ARGUMENT);
        }
    }

    #[test]
    fn handles_and_outs_refuse_null() {
        // SAFETY: NULL is always an allowed input to these helpers.
        unsafe {
            assert!(handle::<u8>(std::ptr::null(), "h").is_err());
            assert!(handle_mut::<u8>(std::ptr::null_mut(), "h").is_err());
            assert!(out::<u8>(std::ptr::null_mut(), "o").is_err());
            assert!(out_opt::<u8>(std::ptr::null_mut()).is_none());
            assert!(take::<u8>(std::ptr::null_mut()).is_none());
        }
        let mut slot = 0u32;
        // SAFETY: `slot` is a live local.
        unsafe { out(&mut slot, "o") }.unwrap().write(7);
        assert_eq!(slot, 7);
        // SAFETY: the pointer comes from `give` and is taken once.
        let back = unsafe { take(give(5u8)) }.unwrap();
        assert_eq!(*back, 5);
    }
}
