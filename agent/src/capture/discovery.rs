//! Discovery: which processes exist, what they are, and which TLS-capable files they map.
//!
//! Everything comes from /proc. Paths in /proc/PID/maps are paths in the process's own mount
//! namespace, so files are opened through /proc/PID/root (a container's libssl is not the
//! host's). A file is identified by the (device, inode) the kernel reports in maps, which is
//! what uprobes attach to, so one library shared by a thousand processes is probed once.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use regex::Regex;

/// The (device, inode) of a mapped file: the identity uprobes attach to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u64,
    pub inode: u64,
}

/// A file a process maps that may hold TLS functions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub key: FileKey,
    /// Path inside the process's mount namespace, as maps shows it.
    pub path: PathBuf,
    /// A path that opens the same file from the agent's namespace.
    pub host_path: PathBuf,
    pub kind: CandidateKind,
}

/// Why a mapped file is of interest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CandidateKind {
    /// The process's executable: checked for a statically linked OpenSSL/BoringSSL.
    Executable,
    /// A library whose name looks like a TLS library.
    TlsLibrary,
    /// The dynamic loader: its `_dl_debug_state` says when libraries were loaded.
    Loader,
}

/// What the selector and the attach stage need to know about one process.
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<PathBuf>,
    /// cgroup v2 path (the `0::` line of /proc/PID/cgroup).
    pub cgroup: Option<String>,
    pub candidates: Vec<Candidate>,
}

/// Reads /proc.
#[derive(Clone, Debug)]
pub struct ProcScanner {
    proc_root: PathBuf,
    library_pattern: Regex,
    loader_pattern: Regex,
}

impl ProcScanner {
    pub fn new(proc_root: impl Into<PathBuf>, library_pattern: Regex) -> Self {
        Self {
            proc_root: proc_root.into(),
            library_pattern,
            loader_pattern: Regex::new(r"^ld-(linux|musl)[^/]*\.so(\.[0-9]+)*$").expect("valid"),
        }
    }

    /// Every numeric entry of /proc (one per process).
    pub fn pids(&self) -> Vec<u32> {
        let Ok(entries) = fs::read_dir(&self.proc_root) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// Inspects one process. `None` when it is gone (or a kernel thread, which maps nothing).
    pub fn inspect(&self, pid: u32) -> Option<ProcessInfo> {
        let dir = self.proc_root.join(pid.to_string());
        let maps = fs::read_to_string(dir.join("maps")).ok()?;
        let comm = fs::read_to_string(dir.join("comm"))
            .ok()?
            .trim_end()
            .to_string();
        let exe = fs::read_link(dir.join("exe")).ok();
        let cgroup = fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|text| parse_cgroup_v2(&text));
        let candidates = self.candidates(&dir, &maps, exe.as_deref());
        Some(ProcessInfo {
            pid,
            comm,
            exe,
            cgroup,
            candidates,
        })
    }

    fn candidates(&self, dir: &Path, maps: &str, exe: Option<&Path>) -> Vec<Candidate> {
        let mut found: HashMap<FileKey, Candidate> = HashMap::new();
        for line in maps.lines() {
            let Some(mapping) = parse_maps_line(line) else {
                continue;
            };
            if found.contains_key(&mapping.key) {
                continue;
            }
            let name = Path::new(mapping.path)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("");
            let kind = if exe == Some(Path::new(mapping.path)) {
                CandidateKind::Executable
            } else if self.library_pattern.is_match(name) {
                CandidateKind::TlsLibrary
            } else if self.loader_pattern.is_match(name) {
                CandidateKind::Loader
            } else {
                continue;
            };
            let host_path = if mapping.path.ends_with(" (deleted)") {
                // Replaced on disk since it was mapped: only map_files still reaches it.
                dir.join("map_files").join(mapping.range)
            } else {
                dir.join("root").join(mapping.path.trim_start_matches('/'))
            };
            found.insert(
                mapping.key,
                Candidate {
                    key: mapping.key,
                    path: PathBuf::from(mapping.path),
                    host_path,
                    kind,
                },
            );
        }
        let mut candidates: Vec<_> = found.into_values().collect();
        candidates.sort_by_key(|c| c.key);
        candidates
    }
}

