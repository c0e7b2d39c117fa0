//! Hand-made frames: the cases a real client and server do not produce on request (padding,
//! priority, PUSH_PROMISE, GOAWAY, unknown frames, too many streams) and malformed input.

use loona_hpack::Encoder;

use super::frame::{flags, kind, PREFACE};
use super::H2Decoder;
use crate::http::{BodyLimits, ConnectionDecoder, Exchange, Flow, HttpError, Role};
use crate::streams::ConnId;

const CONN: ConnId = ConnId {
    pid: 1,
    conn: 2,
    seq: 3,
};
const LIMITS: BodyLimits = BodyLimits::per_body(1 << 16);

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn settings(pairs: &[(u16, u32)]) -> Vec<u8> {
    let payload: Vec<u8> = pairs
        .iter()
        .flat_map(|(id, value)| [&id.to_be_bytes()[..], &value.to_be_bytes()].concat())
        .collect();
    frame(kind::SETTINGS, 0, 0, &payload)
}

/// A connection under test, with an HPACK encoder per direction.
struct Conn {
    decoder: H2Decoder,
    out: Vec<Exchange>,
    requests: Encoder<'static>,
    responses: Encoder<'static>,
    ts: u64,
}

impl Conn {
    /// Preface and empty SETTINGS on both flows.
    fn new() -> Self {
        let mut conn = Self::bare();
        conn.client(&[PREFACE.to_vec(), settings(&[])].concat());
        conn.server(&settings(&[]));
        conn
    }

    fn bare() -> Self {
        Self {
            decoder: H2Decoder::new(CONN, Role::Client, LIMITS),
            out: Vec::new(),
            requests: Encoder::new(),
            responses: Encoder::new(),
            ts: 0,
        }
    }

    fn client(&mut self, bytes: &[u8]) {
        self.ts += 10;
        self.decoder
            .push(Flow::ToServer, self.ts, bytes, &mut self.out);
    }

    fn server(&mut self, bytes: &[u8]) {
        self.ts += 10;
        self.decoder
            .push(Flow::ToClient, self.ts, bytes, &mut self.out);
    }

    fn request_block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.requests
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn response_block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.responses
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn get(&mut self, stream: u32, path: &str) {
        let block =
            self.request_block(&[(":method", "GET"), (":scheme", "https"), (":path", path)]);
        self.client(&frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            stream,
            &block,
        ));
    }

    fn ok(&mut self, stream: u32, body: &[u8]) {
        let block = self.response_block(&[(":status", "200")]);
        self.server(&frame(kind::HEADERS, flags::END_HEADERS, stream, &block));
        self.server(&frame(kind::DATA, flags::END_STREAM, stream, body));
    }

    fn finish(mut self) -> (Vec<Exchange>, H2Decoder) {
        self.decoder.finish(&mut self.out);
        (self.out, self.decoder)
    }
}

#[test]
fn padding_priority_and_continuation_split_mid_field() {
    let mut c = Conn::new();
    let block = c.request_block(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.example.com"),
        (":path", "/v1/embeddings"),
        ("content-type", "application/json"),
    ]);
    // HEADERS: PADDED + PRIORITY, the block cut in three, mid-field.
    let (a, rest) = block.split_at(7);
    let (b, d) = rest.split_at(rest.len() / 2);
    let mut headers = vec![3u8];
    headers.extend_from_slice(&[0x80, 0, 0, 0, 16]);
    headers.extend_from_slice(a);
    headers.extend_from_slice(&[0, 0, 0]);
    c.client(&frame(
        kind::HEADERS,
        flags::PADDED | flags::PRIORITY,
        1,
        &headers,
    ));
    c.client(&frame(kind::CONTINUATION, 0, 1, b));
    c.client(&frame(kind::CONTINUATION, flags::END_HEADERS, 1, d));
    let mut data = vec![2u8];
    data.extend_from_slice(b"{\"input\":\"hi\"}");
    data.extend_from_slice(&[0, 0]);
    c.client(&frame(
        kind::DATA,
        flags::PADDED | flags::END_STREAM,
        1,
        &data,
    ));
    c.client(&frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 255]));
    c.ok(1, b"[0.1]");
    let (out, decoder) = c.finish();
    assert_eq!(out.len(), 1, "{out:#?}");
    let x = &out[0];
    assert_eq!(x.error, None);
    assert_eq!(
        (x.request.method.as_str(), x.request.target.as_str()),
        ("POST", "/v1/embeddings")
    );
    assert_eq!(x.request.headers.get("host"), Some(&b"api.example.com"[..]));
    assert_eq!(
        x.request.headers.get("content-type"),
        Some(&b"application/json"[..])
    );
    assert_eq!(x.request.body.bytes, b"{\"input\":\"hi\"}");
    assert_eq!(x.request.stream_pos, 24 + 9);
    assert_eq!(x.response.as_ref().unwrap().body.bytes, b"[0.1]");
    assert_eq!(decoder.stats().ignored_bytes, 0);
}

