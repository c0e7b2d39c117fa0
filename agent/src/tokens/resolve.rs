//! The counts a usage record carries: the server's report first, else counted here.

use serde::Serialize;

use super::{ChatMessage, CountSource, TokenCount, TokenCounter};
use crate::llm::{Api, LlmCall, Usage};

/// The token counts of one call and where they came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TokenCounts {
    #[serde(flatten)]
    pub usage: Usage,
    /// Source of `input` (and its subsets).
    pub input_source: Option<CountSource>,
    /// Source of `output` (and its subsets).
    pub output_source: Option<CountSource>,
    /// The tokenizer of counts that were not reported (`tiktoken:o200k_base`, `hf:llama3`,
    /// `estimate:chars/4`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

/// Resolves the counts of a call: reported first, then computed with the model's tokenizer,
/// estimated only when no tokenizer is available. A count is never a silent zero.
pub fn resolve(call: &LlmCall, counter: &TokenCounter) -> TokenCounts {
    let mut counts = TokenCounts {
        usage: call.usage,
        ..Default::default()
    };
    // The model that answered knows its tokenizer best; the request names an alias at times.
    let model = call
        .response_model
        .as_deref()
        .or(call.request_model.as_deref())
        .unwrap_or("");
    if call.usage.input.is_some() {
        counts.input_source = Some(CountSource::Reported);
    } else if !call.prompt.is_empty() {
        let count = count_prompt(call, model, counter);
        counts.usage.input = Some(count.tokens);
        counts.input_source = Some(count.source);
        counts.tokenizer = Some(count.tokenizer);
    }
    let has_output = call.api.is_some_and(|api| api != Api::OpenAiEmbeddings);
    if call.usage.output.is_some() {
        counts.output_source = Some(CountSource::Reported);
    } else if has_output && call.error.is_none() {
        let count = counter.count_text(model, &call.output);
        counts.usage.output = Some(count.tokens);
        counts.output_source = Some(count.source);
        counts.tokenizer = Some(count.tokenizer);
    }
    counts
}

/// Chat-shaped prompts are counted with the model's chat template; completion prompts and
/// embedding inputs as plain texts.
fn count_prompt(call: &LlmCall, model: &str, counter: &TokenCounter) -> TokenCount {
    let chat = matches!(
        call.api,
        Some(Api::OpenAiChatCompletions | Api::OpenAiResponses | Api::AnthropicMessages)
    );
    if chat {
        let messages: Vec<ChatMessage> = call
            .prompt
            .iter()
            .map(|m| {
                let message = ChatMessage::new(m.role.clone(), m.content.clone());
                match &m.name {
                    Some(name) => message.with_name(name.clone()),
                    None => message,
                }
            })
            .collect();
        return counter.count_chat(model, &messages);
    }
    let mut total: Option<TokenCount> = None;
    for text in &call.prompt {
        let count = counter.count_text(model, &text.content);
        total = Some(match total {
            None => count,
            Some(mut sum) => {
                sum.tokens += count.tokens;
                if count.source == CountSource::Estimated {
                    sum.source = CountSource::Estimated;
                    sum.tokenizer = count.tokenizer;
                }
                sum
            }
        });
    }
    total.unwrap_or_else(|| counter.count_text(model, ""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::PromptMessage;
    use crate::tokens::TokenizerConfig;

    fn counter() -> TokenCounter {
        TokenCounter::new(&TokenizerConfig::default()).unwrap()
    }

    fn chat(model: &str, output: &str) -> LlmCall {
        LlmCall {
            api: Some(Api::OpenAiChatCompletions),
            request_model: Some(model.into()),
            prompt: vec![PromptMessage {
                role: "user".into(),
                content: "Say hello world".into(),
                name: None,
            }],
            output: output.into(),
            ..Default::default()
        }
    }

    #[test]
    fn reported_usage_wins() {
        let mut call = chat("gpt-4o", "irrelevant");
        call.usage = Usage {
            input: Some(17),
            output: Some(5),
            ..Default::default()
        };
        let counts = resolve(&call, &counter());
        assert_eq!(
            (counts.usage.input, counts.usage.output),
            (Some(17), Some(5))
        );
        assert_eq!(counts.input_source, Some(CountSource::Reported));
        assert_eq!(counts.tokenizer, None);
    }

    #[test]
    fn openai_models_are_computed_with_tiktoken() {
        let counts = resolve(&chat("gpt-4o-mini", "hello world"), &counter());
        // "hello world" is 2 tokens in o200k. The prompt, by the cookbook's rule: 3 per
        // message, its role ("user", 1) and content ("Say hello world", 3), and 3 for the reply.
        assert_eq!(counts.usage.output, Some(2));
        assert_eq!(counts.output_source, Some(CountSource::Computed));
        assert_eq!(counts.usage.input, Some(3 + 1 + 3 + 3));
        assert_eq!(counts.tokenizer.as_deref(), Some("tiktoken:o200k_base"));
    }

    #[test]
    fn unknown_models_are_estimated_never_zero() {
        let counts = resolve(&chat("my-private-model", "Hi"), &counter());
        assert_eq!(counts.usage.output, Some(1));
        assert_eq!(counts.output_source, Some(CountSource::Estimated));
    }

    #[test]
    fn embeddings_have_no_output_and_failed_calls_no_count() {
        let mut call = chat("text-embedding-3-small", "");
        call.api = Some(Api::OpenAiEmbeddings);
        assert_eq!(resolve(&call, &counter()).usage.output, None);
        let mut failed = chat("gpt-4o", "");
        failed.error = Some("bad".into());
        assert_eq!(resolve(&failed, &counter()).output_source, None);
    }
}
