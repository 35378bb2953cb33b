//! `provd-test-peer`: small programs that the custody tests run as another uid (through
//! `setpriv`), to play a local user who is not the test: a squatter that listens where a
//! victim's client will look, or a user who holds connections open.
//!
//! ```text
//! provd-test-peer <role> [args…]
//! ```
//!
//! Each role prints one line on stdout when it is in place (so the test waits on a line,
//! never on a sleep) and runs until its stdin closes.
//!
//! Roles: `hold N`, `streams N CHUNKS DELAY_MS`, `session` (see [`users`]), and
//! - `squat SOCKET DIR_MODE FLUSH`: a fake daemon. Makes SOCKET's directory with mode
//!   DIR_MODE (octal) unless it exists, listens on SOCKET (mode 0777, so any victim can
//!   connect), prints `listening`, and then, one connection at a time in the order they
//!   came, closes its sending side (it never answers), reads each connection to its end
//!   and prints `received N bytes: "<the bytes>"`. A
//!   connection that sends exactly FLUSH is reported as `flushed` instead: once the test
//!   sees that line, every connection made before it has been reported.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[path = "test_peer/users.rs"]
mod users;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(role) = args.first() else {
        eprintln!("usage: provd-test-peer <role> [args…]");
        std::process::exit(2);
    };
    let rest = &args[1..];
    match role.as_str() {
        "hold" => users::hold(rest),
        "streams" => users::streams(rest),
        "session" => users::session(rest),
        "squat" => squat(rest),
        other => {
            eprintln!("provd-test-peer: unknown role '{other}'");
            std::process::exit(2);
        }
    }
}

/// Exits when stdin closes: the test's way to end a role.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut sink);
        std::process::exit(0);
    });
}

fn squat(args: &[String]) {
    let [socket, dir_mode, flush] = args else {
        eprintln!("usage: provd-test-peer squat SOCKET DIR_MODE FLUSH");
        std::process::exit(2);
    };
    let socket = Path::new(socket);
    let mode = u32::from_str_radix(dir_mode, 8).expect("DIR_MODE is octal");
    let dir = socket.parent().expect("the socket has a directory");
    if !dir.exists() {
        std::fs::create_dir(dir).expect("make the squatted directory");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .expect("set the directory's mode");
    }
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind the socket");
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o777))
        .expect("open the socket to everyone");
    exit_when_stdin_closes();
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening").unwrap();
    out.flush().unwrap();
    for conn in listener.incoming() {
        let mut bytes = Vec::new();
        if let Ok(mut conn) = conn {
            // Never answers: a client waiting for a reply sees the end at once, gives up
            // and closes, so what it sent before is read here to its end.
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.read_to_end(&mut bytes);
        }
        if bytes == flush.as_bytes() {
            writeln!(out, "flushed").unwrap();
        } else {
            let shown = String::from_utf8_lossy(&bytes);
            writeln!(out, "received {} bytes: {shown:?}", bytes.len()).unwrap();
        }
        out.flush().unwrap();
    }
}
