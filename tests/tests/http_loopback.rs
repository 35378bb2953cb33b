//! The HTTP front door's loopback TCP listener (`[http] listen`), driven over TCP as an
//! SDK pointed at `http://127.0.0.1:PORT` drives it: every request needs a provd token
//! (none, a foreign key or a revoked token is 401 in the route's own shape), a token acts
//! as its owner (`provd token create --for-user`), a `Host` or `Origin` that is not the
//! listener's own is refused (DNS rebinding, browsers), and a non-loopback address is
//! refused at start.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use provd_tests::{run_provd, Daemon};
use serde_json::{json, Value};

const CONFIG: &str = "[daemon]\ndefault_provider = \"m\"\n[providers.m]\ntype = \"mock\"\ndefault_model = \"mock\"\n[http]\nlisten = \"127.0.0.1:0\"\n";

/// A daemon with the mock provider and a loopback listener on a port the kernel picked,
/// and that port (from its log line).
fn daemon() -> (Daemon, u16) {
    let daemon = Daemon::with_config(CONFIG);
    let line = daemon.wait_for_log("http listening on 127.0.0.1:");
    let port = line
        .split("http listening on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (daemon, port)
}

/// `provd token create --providers m` (and `extra` arguments): the token and its id.
fn token_and_id(daemon: &Daemon, extra: &[&str]) -> (String, String) {
    let mut args = vec!["token", "create", "--providers", "m"];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = run_provd(&args, &daemon.socket);
    assert!(status.success(), "{stderr}");
    let id = stderr
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no id in {stderr:?}"))
        .to_owned();
    (stdout.trim().to_owned(), id)
}

/// A token for `provd token create --providers m` and `extra` arguments.
fn new_token(daemon: &Daemon, extra: &[&str]) -> String {
    token_and_id(daemon, extra).0
}

/// One request over TCP to `127.0.0.1:port` with `headers` (a `Host` of the listener's
/// own unless they set one): its status and JSON body.
async fn call(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> (StatusCode, Value) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect over TCP");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = hyper::Request::builder()
        .method(if body.is_null() { "GET" } else { "POST" })
        .uri(path)
        .header("content-type", "application/json");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", format!("127.0.0.1:{port}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    let response = sender
        .send_request(request.body(Full::new(body)).unwrap())
        .await
        .expect("a response");
    let status = response.status();
    assert!(
        response
            .headers()
            .keys()
            .all(|name| !name.as_str().starts_with("access-control-")),
        "no CORS headers: {:?}",
        response.headers()
    );
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the body")
        .to_bytes();
    task.abort();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

fn chat() -> Value {
    json!({"model": "m/mock", "messages": [{"role": "user", "content": "hello"}]})
}

#[tokio::test]
async fn a_request_without_a_provd_token_is_401_in_the_routes_own_shape() {
    let (_daemon, port) = daemon();
    let (status, body) = call(port, "/v1/chat/completions", &[], &chat()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("token"),
        "{body}"
    );
    // An SDK's placeholder key, accepted on the Unix socket, is no identity here.
    let (status, body) = call(
        port,
        "/v1/messages",
        &[("x-api-key", "sk-placeholder")],
        &json!({"model": "m/mock", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["type"], "error", "Anthropic's error shape: {body}");
}

#[tokio::test]
async fn a_valid_token_is_served_as_its_owner_and_a_revoked_one_is_401() {
    let (daemon, port) = daemon();
    // By default the token is the creating admin's (the test's uid, allowed here).
    let (token, id) = token_and_id(&daemon, &[]);
    let bearer = format!("Bearer {token}");
    let (status, body) = call(
        port,
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        &chat(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "chat.completion", "{body}");
    let (status, body) = call(port, "/v1/models", &[("api-key", &token)], &Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A token for a uid the policy does not allow acts as that uid: refused as it would
    // be on the Unix socket.
    let stranger = new_token(&daemon, &["--for-user", "4242"]);
    let (status, body) = call(
        port,
        "/v1/chat/completions",
        &[("authorization", &format!("Bearer {stranger}"))],
        &chat(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uid 4242"),
        "{body}"
    );

    let (status, list, stderr) = run_provd(&["token", "list"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    assert!(list.contains("owner uid 4242"), "{list}");
    let (status, _, stderr) = run_provd(&["token", "revoke", &id], &daemon.socket);
    assert!(status.success(), "{stderr}");
    let (status, body) = call(
        port,
        "/v1/chat/completions",
        &[("authorization", &bearer)],
        &chat(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn a_host_that_is_not_the_listeners_own_is_refused() {
    let (daemon, port) = daemon();
    let token = new_token(&daemon, &[]);
    let bearer = format!("Bearer {token}");
    let (status, body) = call(
        port,
        "/v1/chat/completions",
        &[
            ("authorization", &bearer),
            ("host", &format!("rebound.example:{port}")),
        ],
        &chat(),
    )
    .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("Host"),
        "{body}"
    );
    // The listener's other names pass.
    let (status, body) = call(
        port,
        "/v1/chat/completions",
        &[
            ("authorization", &bearer),
            ("host", &format!("localhost:{port}")),
        ],
        &chat(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_cross_origin_request_is_403_even_with_a_valid_token() {
    let (daemon, port) = daemon();
    let token = new_token(&daemon, &[]);
    let bearer = format!("Bearer {token}");
    let (status, body) = call(
        port,
        "/v1/chat/completions",
        &[
            ("authorization", &bearer),
            ("origin", "http://evil.example"),
        ],
        &chat(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cross-origin"),
        "{body}"
    );
    let own = format!("http://127.0.0.1:{port}");
    let (status, body) = call(
        port,
        "/v1/chat/completions",
        &[("authorization", &bearer), ("origin", &own)],
        &chat(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[test]
fn a_non_loopback_listen_address_is_refused_at_start_naming_the_key() {
    let daemon = Daemon::builder()
        .config("[providers.m]\ntype = \"mock\"\n[http]\nlisten = \"0.0.0.0:8080\"\n")
        .spawn();
    let (status, log) = daemon.wait();
    assert!(!status.success(), "{log}");
    assert!(log.contains("http.listen"), "{log}");
    assert!(log.contains("loopback"), "{log}");
}
