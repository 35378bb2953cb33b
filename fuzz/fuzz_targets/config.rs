//! `cargo +nightly fuzz run config`: see `provd::fuzzing::check_config` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| provd::fuzzing::check_config(data));
