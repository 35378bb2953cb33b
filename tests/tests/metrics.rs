//! `GET /metrics`, end to end: generations that complete, fail with a code, are retried
//! after a 429 and fall back after a 500 (against OpenAI mock upstreams), then the
//! metrics read over the HTTP Unix socket and parsed by the official Prometheus client's
//! parsers (`prometheus_client`, in the suite's Python: `PROVD_PYTHON`), with the exact
//! names, types, label sets and counts; neither the provider key nor any prompt text nor
//! a client-chosen model name in the body; and on the loopback listener only with a
//! provd token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use provd_client::{ErrorCode, GenerateRequest};
use provd_tests::apis::{openai, TEST_KEY};
use provd_tests::upstream::{Reply, Upstream};
use provd_tests::{run_provd, Daemon};
use serde::Deserialize;

/// Prompt text that must never reach the metrics.
const PROMPT: &str = "PROMPT-purple-elephant-7731";
/// A model no configuration names: a client's free choice.
const CLIENTS_MODEL: &str = "made-up-by-the-client-4411";

/// A successful answer naming the model the request asked for, with usage (3, 1).
fn answer(request: &provd_tests::upstream::Recorded) -> Reply {
    let model = request.json()["model"].as_str().unwrap_or("?").to_owned();
    openai::stream_reply(&openai::stream_text(&model, &["ok"], "stop", (3, 1)), 64)
}

/// The upstreams: one that answers, one that answers after a 429, one that always
/// fails with a 500, one that refuses every request with a 400 (quoting the key and the
/// prompt, as a careless upstream might).
struct Upstreams {
    ok: Upstream,
    flaky: Upstream,
    down: Upstream,
    strict: Upstream,
}

async fn upstreams() -> Upstreams {
    let seen = AtomicUsize::new(0);
    Upstreams {
        ok: Upstream::start(answer).await,
        flaky: Upstream::start(move |r| {
            if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                openai::error(429, "Rate limit reached", "requests", None)
                    .header("retry-after-ms", "1")
            } else {
                answer(r)
            }
        })
        .await,
        down: Upstream::start(|_| openai::error(500, "down", "server_error", None)).await,
        strict: Upstream::start(|_| {
            openai::error(
                400,
                &format!("bad key {TEST_KEY} for {PROMPT}"),
                "invalid_request_error",
                None,
            )
        })
        .await,
    }
}

fn provider(id: &str, upstream: &Upstream, extra: &str) -> String {
    format!(
        "[providers.{id}]\ntype = \"openai-compatible\"\nbase_url = \"{}/v1\"\ndefault_model = \"{id}-model\"\n\
         api_key_env = \"PROVD_TEST_KEY\"\n{extra}\n",
        upstream.base_url
    )
}

fn daemon(upstreams: &Upstreams, extra: &str) -> Daemon {
    let config = format!(
        "[daemon]\ndefault_provider = \"ok\"\nkeepalive_interval_ms = 0\n{extra}\n{}{}{}{}",
        provider("ok", &upstreams.ok, "retry_attempts = 0"),
        provider("flaky", &upstreams.flaky, "retry_attempts = 2"),
        provider(
            "down",
            &upstreams.down,
            "retry_attempts = 0\nfallbacks = [\"ok/fallback-model\"]"
        ),
        provider("strict", &upstreams.strict, "retry_attempts = 0"),
    );
    Daemon::builder()
        .config(&config)
        .env("PROVD_TEST_KEY", TEST_KEY)
        .start()
}

fn request(provider: &str, model: Option<&str>) -> GenerateRequest {
    let mut request = GenerateRequest::prompt(PROMPT);
    request.provider = Some(provider.into());
    request.model = model.map(str::to_owned);
    request
}

/// Runs the generations whose counts the tests assert.
async fn run_generations(daemon: &Daemon) {
    let client = daemon.client().await;
    for request in [
        request("ok", None),
        request("ok", Some(CLIENTS_MODEL)),
        request("flaky", None),
        request("down", None),
    ] {
        let (text, _) = provd_tests::generation_text(&client, request).await;
        assert_eq!(text, "ok");
    }
    let e = provd_tests::generation_error(&client, request("strict", None)).await;
    assert_eq!(e.code, ErrorCode::InvalidRequest, "{e:?}");
}

