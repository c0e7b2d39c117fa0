//! Decoding of the records the eBPF programs put in the ring buffers. The layout is defined
//! once, in `tokenmeter-common`; this file only turns bytes into owned, checked values.

use tokenmeter_common::{
    ControlEvent, DataHeader, CONTROL_CONN_FD, CONTROL_CONN_FREE, CONTROL_CONN_SHUTDOWN,
    CONTROL_EXEC, CONTROL_EXIT, CONTROL_LIBRARIES_CHANGED, DATA_HEADER_LEN, DIRECTION_READ,
    DIRECTION_WRITE, FLAG_LAST_CAPTURED, FLAG_READ_FAILED, FLAG_TRUNCATED,
};

/// Which way the plaintext went, seen from the process that called the TLS library.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// `SSL_write*`: the process sent it.
    Write,
    /// `SSL_read*`: the process received it.
    Read,
}

impl Direction {
    /// 0 for `Write`, 1 for `Read`: the index of per-direction arrays.
    pub fn index(self) -> usize {
        match self {
            Self::Write => 0,
            Self::Read => 1,
        }
    }
}

/// One chunk of one TLS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRecord {
    pub timestamp_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub conn: u64,
    pub cgroup_id: u64,
    pub direction: Direction,
    pub comm: String,
    /// Position of the call's first byte in the stream.
    pub stream_pos: u64,
    /// Bytes the call really moved.
    pub call_len: u64,
    /// Offset of this chunk inside the call.
    pub chunk_offset: u64,
    /// Length of the chunk's range in the call.
    pub chunk_len: u64,
    /// The chunk's bytes: `chunk_len` of them, or none when the kernel could not read them.
    pub payload: Vec<u8>,
    /// The call moved more than the per-call capture limit.
    pub call_truncated: bool,
    /// The last chunk captured of a truncated call (the kernel's per-site limit may be lower
    /// than the global one, for a vectored syscall's iovecs).
    pub last_captured: bool,
}

impl DataRecord {
    /// Absolute stream position of the chunk's first byte.
    pub fn start(&self) -> u64 {
        self.stream_pos + self.chunk_offset
    }

    /// Stream position just after the range this chunk accounts for. For the last captured
    /// chunk of a truncated call that is the end of the call, so the bytes past the capture
    /// limit become a known gap instead of a wait for data that will never come.
    pub fn covered_end(&self, max_capture_per_call: u64) -> u64 {
        let end = self.start() + self.chunk_len;
        let last = self.last_captured || self.chunk_offset + self.chunk_len >= max_capture_per_call;
        if self.call_truncated && last {
            self.stream_pos + self.call_len
        } else {
            end
        }
    }
}

/// What the control ring buffer reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRecord {
    Exec { pid: u32 },
    Exit { pid: u32 },
    ConnShutdown { pid: u32, conn: u64 },
    ConnFree { pid: u32, conn: u64 },
    LibrariesChanged { pid: u32 },
    ConnFd { pid: u32, conn: u64, fd: i32 },
}

/// A record that does not match the shared layout (a version mismatch or a kernel bug).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Fewer bytes than the fixed header.
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    /// The payload length disagrees with the header.
    #[error("record says {declared} payload bytes but carries {actual}")]
    LengthMismatch { declared: u64, actual: usize },
    /// An unknown direction or control kind.
    #[error("unknown {what} code {code}")]
    UnknownCode { what: &'static str, code: u32 },
}

/// Decodes a data ring buffer record.
pub fn decode_data(bytes: &[u8]) -> Result<DataRecord, RecordError> {
    if bytes.len() < DATA_HEADER_LEN {
        return Err(RecordError::Short(bytes.len()));
    }
    // SAFETY: DataHeader is repr(C) plain data; read_unaligned copes with any alignment.
    let header: DataHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let payload = &bytes[DATA_HEADER_LEN..];
    let read_failed = header.flags & FLAG_READ_FAILED != 0;
    let expected = if read_failed {
        0
    } else {
        header.chunk_len as usize
    };
    if payload.len() != expected {
        return Err(RecordError::LengthMismatch {
            declared: expected as u64,
            actual: payload.len(),
        });
    }
    let direction = match header.direction {
        DIRECTION_WRITE => Direction::Write,
        DIRECTION_READ => Direction::Read,
        code => {
            return Err(RecordError::UnknownCode {
                what: "direction",
                code: code.into(),
            })
        }
    };
    let comm_len = header
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(header.comm.len());
    Ok(DataRecord {
        timestamp_ns: header.timestamp_ns,
        pid: header.pid,
        tid: header.tid,
        conn: header.conn,
        cgroup_id: header.cgroup_id,
        direction,
        comm: String::from_utf8_lossy(&header.comm[..comm_len]).into_owned(),
        stream_pos: header.stream_pos,
        call_len: header.call_len,
        chunk_offset: header.chunk_offset.into(),
        chunk_len: header.chunk_len.into(),
        payload: payload.to_vec(),
        call_truncated: header.flags & FLAG_TRUNCATED != 0,
        last_captured: header.flags & FLAG_LAST_CAPTURED != 0,
    })
}

