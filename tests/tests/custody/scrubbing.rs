//! Scrubbing (issue 11, part 2) and gateway-steering `additional_params` (part 8).
//!
//! A hostile upstream ([`provd_tests::apis::hostile`]) echoes the request's headers (the
//! key among them) and body, and two keys the daemon holds for *other* providers (one
//! sealed with `provd creds set`, one from the environment), in every error shape of
//! every HTTP provider type. None of the three may appear, whole or in part, in any frame
//! a client received, any `provd generate --json` line, or any daemon log line at trace
//! level. No second uid is needed: the attacker here is the upstream (or whoever reads a
//! client's errors), not a local user.

use std::io::Read;
use std::path::Path;

use provd_client::message::Envelope;
use provd_client::{ErrorCode, GenerateRequest, WireError};
use provd_tests::apis::hostile::{self, Scenario, Which};
use provd_tests::raw::RawConn;
use provd_tests::{provd_bin, run_provd, Daemon};

const MASTER: &str = "5be0c7d1a2f3948b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3";
/// The hostile providers' own key, from the environment.
const OWN_KEY: &str = "sk-own-Q7vX9kLm2PzR4tYwBn8Jc";
/// Provider `sealed_other`'s key, sealed through the daemon.
const SEALED_CANARY: &str = "sk-sealed-H3nB8cVw1XeJq5Ud";
/// Provider `env_other`'s key, from the environment.
const ENV_CANARY: &str = "sk-environ-Zt5Rq0LmUa6KpG";
/// The daemon's quoting cut (`QUOTED_BODY_CHARS`), which the plain-text bodies straddle.
const CUT: usize = 300;

/// Provider id, type, base-URL suffix.
const HOSTILE: [(&str, &str, &str); 5] = [
    ("h_anthropic", "anthropic", ""),
    ("h_openai", "openai", "/v1"),
    ("h_compat", "openai-compatible", "/v1"),
    ("h_ollama", "ollama", ""),
    ("h_gemini", "gemini", ""),
];

fn config(base: &str, state: &Path, extra_table: &str) -> String {
    let mut c = format!(
        "[daemon]\nstate_dir = \"{}\"\ndefault_provider = \"h_openai\"\nkeepalive_interval_ms = 0\n\n",
        state.display()
    );
    for (id, kind, suffix) in HOSTILE {
        c.push_str(&format!(
            "[providers.{id}]\ntype = \"{kind}\"\nbase_url = \"{base}{suffix}\"\ndefault_model = \"m\"\n\
             api_key_env = \"CUSTODY_OWN_KEY\"\nretry_attempts = 0\n{extra_table}\n\n"
        ));
    }
    c.push_str(&format!(
        "[providers.sealed_other]\ntype = \"openai\"\nbase_url = \"{base}/v1\"\ndefault_model = \"m\"\napi_key_env = \"CUSTODY_UNSET\"\n\n\
         [providers.env_other]\ntype = \"openai\"\nbase_url = \"{base}/v1\"\ndefault_model = \"m\"\napi_key_env = \"CUSTODY_ENV_CANARY\"\n"
    ));
    c
}

/// A daemon with a master key, the hostile providers and the two others, logging at
/// trace level, with `SEALED_CANARY` sealed through `provd creds set`.
fn hostile_daemon(base: &str, extra_table: &str) -> Daemon {
    let state = tempfile::tempdir().unwrap().keep();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let daemon = Daemon::builder()
        .config(&config(base, &state, extra_table))
        .env("SECRET_KEY", MASTER)
        .env("CUSTODY_OWN_KEY", OWN_KEY)
        .env("CUSTODY_ENV_CANARY", ENV_CANARY)
        .env("PROVD_LOG", "provd=trace")
        .start();
    seal(&daemon.socket, "sealed_other", SEALED_CANARY);
    daemon
}