#[test]
fn push_promise_blocks_keep_hpack_in_step() {
    let mut c = Conn::new();
    c.get(1, "/page");
    // The promise indexes fields the response below refers to by index only.
    let promise = c.response_block(&[
        (":method", "GET"),
        (":path", "/pushed.css"),
        ("x-shared", "same"),
    ]);
    let mut payload = 2u32.to_be_bytes().to_vec();
    payload.extend_from_slice(&promise);
    c.server(&frame(kind::PUSH_PROMISE, flags::END_HEADERS, 1, &payload));
    let response = c.response_block(&[(":status", "200"), ("x-shared", "same")]);
    assert!(
        response.len() <= 3,
        "the encoder indexed x-shared: {response:?}"
    );
    c.server(&frame(kind::HEADERS, flags::END_HEADERS, 1, &response));
    // The pushed response on stream 2 is not reported.
    c.ok(2, b"body { }");
    c.server(&frame(kind::DATA, flags::END_STREAM, 1, b"<html>"));
    let (out, _) = c.finish();
    assert_eq!(out.len(), 1, "{out:#?}");
    let response = out[0].response.as_ref().unwrap();
    assert_eq!(response.headers.get("x-shared"), Some(&b"same"[..]));
    assert_eq!(response.body.bytes, b"<html>");
    assert_eq!(out[0].error, None);
}

#[test]
fn interim_continue_then_final_response() {
    let mut c = Conn::new();
    let block = c.request_block(&[
        (":method", "POST"),
        (":path", "/upload"),
        ("expect", "100-continue"),
    ]);
    c.client(&frame(kind::HEADERS, flags::END_HEADERS, 1, &block));
    let interim = c.response_block(&[(":status", "100")]);
    c.server(&frame(kind::HEADERS, flags::END_HEADERS, 1, &interim));
    c.client(&frame(kind::DATA, flags::END_STREAM, 1, b"payload"));
    let block = c.response_block(&[(":status", "201")]);
    c.server(&frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        1,
        &block,
    ));
    let (out, _) = c.finish();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response.as_ref().unwrap().status, 201);
    assert_eq!(out[0].request.body.bytes, b"payload");
    assert_eq!(out[0].error, None);
}

#[test]
fn control_and_unknown_frames_are_passed_over() {
    let mut c = Conn::new();
    c.client(&frame(kind::PING, 0, 0, &[1; 8]));
    c.server(&frame(kind::PING, flags::ACK, 0, &[1; 8]));
    c.client(&frame(kind::SETTINGS, flags::ACK, 0, &[]));
    c.client(&frame(kind::WINDOW_UPDATE, 0, 0, &[0, 1, 0, 0]));
    c.client(&frame(0x42, 0xff, 7, b"an extension frame"));
    c.get(1, "/");
    c.server(&frame(kind::WINDOW_UPDATE, 0, 1, &[0, 1, 0, 0]));
    c.ok(1, b"ok");
    c.server(&frame(
        kind::GOAWAY,
        0,
        0,
        &[0, 0, 0, 1, 0, 0, 0, 0, b'b', b'y', b'e'],
    ));
    let (out, decoder) = c.finish();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].error, None);
    assert_eq!(decoder.stats().unknown_frames, 1);
}

