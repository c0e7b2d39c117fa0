//! The NVML C functions, with the layouts of `nvml.h` and the answers the real driver gives:
//! buffer-size queries answer `NVML_ERROR_INSUFFICIENT_SIZE` with the needed count, process
//! utilisation with nothing newer than `lastSeenTimeStamp` answers `NVML_ERROR_NOT_FOUND`, a
//! MIG-enabled device does not report process utilisation, a device without MIG does not
//! report a MIG mode.

use std::ffi::{c_char, c_uint, c_ulonglong, c_void, CStr};

use crate::state::*;

type Handle = *mut c_void;

/// `nvmlUtilization_t`.
#[repr(C)]
pub struct Utilization {
    pub gpu: c_uint,
    pub memory: c_uint,
}

/// `nvmlProcessInfo_t` (v2 layout, as `_v3` functions fill it).
#[repr(C)]
pub struct ProcessInfo {
    pub pid: c_uint,
    pub used_gpu_memory: c_ulonglong,
    pub gpu_instance_id: c_uint,
    pub compute_instance_id: c_uint,
}

/// `nvmlProcessUtilizationSample_t`.
#[repr(C)]
pub struct ProcessUtilizationSample {
    pub pid: c_uint,
    pub time_stamp: c_ulonglong,
    pub sm_util: c_uint,
    pub mem_util: c_uint,
    pub enc_util: c_uint,
    pub dec_util: c_uint,
}

const _: () = assert!(std::mem::size_of::<ProcessInfo>() == 24);
const _: () = assert!(std::mem::size_of::<ProcessUtilizationSample>() == 32);

/// The driver version the fake reports (before 580.82: the wrapper's v12 field-id scheme).
const DRIVER_VERSION: &str = "550.54.15";

/// Copies `text` and a NUL into a caller's buffer of `length` bytes.
///
/// # Safety
/// `buf` is null or valid for `length` bytes.
unsafe fn write_str(buf: *mut c_char, length: c_uint, text: &str) -> u32 {
    if buf.is_null() {
        return ERROR_INVALID_ARGUMENT;
    }
    if text.len() + 1 > length as usize {
        return ERROR_INSUFFICIENT_SIZE;
    }
    // SAFETY: the caller's buffer holds `length` >= text.len() + 1 bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, text.len());
        *buf.add(text.len()) = 0;
    }
    SUCCESS
}

fn init(func: Func) -> u32 {
    with_state(ERROR_UNKNOWN, |s| {
        if let Some(code) = s.enter(func) {
            return code;
        }
        if let Err(problem) = crate::script::load_from_env(s) {
            eprintln!(
                "fake libnvidia-ml: {}: {problem}",
                crate::script::SCRIPT_VAR
            );
        }
        s.init_count += 1;
        SUCCESS
    })
}

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> u32 {
    init(Func::Init)
}

#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> u32 {
    init(Func::InitWithFlags)
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> u32 {
    with_state(ERROR_UNKNOWN, |s| {
        if let Some(code) = s.enter(Func::Shutdown) {
            return code;
        }
        if s.init_count == 0 {
            return ERROR_UNINITIALIZED;
        }
        s.init_count -= 1;
        SUCCESS
    })
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(result: u32) -> *const c_char {
    let text: &'static CStr = match result {
        SUCCESS => c"Success",
        ERROR_UNINITIALIZED => c"Uninitialized",
        ERROR_INVALID_ARGUMENT => c"Invalid Argument",
        ERROR_NOT_SUPPORTED => c"Not Supported",
        4 => c"Insufficient Permissions",
        ERROR_NOT_FOUND => c"Not Found",
        ERROR_INSUFFICIENT_SIZE => c"Insufficient Size",
        9 => c"Driver Not Loaded",
        10 => c"Timeout",
        ERROR_GPU_IS_LOST => c"GPU is lost",
        _ => c"Unknown Error",
    };
    text.as_ptr()
}

/// # Safety
/// `version` is null or valid for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> u32 {
    let code = with_state(Some(ERROR_UNKNOWN), |s| s.enter(Func::DriverVersion));
    if let Some(code) = code {
        return code;
    }
    // SAFETY: as the caller promises.
    unsafe { write_str(version, length, DRIVER_VERSION) }
}

/// # Safety
/// `count` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> u32 {
    with_state(ERROR_UNKNOWN, |s| {
        if let Some(code) = s.enter(Func::Count) {
            return code;
        }
        if s.init_count == 0 {
            return ERROR_UNINITIALIZED;
        }
        if count.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-null, and the caller's to write.
        unsafe { *count = s.devices.len() as c_uint };
        SUCCESS
    })
}

/// # Safety
/// `device` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut Handle) -> u32 {
    with_state(ERROR_UNKNOWN, |s| {
        if s.init_count == 0 {
            return ERROR_UNINITIALIZED;
        }
        let i = index as usize;
        let Some(d) = s.devices.get_mut(i) else {
            s.calls[Func::HandleByIndex as usize] += 1;
            return ERROR_INVALID_ARGUMENT;
        };
        d.calls[Func::HandleByIndex as usize] += 1;
        let lost = d.lost;
        if let Some(code) = s.injected(Func::HandleByIndex, Some(i)) {
            return code;
        }
        if lost {
            return ERROR_GPU_IS_LOST;
        }
        if device.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-null, and the caller's to write.
        unsafe { *device = handle_of(i) };
        SUCCESS
    })
}

