//! Lago's events API: `POST /api/v1/events/batch` with
//! `{"events": [{"transaction_id", "external_subscription_id", "code", "timestamp",
//! "properties"}]}`. Lago deduplicates on the transaction id, which is stable per period,
//! account, model and token type. The subscription is the enterprise's id.

use serde_json::json;

use super::{period_start, post, usage_lines, ExportError};
use crate::{bill::Bill, store::UsageRow};

/// Lago takes at most 100 events per batch.
const BATCH: usize = 100;

pub fn send(
    url: &str,
    api_key: &str,
    code: &str,
    bill: &Bill,
    rows: &[UsageRow],
) -> Result<String, ExportError> {
    let lines = usage_lines(&bill.period, rows);
    let endpoint = format!("{}/api/v1/events/batch", url.trim_end_matches('/'));
    for chunk in lines.chunks(BATCH) {
        let events: Vec<_> = chunk
            .iter()
            .map(|l| {
                json!({
                    "transaction_id": l.id,
                    "external_subscription_id": l.org,
                    "code": code,
                    "timestamp": period_start(&bill.period),
                    "properties": {
                        "tokens": l.tokens, "model": l.model, "token_type": l.token_type,
                        "team": l.team, "user": l.user,
                    },
                })
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "events": events })).expect("JSON");
        post(
            "lago",
            &endpoint,
            &[("authorization", format!("Bearer {api_key}"))],
            "application/json",
            &body,
        )?;
    }
    Ok(format!("{} usage events to Lago", lines.len()))
}