#[test]
fn goaway_refuses_the_streams_above_its_last_id() {
    let mut c = Conn::new();
    c.get(1, "/kept");
    c.get(3, "/refused");
    c.server(&frame(kind::GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
    assert_eq!(c.out.len(), 1);
    assert_eq!(c.out[0].request.target, "/refused");
    assert_eq!(
        c.out[0].error,
        Some(HttpError::Incomplete { what: "response" })
    );
    c.ok(1, b"done");
    let (out, _) = c.finish();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].request.target, "/kept");
    assert_eq!(out[1].error, None);
}

#[test]
fn an_early_complete_response_then_reset_is_not_an_error() {
    let mut c = Conn::new();
    let block = c.request_block(&[(":method", "POST"), (":path", "/big-upload")]);
    c.client(&frame(kind::HEADERS, flags::END_HEADERS, 1, &block));
    c.client(&frame(kind::DATA, 0, 1, b"part"));
    let block = c.response_block(&[(":status", "413")]);
    c.server(&frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        1,
        &block,
    ));
    assert!(c.out.is_empty(), "waits for the request to end");
    c.server(&frame(kind::RST_STREAM, 0, 1, &0u32.to_be_bytes()));
    let (out, _) = c.finish();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].error, None);
    assert_eq!(out[0].response.as_ref().unwrap().status, 413);
    assert_eq!(out[0].request.body.bytes, b"part");
}

#[test]
fn too_many_open_streams_report_the_oldest() {
    let mut c = Conn::new();
    for i in 0..1030u32 {
        c.get(2 * i + 1, "/");
    }
    assert_eq!(c.out.len(), 6);
    assert_eq!(c.out[0].request.stream_pos, 24 + 9);
    assert!(c
        .out
        .iter()
        .all(|x| x.error == Some(HttpError::Incomplete { what: "response" })));
    assert_eq!(c.decoder.stats().evicted_streams, 6);
    let (out, _) = c.finish();
    assert_eq!(out.len(), 1030);
}

#[test]
fn a_response_without_its_request_is_counted_not_reported() {
    let mut c = Conn::new();
    c.ok(5, b"nobody asked");
    let (out, decoder) = c.finish();
    assert!(out.is_empty());
    assert_eq!(decoder.stats().orphan_streams, 1);
}

/// Stream-level errors fail their own exchange; decoding goes on.
#[test]
fn malformed_field_sections_fail_only_their_stream() {
    type Fields<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Fields, Fields); 5] = [
        ("no :method", &[(":path", "/")], &[(":status", "200")]),
        (
            "pseudo-header after",
            &[(":method", "GET"), ("a", "b"), (":path", "/")],
            &[(":status", "200")],
        ),
        (
            "unknown pseudo-header",
            &[(":method", "GET"), (":path", "/"), (":x", "y")],
            &[(":status", "200")],
        ),
        (
            "no :status",
            &[(":method", "GET"), (":path", "/")],
            &[("server", "x")],
        ),
        (
            "invalid :status",
            &[(":method", "GET"), (":path", "/")],
            &[(":status", "2000")],
        ),
    ];
    for (expected, request, response) in cases {
        let mut c = Conn::new();
        let block = c.request_block(request);
        c.client(&frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            1,
            &block,
        ));
        let block = c.response_block(response);
        c.server(&frame(
            kind::HEADERS,
            flags::END_HEADERS | flags::END_STREAM,
            1,
            &block,
        ));
        c.get(3, "/next");
        c.ok(3, b"fine");
        let (out, decoder) = c.finish();
        assert_eq!(out.len(), 2, "{expected}: {out:#?}");
        match &out[0].error {
            Some(HttpError::Malformed { detail, .. }) => {
                assert!(detail.contains(expected), "{detail}")
            }
            other => panic!("{expected}: {other:?}"),
        }
        assert_eq!(out[1].error, None, "{expected}");
        assert!(decoder.stats().ignored_bytes == 0, "{expected}");
    }
}

