//! HTTP/2 (RFC 9113) with HPACK (RFC 7541): h2 negotiated by ALPN under TLS, or h2c with prior
//! knowledge. The client preface, then frames on both flows; streams are matched by id.
//!
//! A request is the HEADERS (+ CONTINUATION) on the flow to the server and its DATA until
//! END_STREAM; a response the same on the flow to the client, interim 1xx responses skipped,
//! trailers appended to the headers. An exchange is reported when both ends of a stream are
//! done, when the stream is reset or refused by GOAWAY, or when the connection ends.
//!
//! HPACK keeps state across every header block of a flow, PUSH_PROMISE included, so every
//! block is decoded in order and one missing byte makes the rest unreadable: after a gap or
//! malformed framing the open streams are reported with the error and the connection is no
//! longer decoded (the bytes are counted in [`H2Stats`]). A malformed field section only
//! fails its own stream. Memory is bounded by the open stream cap, the body limit, the
//! header block cap and the HPACK table cap, whatever the peers announce.

#[path = "h2_fields.rs"]
mod fields;
#[path = "h2_frame.rs"]
mod frame;
#[path = "h2_streams.rs"]
mod streams;

use std::borrow::Cow;
use std::collections::BTreeMap;

use loona_hpack::Decoder as Hpack;

use self::fields::Fields;
use self::frame::{flags, kind, Frame, FrameReader, MAX_BLOCK_FRAME, MAX_MAX_FRAME_SIZE};
use self::streams::Stream;
use super::{BodyLimits, ConnectionDecoder, Exchange, Flow, HttpError, Role};
use crate::streams::ConnId;

/// Most streams open at once; when one more opens the oldest is reported incomplete.
const MAX_OPEN_STREAMS: usize = 1024;
/// Largest decoded field section kept (RFC 7541 sizes: name + value + 32 per field); a larger
/// one fails its stream (it is still decoded, so HPACK stays in step).
const MAX_FIELD_SECTION: usize = 256 * 1024;
/// SETTINGS_HEADER_TABLE_SIZE until a peer changes it.
const DEFAULT_TABLE_SIZE: usize = 4096;
/// Largest HPACK dynamic table followed; a table size update over it is malformed.
const MAX_TABLE_SIZE: usize = 1 << 20;

/// What an HTTP/2 connection's decoding left out, for the internal events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Stats {
    /// Bytes pushed after decoding stopped (a gap or malformed input), not read.
    pub ignored_bytes: u64,
    /// Streams reported incomplete early, because too many were open.
    pub evicted_streams: u64,
    /// Streams dropped without a report because their request was never seen.
    pub orphan_streams: u64,
    /// Streams reset by either end (RST_STREAM).
    pub reset_streams: u64,
    /// Frames of unknown types, skipped.
    pub unknown_frames: u64,
}

/// One direction of the connection.
struct FlowState {
    reader: FrameReader,
    /// Decodes the header blocks this flow carries.
    hpack: Hpack<'static>,
    /// Largest dynamic table size the flow's encoder may switch to.
    table_size_allowed: usize,
    settings_seen: bool,
    /// A header block waiting for its CONTINUATION frames.
    block: Option<Block>,
}

impl FlowState {
    fn new(flow: Flow, limits: &BodyLimits) -> Self {
        let mut hpack = Hpack::new();
        hpack.set_max_allowed_table_size(DEFAULT_TABLE_SIZE);
        Self {
            reader: FrameReader::new(flow, limits.max_bytes),
            hpack,
            table_size_allowed: DEFAULT_TABLE_SIZE,
            settings_seen: false,
            block: None,
        }
    }
}

/// A header block (HEADERS or PUSH_PROMISE, then CONTINUATIONs).
struct Block {
    stream: u32,
    end_stream: bool,
    promise: bool,
    fragments: Vec<u8>,
    start_ns: u64,
    pos: u64,
}

/// Decodes one HTTP/2 connection.
pub struct H2Decoder {
    conn: ConnId,
    role: Role,
    limits: BodyLimits,
    to_server: FlowState,
    to_client: FlowState,
    streams: BTreeMap<u32, Stream>,
    /// Highest stream id whose request was seen: lower ones no longer open are reported.
    last_request: u32,
    /// Set after a gap, malformed framing or `finish`: nothing more is decoded.
    stopped: bool,
    last_ns: u64,
    stats: H2Stats,
}

impl H2Decoder {
    pub fn new(conn: ConnId, role: Role, limits: BodyLimits) -> Self {
        Self {
            conn,
            role,
            to_server: FlowState::new(Flow::ToServer, &limits),
            to_client: FlowState::new(Flow::ToClient, &limits),
            limits,
            streams: BTreeMap::new(),
            last_request: 0,
            stopped: false,
            last_ns: 0,
            stats: H2Stats::default(),
        }
    }

