//! What a pod has used of the node's GPUs, cumulative since the sampler opened, in exact integer
//! units (so tests and exporters compare and subtract without rounding drift).

use std::collections::BTreeSet;

/// The key for GPU use by processes that map to no pod (the node's own daemons, or a process
/// whose pod was not known yet). Pod uids are UUIDs, so it cannot collide with one.
pub const HOST_POD: &str = "host";

/// One pod's cumulative GPU use. How each figure is integrated: see the module documentation of
/// `attribution::gpu`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodGpuUsage {
    /// Microseconds the pod held a GPU (had a running compute process on it), summed over
    /// devices: two devices held for one second are two GPU-seconds.
    pub gpu_time_us: u64,
    /// Σ SM % × covered µs over the pod's process-utilisation samples: exact, in percent·µs.
    /// [`Self::sm_util_us`] is the same in µs of full SM use.
    pub sm_percent_us: u64,
    /// Σ used device memory (bytes) × interval (µs) over the pod's running processes.
    pub memory_byte_us: u128,
    /// The pod's share of the devices' energy, in nanojoules (mW × µs).
    pub energy_nj: u128,
    /// UUIDs of the devices the pod used.
    pub devices: BTreeSet<String>,
    /// The pod held a MIG-enabled device: from those, held time and memory only.
    pub mig: bool,
    /// The pod held a device that does not report per-process utilisation
    /// (`NVML_ERROR_NOT_SUPPORTED`): from those, held time and memory only.
    pub sm_unavailable: bool,
}

impl PodGpuUsage {
    /// SM use in µs of one fully busy SM array (percent·µs / 100, rounded down).
    pub fn sm_util_us(&self) -> u64 {
        self.sm_percent_us / 100
    }

    /// GPU time held, in seconds.
    pub fn gpu_seconds(&self) -> f64 {
        self.gpu_time_us as f64 / 1e6
    }

    /// Tokens the pod produced (or served) per GPU-second held; `None` before it held one.
    pub fn tokens_per_gpu_second(&self, tokens: u64) -> Option<f64> {
        (self.gpu_time_us > 0).then(|| tokens as f64 * 1e6 / self.gpu_time_us as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_figures() {
        let usage = PodGpuUsage {
            gpu_time_us: 2_500_000,
            sm_percent_us: 12_345,
            ..Default::default()
        };
        assert_eq!(usage.sm_util_us(), 123);
        assert_eq!(usage.gpu_seconds(), 2.5);
        assert_eq!(usage.tokens_per_gpu_second(1000), Some(400.0));
        assert_eq!(PodGpuUsage::default().tokens_per_gpu_second(1000), None);
    }
}
