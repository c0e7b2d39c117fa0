//! The agent under test: locating (or building) the binary, running `capture --json`,
//! stopping it with SIGINT and reading back what it captured.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::Duration;

use serde::Deserialize;

use crate::fixtures;
use crate::wait::{self, poll_until, wait_child};

/// How long the agent may take to load its programs and write the ready file.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the agent may take to drain and exit after SIGINT.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which way the plaintext went, seen from the process that owns the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Passed to SSL_write/SSL_write_ex.
    Write,
    /// Returned by SSL_read/SSL_read_ex.
    Read,
}

/// One line of `capture --json`: one finished stream direction of one TLS connection.
/// Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct CapturedStream {
    pub pid: u32,
    pub comm: String,
    /// The SSL object's address, e.g. `0x7f..`.
    pub conn: String,
    pub direction: Direction,
    pub bytes: u64,
    pub sha256: String,
    pub truncated: bool,
    pub gaps: u64,
    pub close_reason: String,
    pub cgroup_id: u64,
}

/// Counters the agent writes to `--stats-file` at exit.
#[derive(Debug, Clone, Deserialize)]
pub struct AgentStats {
    pub events: u64,
    pub bytes: u64,
    pub truncated_calls: u64,
    pub dropped_events: u64,
    pub dropped_bytes: u64,
    pub read_failures: u64,
    pub orphan_returns: u64,
    pub dropped_control: u64,
    pub max_rss_kib: u64,
}

/// The agent binary: `TOKENMETER_AGENT_BIN`, else `<target>/debug/tokenmeter-agent`, built once
/// with `cargo build -p tokenmeter-agent` when it does not exist yet.
pub fn agent_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("TOKENMETER_AGENT_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "TOKENMETER_AGENT_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => fixtures::workspace_root().join(dir),
        None => fixtures::workspace_root().join("target"),
    };
    let bin = target.join("debug").join("tokenmeter-agent");
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        if !bin.is_file() {
            build_agent();
        }
    });
    assert!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    bin
}

fn build_agent() {
    let cargo = std::env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(OsString::from))
        .unwrap_or_else(|| OsString::from("cargo"));
    eprintln!("building the agent: cargo build -p tokenmeter-agent");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-p", "tokenmeter-agent"])
        .current_dir(fixtures::workspace_root());
    wait::run(&mut cmd, Duration::from_secs(1800))
        .assert_success("cargo build -p tokenmeter-agent");
}

/// A base command for the agent with a predictable environment: RUST_LOG comes from
/// `TOKENMETER_TEST_AGENT_LOG` when set and is otherwise removed, so the agent's own default
/// log level decides what stderr holds; NO_COLOR keeps escape codes out of it; an inherited
/// TOKENMETER_CONFIG is removed so only `--config` configures the agent.
pub fn agent_command() -> Command {
    agent_command_for(&agent_bin())
}

/// [`agent_command`] for a given copy of the binary.
pub fn agent_command_for(bin: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env("NO_COLOR", "1").env_remove("TOKENMETER_CONFIG");
    match std::env::var_os("TOKENMETER_TEST_AGENT_LOG") {
        Some(level) => cmd.env("RUST_LOG", level),
        None => cmd.env_remove("RUST_LOG"),
    };
    cmd
}

/// A series' value in the agent's `/metrics` text; panics when it is not there.
pub fn metric_in(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in the agent's /metrics"))
}

/// How to start the agent.
#[derive(Debug, Default, Clone)]
pub struct AgentOptions {
    /// TOML written to a file and passed as `--config`.
    pub config: Option<String>,
    /// Pass `--stats-file` and read it back at stop.
    pub stats: bool,
    /// `run` (usage records on stdout) instead of `capture --json` (stream digests).
    pub meter: bool,
    /// Serve the agent's metrics on a free port (`--metrics-listen 127.0.0.1:0`).
    pub metrics: bool,
    /// With `meter`: the `run` arguments instead of `--export stdout`.
    pub run_args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// A running `tokenmeter-agent capture --json`; killed on drop.
pub struct Agent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    stats_file: Option<PathBuf>,
}

/// What a stopped agent left behind.
#[derive(Debug)]
pub struct AgentRun {
    pub status: ExitStatus,
    pub streams: Vec<CapturedStream>,
    /// Everything the agent printed on stdout (usage records in `run` mode).
    pub stdout: String,
    pub stderr: String,
    pub stats: Option<AgentStats>,
}