    /// Numbers the flows' bytes from these positions (where the captured streams start), so
    /// that `stream_pos` is a position in the stream as the capture numbers it. Call before
    /// the first push.
    pub fn with_start_pos(mut self, to_server: u64, to_client: u64) -> Self {
        self.to_server.reader.set_pos(to_server);
        self.to_client.reader.set_pos(to_client);
        self
    }

    pub fn stats(&self) -> H2Stats {
        self.stats
    }

    /// Whether decoding stopped (after a gap, malformed input or `finish`).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn flow(&mut self, flow: Flow) -> &mut FlowState {
        match flow {
            Flow::ToServer => &mut self.to_server,
            Flow::ToClient => &mut self.to_client,
        }
    }

    fn on_frame(
        &mut self,
        flow: Flow,
        frame: &Frame,
        out: &mut Vec<Exchange>,
    ) -> Result<(), HttpError> {
        let h = frame.header;
        let state = self.flow(flow);
        if !state.settings_seen {
            if h.kind != kind::SETTINGS || h.has(flags::ACK) {
                return Err(malformed("the first frame is not SETTINGS"));
            }
            state.settings_seen = true;
        }
        if let Some(block) = &state.block {
            if h.kind != kind::CONTINUATION || h.stream != block.stream {
                return Err(malformed("a header block is not continued by CONTINUATION"));
            }
        }
        let on_stream = h.stream != 0;
        match h.kind {
            kind::DATA if on_stream => self.on_data(flow, frame, out),
            kind::HEADERS if on_stream => {
                let skip = if h.has(flags::PRIORITY) { 5 } else { 0 };
                let fragment = unpad(frame, skip)?;
                let block = Block {
                    stream: h.stream,
                    end_stream: h.has(flags::END_STREAM),
                    promise: false,
                    fragments: fragment.to_vec(),
                    start_ns: frame.start_ns,
                    pos: frame.pos,
                };
                self.on_block(flow, block, frame, out)
            }
            kind::PUSH_PROMISE if on_stream => {
                let block = Block {
                    stream: h.stream,
                    end_stream: false,
                    promise: true,
                    fragments: unpad(frame, 4)?.to_vec(),
                    start_ns: frame.start_ns,
                    pos: frame.pos,
                };
                self.on_block(flow, block, frame, out)
            }
            kind::CONTINUATION if on_stream => {
                let Some(mut block) = self.flow(flow).block.take() else {
                    return Err(malformed("CONTINUATION without a header block"));
                };
                if block.fragments.len() + frame.payload.len() > MAX_BLOCK_FRAME {
                    return Err(malformed("a header block over 256 KiB"));
                }
                block.fragments.extend_from_slice(&frame.payload);
                self.on_block(flow, block, frame, out)
            }
            kind::RST_STREAM if on_stream && h.len == 4 => {
                self.on_reset(h.stream, out);
                Ok(())
            }
            kind::GOAWAY if !on_stream && h.len >= 8 => {
                let last = u32::from_be_bytes(word(&frame.payload)) & 0x7fff_ffff;
                if flow == Flow::ToClient {
                    self.on_goaway(last, out);
                }
                Ok(())
            }
            kind::SETTINGS if !on_stream => self.on_settings(flow, frame),
            kind::PRIORITY if on_stream && h.len == 5 => Ok(()),
            kind::PING if !on_stream && h.len == 8 => Ok(()),
            kind::WINDOW_UPDATE if h.len == 4 => Ok(()),
            kind::DATA
            | kind::HEADERS
            | kind::PUSH_PROMISE
            | kind::CONTINUATION
            | kind::RST_STREAM
            | kind::GOAWAY
            | kind::SETTINGS
            | kind::PRIORITY
            | kind::PING
            | kind::WINDOW_UPDATE => Err(malformed(&format!(
                "frame of type {} with {} bytes on stream {}",
                h.kind, h.len, h.stream
            ))),
            _ => {
                self.stats.unknown_frames += 1;
                Ok(())
            }
        }
    }

    fn on_settings(&mut self, flow: Flow, frame: &Frame) -> Result<(), HttpError> {
        let h = frame.header;
        if h.has(flags::ACK) {
            return match h.len {
                0 => Ok(()),
                _ => Err(malformed("SETTINGS acknowledgement with a payload")),
            };
        }
        if !h.len.is_multiple_of(6) {
            return Err(malformed("SETTINGS length is not a multiple of 6"));
        }
        // A peer's settings bind what the other flow sends. Values only ever grow here: the
        // sender may use a larger one until it saw the acknowledgement of a smaller one.
        let other = self.flow(match flow {
            Flow::ToServer => Flow::ToClient,
            Flow::ToClient => Flow::ToServer,
        });
        for setting in frame.payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes(word(&setting[2..]));
            match id {
                // SETTINGS_HEADER_TABLE_SIZE
                0x1 => {
                    let allowed = (value as usize).min(MAX_TABLE_SIZE);
                    if allowed > other.table_size_allowed {
                        other.table_size_allowed = allowed;
                        other.hpack.set_max_allowed_table_size(allowed);
                    }
                }
                // SETTINGS_MAX_FRAME_SIZE
                0x5 => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) {
                        return Err(malformed("SETTINGS_MAX_FRAME_SIZE out of range"));
                    }
                    other.reader.max_frame_size = other.reader.max_frame_size.max(value);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A fragment of a header block came; decodes the block once it is whole.
    fn on_block(
        &mut self,
        flow: Flow,
        block: Block,
        frame: &Frame,
        out: &mut Vec<Exchange>,
    ) -> Result<(), HttpError> {
        if !frame.header.has(flags::END_HEADERS) {
            self.flow(flow).block = Some(block);
            return Ok(());
        }
        let mut list = Vec::new();
        let mut size = 0usize;
        let hpack = &mut self.flow(flow).hpack;
        let decoded =
            hpack.decode_with_cb(&block.fragments, |name: Cow<[u8]>, value: Cow<[u8]>| {
                size = size.saturating_add(name.len() + value.len() + 32);
                if size <= MAX_FIELD_SECTION {
                    list.push((name.into_owned(), value.into_owned()));
                }
            });
        if let Err(error) = decoded {
            return Err(HttpError::Malformed {
                what: "HPACK header block",
                detail: error.to_string(),
            });
        }
        if block.promise {
            return Ok(());
        }
        let fields = if size > MAX_FIELD_SECTION {
            Err(format!(
                "a field section of {size} bytes, over {MAX_FIELD_SECTION}"
            ))
        } else {
            Fields::parse(list)
        };
        match flow {
            Flow::ToServer => self.on_request_headers(block, frame.end_ns, fields, out),
            Flow::ToClient => {
                self.on_response_headers(block, frame.end_ns, fields, out);
                Ok(())
            }
        }
    }
}

