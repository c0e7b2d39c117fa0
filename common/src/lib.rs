//! Types shared across the kernel boundary.
//!
//! The eBPF programs in `agent-ebpf` write these records into ring buffers and maps; the
//! agent reads them back. Everything here is `#[repr(C)]`, `Copy`, free of `bool` and padded
//! explicitly, so both sides agree on the layout byte for byte. With the `user` feature the
//! types implement `aya::Pod` and can be read from maps in userspace.
#![no_std]

/// Bytes of payload carried by one [`DataEvent`]. A TLS call that moved more is split into
/// several records of this size (the last one shorter).
pub const CHUNK_SIZE: usize = 16 * 1024;

/// Most chunks a single TLS call is split into. Payload past
/// `CHUNK_SIZE * MAX_CHUNKS` bytes is not copied: the records of that call carry
/// [`FLAG_TRUNCATED`] and the call's true length, and the stream position still advances by
/// the true length so userspace sees exactly where the gap is.
pub const MAX_CHUNKS: usize = 32;

/// Most payload bytes captured from one TLS call (512 KiB).
pub const MAX_CAPTURE_PER_CALL: usize = CHUNK_SIZE * MAX_CHUNKS;

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// Payload left the process (`SSL_write*`): the plaintext the process sent.
pub const DIRECTION_WRITE: u8 = 0;
/// Payload entered the process (`SSL_read*`): the plaintext the process received.
pub const DIRECTION_READ: u8 = 1;

/// The call moved more than [`MAX_CAPTURE_PER_CALL`] bytes; the rest was not copied.
pub const FLAG_TRUNCATED: u8 = 1 << 0;
/// The kernel could not read (part of) the user buffer; the chunk's payload is missing.
pub const FLAG_READ_FAILED: u8 = 1 << 1;
/// The last chunk captured of a truncated call: the rest of the call is a known gap.
pub const FLAG_LAST_CAPTURED: u8 = 1 << 2;

/// Header of a record in the data ring buffer, followed by `chunk_len` payload bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataHeader {
    /// Nanoseconds since boot (`bpf_ktime_get_ns`) when the call returned.
    pub timestamp_ns: u64,
    /// The `SSL*` of the connection: together with `pid` it names the connection.
    pub conn: u64,
    /// cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    /// Offset of this call's first byte in the connection's stream in this direction.
    pub stream_pos: u64,
    /// Bytes the call really transferred (the return value, or `*written` / `*readbytes`).
    pub call_len: u64,
    /// Offset of this chunk's payload inside the call.
    pub chunk_offset: u32,
    /// Payload bytes following the header.
    pub chunk_len: u32,
    /// Process id (thread group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// [`DIRECTION_WRITE`] or [`DIRECTION_READ`].
    pub direction: u8,
    /// [`FLAG_TRUNCATED`], [`FLAG_READ_FAILED`].
    pub flags: u8,
    /// Which TLS function produced it, see [`TlsFunction`].
    pub function: u8,
    pub _pad: [u8; 5],
    /// The calling task's `comm`.
    pub comm: [u8; COMM_LEN],
}

/// Size of [`DataHeader`] on the wire.
pub const DATA_HEADER_LEN: usize = core::mem::size_of::<DataHeader>();

/// A header and its payload: the per-CPU scratch buffer the eBPF side assembles a record in.
/// Only `DATA_HEADER_LEN + header.chunk_len` bytes of it reach the ring buffer.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DataEvent {
    pub header: DataHeader,
    pub payload: [u8; CHUNK_SIZE],
}

/// Where captured bytes come from: the TLS entry points the agent probes, and the socket
/// syscalls of processes selected for plaintext capture.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFunction {
    SslWrite = 0,
    SslWriteEx = 1,
    SslRead = 2,
    SslReadEx = 3,
    /// `write`/`sendto` on a socket (plaintext HTTP, no TLS).
    SysWrite = 4,
    /// `read`/`recvfrom` on a socket.
    SysRead = 5,
    /// Go's `crypto/tls.(*Conn).Write`.
    GoWrite = 6,
    /// Go's `crypto/tls.(*Conn).Read`.
    GoRead = 7,
}

/// Key of a Go call in flight: the goroutine (its `g` pointer), not the thread, since a
/// goroutine blocked in `Read` may resume on another thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoCallKey {
    pub goroutine: u64,
    pub pid: u32,
    pub _pad: u32,
}

/// The `conn` of a stream captured at the syscalls: this bit, the descriptor's generation
/// (how many times the process closed that number before) in bits 32-62 and the file
/// descriptor in bits 0-31. User-space pointers (an `SSL*`) never have bit 63 set.
pub const SYSCALL_CONN: u64 = 1 << 63;

/// The `conn` of generation `generation` of descriptor `fd`.
pub const fn syscall_conn(fd: u32, generation: u32) -> u64 {
    SYSCALL_CONN | (((generation & 0x7fff_ffff) as u64) << 32) | fd as u64
}

/// A descriptor's key in the per-descriptor maps (`FD_GENERATIONS`, `IGNORED_FDS`).
pub const fn fd_key(pid: u32, fd: u32) -> u64 {
    ((pid as u64) << 32) | fd as u64
}

