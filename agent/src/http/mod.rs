//! HTTP: turns a connection's two reassembled byte streams into request/response exchanges.
//!
//! The probed process may be either end of the connection: a client writes requests and reads
//! responses, a server reads requests and writes responses. The first bytes tell which (a
//! request line or the HTTP/2 preface on one side, a status line on the other), and then the
//! connection is handed to the HTTP/1.1 or the HTTP/2 decoder. Both are incremental (bytes can
//! arrive one at a time) and bounded (bodies are capped, the cap is flagged), and neither
//! panics on malformed input: a broken exchange becomes an exchange with an error, so the
//! usage stage can still say that a request happened and could not be read.

mod body;
mod h1;
mod h2;
mod headers;
pub mod sse;
mod stage;

pub use body::{Body, BodyBudget, BodyLimits};
pub use h1::H1Decoder;
pub use h2::{H2Decoder, H2Stats};
pub use headers::Headers;
pub use stage::{HttpConfig, HttpStage};

use crate::streams::ConnId;

/// Methods a request line may start with: how a client's first bytes, or the next request
/// after bytes that could not be read, are recognised.
pub(crate) const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"PATCH ",
    b"HEAD ",
    b"OPTIONS ",
    b"CONNECT ",
    b"TRACE ",
];

/// Which end of the connection the probed process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Server,
}

/// Which way bytes flow, independent of which end was probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flow {
    /// Requests: client to server.
    ToServer,
    /// Responses: server to client.
    ToClient,
}

/// The HTTP version an exchange was carried by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HttpVersion {
    #[serde(rename = "1.0")]
    Http10,
    #[serde(rename = "1.1")]
    Http11,
    #[serde(rename = "2")]
    Http2,
}

/// A request as it went over the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: String,
    pub target: String,
    pub version: HttpVersion,
    pub headers: Headers,
    pub body: Body,
    /// Monotonic ns of the request's first and last byte.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Position of the request's first byte in its stream: with the connection, it names the
    /// request uniquely and stably (the usage record's id is derived from it).
    pub stream_pos: u64,
}

/// A response as it went over the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Headers,
    pub body: Body,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// One request and, when it came, its final response (interim 1xx responses are skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exchange {
    pub conn: ConnId,
    pub role: Role,
    pub request: HttpRequest,
    pub response: Option<HttpResponse>,
    /// Why the exchange is incomplete or could not be decoded, if it is.
    pub error: Option<HttpError>,
}

/// What went wrong with an exchange. The exchange is still reported, with what was read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The bytes are not HTTP the decoder understands.
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// Bytes of the message are missing from the capture.
    #[error("{len} bytes of the {what} are missing from the capture")]
    Gap { what: &'static str, len: u64 },
    /// The connection ended before the message did.
    #[error("the connection ended before the {what} was complete")]
    Incomplete { what: &'static str },
    /// The body was larger than the configured cap; only its start was kept.
    #[error("{what} body larger than the {limit} bytes kept")]
    BodyTooLarge { what: &'static str, limit: usize },
    /// The bodies of all connections held the agent's budget for them; this one was cut.
    #[error("{what} body cut: the bodies held for metering reached http.max_held_body_bytes ({limit} bytes)")]
    BodyBudget { what: &'static str, limit: usize },
    /// The body's content encoding could not be decoded.
    #[error("cannot decode {encoding} body: {detail}")]
    Encoding { encoding: String, detail: String },
}

/// A decoder of one connection's exchanges.
pub trait ConnectionDecoder {
    /// Feeds bytes of one flow, captured at `timestamp_ns`.
    fn push(&mut self, flow: Flow, timestamp_ns: u64, bytes: &[u8], out: &mut Vec<Exchange>);
    /// `len` bytes of one flow are missing here.
    fn gap(&mut self, flow: Flow, len: u64, out: &mut Vec<Exchange>);
    /// The connection ended: reports what is still open, incomplete.
    fn finish(&mut self, out: &mut Vec<Exchange>);
}

#[cfg(test)]
mod robustness_tests;
