use std::io::Write;

use super::*;
use crate::http::HttpVersion;

const LIMITS: BodyLimits = BodyLimits::per_body(1 << 20);
const CONN: ConnId = ConnId {
    pid: 1,
    conn: 2,
    seq: 0,
};

/// Feeds every (flow, bytes) in order, each piece at its own timestamp, then finishes.
fn decode(pieces: &[(Flow, &[u8])]) -> Vec<Exchange> {
    let mut decoder = H1Decoder::new(CONN, Role::Client, LIMITS, 0, 0);
    let mut out = Vec::new();
    for (i, (flow, bytes)) in pieces.iter().enumerate() {
        decoder.push(*flow, i as u64 + 1, bytes, &mut out);
    }
    decoder.finish(&mut out);
    out
}

/// The same, one byte at a time (all bytes of a piece share its timestamp).
fn decode_bytewise(pieces: &[(Flow, &[u8])]) -> Vec<Exchange> {
    let mut decoder = H1Decoder::new(CONN, Role::Client, LIMITS, 0, 0);
    let mut out = Vec::new();
    for (i, (flow, bytes)) in pieces.iter().enumerate() {
        for b in bytes.iter() {
            decoder.push(*flow, i as u64 + 1, std::slice::from_ref(b), &mut out);
        }
    }
    decoder.finish(&mut out);
    out
}

/// Method, target, status, response body, error.
type Summary = (String, String, u16, Vec<u8>, Option<String>);

fn summary(exchanges: &[Exchange]) -> Vec<Summary> {
    exchanges
        .iter()
        .map(|e| {
            (
                e.request.method.clone(),
                e.request.target.clone(),
                e.response.as_ref().map_or(0, |r| r.status),
                e.response.as_ref().map_or(vec![], |r| r.body.bytes.clone()),
                e.error.as_ref().map(|e| e.to_string()),
            )
        })
        .collect()
}

use Flow::{ToClient as S, ToServer as C};

#[test]
fn a_request_and_its_response() {
    let out = decode(&[
        (
            C,
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\"a\""
                .as_slice(),
        ),
        (C, b"}"),
        (S, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ]);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.request.method, "POST");
    assert_eq!(e.request.target, "/v1/chat/completions");
    assert_eq!(e.request.body.bytes, b"{\"a\"}");
    assert_eq!((e.request.start_ns, e.request.end_ns), (1, 2));
    assert_eq!(e.request.stream_pos, 0);
    let r = e.response.as_ref().unwrap();
    assert_eq!((r.status, r.body.bytes.as_slice()), (200, &b"ok"[..]));
    assert_eq!(e.error, None);
}

