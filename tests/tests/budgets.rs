//! Budgets and rate limits (`[limits.uid/group/token]`) on the built-in mock, whose usage
//! is deterministic: `numbered(n, _)` costs 3 prompt tokens ("count for me") and one
//! completion token per chunk. The tests run as root, so most budgets name uid 0: a
//! budget binds whoever it names, admins included. The clock is the real one here; the
//! day and month rollovers and the window's arithmetic are the quota module's unit tests.

use std::path::Path;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use provd_client::{Client, ErrorCode, GenerateEvent};
use provd_tests::other_user::{let_every_user_connect, root_or_skip, Peer};
use provd_tests::{generation_outcome, numbered, numbered_text, run_provd, Daemon};
use serde_json::{json, Value};

/// A configuration with the mock provider, the state directory `state` (so that a second
/// daemon can find the first one's ledger) and `extra` tables.
fn config(state: &Path, extra: &str) -> String {
    format!(
        "[daemon]\nstate_dir = \"{}\"\nkeepalive_interval_ms = 0\n[providers.mock]\ntype = \"mock\"\n{extra}\n",
        state.display()
    )
}

fn daemon(state: &Path, extra: &str) -> Daemon {
    Daemon::with_config(&config(state, extra))
}

/// The tokens `numbered(chunks, _)` costs.
fn cost(chunks: u32) -> u64 {
    3 + u64::from(chunks)
}

/// Asserts that `request` is refused with `code` and returns the error.
async fn refused(
    client: &Client,
    request: provd_client::GenerateRequest,
    code: ErrorCode,
) -> provd_client::WireError {
    let (text, end) = generation_outcome(client, request).await;
    let e = end.expect_err("refused");
    assert_eq!(e.code, code, "{e:?}");
    assert!(text.is_empty(), "nothing was generated: {text:?}");
    e
}

/// Root's figures in `status` (the tests run their clients as root).
async fn root_figures(client: &Client) -> provd_client::message::UserUsage {
    let status = client.status().await.unwrap();
    status
        .users
        .into_iter()
        .find(|u| u.uid == 0)
        .expect("uid 0 in status")
}

#[tokio::test]
async fn a_spent_daily_budget_refuses_the_next_request_naming_it_while_the_stream_that_crossed_it_finished(
) {
    let state = tempfile::tempdir().unwrap();
    let daemon = daemon(state.path(), "[limits.uid.0]\ntokens_per_day = 10\n");
    let client = daemon.client().await;
    // Admitted with nothing used; it crosses the budget and finishes all the same.
    let (text, end) = generation_outcome(&client, numbered(20, 0)).await;
    assert_eq!(text.concat(), numbered_text(20));
    assert_eq!(end.expect("it finishes").usage.completion_tokens, 20);
    let e = refused(&client, numbered(1, 0), ErrorCode::PermissionDenied).await;
    assert!(!e.retryable);
    let expected = format!(
        "limits.uid.0.tokens_per_day = 10 is spent ({} used); it resets at ",
        cost(20)
    );
    assert!(
        e.message.starts_with(&expected) && e.message.ends_with("T00:00:00Z"),
        "{}",
        e.message
    );
    // The admin's view: the user's figures and what is left of the budget.
    let root = root_figures(&client).await;
    assert_eq!(root.tokens_today, cost(20));
    assert_eq!(root.tokens_this_month, cost(20));
    assert_eq!(
        root.requests_last_minute, 1,
        "the refused request is not counted"
    );
    assert_eq!(root.limits.len(), 1);
    assert_eq!(
        (root.limits[0].limit.as_str(), root.limits[0].left),
        ("limits.uid.0.tokens_per_day", 0)
    );
    let (ok, out, err) = run_provd(&["status"], &daemon.socket);
    assert!(ok.success(), "{err}");
    assert!(
        out.contains("uid 0): 1 request in the last minute, 23 tokens today, 23 this month; limits.uid.0.tokens_per_day = 10: 0 left, resets "),
        "{out}"
    );
}

