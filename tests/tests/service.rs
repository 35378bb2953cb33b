//! Running as a service: systemd readiness (`NOTIFY_SOCKET`) and socket activation
//! (`LISTEN_FDS`), `serve --daemon` with its pid file and `provd stop`, the drain on
//! SIGTERM with many streams in flight, reload (SIGHUP and the `reload` request) while
//! streams run, and the systemd units themselves.
//!
//! The systemd protocols are exercised without systemd: the test plays the manager. It
//! binds the datagram socket `NOTIFY_SOCKET` names and reads what the daemon sends, and
//! it passes a listening socket in fd 3 with `LISTEN_FDS=1` and `LISTEN_PID` set to the
//! daemon's pid.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use provd_client::{ClientError, ErrorCode, GenerateEvent, GenerateRequest};
use provd_tests::{
    mock_request, numbered, numbered_text, provd_bin, run_provd, Daemon, READY_TIMEOUT,
};

const SIGTERM: i32 = libc::SIGTERM;
const SIGHUP: i32 = libc::SIGHUP;

// ---------------------------------------------------------------------------------------
// The manager's side of NOTIFY_SOCKET

/// A datagram socket standing in for systemd's notification socket.
struct NotifySocket {
    socket: UnixDatagram,
    /// Every datagram received so far, for the message of a test that waited in vain.
    seen: Mutex<Vec<String>>,
    /// The value for `NOTIFY_SOCKET`.
    address: String,
    _dir: Option<tempfile::TempDir>,
}

impl NotifySocket {
    /// A filesystem socket.
    fn at_path() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket::with(socket, path.display().to_string(), Some(dir))
    }

    /// A Linux abstract socket (`@name`).
    fn abstract_name() -> NotifySocket {
        use std::os::linux::net::SocketAddrExt;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "provd-test-notify-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&address).unwrap();
        NotifySocket::with(socket, format!("@{name}"), None)
    }

    fn with(socket: UnixDatagram, address: String, dir: Option<tempfile::TempDir>) -> Self {
        // A safety net against a daemon that never notifies, not a synchronisation.
        socket.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
        NotifySocket {
            socket,
            seen: Mutex::new(Vec::new()),
            address,
            _dir: dir,
        }
    }

    /// The next datagram. A test that waits in vain panics with every datagram it had
    /// received, so the failure says which step the daemon never reached.
    fn next(&self) -> String {
        let mut buf = vec![0u8; 4096];
        let n = match self.socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) => panic!(
                "no notification within READY_TIMEOUT ({e}); received so far: {:?}",
                self.seen.lock().unwrap()
            ),
        };
        let m = String::from_utf8(buf[..n].to_vec()).unwrap();
        self.seen.lock().unwrap().push(m.clone());
        m
    }

    /// The next state change: skips watchdog pings and status-only updates, which the
    /// daemon sends on timers of its own.
    fn next_state(&self) -> String {
        loop {
            let m = self.next();
            if m != "WATCHDOG=1" && !m.starts_with("STATUS=") {
                return m;
            }
        }
    }

    /// Waits for a datagram satisfying `f`.
    fn wait_for(&self, f: impl Fn(&str) -> bool) -> String {
        loop {
            let m = self.next();
            if f(&m) {
                return m;
            }
        }
    }

    /// Whatever is queued now, without waiting.
    fn drain_now(&self) -> Vec<String> {
        self.socket.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        self.socket.set_nonblocking(false).unwrap();
        out
    }
}

const MOCK: &str = "[providers.mock]\ntype = \"mock\"\ndefault_model = \"mock-1\"\n";

