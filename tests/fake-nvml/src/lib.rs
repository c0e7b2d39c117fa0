//! A scripted `libnvidia-ml.so` for the agent's GPU tests and benchmark: the NVML C functions
//! the agent's sampler calls through `nvml-wrapper`, with the real C layouts and return codes,
//! and no GPU. `nvml-wrapper` loads it like the real library (`Nvml::builder().lib_path(..)`);
//! the test `dlopen`s the same path to script it, and since `dlopen` of a loaded path returns
//! the same handle, both see one state.
//!
//! # NVML functions
//!
//! `nvmlInit_v2`, `nvmlInitWithFlags`, `nvmlShutdown` (reference counted), `nvmlErrorString`,
//! `nvmlSystemGetDriverVersion` (`550.54.15`), `nvmlDeviceGetCount_v2`,
//! `nvmlDeviceGetHandleByIndex_v2`, `nvmlDeviceGetUUID`, `nvmlDeviceGetName`,
//! `nvmlDeviceGetIndex`, `nvmlDeviceGetMigMode`, `nvmlDeviceGetUtilizationRates`,
//! `nvmlDeviceGetPowerUsage`, `nvmlDeviceGetProcessUtilization`,
//! `nvmlDeviceGetComputeRunningProcesses_v3`. They answer as the driver does:
//!
//! - a null buffer, or a count smaller than needed, gets `NVML_ERROR_INSUFFICIENT_SIZE` and the
//!   needed count (`_v3` with no process and a zero count: `NVML_SUCCESS`);
//! - process utilisation returns the samples with a timestamp after `lastSeenTimeStamp`, in
//!   timestamp order, and `NVML_ERROR_NOT_FOUND` when there is none; a MIG-enabled device
//!   answers `NVML_ERROR_NOT_SUPPORTED`;
//! - a device that is not MIG-capable answers `nvmlDeviceGetMigMode` with
//!   `NVML_ERROR_NOT_SUPPORTED`;
//! - before `nvmlInit` (or after the last `nvmlShutdown`) device functions answer
//!   `NVML_ERROR_UNINITIALIZED`; an unknown handle `NVML_ERROR_INVALID_ARGUMENT`.
//!
//! Device handles are the device index plus one.
//!
//! # Script API
//!
//! All `extern "C"`; devices are indices in the order added; functions that take a device
//! return 0, or -1 for an unknown device or a bad argument.
//!
//! - `fake_nvml_reset()`: no devices, no failures, call counts zero (the `nvmlInit` count is
//!   kept: a loaded `Nvml` still holds its reference).
//! - `fake_nvml_add_device(uuid, name, mig, power_mw) -> index`: `mig` 0 = not MIG-capable,
//!   1 = MIG enabled, 2 = MIG-capable but disabled; power in milliwatts. -1 on a null or
//!   non-UTF-8 string.
//! - `fake_nvml_set_utilization(device, gpu_percent, memory_percent)`.
//! - `fake_nvml_set_power(device, power_mw)`.
//! - `fake_nvml_set_processes(device, pids, used_memory, count)`: the running compute
//!   processes, replacing the previous list; `used_memory` in bytes (`u64::MAX` is
//!   `NVML_VALUE_NOT_AVAILABLE`). On a MIG-enabled device their GPU and compute instance ids
//!   are 0, else not available.
//! - `fake_nvml_push_sample(device, pid, timestamp_us, sm, mem, enc, dec)`: one process
//!   utilisation sample, kept in timestamp order; a device buffers at most 16,384 (the oldest
//!   go first).
//! - `fake_nvml_fail(function, device, code)`: from now on `function` (its NVML name, e.g.
//!   `"nvmlDeviceGetPowerUsage"`) answers `code` on `device`, or with `device` -1 on every
//!   device and for the device-less functions; `code` 0 removes the failure. A
//!   device-specific failure wins over a -1 one. -1 for an unknown function name.
//! - `fake_nvml_lose_device(device)`: every call on the device, and
//!   `nvmlDeviceGetHandleByIndex_v2` for its index, answers `NVML_ERROR_GPU_IS_LOST` from now
//!   on (the device count stays, as the driver's does).
//! - `fake_nvml_calls(function, device) -> u64`: how many times `function` was called on
//!   `device`, or with -1 in all (0 for an unknown name).
//!
//! A process that cannot call these (the agent binary under an end-to-end test) is scripted
//! by a file instead: see the `script` module (`FAKE_NVML_SCRIPT`).
//!
//! State lives in one `Mutex` static; nothing panics across the C boundary (a panic inside
//! becomes `NVML_ERROR_UNKNOWN` or -1).

