//! OTLP export: the usage records as log records (through the spool, acknowledged per batch,
//! see [`logs`]), the GenAI metrics and the cumulative counters ([`metrics`], [`totals`]),
//! all with the agent's resource (`service.name`, `k8s.node.name`, `host.name`, plus
//! `OTEL_RESOURCE_ATTRIBUTES`). Settings: [`crate::export::ExportConfig`] and the standard
//! `OTEL_EXPORTER_OTLP_*` variables.

mod attributes;
mod client;
mod logs;
mod metrics;
pub mod totals;

pub use attributes::SCHEMA_URL;
pub use logs::EVENT_NAME;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use opentelemetry::KeyValue;
use opentelemetry_sdk::{
    logs::LogExporter as _,
    metrics::{PeriodicReader, SdkMeterProvider},
    Resource,
};
use tracing::{info, warn};

use super::{
    spool::{Cursor, SpoolConfig},
    Backlog, ExportConfig, RecordSink, ShippedExport, ShipperConfig,
};
use crate::{record::UsageRecord, telemetry::AgentMetrics};
use totals::{CheckpointFile, Totals};

pub struct OtlpExport {
    shipped: ShippedExport,
    metrics: metrics::GenAiMetrics,
    provider: SdkMeterProvider,
    totals: Arc<Mutex<Totals>>,
    checkpoint: Option<Checkpointing>,
    /// Runs the gRPC channels; dropped last.
    _runtime: tokio::runtime::Runtime,
}

/// When and where the cumulative counters are saved.
struct Checkpointing {
    file: CheckpointFile,
    every: Duration,
    last: Instant,
    failed: bool,
}

/// The agent's resource.
fn resource() -> Resource {
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Ok(node) = std::env::var("NODE_NAME") {
        attributes.push(KeyValue::new("k8s.node.name", node));
    }
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        attributes.push(KeyValue::new("host.name", host.trim().to_string()));
    }
    Resource::builder()
        .with_service_name("tokenmeter-agent")
        .with_attributes(attributes)
        .build()
}

impl OtlpExport {
    pub fn start(
        config: &ExportConfig,
        spool: Option<SpoolConfig>,
        agent_metrics: Arc<AgentMetrics>,
    ) -> Result<Self> {
        let otlp = config
            .otlp
            .resolve(|name| std::env::var(name).ok())
            .map_err(anyhow::Error::msg)?;
        info!(?otlp, "exporting usage over OTLP");
        // reqwest's rustls needs a process-wide provider: ring, as tonic uses (another
        // component may have installed one already, which is as good).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = client::runtime()?;
        let resource = resource();
        let mut log_exporter = client::log_exporter(&otlp, &runtime)?;
        log_exporter.set_resource(&resource);
        let metric_exporter = client::metric_exporter(&otlp, &runtime)?;

        let checkpoint = spool.as_ref().map(|spool| Checkpointing {
            file: CheckpointFile::new(&spool.dir),
            every: otlp.checkpoint_interval,
            last: Instant::now(),
            failed: false,
        });
        // The counters are restored before the shipper may acknowledge (and delete) any of
        // the spooled records they are rebuilt from.
        let mut backlog = Backlog::open(spool, config.spool_max_bytes);
        let totals = Arc::new(Mutex::new(restore_totals(
            &mut backlog,
            checkpoint.as_ref(),
        )));
        let shipped = ShippedExport::start(
            backlog,
            config.spool_max_bytes,
            logs::OtlpLogs::new(log_exporter, agent_metrics.clone()),
            ShipperConfig::default(),
            agent_metrics,
        );
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(
                PeriodicReader::builder(metric_exporter)
                    .with_interval(otlp.metrics_interval)
                    .build(),
            )
            .build();
        let metrics = metrics::GenAiMetrics::new(&provider, totals.clone());
        let mut export = Self {
            shipped,
            metrics,
            provider,
            totals,
            checkpoint,
            _runtime: runtime,
        };
        export.save_checkpoint();
        Ok(export)
    }

    /// Saves the totals with the spool position they include, and pins the spool there.
    fn save_checkpoint(&mut self) {
        let Some(end) = self.shipped.flush() else {
            return;
        };
        let Some(checkpoint) = self.checkpoint.as_mut() else {
            return;
        };
        checkpoint.last = Instant::now();
        let totals = self
            .totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match checkpoint.file.save(&totals, end) {
            Ok(()) => {
                checkpoint.failed = false;
                if let Some(Err(e)) = self.shipped.with_spool(|spool| spool.keep_from(end)) {
                    warn!(%e, "releasing checkpointed spool segments failed");
                }
            }
            Err(e) if !checkpoint.failed => {
                checkpoint.failed = true;
                warn!(
                    %e,
                    "saving the token counters' checkpoint failed: after a restart the \
                     cumulative counters are rebuilt from the spool as far as it reaches"
                );
            }
            Err(_) => {}
        }
    }
}

/// The totals of the last checkpoint plus the spooled records after it.
fn restore_totals(backlog: &mut Backlog, checkpoint: Option<&Checkpointing>) -> Totals {
    let Some(checkpoint) = checkpoint else {
        return Totals::default();
    };
    let (mut totals, from) = checkpoint
        .file
        .load()
        .unwrap_or_else(|| (Totals::default(), Cursor::default()));
    let Backlog::Disk(spool) = backlog else {
        return totals;
    };
    // Kept until the next checkpoint includes them.
    if let Err(e) = spool.keep_from(from) {
        warn!(%e, "pinning the spool for the token counters failed");
    }
    match totals.replay(spool, from) {
        Ok((replayed, _)) => {
            info!(
                replayed,
                "cumulative token counters restored from the checkpoint and the spool"
            );
        }
        Err(e) => warn!(%e, "replaying the spool into the token counters failed"),
    }
    totals
}

impl RecordSink for OtlpExport {
    fn export(&mut self, record: &UsageRecord) {
        let json = serde_json::to_value(record).expect("records serialise");
        self.metrics.record(&json);
        self.totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(&json);
        self.shipped
            .append(&serde_json::to_vec(&json).expect("records serialise"));
    }

    fn export_gpu(&mut self, record: &crate::attribution::GpuUsageRecord) {
        // A log record only: the GenAI metrics and token counters are about calls.
        self.shipped
            .append(&serde_json::to_vec(record).expect("records serialise"));
    }

    fn flush(&mut self) {
        match &self.checkpoint {
            Some(c) if c.last.elapsed() >= c.every => self.save_checkpoint(),
            _ => {
                self.shipped.flush();
            }
        }
    }
}

impl Drop for OtlpExport {
    fn drop(&mut self) {
        self.save_checkpoint();
        self.shipped.stop();
        // One last export of the metrics, the cumulative counters' final values included.
        if let Err(e) = self.provider.shutdown() {
            warn!(%e, "the last metrics export failed (the cumulative counters are resent after a restart)");
        }
    }
}
