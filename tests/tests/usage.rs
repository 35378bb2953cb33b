//! `provd usage` and the `usage` request, end to end: generations through the mock (over
//! the MessagePack socket, as root and as a second uid, and through the HTTP front door)
//! are reported with the exact token counts the mock gave, grouped by each key, filtered
//! by user, priced where the configuration gives prices; an admin sees everyone, anyone
//! else only themselves; bad params and an off ledger get typed errors.
//!
//! Every daemon here keeps its ledger in a state directory of its own, and flushes its
//! ledger only every minute: a report must ask the writer to flush, so a generation that
//! ended before the report is in it.

use std::path::{Path, PathBuf};
use std::process::Output;

use provd_client::message::{
    TokenCreateParams, TokenCreated, UsageBy, UsageParams, UsageReport, UsageRow,
};
use provd_client::{Client, ErrorCode, GenerateRequest, Usage};
use provd_tests::other_user::{command_as, let_every_user_connect, root_or_skip};
use provd_tests::{provd_bin, run_provd, Daemon};
use serde_json::{json, Value};

/// Two mock providers, the writer's timer too slow to matter, and `extra`.
fn config(extra: &str) -> String {
    format!(
        "[providers.mock]\ntype = \"mock\"\n[providers.other]\ntype = \"mock\"\n\
         [ledger]\nflush_interval_ms = 60000\n{extra}"
    )
}

/// A daemon with [`config`] and its own state directory (the ledger's home).
fn daemon(extra: &str) -> (Daemon, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let daemon = Daemon::builder()
        .config(&config(extra))
        .env("STATE_DIRECTORY", &state.path().display().to_string())
        .start();
    (daemon, state)
}

/// One generation through `client`; the usage the mock reported.
async fn generate(client: &Client, provider: &str, model: &str, prompt: &str) -> Usage {
    let request = GenerateRequest {
        provider: Some(provider.into()),
        model: Some(model.into()),
        ..GenerateRequest::prompt(prompt)
    };
    let (_, done) = client
        .generate(request)
        .await
        .expect("a generation starts")
        .collect_text()
        .await
        .expect("a generation completes");
    done.usage
}

fn our_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn row<'a>(report: &'a UsageReport, key: Option<&str>) -> &'a UsageRow {
    report
        .rows
        .iter()
        .find(|r| r.key.as_deref() == key)
        .unwrap_or_else(|| panic!("no row {key:?} in {report:#?}"))
}

fn uid_row(report: &Value, uid: u32) -> &Value {
    report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["uid"] == uid)
        .unwrap_or_else(|| panic!("no row of uid {uid} in {report:#}"))
}

/// The sums of `usages`, as (prompt, completion).
fn sums(usages: &[Usage]) -> (u64, u64) {
    usages.iter().fold((0, 0), |(p, c), u| {
        (
            p + u64::from(u.prompt_tokens),
            c + u64::from(u.completion_tokens),
        )
    })
}

fn usage(by: UsageBy) -> UsageParams {
    UsageParams {
        by: Some(by),
        ..UsageParams::default()
    }
}

