//! Finds the TLS entry points in an ELF file (a shared library, or an executable that links
//! OpenSSL statically, like Node.js) and turns them into the file offsets uprobes attach to.
//! Each file is parsed once; the attach stage never asks aya to re-read it per symbol.

use std::{fs::File, path::Path};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

/// A function the agent probes, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsProbe {
    Write,
    WriteEx,
    Read,
    ReadEx,
    Shutdown,
    Free,
    SetFd,
    /// Go's `crypto/tls.(*Conn).Write` (entry).
    GoWrite,
    /// Go's `crypto/tls.(*Conn).Read` (entry).
    GoRead,
    /// A `RET` instruction of Go's `Write` or `Read` (one probe per instruction).
    GoReturn,
    /// Go's `crypto/tls.(*Conn).Close`.
    GoClose,
}

impl TlsProbe {
    pub const ALL: [TlsProbe; 11] = [
        Self::Write,
        Self::WriteEx,
        Self::Read,
        Self::ReadEx,
        Self::Shutdown,
        Self::Free,
        Self::SetFd,
        Self::GoWrite,
        Self::GoRead,
        Self::GoReturn,
        Self::GoClose,
    ];

    /// The OpenSSL/BoringSSL functions, found by symbol name.
    const SSL: [TlsProbe; 7] = [
        Self::Write,
        Self::WriteEx,
        Self::Read,
        Self::ReadEx,
        Self::Shutdown,
        Self::Free,
        Self::SetFd,
    ];

    /// The exported symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Write => "SSL_write",
            Self::WriteEx => "SSL_write_ex",
            Self::Read => "SSL_read",
            Self::ReadEx => "SSL_read_ex",
            Self::Shutdown => "SSL_shutdown",
            Self::Free => "SSL_free",
            Self::SetFd => "SSL_set_fd",
            Self::GoWrite => "crypto/tls.(*Conn).Write",
            Self::GoRead => "crypto/tls.(*Conn).Read",
            Self::GoReturn => "crypto/tls.(*Conn).Write|Read RET",
            Self::GoClose => "crypto/tls.(*Conn).Close",
        }
    }

    /// The eBPF programs attached at this function: the entry program, and the return
    /// program for the data-moving functions.
    pub fn programs(self) -> &'static [&'static str] {
        match self {
            Self::Write => &["ssl_write", "ssl_return"],
            Self::WriteEx => &["ssl_write_ex", "ssl_return"],
            Self::Read => &["ssl_read", "ssl_return"],
            Self::ReadEx => &["ssl_read_ex", "ssl_return"],
            Self::Shutdown => &["ssl_shutdown"],
            Self::Free => &["ssl_free"],
            Self::SetFd => &["ssl_set_fd"],
            Self::GoWrite => &["go_tls_write"],
            Self::GoRead => &["go_tls_read"],
            Self::GoReturn => &["go_tls_return"],
            Self::GoClose => &["go_tls_close"],
        }
    }

    pub(super) fn moves_data(self) -> bool {
        matches!(
            self,
            Self::Write | Self::WriteEx | Self::Read | Self::ReadEx | Self::GoWrite | Self::GoRead
        )
    }
}

/// The probe points found in one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSymbols {
    /// (function, file offset) for each function found.
    pub offsets: Vec<(TlsProbe, u64)>,
}

impl TlsSymbols {
    /// True when at least one data-moving function is there: worth probing.
    pub fn is_tls_library(&self) -> bool {
        self.offsets.iter().any(|(probe, _)| probe.moves_data())
    }
}

/// Why a file could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    /// The file could not be mapped.
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not an ELF object this agent understands.
    #[error("cannot parse {path} as ELF: {source}")]
    Parse {
        path: String,
        #[source]
        source: object::Error,
    },
}

/// Whether a file without TLS symbols has a TLS library linked in anyway (a stripped static
/// build): OpenSSL and BoringSSL leave their source paths in the binary for their error
/// reports. Such a file cannot be probed by symbol; saying so beats silence.
pub fn embedded_tls_library(file: &File) -> Option<&'static str> {
    // SAFETY: read-only map, dropped before returning (as in `find_functions`).
    let map = unsafe { memmap2::Mmap::map(file) }.ok()?;
    // The markers are stored reversed, so this agent's own executable does not contain them.
    let has = |reversed: &[u8]| {
        let needle: Vec<u8> = reversed.iter().rev().copied().collect();
        memchr::memmem::find(&map, &needle).is_some()
    };
    if has(b"/metats/lss") {
        Some("OpenSSL")
    } else if has(b"cc.bil_lss/lss") || has(b"cc.tneilc_ekahsdnah/lss") {
        Some("BoringSSL")
    } else {
        None
    }
}

/// Whether a stripped executable is a Go program with crypto/tls linked in: its package path
/// stays in the binary's type and function name data.
pub fn embedded_go_tls(elf: &object::File) -> bool {
    elf.section_by_name(".gopclntab")
        .or_else(|| elf.section_by_name(".data.rel.ro"))
        .or_else(|| elf.section_by_name(".rodata"))
        .and_then(|s| s.data().ok())
        .is_some_and(|data| memchr::memmem::find(data, b"crypto/tls.(*Conn).Read").is_some())
}

