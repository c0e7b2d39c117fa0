//! Builds the `opentelemetry-otlp` exporters from the resolved settings: gRPC (tonic) or
//! HTTP/protobuf (reqwest), headers, timeout, TLS with a custom CA and client certificates.
//! The exporters' own retry (with the protocol's retryable/permanent classification and
//! Retry-After) covers blips; the shipper's backoff covers outages.

use std::collections::HashMap;

use anyhow::{Context, Result};
use opentelemetry_otlp::{
    tonic_types::{
        metadata::MetadataMap,
        transport::{Certificate, ClientTlsConfig, Identity},
    },
    Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};

use crate::export::config::{OtlpProtocol, ResolvedOtlp};

/// The tokio runtime the gRPC channels run on (the exporters are called from plain threads).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tokenmeter-otlp")
        .enable_all()
        .build()
        .context("starting the OTLP runtime")
}

pub fn log_exporter(
    config: &ResolvedOtlp,
    runtime: &tokio::runtime::Runtime,
) -> Result<opentelemetry_otlp::LogExporter> {
    let builder = opentelemetry_otlp::LogExporter::builder();
    let exporter = match config.protocol {
        OtlpProtocol::Grpc => {
            let _context = runtime.enter();
            grpc(builder.with_tonic(), config)?.build()
        }
        OtlpProtocol::HttpProtobuf => http(builder.with_http(), config, "logs")?.build(),
    };
    exporter.with_context(|| format!("OTLP log exporter for {}", config.endpoint))
}

pub fn metric_exporter(
    config: &ResolvedOtlp,
    runtime: &tokio::runtime::Runtime,
) -> Result<opentelemetry_otlp::MetricExporter> {
    let builder = opentelemetry_otlp::MetricExporter::builder();
    let exporter = match config.protocol {
        OtlpProtocol::Grpc => {
            let _context = runtime.enter();
            grpc(builder.with_tonic(), config)?.build()
        }
        OtlpProtocol::HttpProtobuf => http(builder.with_http(), config, "metrics")?.build(),
    };
    exporter.with_context(|| format!("OTLP metric exporter for {}", config.endpoint))
}

/// The gRPC settings every signal's exporter gets (call inside the OTLP runtime).
fn grpc<B: WithExportConfig + WithTonicConfig>(builder: B, config: &ResolvedOtlp) -> Result<B> {
    let builder = builder
        .with_endpoint(&config.endpoint)
        .with_timeout(config.timeout)
        .with_metadata(metadata(config)?);
    Ok(match tls(config)? {
        Some(tls) => builder.with_tls_config(tls),
        None => builder,
    })
}

/// The HTTP/protobuf settings of a signal's exporter; `signal` names its path (`/v1/logs`).
fn http<B: WithExportConfig + WithHttpConfig>(
    builder: B,
    config: &ResolvedOtlp,
    signal: &str,
) -> Result<B> {
    Ok(builder
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/{signal}", config.endpoint))
        .with_timeout(config.timeout)
        .with_headers(headers(config))
        .with_http_client(http_client(config)?))
}

fn headers(config: &ResolvedOtlp) -> HashMap<String, String> {
    config.headers.clone().into_iter().collect()
}

fn metadata(config: &ResolvedOtlp) -> Result<MetadataMap> {
    let mut map = http::HeaderMap::new();
    for (name, value) in &config.headers {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("OTLP header name {name:?}"))?,
            http::HeaderValue::from_str(value)
                .with_context(|| format!("OTLP header {name:?} has a value that is not valid"))?,
        );
    }
    Ok(MetadataMap::from_headers(map))
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the OTLP {what} {}", path.display()))
}

/// TLS for an `https` gRPC endpoint (system roots plus the configured CA).
fn tls(config: &ResolvedOtlp) -> Result<Option<ClientTlsConfig>> {
    if !config.endpoint.starts_with("https://") {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new().with_native_roots();
    if let Some(ca) = &config.ca_file {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca, "CA file")?));
    }
    if let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) {
        tls = tls.identity(Identity::from_pem(
            read(cert, "client certificate")?,
            read(key, "client key")?,
        ));
    }
    Ok(Some(tls))
}

/// The HTTP client: rustls with the system roots plus the configured CA and identity.
fn http_client(config: &ResolvedOtlp) -> Result<reqwest::blocking::Client> {
    let mut builder = reqwest::blocking::Client::builder().timeout(config.timeout);
    if let Some(ca) = &config.ca_file {
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(&read(ca, "CA file")?).context("the OTLP CA file")?,
        );
    }
    if let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) {
        let mut pem = read(cert, "client certificate")?;
        pem.extend(read(key, "client key")?);
        builder = builder.identity(
            reqwest::Identity::from_pem(&pem).context("the OTLP client certificate and key")?,
        );
    }
    // reqwest's blocking client runs its own runtime thread and must be built outside tokio.
    std::thread::spawn(move || builder.build())
        .join()
        .map_err(|_| anyhow::anyhow!("building the HTTP client panicked"))?
        .context("building the OTLP HTTP client")
}
