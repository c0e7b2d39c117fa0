//! The parser of one direction of an HTTP/1.x connection: start line and headers, then the
//! body as its framing says, then the next message. Incremental: it keeps what it could not
//! use yet and resumes when more bytes come, with the same result however they are split.

use std::collections::VecDeque;

use super::super::{Body, BodyLimits, Flow, Headers, HttpError, HttpVersion, METHODS};
/// Largest request or status line plus headers accepted.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in one message.
pub(super) const MAX_HEADERS: usize = 128;
/// Most requests waiting for their responses (pipelining depth).
pub(super) const MAX_QUEUED: usize = 64;

/// The start line of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StartLine {
    Request { method: String, target: String },
    Response { status: u16 },
}

/// A message being read or read.
#[derive(Clone, Debug)]
pub(super) struct Message {
    pub(super) start: StartLine,
    pub(super) version: HttpVersion,
    pub(super) headers: Headers,
    pub(super) body: Body,
    pub(super) start_ns: u64,
    pub(super) end_ns: u64,
    pub(super) stream_pos: u64,
    pub(super) error: Option<HttpError>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked(Chunk),
    UntilClose,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    Head,
    Body(Framing),
    /// Looking for the start of the next message after a gap or malformed bytes.
    Resync,
    /// Nothing more is read on this flow (a protocol switch).
    Stopped,
}

/// One direction's parser.
pub(super) struct FlowParser {
    pub(super) flow: Flow,
    pub(super) buf: Vec<u8>,
    /// Stream position of `buf[0]`.
    pub(super) pos: u64,
    /// How far `buf` was searched for the end of a head already.
    pub(super) scanned: usize,
    pub(super) state: State,
    pub(super) current: Option<Message>,
    /// The current message failed: once it is reported, look for the next message start.
    pub(super) resync_pending: bool,
    /// While resyncing: the next byte starts a line.
    pub(super) line_start: bool,
}

/// Methods of the requests still waiting for their final response, oldest first.
pub(super) type MethodQueue = VecDeque<String>;

impl FlowParser {
    pub(super) fn new(flow: Flow, start_pos: u64) -> Self {
        Self {
            flow,
            buf: Vec::new(),
            pos: start_pos,
            scanned: 0,
            state: State::Head,
            current: None,
            resync_pending: false,
            line_start: true,
        }
    }

