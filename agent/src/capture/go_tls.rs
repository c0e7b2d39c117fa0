//! Go's crypto/tls in an executable. Go links its TLS statically and calls it with its own
//! register ABI, so the probes differ from OpenSSL's (see `agent-ebpf/src/go_tls.rs`):
//!
//! - an entry probe on `crypto/tls.(*Conn).Write` and `(*Conn).Read`, found in the symbol
//!   table (Go keeps it unless built with `-ldflags=-s`), placed on the conditional jump of
//!   the stack-growth check when the function starts with one (see [`entry_address`]);
//! - a probe on every `RET` instruction of those two functions, found by disassembling them,
//!   for the return value: a uretprobe would rewrite a return address on a goroutine stack
//!   that Go may move;
//! - `(*Conn).Close` ends a connection's streams.
//!
//! Go 1.17 introduced the register ABI on amd64; older binaries, stripped ones and other
//! architectures are named in one warning and not probed.

use std::path::Path;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, Mnemonic, OpAccess, Register,
};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use tracing::warn;

use super::symbols::TlsProbe;

/// The functions probed at entry; the `RET`s of those that move data are probed too.
const FUNCTIONS: [TlsProbe; 3] = [TlsProbe::GoWrite, TlsProbe::GoRead, TlsProbe::GoClose];

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
        if let Some(&probe) = FUNCTIONS.iter().find(|p| p.symbol() == name) {
            found.push((
                probe,
                symbol.address(),
                symbol.size(),
                probe.moves_data(),
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
        let start = (address - section.address()) as usize;
        let code = bytes.get(start..start + size as usize);
        let entry = code.map_or(address, |code| entry_address(code, address));
        probes.push((probe, file_offset(entry)));
        if !rets {
            continue;
        }
        let Some(code) = code else {
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

/// The registers the entry program reads: the receiver, the buffer's pointer and length, the
/// goroutine, and the stack pointer (the frame the call runs in).
const ENTRY_REGISTERS: [Register; 5] = [
    Register::RAX,
    Register::RBX,
    Register::RCX,
    Register::R14,
    Register::RSP,
];
/// Instructions looked at before the stack check's jump.
const PROLOGUE_INSTRUCTIONS: usize = 4;

/// Where the entry probe of a function starting at `ip` goes. A probe on an instruction the
/// kernel cannot emulate (Go's first, `cmp rsp, [r14+16]`) is single-stepped out of line: a
/// second trap on every call. A conditional jump is emulated, and every Go function that can
/// grow its stack reaches one within a few instructions (`jbe` to `runtime.morestack`). The
/// probe goes there when the instructions before it only compute flags or scratch registers
/// (nothing the entry program reads), fall through, and no branch of the function lands
/// between the entry and that jump (which would run the probe twice or skip it); otherwise
/// on the entry. `morestack` returns to the entry, as it did before: the same arguments
/// again.
pub fn entry_address(code: &[u8], ip: u64) -> u64 {
    let mut info = InstructionInfoFactory::new();
    let mut jump = None;
    let decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    for instruction in decoder.into_iter().take(PROLOGUE_INSTRUCTIONS) {
        if instruction.is_jcc_short_or_near() {
            jump = Some(instruction.ip());
            break;
        }
        let writes_entry_register = info.info(&instruction).used_registers().iter().any(|r| {
            ENTRY_REGISTERS.contains(&r.register().full_register())
                && !matches!(r.access(), OpAccess::Read | OpAccess::CondRead)
        });
        if instruction.is_invalid()
            || instruction.flow_control() != FlowControl::Next
            || writes_entry_register
        {
            return ip;
        }
    }
    let Some(jump) = jump else { return ip };
    let lands_in_prologue = Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
        .into_iter()
        .any(|i| (ip + 1..=jump).contains(&i.near_branch_target()));
    if lands_in_prologue {
        ip
    } else {
        jump
    }
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

    /// `(*Conn).Write` of Go 1.22: `cmp rsp,[r14+0x10]; jbe +0x..; push rbp; mov rbp,rsp; ...`
    /// with `call runtime.morestack_noctxt; jmp <entry>` at the end.
    const GO_PROLOGUE: [u8; 16] = [
        0x49, 0x3b, 0x66, 0x10, // cmp rsp,[r14+0x10]
        0x76, 0x08, // jbe +8 (to the morestack path at the end)
        0x55, // push rbp
        0x48, 0x89, 0xe5, // mov rbp,rsp
        0x5d, // pop rbp
        0x31, 0xc0, // xor eax,eax
        0xc3, // ret
        0xeb, 0xf0, // jmp -16 (to the entry: the morestack path)
    ];

    #[test]
    fn the_entry_probe_goes_on_the_stack_check_jump() {
        assert_eq!(entry_address(&GO_PROLOGUE, 0x1000), 0x1004);
    }

    #[test]
    fn a_large_frame_check_through_r12_is_passed_too() {
        // lea r12,[rsp-0x100]; cmp r12,[r14+0x10]; jbe +1; ret; ret
        let code = [
            0x4c, 0x8d, 0xa4, 0x24, 0x00, 0xff, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x76, 0x01,
            0xc3, 0xc3,
        ];
        assert_eq!(entry_address(&code, 0x1000), 0x100c);
    }

    #[test]
    fn the_entry_stays_where_an_argument_register_changes_or_a_branch_lands() {
        // mov rax,rbx; jbe +0; ret: RAX (the receiver) is written before the jump.
        let writes_rax = [0x48, 0x89, 0xd8, 0x76, 0x00, 0xc3];
        assert_eq!(entry_address(&writes_rax, 0x1000), 0x1000);
        // cmp rsp,[r14+0x10]; jbe +0; ret; jmp -3 (onto the jbe): the probe would run twice.
        let lands = [0x49, 0x3b, 0x66, 0x10, 0x76, 0x00, 0xc3, 0xeb, 0xfb];
        assert_eq!(entry_address(&lands, 0x1000), 0x1000);
        // push rbp; mov rbp,rsp; ...: no stack check (a leaf), RSP written first.
        let leaf = [0x55, 0x48, 0x89, 0xe5, 0x76, 0x00, 0xc3];
        assert_eq!(entry_address(&leaf, 0x1000), 0x1000);
        // ud2: not an instruction that falls through.
        assert_eq!(entry_address(&[0x0f, 0x0b, 0xff], 0x1000), 0x1000);
    }
}
