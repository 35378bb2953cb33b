//! Test-only: the invariants behind the fuzz targets in `fuzz/fuzz_targets/`.
//!
//! Every `check_*` function takes the raw bytes libFuzzer hands a target and panics when
//! an invariant fails (a panic is what libFuzzer reports as a crash). The fuzz targets
//! are one-line wrappers around them, and `tests/tests/fuzz_corpus.rs` replays the
//! committed corpus (`fuzz/corpus/<target>/`) through the same functions on stable Rust,
//! so the checks a fuzzer ran and the checks the test suite runs cannot drift apart.
//!
//! Not an API: built only with the `fuzzing` feature, hidden from the docs, and never
//! called by the daemon itself.

mod config;
#[cfg(unix)]
mod credentials;
mod streams;
mod wire;

pub use config::check_config;
#[cfg(unix)]
pub use credentials::check_credential_file;
pub use streams::{check_ndjson, check_provider_streams, check_sse, select_decoder};
pub use wire::{check_frame, check_message_roundtrip, FUZZ_MAX_FRAME_BYTES};

/// An invariant check: panics when the input breaks one.
pub type Check = fn(&[u8]);

/// Every fuzz target by name (the directory names under `fuzz/corpus/`), with its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("frame", check_frame),
    ("message_roundtrip", check_message_roundtrip),
    ("sse", check_sse),
    ("ndjson", check_ndjson),
    ("provider_streams", check_provider_streams),
    ("config", check_config),
    #[cfg(unix)]
    ("credential_file", check_credential_file),
];

/// Splits a fuzz input into a body and the pieces to feed it in, so that a target can
/// compare a parser fed the whole body with the same parser fed arbitrary pieces.
///
/// The first byte's low four bits say how many piece sizes follow (0 to 15), one byte
/// each; the rest is the body. The sizes repeat until the body is used up; a size of 0
/// feeds an empty piece and then one byte, so every piece sequence ends. No sizes means
/// a single piece.
pub(crate) fn pieces(input: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let Some((&first, rest)) = input.split_first() else {
        return (Vec::new(), &[]);
    };
    let n = usize::from(first & 0x0f).min(rest.len());
    let (sizes, body) = rest.split_at(n);
    if sizes.is_empty() {
        return (vec![body], body);
    }
    let mut out = Vec::new();
    let mut at = 0;
    let mut i = 0;
    while at < body.len() {
        let mut size = usize::from(sizes[i % sizes.len()]);
        i += 1;
        if size == 0 {
            out.push(&body[at..at]);
            size = 1;
        }
        let end = (at + size).min(body.len());
        out.push(&body[at..end]);
        at = end;
    }
    (out, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_body_in_order() {
        let input = [2u8, 3, 0, b'a', b'b', b'c', b'd', b'e', b'f'];
        let (cut, body) = pieces(&input);
        assert_eq!(body, b"abcdef");
        assert_eq!(
            cut,
            [&b"abc"[..], b"", b"d", b"ef"],
            "3 bytes, an empty piece and 1, then 3 again (cut at the end)"
        );
        assert_eq!(pieces(&[0, b'x']).0, [&b"x"[..]]);
        assert!(pieces(&[]).0.is_empty());
        assert_eq!(pieces(&[5, 1]), (vec![], &b""[..]), "sizes without a body");
    }
}