// Multi-threaded: the notification reads below block their thread, and the client's
// reader must keep draining the generation's chunks meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_once_the_socket_listens_then_reloading_ready_and_stopping_in_order() {
    let notify = NotifySocket::at_path();
    let daemon = Daemon::builder()
        .config(MOCK)
        .env("NOTIFY_SOCKET", &notify.address)
        .spawn();

    let ready = notify.next_state();
    assert_eq!(ready, "READY=1\nSTATUS=ready: 1 provider, 0 active streams");
    // READY=1 means listening: a client connects at once, without waiting for any log.
    let client = provd_client::Client::connect(&daemon.socket).await.unwrap();
    client.ping().await.unwrap();

    // STATUS= follows the number of active streams.
    let generation = client.generate(numbered(100_000, 10)).await.unwrap();
    notify.wait_for(|m| m == "STATUS=ready: 1 provider, 1 active stream");
    generation.cancel_handle().cancel().await.unwrap();
    drop(generation);

    daemon.signal(SIGHUP);
    let reloading = notify.next_state();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let usec: u64 = reloading.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
        .parse()
        .unwrap();
    assert!(usec > 0);
    assert!(notify
        .next_state()
        .starts_with("READY=1\nSTATUS=ready: 1 provider"));

    daemon.signal(SIGTERM);
    let stopping = notify.next_state();
    assert!(
        stopping.starts_with("STOPPING=1\nSTATUS=stopping, draining: 1 provider"),
        "{stopping}"
    );
    drop(client);
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
}

#[tokio::test]
async fn an_abstract_notify_socket_gets_ready() {
    let notify = NotifySocket::abstract_name();
    assert!(notify.address.starts_with('@'));
    let daemon = Daemon::builder()
        .env("NOTIFY_SOCKET", &notify.address)
        .spawn();
    assert!(notify.next_state().starts_with("READY=1\n"));
    daemon.client().await.ping().await.unwrap();
}

#[test]
fn an_invalid_config_never_reports_ready() {
    let notify = NotifySocket::at_path();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[providers.a]\ntype = \"mock\"\nmax_tokens = 0\n").unwrap();
    let out = Command::new(provd_bin())
        .args(["serve", "--socket"])
        .arg(dir.path().join("provd.sock"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.address)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // The process is gone, so anything it sent is queued by now.
    let sent = notify.drain_now();
    assert!(
        sent.iter().all(|m| !m.contains("READY=1")),
        "READY=1 before a valid config: {sent:?}"
    );
}

#[tokio::test]
async fn the_watchdog_is_pinged_when_watchdog_usec_is_set() {
    let notify = NotifySocket::at_path();
    let _daemon = Daemon::builder()
        .env("NOTIFY_SOCKET", &notify.address)
        .env("WATCHDOG_USEC", "200000")
        .spawn();
    assert!(notify.next_state().starts_with("READY=1\n"));
    notify.wait_for(|m| m == "WATCHDOG=1");
    notify.wait_for(|m| m == "WATCHDOG=1");
}

// ---------------------------------------------------------------------------------------
// Socket activation

