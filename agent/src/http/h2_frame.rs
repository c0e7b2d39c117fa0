//! HTTP/2 framing (RFC 9113 section 4): cuts one flow's bytes into frames, incrementally.
//!
//! Only what the decoder reads of a payload is kept: header blocks and SETTINGS whole (up to
//! [`MAX_BLOCK_FRAME`]), DATA up to the body limit plus the largest padding, the fixed fields of
//! control frames, nothing of unknown frame types. So the memory of a flow stays bounded
//! whatever frame sizes the peers agreed on.

use crate::http::Flow;

/// What a client sends first on an HTTP/2 connection (RFC 9113 section 3.4).
pub(super) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length, type, flags and stream id.
pub(super) const HEADER_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE until a peer raises it.
pub(super) const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE a peer may announce.
pub(super) const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// Largest HEADERS, CONTINUATION, PUSH_PROMISE or SETTINGS frame read (and so the largest
/// header block, CONTINUATIONs included): larger ones are taken as malformed.
pub(super) const MAX_BLOCK_FRAME: usize = 256 * 1024;
/// Largest padding of a frame, plus its pad-length octet.
const MAX_PADDING: usize = 256;

/// Frame types (RFC 9113 section 6).
pub(super) mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags; which ones a type defines is in RFC 9113 section 6.
pub(super) mod flags {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// The stream identifier, reserved bit cleared.
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A frame read whole; its payload as far as it was kept.
#[derive(Debug)]
pub(super) struct Frame {
    pub header: FrameHeader,
    /// The first bytes of the payload: all of it, except for DATA over the keep limit,
    /// GOAWAY's debug data and unknown frame types.
    pub payload: Vec<u8>,
    /// Timestamps of the pushes that carried the frame's first and last byte.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Position of the frame's first byte in its flow.
    pub pos: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Preface { matched: usize },
    Header { have: usize },
    Payload { left: u32, keep: usize },
}

/// One flow's frame reader.
pub(super) struct FrameReader {
    state: State,
    header_bytes: [u8; HEADER_LEN],
    header: FrameHeader,
    payload: Vec<u8>,
    /// Position of the next byte in the flow.
    pos: u64,
    frame_pos: u64,
    frame_start_ns: u64,
    /// Largest frame this flow's sender may send (the receiver's SETTINGS_MAX_FRAME_SIZE).
    pub max_frame_size: u32,
    /// How much of a DATA payload is kept.
    data_keep: usize,
}

impl FrameReader {
    /// A reader of `flow`, which starts with the client preface when it goes to the server;
    /// `body_limit` bytes of a DATA frame's data are kept, the rest only counted.
    pub fn new(flow: Flow, body_limit: usize) -> Self {
        Self {
            state: match flow {
                Flow::ToServer => State::Preface { matched: 0 },
                Flow::ToClient => State::Header { have: 0 },
            },
            header_bytes: [0; HEADER_LEN],
            header: FrameHeader::default(),
            payload: Vec::new(),
            pos: 0,
            frame_pos: 0,
            frame_start_ns: 0,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            // Data over the limit flags the body truncated: one byte more than the limit is
            // enough to tell, after the pad-length octet and the padding are taken off.
            data_keep: body_limit.saturating_add(1 + MAX_PADDING),
        }
    }

    /// Numbers the flow's bytes from `pos` on.
    pub fn set_pos(&mut self, pos: u64) {
        self.pos = pos;
    }

    /// Position of the next byte in the flow.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Reads from `input` (advancing it) until a frame is complete; `None` when `input` ran out
    /// first. An error names what is malformed; the reader must not be used after one.
    pub fn next(&mut self, input: &mut &[u8], ts: u64) -> Result<Option<Frame>, String> {
        loop {
            if let State::Payload { left: 0, .. } = self.state {
                self.state = State::Header { have: 0 };
                return Ok(Some(Frame {
                    header: self.header,
                    payload: std::mem::take(&mut self.payload),
                    start_ns: self.frame_start_ns,
                    end_ns: ts,
                    pos: self.frame_pos,
                }));
            }
            if input.is_empty() {
                return Ok(None);
            }
            match self.state {
                State::Preface { matched } => {
                    let n = (PREFACE.len() - matched).min(input.len());
                    if input[..n] != PREFACE[matched..matched + n] {
                        return Err("the connection does not start with the client preface".into());
                    }
                    self.advance(input, n);
                    self.state = match matched + n {
                        done if done == PREFACE.len() => State::Header { have: 0 },
                        matched => State::Preface { matched },
                    };
                }
                State::Header { have } => {
                    if have == 0 {
                        self.frame_pos = self.pos;
                        self.frame_start_ns = ts;
                    }
                    let n = (HEADER_LEN - have).min(input.len());
                    self.header_bytes[have..have + n].copy_from_slice(&input[..n]);
                    self.advance(input, n);
                    if have + n < HEADER_LEN {
                        self.state = State::Header { have: have + n };
                        continue;
                    }
                    self.header = FrameHeader::parse(&self.header_bytes);
                    let keep = self.keep(&self.header)?;
                    self.payload.clear();
                    self.payload
                        .reserve(keep.min(DEFAULT_MAX_FRAME_SIZE as usize));
                    self.state = State::Payload {
                        left: self.header.len,
                        keep,
                    };
                }
                State::Payload { left, keep } => {
                    let n = (left as usize).min(input.len());
                    let kept = (keep - self.payload.len()).min(n);
                    self.payload.extend_from_slice(&input[..kept]);
                    self.advance(input, n);
                    self.state = State::Payload {
                        left: left - n as u32,
                        keep,
                    };
                }
            }
        }
    }

    /// Gives a frame's payload buffer back, to be reused by the next frame.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.payload.capacity() == 0 && buffer.capacity() <= 2 * DEFAULT_MAX_FRAME_SIZE as usize
        {
            buffer.clear();
            self.payload = buffer;
        }
    }

    fn advance(&mut self, input: &mut &[u8], n: usize) {
        *input = &input[n..];
        self.pos += n as u64;
    }

    /// How many payload bytes of a frame to keep, or why the frame is malformed.
    fn keep(&self, header: &FrameHeader) -> Result<usize, String> {
        let len = header.len as usize;
        if header.len > self.max_frame_size {
            return Err(format!(
                "frame of type {} and {len} bytes, over the {} bytes allowed",
                header.kind, self.max_frame_size
            ));
        }
        Ok(match header.kind {
            kind::DATA => len.min(self.data_keep),
            kind::HEADERS | kind::CONTINUATION | kind::PUSH_PROMISE | kind::SETTINGS => {
                if len > MAX_BLOCK_FRAME {
                    return Err(format!(
                        "frame of type {} and {len} bytes, over the {MAX_BLOCK_FRAME} bytes read",
                        header.kind
                    ));
                }
                len
            }
            // Fixed fields only: lengths are checked against header.len, GOAWAY's debug data
            // is dropped.
            kind::PRIORITY | kind::RST_STREAM | kind::PING | kind::GOAWAY | kind::WINDOW_UPDATE => {
                len.min(8)
            }
            _ => 0,
        })
    }
}
