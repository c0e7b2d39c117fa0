//! Bills as text tables (for people), JSON (for programs) and CSV lines (for spreadsheets
//! and billing imports).

use std::fmt::Write;

use super::Bill;

pub fn table(bill: &Bill) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Bill for {} ({}), amounts in {}",
        bill.period, bill.status, bill.currency
    );
    if bill.orgs.is_empty() {
        let _ = writeln!(out, "  no usage in this period");
    }
    for org in &bill.orgs {
        let _ = writeln!(
            out,
            "\n== {} ({}): {} requests, {} tokens, total {} {}",
            org.name, org.org, org.requests, org.tokens, org.total, bill.currency
        );
        let _ = writeln!(
            out,
            "  {:<36} {:<22} {:>12} {:>12}",
            "model", "item", "quantity", "amount"
        );
        for line in &org.lines {
            let mut item = line.item.to_string();
            // GPU time is counted in µs and shown in GPU-seconds.
            let quantity = if line.item == crate::usage::GPU_TIME {
                item.push_str(" (s)");
                rust_decimal::Decimal::new(line.quantity as i64, 6).to_string()
            } else {
                line.quantity.to_string()
            };
            if line.price_id.is_none() {
                item.push_str(" (unpriced)");
            }
            let _ = writeln!(
                out,
                "  {:<36} {:<22} {:>12} {:>12}",
                truncate(&line.model, 36),
                item,
                quantity,
                line.amount
            );
        }
        if !org.minimum_charge_adjustment.is_zero() {
            let _ = writeln!(
                out,
                "  {:<36} {:<22} {:>12} {:>12}",
                "", "minimum charge", "", org.minimum_charge_adjustment
            );
        }
        let _ = writeln!(out, "  by team and user:");
        for team in &org.teams {
            let _ = writeln!(
                out,
                "    {:<34} {:>8} req {:>12} tok {:>12}",
                team.account, team.requests, team.tokens, team.amount
            );
            for user in org
                .users
                .iter()
                .filter(|u| u.account.starts_with(&format!("{}/", team.account)))
            {
                let _ = writeln!(
                    out,
                    "      {:<32} {:>8} req {:>12} tok {:>12}",
                    user.account, user.requests, user.tokens, user.amount
                );
            }
        }
    }
    out
}

pub fn json(bill: &Bill) -> String {
    serde_json::to_string_pretty(bill).expect("bills serialise")
}

/// One row per line: period, org, model, price entry, item, quantity, amount, currency.
pub fn csv(bill: &Bill) -> String {
    let mut out = String::from("period,org,model,price_id,item,quantity,amount,currency\n");
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    for org in &bill.orgs {
        for line in &org.lines {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{}",
                bill.period,
                field(&org.org),
                field(&line.model),
                field(line.price_id.as_deref().unwrap_or("unpriced")),
                line.item,
                line.quantity,
                line.amount,
                bill.currency
            );
        }
        if !org.minimum_charge_adjustment.is_zero() {
            let _ = writeln!(
                out,
                "{},{},,,minimum_charge,,{},{}",
                bill.period,
                field(&org.org),
                org.minimum_charge_adjustment,
                bill.currency
            );
        }
    }
    out
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let cut: String = text.chars().take(width - 1).collect();
        format!("{cut}~")
    }
}
