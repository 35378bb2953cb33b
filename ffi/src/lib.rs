//! # libprovd: the C ABI of provd
//!
//! Everything a C, C++, Go or Python program needs to stream generations from the provd
//! daemon, over [`::provd_client::blocking::Client`]. `include/provd.h` is generated from
//! the doc comments and signatures in this crate by cbindgen (`ffi/cbindgen.toml`); the
//! test `ffi/tests/header.rs` fails when the committed header is stale.
//!
//! The shape follows rustls-ffi:
//!
//! - every fallible function returns a [`provd_status`]; the details of a failure come
//!   back as a [`error::provd_error`] object through an out-parameter, never through a
//!   thread-local "last error" (Go moves goroutines between OS threads);
//! - handles are opaque pointers, each `provd_T` with its free function `provd_T_free`;
//! - every exported function runs inside the panic boundary of [`mod@panic`], entered through
//!   a macro (`boundary!`, `accessor!`) that names the function from the function itself,
//!   which catches panics and turns them into `PROVD_INTERNAL`;
//! - borrowed strings go in as pointer + length and are checked for NULL and UTF-8 in
//!   [`args`]; strings the library lends out are [`provd_str`].
//!
//! One file per object family, as in rustls-ffi: the type, its constructor, its
//! accessors and its `_free` live together, so a newcomer finds everything about
//! `provd_done` in `done.rs`. `ffi/CONTRIBUTING.md` says how to add a function.

// The exported names are C names (`provd_client`, `PROVD_OK`), written once here so the
// header and the Rust source read the same.
#![allow(non_camel_case_types)]
// The exported functions take raw pointers from C and check them at the top. They are not
// `unsafe fn` because no Rust code can call them (the crate builds no rlib); their safety
// contract is the header's documentation, and each dereference has its `// SAFETY:`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]

// The machinery every exported function uses.
pub mod args; // checks on what C hands in: handles, out-pointers, borrowed strings
pub mod error; // provd_error, the details of a failure, and its accessors
pub mod panic; // the panic boundary and the macros that name the function they wrap
pub mod status; // provd_status, the one result enum, and provd_status_name
pub mod strings; // provd_str, the strings the library lends out
pub mod version; // provd_version, provd_protocol_version

// The object families, one file each.
pub mod cancel_token; // provd_cancel_token: cancel generations from any thread
pub mod chunk; // provd_chunk: text, tool-call and reasoning pieces, as views
pub mod client; // provd_client: connect, free, ping and the short requests
pub mod connect_options; // provd_connect_options: the client's deadlines
pub mod daemon_status;
pub mod done; // provd_done: usage, finish reason and who answered
pub mod generate; // provd_client_generate and its chunk callback
pub mod model_list; // provd_model_list: the answer of list_models
pub mod provider_list; // provd_provider_list: the answer of list_providers
pub mod request; // provd_request: the generation request builder
pub mod stream; // provd_stream: pull-driven generation // provd_daemon_status: the answer of status
pub mod usage_report; // provd_usage_report: the answer of usage, who used what

pub use status::provd_status;
pub use strings::provd_str;
pub(crate) use strings::NulString;
