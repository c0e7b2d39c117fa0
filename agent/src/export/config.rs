//! The `[export]` section: where records go, the spool, and the OTLP connection. OTLP settings
//! not given here come from the standard `OTEL_EXPORTER_OTLP_*` variables, as every
//! OpenTelemetry SDK reads them; the file wins over the environment.

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::spool::SpoolConfig;

/// Where usage records go.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExportKind {
    /// JSON lines on standard output.
    #[default]
    Stdout,
    /// OTLP (gRPC or HTTP/protobuf) to an OpenTelemetry collector: records as log records,
    /// plus GenAI metrics and cumulative token counters.
    Otlp,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// `stdout` or `otlp`.
    pub kind: ExportKind,
    /// Directory of the disk spool (a hostPath in the chart). Without it records wait in
    /// memory and a restart loses the undelivered ones.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the backlog keeps; beyond it the oldest undelivered records are dropped,
    /// counted and logged.
    pub spool_max_bytes: u64,
    /// The OTLP connection.
    pub otlp: OtlpConfig,
}

fn default_spool_max_bytes() -> u64 {
    256 * 1024 * 1024
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            kind: ExportKind::Stdout,
            spool_dir: None,
            spool_max_bytes: default_spool_max_bytes(),
            otlp: OtlpConfig::default(),
        }
    }
}

/// Smallest spool accepted: a few segments of records.
const MIN_SPOOL_BYTES: u64 = 64 * 1024;

impl ExportConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.spool_max_bytes < MIN_SPOOL_BYTES {
            return Err(format!(
                "export.spool_max_bytes = {} is below the minimum of {MIN_SPOOL_BYTES}",
                self.spool_max_bytes
            ));
        }
        self.otlp.validate()
    }

    pub fn spool_config(&self) -> Option<SpoolConfig> {
        self.spool_dir.as_ref().map(|dir| SpoolConfig {
            dir: dir.clone(),
            max_bytes: self.spool_max_bytes,
            segment_bytes: (self.spool_max_bytes / 16).clamp(16 * 1024, 16 << 20),
        })
    }
}

/// OTLP transport.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum OtlpProtocol {
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Collector URL (`http://collector:4317` for gRPC, `http://collector:4318` for HTTP,
    /// the `/v1/logs` and `/v1/metrics` paths are added). Env: `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`. Env: `OTEL_EXPORTER_OTLP_PROTOCOL`; default `grpc`.
    pub protocol: Option<OtlpProtocol>,
    /// Headers on every export (e.g. the collector's token). Env:
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k2=v2`), merged under these.
    pub headers: BTreeMap<String, String>,
    /// A file holding a bearer token, sent as `authorization: Bearer <token>` (a mounted
    /// Secret; read at start).
    pub bearer_token_file: Option<PathBuf>,
    /// Per-export timeout in milliseconds. Env: `OTEL_EXPORTER_OTLP_TIMEOUT`; default 10000.
    pub timeout_ms: Option<u64>,
    /// PEM CA bundle to trust for an `https` endpoint. Env: `OTEL_EXPORTER_OTLP_CERTIFICATE`.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key for mutual TLS. Env:
    /// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`, `OTEL_EXPORTER_OTLP_CLIENT_KEY`.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Metrics export interval in milliseconds. Env: `OTEL_METRIC_EXPORT_INTERVAL`; default
    /// 10000.
    pub metrics_interval_ms: Option<u64>,
    /// How often the cumulative counters are checkpointed to the spool directory, in ms.
    pub checkpoint_interval_ms: Option<u64>,
}

/// Header values are credentials: only their names are printed.
impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("bearer_token_file", &self.bearer_token_file)
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// The OTLP settings after the environment was applied.
#[derive(Clone, PartialEq, Eq)]
pub struct ResolvedOtlp {
    pub protocol: OtlpProtocol,
    /// Base URL without a trailing slash.
    pub endpoint: String,
    pub headers: BTreeMap<String, String>,
    pub timeout: Duration,
    pub ca_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    pub metrics_interval: Duration,
    pub checkpoint_interval: Duration,
}

