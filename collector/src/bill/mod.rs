//! Bills: per period and enterprise, one line per price entry, model and token type (plus
//! request fees), priced on the enterprise's total so tiers apply to what the contract
//! covers; each line's amount rounded once to the currency's smallest unit. Teams and users
//! get their share of every line in proportion to their quantity, split with the largest
//! remainder method so their amounts add up to the enterprise's to the cent. A minimum
//! charge tops up the enterprise's total. Calls with no matching price are listed with a
//! zero amount and `unpriced`, never left out.

mod allocate;
pub mod render;

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    accounts::{Account, Accounts},
    rate::{round_money, PriceBook},
    store::UsageRow,
    usage::{GPU_TIME, TOKEN_TYPES},
};

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bill {
    pub period: String,
    pub status: &'static str,
    pub currency: String,
    pub orgs: Vec<OrgBill>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrgBill {
    pub org: String,
    pub name: String,
    pub lines: Vec<Line>,
    /// Sum of the lines.
    pub subtotal: Decimal,
    /// What the minimum charge adds (zero when the subtotal reaches it).
    pub minimum_charge_adjustment: Decimal,
    pub total: Decimal,
    pub requests: u64,
    pub tokens: u64,
    /// GPU time held by the enterprise's pods, µs.
    pub gpu_time_us: u64,
    pub teams: Vec<Share>,
    pub users: Vec<Share>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Line {
    pub model: String,
    /// The price-book entry; `None`: unpriced.
    pub price_id: Option<String>,
    /// A token type, `gpu_time` (quantity in µs) or `requests` for request fees.
    pub item: &'static str,
    pub quantity: u64,
    pub amount: Decimal,
    /// Calls in the line that arrived after their own period was finalised.
    pub adjustments: u64,
}

/// A team's or user's part of an enterprise's bill.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Share {
    /// `team` or `team/user`.
    pub account: String,
    pub requests: u64,
    pub tokens: u64,
    pub amount: Decimal,
}

/// Computes the bill of a period from its billable usage.
pub fn compute(
    period: &str,
    finalized: bool,
    rows: &[UsageRow],
    book: &PriceBook,
    accounts: &Accounts,
) -> Bill {
    let mut by_org: BTreeMap<&str, Vec<&UsageRow>> = BTreeMap::new();
    for row in rows {
        by_org.entry(&row.account.org).or_default().push(row);
    }
    let orgs = by_org
        .into_iter()
        .map(|(org, rows)| org_bill(org, &rows, book, accounts))
        .collect();
    Bill {
        period: period.to_string(),
        status: if finalized { "finalized" } else { "draft" },
        currency: book.currency.clone(),
        orgs,
    }
}

/// (model, price entry, item) -> per account quantity.
type LineKey = (String, Option<String>, &'static str);

fn org_bill(org: &str, rows: &[&UsageRow], book: &PriceBook, accounts: &Accounts) -> OrgBill {
    let mut lines: BTreeMap<LineKey, (BTreeMap<&Account, u64>, u64)> = BTreeMap::new();
    let mut requests = 0;
    let mut tokens = 0;
    let mut gpu_time_us = 0;
    let mut team_use: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut user_use: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for row in rows {
        requests += row.requests;
        let row_tokens: u64 = row.quantities.iter().sum();
        tokens += row_tokens;
        let team = team_use.entry(row.account.team.clone()).or_default();
        team.0 += row.requests;
        team.1 += row_tokens;
        let user = user_use.entry(user_key(&row.account)).or_default();
        user.0 += row.requests;
        user.1 += row_tokens;
        gpu_time_us += row.gpu_time_us;
        let items = TOKEN_TYPES.into_iter().zip(row.quantities);
        for (item, quantity) in items.chain([(GPU_TIME, row.gpu_time_us)]) {
            if quantity > 0 {
                let line = lines
                    .entry((row.model.clone(), row.price_id.clone(), item))
                    .or_default();
                *line.0.entry(&row.account).or_default() += quantity;
                line.1 += row.adjustments;
            }
        }
        let fee = row
            .price_id
            .as_deref()
            .and_then(|id| book.entry(id))
            .and_then(|e| e.request_fee);
        if fee.is_some() {
            let line = lines
                .entry((row.model.clone(), row.price_id.clone(), "requests"))
                .or_default();
            *line.0.entry(&row.account).or_default() += row.requests;
        }
    }
    let mut bill_lines = Vec::new();
    let mut team_amounts: BTreeMap<String, Decimal> = BTreeMap::new();
    let mut user_amounts: BTreeMap<String, Decimal> = BTreeMap::new();
    for ((model, price_id, item), (per_account, adjustments)) in lines {
        let quantity: u64 = per_account.values().sum();
        let entry = price_id.as_deref().and_then(|id| book.entry(id));
        let amount = match (entry, item) {
            (Some(e), "requests") => e.request_fee.unwrap_or_default() * Decimal::from(quantity),
            (Some(e), item) => e.price(item).map_or(Decimal::ZERO, |p| p.amount(quantity)),
            (None, _) => Decimal::ZERO,
        };
        let amount = round_money(amount, book.minor_units);
        let weights: Vec<(&Account, u64)> = per_account.iter().map(|(a, q)| (*a, *q)).collect();
        for (account, share) in allocate::pro_rata(amount, &weights, book.minor_units) {
            *team_amounts.entry(account.team.clone()).or_default() += share;
            *user_amounts.entry(user_key(account)).or_default() += share;
        }
        bill_lines.push(Line {
            model,
            price_id: entry.map(|e| e.id.clone()),
            item,
            quantity,
            amount,
            adjustments,
        });
    }
    let subtotal: Decimal = bill_lines.iter().map(|l| l.amount).sum();
    let minimum_charge_adjustment = match book.minimum_charge {
        Some(minimum) if (requests > 0 || gpu_time_us > 0) && subtotal < minimum => {
            minimum - subtotal
        }
        _ => Decimal::ZERO,
    };
    let shares = |usage: BTreeMap<String, (u64, u64)>, amounts: &BTreeMap<String, Decimal>| {
        usage
            .into_iter()
            .map(|(account, (requests, tokens))| Share {
                amount: amounts.get(&account).copied().unwrap_or_default(),
                account,
                requests,
                tokens,
            })
            .collect()
    };
    OrgBill {
        org: org.to_string(),
        name: accounts
            .orgs
            .get(org)
            .cloned()
            .unwrap_or_else(|| org.to_string()),
        lines: bill_lines,
        subtotal,
        minimum_charge_adjustment,
        total: subtotal + minimum_charge_adjustment,
        requests,
        tokens,
        gpu_time_us,
        teams: shares(team_use, &team_amounts),
        users: shares(user_use, &user_amounts),
    }
}

fn user_key(account: &Account) -> String {
    format!("{}/{}", account.team, account.user)
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
