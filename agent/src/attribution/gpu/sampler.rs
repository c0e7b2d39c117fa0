//! The NVML side: open the library, identify the GPUs once, and on every `sample()` read each
//! GPU and hand the reads to `integrate`. Errors are sorted here: a lost GPU is dropped, a
//! function a GPU does not support is said once, anything else is said once per GPU and
//! function and leaves that figure out; nothing panics.

use std::collections::{BTreeMap, HashMap, HashSet};

use nvml_wrapper::{enums::device::UsedGpuMemory, error::NvmlError, Device, Nvml};

use super::config::{GpuConfig, GpuEnabled};
use super::error::GpuError;
use super::events::{self, Reported};
use super::integrate::{integrate_device, DeviceInterval, RunningProcess, SmReads, UtilSample};
use super::usage::{PodGpuUsage, HOST_POD};

/// A GPU as the sampler sees it, with its latest device-wide reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub uuid: String,
    /// NVML's index (`nvmlDeviceGetIndex`).
    pub index: u32,
    pub name: String,
    /// MIG mode enabled: its pods get held time and memory only.
    pub mig: bool,
    /// The latest `nvmlDeviceGetUtilizationRates`; `None` when that read failed.
    pub utilization: Option<DeviceUtilization>,
    /// The latest power draw in milliwatts; `None` when that read failed.
    pub power_mw: Option<u32>,
    /// The device does not report per-process utilisation.
    pub sm_unavailable: bool,
}

/// Device-wide utilisation over NVML's last sample period, percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceUtilization {
    pub gpu_percent: u32,
    pub memory_percent: u32,
}

#[derive(Debug)]
struct Gpu {
    info: DeviceInfo,
    /// The enumeration index, to get the handle back on each sample.
    slot: u32,
    /// The newest process-utilisation sample timestamp integrated.
    last_tick_us: u64,
}

/// The device is gone; it has been said.
struct Lost;

/// Samples between two looks for GPUs that were not there before (hot-plug, a GPU back after
/// a driver reset or a MIG reconfiguration): a minute at the default 1 s interval.
pub const SCAN_EVERY_SAMPLES: u32 = 60;

/// Samples every GPU on the node and keeps cumulative per-pod figures.
#[derive(Debug)]
pub struct GpuSampler {
    gpus: Vec<Gpu>,
    pods: BTreeMap<String, PodGpuUsage>,
    /// The pod key of each PID the previous sample saw: a running process stays in its pod,
    /// so /proc is read once per process, not once per sample. A PID the last sample did not
    /// see is forgotten (its process ended, or stopped using the GPU) and looked up again
    /// if it comes back, so a reused PID is looked up afresh unless the kernel handed it to
    /// another GPU process within one sample interval.
    pod_keys: HashMap<u32, String>,
    /// The previous `sample()` time; `None` before the first.
    last_now_us: Option<u64>,
    /// Samples since the last look for new GPUs.
    samples_since_scan: u32,
    /// Enumeration slots that could not be identified, said once each.
    skipped_slots: HashSet<u32>,
    reported: Reported,
    // Last: dropped after everything else (its drop calls nvmlShutdown).
    nvml: Nvml,
}

impl GpuSampler {
    /// Loads NVML and identifies the GPUs. Every error means no GPU data, and says so.
    pub fn open(config: &GpuConfig) -> Result<GpuSampler, GpuError> {
        config.validate().map_err(GpuError::Config)?;
        if config.enabled == GpuEnabled::Off {
            return Err(GpuError::Disabled);
        }
        let mut builder = Nvml::builder();
        if let Some(path) = &config.library_path {
            builder.lib_path(path.as_os_str());
        }
        let nvml = builder.init().map_err(|source| GpuError::Unavailable {
            library: config.library(),
            source,
        })?;
        let found = nvml
            .device_count()
            .map_err(|source| GpuError::DeviceCount { source })?;
        let mut reported = Reported::default();
        let mut skipped_slots = HashSet::new();
        let gpus: Vec<Gpu> = (0..found)
            .filter_map(|slot| identify(&nvml, slot, &mut reported, &mut skipped_slots))
            .collect();
        if gpus.is_empty() {
            return Err(GpuError::NoDevices { found });
        }
        Ok(GpuSampler {
            gpus,
            pods: BTreeMap::new(),
            pod_keys: HashMap::new(),
            last_now_us: None,
            samples_since_scan: 0,
            skipped_slots,
            reported,
            nvml,
        })
    }

