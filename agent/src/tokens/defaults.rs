//! The built-in model rules, tried after the configured ones.
//!
//! OpenAI families use the tiktoken encoding OpenAI publishes for them (as tiktoken-rs maps
//! them): `o200k_base` for the GPT-4o generation and later, `cl100k_base` for GPT-4,
//! GPT-3.5 and the current embedding models. A provider prefix (`openai/gpt-4o`, `azure/...`)
//! and the fine-tune prefix `ft:` are accepted. `gpt-oss` is not listed: it is served with the
//! Harmony format, which the cookbook rule does not describe.
//!
//! Open models use the Hugging Face tokenizer of the same name in `tokenizer_dir`; a rule
//! whose tokenizer is not there is skipped, so `qwen2.5` falls through to the `qwen3`
//! tokenizer (same vocabulary; Qwen 2.5's template adds a default system prompt that Qwen 3's
//! does not) before it falls back to an estimate.

/// A built-in rule. Patterns are matched like configured ones: case-insensitive, unanchored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinRule {
    /// Regular expression on the model name.
    pub pattern: &'static str,
    /// The tokenizer, as in [`ModelTokenizer::tokenizer`](super::ModelTokenizer::tokenizer).
    pub tokenizer: &'static str,
}

/// Optional provider path and fine-tune prefix in front of an OpenAI model name.
macro_rules! openai {
    ($models:literal) => {
        concat!(r"^(?:ft:)?(?:[\w.-]+/)*(?:", $models, ")")
    };
}

/// The built-in rules, in the order they are tried.
pub const RULES: &[BuiltinRule] = &[
    BuiltinRule {
        pattern: openai!(r"gpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|chatgpt-4o|o[134](?:$|-)"),
        tokenizer: "tiktoken:o200k_base",
    },
    BuiltinRule {
        pattern: openai!(
            r"gpt-4(?:$|[-:])|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002"
        ),
        tokenizer: "tiktoken:cl100k_base",
    },
    BuiltinRule {
        pattern: r"llama-?3(?:$|[^0-9])",
        tokenizer: "hf:llama3",
    },
    BuiltinRule {
        pattern: r"qwen-?2\.5|qwq",
        tokenizer: "hf:qwen2.5",
    },
    BuiltinRule {
        pattern: r"qwen",
        tokenizer: "hf:qwen3",
    },
    BuiltinRule {
        pattern: r"mistral|mixtral|ministral|codestral|devstral|magistral",
        tokenizer: "hf:mistral",
    },
    BuiltinRule {
        pattern: r"gemma",
        tokenizer: "hf:gemma",
    },
    BuiltinRule {
        pattern: r"deepseek",
        tokenizer: "hf:deepseek",
    },
];
