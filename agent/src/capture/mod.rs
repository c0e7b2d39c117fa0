//! Capture: loads the eBPF programs, finds the processes and TLS libraries to probe,
//! attaches, and hands the ring buffers to the pipeline.
//!
//! The programs copy plaintext at the return of `SSL_write`, `SSL_write_ex`, `SSL_read` and
//! `SSL_read_ex` (only the bytes really moved) and report `SSL_shutdown`/`SSL_free` and
//! process exec/exit. Nothing in the probed processes is changed or restarted.

pub mod attach;
pub mod counters;
pub mod discovery;
pub mod go_tls;
pub mod plaintext;
pub mod preflight;
pub mod record;
pub mod selector;
pub mod sockets;
pub mod symbols;

use std::path::Path;

use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, UProbe},
    Ebpf, EbpfLoader,
};
use tracing::warn;

pub use attach::Attacher;
pub use counters::CaptureCounters;

/// The eBPF object, built by build.rs.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tokenmeter"));

/// Raw tracepoint programs, named after their tracepoint.
const TRACEPOINT_PROGRAMS: [&str; 2] = ["sched_process_exec", "sched_process_exit"];
/// The syscall tracepoints of plaintext capture, attached only when it is enabled, as
/// (program, tracepoint).
const SYSCALL_PROGRAMS: [(&str, &str); 3] = [
    ("sys_enter", "sys_enter"),
    ("sys_exit", "sys_exit"),
    ("sys_exit_vectored", "sys_exit"),
];

/// Why capture could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The kernel or the privileges are not enough.
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    /// The object could not be loaded (maps could not be created).
    #[error("loading the eBPF object failed: {0}")]
    Load(#[source] aya::EbpfError),
    /// A program was rejected by the verifier or could not be attached.
    #[error("eBPF program `{program}` failed: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// A program is missing from the object (the agent and its eBPF object disagree).
    #[error("eBPF program `{0}` is missing from the object")]
    MissingProgram(&'static str),
    /// A map the programs share with userspace is missing or of the wrong type.
    #[error("eBPF map `{0}` is missing from the object or has an unexpected type")]
    Map(&'static str),
    /// Polling a ring buffer or writing the ready file failed.
    #[error("I/O error: {0}")]
    Io(#[source] std::io::Error),
}

/// Everything capture owns once started.
pub struct Capture {
    pub attacher: Attacher,
    pub data: RingBuf<MapData>,
    pub control: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    /// The plaintext (syscall) capture's maps, when it is enabled.
    pub plaintext: Option<plaintext::PlaintextMaps>,
}

/// Checks the system, loads the programs and starts following process lifecycle. No TLS
/// library is probed yet: that is the discovery loop's job.
pub fn start(sysfs: &Path, all_processes: bool, plaintext: bool) -> Result<Capture, CaptureError> {
    let report = preflight::check(sysfs)?;
    for warning in report.warnings {
        warn!("{warning}");
    }
    let mut ebpf = EbpfLoader::new()
        .load(EBPF_OBJECT)
        .map_err(CaptureError::Load)?;
    for program in uprobe_programs() {
        let uprobe: &mut UProbe = program_mut(&mut ebpf, program)?;
        uprobe
            .load()
            .map_err(|source| CaptureError::Program { program, source })?;
    }
    let lifecycle = TRACEPOINT_PROGRAMS.iter().map(|&p| (p, p));
    let syscalls = if plaintext {
        &SYSCALL_PROGRAMS[..]
    } else {
        &[]
    };
    for (program, point) in lifecycle.chain(syscalls.iter().copied()) {
        let tracepoint: &mut RawTracePoint = program_mut(&mut ebpf, program)?;
        tracepoint
            .load()
            .and_then(|()| tracepoint.attach(point).map(drop))
            .map_err(|source| CaptureError::Program { program, source })?;
    }
    let data = take_map(&mut ebpf, "DATA_EVENTS")?;
    let control = take_map(&mut ebpf, "CONTROL_EVENTS")?;
    let counters = take_map(&mut ebpf, "COUNTERS")?;
    let plaintext = if plaintext {
        Some(plaintext::PlaintextMaps {
            pids: take_map(&mut ebpf, "PLAINTEXT_PIDS")?,
            ignored: take_map(&mut ebpf, "IGNORED_FDS")?,
            generations: take_map(&mut ebpf, "FD_GENERATIONS")?,
        })
    } else {
        None
    };
    Ok(Capture {
        plaintext,
        attacher: Attacher::new(ebpf, all_processes),
        data,
        control,
        counters,
    })
}

/// The uprobe programs to load: those of every TLS probe point, and the loader hook.
fn uprobe_programs() -> Vec<&'static str> {
    let mut programs: Vec<&'static str> = symbols::TlsProbe::ALL
        .iter()
        .flat_map(|probe| probe.programs().iter().copied())
        .chain([attach::LOADER_PROGRAM])
        .collect();
    programs.sort_unstable();
    programs.dedup();
    programs
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut T, CaptureError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(program)
        .ok_or(CaptureError::MissingProgram(program))?
        .try_into()
        .map_err(|source| CaptureError::Program { program, source })
}

fn take_map<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, CaptureError>
where
    T: TryFrom<aya::maps::Map>,
{
    let map = ebpf.take_map(name).ok_or(CaptureError::Map(name))?;
    T::try_from(map).map_err(|_| CaptureError::Map(name))
}
