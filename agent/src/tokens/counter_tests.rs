//! Tests of configuration, routing, fallback and caching that need no npm packages: the
//! Hugging Face files are a tiny word-level tokenizer written to a temporary directory.

use std::path::{Path, PathBuf};

use super::test_support::write_tiny_tokenizer;
use super::{
    ChatMessage, ChatTemplate, CountSource, ModelTokenizer, TokenCounter, TokenizerConfig,
    TokensError,
};

fn rule(pattern: &str, tokenizer: &str, chat_template: Option<ChatTemplate>) -> ModelTokenizer {
    ModelTokenizer {
        pattern: pattern.to_owned(),
        tokenizer: tokenizer.to_owned(),
        chat_template,
    }
}

fn config(dir: Option<&Path>, models: Vec<ModelTokenizer>) -> TokenizerConfig {
    TokenizerConfig {
        tokenizer_dir: dir.map(Path::to_path_buf),
        models,
    }
}

/// A tokenizer directory with `tiny/` (tokenizer.json only) and `templated/` (with a
/// tokenizer_config.json holding a template).
fn tokenizer_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    write_tiny_tokenizer(&dir.path().join("tiny"), None);
    write_tiny_tokenizer(
        &dir.path().join("templated"),
        Some(
            r#"{"bos_token": "<s>", "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }} {% endfor %}"}"#,
        ),
    );
    dir
}

#[test]
fn counter_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<TokenCounter>();
    assert_send_sync::<TokensError>();
}

#[test]
fn example_config_parses_completely() {
    let dir = tokenizer_dir();
    let text = format!(
        r#"
        tokenizer_dir = "{}"
        [[models]]
        pattern = "^my-llama"
        tokenizer = "hf:tiny"
        chat_template = "llama3"
        [[models]]
        pattern = "azure-prod-gpt"
        tokenizer = "tiktoken:o200k_base"
        "#,
        dir.path().display()
    );
    let parsed: TokenizerConfig = toml::from_str(&text).expect("parses");
    assert_eq!(
        parsed,
        config(
            Some(dir.path()),
            vec![
                rule("^my-llama", "hf:tiny", Some(ChatTemplate::Llama3)),
                rule("azure-prod-gpt", "tiktoken:o200k_base", None),
            ]
        )
    );
    parsed.validate().expect("valid");
    assert_eq!(
        toml::from_str::<TokenizerConfig>("").expect("empty"),
        TokenizerConfig::default()
    );
}

#[test]
fn unknown_keys_and_values_are_rejected_when_parsing() {
    for (text, needle) in [
        ("tokenizer_directory = \"/x\"", "tokenizer_directory"),
        (
            "[[models]]\npattern = \"x\"\ntokenizer = \"hf:x\"\ntemplate = \"hf\"",
            "template",
        ),
        (
            "[[models]]\npattern = \"x\"\ntokenizer = \"hf:x\"\nchat_template = \"alpaca\"",
            "alpaca",
        ),
        ("[[models]]\npattern = \"x\"", "tokenizer"),
    ] {
        let error = toml::from_str::<TokenizerConfig>(text)
            .expect_err(text)
            .to_string();
        assert!(error.contains(needle), "{text:?}: {error}");
    }
}

#[test]
fn invalid_configs_name_the_field() {
    let dir = tokenizer_dir();
    let missing_dir = dir.path().join("absent");
    let ok = rule("ok", "tiktoken:cl100k_base", None);
    let cases: Vec<(&str, TokenizerConfig, &str)> = vec![
        (
            "bad regex",
            config(None, vec![rule("(", "tiktoken:o200k_base", None)]),
            "`models[0].pattern`",
        ),
        (
            "second rule",
            config(
                None,
                vec![ok.clone(), rule("[z-a]", "tiktoken:o200k_base", None)],
            ),
            "`models[1].pattern`",
        ),
        (
            "unknown encoding",
            config(None, vec![rule("x", "tiktoken:p50k_base", None)]),
            "`models[0].tokenizer`: unknown tokenizer",
        ),
        (
            "unknown kind",
            config(None, vec![rule("x", "sentencepiece:x", None)]),
            "`models[0].tokenizer`: unknown tokenizer",
        ),
        (
            "hf without dir",
            config(None, vec![rule("x", "hf:tiny", None)]),
            "needs `tokenizer_dir`",
        ),
        (
            "hf escapes",
            config(Some(dir.path()), vec![rule("x", "hf:../tiny", None)]),
            "inside `tokenizer_dir`",
        ),
        (
            "hf empty",
            config(Some(dir.path()), vec![rule("x", "hf:", None)]),
            "inside `tokenizer_dir`",
        ),
        (
            "hf missing",
            config(
                Some(dir.path()),
                vec![ok.clone(), rule("x", "hf:nope", None)],
            ),
            "`models[1].tokenizer`: \"hf:nope\": neither",
        ),
        (
            "dir missing",
            config(Some(&missing_dir), vec![]),
            "`tokenizer_dir`",
        ),
        (
            "hf template without config",
            config(
                Some(dir.path()),
                vec![rule("x", "hf:tiny", Some(ChatTemplate::Hf))],
            ),
            "`models[0].chat_template`",
        ),
        (
            "llama3 template on tiktoken",
            config(
                None,
                vec![rule("x", "tiktoken:o200k_base", Some(ChatTemplate::Llama3))],
            ),
            "`models[0].chat_template`",
        ),
    ];
    for (what, config, needle) in cases {
        let error = TokenCounter::new(&config).expect_err(what).to_string();
        assert!(error.contains(needle), "{what}: {error}");
        assert!(config.validate().is_err(), "{what}");
    }
    // The same rules, fixed, are accepted.
    let fine = config(
        Some(dir.path()),
        vec![
            ok,
            rule("x", "hf:tiny", Some(ChatTemplate::ChatMl)),
            rule("y", "hf:templated", Some(ChatTemplate::Hf)),
            rule("z", "hf:tiny/tokenizer.json", Some(ChatTemplate::OpenAi)),
        ],
    );
    TokenCounter::new(&fine).expect("valid");
}

