//! Background processes that must not outlive the command that started them.
//!
//! The demo and the benchmark start a TLS server and the agent, which holds eBPF programs attached
//! until it exits. An early return, a `?` or a panic must not leave either running, so each is
//! owned by a [`Background`] whose `Drop` kills it. The normal stop is [`Background::interrupt`]:
//! SIGINT, which the agent treats as "flush what you have and exit".

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util;

/// How often a poll looks again; short enough that waits add no noticeable time.
const POLL: Duration = Duration::from_millis(50);

/// A child process killed on drop, its stderr kept in a log file for error messages.
pub struct Background {
    name: String,
    child: Child,
    stderr_log: PathBuf,
}

impl Background {
    /// Spawns `cmd` with stdin closed and stderr written to `stderr_log`; stdout is whatever
    /// the caller configured on `cmd`.
    pub fn spawn(name: &str, cmd: &mut Command, stderr_log: &Path) -> Result<Self> {
        let log = File::create(stderr_log)
            .with_context(|| format!("creating {}", stderr_log.display()))?;
        let child = cmd
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("could not start {name}: `{}`", util::display(cmd)))?;
        Ok(Self {
            name: name.to_string(),
            child,
            stderr_log: stderr_log.to_path_buf(),
        })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The end of its stderr, indented, for error messages.
    pub fn stderr_tail(&self) -> String {
        let tail = util::tail(&self.stderr_log, 30);
        if tail.trim().is_empty() {
            format!("{} wrote nothing to stderr", self.name)
        } else {
            let lines: Vec<String> = tail.lines().map(|l| format!("    {l}")).collect();
            format!(
                "{} stderr ({}):\n{}",
                self.name,
                self.stderr_log.display(),
                lines.join("\n")
            )
        }
    }

    /// Polls until `path` exists and is not empty. Fails if the process exits first or the
    /// timeout passes, with the process's stderr in the error.
    pub fn wait_for_file(&mut self, path: &Path, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} {} before it wrote {}\n{}",
                    self.name,
                    util::describe(status),
                    path.display(),
                    self.stderr_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not write {} within {timeout:?}\n{}",
                    self.name,
                    path.display(),
                    self.stderr_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends SIGINT and waits up to `timeout` for the process to exit; kills it after that
    /// and returns an error. A process that already exited returns its status.
    pub fn interrupt(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.signal(libc::SIGINT);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "{} did not exit within {timeout:?} of SIGINT; killed it\n{}",
                    self.name,
                    self.stderr_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own unreaped child,
        // so it cannot have been recycled for another process.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
