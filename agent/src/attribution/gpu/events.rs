//! The GPU sampler's log lines, each in one place and one wording. A failing call is said once
//! per device and NVML function, so a broken GPU read every second cannot flood the log.

use std::collections::HashSet;

use nvml_wrapper::error::NvmlError;
use tracing::{info, warn};

/// The (device, function) pairs already reported.
#[derive(Debug, Default)]
pub(super) struct Reported(HashSet<(String, &'static str)>);

impl Reported {
    /// True the first time for this pair.
    fn first(&mut self, device: &str, function: &'static str) -> bool {
        self.0.insert((device.to_owned(), function))
    }
}

/// The wrapper's text for the error and NVML's return code (999, `NVML_ERROR_UNKNOWN`, for a
/// failure on the wrapper's side, such as a function missing from an old driver).
fn describe(error: NvmlError) -> (String, u32) {
    let text = error.to_string();
    (text, u32::from(error))
}

/// An NVML call failed; the sampler goes on without that figure.
pub(super) fn call_failed(
    reported: &mut Reported,
    device: &str,
    function: &'static str,
    error: NvmlError,
) {
    if reported.first(device, function) {
        let (error, nvml_code) = describe(error);
        warn!(
            gpu = device,
            function,
            %error,
            nvml_code,
            "NVML call failed: the figures it gives are missing for this GPU while it fails \
             (said once per GPU and function)"
        );
    }
}

/// A GPU fell off the bus or no longer resolves: it is dropped, the others go on.
pub(super) fn device_lost(device: &str, function: &'static str, error: NvmlError) {
    let (error, nvml_code) = describe(error);
    warn!(
        gpu = device,
        function,
        %error,
        nvml_code,
        "GPU lost: no more samples from it unless it is found again (GPUs are looked for \
         every 60 samples); the other GPUs go on"
    );
}

/// A GPU that was not sampled yet identified at a scan: it counts from the next sample on.
pub(super) fn device_found(device: &super::DeviceInfo) {
    info!(
        gpu = %device.uuid,
        name = %device.name,
        index = device.index,
        "GPU found: sampled from now on"
    );
}

/// The device does not report per-process utilisation (`NVML_ERROR_NOT_SUPPORTED`).
pub(super) fn sm_unsupported(device: &str) {
    info!(
        gpu = device,
        "GPU reports no per-process utilisation (nvmlDeviceGetProcessUtilization: not \
         supported): its pods get GPU time and memory only, flagged sm_unavailable"
    );
}

/// A device could not be identified and is left out (said once per enumeration slot).
pub(super) fn device_skipped(index: u32, function: &'static str, error: NvmlError) {
    let (error, nvml_code) = describe(error);
    warn!(
        index,
        function,
        %error,
        nvml_code,
        "GPU left out of sampling: it could not be identified"
    );
}
