//! Plaintext at the OpenSSL/BoringSSL API.
//!
//! The entry probe only remembers the arguments; the return probe emits, because only at
//! return is it known how many bytes really moved (Node.js, for one, calls `SSL_write` several
//! times before the handshake ends and gets -1). A call's bytes are split into
//! `CHUNK_SIZE` records (see `emit`).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    programs::{ProbeContext, RetProbeContext},
};
use tokenmeter_common::{counter, PendingCall, TlsFunction};

use crate::emit::{emit_call, emit_control, end_streams};
use crate::maps::{count, PENDING_CALLS};

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
pub fn on_close(ctx: &ProbeContext, kind: u32) {
    let Some(conn) = ctx.arg::<u64>(0) else {
        return;
    };
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if kind == tokenmeter_common::CONTROL_CONN_FREE {
        end_streams(conn, pid);
    } else {
        emit_control(conn, 0, pid, kind);
    }
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
