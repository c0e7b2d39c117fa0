//! The maps shared with userspace. Names are part of the contract with `agent/src/capture`.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use tokenmeter_common::{counter, DataEvent, GoCallKey, PendingCall, StreamKey};

/// Size of `DATA_EVENTS`.
const DATA_RING_BYTES: u32 = 32 * 1024 * 1024;

/// Plaintext chunks, read by the agent's capture stage. 32 MiB: at the 16 KiB chunk size it
/// holds 2048 full chunks, well over the agent's polling period of a busy node's TLS writes.
#[map]
pub static DATA_EVENTS: RingBuf = RingBuf::with_byte_size(DATA_RING_BYTES, 0);

/// Data records do not wake the agent one by one (a wake-up per 64-byte write would cost the
/// agent more than the copy): it drains the ring on a short timer. Once a quarter of the ring
/// is waiting, the record wakes it at once so a burst cannot fill the ring between two polls.
#[inline(always)]
pub fn data_wakeup_flags() -> u64 {
    let waiting = DATA_EVENTS.query(aya_ebpf::bindings::BPF_RB_AVAIL_DATA as u64);
    if waiting > u64::from(DATA_RING_BYTES / 4) {
        aya_ebpf::bindings::BPF_RB_FORCE_WAKEUP as u64
    } else {
        aya_ebpf::bindings::BPF_RB_NO_WAKEUP as u64
    }
}

/// Exec, exit and connection close notifications; small records, kept apart from the data
/// so a burst of payload can never crowd out the close that finishes a stream.
#[map]
pub static CONTROL_EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// Arguments saved at entry of an `SSL_*` call, keyed by pid_tgid, taken at return.
#[map]
pub static PENDING_CALLS: HashMap<u64, PendingCall> = HashMap::with_max_entries(16384, 0);

/// Next stream position per (pid, SSL*, direction). LRU so that connections whose
/// `SSL_free` was missed cannot fill it.
#[map]
pub static STREAM_POSITIONS: LruHashMap<StreamKey, u64> = LruHashMap::with_max_entries(65536, 0);

/// Scratch space where one record is assembled before it is copied into `DATA_EVENTS`
/// (records are too large for the 512-byte BPF stack).
#[map]
pub static SCRATCH: PerCpuArray<DataEvent> = PerCpuArray::with_max_entries(1, 0);

/// Processes whose socket syscalls are captured (plaintext HTTP), set by the agent.
#[map]
pub static PLAINTEXT_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// (pid << 32 | fd) -> generation of descriptors the agent found are not plaintext sockets
/// (files, pipes, TLS connections): their syscalls are skipped while the descriptor's
/// generation is the one ignored.
#[map]
pub static IGNORED_FDS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// (pid << 32 | fd) -> how many times a traced process closed that descriptor number. Part of
/// a syscall stream's `conn`, so a number reused for a new socket is a new stream, and an
/// ignore decided for the old one (late, in userspace) does not apply to the new one.
#[map]
pub static FD_GENERATIONS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(65536, 0);

/// Arguments saved at a syscall's entry, keyed by pid_tgid, taken at its exit. Apart from
/// `PENDING_CALLS`: `SSL_write` makes a `write` syscall while its own call is pending.
#[map]
pub static PENDING_SYSCALLS: LruHashMap<u64, PendingCall> = LruHashMap::with_max_entries(16384, 0);

/// Go `Write`/`Read` calls between entry and a `RET`, by goroutine. LRU: a goroutine that
/// panics out of a call never reaches its `RET`.
#[map]
pub static GO_PENDING_CALLS: LruHashMap<GoCallKey, PendingCall> =
    LruHashMap::with_max_entries(16384, 0);

/// Per-CPU counters, indexed by `tokenmeter_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// Adds `value` to the counter at `index` on this CPU.
#[inline(always)]
pub fn count(index: u32, value: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, programs do not preempt each other on one CPU.
        unsafe { *slot += value };
    }
}
