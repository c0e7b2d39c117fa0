//! The OTLP receiver: gRPC ([`grpc`]) and HTTP with protobuf or JSON bodies ([`http`]), both
//! behind bearer-token authentication ([`auth`]), both handing requests to the [`Ingestor`].
//! The ingestor decodes the usage log records, names each call's account, picks its price
//! entry and stores the batch in one transaction. Records that cannot be usage (no id, a
//! negative count) are rejected through OTLP's partial success, with the reason; a database
//! failure rejects the whole request as retryable (gRPC UNAVAILABLE, HTTP 503) so the agent
//! sends it again, and nothing of it is half stored.

pub mod auth;
pub mod grpc;
pub mod http;
pub mod tls;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest,
};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use tracing::{error, warn};

use crate::{
    accounts::Accounts,
    rate::{self, PriceBook},
    store::{RatedEvent, Store, StoreError},
    usage::{self, UsageEvent},
};

/// Counters of what was received, for `/metrics`.
#[derive(Default)]
pub struct IngestMetrics {
    pub requests: AtomicU64,
    pub records_inserted: AtomicU64,
    pub records_duplicate: AtomicU64,
    pub records_rejected: AtomicU64,
    pub records_adjustments: AtomicU64,
    pub records_unpriced: AtomicU64,
    pub records_unassigned: AtomicU64,
    pub metric_points: AtomicU64,
    pub gpu_records: AtomicU64,
    pub store_errors: AtomicU64,
    pub auth_failures: AtomicU64,
}

/// What the sender is told about a request that was accepted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IngestReply {
    pub rejected: u64,
    /// Why, for the first rejected record (OTLP's `error_message`).
    pub message: String,
}

impl IngestReply {
    /// OTLP's partial success, when something was rejected.
    pub fn partial_success(self) -> Option<ExportLogsPartialSuccess> {
        if self.rejected == 0 {
            return None;
        }
        Some(ExportLogsPartialSuccess {
            rejected_log_records: i64::try_from(self.rejected).unwrap_or(i64::MAX),
            error_message: self.message,
        })
    }
}

pub struct Ingestor {
    store: Mutex<Box<dyn Store>>,
    book: PriceBook,
    accounts: Accounts,
    pub metrics: IngestMetrics,
}

impl Ingestor {
    pub fn new(store: Box<dyn Store>, book: PriceBook, accounts: Accounts) -> Arc<Ingestor> {
        Arc::new(Ingestor {
            store: Mutex::new(store),
            book,
            accounts,
            metrics: IngestMetrics::default(),
        })
    }

    /// Decodes, rates and stores the usage of one OTLP logs request.
    pub fn ingest_logs(
        &self,
        request: &ExportLogsServiceRequest,
    ) -> Result<IngestReply, StoreError> {
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let mut reply = IngestReply::default();
        let mut batch = Vec::new();
        for resource_logs in &request.resource_logs {
            let resource = resource_logs
                .resource
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            for scope_logs in &resource_logs.scope_logs {
                for record in &scope_logs.log_records {
                    match UsageEvent::from_log(record, resource) {
                        Ok(Some(event)) => {
                            if event.operation == usage::GPU_OPERATION {
                                self.metrics.gpu_records.fetch_add(1, Ordering::Relaxed);
                            }
                            batch.push(self.rate(event));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            reply.rejected += 1;
                            if reply.message.is_empty() {
                                reply.message = format!("a usage record was rejected: {e}");
                            }
                        }
                    }
                }
            }
        }
        self.metrics
            .records_rejected
            .fetch_add(reply.rejected, Ordering::Relaxed);
        if reply.rejected > 0 {
            warn!(rejected = reply.rejected, reason = %reply.message, "rejected usage records");
        }
        if batch.is_empty() {
            return Ok(reply);
        }
        let now = now_ns();
        let outcome = {
            let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            store.ingest(&batch, now)
        };
        let outcome = outcome.inspect_err(|e| {
            self.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            error!(%e, records = batch.len(), "storing usage failed; the sender will retry");
        })?;
        let m = &self.metrics;
        m.records_inserted
            .fetch_add(outcome.inserted, Ordering::Relaxed);
        m.records_duplicate
            .fetch_add(outcome.duplicates, Ordering::Relaxed);
        m.records_adjustments
            .fetch_add(outcome.adjustments, Ordering::Relaxed);
        Ok(reply)
    }

    /// Metrics are accepted (agents send them to the same endpoint) and counted; billing reads
    /// the log records.
    pub fn ingest_metrics(&self, request: &ExportMetricsServiceRequest) {
        let points: usize = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .map(|s| s.metrics.len())
            .sum();
        self.metrics
            .metric_points
            .fetch_add(points as u64, Ordering::Relaxed);
    }

    fn rate(&self, event: UsageEvent) -> RatedEvent {
        let account = self.accounts.resolve(&event.attributes);
        let price_id = rate::resolve(
            &self.book,
            &account.org,
            &account.team,
            &event.model,
            event.time_ns,
        )
        .map(|e| e.id.clone());
        if price_id.is_none() {
            self.metrics
                .records_unpriced
                .fetch_add(1, Ordering::Relaxed);
        }
        if account.org == crate::accounts::UNASSIGNED {
            self.metrics
                .records_unassigned
                .fetch_add(1, Ordering::Relaxed);
        }
        RatedEvent {
            event,
            account,
            price_id,
        }
    }

    /// The Prometheus text of the counters.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        for (name, help, value) in [
            (
                "tokenmeter_collector_requests_total",
                "OTLP log requests received.",
                get(&m.requests),
            ),
            (
                "tokenmeter_collector_records_inserted_total",
                "Usage records stored.",
                get(&m.records_inserted),
            ),
            (
                "tokenmeter_collector_records_duplicate_total",
                "Usage records already stored (resent), ignored.",
                get(&m.records_duplicate),
            ),
            (
                "tokenmeter_collector_records_rejected_total",
                "Log records that were not valid usage.",
                get(&m.records_rejected),
            ),
            (
                "tokenmeter_collector_records_adjustments_total",
                "Usage records late for a finalised period.",
                get(&m.records_adjustments),
            ),
            (
                "tokenmeter_collector_records_unpriced_total",
                "Usage records no price matched.",
                get(&m.records_unpriced),
            ),
            (
                "tokenmeter_collector_records_unassigned_total",
                "Usage records no account rule matched.",
                get(&m.records_unassigned),
            ),
            (
                "tokenmeter_collector_gpu_records_total",
                "Per-pod GPU usage records received (GPU time, priced per GPU-second).",
                get(&m.gpu_records),
            ),
            (
                "tokenmeter_collector_metric_points_total",
                "OTLP metrics received (counted, not billed).",
                get(&m.metric_points),
            ),
            (
                "tokenmeter_collector_store_errors_total",
                "Batches the database refused (retried by senders).",
                get(&m.store_errors),
            ),
            (
                "tokenmeter_collector_auth_failures_total",
                "Requests without a valid token.",
                get(&m.auth_failures),
            ),
        ] {
            counter_text(&mut out, name, help, value);
        }
        out
    }
}

/// Appends one counter in the Prometheus text format.
pub fn counter_text(out: &mut String, name: &str, help: &str, value: u64) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
    );
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}
