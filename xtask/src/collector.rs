//! The rating collector for the demo: build it, start it on SQLite in a work directory with
//! a price book and accounts, ask it how many calls it stored, print its bill.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::process::Background;
use crate::util::{self, Steps};

/// The collector executable of a profile.
pub fn binary(release: bool) -> PathBuf {
    util::target_dir()
        .join(if release { "release" } else { "debug" })
        .join("tokenmeter-collector")
}

pub fn build(release: bool) -> Result<()> {
    let mut steps = Steps::new("build", 1);
    let step = steps.start("tokenmeter-collector");
    let mut cmd = util::cargo();
    cmd.args(["build", "-p", "tokenmeter-collector"]);
    if release {
        cmd.arg("--release");
    }
    util::run(&mut cmd).context("building the collector failed")?;
    let seconds = step.elapsed().as_secs_f64();
    step.ok(format!("{}, {seconds:.0} s", binary(release).display()));
    Ok(())
}

/// A running collector and where it listens.
pub struct Collector {
    /// Killed when dropped.
    _process: Background,
    pub config: PathBuf,
    pub grpc: String,
    pub api: String,
}

/// Writes `collector.toml` (SQLite in `dir`, receivers on free loopback ports) and starts
/// `tokenmeter-collector serve`.
pub fn start(dir: &Path, price_book: &Path, accounts: &Path) -> Result<Collector> {
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "database = \"sqlite:{}\"\nprice_book = {:?}\naccounts = {:?}\n\
             side_policy = \"prefer_server\"\n\n[receiver]\ngrpc_listen = \"127.0.0.1:0\"\n\
             http_listen = \"127.0.0.1:0\"\n\n[api]\nlisten = \"127.0.0.1:0\"\n",
            dir.join("usage.db").display(),
            price_book.display().to_string(),
            accounts.display().to_string(),
        ),
    )?;
    let ready = dir.join("collector.ready");
    let mut cmd = util::command(binary(true));
    cmd.arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--ready-file")
        .arg(&ready);
    let mut process = Background::spawn(
        "tokenmeter-collector",
        &mut cmd,
        &dir.join("collector.stderr"),
    )?;
    process.wait_for_file(&ready, Duration::from_secs(30))?;
    let addresses: Value = serde_json::from_slice(&std::fs::read(&ready)?)
        .with_context(|| format!("{} is not JSON", ready.display()))?;
    let address = |key: &str| -> Result<String> {
        addresses[key]
            .as_str()
            .map(String::from)
            .with_context(|| format!("no {key} address in {}", ready.display()))
    };
    Ok(Collector {
        grpc: address("grpc")?,
        api: address("api")?,
        _process: process,
        config,
    })
}

impl Collector {
    /// Usage records stored so far (from its /metrics).
    pub fn stored(&self) -> Result<u64> {
        let mut stream = std::net::TcpStream::connect(&self.api)
            .with_context(|| format!("connecting to the collector's API on {}", self.api))?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: collector\r\nConnection: close\r\n\r\n"
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        text.lines()
            .find_map(|l| l.strip_prefix("tokenmeter_collector_records_inserted_total "))
            .and_then(|v| v.trim().parse().ok())
            .context("the collector's /metrics has no inserted count")
    }

    /// Waits until at least `n` records are stored.
    pub fn wait_for(&self, n: u64, timeout: Duration) -> Result<u64> {
        let started = Instant::now();
        loop {
            let stored = self.stored()?;
            if stored >= n {
                return Ok(stored);
            }
            if started.elapsed() > timeout {
                bail!(
                    "the collector stored {stored} usage records within {timeout:?}, expected {n}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `tokenmeter-collector bill` of the current period in `format` (table, json, csv).
    pub fn bill(&self, format: &str) -> Result<String> {
        let mut cmd = util::command(binary(true));
        cmd.args(["bill", "--format", format, "--config"])
            .arg(&self.config);
        util::output(&mut cmd)
    }
}