struct Mapping<'a> {
    range: &'a str,
    key: FileKey,
    path: &'a str,
}

/// Parses `start-end perms offset major:minor inode path` (path may contain spaces).
fn parse_maps_line(line: &str) -> Option<Mapping<'_>> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let _perms = fields.next()?;
    let _offset = fields.next()?;
    let dev = fields.next()?;
    let inode: u64 = fields.next()?.parse().ok()?;
    let path = fields.next()?.trim_start();
    if inode == 0 || !path.starts_with('/') {
        return None;
    }
    let (major, minor) = dev.split_once(':')?;
    let major = u32::from_str_radix(major, 16).ok()?;
    let minor = u32::from_str_radix(minor, 16).ok()?;
    Some(Mapping {
        range,
        key: FileKey {
            dev: libc::makedev(major, minor),
            inode,
        },
        path,
    })
}

/// The cgroup v2 path of a process from the text of /proc/PID/cgroup.
pub fn parse_cgroup_v2(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> ProcScanner {
        ProcScanner::new(
            "/proc",
            Regex::new(r"^libssl[^/]*\.so(\.[0-9.]+)?$").unwrap(),
        )
    }

    #[test]
    fn parses_maps_lines_with_device_and_inode() {
        let m = parse_maps_line(
            "7f1c2a000000-7f1c2a0a0000 r-xp 00020000 fd:01 1234567 /usr/lib/x86_64-linux-gnu/libssl.so.3",
        )
        .unwrap();
        assert_eq!(m.key.inode, 1234567);
        assert_eq!(m.key.dev, libc::makedev(0xfd, 1));
        assert_eq!(m.path, "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        assert!(parse_maps_line("7f-80 rw-p 00000000 00:00 0 [heap]").is_none());
        let spaced = parse_maps_line("1-2 r--p 0 08:02 9 /opt/my app/libssl.so.3").unwrap();
        assert_eq!(spaced.path, "/opt/my app/libssl.so.3");
    }

    #[test]
    fn reads_the_cgroup_v2_line() {
        let text = "12:cpu,cpuacct:/x\n0::/kubepods.slice/pod1/abc\n";
        assert_eq!(
            parse_cgroup_v2(text).as_deref(),
            Some("/kubepods.slice/pod1/abc")
        );
        assert_eq!(parse_cgroup_v2("1:name=systemd:/\n"), None);
    }

    #[test]
    fn the_library_pattern_takes_every_libssl_soname_only() {
        let s = scanner();
        for name in ["libssl.so.3", "libssl.so.1.1", "libssl.so.0", "libssl.so"] {
            assert!(s.library_pattern.is_match(name), "{name}");
        }
        for name in ["libcrypto.so.3", "libssl.so.3.bak", "notlibssl.so.3"] {
            assert!(!s.library_pattern.is_match(name), "{name}");
        }
    }

    #[test]
    fn inspects_this_process_and_finds_its_executable() {
        let me = scanner()
            .inspect(std::process::id())
            .expect("this process exists");
        assert!(!me.comm.is_empty());
        let exe = me
            .candidates
            .iter()
            .find(|c| c.kind == CandidateKind::Executable)
            .expect("own executable");
        let meta = std::fs::metadata(&exe.host_path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.ino(), exe.key.inode);
        assert!(exe
            .host_path
            .starts_with(format!("/proc/{}/root", std::process::id())));
    }

    #[test]
    fn finds_the_dynamic_loader_of_this_process() {
        let me = scanner().inspect(std::process::id()).unwrap();
        assert!(
            me.candidates
                .iter()
                .any(|c| c.kind == CandidateKind::Loader),
            "{:?}",
            me.candidates
        );
    }

    #[test]
    fn a_gone_process_is_none() {
        assert!(scanner().inspect(u32::MAX - 1).is_none());
    }
}
