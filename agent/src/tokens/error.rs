//! The tokens stage's errors: configuration errors from [`TokenCounter::new`], and the load
//! errors of tokenizer files, which are kept (see [`TokenCounter::load_errors`]) while the
//! affected models fall back to estimates.
//!
//! [`TokenCounter::new`]: super::TokenCounter::new
//! [`TokenCounter::load_errors`]: super::TokenCounter::load_errors

use std::path::PathBuf;

/// Everything that can go wrong in the tokens stage.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// A `models[].pattern` is not a valid regular expression.
    #[error("invalid config: `models[{index}].pattern`: {pattern:?} is not a valid regular expression: {source}")]
    InvalidPattern {
        /// Position of the rule in `models`.
        index: usize,
        /// The pattern as configured.
        pattern: String,
        /// Why the regex crate rejected it.
        source: regex::Error,
    },
    /// Each pattern compiles alone but all of them together exceed the regex size limit.
    #[error(
        "invalid config: `models`: the patterns together are too large to match at once: {source}"
    )]
    PatternSet {
        /// The regex crate's error for the combined set.
        source: regex::Error,
    },
    /// A `models[].tokenizer` is neither `tiktoken:<encoding>` (a supported encoding) nor
    /// `hf:<name>`.
    #[error("invalid config: `models[{index}].tokenizer`: unknown tokenizer {value:?} (expected \"tiktoken:o200k_base\", \"tiktoken:cl100k_base\" or \"hf:<name>\")")]
    UnknownTokenizer {
        /// Position of the rule in `models`.
        index: usize,
        /// The value as configured.
        value: String,
    },
    /// An `hf:<name>` is empty, absolute, or leaves `tokenizer_dir` (`..`).
    #[error("invalid config: `models[{index}].tokenizer`: {value:?} must name a file or directory inside `tokenizer_dir`")]
    InvalidHfName {
        /// Position of the rule in `models`.
        index: usize,
        /// The value as configured.
        value: String,
    },
    /// A rule uses an `hf:` tokenizer but `tokenizer_dir` is not set.
    #[error(
        "invalid config: `models[{index}].tokenizer`: {value:?} needs `tokenizer_dir` to be set"
    )]
    NoTokenizerDir {
        /// Position of the rule in `models`.
        index: usize,
        /// The value as configured.
        value: String,
    },
    /// `tokenizer_dir` does not exist or is not a directory.
    #[error("invalid config: `tokenizer_dir`: {} is not a directory", path.display())]
    TokenizerDir {
        /// The configured directory.
        path: PathBuf,
    },
    /// An `hf:<name>` names neither a file nor a directory with a `tokenizer.json`.
    #[error("invalid config: `models[{index}].tokenizer`: {value:?}: neither {} nor {}/tokenizer.json exists", path.display(), path.display())]
    TokenizerFileMissing {
        /// Position of the rule in `models`.
        index: usize,
        /// The value as configured.
        value: String,
        /// Where the name resolves to.
        path: PathBuf,
    },
    /// `chat_template = "hf"` but the tokenizer has no `tokenizer_config.json` beside it.
    #[error("invalid config: `models[{index}].chat_template`: \"hf\" needs {}", path.display())]
    TemplateFileMissing {
        /// Position of the rule in `models`.
        index: usize,
        /// The `tokenizer_config.json` that is missing.
        path: PathBuf,
    },
    /// A template other than `openai` is given for a tiktoken tokenizer, which has no
    /// special tokens to frame a rendered prompt with.
    #[error("invalid config: `models[{index}].chat_template`: only \"openai\" applies to tiktoken tokenizers")]
    TemplateNeedsHf {
        /// Position of the rule in `models`.
        index: usize,
    },
    /// A tokenizer file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `tokenizers` crate rejected a `tokenizer.json`.
    #[error("cannot load tokenizer {}: {source}", path.display())]
    LoadTokenizer {
        /// The `tokenizer.json`.
        path: PathBuf,
        /// The `tokenizers` crate's error.
        source: tokenizers::Error,
    },
    /// A `tokenizer_config.json` is not valid JSON.
    #[error("invalid tokenizer config {}: {source}", path.display())]
    ParseTokenizerConfig {
        /// The `tokenizer_config.json`.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The chat template of a `tokenizer_config.json` does not compile; the built-in
    /// rendering is used instead.
    #[error("chat template of {} does not compile: {source}", path.display())]
    CompileTemplate {
        /// The `tokenizer_config.json`.
        path: PathBuf,
        /// minijinja's error.
        source: minijinja::Error,
    },
}
