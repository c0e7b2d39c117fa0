//! Plaintext at the socket syscalls, for the processes the agent selected (`PLAINTEXT_PIDS`):
//! an inference server behind a TLS-terminating ingress speaks plain HTTP. `write`, `sendto`,
//! `writev`, `sendmsg` and `read`, `recvfrom`, `readv`, `recvmsg` are copied at exit (only the
//! bytes really moved; the first `MAX_IOV` iovecs of a vectored call), `close` ends the
//! descriptor's streams. Descriptors the agent classified as not plaintext sockets (files,
//! pipes, TLS connections, whose ciphertext must not be counted next to their plaintext) are
//! in `IGNORED_FDS` and skipped at entry.
//!
//! Raw tracepoints `sys_enter`/`sys_exit` (no tracefs needed); the arguments are read from the
//! `struct pt_regs` the tracepoint passes, so this is x86_64 only (register offsets and
//! syscall numbers).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user},
    programs::RawTracePointContext,
};
use tokenmeter_common::{
    fd_key, syscall_conn, PendingCall, StreamKey, TlsFunction, CONTROL_CONN_FREE, DIRECTION_READ,
    DIRECTION_WRITE,
};

use crate::emit::{emit_call, emit_chunks, emit_control};
use crate::maps::{
    FD_GENERATIONS, IGNORED_FDS, PENDING_SYSCALLS, PLAINTEXT_PIDS, STREAM_POSITIONS,
};

const SYS_READ: u64 = 0;
const SYS_WRITE: u64 = 1;
const SYS_CLOSE: u64 = 3;
const SYS_READV: u64 = 19;
const SYS_WRITEV: u64 = 20;
const SYS_SENDTO: u64 = 44;
const SYS_RECVFROM: u64 = 45;
const SYS_SENDMSG: u64 = 46;
const SYS_RECVMSG: u64 = 47;

/// Most `iovec`s of one vectored call copied; bytes past them are reported as not read (a
/// gap the decoders see), not silently lost. HTTP stacks write headers and body: two.
const MAX_IOV: usize = 2;
/// Chunks copied per iovec (128 KiB): the verifier walks every emit site's chunk loop, and
/// four full-size sites (1 MiB each) exceed its budget.
const IOV_CHUNKS: usize = 8;

/// Offsets in x86_64's `struct pt_regs` of the first three syscall arguments.
const REG_DI: u64 = 112;
const REG_SI: u64 = 104;
const REG_DX: u64 = 96;
/// `struct msghdr`: `msg_iov` and `msg_iovlen`.
const MSG_IOV: u64 = 16;
const MSG_IOVLEN: u64 = 24;

#[inline(always)]
fn reg(regs: u64, offset: u64) -> Option<u64> {
    // SAFETY: a kernel read through the helper, which checks the address.
    unsafe { bpf_probe_read_kernel((regs + offset) as *const u64) }.ok()
}

/// The descriptor's key in the per-fd maps, and its current generation.
#[inline(always)]
fn generation(pid: u32, fd: u64) -> (u64, u32) {
    let key = fd_key(pid, fd as u32);
    // SAFETY: value copied out at once.
    let generation = unsafe { FD_GENERATIONS.get(&key) }.copied().unwrap_or(0);
    (key, generation)
}

#[inline(always)]
fn selected(pid: u32) -> bool {
    // SAFETY: only tested for presence.
    unsafe { PLAINTEXT_PIDS.get(&pid) }.is_some()
}

