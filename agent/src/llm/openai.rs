//! The OpenAI API family as OpenAI, vLLM, NVIDIA Dynamo and llama.cpp serve it: chat
//! completions, completions, responses and embeddings, streamed (SSE) or not.
//!
//! Usage fields: `prompt_tokens` / `completion_tokens` with `prompt_tokens_details.cached_tokens`
//! and `completion_tokens_details.reasoning_tokens`; the Responses API names them
//! `input_tokens` / `output_tokens` with `input_tokens_details` / `output_tokens_details`. A
//! stream carries usage only when the request set `stream_options.include_usage` (in the last
//! chunk) or vLLM's `continuous_usage_stats` (cumulative, in every chunk): the last report wins.

use serde_json::Value;

use super::{chat_messages, content_text, count, text, Api, LlmCall, PromptMessage, Usage};

pub fn read_request(api: Api, request: &Value, call: &mut LlmCall) {
    call.request_model = text(request.get("model"));
    call.stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    call.user = text(request.get("user"));
    match api {
        Api::OpenAiChatCompletions => call.prompt.extend(chat_messages(request.get("messages"))),
        Api::OpenAiCompletions => push_texts(request.get("prompt"), call),
        Api::OpenAiEmbeddings => {
            push_texts(request.get("input"), call);
            call.inputs = call.prompt.len();
        }
        Api::OpenAiResponses => {
            if let Some(instructions) = text(request.get("instructions")) {
                call.prompt.push(message("system", instructions));
            }
            match request.get("input") {
                Some(Value::String(input)) => call.prompt.push(message("user", input.clone())),
                Some(Value::Array(items)) => {
                    for item in items {
                        call.prompt.push(PromptMessage {
                            role: text(item.get("role")).unwrap_or_else(|| "user".into()),
                            content: content_text(item.get("content")),
                            name: None,
                        });
                    }
                }
                _ => {}
            }
        }
        Api::AnthropicMessages => {}
    }
}

/// A prompt that is a string or an array of strings (token-id arrays carry no text).
fn push_texts(prompt: Option<&Value>, call: &mut LlmCall) {
    match prompt {
        Some(Value::String(s)) => call.prompt.push(message("user", s.clone())),
        Some(Value::Array(items)) => {
            for item in items {
                if let Some(s) = item.as_str() {
                    call.prompt.push(message("user", s.to_string()));
                }
            }
        }
        _ => {}
    }
}

fn message(role: &str, content: String) -> PromptMessage {
    PromptMessage {
        role: role.into(),
        content,
        name: None,
    }
}

pub fn read_response(api: Api, body: &Value, call: &mut LlmCall) {
    call.response_model = text(body.get("model"));
    if let Some(usage) = body.get("usage").filter(|u| u.is_object()) {
        call.usage = read_usage(usage);
    }
    if api == Api::OpenAiResponses {
        read_response_object(body, call);
        return;
    }
    for choice in body
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(message) = choice.get("message") {
            append_reasoning(message, call);
            call.output.push_str(&content_text(message.get("content")));
        }
        if let Some(t) = choice.get("text").and_then(Value::as_str) {
            call.output.push_str(t);
        }
        if let Some(reason) = text(choice.get("finish_reason")) {
            call.finish_reasons.push(reason);
        }
    }
}

/// One streamed chunk or event; true when it carried output.
pub fn read_stream_event(api: Api, event: Option<&str>, data: &Value, call: &mut LlmCall) -> bool {
    if api == Api::OpenAiResponses {
        return read_responses_event(event, data, call);
    }
    if let Some(model) = text(data.get("model")) {
        call.response_model = Some(model);
    }
    if let Some(usage) = data.get("usage").filter(|u| u.is_object()) {
        call.usage = read_usage(usage);
    }
    let mut produced = false;
    for choice in data
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let before = call.output.len();
        if let Some(delta) = choice.get("delta") {
            append_reasoning(delta, call);
            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                call.output.push_str(t);
            }
        }
        if let Some(t) = choice.get("text").and_then(Value::as_str) {
            call.output.push_str(t);
        }
        produced |= call.output.len() > before;
        if let Some(reason) = text(choice.get("finish_reason")) {
            call.finish_reasons.push(reason);
        }
    }
    produced
}

/// vLLM and DeepSeek-style reasoning text (`reasoning_content`, or `reasoning`).
fn append_reasoning(message: &Value, call: &mut LlmCall) {
    for key in ["reasoning_content", "reasoning"] {
        if let Some(t) = message.get(key).and_then(Value::as_str) {
            call.output.push_str(t);
        }
    }
}

fn read_usage(usage: &Value) -> Usage {
    let first = |keys: &[&str]| keys.iter().find_map(|k| count(usage.pointer(k)));
    Usage {
        input: first(&["/prompt_tokens", "/input_tokens"]),
        cached_input: first(&[
            "/prompt_tokens_details/cached_tokens",
            "/input_tokens_details/cached_tokens",
        ]),
        cache_creation_input: None,
        output: first(&["/completion_tokens", "/output_tokens"]),
        reasoning_output: first(&[
            "/completion_tokens_details/reasoning_tokens",
            "/output_tokens_details/reasoning_tokens",
        ]),
    }
}

/// A Responses API `response` object (non-streamed body, or inside `response.completed`).
fn read_response_object(response: &Value, call: &mut LlmCall) {
    if let Some(model) = text(response.get("model")) {
        call.response_model = Some(model);
    }
    if let Some(usage) = response.get("usage").filter(|u| u.is_object()) {
        call.usage = read_usage(usage);
    }
    let reason = response
        .pointer("/incomplete_details/reason")
        .and_then(Value::as_str)
        .or_else(|| response.get("status").and_then(Value::as_str));
    if let Some(reason) = reason {
        call.finish_reasons.push(reason.to_string());
    }
    if !call.stream {
        for item in response
            .get("output")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for part in item
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    call.output.push_str(t);
                }
            }
        }
    }
}

fn read_responses_event(event: Option<&str>, data: &Value, call: &mut LlmCall) -> bool {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .or(event)
        .unwrap_or("");
    match kind {
        "response.output_text.delta"
        | "response.reasoning_text.delta"
        | "response.reasoning_summary_text.delta"
        | "response.refusal.delta" => {
            let delta = data.get("delta").and_then(Value::as_str).unwrap_or("");
            call.output.push_str(delta);
            !delta.is_empty()
        }
        "response.created" | "response.in_progress" => {
            if let Some(model) = data.pointer("/response/model").and_then(Value::as_str) {
                call.response_model = Some(model.to_string());
            }
            false
        }
        "response.completed" | "response.incomplete" | "response.failed" => {
            if let Some(response) = data.get("response") {
                read_response_object(response, call);
            }
            false
        }
        _ => false,
    }
}