/// Decodes a control ring buffer record.
pub fn decode_control(bytes: &[u8]) -> Result<ControlRecord, RecordError> {
    if bytes.len() < std::mem::size_of::<ControlEvent>() {
        return Err(RecordError::Short(bytes.len()));
    }
    // SAFETY: ControlEvent is repr(C) plain data.
    let event: ControlEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let (pid, conn) = (event.pid, event.conn);
    Ok(match event.kind {
        CONTROL_EXEC => ControlRecord::Exec { pid },
        CONTROL_EXIT => ControlRecord::Exit { pid },
        CONTROL_CONN_SHUTDOWN => ControlRecord::ConnShutdown { pid, conn },
        CONTROL_CONN_FREE => ControlRecord::ConnFree { pid, conn },
        CONTROL_LIBRARIES_CHANGED => ControlRecord::LibrariesChanged { pid },
        CONTROL_CONN_FD => ControlRecord::ConnFd {
            pid,
            conn,
            fd: event.value as i32,
        },
        code => {
            return Err(RecordError::UnknownCode {
                what: "control kind",
                code,
            })
        }
    })
}

#[cfg(test)]
pub(crate) fn encode_data(header: &DataHeader, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; DATA_HEADER_LEN];
    // SAFETY: the buffer holds exactly one header.
    unsafe { std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), *header) };
    bytes.extend_from_slice(payload);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32) -> DataHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"curl");
        DataHeader {
            timestamp_ns: 7,
            conn: 0xdead,
            cgroup_id: 1,
            stream_pos: 100,
            call_len: len.into(),
            chunk_offset: 0,
            chunk_len: len,
            pid: 42,
            tid: 43,
            direction: DIRECTION_READ,
            flags: 0,
            function: 3,
            _pad: [0; 5],
            comm,
        }
    }

    #[test]
    fn decodes_a_data_record() {
        let record = decode_data(&encode_data(&header(5), b"hello")).unwrap();
        assert_eq!(record.comm, "curl");
        assert_eq!(record.direction, Direction::Read);
        assert_eq!(record.start(), 100);
        assert_eq!(record.payload, b"hello");
        assert_eq!(record.covered_end(1 << 19), 105);
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert_eq!(decode_data(&[0; 8]), Err(RecordError::Short(8)));
        let bytes = encode_data(&header(5), b"hell");
        assert!(matches!(
            decode_data(&bytes),
            Err(RecordError::LengthMismatch {
                declared: 5,
                actual: 4
            })
        ));
        let mut bad = header(0);
        bad.direction = 9;
        assert!(matches!(
            decode_data(&encode_data(&bad, b"")),
            Err(RecordError::UnknownCode { .. })
        ));
    }

    #[test]
    fn a_failed_read_carries_no_payload_but_keeps_its_range() {
        let mut h = header(5);
        h.flags = FLAG_READ_FAILED;
        let record = decode_data(&encode_data(&h, b"")).unwrap();
        assert!(record.payload.is_empty());
        assert_eq!(record.covered_end(1 << 19), 105);
    }

    #[test]
    fn the_last_chunk_of_a_truncated_call_covers_the_rest_of_the_call() {
        let mut h = header(4);
        h.call_len = 10;
        h.chunk_offset = 4;
        h.flags = FLAG_TRUNCATED;
        let record = decode_data(&encode_data(&h, b"abcd")).unwrap();
        assert_eq!(record.covered_end(8), 110);
    }

    #[test]
    fn decodes_control_records() {
        let event = ControlEvent {
            timestamp_ns: 1,
            conn: 5,
            value: 0,
            pid: 9,
            kind: CONTROL_CONN_FREE,
        };
        // SAFETY: ControlEvent is plain data.
        let bytes: [u8; 32] = unsafe { std::mem::transmute(event) };
        assert_eq!(
            decode_control(&bytes),
            Ok(ControlRecord::ConnFree { pid: 9, conn: 5 })
        );
    }
}
