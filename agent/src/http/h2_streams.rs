//! The streams of an HTTP/2 connection: requests and responses put together from their header
//! blocks and DATA frames, matched by stream id, and reported as exchanges when both ends are
//! done, when the stream is reset or refused, or when decoding cannot go on.

use super::fields::Fields;
use super::frame::{flags, Frame};
use super::{malformed, unpad, Block, H2Decoder, MAX_OPEN_STREAMS};
use crate::http::{
    body::decode_message_body, Body, Exchange, Flow, Headers, HttpError, HttpRequest, HttpResponse,
    HttpVersion,
};

/// A stream's messages so far.
#[derive(Default)]
pub(super) struct Stream {
    /// `None` while only the response was seen (pushes of the two flows out of order).
    request: Option<HttpRequest>,
    request_ended: bool,
    /// The final response, once its HEADERS came.
    response: Option<HttpResponse>,
    response_ended: bool,
    /// Reset (RST_STREAM) or refused (GOAWAY): reported as soon as its request is known.
    reset: bool,
    error: Option<HttpError>,
}

impl Stream {
    fn done(&self) -> bool {
        self.request.is_some()
            && (self.error.is_some() || self.reset || (self.request_ended && self.response_ended))
    }
}

impl H2Decoder {
    pub(super) fn on_request_headers(
        &mut self,
        block: Block,
        end_ns: u64,
        fields: Result<Fields, String>,
        out: &mut Vec<Exchange>,
    ) -> Result<(), HttpError> {
        let id = block.stream;
        if id.is_multiple_of(2) {
            return Err(malformed("request HEADERS on a server-initiated stream"));
        }
        if id > self.last_request {
            self.last_request = id;
            let (request, error) = new_request(&block, end_ns, fields);
            let stream = self.open(id, out);
            stream.request = Some(request);
            stream.request_ended = block.end_stream;
            if let Some(error) = error {
                stream.error.get_or_insert(error);
            }
        } else {
            // Trailers; or a block of a stream already reported, ignored.
            let Some(stream) = self.streams.get_mut(&id) else {
                return Ok(());
            };
            let Some(request) = stream.request.as_mut() else {
                return Ok(());
            };
            if stream.request_ended {
                return Ok(());
            }
            match trailers(fields, block.end_stream) {
                Ok(fields) => fields.append_to(&mut request.headers),
                Err(detail) => {
                    stream.error.get_or_insert(HttpError::Malformed {
                        what: "request trailers",
                        detail,
                    });
                }
            }
            request.end_ns = end_ns;
            stream.request_ended = true;
        }
        self.settle(id, out);
        Ok(())
    }

    pub(super) fn on_response_headers(
        &mut self,
        block: Block,
        end_ns: u64,
        fields: Result<Fields, String>,
        out: &mut Vec<Exchange>,
    ) {
        let id = block.stream;
        if id.is_multiple_of(2) {
            // A pushed response: its request was a PUSH_PROMISE, not reported.
            return;
        }
        if !self.streams.contains_key(&id) {
            if id <= self.last_request {
                return; // a stream already reported
            }
            // The response's push came before the request's: wait for the request.
            self.open(id, out);
        }
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        let error = |detail| HttpError::Malformed {
            what: "response headers",
            detail,
        };
        match (&mut stream.response, fields) {
            (Some(_), _) if stream.response_ended => return,
            (Some(response), fields) => match trailers(fields, block.end_stream) {
                Ok(fields) => {
                    fields.append_to(&mut response.headers);
                    response.end_ns = end_ns;
                }
                Err(detail) => {
                    stream.error.get_or_insert(error(detail));
                }
            },
            (None, Ok(fields)) => match fields.status() {
                Ok(100..=199) if block.end_stream => {
                    stream
                        .error
                        .get_or_insert(error("an interim response ends the stream".into()));
                }
                Ok(100..=199) => {}
                Ok(status) => {
                    stream.response = Some(HttpResponse {
                        status,
                        headers: fields.headers(),
                        body: Body::default(),
                        start_ns: block.start_ns,
                        end_ns,
                    });
                }
                Err(detail) => {
                    stream.error.get_or_insert(error(detail));
                }
            },
            (_, Err(detail)) => {
                stream.error.get_or_insert(error(detail));
            }
        }
        stream.response_ended |= block.end_stream && stream.response.is_some();
        self.settle(id, out);
    }

    pub(super) fn on_data(
        &mut self,
        flow: Flow,
        frame: &Frame,
        out: &mut Vec<Exchange>,
    ) -> Result<(), HttpError> {
        let h = frame.header;
        let data = unpad(frame, 0)?;
        // The data that was not kept (over the body limit).
        let padding = match h.has(flags::PADDED) {
            true => 1 + frame.payload[0] as usize,
            false => 0,
        };
        let dropped = (h.len as usize - padding).saturating_sub(data.len());
        let end_stream = h.has(flags::END_STREAM);
        let limits = &self.limits;
        let Some(stream) = self.streams.get_mut(&h.stream) else {
            return Ok(()); // a stream already reported
        };
        let append = |body: &mut Body| {
            body.append(data, frame.end_ns, limits);
            if dropped > 0 {
                body.wire_len += dropped as u64;
                body.truncated = true;
            }
        };
        match flow {
            Flow::ToServer => match &mut stream.request {
                Some(request) if !stream.request_ended => {
                    append(&mut request.body);
                    request.end_ns = frame.end_ns;
                    stream.request_ended = end_stream;
                }
                _ => {}
            },
            Flow::ToClient => match &mut stream.response {
                Some(response) if !stream.response_ended => {
                    append(&mut response.body);
                    response.end_ns = frame.end_ns;
                    stream.response_ended = end_stream;
                }
                Some(_) => {}
                None => {
                    stream.error.get_or_insert(HttpError::Malformed {
                        what: "response",
                        detail: "DATA before the response's HEADERS".into(),
                    });
                }
            },
        }
        self.settle(h.stream, out);
        Ok(())
    }

