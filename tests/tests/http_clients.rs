//! The HTTP front door proven with clients no one here wrote, against a live daemon whose
//! provider is the faithful OpenAI mock upstream: the official `openai` and `anthropic`
//! Python SDKs on `/v1/chat/completions` and `/v1/messages`, over the Unix socket and over
//! loopback TCP with a token, and the official `ollama` Python client on `/api/*`
//! (answers streamed and whole, usage, errors, cancel by closing the stream), curl on
//! every route, and Go's
//! standard `net/http` streaming a chat completion and reading its server-sent events.
//!
//! A missing tool (the Python packages from `tests/python/requirements.txt`, curl, go)
//! says SKIPPED, except in CI, which installs them all; scripts/test names the tests it
//! leaves out.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use provd_tests::apis::openai;
use provd_tests::upstream::{Seen, Upstream};
use provd_tests::Daemon;
use serde_json::{json, Value};

const MODEL: &str = "test-model";

/// The HTTP socket of a test daemon: beside its MessagePack socket.
fn http_socket(daemon: &Daemon) -> PathBuf {
    daemon.socket.with_file_name("http.sock")
}

async fn upstream() -> Upstream {
    openai::scripted_upstream(MODEL).await
}

/// How a script reaches the daemon.
#[derive(Clone, Copy)]
enum Via {
    /// The HTTP front door's Unix socket: no key, the kernel says who is calling.
    UnixSocket,
    /// The loopback TCP listener, with a provd token scoped to provider `p`, handed to
    /// the SDK in its own environment variables (`OPENAI_BASE_URL`/`OPENAI_API_KEY`,
    /// `ANTHROPIC_BASE_URL`/`ANTHROPIC_API_KEY`) as the README tells a user to.
    Loopback,
}

/// A daemon whose provider `p` is `upstream`, beside a mock one, with a loopback
/// listener when `via` asks for one. It has no default provider, so a model `nope/x`
/// names an unknown provider rather than a model of the default one.
fn daemon_for(upstream: &Upstream, via: Via) -> Daemon {
    let listen = match via {
        Via::UnixSocket => "",
        Via::Loopback => "[http]\nlisten = \"127.0.0.1:0\"\n",
    };
    Daemon::builder()
        .config(&format!(
            "[daemon]\nkeepalive_interval_ms = 0\n\n\
             [providers.p]\ntype = \"openai\"\nbase_url = \"{}/v1\"\ndefault_model = \"{MODEL}\"\n\
             api_key_env = \"PROVD_TEST_KEY\"\nretry_attempts = 0\ntimeout_seconds = 30\n\n\
             [providers.m]\ntype = \"mock\"\n{listen}",
            upstream.base_url
        ))
        .env("PROVD_TEST_KEY", provd_tests::apis::TEST_KEY)
        .start()
}

