//! The connection handle: connect, free, and the short requests (ping, lists, status).
//!
//! A `provd_client` wraps [`::provd_client::blocking::Client`]: one connection to the
//! daemon and one background thread (named `provd-client`) that reads it and routes each
//! reply to the call waiting for it. Calls block the calling thread until their answer
//! arrives, so any number of threads may use one client at once, each running its own
//! requests and generations over the shared connection.

use std::ffi::c_char;
use std::path::PathBuf;

use ::provd_client::{blocking, ClientError, ConnectOptions};

use crate::args;
use crate::connect_options::provd_connect_options;
use crate::daemon_status::provd_daemon_status;
use crate::error::{provd_error, Error};
use crate::model_list::provd_model_list;
use crate::panic::{accessor, boundary};
use crate::provider_list::provd_provider_list;
use crate::status::provd_status;
use crate::usage_report::provd_usage_report;

/// The name the daemon logs for connections from this library.
const CLIENT_NAME: &str = "libprovd";

/// A connection to the daemon. Made by `provd_client_connect` (or
/// `provd_client_connect_with_options`), closed and freed by `provd_client_free`.
///
/// Thread-safe: every function that takes a `const provd_client *` may be called from
/// any number of threads at once on the same client, including several generations at a
/// time. Only `provd_client_free` needs the client to be otherwise unused.
///
/// Limits the daemon sets per connection, told in its hello: at most
/// `provd_client_max_streams` generations run at once on one client (64 by default; the
/// next one fails with `PROVD_OVERLOADED`, so open more clients for more), and a request
/// (prompt, messages and options together, encoded) may be at most
/// `provd_client_max_frame_bytes` bytes (the request setters do not check this; a larger
/// request fails at `provd_client_generate` or `provd_client_stream` with
/// `PROVD_INVALID_REQUEST`, naming both sizes, and nothing is sent).
///
/// Not fork-safe: a client does not survive `fork()`. Its background thread is not
/// copied into the child, so in the child the client (and its streams) must be neither
/// used nor closed; leave them alone there (the parent keeps using them) and call
/// `provd_client_connect` in the child for a new client, which works.
///
/// Process-wide resources: none beyond each client's own thread and socket (no signal
/// handlers are installed, no global runtime is kept).
#[derive(Debug)]
pub struct provd_client {
    pub(crate) inner: blocking::Client,
}

/// The socket path from the caller's bytes; NULL means the default.
///
/// # Safety
///
/// As [`args::bytes`].
unsafe fn socket_path(path: *const c_char, len: usize) -> Result<PathBuf, Error> {
    if path.is_null() {
        return Ok(::provd_client::default_socket_path());
    }
    // SAFETY: forwarded contract.
    let bytes = unsafe { args::bytes(path, len, "path") }?;
    if bytes.is_empty() {
        return Err(Error::invalid(
            "path",
            "is empty; pass NULL for the default socket path",
        ));
    }
    if let Some(at) = bytes.iter().position(|b| *b == 0) {
        return Err(Error::invalid(
            "path",
            format!("contains a NUL byte at offset {at}; a socket path cannot"),
        ));
    }
    // A Unix path is bytes, and need not be UTF-8; take it as the OS would.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(bytes)))
    }
    #[cfg(not(unix))]
    {
        let text = std::str::from_utf8(bytes).map_err(|e| Error::utf8("path", e))?;
        Ok(PathBuf::from(text))
    }
}

