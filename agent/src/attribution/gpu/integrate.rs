//! The integration of one device's reads over one sampling interval into per-pod totals: pure
//! arithmetic on plain structs, apart from NVML, so that every rule is unit-tested without a
//! library. The rules are stated in the `attribution::gpu` module documentation.

use std::collections::BTreeMap;

use super::usage::PodGpuUsage;

/// A running compute process, as read at the end of the interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunningProcess {
    pub pid: u32,
    /// `None` where NVML reports it not available.
    pub used_memory_bytes: Option<u64>,
}

/// One per-process utilisation sample (`nvmlProcessUtilizationSample_t`, the fields used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtilSample {
    pub pid: u32,
    /// The driver's CPU timestamp of the sample, µs since the Unix epoch.
    pub timestamp_us: u64,
    /// SM (compute) utilisation, percent; above 100 counts as 100.
    pub sm_percent: u32,
}

/// What the per-process utilisation read gave for the interval.
#[derive(Debug)]
pub enum SmReads<'a> {
    /// Not read: a MIG device, or the read failed this time.
    NotRead,
    /// The device does not report it (`NVML_ERROR_NOT_SUPPORTED`): pods holding it are flagged.
    Unsupported,
    /// The samples newer than `last_tick_us`, the newest sample timestamp already integrated.
    Read {
        samples: &'a mut [UtilSample],
        last_tick_us: u64,
    },
}

/// One device's reads for one interval.
#[derive(Debug)]
pub struct DeviceInterval<'a> {
    pub uuid: &'a str,
    /// The interval's end (the `sample()` time), µs since the Unix epoch.
    pub end_us: u64,
    /// Microseconds since the previous sample.
    pub interval_us: u64,
    pub mig: bool,
    /// Power at the end of the interval, milliwatts; `None` when the read failed.
    pub power_mw: Option<u32>,
    /// `None` when the read failed.
    pub processes: Option<&'a [RunningProcess]>,
    pub sm: SmReads<'a>,
}

/// Adds one device's interval to `pods`; `pod_of` gives the pod key of a PID. Returns the
/// newest sample timestamp integrated (the next read's `lastSeenTimeStamp`) when samples were
/// read.
pub fn integrate_device(
    device: DeviceInterval<'_>,
    pod_of: &mut dyn FnMut(u32) -> String,
    pods: &mut BTreeMap<String, PodGpuUsage>,
) -> Option<u64> {
    let interval = u128::from(device.interval_us);

    if let Some(processes) = device.processes {
        // Pod -> used bytes: a pod holds the device once however many processes it has there.
        let mut held: BTreeMap<String, u128> = BTreeMap::new();
        for p in processes {
            let bytes = held.entry(pod_of(p.pid)).or_default();
            *bytes = bytes.saturating_add(u128::from(p.used_memory_bytes.unwrap_or(0)));
        }
        let sm_unsupported = matches!(device.sm, SmReads::Unsupported);
        for (pod, bytes) in held {
            let usage = usage_of(pods, pod, device.uuid);
            usage.gpu_time_us = usage.gpu_time_us.saturating_add(device.interval_us);
            usage.memory_byte_us = usage
                .memory_byte_us
                .saturating_add(bytes.saturating_mul(interval));
            usage.mig |= device.mig;
            usage.sm_unavailable |= sm_unsupported;
        }
    }

    let SmReads::Read {
        samples,
        last_tick_us,
    } = device.sm
    else {
        return None;
    };
    let (sm_by_pod, newest) = sm_spans(samples, last_tick_us, device.end_us, pod_of);
    let total: u128 = sm_by_pod.values().map(|v| u128::from(*v)).sum();
    // mW × µs = nJ.
    let device_nj = device.power_mw.map(|mw| u128::from(mw) * interval);
    for (pod, percent_us) in sm_by_pod {
        let usage = usage_of(pods, pod, device.uuid);
        usage.sm_percent_us = usage.sm_percent_us.saturating_add(percent_us);
        if let (Some(device_nj), true) = (device_nj, total > 0) {
            let share = device_nj.saturating_mul(u128::from(percent_us)) / total;
            usage.energy_nj = usage.energy_nj.saturating_add(share);
        }
    }
    Some(newest)
}

/// Percent·µs per pod: each sample covers the span from the previous distinct sample
/// timestamp on the device (the driver's previous sampling tick; for the first, `last_tick`)
/// to its own. Samples after `end` are left for the next interval (the driver returns them
/// again), so that SM and power cover the same time. Returns the newest timestamp integrated.
fn sm_spans(
    samples: &mut [UtilSample],
    last_tick: u64,
    end: u64,
    pod_of: &mut dyn FnMut(u32) -> String,
) -> (BTreeMap<String, u64>, u64) {
    samples.sort_by_key(|s| s.timestamp_us);
    let mut by_pod: BTreeMap<String, u64> = BTreeMap::new();
    let (mut span_start, mut tick) = (last_tick, last_tick);
    for s in samples.iter().take_while(|s| s.timestamp_us <= end) {
        if s.timestamp_us > tick {
            span_start = tick;
            tick = s.timestamp_us;
        }
        // A sample at or before `last_tick` was integrated already (or is out of order).
        let span = if s.timestamp_us > last_tick {
            tick - span_start
        } else {
            0
        };
        let percent_us = u64::from(s.sm_percent.min(100)).saturating_mul(span);
        if percent_us > 0 {
            let sum = by_pod.entry(pod_of(s.pid)).or_default();
            *sum = sum.saturating_add(percent_us);
        }
    }
    (by_pod, tick)
}