/// # Safety
/// `uuid` is null or valid for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: Handle,
    uuid: *mut c_char,
    length: c_uint,
) -> u32 {
    // SAFETY: as the caller promises.
    device_call(Func::Uuid, device, |d| unsafe {
        write_str(uuid, length, &d.uuid)
    })
}

/// # Safety
/// `name` is null or valid for `length` bytes.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: Handle,
    name: *mut c_char,
    length: c_uint,
) -> u32 {
    // SAFETY: as the caller promises.
    device_call(Func::Name, device, |d| unsafe {
        write_str(name, length, &d.name)
    })
}

/// # Safety
/// `index` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: Handle, index: *mut c_uint) -> u32 {
    device_call(Func::Index, device, |_| {
        if index.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-null, and the caller's to write.
        unsafe { *index = device.addr() as c_uint - 1 };
        SUCCESS
    })
}

/// # Safety
/// `current` and `pending` are null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: Handle,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> u32 {
    device_call(Func::MigMode, device, |d| {
        if current.is_null() || pending.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        let mode = match d.mig {
            Mig::Incapable => return ERROR_NOT_SUPPORTED,
            Mig::Enabled => 1,
            Mig::Disabled => 0,
        };
        // SAFETY: non-null, and the caller's to write.
        unsafe {
            *current = mode;
            *pending = mode;
        }
        SUCCESS
    })
}

/// # Safety
/// `utilization` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: Handle,
    utilization: *mut Utilization,
) -> u32 {
    device_call(Func::Utilization, device, |d| {
        if utilization.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        let (gpu, memory) = d.utilization;
        // SAFETY: non-null, and the caller's to write.
        unsafe { utilization.write(Utilization { gpu, memory }) };
        SUCCESS
    })
}

/// # Safety
/// `power` is null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(device: Handle, power: *mut c_uint) -> u32 {
    device_call(Func::Power, device, |d| {
        if power.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        // SAFETY: non-null, and the caller's to write.
        unsafe { *power = d.power_mw };
        SUCCESS
    })
}

/// # Safety
/// `count` is null or valid for a read and a write; `utilization` is null or valid for
/// `*count` samples.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: Handle,
    utilization: *mut ProcessUtilizationSample,
    count: *mut c_uint,
    last_seen_time_stamp: c_ulonglong,
) -> u32 {
    device_call(Func::ProcessUtilization, device, |d| {
        if count.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        if d.mig == Mig::Enabled {
            return ERROR_NOT_SUPPORTED;
        }
        // A scripted process's sample is taken at the size query, so that the call with the
        // buffer that follows finds the same count.
        if utilization.is_null() {
            crate::script::tick(d);
        }
        let n = d.samples_after(last_seen_time_stamp).count();
        if n == 0 {
            return ERROR_NOT_FOUND;
        }
        // SAFETY: non-null; the caller's to read and write.
        let room = unsafe { *count } as usize;
        unsafe { *count = n as c_uint };
        if utilization.is_null() || room < n {
            return ERROR_INSUFFICIENT_SIZE;
        }
        for (i, s) in d.samples_after(last_seen_time_stamp).enumerate() {
            let out = ProcessUtilizationSample {
                pid: s.pid,
                time_stamp: s.timestamp_us,
                sm_util: s.sm,
                mem_util: s.mem,
                enc_util: s.enc,
                dec_util: s.dec,
            };
            // SAFETY: i < n <= room, the caller's buffer length.
            unsafe { utilization.add(i).write(out) };
        }
        SUCCESS
    })
}

/// # Safety
/// `count` is null or valid for a read and a write; `infos` is null or valid for `*count`
/// entries.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: Handle,
    count: *mut c_uint,
    infos: *mut ProcessInfo,
) -> u32 {
    device_call(Func::ComputeProcesses, device, |d| {
        if count.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        let n = d.processes.len();
        // SAFETY: non-null; the caller's to read and write.
        let room = unsafe { *count } as usize;
        unsafe { *count = n as c_uint };
        if room < n {
            return ERROR_INSUFFICIENT_SIZE;
        }
        if n > 0 && infos.is_null() {
            return ERROR_INVALID_ARGUMENT;
        }
        let instance = if d.mig == Mig::Enabled {
            0
        } else {
            NOT_AVAILABLE_U32
        };
        for (i, p) in d.processes.iter().enumerate() {
            let out = ProcessInfo {
                pid: p.pid,
                used_gpu_memory: p.used_memory,
                gpu_instance_id: instance,
                compute_instance_id: instance,
            };
            // SAFETY: i < n <= room, the caller's buffer length.
            unsafe { infos.add(i).write(out) };
        }
        SUCCESS
    })
}
