//! The agent binary as the other commands see it: build it, start it, wait until it is ready.
//!
//! The agent's build.rs compiles the eBPF object through aya-build, so `cargo build -p
//! tokenmeter-agent` is the whole build once `cargo xtask setup` has installed the nightly
//! rust-src and bpf-linker. Starting it is shared by the demo and the benchmark: both need its
//! probes attached before any traffic starts, which the agent signals by creating its
//! `--ready-file` (polled, never guessed with a sleep).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::Background;
use crate::util::{self, Steps};

/// How long loading and attaching the eBPF programs may take (the verifier is slow on a busy VM).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the agent may take to flush and exit after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// `cargo xtask build [--release]`.
pub fn build(release: bool) -> Result<()> {
    let mut steps = Steps::new("build", 1);
    let profile = if release { "release" } else { "debug" };
    let step = steps.start(&format!(
        "tokenmeter-agent ({profile}, eBPF object included)"
    ));
    let mut cmd = util::cargo();
    cmd.args(["build", "-p", "tokenmeter-agent"]);
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd).context(
        "building the agent failed; if the error is about the eBPF object (bpf-linker, \
         rust-src, nightly), run `cargo xtask setup` and try again",
    )?;
    let bin = binary(release);
    let size = std::fs::metadata(&bin)
        .with_context(|| format!("the build succeeded but {} is missing", bin.display()))?
        .len();
    let seconds = step.elapsed().as_secs_f64();
    step.ok(format!(
        "{}, {:.1} MiB, {seconds:.0} s",
        bin.display(),
        size as f64 / (1024.0 * 1024.0)
    ));
    Ok(())
}

/// The agent executable of a profile.
pub fn binary(release: bool) -> PathBuf {
    util::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("tokenmeter-agent")
}

/// What to start the release agent with.
pub struct Launch<'a> {
    /// Directory for its ready file and stderr log.
    pub dir: &'a Path,
    /// Distinguishes the files of several agents started in one directory.
    pub tag: &'a str,
    /// Where its JSON lines go.
    pub stdout: Stdio,
    /// `--stats-file`: counters the agent writes when it exits.
    pub stats_file: Option<&'a Path>,
    /// The subcommand and its options, e.g. `["capture", "--json"]` or `["run"]`.
    pub command: &'a [&'a str],
    /// `--config`, if any.
    pub config: Option<&'a Path>,
    /// Extra environment variables.
    pub env: &'a [(&'a str, &'a std::ffi::OsStr)],
}

/// Starts the release agent (`tokenmeter-agent <command> --ready-file ...`) and waits until its
/// probes are attached. The returned guard kills it if dropped; stop it with
/// [`Background::interrupt`] so it flushes.
pub fn start(launch: Launch) -> Result<Background> {
    let ready = launch.dir.join(format!("agent-{}.ready", launch.tag));
    let log = launch.dir.join(format!("agent-{}.stderr", launch.tag));
    let _ = std::fs::remove_file(&ready);
    let mut cmd = util::command(binary(true));
    cmd.args(launch.command)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(launch.stdout);
    if let Some(config) = launch.config {
        cmd.arg("--config").arg(config);
    }
    cmd.envs(launch.env.iter().copied());
    if let Some(stats) = launch.stats_file {
        let _ = std::fs::remove_file(stats);
        cmd.arg("--stats-file").arg(stats);
    }
    let mut agent = Background::spawn("tokenmeter-agent", &mut cmd, &log)?;
    agent
        .wait_for_file(&ready, READY_TIMEOUT)
        .context("the agent did not get its probes attached")?;
    Ok(agent)
}
