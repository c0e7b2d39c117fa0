//! `cargo xtask demo`: the agent on real TLS traffic, start to finish, on one machine.
//!
//! It shows the one claim everything else rests on: plaintext of TLS connections made by
//! unmodified programs (curl, Python, Node.js) reaches the agent without touching them. A local
//! Python TLS server answers `/size/N` with N bytes; the clients fetch from it while the agent
//! captures; the agent's JSON lines become a table. Readiness is always a file that appears
//! (the server's port file, the agent's ready file), never a sleep, and every process started
//! here is killed on every way out.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::agent::{self, Launch};
use crate::fixtures;
use crate::process::Background;
use crate::util::{self, Steps};

/// How long the TLS server may take to bind and write its port.
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one client request may take.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run() -> Result<()> {
    util::require_root("demo")?;
    crate::setup::run(true)?;
    agent::build(true)?;

    let work = util::fresh_work_dir("demo")?;
    let dir = work.as_path();
    let mut steps = Steps::new("demo", 7);

    let step = steps.start("self-signed certificate");
    let cert = fixtures::self_signed_cert(dir)?;
    step.ok(cert.cert.display().to_string());

    let step = steps.start("TLS server (tests/fixtures/tls_server.py)");
    let (server, port) = start_server(dir, &cert)?;
    step.ok(format!(
        "pid {}, listening on 127.0.0.1:{port}",
        server.id()
    ));

    let step = steps.start("agent: tokenmeter-agent capture --json");
    let events = dir.join("agent.jsonl");
    let mut agent = agent::start(Launch {
        dir,
        tag: "demo",
        stdout: File::create(&events)?.into(),
        stats_file: None,
    })?;
    let seconds = step.elapsed().as_secs_f64();
    step.ok(format!("probes attached in {seconds:.1} s"));

    let mut failed_clients = Vec::new();
    for client in clients(port) {
        let step = steps.start(&client.name);
        match client.run() {
            Ok(ClientOutcome::Done(detail)) => step.ok(detail),
            Ok(ClientOutcome::Skipped(reason)) => step.skipped(reason),
            Err(err) => {
                step.failed(format!("{err:#}"));
                failed_clients.push(client.name);
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
    step.ok("exited cleanly");

    let streams = read_streams(&events)?;
    println!();
    print_table(&streams);
    if streams.is_empty() {
        bail!("the agent captured no streams\n{}", agent.stderr_tail());
    }
    if !failed_clients.is_empty() {
        bail!("clients failed: {}", failed_clients.join(", "));
    }
    Ok(())
}

/// Starts the fixture server on port 0 and waits for the port it writes.
fn start_server(dir: &Path, cert: &fixtures::Cert) -> Result<(Background, u16)> {
    let script = fixtures::require("tls_server.py")?;
    let port_file = dir.join("server.port");
    let mut cmd = util::command("python3");
    cmd.arg(script)
        .args(["--host", "127.0.0.1", "--port", "0", "--cert"])
        .arg(&cert.cert)
        .arg("--key")
        .arg(&cert.key)
        .arg("--port-file")
        .arg(&port_file)
        .arg("--log")
        .arg(dir.join("server.log"))
        .stdout(File::create(dir.join("server.stdout"))?);
    let mut server = Background::spawn("the TLS server", &mut cmd, &dir.join("server.stderr"))?;
    server.wait_for_file(&port_file, SERVER_TIMEOUT)?;
    let text = std::fs::read_to_string(&port_file)?;
    let port = text
        .trim()
        .parse()
        .with_context(|| format!("{} holds {text:?}, not a port", port_file.display()))?;
    Ok((server, port))
}

/// One client fetch; `fixture` is checked first so a missing file is a skip, not a failure.
struct Client {
    name: String,
    fixture: Option<&'static str>,
    program: &'static str,
    args: Vec<String>,
}

enum ClientOutcome {
    Done(String),
    Skipped(String),
}

fn clients(port: u16) -> Vec<Client> {
    // 127.0.0.1, not localhost: the server listens on IPv4 only, and localhost may be ::1 first.
    let url = |size: u32| format!("https://127.0.0.1:{port}/size/{size}");
    vec![
        Client {
            name: format!("curl {}", url(2048)),
            fixture: None,
            program: "curl",
            args: vec!["-sk".into(), url(2048)],
        },
        Client {
            name: format!("python3 https_client.py {}", url(4096)),
            fixture: Some("https_client.py"),
            program: "python3",
            args: vec!["--url".into(), url(4096)],
        },
        Client {
            name: format!("node https_client.mjs {}", url(1024)),
            fixture: Some("https_client.mjs"),
            program: "node",
            args: vec![url(1024)],
        },
    ]
}

impl Client {
    fn run(&self) -> Result<ClientOutcome> {
        let mut cmd = util::command(self.program);
        if let Some(name) = self.fixture {
            let Some(path) = fixtures::find(name) else {
                return Ok(ClientOutcome::Skipped(format!(
                    "tests/fixtures/{name} not found"
                )));
            };
            cmd.arg(path);
        }
        cmd.args(&self.args);
        let stdout = util::output_with_timeout(&mut cmd, CLIENT_TIMEOUT)?;
        Ok(ClientOutcome::Done(describe_response(&stdout)))
    }
}

/// curl prints the body itself; the fixture clients print one JSON line with their pid and the
/// body's length, which helps find their rows in the table.
fn describe_response(stdout: &str) -> String {
    let summary: Option<serde_json::Value> = serde_json::from_str(stdout.trim()).ok();
    let field = |name: &str| summary.as_ref()?.get(name)?.as_u64();
    match (field("pid"), field("len")) {
        (Some(pid), Some(len)) => format!("pid {pid}, response body {len} bytes"),
        _ => format!("response body {} bytes", stdout.len()),
    }
}

/// One finished stream direction, as the agent prints it with `--json`.
#[derive(Debug, Deserialize)]
struct Stream {
    pid: u32,
    comm: String,
    direction: String,
    bytes: u64,
    sha256: String,
    truncated: bool,
    close_reason: String,
}

/// Reads the agent's JSON lines; lines that are not stream records are counted and reported.
fn read_streams(path: &Path) -> Result<Vec<Stream>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut streams = Vec::new();
    let mut other = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Stream>(line) {
            Ok(stream) => streams.push(stream),
            Err(_) => other += 1,
        }
    }
    if other > 0 {
        println!(
            "note: {} holds {other} lines that are not stream records",
            path.display()
        );
    }
    Ok(streams)
}

fn print_table(streams: &[Stream]) {
    let header = [
        "pid",
        "comm",
        "direction",
        "bytes",
        "sha256",
        "truncated",
        "close_reason",
    ];
    let rows: Vec<[String; 7]> = streams
        .iter()
        .map(|s| {
            [
                s.pid.to_string(),
                s.comm.clone(),
                s.direction.clone(),
                s.bytes.to_string(),
                s.sha256.chars().take(12).collect(),
                s.truncated.to_string(),
                s.close_reason.clone(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    println!("captured streams ({}):", streams.len());
    line(&header);
    for row in &rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
