//! OpenMeter's ingest API: `POST /api/v1/events` with a batch of CloudEvents 1.0
//! (`application/cloudevents-batch+json`). OpenMeter deduplicates on (source, id); the id is
//! stable per period, account, model and token type. The subject is the enterprise's id.

use serde_json::json;

use super::{period_start, post, usage_lines, ExportError};
use crate::{bill::Bill, store::UsageRow};

pub fn send(
    url: &str,
    token: Option<&str>,
    event_type: &str,
    bill: &Bill,
    rows: &[UsageRow],
) -> Result<String, ExportError> {
    let lines = usage_lines(&bill.period, rows);
    let time = chrono::DateTime::from_timestamp(period_start(&bill.period), 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let events: Vec<_> = lines
        .iter()
        .map(|l| {
            json!({
                "specversion": "1.0",
                "id": l.id,
                "source": "tokenmeter",
                "type": event_type,
                "subject": l.org,
                "time": time,
                "datacontenttype": "application/json",
                "data": {
                    "tokens": l.tokens, "model": l.model, "token_type": l.token_type,
                    "team": l.team, "user": l.user,
                },
            })
        })
        .collect();
    let headers: Vec<(&str, String)> = token
        .map(|t| vec![("authorization", format!("Bearer {t}"))])
        .unwrap_or_default();
    post(
        "openmeter",
        &format!("{}/api/v1/events", url.trim_end_matches('/')),
        &headers,
        "application/cloudevents-batch+json",
        &serde_json::to_vec(&events).expect("JSON"),
    )?;
    Ok(format!("{} CloudEvents to OpenMeter", events.len()))
}
