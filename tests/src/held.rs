//! A client started with its TLS library loaded but held before its first TLS call, until the
//! test has seen the agent's probes go into it (in `/proc/PID/mem`). It separates "the agent
//! discovers and probes a process it did not know" from the race of a brand-new library being
//! used within milliseconds of being loaded, which no userspace attach can win (that latency is
//! measured by the benchmark, not asserted here).

use std::fs::File;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::clients::{ClientRun, CLIENT_TIMEOUT};
use crate::procmem;
use crate::wait::{self, poll_until, Finished};

/// How long the agent may take to probe a new process.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct HeldClient {
    child: Child,
    dir: tempfile::TempDir,
    pub pid: u32,
    what: &'static str,
}

impl HeldClient {
    /// Starts `cmd` (a fixture run in hold mode) and waits until it printed `ready` on stderr.
    pub fn start(cmd: &mut Command, what: &'static str) -> HeldClient {
        let dir = crate::fixtures::tempdir("held");
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(File::create(dir.path().join("stdout")).expect("stdout file"))
            .stderr(File::create(dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        let pid = child.id();
        let mut held = HeldClient {
            child,
            dir,
            pid,
            what,
        };
        let ready = poll_until(Duration::from_secs(30), || {
            if let Some(status) = held.child.try_wait().expect("waitpid") {
                panic!("{what} exited early ({status}): {}", held.output("stderr"));
            }
            held.output("stderr").contains("ready").then_some(())
        });
        assert!(
            ready.is_some(),
            "{what} never got ready: {}",
            held.output("stderr")
        );
        held
    }

    /// Waits until one of `symbols` of `lib_name` is patched by a probe in this process.
    pub fn wait_probed(&self, lib_name: &str, symbols: &[&str]) {
        let probed = poll_until(PROBE_TIMEOUT, || {
            let code = procmem::function_code(self.pid, lib_name, symbols);
            code.iter().any(|f| f.is_patched()).then_some(())
        });
        assert!(
            probed.is_some(),
            "{} (pid {}) got no probe in {lib_name} within {PROBE_TIMEOUT:?}",
            self.what,
            self.pid
        );
    }

    /// Lets the client make its request and returns its report.
    pub fn release(mut self, path: &str) -> ClientRun {
        let mut stdin = self.child.stdin.take().expect("stdin is piped");
        stdin.write_all(b"go\n").expect("write the go line");
        drop(stdin);
        let status = wait::wait_child(&mut self.child, CLIENT_TIMEOUT)
            .unwrap_or_else(|| panic!("{} did not finish", self.what));
        let finished = Finished {
            pid: self.pid,
            status,
            stdout: self.output("stdout"),
            stderr: self.output("stderr"),
        };
        ClientRun::from_json(&finished, path, self.what)
    }

    fn output(&self, name: &str) -> String {
        wait::read_if_exists(&self.dir.path().join(name)).unwrap_or_default()
    }
}

impl Drop for HeldClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
