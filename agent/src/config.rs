//! The agent's configuration file (TOML). Every section has defaults, so an empty file (or no
//! file) is a valid configuration; unknown keys are rejected so that a typo cannot silently
//! turn a setting off.

use std::{num::NonZeroUsize, path::Path, time::Duration};

use regex::Regex;
use serde::Deserialize;

/// The whole configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Which processes are metered.
    pub selector: SelectorConfig,
    /// Discovery of processes and TLS libraries.
    pub discovery: DiscoveryConfig,
    /// Reassembly of captured chunks into per-connection streams.
    pub streams: StreamsConfig,
    /// HTTP decoding.
    pub http: crate::http::HttpConfig,
    /// Identity taken from requests.
    pub identity: crate::attribution::IdentityConfig,
    /// Pod metadata from the Kubernetes API.
    pub kubernetes: crate::attribution::kubernetes::KubernetesConfig,
    /// Which pod labels or request fields name a call's user, team and org.
    pub tenants: crate::attribution::TenantConfig,
    /// GPU use per pod, from NVML.
    pub gpu: crate::attribution::gpu::GpuConfig,
    /// Plaintext HTTP at the socket syscalls, for processes behind a TLS-terminating proxy.
    pub plaintext: crate::capture::plaintext::PlaintextConfig,
    /// Tokenizers for counting tokens the server did not report.
    pub tokens: crate::tokens::TokenizerConfig,
    /// Where usage records go, the spool, the OTLP connection.
    pub export: crate::export::ExportConfig,
}

/// Limits what is metered. Empty lists mean "no restriction"; a process is metered when it
/// matches one of the `comm` or `exe` patterns (if any is given) and lies under one of the
/// `cgroup_prefix` paths (if any is given). With no restriction at all, probes are attached
/// once per library file for every process on the node; otherwise they are attached per
/// selected process, so processes outside the selector are not trapped at all.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SelectorConfig {
    /// Regular expressions matched against `/proc/PID/comm`, e.g. `"^python"`.
    pub comm: Vec<String>,
    /// Regular expressions matched against the executable's path (`/proc/PID/exe`).
    pub exe: Vec<String>,
    /// cgroup v2 path prefixes (as in `/proc/PID/cgroup`), e.g. `"/kubepods.slice"`.
    pub cgroup_prefix: Vec<String>,
}

/// How processes and libraries are found.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Seconds between two full scans of /proc, which catch libraries loaded long after exec
    /// (dlopen). Exec events trigger a scan of the new process within a second regardless.
    pub rescan_interval_secs: u64,
    /// Regular expression on a mapped file's name that marks it as a TLS library candidate.
    pub library_pattern: String,
}

/// Bounds of the reassembly stage.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// Most connections tracked at once; the least recently active is finished beyond it.
    pub max_connections: NonZeroUsize,
    /// Most out-of-order bytes held per stream while waiting for a missing chunk; beyond it
    /// the missing range is declared a gap.
    pub max_pending_bytes: NonZeroUsize,
    /// A stream without traffic for this many seconds is finished.
    pub idle_timeout_secs: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            rescan_interval_secs: 10,
            library_pattern: r"^libssl[^/]*\.so(\.[0-9.]+)?$".into(),
        }
    }
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            max_connections: NonZeroUsize::new(4096).expect("non-zero"),
            max_pending_bytes: NonZeroUsize::new(4 * 1024 * 1024).expect("non-zero"),
            idle_timeout_secs: 30,
        }
    }
}

/// A configuration that could not be used; names the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    /// A field has a value that cannot work.
    #[error("invalid config: `{field}`: {reason}")]
    Invalid { field: String, reason: String },
}

