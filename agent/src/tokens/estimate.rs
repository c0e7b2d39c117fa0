//! The last resort: a count from the text's length when no tokenizer is available.
//!
//! Four characters per token is OpenAI's rule of thumb for English; it undercounts CJK and
//! code and overcounts nothing badly, which is why the result is marked
//! [`CountSource::Estimated`] and never passed off as computed.

use super::chat::ChatMessage;
use super::count::{CountSource, TokenCount};
use super::openai::{len_u64, REPLY_PRIMING, TOKENS_PER_MESSAGE};

/// The `tokenizer` of an estimated count.
pub(crate) const ESTIMATE_TOKENIZER: &str = "estimate:chars/4";

/// Characters per token assumed by the estimate.
const CHARS_PER_TOKEN: u64 = 4;

/// `ceil(chars / 4)`: 0 only for empty text.
pub(crate) fn estimate_text(text: &str) -> TokenCount {
    estimated(len_u64(text.chars().count()).div_ceil(CHARS_PER_TOKEN))
}

/// The characters of every role, content and name, divided as for text, plus the cookbook's
/// framing (3 per message, 3 for the reply): a chat prompt always has some framing.
pub(crate) fn estimate_chat(messages: &[ChatMessage]) -> TokenCount {
    let chars: usize = messages
        .iter()
        .map(|m| {
            m.role.chars().count()
                + m.content.chars().count()
                + m.name.as_deref().map_or(0, |name| name.chars().count())
        })
        .sum();
    let framing = TOKENS_PER_MESSAGE * len_u64(messages.len()) + REPLY_PRIMING;
    estimated(len_u64(chars).div_ceil(CHARS_PER_TOKEN) + framing)
}

fn estimated(tokens: u64) -> TokenCount {
    TokenCount {
        tokens,
        source: CountSource::Estimated,
        tokenizer: ESTIMATE_TOKENIZER.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_estimate_rounds_up_and_counts_characters_not_bytes() {
        for (text, expected) in [
            ("", 0),
            ("a", 1),
            ("abcd", 1),
            ("abcde", 2),
            ("你好世界你", 2),
            ("👨‍👩‍👧", 2),
        ] {
            let count = estimate_text(text);
            assert_eq!(count.tokens, expected, "{text:?}");
            assert_eq!(count.source, CountSource::Estimated);
            assert_eq!(count.tokenizer, "estimate:chars/4");
        }
    }

    #[test]
    fn chat_estimate_adds_framing() {
        assert_eq!(estimate_chat(&[]).tokens, 3);
        let messages = [
            ChatMessage::new("user", "hello").with_name("bob"),
            ChatMessage::new("assistant", ""),
        ];
        // 4 + 5 + 3 + 9 = 21 chars -> 6 tokens, + 2 * 3 + 3.
        assert_eq!(estimate_chat(&messages).tokens, 15);
    }
}
