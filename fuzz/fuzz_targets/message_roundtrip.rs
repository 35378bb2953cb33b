//! `cargo +nightly fuzz run message_roundtrip`: see `provd::fuzzing::check_message_roundtrip` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| provd::fuzzing::check_message_roundtrip(data));
