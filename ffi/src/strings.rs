//! Strings the library lends to C: [`provd_str`], and `NulString`, the owned string
//! behind it.

use std::ffi::c_char;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

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
