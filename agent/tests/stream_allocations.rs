//! Decoding a streamed response costs no allocation per SSE chunk: the count of allocations
//! for 512 chunks is that of 256 chunks plus the few reallocations of the growing output text.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokenmeter_agent::http::{BodyLimits, ConnectionDecoder, Exchange, Flow, H1Decoder, Role};
use tokenmeter_agent::llm;
use tokenmeter_agent::streams::ConnId;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn streamed_exchange(tokens: usize) -> Exchange {
    let request = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: {}\r\n\r\n{request}",
        request.len()
    );
    let mut body = String::new();
    for i in 0..tokens {
        body.push_str(&format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" t{i}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
        ));
    }
    body.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":9,\"total_tokens\":12}}\n\ndata: [DONE]\n\n");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let conn = ConnId {
        pid: 1,
        conn: 1,
        seq: 0,
    };
    let mut decoder = H1Decoder::new(conn, Role::Client, BodyLimits::per_body(8 << 20), 0, 0);
    let mut out = Vec::new();
    decoder.push(Flow::ToServer, 1, head.as_bytes(), &mut out);
    decoder.push(Flow::ToClient, 2, response.as_bytes(), &mut out);
    decoder.finish(&mut out);
    out.pop().unwrap()
}

fn allocations_to_decode(exchange: &Exchange) -> usize {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let call = llm::decode(exchange).expect("an LLM call");
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(call.usage.output, Some(9));
    assert!(call.output.starts_with(" t0 t1"));
    after - before
}

#[test]
fn decoding_a_stream_allocates_nothing_per_chunk() {
    let (small, large) = (streamed_exchange(256), streamed_exchange(512));
    let a = allocations_to_decode(&small);
    let b = allocations_to_decode(&large);
    // Doubling the chunks adds only the output text's reallocations (a few doublings).
    assert!(b <= a + 4, "256 chunks: {a} allocations, 512 chunks: {b}");
    assert!(a < 64, "256 chunks took {a} allocations");
}
