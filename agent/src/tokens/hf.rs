//! Open models: a Hugging Face `tokenizer.json` loaded with the `tokenizers` crate, and the
//! chat template of the `tokenizer_config.json` beside it.
//!
//! Counting encodes with `add_special_tokens = false`: a rendered prompt already holds its
//! BOS and header tokens as text, and the tokenizer's added-vocabulary pass turns each of
//! those literals into its single special token before the BPE model sees the rest (the
//! same as transformers and vLLM do with a rendered prompt). Letting the post-processor add
//! a BOS as well would count it twice with tokenizers whose post-processor adds one.
//! Truncation and padding from the file are switched off so long texts count in full.

use std::fs;
use std::path::{Component, Path, PathBuf};

use serde_json::Value as Json;
use tokenizers::Tokenizer;

use super::chat::{BuiltinTemplate, ChatMessage};
use super::config::ChatTemplate;
use super::error::TokensError;
use super::openai::len_u64;
use super::template::{self, HfChatTemplate};

/// The files of one Hugging Face tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HfFiles {
    /// The `tokenizer.json` (canonical path: two names for one file load it once).
    pub(crate) tokenizer: PathBuf,
    /// Where its `tokenizer_config.json` is or would be: the tokenizer file's stem +
    /// `_config.json` in the same directory (`tokenizer.json` -> `tokenizer_config.json`,
    /// `llama3.json` -> `llama3_config.json`).
    pub(crate) config: PathBuf,
}

impl HfFiles {
    /// The config file, or its expected path when it is missing.
    pub(crate) fn require_config(&self) -> Result<&Path, PathBuf> {
        if self.config.is_file() {
            Ok(&self.config)
        } else {
            Err(self.config.clone())
        }
    }
}

/// Whether `name` stays inside the tokenizer directory: not empty, relative, no `..`.
pub(crate) fn valid_name(name: &str) -> bool {
    let path = Path::new(name);
    !name.is_empty()
        && path
            .components()
            .all(|component| matches!(component, Component::Normal(_)))
}

/// The files `hf:<name>` names in `dir`, or the path that does not exist.
pub(crate) fn resolve(dir: &Path, name: &str) -> Result<HfFiles, PathBuf> {
    let path = dir.join(name);
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.clone()
    };
    if !file.is_file() {
        return Err(path);
    }
    let file = file.canonicalize().map_err(|_| path)?;
    let stem = file
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let config = file.with_file_name(format!("{stem}_config.json"));
    Ok(HfFiles {
        tokenizer: file,
        config,
    })
}

/// A loaded tokenizer with its chat template.
pub(crate) struct HfTokenizer {
    tokenizer: Tokenizer,
    /// The package's template, when it has one that compiles.
    template: Option<HfChatTemplate>,
    /// Why the package's template is not available, when it has one.
    template_error: Option<TokensError>,
    /// The rendering used without a template, chosen by the chat tokens in the vocabulary.
    builtin: BuiltinTemplate,
    /// The BOS token's text, empty when the tokenizer has none.
    bos: String,
}

/// Not derived: the tokenizer's `Debug` prints its whole vocabulary.
impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("vocab_size", &self.tokenizer.get_vocab_size(true))
            .field("template", &self.template.is_some())
            .field("template_error", &self.template_error)
            .field("builtin", &self.builtin)
            .field("bos", &self.bos)
            .finish_non_exhaustive()
    }
}

impl HfTokenizer {
    /// Reads and parses the files. Only a missing or invalid `tokenizer.json` is an error; a
    /// broken `tokenizer_config.json` or template leaves the built-in rendering in use.
    pub(crate) fn load(files: &HfFiles) -> Result<Self, TokensError> {
        let path = &files.tokenizer;
        let bytes = fs::read(path).map_err(|source| TokensError::Read {
            path: path.clone(),
            source,
        })?;
        let load_error = |source| TokensError::LoadTokenizer {
            path: path.clone(),
            source,
        };
        let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(load_error)?;
        tokenizer.with_truncation(None).map_err(load_error)?;
        tokenizer.with_padding(None);

        let (config, config_error) = match read_config(&files.config) {
            Ok(config) => (config, None),
            Err(error) => (None, Some(error)),
        };
        let (template, template_error) = match config
            .as_ref()
            .and_then(HfChatTemplate::from_tokenizer_config)
        {
            Some(Ok(template)) => (Some(template), None),
            Some(Err(source)) => (
                None,
                Some(TokensError::CompileTemplate {
                    path: files.config.clone(),
                    source,
                }),
            ),
            None => (None, config_error),
        };
        let builtin = if tokenizer.token_to_id("<|start_header_id|>").is_some() {
            BuiltinTemplate::Llama3
        } else if tokenizer.token_to_id("<|im_start|>").is_some() {
            BuiltinTemplate::ChatMl
        } else {
            BuiltinTemplate::Plain
        };
        let bos = config
            .as_ref()
            .and_then(|config| template::special_tokens(config).remove("bos_token"))
            .or_else(|| {
                let llama_bos = "<|begin_of_text|>";
                tokenizer
                    .token_to_id(llama_bos)
                    .map(|_| llama_bos.to_owned())
            })
            .unwrap_or_default();
        Ok(Self {
            tokenizer,
            template,
            template_error,
            builtin,
            bos,
        })
    }