#[tokio::test]
async fn a_full_request_window_is_rate_limited_with_the_time_a_slot_frees() {
    let state = tempfile::tempdir().unwrap();
    let daemon = daemon(state.path(), "[limits.uid.0]\nrequests_per_minute = 2\n");
    let client = daemon.client().await;
    for _ in 0..2 {
        let (_, end) = generation_outcome(&client, numbered(1, 0)).await;
        end.expect("admitted");
    }
    let e = refused(&client, numbered(1, 0), ErrorCode::RateLimited).await;
    assert!(e.retryable);
    let after = e.retry_after_ms.expect("retry_after_ms");
    assert!((1..=61_000).contains(&after), "{after}");
    assert!(
        e.message
            .starts_with("limits.uid.0.requests_per_minute = 2 is reached (2 requests"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_restarted_daemon_still_refuses_a_spent_budget_from_its_ledger() {
    let state = tempfile::tempdir().unwrap();
    let limits = "[limits.uid.0]\ntokens_per_day = 10\nrequests_per_minute = 100\n";
    let first = daemon(state.path(), limits);
    let client = first.client().await;
    let (_, end) = generation_outcome(&client, numbered(20, 0)).await;
    end.expect("admitted");
    drop(client);
    // A graceful stop writes the ledger's last batch.
    first.signal(libc::SIGTERM);
    let (status, log) = first.wait();
    assert!(status.success(), "{log}");

    let second = daemon(state.path(), limits);
    second.wait_for_log("budgets seeded from the usage ledger");
    let client = second.client().await;
    let e = refused(&client, numbered(1, 0), ErrorCode::PermissionDenied).await;
    assert!(
        e.message.starts_with(&format!(
            "limits.uid.0.tokens_per_day = 10 is spent ({} used)",
            cost(20)
        )),
        "{}",
        e.message
    );
    let root = root_figures(&client).await;
    assert_eq!(root.requests_last_minute, 1, "the window is seeded too");
}

#[tokio::test]
async fn a_reload_that_raises_a_spent_budget_admits_again_and_leaves_a_running_stream_alone() {
    let state = tempfile::tempdir().unwrap();
    let daemon = daemon(state.path(), "[limits.uid.0]\ntokens_per_day = 10\n");
    let client = daemon.client().await;
    // Admitted before the budget is spent, and still running through the reload.
    let mut running = client.generate(numbered(20, 100)).await.unwrap();
    assert!(matches!(
        running.next().await,
        Some(Ok(GenerateEvent::Chunk(_)))
    ));
    let (_, end) = generation_outcome(&client, numbered(20, 0)).await;
    end.expect("admitted while nothing was used");
    refused(&client, numbered(1, 0), ErrorCode::PermissionDenied).await;

    std::fs::write(
        daemon.dir.path().join("provd.toml"),
        config(state.path(), "[limits.uid.0]\ntokens_per_day = 1000\n"),
    )
    .unwrap();
    client.reload().await.expect("the reload");
    assert_eq!(client.status().await.unwrap().active_streams, 1);
    let (text, end) = generation_outcome(&client, numbered(2, 0)).await;
    end.expect("admitted under the raised budget");
    assert_eq!(text.concat(), numbered_text(2));
    // The stream admitted before the reload goes on to its end.
    let (rest, end) = provd_tests::drain_generation(&mut running).await;
    let done = end.expect("the running stream finishes");
    assert_eq!(format!("0 {}", rest.concat()), numbered_text(20));
    assert_eq!(done.chunks, 20);
    // And is charged at its end.
    let root = root_figures(&client).await;
    assert_eq!(root.tokens_today, cost(20) + cost(2) + cost(20));
}

#[tokio::test]
async fn a_tokens_rate_binds_whoever_presents_it_and_nobody_else() {
    let state = tempfile::tempdir().unwrap();
    let daemon = daemon(state.path(), "");
    let admin = daemon.client().await;
    let created: provd_client::message::TokenCreated = admin
        .request(
            "token_create",
            &provd_client::message::TokenCreateParams {
                providers: vec!["mock".into()],
                ttl_seconds: None,
                owner_uid: None,
            },
        )
        .await
        .expect("a token");
    std::fs::write(
        daemon.dir.path().join("provd.toml"),
        config(
            state.path(),
            &format!(
                "[limits.token.\"{}\"]\nrequests_per_minute = 1\n",
                created.id
            ),
        ),
    )
    .unwrap();
    admin.reload().await.expect("the reload");
    let with_token = Client::connect_with_token(&daemon.socket, "budgets", Some(&created.token))
        .await
        .unwrap();
    let (_, end) = generation_outcome(&with_token, numbered(1, 0)).await;
    end.expect("admitted");
    let e = refused(&with_token, numbered(1, 0), ErrorCode::RateLimited).await;
    assert!(
        e.message.starts_with(&format!(
            "limits.token.{}.requests_per_minute = 1 is reached",
            created.id
        )),
        "{}",
        e.message
    );
    // The same uid without the token is not bound by it.
    let (_, end) = generation_outcome(&admin, numbered(1, 0)).await;
    end.expect("admitted without the token");
}

/// The uids and group of the group budget test (see `custody/main.rs` for the others').
const GROUP: u32 = 66_000;
const MEMBERS: [u32; 2] = [66_001, 66_002];

#[test]
fn a_group_budget_is_pooled_over_its_members() {
    if !root_or_skip("a_group_budget_is_pooled_over_its_members") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let daemon = daemon(
        state.path(),
        &format!(
            "[access]\nallow_groups = [\"{GROUP}\"]\n[limits.group.{GROUP}]\ntokens_per_day = 10\n"
        ),
    );
    let_every_user_connect(&daemon);
    let mut members: Vec<Peer> = MEMBERS
        .iter()
        .map(|uid| {
            let mut peer = Peer::start_in_group(*uid, GROUP, &daemon.socket, &["session"], &[]);
            assert_eq!(peer.line(), "ready");
            peer
        })
        .collect();
    // `generate` costs 5 tokens (two chunks): neither member alone spends 10.
    for peer in &mut members {
        let answer = peer.ask("generate");
        assert!(answer.starts_with("ok "), "{answer}");
    }
    for peer in &mut members {
        let answer = peer.ask("generate");
        assert!(
            answer.starts_with(&format!(
                "error permission_denied: limits.group.{GROUP}.tokens_per_day = 10 is spent (10 used)"
            )),
            "{answer}"
        );
    }
    // A member sees its own figures in `status`, the pooled budget with them, and
    // nobody else's.
    let answer = members[0].ask("status");
    let status: Value = serde_json::from_str(answer.strip_prefix("ok ").expect("ok")).unwrap();
    let users = status["users"].as_array().expect("users");
    assert_eq!(users.len(), 1, "{answer}");
    assert_eq!(users[0]["uid"], MEMBERS[0]);
    assert_eq!(users[0]["tokens_today"], 5);
    assert_eq!(
        users[0]["limits"],
        json!([{"limit": format!("limits.group.{GROUP}.tokens_per_day"), "value": 10, "used": 10, "left": 0, "resets_at": users[0]["limits"][0]["resets_at"]}])
    );
    // Root is not in the group.
    let answer = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let client = daemon.client().await;
        generation_outcome(&client, numbered(1, 0)).await.1
    });
    answer.expect("a non-member is admitted");
}

/// Sends a chat completion to the HTTP front door's Unix socket as this process's uid;
/// the status, the `Retry-After` header and the JSON body.
async fn chat(daemon: &Daemon) -> (u16, Option<String>, Value) {
    let socket = daemon.socket.with_file_name("http.sock");
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let body =
        json!({"model": "mock-1", "messages": [{"role": "user", "content": "count for me"}]});
    let request = hyper::Request::post("/v1/chat/completions")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, retry_after, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn the_http_door_answers_a_full_window_with_429_and_retry_after() {
    let state = tempfile::tempdir().unwrap();
    let daemon = daemon(state.path(), "[limits.uid.0]\nrequests_per_minute = 1\n");
    let (status, _, body) = chat(&daemon).await;
    assert_eq!(status, 200, "{body}");
    let (status, retry_after, body) = chat(&daemon).await;
    assert_eq!(status, 429, "{body}");
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=61).contains(&seconds), "{seconds}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("limits.uid.0.requests_per_minute = 1 is reached"),
        "{body}"
    );
}

