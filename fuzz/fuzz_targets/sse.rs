//! `cargo +nightly fuzz run sse`: see `provd::fuzzing::check_sse` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| provd::fuzzing::check_sse(data));