impl fmt::Debug for ResolvedOtlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedOtlp")
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OtlpConfig {
    fn validate(&self) -> Result<(), String> {
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(format!(
                    "export.otlp.endpoint = {endpoint:?} must start with http:// or https://"
                ));
            }
        }
        if self.client_cert_file.is_some() != self.client_key_file.is_some() {
            return Err(
                "export.otlp.client_cert_file and client_key_file go together (mutual TLS)".into(),
            );
        }
        for (field, value) in [
            ("timeout_ms", self.timeout_ms),
            ("metrics_interval_ms", self.metrics_interval_ms),
            ("checkpoint_interval_ms", self.checkpoint_interval_ms),
        ] {
            if value == Some(0) {
                return Err(format!("export.otlp.{field} must be above 0"));
            }
        }
        Ok(())
    }

    /// Applies the `OTEL_*` variables (read through `env`) under the file's settings.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<ResolvedOtlp, String> {
        let protocol = match (self.protocol, env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
            (Some(p), _) => p,
            (None, None) => OtlpProtocol::Grpc,
            (None, Some(p)) => match p.trim() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                other => {
                    return Err(format!(
                        "OTEL_EXPORTER_OTLP_PROTOCOL={other:?}: use grpc or http/protobuf"
                    ))
                }
            },
        };
        let endpoint = self
            .endpoint
            .clone()
            .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_else(|| match protocol {
                OtlpProtocol::Grpc => "http://localhost:4317".into(),
                OtlpProtocol::HttpProtobuf => "http://localhost:4318".into(),
            });
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(format!(
                "OTLP endpoint {endpoint:?} must start with http:// or https://"
            ));
        }
        let mut headers = BTreeMap::new();
        if let Some(list) = env("OTEL_EXPORTER_OTLP_HEADERS") {
            for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
                let (key, value) = pair.split_once('=').ok_or_else(|| {
                    format!("OTEL_EXPORTER_OTLP_HEADERS: {pair:?} is not key=value")
                })?;
                headers.insert(
                    key.trim().to_ascii_lowercase(),
                    percent_decode(value.trim()),
                );
            }
        }
        for (key, value) in &self.headers {
            headers.insert(key.to_ascii_lowercase(), value.clone());
        }
        if let Some(path) = &self.bearer_token_file {
            let token = std::fs::read_to_string(path)
                .map_err(|e| format!("export.otlp.bearer_token_file {}: {e}", path.display()))?;
            headers.insert("authorization".into(), format!("Bearer {}", token.trim()));
        }
        let millis = |value: Option<u64>, var: &str, default: u64| -> Result<Duration, String> {
            let ms = match (value, env(var)) {
                (Some(ms), _) => ms,
                (None, Some(text)) => text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{var}={text:?} is not a number of milliseconds"))?,
                (None, None) => default,
            };
            Ok(Duration::from_millis(ms.max(1)))
        };
        let path = |value: &Option<PathBuf>, var: &str| {
            value.clone().or_else(|| env(var).map(PathBuf::from))
        };
        Ok(ResolvedOtlp {
            protocol,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            headers,
            timeout: millis(self.timeout_ms, "OTEL_EXPORTER_OTLP_TIMEOUT", 10_000)?,
            ca_file: path(&self.ca_file, "OTEL_EXPORTER_OTLP_CERTIFICATE"),
            client_cert_file: path(
                &self.client_cert_file,
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            ),
            client_key_file: path(&self.client_key_file, "OTEL_EXPORTER_OTLP_CLIENT_KEY"),
            metrics_interval: millis(
                self.metrics_interval_ms,
                "OTEL_METRIC_EXPORT_INTERVAL",
                10_000,
            )?,
            checkpoint_interval: millis(
                self.checkpoint_interval_ms,
                "TOKENMETER_CHECKPOINT_INTERVAL",
                5_000,
            )?,
        })
    }
}

/// `%XX` escapes, as the OTLP exporter spec allows in header values.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let (b'%', Some(hi), Some(lo)) = (
            bytes[i],
            bytes.get(i + 1).and_then(|&b| hex(b)),
            bytes.get(i + 2).and_then(|&b| hex(b)),
        ) {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_environment_fills_what_the_file_leaves_open() {
        let resolved = OtlpConfig::default()
            .resolve(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "Authorization=Bearer%20abc, x-team=search",
                ),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ]))
            .unwrap();
        assert_eq!(resolved.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(resolved.endpoint, "https://otel.example:4318");
        assert_eq!(resolved.headers["authorization"], "Bearer abc");
        assert_eq!(resolved.headers["x-team"], "search");
        assert_eq!(resolved.timeout, Duration::from_millis(2500));
        assert_eq!(resolved.metrics_interval, Duration::from_secs(10));
    }

    #[test]
    fn the_file_wins_over_the_environment() {
        let config: OtlpConfig = toml::from_str(
            r#"
            endpoint = "http://collector:4317"
            protocol = "grpc"
            headers = { authorization = "Bearer file" }
            "#,
        )
        .unwrap();
        let resolved = config
            .resolve(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer env"),
            ]))
            .unwrap();
        assert_eq!(resolved.protocol, OtlpProtocol::Grpc);
        assert_eq!(resolved.endpoint, "http://collector:4317");
        assert_eq!(resolved.headers["authorization"], "Bearer file");
        assert!(
            !format!("{resolved:?}").contains("Bearer"),
            "secrets stay out of Debug"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let err = OtlpConfig::default()
            .resolve(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]))
            .unwrap_err();
        assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");
        let config = ExportConfig {
            spool_max_bytes: 10,
            ..Default::default()
        };
        assert!(config.validate().unwrap_err().contains("spool_max_bytes"));
        let bad: Result<ExportConfig, _> = toml::from_str("kind = \"kafka\"");
        assert!(bad.is_err());
        let bad: Result<ExportConfig, _> = toml::from_str("[otlp]\nendpont = \"x\"");
        assert!(bad.unwrap_err().to_string().contains("endpont"));
        let config: ExportConfig = toml::from_str("[otlp]\nendpoint = \"collector:4317\"").unwrap();
        assert!(config.validate().unwrap_err().contains("http://"));
    }
}
