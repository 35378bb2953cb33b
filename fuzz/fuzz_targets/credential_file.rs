//! `cargo +nightly fuzz run credential_file`: see `provd::fuzzing::check_credential_file` for the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| provd::fuzzing::check_credential_file(data));