    pub(super) fn what(&self) -> &'static str {
        match self.flow {
            Flow::ToServer => "request",
            Flow::ToClient => "response",
        }
    }

    /// Parses what it can, pushing finished messages to `done`.
    pub(super) fn push(
        &mut self,
        bytes: &[u8],
        ts: u64,
        limits: &BodyLimits,
        methods: &mut MethodQueue,
        done: &mut Vec<Message>,
    ) {
        if self.state == State::Stopped {
            self.pos += bytes.len() as u64;
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.extend_from_slice(bytes);
        let mut consumed = 0;
        loop {
            let rest = &buf[consumed..];
            let rest_pos = self.pos + consumed as u64;
            let before = self.state;
            let used = match self.state {
                State::Stopped => rest.len(),
                State::Resync => self.resync(rest),
                State::Head => match self.parse_head(rest, rest_pos, ts, methods) {
                    Some(used) => used,
                    None => break,
                },
                State::Body(framing) => self.body(framing, rest, ts, limits),
            };
            consumed += used;
            let finished = self.finished_message(ts);
            let progressed = used > 0 || finished.is_some() || self.state != before;
            done.extend(finished);
            if !progressed || consumed == buf.len() {
                break;
            }
        }
        buf.drain(..consumed);
        self.buf = buf;
        self.pos += consumed as u64;
        self.scanned = self.scanned.saturating_sub(consumed);
    }

    /// The current message, when its body just ended.
    pub(super) fn finished_message(&mut self, ts: u64) -> Option<Message> {
        if self.state != State::Body(Framing::None) {
            return None;
        }
        self.state = if std::mem::take(&mut self.resync_pending) {
            self.line_start = true;
            State::Resync
        } else {
            State::Head
        };
        let mut message = self.current.take()?;
        message.end_ns = ts;
        Some(message)
    }

    /// Reads a start line and headers; `None` until they are all there.
    pub(super) fn parse_head(
        &mut self,
        rest: &[u8],
        rest_pos: u64,
        ts: u64,
        methods: &mut MethodQueue,
    ) -> Option<usize> {
        // Tolerate blank lines between messages (RFC 9112 2.2).
        let blank = rest
            .iter()
            .take_while(|&&b| b == b'\r' || b == b'\n')
            .count();
        if blank > 0 {
            self.scanned = 0;
            return Some(blank);
        }
        let from = self.scanned.saturating_sub(3);
        let Some(end) = find(&rest[from..], b"\r\n\r\n").map(|i| from + i + 4) else {
            self.scanned = rest.len();
            if rest.len() > MAX_HEAD_BYTES {
                self.malformed(ts, rest_pos, "head larger than 64 KiB".into());
                return Some(rest.len());
            }
            return None;
        };
        self.scanned = 0;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let parsed = match self.flow {
            Flow::ToServer => {
                let mut request = httparse::Request::new(&mut headers);
                request.parse(&rest[..end]).map(|_| {
                    let start = StartLine::Request {
                        method: request.method.unwrap_or_default().to_string(),
                        target: request.path.unwrap_or_default().to_string(),
                    };
                    (start, request.version, request.headers.to_vec())
                })
            }
            Flow::ToClient => {
                let mut response = httparse::Response::new(&mut headers);
                response.parse(&rest[..end]).map(|_| {
                    let start = StartLine::Response {
                        status: response.code.unwrap_or_default(),
                    };
                    (start, response.version, response.headers.to_vec())
                })
            }
        };
        let (start, version, raw_headers) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                self.malformed(ts, rest_pos, error.to_string());
                return Some(end);
            }
        };
        let mut headers = Headers::default();
        for h in &raw_headers {
            headers.push(h.name, h.value);
        }
        let version = if version == Some(0) {
            HttpVersion::Http10
        } else {
            HttpVersion::Http11
        };
        let framing = match framing(&start, version, &headers, methods) {
            Ok(framing) => framing,
            Err(detail) => {
                self.malformed(ts, rest_pos, detail);
                return Some(end);
            }
        };
        self.current = Some(Message {
            start,
            version,
            headers,
            body: Body::default(),
            start_ns: ts,
            end_ns: ts,
            stream_pos: rest_pos,
            error: None,
        });
        self.state = State::Body(framing);
        Some(end)
    }

    pub(super) fn body(
        &mut self,
        framing: Framing,
        rest: &[u8],
        ts: u64,
        limits: &BodyLimits,
    ) -> usize {
        let Some(message) = self.current.as_mut() else {
            self.state = State::Head;
            return 0;
        };
        match framing {
            Framing::None => 0,
            Framing::UntilClose => {
                message.body.append(rest, ts, limits);
                rest.len()
            }
            Framing::Length(left) => {
                let n = (left as usize).min(rest.len());
                message.body.append(&rest[..n], ts, limits);
                let left = left - n as u64;
                self.state = State::Body(if left == 0 {
                    Framing::None
                } else {
                    Framing::Length(left)
                });
                n
            }
            Framing::Chunked(chunk) => self.chunk(chunk, rest, ts, limits),
        }
    }

    pub(super) fn chunk(
        &mut self,
        chunk: Chunk,
        rest: &[u8],
        ts: u64,
        limits: &BodyLimits,
    ) -> usize {
        let message = self.current.as_mut().expect("checked by the caller");
        let (used, next) = match chunk {
            Chunk::Size => match httparse::parse_chunk_size(rest) {
                Ok(httparse::Status::Complete((used, 0))) => {
                    (used, Framing::Chunked(Chunk::Trailers))
                }
                Ok(httparse::Status::Complete((used, size))) => {
                    (used, Framing::Chunked(Chunk::Data(size)))
                }
                Ok(httparse::Status::Partial) if rest.len() < 1024 => return 0,
                _ => {
                    self.malformed(ts, self.pos, "bad chunk size line".into());
                    return rest.len().min(1);
                }
            },
            Chunk::Data(left) => {
                let n = (left as usize).min(rest.len());
                message.body.append(&rest[..n], ts, limits);
                let left = left - n as u64;
                let next = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                (n, Framing::Chunked(next))
            }
            Chunk::DataEnd => {
                if rest.len() < 2 {
                    return 0;
                }
                if &rest[..2] != b"\r\n" {
                    self.malformed(ts, self.pos, "chunk data not followed by CRLF".into());
                    return 0;
                }
                (2, Framing::Chunked(Chunk::Size))
            }
            Chunk::Trailers => {
                // Trailer fields, then an empty line.
                if rest.starts_with(b"\r\n") {
                    (2, Framing::None)
                } else if let Some(i) = find(rest, b"\r\n\r\n") {
                    (i + 4, Framing::None)
                } else if rest.len() > MAX_HEAD_BYTES {
                    self.malformed(ts, self.pos, "trailers larger than 64 KiB".into());
                    return rest.len();
                } else {
                    return 0;
                }
            }
        };
        self.state = State::Body(next);
        used
    }

    /// Marks the current message broken (or starts an error-only one) and resyncs.
    /// `pos` is where a message that failed before it started would have started.
    pub(super) fn malformed(&mut self, ts: u64, pos: u64, detail: String) {
        let error = HttpError::Malformed {
            what: self.what(),
            detail,
        };
        self.fail(ts, pos, error);
    }

    pub(super) fn fail(&mut self, ts: u64, pos: u64, error: HttpError) {
        if let Some(message) = self.current.as_mut() {
            message.error.get_or_insert(error);
            message.end_ns = ts;
            // Reported as it is; `finished_message` hands it over.
            self.state = State::Body(Framing::None);
        } else {
            self.current = Some(Message {
                start: match self.flow {
                    Flow::ToServer => StartLine::Request {
                        method: String::new(),
                        target: String::new(),
                    },
                    Flow::ToClient => StartLine::Response { status: 0 },
                },
                version: HttpVersion::Http11,
                headers: Headers::default(),
                body: Body::default(),
                start_ns: ts,
                end_ns: ts,
                stream_pos: pos,
                error: Some(error),
            });
            self.state = State::Body(Framing::None);
        }
        self.resync_pending = true;
    }

    /// Skips to the next line that starts a message of this flow; returns the bytes dropped.
    /// Whether a position starts a line is tracked across calls, so where the bytes were
    /// split never changes what is found.
    pub(super) fn resync(&mut self, rest: &[u8]) -> usize {
        let starts: &[&[u8]] = match self.flow {
            Flow::ToClient => &[b"HTTP/1."],
            Flow::ToServer => &METHODS,
        };
        for i in 0..rest.len() {
            let line_start = if i == 0 {
                self.line_start
            } else {
                rest[i - 1] == b'\n'
            };
            if !line_start {
                continue;
            }
            let here = &rest[i..];
            if starts.iter().any(|s| here.starts_with(s)) {
                self.state = State::Head;
                self.line_start = true;
                return i;
            }
            if starts.iter().any(|s| s.starts_with(here)) {
                // Could still be a start line: wait for more bytes.
                self.line_start = true;
                return i;
            }
        }
        if let Some(&last) = rest.last() {
            self.line_start = last == b'\n';
        }
        rest.len()
    }

    /// `len` bytes of this flow are missing. Inside a body of known length the framing
    /// survives (the body is marked truncated); anywhere else the message is reported broken.
    pub(super) fn gap(&mut self, len: u64, ts: u64) {
        self.pos += self.buf.len() as u64 + len;
        let buffered = std::mem::take(&mut self.buf);
        self.scanned = 0;
        let state = self.state;
        let skip = |left: u64| -> Option<u64> {
            let total = buffered.len() as u64 + len;
            (total <= left).then(|| left - total)
        };
        let message = self.current.as_mut();
        match (state, message) {
            (State::Body(Framing::UntilClose), Some(m)) => {
                m.body.truncated = true;
                return;
            }
            (State::Body(Framing::Length(left)), Some(m)) if buffered.is_empty() => {
                if let Some(left) = skip(left) {
                    m.body.truncated = true;
                    m.body.wire_len += len;
                    self.state = State::Body(if left == 0 {
                        Framing::None
                    } else {
                        Framing::Length(left)
                    });
                    return;
                }
            }
            (State::Body(Framing::Chunked(Chunk::Data(left))), Some(m)) if buffered.is_empty() => {
                if let Some(left) = skip(left) {
                    m.body.truncated = true;
                    m.body.wire_len += len;
                    let next = if left == 0 {
                        Chunk::DataEnd
                    } else {
                        Chunk::Data(left)
                    };
                    self.state = State::Body(Framing::Chunked(next));
                    return;
                }
            }
            (State::Stopped, _) => return,
            _ => {}
        }
        if self.current.is_some() || !buffered.is_empty() {
            let what = self.what();
            let pos = self.pos;
            self.fail(ts, pos, HttpError::Gap { what, len });
        } else {
            self.state = State::Resync;
            self.line_start = true;
        }
    }
}

