//! GPU use per pod, from NVML: which pods hold which GPUs, how much of the SMs they keep busy,
//! how much device memory they hold, and their share of the GPUs' energy, so that tokens can be
//! priced per GPU-second. NVML is loaded at run time through `nvml-wrapper`; a node without
//! the driver runs without GPU data and says so once (the error of [`GpuSampler::open`]).
//!
//! Split so that each part can be tested alone: `config` (the `[gpu]` section), `integrate`
//! (pure arithmetic on plain samples, no NVML), `sampler` (the NVML reads and their errors),
//! `usage` (the per-pod figures), `events` (the log lines), `error` (why there is no GPU data).
//!
//! # What is integrated
//!
//! [`GpuSampler::sample`] is called at wall-clock times t₀ < t₁ < …; the first call only starts
//! the clock. For each interval (tᵢ₋₁, tᵢ] of I µs and each GPU, with the pods found through
//! the caller's PID → pod map (unmapped PIDs count under [`HOST_POD`]):
//!
//! - **GPU time held** (`gpu_time_us`): a pod with at least one running compute process on the
//!   GPU in the list read at tᵢ gets I, once per GPU however many processes it has there.
//! - **Memory** (`memory_byte_us`): Σ over those processes of used device memory (bytes, read
//!   at tᵢ; not available counts 0) × I.
//! - **SM** (`sm_percent_us`, exact percent·µs; `sm_util_us()` = that / 100): the driver's
//!   process-utilisation samples newer than the newest one already integrated
//!   (`lastSeenTimeStamp`). A sample covers the span from the previous distinct sample
//!   timestamp on that GPU (the driver's previous sampling tick, which may lie in an earlier
//!   interval) to its own timestamp; for the first samples after `open`, from t₀. It adds
//!   min(sm %, 100) × span. Samples stamped after tᵢ are left for the next interval (the
//!   driver returns them again), and a read that fails leaves its samples for the next one, so
//!   nothing is lost or counted twice. (Sample timestamps are the driver's CPU clock: `now`
//!   must be the wall clock too.)
//! - **Energy** (`energy_nj`): the GPU's power read at tᵢ (mW) × I (µs) = nJ, split by each
//!   pod's SM percent·µs over the total of all pods (host included) on that GPU in the
//!   interval, rounded down per pod and interval, as Kepler splits GPU power. When the total
//!   SM is 0, or the power read failed, the interval's energy goes to no one.
//! - **MIG** (MIG mode enabled at `open`): per-process utilisation does not exist there, so
//!   held time and memory only, and the pod is flagged `mig`.
//! - **SM not supported** (`NVML_ERROR_NOT_SUPPORTED` from process utilisation): said once, not
//!   asked again; pods holding the GPU get held time and memory, flagged `sm_unavailable`.
//!
//! # Errors while sampling
//!
//! A lost GPU (`NVML_ERROR_GPU_IS_LOST`, or a handle NVML no longer resolves) is warned about
//! once and dropped; the others go on. Every [`SCAN_EVERY_SAMPLES`] samples the sampler looks
//! for GPUs it does not sample (hot-plugged, or back after a reset) and adds those that
//! identify, from the next sample on; a slot that does not identify is said once. Any other failure is warned about once per GPU and NVML
//! function, with the error's text and code, and leaves out the figures that call gives for
//! that interval. Nothing panics, and nothing waits beyond the NVML calls themselves (which can
//! take milliseconds on a failing GPU: call `sample` off the async runtime's threads).

mod config;
mod error;
mod events;
mod integrate;
mod sampler;
mod usage;

pub use config::{GpuConfig, GpuEnabled, DEFAULT_LIBRARY, MIN_SAMPLE_INTERVAL_MS};
pub use error::GpuError;
pub use integrate::{integrate_device, DeviceInterval, RunningProcess, SmReads, UtilSample};
pub use sampler::{DeviceInfo, DeviceUtilization, GpuSampler, SCAN_EVERY_SAMPLES};
pub use usage::{PodGpuUsage, HOST_POD};
