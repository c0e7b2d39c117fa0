//! The counter: matches a model name to a rule and counts with the rule's tokenizer, loading
//! Hugging Face files on first use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use regex::{RegexSet, RegexSetBuilder};

use super::chat::ChatMessage;
use super::config::{ChatTemplate, RuleTarget, TokenizerConfig};
use super::count::TokenCount;
use super::error::TokensError;
use super::estimate::{estimate_chat, estimate_text};
use super::hf::{HfFiles, HfTokenizer};
use super::openai::{cookbook_chat_tokens, OpenAiEncoding};

/// Counts tokens for model names; built once from the configuration and shared.
///
/// The first count that needs a tokenizer builds it and blocks meanwhile: measured in a
/// release build, about 0.1 s for a tiktoken encoding and 0.4-0.5 s for the Llama 3 or
/// Qwen 3 `tokenizer.json`, each adding 25-110 MB of memory. Count from a blocking thread
/// (not an async task), and count an empty text for each expected model at start-up to
/// move that cost out of the first request.
#[derive(Debug)]
pub struct TokenCounter {
    /// One pattern per route, in rule order.
    patterns: RegexSet,
    /// What each pattern leads to.
    routes: Vec<Route>,
    /// One slot per distinct `tokenizer.json`.
    hf: Vec<HfSlot>,
    /// Tokenizer files loaded so far (successfully or not).
    loads: AtomicUsize,
}

#[derive(Debug)]
struct Route {
    /// The tokenizer string reported with each count.
    tokenizer: String,
    kind: RouteKind,
    chat_template: Option<ChatTemplate>,
}

#[derive(Debug, Clone, Copy)]
enum RouteKind {
    Tiktoken(OpenAiEncoding),
    /// Index into `TokenCounter::hf`.
    Hf(usize),
}

#[derive(Debug)]
struct HfSlot {
    /// The `tokenizer:` string of the first rule using the file, for load errors.
    tokenizer: String,
    files: HfFiles,
    loaded: OnceLock<Result<HfTokenizer, TokensError>>,
}

impl TokenCounter {
    /// Validates `config` (patterns, tokenizer names, that configured files exist) and
    /// prepares the rules. No tokenizer file is read yet.
    pub fn new(config: &TokenizerConfig) -> Result<Self, TokensError> {
        let rules = config.rules()?;
        let patterns = RegexSetBuilder::new(rules.iter().map(|rule| &rule.pattern))
            .case_insensitive(true)
            .build()
            .map_err(|source| TokensError::PatternSet { source })?;
        let mut hf: Vec<HfSlot> = Vec::new();
        let routes = rules
            .into_iter()
            .map(|rule| {
                let kind = match rule.target {
                    RuleTarget::Tiktoken(encoding) => RouteKind::Tiktoken(encoding),
                    RuleTarget::Hf(files) => {
                        let slot = match hf.iter().position(|slot| slot.files == files) {
                            Some(slot) => slot,
                            None => {
                                hf.push(HfSlot {
                                    tokenizer: rule.tokenizer.clone(),
                                    files,
                                    loaded: OnceLock::new(),
                                });
                                hf.len() - 1
                            }
                        };
                        RouteKind::Hf(slot)
                    }
                };
                Route {
                    tokenizer: rule.tokenizer,
                    kind,
                    chat_template: rule.chat_template,
                }
            })
            .collect();
        Ok(Self {
            patterns,
            routes,
            hf,
            loads: AtomicUsize::new(0),
        })
    }

    /// Tokens in `text` (a completion, or any text sent as is), as `model`'s tokenizer counts
    /// them without adding special tokens.
    pub fn count_text(&self, model: &str, text: &str) -> TokenCount {
        let Some(route) = self.route(model) else {
            return estimate_text(text);
        };
        let tokens = match route.kind {
            RouteKind::Tiktoken(encoding) => Some(encoding.count(text)),
            RouteKind::Hf(slot) => self.hf_tokenizer(slot).and_then(|t| t.count(text)),
        };
        match tokens {
            Some(tokens) => TokenCount::computed(tokens, &route.tokenizer),
            None => estimate_text(text),
        }
    }

    /// Prompt tokens of a chat request: the messages and the tokens the chat format adds
    /// around them, up to and including the prompt for the assistant's reply.
    pub fn count_chat(&self, model: &str, messages: &[ChatMessage]) -> TokenCount {
        let Some(route) = self.route(model) else {
            return estimate_chat(messages);
        };
        let tokens = match route.kind {
            RouteKind::Tiktoken(encoding) => {
                Some(cookbook_chat_tokens(messages, |text| encoding.count(text)))
            }
            RouteKind::Hf(slot) => self.hf_tokenizer(slot).and_then(|tokenizer| {
                if route.chat_template == Some(ChatTemplate::OpenAi) {
                    let mut failed = false;
                    let tokens = cookbook_chat_tokens(messages, |text| {
                        tokenizer.count(text).unwrap_or_else(|| {
                            failed = true;
                            0
                        })
                    });
                    (!failed).then_some(tokens)
                } else {
                    tokenizer.count(&tokenizer.render(messages, route.chat_template))
                }
            }),
        };
        match tokens {
            Some(tokens) => TokenCount::computed(tokens, &route.tokenizer),
            None => estimate_chat(messages),
        }
    }

    /// The tokenizer that counts `model` (`tiktoken:o200k_base`, `hf:llama3`), or `None`
    /// when its counts are estimated. Does not load anything.
    pub fn tokenizer_for(&self, model: &str) -> Option<&str> {
        self.route(model).map(|route| route.tokenizer.as_str())
    }

    /// Errors met loading tokenizer files so far, one line each (`hf:llama3: cannot load
    /// ...`): the models they serve are estimated, or rendered with a built-in chat format
    /// when only the template failed. For the caller to log once.
    pub fn load_errors(&self) -> Vec<String> {
        self.hf
            .iter()
            .filter_map(|slot| {
                let error = match slot.loaded.get()? {
                    Err(error) => error,
                    Ok(tokenizer) => tokenizer.template_error()?,
                };
                Some(format!("{}: {error}", slot.tokenizer))
            })
            .collect()
    }

    /// How many tokenizer files have been read so far (each at most once).
    pub fn tokenizer_files_loaded(&self) -> usize {
        self.loads.load(Ordering::Relaxed)
    }

    /// The prompt an `hf:` route renders for `messages`; `None` for other routes.
    #[cfg(test)]
    pub(crate) fn render_chat(&self, model: &str, messages: &[ChatMessage]) -> Option<String> {
        let route = self.route(model)?;
        match route.kind {
            RouteKind::Hf(slot) => Some(
                self.hf_tokenizer(slot)?
                    .render(messages, route.chat_template),
            ),
            RouteKind::Tiktoken(_) => None,
        }
    }

    fn route(&self, model: &str) -> Option<&Route> {
        let first = self.patterns.matches(model).iter().next()?;
        self.routes.get(first)
    }

    /// The loaded tokenizer of a slot, loading it on first use; `None` if it failed to load.
    fn hf_tokenizer(&self, slot: usize) -> Option<&HfTokenizer> {
        let slot = self.hf.get(slot)?;
        slot.loaded
            .get_or_init(|| {
                self.loads.fetch_add(1, Ordering::Relaxed);
                HfTokenizer::load(&slot.files)
            })
            .as_ref()
            .ok()
    }
}
