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
    assert!(
        out.contains("capabilities: streaming, tools, json_object, json_schema, reasoning, images, image_urls"),
        "{out}"
    );
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

/// Runs `provd` with `args` and `stdin`, and no socket from the environment.
fn provd_with_stdin(args: &[&str], stdin: &str) -> (bool, String, String) {
    let out = provd_tests::output_with_stdin(
        std::process::Command::new(provd_bin())
            .args(args)
            .env_remove("PROVD_SOCKET"),
        stdin,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn models_of_a_provider_without_default_model_are_listed() {
    let daemon = Daemon::with_config(
        "[providers.m]\ntype = \"mock\"\n[providers.n]\ntype = \"mock\"\n\
         [providers.n.options]\nmodels = [\"n-small\", \"n-large\"]\n",
    );
    let (status, out, stderr) = run_provd(&["models", "--provider", "m"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    assert!(
        out.contains("mock-1"),
        "the mock's own default model: {out}"
    );
    let (status, out, stderr) = run_provd(&["models", "--provider", "n"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    assert!(out.contains("n-small") && out.contains("n-large"), "{out}");
}

#[test]
fn models_prints_what_it_could_and_exits_non_zero_when_a_provider_failed() {
    let daemon = Daemon::builder()
        .config(
            "[providers.m]\ntype = \"mock\"\n\
             [providers.k]\ntype = \"anthropic\"\ndefault_model = \"x\"\napi_key_env = \"PROVD_UNSET_CLI_KEY\"\n",
        )
        .env_remove("PROVD_UNSET_CLI_KEY")
        .start();
    let (status, out, stderr) = run_provd(&["models"], &daemon.socket);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(out.contains("mock-1"), "{out}");
    // Without a credential store the hint names the daemon's environment.
    assert!(
        stderr.contains("k: unauthenticated: provider 'k' has no API key: set PROVD_UNSET_CLI_KEY in the daemon's environment"),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("provd: error: the models of k could not be listed\n"),
        "{stderr}"
    );
    let (status, out, _) = run_provd(&["models", "--json"], &daemon.socket);
    assert_eq!(status.code(), Some(1));
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["errors"][0]["provider"], "k");
}

#[test]
fn a_failed_generation_prints_nothing_on_stdout_and_status_shows_the_provider_failing() {
    let daemon = Daemon::with_config(
        "[providers.m]\ntype = \"mock\"\ndefault_model = \"m1\"\nretry_attempts = 0\n\
         [providers.m.options]\nfault = \"before_first_chunk\"\nfault_code = \"unavailable\"\n",
    );
    let (status, out, stderr) = run_provd(&["generate", "hi"], &daemon.socket);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(out, "", "stdout");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let (status, out, stderr) = run_provd(&["status"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    assert!(out.contains("provider m [mock]: failing,"), "{out}");
    assert!(out.contains("m/m1 [mock] Failing:"), "{out}");
    // --json says it too, from the daemon's own reading of its counters.
    let (status, out, stderr) = run_provd(&["status", "--json"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["provider_counters"][0]["provider"], "m", "{status}");
    assert_eq!(
        status["provider_counters"][0]["health"], "failing",
        "{status}"
    );
}

#[test]
fn without_a_daemon_the_error_says_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = run_provd(&["status"], &dir.path().join("nobody.sock"));
    assert_eq!(status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("start it with `provd serve`") && stderr.contains("systemctl start provd"),
        "{stderr}"
    );
}

#[test]
fn each_cause_is_said_once() {
    let (ok, _, stderr) = provd_with_stdin(
        &["token", "create", "--providers", "a", "--expires", "30x"],
        "",
    );
    assert!(!ok);
    assert_eq!(
        stderr,
        "provd: error: '30x' is not a duration like 90s, 15m, 12h or 30d\n"
    );
    let (ok, _, stderr) = provd_with_stdin(&["creds", "set", "a"], "");
    assert!(!ok);
    assert_eq!(stderr.matches("no key given").count(), 1, "{stderr}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let (ok, _, stderr) = provd_with_stdin(&["serve", "--config", missing.to_str().unwrap()], "");
    assert!(!ok);
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
    let missing = dir.path().join("missing.env");
    let (ok, _, stderr) = provd_with_stdin(&["creds", "import", missing.to_str().unwrap()], "");
    assert!(!ok);
    assert_eq!(stderr.matches("No such file").count(), 1, "{stderr}");
    assert!(stderr.contains("missing.env"), "names the file: {stderr}");
}

#[test]
fn toml_errors_keep_their_caret_diagram_at_start_up_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[providers.m]\ntype = \"mock\"\nbroken =\n").unwrap();
    let socket = dir.path().join("run").join("provd.sock");
    let (ok, _, stderr) = provd_with_stdin(
        &[
            "serve",
            "--config",
            bad.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ],
        "",
    );
    assert!(!ok);
    assert!(stderr.contains("\n3 | broken =\n"), "{stderr}");
    assert!(stderr.contains("  |         ^"), "{stderr}");

    let daemon = Daemon::with_config("[providers.m]\ntype = \"mock\"\n");
    let config = daemon.dir.path().join("provd.toml");
    std::fs::write(&config, "[providers.m]\ntype = \"mock\"\nbroken =\n").unwrap();
    let (status, _, stderr) = run_provd(&["reload"], &daemon.socket);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("\n3 | broken =\n"), "{stderr}");
}

#[test]
fn an_access_list_error_is_not_called_a_credentials_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("provd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[access]\nallow_groups = [\"provd-no-such-group\"]\n\
             [providers.m]\ntype = \"mock\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let socket = dir.path().join("run").join("provd.sock");
    let (ok, _, stderr) = provd_with_stdin(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
        ],
        "",
    );
    assert!(!ok);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("provd: error:"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(
        error,
        "provd: error: access.allow_groups: 'provd-no-such-group' is not a group on this host"
    );
}

#[test]
fn demo_uses_the_socket_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("demo").join("provd.sock");
    let out = std::process::Command::new(provd_bin())
        .arg("demo")
        .arg("--socket")
        .arg(&socket)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("daemon listening on {}", socket.display())),
        "{stderr}"
    );
}