/// Connects to the daemon and exchanges the protocol hello.
///
/// `path` is the socket path as `path_len` bytes (on Unix any bytes but NUL, as the OS
/// takes paths; no terminator needed). NULL means the default path: `$PROVD_SOCKET`, else
/// `$XDG_RUNTIME_DIR/provd/provd.sock`, else `/run/provd/provd.sock` for root, else
/// `/tmp/provd-<uid>/provd.sock`. On success `*client_out` is a new client the caller
/// frees with `provd_client_free`; on failure it is NULL.
///
/// Errors: `PROVD_UNAVAILABLE` (no daemon listens there, or it closed the connection),
/// `PROVD_PERMISSION_DENIED` (the socket's permissions refuse this user),
/// `PROVD_PROTOCOL_ERROR` (the daemon speaks another protocol version, the message naming
/// both; or the process on the socket answered with bytes that are not provd frames),
/// `PROVD_TIMEOUT` (nothing answered the hello in time), `PROVD_NULL_ARGUMENT`
/// (client_out), `PROVD_INVALID_ARGUMENT` (an empty path, one with a NUL byte, or one too
/// long for a socket address).
///
/// Deadlines: the default ones of `provd_connect_options_default` (5 s to reach the
/// socket, 5 s for the daemon's answer to the hello, no deadline per call), so a process
/// on the socket that accepts but never answers gives `PROVD_TIMEOUT` rather than a hang.
/// `provd_client_connect_with_options` sets others.
///
/// Thread-safe. Starts the client's background thread.
#[no_mangle]
pub extern "C" fn provd_client_connect(
    path: *const c_char,
    path_len: usize,
    client_out: *mut *mut provd_client,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires `client_out` to be NULL or writable, and `path` to
        // be NULL or `path_len` readable bytes.
        unsafe { connect(path, path_len, &ConnectOptions::new(), client_out) }
    })
}

/// `provd_client_connect` with the deadlines of `*options` (read, not kept; NULL means
/// the defaults). Errors as `provd_client_connect`, and `PROVD_TIMEOUT` when a deadline
/// passes.
///
/// Thread-safe. Starts the client's background thread.
#[no_mangle]
pub extern "C" fn provd_client_connect_with_options(
    path: *const c_char,
    path_len: usize,
    options: *const provd_connect_options,
    client_out: *mut *mut provd_client,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        let options = if options.is_null() {
            ConnectOptions::new()
        } else {
            // SAFETY: the header requires `options` to be NULL (handled above) or a
            // readable provd_connect_options; it is copied here.
            ConnectOptions::from(unsafe { *options })
        };
        // SAFETY: the header requires `client_out` to be NULL or writable, and `path` to
        // be NULL or `path_len` readable bytes.
        unsafe { connect(path, path_len, &options, client_out) }
    })
}

/// The shared body of the two connect functions.
///
/// # Safety
///
/// `client_out` NULL or writable; `path` NULL or `path_len` readable bytes.
unsafe fn connect(
    path: *const c_char,
    path_len: usize,
    options: &ConnectOptions,
    client_out: *mut *mut provd_client,
) -> Result<(), Error> {
    // SAFETY: forwarded contract.
    let out = unsafe { args::out_object(client_out, "client_out") }?;
    // SAFETY: forwarded contract.
    let path = unsafe { socket_path(path, path_len) }?;
    let inner =
        blocking::Client::connect_with_options(&path, CLIENT_NAME, None, options).map_err(|e| {
            match e {
                // The OS refused the path itself (longer than a socket address holds): the
                // caller's argument is wrong, and no retry will help, so not "unavailable".
                ClientError::Connect {
                    kind: std::io::ErrorKind::InvalidInput,
                    ..
                } => Error::invalid("path", format!("is not a usable socket path: {e}")),
                other => Error::from(other),
            }
        })?;
    out.write(args::give(provd_client { inner }));
    Ok(())
}

/// How many generations may run at once on this client, as the daemon said in its hello
/// (`max_streams`; 64 by default, `[daemon] max_streams_per_connection`). One more fails with `PROVD_OVERLOADED`.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_client_max_streams(
    client: *const provd_client,
    max_out: *mut u32,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live client and a NULL or writable `max_out`.
        let (client, out) = unsafe { (borrow_client(client)?, args::out(max_out, "max_out")?) };
        out.write(client.daemon().max_streams);
        Ok(())
    })
}

/// The largest request, in bytes of encoded MessagePack, the daemon accepts on this
/// client (`max_frame_bytes` of its hello; 4 MiB by default, `[daemon] max_frame_bytes`). A larger request fails
/// at generate with `PROVD_INVALID_REQUEST` before anything is sent.
///
/// Returns `PROVD_NULL_ARGUMENT` if an argument is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_client_max_frame_bytes(
    client: *const provd_client,
    max_out: *mut u32,
) -> provd_status {
    accessor!(|| {
        // SAFETY: the header requires a live client and a NULL or writable `max_out`.
        let (client, out) = unsafe { (borrow_client(client)?, args::out(max_out, "max_out")?) };
        out.write(client.daemon().max_frame_bytes);
        Ok(())
    })
}

