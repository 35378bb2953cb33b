//! `cargo +nightly fuzz run provider_streams`: see `provd::fuzzing::check_provider_streams` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| provd::fuzzing::check_provider_streams(data));