/// A daemon started the way systemd starts a socket-activated service.
struct Activated {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Activated {
    /// Starts `provd serve` with `listener` as fd 3, `LISTEN_FDS` (given) and `LISTEN_PID`
    /// set to the daemon's own pid (a shell sets it to `$$`, then execs provd, which keeps
    /// the pid).
    fn spawn(listener: &UnixListener, listen_fds: &str, args: &[&str]) -> Activated {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("provd.toml");
        std::fs::write(&config, MOCK).unwrap();
        let fd = listener.as_raw_fd();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"")
            .arg(provd_bin())
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("LISTEN_FDS", listen_fds)
            .env("PROVD_LOG", "provd=debug")
            .env_remove("PROVD_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls (dup2, fcntl) run.
        unsafe {
            cmd.pre_exec(move || {
                if fd == 3 {
                    // dup2 onto itself would keep FD_CLOEXEC; clear it instead.
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let (log, lines) = capture(child.stderr.take().unwrap());
        Activated {
            child: Some(child),
            log,
            lines,
            _dir: dir,
        }
    }

    fn wait_for_log(&self, needle: &str) -> String {
        wait_for_log(&self.log, &self.lines, needle)
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.as_ref().unwrap().id();
        // SAFETY: kill has no memory preconditions; the pid is our own child's.
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
    }

    fn wait(mut self) -> (ExitStatus, String) {
        let status = self.child.take().unwrap().wait().unwrap();
        while self.lines.recv_timeout(Duration::from_secs(5)).is_ok() {}
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Collects a child's stderr lines, for [`wait_for_log`].
fn capture(stderr: std::process::ChildStderr) -> (Arc<Mutex<String>>, mpsc::Receiver<String>) {
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
            let _ = tx.send(line);
        }
    });
    (log, rx)
}

fn wait_for_log(log: &Mutex<String>, lines: &mpsc::Receiver<String>, needle: &str) -> String {
    if let Some(line) = log.lock().unwrap().lines().find(|l| l.contains(needle)) {
        return line.to_owned();
    }
    loop {
        match lines.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!(
                "provd never logged {needle:?}; log so far:\n{}",
                log.lock().unwrap()
            ),
        }
    }
}

#[tokio::test]
async fn socket_activation_serves_the_inherited_socket_and_leaves_it_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provd.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let ignored = dir.path().join("not-this.sock");

    let first = Activated::spawn(&listener, "1", &["--socket", ignored.to_str().unwrap()]);
    let line = first.wait_for_log("adopted the listening socket systemd passed");
    assert!(line.contains(&path.display().to_string()), "{line}");
    first.wait_for_log("listening");
    assert!(
        !ignored.exists(),
        "with a socket from systemd, provd binds none"
    );

    let client = provd_client::Client::connect(&path).await.unwrap();
    let (text, done) = provd_tests::generation_text(&client, numbered(5, 0)).await;
    assert_eq!((text.as_str(), done.chunks), (numbered_text(5).as_str(), 5));
    drop(client);

    first.signal(SIGTERM);
    let (status, log) = first.wait();
    assert!(status.success(), "{log}");
    assert!(
        std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_socket(),
        "the inherited socket is systemd's and stays"
    );

    // With no daemon running, a client still connects: it queues on the socket (as it
    // would on systemd's) and is served by the next instance.
    let waiting = tokio::spawn({
        let path = path.clone();
        async move {
            let client = provd_client::Client::connect(&path).await.unwrap();
            client.ping().await.unwrap();
            client.status().await.unwrap().pid
        }
    });
    let second = Activated::spawn(&listener, "1", &[]);
    let served_by = waiting.await.unwrap();
    assert_eq!(served_by, second.child.as_ref().unwrap().id());
}

#[test]
fn more_sockets_than_provd_serves_are_refused() {
    // Its own and the HTTP front door's at most (tests/http_front_door.rs passes both).
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join("provd.sock")).unwrap();
    let daemon = Activated::spawn(&listener, "3", &[]);
    let (status, log) = daemon.wait();
    assert_eq!(status.code(), Some(1));
    assert!(
        log.contains("provd takes one MessagePack socket and at most one HTTP socket"),
        "{log}"
    );
    assert!(log.contains("systemd passed 3"), "{log}");
}

#[tokio::test]
async fn listen_fds_for_another_process_are_ignored() {
    // LISTEN_PID names some other process: the variables leaked through a wrapper, and
    // fd 3 is not ours to take. provd binds its own socket.
    let daemon = Daemon::builder()
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .start();
    daemon.client().await.ping().await.unwrap();
    assert!(!daemon.log().contains("adopted"));
}

// ---------------------------------------------------------------------------------------
// --daemon, the pid file and `provd stop`

/// A background daemon's files; kills the daemon if a test fails before stopping it.
struct Background {
    dir: tempfile::TempDir,
}

impl Background {
    fn new() -> Background {
        Background {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("run").join("provd.sock")
    }
    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("provd.pid")
    }
    fn log_file(&self) -> PathBuf {
        self.dir.path().join("provd.log")
    }
    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("provd.toml");
        if !path.exists() {
            std::fs::write(&path, MOCK).unwrap();
        }
        path
    }
    /// `provd serve --daemon …` with these files; returns when the parent exits.
    fn serve(&self, extra: &[&str]) -> std::process::Output {
        Command::new(provd_bin())
            .arg("serve")
            .arg("--daemon")
            .arg("--socket")
            .arg(self.socket())
            .arg("--config")
            .arg(self.config())
            .arg("--pid-file")
            .arg(self.pid_file())
            .arg("--log-file")
            .arg(self.log_file())
            .args(extra)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("LISTEN_FDS")
            .env("PROVD_LOG", "provd=debug")
            .output()
            .unwrap()
    }
    fn stop(&self) -> std::process::Output {
        Command::new(provd_bin())
            .arg("stop")
            .arg("--pid-file")
            .arg(self.pid_file())
            .output()
            .unwrap()
    }
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&self.pid_file().display().to_string()) {
                // SAFETY: kill has no memory preconditions; the pid is the daemon this test
                // started (its command line names this test's pid file).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn daemon_mode_detaches_once_ready_and_stop_drains_it_through_the_pid_file() {
    let bg = Background::new();
    let out = bg.serve(&[]);
    assert!(out.status.success(), "{}{}", text(&out.stderr), bg.log());
    // The parent exits only once the daemon serves: the socket answers right away.
    let pid = bg.pid().expect("a pid file naming the daemon");
    assert_ne!(pid, std::process::id());
    let client = provd_client::Client::connect(&bg.socket()).await.unwrap();
    assert_eq!(client.status().await.unwrap().pid, pid);
    assert!(
        text(&out.stderr).contains(&format!("running in the background as pid {pid}")),
        "{}",
        text(&out.stderr)
    );
    // umask 077: what the daemon creates is private.
    for file in [bg.pid_file(), bg.log_file()] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    // Its working directory is /, and its log goes to the log file.
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        Path::new("/")
    );
    assert!(bg.log().contains("ready"), "{}", bg.log());

    // A stream in flight when `provd stop` runs finishes: stop is the graceful SIGTERM.
    let mut generation = client.generate(numbered(30, 10)).await.unwrap();
    assert!(matches!(
        generation.next().await,
        Some(Ok(GenerateEvent::Chunk(_)))
    ));
    let stop = tokio::task::spawn_blocking({
        let pid_file = bg.pid_file();
        move || {
            Command::new(provd_bin())
                .arg("stop")
                .arg("--pid-file")
                .arg(pid_file)
                .output()
                .unwrap()
        }
    });
    let (text_received, done) = generation.collect_text().await.unwrap();
    assert_eq!(format!("0 {text_received}"), numbered_text(30));
    assert_eq!(done.chunks, 30);
    drop(client);
    let stopped = stop.await.unwrap();
    assert!(stopped.status.success(), "{}", text(&stopped.stderr));
    assert!(text(&stopped.stderr).contains(&format!("provd (pid {pid}) stopped")));
    // `stop` returned after the daemon exited: its pid file and socket are gone.
    assert!(!bg.pid_file().exists());
    assert!(!bg.socket().exists());
    assert!(bg.log().contains("stopped"), "{}", bg.log());
}

