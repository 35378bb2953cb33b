//! The usage ledger against the real daemon: every generation recorded (completed,
//! failed, cancelled, served by a fallback, through either front door) with who asked; a
//! SIGKILL loses at most the batch not yet written and never the file; an unreadable
//! ledger is set aside with a warning while the daemon serves; a ledger that cannot keep
//! up never slows or fails a generation and counts what it lost.
//!
//! Reports over the ledger are tested in `usage.rs`, budgets in `budgets.rs`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use provd::ledger::db::open_read;
use provd_client::{ErrorCode, GenerateEvent};
use provd_tests::{generation_error, generation_text, mock_request, numbered, Daemon};

/// The mock providers every test here uses: `good`, and `bad`, which fails before its
/// first chunk and falls back to `good/big`.
const PROVIDERS: &str = r#"
[daemon]
default_provider = "good"
keepalive_interval_ms = 0
[providers.good]
type = "mock"
[providers.bad]
type = "mock"
default_model = "small"
retry_attempts = 0
fallbacks = ["good/big"]
[providers.bad.options]
fault = "before_first_chunk"
fault_code = "unavailable"
"#;

/// One ledger row, as the tests read it.
#[derive(Debug, PartialEq)]
struct Row {
    uid: Option<u32>,
    user: Option<String>,
    token: Option<String>,
    provider: String,
    model: String,
    answered: Option<(String, String)>,
    prompt_tokens: u32,
    completion_tokens: u32,
    chunks: u32,
    outcome: String,
    error_code: Option<String>,
    first_chunk: bool,
}

fn rows(path: &Path) -> Vec<Row> {
    let conn = open_read(path).expect("the ledger opens");
    let mut stmt = conn
        .prepare(
            "SELECT uid, user, token, provider, model, answered_provider, answered_model, \
             prompt_tokens, completion_tokens, chunks, outcome, error_code, first_chunk_ms \
             FROM generations ORDER BY id",
        )
        .expect("the ledger's schema");
    stmt.query_map([], |r| {
        let answered: (Option<String>, Option<String>) = (r.get(5)?, r.get(6)?);
        Ok(Row {
            uid: r.get(0)?,
            user: r.get(1)?,
            token: r.get(2)?,
            provider: r.get(3)?,
            model: r.get(4)?,
            answered: answered.0.zip(answered.1),
            prompt_tokens: r.get(7)?,
            completion_tokens: r.get(8)?,
            chunks: r.get(9)?,
            outcome: r.get(10)?,
            error_code: r.get(11)?,
            first_chunk: r.get::<_, Option<u32>>(12)?.is_some(),
        })
    })
    .expect("the rows")
    .collect::<Result<_, _>>()
    .expect("the rows read")
}

fn integrity(path: &Path) -> String {
    open_read(path)
        .expect("the ledger opens")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check runs")
}

/// A daemon on `state` (a state directory kept across restarts) with `config`.
fn daemon_on(state: &Path, config: &str) -> Daemon {
    Daemon::builder()
        .config(&format!("{config}\n[ledger]\nflush_interval_ms = 20\n",))
        .env(
            "STATE_DIRECTORY",
            state.to_str().expect("a UTF-8 temp path"),
        )
        .start()
}

/// The ledger's counters, from `status`.
async fn ledger_status(daemon: &Daemon) -> provd_client::message::LedgerStatus {
    let client = daemon.client().await;
    client
        .status()
        .await
        .expect("status")
        .ledger
        .expect("an admin sees the ledger's counters")
}

/// Waits until the ledger has written `n` records, through `status` round trips.
async fn written(daemon: &Daemon, n: u64) {
    let done = provd_tests::eventually(100_000, || async {
        (ledger_status(daemon).await.written >= n).then_some(())
    })
    .await;
    assert!(done.is_some(), "the ledger never wrote {n} records");
}

