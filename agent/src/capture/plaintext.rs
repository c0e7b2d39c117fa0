//! Plaintext capture at the socket syscalls (`[plaintext]`): which processes are traced, and
//! which of their descriptors count. The kernel side copies every `write`/`sendto` and
//! `read`/`recvfrom` of a selected process; the first record of a descriptor is classified
//! here, and a descriptor that is not a plaintext socket goes into the kernel's ignore map so
//! its later calls cost one map lookup:
//!
//! - not a socket (`/proc/PID/fd/N` is a file or a pipe: logs, stdout); a descriptor whose
//!   process is already gone is judged by its bytes alone;
//! - a TLS connection: the TLS library said so (`SSL_set_fd`), or its first bytes are a TLS
//!   record header. Its plaintext comes from the TLS probes; its ciphertext is never counted.
//!
//! Streams of syscall capture are named by `SYSCALL_CONN | fd` and go to the same reassembler
//! and decoders as TLS plaintext.

use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData};
use serde::Deserialize;
use tokenmeter_common::{fd_key, syscall_conn, SYSCALL_CONN};
use tracing::debug;

use super::{discovery::ProcessInfo, record::DataRecord, selector::Selector};
use crate::config::SelectorConfig;

/// `[plaintext]` in the agent's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlaintextConfig {
    /// Off by default: tracing syscalls costs every process on the node a map lookup per
    /// syscall (see docs/benchmarks.md).
    pub enabled: bool,
    /// Which processes, as in `[selector]`; at least one pattern or prefix (an empty selector
    /// would trace the whole node). Regular expressions on `/proc/PID/comm`.
    pub comm: Vec<String>,
    /// Regular expressions on the executable's path.
    pub exe: Vec<String>,
    /// cgroup v2 path prefixes.
    pub cgroup_prefix: Vec<String>,
}

impl PlaintextConfig {
    fn selector(&self) -> SelectorConfig {
        SelectorConfig {
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            cgroup_prefix: self.cgroup_prefix.clone(),
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let s = self.selector();
        if self.enabled && s.comm.is_empty() && s.exe.is_empty() && s.cgroup_prefix.is_empty() {
            return Err(
                "plaintext.enabled needs a selector (comm, exe or cgroup_prefix): tracing the \
                 syscalls of every process on the node is not offered"
                    .into(),
            );
        }
        Selector::new(&s)
            .map(drop)
            .map_err(|e| format!("plaintext selector: {e}"))
    }
}

/// Why a descriptor is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Socket,
    NotSocket,
    Tls,
}

/// What was skipped, for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlaintextStats {
    pub processes: u64,
    pub ignored_not_socket: u64,
    pub ignored_tls: u64,
}

/// The kernel side's maps (see `agent-ebpf/src/maps.rs`).
pub struct PlaintextMaps {
    /// Traced processes.
    pub pids: BpfHashMap<MapData, u32, u8>,
    /// (pid << 32 | fd) -> the generation whose syscalls are skipped.
    pub ignored: BpfHashMap<MapData, u64, u32>,
    /// (pid << 32 | fd) -> the descriptor number's current generation.
    pub generations: BpfHashMap<MapData, u64, u32>,
}

pub struct Plaintext {
    selector: Selector,
    maps: PlaintextMaps,
    /// By (pid, conn): the conn carries the descriptor's generation, so a number reused for
    /// another file is classified anew.
    classes: HashMap<(u32, u64), Class>,
    pub stats: PlaintextStats,
}

impl Plaintext {
    pub fn new(config: &PlaintextConfig, maps: PlaintextMaps) -> Self {
        Self {
            selector: Selector::new(&config.selector()).expect("validated config"),
            maps,
            classes: HashMap::new(),
            stats: PlaintextStats::default(),
        }
    }

    /// A process found or exec'd: traced if the selector matches.
    pub fn consider(&mut self, process: &ProcessInfo) {
        if process.pid == std::process::id() || !self.selector.matches(process) {
            return;
        }
        let pids = &mut self.maps.pids;
        if pids.get(&process.pid, 0).is_err() && pids.insert(process.pid, 1, 0).is_ok() {
            self.stats.processes += 1;
            debug!(pid = process.pid, comm = %process.comm, "plaintext capture of a process");
        }
    }

    /// A process exited.
    pub fn exited(&mut self, pid: u32) {
        if self.maps.pids.remove(&pid).is_ok() {
            self.stats.processes = self.stats.processes.saturating_sub(1);
        }
        self.classes.retain(|(p, _), _| *p != pid);
    }

    /// A TLS library tied connection to `fd`: its syscalls carry ciphertext.
    pub fn tls_fd(&mut self, pid: u32, fd: i32) {
        let Ok(fd) = u32::try_from(fd) else { return };
        let generation = self.maps.generations.get(&fd_key(pid, fd), 0).unwrap_or(0);
        let conn = syscall_conn(fd, generation);
        if self.classes.insert((pid, conn), Class::Tls) != Some(Class::Tls) {
            self.ignore(pid, conn, Class::Tls);
        }
    }

    /// A descriptor was closed: the next one with its number is a new generation.
    pub fn closed(&mut self, pid: u32, conn: u64) {
        self.classes.remove(&(pid, conn));
    }

