//! The HTTP front door on its Unix socket, driven as HTTP clients drive it: the OpenAI
//! routes against the faithful OpenAI mock upstream (streamed and whole answers alike,
//! usage, the model list, a client that leaves mid-stream cancelling the upstream), the
//! errors in OpenAI's shape with their statuses (bad JSON, unsupported options, a body
//! over the limit, an unknown provider), and who may call (a token narrowing the scope,
//! other uids refused by the policy and held to their per-uid limit). The official SDKs
//! are in `http_clients.rs`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use provd_tests::apis::openai;
use provd_tests::other_user::{command_as, let_every_user_connect, root_or_skip};
use provd_tests::upstream::{Part, Seen, Upstream};
use provd_tests::Daemon;
use serde_json::{json, Value};

const MODEL: &str = "test-model";

/// The HTTP socket of a test daemon: beside its MessagePack socket.
fn http_socket(daemon: &Daemon) -> PathBuf {
    daemon.socket.with_file_name("http.sock")
}

/// An HTTP/1.1 connection to `socket`; the connection closes when the returned task is
/// aborted or the sender dropped.
async fn connect(
    socket: &Path,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    (sender, task)
}

/// Sends one request on a new connection.
async fn send(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (Response<Incoming>, tokio::task::JoinHandle<()>) {
    let (mut sender, task) = connect(socket).await;
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(body.into())).unwrap())
        .await
        .expect("a response");
    (response, task)
}

/// A request with a JSON body, answered whole: status, headers and the JSON body.
async fn call(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, hyper::HeaderMap, Value) {
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let (response, _task) = send(socket, method, path, headers, body).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("the body").to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (parts.status, parts.headers, value)
}

/// The `data:` payloads of a server-sent event stream.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|event| {
            event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_owned)
        })
        .collect()
}

fn chat(model: &str, stream: bool) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"},
        ],
        "max_completion_tokens": 50,
        "temperature": 0.25,
        "stop": ["END"],
        "stream": stream,
        "stream_options": if stream { json!({"include_usage": true}) } else { Value::Null },
    })
}

/// An OpenAI mock that answers streamed requests with `texts` and whole ones with their
/// concatenation, with the same usage.
async fn openai_upstream(texts: &'static [&'static str]) -> Upstream {
    Upstream::start(move |r| {
        if r.path().ends_with("/models") {
            return openai::models(&["gpt-a", "gpt-b"]);
        }
        if r.json()["stream"] == json!(true) {
            openai::stream_reply(&openai::stream_text(MODEL, texts, "length", (9, 4)), 5)
        } else {
            provd_tests::upstream::Reply::json(
                200,
                &openai::completion(MODEL, &texts.concat(), "length", (9, 4)),
            )
        }
    })
    .await
}

fn daemon_for(upstream: &Upstream, extra_config: &str) -> Daemon {
    let config = format!(
        "{}\n{extra_config}",
        provd_tests::apis::provider_config("openai", &format!("{}/v1", upstream.base_url), 0, "")
    );
    Daemon::builder()
        .config(&config)
        .env("PROVD_TEST_KEY", provd_tests::apis::TEST_KEY)
        .start()
}

