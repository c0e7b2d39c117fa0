//! Attaching the TLS probes to files, once per (device, inode).
//!
//! With a selector that takes every process, a library is probed once for all processes: the
//! kernel then traps every process that maps it, including those started later. With a
//! restrictive selector, probes are attached per selected process (the kernel then installs
//! the breakpoint only in that process's memory), so processes outside the selector do not
//! pay for a trap at all.

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
};

use aya::{
    programs::{
        uprobe::{UProbeLinkId, UProbeScope},
        UProbe,
    },
    Ebpf,
};
use tracing::{debug, info, warn};

use super::{
    discovery::{Candidate, FileKey, ProcessInfo},
    symbols::{find_tls_symbols, TlsSymbols},
};

/// What is known about a file.
enum Verdict {
    /// Has TLS entry points at these offsets.
    Tls(TlsSymbols),
    /// Not a TLS library (logged once), or unreadable (logged once).
    Skip,
}

struct Link {
    program: &'static str,
    id: UProbeLinkId,
}

/// Owns the loaded programs and every uprobe link.
pub struct Attacher {
    ebpf: Ebpf,
    all_processes: bool,
    verdicts: HashMap<FileKey, Verdict>,
    /// Links attached for all processes, by file.
    global: HashMap<FileKey, Vec<Link>>,
    /// Links attached for one process, by process and file.
    per_process: HashMap<u32, HashMap<FileKey, Vec<Link>>>,
}

impl Attacher {
    /// `ebpf` must have its uprobe programs loaded already.
    pub fn new(ebpf: Ebpf, all_processes: bool) -> Self {
        Self {
            ebpf,
            all_processes,
            verdicts: HashMap::new(),
            global: HashMap::new(),
            per_process: HashMap::new(),
        }
    }

    /// Files currently probed (for all processes or for at least one).
    pub fn probed_files(&self) -> usize {
        let mut files: HashSet<FileKey> = self.global.keys().copied().collect();
        for per_file in self.per_process.values() {
            files.extend(per_file.keys());
        }
        files.len()
    }

    /// Probes the TLS files of a selected process that are not probed yet.
    pub fn attach_process(&mut self, process: &ProcessInfo) {
        for candidate in &process.candidates {
            if !self.is_tls(candidate, process.pid) {
                continue;
            }
            if self.all_processes {
                if self.global.contains_key(&candidate.key) {
                    continue;
                }
                let links = self.attach_file(candidate, UProbeScope::AllProcesses, "all processes");
                self.global.insert(candidate.key, links);
            } else {
                let Some(pid) = NonZeroU32::new(process.pid) else {
                    continue;
                };
                let known = self
                    .per_process
                    .get(&process.pid)
                    .is_some_and(|files| files.contains_key(&candidate.key));
                if known {
                    continue;
                }
                let scope_name = format!("pid {}", process.pid);
                let links = self.attach_file(candidate, UProbeScope::OneProcess(pid), &scope_name);
                self.per_process
                    .entry(process.pid)
                    .or_default()
                    .insert(candidate.key, links);
            }
        }
    }

    /// Drops the probes attached for a process that exited.
    pub fn process_exited(&mut self, pid: u32) {
        if let Some(files) = self.per_process.remove(&pid) {
            for links in files.into_values() {
                self.detach(links);
            }
        }
    }

    /// Drops global probes on files no live process maps any more.
    pub fn retain_files(&mut self, live: &HashSet<FileKey>) {
        let dead: Vec<FileKey> = self
            .global
            .keys()
            .filter(|key| !live.contains(key))
            .copied()
            .collect();
        for key in dead {
            if let Some(links) = self.global.remove(&key) {
                debug!(
                    dev = key.dev,
                    inode = key.inode,
                    "no process maps the file any more: detaching"
                );
                self.detach(links);
            }
        }
        self.verdicts.retain(|key, _| live.contains(key));
    }

    fn is_tls(&mut self, candidate: &Candidate, pid: u32) -> bool {
        let verdict = self.verdicts.entry(candidate.key).or_insert_with(|| {
            match find_tls_symbols(&candidate.host_path) {
                Ok(symbols) if symbols.is_tls_library() => Verdict::Tls(symbols),
                Ok(_) => {
                    // Executables without a static OpenSSL are the common case: not worth a line.
                    if !candidate.is_executable {
                        info!(
                            path = %candidate.path.display(),
                            pid,
                            "skipping library without SSL_read/SSL_write symbols"
                        );
                    }
                    Verdict::Skip
                }
                Err(error) => {
                    warn!(path = %candidate.path.display(), pid, %error, "skipping unreadable file");
                    Verdict::Skip
                }
            }
        });
        matches!(verdict, Verdict::Tls(_))
    }

    fn attach_file(
        &mut self,
        candidate: &Candidate,
        scope: UProbeScope,
        scope_name: &str,
    ) -> Vec<Link> {
        let Some(Verdict::Tls(symbols)) = self.verdicts.get(&candidate.key) else {
            return Vec::new();
        };
        let mut links = Vec::new();
        let mut failures = Vec::new();
        for &(probe, offset) in &symbols.offsets {
            for &program in probe.programs() {
                let uprobe: &mut UProbe =
                    match self.ebpf.program_mut(program).map(TryInto::try_into) {
                        Some(Ok(p)) => p,
                        _ => {
                            failures.push(format!("{program}: not in the eBPF object"));
                            continue;
                        }
                    };
                match uprobe.attach(offset, &candidate.host_path, scope) {
                    Ok(id) => links.push(Link { program, id }),
                    Err(error) => failures.push(format!(
                        "{program}@{}: {}",
                        probe.symbol(),
                        error_chain(&error)
                    )),
                }
            }
        }
        let functions: Vec<&str> = symbols.offsets.iter().map(|(p, _)| p.symbol()).collect();
        if failures.is_empty() {
            info!(
                path = %candidate.path.display(),
                dev = candidate.key.dev,
                inode = candidate.key.inode,
                scope = scope_name,
                functions = %functions.join(","),
                "attached TLS probes"
            );
        } else if matches!(scope, UProbeScope::OneProcess(pid) if !process_alive(pid.get())) {
            // The process exited while we attached: nothing was missed.
            debug!(path = %candidate.path.display(), scope = scope_name, "process gone before attach");
        } else {
            warn!(
                path = %candidate.path.display(),
                inode = candidate.key.inode,
                scope = scope_name,
                failures = %failures.join("; "),
                attached = links.len(),
                "some TLS probes could not be attached"
            );
        }
        links
    }

    fn detach(&mut self, links: Vec<Link>) {
        for link in links {
            if let Some(Ok(uprobe)) = self
                .ebpf
                .program_mut(link.program)
                .map(TryInto::<&mut UProbe>::try_into)
            {
                // A process that already exited took its breakpoints with it: nothing to report.
                let _ = uprobe.detach(link.id);
            }
        }
    }
}

/// An error and its sources, `a: b: c`, for one log field.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
