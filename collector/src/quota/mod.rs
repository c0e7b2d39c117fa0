//! Quotas: budgets per enterprise, team or user and per UTC day or month, in tokens or money,
//! soft (an alert: webhook, log line, metric, once per window) or hard (the admission check
//! denies new requests once the budget is spent).
//!
//! Usage is read back from the store every `refresh` (1 s by default) by every replica, so all
//! replicas agree within a refresh. A stream already admitted is never cut, so a budget can
//! be overshot by what is in flight when it is crossed: the calls admitted during one refresh
//! plus the agent's export delay (its flush, about 100 ms) plus streams still running.

pub mod admission;
mod alerts;
pub mod ext_authz;

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    accounts::{Account, Accounts},
    bill,
    rate::PriceBook,
    store::{SidePolicy, Store, StoreError},
};

pub use alerts::Alerter;

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    Day,
    Month,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Soft,
    Hard,
}

/// One budget.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// `org:<id>`, `team:<id>` or `user:<id>`.
    pub account: String,
    pub period: Window,
    /// A budget in tokens (all token types)...
    pub tokens: Option<u64>,
    /// ... or in money, in the price book's currency (as a string: `"100.00"`).
    #[serde(default, with = "rust_decimal::serde::str_option")]
    pub amount: Option<Decimal>,
    pub mode: Mode,
    /// Where alerts are POSTed (JSON); they are logged and counted either way.
    pub webhook: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QuotasFile {
    #[serde(default)]
    quotas: Vec<Quota>,
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("quotas: {0}")]
    Parse(String),
    #[error("quotas[{index}].{field}: {reason}")]
    Invalid {
        index: usize,
        field: &'static str,
        reason: String,
    },
}

pub fn parse(text: &str, accounts: &Accounts) -> Result<Vec<Quota>, QuotaError> {
    let file: QuotasFile = toml::from_str(text).map_err(|e| QuotaError::Parse(e.to_string()))?;
    for (index, q) in file.quotas.iter().enumerate() {
        let invalid = |field, reason: String| QuotaError::Invalid {
            index,
            field,
            reason,
        };
        if q.tokens.is_some() == q.amount.is_some() {
            return Err(invalid(
                "tokens",
                "give exactly one of tokens or amount".into(),
            ));
        }
        if q.amount.is_some_and(|a| a.is_sign_negative()) {
            return Err(invalid("amount", "must not be negative".into()));
        }
        let known = match q.account.split_once(':') {
            Some(("org", id)) => accounts.orgs.contains_key(id),
            Some(("team", id)) => accounts.teams.contains_key(id),
            Some(("user", id)) => accounts.users.contains_key(id),
            _ => {
                return Err(invalid(
                    "account",
                    format!("{:?}: write org:<id>, team:<id> or user:<id>", q.account),
                ))
            }
        };
        if !known {
            return Err(invalid(
                "account",
                format!("{:?} is not in the accounts file", q.account),
            ));
        }
    }
    Ok(file.quotas)
}

impl Quota {
    /// Whether this budget covers the account.
    pub fn applies_to(&self, account: &Account) -> bool {
        match self.account.split_once(':') {
            Some(("org", id)) => account.org == id,
            Some(("team", id)) => account.team == id,
            Some(("user", id)) => account.user == id,
            _ => false,
        }
    }
}

/// [start, end) of the window holding `now_ns`, and its name (`2026-03-05`, `2026-03`).
pub fn window(period: Window, now_ns: i64) -> (i64, i64, String) {
    use chrono::{Datelike, NaiveDate, TimeZone, Utc};
    let now = Utc.timestamp_nanos(now_ns);
    let (start, end, name) = match period {
        Window::Day => {
            let day = now.date_naive();
            (
                day,
                day.succ_opt().expect("a next day"),
                day.format("%Y-%m-%d").to_string(),
            )
        }
        Window::Month => {
            let first = NaiveDate::from_ymd_opt(now.year(), now.month(), 1).expect("a first day");
            let next = if now.month() == 12 {
                NaiveDate::from_ymd_opt(now.year() + 1, 1, 1)
            } else {
                NaiveDate::from_ymd_opt(now.year(), now.month() + 1, 1)
            }
            .expect("a next month");
            (first, next, first.format("%Y-%m").to_string())
        }
    };
    let ns = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_nanos_opt()
            .expect("in range")
    };
    (ns(start), ns(end), name)
}

