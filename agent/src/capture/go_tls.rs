//! Go's crypto/tls in an executable. Go links its TLS statically and calls it with its own
//! register ABI, so the probes differ from OpenSSL's (see `agent-ebpf/src/go_tls.rs`):
//!
//! - an entry probe on `crypto/tls.(*Conn).Write` and `(*Conn).Read`, found in the symbol
//!   table (Go keeps it unless built with `-ldflags=-s`);
//! - a probe on every `RET` instruction of those two functions, found by disassembling them,
//!   for the return value: a uretprobe would rewrite a return address on a goroutine stack
//!   that Go may move;
//! - `(*Conn).Close` ends a connection's streams.
//!
//! Go 1.17 introduced the register ABI on amd64; older binaries, stripped ones and other
//! architectures are named in one warning and not probed.

use std::path::Path;

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use tracing::warn;

use super::symbols::TlsProbe;

/// The functions probed at entry, and whether their `RET`s are probed too.
const FUNCTIONS: [(TlsProbe, &str, bool); 3] = [
    (TlsProbe::GoWrite, "crypto/tls.(*Conn).Write", true),
    (TlsProbe::GoRead, "crypto/tls.(*Conn).Read", true),
    (TlsProbe::GoClose, "crypto/tls.(*Conn).Close", false),
];

/// The probe points of Go's crypto/tls in a parsed ELF file; empty when it is not a Go
/// program using crypto/tls, or one that cannot be probed (said once, here).
pub fn probes(elf: &object::File, path: &Path) -> Vec<(TlsProbe, u64)> {
    let is_go = elf.section_by_name(".go.buildinfo").is_some();
    if !is_go {
        return Vec::new();
    }
    if elf.architecture() != object::Architecture::X86_64 {
        warn!(path = %path.display(), "a Go program for another architecture than x86_64: its TLS cannot be metered");
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut register_abi = false;
    let mut any_symbol = false;
    for symbol in elf.symbols() {
        any_symbol = true;
        let Ok(name) = symbol.name() else { continue };
        // ABI0 wrappers exist only in register-ABI (Go 1.17+) binaries.
        register_abi |= name.ends_with(".abi0");
        if symbol.kind() != SymbolKind::Text || symbol.address() == 0 {
            continue;
        }
        if let Some(&(probe, _, rets)) = FUNCTIONS.iter().find(|(_, n, _)| *n == name) {
            found.push((
                probe,
                symbol.address(),
                symbol.size(),
                rets,
                symbol.section_index(),
            ));
        }
    }
    if !any_symbol {
        if crate::capture::symbols::embedded_go_tls(elf) {
            warn!(
                path = %path.display(),
                "a stripped Go program (built with -ldflags=-s): its crypto/tls cannot be found, \
                 its TLS traffic is not metered (build it with its symbol table)"
            );
        }
        return Vec::new();
    }
    if found.is_empty() {
        return Vec::new();
    }
    if !register_abi {
        warn!(
            path = %path.display(),
            "a Go program older than Go 1.17 (stack ABI): its TLS traffic is not metered"
        );
        return Vec::new();
    }
    let mut probes = Vec::new();
    for (probe, address, size, rets, section) in found {
        let Some(section) = section.and_then(|i| elf.section_by_index(i).ok()) else {
            continue;
        };
        let (Some((section_offset, _)), Ok(bytes)) = (section.file_range(), section.data()) else {
            continue;
        };
        let file_offset = |vaddr: u64| vaddr - section.address() + section_offset;
        probes.push((probe, file_offset(address)));
        if !rets {
            continue;
        }
        let start = (address - section.address()) as usize;
        let Some(code) = bytes.get(start..start + size as usize) else {
            continue;
        };
        let returns = ret_addresses(code, address);
        if returns.is_empty() {
            warn!(path = %path.display(), function = probe.symbol(), "no RET found in a Go TLS function: not probed");
            probes.pop();
            continue;
        }
        probes.extend(
            returns
                .into_iter()
                .map(|a| (TlsProbe::GoReturn, file_offset(a))),
        );
    }
    probes
}

/// The addresses of the `RET` instructions in a function's machine code starting at `ip`.
pub fn ret_addresses(code: &[u8], ip: u64) -> Vec<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut found = Vec::new();
    for instruction in &mut decoder {
        if instruction.mnemonic() == Mnemonic::Ret {
            found.push(instruction.ip());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_ret_and_only_rets() {
        // push rbp; mov rbp,rsp; test eax,eax; je +2; pop rbp; ret; mov eax,0xc3c3c3c3; pop rbp; ret
        let code = [
            0x55, 0x48, 0x89, 0xe5, 0x85, 0xc0, 0x74, 0x02, 0x5d, 0xc3, 0xb8, 0xc3, 0xc3, 0xc3,
            0xc3, 0x5d, 0xc3,
        ];
        // The 0xc3 bytes inside the mov's immediate are not instructions.
        assert_eq!(ret_addresses(&code, 0x1000), vec![0x1009, 0x1010]);
    }
}
