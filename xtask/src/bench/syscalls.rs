//! What plaintext capture at the socket syscalls costs (issue 8): `sock_loop` (plain TCP
//! write/read round trips) without the agent, with the agent capturing it (`[plaintext]`
//! selecting its comm), and with the agent capturing only another program: the tax the
//! `sys_enter`/`sys_exit` tracepoints put on every process of the node while attached (one
//! pid lookup per syscall). Alternating rounds, medians, ratios within one invocation.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::{report::SizeResult, Bench, LoopResult, TlsLoop, ROUNDS};
use crate::{fixtures, util};

pub struct SyscallResult {
    pub size: u32,
    pub without: Vec<LoopResult>,
    /// The agent captures the loop's syscalls.
    pub captured: Vec<LoopResult>,
    /// The agent's tracepoints are attached, but only another program is captured.
    pub other: Vec<LoopResult>,
}

impl SyscallResult {
    /// Wall time with / without.
    pub fn ratio(&self, with: &[LoopResult]) -> f64 {
        SizeResult::wall(with) / SizeResult::wall(&self.without)
    }
}

pub fn build(dir: &Path) -> Result<TlsLoop> {
    let source = fixtures::require("sock_loop.c")?;
    let binary = dir.join("sock_loop");
    util::output(
        util::command("gcc")
            .args(["-O2", "-o"])
            .arg(&binary)
            .arg(&source)
            .arg("-lpthread"),
    )
    .context("compiling sock_loop.c (needs gcc: `cargo xtask setup --test-deps`)")?;
    Ok(TlsLoop {
        binary,
        args: Vec::new(),
    })
}

pub fn overhead(
    bench: &mut Bench,
    sock_loop: &TlsLoop,
    size: u32,
    iterations: u64,
    step: &util::Step,
) -> Result<SyscallResult> {
    let config = |name: &str, comm: &str| -> Result<std::path::PathBuf> {
        let path = bench.dir.join(name);
        std::fs::write(
            &path,
            format!("[plaintext]\nenabled = true\ncomm = [\"^{comm}$\"]\n"),
        )?;
        Ok(path)
    };
    let captured_config = config("plaintext-captured.toml", "sock_loop")?;
    let other_config = config("plaintext-other.toml", "no-such-program")?;
    let mut result = SyscallResult {
        size,
        without: Vec::new(),
        captured: Vec::new(),
        other: Vec::new(),
    };
    for round in 1..=ROUNDS {
        let without = sock_loop.run(size, iterations)?;
        let tag = format!("plain-{size}-{round}");
        let (captured, stats) =
            bench.with_agent(&tag, sock_loop, Some(&captured_config), size, iterations)?;
        let tag = format!("plain-other-{size}-{round}");
        let (other, _) =
            bench.with_agent(&tag, sock_loop, Some(&other_config), size, iterations)?;
        step.note(&format!(
            "round {round}: wall {:.1} / {:.1} / {:.1} us per call (without / captured / other), \
             events {}, drops {}",
            without.wall_ns_per_call / 1e3,
            captured.wall_ns_per_call / 1e3,
            other.wall_ns_per_call / 1e3,
            stats.events,
            stats.drops()
        ));
        result.without.push(without);
        result.captured.push(captured);
        result.other.push(other);
    }
    Ok(result)
}

pub fn report(results: &[SyscallResult]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Plaintext capture at the socket syscalls\n\nsock_loop: the same round trips over \
         plain TCP (write/read). Medians of {ROUNDS} alternating runs: without the agent, with the \
         agent capturing sock_loop (`[plaintext]`), and with the agent capturing only another \
         program (the tracepoints' tax on every process while plaintext capture is on).\n"
    );
    let _ = writeln!(
        md,
        "| size (B) | wall µs/call without | captured | ratio | other captured | ratio | CPU ratio captured |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {:.2} | {:.2}x | {:.2} | {:.2}x | {:.2}x |",
            r.size,
            SizeResult::wall(&r.without),
            SizeResult::wall(&r.captured),
            r.ratio(&r.captured),
            SizeResult::wall(&r.other),
            r.ratio(&r.other),
            SizeResult::cpu(&r.captured) / SizeResult::cpu(&r.without),
        );
    }
    md
}
