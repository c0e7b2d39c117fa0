//! Computed counts equal the reference tokenizers' counts for the same text.
//!
//! `fixtures/tokenizer_reference.mjs` counts `fixtures/tokenizer_corpus.json` with
//! transformers.js's tokenizers (`@lenml/tokenizers`, on the real Llama 3 and Qwen 3 files
//! the counter loads too) and with two JS ports of tiktoken (`js-tiktoken`, `gpt-tokenizer`);
//! these tests count the same corpus with [`TokenCounter`] and compare every number, and for
//! chats the rendered prompt as well. They skip (printing why) when node or the packages are
//! missing, and fail instead under `CI=true`; see [`NpmFixture`].

use serde_json::Value as Json;

use super::test_support::{fixture, NpmFixture};
use super::{ChatMessage, CountSource, TokenCounter, TokenizerConfig};

/// Model names that route to each Hugging Face tokenizer through the built-in rules.
const HF_MODELS: [(&str, &str); 2] = [
    ("meta-llama/Llama-3.1-8B-Instruct", "llama3"),
    ("Qwen/Qwen3-8B", "qwen3"),
];

/// Model names that route to each tiktoken encoding through the built-in rules.
const TIKTOKEN_MODELS: [(&str, &str); 2] = [
    ("gpt-4o-mini", "o200k_base"),
    ("gpt-4-turbo", "cl100k_base"),
];

struct Corpus {
    texts: Vec<(String, String)>,
    chats: Vec<(String, Vec<ChatMessage>)>,
}

fn corpus() -> Corpus {
    let text = std::fs::read_to_string(fixture("tokenizer_corpus.json")).expect("read corpus");
    let json: Json = serde_json::from_str(&text).expect("corpus is JSON");
    let texts = json["texts"]
        .as_array()
        .expect("texts")
        .iter()
        .map(|t| {
            let name = t["name"].as_str().expect("name").to_owned();
            let text = match t["text"].as_str() {
                Some(text) => text.to_owned(),
                None => {
                    let times = t["times"].as_u64().expect("times");
                    t["repeat"]
                        .as_str()
                        .expect("repeat")
                        .repeat(usize::try_from(times).expect("times fits"))
                }
            };
            (name, text)
        })
        .collect();
    let chats = json["chats"]
        .as_array()
        .expect("chats")
        .iter()
        .map(|c| {
            let name = c["name"].as_str().expect("name").to_owned();
            let messages = serde_json::from_value(c["messages"].clone()).expect("messages");
            (name, messages)
        })
        .collect();
    Corpus { texts, chats }
}

fn counter(fixture: &NpmFixture) -> TokenCounter {
    TokenCounter::new(&TokenizerConfig {
        tokenizer_dir: Some(fixture.tokenizer_dir.path().to_path_buf()),
        models: Vec::new(),
    })
    .expect("valid config")
}

fn expected(value: &Json, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("reference has no count for {what}"))
}

