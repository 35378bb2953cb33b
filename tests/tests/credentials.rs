//! Credentials and access end to end: the sealed store through the admin commands, the
//! `.env` file as source of truth, the master key at start-up, peer-identity policy,
//! tokens, and a scan proving that no key leaks anywhere the daemon writes.

use std::path::{Path, PathBuf};

use provd_client::{ErrorCode, GenerateRequest};
use provd_tests::apis::openai;
use provd_tests::upstream::{Reply, Upstream};
use provd_tests::{provd_bin, Daemon};

const MASTER: &str = "8f3a9c2e71d04b6a95e3f0c1d2b7a48e6c5d9f0a1b2c3d4e5f60718293a4b5c6";
const KEY_A: &str = "sk-first-key-AAAAAAAAAAAAAAAAAAAAAAAA";
const KEY_B: &str = "sk-second-key-BBBBBBBBBBBBBBBBBBBBBBB";

fn answer() -> Reply {
    openai::stream_reply(&openai::stream_text("m", &["ok"], "stop", (2, 1)), 64)
}

async fn upstream() -> Upstream {
    Upstream::start(|r| match r.path() {
        "/v1/models" => openai::models(&["m1", "m2"]),
        _ => answer(),
    })
    .await
}

/// A daemon with a master key, a state dir inside its temp dir, and two openai-type
/// providers (`a`, `b`) pointed at `upstream`, with no key in the environment.
fn daemon(upstream: &Upstream, extra: &str) -> Daemon {
    let state = tempfile::tempdir().unwrap().keep();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    config_daemon(upstream, &state, extra, MASTER)
}

fn config_daemon(upstream: &Upstream, state: &Path, extra: &str, master: &str) -> Daemon {
    config_daemon_env(upstream, state, extra, master, &[])
}

/// [`config_daemon`] with extra variables in the daemon's environment.
fn config_daemon_env(
    upstream: &Upstream,
    state: &Path,
    extra: &str,
    master: &str,
    env: &[(&str, &str)],
) -> Daemon {
    let config = format!(
        "[daemon]\nstate_dir = \"{}\"\ndefault_provider = \"a\"\nkeepalive_interval_ms = 0\n{extra}\n\
         [providers.a]\ntype = \"openai\"\nbase_url = \"{base}/v1\"\ndefault_model = \"m\"\nretry_attempts = 0\napi_key_env = \"PROVD_UNSET_A\"\n\
         [providers.b]\ntype = \"openai\"\nbase_url = \"{base}/v1\"\ndefault_model = \"m\"\nretry_attempts = 0\napi_key_env = \"PROVD_UNSET_B\"\n",
        state.display(),
        base = upstream.base_url
    );
    env.iter()
        .fold(Daemon::builder(), |b, (k, v)| b.env(k, v))
        .config(&config)
        .env("SECRET_KEY", master)
        .start()
}

