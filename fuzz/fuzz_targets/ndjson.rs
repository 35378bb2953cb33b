//! `cargo +nightly fuzz run ndjson`: see `provd::fuzzing::check_ndjson` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| provd::fuzzing::check_ndjson(data));
