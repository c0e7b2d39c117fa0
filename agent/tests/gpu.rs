//! The GPU sampler against a scripted `libnvidia-ml.so` (tests/fake-nvml), loaded by the real
//! nvml-wrapper code path: exact per-pod figures for shared GPUs, MIG, per-process utilisation
//! not supported, a GPU that disappears, processes without a pod, failing calls, and no driver.
//! Times and sample timestamps are chosen by the test, so nothing depends on timing.

#[path = "gpu/fake.rs"]
mod fake;

use std::collections::HashMap;
use std::ffi::c_uint;
use std::io::Write;
use std::sync::{Arc, Mutex};

use fake::Fake;

use tokenmeter_agent::attribution::gpu::{
    DeviceUtilization, GpuConfig, GpuEnabled, GpuError, GpuSampler, PodGpuUsage, HOST_POD,
    SCAN_EVERY_SAMPLES,
};

const T0: u64 = 1_700_000_000_000_000;
const GIB: u64 = 1 << 30;
const NOT_SUPPORTED: c_uint = 3;
const NO_PERMISSION: c_uint = 4;
const DRIVER_NOT_LOADED: c_uint = 9;
const UNKNOWN: c_uint = 999;

/// What the sampler logged on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// pids 1000..1999 are in pod-a, 2000..2999 in pod-b, 3000..3999 in pod-c; others in no pod.
fn pod_of(pid: u32) -> Option<String> {
    match pid / 1000 {
        1 => Some("pod-a".into()),
        2 => Some("pod-b".into()),
        3 => Some("pod-c".into()),
        _ => None,
    }
}

fn sample_at(sampler: &mut GpuSampler, at_us: u64) {
    sampler.sample(T0 + at_us, &mut pod_of);
}

fn pod<'s>(sampler: &'s GpuSampler, uid: &str) -> &'s PodGpuUsage {
    sampler
        .pods()
        .get(uid)
        .unwrap_or_else(|| panic!("no figures for {uid}"))
}

#[test]
fn two_pods_share_one_gpu() {
    let fake = Fake::take();
    let gpu = fake.add_device("GPU-0a1b", "NVIDIA H100 80GB HBM3", 0, 400_000);
    fake.set_utilization(gpu, 85, 40);
    fake.set_processes(gpu, &[(1001, 10 * GIB), (1002, 6 * GIB), (2001, 8 * GIB)]);
    let mut sampler = GpuSampler::open(&fake.config()).unwrap();
    sample_at(&mut sampler, 0);

    // Two driver ticks in the first second; pod-a has two processes.
    fake.push_sample(gpu, 1001, T0 + 500_000, 30);
    fake.push_sample(gpu, 1002, T0 + 500_000, 30);
    fake.push_sample(gpu, 2001, T0 + 500_000, 20);
    fake.push_sample(gpu, 1001, T0 + 1_000_000, 50);
    fake.push_sample(gpu, 2001, T0 + 1_000_000, 30);
    sample_at(&mut sampler, 1_000_000);

    let a = pod(&sampler, "pod-a");
    assert_eq!(a.gpu_time_us, 1_000_000, "held once, not once per process");
    assert_eq!(a.memory_byte_us, u128::from(16 * GIB) * 1_000_000);
    // 60 % for 0.5 s, then 50 % for 0.5 s.
    assert_eq!(a.sm_percent_us, 55_000_000);
    assert_eq!(a.sm_util_us(), 550_000);
    // 400 W for 1 s = 400 J = 4e11 nJ, split 55 : 25.
    assert_eq!(a.energy_nj, 275_000_000_000);
    let b = pod(&sampler, "pod-b");
    assert_eq!(b.gpu_time_us, 1_000_000);
    assert_eq!(b.memory_byte_us, u128::from(8 * GIB) * 1_000_000);
    assert_eq!(b.sm_percent_us, 25_000_000);
    assert_eq!(b.energy_nj, 125_000_000_000);
    assert!(!a.mig && !a.sm_unavailable && a.devices.contains("GPU-0a1b"));

    // A second with no new samples (the driver answers NOT_FOUND): held time and memory only,
    // and no energy, as no SM was used.
    sample_at(&mut sampler, 2_000_000);
    let a = pod(&sampler, "pod-a");
    assert_eq!(a.gpu_time_us, 2_000_000);
    assert_eq!(a.sm_percent_us, 55_000_000);
    assert_eq!(a.energy_nj, 275_000_000_000);
    assert_eq!(a.tokens_per_gpu_second(1000), Some(500.0));

    let devices: Vec<_> = sampler.devices().cloned().collect();
    assert_eq!(devices.len(), 1);
    let d = &devices[0];
    assert_eq!((d.uuid.as_str(), d.index), ("GPU-0a1b", 0));
    assert_eq!(d.name, "NVIDIA H100 80GB HBM3");
    assert!(!d.mig && !d.sm_unavailable);
    let utilization = DeviceUtilization {
        gpu_percent: 85,
        memory_percent: 40,
    };
    assert_eq!(
        (d.utilization, d.power_mw),
        (Some(utilization), Some(400_000))
    );
    assert_eq!(sampler.pods().len(), 2);
}

