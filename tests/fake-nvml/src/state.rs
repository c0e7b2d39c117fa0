//! The scripted driver state: devices, their processes and samples, injected failures and call
//! counts, in one `Mutex` static. Every exported function goes through [`with_state`], which
//! never lets a panic cross the C boundary and survives a poisoned lock.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};

/// NVML return codes (`nvmlReturn_t`), as in `nvml.h`.
pub const SUCCESS: u32 = 0;
pub const ERROR_UNINITIALIZED: u32 = 1;
pub const ERROR_INVALID_ARGUMENT: u32 = 2;
pub const ERROR_NOT_SUPPORTED: u32 = 3;
pub const ERROR_NOT_FOUND: u32 = 6;
pub const ERROR_INSUFFICIENT_SIZE: u32 = 7;
pub const ERROR_GPU_IS_LOST: u32 = 15;
pub const ERROR_UNKNOWN: u32 = 999;

/// `NVML_VALUE_NOT_AVAILABLE` as the 32-bit and 64-bit fields carry it.
pub const NOT_AVAILABLE_U32: u32 = u32::MAX;

/// Most process-utilisation samples one device buffers; older ones are dropped first, as the
/// driver's ring buffer does.
pub const MAX_SAMPLES_PER_DEVICE: usize = 16_384;

/// The NVML functions the fake implements, for failure injection and call counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Init,
    InitWithFlags,
    Shutdown,
    DriverVersion,
    Count,
    HandleByIndex,
    Uuid,
    Name,
    Index,
    MigMode,
    Utilization,
    Power,
    ProcessUtilization,
    ComputeProcesses,
}

pub const FUNC_COUNT: usize = 14;

const FUNCS: [(Func, &str); FUNC_COUNT] = [
    (Func::Init, "nvmlInit_v2"),
    (Func::InitWithFlags, "nvmlInitWithFlags"),
    (Func::Shutdown, "nvmlShutdown"),
    (Func::DriverVersion, "nvmlSystemGetDriverVersion"),
    (Func::Count, "nvmlDeviceGetCount_v2"),
    (Func::HandleByIndex, "nvmlDeviceGetHandleByIndex_v2"),
    (Func::Uuid, "nvmlDeviceGetUUID"),
    (Func::Name, "nvmlDeviceGetName"),
    (Func::Index, "nvmlDeviceGetIndex"),
    (Func::MigMode, "nvmlDeviceGetMigMode"),
    (Func::Utilization, "nvmlDeviceGetUtilizationRates"),
    (Func::Power, "nvmlDeviceGetPowerUsage"),
    (Func::ProcessUtilization, "nvmlDeviceGetProcessUtilization"),
    (
        Func::ComputeProcesses,
        "nvmlDeviceGetComputeRunningProcesses_v3",
    ),
];

impl Func {
    pub fn by_name(name: &str) -> Option<Func> {
        FUNCS.iter().find(|(_, n)| *n == name).map(|(f, _)| *f)
    }
}

/// MIG as a device reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mig {
    /// Not MIG-capable: `nvmlDeviceGetMigMode` answers `NVML_ERROR_NOT_SUPPORTED`.
    Incapable,
    /// MIG-capable and enabled: process utilisation answers `NVML_ERROR_NOT_SUPPORTED`.
    Enabled,
    /// MIG-capable, disabled.
    Disabled,
}

#[derive(Clone, Copy, Debug)]
pub struct Process {
    pub pid: u32,
    pub used_memory: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub pid: u32,
    pub timestamp_us: u64,
    pub sm: u32,
    pub mem: u32,
    pub enc: u32,
    pub dec: u32,
}

#[derive(Debug)]
pub struct Device {
    pub uuid: String,
    pub name: String,
    pub mig: Mig,
    pub power_mw: u32,
    pub utilization: (u32, u32),
    pub processes: Vec<Process>,
    /// Ordered by timestamp.
    pub samples: VecDeque<Sample>,
    pub lost: bool,
    pub calls: [u64; FUNC_COUNT],
    /// Scripted processes that use the SM steadily: (pid, percent); see `script`.
    pub steady: Vec<(u32, u32)>,
}

impl Device {
    pub fn new(uuid: String, name: String, mig: Mig, power_mw: u32) -> Device {
        Device {
            uuid,
            name,
            mig,
            power_mw,
            utilization: (0, 0),
            processes: Vec::new(),
            samples: VecDeque::new(),
            lost: false,
            calls: [0; FUNC_COUNT],
            steady: Vec::new(),
        }
    }