impl Agent {
    /// Starts the agent and waits (up to [`READY_TIMEOUT`]) for its ready file.
    pub fn start(options: AgentOptions) -> Agent {
        let dir = fixtures::tempdir("agent");
        let ready = dir.path().join("ready");
        let mut cmd = agent_command();
        cmd.envs(options.env.iter().map(|(k, v)| (k, v)));
        if options.meter && !options.run_args.is_empty() {
            cmd.arg("run")
                .args(&options.run_args)
                .arg("--ready-file")
                .arg(&ready);
        } else if options.meter {
            cmd.args(["run", "--export", "stdout", "--ready-file"])
                .arg(&ready);
        } else {
            cmd.args(["capture", "--json", "--ready-file"]).arg(&ready);
        }
        if options.metrics {
            cmd.args(["--metrics-listen", "127.0.0.1:0"]);
        }
        if let Some(config) = &options.config {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, config).expect("write agent config");
            cmd.arg("--config").arg(path);
        }
        let stats_file = options.stats.then(|| dir.path().join("stats.json"));
        if let Some(path) = &stats_file {
            cmd.arg("--stats-file").arg(path);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout")).expect("agent stdout file"))
            .stderr(File::create(dir.path().join("stderr")).expect("agent stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut agent = Agent {
            child: Some(child),
            dir,
            stats_file,
        };
        let ready_in_time = poll_until(READY_TIMEOUT, || {
            if let Some(status) = agent.child_mut().try_wait().expect("waitpid") {
                panic!(
                    "the agent exited before it was ready ({status}); stderr:\n{}",
                    agent.stderr()
                );
            }
            ready.exists().then_some(())
        });
        if ready_in_time.is_none() {
            panic!(
                "the agent wrote no ready file within {READY_TIMEOUT:?}; stderr:\n{}",
                agent.stderr()
            );
        }
        agent
    }

    /// The agent's stderr so far.
    pub fn stderr(&self) -> String {
        wait::read_if_exists(&self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Sends SIGINT, waits for the exit and parses what the agent printed.
    /// The address of the agent's metrics listener, from its ready file.
    pub fn metrics_addr(&self) -> std::net::SocketAddr {
        let ready = wait::read_if_exists(&self.dir.path().join("ready")).expect("ready file");
        let ready: serde_json::Value = serde_json::from_str(&ready).expect("ready file is JSON");
        ready["metrics"]
            .as_str()
            .expect("started with metrics: true")
            .parse()
            .expect("an address")
    }

    /// `GET path` on the metrics listener: (status line, body).
    pub fn get(&self, path: &str) -> (String, String) {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.metrics_addr()).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    }

    /// A series' value on `/metrics`: `series` as printed, labels included.
    pub fn metric(&self, series: &str) -> u64 {
        metric_in(&self.get("/metrics").1, series)
    }

    /// SIGKILL, as a node losing the process would: no shutdown code runs.
    pub fn kill(mut self) -> String {
        let mut child = self.child.take().expect("the agent runs");
        let _ = child.kill();
        let _ = child.wait();
        self.stderr()
    }

    pub fn stop(mut self) -> AgentRun {
        let mut child = self.child.take().expect("the agent runs");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet.
        let rc = unsafe { libc::kill(pid, libc::SIGINT) };
        assert_eq!(
            rc,
            0,
            "kill(SIGINT) failed: {}",
            std::io::Error::last_os_error()
        );
        let Some(status) = wait_child(&mut child, STOP_TIMEOUT) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the agent did not exit within {STOP_TIMEOUT:?} of SIGINT; stderr:\n{}",
                self.stderr()
            );
        };
        let stdout = wait::read_if_exists(&self.dir.path().join("stdout")).unwrap_or_default();
        let stats = self
            .stats_file
            .as_deref()
            .map(|path| read_stats(path, &self.stderr()));
        AgentRun {
            status,
            streams: parse_streams(&stdout),
            stdout: stdout.clone(),
            stderr: self.stderr(),
            stats,
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the agent runs")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("agent stderr:\n{}", self.stderr());
            }
        }
    }
}

impl AgentRun {
    /// Panics unless the agent exited 0 after SIGINT.
    pub fn assert_clean_exit(&self) {
        assert!(
            self.status.success(),
            "the agent exited with {} after SIGINT; stderr:\n{}",
            self.status,
            self.stderr
        );
    }

    /// The usage records `run --export stdout` printed (the lines with an `api`).
    pub fn usage_records(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("a usage record is JSON"))
            .filter(|r: &serde_json::Value| r.get("api").is_some())
            .collect()
    }

    /// The streams captured for `pid`.
    pub fn streams_of(&self, pid: u32) -> Vec<&CapturedStream> {
        self.streams.iter().filter(|s| s.pid == pid).collect()
    }
}

/// Parses stdout: every non-empty line must be JSON; lines with a `direction` are streams,
/// other records are ignored.
pub fn parse_streams(stdout: &str) -> Vec<CapturedStream> {
    let mut streams = Vec::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("agent stdout line is not JSON ({e}): {line:?}"));
        if value.get("direction").is_some() {
            let stream = serde_json::from_value(value).unwrap_or_else(|e| {
                panic!("agent stream record does not match the schema ({e}): {line}")
            });
            streams.push(stream);
        }
    }
    streams
}

fn read_stats(path: &Path, stderr: &str) -> AgentStats {
    let text = wait::read_if_exists(path).unwrap_or_else(|| {
        panic!(
            "the agent wrote no stats file {}; stderr:\n{stderr}",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad stats file ({e}): {text}"))
}

/// Runs the agent binary `bin` with `args` to completion (it is expected to exit on its own),
/// optionally behind a wrapper command such as `setpriv ...`.
pub fn run_to_exit(
    wrapper: &[&str],
    bin: &Path,
    args: &[&str],
    timeout: Duration,
) -> wait::Finished {
    let base = agent_command_for(bin);
    let mut cmd = match wrapper.split_first() {
        None => base,
        Some((program, rest)) => {
            let mut cmd = Command::new(program);
            cmd.args(rest).arg(base.get_program());
            for (key, value) in base.get_envs() {
                match value {
                    Some(value) => cmd.env(key, value),
                    None => cmd.env_remove(key),
                };
            }
            cmd
        }
    };
    cmd.args(args);
    wait::run(&mut cmd, timeout)
}
