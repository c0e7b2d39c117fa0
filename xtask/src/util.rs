//! Running commands and reporting progress.
//!
//! Every xtask command is a short list of steps, some of which take minutes (`cargo install
//! bpf-linker`, a release build). The output should say at each moment which step is running and,
//! when one fails, which one and why, so a person on a fresh machine can act on it. Steps print
//! as `[2/5] nightly rust-src ... ok (already installed)`; a step that streams a command's output
//! breaks that line and prints it again in full when it ends.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Whether a `[i/n] name ... ` line is waiting for its result on the terminal.
static LINE_OPEN: AtomicBool = AtomicBool::new(false);

/// Ends a pending step line, so what follows starts on a line of its own.
pub fn break_line() {
    if LINE_OPEN.swap(false, Ordering::SeqCst) {
        println!();
    }
}

/// The numbered steps of one command (`setup`, `demo`, ...).
pub struct Steps {
    total: usize,
    done: usize,
}

impl Steps {
    /// Prints a section header; `total` is the number of steps that follow.
    pub fn new(title: &str, total: usize) -> Self {
        break_line();
        println!("== {title} ==");
        Self { total, done: 0 }
    }

    /// Starts the next step; finish it with [`Step::ok`] or [`Step::skipped`]. A step dropped
    /// unfinished (an error returned with `?`) prints `FAILED`.
    pub fn start(&mut self, name: &str) -> Step {
        break_line();
        self.done += 1;
        let label = format!("[{}/{}] {name}", self.done, self.total);
        print!("{label} ... ");
        let _ = std::io::stdout().flush();
        LINE_OPEN.store(true, Ordering::SeqCst);
        Step {
            label,
            finished: false,
            started: Instant::now(),
        }
    }
}

/// One running step.
pub struct Step {
    label: String,
    finished: bool,
    started: Instant,
}

impl Step {
    /// Prints an indented detail line under the step (breaking the step line first).
    pub fn note(&self, text: &str) {
        break_line();
        println!("      {text}");
    }

    /// Time since the step started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn ok(self, detail: impl AsRef<str>) {
        self.finish("ok", detail.as_ref());
    }

    pub fn skipped(self, reason: impl AsRef<str>) {
        self.finish("skipped", reason.as_ref());
    }

    /// Marks the step failed without an error value (the caller goes on and reports later).
    pub fn failed(self, reason: impl AsRef<str>) {
        self.finish("FAILED", reason.as_ref());
    }

    fn finish(mut self, outcome: &str, detail: &str) {
        self.finished = true;
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({detail})")
        };
        if LINE_OPEN.swap(false, Ordering::SeqCst) {
            println!("{outcome}{detail}");
        } else {
            println!("{} ... {outcome}{detail}", self.label);
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if !self.finished {
            if LINE_OPEN.swap(false, Ordering::SeqCst) {
                println!("FAILED");
            } else {
                println!("{} ... FAILED", self.label);
            }
        }
    }
}

/// The workspace root (the parent of this crate's directory); every command runs there.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one directory below the workspace root")
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// A `cargo` command: the cargo that runs this xtask, so a nested build uses the same toolchain.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// A command run from the workspace root.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(root());
    cmd
}

/// The command line as a person would type it, environment assignments first.
pub fn display(cmd: &Command) -> String {
    let mut words: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    let program = cmd.get_program().to_string_lossy();
    // `$CARGO` is a full toolchain path; `cargo` is what a person would type.
    let program = match Path::new(program.as_ref()).file_name() {
        Some(name) if name == "cargo" => "cargo".to_string(),
        _ => program.into_owned(),
    };
    words.push(program);
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

/// Runs a command with its output on the terminal; an unsuccessful exit is an error.
pub fn run(cmd: &mut Command) -> Result<()> {
    break_line();
    println!("      $ {}", display(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    check(cmd, status)
}

/// Runs a command quietly and returns its stdout; on failure the error carries its stderr.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    stdout_of(cmd, out)
}

/// The stdout of a finished command, or an error with its exit status and stderr.
fn stdout_of(cmd: &Command, out: Output) -> Result<String> {
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let stderr = if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        };
        bail!("`{}` {}{stderr}", display(cmd), describe(out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether a command runs and exits successfully (all output discarded).
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// [`output`] with a deadline: the command is killed (and an error) when it runs past it.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{}` did not finish within {timeout:?}", display(cmd));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    stdout_of(cmd, out)
}

/// An error for an unsuccessful exit, naming the command.
pub fn check(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{}` {}", display(cmd), describe(status))
    }
}

/// "exited with status 1" / "was killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended with {status}"),
    }
}

/// Whether this process runs as root (the agent loads eBPF programs; apt installs packages).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with a clear message unless running as root; `command` is the xtask subcommand.
pub fn require_root(command: &str) -> Result<()> {
    if !is_root() {
        bail!("`cargo xtask {command}` needs root: it loads eBPF programs into the kernel. Run it again as root.");
    }
    Ok(())
}

/// The last `lines` lines of a text file, for error messages about a process that wrote it.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..].join("\n")
}

/// `target/<name>`, emptied: the working directory of the demo or the benchmark. It is kept
/// afterwards so the logs of a failed run can be read.
pub fn fresh_work_dir(name: &str) -> Result<PathBuf> {
    let dir = target_dir().join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
