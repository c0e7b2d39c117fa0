//! Property tests: whatever bytes arrive, in whatever pieces, the HTTP and LLM decoders
//! neither panic nor depend on how the bytes were split.

use proptest::prelude::*;

use super::{BodyLimits, ConnectionDecoder, Exchange, Flow, H1Decoder, Role};
use crate::streams::ConnId;

const CONN: ConnId = ConnId {
    pid: 1,
    conn: 1,
    seq: 0,
};

fn run(pieces: &[(bool, Vec<u8>)], gaps: &[(usize, u64)]) -> Vec<Exchange> {
    let mut decoder = H1Decoder::new(CONN, Role::Client, BodyLimits::per_body(4096), 0, 0);
    let mut out = Vec::new();
    for (i, (to_server, bytes)) in pieces.iter().enumerate() {
        let flow = if *to_server {
            Flow::ToServer
        } else {
            Flow::ToClient
        };
        decoder.push(flow, i as u64, bytes, &mut out);
        for (at, len) in gaps {
            if *at == i {
                decoder.gap(flow, *len, &mut out);
            }
        }
    }
    decoder.finish(&mut out);
    out
}

/// Pieces that look like HTTP often enough to reach deep states: fragments of real messages
/// mixed with random bytes.
fn http_ish() -> impl Strategy<Value = Vec<u8>> {
    let fragments = prop_oneof![
        Just(b"POST /v1/chat/completions HTTP/1.1\r\n".to_vec()),
        Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
        Just(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
        Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
        Just(b"Content-Length: 5\r\n".to_vec()),
        Just(b"Content-Encoding: gzip\r\n".to_vec()),
        Just(b"Content-Type: text/event-stream\r\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"5\r\nhello\r\n".to_vec()),
        Just(b"0\r\n\r\n".to_vec()),
        Just(b"data: {\"usage\":{\"prompt_tokens\":1}}\n\n".to_vec()),
        prop::collection::vec(any::<u8>(), 0..40),
    ];
    prop::collection::vec(fragments, 0..12).prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn h1_never_panics_on_any_input(
        pieces in prop::collection::vec((any::<bool>(), http_ish()), 0..16),
        gaps in prop::collection::vec((0usize..16, 1u64..100), 0..3),
    ) {
        let exchanges = run(&pieces, &gaps);
        // Whatever came out can be read as LLM traffic without a panic either.
        for exchange in &exchanges {
            let _ = crate::llm::decode(exchange);
        }
    }

    #[test]
    fn h1_output_does_not_depend_on_how_bytes_are_split(
        pieces in prop::collection::vec((any::<bool>(), http_ish()), 1..8),
        split in 1usize..7,
    ) {
        let whole = run(&pieces, &[]);
        let mut fine = Vec::new();
        for (to_server, bytes) in &pieces {
            // Same timestamps: split each piece but keep its index as the time.
            fine.push((*to_server, bytes.clone()));
        }
        let mut decoder = H1Decoder::new(CONN, Role::Client, BodyLimits::per_body(4096), 0, 0);
        let mut out = Vec::new();
        for (i, (to_server, bytes)) in fine.iter().enumerate() {
            let flow = if *to_server { Flow::ToServer } else { Flow::ToClient };
            for part in bytes.chunks(split) {
                decoder.push(flow, i as u64, part, &mut out);
            }
        }
        decoder.finish(&mut out);
        prop_assert_eq!(whole, out);
    }

    #[test]
    fn sse_and_json_decoding_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = super::sse::events(&body).count();
        let text = String::from_utf8_lossy(&body);
        for event in super::sse::events(text.as_bytes()) {
            let _ = serde_json::from_str::<serde_json::Value>(&event.data);
        }
    }
}
