//! The conventions of `ffi/CONTRIBUTING.md` that a reader of the source can check, checked
//! on the source: every exported function runs inside the panic boundary, entered through
//! a macro that names the function itself (never a string that could name another one),
//! and every opaque object has its `_free` function.

use std::path::Path;

/// Exported functions that stay outside the boundary because nothing in them can panic
/// or fail: they return a constant or look a number up in a static table.
const NEVER_FAIL: &[&str] = &[
    "provd_version",
    "provd_protocol_version",
    "provd_status_name",
    "provd_finish_reason_name",
    "provd_connect_options_default",
];

/// Exported functions kept under an older name: (alias, the function it calls, whose own
/// body enters the boundary).
const ALIASES: &[(&str, &str)] = &[("provd_client_close", "provd_client_free")];

/// How an exported function may enter the boundary.
const ENTRIES: &[&str] = &[
    "boundary!(",
    "accessor!(",
    "set(function_name!(),",
    "crate::panic::free(",
];

struct Export {
    file: String,
    name: String,
    body: String,
}

/// Every `#[no_mangle] pub extern "C" fn` in `ffi/src`, with its body (up to the closing
/// brace at the start of a line, which rustfmt guarantees).
fn exports() -> Vec<Export> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&src).expect("ffi/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("a readable source file");
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("#[no_mangle]\npub extern \"C\" fn ") {
            rest = &rest[at + "#[no_mangle]\npub extern \"C\" fn ".len()..];
            let name = rest[..rest.find('(').expect("a parameter list")].to_owned();
            let end = rest.find("\n}\n").expect("the function ends");
            out.push(Export {
                file: file.clone(),
                name,
                body: rest[..end].to_owned(),
            });
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_exported_function_enters_the_panic_boundary_through_a_macro_that_names_it() {
    let exports = exports();
    // A guard against this check silently matching nothing.
    assert!(exports.len() > 40, "found only {} exports", exports.len());
    let mut outside = Vec::new();
    let mut named_by_hand = Vec::new();
    for e in &exports {
        let alias = ALIASES.iter().any(|(alias, target)| {
            *alias == e.name && e.body.trim_end().ends_with(&format!("{target}(client)"))
        });
        if !NEVER_FAIL.contains(&e.name.as_str())
            && !alias
            && !ENTRIES.iter().any(|entry| e.body.contains(entry))
        {
            outside.push(format!("{} ({})", e.name, e.file));
        }
        if e.body.contains(&format!("\"{}\"", e.name)) {
            named_by_hand.push(format!("{} ({})", e.name, e.file));
        }
    }
    assert!(
        outside.is_empty(),
        "outside the panic boundary (use boundary!, accessor! or crate::panic::free): {outside:?}"
    );
    assert!(
        named_by_hand.is_empty(),
        "function names written as strings (the macros name the function): {named_by_hand:?}"
    );
}

#[test]
fn every_opaque_object_has_a_free_function() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let names: Vec<String> = exports().into_iter().map(|e| e.name).collect();
    let mut missing = Vec::new();
    let mut opaque = 0;
    for entry in std::fs::read_dir(&src).expect("ffi/src is readable") {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(rest) = line.strip_prefix("pub struct provd_") else {
                continue;
            };
            // A `#[repr(C)]` struct is a value C holds; any other is an opaque object
            // behind a pointer, which C must be able to free.
            let attributes = lines[..i]
                .iter()
                .rev()
                .take_while(|l| l.starts_with("#[") || l.starts_with("///"));
            if attributes.clone().any(|l| l.starts_with("#[repr(C)]")) {
                continue;
            }
            opaque += 1;
            let name = format!("provd_{}", rest.split([' ', '{']).next().unwrap());
            let free = format!("{}_free", name);
            if !names.contains(&free) {
                missing.push(free);
            }
        }
    }
    assert!(opaque >= 8, "found only {opaque} opaque objects");
    assert!(missing.is_empty(), "missing free functions: {missing:?}");
}
