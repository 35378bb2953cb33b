//! The committed `include/provd.h` must be exactly what cbindgen generates from
//! `ffi/src` with `ffi/cbindgen.toml`, so C callers never compile against a stale header.
//!
//! `PROVD_BLESS=1 cargo test -p provd-ffi --test header` rewrites the header instead.

use std::path::Path;

fn generate() -> String {
    let ffi = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(ffi.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml is readable and valid");
    // `with_src` parses the source tree directly, following `mod` declarations, instead of
    // asking `cargo metadata` (which would contend for the cargo lock during test runs).
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(ffi.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn committed_header_equals_a_fresh_generation() {
    let fresh = generate();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/provd.h");
    if std::env::var_os("PROVD_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write include/provd.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let first_difference = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or(committed.lines().count().min(fresh.lines().count()), |i| i);
        panic!(
            "include/provd.h is stale (first difference at line {}): regenerate it with \
             `PROVD_BLESS=1 cargo test -p provd-ffi --test header` and commit it",
            first_difference + 1
        );
    }
}

#[test]
fn every_exported_function_is_documented_in_the_header() {
    let header = generate();
    let lines: Vec<&str> = header.lines().collect();
    let mut undocumented = Vec::new();
    let mut declarations = 0;
    for (i, line) in lines.iter().enumerate() {
        // A function declaration starts at column 0 with its return type, then its name.
        if line.starts_with([' ', '#', '/', '}', '{']) || line.starts_with("typedef") {
            continue;
        }
        let Some(name) = line
            .split_whitespace()
            .map(|w| w.trim_start_matches('*'))
            .find(|w| w.starts_with("provd_") && w.contains('('))
        else {
            continue;
        };
        declarations += 1;
        if i == 0 || !lines[i - 1].trim_end().ends_with("*/") {
            undocumented.push(name.split('(').next().unwrap_or(name).to_owned());
        }
    }
    // A guard against this check silently matching nothing.
    assert!(declarations > 40, "found only {declarations} declarations");
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");
}
