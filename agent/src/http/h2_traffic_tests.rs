//! Real HTTP/2 traffic: an `h2` client and server talk over an in-memory pipe, what each side
//! writes is recorded in order, and the recording is decoded, whole and byte by byte.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use ::h2::{client, server, Reason, RecvStream};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::sync::mpsc;

use super::frame::{kind, FrameHeader, HEADER_LEN, PREFACE};
use super::{H2Decoder, H2Stats};
use crate::http::{BodyLimits, ConnectionDecoder, Exchange, Flow, HttpError, HttpVersion, Role};
use crate::streams::ConnId;

type Log = Arc<Mutex<Vec<(Flow, Vec<u8>)>>>;
type Incoming = mpsc::UnboundedReceiver<(Request<RecvStream>, server::SendResponse<Bytes>)>;

const CONN: ConnId = ConnId {
    pid: 7,
    conn: 42,
    seq: 1,
};
const LIMITS: BodyLimits = BodyLimits::per_body(1 << 20);

/// One end of the pipe; what it writes is logged as `flow`.
struct Tee {
    io: DuplexStream,
    flow: Flow,
    log: Log,
}

impl AsyncRead for Tee {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tee {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            this.log
                .lock()
                .unwrap()
                .push((this.flow, buf[..*n].to_vec()));
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Runs `client` against `server` (which gets the accepted requests) and returns the writes of
/// both sides in the order they happened.
async fn capture<C, CF, S, SF>(
    client_builder: client::Builder,
    server_builder: server::Builder,
    client: C,
    server: S,
) -> Vec<(Flow, Vec<u8>)>
where
    C: FnOnce(client::SendRequest<Bytes>) -> CF,
    CF: Future<Output = ()>,
    S: FnOnce(Incoming) -> SF,
    SF: Future<Output = ()> + Send + 'static,
{
    let (a, b) = tokio::io::duplex(1 << 22);
    let log = Log::default();
    let client_io = Tee {
        io: a,
        flow: Flow::ToServer,
        log: log.clone(),
    };
    let server_io = Tee {
        io: b,
        flow: Flow::ToClient,
        log: log.clone(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = server(rx);
    let server_task = tokio::spawn(async move {
        let mut conn = server_builder
            .handshake::<_, Bytes>(server_io)
            .await
            .unwrap();
        let handler = tokio::spawn(handler);
        while let Some(Ok(accepted)) = conn.accept().await {
            tx.send(accepted).unwrap();
        }
        drop(tx);
        handler.await.unwrap();
    });
    let run = async move {
        let (send, conn) = client_builder
            .handshake::<_, Bytes>(client_io)
            .await
            .unwrap();
        let conn_task = tokio::spawn(async move {
            let _ = conn.await;
        });
        client(send).await;
        conn_task.await.unwrap();
        server_task.await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("the conversation hangs");
    let log = log.lock().unwrap().clone();
    log
}

async fn read_all(body: &mut RecvStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

/// Sends a request with `body` in pieces (none: END_STREAM on the HEADERS); returns the response,
/// its body and trailers.
async fn call(
    send: &mut client::SendRequest<Bytes>,
    request: Request<()>,
    body: &[&[u8]],
) -> (http::response::Parts, Vec<u8>, Option<HeaderMap>) {
    let mut ready = send.clone().ready().await.unwrap();
    let (response, mut stream) = ready.send_request(request, body.is_empty()).unwrap();
    for (i, piece) in body.iter().enumerate() {
        stream
            .send_data(Bytes::copy_from_slice(piece), i + 1 == body.len())
            .unwrap();
    }
    let (parts, mut body) = response.await.unwrap().into_parts();
    let bytes = read_all(&mut body).await;
    let trailers = body.trailers().await.unwrap();
    (parts, bytes, trailers)
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

/// Lets the connection task write what was queued, so the next frame goes in its own write.
async fn settle() {
    for _ in 0..4 {
        tokio::task::yield_now().await;
    }
}

/// Decodes the log whole and byte by byte (same timestamps), checks both agree, returns one.
fn decode_with(log: &[(Flow, Vec<u8>)], limits: BodyLimits) -> (Vec<Exchange>, H2Stats) {
    let run = |byte_at_a_time: bool| {
        let mut decoder = H2Decoder::new(CONN, Role::Client, limits.clone());
        let mut out = Vec::new();
        for (i, (flow, bytes)) in log.iter().enumerate() {
            let ts = (i as u64 + 1) * 1000;
            if byte_at_a_time {
                for byte in bytes.chunks(1) {
                    decoder.push(*flow, ts, byte, &mut out);
                }
            } else {
                decoder.push(*flow, ts, bytes, &mut out);
            }
        }
        decoder.finish(&mut out);
        (out, decoder.stats())
    };
    let whole = run(false);
    let bytewise = run(true);
    assert_eq!(whole, bytewise, "byte-at-a-time decoding differs");
    whole
}

fn decode(log: &[(Flow, Vec<u8>)]) -> Vec<Exchange> {
    decode_with(log, LIMITS).0
}

/// The frames of one flow: (position, header).
fn frames(log: &[(Flow, Vec<u8>)], flow: Flow) -> Vec<(u64, FrameHeader)> {
    let bytes: Vec<u8> = log
        .iter()
        .filter(|(f, _)| *f == flow)
        .flat_map(|(_, b)| b.clone())
        .collect();
    let mut pos = if flow == Flow::ToServer {
        PREFACE.len()
    } else {
        0
    };
    let mut frames = Vec::new();
    while pos + HEADER_LEN <= bytes.len() {
        let header = FrameHeader::parse(bytes[pos..pos + HEADER_LEN].try_into().unwrap());
        frames.push((pos as u64, header));
        pos += HEADER_LEN + header.len as usize;
    }
    frames
}

fn header<'a>(exchange: &'a Exchange, name: &str) -> Option<&'a [u8]> {
    exchange.request.headers.get(name)
}

#[tokio::test]
async fn a_get_with_headers_and_a_json_response() {
    let log = capture(
        client::Builder::new(),
        server::Builder::new(),
        |mut send| async move {
            let request = Request::get("https://api.example.com/v1/models?limit=2")
                .header("authorization", "Bearer sk-test")
                .header("user-agent", "openai-python/1.0")
                .body(())
                .unwrap();
            let (parts, body, _) = call(&mut send, request, &[]).await;
            assert_eq!(parts.status, 200);
            assert_eq!(body, b"{\"data\":[]}");
        },
        |mut incoming| async move {
            while let Some((_request, mut respond)) = incoming.recv().await {
                let response = Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(())
                    .unwrap();
                let mut send = respond.send_response(response, false).unwrap();
                send.send_data(Bytes::from_static(b"{\"data\":[]}"), true)
                    .unwrap();
            }
        },
    )
    .await;
    let out = decode(&log);
    assert_eq!(out.len(), 1, "{out:#?}");
    let x = &out[0];
    assert_eq!(x.error, None);
    assert_eq!((x.conn, x.role), (CONN, Role::Client));
    assert_eq!(x.request.version, HttpVersion::Http2);
    assert_eq!(x.request.method, "GET");
    assert_eq!(x.request.target, "/v1/models?limit=2");
    assert_eq!(header(x, "host"), Some(&b"api.example.com"[..]));
    assert_eq!(header(x, "authorization"), Some(&b"Bearer sk-test"[..]));
    assert_eq!(header(x, "user-agent"), Some(&b"openai-python/1.0"[..]));
    assert!(x.request.body.bytes.is_empty());
    let response = x.response.as_ref().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers.get("content-type"),
        Some(&b"application/json"[..])
    );
    assert_eq!(response.body.bytes, b"{\"data\":[]}");
    assert!(!response.body.truncated);
    assert!(x.request.start_ns <= x.request.end_ns && x.request.end_ns <= response.start_ns);
    assert!(response.start_ns <= response.end_ns);
    // stream_pos is where the request's HEADERS frame starts in the flow to the server.
    let headers = frames(&log, Flow::ToServer)
        .into_iter()
        .find(|(_, h)| h.kind == kind::HEADERS)
        .unwrap();
    assert_eq!(x.request.stream_pos, headers.0);
}

#[tokio::test]
async fn a_post_with_a_body_in_pieces() {
    let big = vec![b'x'; 100_000];
    let expected: Vec<u8> = [&b"{\"model\":"[..], &big, b"}"].concat();
    let sent = expected.clone();
    let log = capture(
        client::Builder::new(),
        server::Builder::new(),
        |mut send| async move {
            let request = Request::post("https://api.openai.com/v1/chat/completions")
                .header("content-type", "application/json")
                .body(())
                .unwrap();
            let (_, body, _) = call(&mut send, request, &[b"{\"model\":", &big, b"}"]).await;
            assert_eq!(body, b"{\"usage\":{}}");
        },
        move |mut incoming| async move {
            while let Some((request, mut respond)) = incoming.recv().await {
                let received = read_all(&mut request.into_body()).await;
                assert_eq!(received, sent);
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send.send_data(Bytes::from_static(b"{\"usage\":{}}"), true)
                    .unwrap();
            }
        },
    )
    .await;
    let out = decode(&log);
    assert_eq!(out.len(), 1, "{out:#?}");
    let x = &out[0];
    assert_eq!(x.error, None);
    assert_eq!(x.request.method, "POST");
    assert_eq!(x.request.target, "/v1/chat/completions");
    assert_eq!(x.request.body.bytes, expected);
    assert_eq!(x.request.body.wire_len, expected.len() as u64);
    assert!(
        x.request.body.arrivals.len() > 1,
        "{:?}",
        x.request.body.arrivals
    );
    assert_eq!(x.response.as_ref().unwrap().body.bytes, b"{\"usage\":{}}");
}

/// An SSE response sent in many DATA frames, each in its own write.
async fn streaming_log() -> Vec<(Flow, Vec<u8>)> {
    capture(
        client::Builder::new(),
        server::Builder::new(),
        |mut send| async move {
            let (_, body, _) =
                call(&mut send, get("https://api.anthropic.com/v1/messages"), &[]).await;
            assert!(body.ends_with(b"data: [DONE]\n\n"));
        },
        |mut incoming| async move {
            while let Some((_, mut respond)) = incoming.recv().await {
                let response = Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(())
                    .unwrap();
                let mut send = respond.send_response(response, false).unwrap();
                for i in 0..40 {
                    let event = format!("data: {{\"delta\":\"token{i}\"}}\n\n");
                    send.send_data(Bytes::from(event), false).unwrap();
                    settle().await;
                }
                send.send_data(Bytes::from_static(b"data: [DONE]\n\n"), true)
                    .unwrap();
            }
        },
    )
    .await
}

fn sse_body() -> Vec<u8> {
    let mut body: Vec<u8> = (0..40)
        .flat_map(|i| format!("data: {{\"delta\":\"token{i}\"}}\n\n").into_bytes())
        .collect();
    body.extend_from_slice(b"data: [DONE]\n\n");
    body
}

#[tokio::test]
async fn a_streaming_response_in_many_data_frames() {
    let log = streaming_log().await;
    let data_frames = frames(&log, Flow::ToClient)
        .iter()
        .filter(|(_, h)| h.kind == kind::DATA)
        .count();
    assert!(data_frames >= 40, "{data_frames} DATA frames");
    let out = decode(&log);
    assert_eq!(out.len(), 1);
    let response = out[0].response.as_ref().unwrap();
    assert_eq!(out[0].error, None);
    assert_eq!(
        response.headers.get("content-type"),
        Some(&b"text/event-stream"[..])
    );
    assert_eq!(response.body.bytes, sse_body());
    // Every frame came in its own write, so every one has its own arrival time.
    let arrivals = &response.body.arrivals;
    assert!(arrivals.len() >= 40, "{arrivals:?}");
    assert!(arrivals
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    assert_eq!(arrivals.first().unwrap().0, 0);
    assert_eq!(arrivals.last().unwrap().1, response.end_ns);
    assert!(response.start_ns < response.end_ns);
}

#[tokio::test]
async fn a_response_cut_at_the_limit_is_flagged_truncated() {
    let log = streaming_log().await;
    let (out, _) = decode_with(&log, BodyLimits::per_body(100));
    let body = &out[0].response.as_ref().unwrap().body;
    assert_eq!(body.bytes, sse_body()[..100]);
    assert!(body.truncated);
    assert_eq!(body.wire_len, sse_body().len() as u64);
}

#[tokio::test]
async fn the_connection_ending_mid_response_reports_it_incomplete() {
    let log = streaming_log().await;
    // Half the server's writes: past its HEADERS, well before the last of the 41 DATA frames.
    let writes: Vec<usize> = (0..log.len())
        .filter(|&i| log[i].0 == Flow::ToClient)
        .collect();
    let cut = &log[..writes[writes.len() / 2]];
    let out = decode(cut);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].error,
        Some(HttpError::Incomplete { what: "response" })
    );
    let body = &out[0].response.as_ref().unwrap().body.bytes;
    assert!(!body.is_empty() && sse_body().starts_with(body));
}

#[tokio::test]
async fn a_gap_reports_the_open_streams_and_stops_decoding() {
    let log = streaming_log().await;
    let middle = log.len() / 2;
    let mut decoder = H2Decoder::new(CONN, Role::Server, LIMITS);
    let mut out = Vec::new();
    for (i, (flow, bytes)) in log[..middle].iter().enumerate() {
        decoder.push(*flow, i as u64, bytes, &mut out);
    }
    assert!(out.is_empty());
    decoder.gap(Flow::ToClient, 30, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out[0].error,
        Some(HttpError::Gap {
            what: "response",
            len: 30
        })
    );
    assert_eq!(out[0].role, Role::Server);
    assert!(decoder.is_stopped());
    let rest: usize = log[middle..].iter().map(|(_, b)| b.len()).sum();
    for (flow, bytes) in &log[middle..] {
        decoder.push(*flow, 0, bytes, &mut out);
    }
    decoder.finish(&mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(decoder.stats().ignored_bytes, rest as u64);
}

#[tokio::test]
async fn two_concurrent_streams_interleaved() {
    let log = capture(
        client::Builder::new(),
        server::Builder::new(),
        |send| async move {
            let mut a = send.clone();
            let mut b = send;
            let (ra, rb) = tokio::join!(
                call(&mut a, get("https://h/a"), &[]),
                call(&mut b, get("https://h/b"), &[b"body of b"]),
            );
            assert_eq!(ra.1, b"a0a1a2a3a4");
            assert_eq!(rb.1, b"b0b1b2b3b4");
        },
        |mut incoming| async move {
            let mut senders = Vec::new();
            for _ in 0..2 {
                let (request, mut respond) = incoming.recv().await.unwrap();
                let name = request.uri().path()[1..].to_string();
                let send = respond.send_response(Response::new(()), false).unwrap();
                senders.push((name, send));
            }
            for i in 0..5 {
                for (name, send) in &mut senders {
                    send.send_data(Bytes::from(format!("{name}{i}")), i == 4)
                        .unwrap();
                    settle().await;
                }
            }
            while incoming.recv().await.is_some() {}
        },
    )
    .await;
    let data: Vec<u32> = frames(&log, Flow::ToClient)
        .iter()
        .filter(|(_, h)| h.kind == kind::DATA)
        .map(|(_, h)| h.stream)
        .collect();
    assert!(
        data.windows(2).filter(|w| w[0] != w[1]).count() >= 4,
        "not interleaved: {data:?}"
    );
    let out = decode(&log);
    assert_eq!(out.len(), 2, "{out:#?}");
    for x in &out {
        assert_eq!(x.error, None);
        let name = &x.request.target[1..];
        let expected: String = (0..5).map(|i| format!("{name}{i}")).collect();
        assert_eq!(x.response.as_ref().unwrap().body.bytes, expected.as_bytes());
    }
    let b = out.iter().find(|x| x.request.target == "/b").unwrap();
    assert_eq!(b.request.body.bytes, b"body of b");
    let a = out.iter().find(|x| x.request.target == "/a").unwrap();
    assert_ne!(a.request.stream_pos, b.request.stream_pos);
}

#[tokio::test]
async fn a_large_header_block_spans_continuation_frames() {
    // Varied text, so Huffman coding does not shrink it under one frame.
    let big: String = (0..40_000u32)
        .map(|i| char::from(b'!' + (i * 7919 % 90) as u8))
        .collect();
    let value = big.clone();
    let log = capture(
        client::Builder::new(),
        server::Builder::new(),
        |mut send| async move {
            let request = Request::get("https://h/big")
                .header("x-big", value)
                .body(())
                .unwrap();
            call(&mut send, request, &[]).await;
        },
        |mut incoming| async move {
            while let Some((_, mut respond)) = incoming.recv().await {
                respond.send_response(Response::new(()), true).unwrap();
            }
        },
    )
    .await;
    let to_server = frames(&log, Flow::ToServer);
    assert!(
        to_server.iter().any(|(_, h)| h.kind == kind::CONTINUATION),
        "{to_server:?}"
    );
    let out = decode(&log);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].error, None);
    assert_eq!(header(&out[0], "x-big"), Some(big.as_bytes()));
    assert_eq!(out[0].response.as_ref().unwrap().status, 200);
}

#[tokio::test]
async fn a_reset_stream_is_reported_with_what_came() {
    let log = capture(
        client::Builder::new(),
        server::Builder::new(),
        |mut send| async move {
            let mut ready = send.clone().ready().await.unwrap();
            let (response, _) = ready.send_request(get("https://h/reset"), true).unwrap();
            let mut body = response.await.unwrap().into_body();
            while let Some(Ok(_)) = body.data().await {}
            // A second request on the same connection still decodes.
            let (parts, _, _) = call(&mut send, get("https://h/after"), &[]).await;
            assert_eq!(parts.status, 204);
        },
        |mut incoming| async move {
            while let Some((request, mut respond)) = incoming.recv().await {
                if request.uri().path() == "/after" {
                    let response = Response::builder().status(204).body(()).unwrap();
                    respond.send_response(response, true).unwrap();
                    continue;
                }
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send.send_data(Bytes::from_static(b"partial "), false)
                    .unwrap();
                settle().await;
                send.send_data(Bytes::from_static(b"output"), false)
                    .unwrap();
                settle().await;
                send.send_reset(Reason::INTERNAL_ERROR);
            }
        },
    )
    .await;
    assert!(frames(&log, Flow::ToClient)
        .iter()
        .any(|(_, h)| h.kind == kind::RST_STREAM));
    let (out, stats) = decode_with(&log, LIMITS);
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(out[0].request.target, "/reset");
    assert_eq!(
        out[0].error,
        Some(HttpError::Incomplete { what: "response" })
    );
    assert_eq!(
        out[0].response.as_ref().unwrap().body.bytes,
        b"partial output"
    );
    assert_eq!(stats.reset_streams, 1);
    assert_eq!(out[1].request.target, "/after");
    assert_eq!(out[1].error, None);
    assert_eq!(out[1].response.as_ref().unwrap().status, 204);
}

#[tokio::test]
async fn trailers_in_both_directions() {
    let log = capture(
        client::Builder::new(),
        server::Builder::new(),
        |send| async move {
            let mut ready = send.ready().await.unwrap();
            let request = Request::post("https://h/grpc")
                .header("te", "trailers")
                .body(())
                .unwrap();
            let (response, mut stream) = ready.send_request(request, false).unwrap();
            stream
                .send_data(Bytes::from_static(b"\0\0\0\0\x02hi"), false)
                .unwrap();
            let mut trailers = HeaderMap::new();
            trailers.insert("x-request-checksum", HeaderValue::from_static("abc"));
            stream.send_trailers(trailers).unwrap();
            let mut body = response.await.unwrap().into_body();
            read_all(&mut body).await;
            let trailers = body.trailers().await.unwrap().unwrap();
            assert_eq!(trailers["grpc-status"], "0");
        },
        |mut incoming| async move {
            while let Some((request, mut respond)) = incoming.recv().await {
                let mut body = request.into_body();
                read_all(&mut body).await;
                assert!(body.trailers().await.unwrap().is_some());
                let response = Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap();
                let mut send = respond.send_response(response, false).unwrap();
                send.send_data(Bytes::from_static(b"\0\0\0\0\x02ok"), false)
                    .unwrap();
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                trailers.insert("grpc-message", HeaderValue::from_static("fine"));
                send.send_trailers(trailers).unwrap();
            }
        },
    )
    .await;
    let out = decode(&log);
    assert_eq!(out.len(), 1);
    let x = &out[0];
    assert_eq!(x.error, None);
    assert_eq!(x.request.body.bytes, b"\0\0\0\0\x02hi");
    assert_eq!(header(x, "x-request-checksum"), Some(&b"abc"[..]));
    let response = x.response.as_ref().unwrap();
    assert_eq!(response.body.bytes, b"\0\0\0\0\x02ok");
    assert_eq!(
        response.headers.get("content-type"),
        Some(&b"application/grpc"[..])
    );
    assert_eq!(response.headers.get("grpc-status"), Some(&b"0"[..]));
    assert_eq!(response.headers.get("grpc-message"), Some(&b"fine"[..]));
}

#[tokio::test]
async fn an_interim_response_is_skipped() {
    let log = capture(
        client::Builder::new(),
        server::Builder::new(),
        |mut send| async move {
            let (parts, body, _) = call(&mut send, get("https://h/early-hints"), &[]).await;
            assert_eq!(parts.status, 200);
            assert_eq!(body, b"final");
        },
        |mut incoming| async move {
            while let Some((_, mut respond)) = incoming.recv().await {
                let hints = Response::builder()
                    .status(103)
                    .header("link", "</a.css>; rel=preload")
                    .body(())
                    .unwrap();
                respond.send_informational(hints).unwrap();
                settle().await;
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send.send_data(Bytes::from_static(b"final"), true).unwrap();
            }
        },
    )
    .await;
    let headers = frames(&log, Flow::ToClient)
        .iter()
        .filter(|(_, h)| h.kind == kind::HEADERS)
        .count();
    assert_eq!(headers, 2);
    let out = decode(&log);
    assert_eq!(out.len(), 1);
    let response = out[0].response.as_ref().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.headers.get("link"), None);
    assert_eq!(response.body.bytes, b"final");
}

#[tokio::test]
async fn hpack_state_survives_many_requests_and_table_size_updates() {
    let mut client_builder = client::Builder::new();
    // The server's encoder must shrink its table, with a size update, and evict as it goes.
    client_builder.header_table_size(200);
    let mut server_builder = server::Builder::new();
    server_builder.header_table_size(300);
    let log = capture(
        client_builder,
        server_builder,
        |mut send| async move {
            for i in 0..12 {
                let request = Request::get(format!("https://api.example.com/v1/item/{i}"))
                    .header("x-tenant", "acme")
                    .header("x-request-id", format!("req-{i}-{}", "z".repeat(i * 10)))
                    .body(())
                    .unwrap();
                let (parts, _, _) = call(&mut send, request, &[]).await;
                assert_eq!(parts.headers["x-served-for"], format!("item-{i}"));
            }
        },
        |mut incoming| async move {
            while let Some((request, mut respond)) = incoming.recv().await {
                let i = request.uri().path().rsplit('/').next().unwrap().to_string();
                let response = Response::builder()
                    .header("x-served-for", format!("item-{i}"))
                    .header("server", "test")
                    .body(())
                    .unwrap();
                respond.send_response(response, true).unwrap();
            }
        },
    )
    .await;
    // The server's first header block starts with a dynamic table size update (001xxxxx).
    let bytes: Vec<u8> = log
        .iter()
        .filter(|(f, _)| *f == Flow::ToClient)
        .flat_map(|(_, b)| b.clone())
        .collect();
    let (pos, first) = *frames(&log, Flow::ToClient)
        .iter()
        .find(|(_, h)| h.kind == kind::HEADERS)
        .unwrap();
    assert_eq!(bytes[pos as usize + HEADER_LEN] & 0xe0, 0x20, "{first:?}");
    let out = decode(&log);
    assert_eq!(out.len(), 12);
    for (i, x) in out.iter().enumerate() {
        assert_eq!(x.error, None);
        assert_eq!(x.request.target, format!("/v1/item/{i}"));
        assert_eq!(header(x, "x-tenant"), Some(&b"acme"[..]));
        let id = format!("req-{i}-{}", "z".repeat(i * 10));
        assert_eq!(header(x, "x-request-id"), Some(id.as_bytes()));
        let response = x.response.as_ref().unwrap();
        assert_eq!(
            response.headers.get("x-served-for"),
            Some(format!("item-{i}").as_bytes())
        );
        assert_eq!(response.headers.get("server"), Some(&b"test"[..]));
    }
}

#[tokio::test]
async fn frames_larger_than_16k_after_settings_max_frame_size() {
    let mut client_builder = client::Builder::new();
    client_builder
        .max_frame_size(1 << 20)
        .initial_window_size(1 << 21)
        .initial_connection_window_size(1 << 22);
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let sent = body.clone();
    let log = capture(
        client_builder,
        server::Builder::new(),
        |mut send| async move {
            let (_, received, _) = call(&mut send, get("https://h/large"), &[]).await;
            assert_eq!(received.len(), 200_000);
        },
        move |mut incoming| async move {
            while let Some((_, mut respond)) = incoming.recv().await {
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send.send_data(Bytes::from(sent.clone()), true).unwrap();
            }
        },
    )
    .await;
    let largest = frames(&log, Flow::ToClient)
        .iter()
        .map(|(_, h)| h.len)
        .max()
        .unwrap();
    assert!(largest > 16_384, "largest frame {largest}");
    let out = decode(&log);
    assert_eq!(out[0].error, None);
    assert_eq!(out[0].response.as_ref().unwrap().body.bytes, body);
    // A small limit keeps only the start of the big frame, and says so.
    let (out, _) = decode_with(&log, BodyLimits::per_body(1000));
    let kept = &out[0].response.as_ref().unwrap().body;
    assert_eq!(kept.bytes, body[..1000]);
    assert!(kept.truncated);
    assert_eq!(kept.wire_len, 200_000);
}

#[tokio::test]
async fn responses_pushed_before_their_requests_still_pair() {
    let log = streaming_log().await;
    let mut reordered: Vec<(Flow, Vec<u8>)> = log
        .iter()
        .filter(|(f, _)| *f == Flow::ToClient)
        .cloned()
        .collect();
    reordered.extend(log.iter().filter(|(f, _)| *f == Flow::ToServer).cloned());
    let out = decode(&reordered);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].error, None);
    assert_eq!(out[0].request.target, "/v1/messages");
    assert_eq!(out[0].response.as_ref().unwrap().body.bytes, sse_body());
}

