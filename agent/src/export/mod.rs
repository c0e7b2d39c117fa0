//! Export: where usage records go, and how none is lost on the way.
//!
//! The record worker hands each record to a [`RecordSink`]. The sinks here append it to a
//! backlog (the disk spool, or memory without one) and a shipper thread delivers the backlog
//! to a [`Destination`]: standard output (JSON lines) or an OpenTelemetry collector over OTLP
//! (usage records as log records, GenAI metrics, cumulative token counters). Records leave
//! the backlog only once delivered, so a dead receiver or a restarted agent loses nothing.

mod backlog;
mod config;
pub mod otlp;
mod shipper;
pub mod spool;
mod stdout;

pub use backlog::Backlog;
pub use config::{ExportConfig, ExportKind};
pub use shipper::{DeliveryError, Destination, ShippedExport, ShipperConfig};
pub use stdout::StdoutExport;

use std::sync::Arc;

use crate::{attribution::GpuUsageRecord, record::UsageRecord, telemetry::AgentMetrics};

/// A destination for usage records.
pub trait RecordSink {
    fn export(&mut self, record: &UsageRecord);
    /// A pod's GPU use over a report interval: the same backlog, the same delivery.
    fn export_gpu(&mut self, record: &GpuUsageRecord);
    /// Called when the worker has no more records for now: make the exported ones durable.
    fn flush(&mut self) {}
}

/// Builds the configured exporter: the backlog, the shipper and its destination.
pub fn build(
    config: &ExportConfig,
    metrics: Arc<AgentMetrics>,
) -> anyhow::Result<Box<dyn RecordSink + Send>> {
    let spool = config.spool_config();
    Ok(match config.kind {
        ExportKind::Stdout => Box::new(ShippedExport::start(
            Backlog::open(spool, config.spool_max_bytes),
            config.spool_max_bytes,
            StdoutExport,
            ShipperConfig::default(),
            metrics,
        )),
        ExportKind::Otlp => Box::new(otlp::OtlpExport::start(config, spool, metrics)?),
    })
}