#[inline(always)]
pub fn on_enter(ctx: &RawTracePointContext) {
    // The syscall number first: it costs nothing, and most syscalls of the node are none of
    // these, so they pay no map lookup.
    let id: u64 = ctx.arg(1);
    let function = match id {
        SYS_WRITE | SYS_SENDTO | SYS_WRITEV | SYS_SENDMSG => Some(TlsFunction::SysWrite),
        SYS_READ | SYS_RECVFROM | SYS_READV | SYS_RECVMSG => Some(TlsFunction::SysRead),
        SYS_CLOSE => None,
        _ => return,
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let pid = (pid_tgid >> 32) as u32;
    if !selected(pid) {
        return;
    }
    let regs: u64 = ctx.arg(0);
    let Some(function) = function else {
        if let Some(fd) = reg(regs, REG_DI) {
            on_close(pid, fd & 0xffff_ffff);
        }
        return;
    };
    let (Some(fd), Some(arg)) = (reg(regs, REG_DI), reg(regs, REG_SI)) else {
        return;
    };
    // `buf` is the buffer, or the iovec array of a vectored call (`len_out` its count).
    let (buf, iov_count) = match id {
        SYS_READV | SYS_WRITEV => (arg, reg(regs, REG_DX).unwrap_or(0)),
        SYS_SENDMSG | SYS_RECVMSG => {
            // SAFETY: user reads through the helper, which checks the address.
            let iov = unsafe { bpf_probe_read_user((arg + MSG_IOV) as *const u64) }.unwrap_or(0);
            let count =
                unsafe { bpf_probe_read_user((arg + MSG_IOVLEN) as *const u64) }.unwrap_or(0);
            (iov, count)
        }
        _ => (arg, 0),
    };
    let (key, generation) = generation(pid, fd);
    // SAFETY: value compared at once.
    if unsafe { IGNORED_FDS.get(&key) }.is_some_and(|ignored| *ignored == generation) {
        return;
    }
    let call = PendingCall {
        conn: syscall_conn(fd as u32, generation),
        buf,
        len_out: iov_count,
        function: function as u8,
        _pad: [0; 7],
    };
    let _ = PENDING_SYSCALLS.insert(&pid_tgid, &call, 0);
}

/// The pending call of this thread if it is of the kind wanted (vectored or not); taken.
#[inline(always)]
fn take_pending(pid_tgid: u64, vectored: bool) -> Option<PendingCall> {
    if !selected((pid_tgid >> 32) as u32) {
        return None;
    }
    // SAFETY: the value is copied out before the entry is removed.
    let call = (unsafe { PENDING_SYSCALLS.get(&pid_tgid) }).copied()?;
    if (call.len_out != 0) != vectored {
        return None;
    }
    let _ = PENDING_SYSCALLS.remove(&pid_tgid);
    Some(call)
}

/// Exit of a plain read or write: its bytes, up to the full per-call limit.
#[inline(always)]
pub fn on_exit(ctx: &RawTracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = take_pending(pid_tgid, false) else {
        return;
    };
    let ret: i64 = ctx.arg(1);
    let Some(function) = TlsFunction::from_u8(call.function) else {
        return;
    };
    if ret > 0 {
        emit_call(pid_tgid, &call, function, ret as u64);
    }
}

/// Exit of a vectored call (`readv`, `writev`, `sendmsg`, `recvmsg`): its bytes are the
/// iovecs' in order, `ret` of them in all. A program of its own on the same tracepoint, so
/// the verifier walks its emit sites apart from the plain path's.
#[inline(always)]
pub fn on_exit_vectored(ctx: &RawTracePointContext) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(call) = take_pending(pid_tgid, true) else {
        return;
    };
    let ret: i64 = ctx.arg(1);
    let Some(function) = TlsFunction::from_u8(call.function) else {
        return;
    };
    if ret <= 0 {
        return;
    }
    let mut remaining = ret as u64;
    for i in 0..MAX_IOV {
        if remaining == 0 || i as u64 >= call.len_out {
            break;
        }
        // SAFETY: user reads through the helper, which checks the address.
        let Ok(iov) = (unsafe { bpf_probe_read_user((call.buf + 16 * i as u64) as *const IoVec) })
        else {
            break;
        };
        let n = if iov.len < remaining {
            iov.len
        } else {
            remaining
        };
        if n == 0 {
            continue;
        }
        let piece = PendingCall {
            buf: iov.base,
            ..call
        };
        emit_chunks::<IOV_CHUNKS>(pid_tgid, &piece, function, n);
        remaining -= n;
    }
    if remaining > 0 {
        // Past the copied iovecs: positions advance, the chunk says it was not read.
        let piece = PendingCall { buf: 0, ..call };
        emit_chunks::<1>(pid_tgid, &piece, function, remaining);
    }
}

/// `struct iovec`.
#[repr(C)]
#[derive(Clone, Copy)]
struct IoVec {
    base: u64,
    len: u64,
}

/// `close(fd)`: the descriptor's classification and stream positions go; the agent is told
/// only when a stream of it was captured.
#[inline(always)]
fn on_close(pid: u32, fd: u64) {
    let (key, generation) = generation(pid, fd);
    let _ = IGNORED_FDS.remove(&key);
    let conn = syscall_conn(fd as u32, generation);
    let mut seen = false;
    for direction in [DIRECTION_WRITE, DIRECTION_READ] {
        let key = StreamKey {
            conn,
            pid,
            direction: direction as u32,
        };
        if STREAM_POSITIONS.remove(&key).is_ok() {
            seen = true;
        }
    }
    if seen {
        // Only numbers that carried a stream get a new generation: the map holds sockets,
        // not every file the process opens.
        let _ = FD_GENERATIONS.insert(&key, &(generation.wrapping_add(1)), 0);
        emit_control(conn, fd, pid, CONTROL_CONN_FREE);
    }
}