#[test]
fn hf_counts_equal_transformers_js() {
    let Some(fixture) = NpmFixture::get() else {
        return;
    };
    let reference = fixture.reference();
    let counter = counter(&fixture);
    let corpus = corpus();
    let mut mismatches = Vec::new();
    for (model, name) in HF_MODELS {
        assert_eq!(
            counter.tokenizer_for(model),
            Some(format!("hf:{name}").as_str())
        );
        let reference = &reference["hf"][name];
        assert_eq!(
            reference["add_special_tokens_adds"], 0,
            "{name}: BOS added by the JS encode"
        );
        for (text_name, text) in &corpus.texts {
            let count = counter.count_text(model, text);
            assert_eq!(count.source, CountSource::Computed, "{name}: {text_name}");
            let want = expected(&reference["texts"][text_name], text_name);
            if count.tokens != want {
                mismatches.push(format!(
                    "{name} text {text_name}: {} != reference {want}",
                    count.tokens
                ));
            }
        }
        for (chat_name, messages) in &corpus.chats {
            let count = counter.count_chat(model, messages);
            assert_eq!(count.source, CountSource::Computed, "{name}: {chat_name}");
            let chat = &reference["chats"][chat_name];
            let want = expected(&chat["tokens"], chat_name);
            if count.tokens != want {
                mismatches.push(format!(
                    "{name} chat {chat_name}: {} != reference {want} ({})",
                    count.tokens, chat["renderer"]
                ));
            }
            let rendered = counter.render_chat(model, messages).expect("hf route");
            if Some(rendered.as_str()) != chat["rendered"].as_str() {
                mismatches.push(format!(
                    "{name} chat {chat_name}: rendered {rendered:?} != reference {}",
                    chat["rendered"]
                ));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn tiktoken_counts_equal_js_tiktoken_and_gpt_tokenizer() {
    let Some(fixture) = NpmFixture::get() else {
        return;
    };
    let reference = fixture.reference();
    let counter = counter(&fixture);
    let corpus = corpus();
    let mut mismatches = Vec::new();
    for (model, encoding) in TIKTOKEN_MODELS {
        let tokenizer = format!("tiktoken:{encoding}");
        let reference = &reference["tiktoken"][encoding];
        for (text_name, text) in &corpus.texts {
            let count = counter.count_text(model, text);
            assert_eq!(
                (count.source, count.tokenizer.as_str()),
                (CountSource::Computed, tokenizer.as_str())
            );
            for port in ["js_tiktoken", "gpt_tokenizer"] {
                let want = expected(&reference["texts"][text_name][port], text_name);
                if count.tokens != want {
                    mismatches.push(format!(
                        "{encoding} text {text_name}: {} != {port} {want}",
                        count.tokens
                    ));
                }
            }
        }
        for (chat_name, messages) in &corpus.chats {
            let count = counter.count_chat(model, messages);
            for check in ["gpt_tokenizer", "js_tiktoken_cookbook"] {
                let want = expected(&reference["chats"][chat_name][check], chat_name);
                if count.tokens != want {
                    mismatches.push(format!(
                        "{encoding} chat {chat_name}: {} != {check} {want}",
                        count.tokens
                    ));
                }
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

#[test]
fn rendered_prompts_hold_special_tokens_once() {
    let Some(fixture) = NpmFixture::get() else {
        return;
    };
    let counter = counter(&fixture);
    let (llama, qwen) = (HF_MODELS[0].0, HF_MODELS[1].0);
    for (model, literal) in [
        (llama, "<|begin_of_text|>"),
        (llama, "<|eot_id|>"),
        (qwen, "<|im_start|>"),
        (qwen, "<think>"),
    ] {
        assert_eq!(
            counter.count_text(model, literal).tokens,
            1,
            "{model}: {literal}"
        );
    }
    let messages = [ChatMessage::new("user", "hello world")];
    let rendered = counter.render_chat(llama, &messages).expect("hf route");
    assert_eq!(
        rendered.matches("<|begin_of_text|>").count(),
        1,
        "{rendered:?}"
    );
    // <|begin_of_text|> <|start_header_id|> user <|end_header_id|> \n\n hello world <|eot_id|>
    // <|start_header_id|> assistant <|end_header_id|> \n\n
    assert_eq!(counter.count_chat(llama, &messages).tokens, 12);
}

#[test]
fn qwen3_template_drops_reasoning_from_history() {
    // The real Qwen 3 template (rendered by minijinja; transformers.js cannot parse it) keeps
    // only the answer of an assistant turn before the last user message.
    let Some(fixture) = NpmFixture::get() else {
        return;
    };
    let counter = counter(&fixture);
    let messages = [
        ChatMessage::new("user", "q1"),
        ChatMessage::new("assistant", "<think>\nreasoning\n</think>\n\na1"),
        ChatMessage::new("user", "q2"),
    ];
    let rendered = counter
        .render_chat(HF_MODELS[1].0, &messages)
        .expect("hf route");
    assert_eq!(
        rendered,
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n\
         <|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n"
    );
}
