//! The `provd` client commands against a running daemon, as a user types them.

use provd_tests::{provd_bin, run_provd, Daemon};

#[test]
fn generate_streams_text_to_stdout_and_usage_to_stderr() {
    let daemon = Daemon::start();
    let (status, stdout, stderr) =
        run_provd(&["generate", "--system", "short", "say hi"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    assert!(stdout.starts_with("provd streamed this answer"), "{stdout}");
    assert!(stderr.contains("[mock/mock-1] 3 prompt + "), "{stderr}");
    assert!(stderr.contains("finish: stop"), "{stderr}");
}

#[test]
fn generate_json_prints_one_event_per_line() {
    let daemon = Daemon::start();
    let (status, stdout, stderr) = run_provd(
        &["generate", "--json", "--max-tokens", "3", "hi"],
        &daemon.socket,
    );
    assert!(status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4);
    for (i, e) in events[..3].iter().enumerate() {
        assert_eq!(e["event"], "chunk");
        assert_eq!(e["index"], i);
    }
    assert_eq!(events[3]["event"], "done");
    assert_eq!(events[3]["result"]["finish_reason"], "length");
    assert_eq!(events[3]["result"]["usage"]["completion_tokens"], 3);
}

#[test]
fn providers_models_status_and_ping_report_the_daemon() {
    let daemon = Daemon::start();
    let (ok, out, _) = run_provd(&["providers"], &daemon.socket);
    assert!(ok.success());
    assert!(out.contains("mock") && out.contains("(default)"), "{out}");
    let (ok, out, _) = run_provd(&["models"], &daemon.socket);
    assert!(ok.success());
    assert!(out.contains("mock-1"), "{out}");
    let (ok, out, _) = run_provd(&["status", "--json"], &daemon.socket);
    assert!(ok.success());
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["pid"], daemon.pid());
    let (ok, out, _) = run_provd(&["ping"], &daemon.socket);
    assert!(ok.success());
    assert!(out.starts_with("pong from provd"), "{out}");
}

#[test]
fn errors_are_one_line_on_stderr_with_a_failing_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) = run_provd(&["generate", "hi"], &dir.path().join("nobody.sock"));
    assert_eq!(status.code(), Some(1));
    assert!(stdout.is_empty());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("provd: error: cannot connect to provd at"),
        "{stderr}"
    );

    let daemon = Daemon::start();
    let (status, _, stderr) = run_provd(&["generate", "--provider", "nope", "hi"], &daemon.socket);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("not_found: no provider 'nope' is configured"),
        "{stderr}"
    );
}

#[test]
fn demo_streams_a_generation_through_a_temporary_daemon() {
    let out = std::process::Command::new(provd_bin())
        .arg("demo")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.starts_with("provd streamed this answer"), "{stdout}");
    assert!(stderr.contains("daemon listening on"), "{stderr}");
    assert!(stderr.contains("[mock/mock-1]"), "{stderr}");
    assert!(stderr.contains("daemon stopped"), "{stderr}");
}