mod nvml;
mod script;
mod state;

use std::ffi::{c_char, c_int, c_uint, c_ulonglong, CStr};

use state::{with_state, Device, Func, Mig, Process, Sample};

/// # Safety
/// `s` is null or a NUL-terminated string.
unsafe fn str_arg(s: *const c_char) -> Option<String> {
    if s.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated, as the caller promises.
    unsafe { CStr::from_ptr(s) }
        .to_str()
        .ok()
        .map(str::to_owned)
}

fn on_device(device: c_int, f: impl FnOnce(&mut Device)) -> c_int {
    with_state(-1, |s| match s.device_mut(device) {
        Some(d) => {
            f(d);
            0
        }
        None => -1,
    })
}

#[no_mangle]
pub extern "C" fn fake_nvml_reset() {
    with_state((), |s| s.reset());
}

/// # Safety
/// `uuid` and `name` are null or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn fake_nvml_add_device(
    uuid: *const c_char,
    name: *const c_char,
    mig: c_int,
    power_mw: c_uint,
) -> c_int {
    // SAFETY: as the caller promises.
    let (Some(uuid), Some(name)) = (unsafe { str_arg(uuid) }, unsafe { str_arg(name) }) else {
        return -1;
    };
    let mig = match mig {
        0 => Mig::Incapable,
        1 => Mig::Enabled,
        2 => Mig::Disabled,
        _ => return -1,
    };
    with_state(-1, |s| {
        s.devices.push(Device::new(uuid, name, mig, power_mw));
        c_int::try_from(s.devices.len() - 1).unwrap_or(-1)
    })
}

#[no_mangle]
pub extern "C" fn fake_nvml_set_utilization(device: c_int, gpu: c_uint, memory: c_uint) -> c_int {
    on_device(device, |d| d.utilization = (gpu, memory))
}

#[no_mangle]
pub extern "C" fn fake_nvml_set_power(device: c_int, power_mw: c_uint) -> c_int {
    on_device(device, |d| d.power_mw = power_mw)
}

/// # Safety
/// `pids` and `used_memory` are valid for `count` elements (or null with `count` 0).
#[no_mangle]
pub unsafe extern "C" fn fake_nvml_set_processes(
    device: c_int,
    pids: *const c_uint,
    used_memory: *const c_ulonglong,
    count: c_uint,
) -> c_int {
    let count = count as usize;
    if count > 0 && (pids.is_null() || used_memory.is_null()) {
        return -1;
    }
    let processes: Vec<Process> = (0..count)
        .map(|i| Process {
            // SAFETY: i < count, the length the caller promises.
            pid: unsafe { *pids.add(i) },
            used_memory: unsafe { *used_memory.add(i) },
        })
        .collect();
    on_device(device, |d| d.processes = processes)
}

#[no_mangle]
pub extern "C" fn fake_nvml_push_sample(
    device: c_int,
    pid: c_uint,
    timestamp_us: c_ulonglong,
    sm: c_uint,
    mem: c_uint,
    enc: c_uint,
    dec: c_uint,
) -> c_int {
    let sample = Sample {
        pid,
        timestamp_us,
        sm,
        mem,
        enc,
        dec,
    };
    on_device(device, |d| d.push_sample(sample))
}

/// # Safety
/// `function` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fake_nvml_fail(
    function: *const c_char,
    device: c_int,
    code: c_uint,
) -> c_int {
    // SAFETY: as the caller promises.
    let Some(func) = unsafe { str_arg(function) }.and_then(|f| Func::by_name(&f)) else {
        return -1;
    };
    with_state(-1, |s| {
        let device = match device {
            -1 => None,
            d => match usize::try_from(d).ok().filter(|d| *d < s.devices.len()) {
                Some(d) => Some(d),
                None => return -1,
            },
        };
        s.fail(func, device, code);
        0
    })
}

#[no_mangle]
pub extern "C" fn fake_nvml_lose_device(device: c_int) -> c_int {
    on_device(device, |d| d.lost = true)
}

/// # Safety
/// `function` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn fake_nvml_calls(function: *const c_char, device: c_int) -> c_ulonglong {
    // SAFETY: as the caller promises.
    let Some(func) = unsafe { str_arg(function) }.and_then(|f| Func::by_name(&f)) else {
        return 0;
    };
    let device = usize::try_from(device).ok();
    with_state(0, |s| s.call_count(func, device))
}
