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
//! Roles: `hold N`, `streams N CHUNKS DELAY_MS`, `session` (see [`users`]).

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
        other => {
            eprintln!("provd-test-peer: unknown role '{other}'");
            std::process::exit(2);
        }
    }
}
