//! tokenmeter-agent: the per-node metering agent.
//!
//! It reads the plaintext of TLS traffic in the node's processes with eBPF uprobes on the TLS
//! libraries (no restart, no change to them), reassembles it into per-connection streams and
//! turns it into usage records. `capture` is the debug view of the first two stages.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Args, Parser, Subcommand};
use tracing::error;

use anyhow::Context as _;
use std::sync::Arc;
use tokenmeter_agent::{
    attribution,
    config::AgentConfig,
    export, http, meter, pipeline,
    pipeline::{RunOptions, StreamSink},
    streams::{digest::StreamDigester, StreamEvent},
    telemetry::{self, AgentMetrics},
    tokens,
};

#[derive(Parser)]
#[command(name = "tokenmeter-agent", version, about, long_about = None)]
/// Meters LLM traffic on this node by reading TLS plaintext with eBPF (needs root, or
/// CAP_BPF + CAP_PERFMON + CAP_SYS_PTRACE).
struct Cli {
    /// Configuration file (TOML); see agent/config.example.toml. Without it every process is
    /// metered with default limits.
    #[arg(long, global = true, env = "TOKENMETER_CONFIG")]
    config: Option<PathBuf>,
    /// Where the kernel's sysfs is mounted (for the feature checks).
    #[arg(long, global = true, default_value = "/sys", hide = true)]
    sysfs_root: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: meter every LLM request in the captured TLS traffic and export one usage
    /// record per request.
    Run(RunArgs),
    /// Debug view: print one JSON line per finished stream direction (pid, comm, connection,
    /// direction, byte count, SHA-256, truncation). Plaintext only with --plaintext.
    Capture(CaptureArgs),
    /// Print the fingerprint records carry for each API key read from stdin (one per line),
    /// with the config's identity.fingerprint_key_file: what `[[tenants.api_keys]]` lists.
    Fingerprint,
}

