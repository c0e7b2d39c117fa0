//! The hot path of streamed OpenAI-format responses: one `chat.completion.chunk` (or legacy
//! completion chunk) per token. Chunks are read into borrowed, typed structs: strings stay
//! slices of the body unless they hold escapes, fields nobody meters (`logprobs`, tool call
//! deltas, ...) are skipped without being built, and `choices` is walked without collecting
//! it, so a chunk costs no allocation beyond the growth of the output text.
//!
//! A chunk of an unexpected shape (content as an array of parts, say) returns `None` and the
//! caller falls back to the generic `serde_json::Value` reader.

use std::{borrow::Cow, fmt};

use serde::{
    de::{SeqAccess, Visitor},
    Deserialize, Deserializer,
};

use super::{LlmCall, Usage};

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    model: Option<Text<'a>>,
    #[serde(borrow, default)]
    choices: Choices<'a>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
}

/// What the choices of one chunk add up to.
#[derive(Default)]
struct Choices<'a> {
    /// The text of a chunk with one piece (the common case), borrowed.
    text: Option<Cow<'a, str>>,
    /// Pieces after the first (several choices, or reasoning and content in one chunk).
    more: Option<String>,
    finish: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    /// Legacy completions stream `text` instead of a delta.
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Text<'a>>,
    #[serde(borrow, default)]
    reasoning: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

/// A JSON string borrowed from the body unless it holds escapes. (serde borrows a bare
/// `Cow<str>` field but always copies one inside an `Option`, hence this newtype.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Str<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Str<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }

            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_string())))
            }
        }
        deserializer.deserialize_str(Str(std::marker::PhantomData))
    }
}

impl<'a> Choices<'a> {
    fn add(&mut self, piece: Cow<'a, str>) {
        if piece.is_empty() {
            return;
        }
        match &self.text {
            None => self.text = Some(piece),
            Some(_) => self.more.get_or_insert_with(String::new).push_str(&piece),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Walk<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Walk<'a> {
            type Value = Choices<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array of choices")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices<'a>, A::Error> {
                let mut choices = Choices::default();
                while let Some(choice) = seq.next_element::<Choice<'a>>()? {
                    if let Some(delta) = choice.delta {
                        for piece in [delta.reasoning_content, delta.reasoning, delta.content] {
                            choices.add(piece.map(|t| t.0).unwrap_or_default());
                        }
                    }
                    choices.add(choice.text.map(|t| t.0).unwrap_or_default());
                    if let Some(reason) = choice.finish_reason {
                        choices.finish = Some(reason.0);
                    }
                }
                Ok(choices)
            }

            fn visit_unit<E>(self) -> Result<Choices<'a>, E> {
                Ok(Choices::default())
            }
        }
        deserializer.deserialize_any(Walk(std::marker::PhantomData))
    }
}

/// Reads one chunk into `call`. `Some(produced output)`, or `None` if the chunk does not have
/// the expected shape.
pub fn read_chunk(data: &str, call: &mut LlmCall) -> Option<bool> {
    let chunk: Chunk<'_> = serde_json::from_str(data).ok()?;
    if let Some(Text(model)) = chunk.model {
        if call.response_model.as_deref() != Some(&*model) {
            call.response_model = Some(model.into_owned());
        }
    }
    if let Some(usage) = chunk.usage {
        call.usage = Usage {
            input: usage.prompt_tokens,
            cached_input: usage.prompt_tokens_details.and_then(|d| d.cached_tokens),
            cache_creation_input: None,
            output: usage.completion_tokens,
            reasoning_output: usage
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens),
        };
    }
    let choices = chunk.choices;
    let mut produced = false;
    if let Some(text) = choices.text {
        call.output.push_str(&text);
        produced = true;
    }
    if let Some(more) = choices.more {
        call.output.push_str(&more);
    }
    if let Some(reason) = choices.finish {
        call.finish_reasons.push(reason.into_owned());
    }
    Some(produced)
}
