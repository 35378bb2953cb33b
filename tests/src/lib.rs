//! The provd test harness: start the real `provd` binary on a private socket and state
//! directory, wait for it to be ready by reading its log (never by sleeping), and talk
//! to it through the Rust client or raw bytes.

pub mod apis; // mock upstreams' wire formats, one file per provider API, and shared checks
pub mod bench; // the benchmarks: load, memory, cache, TLS, and their statistics
pub mod generation; // requests to send and the ways to read a generation back
pub mod litellm; // the LiteLLM proxy started as a gateway in front of provd (smoke test, benchmark)
pub mod other_user; // running a command as another uid (setpriv)
pub mod raw; // a raw protocol connection, for bytes no well-behaved client sends
pub mod soak; // the soak: many clients, random cancels, every chunk checked
pub mod upstream; // the mock upstream HTTP server and what it saw

pub use generation::{
    drain_chunks, drain_generation, generation_chunks, generation_error, generation_outcome,
    generation_text, mock_request, numbered, numbered_text, weather_schema, weather_tool, Outcome,
};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use provd_client::Client;

/// Makes ring the process's TLS crypto provider, which a reqwest client built without
/// one needs (benchmarks call reqwest directly). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The Python the tests run: `$PROVD_PYTHON` (scripts/test sets it to the virtual
/// environment it made under `target/`, with the suite's pinned packages), else `python3`.
pub fn python() -> std::ffi::OsString {
    std::env::var_os("PROVD_PYTHON")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".into())
}

/// Whether `tool` runs and `args` succeed (what a test needs from the host: a Python
/// package, curl, go); prints SKIPPED and returns false when not, except in CI, where
/// it is installed and a missing one is a failure.
pub fn have(what: &str, tool: &std::ffi::OsStr, args: &[&str]) -> bool {
    let ok = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let why = format!(
            "{what} is missing ({} {args:?} failed; scripts/test makes the Python environment from tests/python/requirements.txt)",
            tool.to_string_lossy()
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "{why}, and CI installs it"
        );
        eprintln!("SKIPPED: {why}");
    }
    ok
}

/// Whether the suite's [`python`] imports `module`, as [`have`] says it.
pub fn have_python_package(module: &str) -> bool {
    have(
        &format!("the {module} Python package"),
        &python(),
        &["-c", &format!("import {module}")],
    )
}

/// What the official OpenAI and Anthropic SDKs (and the HTTP stack under them) read
/// from their environment: a test that runs them removes these, so where a script
/// connects is the test's to set, not the host's.
pub const SDK_ENV_VARS: &[&str] = &[
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
];

/// The workspace's root directory (the parent of `tests/`), for tests that read its files
/// or run its scripts.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// How long a daemon may take to print "listening" before a test gives up. Generous: the
/// machine is shared and a debug build starts slowly under load. A safety net against
/// hangs, not a synchronisation mechanism.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of the `provd` binary under test: `$PROVD_BIN`, else the one cargo built next to
/// the running test binary (`target/<profile>/provd`).
pub fn provd_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROVD_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe
        .parent()
        .expect("test binary has a directory")
        .to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("provd");
    assert!(
        bin.exists(),
        "{} does not exist: build it with `cargo build -p provd` (nextest --workspace does)",
        bin.display()
    );
    bin
}

/// A running daemon with its own temp directory. Killed on drop.
pub struct Daemon {
    child: Option<Child>,
    /// The socket it listens on.
    pub socket: PathBuf,
    /// Its private directory (socket, config, state).
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    log_lines: mpsc::Receiver<String>,
}

/// How to start a daemon.
#[derive(Default)]
pub struct DaemonBuilder {
    config: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    env_removed: Vec<String>,
    socket: Option<PathBuf>,
}

impl DaemonBuilder {
    /// Uses this TOML as the config file.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Listens on this path instead of one in the daemon's own temp dir.
    pub fn socket(mut self, path: &Path) -> Self {
        self.socket = Some(path.to_owned());
        self
    }

    /// Adds an argument after `serve`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Configures one provider `p` of type `kind` at `base_url`
    /// ([`apis::provider_config`]: no keepalives, `retry_attempts` retries, `extra` in the
    /// provider's table) and gives the daemon the test key ([`apis::TEST_KEY`]) in the
    /// variable that config names: how a test points the daemon at a mock upstream.
    pub fn provider(self, kind: &str, base_url: &str, retry_attempts: u32, extra: &str) -> Self {
        self.config(&apis::provider_config(
            kind,
            base_url,
            retry_attempts,
            extra,
        ))
        .env("PROVD_TEST_KEY", apis::TEST_KEY)
    }