#[test]
fn process_without_pod_counts_under_host() {
    let fake = Fake::take();
    let gpu = fake.add_device("GPU-0", "NVIDIA L4", 2, 72_000);
    fake.set_processes(gpu, &[(1001, GIB), (4242, 2 * GIB)]);
    let mut sampler = GpuSampler::open(&fake.config()).unwrap();
    sample_at(&mut sampler, 0);
    fake.push_sample(gpu, 1001, T0 + 250_000, 10);
    fake.push_sample(gpu, 4242, T0 + 250_000, 30);
    sample_at(&mut sampler, 250_000);

    let host = pod(&sampler, HOST_POD);
    assert_eq!(host.gpu_time_us, 250_000);
    assert_eq!(host.memory_byte_us, u128::from(2 * GIB) * 250_000);
    assert_eq!(host.sm_percent_us, 30 * 250_000);
    // 72 W × 0.25 s = 18 J; host has 3/4 of the SM.
    assert_eq!(host.energy_nj, 13_500_000_000);
    assert_eq!(pod(&sampler, "pod-a").energy_nj, 4_500_000_000);
    // MIG-capable but disabled: an ordinary GPU.
    assert!(!sampler.devices().next().unwrap().mig && !host.mig);
}

#[test]
fn mig_device_gives_memory_and_held_time_only() {
    let fake = Fake::take();
    let whole = fake.add_device("GPU-whole", "NVIDIA A100-SXM4-80GB", 2, 300_000);
    let mig = fake.add_device("GPU-mig", "NVIDIA A100-SXM4-80GB", 1, 250_000);
    fake.set_processes(whole, &[(1001, 4 * GIB)]);
    fake.set_processes(mig, &[(3001, 5 * GIB), (3002, GIB)]);
    let mut sampler = GpuSampler::open(&fake.config()).unwrap();
    sample_at(&mut sampler, 0);
    fake.push_sample(whole, 1001, T0 + 1_000_000, 40);
    sample_at(&mut sampler, 1_000_000);

    let c = pod(&sampler, "pod-c");
    assert_eq!(c.gpu_time_us, 1_000_000);
    assert_eq!(c.memory_byte_us, u128::from(6 * GIB) * 1_000_000);
    assert_eq!((c.sm_percent_us, c.energy_nj), (0, 0));
    assert!(c.mig && !c.sm_unavailable);
    assert_eq!(c.devices.iter().collect::<Vec<_>>(), ["GPU-mig"]);

    // The whole GPU's pod has everything, with all of that GPU's power.
    let a = pod(&sampler, "pod-a");
    assert_eq!(
        (a.sm_percent_us, a.energy_nj),
        (40_000_000, 300_000_000_000)
    );
    assert!(!a.mig);

    let flags: Vec<_> = sampler
        .devices()
        .map(|d| (d.uuid.as_str(), d.mig))
        .collect();
    assert_eq!(flags, [("GPU-whole", false), ("GPU-mig", true)]);
    assert_eq!(fake.calls("nvmlDeviceGetProcessUtilization", mig), 0);
}