    /// Why the package's chat template is not used, if it has one that failed.
    pub(crate) fn template_error(&self) -> Option<&TokensError> {
        self.template_error.as_ref()
    }

    /// Tokens in `text`, special-token literals counting as one token each; `None` if the
    /// tokenizer fails on it.
    pub(crate) fn count(&self, text: &str) -> Option<u64> {
        let encoding = self.tokenizer.encode_fast(text, false).ok()?;
        Some(len_u64(encoding.len()))
    }

    /// The prompt `messages` make with `template` (`None`: the package's own, else built-in).
    /// [`ChatTemplate::OpenAi`] is counted without rendering and is treated like `None` here.
    pub(crate) fn render(
        &self,
        messages: &[ChatMessage],
        template: Option<ChatTemplate>,
    ) -> String {
        let builtin = match template {
            Some(ChatTemplate::Llama3) => BuiltinTemplate::Llama3,
            Some(ChatTemplate::ChatMl) => BuiltinTemplate::ChatMl,
            Some(ChatTemplate::Hf | ChatTemplate::OpenAi) | None => {
                // A template may reject a conversation (`raise_exception`, e.g. roles that do
                // not alternate); the server would too, but the tokens are still worth counting.
                if let Some(Ok(rendered)) = self.template.as_ref().map(|t| t.render(messages)) {
                    return rendered;
                }
                self.builtin
            }
        };
        let bos = match (builtin, self.bos.is_empty()) {
            (BuiltinTemplate::Llama3, true) => "<|begin_of_text|>",
            _ => self.bos.as_str(),
        };
        builtin.render(messages, bos)
    }
}

/// The parsed `tokenizer_config.json`; `Ok(None)` when there is none.
fn read_config(path: &Path) -> Result<Option<Json>, TokensError> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TokensError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|source| TokensError::ParseTokenizerConfig {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::test_support::write_tiny_tokenizer;

    #[test]
    fn names_stay_inside_the_directory() {
        for name in ["llama3", "meta/llama-3.json", "a/b/c"] {
            assert!(valid_name(name), "{name}");
        }
        for name in ["", "/etc/passwd", "../x", "a/../../b", "./x"] {
            assert!(!valid_name(name), "{name}");
        }
    }

    #[test]
    fn resolves_directories_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_tokenizer(&dir.path().join("tiny"), None);
        fs::copy(
            dir.path().join("tiny/tokenizer.json"),
            dir.path().join("single.json"),
        )
        .expect("copy");
        let files = resolve(dir.path(), "tiny").expect("directory form");
        assert!(files.tokenizer.ends_with("tiny/tokenizer.json"));
        assert!(files.config.ends_with("tiny/tokenizer_config.json"));
        let files = resolve(dir.path(), "single.json").expect("file form");
        assert!(files.config.ends_with("single_config.json"));
        assert_eq!(
            resolve(dir.path(), "absent"),
            Err(dir.path().join("absent"))
        );
    }

    #[test]
    fn added_tokens_in_text_count_once_and_truncation_is_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_tokenizer(&dir.path().join("tiny"), None);
        let files = resolve(dir.path(), "tiny").expect("resolves");
        let tokenizer = HfTokenizer::load(&files).expect("loads");
        // The fixture truncates at 2 tokens and its post-processor adds <s>: neither applies.
        assert_eq!(tokenizer.count("hello world hello world"), Some(4));
        assert_eq!(tokenizer.count("<s>hello<s>"), Some(3));
        assert_eq!(tokenizer.count(""), Some(0));
        assert_eq!(tokenizer.builtin, BuiltinTemplate::Plain);
        assert!(tokenizer.template_error().is_none());
    }

    #[test]
    fn a_broken_template_leaves_the_builtin_rendering() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_tiny_tokenizer(
            &dir.path().join("tiny"),
            Some(r#"{"bos_token": "<s>", "chat_template": "{% for %}"}"#),
        );
        let files = resolve(dir.path(), "tiny").expect("resolves");
        let tokenizer = HfTokenizer::load(&files).expect("loads");
        assert!(matches!(
            tokenizer.template_error(),
            Some(TokensError::CompileTemplate { .. })
        ));
        let messages = [ChatMessage::new("user", "hello world")];
        assert_eq!(tokenizer.render(&messages, None), "<s>hello world");
    }
}
