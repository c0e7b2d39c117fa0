//! Deadlines instead of sleeps: poll a condition until it holds, run a command with a limit.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How often conditions are re-checked while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it returns `Some`, or returns `None` once `timeout` has passed.
pub fn poll_until<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Waits for `child` to exit; `None` if it still runs after `timeout` (it is left running).
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    poll_until(timeout, || child.try_wait().expect("waitpid failed"))
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Finished {
    /// The process id it ran as (the pid probes saw, unless it forked).
    pub pid: u32,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Panics with the command's output unless it exited 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The last stdout line parsed as JSON (the fixtures print one JSON line).
    pub fn json(&self, what: &str) -> serde_json::Value {
        let line = self.stdout.lines().rev().find(|l| !l.trim().is_empty());
        let line =
            line.unwrap_or_else(|| panic!("{what} printed nothing; stderr:\n{}", self.stderr));
        serde_json::from_str(line).unwrap_or_else(|e| {
            panic!(
                "{what} printed non-JSON {line:?}: {e}; stderr:\n{}",
                self.stderr
            )
        })
    }
}

/// Runs `cmd` to completion (stdin closed, output captured), killing it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Finished {
    let (mut out, mut err) = (scratch_file(), scratch_file());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup stdout file"))
        .stderr(err.try_clone().expect("dup stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let status = match wait_child(&mut child, timeout) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                read_all(&mut out),
                read_all(&mut err)
            );
        }
    };
    Finished {
        pid,
        status,
        stdout: read_all(&mut out),
        stderr: read_all(&mut err),
    }
}

fn scratch_file() -> File {
    tempfile::tempfile().expect("cannot create a temporary file")
}

fn read_all(file: &mut File) -> String {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.read_to_string(&mut text)
        .expect("read captured output");
    text
}

/// Reads a file that may not exist yet: `None` when it is absent.
pub fn read_if_exists(path: &std::path::Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// Waits until `child` (a fixture server named `what`) writes the port it listens on to
/// `port_file`. Panics with the server's stderr (`stderr` file) if it exits first or takes
/// longer than `timeout`, and kills it then.
pub fn port_file(
    child: &mut std::process::Child,
    port_file: &std::path::Path,
    stderr: &std::path::Path,
    what: &str,
    timeout: Duration,
) -> u16 {
    let port = poll_until(timeout, || {
        if let Some(status) = child.try_wait().expect("waitpid") {
            panic!(
                "{what} exited early ({status}): {}",
                read_if_exists(stderr).unwrap_or_default()
            );
        }
        let text = read_if_exists(port_file)?;
        Some(
            text.trim()
                .parse::<u16>()
                .expect("port file holds a port number"),
        )
    });
    port.unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} wrote no port file within {timeout:?}: {}",
            read_if_exists(stderr).unwrap_or_default()
        )
    })
}