#[cfg(test)]
mod embedded_tests {
    #[test]
    fn the_agent_itself_does_not_look_like_a_stripped_tls_build() {
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        assert_eq!(super::embedded_tls_library(&exe), None);
    }
}

/// Reads the TLS probe points of an open ELF file; `path` only names it in errors.
/// OpenSSL/BoringSSL by symbol, else Go's crypto/tls (see [`super::go_tls`]).
pub fn find_tls_symbols(file: &File, path: &Path) -> Result<TlsSymbols, SymbolError> {
    let names: Vec<&str> = TlsProbe::SSL.iter().map(|p| p.symbol()).collect();
    let offsets = find_functions(file, path, &names)?;
    let symbols = TlsSymbols {
        offsets: TlsProbe::SSL
            .into_iter()
            .zip(offsets)
            .filter_map(|(probe, offset)| Some((probe, offset?)))
            .collect(),
    };
    if symbols.is_tls_library() {
        return Ok(symbols);
    }
    // SAFETY: as in `find_functions`.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(|source| SymbolError::Io {
        path: path.display().to_string(),
        source,
    })?;
    match object::File::parse(&*map) {
        Ok(elf) => Ok(TlsSymbols {
            offsets: super::go_tls::probes(&elf, path),
        }),
        Err(_) => Ok(symbols),
    }
}

/// The file offsets of the functions `names` defined in an open ELF file, in the order
/// asked, `None` for those it does not define. Dynamic symbols are searched first, then the
/// full symbol table (for executables that export nothing, like a static Node.js). `path`
/// only names the file in errors.
pub fn find_functions(
    file: &File,
    path: &Path,
    names: &[&str],
) -> Result<Vec<Option<u64>>, SymbolError> {
    let io = |source| SymbolError::Io {
        path: path.display().to_string(),
        source,
    };
    // SAFETY: the map is read-only and dropped before returning; a concurrent truncation of a
    // mapped library would crash its users long before this parser.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(io)?;
    let elf = object::File::parse(&*map).map_err(|source| SymbolError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    let mut offsets = vec![None; names.len()];
    for symbol in elf.dynamic_symbols().chain(elf.symbols()) {
        if symbol.kind() != SymbolKind::Text || symbol.is_undefined() || symbol.address() == 0 {
            continue;
        }
        let Ok(name) = symbol.name_bytes() else {
            continue;
        };
        let Some(i) = names.iter().position(|n| n.as_bytes() == name) else {
            continue;
        };
        if offsets[i].is_some() {
            continue;
        }
        let Some(section) = symbol
            .section_index()
            .and_then(|i| elf.section_by_index(i).ok())
        else {
            continue;
        };
        if let Some((section_offset, _)) = section.file_range() {
            offsets[i] = Some(symbol.address() - section.address() + section_offset);
        }
        if offsets.iter().all(Option::is_some) {
            break;
        }
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The system OpenSSL every Debian machine has, since curl and Python need it.
    const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

    #[test]
    fn finds_all_entry_points_of_the_system_libssl() {
        if !Path::new(LIBSSL).exists() {
            eprintln!("skipping: {LIBSSL} not installed");
            return;
        }
        let symbols = find_tls_symbols(&File::open(LIBSSL).unwrap(), Path::new(LIBSSL)).unwrap();
        assert!(symbols.is_tls_library());
        let found: Vec<_> = symbols.offsets.iter().map(|(p, _)| *p).collect();
        assert_eq!(found, TlsProbe::SSL.to_vec());
        // Offsets are distinct and inside the file.
        let len = std::fs::metadata(LIBSSL).unwrap().len();
        for (_, offset) in &symbols.offsets {
            assert!(*offset > 0 && *offset < len);
        }
    }

    #[test]
    fn finds_the_loader_hook_in_the_dynamic_loader() {
        let loader = Path::new("/lib64/ld-linux-x86-64.so.2");
        if !loader.exists() {
            eprintln!("skipping: no glibc loader at {}", loader.display());
            return;
        }
        let file = File::open(loader).unwrap();
        let found =
            find_functions(&file, loader, &["_dl_debug_state", "no_such_function"]).unwrap();
        assert!(found[0].is_some());
        assert_eq!(found[1], None);
    }

    #[test]
    fn a_binary_without_tls_has_no_probe_points() {
        let me = std::env::current_exe().unwrap();
        let symbols = find_tls_symbols(&File::open(&me).unwrap(), &me).unwrap();
        assert!(!symbols.is_tls_library());
    }

    #[test]
    fn a_non_elf_file_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libssl.so.9");
        std::fs::write(&path, b"not an elf").unwrap();
        let error = find_tls_symbols(&File::open(&path).unwrap(), &path).unwrap_err();
        assert!(matches!(error, SymbolError::Parse { .. }), "{error}");
    }
}