/// One request on a new HTTP/1.1 connection over `io`: status, headers and body.
async fn get<S>(
    io: S,
    method: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP handshake");
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = hyper::Request::builder().method(method).uri("/metrics");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Empty::<Bytes>::new()).unwrap())
        .await
        .expect("a response");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("the body").to_bytes();
    task.abort();
    (
        parts.status,
        parts.headers,
        String::from_utf8(bytes.to_vec()).expect("UTF-8 metrics"),
    )
}

/// `/metrics` over the daemon's HTTP Unix socket.
async fn scrape_unix(
    daemon: &Daemon,
    method: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap, String) {
    let socket = daemon.socket.with_file_name("http.sock");
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    let mut all = vec![("host", "localhost")];
    all.extend_from_slice(headers);
    get(stream, method, &all).await
}

#[derive(Debug, Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// `body` parsed by `prometheus_client`'s parser for `format` (`prometheus` or
/// `openmetrics`), or `None` (the test skips) when the suite's Python lacks it.
fn parse(body: &str, format: &str) -> Option<Vec<Family>> {
    if !provd_tests::have_python_package("prometheus_client") {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("prometheus_parse.py");
    let mut command = std::process::Command::new(provd_tests::python());
    command.arg(script).arg(format);
    let out = provd_tests::output_with_stdin(&mut command, body);
    assert!(
        out.status.success(),
        "prometheus_client refused the {format} body: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("the parser's JSON"))
}

/// The parsed families, with look-ups by name and exact label set.
struct Parsed(Vec<Family>);

impl Parsed {
    fn family(&self, name: &str) -> &Family {
        self.0
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    /// The value of sample `name` with exactly `labels`.
    fn value(&self, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.family(family)
            .samples
            .iter()
            .find(|s| s.name == name && s.labels == wanted)
            .unwrap_or_else(|| {
                panic!(
                    "no {name}{wanted:?} among {:?}",
                    self.family(family).samples
                )
            })
            .value
    }

    /// Every label set of family `name`'s samples called `sample`, as label names.
    fn label_names(&self, family: &str, sample: &str) -> BTreeSet<Vec<String>> {
        self.family(family)
            .samples
            .iter()
            .filter(|s| s.name == sample)
            .map(|s| s.labels.keys().cloned().collect())
            .collect()
    }
}

fn names(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_metrics_parse_as_prometheus_text_with_exact_counts_and_only_configured_labels() {
    let upstreams = upstreams().await;
    let daemon = daemon(&upstreams, "");
    run_generations(&daemon).await;

    let (status, headers, body) = scrape_unix(&daemon, "GET", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for secret in [TEST_KEY, PROMPT, CLIENTS_MODEL, "purple-elephant"] {
        assert!(!body.contains(secret), "{secret} in the metrics:\n{body}");
    }
    let Some(families) = parse(&body, "prometheus") else {
        return;
    };
    let m = Parsed(families);

    let types: BTreeMap<&str, &str> =
        m.0.iter()
            .map(|f| (f.name.as_str(), f.kind.as_str()))
            .collect();
    for (name, kind) in [
        ("gen_ai_server_request_duration_seconds", "histogram"),
        ("gen_ai_server_time_to_first_token_seconds", "histogram"),
        ("gen_ai_client_token_usage", "histogram"),
        ("provd_requests", "counter"),
        ("provd_errors", "counter"),
        ("provd_tokens", "counter"),
        ("provd_retries", "counter"),
        ("provd_fallbacks", "counter"),
        ("provd_upstream_responses", "counter"),
        ("provd_active_streams", "gauge"),
        ("provd_connections", "gauge"),
        ("provd_uptime_seconds", "gauge"),
    ] {
        assert_eq!(types.get(name), Some(&kind), "{name} in {types:?}");
    }

    let requests = |p: &str, model: &str, outcome: &str| {
        m.value(
            "provd_requests",
            "provd_requests_total",
            &[("provider", p), ("model", model), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("ok", "ok-model", "completed"), 1.0);
    assert_eq!(requests("ok", "other", "completed"), 1.0);
    assert_eq!(requests("flaky", "flaky-model", "completed"), 1.0);
    assert_eq!(requests("down", "down-model", "completed"), 1.0);
    assert_eq!(requests("strict", "strict-model", "failed"), 1.0);
    assert_eq!(m.family("provd_requests").samples.len(), 5);
    assert_eq!(
        m.value(
            "provd_errors",
            "provd_errors_total",
            &[
                ("provider", "strict"),
                ("model", "strict-model"),
                ("code", "invalid_request")
            ]
        ),
        1.0
    );
    assert_eq!(m.family("provd_errors").samples.len(), 1);
    assert_eq!(
        m.value(
            "provd_retries",
            "provd_retries_total",
            &[("provider", "flaky"), ("model", "flaky-model")]
        ),
        1.0
    );
    assert_eq!(m.family("provd_retries").samples.len(), 1);
    assert_eq!(
        m.value(
            "provd_fallbacks",
            "provd_fallbacks_total",
            &[("provider", "down"), ("model", "down-model")]
        ),
        1.0
    );
    assert_eq!(m.family("provd_fallbacks").samples.len(), 1);
    let upstream = |p: &str, status: &str| {
        m.value(
            "provd_upstream_responses",
            "provd_upstream_responses_total",
            &[("provider", p), ("status", status)],
        )
    };
    // The ok upstream answered its two requests and the fallback from down.
    assert_eq!(upstream("ok", "200"), 3.0);
    assert_eq!(upstream("flaky", "429"), 1.0);
    assert_eq!(upstream("flaky", "200"), 1.0);
    assert_eq!(upstream("down", "500"), 1.0);
    assert_eq!(upstream("strict", "400"), 1.0);
    assert_eq!(m.family("provd_upstream_responses").samples.len(), 5);
    assert_eq!(
        m.value(
            "provd_tokens",
            "provd_tokens_total",
            &[("provider", "ok"), ("model", "ok-model"), ("type", "input")]
        ),
        3.0
    );

    let gen_ai = |p: &'static str, model: &'static str, response: &'static str| {
        vec![
            ("gen_ai_operation_name", "chat"),
            ("gen_ai_provider_name", p),
            ("gen_ai_request_model", model),
            ("gen_ai_response_model", response),
        ]
    };
    let duration = "gen_ai_server_request_duration_seconds";
    assert_eq!(
        m.value(
            duration,
            &format!("{duration}_count"),
            &gen_ai("ok", "ok-model", "ok-model")
        ),
        1.0
    );
    // The fallback answered as the model its target names.
    assert_eq!(
        m.value(
            duration,
            &format!("{duration}_count"),
            &gen_ai("down", "down-model", "fallback-model")
        ),
        1.0
    );
    let failed = [
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", "strict"),
        ("gen_ai_request_model", "strict-model"),
        ("error_type", "invalid_request"),
    ];
    assert_eq!(
        m.value(duration, &format!("{duration}_count"), &failed),
        1.0
    );
    let mut inf = failed.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(m.value(duration, &format!("{duration}_bucket"), &inf), 1.0);
    let first = "gen_ai_server_time_to_first_token_seconds";
    assert_eq!(
        m.value(
            first,
            &format!("{first}_count"),
            &gen_ai("flaky", "flaky-model", "flaky-model")
        ),
        1.0
    );
    assert!(
        m.family(first)
            .samples
            .iter()
            .all(|s| s.labels["gen_ai_provider_name"] != "strict"),
        "the time to first token counts completed generations only"
    );
    let usage = "gen_ai_client_token_usage";
    let mut input = gen_ai("ok", "ok-model", "ok-model");
    input.push(("gen_ai_token_type", "input"));
    assert_eq!(m.value(usage, &format!("{usage}_count"), &input), 1.0);
    assert_eq!(m.value(usage, &format!("{usage}_sum"), &input), 3.0);
    input.push(("le", "4.0"));
    assert_eq!(m.value(usage, &format!("{usage}_bucket"), &input), 1.0);
    *input.last_mut().unwrap() = ("le", "1.0");
    assert_eq!(m.value(usage, &format!("{usage}_bucket"), &input), 0.0);

    assert_eq!(
        m.label_names("provd_requests", "provd_requests_total"),
        BTreeSet::from([names(&["provider", "model", "outcome"])])
    );
    assert_eq!(
        m.label_names("provd_upstream_responses", "provd_upstream_responses_total"),
        BTreeSet::from([names(&["provider", "status"])])
    );
    // Every provider and model label is a configured name or `other`.
    let providers = ["ok", "flaky", "down", "strict"];
    let models = [
        "ok-model",
        "flaky-model",
        "down-model",
        "strict-model",
        "fallback-model",
        "other",
    ];
    for family in &m.0 {
        for sample in &family.samples {
            for (name, value) in &sample.labels {
                let allowed: &[&str] = match name.as_str() {
                    "provider" | "gen_ai_provider_name" => &providers,
                    "model" | "gen_ai_request_model" | "gen_ai_response_model" => &models,
                    _ => continue,
                };
                assert!(allowed.contains(&value.as_str()), "{name}={value}");
            }
        }
    }
    assert!(m.value("provd_connections", "provd_connections", &[]) >= 1.0);

    // HEAD answers the same headers, without the body.
    let (status, headers, body) = scrape_unix(&daemon, "HEAD", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(body.is_empty());
}

#[tokio::test]
async fn a_scraper_asking_for_openmetrics_gets_it_and_the_openmetrics_parser_accepts_it() {
    let upstreams = upstreams().await;
    let daemon = daemon(&upstreams, "");
    run_generations(&daemon).await;
    let (status, headers, body) = scrape_unix(
        &daemon,
        "GET",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(body.ends_with("# EOF\n"));
    eprintln!("{body}");
    let Some(families) = parse(&body, "openmetrics") else {
        return;
    };
    let m = Parsed(families);
    assert_eq!(m.family("provd_requests").kind, "counter");
    assert_eq!(
        m.value(
            "provd_retries",
            "provd_retries_total",
            &[("provider", "flaky"), ("model", "flaky-model")]
        ),
        1.0
    );
}

#[tokio::test]
async fn the_loopback_listener_serves_the_metrics_only_with_a_provd_token() {
    let upstreams = upstreams().await;
    let daemon = daemon(&upstreams, "[http]\nlisten = \"127.0.0.1:0\"\n");
    let line = daemon.wait_for_log("http listening on 127.0.0.1:");
    let port: u16 = line
        .split("http listening on 127.0.0.1:")
        .nth(1)
        .map(|rest| {
            rest.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    run_generations(&daemon).await;
    let host = format!("127.0.0.1:{port}");
    let tcp = || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect over TCP")
    };

    let (status, _, body) = get(tcp().await, "GET", &[("host", &host)]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(!body.contains("provd_requests"), "{body}");
    let (status, _, _) = get(
        tcp().await,
        "GET",
        &[
            ("host", &host),
            ("authorization", "Bearer sk-not-a-provd-token"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (done, token, stderr) = run_provd(
        &["token", "create", "--providers", "ok,flaky,down,strict"],
        &daemon.socket,
    );
    assert!(done.success(), "{stderr}");
    let bearer = format!("Bearer {}", token.trim());
    let (status, headers, body) = get(
        tcp().await,
        "GET",
        &[("host", &host), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(
        body.contains("provd_requests_total{provider=\"ok\""),
        "{body}"
    );
    for secret in [TEST_KEY, PROMPT, CLIENTS_MODEL, token.trim()] {
        assert!(!body.contains(secret), "{secret} in the metrics:\n{body}");
    }
}

#[tokio::test]
async fn another_user_sees_only_the_providers_it_may_use_without_model_labels() {
    use provd_tests::other_user::{command_as, let_every_user_connect, root_or_skip};
    use std::os::unix::fs::PermissionsExt;
    if !root_or_skip("another_user_sees_only_the_providers_it_may_use_without_model_labels") {
        return;
    }
    const USER: u32 = 64_911;
    const NOBODY_HERE: u32 = 64_912;
    let upstreams = upstreams().await;
    let daemon = daemon(
        &upstreams,
        &format!(
            "[access]\nallow_uids = [{USER}]\n[access.providers.strict]\nuids = [{NOBODY_HERE}]\n"
        ),
    );
    run_generations(&daemon).await;
    let_every_user_connect(&daemon);
    let socket = daemon.socket.with_file_name("http.sock");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    let out = command_as(USER, "curl")
        .args(["--silent", "--fail", "--unix-socket"])
        .arg(&socket)
        .arg("http://localhost/metrics")
        .output()
        .expect("run curl");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{body}");
    // Its providers, the models of each added up (ok's own model and the client's).
    assert!(
        body.contains("provd_requests_total{provider=\"ok\",outcome=\"completed\"} 2\n"),
        "{body}"
    );
    assert!(
        body.contains("provd_upstream_responses_total{provider=\"ok\",status=\"200\"} 3\n"),
        "{body}"
    );
    assert!(
        body.contains("provd_retries_total{provider=\"flaky\"} 1\n"),
        "{body}"
    );
    for hidden in [
        "strict",
        "model=",
        "gen_ai_request_model",
        "gen_ai_response_model",
        "provd_ledger",
        TEST_KEY,
        PROMPT,
    ] {
        assert!(
            !body.contains(hidden),
            "{hidden} shown to uid {USER}:\n{body}"
        );
    }
}
