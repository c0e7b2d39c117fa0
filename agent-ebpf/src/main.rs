//! Entry points of the agent's eBPF programs. Each one is a thin wrapper around the logic in
//! its module: `ssl` (TLS plaintext at `SSL_*` calls), `syscalls` (plaintext at socket syscalls)
//! and `lifecycle` (process exec and exit); `emit` writes the records.
#![no_std]
#![no_main]

mod emit;
mod go_tls;
mod lifecycle;
mod maps;
mod ssl;
mod syscalls;

use aya_ebpf::{
    macros::{raw_tracepoint, uprobe, uretprobe},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext},
};
use tokenmeter_common::TlsFunction;

/// `int SSL_write(SSL *ssl, const void *buf, int num)`
#[uprobe]
pub fn ssl_write(ctx: ProbeContext) -> u32 {
    ssl::on_enter(&ctx, TlsFunction::SslWrite);
    0
}

/// `int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)`
#[uprobe]
pub fn ssl_write_ex(ctx: ProbeContext) -> u32 {
    ssl::on_enter(&ctx, TlsFunction::SslWriteEx);
    0
}

/// `int SSL_read(SSL *ssl, void *buf, int num)`
#[uprobe]
pub fn ssl_read(ctx: ProbeContext) -> u32 {
    ssl::on_enter(&ctx, TlsFunction::SslRead);
    0
}

/// `int SSL_read_ex(SSL *ssl, void *buf, size_t num, size_t *readbytes)`
#[uprobe]
pub fn ssl_read_ex(ctx: ProbeContext) -> u32 {
    ssl::on_enter(&ctx, TlsFunction::SslReadEx);
    0
}

/// Return of any of the four: emits the bytes really transferred.
#[uretprobe]
pub fn ssl_return(ctx: RetProbeContext) -> u32 {
    ssl::on_return(&ctx);
    0
}

/// `int SSL_shutdown(SSL *s)`
#[uprobe]
pub fn ssl_shutdown(ctx: ProbeContext) -> u32 {
    ssl::on_close(&ctx, tokenmeter_common::CONTROL_CONN_SHUTDOWN);
    0
}

/// `void SSL_free(SSL *ssl)`
#[uprobe]
pub fn ssl_free(ctx: ProbeContext) -> u32 {
    ssl::on_close(&ctx, tokenmeter_common::CONTROL_CONN_FREE);
    0
}

/// `int SSL_set_fd(SSL *s, int fd)`: which socket a connection uses.
#[uprobe]
pub fn ssl_set_fd(ctx: ProbeContext) -> u32 {
    ssl::on_set_fd(&ctx);
    0
}

/// `void _dl_debug_state(void)` in the dynamic loader, called after every change to the set
/// of loaded libraries (start-up and dlopen).
#[uprobe]
pub fn dl_debug_state(_ctx: ProbeContext) -> u32 {
    lifecycle::on_libraries_changed();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(_ctx: RawTracePointContext) -> i32 {
    lifecycle::on_exec();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> i32 {
    lifecycle::on_exit();
    0
}

/// `func (c *Conn) Write(b []byte) (int, error)` in Go's crypto/tls.
#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    go_tls::on_enter(&ctx, TlsFunction::GoWrite);
    0
}

/// `func (c *Conn) Read(b []byte) (int, error)` in Go's crypto/tls.
#[uprobe]
pub fn go_tls_read(ctx: ProbeContext) -> u32 {
    go_tls::on_enter(&ctx, TlsFunction::GoRead);
    0
}

/// A `RET` instruction of Go's `(*Conn).Write` or `(*Conn).Read`.
#[uprobe]
pub fn go_tls_return(ctx: ProbeContext) -> u32 {
    go_tls::on_return(&ctx);
    0
}

/// `func (c *Conn) Close() error` in Go's crypto/tls.
#[uprobe]
pub fn go_tls_close(ctx: ProbeContext) -> u32 {
    go_tls::on_close(&ctx);
    0
}

/// Every syscall's entry: the socket reads and writes (and closes) of plaintext processes.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    syscalls::on_enter(&ctx);
    0
}

/// Every syscall's exit: emits what a pending socket read or write moved.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    syscalls::on_exit(&ctx);
    0
}

/// Every syscall's exit, again: the vectored reads and writes (attached to `sys_exit` too).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_vectored(ctx: RawTracePointContext) -> i32 {
    syscalls::on_exit_vectored(&ctx);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
