//! LLM APIs: recognises the calls in HTTP exchanges and extracts what metering needs: the
//! operation, the models, whether it streamed, the usage the server reported, the `user`
//! field, finish reasons, timings, and the prompt and output text (kept in memory only, for
//! counting tokens when the server reported none; never exported or logged).
//!
//! One file per API family: `openai.rs` (chat completions, completions, responses, embeddings,
//! as OpenAI, vLLM, NVIDIA Dynamo and llama.cpp serve them) and `anthropic.rs` (Messages).

mod anthropic;
mod openai;
mod openai_chunk;

use serde::Serialize;
use serde_json::Value;

use crate::http::{sse, Exchange, HttpResponse};

/// The API an exchange was a call of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    OpenAiChatCompletions,
    OpenAiCompletions,
    OpenAiResponses,
    OpenAiEmbeddings,
    AnthropicMessages,
}

impl Api {
    /// `gen_ai.operation.name`.
    pub fn operation(self) -> &'static str {
        match self {
            Self::OpenAiChatCompletions | Self::OpenAiResponses | Self::AnthropicMessages => "chat",
            Self::OpenAiCompletions => "text_completion",
            Self::OpenAiEmbeddings => "embeddings",
        }
    }

    /// `gen_ai.provider.name` of the API's format (the server may be vLLM speaking it).
    pub fn provider(self) -> &'static str {
        match self {
            Self::AnthropicMessages => "anthropic",
            _ => "openai",
        }
    }

    /// Recognises an API call by method and path. Prefixes are allowed (`/v1/...`,
    /// `/openai/deployments/x/chat/completions`, a gateway's `/llm/...`); query strings ignored.
    pub fn detect(method: &str, target: &str) -> Option<Api> {
        if method != "POST" {
            return None;
        }
        let path = target
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        let ends = |suffix: &str| path.ends_with(suffix);
        Some(if ends("/chat/completions") {
            Self::OpenAiChatCompletions
        } else if ends("/completions") {
            Self::OpenAiCompletions
        } else if ends("/responses") {
            Self::OpenAiResponses
        } else if ends("/embeddings") {
            Self::OpenAiEmbeddings
        } else if ends("/messages") {
            Self::AnthropicMessages
        } else {
            return None;
        })
    }
}

/// Token usage as the server reported it. `input` includes cached and cache-creation tokens
/// (OTel's `gen_ai.usage.input_tokens`); the others are subsets or separate counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub input: Option<u64>,
    pub cached_input: Option<u64>,
    pub cache_creation_input: Option<u64>,
    pub output: Option<u64>,
    pub reasoning_output: Option<u64>,
}

impl Usage {
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

/// A chat message of the prompt, for counting tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PromptMessage {
    pub role: String,
    pub content: String,
    pub name: Option<String>,
}

/// What one LLM call was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LlmCall {
    pub api: Option<Api>,
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub stream: bool,
    /// The body's `user` (OpenAI) or `metadata.user_id` (Anthropic).
    pub user: Option<String>,
    pub finish_reasons: Vec<String>,
    /// Usage the server reported (the last report of a stream).
    pub usage: Usage,
    /// The prompt: chat messages, or one "user" message holding a completion prompt.
    pub prompt: Vec<PromptMessage>,
    /// Output text as streamed or returned (reasoning text included).
    pub output: String,
    /// Number of inputs of an embeddings call.
    pub inputs: usize,
    /// Monotonic ns of the first and last output event of a stream.
    pub first_token_ns: Option<u64>,
    pub last_token_ns: Option<u64>,
    /// The stream ended as the API ends it (`[DONE]`, `message_stop`, `response.completed`):
    /// a client that closes the connection right after is not missing anything.
    pub stream_complete: bool,
    /// The server's error message, for responses with an error status.
    pub error: Option<String>,
    /// A body that could not be read as the API's format.
    pub decode_error: Option<String>,
}

