//! Counters and gauges, updated by the stages and rendered in the Prometheus text format.
//! Names follow `tokenmeter_<stage>_<what>_total`; labels are bounded (a protocol name).

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::capture::CaptureCounters;

/// Shared by the pipeline (writes) and the metrics endpoint (reads).
#[derive(Default)]
pub struct AgentMetrics {
    capture: [AtomicU64; 8],
    pub probed_files: AtomicU64,
    pub open_connections: AtomicU64,
    pub streams_closed: AtomicU64,
    pub undecodable_records: AtomicU64,
    pub http_connections: [AtomicU64; 3],
    /// Body bytes held by all connections now, and those not kept because that hit the cap.
    pub http_body_bytes_held: AtomicU64,
    pub http_body_bytes_over_budget: AtomicU64,
    pub exchanges: AtomicU64,
    pub exchanges_not_llm: AtomicU64,
    pub records: AtomicU64,
    pub records_with_errors: AtomicU64,
    pub record_queue_full: AtomicU64,
    pub ready: AtomicBool,
    /// 1 while the export backlog is the disk spool, 0 when it is in memory.
    pub spool_on_disk: AtomicU64,
    pub spool_bytes: AtomicU64,
    pub spool_dropped: AtomicU64,
    pub spool_failures: AtomicU64,
    pub export_delivered: AtomicU64,
    pub export_failures: AtomicU64,
    /// Lines in the backlog that were not usage records (a damaged spool), skipped.
    pub export_invalid: AtomicU64,
    /// How long deliveries have been failing (0 when they succeed).
    pub export_lag_ms: AtomicU64,
    pub export_last_delivery_us: AtomicU64,
    /// Pods the Kubernetes API described (deleted ones in their grace period included).
    pub pods_known: AtomicU64,
    pub kubernetes_errors: AtomicU64,
    /// Records of a pod (by cgroup) the API had not described (yet).
    pub records_without_pod_metadata: AtomicU64,
    /// GPUs the NVML sampler reads.
    pub gpu_devices: AtomicU64,
    /// Per-pod GPU usage records produced.
    pub gpu_records: AtomicU64,
    /// Plaintext (syscall) capture: processes traced, descriptors skipped.
    plaintext: [AtomicU64; 3],
}

/// (name, help) of the capture counters, in `CaptureCounters` order.
const CAPTURE: [(&str, &str); 8] = [
    (
        "tokenmeter_capture_events_total",
        "Plaintext records delivered by the kernel.",
    ),
    (
        "tokenmeter_capture_bytes_total",
        "Plaintext bytes delivered by the kernel.",
    ),
    (
        "tokenmeter_capture_truncated_calls_total",
        "TLS calls cut at the per-call capture limit.",
    ),
    (
        "tokenmeter_capture_dropped_events_total",
        "Records lost because the ring buffer was full.",
    ),
    (
        "tokenmeter_capture_dropped_bytes_total",
        "Bytes lost because the ring buffer was full.",
    ),
    (
        "tokenmeter_capture_read_failures_total",
        "Chunks whose user memory could not be read.",
    ),
    (
        "tokenmeter_capture_orphan_returns_total",
        "TLS returns seen without their call.",
    ),
    (
        "tokenmeter_capture_dropped_control_total",
        "Exec/exit/close notifications lost.",
    ),
];

/// Protocol labels of `http_connections`.
pub const PROTOCOLS: [&str; 3] = ["http1", "http2", "other"];

