//! Tokens: the counts a usage record carries, and where each came from.
//!
//! The server's own usage report is the truth when it is there (`reported`). When it is not
//! (a stream without `include_usage`), the counts are computed from the prompt and output
//! text (`computed`, with a real tokenizer for the model) or, as a last resort, estimated
//! (`estimated`, about four characters per token). A count is never a silent zero: each one
//! says its source.

use serde::Serialize;

use crate::llm::{LlmCall, Usage};

/// Where a count came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CountSource {
    Reported,
    #[allow(dead_code)] // made by the tokenizer counter, which lands next
    Computed,
    Estimated,
}

/// The token counts of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TokenCounts {
    #[serde(flatten)]
    pub usage: Usage,
    /// Source of `input` (and its subsets).
    pub input_source: Option<CountSource>,
    /// Source of `output` (and its subsets).
    pub output_source: Option<CountSource>,
}

/// Resolves the counts of a call: reported first, then counted.
pub fn resolve(call: &LlmCall) -> TokenCounts {
    let mut counts = TokenCounts {
        usage: call.usage,
        ..Default::default()
    };
    if call.usage.input.is_some() {
        counts.input_source = Some(CountSource::Reported);
    } else if !call.prompt.is_empty() {
        let chars: usize = call.prompt.iter().map(|m| m.content.chars().count()).sum();
        counts.usage.input = Some(estimate(chars));
        counts.input_source = Some(CountSource::Estimated);
    }
    let has_output = matches!(call.api, Some(api) if api.operation() != "embeddings");
    if call.usage.output.is_some() {
        counts.output_source = Some(CountSource::Reported);
    } else if has_output && call.error.is_none() {
        counts.usage.output = Some(estimate(call.output.chars().count()));
        counts.output_source = Some(CountSource::Estimated);
    }
    counts
}

/// About four characters per token (OpenAI's rule of thumb for English); at least one token
/// for any non-empty text.
fn estimate(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Api, PromptMessage};

    #[test]
    fn reported_usage_wins() {
        let call = LlmCall {
            api: Some(Api::OpenAiChatCompletions),
            usage: Usage {
                input: Some(17),
                output: Some(5),
                ..Default::default()
            },
            output: "irrelevant".into(),
            ..Default::default()
        };
        let counts = resolve(&call);
        assert_eq!(
            (counts.usage.input, counts.usage.output),
            (Some(17), Some(5))
        );
        assert_eq!(counts.input_source, Some(CountSource::Reported));
        assert_eq!(counts.output_source, Some(CountSource::Reported));
    }

    #[test]
    fn missing_usage_is_estimated_never_zero() {
        let call = LlmCall {
            api: Some(Api::OpenAiChatCompletions),
            prompt: vec![PromptMessage {
                role: "user".into(),
                content: "Say hi".into(),
                name: None,
            }],
            output: "Hi".into(),
            ..Default::default()
        };
        let counts = resolve(&call);
        assert_eq!(
            (counts.usage.input, counts.usage.output),
            (Some(2), Some(1))
        );
        assert_eq!(counts.output_source, Some(CountSource::Estimated));
    }

    #[test]
    fn embeddings_have_no_output_and_errors_no_estimate() {
        let call = LlmCall {
            api: Some(Api::OpenAiEmbeddings),
            ..Default::default()
        };
        assert_eq!(resolve(&call).usage.output, None);
        let failed = LlmCall {
            api: Some(Api::OpenAiChatCompletions),
            error: Some("bad".into()),
            ..Default::default()
        };
        assert_eq!(resolve(&failed).output_source, None);
    }
}
