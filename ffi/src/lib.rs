//! # libprovd: the C ABI of provd
//!
//! Everything a C, C++, Go or Python program needs to stream generations from the provd
//! daemon, over [`::provd_client::blocking::Client`]. `include/provd.h` is generated from
//! the doc comments and signatures in this crate by cbindgen (`ffi/cbindgen.toml`); the
//! test `ffi/tests/header.rs` fails when the committed header is stale.
//!
//! The shape follows rustls-ffi:
//!
//! - every fallible function returns a [`provd_status`]; the details of a failure come
//!   back as a [`error::provd_error`] object through an out-parameter, never through a
//!   thread-local "last error" (Go moves goroutines between OS threads);
//! - handles are opaque pointers, each with its free function;
//! - every exported function runs inside [`panic::boundary`] (or one of its siblings),
//!   which catches panics and turns them into `PROVD_INTERNAL`;
//! - borrowed strings go in as pointer + length and are checked for NULL and UTF-8 in
//!   [`args`]; strings the library lends out are [`provd_str`].
//!
//! Modules: [`error`] (status codes and the error object), [`panic`] (the boundary),
//! [`args`] (argument checks), [`client`] (connect, close, ping, lists, status),
//! [`request`] (the request builder), [`generate`] (callback-driven generation, cancel
//! tokens, the done result), [`stream`] (pull-driven generation), [`lists`] (provider and
//! model lists, daemon status).

// The exported names are C names (`provd_client`, `PROVD_OK`), written once here so the
// header and the Rust source read the same.
#![allow(non_camel_case_types)]
// The exported functions take raw pointers from C and check them at the top. They are not
// `unsafe fn` because no Rust code can call them (the crate builds no rlib); their safety
// contract is the header's documentation, and each dereference has its `// SAFETY:`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

use std::ffi::c_char;

pub mod args;
pub mod client;
pub mod error;
pub mod generate;
pub mod lists;
pub mod panic;
pub mod request;
pub mod stream;

/// The protocol version this library speaks with the daemon (the daemon refuses a
/// mismatch at connect time with `PROVD_PROTOCOL_ERROR`, naming both versions).
pub const PROVD_PROTOCOL_VERSION: u32 = 1;

// The header carries the literal above; keep it equal to the client's.
const _: () = assert!(PROVD_PROTOCOL_VERSION == ::provd_client::PROTOCOL_VERSION);

/// A string the library lends to the caller: `len` bytes of UTF-8 at `data`.
///
/// `data[len]` is always a NUL byte, so `data` can be printed with `%s`, but `len` is
/// authoritative: the text itself may contain NUL bytes. `data` is NULL (and `len` 0) for
/// an optional string that is absent. The bytes belong to the object the string came from
/// and stay valid until that object is freed (or, for a stream's chunk, until the next
/// call on that stream). Never free `data`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct provd_str {
    /// The first byte, or NULL when the string is absent.
    pub data: *const c_char,
    /// The length in bytes, not counting the NUL that follows.
    pub len: usize,
}

impl provd_str {
    /// The absent string: NULL, length 0.
    pub(crate) const ABSENT: provd_str = provd_str {
        data: std::ptr::null(),
        len: 0,
    };
}

/// An owned string kept with a trailing NUL, so it can be lent to C as a [`provd_str`]
/// that C can also print with `%s`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct NulString(String);

impl NulString {
    /// Takes `s` and appends the NUL (no copy when `s` has spare capacity).
    pub(crate) fn new(s: impl Into<String>) -> NulString {
        let mut s = s.into();
        s.push('\0');
        NulString(s)
    }

    /// The text without the NUL.
    pub(crate) fn as_str(&self) -> &str {
        // An empty inner string only exists through `Default`; it lends as "".
        self.0.strip_suffix('\0').unwrap_or(&self.0)
    }

    /// Lends the text; valid while `self` is neither dropped nor changed.
    pub(crate) fn lend(&self) -> provd_str {
        if self.0.is_empty() {
            // `Default`: lend a static empty C string rather than a dangling pointer.
            return provd_str {
                data: c"".as_ptr(),
                len: 0,
            };
        }
        provd_str {
            data: self.0.as_ptr().cast(),
            len: self.0.len() - 1,
        }
    }

    /// Lends an optional string: absent is NULL.
    pub(crate) fn lend_opt(s: &Option<NulString>) -> provd_str {
        s.as_ref().map_or(provd_str::ABSENT, NulString::lend)
    }
}

/// The library's version, e.g. `"0.1.0"`: a static NUL-terminated string; never free it.
///
/// Thread-safe; never fails.
#[no_mangle]
pub extern "C" fn provd_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The protocol version this library speaks: `PROVD_PROTOCOL_VERSION`.
///
/// Thread-safe; never fails.
#[no_mangle]
pub extern "C" fn provd_protocol_version() -> u32 {
    PROVD_PROTOCOL_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_is_the_crate_version_nul_terminated() {
        // SAFETY: provd_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(provd_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        assert_eq!(provd_protocol_version(), ::provd_client::PROTOCOL_VERSION);
    }

    #[test]
    fn lent_strings_are_nul_terminated_and_exclude_the_nul_from_len() {
        let s = NulString::new("héllo");
        let lent = s.lend();
        assert_eq!(lent.len, "héllo".len());
        // SAFETY: `lent` points into `s`, which lives to the end of the test, and the
        // byte after the text is the NUL.
        let c = unsafe { CStr::from_ptr(lent.data) };
        assert_eq!(c.to_str().unwrap(), "héllo");
        assert_eq!(s.as_str(), "héllo");
        let empty = NulString::default().lend();
        assert_eq!(empty.len, 0);
        assert!(!empty.data.is_null());
        assert!(NulString::lend_opt(&None).data.is_null());
    }
}
