//! `scripts/test`, the README's test command, checked cheaply: it parses, and its tool
//! probe (`scripts/test --skips`, which installs and runs nothing) leaves out by name the
//! tests whose tool is missing, and fails under CI=true, where nothing may be left out.
//! The suite never runs itself from here.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use provd_tests::workspace;

fn script() -> PathBuf {
    workspace().join("scripts/test")
}

/// A directory of links to everything on `$PATH` except the commands in `absent`: the
/// PATH of a machine without them.
fn path_without(absent: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::var_os("PATH").expect("PATH");
    for entry in std::env::split_paths(&path) {
        let Ok(list) = std::fs::read_dir(&entry) else {
            continue;
        };
        for file in list.flatten() {
            let name = file.file_name();
            let link = dir.path().join(&name);
            if absent.iter().any(|a| name == **a) || link.exists() {
                continue;
            }
            // The first on PATH wins, as for the shell.
            let _ = std::os::unix::fs::symlink(file.path(), &link);
        }
    }
    dir
}

/// `scripts/test --skips` with this PATH, CI and PROVD_REAL_TESTS unset unless given.
fn skips(path: &Path, ci: bool) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg("--skips")
        .env("PATH", path)
        .env_remove("CI")
        .env_remove("PROVD_REAL_TESTS")
        .env_remove("PROVD_PYTHON");
    if ci {
        cmd.env("CI", "true");
    }
    cmd.output().expect("run scripts/test --skips")
}

/// The test names of the script's tool table.
fn table_tests() -> BTreeSet<String> {
    let text = std::fs::read_to_string(script()).unwrap();
    let start = text.find("TOOL_TESTS='").expect("the tool table") + "TOOL_TESTS='".len();
    let end = start + text[start..].find('\'').expect("the table ends");
    text[start..end]
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(str::to_owned)
        .collect()
}

#[test]
fn scripts_test_parses() {
    let out = Command::new("bash")
        .arg("-n")
        .arg(script())
        .output()
        .expect("run bash -n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn without_go_the_go_caller_is_left_out_and_named() {
    let path = path_without(&["go"]);
    let out = skips(path.path(), false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("go_cgo_caller_streams_a_generation: go is not installed"),
        "{stderr}"
    );
    assert!(
        stdout.contains("test(=go_cgo_caller_streams_a_generation)"),
        "the filter does not leave it out: {stdout}"
    );
    // The real services are left out unless asked for, whatever the tools.
    assert!(stdout.contains("test(/^real_/)"), "{stdout}");
}

#[test]
fn with_every_tool_present_only_the_real_services_are_left_out() {
    // The full PATH of this machine, less nothing, but with stand-ins for every tool, so
    // the outcome does not depend on what this machine has installed.
    let path = path_without(&[]);
    for tool in [
        "cc",
        "c++",
        "go",
        "valgrind",
        "pkg-config",
        "systemd-analyze",
    ] {
        let link = path.path().join(tool);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/bin/true", &link).unwrap();
    }
    let python = path.path().join("python3");
    if !python.exists() {
        return println!("SKIPPED: no python3 here; the probe's venv check needs one");
    }
    let out = skips(path.path(), false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let venv_ok = Command::new(&python)
        .args(["-c", "import ensurepip, venv"])
        .status()
        .is_ok_and(|s| s.success());
    if venv_ok {
        assert_eq!(stdout.trim(), "filter: not (test(/^real_/))", "{stdout}");
    }
}

#[test]
fn under_ci_a_missing_tool_fails_instead_of_leaving_tests_out() {
    let path = path_without(&["go"]);
    let out = skips(path.path(), true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("under CI=true every tool must be installed"),
        "{stderr}"
    );
}

#[test]
fn every_test_the_tool_table_names_exists_and_every_ffi_test_is_in_it() {
    let tests = table_tests();
    let mut defined = BTreeSet::new();
    let mut ffi = BTreeSet::new();
    // Tests that need a tool live in tests/tests and, for a unit test that runs an
    // outside program (the anthropic SDK check), in the daemon's sources.
    let mut files = Vec::new();
    let mut dirs = vec![
        workspace().join("tests/tests"),
        workspace().join("daemon/src"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.trim_start();
            let Some(rest) = line.strip_prefix("fn ").or(line.strip_prefix("async fn ")) else {
                continue;
            };
            let name = rest.split('(').next().unwrap().to_owned();
            let above = if i > 0 { lines[i - 1].trim_start() } else { "" };
            let is_test = above.starts_with("#[") && above.contains("test");
            if is_test && path.ends_with("ffi.rs") {
                ffi.insert(name.clone());
            }
            defined.insert(name);
        }
    }
    for name in &tests {
        assert!(
            defined.contains(name),
            "scripts/test names {name}, which no test defines"
        );
    }
    for name in &ffi {
        assert!(
            tests.contains(name),
            "{name} (tests/tests/ffi.rs) needs a tool: add it to scripts/test's table"
        );
    }
}
