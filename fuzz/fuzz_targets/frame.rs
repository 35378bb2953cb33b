//! `cargo +nightly fuzz run frame`: see `provd::fuzzing::check_frame` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| provd::fuzzing::check_frame(data));
