//! Quota alerts: once per quota and window (recorded in the store, so once across replicas
//! and restarts), as a log line, a metric and, when the quota names one, a JSON webhook.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing::{error, warn};

use super::{Mode, Quota, QuotaState};
use crate::store::Store;

#[derive(Default)]
pub struct Alerter {
    pub sent: AtomicU64,
    pub webhook_failures: AtomicU64,
}

impl Alerter {
    /// Alerts for every exceeded quota that has not alerted in this window yet.
    pub fn check(
        &self,
        quotas: &[Quota],
        states: &[QuotaState],
        store: &mut dyn Store,
        now_ns: i64,
    ) {
        for state in states.iter().filter(|s| s.exceeded) {
            let quota = &quotas[state.index];
            let key = format!(
                "{}|{:?}|{:?}|{:?}|{:?}|{}",
                quota.account, quota.period, quota.tokens, quota.amount, quota.mode, state.window
            );
            match store.record_alert(&key, now_ns) {
                Ok(true) => self.send(quota, state),
                Ok(false) => {}
                Err(e) => error!(%e, "recording a quota alert failed; it will be tried again"),
            }
        }
    }

    fn send(&self, quota: &Quota, state: &QuotaState) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let mode = match quota.mode {
            Mode::Soft => "soft",
            Mode::Hard => "hard",
        };
        warn!(
            account = %quota.account,
            window = %state.window,
            mode,
            used_tokens = state.used_tokens,
            used_amount = %state.used_amount,
            "quota reached"
        );
        let Some(url) = &quota.webhook else {
            return;
        };
        let body = serde_json::json!({
            "type": "tokenmeter.quota.reached",
            "account": quota.account,
            "window": state.window,
            "mode": mode,
            "limit_tokens": quota.tokens,
            "limit_amount": quota.amount.map(|a| a.to_string()),
            "used_tokens": state.used_tokens,
            "used_amount": state.used_amount.to_string(),
        });
        if let Err(e) = ureq::post(url).send_json(&body) {
            self.webhook_failures.fetch_add(1, Ordering::Relaxed);
            error!(%e, url, "the quota webhook failed (the alert is logged and counted)");
        }
    }
}
