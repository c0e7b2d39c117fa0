//! Plaintext at the OpenSSL/BoringSSL API.
//!
//! The entry probe only remembers the arguments; the return probe emits, because only at
//! return is it known how many bytes really moved (Node.js, for one, calls `SSL_write` several
//! times before the handshake ends and gets -1). A call's bytes are split into
//! `CHUNK_SIZE` records; the loop is bounded by `MAX_CHUNKS` so the verifier can check it.

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns, bpf_probe_read_user,
        generated::bpf_probe_read_user as probe_read_user_raw,
    },
    programs::{ProbeContext, RetProbeContext},
};
use tokenmeter_common::{
    counter, ControlEvent, DataHeader, PendingCall, StreamKey, TlsFunction, CHUNK_SIZE,
    DATA_HEADER_LEN, DIRECTION_READ, DIRECTION_WRITE, FLAG_READ_FAILED, FLAG_TRUNCATED,
    MAX_CAPTURE_PER_CALL, MAX_CHUNKS,
};

use crate::maps::{
    count, data_wakeup_flags, CONTROL_EVENTS, DATA_EVENTS, PENDING_CALLS, SCRATCH, STREAM_POSITIONS,
};

#[inline(always)]
pub fn on_enter(ctx: &ProbeContext, function: TlsFunction) {
    let (Some(conn), Some(buf)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return;
    };
    let len_out = if function.reports_through_pointer() {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let call = PendingCall {
        conn,
        buf,
        len_out,
        function: function as u8,
        _pad: [0; 7],
    };
    // A full map loses this call; its return is then counted as an orphan.
    let _ = PENDING_CALLS.insert(bpf_get_current_pid_tgid(), call, 0);
}

#[inline(always)]
pub fn on_return(ctx: &RetProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { PENDING_CALLS.get(pid_tgid) }).copied() else {
        count(counter::ORPHAN_RETURNS, 1);
        return;
    };
    let _ = PENDING_CALLS.remove(pid_tgid);

    let Some(function) = TlsFunction::from_u8(call.function) else {
        return;
    };
    let ret: i64 = ctx.ret::<i32>() as i64;
    let len = if function.reports_through_pointer() {
        if ret != 1 || call.len_out == 0 {
            return;
        }
        // SAFETY: reading user memory through the helper, which checks the address.
        match unsafe { bpf_probe_read_user(call.len_out as *const u64) } {
            Ok(n) => n,
            Err(_) => {
                count(counter::READ_FAILURES, 1);
                return;
            }
        }
    } else if ret > 0 {
        ret as u64
    } else {
        return;
    };
    if len == 0 {
        return;
    }
    emit_call(pid_tgid, &call, function, len);
}

#[inline(always)]
fn emit_call(pid_tgid: u64, call: &PendingCall, function: TlsFunction, len: u64) {
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
    let truncated = len > MAX_CAPTURE_PER_CALL as u64;
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
    let captured = if truncated {
        MAX_CAPTURE_PER_CALL as u64
    } else {
        len
    };
    let base_flags = event.header.flags;

    for i in 0..MAX_CHUNKS {
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
        event.header.chunk_offset = offset as u32;
        event.header.chunk_len = n;
        event.header.flags = flags;
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

#[inline(always)]
pub fn on_close(ctx: &ProbeContext, kind: u32) {
    let Some(conn) = ctx.arg::<u64>(0) else {
        return;
    };
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if kind == tokenmeter_common::CONTROL_CONN_FREE {
        for direction in [DIRECTION_WRITE, DIRECTION_READ] {
            let key = StreamKey {
                conn,
                pid,
                direction: direction as u32,
            };
            let _ = STREAM_POSITIONS.remove(&key);
        }
    }
    emit_control(conn, 0, pid, kind);
}

#[inline(always)]
pub fn on_set_fd(ctx: &ProbeContext) {
    let (Some(conn), Some(fd)) = (ctx.arg::<u64>(0), ctx.arg::<i32>(1)) else {
        return;
    };
    if fd < 0 {
        return;
    }
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    emit_control(conn, fd as u64, pid, tokenmeter_common::CONTROL_CONN_FD);
}

#[inline(always)]
fn emit_control(conn: u64, value: u64, pid: u32, kind: u32) {
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
