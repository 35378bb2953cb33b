//! The `provd` binary's argument surface. (Also makes cargo build the binary whenever the
//! workspace's tests are built, which the end-to-end harness in `tests/` relies on.)

use std::process::Command;

fn provd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_provd"))
        .args(args)
        .output()
        .expect("run provd")
}

#[test]
fn version_names_the_release() {
    let out = provd(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("provd {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_every_command() {
    let out = provd(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "serve",
        "generate",
        "models",
        "providers",
        "status",
        "ping",
        "demo",
        "stop",
        "reload",
        "creds",
        "key",
        "token",
        "shutdown",
    ] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn unknown_flags_fail_with_usage_status() {
    let out = provd(&["generate", "--no-such-flag", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
