//! A second language proves the protocol: a Python client written from PROTOCOL.md alone
//! (`tests/python/`) runs its protocol tests against the real daemon.

use std::process::Command;

use provd_tests::Daemon;

fn python_with_msgpack() -> Result<(), String> {
    let probe = Command::new("python3")
        .args(["-c", "import msgpack"])
        .output();
    match probe {
        Ok(out) if out.status.success() => Ok(()),
        Ok(_) => Err("the python3 package 'msgpack' is not installed (pip install msgpack)".into()),
        Err(e) => Err(format!("python3 cannot be run: {e}")),
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
    let out = Command::new("python3")
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
