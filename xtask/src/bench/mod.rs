//! `cargo xtask bench`: what the agent costs the programs it watches.
//!
//! A probe's price is paid by the traced process, inside its SSL_write/SSL_read calls, so the
//! measure is a TLS loop's time per call without and with the agent attached. The machines are
//! shared and noisy, so runs without and with alternate (drift hits both alike), each figure is
//! a median of three, and overhead is quoted as a ratio within one invocation, never against a
//! figure from another day. A long run at the smallest size then shows the event rate the agent
//! sustains and whether anything was dropped on the way.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::agent::{self, Launch};
use crate::fixtures::{self, Cert};
use crate::util::{self, Steps};

mod go;
mod report;
mod stats;
mod syscalls;

use report::SizeResult;
use stats::AgentStats;

/// Write sizes measured: a small request and a full 16 KiB TLS record.
const SIZES: [u32; 2] = [64, 16384];
/// Alternating without/with pairs per size.
pub const ROUNDS: usize = 3;
/// The event-rate run makes this many times `--iterations` calls.
const RATE_MULTIPLIER: u64 = 10;
/// A generous ceiling for one tls_loop run (a hung loop must not hang the benchmark).
const LOOP_TIMEOUT: Duration = Duration::from_secs(600);

pub fn run(iterations: u64) -> Result<()> {
    util::require_root("bench")?;
    crate::setup::run(true)?;
    agent::build(true)?;

    let dir = util::fresh_work_dir("bench")?;
    let mut steps = Steps::new("bench", 5 + 3 * SIZES.len());

    let step = steps.start("compile tests/fixtures/tls_loop.c");
    let tls_loop = TlsLoop::build(&dir)?;
    step.ok(tls_loop.binary.display().to_string());

    let step = steps.start("compile tests/fixtures/sock_loop.c");
    let sock_loop = syscalls::build(&dir)?;
    step.ok(sock_loop.binary.display().to_string());

    let mut bench = Bench {
        dir: &dir,
        tls_loop: &tls_loop,
        max_rss_kib: 0,
    };
    let mut sizes = Vec::new();
    for size in SIZES {
        let step = steps.start(&format!(
            "{size} B writes: {ROUNDS} rounds without/with the agent, {iterations} calls each"
        ));
        let result = bench.overhead(size, iterations, &step)?;
        step.ok(format!(
            "wall {:.1}x, cpu {:.1}x",
            result.wall_ratio(),
            result.cpu_ratio()
        ));
        sizes.push(result);
    }

    let rate_iterations = iterations * RATE_MULTIPLIER;
    let step = steps.start(&format!(
        "event rate: 64 B writes, {rate_iterations} calls with the agent"
    ));
    let rate = bench.event_rate(rate_iterations)?;
    step.ok(format!(
        "{:.0} events/s, drops: {}",
        rate.events_per_second,
        rate.stats.drops()
    ));

    let mut plaintext = Vec::new();
    for size in SIZES {
        let step = steps.start(&format!(
            "{size} B plaintext writes: {ROUNDS} rounds without / captured / other process captured"
        ));
        let result = syscalls::overhead(&mut bench, &sock_loop, size, iterations, &step)?;
        step.ok(format!(
            "captured {:.2}x, tracepoints only {:.2}x (wall)",
            result.ratio(&result.captured),
            result.ratio(&result.other)
        ));
        plaintext.push(result);
    }

    let step = steps.start("build tests/fixtures/go/openai_go.go (Go from target/pyenv)");
    let go_loop = go::build(&dir)?;
    step.ok(go_loop.binary.display().to_string());
    let mut go_sizes = Vec::new();
    for size in SIZES {
        let step = steps.start(&format!(
            "{size} B Go crypto/tls writes: {ROUNDS} rounds without/with the agent"
        ));
        let result = bench.overhead_of(&go_loop, "go", size, iterations, &step)?;
        step.ok(format!(
            "wall {:.2}x, cpu {:.2}x",
            result.wall_ratio(),
            result.cpu_ratio()
        ));
        go_sizes.push(result);
    }

    let step = steps.start("write target/bench/results.md");
    let mut report = report::report(iterations, &sizes, &rate, bench.max_rss_kib);
    report.push_str(&syscalls::report(&plaintext));
    report.push_str(&go::report(&go_sizes));
    let path = dir.join("results.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    step.ok(path.display().to_string());
    println!("\n{report}");
    Ok(())
}

/// A compiled loop fixture and its fixed arguments.
pub struct TlsLoop {
    pub binary: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

/// One line of tls_loop output.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct LoopResult {
    pub iterations: u64,
    pub wall_ns_per_call: f64,
    pub cpu_ns_per_call: f64,
}

impl TlsLoop {
    fn build(dir: &Path) -> Result<Self> {
        let source = fixtures::require("tls_loop.c")?;
        let binary = dir.join("tls_loop");
        util::output(
            util::command("gcc")
                .args(["-O2", "-o"])
                .arg(&binary)
                .arg(&source)
                .args(["-lssl", "-lcrypto", "-lpthread"]),
        )
        .context(
            "compiling tls_loop.c (needs gcc and libssl-dev: `cargo xtask setup --test-deps`)",
        )?;
        let Cert { cert, key } = fixtures::self_signed_cert(dir)?;
        Ok(Self {
            binary,
            args: vec!["--cert".into(), cert.into(), "--key".into(), key.into()],
        })
    }

    pub fn run(&self, size: u32, iterations: u64) -> Result<LoopResult> {
        // Both threads on CPU 0: on a VM, cross-CPU wake-ups dominate and swing the per-call
        // time several-fold; pinned, the loop is steady and the agent has the other CPU.
        let mut cmd = util::command("taskset");
        cmd.args(["-c", "0"]).arg(&self.binary);
        cmd.args(&self.args)
            .args(["--size", &size.to_string()])
            .args(["--iterations", &iterations.to_string()]);
        let stdout = util::output_with_timeout(&mut cmd, LOOP_TIMEOUT)?;
        stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .with_context(|| {
                format!(
                    "`{}` printed no result line: {stdout:?}",
                    util::display(&cmd)
                )
            })
    }
}

pub struct Bench<'a> {
    pub dir: &'a Path,
    tls_loop: &'a TlsLoop,
    max_rss_kib: u64,
}