#[test]
fn a_second_daemon_on_the_same_pid_file_is_refused() {
    let bg = Background::new();
    assert!(bg.serve(&[]).status.success(), "{}", bg.log());
    let pid = bg.pid().unwrap();
    let second = bg.serve(&[]);
    assert_eq!(second.status.code(), Some(1));
    let stderr = text(&second.stderr);
    assert!(
        stderr.contains(&format!(
            "another provd (pid {pid}) is running with pid file"
        )),
        "{stderr}"
    );
    assert_eq!(
        bg.pid(),
        Some(pid),
        "the running daemon's pid file is untouched"
    );
    assert!(bg.stop().status.success());
}

#[test]
fn a_stale_pid_file_is_reported_by_stop_and_taken_over_by_serve() {
    let bg = Background::new();
    // A daemon that died without cleaning up: a pid file nobody holds locked, naming a
    // pid that may well be someone else's by now. No signal may go to it.
    std::fs::write(bg.pid_file(), "1\n").unwrap();
    let out = bg.stop();
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("provd is not running")
            && stderr.contains("left by a daemon that is gone (pid 1); removed it"),
        "{stderr}"
    );
    assert!(!bg.pid_file().exists());
    let out = bg.stop();
    assert!(
        text(&out.stderr).contains("no pid file at"),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(bg.pid_file(), "1\n").unwrap();
    let out = bg.serve(&[]);
    assert!(out.status.success(), "{}{}", text(&out.stderr), bg.log());
    let pid = bg.pid().unwrap();
    assert_ne!(pid, 1, "the stale pid file now names the new daemon");
    assert!(bg.stop().status.success());
    assert!(!bg.pid_file().exists());
}

