//! The `[gpu]` section: whether to load NVML, from where, and how often to sample. Its own file
//! so that the defaults and their validation sit in one place, apart from the NVML calls.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

/// The library nvml-wrapper loads when no path is given (found through the loader's search
/// path, as the NVIDIA container toolkit mounts it).
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// Shortest accepted sampling interval: NVML's own per-process samples are taken about every
/// 1/6 s, so faster reads only cost CPU.
pub const MIN_SAMPLE_INTERVAL_MS: u64 = 100;

/// Whether the agent samples GPUs.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GpuEnabled {
    /// Sample when NVML loads; a node without the driver runs without GPU data, said once.
    #[default]
    Auto,
    /// Never load NVML.
    Off,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// `auto` or `off`.
    pub enabled: GpuEnabled,
    /// The NVML library to load; default `libnvidia-ml.so.1` from the loader's search path.
    pub library_path: Option<PathBuf>,
    /// Milliseconds between two samples; at least 100.
    pub sample_interval_ms: u64,
    /// Seconds between two per-pod GPU usage records (the priced quantity); at least 1.
    pub report_interval_secs: u64,
}

fn default_sample_interval_ms() -> u64 {
    1000
}

impl Default for GpuConfig {
    fn default() -> Self {
        Self {
            enabled: GpuEnabled::Auto,
            library_path: None,
            sample_interval_ms: default_sample_interval_ms(),
            report_interval_secs: 60,
        }
    }
}

impl GpuConfig {
    /// The first invalid field, named as it is written in the config file.
    pub fn validate(&self) -> Result<(), String> {
        if self.sample_interval_ms < MIN_SAMPLE_INTERVAL_MS {
            return Err(format!(
                "gpu.sample_interval_ms = {} is below the minimum of {MIN_SAMPLE_INTERVAL_MS}",
                self.sample_interval_ms
            ));
        }
        if self.report_interval_secs == 0 {
            return Err("gpu.report_interval_secs must be at least 1".into());
        }
        if self
            .library_path
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err("gpu.library_path is empty: leave it out for the default".into());
        }
        Ok(())
    }

    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.report_interval_secs)
    }

    pub fn sample_interval(&self) -> Duration {
        Duration::from_millis(self.sample_interval_ms)
    }

    /// The library that will be loaded, for messages.
    pub fn library(&self) -> String {
        self.library_path
            .as_ref()
            .map_or_else(|| DEFAULT_LIBRARY.to_owned(), |p| p.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_example() {
        let config: GpuConfig = toml::from_str(
            r#"
            enabled = "auto"
            library_path = "/run/nvidia/driver/usr/lib64/libnvidia-ml.so.1"
            sample_interval_ms = 500
            "#,
        )
        .unwrap();
        assert_eq!(
            config,
            GpuConfig {
                enabled: GpuEnabled::Auto,
                library_path: Some("/run/nvidia/driver/usr/lib64/libnvidia-ml.so.1".into()),
                sample_interval_ms: 500,
                report_interval_secs: 60,
            }
        );
        config.validate().unwrap();
        assert_eq!(config.sample_interval(), Duration::from_millis(500));
    }

    #[test]
    fn defaults() {
        let config: GpuConfig = toml::from_str("").unwrap();
        assert_eq!(config, GpuConfig::default());
        assert_eq!(config.sample_interval_ms, 1000);
        assert_eq!(config.library(), DEFAULT_LIBRARY);
        config.validate().unwrap();
    }

    #[test]
    fn invalid() {
        let cases = [
            ("sample_interval_ms = 99", "gpu.sample_interval_ms = 99"),
            ("library_path = \"\"", "gpu.library_path is empty"),
            ("enabled = \"on\"", "unknown variant `on`"),
            ("interval_ms = 1000", "unknown field `interval_ms`"),
        ];
        for (text, expected) in cases {
            let error = match toml::from_str::<GpuConfig>(text) {
                Ok(config) => config.validate().unwrap_err(),
                Err(e) => e.to_string(),
            };
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
