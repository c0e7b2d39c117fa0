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
}

impl TlsProbe {
    pub const ALL: [TlsProbe; 6] = [
        Self::Write,
        Self::WriteEx,
        Self::Read,
        Self::ReadEx,
        Self::Shutdown,
        Self::Free,
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
        }
    }

    fn moves_data(self) -> bool {
        matches!(
            self,
            Self::Write | Self::WriteEx | Self::Read | Self::ReadEx
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
    /// The file could not be opened or mapped.
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

/// Reads the TLS probe points of the ELF file at `path`.
pub fn find_tls_symbols(path: &Path) -> Result<TlsSymbols, SymbolError> {
    let io = |source| SymbolError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the map is read-only and dropped before returning; a concurrent truncation of a
    // mapped library would crash its users long before this parser.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let elf = object::File::parse(&*map).map_err(|source| SymbolError::Parse {
        path: path.display().to_string(),
        source,
    })?;
    let mut found = TlsSymbols::default();
    for probe in TlsProbe::ALL {
        let symbol = elf.dynamic_symbols().chain(elf.symbols()).find(|s| {
            s.kind() == SymbolKind::Text
                && !s.is_undefined()
                && s.address() != 0
                && s.name_bytes().ok() == Some(probe.symbol().as_bytes())
        });
        let Some(symbol) = symbol else { continue };
        let Some(section) = symbol
            .section_index()
            .and_then(|i| elf.section_by_index(i).ok())
        else {
            continue;
        };
        let Some((section_offset, _)) = section.file_range() else {
            continue;
        };
        let offset = symbol.address() - section.address() + section_offset;
        found.offsets.push((probe, offset));
    }
    Ok(found)
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
        let symbols = find_tls_symbols(Path::new(LIBSSL)).unwrap();
        assert!(symbols.is_tls_library());
        let found: Vec<_> = symbols.offsets.iter().map(|(p, _)| *p).collect();
        assert_eq!(found, TlsProbe::ALL.to_vec());
        // Offsets are distinct and inside the file.
        let len = std::fs::metadata(LIBSSL).unwrap().len();
        for (_, offset) in &symbols.offsets {
            assert!(*offset > 0 && *offset < len);
        }
    }

    #[test]
    fn a_binary_without_tls_has_no_probe_points() {
        let me = std::env::current_exe().unwrap();
        let symbols = find_tls_symbols(&me).unwrap();
        assert!(!symbols.is_tls_library());
    }

    #[test]
    fn a_non_elf_file_is_a_parse_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libssl.so.9");
        std::fs::write(&path, b"not an elf").unwrap();
        let error = find_tls_symbols(&path).unwrap_err();
        assert!(matches!(error, SymbolError::Parse { .. }), "{error}");
    }
}