#[tokio::test]
async fn the_http_door_answers_a_spent_budget_with_403_naming_it() {
    let state = tempfile::tempdir().unwrap();
    let daemon = daemon(state.path(), "[limits.uid.0]\ntokens_per_month = 1\n");
    let (status, _, body) = chat(&daemon).await;
    assert_eq!(status, 200, "{body}");
    let (status, retry_after, body) = chat(&daemon).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(retry_after, None);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("limits.uid.0.tokens_per_month = 1 is spent")
            && message.contains("it resets at "),
        "{body}"
    );
}

#[tokio::test]
async fn a_limit_naming_an_unknown_user_is_a_warning_and_binds_nobody() {
    let state = tempfile::tempdir().unwrap();
    let daemon = daemon(
        state.path(),
        "[limits.uid.provd-no-such-user]\nrequests_per_minute = 1\n\
         [limits.group.provd-no-such-group]\nrequests_per_minute = 1\n",
    );
    for key in [
        "limits.uid.provd-no-such-user",
        "limits.group.provd-no-such-group",
    ] {
        let line = daemon.wait_for_log(key);
        assert!(line.contains("binds nobody"), "{line}");
    }
    let client = daemon.client().await;
    for _ in 0..2 {
        generation_outcome(&client, numbered(1, 0))
            .await
            .1
            .expect("nobody is bound");
    }
}