impl AgentMetrics {
    /// Takes the kernel's latest totals.
    pub fn set_capture(&self, counters: &CaptureCounters) {
        let values = [
            counters.events,
            counters.bytes,
            counters.truncated_calls,
            counters.dropped_events,
            counters.dropped_bytes,
            counters.read_failures,
            counters.orphan_returns,
            counters.dropped_control,
        ];
        for (slot, value) in self.capture.iter().zip(values) {
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// The plaintext capture's figures.
    pub fn set_plaintext(&self, stats: &crate::capture::plaintext::PlaintextStats) {
        let values = [stats.processes, stats.ignored_not_socket, stats.ignored_tls];
        for (slot, value) in self.plaintext.iter().zip(values) {
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        for ((name, help), value) in CAPTURE.iter().zip(&self.capture) {
            metric(&mut out, name, "counter", help, &[("", get(value))]);
        }
        let gauges: [(&str, &str, u64); 10] = [
            (
                "tokenmeter_capture_plaintext_processes",
                "Processes whose socket syscalls are captured (plaintext HTTP).",
                get(&self.plaintext[0]),
            ),
            (
                "tokenmeter_gpu_devices",
                "GPUs the NVML sampler reads (0 without NVML).",
                get(&self.gpu_devices),
            ),
            (
                "tokenmeter_attribution_pods_known",
                "Pods of this node the Kubernetes API described.",
                get(&self.pods_known),
            ),
            (
                "tokenmeter_export_spool_on_disk",
                "1 while undelivered records are kept in the disk spool, 0 when only in memory.",
                get(&self.spool_on_disk),
            ),
            (
                "tokenmeter_export_spool_bytes",
                "Bytes of records waiting for delivery (or kept for replay).",
                get(&self.spool_bytes),
            ),
            (
                "tokenmeter_export_lag_seconds",
                "Seconds deliveries have been failing (0 while they succeed).",
                get(&self.export_lag_ms) / 1000,
            ),
            (
                "tokenmeter_capture_probed_files",
                "Files (libraries, executables) with probes attached.",
                get(&self.probed_files),
            ),
            (
                "tokenmeter_streams_open_connections",
                "Connections being reassembled.",
                get(&self.open_connections),
            ),
            (
                "tokenmeter_http_body_bytes_held",
                "Bytes of request and response bodies held for metering (capped by http.max_held_body_bytes).",
                get(&self.http_body_bytes_held),
            ),
            (
                "tokenmeter_ready",
                "1 once the probes of the processes found at start are attached.",
                u64::from(self.ready.load(Ordering::Relaxed)),
            ),
        ];
        for (name, help, value) in gauges {
            metric(&mut out, name, "gauge", help, &[("", value)]);
        }
        let counters: [(&str, &str, u64); 16] = [
            (
                "tokenmeter_gpu_usage_records_total",
                "Per-pod GPU usage records produced (one per pod and report interval).",
                get(&self.gpu_records),
            ),
            (
                "tokenmeter_attribution_kubernetes_errors_total",
                "Failed lists and watches of pods (each retried with backoff).",
                get(&self.kubernetes_errors),
            ),
            (
                "tokenmeter_attribution_records_without_pod_metadata_total",
                "Records of a pod the Kubernetes API had not described: uid and container id only.",
                get(&self.records_without_pod_metadata),
            ),
            (
                "tokenmeter_export_records_delivered_total",
                "Usage records the receiver acknowledged.",
                get(&self.export_delivered),
            ),
            (
                "tokenmeter_export_failures_total",
                "Failed deliveries (each retried).",
                get(&self.export_failures),
            ),
            (
                "tokenmeter_export_records_dropped_total",
                "Undelivered records dropped because the backlog was full.",
                get(&self.spool_dropped),
            ),
            (
                "tokenmeter_export_spool_failures_total",
                "Times the disk spool failed and the backlog moved to memory.",
                get(&self.spool_failures),
            ),
            (
                "tokenmeter_export_invalid_records_total",
                "Backlog lines that were not usage records, skipped.",
                get(&self.export_invalid),
            ),
            (
                "tokenmeter_streams_closed_total",
                "Stream directions finished.",
                get(&self.streams_closed),
            ),
            (
                "tokenmeter_capture_undecodable_records_total",
                "Ring buffer records that did not decode.",
                get(&self.undecodable_records),
            ),
            (
                "tokenmeter_http_body_bytes_over_budget_total",
                "Body bytes not kept because the bodies held reached http.max_held_body_bytes.",
                get(&self.http_body_bytes_over_budget),
            ),
            (
                "tokenmeter_http_exchanges_total",
                "HTTP request/response exchanges decoded.",
                get(&self.exchanges),
            ),
            (
                "tokenmeter_http_exchanges_not_llm_total",
                "Exchanges that were not LLM API calls.",
                get(&self.exchanges_not_llm),
            ),
            (
                "tokenmeter_usage_records_total",
                "Usage records produced.",
                get(&self.records),
            ),
            (
                "tokenmeter_usage_records_with_errors_total",
                "Usage records that are partial (HTTP or decoding problems).",
                get(&self.records_with_errors),
            ),
            (
                "tokenmeter_usage_queue_full_total",
                "Times the pipeline waited for the token counter (nothing is dropped).",
                get(&self.record_queue_full),
            ),
        ];
        for (name, help, value) in counters {
            metric(&mut out, name, "counter", help, &[("", value)]);
        }
        metric(
            &mut out,
            "tokenmeter_capture_plaintext_ignored_fds_total",
            "counter",
            "Descriptors of plaintext processes skipped: not a socket, or carrying TLS.",
            &[
                ("reason=\"not_socket\"", get(&self.plaintext[1])),
                ("reason=\"tls\"", get(&self.plaintext[2])),
            ],
        );
        let by_protocol: Vec<(String, u64)> = PROTOCOLS
            .iter()
            .zip(&self.http_connections)
            .map(|(p, v)| (format!("protocol=\"{p}\""), get(v)))
            .collect();
        let labelled: Vec<(&str, u64)> =
            by_protocol.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            &mut out,
            "tokenmeter_http_connections_total",
            "counter",
            "Connections by protocol.",
            &labelled,
        );
        out
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric_once_with_help_and_type() {
        let metrics = AgentMetrics::default();
        metrics.set_capture(&CaptureCounters {
            events: 7,
            dropped_events: 2,
            ..Default::default()
        });
        metrics.http_connections[1].store(3, Ordering::Relaxed);
        let text = metrics.render();
        assert!(text.contains("tokenmeter_capture_events_total 7\n"));
        assert!(text.contains("tokenmeter_capture_dropped_events_total 2\n"));
        assert!(text.contains("tokenmeter_http_connections_total{protocol=\"http2\"} 3\n"));
        assert!(text.contains("# TYPE tokenmeter_ready gauge\ntokenmeter_ready 0\n"));
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(types, helps);
        assert_eq!(types, 8 + 10 + 16 + 2);
    }
}
