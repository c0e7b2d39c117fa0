//! Chat messages, and the built-in prompt renderings used when a tokenizer package has no
//! chat template of its own (or its template fails on a request).

use serde::{Deserialize, Serialize};

/// One message of a chat request, as the LLM stage extracts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// The message's text; content parts (OpenAI's array form) are joined by the caller.
    pub content: String,
    /// The optional participant name (OpenAI's `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message without a name.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
            name: None,
        }
    }

    /// The same message with a participant name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }
}

/// A prompt format built into the stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BuiltinTemplate {
    /// Llama 3 headers (the Llama 3.0 template: no default system prompt).
    Llama3,
    /// ChatML, as Qwen renders plain messages.
    ChatMl,
    /// The BOS token (if any) and the contents separated by newlines: the best that can be
    /// done for a tokenizer with neither a template nor known chat tokens.
    Plain,
}

impl BuiltinTemplate {
    /// Renders `messages` followed by the prompt for the assistant's reply. `bos` is the
    /// tokenizer's BOS token (`<|begin_of_text|>` for Llama 3), empty when it has none.
    pub(crate) fn render(self, messages: &[ChatMessage], bos: &str) -> String {
        let text_len: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum();
        let mut out = String::with_capacity(text_len + 32 * (messages.len() + 1));
        match self {
            Self::Llama3 => {
                out.push_str(bos);
                for message in messages {
                    push_all(
                        &mut out,
                        &[
                            "<|start_header_id|>",
                            &message.role,
                            "<|end_header_id|>\n\n",
                            message.content.trim(),
                            "<|eot_id|>",
                        ],
                    );
                }
                out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
            Self::ChatMl => {
                for message in messages {
                    push_all(
                        &mut out,
                        &[
                            "<|im_start|>",
                            &message.role,
                            "\n",
                            &message.content,
                            "<|im_end|>\n",
                        ],
                    );
                }
                out.push_str("<|im_start|>assistant\n");
            }
            Self::Plain => {
                out.push_str(bos);
                for (i, message) in messages.iter().enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    out.push_str(&message.content);
                }
            }
        }
        out
    }
}

fn push_all(out: &mut String, parts: &[&str]) {
    for part in parts {
        out.push_str(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "Be brief."),
            ChatMessage::new("user", " Hi there \n").with_name("bob"),
        ]
    }

    #[test]
    fn llama3_trims_content_and_primes_the_reply() {
        let rendered = BuiltinTemplate::Llama3.render(&messages(), "<|begin_of_text|>");
        assert_eq!(
            rendered,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn chatml_keeps_content_verbatim() {
        let rendered = BuiltinTemplate::ChatMl.render(&messages(), "");
        assert_eq!(
            rendered,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n Hi there \n<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn plain_joins_contents() {
        assert_eq!(
            BuiltinTemplate::Plain.render(&messages(), "<s>"),
            "<s>Be brief.\n Hi there \n"
        );
    }
}
