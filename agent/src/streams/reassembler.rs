//! The reassembler: ordered delivery, gaps, and the bounds on memory.

use std::{collections::BTreeMap, num::NonZeroUsize};

use lru::LruCache;

use crate::capture::record::{DataRecord, Direction};

/// Names one connection: the process, its `SSL*`, and a sequence number that tells apart two
/// connections that reused the same `SSL*` address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub pid: u32,
    pub conn: u64,
    pub seq: u64,
}

/// One direction of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId {
    pub conn: ConnId,
    pub direction: Direction,
}

/// Why bytes are missing from a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapCause {
    /// The TLS call moved more than the per-call capture limit.
    CallTruncated,
    /// The kernel could not read the process's buffer.
    ReadFailed,
    /// A chunk never arrived (dropped on a full ring buffer) before the wait gave up.
    Lost,
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    /// `SSL_shutdown` was called.
    Shutdown,
    /// `SSL_free` was called.
    Free,
    /// The process exited.
    ProcessExit,
    /// No traffic for the idle timeout.
    Idle,
    /// Too many connections: this one was the least recently active.
    Evicted,
    /// The `SSL*` started over at position 0 (its `SSL_free` was missed).
    Reused,
    /// The agent is stopping.
    AgentShutdown,
}

/// What the reassembler hands downstream, in order per stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The first bytes of a stream are about to follow.
    Opened {
        id: StreamId,
        comm: String,
        cgroup_id: u64,
        timestamp_ns: u64,
        /// Position of the first byte: 0 unless the agent joined an open connection.
        start_pos: u64,
    },
    /// The next bytes of the stream.
    Data {
        id: StreamId,
        timestamp_ns: u64,
        bytes: Vec<u8>,
    },
    /// `len` bytes of the stream are missing here.
    Gap {
        id: StreamId,
        len: u64,
        cause: GapCause,
    },
    /// The stream is finished; nothing more comes for this id.
    Closed { id: StreamId, reason: CloseReason },
}

/// Bounds of the reassembler.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    pub max_connections: NonZeroUsize,
    pub max_pending_bytes: usize,
    pub idle_timeout_ns: u64,
    /// The capture stage's per-call limit, to recognise the end of a truncated call.
    pub max_capture_per_call: u64,
}

#[derive(Default)]
struct DirectionState {
    next_pos: u64,
    /// Chunks that arrived before the bytes in front of them, by start position.
    pending: BTreeMap<u64, DataRecord>,
    pending_bytes: usize,
}

struct ConnState {
    id: ConnId,
    last_activity_ns: u64,
    directions: [Option<DirectionState>; 2],
}

/// Reorders chunks into streams. Pure and synchronous: the caller feeds records and control
/// notifications and forwards the events it gets back.
pub struct Reassembler {
    limits: StreamLimits,
    conns: LruCache<(u32, u64), ConnState>,
    next_seq: u64,
    /// Chunks that arrived behind their stream's position and were not a reused `SSL*`.
    pub duplicates: u64,
}

const DIRECTIONS: [Direction; 2] = [Direction::Write, Direction::Read];

impl Reassembler {
    pub fn new(limits: StreamLimits) -> Self {
        Self {
            limits,
            conns: LruCache::new(limits.max_connections),
            next_seq: 0,
            duplicates: 0,
        }
    }

    /// Connections currently tracked.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Feeds one chunk.
    pub fn push(&mut self, record: DataRecord, out: &mut Vec<StreamEvent>) {
        let key = (record.pid, record.conn);
        let reused = self.conns.peek(&key).is_some_and(|conn| {
            let state = &conn.directions[record.direction.index()];
            record.start() == 0 && state.as_ref().is_some_and(|s| s.next_pos > 0)
        });
        if reused {
            self.close(record.pid, record.conn, CloseReason::Reused, out);
        }
        if !self.conns.contains(&key) {
            if self.conns.len() == self.limits.max_connections.get() {
                if let Some((_, evicted)) = self.conns.pop_lru() {
                    self.finish(evicted, CloseReason::Evicted, out);
                }
            }
            let id = ConnId {
                pid: record.pid,
                conn: record.conn,
                seq: self.next_seq,
            };
            self.next_seq += 1;
            let state = ConnState {
                id,
                last_activity_ns: record.timestamp_ns,
                directions: [None, None],
            };
            self.conns.put(key, state);
        }
        let limits = self.limits;
        let conn = self.conns.get_mut(&key).expect("inserted above");
        conn.last_activity_ns = conn.last_activity_ns.max(record.timestamp_ns);
        let id = StreamId {
            conn: conn.id,
            direction: record.direction,
        };
        let state = conn.directions[record.direction.index()].get_or_insert_with(|| {
            out.push(StreamEvent::Opened {
                id,
                comm: record.comm.clone(),
                cgroup_id: record.cgroup_id,
                timestamp_ns: record.timestamp_ns,
                start_pos: record.start(),
            });
            DirectionState {
                next_pos: record.start(),
                ..Default::default()
            }
        });
        let start = record.start();
        if start < state.next_pos {
            self.duplicates += 1;
            return;
        }
        if start > state.next_pos {
            state.pending_bytes += record.payload.len();
            state.pending.insert(start, record);
            if state.pending_bytes > limits.max_pending_bytes {
                // Give up on the missing range: it is lost.
                let first = *state.pending.keys().next().expect("just inserted");
                out.push(StreamEvent::Gap {
                    id,
                    len: first - state.next_pos,
                    cause: GapCause::Lost,
                });
                state.next_pos = first;
                drain(state, id, &limits, out);
            }
            return;
        }
        deliver(state, id, record, &limits, out);
        drain(state, id, &limits, out);
    }