/// Closes the connection and frees the client. NULL is ignored.
///
/// No other thread may be using the client, and it must not be used afterwards. Streams
/// started from it stay usable until they are freed: they keep the connection open. The
/// connection closes and the background thread ends when the client and all its streams
/// are freed; the last of those calls waits for the thread to end.
#[no_mangle]
pub extern "C" fn provd_client_free(client: *mut provd_client) {
    crate::panic::free(|| {
        // SAFETY: the header requires `client` to be NULL or a client from
        // provd_client_connect, freed only this once and not in use by another thread.
        drop(unsafe { args::take(client) });
    })
}

/// The former name of `provd_client_free`, kept so that programs written against earlier
/// releases keep compiling and linking: the same function, with the same rules. New code
/// calls `provd_client_free`, like every other object's free function.
#[no_mangle]
pub extern "C" fn provd_client_close(client: *mut provd_client) {
    provd_client_free(client)
}

/// Borrows the client argument of a request function.
///
/// # Safety
///
/// As [`args::handle`].
pub(crate) unsafe fn borrow_client<'a>(
    client: *const provd_client,
) -> Result<&'a blocking::Client, Error> {
    // SAFETY: forwarded contract.
    Ok(&unsafe { args::handle(client, "client") }?.inner)
}

/// One round trip to the daemon: a liveness check.
///
/// Errors: `PROVD_UNAVAILABLE` (the connection is lost), `PROVD_NULL_ARGUMENT`.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn provd_client_ping(
    client: *const provd_client,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires a live client.
        let client = unsafe { borrow_client(client) }?;
        client.ping()?;
        Ok(())
    })
}

/// Lists the configured providers into `*list_out` (NULL on failure), which the caller
/// frees with `provd_provider_list_free`.
///
/// Errors: `PROVD_UNAVAILABLE`, `PROVD_NULL_ARGUMENT`. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_client_list_providers(
    client: *const provd_client,
    list_out: *mut *mut provd_provider_list,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires a live client and a NULL or writable `list_out`.
        let (out, client) = unsafe {
            (
                args::out_object(list_out, "list_out")?,
                borrow_client(client)?,
            )
        };
        let list = client.list_providers()?;
        out.write(args::give(provd_provider_list::new(list)));
        Ok(())
    })
}

/// Lists the models of one provider (`provider`: `len` bytes of UTF-8) or, with
/// `provider` NULL, of every provider, into `*list_out` (NULL on failure), which the
/// caller frees with `provd_model_list_free`. When every provider is listed, providers
/// that could not be asked are reported inside the list
/// (`provd_model_list_failure`), and the others' models are still there.
///
/// Errors: `PROVD_NOT_FOUND` (an unknown provider), the provider's own error,
/// `PROVD_UNAVAILABLE`, `PROVD_NULL_ARGUMENT`, `PROVD_INVALID_UTF8`. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_client_list_models(
    client: *const provd_client,
    provider: *const c_char,
    len: usize,
    list_out: *mut *mut provd_model_list,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires a live client, a NULL or writable `list_out`, and
        // `provider` NULL or `len` readable bytes.
        let (out, client, provider) = unsafe {
            (
                args::out_object(list_out, "list_out")?,
                borrow_client(client)?,
                args::opt_text(provider, len, "provider")?,
            )
        };
        let list = client.list_models(provider)?;
        out.write(args::give(provd_model_list::new(list)));
        Ok(())
    })
}

/// The daemon's status (version, uptime, connections, running streams, and each
/// provider instance with its counters) into `*status_out` (NULL on failure), which the
/// caller frees with `provd_daemon_status_free`.
///
/// Errors: `PROVD_UNAVAILABLE`, `PROVD_NULL_ARGUMENT`. Thread-safe.
#[no_mangle]
pub extern "C" fn provd_client_status(
    client: *const provd_client,
    status_out: *mut *mut provd_daemon_status,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires a live client and a NULL or writable `status_out`.
        let (out, client) = unsafe {
            (
                args::out_object(status_out, "status_out")?,
                borrow_client(client)?,
            )
        };
        let status = client.status()?;
        out.write(args::give(provd_daemon_status::new(status)));
        Ok(())
    })
}

