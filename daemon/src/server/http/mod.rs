//! The HTTP front door: the OpenAI, Anthropic and Ollama dialects and `/generate`.

pub mod anthropic;