impl TlsFunction {
    /// Decodes the `function` byte of a [`DataHeader`].
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::SslWrite),
            1 => Some(Self::SslWriteEx),
            2 => Some(Self::SslRead),
            3 => Some(Self::SslReadEx),
            4 => Some(Self::SysWrite),
            5 => Some(Self::SysRead),
            6 => Some(Self::GoWrite),
            7 => Some(Self::GoRead),
            _ => None,
        }
    }

    /// Direction of the bytes this function moves.
    pub const fn direction(self) -> u8 {
        match self {
            Self::SslWrite | Self::SslWriteEx | Self::SysWrite | Self::GoWrite => DIRECTION_WRITE,
            Self::SslRead | Self::SslReadEx | Self::SysRead | Self::GoRead => DIRECTION_READ,
        }
    }

    /// The `_ex` forms return 1/0 and report the byte count through an out pointer.
    pub const fn reports_through_pointer(self) -> bool {
        matches!(self, Self::SslWriteEx | Self::SslReadEx)
    }
}

/// Arguments saved at function entry, keyed by `pid_tgid`, consumed at return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingCall {
    pub conn: u64,
    pub buf: u64,
    /// `size_t *written` / `size_t *readbytes` of the `_ex` forms, 0 otherwise.
    pub len_out: u64,
    pub function: u8,
    pub _pad: [u8; 7],
}

/// Key of the per-connection stream position map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamKey {
    pub conn: u64,
    pub pid: u32,
    pub direction: u32,
}

/// Process lifecycle and connection close notifications (the control ring buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlEvent {
    pub timestamp_ns: u64,
    /// The `SSL*` for the connection events, 0 otherwise.
    pub conn: u64,
    /// The file descriptor for [`CONTROL_CONN_FD`], 0 otherwise.
    pub value: u64,
    pub pid: u32,
    pub kind: u32,
}

/// A process replaced its image (`execve`): a candidate for discovery.
pub const CONTROL_EXEC: u32 = 1;
/// A process exited: its streams are finished and its state can go.
pub const CONTROL_EXIT: u32 = 2;
/// `SSL_shutdown` was called on a connection: its peer has been told it is closing.
pub const CONTROL_CONN_SHUTDOWN: u32 = 3;
/// `SSL_free` was called on a connection: the `SSL*` may be reused from now on.
pub const CONTROL_CONN_FREE: u32 = 4;
/// The process's dynamic loader mapped or unmapped libraries (`_dl_debug_state`, the hook
/// debuggers use): inspect it now, a new TLS library may have arrived.
pub const CONTROL_LIBRARIES_CHANGED: u32 = 5;
/// `SSL_set_fd` tied a connection to a socket: its addresses can be looked up.
pub const CONTROL_CONN_FD: u32 = 6;

/// Indexes into the per-CPU `COUNTERS` array. Userspace sums the CPUs.
pub mod counter {
    /// Data records written to the ring buffer.
    pub const EVENTS: u32 = 0;
    /// Payload bytes written to the ring buffer.
    pub const BYTES: u32 = 1;
    /// TLS calls whose payload was cut at `MAX_CAPTURE_PER_CALL`.
    pub const TRUNCATED_CALLS: u32 = 2;
    /// Data records lost because the ring buffer was full.
    pub const DROPPED_EVENTS: u32 = 3;
    /// Payload bytes lost because the ring buffer was full.
    pub const DROPPED_BYTES: u32 = 4;
    /// Chunks whose user memory could not be read.
    pub const READ_FAILURES: u32 = 5;
    /// Returns seen without the matching entry (probe attached mid-call, or map full).
    pub const ORPHAN_RETURNS: u32 = 6;
    /// Control records lost because the control ring buffer was full.
    pub const DROPPED_CONTROL: u32 = 7;
    /// Number of counters.
    pub const COUNT: u32 = 8;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, with explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::DataHeader {}
    unsafe impl aya::Pod for super::PendingCall {}
    unsafe impl aya::Pod for super::StreamKey {}
    unsafe impl aya::Pod for super::ControlEvent {}
    unsafe impl aya::Pod for super::GoCallKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(DATA_HEADER_LEN, 8 * 5 + 4 * 4 + 8 + COMM_LEN);
        assert_eq!(core::mem::size_of::<PendingCall>(), 32);
        assert_eq!(core::mem::size_of::<StreamKey>(), 16);
        assert_eq!(core::mem::size_of::<ControlEvent>(), 32);
        assert_eq!(DATA_HEADER_LEN % 8, 0, "payload must start 8-byte aligned");
    }

    #[test]
    fn function_codes_round_trip() {
        for f in [
            TlsFunction::SslWrite,
            TlsFunction::SslWriteEx,
            TlsFunction::SslRead,
            TlsFunction::SslReadEx,
        ] {
            assert_eq!(TlsFunction::from_u8(f as u8), Some(f));
        }
        assert_eq!(TlsFunction::from_u8(9), None);
        assert_eq!(TlsFunction::SslReadEx.direction(), DIRECTION_READ);
        assert!(!TlsFunction::SslWrite.reports_through_pointer());
    }
}
