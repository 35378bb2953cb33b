//! The library's version and the protocol version it speaks.

use std::ffi::c_char;

/// The protocol version this library speaks with the daemon (the daemon refuses a
/// mismatch at connect time with `PROVD_PROTOCOL_ERROR`, naming both versions).
pub const PROVD_PROTOCOL_VERSION: u32 = 1;

// The header carries the literal above; keep it equal to the client's.
const _: () = assert!(PROVD_PROTOCOL_VERSION == ::provd_client::PROTOCOL_VERSION);

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
}