/// POSTs `body` to `path` on the daemon's HTTP socket; the response's status line.
fn http_post(daemon: &Daemon, path: &str, body: &serde_json::Value) -> String {
    let socket = daemon.socket.with_file_name("http.sock");
    let mut stream = std::os::unix::net::UnixStream::connect(&socket).expect("the HTTP socket");
    let body = body.to_string();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: provd\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("the request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("the response is read");
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_generation_is_recorded_with_who_asked_what_answered_and_how_it_ended() {
    // The state outlives the daemon: it is read after the daemon stopped.
    let state = tempfile::tempdir().expect("tempdir");
    let daemon = daemon_on(state.path(), PROVIDERS);
    let client = daemon.client().await;

    // Completed: "count for me" is 3 prompt words; 5 chunks are 5 completion tokens.
    generation_text(&client, numbered(5, 0)).await;
    // Served by the fallback after the first provider failed before its first chunk.
    let mut request = numbered(2, 0);
    request.provider = Some("bad".into());
    let (_, done) = generation_text(&client, request).await;
    assert_eq!(
        (done.provider.as_str(), done.model.as_str()),
        ("good", "big")
    );
    // Failed mid-stream after two chunks.
    let e = generation_error(
        &client,
        mock_request(
            "fail please",
            serde_json::json!({"numbered": true, "chunks": 6, "fault": "mid_stream", "fault_after_chunks": 2}),
        ),
    )
    .await;
    assert_eq!(e.code, ErrorCode::UpstreamError);
    // Cancelled after its first chunk.
    let mut generation = client
        .generate(numbered(10_000, 5))
        .await
        .expect("the generation starts");
    assert!(matches!(
        generation.next().await,
        Some(Ok(GenerateEvent::Chunk(_)))
    ));
    client.cancel(generation.id()).await.expect("cancel");
    let e = generation
        .collect_text()
        .await
        .expect_err("cancelled")
        .to_wire();
    assert_eq!(e.code, ErrorCode::Cancelled);
    let delivered = e.chunks.expect("the chunks delivered");
    // Refused before any provider was asked: no such provider.
    let mut request = numbered(1, 0);
    request.provider = Some("nope".into());
    assert_eq!(
        generation_error(&client, request).await.code,
        ErrorCode::NotFound
    );
    // Through the HTTP front door.
    let status = http_post(
        &daemon,
        "/v1/chat/completions",
        &serde_json::json!({"model": "good/mock-1", "messages": [{"role": "user", "content": "two words"}]}),
    );
    assert!(status.contains(" 200 "), "{status}");

    drop(client);
    let path = state.path().join("usage.db");
    daemon.signal(libc::SIGTERM);
    let (exit, log) = daemon.wait();
    assert!(exit.success(), "{log}");
    let rows = rows(&path);
    let uid = Some(unsafe_free_euid());
    let user = rows[0].user.clone();
    let row = |provider: &str,
               model: &str,
               answered: Option<(&str, &str)>,
               (prompt_tokens, completion_tokens, chunks): (u32, u32, u32),
               outcome: &str,
               error_code: Option<&str>| Row {
        uid,
        user: user.clone(),
        token: None,
        provider: provider.into(),
        model: model.into(),
        answered: answered.map(|(p, m)| (p.into(), m.into())),
        prompt_tokens,
        completion_tokens,
        chunks,
        outcome: outcome.into(),
        error_code: error_code.map(Into::into),
        first_chunk: chunks > 0,
    };
    let expected = vec![
        row(
            "good",
            "mock-1",
            Some(("good", "mock-1")),
            (3, 5, 5),
            "completed",
            None,
        ),
        row(
            "bad",
            "small",
            Some(("good", "big")),
            (3, 2, 2),
            "completed",
            None,
        ),
        row(
            "good",
            "mock-1",
            Some(("good", "mock-1")),
            (2, 2, 2),
            "failed",
            Some("upstream_error"),
        ),
        row(
            "good",
            "mock-1",
            Some(("good", "mock-1")),
            (3, rows[3].completion_tokens, delivered),
            "cancelled",
            Some("cancelled"),
        ),
        row("nope", "", None, (0, 0, 0), "failed", Some("not_found")),
        row(
            "good",
            "mock-1",
            Some(("good", "mock-1")),
            (2, rows[5].completion_tokens, 0),
            "completed",
            None,
        ),
    ];
    assert_eq!(rows, expected, "{log}");
    assert!(
        rows[3].completion_tokens >= delivered,
        "a cancelled stream is charged at least one token per chunk delivered"
    );
    assert!(rows[5].completion_tokens > 0);
    assert!(user.is_some(), "the writer names the uid");
}

/// The effective uid of this test process (the daemon's peer).
fn unsafe_free_euid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .expect("/proc/self")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_loses_at_most_the_unwritten_batch_and_never_the_file() {
    let state = tempfile::tempdir().expect("tempdir");
    let path = state.path().join("usage.db");
    let mut kept = 0u64;
    for round in 0..4u64 {
        let daemon = daemon_on(state.path(), PROVIDERS);
        let client = daemon.client().await;
        // Generations the ledger is known to have written before the kill...
        for _ in 0..10 {
            generation_text(&client, numbered(3, 0)).await;
        }
        written(&daemon, 10).await;
        // ...and a burst still running and being written when the kill comes.
        let mut burst = Vec::new();
        for _ in 0..8 {
            burst.push(client.generate(numbered(200, 1)).await.expect("starts"));
        }
        for generation in &mut burst {
            let _ = generation.next().await;
        }
        daemon.signal(libc::SIGKILL);
        let (_, log) = daemon.wait();
        drop(burst);
        assert_eq!(integrity(&path), "ok", "round {round}: {log}");
        let now = rows(&path).len() as u64;
        assert!(
            now >= kept + 10,
            "round {round}: {now} rows after the kill, {kept} before it and 10 written since"
        );
        kept = now;
    }
    // The ledger the kills left behind opens as it is: nothing set aside.
    let daemon = daemon_on(state.path(), PROVIDERS);
    let client = daemon.client().await;
    generation_text(&client, numbered(1, 0)).await;
    written(&daemon, 1).await;
    assert!(!daemon.log().contains("set aside"), "{}", daemon.log());
    assert_eq!(rows(&path).len() as u64, kept + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_ledger_is_renamed_aside_with_a_warning_and_the_daemon_serves() {
    let state = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        state.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    let garbage: Vec<u8> = (0..16_384u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(state.path().join("usage.db"), &garbage).expect("write garbage");

    let daemon = daemon_on(state.path(), PROVIDERS);
    let warning = daemon.wait_for_log("the usage ledger cannot be read");
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("renamed aside (not deleted)"), "{warning}");
    let client = daemon.client().await;
    let (text, _) = generation_text(&client, numbered(2, 0)).await;
    assert_eq!(text, "0 1 ");
    written(&daemon, 1).await;

    let aside: Vec<PathBuf> = std::fs::read_dir(state.path())
        .expect("the state dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("usage.db.unreadable-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).expect("the old file"), garbage);
    assert_eq!(rows(&state.path().join("usage.db")).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_cannot_keep_up_never_fails_a_generation_and_counts_what_it_lost() {
    let state = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::builder()
        .config(&format!(
            "{PROVIDERS}\n[ledger]\nqueue_records = 2\nbatch_records = 1\nflush_interval_ms = 10\n"
        ))
        .env("STATE_DIRECTORY", state.path().to_str().expect("UTF-8"))
        .start();
    let client = daemon.client().await;
    generation_text(&client, numbered(1, 0)).await;
    written(&daemon, 1).await;

    // Another process holds the ledger's write lock: the writer waits (and, after its
    // busy timeout, gives the batch up) while generations go on.
    let lock = rusqlite_lock(&state.path().join("usage.db"));
    for _ in 0..30 {
        let (text, _) = generation_text(&client, numbered(2, 0)).await;
        assert_eq!(text, "0 1 ");
    }
    let during = ledger_status(&daemon).await;
    assert!(
        during.dropped >= 27,
        "a queue of 2 behind a blocked writer drops the rest: {during:?}"
    );
    drop(lock);
    // Once the lock is gone the ledger records again, and every generation is either
    // written or counted.
    generation_text(&client, numbered(1, 0)).await;
    let after = provd_tests::eventually(100_000, || async {
        let s = ledger_status(&daemon).await;
        (s.written + s.dropped + s.lost == 32).then_some(s)
    })
    .await
    .expect("every record is written or counted");
    assert_eq!(
        rows(&state.path().join("usage.db")).len() as u64,
        after.written
    );
    let log = daemon.log();
    assert!(log.contains("usage ledger queue full"), "{log}");
    let (_, text) = provd_tests::run_provd(&["status"], &daemon.socket)
        .1
        .split_once("usage ledger: ")
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .expect("`provd status` shows the ledger's counters");
    assert!(text.contains("dropped (queue full)"), "{text}");
}

/// Takes SQLite's write lock on the ledger from this process until dropped.
fn rusqlite_lock(path: &Path) -> impl Drop {
    struct Lock(std::process::Child);
    impl Drop for Lock {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    // A separate process, as another program on the host would be: `sqlite3` is not
    // installed everywhere, so the Python standard library's binding holds the lock.
    let mut child = std::process::Command::new(provd_tests::python())
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             sys.stdin.read()\n",
        )
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the lock is taken");
    assert_eq!(line.trim(), "locked");
    Lock(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_long_model_and_provider_names_are_stored_cut_to_a_bound() {
    let state = tempfile::tempdir().expect("tempdir");
    let daemon = daemon_on(state.path(), PROVIDERS);
    let client = daemon.client().await;
    let long = "m".repeat(100_000);
    let mut request = numbered(1, 0);
    request.model = Some(long.clone());
    generation_text(&client, request).await;
    let mut request = numbered(1, 0);
    request.provider = Some(long);
    generation_error(&client, request).await;
    written(&daemon, 2).await;
    let rows = rows(&state.path().join("usage.db"));
    assert_eq!(rows.len(), 2);
    // 256 characters and the ellipsis that says the name was cut.
    assert_eq!(
        rows[0].model.chars().count(),
        257,
        "{}",
        &rows[0].model[..40]
    );
    assert!(rows[0].model.ends_with('…'));
    assert_eq!(rows[1].provider.chars().count(), 257);
}