    /// Reads every GPU and adds the interval since the previous call to the per-pod totals.
    /// `now_unix_us` is the wall clock (the driver's sample timestamps are on it); `pod_of`
    /// maps a host PID to its pod uid (`None`: counted under [`HOST_POD`]). The first call
    /// only starts the clock; a `now_unix_us` not after the previous one does nothing.
    pub fn sample(&mut self, now_unix_us: u64, pod_of: &mut dyn FnMut(u32) -> Option<String>) {
        let Some(previous) = self.last_now_us else {
            self.last_now_us = Some(now_unix_us);
            let mut lost = Vec::new();
            for (i, gpu) in self.gpus.iter_mut().enumerate() {
                if start_clock(&self.nvml, gpu, now_unix_us, &mut self.reported).is_err() {
                    lost.push(i);
                }
            }
            self.drop_gpus(&lost);
            return;
        };
        if now_unix_us <= previous {
            return;
        }
        self.last_now_us = Some(now_unix_us);
        let interval_us = now_unix_us - previous;

        // One lookup per process while it runs, however many devices and samples name it.
        let mut previous_keys = std::mem::take(&mut self.pod_keys);
        let mut keys: HashMap<u32, String> = HashMap::with_capacity(previous_keys.len());
        let mut key_of = |pid: u32| -> String {
            keys.entry(pid)
                .or_insert_with(|| {
                    previous_keys
                        .remove(&pid)
                        .unwrap_or_else(|| pod_of(pid).unwrap_or_else(|| HOST_POD.to_owned()))
                })
                .clone()
        };
        let mut lost = Vec::new();
        for (i, gpu) in self.gpus.iter_mut().enumerate() {
            let sampled = sample_gpu(
                &self.nvml,
                gpu,
                now_unix_us,
                interval_us,
                &mut self.reported,
                &mut key_of,
                &mut self.pods,
            );
            if sampled.is_err() {
                lost.push(i);
            }
        }
        self.pod_keys = keys;
        self.drop_gpus(&lost);
        self.samples_since_scan += 1;
        if self.samples_since_scan >= SCAN_EVERY_SAMPLES {
            self.samples_since_scan = 0;
            self.scan(now_unix_us);
        }
    }

    /// Adds the GPUs that were not sampled yet and now identify, with their clock started at
    /// `now_unix_us`: they count from the next sample on. A slot that still does not identify
    /// (a lost GPU keeps its slot in the driver's count) is tried again at the next scan,
    /// silently after the first time.
    fn scan(&mut self, now_unix_us: u64) {
        let count = match self.nvml.device_count() {
            Ok(count) => count,
            Err(error) => {
                events::call_failed(&mut self.reported, "all", "nvmlDeviceGetCount_v2", error);
                return;
            }
        };
        for slot in 0..count {
            if self.gpus.iter().any(|g| g.slot == slot) {
                continue;
            }
            let Some(mut gpu) = identify(
                &self.nvml,
                slot,
                &mut self.reported,
                &mut self.skipped_slots,
            ) else {
                continue;
            };
            if self.gpus.iter().any(|g| g.info.uuid == gpu.info.uuid) {
                continue;
            }
            if start_clock(&self.nvml, &mut gpu, now_unix_us, &mut self.reported).is_ok() {
                self.skipped_slots.remove(&slot);
                events::device_found(&gpu.info);
                self.gpus.push(gpu);
            }
        }
    }

    /// Cumulative figures per pod uid (and [`HOST_POD`]) since the sampler opened.
    pub fn pods(&self) -> &BTreeMap<String, PodGpuUsage> {
        &self.pods
    }