/// The long run with the agent attached.
pub struct RateResult {
    pub iterations: u64,
    pub events_per_second: f64,
    pub stats: AgentStats,
}

impl Bench<'_> {
    fn overhead(&mut self, size: u32, iterations: u64, step: &util::Step) -> Result<SizeResult> {
        let tls_loop = self.tls_loop;
        self.overhead_of(tls_loop, "tls", size, iterations, step)
    }

    /// Alternating rounds of `program` without and with the agent (default configuration).
    pub fn overhead_of(
        &mut self,
        program: &TlsLoop,
        tag: &str,
        size: u32,
        iterations: u64,
        step: &util::Step,
    ) -> Result<SizeResult> {
        let mut result = SizeResult {
            size,
            without: Vec::new(),
            with: Vec::new(),
        };
        for round in 1..=ROUNDS {
            let without = program.run(size, iterations)?;
            let (with, stats) = self.with_agent(
                &format!("{tag}-{size}-{round}"),
                program,
                None,
                size,
                iterations,
            )?;
            step.note(&format!(
                "round {round}: wall {:.1} / {:.1} us, cpu {:.1} / {:.1} us per call (without / with), agent drops: {}",
                without.wall_ns_per_call / 1e3,
                with.wall_ns_per_call / 1e3,
                without.cpu_ns_per_call / 1e3,
                with.cpu_ns_per_call / 1e3,
                stats.drops()
            ));
            result.without.push(without);
            result.with.push(with);
        }
        Ok(result)
    }

    fn event_rate(&mut self, iterations: u64) -> Result<RateResult> {
        let tls_loop = self.tls_loop;
        let (run, stats) = self.with_agent("rate", tls_loop, None, 64, iterations)?;
        let wall_seconds = run.wall_ns_per_call * run.iterations as f64 / 1e9;
        Ok(RateResult {
            iterations,
            events_per_second: stats.events as f64 / wall_seconds,
            stats,
        })
    }

    /// One loop run with the release agent attached (with this config), and the agent's
    /// counters.
    pub fn with_agent(
        &mut self,
        tag: &str,
        program: &TlsLoop,
        config: Option<&Path>,
        size: u32,
        iterations: u64,
    ) -> Result<(LoopResult, AgentStats)> {
        let stats_file = self.dir.join(format!("agent-{tag}.stats.json"));
        let mut agent = agent::start(Launch {
            dir: self.dir,
            tag,
            stdout: Stdio::null(),
            stats_file: Some(&stats_file),
            command: &["capture", "--json"],
            config,
            env: &[],
        })?;
        let run = program.run(size, iterations)?;
        let status = agent.interrupt(agent::STOP_TIMEOUT)?;
        if !status.success() {
            bail!(
                "the agent {} after SIGINT\n{}",
                util::describe(status),
                agent.stderr_tail()
            );
        }
        let stats = AgentStats::read(&stats_file)?;
        self.max_rss_kib = self.max_rss_kib.max(stats.max_rss_kib);
        Ok((run, stats))
    }
}
