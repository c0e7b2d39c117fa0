//! HTTP/1.x: keep-alive and pipelining, Content-Length, chunked transfer, bodies delimited by
//! the connection's end, `Expect: 100-continue` and other interim responses, HEAD, 204 and 304.
//!
//! Each flow has its own incremental parser; requests and responses are paired in order, as
//! HTTP/1.1 requires. A response's framing depends on its request (HEAD has no body), so the
//! methods of requests still waiting for a final response are kept in a queue. After a gap or
//! malformed bytes a flow looks for the next line that starts a message and carries on.

use std::collections::VecDeque;

mod flow;

use flow::{FlowParser, Framing, Message, MethodQueue, StartLine, State, MAX_QUEUED};

use super::{
    body::decode_message_body, Body, BodyLimits, ConnectionDecoder, Exchange, Flow, Headers,
    HttpError, HttpRequest, HttpResponse, Role,
};
use crate::streams::ConnId;

/// Decodes one HTTP/1.x connection.
pub struct H1Decoder {
    conn: ConnId,
    role: Role,
    limits: BodyLimits,
    requests: FlowParser,
    responses: FlowParser,
    methods: MethodQueue,
    done_requests: VecDeque<Message>,
    done_responses: VecDeque<Message>,
}

impl H1Decoder {
    /// `request_pos` and `response_pos` are the stream positions of the first bytes that will
    /// be fed for each flow (non-zero when the agent joined an open connection).
    pub fn new(
        conn: ConnId,
        role: Role,
        limits: BodyLimits,
        request_pos: u64,
        response_pos: u64,
    ) -> Self {
        Self {
            conn,
            role,
            limits,
            requests: FlowParser::new(Flow::ToServer, request_pos),
            responses: FlowParser::new(Flow::ToClient, response_pos),
            methods: VecDeque::new(),
            done_requests: VecDeque::new(),
            done_responses: VecDeque::new(),
        }
    }

    fn collect(&mut self, flow: Flow, done: Vec<Message>) {
        for message in done {
            match (flow, &message.start) {
                (Flow::ToServer, _) => self.done_requests.push_back(message),
                (Flow::ToClient, StartLine::Response { status: 101 }) => {
                    // Switching protocols (WebSocket, h2c): nothing after it is HTTP/1.
                    self.requests.state = State::Stopped;
                    self.responses.state = State::Stopped;
                    self.done_responses.push_back(message);
                }
                (Flow::ToClient, StartLine::Response { status }) if (100..200).contains(status) => {
                }
                (Flow::ToClient, _) => self.done_responses.push_back(message),
            }
        }
    }

    fn pair(&mut self, out: &mut Vec<Exchange>) {
        while !self.done_requests.is_empty() && !self.done_responses.is_empty() {
            let request = self.done_requests.pop_front().expect("checked");
            let response = self.done_responses.pop_front().expect("checked");
            out.push(self.exchange(request, Some(response)));
        }
        while self.done_requests.len() > MAX_QUEUED {
            let request = self.done_requests.pop_front().expect("non-empty");
            out.push(self.exchange(request, None));
        }
    }

    fn exchange(&self, request: Message, response: Option<Message>) -> Exchange {
        let mut error = request.error.clone();
        let request = into_request(request, &self.limits, &mut error);
        let response = match response {
            Some(response) => {
                if error.is_none() {
                    error = response.error.clone();
                }
                Some(into_response(response, &self.limits, &mut error))
            }
            None => {
                error.get_or_insert(HttpError::Incomplete { what: "response" });
                None
            }
        };
        Exchange {
            conn: self.conn,
            role: self.role,
            request,
            response,
            error,
        }
    }
}

impl ConnectionDecoder for H1Decoder {
    fn push(&mut self, flow: Flow, timestamp_ns: u64, bytes: &[u8], out: &mut Vec<Exchange>) {
        let mut done = Vec::new();
        let parser = match flow {
            Flow::ToServer => &mut self.requests,
            Flow::ToClient => &mut self.responses,
        };
        parser.push(
            bytes,
            timestamp_ns,
            &self.limits,
            &mut self.methods,
            &mut done,
        );
        self.collect(flow, done);
        self.pair(out);
    }

    fn gap(&mut self, flow: Flow, len: u64, out: &mut Vec<Exchange>) {
        let parser = match flow {
            Flow::ToServer => &mut self.requests,
            Flow::ToClient => &mut self.responses,
        };
        let ts = parser.current.as_ref().map_or(0, |m| m.end_ns);
        parser.gap(len, ts);
        let mut done = Vec::new();
        if let Some(message) = parser.finished_message(ts) {
            done.push(message);
        }
        self.collect(flow, done);
        self.pair(out);
    }

    fn finish(&mut self, out: &mut Vec<Exchange>) {
        for flow in [Flow::ToServer, Flow::ToClient] {
            let parser = match flow {
                Flow::ToServer => &mut self.requests,
                Flow::ToClient => &mut self.responses,
            };
            let Some(mut message) = parser.current.take() else {
                continue;
            };
            if parser.state != State::Body(Framing::UntilClose) {
                let what = parser.what();
                message.error.get_or_insert(HttpError::Incomplete { what });
            }
            self.collect(flow, vec![message]);
        }
        self.pair(out);
        while let Some(request) = self.done_requests.pop_front() {
            out.push(self.exchange(request, None));
        }
        // Responses without a request: the request was lost before the capture saw it.
        while let Some(response) = self.done_responses.pop_front() {
            let request = Message {
                start: StartLine::Request {
                    method: String::new(),
                    target: String::new(),
                },
                version: response.version,
                headers: Headers::default(),
                body: Body::default(),
                start_ns: response.start_ns,
                end_ns: response.start_ns,
                stream_pos: self.requests.pos,
                error: Some(HttpError::Incomplete { what: "request" }),
            };
            out.push(self.exchange(request, Some(response)));
        }
    }
}

fn into_request(
    message: Message,
    limits: &BodyLimits,
    error: &mut Option<HttpError>,
) -> HttpRequest {
    let (method, target) = match message.start {
        StartLine::Request { method, target } => (method, target),
        StartLine::Response { .. } => Default::default(),
    };
    let mut body = message.body;
    decode_message_body(&mut body, &message.headers, limits, error);
    HttpRequest {
        method,
        target,
        version: message.version,
        headers: message.headers,
        body,
        start_ns: message.start_ns,
        end_ns: message.end_ns,
        stream_pos: message.stream_pos,
    }
}

fn into_response(
    message: Message,
    limits: &BodyLimits,
    error: &mut Option<HttpError>,
) -> HttpResponse {
    let status = match message.start {
        StartLine::Response { status } => status,
        StartLine::Request { .. } => 0,
    };
    let mut body = message.body;
    decode_message_body(&mut body, &message.headers, limits, error);
    HttpResponse {
        status,
        headers: message.headers,
        body,
        start_ns: message.start_ns,
        end_ns: message.end_ns,
    }
}

#[cfg(test)]
#[path = "h1_tests.rs"]
mod tests;