/// The loopback listener's port (from its log line) and a new provd token for provider
/// `p`, owned by the caller.
fn loopback_and_token(daemon: &Daemon) -> (u16, String) {
    const LISTENING: &str = "http listening on 127.0.0.1:";
    let line = daemon.wait_for_log(LISTENING);
    let port = line
        .split(LISTENING)
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let (status, stdout, stderr) =
        provd_tests::run_provd(&["token", "create", "--providers", "p"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    (port, stdout.trim().to_owned())
}

/// Runs `tests/python/{script}` against a daemon on the mock upstream, reached `via` the
/// Unix socket or loopback TCP, answering its cancel test once the upstream saw the
/// stream closed, and asserts all `tests` passed.
async fn run_python_script(module: &str, script: &str, tests: usize, via: Via) {
    let python = provd_tests::python();
    if !provd_tests::have_python_package(module) {
        return;
    }
    let upstream = upstream().await;
    let daemon = daemon_for(&upstream, via);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let mut command = tokio::process::Command::new(&python);
    command.arg(path).args(["--model", "p/test-model"]);
    // What the SDKs read from their environment is the test's to set, not the host's.
    for name in provd_tests::SDK_ENV_VARS {
        command.env_remove(name);
    }
    match via {
        Via::UnixSocket => {
            command.arg("--socket").arg(http_socket(&daemon));
        }
        Via::Loopback => {
            let (port, token) = loopback_and_token(&daemon);
            command
                .env("OPENAI_BASE_URL", format!("http://127.0.0.1:{port}/v1"))
                .env("OPENAI_API_KEY", &token)
                .env("ANTHROPIC_BASE_URL", format!("http://127.0.0.1:{port}"))
                .env("ANTHROPIC_API_KEY", &token);
        }
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run python");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut cancelled = false;
    loop {
        let mut line = String::new();
        let n = tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
            .await
            .unwrap();
        if n == 0 {
            break;
        }
        print!("{line}");
        if line.trim() == "CLOSED cancel_by_closing_the_stream" {
            // The held request is the last one the upstream received.
            let held = upstream.requests().len() - 1;
            cancelled = true;
            upstream.wait_for(Seen::ClientClosedEarly(held)).await;
            tokio::io::AsyncWriteExt::write_all(&mut stdin, b"upstream closed\n")
                .await
                .unwrap();
        }
        lines.push(line);
    }
    let output = child.wait_with_output().await.unwrap();
    let stdout = lines.concat();
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}\ndaemon log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        daemon.log()
    );
    assert!(
        cancelled,
        "the cancel test never closed its stream: {stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let summary = format!("{tests} passed, 0 failed");
    assert!(stdout.lines().any(|l| l.trim() == summary), "{stdout}");
}

#[tokio::test]
async fn the_official_openai_sdk_streams_answers_errors_and_cancels_over_the_unix_socket() {
    run_python_script("openai", "openai_sdk.py", 5, Via::UnixSocket).await;
}

#[tokio::test]
async fn the_official_openai_sdk_configured_by_its_environment_uses_loopback_tcp_with_a_token() {
    run_python_script("openai", "openai_sdk.py", 5, Via::Loopback).await;
}

#[tokio::test]
async fn the_official_anthropic_sdk_configured_by_its_environment_uses_loopback_tcp_with_a_token() {
    run_python_script("anthropic", "anthropic_live.py", 5, Via::Loopback).await;
}

#[tokio::test]
async fn the_official_anthropic_sdk_streams_answers_errors_and_cancels_on_the_live_messages_route()
{
    run_python_script("anthropic", "anthropic_live.py", 5, Via::UnixSocket).await;
}

#[tokio::test]
async fn the_official_ollama_client_chats_generates_lists_and_cancels_on_the_live_routes() {
    run_python_script("ollama", "ollama_live.py", 6, Via::UnixSocket).await;
}

/// One curl call over the socket: (status, body). Async: the mock upstream answers on
/// this test's runtime.
async fn curl(socket: &Path, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["--silent", "--show-error", "--unix-socket"])
        .arg(socket)
        .args(["--request", method, "--write-out", "\n%{http_code}"]);
    if let Some(body) = body {
        cmd.args([
            "--header",
            "content-type: application/json",
            "--data-binary",
        ])
        .arg(body.to_string());
    }
    let out = cmd
        .arg(format!("http://localhost{path}"))
        .output()
        .await
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {method} {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("curl wrote the status");
    (status.parse().expect("a status"), body.to_owned())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn curl_over_the_unix_socket_gets_an_answer_from_every_route() {
    if !provd_tests::have("curl", "curl".as_ref(), &["--version"]) {
        return;
    }
    let upstream = upstream().await;
    let daemon = daemon_for(&upstream, Via::UnixSocket);
    let socket = http_socket(&daemon);
    let hi = json!([{"role": "user", "content": "hi"}]);
    let model = "p/test-model";

    let (status, body) = curl(&socket, "GET", "/health", None).await;
    assert_eq!(
        (status, json_of(&body)["status"].clone()),
        (200, json!("ok"))
    );

    let (status, body) = curl(&socket, "GET", "/v1/models", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "p/gpt-a"));

    let (status, body) = curl(
        &socket,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": model, "messages": hi})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json_of(&body)["choices"][0]["message"]["content"],
        "Hello, SDK"
    );

    let (status, body) = curl(
        &socket,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": model, "messages": hi, "stream": true})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    let (status, body) = curl(
        &socket,
        "POST",
        "/v1/messages",
        Some(json!({"model": model, "max_tokens": 20, "messages": hi})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["content"][0]["text"], "Hello, SDK");

    let (status, body) = curl(
        &socket,
        "POST",
        "/api/chat",
        Some(json!({"model": model, "messages": hi, "stream": false})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["message"]["content"], "Hello, SDK");

    let (status, body) = curl(
        &socket,
        "POST",
        "/api/generate",
        Some(json!({"model": model, "prompt": "hi", "stream": false})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["response"], "Hello, SDK");

    let (status, body) = curl(&socket, "GET", "/api/tags", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "p/gpt-a"));

    let (status, body) = curl(
        &socket,
        "POST",
        "/generate",
        Some(json!({"provider_id": "p", "model_id": MODEL, "prompt": "hi"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json_of(&body)["data"]["response"], "Hello, SDK");

    // An unknown route is a 404, not a hang or a reset.
    let (status, _) = curl(&socket, "GET", "/v2/nothing", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_go_net_http_client_streams_a_chat_completion_and_reads_its_server_sent_events() {
    if !provd_tests::have("go", "go".as_ref(), &["version"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Caches under target/ keep reruns fast; nothing is fetched (the program has no
    // dependencies beyond the standard library).
    let go_home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("go");
    let exe = tmp.path().join("http-client");
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg(".")
        .current_dir(provd_tests::workspace().join("tests/go/http_client"))
        .env("GOCACHE", go_home.join("cache"))
        .env("GOPATH", go_home.join("path"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let upstream = upstream().await;
    let daemon = daemon_for(&upstream, Via::UnixSocket);
    let out = tokio::process::Command::new(&exe)
        .arg(http_socket(&daemon))
        .arg("p/test-model")
        .output()
        .await
        .expect("run the Go client");
    assert!(
        out.status.success(),
        "the Go client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut result = json_of(String::from_utf8_lossy(&out.stdout).trim());
    // At least the role chunk, one text and the usage; how the text is split is the
    // upstream's and the daemon's business.
    let chunks = result["chunks"].take().as_u64().unwrap();
    assert!(chunks >= 3, "{chunks} chunks");
    assert_eq!(
        result,
        json!({
            "status": 200,
            "content_type": "text/event-stream",
            "text": "Hello, SDK",
            "finish_reason": "stop",
            "prompt_tokens": 5,
            "completion_tokens": 3,
            "chunks": null,
            "done": true,
        })
    );
}
