//! Is a uprobe installed in a process? A uprobe replaces an instruction in the process's copy
//! of the library's code (int3, or a call on kernels that optimise uprobes), so the function's
//! bytes in `/proc/PID/mem` differ from the same bytes in the file. Comparing the whole function
//! (not just its first byte) also catches probes placed after the entry.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::wait;

/// The functions the agent probes in OpenSSL-compatible libraries.
pub const SSL_FUNCTIONS: [&str; 4] = ["SSL_write", "SSL_write_ex", "SSL_read", "SSL_read_ex"];

/// At most this many bytes of a function are compared.
const MAX_COMPARE: u64 = 4096;

/// One line of /proc/PID/maps that maps a file.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    perms: String,
    offset: u64,
    path: String,
}

/// A function's bytes in memory and in the file.
#[derive(Debug)]
pub struct FunctionCode {
    pub symbol: String,
    pub address: u64,
    pub file_offset: u64,
    pub in_memory: Vec<u8>,
    pub in_file: Vec<u8>,
}

impl FunctionCode {
    /// Whether the process's code differs from the file (a probe is installed).
    pub fn is_patched(&self) -> bool {
        self.in_memory != self.in_file
    }
}

/// Reads `symbols` of the library named `lib_name` (file name, e.g. `libssl.so.3`) mapped by `pid`.
pub fn function_code(pid: u32, lib_name: &str, symbols: &[&str]) -> Vec<FunctionCode> {
    let maps = read_maps(pid);
    let lib: Vec<&Mapping> = maps
        .iter()
        .filter(|m| {
            Path::new(&m.path)
                .file_name()
                .is_some_and(|n| n == lib_name)
        })
        .collect();
    assert!(!lib.is_empty(), "pid {pid} has no mapping of {lib_name}");
    // Read the library as the process sees it (its mount namespace).
    let file_path = PathBuf::from(format!("/proc/{pid}/root{}", lib[0].path));
    let file =
        File::open(&file_path).unwrap_or_else(|e| panic!("open {}: {e}", file_path.display()));
    let mem_path = format!("/proc/{pid}/mem");
    let mem = File::open(&mem_path).unwrap_or_else(|e| panic!("open {mem_path}: {e}"));
    let table = dynamic_symbols(&file_path);
    let loads = load_segments(&file);
    symbols
        .iter()
        .map(|&symbol| {
            let (vaddr, size) = *table
                .iter()
                .find(|(name, _)| name == symbol)
                .map(|(_, value)| value)
                .unwrap_or_else(|| panic!("{} does not define {symbol}", file_path.display()));
            let file_offset = loads
                .iter()
                .find(|s| vaddr >= s.vaddr && vaddr < s.vaddr + s.filesz)
                .map(|s| vaddr - s.vaddr + s.offset)
                .unwrap_or_else(|| panic!("{symbol} at {vaddr:#x} is in no PT_LOAD segment"));
            let map = lib
                .iter()
                .find(|m| file_offset >= m.offset && file_offset < m.offset + (m.end - m.start))
                .unwrap_or_else(|| {
                    panic!("{symbol} (file offset {file_offset:#x}) is not mapped by pid {pid}")
                });
            assert!(
                map.perms.contains('x'),
                "{symbol} lies in a non-executable mapping {map:?}"
            );
            let address = map.start + (file_offset - map.offset);
            let len = size.clamp(1, MAX_COMPARE) as usize;
            let (mut in_memory, mut in_file) = (vec![0; len], vec![0; len]);
            mem.read_exact_at(&mut in_memory, address)
                .unwrap_or_else(|e| panic!("read {mem_path} at {address:#x}: {e}"));
            file.read_exact_at(&mut in_file, file_offset)
                .expect("read the library file");
            FunctionCode {
                symbol: symbol.to_string(),
                address,
                file_offset,
                in_memory,
                in_file,
            }
        })
        .collect()
}

fn read_maps(pid: u32) -> Vec<Mapping> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read /proc/PID/maps");
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || !f[5].starts_with('/') {
                return None;
            }
            let (start, end) = f[0].split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                perms: f[1].to_string(),
                offset: u64::from_str_radix(f[2], 16).ok()?,
                path: f[5..].join(" "),
            })
        })
        .collect()
}

/// Defined dynamic symbols with (value, size), from `nm -D --defined-only -S`.
fn dynamic_symbols(lib: &Path) -> Vec<(String, (u64, u64))> {
    let finished = wait::run(
        Command::new("nm")
            .args(["-D", "--defined-only", "-S"])
            .arg(lib),
        Duration::from_secs(60),
    );
    finished.assert_success("nm -D");
    finished
        .stdout
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 4 {
                return None;
            }
            let name = f[3].split('@').next()?.to_string();
            let value = u64::from_str_radix(f[0], 16).ok()?;
            let size = u64::from_str_radix(f[1], 16).ok()?;
            Some((name, (value, size)))
        })
        .collect()
}

struct LoadSegment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// The PT_LOAD program headers of a little-endian ELF64 file.
fn load_segments(file: &File) -> Vec<LoadSegment> {
    let mut header = [0u8; 64];
    file.read_exact_at(&mut header, 0)
        .expect("read the ELF header");
    assert!(
        header.starts_with(b"\x7fELF") && header[4] == 2 && header[5] == 1,
        "not an ELF64 LE file"
    );
    let u16_at = |b: &[u8], at: usize| u64::from(u16::from_le_bytes([b[at], b[at + 1]]));
    let u64_at =
        |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 32),
        u16_at(&header, 54),
        u16_at(&header, 56),
    );
    (0..phnum)
        .filter_map(|i| {
            let mut ph = [0u8; 56];
            file.read_exact_at(&mut ph, phoff + i * phentsize)
                .expect("read a program header");
            let p_type = u32::from_le_bytes(ph[0..4].try_into().expect("4 bytes"));
            (p_type == 1).then(|| LoadSegment {
                offset: u64_at(&ph, 8),
                vaddr: u64_at(&ph, 16),
                filesz: u64_at(&ph, 32),
            })
        })
        .collect()
}
