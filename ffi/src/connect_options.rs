//! The client's deadlines, given at connect time.

use std::time::Duration;

use ::provd_client::ConnectOptions;

/// The client's deadlines, in milliseconds; 0 means no deadline for that step. A missed
/// deadline is `PROVD_TIMEOUT`, with a message naming the step and the deadline.
///
/// Start from `provd_connect_options_default()` and change the fields you need, so that
/// a program keeps sensible values for the others.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct provd_connect_options {
    /// Reaching the socket (checking it and connecting). Default 5000.
    pub connect_timeout_ms: u32,
    /// The daemon's answer to the hello, once connected. Default 5000.
    pub hello_timeout_ms: u32,
    /// Each later blocking call: the whole round trip of ping, the lists, status and
    /// cancel; the start of a generation; and the wait for each next chunk or the end of
    /// a generation (`provd_client_generate` and `provd_stream_next`), after which the
    /// generation is cancelled in the daemon. Default 0 (none: a model may think long).
    pub call_timeout_ms: u32,
}

fn millis(ms: u32) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(ms.into()))
}

impl From<provd_connect_options> for ConnectOptions {
    fn from(o: provd_connect_options) -> ConnectOptions {
        ConnectOptions::new()
            .connect_timeout(millis(o.connect_timeout_ms))
            .hello_timeout(millis(o.hello_timeout_ms))
            .call_timeout(millis(o.call_timeout_ms))
    }
}

fn as_millis(d: Option<Duration>) -> u32 {
    d.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
}

/// The default deadlines, those `provd_client_connect` uses: 5000 ms to connect, 5000 ms
/// for the hello's answer, no deadline per call.
///
/// Thread-safe; never fails.
#[no_mangle]
pub extern "C" fn provd_connect_options_default() -> provd_connect_options {
    let d = ConnectOptions::new();
    provd_connect_options {
        connect_timeout_ms: as_millis(d.connect_deadline()),
        hello_timeout_ms: as_millis(d.hello_deadline()),
        call_timeout_ms: as_millis(d.call_deadline()),
    }
}