/// Connection-level errors: the open streams (or one empty exchange) carry the error, and
/// nothing after is decoded.
#[test]
fn malformed_connections_stop_the_decoder() {
    let ok_request = {
        let mut encoder = Encoder::new();
        encoder.encode([(&b":method"[..], &b"GET"[..]), (b":path", b"/")])
    };
    let headers = |stream, flags| {
        frame(
            kind::HEADERS,
            flags | flags::END_HEADERS,
            stream,
            &ok_request,
        )
    };
    let preface = [PREFACE.to_vec(), settings(&[])].concat();
    let cases: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        (
            "client preface",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            vec![],
        ),
        (
            "first frame is not SETTINGS",
            [PREFACE.to_vec(), frame(kind::PING, 0, 0, &[0; 8])].concat(),
            vec![],
        ),
        (
            "over the 16384 bytes allowed",
            [preface.clone(), frame(kind::DATA, 0, 1, &[0; 20_000])].concat(),
            vec![],
        ),
        (
            "over the 262144 bytes read",
            [
                preface.clone(),
                frame(kind::HEADERS, 0x4, 1, &vec![0; 300 * 1024]),
            ]
            .concat(),
            settings(&[(5, 1 << 20)]),
        ),
        (
            "Header index out of bounds",
            [preface.clone(), frame(kind::HEADERS, 0x4, 1, &[0xbf])].concat(),
            vec![],
        ),
        (
            "Too many octets",
            [preface.clone(), frame(kind::HEADERS, 0x4, 1, &[0xff; 8])].concat(),
            vec![],
        ),
        (
            "Dynamic table size exceeds",
            [
                preface.clone(),
                frame(kind::HEADERS, 0x4, 1, &[0x3f, 0xe1, 0x7f, 0x82]),
            ]
            .concat(),
            vec![],
        ),
        (
            "type 0 with 2 bytes on stream 0",
            [preface.clone(), frame(kind::DATA, 0, 0, b"hi")].concat(),
            vec![],
        ),
        (
            "CONTINUATION without",
            [preface.clone(), frame(kind::CONTINUATION, 0x4, 1, &[0x82])].concat(),
            vec![],
        ),
        (
            "not continued",
            [
                preface.clone(),
                frame(kind::HEADERS, 0, 1, &ok_request),
                frame(kind::PING, 0, 0, &[0; 8]),
            ]
            .concat(),
            vec![],
        ),
        (
            "multiple of 6",
            [preface.clone(), frame(kind::SETTINGS, 0, 0, &[0; 5])].concat(),
            vec![],
        ),
        (
            "type 6 with 7 bytes",
            [preface.clone(), frame(kind::PING, 0, 0, &[0; 7])].concat(),
            vec![],
        ),
        (
            "padding longer",
            [
                preface.clone(),
                frame(kind::DATA, flags::PADDED, 1, &[9, 1, 2]),
            ]
            .concat(),
            vec![],
        ),
        (
            "server-initiated",
            [preface.clone(), headers(2, 1)].concat(),
            vec![],
        ),
        (
            "MAX_FRAME_SIZE out of range",
            [preface.clone()].concat(),
            settings(&[(5, 100)]),
        ),
        (
            "acknowledgement with a payload",
            [
                preface.clone(),
                frame(kind::SETTINGS, flags::ACK, 0, &[0; 6]),
            ]
            .concat(),
            vec![],
        ),
        (
            "a header block over 256 KiB",
            [preface.clone(), frame(kind::HEADERS, 0, 1, &[0; 16_000])]
                .into_iter()
                .chain((0..16).map(|_| frame(kind::CONTINUATION, 0, 1, &[0; 16_000])))
                .collect::<Vec<_>>()
                .concat(),
            vec![],
        ),
    ];
    for (expected, to_server, to_client) in cases {
        let mut decoder = H2Decoder::new(CONN, Role::Server, LIMITS);
        let mut out = Vec::new();
        decoder.push(
            Flow::ToClient,
            1,
            &[settings(&[]), to_client].concat(),
            &mut out,
        );
        decoder.push(Flow::ToServer, 2, &to_server, &mut out);
        assert!(decoder.is_stopped(), "{expected}: not stopped, {out:#?}");
        assert_eq!(out.len(), 1, "{expected}: {out:#?}");
        match &out[0].error {
            Some(HttpError::Malformed { detail, .. }) => {
                assert!(detail.contains(expected), "{expected}: {detail}")
            }
            other => panic!("{expected}: {other:?}"),
        }
        // Nothing after is read.
        decoder.push(Flow::ToServer, 3, &headers(5, 1), &mut out);
        decoder.finish(&mut out);
        assert_eq!(out.len(), 1, "{expected}");
        assert!(decoder.stats().ignored_bytes >= 9, "{expected}");
    }
}