/// Where a quota stands now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaState {
    pub index: usize,
    pub window: String,
    pub used_tokens: u64,
    pub used_amount: Decimal,
    pub exceeded: bool,
}

/// Reads the usage of every quota's current window and says which are spent.
pub fn evaluate(
    quotas: &[Quota],
    store: &mut dyn Store,
    book: &PriceBook,
    accounts: &Accounts,
    policy: SidePolicy,
    now_ns: i64,
) -> Result<Vec<QuotaState>, StoreError> {
    let mut windows: BTreeMap<(i64, i64), bill::Bill> = BTreeMap::new();
    let mut states = Vec::with_capacity(quotas.len());
    for (index, quota) in quotas.iter().enumerate() {
        let (start, end, name) = window(quota.period, now_ns);
        let bill = match windows.entry((start, end)) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let rows = store.usage_window(start, end, policy)?;
                e.insert(bill::compute(&name, false, &rows, book, accounts))
            }
        };
        let (used_tokens, used_amount) = used(quota, bill);
        let exceeded = match (quota.tokens, quota.amount) {
            (Some(limit), _) => used_tokens >= limit,
            (_, Some(limit)) => used_amount >= limit,
            _ => false,
        };
        states.push(QuotaState {
            index,
            window: name,
            used_tokens,
            used_amount,
            exceeded,
        });
    }
    Ok(states)
}

/// Tokens and money of the quota's account in a window's bill.
fn used(quota: &Quota, bill: &bill::Bill) -> (u64, Decimal) {
    let mut tokens = 0;
    let mut amount = Decimal::ZERO;
    let (level, id) = quota.account.split_once(':').unwrap_or(("", ""));
    for org in &bill.orgs {
        match level {
            "org" if org.org == id => {
                tokens += org.tokens;
                amount += org.subtotal;
            }
            "team" => {
                for share in org.teams.iter().filter(|s| s.account == id) {
                    tokens += share.tokens;
                    amount += share.amount;
                }
            }
            "user" => {
                for share in org
                    .users
                    .iter()
                    .filter(|s| s.account.rsplit_once('/').is_some_and(|(_, u)| u == id))
                {
                    tokens += share.tokens;
                    amount += share.amount;
                }
            }
            _ => {}
        }
    }
    (tokens, amount)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNTS: &str = include_str!("../../examples/accounts.toml");

    #[test]
    fn quotas_name_their_mistakes() {
        let accounts = Accounts::parse(ACCOUNTS).unwrap();
        let ok = "[[quotas]]\naccount = \"team:search\"\nperiod = \"day\"\ntokens = 100\nmode = \"hard\"\n";
        assert_eq!(parse(ok, &accounts).unwrap().len(), 1);
        let both = "[[quotas]]\naccount = \"team:search\"\nperiod = \"day\"\ntokens = 1\namount = \"1\"\nmode = \"hard\"\n";
        assert!(parse(both, &accounts)
            .unwrap_err()
            .to_string()
            .contains("quotas[0].tokens"));
        let unknown = "[[quotas]]\naccount = \"team:nope\"\nperiod = \"month\"\ntokens = 1\nmode = \"soft\"\n";
        assert!(parse(unknown, &accounts)
            .unwrap_err()
            .to_string()
            .contains("team:nope"));
        let typo = "[[quotas]]\naccount = \"team:search\"\nperiod = \"week\"\ntokens = 1\nmode = \"soft\"\n";
        assert!(parse(typo, &accounts)
            .unwrap_err()
            .to_string()
            .contains("week"));
    }

    #[test]
    fn windows_are_utc_days_and_months() {
        let t = chrono::NaiveDate::from_ymd_opt(2026, 12, 31)
            .unwrap()
            .and_hms_opt(23, 59, 0)
            .unwrap()
            .and_utc()
            .timestamp_nanos_opt()
            .unwrap();
        let (start, end, name) = window(Window::Day, t);
        assert_eq!(name, "2026-12-31");
        assert_eq!(end - start, 86_400_000_000_000);
        let (_, end, name) = window(Window::Month, t);
        assert_eq!(name, "2026-12");
        assert_eq!(crate::store::period_of(end), "2027-01");
    }
}