    /// Removes a pod's figures (a pod that ended, once its last figures were exported), so
    /// that the map holds only live pods.
    pub fn forget_pod(&mut self, pod_uid: &str) -> Option<PodGpuUsage> {
        self.pods.remove(pod_uid)
    }

    /// The GPUs still sampled (a lost one is no longer listed).
    pub fn devices(&self) -> impl ExactSizeIterator<Item = &DeviceInfo> {
        self.gpus.iter().map(|g| &g.info)
    }

    fn drop_gpus(&mut self, lost: &[usize]) {
        for &i in lost.iter().rev() {
            self.gpus.remove(i);
        }
    }
}

/// Handle, identity and MIG mode of the GPU at `slot`. Without a handle or a UUID (the key of
/// its figures) it is left out, said once per slot (`skipped_slots`); a failing name, index or
/// MIG mode is said once and replaced (empty, the enumeration index, not MIG).
fn identify(
    nvml: &Nvml,
    slot: u32,
    reported: &mut Reported,
    skipped_slots: &mut HashSet<u32>,
) -> Option<Gpu> {
    let mut skipped = |function, error| {
        if skipped_slots.insert(slot) {
            events::device_skipped(slot, function, error);
        }
    };
    let device = nvml
        .device_by_index(slot)
        .map_err(|e| skipped("nvmlDeviceGetHandleByIndex_v2", e))
        .ok()?;
    let uuid = device
        .uuid()
        .map_err(|e| skipped("nvmlDeviceGetUUID", e))
        .ok()?;
    let mut gpu = Gpu {
        info: DeviceInfo {
            uuid,
            index: slot,
            name: String::new(),
            mig: false,
            utilization: None,
            power_mw: None,
            sm_unavailable: false,
        },
        slot,
        last_tick_us: 0,
    };
    let name = sorted(device.name(), &gpu, "nvmlDeviceGetName", reported).ok()?;
    gpu.info.name = name.unwrap_or_default();
    if let Some(index) = sorted(device.index(), &gpu, "nvmlDeviceGetIndex", reported).ok()? {
        gpu.info.index = index;
    }
    gpu.info.mig = match device.mig_mode() {
        // NVML_DEVICE_MIG_ENABLE.
        Ok(mode) => mode.current == 1,
        // Most GPUs have no MIG at all.
        Err(NvmlError::NotSupported) => false,
        failed => sorted(failed, &gpu, "nvmlDeviceGetMigMode", reported)
            .ok()?
            .is_some_and(|mode| mode.current == 1),
    };
    Some(gpu)
}

/// An NVML result, sorted: a value, `Ok(None)` for a failure said once, `Err(Lost)` for a GPU
/// gone (`NVML_ERROR_GPU_IS_LOST`, or `NVML_ERROR_INVALID_ARGUMENT`: NVML no longer knows the
/// handle).
fn sorted<T>(
    result: Result<T, NvmlError>,
    gpu: &Gpu,
    function: &'static str,
    reported: &mut Reported,
) -> Result<Option<T>, Lost> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(e @ (NvmlError::GpuLost | NvmlError::InvalidArg)) => {
            events::device_lost(&gpu.info.uuid, function, e);
            Err(Lost)
        }
        Err(e) => {
            events::call_failed(reported, &gpu.info.uuid, function, e);
            Ok(None)
        }
    }
}

/// The GPU's handle again: `Ok(None)` skips the GPU this time (said once), a GPU that no
/// longer resolves is lost.
fn handle<'n>(
    nvml: &'n Nvml,
    gpu: &Gpu,
    reported: &mut Reported,
) -> Result<Option<Device<'n>>, Lost> {
    let function = "nvmlDeviceGetHandleByIndex_v2";
    sorted(nvml.device_by_index(gpu.slot), gpu, function, reported)
}