#[test]
fn process_utilisation_not_supported_gives_held_time_and_memory_flagged() {
    let fake = Fake::take();
    let gpu = fake.add_device("GPU-old", "Tesla K80", 0, 150_000);
    fake.set_processes(gpu, &[(2001, 3 * GIB)]);
    fake.fail("nvmlDeviceGetProcessUtilization", gpu, NOT_SUPPORTED);
    let (logs, _guard) = Logs::capture();
    let mut sampler = GpuSampler::open(&fake.config()).unwrap();
    sample_at(&mut sampler, 0);
    fake.push_sample(gpu, 2001, T0 + 500_000, 90);
    sample_at(&mut sampler, 1_000_000);
    sample_at(&mut sampler, 2_000_000);

    let b = pod(&sampler, "pod-b");
    assert_eq!(b.gpu_time_us, 2_000_000);
    assert_eq!(b.memory_byte_us, u128::from(3 * GIB) * 2_000_000);
    assert_eq!((b.sm_percent_us, b.energy_nj), (0, 0));
    assert!(b.sm_unavailable && !b.mig);
    assert!(sampler.devices().next().unwrap().sm_unavailable);
    // Asked once, said once.
    assert_eq!(fake.calls("nvmlDeviceGetProcessUtilization", gpu), 1);
    let lines = logs.lines_with("no per-process utilisation");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("GPU-old"), "{}", lines[0]);
}

#[test]
fn lost_gpu_is_dropped_and_the_other_continues() {
    let fake = Fake::take();
    let first = fake.add_device("GPU-first", "NVIDIA H100", 0, 500_000);
    let second = fake.add_device("GPU-second", "NVIDIA H100", 0, 500_000);
    fake.set_processes(first, &[(1001, GIB)]);
    fake.set_processes(second, &[(2001, GIB)]);
    let (logs, _guard) = Logs::capture();
    let mut sampler = GpuSampler::open(&fake.config()).unwrap();
    sample_at(&mut sampler, 0);
    for at in [1_000_000, 2_000_000, 3_000_000] {
        fake.push_sample(first, 1001, T0 + at, 50);
        fake.push_sample(second, 2001, T0 + at, 50);
    }
    sample_at(&mut sampler, 1_000_000);
    fake.lose_device(second);
    sample_at(&mut sampler, 2_000_000);
    let calls_after_loss = fake.calls("nvmlDeviceGetHandleByIndex_v2", second);
    sample_at(&mut sampler, 3_000_000);

    let a = pod(&sampler, "pod-a");
    assert_eq!(a.gpu_time_us, 3_000_000);
    assert_eq!(a.sm_percent_us, 150_000_000);
    assert_eq!(a.energy_nj, 3 * 500_000_000_000);
    // pod-b keeps what it had before its GPU went.
    let b = pod(&sampler, "pod-b");
    assert_eq!((b.gpu_time_us, b.sm_percent_us), (1_000_000, 50_000_000));
    assert_eq!(b.energy_nj, 500_000_000_000);

    let left: Vec<_> = sampler.devices().map(|d| d.uuid.clone()).collect();
    assert_eq!(left, ["GPU-first"]);
    assert_eq!(
        fake.calls("nvmlDeviceGetHandleByIndex_v2", second),
        calls_after_loss,
        "a dropped GPU is not asked again"
    );
    let lines = logs.lines_with("GPU lost");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("GPU-second") && lines[0].contains("nvml_code=15"));
}

#[test]
fn unidentifiable_gpu_is_left_out_and_a_failing_mig_query_is_said() {
    let fake = Fake::take();
    let broken = fake.add_device("GPU-broken", "NVIDIA H100", 0, 1);
    let odd = fake.add_device("GPU-odd", "NVIDIA A100-SXM4-40GB", 1, 1);
    fake.fail("nvmlDeviceGetUUID", broken, UNKNOWN);
    fake.fail("nvmlDeviceGetMigMode", odd, UNKNOWN);
    let (logs, _guard) = Logs::capture();
    let sampler = GpuSampler::open(&fake.config()).unwrap();

    // Without a UUID there is no key for its figures; without a MIG mode it counts as whole.
    let devices: Vec<_> = sampler
        .devices()
        .map(|d| (d.uuid.as_str(), d.index, d.name.as_str(), d.mig))
        .collect();
    assert_eq!(devices, [("GPU-odd", 1, "NVIDIA A100-SXM4-40GB", false)]);
    let lines = logs.lines_with("left out of sampling");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("index=0") && lines[0].contains("nvmlDeviceGetUUID"));
    let lines = logs.lines_with("nvmlDeviceGetMigMode");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("GPU-odd") && lines[0].contains("nvml_code=999"));
}