fn usage_of<'m>(
    pods: &'m mut BTreeMap<String, PodGpuUsage>,
    pod: String,
    uuid: &str,
) -> &'m mut PodGpuUsage {
    let usage = pods.entry(pod).or_default();
    if !usage.devices.contains(uuid) {
        usage.devices.insert(uuid.to_owned());
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000_000;

    fn pod(pid: u32) -> String {
        match pid {
            100..=199 => "pod-a".into(),
            200..=299 => "pod-b".into(),
            _ => "host".into(),
        }
    }

    fn sample(pid: u32, at: u64, sm: u32) -> UtilSample {
        UtilSample {
            pid,
            timestamp_us: T0 + at,
            sm_percent: sm,
        }
    }

    fn run(device: DeviceInterval<'_>) -> (BTreeMap<String, PodGpuUsage>, Option<u64>) {
        let mut pods = BTreeMap::new();
        let newest = integrate_device(device, &mut pod, &mut pods);
        (pods, newest)
    }

    fn procs(list: &[(u32, u64)]) -> Vec<RunningProcess> {
        list.iter()
            .map(|&(pid, bytes)| RunningProcess {
                pid,
                used_memory_bytes: Some(bytes),
            })
            .collect()
    }

    #[test]
    fn two_pods_share_sm_and_power() {
        let processes = procs(&[(100, 1 << 30), (101, 1 << 30), (200, 2 << 30)]);
        // Ticks at +0.5 s and +1 s; pod-a 60 % (two processes, 40 + 20), pod-b 20 %.
        let mut samples = vec![
            sample(200, 1_000_000, 20),
            sample(100, 500_000, 40),
            sample(101, 500_000, 20),
            sample(200, 500_000, 20),
            sample(100, 1_000_000, 60),
        ];
        let (pods, newest) = run(DeviceInterval {
            uuid: "GPU-0",
            end_us: T0 + 1_000_000,
            interval_us: 1_000_000,
            mig: false,
            power_mw: Some(300_000),
            processes: Some(&processes),
            sm: SmReads::Read {
                samples: &mut samples,
                last_tick_us: T0,
            },
        });
        assert_eq!(newest, Some(T0 + 1_000_000));
        let a = &pods["pod-a"];
        assert_eq!(a.gpu_time_us, 1_000_000);
        assert_eq!(a.memory_byte_us, (2u128 << 30) * 1_000_000);
        assert_eq!(a.sm_percent_us, 60 * 1_000_000);
        assert_eq!(a.sm_util_us(), 600_000);
        // 300 W for 1 s = 300 J; pod-a has 60 / 80 of the SM.
        assert_eq!(a.energy_nj, 225_000_000_000);
        let b = &pods["pod-b"];
        assert_eq!(b.sm_percent_us, 20 * 1_000_000);
        assert_eq!(b.energy_nj, 75_000_000_000);
        assert!(a.devices.contains("GPU-0") && !a.mig && !a.sm_unavailable);
    }

    #[test]
    fn first_span_starts_at_last_tick_and_old_and_later_samples_count_nothing() {
        let mut samples = vec![
            sample(100, 0, 90),
            sample(100, 1_000_001, 50),
            sample(100, 250_000, 150),
        ];
        let (pods, newest) = run(DeviceInterval {
            uuid: "GPU-0",
            end_us: T0 + 1_000_000,
            interval_us: 1_000_000,
            mig: false,
            power_mw: None,
            processes: None,
            sm: SmReads::Read {
                samples: &mut samples,
                last_tick_us: T0,
            },
        });
        assert_eq!(newest, Some(T0 + 250_000));
        // The sample at the last tick covers nothing; 150 % counts as 100 % over 0.25 s; the one
        // after the interval's end is left for the next interval.
        assert_eq!(pods["pod-a"].sm_percent_us, 100 * 250_000);
        // No power read, no process list: no energy, no held time.
        assert_eq!(pods["pod-a"].energy_nj, 0);
        assert_eq!(pods["pod-a"].gpu_time_us, 0);
    }

    #[test]
    fn no_sm_no_energy_and_no_samples_keeps_the_tick() {
        let processes = procs(&[(300, 1000)]);
        let (pods, newest) = run(DeviceInterval {
            uuid: "GPU-0",
            end_us: T0 + 2_000,
            interval_us: 2_000,
            mig: false,
            power_mw: Some(100_000),
            processes: Some(&processes),
            sm: SmReads::Read {
                samples: &mut [],
                last_tick_us: T0,
            },
        });
        assert_eq!(newest, Some(T0));
        let host = &pods["host"];
        assert_eq!((host.gpu_time_us, host.memory_byte_us), (2_000, 2_000_000));
        assert_eq!((host.sm_percent_us, host.energy_nj), (0, 0));
    }

    #[test]
    fn mig_and_unsupported_give_held_time_and_memory_flagged() {
        let mut processes = procs(&[(100, 512)]);
        processes.push(RunningProcess {
            pid: 101,
            used_memory_bytes: None,
        });
        let (pods, newest) = run(DeviceInterval {
            uuid: "MIG-GPU",
            end_us: T0 + 10,
            interval_us: 10,
            mig: true,
            power_mw: Some(1),
            processes: Some(&processes),
            sm: SmReads::NotRead,
        });
        assert_eq!(newest, None);
        let a = &pods["pod-a"];
        assert_eq!((a.gpu_time_us, a.memory_byte_us), (10, 5120));
        assert!(a.mig && !a.sm_unavailable);

        let (pods, _) = run(DeviceInterval {
            uuid: "GPU-1",
            end_us: T0 + 10,
            interval_us: 10,
            mig: false,
            power_mw: Some(1),
            processes: Some(&processes),
            sm: SmReads::Unsupported,
        });
        assert!(pods["pod-a"].sm_unavailable && !pods["pod-a"].mig);
        assert_eq!(pods["pod-a"].energy_nj, 0);
    }
}
