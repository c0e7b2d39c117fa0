//! Golden exchanges in the formats the APIs document (OpenAI, vLLM's extensions, Anthropic),
//! pushed as raw HTTP/1.1 through the real decoder, piece by piece with their own timestamps.

use std::io::Write;

use super::*;
use crate::http::{BodyLimits, ConnectionDecoder, Flow, H1Decoder, Role};
use crate::streams::ConnId;

const CONN: ConnId = ConnId {
    pid: 7,
    conn: 0x55,
    seq: 0,
};

/// A POST with a JSON body, and a response made of `pieces` (head first), each piece arriving
/// at timestamp 100 + its index.
fn exchange(path: &str, request: &str, pieces: &[Vec<u8>]) -> Exchange {
    let mut decoder = H1Decoder::new(CONN, Role::Client, BodyLimits::per_body(1 << 20), 0, 0);
    let mut out = Vec::new();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: llm\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{request}",
        request.len()
    );
    decoder.push(Flow::ToServer, 50, head.as_bytes(), &mut out);
    for (i, piece) in pieces.iter().enumerate() {
        decoder.push(Flow::ToClient, 100 + i as u64, piece, &mut out);
    }
    decoder.finish(&mut out);
    assert_eq!(out.len(), 1, "{out:#?}");
    out.remove(0)
}

/// A chunked SSE response: the head, then one chunk per event.
fn sse_response(events: &[&str]) -> Vec<Vec<u8>> {
    let mut pieces = vec![b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()];
    for event in events {
        let data = format!("{event}\n\n");
        pieces.push(format!("{:x}\r\n{data}\r\n", data.len()).into_bytes());
    }
    pieces.push(b"0\r\n\r\n".to_vec());
    pieces
}

fn json_response(body: &str) -> Vec<Vec<u8>> {
    vec![format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()]
}

const CHAT_REQUEST: &str = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hi"}],"stream":true,"stream_options":{"include_usage":true},"user":"alice"}"#;

fn chunk(content: &str, finish: Option<&str>) -> String {
    let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
    format!(
        r#"data: {{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{{"index":0,"delta":{{"content":"{content}"}},"logprobs":null,"finish_reason":{finish}}}]}}"#
    )
}

#[test]
fn vllm_chat_stream_with_include_usage() {
    let first_role = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#;
    let usage = r#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":17,"total_tokens":22,"completion_tokens":5}}"#;
    let events = [
        first_role.to_string(),
        chunk("Hi", None),
        chunk(" there", None),
        chunk("!", Some("stop")),
        usage.to_string(),
        "data: [DONE]".to_string(),
    ];
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    let call = decode(&exchange(
        "/v1/chat/completions",
        CHAT_REQUEST,
        &sse_response(&events),
    ))
    .unwrap();
    assert_eq!(call.api, Some(Api::OpenAiChatCompletions));
    assert_eq!(
        call.request_model.as_deref(),
        Some("meta-llama/Llama-3.1-8B-Instruct")
    );
    assert_eq!(call.response_model, call.request_model);
    assert!(call.stream);
    assert_eq!(call.user.as_deref(), Some("alice"));
    assert_eq!(call.usage.input, Some(17));
    assert_eq!(call.usage.output, Some(5));
    assert_eq!(call.output, "Hi there!");
    assert_eq!(call.finish_reasons, vec!["stop"]);
    assert_eq!(call.prompt.len(), 2);
    assert_eq!(call.prompt[1].content, "Say hi");
    // Head at 100, the role chunk at 101 (no text), "Hi" at 102, "!" at 104.
    assert_eq!(
        (call.first_token_ns, call.last_token_ns),
        (Some(102), Some(104))
    );
    assert_eq!(call.decode_error, None);
}