    /// Inserts in timestamp order (after samples with the same timestamp).
    pub fn push_sample(&mut self, sample: Sample) {
        let at = self
            .samples
            .partition_point(|s| s.timestamp_us <= sample.timestamp_us);
        self.samples.insert(at, sample);
        while self.samples.len() > MAX_SAMPLES_PER_DEVICE {
            self.samples.pop_front();
        }
    }

    /// The samples newer than `last_seen_us`, as `nvmlDeviceGetProcessUtilization` selects them.
    pub fn samples_after(&self, last_seen_us: u64) -> impl Iterator<Item = &Sample> {
        let from = self
            .samples
            .partition_point(|s| s.timestamp_us <= last_seen_us);
        self.samples.range(from..)
    }
}

#[derive(Clone, Copy, Debug)]
struct Failure {
    func: Func,
    /// `None`: every device (and the device-less functions).
    device: Option<usize>,
    code: u32,
}

#[derive(Debug)]
pub struct State {
    /// `nvmlInit` reference count; device functions answer `UNINITIALIZED` at zero.
    pub init_count: u32,
    pub devices: Vec<Device>,
    failures: Vec<Failure>,
    /// Calls of the functions that take no device handle.
    pub calls: [u64; FUNC_COUNT],
}

impl State {
    const fn new() -> State {
        State {
            init_count: 0,
            devices: Vec::new(),
            failures: Vec::new(),
            calls: [0; FUNC_COUNT],
        }
    }

    /// Everything but the `nvmlInit` count (a loaded `Nvml` keeps its reference).
    pub fn reset(&mut self) {
        self.devices.clear();
        self.failures.clear();
        self.calls = [0; FUNC_COUNT];
    }

    /// Sets (or with `SUCCESS`, clears) the code `func` answers for `device`.
    pub fn fail(&mut self, func: Func, device: Option<usize>, code: u32) {
        self.failures
            .retain(|f| !(f.func == func && f.device == device));
        if code != SUCCESS {
            self.failures.push(Failure { func, device, code });
        }
    }

    /// The injected code for this call, if any: a device-specific one first.
    pub fn injected(&self, func: Func, device: Option<usize>) -> Option<u32> {
        let specific = self
            .failures
            .iter()
            .find(|f| f.func == func && device.is_some() && f.device == device);
        specific
            .or_else(|| {
                self.failures
                    .iter()
                    .find(|f| f.func == func && f.device.is_none())
            })
            .map(|f| f.code)
    }

    /// Counts a device-less call and answers its injected failure, if any.
    pub fn enter(&mut self, func: Func) -> Option<u32> {
        self.calls[func as usize] += 1;
        self.injected(func, None)
    }

    pub fn device_mut(&mut self, index: i32) -> Option<&mut Device> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.devices.get_mut(i))
    }

    /// Calls of `func` on `device` (or, with `None`, in all).
    pub fn call_count(&self, func: Func, device: Option<usize>) -> u64 {
        let i = func as usize;
        match device {
            Some(d) => self.devices.get(d).map_or(0, |d| d.calls[i]),
            None => self.calls[i] + self.devices.iter().map(|d| d.calls[i]).sum::<u64>(),
        }
    }
}

static STATE: Mutex<State> = Mutex::new(State::new());

/// Runs `f` on the state. A panic inside becomes `fallback`: nothing unwinds into C.
pub fn with_state<T>(fallback: T, f: impl FnOnce(&mut State) -> T) -> T {
    catch_unwind(AssertUnwindSafe(|| {
        let mut state = STATE.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }))
    .unwrap_or(fallback)
}

/// Device handles are the device's index plus one, so that none is null.
pub fn handle_of(index: usize) -> *mut std::ffi::c_void {
    std::ptr::without_provenance_mut(index + 1)
}

fn index_of(handle: *mut std::ffi::c_void) -> Option<usize> {
    handle.addr().checked_sub(1)
}

/// The common path of every function that takes a device handle: initialised, a known handle,
/// counted, the injected failure if one is set, `GPU_IS_LOST` for a lost device, else `f`.
pub fn device_call(
    func: Func,
    handle: *mut std::ffi::c_void,
    f: impl FnOnce(&mut Device) -> u32,
) -> u32 {
    with_state(ERROR_UNKNOWN, |state| {
        if state.init_count == 0 {
            return ERROR_UNINITIALIZED;
        }
        let Some(index) = index_of(handle).filter(|i| *i < state.devices.len()) else {
            return ERROR_INVALID_ARGUMENT;
        };
        state.devices[index].calls[func as usize] += 1;
        if let Some(code) = state.injected(func, Some(index)) {
            return code;
        }
        let device = &mut state.devices[index];
        if device.lost {
            return ERROR_GPU_IS_LOST;
        }
        f(device)
    })
}
