//! Log injection (issue 11, part 8): strings a client chose (its hello's name, a model
//! name) and upstream errors that quote them are logged escaped, so a newline cannot
//! start a log line of the client's making and an ESC byte cannot reach the terminal.

use provd_client::message::{Hello, PROTOCOL_VERSION};
use provd_client::GenerateRequest;
use provd_tests::apis::openai;
use provd_tests::raw::{Frame, RawConn};
use provd_tests::upstream::Upstream;
use provd_tests::Daemon;

/// What a forged line would begin with.
const FORGED: &str = "2026-01-01T00:00:00.000000Z ERROR forged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_names_and_model_names_cannot_forge_a_log_line_or_a_colour() {
    // An upstream that quotes the requested model in a retryable error, as many do.
    let up = Upstream::start(|r| {
        let model = r.json()["model"].as_str().unwrap_or_default().to_owned();
        openai::error(
            503,
            &format!("The model `{model}` is overloaded"),
            "server_error",
            None,
        )
    })
    .await;
    let daemon = Daemon::with_config(&format!(
        "[daemon]\nkeepalive_interval_ms = 0\ndefault_provider = \"up\"\n\
         [providers.up]\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\ndefault_model = \"m\"\nretry_attempts = 1\n",
        up.base_url
    ));

    let mut conn = RawConn::connect(&daemon.socket);
    conn.request(
        0,
        "hello",
        &Hello {
            protocol_version: PROTOCOL_VERSION,
            client: format!("x\n{FORGED}\x1b[31m!"),
            token: None,
        },
    );
    assert!(matches!(conn.read_frame(), Some(Frame::Result(0, _))));
    let mut request = GenerateRequest::prompt("hi");
    request.model = Some(format!("m\x1b[2J\r\n{FORGED} by the model name"));
    conn.request(1, "generate", &request);
    assert!(matches!(conn.read_reply(1).0, Frame::Error(1, _)));

    let client_line = daemon.wait_for_log("client connected");
    let model_line = daemon.wait_for_log("by the model name");
    let retry_line = daemon.wait_for_log("retryable failure before the first chunk");
    println!("{client_line}\n{model_line}\n{retry_line}");
    for line in daemon.log().lines() {
        assert!(!line.starts_with(FORGED), "a forged line: {line}");
    }
    // Escaped, not removed: the ESC shows as text (the harness strips raw escape
    // sequences, so a raw one would not).
    assert!(
        client_line.contains(&format!("client=x\\n{FORGED}\\u{{1b}}[31m!")),
        "{client_line}"
    );
    assert!(retry_line.contains("by the model name"), "{retry_line}");
    assert!(model_line.contains("\\r\\n"), "{model_line}");
}