#[test]
fn vllm_chat_stream_without_usage_keeps_the_text_to_count() {
    let events = [
        chunk("Hello", None),
        chunk(" world", Some("length")),
        "data: [DONE]".into(),
    ];
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    let call = decode(&exchange(
        "/v1/chat/completions",
        CHAT_REQUEST,
        &sse_response(&events),
    ))
    .unwrap();
    assert!(call.usage.is_empty());
    assert_eq!(call.output, "Hello world");
    assert_eq!(call.finish_reasons, vec!["length"]);
}

#[test]
fn vllm_continuous_usage_stats_last_report_wins() {
    let with_usage = |content: &str, prompt: u64, completion: u64| {
        format!(
            r#"data: {{"id":"c","object":"chat.completion.chunk","model":"m","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}],"usage":{{"prompt_tokens":{prompt},"total_tokens":{},"completion_tokens":{completion}}}}}"#,
            prompt + completion
        )
    };
    let events = [
        with_usage("a", 9, 1),
        with_usage("b", 9, 2),
        with_usage("c", 9, 3),
        "data: [DONE]".into(),
    ];
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    let call = decode(&exchange(
        "/v1/chat/completions",
        CHAT_REQUEST,
        &sse_response(&events),
    ))
    .unwrap();
    assert_eq!((call.usage.input, call.usage.output), (Some(9), Some(3)));
    assert_eq!(call.output, "abc");
}

#[test]
fn openai_chat_json_with_cached_and_reasoning_tokens_gzip_and_chunked() {
    let body = r#"{"id":"chatcmpl-2","object":"chat.completion","created":2,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":2006,"completion_tokens":300,"total_tokens":2306,"prompt_tokens_details":{"cached_tokens":1920,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":256,"audio_tokens":0}}}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let (a, b) = gz.split_at(gz.len() / 2);
    let mut pieces = vec![b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()];
    for part in [a, b] {
        let mut chunk = format!("{:x}\r\n", part.len()).into_bytes();
        chunk.extend_from_slice(part);
        chunk.extend_from_slice(b"\r\n");
        pieces.push(chunk);
    }
    pieces.push(b"0\r\n\r\n".to_vec());
    let request = r#"{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"text","text":"Capital of France?"}]}]}"#;
    let call = decode(&exchange("/v1/chat/completions", request, &pieces)).unwrap();
    assert_eq!(
        call.usage,
        Usage {
            input: Some(2006),
            cached_input: Some(1920),
            cache_creation_input: None,
            output: Some(300),
            reasoning_output: Some(256),
        }
    );
    assert!(!call.stream);
    assert_eq!(call.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!(call.prompt[0].content, "Capital of France?");
    assert_eq!(call.output, "Paris.");
}

#[test]
fn anthropic_messages_stream_splits_usage_across_events() {
    let events = [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":100,\"output_tokens\":1}}}",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
        "event: ping\ndata: {\"type\": \"ping\"}",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"!\"}}",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}",
    ];
    let request = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"Be brief.","messages":[{"role":"user","content":"Hello"}],"stream":true,"metadata":{"user_id":"user-42"}}"#;
    let call = decode(&exchange("/v1/messages", request, &sse_response(&events))).unwrap();
    assert_eq!(call.api, Some(Api::AnthropicMessages));
    assert_eq!(
        call.usage,
        Usage {
            input: Some(135),
            cached_input: Some(100),
            cache_creation_input: Some(10),
            output: Some(15),
            reasoning_output: None,
        }
    );
    assert_eq!(call.user.as_deref(), Some("user-42"));
    assert_eq!(call.output, "Hello!");
    assert_eq!(call.finish_reasons, vec!["end_turn"]);
    assert_eq!(call.prompt[0].role, "system");
    assert_eq!(
        (call.first_token_ns, call.last_token_ns),
        (Some(104), Some(105))
    );
}

#[test]
fn anthropic_messages_json() {
    let body = r#"{"id":"msg_2","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hi!"}],"stop_reason":"end_turn","usage":{"input_tokens":12,"output_tokens":3,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}"#;
    let request = r#"{"model":"claude-haiku-4-5","max_tokens":10,"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}"#;
    let call = decode(&exchange("/v1/messages", request, &json_response(body))).unwrap();
    assert_eq!((call.usage.input, call.usage.output), (Some(12), Some(3)));
    assert_eq!(call.output, "Hi!");
}