/// Runs `provd` with `stdin` fed in and extra environment.
fn provd(
    socket: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let out = provd_tests::output_with_stdin(
        std::process::Command::new(provd_bin())
            .args(args)
            .env("PROVD_SOCKET", socket)
            .envs(env.iter().copied()),
        stdin,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs one generation (on `provider`, else the default) and returns the Authorization
/// header the upstream received for it.
async fn key_used(
    client: &provd_client::Client,
    up: &Upstream,
    provider: Option<&str>,
) -> Option<String> {
    let mut req = GenerateRequest::prompt("q");
    req.provider = provider.map(str::to_owned);
    provd_tests::generation_text(client, req).await;
    up.requests()
        .last()
        .unwrap()
        .header("authorization")
        .map(str::to_owned)
}

fn bearer(key: &str) -> Option<String> {
    Some(format!("Bearer {key}"))
}

fn state_dir(daemon: &Daemon) -> PathBuf {
    let config = std::fs::read_to_string(daemon.dir.path().join("provd.toml")).unwrap();
    let line = config.lines().find(|l| l.starts_with("state_dir")).unwrap();
    PathBuf::from(line.split('"').nth(1).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_through_the_daemon_is_used_by_the_next_request_and_never_shown() {
    let up = upstream().await;
    let daemon = daemon(&up, "");
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::Unauthenticated, "no key yet");

    let (ok, _, stderr) = provd(&daemon.socket, &["creds", "set", "a"], KEY_A, &[]);
    assert!(ok, "{stderr}");
    assert_eq!(key_used(&client, &up, None).await, bearer(KEY_A));

    let (ok, _, _) = provd(
        &daemon.socket,
        &["creds", "set", "a"],
        &format!("{KEY_B}\n"),
        &[],
    );
    assert!(ok);
    assert_eq!(key_used(&client, &up, None).await, bearer(KEY_B));

    let (ok, listing, _) = provd(&daemon.socket, &["creds", "list", "--json"], "", &[]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&listing).unwrap();
    assert_eq!(list["credentials"][0]["provider"], "a");
    assert_eq!(list["credentials"][0]["source"], "set");
    assert_eq!(
        list["credentials"][0]["fingerprint"]
            .as_str()
            .unwrap()
            .len(),
        12
    );
    assert!(!listing.contains(KEY_B) && !listing.contains(KEY_A));

    let (ok, out, stderr) = provd(&daemon.socket, &["creds", "test", "a"], "", &[]);
    assert!(ok, "{stderr}");
    assert!(out.contains("lists 2 models"), "{out}");

    let (ok, _, _) = provd(&daemon.socket, &["creds", "remove", "a"], "", &[]);
    assert!(ok);
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    let (ok, _, stderr) = provd(&daemon.socket, &["creds", "remove", "a"], "", &[]);
    assert!(!ok && stderr.contains("not_found"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_store_open_a_missing_key_points_to_creds_set_and_creds_tests_show_in_status() {
    let up = upstream().await;
    let daemon = daemon(&up, "");
    let client = daemon.client().await;
    let err = provd_tests::generation_error(&client, GenerateRequest::prompt("q")).await;
    assert_eq!(err.code, ErrorCode::Unauthenticated);
    assert!(
        err.message.contains("`provd creds set a`") && !err.message.contains("PROVD_UNSET_A"),
        "{}",
        err.message
    );

    let (ok, _, stderr) = provd(&daemon.socket, &["creds", "test", "b"], "", &[]);
    assert!(!ok);
    assert!(stderr.contains("`provd creds set b`"), "{stderr}");
    let (ok, status, stderr) = provd(&daemon.socket, &["status"], "", &[]);
    assert!(ok, "{stderr}");
    let line = |status: &str| {
        status
            .lines()
            .find(|l| l.contains("provider b "))
            .unwrap_or_else(|| panic!("{status}"))
            .to_owned()
    };
    let b = line(&status);
    assert!(b.contains(": failing,"), "{b}");
    assert!(b.contains("1 requests, 1 errors"), "{b}");

    let (ok, _, _) = provd(&daemon.socket, &["creds", "set", "b"], KEY_B, &[]);
    assert!(ok);
    let (ok, _, stderr) = provd(&daemon.socket, &["creds", "test", "b"], "", &[]);
    assert!(ok, "{stderr}");
    let (_, status, _) = provd(&daemon.socket, &["status"], "", &[]);
    let b = line(&status);
    assert!(b.contains(": serving,"), "{b}");
    assert!(b.contains("2 requests, 1 errors"), "{b}");
}

/// The date after `label` in `text`: RFC 3339, UTC, to the second.
fn date_after<'t>(text: &'t str, label: &str) -> &'t str {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("{label} in {text}"))
        + label.len();
    let date = &text[at..at + 20];
    let b = date.as_bytes();
    assert!(
        b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[19] == b'Z',
        "{date} in {text}"
    );
    date
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creds_and_token_lists_print_utc_dates_and_their_json_keeps_numbers() {
    let up = upstream().await;
    let daemon = daemon(&up, "");
    let (ok, _, _) = provd(&daemon.socket, &["creds", "set", "a"], KEY_A, &[]);
    assert!(ok);
    let (ok, list, stderr) = provd(&daemon.socket, &["creds", "list"], "", &[]);
    assert!(ok, "{stderr}");
    assert!(date_after(&list, "updated ").starts_with("20"), "{list}");
    let (_, json, _) = provd(&daemon.socket, &["creds", "list", "--json"], "", &[]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(json["credentials"][0]["updated_at"].is_u64(), "{json}");

    let (ok, _, stderr) = provd(
        &daemon.socket,
        &["token", "create", "--providers", "a", "--expires", "1h"],
        "",
        &[],
    );
    assert!(ok, "{stderr}");
    let (ok, list, stderr) = provd(&daemon.socket, &["token", "list"], "", &[]);
    assert!(ok, "{stderr}");
    date_after(&list, "expires ");
    let (_, json, _) = provd(&daemon.socket, &["token", "list", "--json"], "", &[]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(json["tokens"][0]["expires_at"].is_u64(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotenv_import_seals_the_keys_it_knows() {
    let up = upstream().await;
    let daemon = daemon(&up, "");
    let env = daemon.dir.path().join("keys.env");
    std::fs::write(&env, format!("OPENAI_API_KEY=ignored-no-openai-typed-default\nPROVD_A_API_KEY={KEY_A}\nPROVD_B_API_KEY={KEY_B}\nUNRELATED=1\n")).unwrap();
    let (ok, out, stderr) = provd(
        &daemon.socket,
        &["creds", "import", env.to_str().unwrap()],
        "",
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(out.contains("sealed: a, b"), "{out}");
    assert!(out.contains("UNRELATED"), "{out}");
    let client = daemon.client().await;
    let mut req = GenerateRequest::prompt("q");
    req.provider = Some("b".into());
    provd_tests::generation_text(&client, req).await;
    assert_eq!(
        up.requests().last().unwrap().header("authorization"),
        Some(format!("Bearer {KEY_B}").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_env_file_is_the_source_of_truth_and_a_reload_picks_up_changes() {
    let up = upstream().await;
    let env_dir = tempfile::tempdir().unwrap();
    let env = env_dir.path().join("provd.env");
    std::fs::write(&env, format!("PROVD_A_API_KEY={KEY_A}\n")).unwrap();
    let daemon = daemon(&up, &format!("env_file = \"{}\"", env.display()));
    let client = daemon.client().await;
    assert_eq!(key_used(&client, &up, None).await, bearer(KEY_A));

    std::fs::write(&env, format!("PROVD_A_API_KEY={KEY_B}\n")).unwrap();
    client.reload().await.unwrap();
    assert_eq!(key_used(&client, &up, None).await, bearer(KEY_B));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_keys_survive_a_restart_and_a_rotation_and_need_their_key() {
    let up = upstream().await;
    let state = tempfile::tempdir().unwrap();
    let state_path = state.path().join("state");
    let first = config_daemon(&up, &state_path, "", MASTER);
    assert!(provd(&first.socket, &["creds", "set", "a"], KEY_A, &[]).0);
    let new_master = "1b2c3d4e5f60718293a4b5c68f3a9c2e71d04b6a95e3f0c1d2b7a48e6c5d9f0a";
    let (ok, out, stderr) = provd(&first.socket, &["key", "rotate"], new_master, &[]);
    assert!(ok, "{stderr}");
    assert!(out.contains("re-sealed 1 credentials"), "{out}");
    drop(first);

    // The old key no longer opens the store: a clear start-up error, no plaintext fallback.
    let old = std::process::Command::new(provd_bin())
        .args(["serve", "--socket"])
        .arg(state.path().join("x.sock"))
        .arg("--config")
        .arg(write_config(&up, &state_path, state.path()))
        .env("SECRET_KEY", MASTER)
        .output()
        .unwrap();
    assert!(!old.status.success());
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(stderr.contains("provd: error:"), "{stderr}");

    // No key at all while sealed files exist: refused, naming where a key goes.
    let none = std::process::Command::new(provd_bin())
        .args(["serve", "--socket"])
        .arg(state.path().join("y.sock"))
        .arg("--config")
        .arg(write_config(&up, &state_path, state.path()))
        .env_remove("SECRET_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(
        !none.status.success() && stderr.contains("no master key was found"),
        "{stderr}"
    );

    // A weak key is refused.
    let weak = std::process::Command::new(provd_bin())
        .args(["serve", "--socket"])
        .arg(state.path().join("z.sock"))
        .arg("--config")
        .arg(write_config(&up, &state_path, state.path()))
        .env("SECRET_KEY", "00".repeat(32))
        .output()
        .unwrap();
    assert!(
        !weak.status.success(),
        "{}",
        String::from_utf8_lossy(&weak.stderr)
    );

    let second = config_daemon(&up, &state_path, "", new_master);
    let client = second.client().await;
    assert_eq!(key_used(&client, &up, None).await, bearer(KEY_A));
}

fn write_config(up: &Upstream, state: &Path, dir: &Path) -> PathBuf {
    let path = dir.join("other.toml");
    std::fs::write(
        &path,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[providers.a]\ntype = \"openai\"\nbase_url = \"{}/v1\"\ndefault_model = \"m\"\n",
            state.display(),
            up.base_url
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_key_damaged_or_removed_while_running_is_refused_never_replaced_by_the_environment(
) {
    let up = upstream().await;
    let state = tempfile::tempdir().unwrap().keep();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    // Provider a's environment variable holds another key: the one a silent fall-back
    // would use.
    let daemon = config_daemon_env(&up, &state, "", MASTER, &[("PROVD_UNSET_A", KEY_B)]);
    let (ok, _, stderr) = provd(&daemon.socket, &["creds", "set", "a"], KEY_A, &[]);
    assert!(ok, "{stderr}");
    let client = daemon.client().await;
    assert_eq!(key_used(&client, &up, None).await, bearer(KEY_A));

    // Damage the sealed file in place, as a disk fault or a careless edit would.
    let file = state.join("a.cred");
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();

    // The instance built before keeps the key it was built with.
    assert_eq!(key_used(&client, &up, None).await, bearer(KEY_A));
    // A new instance (another model) needs the key again: refused, saying why.
    let served = up.requests().len();
    let mut other_model = GenerateRequest::prompt("q");
    other_model.model = Some("m2".into());
    let err = provd_tests::generation_error(&client, other_model.clone()).await;
    assert_eq!(err.code, ErrorCode::Unavailable, "{err:?}");
    assert!(!err.retryable, "{err:?}");
    assert!(
        err.message.contains("provider 'a'") && err.message.contains("failed authentication"),
        "{}",
        err.message
    );
    assert_eq!(
        up.requests().len(),
        served,
        "nothing went upstream, with no key"
    );

    // Removed behind the daemon's back: refused too, not "no sealed key, use the env".
    std::fs::remove_file(&file).unwrap();
    let mut third_model = GenerateRequest::prompt("q");
    third_model.model = Some("m3".into());
    let err = provd_tests::generation_error(&client, third_model).await;
    assert_eq!(err.code, ErrorCode::Unavailable, "{err:?}");
    assert!(
        err.message.contains("is gone") && err.message.contains("provd creds set a"),
        "{}",
        err.message
    );
    assert_eq!(up.requests().len(), served);
    // The log is read by a thread of its own: wait for the line rather than race it.
    daemon.wait_for_log("sealed credential cannot be used");

    // Setting it again mends it.
    let (ok, _, stderr) = provd(&daemon.socket, &["creds", "set", "a"], KEY_A, &[]);
    assert!(ok, "{stderr}");
    provd_tests::generation_text(&client, other_model).await;
    assert_eq!(
        up.requests().last().unwrap().header("authorization"),
        bearer(KEY_A).as_deref()
    );
    // And `creds remove` is a deliberate removal: the environment is the source again.
    let (ok, _, stderr) = provd(&daemon.socket, &["creds", "remove", "a"], "", &[]);
    assert!(ok, "{stderr}");
    let mut fourth_model = GenerateRequest::prompt("q");
    fourth_model.model = Some("m4".into());
    provd_tests::generation_text(&client, fourth_model).await;
    assert_eq!(
        up.requests().last().unwrap().header("authorization"),
        bearer(KEY_B).as_deref()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_restrict_a_connection_to_their_providers() {
    let up = upstream().await;
    let daemon = daemon(&up, "");
    assert!(provd(&daemon.socket, &["creds", "set", "a"], KEY_A, &[]).0);
    assert!(provd(&daemon.socket, &["creds", "set", "b"], KEY_B, &[]).0);
    let (ok, token, stderr) = provd(
        &daemon.socket,
        &["token", "create", "--providers", "a", "--expires", "1h"],
        "",
        &[],
    );
    assert!(ok, "{stderr}");
    let token = token.trim().to_owned();
    assert!(token.starts_with("provd_"));
    let stored = std::fs::read_to_string(state_dir(&daemon).join("tokens.json")).unwrap();
    assert!(!stored.contains(&token), "only the token's hash is stored");

    let client = provd_client::Client::connect_with_token(&daemon.socket, "t", Some(&token))
        .await
        .unwrap();
    provd_tests::generation_text(&client, GenerateRequest::prompt("q")).await;
    let mut req = GenerateRequest::prompt("q");
    req.provider = Some("b".into());
    let err = client.generate(req).await.unwrap_err_or_refusal().await;
    assert_eq!(err, ErrorCode::PermissionDenied);
    let models = client.list_models(None).await.unwrap();
    assert!(
        models.models.iter().all(|m| m.provider == "a"),
        "{models:?}"
    );
    // A token never makes an admin, even for the daemon's own user.
    let (ok, _, stderr) = provd(
        &daemon.socket,
        &["creds", "list"],
        "",
        &[("PROVD_TOKEN", &token)],
    );
    assert!(!ok && stderr.contains("permission_denied"), "{stderr}");

    let (ok, listing, _) = provd(&daemon.socket, &["token", "list", "--json"], "", &[]);
    assert!(ok && !listing.contains(&token));
    let id = serde_json::from_str::<serde_json::Value>(&listing).unwrap()["tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(provd(&daemon.socket, &["token", "revoke", &id], "", &[]).0);
    let err = provd_client::Client::connect_with_token(&daemon.socket, "t", Some(&token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
    let err = provd_client::Client::connect_with_token(&daemon.socket, "t", Some("provd_forged"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
}

/// A generation refused before it starts comes back as a reply to `generate` or as the
/// stream's first event; either way, its code.
trait RefusalCode {
    async fn unwrap_err_or_refusal(self) -> ErrorCode;
}

impl RefusalCode for Result<provd_client::Generation, provd_client::ClientError> {
    async fn unwrap_err_or_refusal(self) -> ErrorCode {
        match self {
            Err(e) => e.code(),
            Ok(g) => g.collect_text().await.unwrap_err().code(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_are_refused_admin_requests_and_restricted_providers() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: needs root, to run a client as another user (uid 65534)");
        return;
    }
    let up = upstream().await;
    let daemon = daemon(
        &up,
        "socket_group = \"65534\"\n[access]\nallow_uids = [65534]\n[access.providers.b]\nuids = [0]\n",
    );
    std::fs::set_permissions(
        daemon.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    assert!(provd(&daemon.socket, &["creds", "set", "a"], KEY_A, &[]).0);
    let as_nobody = |args: &[&str]| {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(provd_bin())
            .args(args)
            .env("PROVD_SOCKET", &daemon.socket)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, stderr) = as_nobody(&["creds", "list"]);
    assert!(
        !ok && stderr.contains("permission_denied: creds_list is an admin request"),
        "{stderr}"
    );
    let (ok, _, stderr) = as_nobody(&["shutdown"]);
    assert!(!ok && stderr.contains("permission_denied"), "{stderr}");
    let (ok, out, stderr) = as_nobody(&["generate", "hi"]);
    assert!(ok, "{stderr}");
    assert_eq!(out.trim(), "ok");
    let (ok, _, stderr) = as_nobody(&["generate", "--provider", "b", "hi"]);
    assert!(
        !ok && stderr.contains("may not use provider 'b'"),
        "{stderr}"
    );
    // The daemon's own user may.
    assert!(provd(&daemon.socket, &["creds", "list"], "", &[]).0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_appears_in_any_byte_the_daemon_writes_except_the_sealed_files() {
    let up = Upstream::start(
        |r| match (r.path(), r.header("authorization").unwrap_or("")) {
            ("/v1/models", _) => openai::models(&["m1"]),
            // The refused key is quoted back, as OpenAI does.
            (_, auth) if auth.contains(KEY_B) => openai::error(
                401,
                &format!("Incorrect API key provided: {KEY_B}"),
                "invalid_request_error",
                Some("invalid_api_key"),
            ),
            _ => answer(),
        },
    )
    .await;
    let daemon = daemon(&up, "");
    // Everything a client can see, raw: every frame of a long workload.
    let mut seen = Vec::new();
    assert!(provd(&daemon.socket, &["creds", "set", "a"], KEY_A, &[]).0);
    assert!(provd(&daemon.socket, &["creds", "set", "b"], KEY_B, &[]).0);
    for args in [
        vec!["creds", "list", "--json"],
        vec!["creds", "test", "a"],
        vec!["generate", "--json", "hello"],
        vec!["generate", "--json", "--provider", "b", "hello"],
        vec!["models", "--json"],
        vec!["status", "--json"],
        vec!["providers", "--json"],
        vec!["token", "create", "--providers", "a"],
        vec!["token", "list", "--json"],
        vec!["reload"],
    ] {
        let (_, out, err) = provd(&daemon.socket, &args, "", &[]);
        seen.push(out);
        seen.push(err);
    }
    let mut raw = provd_tests::raw::RawConn::greeted(&daemon.socket);
    raw.request(1, "creds_list", &provd_client::message::Empty {});
    raw.request(2, "status", &provd_client::message::Empty {});
    for _ in 0..2 {
        seen.push(format!("{:?}", raw.read_frame()));
    }
    seen.push(daemon.log());
    for entry in walk(&state_dir(&daemon)) {
        if entry.extension().is_some_and(|e| e == "cred") {
            continue;
        }
        seen.push(String::from_utf8_lossy(&std::fs::read(&entry).unwrap()).into_owned());
    }
    let everything = seen.join("\n");
    assert!(
        everything.contains("Incorrect API key provided"),
        "the refusal was observed"
    );
    for key in [KEY_A, KEY_B, MASTER] {
        assert!(!everything.contains(key), "a secret leaked");
    }
    // And the sealed files do not hold it in clear either.
    for entry in walk(&state_dir(&daemon)) {
        let bytes = std::fs::read(&entry).unwrap();
        for key in [KEY_A, KEY_B] {
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "{} holds a key in clear",
                entry.display()
            );
        }
    }
    // No core dumps of secrets.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert!(core.split_whitespace().nth(4) == Some("0"), "{core}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
