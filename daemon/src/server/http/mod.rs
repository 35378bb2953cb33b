//! The HTTP front door: the OpenAI, Anthropic and Ollama dialects and `/generate`.

pub mod anthropic;
pub mod generate;
pub mod ollama;