#[test]
fn a_start_up_error_of_the_daemon_reaches_the_parent() {
    let bg = Background::new();
    // A socket directory others can write to: the daemon refuses it after the fork.
    std::fs::create_dir(bg.socket().parent().unwrap()).unwrap();
    std::fs::set_permissions(
        bg.socket().parent().unwrap(),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    let out = bg.serve(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("provd: error:") && stderr.contains("is writable by group or others"),
        "{stderr}"
    );
    assert!(
        !bg.pid_file().exists(),
        "a daemon that failed leaves no pid file"
    );
    assert!(
        bg.log().contains("is writable by group or others"),
        "{}",
        bg.log()
    );
}

#[test]
fn daemon_mode_is_refused_under_systemd() {
    for (var, value) in [
        ("NOTIFY_SOCKET", "/run/systemd/notify"),
        ("LISTEN_FDS", "1"),
    ] {
        let bg = Background::new();
        let out = Command::new(provd_bin())
            .args(["serve", "--daemon", "--socket"])
            .arg(bg.socket())
            .arg("--pid-file")
            .arg(bg.pid_file())
            .env("PROVD_CONFIG", "")
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "--daemon is for hosts without systemd, but this process was started by a service manager (${var} is set)"
            )),
            "{stderr}"
        );
        assert!(!bg.pid_file().exists());
    }
}

// ---------------------------------------------------------------------------------------
// Drain on SIGTERM

/// How one generation ended, with every check that nothing was lost on the way.
enum Ending {
    Done,
    Shutdown,
}