#[test]
fn failing_calls_are_said_once_and_leave_partial_data() {
    let fake = Fake::take();
    let gpu = fake.add_device("GPU-flaky", "NVIDIA L40S", 0, 350_000);
    fake.set_processes(gpu, &[(1001, 2 * GIB)]);
    let (logs, _guard) = Logs::capture();
    let mut sampler = GpuSampler::open(&fake.config()).unwrap();
    sample_at(&mut sampler, 0);
    fake.fail("nvmlDeviceGetPowerUsage", gpu, UNKNOWN);
    fake.fail(
        "nvmlDeviceGetComputeRunningProcesses_v3",
        gpu,
        NO_PERMISSION,
    );
    fake.fail("nvmlDeviceGetUtilizationRates", -1, UNKNOWN);
    for at in [1_000_000, 2_000_000, 3_000_000] {
        fake.push_sample(gpu, 1001, T0 + at, 20);
    }
    sample_at(&mut sampler, 1_000_000);
    sample_at(&mut sampler, 2_000_000);

    // SM still counts; no process list, so no held time or memory; no power, no energy.
    let a = pod(&sampler, "pod-a").clone();
    assert_eq!(a.sm_percent_us, 40_000_000);
    assert_eq!((a.gpu_time_us, a.memory_byte_us, a.energy_nj), (0, 0, 0));
    let device = sampler.devices().next().unwrap().clone();
    assert_eq!((device.power_mw, device.utilization), (None, None));
    for function in [
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetUtilizationRates",
    ] {
        let lines = logs.lines_with(function);
        assert_eq!(lines.len(), 1, "{function}: {lines:?}");
        assert!(lines[0].contains("GPU-flaky") && lines[0].contains("NVML call failed"));
    }
    assert!(logs.lines_with("nvml_code=4").len() == 1);

    // The calls recover: everything counts again.
    fake.fail("nvmlDeviceGetPowerUsage", gpu, 0);
    fake.fail("nvmlDeviceGetComputeRunningProcesses_v3", gpu, 0);
    sample_at(&mut sampler, 3_000_000);
    let a = pod(&sampler, "pod-a");
    assert_eq!(a.sm_percent_us, 60_000_000);
    assert_eq!(a.gpu_time_us, 1_000_000);
    assert_eq!(a.memory_byte_us, u128::from(2 * GIB) * 1_000_000);
    assert_eq!(a.energy_nj, 350_000_000_000);
}

#[test]
fn missing_library_is_a_clear_error() {
    let config = GpuConfig {
        library_path: Some("/nonexistent/libnvidia-ml.so.1".into()),
        ..Default::default()
    };
    let error = GpuSampler::open(&config).unwrap_err();
    assert!(matches!(error, GpuError::Unavailable { .. }), "{error:?}");
    let message = error.to_string();
    for part in [
        "no NVIDIA driver",
        "/nonexistent/libnvidia-ml.so.1",
        "without GPU data",
    ] {
        assert!(message.contains(part), "{message}");
    }
}

#[test]
fn driver_not_loaded_off_and_no_gpu_are_clear_errors() {
    let fake = Fake::take();
    fake.fail("nvmlInit_v2", -1, DRIVER_NOT_LOADED);
    let message = GpuSampler::open(&fake.config()).unwrap_err().to_string();
    assert!(message.contains("NVIDIA driver is not loaded"), "{message}");
    assert!(message.contains("without GPU data"), "{message}");

    fake.fail("nvmlInit_v2", -1, 0);
    let error = GpuSampler::open(&fake.config()).unwrap_err();
    assert!(
        matches!(error, GpuError::NoDevices { found: 0 }),
        "{error:?}"
    );

    let off = GpuConfig {
        enabled: GpuEnabled::Off,
        ..fake.config()
    };
    assert!(matches!(GpuSampler::open(&off), Err(GpuError::Disabled)));
    let bad = GpuConfig {
        sample_interval_ms: 10,
        ..fake.config()
    };
    let message = GpuSampler::open(&bad).unwrap_err().to_string();
    assert!(message.contains("gpu.sample_interval_ms"), "{message}");
}