#[derive(Args)]
struct CommonArgs {
    /// Create this file once the probes are attached (for scripts and tests).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Write the capture counters and peak memory as JSON to this file at exit.
    #[arg(long)]
    stats_file: Option<PathBuf>,
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address (port 0: any free
    /// port, written to the ready file).
    #[arg(long, env = "TOKENMETER_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Where usage records go: `stdout` prints them as JSON lines, `otlp` sends them to an
    /// OpenTelemetry collector (settings: the config's [export.otlp] and the standard
    /// OTEL_EXPORTER_OTLP_* variables). Overrides the config's export.kind.
    #[arg(long, value_enum, env = "TOKENMETER_EXPORT")]
    export: Option<export::ExportKind>,
    /// Write every record to this directory (synced) before exporting it, and deliver what a
    /// previous run left there first: no record is lost to a crash (it may be sent twice, with
    /// the same id). Overrides export.spool_dir.
    #[arg(long, env = "TOKENMETER_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Most bytes the spool keeps; beyond it the oldest undelivered records are dropped and
    /// counted. Overrides export.spool_max_bytes (default 256 MiB).
    #[arg(long)]
    spool_max_bytes: Option<u64>,
}

#[derive(Args)]
struct CaptureArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Print JSON lines (the only format for now; accepted for explicitness).
    #[arg(long)]
    json: bool,
    /// Include the stream's plaintext (up to --plaintext-limit bytes). It is never printed
    /// otherwise: prompts and completions are private.
    #[arg(long)]
    plaintext: bool,
    /// Bytes of plaintext kept per stream with --plaintext.
    #[arg(long, default_value_t = 4096)]
    plaintext_limit: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = match &cli.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    if let Command::Run(args) = &cli.command {
        let export = &mut config.export;
        export.kind = args.export.unwrap_or(export.kind);
        export.spool_dir = args.spool_dir.clone().or(export.spool_dir.take());
        export.spool_max_bytes = args.spool_max_bytes.unwrap_or(export.spool_max_bytes);
        export
            .validate()
            .map_err(|e| anyhow::anyhow!("{e} (from --spool-max-bytes or the config)"))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let metrics = Arc::new(AgentMetrics::default());
    let (common, mut sink): (CommonArgs, Box<dyn StreamSink>) = match cli.command {
        Command::Run(args) => {
            let export = export::build(&config.export, metrics.clone())?;
            // The identity stage keeps the headers the tenant rules read.
            let mut identity = config.identity.clone();
            for header in attribution::TenantResolver::headers(&config.tenants) {
                if !identity.headers.contains(&header) {
                    identity.headers.push(header);
                }
            }
            let pods = attribution::kubernetes::start(&config.kubernetes, metrics.clone());
            let tenants = attribution::TenantResolver::new(config.tenants.clone())
                .map_err(anyhow::Error::msg)?;
            let attributor =
                attribution::Attributor::new(&config.kubernetes, pods, tenants, metrics.clone());
            let gpu_attributor = attributor.clone();
            let mut meter = meter::Meter::new(
                http::HttpStage::new(&config.http),
                tokens::TokenCounter::new(&config.tokens)?,
                attribution::IdentityExtractor::new(&identity)?,
                attributor,
                export,
                metrics.clone(),
            );
            if config.gpu.enabled != attribution::gpu::GpuEnabled::Off {
                let reporter = attribution::GpuReporter::new(
                    gpu_attributor,
                    pipeline::clock_ns(libc::CLOCK_REALTIME) as u64,
                );
                meter.start_gpu(config.gpu.clone(), reporter);
            }
            (args.common, Box::new(meter))
        }
        Command::Fingerprint => return print_fingerprints(&config),
        Command::Capture(args) => {
            let limit = args.plaintext.then_some(args.plaintext_limit);
            (
                args.common,
                Box::new(JsonLinesSink(StreamDigester::new(limit))),
            )
        }
    };
    let summary = runtime.block_on(async {
        // The health listener first, so /healthz answers while the probes are attached.
        let (stop_health, health_stopped) = tokio::sync::oneshot::channel::<()>();
        let mut metrics_addr = None;
        let mut health = None;
        if let Some(addr) = common.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --metrics-listen {addr}"))?;
            metrics_addr = Some(listener.local_addr()?);
            health = Some(tokio::spawn(telemetry::serve(
                listener,
                metrics.clone(),
                async {
                    let _ = health_stopped.await;
                },
            )));
        }
        let options = RunOptions {
            sysfs_root: cli.sysfs_root,
            ready_file: common.ready_file,
            metrics: metrics.clone(),
            metrics_addr,
        };
        let summary = pipeline::run(&config, options, sink.as_mut(), shutdown_signal()).await;
        let _ = stop_health.send(());
        if let Some(health) = health {
            let _ = health.await;
        }
        anyhow::Ok(summary?)
    });
    // A /proc scan still running on a blocking thread must not hold up the exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    let summary = summary?;
    if let Some(path) = &common.stats_file {
        let mut stats = serde_json::to_value(&summary)?;
        if let (Some(stats), serde_json::Value::Object(extra)) =
            (stats.as_object_mut(), sink.report())
        {
            stats.extend(extra);
        }
        write_json(path, &stats)?;
    }
    Ok(())
}

/// `fingerprint`: one line per API key on stdin.
fn print_fingerprints(config: &AgentConfig) -> anyhow::Result<()> {
    if config.identity.fingerprint_key_file.is_none() {
        anyhow::bail!(
            "identity.fingerprint_key_file is not set in the config: without it fingerprints \
             change at every start and cannot be listed"
        );
    }
    let identity = attribution::IdentityExtractor::new(&config.identity)?;
    let mut out = std::io::stdout().lock();
    for key in std::io::stdin().lines() {
        let key = key?;
        let key = key.trim();
        if !key.is_empty() {
            writeln!(out, "{}", identity.fingerprint(key))?;
        }
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)?;
    Ok(())
}

/// `capture --json`: one line per finished stream direction on stdout, flushed at once.
struct JsonLinesSink(StreamDigester);

impl StreamSink for JsonLinesSink {
    fn consume(&mut self, event: StreamEvent) {
        if let Some(digest) = self.0.consume(event) {
            let mut stdout = std::io::stdout().lock();
            let line = serde_json::to_string(&digest).expect("digests serialise");
            // A closed stdout (the reader went away) must not stop capture.
            let _ = writeln!(stdout, "{line}").and_then(|_| stdout.flush());
        }
    }
}