fn seal(socket: &Path, provider: &str, key: &str) {
    let out = provd_tests::output_with_stdin(
        std::process::Command::new(provd_bin())
            .args(["creds", "set", provider])
            .env("PROVD_SOCKET", socket),
        key,
    );
    assert!(
        out.status.success(),
        "creds set: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Panics if any 8-byte piece of any canary is in `bytes`: a key cut at a truncation
/// point leaves a prefix, not the whole key.
fn assert_no_canary(what: &str, bytes: &[u8]) {
    for canary in [OWN_KEY, SEALED_CANARY, ENV_CANARY] {
        for piece in canary.as_bytes().windows(8) {
            assert!(
                !bytes.windows(8).any(|w| w == piece),
                "{what}: a piece of a key ({}) leaked in:\n{}",
                String::from_utf8_lossy(piece),
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

/// Sends one generation on `conn` and reads frames up to its reply: every byte received
/// for it (chunks included), and its error.
fn generate_raw(conn: &mut RawConn, id: u32, request: &GenerateRequest) -> (Vec<u8>, WireError) {
    conn.request(id, "generate", request);
    let mut stream: &std::os::unix::net::UnixStream = conn.stream();
    let mut received = Vec::new();
    loop {
        let mut header = [0u8; 4];
        stream.read_exact(&mut header).expect("a frame header");
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        stream.read_exact(&mut payload).expect("a frame payload");
        received.extend_from_slice(&header);
        received.extend_from_slice(&payload);
        match Envelope::parse(&payload).expect("daemon frames parse") {
            Envelope::Reply {
                id: reply,
                outcome: Err(e),
            } if reply == id => return (received, e),
            Envelope::Reply { id: reply, .. } if reply == id => {
                panic!("generation {id} ({request:?}) succeeded against a hostile upstream")
            }
            _ => {}
        }
    }
}

fn request(provider: &str, scenario: &Scenario) -> GenerateRequest {
    let mut r = GenerateRequest::prompt(scenario.prompt());
    r.provider = Some(provider.to_owned());
    r.stream = !matches!(scenario, Scenario::MalformedWhole);
    r
}

/// Every shape that is not a straddling plain-text body.
fn shapes() -> Vec<Scenario> {
    let mut shapes = Vec::new();
    for status in [400, 401, 403, 404, 429, 500, 502, 503] {
        shapes.push(Scenario::Echo { status, filler: 0 });
        shapes.push(Scenario::Json { status });
    }
    shapes.extend([
        Scenario::Echo {
            status: 500,
            filler: 20_000,
        },
        Scenario::Echo {
            status: 400,
            filler: CUT - 5,
        },
        Scenario::OtherJson { status: 500 },
        Scenario::OtherJson { status: 422 },
        Scenario::StreamError,
        Scenario::MalformedStream,
        Scenario::MalformedWhole,
        Scenario::Redirect,
    ]);
    shapes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_the_daemon_holds_reaches_a_client_a_json_line_or_the_log_in_any_error_shape() {
    let upstream = hostile::start(vec![SEALED_CANARY.into(), ENV_CANARY.into()]).await;
    let daemon = hostile_daemon(&upstream.base_url, "");
    let mut conn = RawConn::greeted(&daemon.socket);
    let mut id = 1;
    let mut checked = 0;

    for (provider, _, _) in HOSTILE {
        for scenario in shapes() {
            let (bytes, error) = generate_raw(&mut conn, id, &request(provider, &scenario));
            id += 1;
            let what = format!("{provider} {}", scenario.name());
            assert_no_canary(&what, &bytes);
            // An echo after a long filler is cut before its keys; every other shape
            // quotes them.
            let quoted = !matches!(scenario, Scenario::Echo { filler, .. } if filler > 0);
            assert!(
                !quoted || error.message.contains("[REDACTED]"),
                "{what}: the upstream's echo is not in the error, so nothing was tested: {error}"
            );
            if scenario == Scenario::StreamError {
                assert_eq!(
                    error.chunks,
                    Some(1),
                    "{what}: the text before the error arrives"
                );
            }
            checked += 1;
        }

        // What the command line prints, as a script reads it.
        for scenario in [
            Scenario::Json { status: 500 },
            Scenario::StreamError,
            Scenario::Echo {
                status: 503,
                filler: 0,
            },
            Scenario::Plain {
                status: 500,
                offset: CUT - 40,
                which: Which::Extra(0),
            },
        ] {
            let (status, stdout, stderr) = run_provd(
                &[
                    "generate",
                    "--json",
                    "--provider",
                    provider,
                    &scenario.prompt(),
                ],
                &daemon.socket,
            );
            assert!(!status.success());
            let what = format!("provd generate --json, {provider} {}", scenario.name());
            assert_no_canary(&what, stdout.as_bytes());
            assert_no_canary(&what, stderr.as_bytes());
            let error_line = stdout
                .lines()
                .find(|l| l.contains("\"event\":\"error\""))
                .unwrap_or_else(|| panic!("{what}: no error line in {stdout}"));
            assert!(error_line.contains("[REDACTED]"), "{what}: {error_line}");
        }
    }
    assert!(checked > 100, "{checked} generations checked");

    let (_, log) = {
        daemon.signal(libc::SIGTERM);
        daemon.wait()
    };
    assert!(
        log.contains("[REDACTED]"),
        "the log quotes no upstream error, so nothing was tested:\n{log}"
    );
    assert_no_canary("the daemon's log", log.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_straddling_the_quoting_cut_leaves_no_prefix_behind() {
    // The old order (cut at 300 characters, then scrub) left the prefix of a key that
    // straddled the cut in the message, the reply and the log.
    let upstream = hostile::start(vec![SEALED_CANARY.into(), ENV_CANARY.into()]).await;
    let daemon = hostile_daemon(&upstream.base_url, "");
    let mut conn = RawConn::greeted(&daemon.socket);
    let mut id = 1;
    for (provider, _, _) in HOSTILE {
        for which in [Which::Own, Which::Extra(0), Which::Extra(1)] {
            for offset in (CUT - OWN_KEY.len() - 1)..=(CUT + 1) {
                for status in [500, 400] {
                    let scenario = Scenario::Plain {
                        status,
                        offset,
                        which,
                    };
                    let (bytes, _) = generate_raw(&mut conn, id, &request(provider, &scenario));
                    id += 1;
                    assert_no_canary(&format!("{provider} {}", scenario.name()), &bytes);
                }
            }
            let short = Scenario::Plain {
                status: 401,
                offset: 0,
                which,
            };
            let (bytes, error) = generate_raw(&mut conn, id, &request(provider, &short));
            id += 1;
            assert_no_canary(&format!("{provider} {}", short.name()), &bytes);
            assert!(error.message.contains("[REDACTED] was refused"), "{error}");
        }
    }
    let (_, log) = {
        daemon.signal(libc::SIGTERM);
        daemon.wait()
    };
    assert_no_canary("the daemon's log", log.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_sealed_or_removed_while_the_daemon_runs_is_scrubbed_from_then_on() {
    // The scrubber follows `creds set` and `creds remove`: a key sealed after start is
    // scrubbed at once, and a new one replaces it.
    let upstream = hostile::start(vec!["sk-late-key-Mw3Ts8Yq2VfR".into()]).await;
    let daemon = hostile_daemon(&upstream.base_url, "");
    let mut conn = RawConn::greeted(&daemon.socket);
    let scenario = Scenario::Json { status: 500 };
    let (bytes, _) = generate_raw(&mut conn, 1, &request("h_openai", &scenario));
    assert!(
        String::from_utf8_lossy(&bytes).contains("sk-late-key-Mw3Ts8Yq2VfR"),
        "a string that is no key of the daemon's is left alone"
    );
    seal(&daemon.socket, "sealed_other", "sk-late-key-Mw3Ts8Yq2VfR");
    let (bytes, error) = generate_raw(&mut conn, 2, &request("h_openai", &scenario));
    assert!(
        !String::from_utf8_lossy(&bytes).contains("sk-late-key"),
        "{error}"
    );
    let (ok, _, stderr) = {
        let (status, out, err) = run_provd(&["creds", "remove", "sealed_other"], &daemon.socket);
        (status.success(), out, err)
    };
    assert!(ok, "{stderr}");
    let (bytes, _) = generate_raw(&mut conn, 3, &request("h_openai", &scenario));
    assert!(
        String::from_utf8_lossy(&bytes).contains("sk-late-key-Mw3Ts8Yq2VfR"),
        "a removed key is no longer the daemon's"
    );
}

/// The gateway-steering families, one key of each, in assorted spellings.
const STEERING: &[&str] = &[
    "api_base",
    "Api-Base",
    "base_url",
    "api_key",
    "api_version",
    "extra_headers",
    "headers",
    "default_headers",
    "extra_body",
    "organization",
    "project",
    "deployment_id",
    "user_api_key",
    "user_config",
    "aws_secret_access_key",
    "vertex_credentials",
    "azure_ad_token",
    "litellm_params",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_steering_additional_params_are_refused_by_every_http_provider() {
    let upstream = hostile::start(Vec::new()).await;
    let daemon = hostile_daemon(&upstream.base_url, "");
    let client = daemon.client().await;
    for (provider, _, _) in HOSTILE {
        for key in STEERING {
            let mut r = GenerateRequest::prompt("q");
            r.provider = Some(provider.into());
            r.additional_params
                .insert((*key).into(), serde_json::json!("http://attacker.example"));
            let err = provd_tests::generation_error(&client, r).await;
            assert_eq!(
                err.code,
                ErrorCode::InvalidRequest,
                "{provider} {key}: {err}"
            );
            assert!(
                err.message.contains(&format!("additional_params.{key} ")),
                "{provider} {key}: {err}"
            );
            assert!(
                err.message
                    .contains(&format!("providers.{provider}.allow_additional_params")),
                "{provider} {key}: {err}"
            );
        }
    }
    assert!(
        upstream.requests().is_empty(),
        "a refused request never reaches the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_allow_list_lets_the_gateway_params_it_names_through() {
    let upstream = hostile::start(Vec::new()).await;
    let daemon = hostile_daemon(
        &upstream.base_url,
        "allow_additional_params = [\"api_base\"]",
    );
    let client = daemon.client().await;
    for (provider, _, _) in HOSTILE {
        let mut r = GenerateRequest::prompt(Scenario::Json { status: 400 }.prompt());
        r.provider = Some(provider.into());
        r.additional_params
            .insert("api_base".into(), serde_json::json!("http://gateway.local"));
        // The upstream answers with an error, but only once it has the request.
        provd_tests::generation_error(&client, r).await;
        let sent = upstream.requests().last().unwrap().json();
        assert_eq!(sent["api_base"], "http://gateway.local", "{provider}");

        let mut r = GenerateRequest::prompt("q");
        r.provider = Some(provider.into());
        r.additional_params
            .insert("api_key".into(), serde_json::json!("sk-mine"));
        let err = provd_tests::generation_error(&client, r).await;
        assert_eq!(
            err.code,
            ErrorCode::InvalidRequest,
            "{provider}: only the listed key passes"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_too_short_to_scrub_is_warned_about_once_by_name_never_shown() {
    let upstream = hostile::start(Vec::new()).await;
    let state = tempfile::tempdir().unwrap();
    let short = "k7Zq2Xw";
    let daemon = Daemon::builder()
        .config(&config(&upstream.base_url, state.path(), ""))
        .env("CUSTODY_OWN_KEY", OWN_KEY)
        .env("CUSTODY_ENV_CANARY", short)
        .start();
    let warning = daemon.wait_for_log("cannot be scrubbed");
    assert!(warning.contains("CUSTODY_ENV_CANARY"), "{warning}");
    // A reload loads the keys again; the same short key is not warned about twice.
    daemon.client().await.reload().await.unwrap();
    daemon.wait_for_log("configuration reloaded");
    let log = daemon.log();
    assert_eq!(log.matches("cannot be scrubbed").count(), 1, "{log}");
    assert!(!log.contains(short), "{log}");
}
