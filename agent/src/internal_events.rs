//! The agent's own events: each one writes its log line, so that what is dropped or skipped is
//! always said, in one place and one wording.

use tracing::{info, warn};

use crate::capture::CaptureCounters;

/// The kernel side dropped records since the last check (a ring buffer was full).
pub fn capture_dropped(events: u64, bytes: u64, control: u64) {
    if events > 0 || bytes > 0 {
        warn!(
            dropped_events = events,
            dropped_bytes = bytes,
            "capture dropped TLS data: the ring buffer was full; the affected streams are \
             marked truncated. Narrow the selector or give the agent more CPU"
        );
    }
    if control > 0 {
        warn!(
            dropped_control = control,
            "capture dropped exec/exit/close notifications: the control ring buffer was full"
        );
    }
}

/// A ring buffer record did not decode (an agent/eBPF object version mismatch).
pub fn record_undecodable(ring: &'static str, error: &dyn std::error::Error, total: u64) {
    // The first one and then every thousandth, so a systematic mismatch cannot flood the log.
    if total == 1 || total.is_multiple_of(1000) {
        warn!(ring, %error, total, "dropping undecodable record");
    }
}

/// The final tally, logged once when the agent stops.
pub fn capture_stopped(counters: &CaptureCounters, streams: u64, max_rss_kib: u64) {
    info!(
        events = counters.events,
        bytes = counters.bytes,
        truncated_calls = counters.truncated_calls,
        dropped_events = counters.dropped_events,
        dropped_bytes = counters.dropped_bytes,
        read_failures = counters.read_failures,
        orphan_returns = counters.orphan_returns,
        dropped_control = counters.dropped_control,
        streams,
        max_rss_kib,
        "capture stopped"
    );
}