impl ConnectionDecoder for H2Decoder {
    fn push(&mut self, flow: Flow, timestamp_ns: u64, bytes: &[u8], out: &mut Vec<Exchange>) {
        let mut input = bytes;
        if !self.stopped {
            self.last_ns = timestamp_ns;
        }
        while !self.stopped {
            match self.flow(flow).reader.next(&mut input, timestamp_ns) {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    let result = self.on_frame(flow, &frame, out);
                    self.flow(flow).reader.recycle(frame.payload);
                    if let Err(error) = result {
                        self.fail(error, true, out);
                    }
                }
                Err(detail) => {
                    let error = HttpError::Malformed {
                        what: "HTTP/2 frame",
                        detail,
                    };
                    self.fail(error, true, out);
                }
            }
        }
        if self.stopped {
            self.stats.ignored_bytes += input.len() as u64;
        }
    }

    fn gap(&mut self, flow: Flow, len: u64, out: &mut Vec<Exchange>) {
        if self.stopped {
            return;
        }
        let what = match flow {
            Flow::ToServer => "request",
            Flow::ToClient => "response",
        };
        // Only the flow to the server can hide a whole request.
        self.fail(HttpError::Gap { what, len }, flow == Flow::ToServer, out);
    }

    fn finish(&mut self, out: &mut Vec<Exchange>) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        for (_, stream) in std::mem::take(&mut self.streams) {
            self.report_incomplete(stream, None, out);
        }
    }
}

fn malformed(detail: &str) -> HttpError {
    HttpError::Malformed {
        what: "HTTP/2 frame",
        detail: detail.to_string(),
    }
}

/// The first four bytes of `bytes` (zero-padded when shorter).
fn word(bytes: &[u8]) -> [u8; 4] {
    let mut word = [0; 4];
    let n = bytes.len().min(4);
    word[..n].copy_from_slice(&bytes[..n]);
    word
}

/// A frame's content between its pad length (and `skip` more octets) and its padding, as far
/// as it was kept.
fn unpad(frame: &Frame, skip: usize) -> Result<&[u8], HttpError> {
    let len = frame.header.len as usize;
    let (start, padding) = if frame.header.has(flags::PADDED) {
        let Some(&padding) = frame.payload.first() else {
            return Err(malformed("PADDED frame without a pad length"));
        };
        (1 + skip, padding as usize)
    } else {
        (skip, 0)
    };
    if start + padding > len {
        return Err(malformed("padding longer than the frame"));
    }
    let end = (len - padding).min(frame.payload.len());
    Ok(&frame.payload[start.min(end)..end])
}

#[cfg(test)]
#[path = "h2_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "h2_traffic_tests.rs"]
mod traffic_tests;