/// How the body of a message that starts with `start` and `headers` is delimited.
pub(super) fn framing(
    start: &StartLine,
    version: HttpVersion,
    headers: &Headers,
    methods: &mut MethodQueue,
) -> Result<Framing, String> {
    let chunked = headers.has_token("transfer-encoding", "chunked");
    let length = content_length(headers)?;
    match start {
        StartLine::Request { method, .. } => {
            if methods.len() == MAX_QUEUED {
                methods.pop_front();
            }
            methods.push_back(method.clone());
            if chunked {
                Ok(Framing::Chunked(Chunk::Size))
            } else if headers.get("transfer-encoding").is_some() {
                Err("request with a transfer coding other than chunked".into())
            } else {
                Ok(length.map_or(Framing::None, |n| {
                    if n == 0 {
                        Framing::None
                    } else {
                        Framing::Length(n)
                    }
                }))
            }
        }
        StartLine::Response { status } => {
            if (100..200).contains(status) {
                // Interim: the request still waits for its final response.
                return Ok(Framing::None);
            }
            let method = methods.pop_front();
            if method.as_deref() == Some("HEAD") || *status == 204 || *status == 304 {
                return Ok(Framing::None);
            }
            if chunked && version != HttpVersion::Http10 {
                Ok(Framing::Chunked(Chunk::Size))
            } else if let (Some(n), false) = (length, headers.get("transfer-encoding").is_some()) {
                Ok(if n == 0 {
                    Framing::None
                } else {
                    Framing::Length(n)
                })
            } else {
                Ok(Framing::UntilClose)
            }
        }
    }
}

/// The Content-Length, if any; differing values are an error (RFC 9110 8.6).
pub(super) fn content_length(headers: &Headers) -> Result<Option<u64>, String> {
    let mut found: Option<u64> = None;
    for (name, value) in headers.iter() {
        if name != "content-length" {
            continue;
        }
        for part in std::str::from_utf8(value).unwrap_or("x").split(',') {
            let n: u64 = part.trim().parse().map_err(|_| {
                format!(
                    "invalid Content-Length {:?}",
                    String::from_utf8_lossy(value)
                )
            })?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting Content-Length values".into());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
