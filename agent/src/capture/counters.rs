//! The kernel side's per-CPU counters, summed, and the drop report built from them.

use aya::maps::{MapData, PerCpuArray};
use serde::Serialize;
use tokenmeter_common::counter;

/// Totals since the programs were loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CaptureCounters {
    /// Data records delivered to the ring buffer.
    pub events: u64,
    /// Payload bytes delivered.
    pub bytes: u64,
    /// TLS calls cut at the per-call capture limit.
    pub truncated_calls: u64,
    /// Data records lost on a full ring buffer.
    pub dropped_events: u64,
    /// Payload bytes lost on a full ring buffer.
    pub dropped_bytes: u64,
    /// Chunks whose user memory could not be read.
    pub read_failures: u64,
    /// Returns without a recorded entry.
    pub orphan_returns: u64,
    /// Control records lost on a full control ring buffer.
    pub dropped_control: u64,
}

impl CaptureCounters {
    /// Sums the per-CPU values of the `COUNTERS` map.
    pub fn read(map: &PerCpuArray<MapData, u64>) -> Self {
        let get = |index: u32| -> u64 {
            map.get(&index, 0)
                .map(|values| values.iter().sum())
                .unwrap_or(0)
        };
        Self {
            events: get(counter::EVENTS),
            bytes: get(counter::BYTES),
            truncated_calls: get(counter::TRUNCATED_CALLS),
            dropped_events: get(counter::DROPPED_EVENTS),
            dropped_bytes: get(counter::DROPPED_BYTES),
            read_failures: get(counter::READ_FAILURES),
            orphan_returns: get(counter::ORPHAN_RETURNS),
            dropped_control: get(counter::DROPPED_CONTROL),
        }
    }

    /// What was lost since `earlier`: (events, bytes, control records).
    pub fn drops_since(&self, earlier: &Self) -> (u64, u64, u64) {
        (
            self.dropped_events - earlier.dropped_events,
            self.dropped_bytes - earlier.dropped_bytes,
            self.dropped_control - earlier.dropped_control,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_differences() {
        let earlier = CaptureCounters {
            dropped_events: 2,
            dropped_bytes: 10,
            ..Default::default()
        };
        let now = CaptureCounters {
            dropped_events: 5,
            dropped_bytes: 40,
            dropped_control: 1,
            ..Default::default()
        };
        assert_eq!(now.drops_since(&earlier), (3, 30, 1));
    }
}
