//! Decoding throughput, side by side in one run: a recorded-format streaming chat response of
//! 256 tokens (vLLM's SSE chunks, chunked transfer encoding) and a 32 KiB non-streamed one,
//! each through the HTTP/1.1 decoder alone and through HTTP + LLM decoding.
//!
//! `cargo bench -p tokenmeter-agent --bench decode`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenmeter_agent::http::{
    BodyBudget, BodyLimits, ConnectionDecoder, Exchange, Flow, H1Decoder, Role,
};
use tokenmeter_agent::llm;
use tokenmeter_agent::streams::ConnId;

const CONN: ConnId = ConnId {
    pid: 1,
    conn: 1,
    seq: 0,
};

const REQUEST: &str = r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"Tell me a story."}],"stream":true,"stream_options":{"include_usage":true}}"#;

fn request_bytes() -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: vllm:8000\r\nAuthorization: Bearer sk-bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{REQUEST}",
        REQUEST.len()
    )
    .into_bytes()
}

/// 256 chunks of one token each, as vLLM streams them, one TLS read per chunk.
fn streaming_response() -> Vec<Vec<u8>> {
    let mut pieces = vec![b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()];
    let mut event = |data: String| {
        let body = format!("data: {data}\n\n");
        pieces.push(format!("{:x}\r\n{body}\r\n", body.len()).into_bytes());
    };
    for i in 0..256 {
        event(format!(
            r#"{{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1733300000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{{"index":0,"delta":{{"content":" tok{i}"}},"logprobs":null,"finish_reason":null}}]}}"#
        ));
    }
    event(r#"{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1733300000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[],"usage":{"prompt_tokens":42,"total_tokens":298,"completion_tokens":256}}"#.into());
    event("[DONE]".into());
    pieces.push(b"0\r\n\r\n".to_vec());
    pieces
}

/// A 32 KiB JSON completion in one response, read in 16 KiB TLS records.
fn json_response() -> Vec<Vec<u8>> {
    let text = "lorem ipsum dolor sit amet ".repeat(1200);
    let body = format!(
        r#"{{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{text}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":42,"completion_tokens":7000,"total_tokens":7042}}}}"#
    );
    let whole = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    whole.chunks(16 * 1024).map(<[u8]>::to_vec).collect()
}

fn decode_http(request: &[u8], response: &[Vec<u8>]) -> Exchange {
    // The agent's limits: 8 MiB per body, 128 MiB over all bodies.
    let limits = BodyLimits {
        max_bytes: 8 << 20,
        budget: Some(BodyBudget::new(128 << 20)),
    };
    let mut decoder = H1Decoder::new(CONN, Role::Client, limits, 0, 0);
    let mut out = Vec::with_capacity(1);
    decoder.push(Flow::ToServer, 1, request, &mut out);
    for (i, piece) in response.iter().enumerate() {
        decoder.push(Flow::ToClient, 2 + i as u64, piece, &mut out);
    }
    decoder.finish(&mut out);
    out.pop().expect("one exchange")
}

fn bench(c: &mut Criterion) {
    let request = request_bytes();
    for (name, response) in [
        ("stream_256_tokens", streaming_response()),
        ("json_32k", json_response()),
    ] {
        let bytes = request.len() + response.iter().map(Vec::len).sum::<usize>();
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function("http", |b| {
            b.iter(|| black_box(decode_http(&request, &response)))
        });
        group.bench_function("http+llm", |b| {
            b.iter(|| {
                let exchange = decode_http(&request, &response);
                black_box(llm::decode(&exchange))
            })
        });
        let exchange = decode_http(&request, &response);
        group.bench_function("llm", |b| b.iter(|| black_box(llm::decode(&exchange))));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