/// Decodes an exchange that is an LLM call; `None` for any other HTTP traffic.
pub fn decode(exchange: &Exchange) -> Option<LlmCall> {
    let api = Api::detect(&exchange.request.method, &exchange.request.target)?;
    let mut call = LlmCall {
        api: Some(api),
        ..Default::default()
    };
    match serde_json::from_slice::<Value>(&exchange.request.body.bytes) {
        Ok(request) => match api {
            Api::AnthropicMessages => anthropic::read_request(&request, &mut call),
            _ => openai::read_request(api, &request, &mut call),
        },
        Err(e) => call.decode_error = Some(format!("request body is not JSON: {e}")),
    }
    if let Some(response) = &exchange.response {
        read_response(api, response, &mut call);
    }
    Some(call)
}

fn read_response(api: Api, response: &HttpResponse, call: &mut LlmCall) {
    let streamed = response
        .headers
        .get_str("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if response.status >= 400 {
        call.error = Some(error_message(&response.body.bytes, response.status));
        return;
    }
    if streamed {
        call.stream = true;
        for event in sse::events(&response.body.bytes) {
            let timestamp = response.body.arrival_of(event.end.saturating_sub(1));
            if event.data.trim() == "[DONE]" {
                call.stream_complete = true;
                continue;
            }
            if matches!(
                event.event,
                Some("message_stop" | "response.completed" | "response.incomplete")
            ) {
                call.stream_complete = true;
            }
            // The hot path: OpenAI-format chunks read without building a JSON tree.
            let fast = match api {
                Api::OpenAiChatCompletions | Api::OpenAiCompletions => {
                    openai_chunk::read_chunk(&event.data, call)
                }
                _ => None,
            };
            if let Some(produced) = fast {
                if produced {
                    call.first_token_ns = call.first_token_ns.or(timestamp);
                    call.last_token_ns = timestamp.or(call.last_token_ns);
                }
                continue;
            }
            let data: Value = match serde_json::from_str(&event.data) {
                Ok(data) => data,
                Err(e) => {
                    call.decode_error
                        .get_or_insert_with(|| format!("stream event is not JSON: {e}"));
                    continue;
                }
            };
            let produced = match api {
                Api::AnthropicMessages => anthropic::read_stream_event(event.event, &data, call),
                _ => openai::read_stream_event(api, event.event, &data, call),
            };
            if produced {
                call.first_token_ns = call.first_token_ns.or(timestamp);
                call.last_token_ns = timestamp.or(call.last_token_ns);
            }
        }
        return;
    }
    match serde_json::from_slice::<Value>(&response.body.bytes) {
        Ok(body) => match api {
            Api::AnthropicMessages => anthropic::read_response(&body, call),
            _ => openai::read_response(api, &body, call),
        },
        Err(e) => call.decode_error = Some(format!("response body is not JSON: {e}")),
    }
}

/// The `error.message` of an error body (OpenAI and Anthropic both nest it so), or the status.
fn error_message(body: &[u8], status: u16) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(|m| m.chars().take(200).collect())
        })
        .unwrap_or_else(|| format!("HTTP {status}"))
}

/// A JSON number as u64 (integers, or floats with no fraction as some servers send them).
pub(crate) fn count(value: Option<&Value>) -> Option<u64> {
    let value = value?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0)
            .map(|f| f as u64)
    })
}

/// A string field.
pub(crate) fn text(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_string)
}

/// The `messages` array of a chat request (OpenAI chat completions, Anthropic Messages) as
/// prompt messages.
pub(crate) fn chat_messages(messages: Option<&Value>) -> impl Iterator<Item = PromptMessage> + '_ {
    messages
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|message| PromptMessage {
            role: text(message.get("role")).unwrap_or_default(),
            content: content_text(message.get("content")),
            name: text(message.get("name")),
        })
}

/// Text of a content that is a string or an array of parts with `text` fields.
pub(crate) fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or_else(|| p.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
#[path = "golden_tests.rs"]
mod golden_tests;
