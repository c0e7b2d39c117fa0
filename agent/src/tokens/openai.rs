//! OpenAI models: the tiktoken encodings embedded by tiktoken-rs, and the OpenAI cookbook's
//! rule for the tokens a chat request adds around its messages.

use tiktoken_rs::CoreBPE;

use super::chat::ChatMessage;

/// A tiktoken encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OpenAiEncoding {
    /// GPT-4o and later, the o-series.
    O200kBase,
    /// GPT-4, GPT-3.5, text-embedding-3 and ada-002.
    Cl100kBase,
}

impl OpenAiEncoding {
    /// The encoding called `name` (`o200k_base`, `cl100k_base`).
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "o200k_base" => Some(Self::O200kBase),
            "cl100k_base" => Some(Self::Cl100kBase),
            _ => None,
        }
    }

    /// The encoding's ranks, built on first use (tens of milliseconds) and shared
    /// process-wide.
    pub(crate) fn bpe(self) -> &'static CoreBPE {
        match self {
            Self::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Tokens in `text`. Special-token literals (`<|endoftext|>`) count as ordinary text,
    /// which is how the API treats them in message content.
    pub(crate) fn count(self, text: &str) -> u64 {
        len_u64(self.bpe().encode_ordinary(text).len())
    }
}

/// Tokens framing each message (`<|start|>{role}<|message|>...<|end|>`), per the cookbook.
pub(crate) const TOKENS_PER_MESSAGE: u64 = 3;
/// Extra token when a message has a `name`, per the cookbook.
pub(crate) const TOKENS_PER_NAME: u64 = 1;
/// Tokens priming the reply (`<|start|>assistant<|message|>`), per the cookbook.
pub(crate) const REPLY_PRIMING: u64 = 3;

/// The prompt tokens of a chat request by the OpenAI cookbook's rule ("How to count tokens
/// with tiktoken", `num_tokens_from_messages`): for each message 3 tokens plus the tokens of
/// its role, content and name, plus 1 when it has a name; then 3 tokens priming the reply.
/// `count` counts a piece of text. OpenAI documents this as an estimate that may change
/// between model versions; it matches the API's reported `prompt_tokens` for plain text
/// messages.
pub(crate) fn cookbook_chat_tokens(
    messages: &[ChatMessage],
    mut count: impl FnMut(&str) -> u64,
) -> u64 {
    let per_message = messages.iter().map(|message| {
        let name = message
            .name
            .as_deref()
            .map_or(0, |name| count(name) + TOKENS_PER_NAME);
        TOKENS_PER_MESSAGE + count(&message.role) + count(&message.content) + name
    });
    per_message.sum::<u64>() + REPLY_PRIMING
}

/// A length as `u64` (lossless on every supported target).
pub(crate) fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_counts() {
        // The OpenAI cookbook's examples, also checked with js-tiktoken 1.0.21 (the reference
        // tests compare a whole corpus with js-tiktoken and gpt-tokenizer).
        let cases = [
            (OpenAiEncoding::Cl100kBase, "hello world", 2),
            (OpenAiEncoding::O200kBase, "hello world", 2),
            (OpenAiEncoding::Cl100kBase, "tiktoken is great!", 6),
            (OpenAiEncoding::O200kBase, "tiktoken is great!", 6),
            (OpenAiEncoding::Cl100kBase, "", 0),
            // Special-token literals are ordinary text: "<", "|", "endo", "ft", "ext", "|", ">".
            (OpenAiEncoding::Cl100kBase, "<|endoftext|>", 7),
            (OpenAiEncoding::O200kBase, "<|endoftext|>", 7),
        ];
        for (encoding, text, expected) in cases {
            assert_eq!(encoding.count(text), expected, "{encoding:?} {text:?}");
        }
    }

    #[test]
    fn cookbook_rule_matches_tiktoken_rs() {
        use tiktoken_rs::{num_tokens_from_messages, ChatCompletionRequestMessage};
        let messages = [
            ChatMessage::new("system", "You are a helpful, pattern-following assistant."),
            ChatMessage::new("user", "New synergies will help drive top-line growth.")
                .with_name("example_user"),
            ChatMessage::new(
                "assistant",
                "Things working well together will increase revenue.",
            ),
        ];
        let theirs: Vec<ChatCompletionRequestMessage> = messages
            .iter()
            .map(|m| ChatCompletionRequestMessage {
                role: m.role.clone(),
                content: Some(m.content.clone()),
                name: m.name.clone(),
                ..Default::default()
            })
            .collect();
        for (model, encoding) in [
            ("gpt-4o", OpenAiEncoding::O200kBase),
            ("gpt-4", OpenAiEncoding::Cl100kBase),
        ] {
            let ours = cookbook_chat_tokens(&messages, |text| encoding.count(text));
            let expected = num_tokens_from_messages(model, &theirs).expect("known model");
            assert_eq!(ours, len_u64(expected), "{model}");
        }
    }
}
