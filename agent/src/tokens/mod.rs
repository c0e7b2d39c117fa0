//! Tokens: the number of input and output tokens of an exchange when the server did not
//! report them.
//!
//! Servers usually report usage, and a reported count always wins (the LLM stage passes it
//! through as [`CountSource::Reported`]). A stream without `stream_options.include_usage`, or
//! a server that never reports, leaves only text, and counting such an exchange as zero is
//! the complaint users raise most about metering. This stage counts that text with the
//! model's own tokenizer: the tiktoken encodings for OpenAI models (embedded in the binary),
//! Hugging Face `tokenizer.json` files for open models, with the chat prompt rendered the way
//! the server renders it (the package's own Jinja chat template, so the framing tokens count
//! too). Which tokenizer counts which model is a list of name patterns: the configured ones
//! first, then the built-in defaults ([`defaults`]).
//!
//! When no tokenizer is available (an unknown model, a tokenizer file missing or broken) the
//! count is an estimate, `ceil(chars / 4)`, never zero for non-empty text. Every
//! [`TokenCount`] says where it comes from ([`CountSource`]) and which tokenizer made it, so
//! exports can label it and billing can decide what to do with estimates. Nothing here logs:
//! per-call logging would flood, so the caller logs once per model or tokenizer, using the
//! returned source and [`TokenCounter::load_errors`].
//!
//! Tokenizer files are loaded lazily, on the first count that needs them, once per file, and
//! kept for the life of the counter; a [`TokenCounter`] is `Send + Sync` and shared by
//! reference.

mod chat;
mod config;
mod count;
mod counter;
pub mod defaults;
mod error;
mod estimate;
mod hf;
mod openai;
mod resolve;
mod template;

#[cfg(test)]
mod counter_tests;
#[cfg(test)]
mod reference_tests;
#[cfg(test)]
mod test_support;

pub use chat::ChatMessage;
pub use config::{ChatTemplate, ModelTokenizer, TokenizerConfig};
pub use count::{CountSource, TokenCount};
pub use counter::TokenCounter;
pub use error::TokensError;
pub use resolve::{resolve, TokenCounts};
