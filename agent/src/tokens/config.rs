//! Configuration of the tokens stage: where tokenizer files live and which tokenizer counts
//! which model. Validation resolves the rules (configured first, then the built-in
//! [`defaults`](super::defaults)) into the list the counter matches model names against.

use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use super::defaults;
use super::error::TokensError;
use super::hf::{self, HfFiles};
use super::openai::OpenAiEncoding;

/// The `[tokens]` section. The default (no directory, no rules) counts OpenAI models exactly
/// and estimates every other model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizerConfig {
    /// Directory of Hugging Face tokenizers: `hf:<name>` is `<tokenizer_dir>/<name>/tokenizer.json`
    /// (with the chat template read from `tokenizer_config.json` beside it) or the file
    /// `<tokenizer_dir>/<name>`. Unset: only tiktoken tokenizers are available. When set it
    /// must exist; the built-in rules use the names `llama3`, `qwen3`, `qwen2.5`, `mistral`,
    /// `gemma` and `deepseek` when those are present in it.
    pub tokenizer_dir: Option<PathBuf>,
    /// Rules tried in order before the built-in ones; the first whose pattern matches the
    /// request's model name decides its tokenizer.
    pub models: Vec<ModelTokenizer>,
}

/// One rule: the models a pattern matches and how to count their tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTokenizer {
    /// Regular expression searched in the model name, case-insensitive and unanchored (use
    /// `^`/`$` to anchor), e.g. `"^meta-llama/llama-3"`.
    pub pattern: String,
    /// `"tiktoken:o200k_base"`, `"tiktoken:cl100k_base"` or `"hf:<name>"` (a file or
    /// directory in `tokenizer_dir`).
    pub tokenizer: String,
    /// How chat messages become the prompt that is counted. Unset: `openai` for tiktoken
    /// tokenizers; for `hf:` ones the package's own template when it has one, else the
    /// built-in rendering its special tokens point to (`llama3`, `chatml`, or the bare
    /// contents).
    #[serde(default)]
    pub chat_template: Option<ChatTemplate>,
}

/// How a chat request becomes the prompt the model sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChatTemplate {
    /// The OpenAI cookbook's rule: each message's role, content and name, plus 3 tokens per
    /// message, 1 per name and 3 to prime the reply.
    OpenAi,
    /// Llama 3: `<|begin_of_text|>`, then `<|start_header_id|>role<|end_header_id|>\n\n`
    /// + trimmed content + `<|eot_id|>` per message, then the assistant header.
    Llama3,
    /// ChatML (Qwen and others): `<|im_start|>role\ncontent<|im_end|>\n` per message, then
    /// `<|im_start|>assistant\n`.
    ChatMl,
    /// The `chat_template` of the package's `tokenizer_config.json`, rendered with
    /// `add_generation_prompt=true` as vLLM and transformers do.
    Hf,
}

/// What a tokenizer string names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenizerSpec {
    /// One of the embedded tiktoken encodings.
    Tiktoken(OpenAiEncoding),
    /// A Hugging Face tokenizer in `tokenizer_dir`.
    Hf(String),
}

impl TokenizerSpec {
    /// Parses `tiktoken:<encoding>` or `hf:<name>`; `None` for anything else.
    pub(crate) fn parse(value: &str) -> Option<Self> {
        if let Some(encoding) = value.strip_prefix("tiktoken:") {
            return OpenAiEncoding::from_name(encoding).map(Self::Tiktoken);
        }
        value
            .strip_prefix("hf:")
            .map(|name| Self::Hf(name.to_owned()))
    }
}

/// A validated rule, its files found.
#[derive(Debug)]
pub(crate) struct Rule {
    /// The pattern, compiled alone once to validate it.
    pub(crate) pattern: String,
    /// The tokenizer string, reported in each count.
    pub(crate) tokenizer: String,
    /// What counts the tokens.
    pub(crate) target: RuleTarget,
    /// The configured chat template, if any.
    pub(crate) chat_template: Option<ChatTemplate>,
}

