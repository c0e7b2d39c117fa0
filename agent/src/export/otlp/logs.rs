//! Usage records as OTLP log records, one per LLM call: no prompt or completion text, the
//! usage and identity as attributes, the stable record id as `tokenmeter.record.id`, and the
//! call's end time as both timestamps, so a retried record is byte for byte the same.

use std::{
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};

use opentelemetry::{
    logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity},
    Array, InstrumentationScope, Value,
};
use opentelemetry_sdk::logs::{
    LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider,
};
use serde_json::Value as Json;
use tracing::error;

use super::attributes::{is_gpu_usage, record_attributes, SCHEMA_URL};
use crate::{
    export::shipper::{DeliveryError, Destination},
    telemetry::AgentMetrics,
};

/// The `event_name` of usage log records.
pub const EVENT_NAME: &str = "tokenmeter.usage";
/// The `event_name` of per-pod GPU usage log records.
pub const GPU_EVENT_NAME: &str = "tokenmeter.gpu_usage";

/// Delivers spooled records through an OTLP log exporter.
pub struct OtlpLogs {
    exporter: opentelemetry_otlp::LogExporter,
    /// Makes log records (no processor: they go to the exporter directly).
    logger: SdkLogger,
    _provider: SdkLoggerProvider,
    scope: InstrumentationScope,
    metrics: Arc<AgentMetrics>,
}

impl OtlpLogs {
    pub fn new(exporter: opentelemetry_otlp::LogExporter, metrics: Arc<AgentMetrics>) -> Self {
        let provider = SdkLoggerProvider::builder().build();
        let scope = InstrumentationScope::builder("tokenmeter-agent")
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(SCHEMA_URL)
            .build();
        Self {
            exporter,
            logger: provider.logger_with_scope(scope.clone()),
            _provider: provider,
            scope,
            metrics,
        }
    }

    /// The log record of one spooled usage record.
    fn log_record(&self, record: &Json) -> SdkLogRecord {
        let mut log = self.logger.create_log_record();
        let end = record
            .get("end_time_unix_nano")
            .and_then(Json::as_u64)
            .unwrap_or_default();
        let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(end);
        log.set_timestamp(time);
        log.set_observed_timestamp(time);
        log.set_event_name(if is_gpu_usage(record) {
            GPU_EVENT_NAME
        } else {
            EVENT_NAME
        });
        log.set_severity_number(Severity::Info);
        log.set_severity_text("INFO");
        log.add_attributes(
            record_attributes(record)
                .into_iter()
                .map(|kv| (kv.key, any_value(kv.value))),
        );
        log
    }
}

/// A metric-style attribute value as a log attribute value.
fn any_value(value: Value) -> AnyValue {
    match value {
        Value::Bool(b) => AnyValue::Boolean(b),
        Value::I64(i) => AnyValue::Int(i),
        Value::F64(f) => AnyValue::Double(f),
        Value::String(s) => AnyValue::String(s),
        Value::Array(Array::String(items)) => {
            AnyValue::ListAny(Box::new(items.into_iter().map(AnyValue::String).collect()))
        }
        other => AnyValue::String(other.to_string().into()),
    }
}

impl Destination for OtlpLogs {
    fn deliver(&mut self, records: &[Vec<u8>]) -> Result<(), DeliveryError> {
        let mut logs = Vec::with_capacity(records.len());
        for line in records {
            match serde_json::from_slice::<Json>(line) {
                Ok(record) => logs.push(self.log_record(&record)),
                Err(e) => {
                    // Only a damaged spool has such lines: skipping one loses it, keeping it
                    // would block every record behind it.
                    self.metrics.export_invalid.fetch_add(1, Ordering::Relaxed);
                    error!(%e, bytes = line.len(), "a spooled line is not a usage record; skipped");
                }
            }
        }
        if logs.is_empty() {
            return Ok(());
        }
        let batch: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            logs.iter().map(|log| (log, &self.scope)).collect();
        futures_executor::block_on(self.exporter.export(LogBatch::new(&batch)))
            .map_err(|e| DeliveryError(e.to_string()))
    }
}