/// `provd ARGS` as `uid`, against `socket`.
fn provd_as(uid: u32, socket: &Path, args: &[&str]) -> Output {
    command_as(uid, provd_bin())
        .args(args)
        .env("PROVD_SOCKET", socket)
        .env("NO_COLOR", "1")
        .env_remove("PROVD_TOKEN")
        .output()
        .expect("run provd as another uid")
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

/// The one line a failed command printed, checked to be one line.
fn one_line_error(status_ok: bool, stderr: &str) -> String {
    assert!(!status_ok, "the command failed");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    lines[0].to_owned()
}

#[tokio::test]
async fn an_admin_sees_every_user_with_the_mocks_token_counts_and_a_user_only_their_own() {
    if !root_or_skip(
        "an_admin_sees_every_user_with_the_mocks_token_counts_and_a_user_only_their_own",
    ) {
        return;
    }
    const USER: u32 = 64_601;
    let (daemon, _state) = daemon(&format!("[access]\nallow_uids = [{USER}]\n"));
    let_every_user_connect(&daemon);
    let client = daemon.client().await;
    let mine = vec![
        generate(&client, "mock", "mock-1", "one two three").await,
        generate(&client, "other", "mock-2", "four").await,
    ];
    // The second uid generates through the CLI; its done event says what the mock
    // counted.
    let out = provd_as(
        USER,
        &daemon.socket,
        &[
            "generate",
            "--json",
            "--provider",
            "mock",
            "five six seven eight",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done: Value = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "done")
        .expect("a done event");
    let theirs = (
        done["result"]["usage"]["prompt_tokens"].as_u64().unwrap(),
        done["result"]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap(),
    );
    assert!(theirs.0 > 0 && theirs.1 > 0, "{done}");

    // The admin, through the CLI: both users, by name and uid, with the exact tokens.
    let (status, stdout, stderr) = run_provd(&["usage", "--json"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["uid"],
        Value::Null,
        "an admin's report is everyone's"
    );
    let root = uid_row(&report, 0);
    assert_eq!(root["user"], "root");
    assert_eq!(root["key"], "root");
    assert_eq!(root["requests"], 2);
    assert_eq!(
        (
            root["prompt_tokens"].as_u64().unwrap(),
            root["completion_tokens"].as_u64().unwrap()
        ),
        sums(&mine)
    );
    let user = uid_row(&report, USER);
    assert_eq!(user["requests"], 1);
    assert_eq!(
        (
            user["prompt_tokens"].as_u64().unwrap(),
            user["completion_tokens"].as_u64().unwrap()
        ),
        theirs
    );
    assert_eq!(report["total"]["requests"], 3);

    // The same through the Rust client.
    let r = client.usage(&UsageParams::default()).await.unwrap();
    assert_eq!(r.by, UsageBy::User);
    assert_eq!(r.rows.len(), 2, "{r:#?}");
    assert_eq!(r.total.requests, 3);
    let them = r.rows.iter().find(|r| r.uid == Some(USER)).unwrap();
    assert_eq!((them.prompt_tokens, them.completion_tokens), theirs);

    // The second uid sees only its own generations, whatever it asks.
    let own = stdout_json(&provd_as(USER, &daemon.socket, &["usage", "--json"]));
    assert_eq!(own["uid"], USER);
    assert_eq!(own["rows"].as_array().unwrap().len(), 1, "{own:#}");
    assert_eq!(uid_row(&own, USER)["requests"], 1);
    assert_eq!(own["total"]["requests"], 1);
    assert_eq!(own["total"]["prompt_tokens"], theirs.0);
    let by_model = stdout_json(&provd_as(
        USER,
        &daemon.socket,
        &["usage", "--json", "--by", "model"],
    ));
    assert_eq!(by_model["total"]["requests"], 1, "{by_model:#}");
    let own_by_uid = stdout_json(&provd_as(
        USER,
        &daemon.socket,
        &["usage", "--json", "--user", &USER.to_string()],
    ));
    assert_eq!(own_by_uid["total"]["requests"], 1);

    // ...and is refused another user's, on one line naming the rule.
    let out = provd_as(USER, &daemon.socket, &["usage", "--user", "root"]);
    let line = one_line_error(out.status.success(), &String::from_utf8_lossy(&out.stderr));
    assert!(line.contains("permission_denied"), "{line}");
    assert!(
        line.contains("the usage of user 'root' is for admins"),
        "{line}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn each_grouping_keys_the_generations_as_documented() {
    let (daemon, _state) = daemon("");
    let client = daemon.client().await;
    let a = generate(&client, "mock", "mock-1", "a b").await;
    let b = generate(&client, "mock", "mock-2", "c d e").await;
    let c = generate(&client, "other", "mock-1", "f").await;
    let created: TokenCreated = client
        .request(
            "token_create",
            &TokenCreateParams {
                providers: vec!["other".into()],
                ttl_seconds: None,
                owner_uid: None,
            },
        )
        .await
        .expect("a token");
    let with_token = Client::connect_with_token(&daemon.socket, "t", Some(&created.token))
        .await
        .unwrap();
    let d = generate(&with_token, "other", "mock-1", "g h i j").await;

    let r = client.usage(&usage(UsageBy::Provider)).await.unwrap();
    assert_eq!(r.rows.len(), 2);
    assert_eq!(row(&r, Some("mock")).requests, 2);
    let other = row(&r, Some("other"));
    assert_eq!(
        (other.requests, other.prompt_tokens, other.completion_tokens),
        (
            2,
            u64::from(c.prompt_tokens + d.prompt_tokens),
            u64::from(c.completion_tokens + d.completion_tokens)
        )
    );

    let r = client.usage(&usage(UsageBy::Model)).await.unwrap();
    let keys: std::collections::BTreeSet<_> = r.rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(
        keys,
        ["mock/mock-1", "mock/mock-2", "other/mock-1"]
            .map(|k| Some(k.to_owned()))
            .into()
    );
    assert_eq!(
        row(&r, Some("mock/mock-2")).prompt_tokens,
        u64::from(b.prompt_tokens)
    );
    assert_eq!(row(&r, Some("other/mock-1")).requests, 2);

    let r = client.usage(&usage(UsageBy::Token)).await.unwrap();
    assert_eq!(r.rows.len(), 2, "{r:#?}");
    let tok = row(&r, Some(&created.id));
    assert_eq!(
        (tok.requests, tok.prompt_tokens),
        (1, u64::from(d.prompt_tokens))
    );
    assert_eq!(row(&r, None).requests, 3, "the generations without a token");

    let r = client.usage(&usage(UsageBy::Day)).await.unwrap();
    assert_eq!(r.total.requests, 4);
    for day in &r.rows {
        let key = day.key.as_deref().unwrap();
        assert!(
            key.len() == 10 && key.as_bytes()[4] == b'-' && key.as_bytes()[7] == b'-',
            "a UTC date: {key}"
        );
    }
    assert_eq!(
        (r.total.prompt_tokens, r.total.completion_tokens),
        sums(&[a, b, c, d])
    );

    // The CLI prints each grouping as a table ending with the totals.
    for by in ["user", "provider", "model", "token", "day"] {
        let (status, stdout, stderr) = run_provd(&["usage", "--by", by], &daemon.socket);
        assert!(status.success(), "{by}: {stderr}");
        assert!(
            stdout.starts_with(&format!("usage by {by} from ")),
            "{stdout}"
        );
        let total = stdout.lines().last().unwrap();
        assert!(total.starts_with("total "), "{stdout}");
        assert_eq!(
            total.split_whitespace().nth(1),
            Some("4"),
            "four requests: {stdout}"
        );
        assert!(
            !stdout.contains("COST"),
            "no prices, no cost column: {stdout}"
        );
    }
    let (_, stdout, _) = run_provd(&["usage", "--by", "token"], &daemon.socket);
    assert!(stdout.contains("(no token)"), "{stdout}");
    assert!(stdout.contains(&created.id), "{stdout}");
}

#[tokio::test]
async fn a_token_connection_sees_only_its_own_uid_and_may_not_ask_for_another() {
    let (daemon, _state) = daemon("");
    let client = daemon.client().await;
    generate(&client, "mock", "mock-1", "a b").await;
    let created: TokenCreated = client
        .request(
            "token_create",
            &TokenCreateParams {
                providers: vec!["mock".into()],
                ttl_seconds: None,
                owner_uid: None,
            },
        )
        .await
        .unwrap();
    let with_token = Client::connect_with_token(&daemon.socket, "t", Some(&created.token))
        .await
        .unwrap();
    let r = with_token.usage(&UsageParams::default()).await.unwrap();
    assert_eq!(r.uid, Some(our_uid()), "narrowed to its own uid");
    assert_eq!(r.total.requests, 1);
    let e = with_token
        .usage(&UsageParams {
            user: Some("4242424".into()),
            ..UsageParams::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::PermissionDenied);
    assert!(
        e.to_string().contains("sees only its own uid's usage"),
        "{e}"
    );
}

#[tokio::test]
async fn a_user_filter_takes_a_name_or_a_uid() {
    let (daemon, _state) = daemon("");
    let client = daemon.client().await;
    let u = generate(&client, "mock", "mock-1", "a b c").await;
    let uid = our_uid();
    let by_uid = client
        .usage(&UsageParams {
            user: Some(uid.to_string()),
            by: Some(UsageBy::Model),
            ..UsageParams::default()
        })
        .await
        .unwrap();
    assert_eq!(by_uid.uid, Some(uid));
    assert_eq!(by_uid.total.prompt_tokens, u64::from(u.prompt_tokens));
    let nobody = client
        .usage(&UsageParams {
            user: Some("4242424".into()),
            ..UsageParams::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (nobody.uid, nobody.rows.len(), nobody.total.requests),
        (Some(4_242_424), 0, 0)
    );
    if uid == 0 {
        let (status, stdout, stderr) =
            run_provd(&["usage", "--json", "--user", "root"], &daemon.socket);
        assert!(status.success(), "{stderr}");
        let report: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["uid"], 0);
        assert_eq!(report["total"]["requests"], 1);
    }
    let e = client
        .usage(&UsageParams {
            user: Some("no-such-user-here".into()),
            ..UsageParams::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    assert!(
        e.to_string()
            .contains("user: no user 'no-such-user-here' on this host"),
        "{e}"
    );
}

#[tokio::test]
async fn a_row_has_a_cost_only_when_every_model_in_it_has_a_price() {
    let (daemon, _state) =
        daemon("[prices.\"mock/mock-1\"]\ninput_per_mtok = 3.0\noutput_per_mtok = 15.0\n");
    let client = daemon.client().await;
    let priced = generate(&client, "mock", "mock-1", "one two three").await;
    generate(&client, "other", "mock-1", "four").await;

    let r = client.usage(&usage(UsageBy::Model)).await.unwrap();
    assert!(r.priced);
    assert_eq!(r.unpriced, ["other/mock-1"]);
    let expected =
        (f64::from(priced.prompt_tokens) * 3.0 + f64::from(priced.completion_tokens) * 15.0) / 1e6;
    let cost = row(&r, Some("mock/mock-1")).cost.expect("a priced model");
    assert!((cost - expected).abs() < 1e-12, "{cost} != {expected}");
    assert_eq!(row(&r, Some("other/mock-1")).cost, None);
    assert_eq!(r.total.cost, None, "the total includes an unpriced model");

    let r = client.usage(&usage(UsageBy::Provider)).await.unwrap();
    assert!(row(&r, Some("mock")).cost.is_some());
    assert_eq!(row(&r, Some("other")).cost, None);

    let (status, stdout, stderr) = run_provd(&["usage", "--by", "model"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("COST"), "{stdout}");
    assert!(stdout.contains(&format!("{expected:.6}")), "{stdout}");
    assert!(stdout.contains("no price for other/mock-1"), "{stdout}");
}

/// The HTTP front door's socket: beside the MessagePack one.
fn http_socket(daemon: &Daemon) -> PathBuf {
    daemon.socket.with_file_name("http.sock")
}

#[tokio::test]
async fn a_generation_through_the_http_front_door_is_reported() {
    let (daemon, _state) = daemon("");
    let body = json!({
        "model": "other/mock-3",
        "messages": [{"role": "user", "content": "hello from http"}],
        "stream": false,
    });
    let out = std::process::Command::new("curl")
        .args(["--silent", "--fail", "--unix-socket"])
        .arg(http_socket(&daemon))
        .args(["--data-binary"])
        .arg(body.to_string())
        .arg("http://localhost/v1/chat/completions")
        .output()
        .expect("run curl");
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let client = daemon.client().await;
    let r = client.usage(&usage(UsageBy::Model)).await.unwrap();
    let http = row(&r, Some("other/mock-3"));
    assert_eq!(http.requests, 1);
    assert_eq!(
        (http.prompt_tokens, http.completion_tokens),
        (
            reply["usage"]["prompt_tokens"].as_u64().unwrap(),
            reply["usage"]["completion_tokens"].as_u64().unwrap()
        ),
        "{reply}"
    );
}

#[tokio::test]
async fn bad_params_are_refused_naming_the_field_and_the_daemon_serves_on() {
    let (daemon, _state) = daemon("");
    let client = daemon.client().await;
    for (params, field) in [
        (
            json!({"by": "weekly"}),
            "by must be one of user, provider, model, token, day",
        ),
        (
            json!({"since_ms": 2_000_000_000_000u64, "until_ms": 1_000_000_000_000u64}),
            "since_ms (2000000000000) is after until_ms (1000000000000)",
        ),
        (json!({"until_ms": u64::MAX}), "until_ms must be"),
        (
            json!({"since_ms": 999_999_999_999_999u64}),
            "since_ms must be",
        ),
        (json!({"user": ""}), "user must be"),
    ] {
        let e = client
            .request::<_, UsageReport>("usage", &params)
            .await
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRequest, "{params}: {e}");
        assert!(e.to_string().contains(field), "{params}: {e}");
    }
    client.ping().await.expect("the daemon serves on");

    for (args, expected) in [
        (&["usage", "--by", "weekly"][..], "--by must be one of"),
        (
            &["usage", "--since", "last week"][..],
            "--since 'last week' is neither",
        ),
        (
            &["usage", "--since", "1d", "--until", "2d"][..],
            "is after until_ms",
        ),
    ] {
        let (status, stdout, stderr) = run_provd(args, &daemon.socket);
        let line = one_line_error(status.success(), &stderr);
        assert!(line.contains(expected), "{args:?}: {line}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
}

#[tokio::test]
async fn with_the_ledger_off_usage_says_so() {
    let daemon =
        Daemon::with_config("[providers.mock]\ntype = \"mock\"\n[ledger]\nenabled = false\n");
    let client = daemon.client().await;
    generate(&client, "mock", "mock-1", "a").await;
    let e = client.usage(&UsageParams::default()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable);
    assert!(!e.to_wire().retryable, "no retry turns the ledger on");
    assert!(e.to_string().contains("[ledger] enabled = false"), "{e}");
    let (status, _, stderr) = run_provd(&["usage"], &daemon.socket);
    let line = one_line_error(status.success(), &stderr);
    assert!(line.contains("the usage ledger is off"), "{line}");
}