/// Starts a GPU's clock at `now_unix_us` (its first interval begins there) and reads its
/// device-wide figures.
fn start_clock(
    nvml: &Nvml,
    gpu: &mut Gpu,
    now_unix_us: u64,
    reported: &mut Reported,
) -> Result<(), Lost> {
    gpu.last_tick_us = now_unix_us;
    match handle(nvml, gpu, reported)? {
        Some(device) => read_device_wide(&device, gpu, reported),
        None => Ok(()),
    }
}

/// Utilisation and power, for `devices()` and the energy share: `None` when the read failed,
/// so that no stale power is used.
fn read_device_wide(
    device: &Device<'_>,
    gpu: &mut Gpu,
    reported: &mut Reported,
) -> Result<(), Lost> {
    let function = "nvmlDeviceGetUtilizationRates";
    let utilization = sorted(device.utilization_rates(), gpu, function, reported)?;
    gpu.info.utilization = utilization.map(|u| DeviceUtilization {
        gpu_percent: u.gpu,
        memory_percent: u.memory,
    });
    let power = sorted(
        device.power_usage(),
        gpu,
        "nvmlDeviceGetPowerUsage",
        reported,
    )?;
    gpu.info.power_mw = power;
    Ok(())
}

fn sample_gpu(
    nvml: &Nvml,
    gpu: &mut Gpu,
    end_us: u64,
    interval_us: u64,
    reported: &mut Reported,
    pod_of: &mut dyn FnMut(u32) -> String,
    pods: &mut BTreeMap<String, PodGpuUsage>,
) -> Result<(), Lost> {
    let Some(device) = handle(nvml, gpu, reported)? else {
        return Ok(());
    };
    read_device_wide(&device, gpu, reported)?;
    let function = "nvmlDeviceGetComputeRunningProcesses_v3";
    let processes: Option<Vec<RunningProcess>> =
        sorted(device.running_compute_processes(), gpu, function, reported)?.map(|list| {
            list.into_iter()
                .map(|p| RunningProcess {
                    pid: p.pid,
                    used_memory_bytes: match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => Some(bytes),
                        UsedGpuMemory::Unavailable => None,
                    },
                })
                .collect()
        });
    let mut samples = read_samples(&device, gpu, reported)?;
    let sm = match samples.as_deref_mut() {
        Some(samples) => SmReads::Read {
            samples,
            last_tick_us: gpu.last_tick_us,
        },
        None if gpu.info.sm_unavailable => SmReads::Unsupported,
        None => SmReads::NotRead,
    };
    let interval = DeviceInterval {
        uuid: &gpu.info.uuid,
        end_us,
        interval_us,
        mig: gpu.info.mig,
        power_mw: gpu.info.power_mw,
        processes: processes.as_deref(),
        sm,
    };
    if let Some(newest) = integrate_device(interval, pod_of, pods) {
        gpu.last_tick_us = newest;
    }
    Ok(())
}

/// The process-utilisation samples newer than the last integrated; `None` when not read (MIG,
/// not supported, or a failure said once).
fn read_samples(
    device: &Device<'_>,
    gpu: &mut Gpu,
    reported: &mut Reported,
) -> Result<Option<Vec<UtilSample>>, Lost> {
    if gpu.info.mig || gpu.info.sm_unavailable {
        return Ok(None);
    }
    match device.process_utilization_stats(gpu.last_tick_us) {
        Ok(read) => Ok(Some(
            read.into_iter()
                .map(|s| UtilSample {
                    pid: s.pid,
                    timestamp_us: s.timestamp,
                    sm_percent: s.sm_util,
                })
                .collect(),
        )),
        // The driver's answer when no sample is newer than the last one seen.
        Err(NvmlError::NotFound) => Ok(Some(Vec::new())),
        Err(NvmlError::NotSupported) => {
            events::sm_unsupported(&gpu.info.uuid);
            gpu.info.sm_unavailable = true;
            Ok(None)
        }
        Err(e) => {
            let function = "nvmlDeviceGetProcessUtilization";
            sorted::<()>(Err(e), gpu, function, reported).map(|_| None)
        }
    }
}
