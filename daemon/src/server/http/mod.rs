//! The HTTP front door: one module per API dialect, each a codec between its JSON and provd's generation.

pub mod generate;
pub mod ollama;
