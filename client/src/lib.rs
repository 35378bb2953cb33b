//! # provd-client
//!
//! The wire protocol of [provd](../README.md), the local LLM provider daemon, and a Rust
//! client for it.
//!
//! The protocol is the public contract between the daemon and every language that talks
//! to it: [`frame`] (length-prefixed MessagePack), [`message`] (the msgpack-rpc-shaped
//! envelope and every payload), [`error`] (the one system-wide [`ErrorCode`]).
//! `PROTOCOL.md` beside this crate documents it byte by byte.
//!
//! [`Client`] is the async client (tokio); [`blocking::Client`] wraps it for callers
//! without a runtime, such as the C ABI. Before it sends a byte, a client checks that the
//! socket is one only a trusted user can have made and that the process listening runs
//! as that user ([`trust`], the rule the daemon applies to its own files too).
//!
//! ```no_run
//! # async fn demo() -> Result<(), provd_client::ClientError> {
//! use provd_client::{Client, GenerateEvent, GenerateRequest};
//! let client = Client::connect(&provd_client::default_socket_path()).await?;
//! let mut generation = client.generate(GenerateRequest::prompt("Say hi")).await?;
//! while let Some(event) = generation.next().await {
//!     match event? {
//!         GenerateEvent::Chunk(chunk) => print!("{}", chunk.text),
//!         GenerateEvent::Done(done) => eprintln!("{:?}", done.usage),
//!     }
//! }
//! # Ok(()) }
//! ```

pub mod blocking;
mod client;
pub mod content;
pub mod error;
pub mod frame;
pub mod message;
pub mod socket;
mod socket_path;
#[cfg(unix)]
pub mod trust;
mod usage;

pub use client::{
    CancelHandle, Client, ClientError, Collected, ConnectOptions, GenerateEvent, Generation,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_HELLO_TIMEOUT,
};
pub use content::{
    Effort, Image, Reasoning, ResponseFormat, Tool, ToolCall, ToolCallDelta, ToolChoice,
};
pub use error::{ErrorCode, WireError};
pub use message::{
    Chunk, FinishReason, GenerateDone, GenerateRequest, Message, ModelInfo, ModelList,
    ProviderInfo, ProviderList, Role, StatusResult, Usage, PROTOCOL_VERSION,
};
pub use socket_path::{default_socket_path, SOCKET_ENV};