/// The tokenizer a rule resolves to.
#[derive(Debug)]
pub(crate) enum RuleTarget {
    /// An embedded tiktoken encoding.
    Tiktoken(OpenAiEncoding),
    /// Hugging Face files (loaded on first use).
    Hf(HfFiles),
}

/// Compiles a pattern the way the counter matches it.
pub(crate) fn pattern_regex(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).case_insensitive(true).build()
}

impl TokenizerConfig {
    /// Checks the configuration, including that the files it names exist. Errors name the
    /// offending field.
    pub fn validate(&self) -> Result<(), TokensError> {
        self.rules().map(|_| ())
    }

    /// The configured rules then the built-in ones whose tokenizer is available.
    pub(crate) fn rules(&self) -> Result<Vec<Rule>, TokensError> {
        let dir = self.tokenizer_dir.as_deref();
        if let Some(dir) = dir {
            if !dir.is_dir() {
                return Err(TokensError::TokenizerDir {
                    path: dir.to_path_buf(),
                });
            }
        }
        let mut rules = Vec::with_capacity(self.models.len() + defaults::RULES.len());
        for (index, model) in self.models.iter().enumerate() {
            rules.push(configured_rule(index, model, dir)?);
        }
        rules.extend(
            defaults::RULES
                .iter()
                .filter_map(|rule| builtin_rule(rule, dir)),
        );
        Ok(rules)
    }
}

fn configured_rule(
    index: usize,
    model: &ModelTokenizer,
    dir: Option<&Path>,
) -> Result<Rule, TokensError> {
    pattern_regex(&model.pattern).map_err(|source| TokensError::InvalidPattern {
        index,
        pattern: model.pattern.clone(),
        source,
    })?;
    let unknown = || TokensError::UnknownTokenizer {
        index,
        value: model.tokenizer.clone(),
    };
    let target = match TokenizerSpec::parse(&model.tokenizer).ok_or_else(unknown)? {
        TokenizerSpec::Tiktoken(encoding) => {
            if !matches!(model.chat_template, None | Some(ChatTemplate::OpenAi)) {
                return Err(TokensError::TemplateNeedsHf { index });
            }
            RuleTarget::Tiktoken(encoding)
        }
        TokenizerSpec::Hf(name) => {
            let value = || model.tokenizer.clone();
            if !hf::valid_name(&name) {
                return Err(TokensError::InvalidHfName {
                    index,
                    value: value(),
                });
            }
            let dir = dir.ok_or_else(|| TokensError::NoTokenizerDir {
                index,
                value: value(),
            })?;
            let files =
                hf::resolve(dir, &name).map_err(|path| TokensError::TokenizerFileMissing {
                    index,
                    value: value(),
                    path,
                })?;
            if model.chat_template == Some(ChatTemplate::Hf) {
                if let Err(path) = files.require_config() {
                    return Err(TokensError::TemplateFileMissing { index, path });
                }
            }
            RuleTarget::Hf(files)
        }
    };
    Ok(Rule {
        pattern: model.pattern.clone(),
        tokenizer: model.tokenizer.clone(),
        target,
        chat_template: model.chat_template,
    })
}

/// A built-in rule, or `None` when its tokenizer is not installed (a later rule may match).
fn builtin_rule(rule: &defaults::BuiltinRule, dir: Option<&Path>) -> Option<Rule> {
    let target = match TokenizerSpec::parse(rule.tokenizer)? {
        TokenizerSpec::Tiktoken(encoding) => RuleTarget::Tiktoken(encoding),
        TokenizerSpec::Hf(name) => RuleTarget::Hf(hf::resolve(dir?, &name).ok()?),
    };
    Some(Rule {
        pattern: rule.pattern.to_owned(),
        tokenizer: rule.tokenizer.to_owned(),
        target,
        chat_template: None,
    })
}