    /// Removes an environment variable the daemon would otherwise inherit.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_removed.push(key.to_owned());
        self
    }

    /// Starts the daemon and waits until it listens.
    pub fn start(self) -> Daemon {
        let daemon = self.spawn();
        daemon.wait_for_log("listening");
        daemon
    }

    /// Starts the daemon without waiting.
    pub fn spawn(self) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("provd-test-")
            .tempdir()
            .expect("tempdir");
        let socket = self
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("run").join("provd.sock"));
        let mut cmd = Command::new(provd_bin());
        cmd.arg("serve").arg("--socket").arg(&socket);
        if let Some(toml) = &self.config {
            let path = dir.path().join("provd.toml");
            std::fs::write(&path, toml).expect("write config");
            cmd.arg("--config").arg(&path);
        } else {
            // Keep a developer's own config out of the test.
            cmd.env("PROVD_CONFIG", "");
            cmd.env("XDG_CONFIG_HOME", dir.path().join("no-config"));
        }
        cmd.args(&self.args)
            .env_remove("PROVD_SOCKET")
            // Its own state directory (ledger, tokens, sealed keys), not the host's: as
            // root the default is /var/lib/provd, which every test daemon would share. A
            // test's `env` or `[daemon] state_dir` still wins.
            .env("STATE_DIRECTORY", dir.path().join("state"))
            .env("PROVD_LOG", "provd=debug")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for key in &self.env_removed {
            cmd.env_remove(key);
        }
        let mut child = cmd.spawn().expect("spawn provd");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
                if tx.send(line).is_err() {
                    // Nobody waits for lines any more; keep draining so the daemon
                    // never blocks on a full stderr pipe.
                }
            }
        });
        Daemon {
            child: Some(child),
            socket,
            dir,
            log,
            log_lines: rx,
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Daemon {
    /// A builder.
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    /// A daemon with the embedded default config (one mock provider).
    pub fn start() -> Daemon {
        Daemon::builder().start()
    }

    /// A daemon with this config.
    pub fn with_config(toml: &str) -> Daemon {
        Daemon::builder().config(toml).start()
    }

    /// A daemon whose one provider `p` is of type `kind` at `base_url`, with the test key
    /// (see [`DaemonBuilder::provider`]).
    pub fn for_provider(kind: &str, base_url: &str, retry_attempts: u32, extra: &str) -> Daemon {
        Daemon::builder()
            .provider(kind, base_url, retry_attempts, extra)
            .start()
    }

    /// Blocks until a log line contains `needle` (lines already seen count too).
    /// Panics with the whole log if the daemon exits or [`READY_TIMEOUT`] passes first.
    pub fn wait_for_log(&self, needle: &str) -> String {
        if let Some(line) = self.log().lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        loop {
            match self.log_lines.recv_timeout(READY_TIMEOUT) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("provd never logged {needle:?}; log so far:\n{}", self.log()),
            }
        }
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// An async client connected to it.
    pub async fn client(&self) -> Client {
        Client::connect_as(&self.socket, "provd-tests")
            .await
            .expect("connect to the test daemon")
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        let rc = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the daemon to exit (after a signal, say) and returns its status and log.
    pub fn wait(mut self) -> (ExitStatus, String) {
        let status = self.child.take().expect("running").wait().expect("wait");
        // The stderr thread ends when the pipe closes; give it the remaining lines.
        while self.log_lines.recv_timeout(Duration::from_secs(5)).is_ok() {}
        (status, self.log())
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A failing test shows what the daemon said; a passing one stays quiet.
        if std::thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("--- the daemon's log ---\n{log}");
        }
    }
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `provd` with arguments (a client command) and returns status, stdout, stderr.
pub fn run_provd(args: &[&str], socket: &Path) -> (ExitStatus, String, String) {
    let out = Command::new(provd_bin())
        .args(args)
        .env("PROVD_SOCKET", socket)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run provd");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `command` with `stdin` written to its standard input (then closed) and collects
/// its output: how a test gives a secret to a `provd` command, never in argv.
pub fn output_with_stdin(command: &mut Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the command");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .expect("write the command's stdin");
    child.wait_with_output().expect("wait for the command")
}

/// Calls `f` until it returns `Some`, at most `tries` times, yielding between tries. For
/// conditions the daemon reaches asynchronously (a disconnect noticed), observed through
/// its own `status` reply, so each try is a real round trip rather than a sleep.
pub async fn eventually<T, F, Fut>(tries: usize, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..tries {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::task::yield_now().await;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::workspace;
    use std::path::Path;

    /// Every file under `dir`, as paths relative to `dir`.
    fn files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let entry = entry.expect("a directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = format!("{prefix}{name}");
            if entry.file_type().expect("a file type").is_dir() {
                if name != "__pycache__" {
                    files(&entry.path(), &format!("{path}/"), out);
                }
            } else if !name.ends_with(".pyc") {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_test_file_is_in_the_readme() {
        let tests = workspace().join("tests");
        let readme = std::fs::read_to_string(tests.join("README.md")).expect("tests/README.md");
        let mut missing = Vec::new();
        // Each table names its files relative to its own directory.
        for (dir, prefix) in [
            ("tests", ""),
            ("src", ""),
            ("src/bin", ""),
            ("c", "c/"),
            ("cpp", "cpp/"),
            ("go", "go/"),
            ("python", "python/"),
        ] {
            let mut found = Vec::new();
            files(&tests.join(dir), prefix, &mut found);
            for file in found {
                if dir == "src" && file.starts_with("bin/") {
                    continue;
                }
                if !readme.contains(&format!("`{file}`")) {
                    missing.push(format!("tests/{dir}/{}", file.trim_start_matches(prefix)));
                }
            }
        }
        assert!(
            missing.is_empty(),
            "tests/README.md says nothing of {missing:?}: add a row saying what each tests"
        );
    }
}