    pub(super) fn on_reset(&mut self, id: u32, out: &mut Vec<Exchange>) {
        let Some(stream) = self.streams.get_mut(&id) else {
            return;
        };
        self.stats.reset_streams += 1;
        stream.reset = true;
        if !stream.response_ended {
            stream
                .error
                .get_or_insert(HttpError::Incomplete { what: "response" });
        }
        self.settle(id, out);
    }

    /// The server will not process streams above `last`.
    pub(super) fn on_goaway(&mut self, last: u32, out: &mut Vec<Exchange>) {
        let refused: Vec<u32> = self.streams.range(last + 1..).map(|(&id, _)| id).collect();
        for id in refused {
            if let Some(stream) = self.streams.get_mut(&id) {
                if !stream.response_ended {
                    stream
                        .error
                        .get_or_insert(HttpError::Incomplete { what: "response" });
                }
                stream.reset = true;
            }
            self.settle(id, out);
        }
    }

    /// The stream `id`, opened if needed, the oldest one reported first when too many are open.
    fn open(&mut self, id: u32, out: &mut Vec<Exchange>) -> &mut Stream {
        while self.streams.len() >= MAX_OPEN_STREAMS && !self.streams.contains_key(&id) {
            let Some((_, stream)) = self.streams.pop_first() else {
                break;
            };
            self.stats.evicted_streams += 1;
            self.report_incomplete(stream, None, out);
        }
        self.streams.entry(id).or_default()
    }

    /// Reports stream `id` if it is done.
    fn settle(&mut self, id: u32, out: &mut Vec<Exchange>) {
        if !self.streams.get(&id).is_some_and(Stream::done) {
            return;
        }
        if let Some(stream) = self.streams.remove(&id) {
            if let Some(request) = stream.request {
                out.push(self.exchange(request, stream.response, stream.error));
            }
        }
    }

    /// Reports a stream that will not complete, with its own error or else `error`, or else
    /// what is missing of it.
    pub(super) fn report_incomplete(
        &mut self,
        stream: Stream,
        error: Option<&HttpError>,
        out: &mut Vec<Exchange>,
    ) {
        let Some(request) = stream.request else {
            self.stats.orphan_streams += 1;
            return;
        };
        let missing = if !stream.request_ended {
            Some(HttpError::Incomplete { what: "request" })
        } else if !stream.response_ended {
            Some(HttpError::Incomplete { what: "response" })
        } else {
            None
        };
        let error = stream.error.or_else(|| error.cloned()).or(missing);
        out.push(self.exchange(request, stream.response, error));
    }

    /// Decoding cannot go on: reports every open stream with `error` (one exchange with an
    /// empty request when none is open and requests may have been lost) and stops.
    pub(super) fn fail(&mut self, error: HttpError, lost_requests: bool, out: &mut Vec<Exchange>) {
        self.stopped = true;
        let before = out.len();
        for (_, stream) in std::mem::take(&mut self.streams) {
            self.report_incomplete(stream, Some(&error), out);
        }
        if out.len() == before && lost_requests {
            let request = HttpRequest {
                method: String::new(),
                target: String::new(),
                version: HttpVersion::Http2,
                headers: Headers::default(),
                body: Body::default(),
                start_ns: self.last_ns,
                end_ns: self.last_ns,
                stream_pos: self.to_server.reader.pos(),
            };
            out.push(self.exchange(request, None, Some(error)));
        }
    }

    fn exchange(
        &self,
        mut request: HttpRequest,
        mut response: Option<HttpResponse>,
        mut error: Option<HttpError>,
    ) -> Exchange {
        decode_message_body(
            &mut request.body,
            &request.headers,
            &self.limits,
            &mut error,
        );
        if let Some(response) = response.as_mut() {
            decode_message_body(
                &mut response.body,
                &response.headers,
                &self.limits,
                &mut error,
            );
        }
        Exchange {
            conn: self.conn,
            role: self.role,
            request,
            response,
            error,
        }
    }
}

/// Trailers: no pseudo-headers, and they end the stream (so they come once).
fn trailers(fields: Result<Fields, String>, end_stream: bool) -> Result<Fields, String> {
    let fields = fields?;
    fields.check_trailers()?;
    if !end_stream {
        return Err("trailers without END_STREAM".into());
    }
    Ok(fields)
}

/// A request from its header block; what is wrong with the fields is its error.
fn new_request(
    block: &Block,
    end_ns: u64,
    fields: Result<Fields, String>,
) -> (HttpRequest, Option<HttpError>) {
    let (method, target, headers, error) = match fields {
        Ok(fields) => match fields.request_line() {
            Ok((method, target)) => (method, target, fields.headers(), None),
            Err(detail) => (String::new(), String::new(), fields.headers(), Some(detail)),
        },
        Err(detail) => (
            String::new(),
            String::new(),
            Headers::default(),
            Some(detail),
        ),
    };
    let request = HttpRequest {
        method,
        target,
        version: HttpVersion::Http2,
        headers,
        body: Body::default(),
        start_ns: block.start_ns,
        end_ns,
        stream_pos: block.pos,
    };
    let error = error.map(|detail| HttpError::Malformed {
        what: "request headers",
        detail,
    });
    (request, error)
}