#[test]
fn keep_alive_and_pipelining_pair_in_order() {
    let out = decode(&[
        (C, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n".as_slice()),
        (S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nAHTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nB"),
        (C, b"GET /c HTTP/1.1\r\n\r\n"),
        (S, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nC"),
    ]);
    let got: Vec<_> = summary(&out).into_iter().map(|s| (s.1, s.2, s.3)).collect();
    assert_eq!(
        got,
        vec![
            ("/a".into(), 200, b"A".to_vec()),
            ("/b".into(), 404, b"B".to_vec()),
            ("/c".into(), 200, b"C".to_vec()),
        ]
    );
    // Stream positions name each request.
    assert_eq!(out[1].request.stream_pos, 19);
    assert_eq!(out[2].request.stream_pos, 38);
}

#[test]
fn chunked_bodies_with_extensions_and_trailers() {
    let out = decode(&[
        (
            C,
            b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                .as_slice(),
        ),
        (
            S,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n",
        ),
        (S, b"6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.body.bytes, b"abc");
    let r = out[0].response.as_ref().unwrap();
    assert_eq!(r.body.bytes, b"hello world");
    assert_eq!(r.body.arrivals, vec![(0, 2), (5, 3)]);
    assert_eq!((r.start_ns, r.end_ns), (2, 3));
    assert_eq!(out[0].error, None);
}

#[test]
fn expect_100_continue_skips_the_interim_response() {
    let out = decode(&[
        (
            C,
            b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n".as_slice(),
        ),
        (S, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (C, b"abc"),
        (S, b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(
        summary(&out),
        vec![("POST".into(), "/up".into(), 201, vec![], None)]
    );
    assert_eq!(out[0].request.body.bytes, b"abc");
}

#[test]
fn head_204_and_304_responses_have_no_body() {
    let out = decode(&[
        (C, b"HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\n".as_slice()),
        (S, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
        (S, b"HTTP/1.1 204 No Content\r\n\r\n"),
        (S, b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
        (S, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ]);
    let statuses: Vec<_> = summary(&out).into_iter().map(|s| (s.2, s.3, s.4)).collect();
    assert_eq!(
        statuses,
        vec![
            (200, vec![], None),
            (204, vec![], None),
            (304, vec![], None),
            (200, b"ok".to_vec(), None),
        ]
    );
}

#[test]
fn a_body_delimited_by_the_close_ends_at_finish() {
    let out = decode(&[
        (C, b"GET / HTTP/1.0\r\n\r\n".as_slice()),
        (S, b"HTTP/1.0 200 OK\r\n\r\nall of it"),
        (S, b" until close"),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].response.as_ref().unwrap().body.bytes,
        b"all of it until close"
    );
    assert_eq!(out[0].error, None);
    assert_eq!(out[0].request.version, HttpVersion::Http10);
}

#[test]
fn a_gzip_response_is_decoded() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"usage\":{}}").unwrap();
    let body = gz.finish().unwrap();
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut response = head.into_bytes();
    response.extend_from_slice(&body);
    let out = decode(&[(C, b"GET / HTTP/1.1\r\n\r\n".as_slice()), (S, &response)]);
    assert_eq!(
        out[0].response.as_ref().unwrap().body.bytes,
        b"{\"usage\":{}}"
    );
    assert_eq!(out[0].error, None);
}

#[test]
fn the_connection_ending_mid_response_is_incomplete() {
    let out = decode(&[
        (C, b"GET / HTTP/1.1\r\n\r\n".as_slice()),
        (S, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].error,
        Some(HttpError::Incomplete { what: "response" })
    );
    assert_eq!(out[0].response.as_ref().unwrap().body.bytes, b"abc");
    let unanswered = decode(&[(C, b"GET / HTTP/1.1\r\n\r\n".as_slice())]);
    assert!(unanswered[0].response.is_none());
    assert_eq!(
        unanswered[0].error,
        Some(HttpError::Incomplete { what: "response" })
    );
}

#[test]
fn malformed_bytes_are_reported_and_the_next_request_still_decodes() {
    let out = decode(&[
        (C, b"G\x01T / HTTP/1.1\r\n\r\nGET /ok HTTP/1.1\r\n\r\n".as_slice()),
        (S, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert!(matches!(
        out[0].error,
        Some(HttpError::Malformed {
            what: "request",
            ..
        })
    ));
    assert_eq!(
        (out[1].request.target.as_str(), out[1].error.is_none()),
        ("/ok", true)
    );
}

#[test]
fn a_gap_inside_a_sized_body_keeps_the_framing() {
    let mut decoder = H1Decoder::new(CONN, Role::Server, LIMITS, 0, 0);
    let mut out = Vec::new();
    decoder.push(C, 1, b"GET / HTTP/1.1\r\n\r\n", &mut out);
    decoder.push(
        S,
        2,
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab",
        &mut out,
    );
    decoder.gap(S, 5, &mut out);
    decoder.push(
        S,
        3,
        b"fghHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nZ",
        &mut out,
    );
    decoder.push(C, 4, b"GET /2 HTTP/1.1\r\n\r\n", &mut out);
    decoder.finish(&mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    let first = out[0].response.as_ref().unwrap();
    assert_eq!(first.body.bytes, b"abfgh");
    assert!(first.body.truncated);
    assert_eq!(out[1].response.as_ref().unwrap().body.bytes, b"Z");
    assert_eq!(out[1].error, None);
}

#[test]
fn a_gap_in_a_head_is_an_error_and_decoding_resumes_at_the_next_message() {
    let mut decoder = H1Decoder::new(CONN, Role::Client, LIMITS, 0, 0);
    let mut out = Vec::new();
    decoder.push(C, 1, b"POST /lost HTTP/1.1\r\nContent-Le", &mut out);
    decoder.gap(C, 40, &mut out);
    decoder.push(
        C,
        2,
        b"tail of something\r\nGET /next HTTP/1.1\r\n\r\n",
        &mut out,
    );
    decoder.push(
        S,
        3,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    decoder.push(
        S,
        4,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        &mut out,
    );
    decoder.finish(&mut out);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert!(matches!(
        out[0].error,
        Some(HttpError::Gap {
            what: "request",
            len: 40
        })
    ));
    assert_eq!(out[1].request.target, "/next");
    assert_eq!(out[1].request.stream_pos, 31 + 40 + 19);
}

#[test]
fn switching_protocols_stops_decoding() {
    let out = decode(&[
        (
            C,
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".as_slice(),
        ),
        (S, b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x81\x05hello"),
        (C, b"\x81\x85garbage"),
    ]);
    assert_eq!(
        summary(&out),
        vec![("GET".into(), "/ws".into(), 101, vec![], None)]
    );
}

#[test]
fn conflicting_content_lengths_are_malformed() {
    let out = decode(&[(
        C,
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc".as_slice(),
    )]);
    assert!(
        matches!(out[0].error, Some(HttpError::Malformed { .. })),
        "{out:#?}"
    );
}

#[test]
fn byte_at_a_time_gives_the_same_exchanges() {
    let pieces: [(Flow, &[u8]); 6] = [
        (C, b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n"),
        (S, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\ndata\r\n"),
        (S, b"0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nxyz"),
        (C, b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\n0\r\n\r\n"),
        (C, b"\x00\x01garbage line\r\n\r\nGET /d HTTP/1.1\r\n\r\n"),
        (S, b"HTTP/1.1 200 OK\r\n\r\nuntil the end"),
    ];
    let whole = decode(&pieces);
    assert_eq!(whole.len(), 5, "{whole:#?}");
    assert_eq!(whole, decode_bytewise(&pieces));
}
