//! Exporters: a finalised period's billing data to the operator's billing engine. Each
//! exporter is one file: `lago` (usage events through Lago's batch events API), `openmeter`
//! (CloudEvents), `webhook` (the bill as JSON, signed with HMAC-SHA256) and `files` (JSON and
//! CSV). Lago and OpenMeter receive usage per account, model and token type, with ids derived
//! from those (and the period), so exporting again is deduplicated by the engine; their own
//! rating applies. The webhook and files carry the rated bill.

mod files;
mod lago;
mod openmeter;
mod webhook;

use std::path::PathBuf;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    bill::Bill,
    store::UsageRow,
    usage::{GPU_TIME, TOKEN_TYPES},
};

/// One exporter (`[[exporters]]` in the collector's config).
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ExporterConfig {
    /// Lago: `POST <url>/api/v1/events/batch`; customers are enterprises.
    Lago {
        url: String,
        /// The Lago API key (a mounted Secret).
        api_key_file: PathBuf,
        /// The billable metric's code.
        #[serde(default = "default_metric")]
        metric_code: String,
    },
    /// OpenMeter: `POST <url>/api/v1/events`, a CloudEvents batch; subjects are enterprises.
    Openmeter {
        url: String,
        token_file: Option<PathBuf>,
        #[serde(default = "default_metric")]
        event_type: String,
    },
    /// Any HTTP endpoint: the bill as JSON, `x-tokenmeter-signature: sha256=<hex>` over
    /// `<timestamp>.<body>` with the shared secret.
    Webhook { url: String, secret_file: PathBuf },
    /// `bill-<period>.json` and `bill-<period>.csv` in a directory.
    Files { dir: PathBuf },
}

fn default_metric() -> String {
    "llm_tokens".into()
}

/// Usage of one account, model and token type in a period: what Lago and OpenMeter receive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageLine {
    /// Stable: the same period, account, model and type always give the same id.
    pub id: String,
    pub org: String,
    pub team: String,
    pub user: String,
    pub model: String,
    pub token_type: &'static str,
    pub tokens: u64,
}

/// The usage lines of a period, in a stable order.
pub fn usage_lines(period: &str, rows: &[UsageRow]) -> Vec<UsageLine> {
    let mut lines = Vec::new();
    for row in rows {
        // GPU time goes out as `gpu_time` in µs, like a token type.
        let items = TOKEN_TYPES.into_iter().zip(row.quantities);
        for (token_type, tokens) in items.chain([(GPU_TIME, row.gpu_time_us)]) {
            if tokens == 0 {
                continue;
            }
            let a = &row.account;
            let key = format!(
                "{period}|{}|{}|{}|{}|{}|{token_type}",
                a.org,
                a.team,
                a.user,
                row.model,
                row.price_id.as_deref().unwrap_or("")
            );
            lines.push(UsageLine {
                id: hex::encode(&Sha256::digest(key.as_bytes())[..16]),
                org: a.org.clone(),
                team: a.team.clone(),
                user: a.user.clone(),
                model: row.model.clone(),
                token_type,
                tokens,
            });
        }
    }
    lines
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{exporter}: reading {path}: {source}")]
    Secret {
        exporter: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{exporter}: {url}: {reason}")]
    Http {
        exporter: &'static str,
        url: String,
        reason: String,
    },
    #[error("files: {0}")]
    Files(#[from] std::io::Error),
}

fn secret(exporter: &'static str, path: &std::path::Path) -> Result<String, ExportError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| ExportError::Secret {
            exporter,
            path: path.display().to_string(),
            source,
        })
}

/// Sends a period to one exporter; returns what it did, for the log.
pub fn export(
    config: &ExporterConfig,
    bill: &Bill,
    rows: &[UsageRow],
) -> Result<String, ExportError> {
    match config {
        ExporterConfig::Lago {
            url,
            api_key_file,
            metric_code,
        } => lago::send(url, &secret("lago", api_key_file)?, metric_code, bill, rows),
        ExporterConfig::Openmeter {
            url,
            token_file,
            event_type,
        } => {
            let token = token_file
                .as_deref()
                .map(|p| secret("openmeter", p))
                .transpose()?;
            openmeter::send(url, token.as_deref(), event_type, bill, rows)
        }
        ExporterConfig::Webhook { url, secret_file } => {
            webhook::send(url, &secret("webhook", secret_file)?, bill)
        }
        ExporterConfig::Files { dir } => files::write(dir, bill),
    }
}

/// Start of a period (`YYYY-MM`) in seconds since the epoch.
fn period_start(period: &str) -> i64 {
    chrono::NaiveDate::parse_from_str(&format!("{period}-01"), "%Y-%m-%d")
        .map(|d| {
            d.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp()
        })
        .unwrap_or(0)
}

/// POSTs JSON; a status other than 2xx is an error with the engine's answer.
fn post(
    exporter: &'static str,
    url: &str,
    headers: &[(&str, String)],
    content_type: &str,
    body: &[u8],
) -> Result<(), ExportError> {
    let mut request = ureq::post(url).header("content-type", content_type);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let error = |reason: String| ExportError::Http {
        exporter,
        url: url.to_string(),
        reason,
    };
    let response = request
        .config()
        .http_status_as_error(false)
        .build()
        .send(body)
        .map_err(|e| error(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let text = response.into_body().read_to_string().unwrap_or_default();
        Err(error(format!(
            "HTTP {status}: {}",
            text.chars().take(300).collect::<String>()
        )))
    }
}
