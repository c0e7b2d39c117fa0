//! Why the GPU sampler did not open. Every variant ends with the agent running without GPU
//! data: the caller logs the message once and goes on.

use nvml_wrapper::error::NvmlError;

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The `[gpu]` section is invalid (the message names the field).
    #[error("{0}; the agent runs without GPU data")]
    Config(String),
    /// `gpu.enabled = "off"`.
    #[error("GPU sampling is off (gpu.enabled = \"off\"): the agent runs without GPU data")]
    Disabled,
    /// The NVML library did not load or initialise: no NVIDIA driver on the node, the library
    /// not mounted, or the driver not running.
    #[error(
        "no NVIDIA driver: NVML ({library}) did not load or initialise: {source}; the agent \
         runs without GPU data"
    )]
    Unavailable {
        library: String,
        #[source]
        source: NvmlError,
    },
    /// NVML initialised but could not count the GPUs.
    #[error("NVML could not count the GPUs: {source}; the agent runs without GPU data")]
    DeviceCount {
        #[source]
        source: NvmlError,
    },
    /// NVML found no GPU it could identify (`found` GPUs counted, each left out with a warning).
    #[error("NVML found no usable GPU ({found} counted); the agent runs without GPU data")]
    NoDevices { found: u32 },
}
