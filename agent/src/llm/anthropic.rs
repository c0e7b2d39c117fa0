//! The Anthropic Messages API, streamed or not.
//!
//! Anthropic's `input_tokens` excludes cache reads and cache writes; OpenTelemetry's
//! `gen_ai.usage.input_tokens` includes them, so `Usage::input` is the sum of the three, with
//! `cached_input` (= `cache_read_input_tokens`) and `cache_creation_input` as subsets. When
//! streaming, input and cache counts come in `message_start`, the output count (cumulative)
//! in `message_delta`.

use serde_json::Value;

use super::{chat_messages, content_text, count, text, LlmCall, PromptMessage, Usage};

pub fn read_request(request: &Value, call: &mut LlmCall) {
    call.request_model = text(request.get("model"));
    call.stream = request
        .get("stream")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    call.user = text(request.pointer("/metadata/user_id"));
    let system = content_text(request.get("system"));
    if !system.is_empty() {
        call.prompt.push(PromptMessage {
            role: "system".into(),
            content: system,
            name: None,
        });
    }
    call.prompt.extend(chat_messages(request.get("messages")));
}

pub fn read_response(body: &Value, call: &mut LlmCall) {
    call.response_model = text(body.get("model"));
    if let Some(usage) = body.get("usage") {
        merge_usage(usage, call);
    }
    if let Some(reason) = text(body.get("stop_reason")) {
        call.finish_reasons.push(reason);
    }
    for block in body
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for key in ["text", "thinking"] {
            if let Some(t) = block.get(key).and_then(Value::as_str) {
                call.output.push_str(t);
            }
        }
    }
}

/// One streamed event; true when it carried output.
pub fn read_stream_event(event: Option<&str>, data: &Value, call: &mut LlmCall) -> bool {
    let kind = data
        .get("type")
        .and_then(Value::as_str)
        .or(event)
        .unwrap_or("");
    match kind {
        "message_start" => {
            if let Some(message) = data.get("message") {
                call.response_model = text(message.get("model"));
                if let Some(usage) = message.get("usage") {
                    merge_usage(usage, call);
                }
            }
            false
        }
        "content_block_delta" => {
            let delta = data.get("delta");
            let piece = ["text", "thinking", "partial_json"]
                .iter()
                .find_map(|k| delta.and_then(|d| d.get(*k)).and_then(Value::as_str))
                .unwrap_or("");
            call.output.push_str(piece);
            !piece.is_empty()
        }
        "message_delta" => {
            if let Some(usage) = data.get("usage") {
                merge_usage(usage, call);
            }
            if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                call.finish_reasons.push(reason.to_string());
            }
            false
        }
        _ => false,
    }
}

/// Merges a usage object: fields present replace earlier ones (`message_delta` counts are
/// cumulative), and the input total is recomputed from its parts.
fn merge_usage(usage: &Value, call: &mut LlmCall) {
    let old = call.usage;
    let fresh = |key: &str| count(usage.get(key));
    let uncached = fresh("input_tokens").or(old.input.map(|total| {
        total - old.cached_input.unwrap_or(0) - old.cache_creation_input.unwrap_or(0)
    }));
    let cached = fresh("cache_read_input_tokens").or(old.cached_input);
    let creation = fresh("cache_creation_input_tokens").or(old.cache_creation_input);
    call.usage = Usage {
        input: uncached.map(|n| n + cached.unwrap_or(0) + creation.unwrap_or(0)),
        cached_input: cached,
        cache_creation_input: creation,
        output: fresh("output_tokens").or(old.output),
        reasoning_output: old.reasoning_output,
    };
}