#[test]
fn a_malformed_frame_reports_the_open_streams() {
    let mut c = Conn::new();
    c.get(1, "/a");
    c.get(3, "/b");
    c.server(&frame(kind::PING, 0, 0, &[0; 3]));
    assert_eq!(c.out.len(), 2);
    for x in &c.out {
        assert!(
            matches!(x.error, Some(HttpError::Malformed { .. })),
            "{x:?}"
        );
    }
    assert_eq!(c.out[0].request.target, "/a");
}

#[test]
fn a_gap_with_nothing_open_reports_a_lost_request() {
    let mut c = Conn::new();
    c.get(1, "/");
    c.ok(1, b"ok");
    let mut decoder = c.decoder;
    let mut out = Vec::new();
    decoder.gap(Flow::ToServer, 100, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request.method, "");
    assert_eq!(
        out[0].error,
        Some(HttpError::Gap {
            what: "request",
            len: 100
        })
    );
    assert!(decoder.is_stopped());
}

#[test]
fn trailers_must_end_the_stream() {
    let mut c = Conn::new();
    c.get(1, "/");
    let block = c.response_block(&[(":status", "200")]);
    c.server(&frame(kind::HEADERS, flags::END_HEADERS, 1, &block));
    c.server(&frame(kind::DATA, 0, 1, b"x"));
    let block = c.response_block(&[("grpc-status", "0")]);
    c.server(&frame(kind::HEADERS, flags::END_HEADERS, 1, &block));
    assert_eq!(c.out.len(), 1);
    match &c.out[0].error {
        Some(HttpError::Malformed { detail, .. }) => assert!(detail.contains("END_STREAM")),
        other => panic!("{other:?}"),
    }
    c.get(3, "/next");
    c.ok(3, b"fine");
    let (out, decoder) = c.finish();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].error, None);
    assert_eq!(decoder.stats().ignored_bytes, 0);
}

/// One byte per field, each a reference to a 3 KB table entry: the section is cut off, its
/// stream fails, and HPACK stays in step for the next one.
#[test]
fn an_hpack_bomb_fails_its_stream_only() {
    let mut c = Conn::new();
    let big = "v".repeat(3000);
    let mut fields = vec![(":method", "GET"), (":path", "/bomb")];
    fields.extend(std::iter::repeat_n(("x-big", big.as_str()), 200));
    let block = c.request_block(&fields);
    assert!(block.len() < 4000, "{}", block.len());
    c.client(&frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        1,
        &block,
    ));
    assert_eq!(c.out.len(), 1);
    match &c.out[0].error {
        Some(HttpError::Malformed { detail, .. }) => assert!(detail.contains("field section")),
        other => panic!("{other:?}"),
    }
    let block = c.request_block(&[(":method", "GET"), (":path", "/next"), ("x-big", &big)]);
    c.client(&frame(
        kind::HEADERS,
        flags::END_HEADERS | flags::END_STREAM,
        3,
        &block,
    ));
    c.ok(3, b"");
    let (out, _) = c.finish();
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].error, None);
    assert_eq!(out[1].request.headers.get("x-big"), Some(big.as_bytes()));
}

#[test]
fn positions_count_from_the_stream_start_and_the_decoder_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let mut c = Conn::bare();
    c.decoder = H2Decoder::new(CONN, Role::Server, LIMITS).with_start_pos(1000, 5000);
    assert_send(&c.decoder);
    c.client(&[PREFACE.to_vec(), settings(&[])].concat());
    c.server(&settings(&[]));
    c.get(1, "/");
    c.ok(1, b"");
    let (out, _) = c.finish();
    assert_eq!(out[0].request.stream_pos, 1000 + 24 + 9);
    assert_eq!(out[0].role, Role::Server);
}