    /// Whether a data record goes on to the reassembler (TLS records always do).
    pub fn admit(&mut self, record: &DataRecord) -> bool {
        let Some((fd, _)) = fd_of(record.conn) else {
            return true;
        };
        let key = (record.pid, record.conn);
        let class = match self.classes.get(&key) {
            Some(class) => *class,
            None => {
                let class = classify(record, fd);
                self.classes.insert(key, class);
                if class != Class::Socket {
                    self.ignore(record.pid, record.conn, class);
                }
                class
            }
        };
        class == Class::Socket
    }

    fn ignore(&mut self, pid: u32, conn: u64, class: Class) {
        match class {
            Class::Tls => self.stats.ignored_tls += 1,
            Class::NotSocket => self.stats.ignored_not_socket += 1,
            Class::Socket => return,
        }
        if let Some((fd, generation)) = fd_of(conn) {
            let _ = self.maps.ignored.insert(fd_key(pid, fd), generation, 0);
        }
    }
}

/// The descriptor and its generation of a syscall stream's `conn`.
pub fn fd_of(conn: u64) -> Option<(u32, u32)> {
    (conn & SYSCALL_CONN != 0).then_some((
        (conn & 0xffff_ffff) as u32,
        ((conn >> 32) & 0x7fff_ffff) as u32,
    ))
}

fn classify(record: &DataRecord, fd: u32) -> Class {
    // A process or descriptor already gone (a short-lived client is often done before its
    // first record is read here) cannot be looked at: its bytes decide, as for a socket.
    if let Ok(link) = std::fs::read_link(format!("/proc/{}/fd/{fd}", record.pid)) {
        if !link.to_string_lossy().starts_with("socket:") {
            return Class::NotSocket;
        }
    }
    if record.start() == 0 && looks_like_tls(&record.payload) {
        return Class::Tls;
    }
    Class::Socket
}

/// A TLS record header: content type 20-23 (change cipher spec, alert, handshake, application
/// data) and protocol version 3.x. No HTTP request or response starts with these bytes.
pub fn looks_like_tls(bytes: &[u8]) -> bool {
    matches!(bytes, [20..=23, 3, 0..=4, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_records_are_told_from_http() {
        assert!(looks_like_tls(&[22, 3, 1, 0, 200, 1]));
        assert!(looks_like_tls(&[23, 3, 3, 0, 10]));
        assert!(!looks_like_tls(b"POST /v1/chat/completions HTTP/1.1\r\n"));
        assert!(!looks_like_tls(b"HTTP/1.1 200 OK\r\n"));
        assert!(!looks_like_tls(b"PRI * HTTP/2.0\r\n"));
        assert!(!looks_like_tls(&[22]));
    }

    fn record(pid: u32, payload: &[u8]) -> DataRecord {
        DataRecord {
            timestamp_ns: 0,
            pid,
            tid: pid,
            conn: syscall_conn(3, 0),
            cgroup_id: 0,
            direction: crate::capture::record::Direction::Write,
            comm: "test".into(),
            stream_pos: 0,
            call_len: payload.len() as u64,
            chunk_offset: 0,
            chunk_len: payload.len() as u64,
            payload: payload.to_vec(),
            call_truncated: false,
            last_captured: false,
        }
    }

    #[test]
    fn descriptors_are_classified_by_proc_then_by_their_bytes() {
        use std::os::fd::AsRawFd;
        let file = tempfile::tempfile().unwrap();
        let fd = file.as_raw_fd() as u32;
        let me = std::process::id();
        assert_eq!(
            classify(&record(me, b"POST / HTTP/1.1"), fd),
            Class::NotSocket
        );
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = socket.as_raw_fd() as u32;
        assert_eq!(classify(&record(me, b"POST / HTTP/1.1"), fd), Class::Socket);
        assert_eq!(classify(&record(me, &[22, 3, 1, 0, 5]), fd), Class::Tls);
        // A process already gone: its bytes decide.
        let gone = u32::MAX - 1;
        assert_eq!(
            classify(&record(gone, b"POST / HTTP/1.1"), 3),
            Class::Socket
        );
        assert_eq!(classify(&record(gone, &[23, 3, 3, 0, 5]), 3), Class::Tls);
    }

    #[test]
    fn syscall_streams_are_named_by_their_descriptor() {
        assert_eq!(fd_of(syscall_conn(7, 0)), Some((7, 0)));
        assert_eq!(fd_of(syscall_conn(7, 3)), Some((7, 3)));
        assert_ne!(syscall_conn(7, 0), syscall_conn(7, 1));
        assert_eq!(fd_of(0x7f00_dead_beef), None);
    }

    #[test]
    fn a_plaintext_selector_is_required() {
        let config: PlaintextConfig = toml::from_str("enabled = true").unwrap();
        assert!(config.validate().unwrap_err().contains("needs a selector"));
        let config: PlaintextConfig =
            toml::from_str("enabled = true\ncomm = [\"^uvicorn\"]").unwrap();
        config.validate().unwrap();
        let config: PlaintextConfig = toml::from_str("enabled = true\ncomm = [\"(\"]").unwrap();
        assert!(config.validate().is_err());
    }
}