#[tokio::test]
async fn sigterm_drains_streams_in_flight_each_ending_with_done_or_the_shutdown_error() {
    let daemon = Daemon::with_config(
        "[daemon]\ndrain_timeout_seconds = 2\n[providers.mock]\ntype = \"mock\"\ndefault_model = \"m\"\n",
    );
    const SHORT: u32 = 20; // 20 chunks 10 ms apart: done well within the deadline, normally
    const LONG: u32 = 100_000; // 1000 s: always outlives the deadline
    let mut streams = Vec::new();
    let mut clients = Vec::new();
    for c in 0..4 {
        let client = daemon.client().await;
        for s in 0..10 {
            let chunks = if (c + s) % 2 == 0 { SHORT } else { LONG };
            let mut generation = client.generate(numbered(chunks, 10)).await.unwrap();
            // Running for sure: the first chunk is here.
            let Some(Ok(GenerateEvent::Chunk(first))) = generation.next().await else {
                panic!("no first chunk");
            };
            assert_eq!(first.index, 0);
            streams.push((chunks, generation));
        }
        clients.push(client);
    }
    daemon.signal(SIGTERM);
    let mut done = 0;
    let mut ended = 0;
    for (chunks, generation) in streams {
        match follow(generation, chunks).await {
            Ending::Done => done += 1,
            Ending::Shutdown => {
                ended += 1;
            }
        }
    }
    assert_eq!(done + ended, 40);
    assert!(
        ended >= 20,
        "every long stream ends with the shutdown error"
    );
    drop(clients);
    let (status, log) = daemon.wait();
    assert!(status.success(), "{log}");
    assert!(log.contains("drain deadline passed"), "{log}");
    assert!(log.contains("provider instance shut down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

/// Reads a generation whose first chunk was already read to its end, checking that no
/// chunk is lost and that it does not end silently.
async fn follow(mut generation: provd_client::Generation, chunks: u32) -> Ending {
    let mut received = 1u32;
    while let Some(event) = generation.next().await {
        match event {
            Ok(GenerateEvent::Chunk(c)) => {
                assert_eq!(c.index, received, "chunks in order, none lost");
                received += 1;
            }
            Ok(GenerateEvent::Done(d)) => {
                assert_eq!((d.chunks, received), (chunks, chunks));
                return Ending::Done;
            }
            Err(e) => {
                let w = e.to_wire();
                assert_eq!(w.code, ErrorCode::Unavailable, "{w:?}");
                assert!(
                    w.message.contains("provd is shutting down"),
                    "{}",
                    w.message
                );
                assert_eq!(w.chunks, Some(received), "the error counts what arrived");
                return Ending::Shutdown;
            }
        }
    }
    panic!(
        "generation {} ended silently after {received} chunks",
        generation.id()
    );
}

// ---------------------------------------------------------------------------------------
// Reload

fn config_text(mock_text: &str, extra: &str) -> String {
    format!(
        "[daemon]\ndrain_timeout_seconds = 5\ndefault_provider = \"mock\"\n\
         [providers.mock]\ntype = \"mock\"\ndefault_model = \"m1\"\n\
         [providers.mock.options]\ntext = \"{mock_text}\"\n{extra}"
    )
}

const OTHER: &str = "[providers.other]\ntype = \"mock\"\ndefault_model = \"o1\"\n";
const THIRD: &str = "[providers.third]\ntype = \"mock\"\ndefault_model = \"t1\"\n";

fn config_path(daemon: &Daemon) -> PathBuf {
    daemon.dir.path().join("provd.toml")
}

/// Reads `n` more chunks and checks they continue where the stream was.
async fn more_chunks(generation: &mut provd_client::Generation, next: &mut u32, n: u32) {
    for _ in 0..n {
        match generation.next().await {
            Some(Ok(GenerateEvent::Chunk(c))) => {
                assert_eq!(c.index, *next, "the running stream was not interrupted");
                *next += 1;
            }
            other => panic!("expected a chunk, got {other:?}"),
        }
    }
}

async fn answer(
    client: &provd_client::Client,
    provider: Option<&str>,
) -> Result<String, ClientError> {
    let mut request = GenerateRequest::prompt("say it");
    request.provider = provider.map(str::to_owned);
    let (text, _) = client.generate(request).await?.collect_text().await?;
    Ok(text.trim_end().to_owned())
}

#[tokio::test]
async fn a_good_config_is_reloaded_while_streams_run_on_their_old_instances() {
    let daemon = Daemon::with_config(&config_text("old answer", OTHER));
    let client = daemon.client().await;
    let mut on_mock = client.generate(numbered(100_000, 10)).await.unwrap();
    let mut on_other = client
        .generate(GenerateRequest {
            provider: Some("other".into()),
            ..numbered(100_000, 10)
        })
        .await
        .unwrap();
    let (mut next_mock, mut next_other) = (0, 0);
    more_chunks(&mut on_mock, &mut next_mock, 1).await;
    more_chunks(&mut on_other, &mut next_other, 1).await;
    assert_eq!(answer(&client, None).await.unwrap(), "old answer");

    // mock changes, other goes, third comes.
    std::fs::write(config_path(&daemon), config_text("new answer", THIRD)).unwrap();
    let (status, stdout, stderr) = run_provd(&["reload"], &daemon.socket);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "reloaded {}: 2 providers (added: third; changed: mock; removed: other)",
            config_path(&daemon).display()
        )
    );
    daemon.wait_for_log("configuration reloaded");

    // New requests see the new configuration…
    assert_eq!(answer(&client, None).await.unwrap(), "new answer");
    assert_eq!(
        answer(&client, Some("other")).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert!(answer(&client, Some("third")).await.is_ok());
    // …while the streams that were running go on, on their old instances.
    more_chunks(&mut on_mock, &mut next_mock, 20).await;
    more_chunks(&mut on_other, &mut next_other, 20).await;
    assert!(
        !daemon.log().contains("retired provider instance shut down"),
        "an instance in use is not shut down"
    );

    // Once their streams end, the old instances are shut down.
    on_mock.cancel_handle().cancel().await.unwrap();
    on_other.cancel_handle().cancel().await.unwrap();
    daemon.wait_for_log(
        r#"retired provider instance shut down after a reload provider="mock" model="m1""#,
    );
    daemon.wait_for_log(
        r#"retired provider instance shut down after a reload provider="other" model="o1""#,
    );
}

#[tokio::test]
async fn a_bad_config_is_rejected_and_the_old_one_stays_while_a_stream_runs() {
    let good = config_text("old answer", "");
    let daemon = Daemon::with_config(&good);
    let client = daemon.client().await;
    let mut running = client.generate(numbered(100_000, 10)).await.unwrap();
    let mut next = 0;
    more_chunks(&mut running, &mut next, 1).await;

    // An invalid value, through SIGHUP.
    std::fs::write(
        config_path(&daemon),
        good.replace(
            "default_model = \"m1\"",
            "default_model = \"m1\"\nmax_tokens = 0",
        ),
    )
    .unwrap();
    daemon.signal(SIGHUP);
    let line = daemon.wait_for_log("reload rejected");
    assert!(
        line.contains("providers.mock.max_tokens must be > 0, got 0") && line.contains("ERROR"),
        "{line}"
    );
    more_chunks(&mut running, &mut next, 5).await;
    assert_eq!(answer(&client, None).await.unwrap(), "old answer");

    // Malformed TOML, through `provd reload` and the client.
    std::fs::write(config_path(&daemon), "[providers.mock\ntype = ").unwrap();
    let (status, _, stderr) = run_provd(&["reload"], &daemon.socket);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("reload rejected, the previous configuration stays in force: config"),
        "{stderr}"
    );
    let e = client.reload().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    more_chunks(&mut running, &mut next, 5).await;
    assert_eq!(answer(&client, None).await.unwrap(), "old answer");

    // Gone: the daemon does not fall back to another file or the embedded default.
    std::fs::remove_file(config_path(&daemon)).unwrap();
    let e = client.reload().await.unwrap_err().to_wire();
    assert!(e.message.contains("cannot read"), "{}", e.message);
    assert_eq!(answer(&client, None).await.unwrap(), "old answer");

    // Fixed: the next reload applies.
    std::fs::write(config_path(&daemon), config_text("fixed answer", "")).unwrap();
    let result = client.reload().await.unwrap();
    assert_eq!(result.changed, ["mock"]);
    assert_eq!(answer(&client, None).await.unwrap(), "fixed answer");
    more_chunks(&mut running, &mut next, 5).await;
}

#[tokio::test]
async fn settings_that_cannot_change_live_are_reported_as_needing_a_restart() {
    let daemon = Daemon::with_config(&config_text("a", ""));
    let client = daemon.client().await;
    std::fs::write(
        config_path(&daemon),
        config_text("a", "").replace(
            "drain_timeout_seconds = 5",
            "drain_timeout_seconds = 0\nmax_connections = 7",
        ),
    )
    .unwrap();
    let result = client.reload().await.unwrap();
    assert_eq!(result.needs_restart, ["daemon.max_connections"]);
    assert!(result.changed.is_empty() && result.added.is_empty());
    let line = daemon.wait_for_log("needs restart");
    assert!(line.contains("daemon.max_connections"), "{line}");

    // drain_timeout_seconds applies live: 0 now ends a running stream at once on SIGTERM.
    let mut running = client.generate(numbered(100_000, 10)).await.unwrap();
    let mut next = 0;
    more_chunks(&mut running, &mut next, 1).await;
    daemon.signal(SIGTERM);
    let line = daemon.wait_for_log("stopped accepting");
    assert!(line.contains("drain_timeout_s=0"), "{line}");
}

#[tokio::test]
async fn reload_is_refused_to_other_users() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: needs root, to connect as another user");
        return;
    }
    // The socket is opened to group 65534 so that a client running as uid 65534 can
    // connect at all; it is still not the daemon's user (root) nor root.
    let daemon = Daemon::with_config(&format!(
        "[daemon]\nsocket_group = \"65534\"\n{}",
        config_text("a", "").replace("[daemon]\n", "")
    ));
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let as_nobody = Command::new(provd_bin())
        .arg("reload")
        .env("PROVD_SOCKET", &daemon.socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(as_nobody.status.code(), Some(1));
    let stderr = text(&as_nobody.stderr);
    assert!(
        stderr.contains("permission_denied: reload is an admin request"),
        "{stderr}"
    );
    daemon.wait_for_log("reload refused");
    // The same user as the daemon may.
    let (status, _, stderr) = run_provd(&["reload"], &daemon.socket);
    assert!(status.success(), "{stderr}");
}