#[test]
fn pod_of_is_asked_once_per_process_while_it_runs() {
    let fake = Fake::take();
    let gpu = fake.add_device("GPU-0", "NVIDIA H100", 0, 1);
    fake.set_processes(gpu, &[(1001, GIB)]);
    let mut sampler = GpuSampler::open(&fake.config()).unwrap();
    sampler.sample(T0, &mut |_| None);
    let mut asked: HashMap<u32, u32> = HashMap::new();
    let mut sample = |sampler: &mut GpuSampler, at_us: u64, pod: &'static str| {
        sampler.sample(T0 + at_us, &mut |pid| {
            *asked.entry(pid).or_default() += 1;
            Some(pod.into())
        });
    };

    // Two utilisation samples and the running-process list all name 1001: one lookup.
    fake.push_sample(gpu, 1001, T0 + 100, 10);
    fake.push_sample(gpu, 1001, T0 + 200, 10);
    sample(&mut sampler, 1_000, "pod-a");
    // Still running: no lookup, however many samples.
    fake.push_sample(gpu, 1001, T0 + 1_500, 10);
    sample(&mut sampler, 2_000, "pod-a");
    sample(&mut sampler, 3_000, "pod-a");
    // It ends; the PID comes back as another pod's process and is looked up afresh.
    fake.set_processes(gpu, &[]);
    sample(&mut sampler, 4_000, "pod-a");
    fake.set_processes(gpu, &[(1001, GIB)]);
    fake.push_sample(gpu, 1001, T0 + 4_500, 10);
    sample(&mut sampler, 5_000, "pod-b");

    assert_eq!(asked, HashMap::from([(1001, 2)]));
    // 10 % over 0..100, 100..200 and 200..1500 for pod-a; over 1500..4500 for pod-b.
    assert_eq!(sampler.forget_pod("pod-a").unwrap().sm_percent_us, 15_000);
    assert_eq!(pod(&sampler, "pod-b").sm_percent_us, 30_000);
}

#[test]
fn a_gpu_that_appears_is_sampled_from_the_scan_after_it_and_a_lost_one_is_not_said_again() {
    let fake = Fake::take();
    let first = fake.add_device("GPU-first", "NVIDIA H100", 0, 1);
    fake.set_processes(first, &[(1001, GIB)]);
    let (logs, _guard) = Logs::capture();
    let mut sampler = GpuSampler::open(&fake.config()).unwrap();
    sample_at(&mut sampler, 0);
    let added = fake.add_device("GPU-added", "NVIDIA L4", 0, 1);
    fake.set_processes(added, &[(2001, GIB)]);
    fake.lose_device(first);

    // Until the scan, nothing of the new GPU; the first is lost at once.
    let scan = u64::from(SCAN_EVERY_SAMPLES);
    for n in 1..scan {
        sample_at(&mut sampler, n * 1_000);
    }
    assert_eq!(sampler.devices().len(), 0);
    // The scan finds it and starts its clock; the next sample counts one interval.
    sample_at(&mut sampler, scan * 1_000);
    let found: Vec<_> = sampler.devices().map(|d| d.uuid.clone()).collect();
    assert_eq!(found, ["GPU-added"]);
    assert!(sampler.pods().get("pod-b").is_none());
    sample_at(&mut sampler, (scan + 1) * 1_000);
    assert_eq!(pod(&sampler, "pod-b").gpu_time_us, 1_000);

    // More scans: the lost GPU's slot is tried again, quietly; the found one stays once.
    for n in scan + 2..4 * scan {
        sample_at(&mut sampler, n * 1_000);
    }
    assert_eq!(sampler.devices().len(), 1);
    assert_eq!(logs.lines_with("GPU found").len(), 1);
    assert_eq!(logs.lines_with("GPU lost").len(), 1);
    assert_eq!(logs.lines_with("GPU left out").len(), 1);
}
