//! The LiteLLM proxy as a gateway whose one model is provd's loopback OpenAI route: what
//! the smoke test (`tests/http_litellm.rs`) and the benchmark (`bench/http.rs`) start.
//!
//! LiteLLM comes from `tests/python/requirements.txt` (the library and the modules its
//! proxy imports at start-up) and runs from `$PROVD_PYTHON` with one worker on a free
//! loopback port, from a `config.yaml` written to a private directory. It is kept off the
//! network ([`OFFLINE_ENV`]): the tests have none but loopback, and a gateway under test
//! must not phone home. Readiness is its `/health/readiness` answering 200, polled.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Daemon;

/// The model name LiteLLM's clients ask for; LiteLLM maps it to provd's model.
pub const MODEL: &str = "provd";

/// The proxy's master key: what its clients send as their bearer token. LiteLLM refuses
/// to start without one (or with a weak one) unless told it is a development set-up.
pub const MASTER_KEY: &str = "sk-provd-tests-litellm-master-key-4f1c9a7e2b";

/// The environment that keeps LiteLLM from fetching anything of its own: the bundled model
/// cost map instead of the one on GitHub, the offline mode its other catalogs honour, its
/// usage telemetry off, no feedback banner, and the Hugging Face hub offline (its
/// tokenizers are bundled).
pub const OFFLINE_ENV: [(&str, &str); 5] = [
    ("LITELLM_LOCAL_MODEL_COST_MAP", "True"),
    ("LITELLM_OFFLINE_MODE", "true"),
    ("LITELLM_TELEMETRY_DISABLED", "true"),
    ("LITELLM_DONT_SHOW_FEEDBACK_BOX", "true"),
    ("HF_HUB_OFFLINE", "1"),
];

/// How long the proxy may take to answer its readiness check. Its start-up imports a
/// large package (about 10 s on two shared cores); generous for a loaded CI machine. A
/// safety net against hangs, not a synchronisation mechanism.
pub const READY_TIMEOUT: Duration = Duration::from_secs(240);

/// Why `python` cannot run the LiteLLM proxy, if it cannot: the check is a lookup of the
/// package, not its (slow) import.
pub fn unavailable(python: &OsStr) -> Option<String> {
    let found = Command::new(python)
        .args([
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('litellm') is None)",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    (!found).then(|| {
        format!(
            "{} cannot import litellm (scripts/test makes a virtual environment with tests/python/requirements.txt and sets PROVD_PYTHON to it)",
            python.to_string_lossy()
        )
    })
}

/// The port of `daemon`'s loopback HTTP listener (`[http] listen = "127.0.0.1:0"`), read
/// from its log line.
pub fn provd_loopback_port(daemon: &Daemon) -> u16 {
    let needle = "http listening on 127.0.0.1:";
    let line = daemon.wait_for_log(needle);
    line.split(needle)
        .nth(1)
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no port in {line:?}"))
}

/// A free port on 127.0.0.1 for a server that binds by number. Another process could take
/// it between here and the bind; the proxy would then fail to start and say so.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free loopback port")
        .port()
}

/// A running LiteLLM proxy; killed on drop.
pub struct LiteLlm {
    child: Child,
    /// `http://127.0.0.1:PORT`, the proxy's own address.
    pub base_url: String,
    /// The config and the proxy's log, private to this proxy.
    dir: tempfile::TempDir,
}

impl LiteLlm {
    /// Starts the proxy from `python` with [`MODEL`] routed to `model` at `api_base` (an
    /// OpenAI-compatible `…/v1`) with `api_key`, and returns once it is ready. Panics with
    /// its log if it exits or is not ready within [`READY_TIMEOUT`].
    pub async fn start(python: &OsStr, api_base: &str, model: &str, api_key: &str) -> LiteLlm {
        let dir = tempfile::tempdir().expect("a directory for LiteLLM");
        // The key reaches LiteLLM through its environment (`os.environ/…`), not the file.
        let config = format!(
            "model_list:\n\
             \x20 - model_name: {MODEL}\n\
             \x20   litellm_params:\n\
             \x20     model: openai/{model}\n\
             \x20     api_base: {api_base}\n\
             \x20     api_key: os.environ/PROVD_TOKEN\n\
             general_settings:\n\
             \x20 master_key: {MASTER_KEY}\n"
        );
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).expect("write LiteLLM's config");
        let log = std::fs::File::create(dir.path().join("litellm.log")).expect("LiteLLM's log");
        let port = free_port();
        let mut command = Command::new(python);
        // `-c` rather than the `litellm` script beside the interpreter: PROVD_PYTHON may
        // be any Python that has the package.
        command
            .args([
                "-c",
                "from litellm.proxy.proxy_cli import run_server; run_server()",
            ])
            .arg("--config")
            .arg(&config_path)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--num_workers", "1"])
            .current_dir(dir.path())
            .env("PROVD_TOKEN", api_key)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log's descriptor"))
            .stderr(log);
        for (name, value) in OFFLINE_ENV {
            command.env(name, value);
        }
        let child = command.spawn().expect("start the LiteLLM proxy");
        let mut proxy = LiteLlm {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        proxy.wait_ready().await;
        proxy
    }

    /// Polls `/health/readiness` until it answers 200; panics with the log if the proxy
    /// exits or the deadline passes.
    async fn wait_ready(&mut self) {
        crate::install_crypto_provider();
        let http = reqwest::Client::new();
        let url = format!("{}/health/readiness", self.base_url);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(response) = http.get(&url).send().await {
                if response.status().is_success() {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the LiteLLM proxy exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the LiteLLM proxy was not ready within {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            // Polling its readiness endpoint: nothing else says when it is up.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the proxy printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("litellm.log")
    }

    /// The proxy's process id (for its CPU time in the benchmark).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