#[tokio::test]
async fn the_example_config_serves() {
    let example = std::fs::read_to_string(repo().join("systemd/provd.toml")).unwrap();
    // --socket (the harness's) overrides the example's /run/provd/provd.sock.
    let daemon = Daemon::with_config(&example);
    let client = daemon.client().await;
    let request = mock_request("hello", serde_json::json!({}));
    let (_, done) = provd_tests::generation_text(&client, request).await;
    assert_eq!(done.provider, "mock");
}

// ---------------------------------------------------------------------------------------
// The units

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `systemd-analyze`, or `None` (with a SKIPPED line) when it is not installed. Under CI
/// (`$CI` set) a missing tool fails the test: CI installs it.
fn systemd_analyze() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("systemd-analyze"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing under CI: install the systemd package (.ci/run does)"
        );
        println!("SKIPPED: systemd-analyze is not installed (apt-get install systemd)");
    }
    found
}

/// Copies the units of `sub` (`""` system, `"user"`) into a temp dir, pointing
/// `ExecStart=` at the provd binary under test (`verify` checks that it exists).
fn units(sub: &str) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for name in ["provd.socket", "provd.service"] {
        let text = std::fs::read_to_string(repo().join("systemd").join(sub).join(name)).unwrap();
        let text = text.replace("/usr/local/bin/provd", &provd_bin().display().to_string());
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        out.push(path);
    }
    (dir, out)
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(runtime.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for (sub, mode) in [("", None), ("user", Some("--user"))] {
        let (_dir, files) = units(sub);
        let out = Command::new(&tool)
            .args(mode)
            .arg("verify")
            .args(&files)
            // The user manager resolves %t and RuntimeDirectory= through it.
            .env("XDG_RUNTIME_DIR", runtime.path())
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze {} verify {sub}: {}{}",
            mode.unwrap_or(""),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn the_system_service_is_rated_2_0_or_lower_by_systemd_analyze_security() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let (_dir, files) = units("");
    let out = Command::new(&tool)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&files[1])
        .output()
        .unwrap();
    let report = text(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level for provd.service"))
        .unwrap_or_else(|| panic!("no overall rating in:\n{report}{}", text(&out.stderr)));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    println!("systemd-analyze security provd.service: {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{report}");
}