#[tokio::test]
async fn streamed_and_whole_chat_completions_give_the_same_text_usage_and_finish_reason() {
    let upstream = openai_upstream(&["Hé", "llo", " wörld"]).await;
    let daemon = daemon_for(&upstream, "");
    let socket = http_socket(&daemon);

    let (response, _task) = send(
        &socket,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sk-placeholder-an-sdk-insists-on")],
        chat("p/test-model", true).to_string(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let data = sse_data(&String::from_utf8_lossy(&body));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{data:?}");
    let events: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    for e in &events {
        assert_eq!(e["object"], "chat.completion.chunk");
        assert_eq!(e["id"], events[0]["id"]);
    }
    assert_eq!(
        events[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let (texts, ends): (Vec<&Value>, Vec<&Value>) = events[1..]
        .iter()
        .partition(|e| e["choices"][0]["delta"]["content"].is_string());
    let streamed: String = texts
        .iter()
        .map(|e| e["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(ends.len(), 2, "{ends:?}");
    assert_eq!(ends[0]["choices"][0]["finish_reason"], "length");
    assert_eq!(ends[0]["choices"][0]["delta"], json!({}));
    assert_eq!(ends[1]["choices"], json!([]));
    let streamed_usage = ends[1]["usage"].clone();

    let (status, _, whole) = call(
        &socket,
        "POST",
        "/v1/chat/completions",
        &[],
        &chat("p/test-model", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], "p/test-model");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    assert_eq!(whole["choices"][0]["finish_reason"], "length");
    assert_eq!(whole["choices"][0]["message"]["content"], streamed.as_str());
    assert_eq!(streamed, "Héllo wörld");
    assert_eq!(whole["usage"], streamed_usage);
    assert_eq!(
        whole["usage"],
        json!({"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13})
    );

    // What reached the upstream is the caller's request, mapped.
    let sent = upstream.requests()[0].json();
    assert_eq!(sent["model"], MODEL);
    assert_eq!(
        sent["messages"],
        json!([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}])
    );
    assert_eq!(sent["temperature"], 0.25);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_ne!(
        upstream.requests()[0].header("authorization"),
        Some("Bearer sk-placeholder-an-sdk-insists-on"),
        "the caller's key never reaches the upstream"
    );
}

#[tokio::test]
async fn a_client_that_closes_mid_stream_cancels_the_upstream_request() {
    let first = openai::chunk_event(
        MODEL,
        json!({"role": "assistant", "content": "first"}),
        None,
    );
    let upstream = Upstream::start(move |_| {
        provd_tests::upstream::Reply::stream(
            "text/event-stream",
            vec![Part::Bytes(first.clone().into_bytes()), Part::Stall],
        )
    })
    .await;
    let daemon = daemon_for(&upstream, "");
    let (response, task) = send(
        &http_socket(&daemon),
        "POST",
        "/v1/chat/completions",
        &[],
        chat("test-model", true).to_string(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut seen = String::new();
    while !seen.contains("\"first\"") {
        let frame = body.frame().await.expect("more body").expect("a frame");
        if let Some(data) = frame.data_ref() {
            seen.push_str(&String::from_utf8_lossy(data));
        }
    }
    drop(body);
    task.abort();
    upstream.wait_for(Seen::ClientClosedEarly(0)).await;
    daemon.wait_for_log("status=499");
    let client = daemon.client().await;
    provd_tests::eventually(100, || async {
        (client.status().await.unwrap().active_streams == 0).then_some(())
    })
    .await
    .expect("the cancelled generation is no longer counted");
}

#[tokio::test]
async fn the_model_list_has_every_providers_models_as_provider_slash_model_and_the_aliases() {
    let upstream = openai_upstream(&["x"]).await;
    let daemon = daemon_for(&upstream, "[aliases]\nfast = [\"p/gpt-b\"]\n");
    let (status, _, list) = call(
        &http_socket(&daemon),
        "GET",
        "/v1/models",
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["object"], "list");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p/gpt-a", "p/gpt-b", "fast"]);
    assert!(list["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["object"] == "model"));
    // Cached: a second listing does not ask the upstream again.
    let listings = || {
        upstream
            .requests()
            .iter()
            .filter(|r| r.path().ends_with("/models"))
            .count()
    };
    let before = listings();
    call(
        &http_socket(&daemon),
        "GET",
        "/v1/models",
        &[],
        &Value::Null,
    )
    .await;
    assert_eq!(listings(), before);
}

#[tokio::test]
async fn an_unknown_provider_is_a_local_404_listing_the_configured_ones() {
    let upstream = openai_upstream(&["x"]).await;
    let daemon = Daemon::builder()
        .config(&format!(
            "[providers.a]\ntype = \"openai\"\nbase_url = \"{0}/v1\"\napi_key_env = \"PROVD_TEST_KEY\"\n\
             [providers.b]\ntype = \"mock\"\n",
            upstream.base_url
        ))
        .env("PROVD_TEST_KEY", provd_tests::apis::TEST_KEY)
        .start();
    let (status, _, body) = call(
        &http_socket(&daemon),
        "POST",
        "/v1/chat/completions",
        &[],
        &chat("nope/some-model", false),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("unknown provider 'nope'"), "{message}");
    assert!(message.contains("configured providers: a, b"), "{message}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn bad_input_is_a_4xx_in_openais_error_shape_naming_what_is_wrong() {
    let upstream = openai_upstream(&["x"]).await;
    let daemon = daemon_for(&upstream, "[http]\nmax_body_bytes = 2048\n");
    let socket = http_socket(&daemon);
    let post = |body: String| {
        let socket = socket.clone();
        async move {
            let (response, _task) = send(&socket, "POST", "/v1/chat/completions", &[], body).await;
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let value: Value = serde_json::from_slice(&bytes).unwrap();
            (status, value)
        }
    };
    let (status, body) = post("{\"model\": \"p/m\", \"messages\": [".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let (status, body) =
        post(json!({"model": "p/m", "messages": [{"role": "user", "content": 7}]}).to_string())
            .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let mut many = chat("p/m", false);
    many["n"] = json!(3);
    let (status, body) = post(many.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["param"], "n");
    assert!(body["error"]["message"].as_str().unwrap().contains("n = 3"));

    let mut big = chat("p/m", false);
    big["messages"][1]["content"] = json!("x".repeat(4096));
    let (status, body) = post(big.to_string()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("http.max_body_bytes"));

    let (status, _, body) = call(&socket, "GET", "/v1/nothing-here", &[], &Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        upstream.requests().is_empty(),
        "nothing bad reached the upstream"
    );

    let (status, _, body) = call(&socket, "GET", "/health", &[], &Value::Null).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
}

#[tokio::test]
async fn a_provd_token_narrows_the_callers_providers_and_an_unknown_one_is_refused() {
    let upstream = openai_upstream(&["x"]).await;
    let daemon = daemon_for(&upstream, "[providers.m]\ntype = \"mock\"\n");
    let client = daemon.client().await;
    let created: provd_client::message::TokenCreated = client
        .request(
            "token_create",
            &provd_client::message::TokenCreateParams {
                providers: vec!["m".into()],
                ttl_seconds: None,
                owner_uid: None,
            },
        )
        .await
        .expect("a token");
    let socket = http_socket(&daemon);
    let bearer = format!("Bearer {}", created.token);
    let (status, _, body) = call(
        &socket,
        "POST",
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        &chat("p/test-model", false),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["type"], "permission_error");
    let (status, _, body) = call(
        &socket,
        "POST",
        "/v1/chat/completions",
        &[("x-api-key", &created.token)],
        &chat("m/mock", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The list shows only what the token may use.
    let (_, _, list) = call(
        &socket,
        "GET",
        "/v1/models",
        &[("api-key", &created.token)],
        &Value::Null,
    )
    .await;
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"].as_str().unwrap().starts_with("m/")),
        "{list}"
    );
    let (status, _, body) = call(
        &socket,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer provd_0000-not-a-token")],
        &chat("m/mock", false),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error");
}

/// Runs curl as `uid` against the daemon's HTTP socket: (status, body).
fn curl_as(uid: u32, socket: &Path, path: &str, body: &Value) -> (u16, Value) {
    let out = command_as(uid, "curl")
        .args(["--silent", "--unix-socket"])
        .arg(socket)
        .args(["--write-out", "\n%{http_code}", "--data-binary"])
        .arg(body.to_string())
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, status) = text.rsplit_once('\n').expect("curl wrote the status");
    (
        status.parse().expect("a status"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn open_http_socket_to_everyone(daemon: &Daemon) {
    use std::os::unix::fs::PermissionsExt;
    let_every_user_connect(daemon);
    std::fs::set_permissions(http_socket(daemon), std::fs::Permissions::from_mode(0o666)).unwrap();
}

#[tokio::test]
async fn other_uids_get_the_msgpack_sockets_access_policy_and_per_uid_limits() {
    if !root_or_skip("other_uids_get_the_msgpack_sockets_access_policy_and_per_uid_limits") {
        return;
    }
    const ALLOWED: u32 = 64_301;
    const STRANGER: u32 = 64_302;
    const ONLY_ONE_ALLOWED_ON_P: u32 = 64_303;
    let first = openai::chunk_event(
        MODEL,
        json!({"role": "assistant", "content": "first"}),
        None,
    );
    let upstream = Upstream::start(move |_| {
        provd_tests::upstream::Reply::stream(
            "text/event-stream",
            vec![Part::Bytes(first.clone().into_bytes()), Part::Stall],
        )
    })
    .await;
    let daemon = daemon_for(
        &upstream,
        &format!(
            "[access]\nallow_uids = [{ALLOWED}, {ONLY_ONE_ALLOWED_ON_P}]\n\
             [access.providers.p]\nuids = [{ALLOWED}]\n\
             [limits]\nmax_connections_per_uid = 1\n"
        ),
    );
    open_http_socket_to_everyone(&daemon);
    let socket = http_socket(&daemon);

    let (status, body) = curl_as(
        STRANGER,
        &socket,
        "/v1/chat/completions",
        &chat("p/x", false),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("uid {STRANGER} may not use provd")),
        "{body}"
    );
    let (status, body) = curl_as(
        ONLY_ONE_ALLOWED_ON_P,
        &socket,
        "/v1/chat/completions",
        &chat("p/x", false),
    );
    assert_eq!(status, 403, "{body}");

    // The allowed uid holds its one connection with a stream...
    let mut holder = tokio::process::Command::from(command_as(ALLOWED, "curl"));
    let mut holder = holder
        .args(["--silent", "--no-buffer", "--unix-socket"])
        .arg(&socket)
        .args(["--data-binary"])
        .arg(chat("p/x", true).to_string())
        .arg("http://localhost/v1/chat/completions")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run curl");
    let mut out = tokio::io::BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("\"first\"") {
        line.clear();
        let n = tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
            .await
            .unwrap();
        assert!(n > 0, "the holding stream ended early");
    }
    // ... so its next connection is over the limit: 503 with Retry-After.
    let (status, body) = curl_as(
        ALLOWED,
        &socket,
        "/v1/chat/completions",
        &chat("p/x", false),
    );
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_connections_per_uid = 1"),
        "{body}"
    );
    holder.kill().await.unwrap();
    upstream.wait_for(Seen::ClientClosedEarly(0)).await;
}

#[tokio::test]
async fn a_running_stream_finishes_through_the_drain_while_the_socket_stops_accepting() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let upstream = Upstream::start(move |_| {
        let first = openai::chunk_event(
            MODEL,
            json!({"role": "assistant", "content": "first"}),
            None,
        );
        let rest = openai::chunk_event(MODEL, json!({"content": " last"}), None)
            + &openai::chunk_event(MODEL, json!({}), Some("stop"))
            + &openai::usage_event(MODEL, 2, 2)
            + "data: [DONE]\n\n";
        provd_tests::upstream::Reply::stream(
            "text/event-stream",
            vec![
                Part::Bytes(first.into_bytes()),
                Part::Wait(gate.clone()),
                Part::Bytes(rest.into_bytes()),
            ],
        )
    })
    .await;
    let daemon = daemon_for(&upstream, "");
    let socket = http_socket(&daemon);
    let (response, _task) = send(
        &socket,
        "POST",
        "/v1/chat/completions",
        &[],
        chat("test-model", true).to_string(),
    )
    .await;
    let mut body = response.into_body();
    let mut seen = String::new();
    while !seen.contains("\"first\"") {
        let frame = body.frame().await.expect("more body").expect("a frame");
        seen.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    daemon.signal(libc::SIGTERM);
    daemon.wait_for_log("HTTP front door closed its socket");
    assert!(
        tokio::net::UnixStream::connect(&socket).await.is_err(),
        "the HTTP socket is gone once the drain begins"
    );
    release.notify_one();
    let rest = body.collect().await.expect("the rest").to_bytes();
    seen.push_str(&String::from_utf8_lossy(&rest));
    assert!(seen.contains("\" last\""), "{seen}");
    assert!(seen.ends_with("data: [DONE]\n\n"), "{seen}");
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed_by_their_timers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = openai_upstream(&["x"]).await;
    let daemon = daemon_for(
        &upstream,
        "[http]\nheader_read_timeout_seconds = 1\nkeep_alive_idle_seconds = 2\n",
    );
    let socket = http_socket(&daemon);
    // Half a request line, then nothing.
    let mut slow = tokio::net::UnixStream::connect(&socket).await.unwrap();
    slow.write_all(b"GET /hea").await.unwrap();
    let mut buf = Vec::new();
    slow.read_to_end(&mut buf).await.unwrap();
    assert!(buf.is_empty(), "{}", String::from_utf8_lossy(&buf));
    daemon.wait_for_log("header_read_timeout_seconds");

    // A keep-alive connection serves several requests, then closes when left idle.
    let (mut sender, task) = connect(&socket).await;
    for _ in 0..2 {
        let request = hyper::Request::get("/health")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.expect("served");
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
    }
    task.await.unwrap();
    daemon.wait_for_log("idle for http.keep_alive_idle_seconds");
}

#[tokio::test]
async fn an_error_before_any_text_has_its_status_and_one_after_is_an_in_stream_event_without_done()
{
    let upstream = Upstream::start(move |r| {
        let prompt = r.json()["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if prompt == "early" {
            return openai::error(503, "engine overloaded", "server_error", None)
                .header("retry-after", "4");
        }
        let first = openai::chunk_event(
            MODEL,
            json!({"role": "assistant", "content": "first"}),
            None,
        );
        provd_tests::upstream::Reply::stream(
            "text/event-stream",
            vec![
                Part::Bytes(first.into_bytes()),
                openai::error_event("the model broke", "server_error"),
            ],
        )
    })
    .await;
    let daemon = daemon_for(&upstream, "");
    let socket = http_socket(&daemon);
    let ask = |prompt: &str| {
        json!({"model": "p/test-model", "stream": true,
            "messages": [{"role": "user", "content": prompt}]})
        .to_string()
    };
    let (response, _task) = send(&socket, "POST", "/v1/chat/completions", &[], ask("early")).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "4");
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    let (response, _task) = send(&socket, "POST", "/v1/chat/completions", &[], ask("late")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let data = sse_data(&String::from_utf8_lossy(&body));
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_error", "{data:?}");
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the model broke"),
        "{last}"
    );
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    assert!(data[1].contains("\"first\""), "{data:?}");
}

#[tokio::test]
async fn sockets_systemd_passes_are_told_apart_and_the_http_one_is_served_and_left_in_place() {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let msgpack = std::os::unix::net::UnixListener::bind(dir.path().join("provd.sock")).unwrap();
    // Not named http.sock: FileDescriptorName=http tells it apart (a unit of its own).
    let http_path = dir.path().join("front.sock");
    let http = std::os::unix::net::UnixListener::bind(&http_path).unwrap();
    let config = dir.path().join("provd.toml");
    std::fs::write(&config, "[providers.mock]\ntype = \"mock\"\n").unwrap();
    let (a, b) = (msgpack.as_raw_fd(), http.as_raw_fd());
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
        .arg(provd_tests::provd_bin())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "provd.socket:http")
        .env("PROVD_LOG", "provd=debug")
        .env_remove("PROVD_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls (fcntl, dup2) run; the
    // two descriptors are first copied above 4 (close-on-exec) so that neither dup2
    // overwrites the other.
    unsafe {
        cmd.pre_exec(move || {
            let (a, b) = (
                libc::fcntl(a, libc::F_DUPFD_CLOEXEC, 10),
                libc::fcntl(b, libc::F_DUPFD_CLOEXEC, 10),
            );
            if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    while !log.contains("HTTP front door serving") {
        let line = rx
            .recv_timeout(provd_tests::READY_TIMEOUT)
            .unwrap_or_else(|_| panic!("provd never served HTTP; log:\n{log}"));
        log.push_str(&line);
        log.push('\n');
    }
    assert!(
        log.contains("adopted the HTTP socket systemd passed"),
        "{log}"
    );
    let (status, _, body) = call(&http_path, "GET", "/health", &[], &Value::Null).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, _, body) = call(
        &http_path,
        "POST",
        "/v1/chat/completions",
        &[],
        &chat("mock/mock-1", false),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // SAFETY: kill has no memory preconditions; the pid is our own child's.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    assert!(child.wait().unwrap().success());
    assert!(
        std::fs::symlink_metadata(&http_path)
            .unwrap()
            .file_type()
            .is_socket(),
        "the HTTP socket is systemd's and stays"
    );
}

/// The NDJSON objects of a body.
fn ndjson(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A request answered in full: status and body bytes.
async fn answer(socket: &Path, method: &str, path: &str, body: &Value) -> (StatusCode, Bytes) {
    let (response, _task) = send(socket, method, path, &[], body.to_string()).await;
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn an_anthropic_client_gets_the_messages_api_from_an_openai_provider() {
    let upstream = openai_upstream(&["Hé", "llo", " wörld"]).await;
    let daemon = daemon_for(&upstream, "");
    let socket = http_socket(&daemon);
    let request = |stream: bool| {
        json!({
            "model": "p/test-model",
            "max_tokens": 50,
            "system": "be brief",
            "messages": [{"role": "user", "content": "hello"}],
            "stream": stream,
        })
    };

    let (status, body) = answer(&socket, "POST", "/v1/messages", &request(true)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body);
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name.to_owned(), serde_json::from_str(data).unwrap())
        })
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "ping")
        .collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{names:?}"
    );
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "Héllo wörld");
    let delta = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "max_tokens");
    assert_eq!(delta["usage"]["output_tokens"], 4);
    assert_eq!(delta["usage"]["input_tokens"], 9);

    let (status, body) = answer(&socket, "POST", "/v1/messages", &request(false)).await;
    assert_eq!(status, StatusCode::OK);
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(message["type"], "message");
    assert_eq!(message["content"][0]["text"], "Héllo wörld");
    assert_eq!(message["stop_reason"], "max_tokens");
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 9, "output_tokens": 4})
    );

    // Errors in Anthropic's shape: a missing field, a malformed body.
    let mut missing = request(false);
    missing.as_object_mut().unwrap().remove("max_tokens");
    let (status, body) = answer(&socket, "POST", "/v1/messages", &missing).await;
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens"),
        "{error}"
    );
    let (response, _task) = send(&socket, "POST", "/v1/messages", &[], "{not json").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn an_ollama_client_gets_chat_generate_and_tags_in_ollamas_shapes() {
    let upstream = openai_upstream(&["Hé", "llo", " wörld"]).await;
    let daemon = daemon_for(&upstream, "");
    let socket = http_socket(&daemon);

    // /api/chat streams NDJSON by default.
    let chat = json!({"model": "p/test-model", "messages": [{"role": "user", "content": "hello"}]});
    let (status, body) = answer(&socket, "POST", "/api/chat", &chat).await;
    assert_eq!(status, StatusCode::OK);
    let lines = ndjson(&body);
    let (last, pieces) = lines.split_last().unwrap();
    let streamed: String = pieces
        .iter()
        .map(|l| {
            assert_eq!(l["done"], false);
            l["message"]["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(streamed, "Héllo wörld");
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "length");
    assert_eq!(
        (
            last["prompt_eval_count"].as_u64(),
            last["eval_count"].as_u64()
        ),
        (Some(9), Some(4))
    );

    // /api/generate, whole.
    let generate = json!({"model": "p/test-model", "prompt": "hello", "stream": false});
    let (status, body) = answer(&socket, "POST", "/api/generate", &generate).await;
    assert_eq!(status, StatusCode::OK);
    let whole: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(whole["response"], "Héllo wörld");
    assert_eq!(whole["done"], true);

    // /api/tags: the provider's models as provider/model.
    let (status, body) = answer(&socket, "GET", "/api/tags", &Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let tags: Value = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"p/gpt-a") && names.contains(&"p/gpt-b"),
        "{names:?}"
    );

    // A refusal is Ollama's error shape, naming what cannot be honoured.
    let (status, body) = answer(
        &socket,
        "POST",
        "/api/chat",
        &json!({"model": "p/test-model", "messages": [{"role": "user", "content": "q", "images": ["aGk="]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("images"),
        "{error}"
    );
}

#[tokio::test]
async fn the_original_generate_route_answers_in_the_designs_shape_whole_and_streamed() {
    let upstream = openai_upstream(&["Hé", "llo", " wörld"]).await;
    let daemon = daemon_for(&upstream, "");
    let socket = http_socket(&daemon);
    let request = |stream: bool| json!({"provider_id": "p", "model_id": "test-model", "prompt": "hello", "system_prompt": "be brief", "stream": stream});

    let (status, body) = answer(&socket, "POST", "/generate", &request(false)).await;
    assert_eq!(status, StatusCode::OK);
    let whole: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(whole["success"], true);
    assert_eq!(whole["data"]["response"], "Héllo wörld");
    assert_eq!(
        whole["data"]["tokens"],
        json!({"prompt": 9, "completion": 4, "total": 13})
    );

    let (status, body) = answer(&socket, "POST", "/generate", &request(true)).await;
    assert_eq!(status, StatusCode::OK);
    let lines = ndjson(&body);
    let (last, pieces) = lines.split_last().unwrap();
    let streamed: String = pieces
        .iter()
        .map(|l| l["data"]["response"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, "Héllo wörld");
    assert_eq!(last["data"]["done"], true);
    assert_eq!(last["data"]["tokens"]["completion"], 4);

    let (status, body) = answer(
        &socket,
        "POST",
        "/generate",
        &json!({"provider_id": "nope", "prompt": "q"}),
    )
    .await;
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(error["success"], false);
}