#[test]
fn default_rules_map_model_families() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["llama3", "qwen3"] {
        write_tiny_tokenizer(&dir.path().join(name), None);
    }
    let with_files = TokenCounter::new(&config(Some(dir.path()), vec![])).expect("valid");
    let without_files = TokenCounter::new(&TokenizerConfig::default()).expect("valid");
    let o200k = Some("tiktoken:o200k_base");
    let cl100k = Some("tiktoken:cl100k_base");
    let cases = [
        ("gpt-4o", o200k),
        ("gpt-4o-mini-2024-07-18", o200k),
        ("GPT-4.1-nano", o200k),
        ("gpt-4.5-preview", o200k),
        ("gpt-5", o200k),
        ("gpt-5.1-codex", o200k),
        ("o1", o200k),
        ("o1-preview", o200k),
        ("o3-mini", o200k),
        ("o4-mini-2025-04-16", o200k),
        ("chatgpt-4o-latest", o200k),
        ("openai/gpt-4o", o200k),
        ("ft:gpt-4o-mini-2024-07-18:org::abc", o200k),
        ("gpt-4", cl100k),
        ("gpt-4-0613", cl100k),
        ("gpt-4-turbo", cl100k),
        ("gpt-4-32k", cl100k),
        ("gpt-3.5-turbo-0125", cl100k),
        ("gpt-35-turbo", cl100k),
        ("text-embedding-3-small", cl100k),
        ("text-embedding-ada-002", cl100k),
        ("o5-experimental", None),
        ("gpt-oss-120b", None),
        ("claude-3-5-sonnet", None),
        ("llama-30b", None),
        ("bert-base", None),
    ];
    for (model, expected) in cases {
        assert_eq!(with_files.tokenizer_for(model), expected, "{model}");
        assert_eq!(without_files.tokenizer_for(model), expected, "{model}");
    }
    let llama3 = Some("hf:llama3");
    let qwen3 = Some("hf:qwen3");
    for (model, expected) in [
        ("meta-llama/Llama-3.1-8B-Instruct", llama3),
        ("meta-llama/Meta-Llama-3-70B-Instruct", llama3),
        ("llama3.2:3b", llama3),
        ("Llama-3.3-70B", llama3),
        ("Qwen/Qwen3-8B", qwen3),
        // No qwen2.5/ directory: Qwen 2.5 falls through to the Qwen 3 tokenizer.
        ("Qwen/Qwen2.5-7B-Instruct", qwen3),
        ("qwq-32b", None),
        ("mistralai/Mistral-7B-Instruct-v0.3", None),
    ] {
        assert_eq!(with_files.tokenizer_for(model), expected, "{model}");
        assert_eq!(without_files.tokenizer_for(model), None, "{model}");
    }
}

#[test]
fn configured_rules_come_before_defaults() {
    let dir = tokenizer_dir();
    let counter = TokenCounter::new(&config(
        Some(dir.path()),
        vec![rule("^gpt-4o-selfhosted$", "hf:tiny", None)],
    ))
    .expect("valid");
    assert_eq!(counter.tokenizer_for("GPT-4o-selfhosted"), Some("hf:tiny"));
    assert_eq!(
        counter.tokenizer_for("gpt-4o-selfhosted-2"),
        Some("tiktoken:o200k_base")
    );
    let count = counter.count_text("gpt-4o-selfhosted", "hello world hello");
    assert_eq!((count.tokens, count.source), (3, CountSource::Computed));
    assert_eq!(count.tokenizer, "hf:tiny");
}

