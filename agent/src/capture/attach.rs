//! Attaching the TLS probes to files, once per (device, inode).
//!
//! With a selector that takes every process, a library is probed once for all processes: the
//! kernel then traps every process that maps it, including those started later. With a
//! restrictive selector, probes are attached per selected process (the kernel then installs
//! the breakpoint only in that process's memory), so processes outside the selector do not
//! pay for a trap at all.
//!
//! The dynamic loader of every process is probed too, at `_dl_debug_state` (the hook debuggers
//! use), for all processes: it fires only when libraries are loaded, and tells the agent to
//! look at the process at once, so a new library is probed before the process uses it.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    num::NonZeroU32,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
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
    discovery::{Candidate, CandidateKind, FileKey, ProcessInfo},
    symbols::{find_functions, find_tls_symbols, TlsSymbols},
};

/// The loader function called after each change to the set of loaded libraries.
const LOADER_HOOK: &str = "_dl_debug_state";
/// The program attached there.
pub(crate) const LOADER_PROGRAM: &str = "dl_debug_state";

/// What is known about a file. Files worth probing stay open: uprobes are attached through
/// `/proc/self/fd/N`, which keeps working after the process the file was found in exits.
enum Verdict {
    /// Has TLS entry points at these offsets.
    Tls(TlsSymbols, File),
    /// A dynamic loader with its hook at this offset.
    Loader(u64, File),
    /// Not a TLS library (logged once), or unreadable (logged once).
    Skip,
}

/// A path to an open file that any later `open` (the kernel's, in perf_event_open) resolves
/// to the same inode.
fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
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

    /// Probes the files of a process that are not probed yet: its loader always, its TLS
    /// libraries when it is `selected`.
    pub fn attach_process(&mut self, process: &ProcessInfo, selected: bool) {
        for candidate in &process.candidates {
            match (candidate.kind, self.verdict(candidate, process.pid)) {
                (CandidateKind::Loader, Some(Verdict::Loader(offset, file))) => {
                    let (offset, path) = (*offset, fd_path(file));
                    if !self.global.contains_key(&candidate.key) {
                        let links = self.attach_loader(candidate, &path, offset);
                        self.global.insert(candidate.key, links);
                    }
                }
                (_, Some(Verdict::Tls(..))) if selected => self.attach_tls(candidate, process.pid),
                _ => {}
            }
        }
    }

    fn attach_tls(&mut self, candidate: &Candidate, pid: u32) {
        if self.all_processes {
            if !self.global.contains_key(&candidate.key) {
                let links = self.attach_file(candidate, UProbeScope::AllProcesses, "all processes");
                self.global.insert(candidate.key, links);
            }
            return;
        }
        let Some(nonzero_pid) = NonZeroU32::new(pid) else {
            return;
        };
        let known = self
            .per_process
            .get(&pid)
            .is_some_and(|files| files.contains_key(&candidate.key));
        if !known {
            let scope_name = format!("pid {pid}");
            let links =
                self.attach_file(candidate, UProbeScope::OneProcess(nonzero_pid), &scope_name);
            self.per_process
                .entry(pid)
                .or_default()
                .insert(candidate.key, links);
        }
    }

    fn attach_loader(&mut self, candidate: &Candidate, path: &Path, offset: u64) -> Vec<Link> {
        let attached = self
            .ebpf
            .program_mut(LOADER_PROGRAM)
            .map(TryInto::<&mut UProbe>::try_into)
            .and_then(Result::ok)
            .map(|uprobe| uprobe.attach(offset, path, UProbeScope::AllProcesses));
        match attached {
            Some(Ok(id)) => {
                info!(path = %candidate.path.display(), inode = candidate.key.inode, "attached loader hook");
                vec![Link {
                    program: LOADER_PROGRAM,
                    id,
                }]
            }
            Some(Err(error)) => {
                warn!(path = %candidate.path.display(), error = %error_chain(&error),
                    "cannot attach the loader hook: libraries loaded later are found by rescans only");
                Vec::new()
            }
            None => Vec::new(),
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

    /// What the file is, inspecting it the first time it is seen (and logging a skip once).
    /// `None` when the process exited before its file could be opened: the next process
    /// that maps the file gets the next try.
    fn verdict(&mut self, candidate: &Candidate, pid: u32) -> Option<&Verdict> {
        if !self.verdicts.contains_key(&candidate.key) {
            let file = match File::open(&candidate.host_path) {
                Ok(file) => file,
                Err(_) if !process_alive(pid) => return None,
                Err(error) => {
                    warn!(path = %candidate.path.display(), pid, %error, "skipping unreadable file");
                    self.verdicts.insert(candidate.key, Verdict::Skip);
                    return self.verdicts.get(&candidate.key);
                }
            };
            let verdict = inspect(candidate, file, pid);
            self.verdicts.insert(candidate.key, verdict);
        }
        self.verdicts.get(&candidate.key)
    }

    fn attach_file(
        &mut self,
        candidate: &Candidate,
        scope: UProbeScope,
        scope_name: &str,
    ) -> Vec<Link> {
        let Some(Verdict::Tls(symbols, file)) = self.verdicts.get(&candidate.key) else {
            return Vec::new();
        };
        let path = fd_path(file);
        let started = std::time::Instant::now();
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
                match uprobe.attach(offset, &path, scope) {
                    Ok(id) => links.push(Link { program, id }),
                    Err(error) => failures.push(format!(
                        "{program}@{}: {}",
                        probe.symbol(),
                        error_chain(&error)
                    )),
                }
            }
        }
        let mut functions: Vec<&str> = symbols.offsets.iter().map(|(p, _)| p.symbol()).collect();
        // Go's RET probes are many points of one kind: named once.
        let mut seen = std::collections::HashSet::new();
        functions.retain(|f| seen.insert(*f));
        if failures.is_empty() {
            info!(
                path = %candidate.path.display(),
                dev = candidate.key.dev,
                inode = candidate.key.inode,
                scope = scope_name,
                functions = %functions.join(","),
                elapsed_ms = started.elapsed().as_millis() as u64,
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

/// Reads what an opened candidate file is.
fn inspect(candidate: &Candidate, file: File, pid: u32) -> Verdict {
    let path = &candidate.path;
    if candidate.kind == CandidateKind::Loader {
        return match find_functions(&file, path, &[LOADER_HOOK]) {
            Ok(found) => found[0].map_or(Verdict::Skip, |offset| Verdict::Loader(offset, file)),
            Err(_) => Verdict::Skip,
        };
    }
    match find_tls_symbols(&file, path) {
        Ok(symbols) if symbols.is_tls_library() => Verdict::Tls(symbols, file),
        Ok(_) => {
            match candidate.kind {
                CandidateKind::TlsLibrary => info!(
                    path = %path.display(),
                    pid,
                    "skipping library without SSL_read/SSL_write symbols"
                ),
                // Executables without a TLS library inside are the common case: no line. One
                // with a stripped static build gets one, once per file.
                _ => {
                    if let Some(library) = crate::capture::symbols::embedded_tls_library(&file) {
                        warn!(
                            path = %path.display(),
                            pid,
                            library,
                            "this executable links {library} statically with its symbols stripped: its \
                             TLS traffic cannot be metered (build it with symbols, or link the TLS \
                             library dynamically)"
                        );
                    }
                }
            }
            Verdict::Skip
        }
        Err(error) => {
            warn!(path = %path.display(), pid, %error, "skipping file that is not a readable ELF object");
            Verdict::Skip
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

/// Whether the process still has a root to open files through (a zombie or an exiting
/// process has none, though its /proc entry may still be there).
fn process_alive(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/root")).is_ok()
}