/// Tiny deterministic generator for the robustness loops.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn feed_all(log: &[(Flow, Vec<u8>)], limits: BodyLimits) -> Vec<Exchange> {
    let mut decoder = H2Decoder::new(CONN, Role::Client, limits);
    let mut out = Vec::new();
    for (i, (flow, bytes)) in log.iter().enumerate() {
        decoder.push(*flow, i as u64, bytes, &mut out);
    }
    decoder.finish(&mut out);
    out
}

#[tokio::test]
async fn every_prefix_and_random_corruption_decode_without_panic() {
    let log = streaming_log().await;
    // Every prefix of the recording, cut anywhere: each request is reported at most once.
    let flat: Vec<(Flow, u8)> = log
        .iter()
        .flat_map(|(f, b)| b.iter().map(move |&x| (*f, x)))
        .collect();
    for cut in 0..=flat.len() {
        let prefix: Vec<(Flow, Vec<u8>)> = flat[..cut].iter().map(|&(f, b)| (f, vec![b])).collect();
        let out = feed_all(&prefix, BodyLimits::per_body(64));
        assert!(out.len() <= 1, "cut at {cut}: {out:#?}");
    }
    // Random bytes flipped, inserted or dropped, and pure garbage.
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..2000 {
        let mut mangled = log.clone();
        for _ in 0..1 + rng.below(4) {
            let entry = rng.below(mangled.len());
            let bytes = &mut mangled[entry].1;
            if bytes.is_empty() {
                continue;
            }
            let at = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[at] ^= 1 << rng.below(8),
                1 => bytes.insert(at, rng.next() as u8),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        feed_all(&mangled, BodyLimits::per_body(256));
    }
    for _ in 0..500 {
        let len = rng.below(4096);
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let with_preface = [&PREFACE[..], &garbage].concat();
        feed_all(
            &[(Flow::ToServer, with_preface), (Flow::ToClient, garbage)],
            LIMITS,
        );
    }
}
