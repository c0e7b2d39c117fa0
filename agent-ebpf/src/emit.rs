//! Emitting records: a call's bytes as data records, split into `CHUNK_SIZE` pieces (the loop
//! is bounded by `MAX_CHUNKS` so the verifier can check it), and control records. Shared by the
//! TLS probes and the syscall tracepoints, so both report the same streams.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_ktime_get_ns,
    generated::bpf_probe_read_user as probe_read_user_raw,
};
use tokenmeter_common::{
    counter, ControlEvent, DataHeader, PendingCall, StreamKey, TlsFunction, CHUNK_SIZE,
    DATA_HEADER_LEN, FLAG_LAST_CAPTURED, FLAG_READ_FAILED, FLAG_TRUNCATED, MAX_CHUNKS,
};

use crate::maps::{
    count, data_wakeup_flags, CONTROL_EVENTS, DATA_EVENTS, SCRATCH, STREAM_POSITIONS,
};

/// A call's bytes, up to `MAX_CHUNKS` chunks (`MAX_CAPTURE_PER_CALL`).
#[inline(always)]
pub fn emit_call(pid_tgid: u64, call: &PendingCall, function: TlsFunction, len: u64) {
    emit_chunks::<MAX_CHUNKS>(pid_tgid, call, function, len);
}

/// A call's bytes, up to `N` chunks: the loop bound the verifier walks, so a program that
/// emits from several places (a vectored syscall's iovecs) uses a smaller one there. The last
/// captured chunk of a call cut short carries `FLAG_LAST_CAPTURED`.
#[inline(always)]
pub fn emit_chunks<const N: usize>(
    pid_tgid: u64,
    call: &PendingCall,
    function: TlsFunction,
    len: u64,
) {
    let pid = (pid_tgid >> 32) as u32;
    let direction = function.direction();
    let key = StreamKey {
        conn: call.conn,
        pid,
        direction: direction as u32,
    };
    // SAFETY: value copied out at once.
    let stream_pos = unsafe { STREAM_POSITIONS.get(&key) }.copied().unwrap_or(0);
    let _ = STREAM_POSITIONS.insert(&key, &(stream_pos + len), 0);

    let Some(event) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU scratch slot belongs to this program run.
    let event = unsafe { &mut *event };
    let limit = (N * CHUNK_SIZE) as u64;
    let truncated = len > limit;
    if truncated {
        count(counter::TRUNCATED_CALLS, 1);
    }
    event.header = DataHeader {
        // SAFETY: helpers without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        conn: call.conn,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        stream_pos,
        call_len: len,
        chunk_offset: 0,
        chunk_len: 0,
        pid,
        tid: pid_tgid as u32,
        direction,
        flags: if truncated { FLAG_TRUNCATED } else { 0 },
        function: function as u8,
        _pad: [0; 5],
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let captured = if truncated { limit } else { len };
    let base_flags = event.header.flags;

    for i in 0..N {
        let offset = (i * CHUNK_SIZE) as u64;
        if offset >= captured {
            break;
        }
        let remaining = captured - offset;
        let mut n = if remaining > CHUNK_SIZE as u64 {
            CHUNK_SIZE as u32
        } else {
            remaining as u32
        };
        // Restate the bound where the verifier can see it.
        if n as usize > CHUNK_SIZE {
            n = CHUNK_SIZE as u32;
        }
        let src = (call.buf + offset) as *const core::ffi::c_void;
        let dst = event.payload.as_mut_ptr() as *mut core::ffi::c_void;
        // SAFETY: n <= CHUNK_SIZE, the size of the destination.
        let read = unsafe { probe_read_user_raw(dst, n, src) };
        let (payload_len, flags) = if read == 0 {
            (n, base_flags)
        } else {
            count(counter::READ_FAILURES, 1);
            (0, base_flags | FLAG_READ_FAILED)
        };
        let last = truncated && offset + n as u64 >= captured;
        event.header.chunk_offset = offset as u32;
        event.header.chunk_len = n;
        event.header.flags = if last {
            flags | FLAG_LAST_CAPTURED
        } else {
            flags
        };
        let record_len = DATA_HEADER_LEN + (payload_len as usize & (2 * CHUNK_SIZE - 1));
        let record_len = if record_len > DATA_HEADER_LEN + CHUNK_SIZE {
            DATA_HEADER_LEN + CHUNK_SIZE
        } else {
            record_len
        };
        // SAFETY: record_len <= size_of::<DataEvent>(), checked above.
        let record =
            unsafe { core::slice::from_raw_parts(event as *const _ as *const u8, record_len) };
        if DATA_EVENTS
            .output::<[u8]>(record, data_wakeup_flags())
            .is_ok()
        {
            count(counter::EVENTS, 1);
            count(counter::BYTES, payload_len as u64);
        } else {
            count(counter::DROPPED_EVENTS, 1);
            count(counter::DROPPED_BYTES, n as u64);
        }
    }
}

/// A connection ended (`SSL_free`, Go's `Close`): its stream positions go and the agent is
/// told, so a reused `SSL*` or `*Conn` starts new streams.
#[inline(always)]
pub fn end_streams(conn: u64, pid: u32) {
    for direction in [
        tokenmeter_common::DIRECTION_WRITE,
        tokenmeter_common::DIRECTION_READ,
    ] {
        let key = StreamKey {
            conn,
            pid,
            direction: direction as u32,
        };
        let _ = STREAM_POSITIONS.remove(&key);
    }
    emit_control(conn, 0, pid, tokenmeter_common::CONTROL_CONN_FREE);
}

#[inline(always)]
pub fn emit_control(conn: u64, value: u64, pid: u32, kind: u32) {
    let event = ControlEvent {
        // SAFETY: helper without preconditions.
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        conn,
        value,
        pid,
        kind,
    };
    if CONTROL_EVENTS.output::<ControlEvent>(&event, 0).is_err() {
        count(counter::DROPPED_CONTROL, 1);
    }
}