    /// The connection currently tracked for `(pid, conn)`, if any.
    pub fn current(&self, pid: u32, conn: u64) -> Option<ConnId> {
        self.conns.peek(&(pid, conn)).map(|state| state.id)
    }

    /// Finishes a connection if it is still the one named by `id` (not a newer connection
    /// that reused the same `SSL*` in the meantime).
    pub fn close_id(&mut self, id: ConnId, reason: CloseReason, out: &mut Vec<StreamEvent>) {
        if self.current(id.pid, id.conn) == Some(id) {
            self.close(id.pid, id.conn, reason, out);
        }
    }

    /// Finishes both directions of a connection (`SSL_shutdown`, `SSL_free`).
    pub fn close(&mut self, pid: u32, conn: u64, reason: CloseReason, out: &mut Vec<StreamEvent>) {
        if let Some(state) = self.conns.pop(&(pid, conn)) {
            self.finish(state, reason, out);
        }
    }

    /// Finishes every connection of a process that exited.
    pub fn process_exited(&mut self, pid: u32, out: &mut Vec<StreamEvent>) {
        let keys: Vec<_> = self
            .conns
            .iter()
            .filter(|((p, _), _)| *p == pid)
            .map(|(k, _)| *k)
            .collect();
        for (pid, conn) in keys {
            self.close(pid, conn, CloseReason::ProcessExit, out);
        }
    }

    /// Finishes connections idle since before `now_ns - idle_timeout` (monotonic ns, the
    /// clock of the records' timestamps).
    pub fn expire_idle(&mut self, now_ns: u64, out: &mut Vec<StreamEvent>) {
        while let Some((_, conn)) = self.conns.peek_lru() {
            if conn
                .last_activity_ns
                .saturating_add(self.limits.idle_timeout_ns)
                > now_ns
            {
                break;
            }
            let (_, conn) = self.conns.pop_lru().expect("peeked");
            self.finish(conn, CloseReason::Idle, out);
        }
    }

    /// Finishes everything (the agent is stopping).
    pub fn close_all(&mut self, out: &mut Vec<StreamEvent>) {
        while let Some((_, conn)) = self.conns.pop_lru() {
            self.finish(conn, CloseReason::AgentShutdown, out);
        }
    }

    fn finish(&self, conn: ConnState, reason: CloseReason, out: &mut Vec<StreamEvent>) {
        for (direction, state) in DIRECTIONS.into_iter().zip(conn.directions) {
            let Some(mut state) = state else { continue };
            let id = StreamId {
                conn: conn.id,
                direction,
            };
            // Whatever still waits is delivered after a gap: nothing more will fill it.
            while let Some((&start, _)) = state.pending.iter().next() {
                if start > state.next_pos {
                    out.push(StreamEvent::Gap {
                        id,
                        len: start - state.next_pos,
                        cause: GapCause::Lost,
                    });
                    state.next_pos = start;
                }
                drain(&mut state, id, &self.limits, out);
            }
            out.push(StreamEvent::Closed { id, reason });
        }
    }
}

/// Delivers a chunk that starts exactly at the stream's position.
fn deliver(
    state: &mut DirectionState,
    id: StreamId,
    record: DataRecord,
    limits: &StreamLimits,
    out: &mut Vec<StreamEvent>,
) {
    let start = record.start();
    let end = record.covered_end(limits.max_capture_per_call);
    let delivered = record.payload.len() as u64;
    if delivered > 0 {
        out.push(StreamEvent::Data {
            id,
            timestamp_ns: record.timestamp_ns,
            bytes: record.payload,
        });
    } else if record.chunk_len > 0 {
        out.push(StreamEvent::Gap {
            id,
            len: record.chunk_len,
            cause: GapCause::ReadFailed,
        });
    }
    let accounted = start + delivered.max(record.chunk_len);
    if end > accounted {
        out.push(StreamEvent::Gap {
            id,
            len: end - accounted,
            cause: GapCause::CallTruncated,
        });
    }
    state.next_pos = end;
}

/// Delivers pending chunks that have become next in line.
fn drain(
    state: &mut DirectionState,
    id: StreamId,
    limits: &StreamLimits,
    out: &mut Vec<StreamEvent>,
) {
    while let Some(entry) = state.pending.first_entry() {
        let start = *entry.key();
        if start > state.next_pos {
            break;
        }
        let record = entry.remove();
        state.pending_bytes -= record.payload.len();
        if start == state.next_pos {
            deliver(state, id, record, limits, out);
        }
    }
}

#[cfg(test)]
#[path = "reassembler_tests.rs"]
mod tests;
