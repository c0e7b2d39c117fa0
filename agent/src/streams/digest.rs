//! A stream consumer that summarises each finished stream direction: its length, its SHA-256
//! and whether bytes are missing. It backs `tokenmeter-agent capture --json`, the debug view
//! that proves capture is exact without printing any plaintext.

use std::collections::HashMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{CloseReason, StreamEvent, StreamId};
use crate::capture::record::Direction;

/// One finished stream direction.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StreamDigest {
    pub pid: u32,
    pub comm: String,
    /// The `SSL*` of the connection, in hex.
    pub conn: String,
    pub direction: Direction,
    /// Bytes captured.
    pub bytes: u64,
    /// SHA-256 of the captured bytes, in order.
    pub sha256: String,
    /// True when bytes of the stream are missing (cut at the per-call limit, lost or unreadable).
    pub truncated: bool,
    /// Missing bytes.
    pub gaps: u64,
    pub close_reason: CloseReason,
    pub cgroup_id: u64,
    /// Position of the first byte (non-zero when the agent joined an open connection).
    pub start_pos: u64,
    /// The stream's bytes, only with `--plaintext`, cut at the plaintext limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<String>,
}

struct Open {
    comm: String,
    cgroup_id: u64,
    start_pos: u64,
    hasher: Sha256,
    bytes: u64,
    gaps: u64,
    plaintext: Option<Vec<u8>>,
}

/// Follows every open stream; returns a digest when one closes.
pub struct StreamDigester {
    open: HashMap<StreamId, Open>,
    /// Bytes of plaintext kept per stream; `None` keeps none (the default).
    plaintext_limit: Option<usize>,
}

impl StreamDigester {
    pub fn new(plaintext_limit: Option<usize>) -> Self {
        Self {
            open: HashMap::new(),
            plaintext_limit,
        }
    }

    /// Consumes one event; a `Closed` event yields the stream's digest.
    pub fn consume(&mut self, event: StreamEvent) -> Option<StreamDigest> {
        match event {
            StreamEvent::Opened {
                id,
                comm,
                cgroup_id,
                start_pos,
                ..
            } => {
                self.open.insert(
                    id,
                    Open {
                        comm,
                        cgroup_id,
                        start_pos,
                        hasher: Sha256::new(),
                        bytes: 0,
                        gaps: 0,
                        plaintext: self.plaintext_limit.map(|_| Vec::new()),
                    },
                );
                None
            }
            StreamEvent::Data { id, bytes, .. } => {
                if let Some(open) = self.open.get_mut(&id) {
                    open.hasher.update(&bytes);
                    open.bytes += bytes.len() as u64;
                    if let (Some(text), Some(limit)) = (&mut open.plaintext, self.plaintext_limit) {
                        let room = limit.saturating_sub(text.len());
                        text.extend_from_slice(&bytes[..room.min(bytes.len())]);
                    }
                }
                None
            }
            StreamEvent::Gap { id, len, .. } => {
                if let Some(open) = self.open.get_mut(&id) {
                    open.gaps += len;
                }
                None
            }
            StreamEvent::Closed { id, reason } => {
                let open = self.open.remove(&id)?;
                Some(StreamDigest {
                    pid: id.conn.pid,
                    comm: open.comm,
                    conn: format!("{:#x}", id.conn.conn),
                    direction: id.direction,
                    bytes: open.bytes,
                    sha256: hex::encode(open.hasher.finalize()),
                    truncated: open.gaps > 0,
                    gaps: open.gaps,
                    close_reason: reason,
                    cgroup_id: open.cgroup_id,
                    start_pos: open.start_pos,
                    plaintext: open
                        .plaintext
                        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::{ConnId, GapCause};

    fn id() -> StreamId {
        StreamId {
            conn: ConnId {
                pid: 7,
                conn: 0xabc,
                seq: 0,
            },
            direction: Direction::Read,
        }
    }

    fn run(digester: &mut StreamDigester, events: Vec<StreamEvent>) -> Vec<StreamDigest> {
        events
            .into_iter()
            .filter_map(|e| digester.consume(e))
            .collect()
    }

    fn opened() -> StreamEvent {
        StreamEvent::Opened {
            id: id(),
            comm: "python3".into(),
            cgroup_id: 1,
            timestamp_ns: 0,
            start_pos: 0,
        }
    }

    fn data(bytes: &[u8]) -> StreamEvent {
        StreamEvent::Data {
            id: id(),
            timestamp_ns: 1,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn digest_is_the_sha256_of_the_whole_stream_without_plaintext() {
        let mut d = StreamDigester::new(None);
        let closed = StreamEvent::Closed {
            id: id(),
            reason: CloseReason::Free,
        };
        let out = run(
            &mut d,
            vec![opened(), data(b"hello "), data(b"world"), closed],
        );
        assert_eq!(out.len(), 1);
        let digest = &out[0];
        assert_eq!(digest.bytes, 11);
        assert_eq!(digest.sha256, hex::encode(Sha256::digest(b"hello world")));
        assert!(!digest.truncated);
        assert_eq!(digest.conn, "0xabc");
        assert_eq!(digest.plaintext, None);
        let json = serde_json::to_string(digest).unwrap();
        assert!(!json.contains("hello"), "plaintext leaked: {json}");
        assert!(json.contains("\"direction\":\"read\""));
        assert!(json.contains("\"close_reason\":\"free\""));
    }

    #[test]
    fn gaps_mark_the_stream_truncated_and_plaintext_is_capped() {
        let mut d = StreamDigester::new(Some(4));
        let gap = StreamEvent::Gap {
            id: id(),
            len: 3,
            cause: GapCause::CallTruncated,
        };
        let closed = StreamEvent::Closed {
            id: id(),
            reason: CloseReason::ProcessExit,
        };
        let out = run(&mut d, vec![opened(), data(b"abcdef"), gap, closed]);
        assert!(out[0].truncated);
        assert_eq!(out[0].gaps, 3);
        assert_eq!(out[0].plaintext.as_deref(), Some("abcd"));
    }
}
