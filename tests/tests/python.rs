//! A second language proves the protocol: a Python client written from PROTOCOL.md alone
//! (`tests/python/`) runs its protocol tests against the real daemon.

use std::process::Command;

use provd_tests::Daemon;

/// Whether the suite's Python ([`provd_tests::python`]) has msgpack. scripts/test leaves
/// this test out when it does not; run directly, the test says SKIPPED.
fn python_with_msgpack() -> Result<(), String> {
    let python = provd_tests::python();
    let shown = python.to_string_lossy().into_owned();
    let probe = Command::new(&python)
        .args(["-c", "import msgpack"])
        .output();
    match probe {
        Ok(out) if out.status.success() => Ok(()),
        Ok(_) => Err(format!(
            "{shown} cannot import msgpack (scripts/test makes a virtual environment with \
             tests/python/requirements.txt and sets PROVD_PYTHON to it)"
        )),
        Err(e) => Err(format!("{shown} cannot be run: {e}")),
    }
}

#[test]
fn python_client_written_from_the_protocol_document_passes_its_tests() {
    if let Err(why) = python_with_msgpack() {
        // CI installs msgpack, so there a missing one is a failure, not a skip.
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    let daemon = Daemon::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/test_protocol.py");
    let out = Command::new(provd_tests::python())
        .arg(script)
        .arg("--socket")
        .arg(&daemon.socket)
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the Python protocol tests failed:\n{stdout}\n{stderr}\ndaemon log:\n{}",
        daemon.log()
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.lines().any(|l| l.ends_with(" 0 failed")), "{stdout}");
}