#[test]
fn responses_api_stream() {
    let events = [
        r#"event: response.created
data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","model":"gpt-4.1-2025-04-14","output":[],"usage":null}}"#,
        r#"event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Once"}"#,
        r#"event: response.output_text.delta
data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_1","output_index":0,"content_index":0,"delta":" upon"}"#,
        r#"event: response.completed
data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_1","object":"response","status":"completed","model":"gpt-4.1-2025-04-14","output":[{"type":"message","content":[{"type":"output_text","text":"Once upon"}]}],"usage":{"input_tokens":36,"input_tokens_details":{"cached_tokens":0},"output_tokens":87,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":123}}}"#,
    ];
    let request = r#"{"model":"gpt-4.1","instructions":"Tell stories.","input":"A unicorn story.","stream":true}"#;
    let call = decode(&exchange("/v1/responses", request, &sse_response(&events))).unwrap();
    assert_eq!(call.api, Some(Api::OpenAiResponses));
    assert_eq!((call.usage.input, call.usage.output), (Some(36), Some(87)));
    assert_eq!(call.usage.reasoning_output, Some(0));
    assert_eq!(
        call.output, "Once upon",
        "streamed text is not doubled by the final object"
    );
    assert_eq!(call.finish_reasons, vec!["completed"]);
    assert_eq!(call.response_model.as_deref(), Some("gpt-4.1-2025-04-14"));
    assert_eq!(call.prompt.len(), 2);
}

#[test]
fn legacy_completions_stream_and_embeddings() {
    let events = [
        r#"data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"text":" blue","logprobs":null,"finish_reason":null}]}"#,
        r#"data: {"id":"cmpl-1","object":"text_completion","created":1,"model":"Qwen/Qwen3-8B","choices":[{"index":0,"text":".","logprobs":null,"finish_reason":"stop"}]}"#,
        "data: [DONE]",
    ];
    let call = decode(&exchange(
        "/v1/completions",
        r#"{"model":"Qwen/Qwen3-8B","prompt":"The sky is","stream":true}"#,
        &sse_response(&events),
    ))
    .unwrap();
    assert_eq!(call.api.map(Api::operation), Some("text_completion"));
    assert_eq!(call.output, " blue.");
    assert_eq!(call.prompt[0].content, "The sky is");

    let body = r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]},{"object":"embedding","index":1,"embedding":[0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#;
    let call = decode(&exchange(
        "/v1/embeddings",
        r#"{"model":"text-embedding-3-small","input":["hello world","bye"]}"#,
        &json_response(body),
    ))
    .unwrap();
    assert_eq!(call.api.map(Api::operation), Some("embeddings"));
    assert_eq!(call.inputs, 2);
    assert_eq!((call.usage.input, call.usage.output), (Some(8), None));
}

#[test]
fn an_error_response_carries_the_servers_message() {
    let body = r#"{"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400}"#;
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let call = decode(&exchange(
        "/v1/chat/completions",
        CHAT_REQUEST,
        &[head.into_bytes()],
    ))
    .unwrap();
    assert_eq!(call.error.as_deref(), Some("max_tokens is too large"));
    assert!(call.usage.is_empty());
}

#[test]
fn other_traffic_and_broken_bodies() {
    let other = exchange("/healthz", "{}", &json_response("{}"));
    assert_eq!(decode(&other), None);
    let broken = exchange("/v1/chat/completions", "{not json", &json_response("[1,"));
    let call = decode(&broken).unwrap();
    assert!(call.decode_error.unwrap().contains("not JSON"));
    assert_eq!(Api::detect("GET", "/v1/chat/completions"), None);
    assert_eq!(
        Api::detect(
            "POST",
            "/openai/deployments/gpt4/chat/completions?api-version=2024-10-21"
        ),
        Some(Api::OpenAiChatCompletions)
    );
}