/// Who used what: the daemon's usage ledger for a window, grouped by `by` (a
/// `provd_usage_by` value), into `*report_out` (NULL on failure), which the caller frees
/// with `provd_usage_report_free`.
///
/// `since_ms` and `until_ms` bound the window in milliseconds since the Unix epoch (from
/// inclusive, to exclusive); `PROVD_USAGE_DEFAULT_TIME` means the default (until now,
/// since 7 days before the end). `user` (`user_len` bytes of UTF-8, or NULL for none)
/// limits the report to one user, by name or uid. An admin's connection sees every user
/// and may name any; any other connection (and one that presented a token) sees only its
/// own uid's generations, and naming another user is `PROVD_PERMISSION_DENIED`.
///
/// Errors: `PROVD_INVALID_REQUEST` (a window that ends before it starts or lies past the
/// year 9999, an unknown user; the message names the field), `PROVD_PERMISSION_DENIED`,
/// `PROVD_UNAVAILABLE` (the daemon's usage ledger is off, or the connection is lost),
/// `PROVD_NULL_ARGUMENT`, `PROVD_INVALID_UTF8`, `PROVD_INVALID_ARGUMENT` (a `by` that is
/// no `provd_usage_by`). Thread-safe.
#[no_mangle]
pub extern "C" fn provd_client_usage(
    client: *const provd_client,
    since_ms: u64,
    until_ms: u64,
    by: u32,
    user: *const c_char,
    user_len: usize,
    report_out: *mut *mut provd_usage_report,
    err_out: *mut *mut provd_error,
) -> provd_status {
    boundary!(err_out, || {
        // SAFETY: the header requires a live client, a NULL or writable `report_out`, and
        // `user` NULL or `user_len` readable bytes.
        let (out, client, user) = unsafe {
            (
                args::out_object(report_out, "report_out")?,
                borrow_client(client)?,
                args::opt_text(user, user_len, "user")?,
            )
        };
        let time = |ms: u64| (ms != crate::usage_report::PROVD_USAGE_DEFAULT_TIME).then_some(ms);
        let params = ::provd_client::message::UsageParams {
            since_ms: time(since_ms),
            until_ms: time(until_ms),
            by: Some(crate::usage_report::usage_by(by)?),
            user: user.map(str::to_owned),
        };
        let report = client.usage(&params)?;
        out.write(args::give(provd_usage_report::new(report)));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_socket_paths_are_refused_before_connecting() {
        let mut client = std::ptr::dangling_mut();
        let none = std::ptr::null_mut();
        let with_nul = "/tmp/a\0b";
        let status =
            provd_client_connect(with_nul.as_ptr().cast(), with_nul.len(), &mut client, none);
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        assert!(client.is_null(), "the out-pointer is NULL on failure");
        let status = provd_client_connect(c"".as_ptr(), 0, &mut client, none);
        assert_eq!(status, provd_status::PROVD_INVALID_ARGUMENT);
        let status = provd_client_connect(
            c"/x".as_ptr(),
            2,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        assert_eq!(status, provd_status::PROVD_NULL_ARGUMENT);
    }

    #[test]
    fn a_missing_daemon_is_unavailable_with_a_message_naming_the_path() {
        let dir = std::env::temp_dir().join(format!("provd-ffi-missing-{}", std::process::id()));
        let path = dir.join("none.sock");
        let path = path.to_str().unwrap();
        let mut client = std::ptr::null_mut();
        let mut err = std::ptr::null_mut();
        let status = provd_client_connect(path.as_ptr().cast(), path.len(), &mut client, &mut err);
        assert_eq!(status, provd_status::PROVD_UNAVAILABLE);
        // SAFETY: a fresh error object, taken once.
        let e = unsafe { args::take(err) }.unwrap();
        assert!(e.message.as_str().contains(path), "{:?}", e.message);
        assert!(client.is_null());
    }
}