#[test]
fn unknown_models_and_broken_files_are_estimated() {
    let dir = tokenizer_dir();
    std::fs::create_dir(dir.path().join("broken")).expect("mkdir");
    std::fs::write(dir.path().join("broken/tokenizer.json"), "{not json").expect("write");
    let counter = TokenCounter::new(&config(
        Some(dir.path()),
        vec![rule("^broken$", "hf:broken", None)],
    ))
    .expect("files exist, so the config is valid");
    assert!(counter.load_errors().is_empty(), "nothing loaded yet");
    for model in ["some-unknown-model", "broken"] {
        for (text, tokens) in [("", 0), ("a", 1), ("hello world", 3), ("日本語", 1)] {
            let count = counter.count_text(model, text);
            assert_eq!(count.source, CountSource::Estimated, "{model}");
            assert_eq!(count.tokenizer, "estimate:chars/4");
            assert_eq!(count.tokens, tokens, "{model}: {text:?}");
        }
        let chat = counter.count_chat(model, &[ChatMessage::new("user", "hi")]);
        assert_eq!((chat.source, chat.tokens), (CountSource::Estimated, 8));
    }
    let errors = counter.load_errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("hf:broken: cannot load tokenizer "),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("broken/tokenizer.json"), "{}", errors[0]);
}

#[test]
fn each_tokenizer_file_is_loaded_once_and_lazily() {
    let dir = tokenizer_dir();
    // Two names for one file: the directory and the file inside it.
    let counter = TokenCounter::new(&config(
        Some(dir.path()),
        vec![
            rule("^a$", "hf:tiny", None),
            rule("^b$", "hf:tiny/tokenizer.json", Some(ChatTemplate::OpenAi)),
        ],
    ))
    .expect("valid");
    assert_eq!(counter.tokenizer_files_loaded(), 0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for model in ["a", "b"] {
                    let count = counter.count_text(model, "hello world");
                    assert_eq!((count.tokens, count.source), (2, CountSource::Computed));
                }
            });
        }
    });
    assert_eq!(counter.tokenizer_files_loaded(), 1);
    assert!(counter.load_errors().is_empty());
}

#[test]
fn hf_chat_uses_the_package_template_or_the_configured_one() {
    let dir = tokenizer_dir();
    let counter = TokenCounter::new(&config(
        Some(dir.path()),
        vec![
            rule("^package$", "hf:templated", None),
            rule("^cookbook$", "hf:templated", Some(ChatTemplate::OpenAi)),
            rule("^plain$", "hf:tiny", None),
        ],
    ))
    .expect("valid");
    let messages = [
        ChatMessage::new("system", "hello"),
        ChatMessage::new("user", "world world").with_name("hello"),
    ];
    // "<s>hello world world ": the template's BOS counts once.
    assert_eq!(
        counter.render_chat("package", &messages).as_deref(),
        Some("<s>hello world world ")
    );
    assert_eq!(counter.count_chat("package", &messages).tokens, 4);
    // Cookbook: (3 + role + content) per message + (name + 1) + 3; roles are <unk> (1 token).
    assert_eq!(
        counter.count_chat("cookbook", &messages).tokens,
        (3 + 1 + 1) + (3 + 1 + 2 + 1 + 1) + 3
    );
    // No template, no chat tokens: the contents, newline separated.
    assert_eq!(counter.count_chat("plain", &messages).tokens, 3);
}

#[test]
fn tiktoken_chat_follows_the_cookbook() {
    let counter = TokenCounter::new(&TokenizerConfig::default()).expect("valid");
    let messages = [ChatMessage::new("user", "hello world")];
    let count = counter.count_chat("gpt-4o", &messages);
    // 3 + "user" (1) + "hello world" (2) + 3.
    assert_eq!((count.tokens, count.source), (9, CountSource::Computed));
    assert_eq!(count.tokenizer, "tiktoken:o200k_base");
    assert_eq!(
        counter.tokenizer_files_loaded(),
        0,
        "tiktoken reads no files"
    );
}

#[test]
fn paths_in_errors_are_where_the_name_resolves() {
    let dir = tokenizer_dir();
    let error = TokenCounter::new(&config(Some(dir.path()), vec![rule("x", "hf:nope", None)]))
        .expect_err("missing");
    match error {
        TokensError::TokenizerFileMissing { index, path, .. } => {
            assert_eq!(index, 0);
            assert_eq!(path, PathBuf::from(dir.path()).join("nope"));
        }
        other => panic!("unexpected {other}"),
    }
}