impl AgentConfig {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates a configuration from TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<inline>".into(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: patterns compile, durations are positive.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, patterns) in [
            ("selector.comm", &self.selector.comm),
            ("selector.exe", &self.selector.exe),
        ] {
            for (i, pattern) in patterns.iter().enumerate() {
                Regex::new(pattern).map_err(|e| ConfigError::Invalid {
                    field: format!("{field}[{i}]"),
                    reason: e.to_string(),
                })?;
            }
        }
        for (i, prefix) in self.selector.cgroup_prefix.iter().enumerate() {
            if !prefix.starts_with('/') {
                return Err(ConfigError::Invalid {
                    field: format!("selector.cgroup_prefix[{i}]"),
                    reason: format!("{prefix:?} must be an absolute cgroup path starting with /"),
                });
            }
        }
        Regex::new(&self.discovery.library_pattern).map_err(|e| ConfigError::Invalid {
            field: "discovery.library_pattern".into(),
            reason: e.to_string(),
        })?;
        if self.discovery.rescan_interval_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "discovery.rescan_interval_secs".into(),
                reason: "must be at least 1".into(),
            });
        }
        crate::attribution::TenantResolver::new(self.tenants.clone()).map_err(|reason| {
            ConfigError::Invalid {
                field: "tenants".into(),
                reason,
            }
        })?;
        self.plaintext
            .validate()
            .map_err(|reason| ConfigError::Invalid {
                field: "plaintext".into(),
                reason,
            })?;
        self.gpu.validate().map_err(|reason| ConfigError::Invalid {
            field: "gpu".into(),
            reason,
        })?;
        self.tokens.validate().map_err(|e| ConfigError::Invalid {
            field: "tokens".into(),
            reason: e.to_string(),
        })?;
        self.export
            .validate()
            .map_err(|reason| ConfigError::Invalid {
                field: "export".into(),
                reason,
            })?;
        if self.http.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                field: "http.max_body_bytes".into(),
                reason: "must be at least 1024".into(),
            });
        }
        if self.http.max_held_body_bytes < self.http.max_body_bytes {
            return Err(ConfigError::Invalid {
                field: "http.max_held_body_bytes".into(),
                reason: format!(
                    "must be at least http.max_body_bytes ({}), or no body could reach its own cap",
                    self.http.max_body_bytes
                ),
            });
        }
        if self.streams.idle_timeout_secs == 0 {
            return Err(ConfigError::Invalid {
                field: "streams.idle_timeout_secs".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

impl DiscoveryConfig {
    pub fn rescan_interval(&self) -> Duration {
        Duration::from_secs(self.rescan_interval_secs)
    }
}

impl StreamsConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config.example.toml");

    #[test]
    fn example_config_parses_completely() {
        let config = AgentConfig::parse(EXAMPLE).expect("example config is valid");
        assert_eq!(config.selector.comm, vec!["^python", "^node$", "^curl$"]);
        assert_eq!(config.selector.cgroup_prefix, vec!["/kubepods.slice"]);
        assert_eq!(config.discovery.rescan_interval_secs, 10);
        assert_eq!(config.streams.max_connections.get(), 4096);
        assert_eq!(config.streams.idle_timeout(), Duration::from_secs(30));
    }

    #[test]
    fn empty_config_is_the_default() {
        let config = AgentConfig::parse("").unwrap();
        assert!(config.selector.comm.is_empty());
        assert_eq!(config.streams.max_pending_bytes.get(), 4 * 1024 * 1024);
    }

    #[test]
    fn invalid_configs_name_the_field() {
        let cases = [
            ("[selector]\ncomm = [\"(\"]", "selector.comm[0]"),
            (
                "[selector]\ncgroup_prefix = [\"kubepods\"]",
                "selector.cgroup_prefix[0]",
            ),
            (
                "[discovery]\nrescan_interval_secs = 0",
                "discovery.rescan_interval_secs",
            ),
            (
                "[streams]\nidle_timeout_secs = 0",
                "streams.idle_timeout_secs",
            ),
            ("[streams]\nmax_connections = 0", "max_connections"),
            ("[http]\nmax_body_bytes = 10", "http.max_body_bytes"),
            (
                "[http]\nmax_held_body_bytes = 4096",
                "http.max_held_body_bytes",
            ),
            ("[identity]\nheaders = \"x\"", "headers"),
            ("[selector]\ncomn = []", "comn"),
        ];
        for (text, field) in cases {
            let error = AgentConfig::parse(text).expect_err(text).to_string();
            assert!(error.contains(field), "{text:?}: {error}");
        }
    }
}
