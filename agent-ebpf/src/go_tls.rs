//! Plaintext at Go's crypto/tls: `(*Conn).Write` and `(*Conn).Read`, in Go programs built with
//! the register ABI (Go 1.17 on, amd64). Arguments are in registers, not where a C calling
//! convention puts them: the receiver `c *Conn` in RAX, the slice `b` as RBX (pointer), RCX
//! (length), RDI (capacity); the results `n, err` come back in RAX and RBX/RCX. The current
//! goroutine (`g`) is in R14.
//!
//! Return values are read by probes on the functions' `RET` instructions (userspace finds
//! them by disassembling the functions), never by uretprobes: a uretprobe rewrites the return
//! address on the stack, and Go moves goroutine stacks. The entry saves the arguments keyed by
//! goroutine, not thread, since a goroutine blocked in `Read` may resume on another thread.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, programs::ProbeContext};
use tokenmeter_common::{GoCallKey, PendingCall, TlsFunction};

use crate::emit::{emit_call, end_streams};
use crate::maps::GO_PENDING_CALLS;

#[inline(always)]
fn key(ctx: &ProbeContext, pid: u32) -> GoCallKey {
    GoCallKey {
        // SAFETY: `regs` is the kernel's pt_regs of this probe hit.
        goroutine: unsafe { (*ctx.regs).r14 },
        pid,
        _pad: 0,
    }
}

#[inline(always)]
pub fn on_enter(ctx: &ProbeContext, function: TlsFunction) {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: as above.
    let (conn, buf) = unsafe { ((*ctx.regs).rax, (*ctx.regs).rbx) };
    let call = PendingCall {
        conn,
        buf,
        len_out: 0,
        function: function as u8,
        _pad: [0; 7],
    };
    // A call whose stack grows re-enters at the function's start: the same arguments again.
    let _ = GO_PENDING_CALLS.insert(&key(ctx, pid), &call, 0);
}

/// At a `RET` of `Write` or `Read`: RAX is `n`.
#[inline(always)]
pub fn on_return(ctx: &ProbeContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let key = key(ctx, (pid_tgid >> 32) as u32);
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { GO_PENDING_CALLS.get(&key) }).copied() else {
        return;
    };
    let _ = GO_PENDING_CALLS.remove(&key);
    let Some(function) = TlsFunction::from_u8(call.function) else {
        return;
    };
    // SAFETY: as above.
    let n = unsafe { (*ctx.regs).rax } as i64;
    if n > 0 {
        emit_call(pid_tgid, &call, function, n as u64);
    }
}

/// `(*Conn).Close`: the connection's streams end.
#[inline(always)]
pub fn on_close(ctx: &ProbeContext) {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: as above.
    let conn = unsafe { (*ctx.regs).rax };
    end_streams(conn, pid);
}
