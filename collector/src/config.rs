//! The collector's configuration file (TOML). Relative paths are relative to the file.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::store::SidePolicy;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// `sqlite:PATH` (the embedded default: one file, WAL) or `postgres://...`;
    /// `TOKENMETER_DATABASE_URL` overrides it (a URL with a password, from a Secret).
    #[serde(default = "default_database")]
    pub database: String,
    /// The price book (see collector/examples/prices.toml).
    pub price_book: PathBuf,
    /// Enterprises, teams, users and mapping rules (see collector/examples/accounts.toml).
    /// Without it every call is billed to `unassigned` unless the agent named its tenant.
    pub accounts: Option<PathBuf>,
    /// Which end of a call seen on both ends is billed: `prefer_server` (default), `server`,
    /// `client`.
    #[serde(default)]
    pub side_policy: SidePolicy,
    /// Budgets per enterprise, team or user (see collector/examples/quotas.toml).
    pub quotas: Option<PathBuf>,
    /// The admission check gateways call (HTTP `/v1/admission`, Envoy `ext_authz`).
    #[serde(default)]
    pub admission: crate::quota::admission::AdmissionConfig,
    /// Days after a period's end during which late calls still land in it; `export`
    /// finalises it after that.
    #[serde(default = "default_grace_days")]
    pub grace_days: u32,
    /// Where `export` sends finalised periods.
    #[serde(default)]
    pub exporters: Vec<crate::export::ExporterConfig>,
    #[serde(default)]
    pub receiver: ReceiverConfig,
    #[serde(default)]
    pub api: ApiConfig,
}

fn default_grace_days() -> u32 {
    3
}

fn default_database() -> String {
    "sqlite:tokenmeter-usage.db".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// OTLP/gRPC.
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP.
    pub http_listen: SocketAddr,
    /// A file of agent bearer tokens, one per line (a mounted Secret). Without tokens the
    /// receiver is open, which the collector warns about.
    pub token_file: Option<PathBuf>,
    /// Largest request body accepted (after decompression).
    pub max_request_bytes: usize,
    /// TLS (and mutual TLS with a client CA) on both OTLP listeners; plain without it.
    pub tls: Option<crate::receive::tls::TlsConfig>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            grpc_listen: "0.0.0.0:4317".parse().expect("address"),
            http_listen: "0.0.0.0:4318".parse().expect("address"),
            token_file: None,
            max_request_bytes: 16 << 20,
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// `/metrics` (Prometheus), `/healthz`, `/v1/admission` and the REST API.
    pub listen: SocketAddr,
    /// The REST API's tokens (`[[tokens]] token = "...", scope = "team:search"`; a mounted
    /// Secret). Without it the REST API answers 401 to everyone.
    pub tokens_file: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".parse().expect("address"),
            tokens_file: None,
        }
    }
}

impl CollectorConfig {
    pub fn load(path: &Path) -> anyhow::Result<CollectorConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the collector config {}: {e}", path.display()))?;
        let mut config: CollectorConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("collector config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut config.price_book);
        if let Some(accounts) = config.accounts.as_mut() {
            resolve(accounts);
        }
        if let Some(tokens) = config.receiver.token_file.as_mut() {
            resolve(tokens);
        }
        if let Some(tls) = config.receiver.tls.as_mut() {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
            if let Some(ca) = tls.client_ca_file.as_mut() {
                resolve(ca);
            }
        }
        if let Some(tokens) = config.api.tokens_file.as_mut() {
            resolve(tokens);
        }
        if let Some(quotas) = config.quotas.as_mut() {
            resolve(quotas);
        }
        if let Some(key) = config.admission.fingerprint_key_file.as_mut() {
            resolve(key);
        }
        // A URL with a password comes from a Secret through the environment.
        if let Ok(url) = std::env::var("TOKENMETER_DATABASE_URL") {
            if !url.is_empty() {
                config.database = url;
            }
        }
        if let Some(file) = config.database.strip_prefix("sqlite:") {
            let file = PathBuf::from(file);
            if file.is_relative() {
                config.database = format!("sqlite:{}", base.join(file).display());
            }
        }
        if config.receiver.max_request_bytes < 1024 {
            anyhow::bail!("receiver.max_request_bytes must be at least 1024");
        }
        Ok(config)
    }

    /// The agents' tokens from the token file.
    pub fn tokens(&self) -> anyhow::Result<Vec<String>> {
        let Some(path) = &self.receiver.token_file else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("receiver.token_file {}: {e}", path.display()))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect())
    }
}
