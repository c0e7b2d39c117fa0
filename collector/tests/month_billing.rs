//! A month of synthetic usage (1,000,000 calls by default; `TOKENMETER_MONTH_RECORDS` to
//! change) across 3 enterprises, 10 teams, 100 users and 5 models goes through the real
//! ingest path (OTLP log records -> decode -> accounts -> price entry -> SQLite) and is
//! billed; every line, every enterprise total and every team and user share is checked
//! against an independent computation in integer arithmetic, to the cent, with per-unit,
//! graduated, volume and package prices, free allowances, request fees, an enterprise
//! override and a minimum charge.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
};
use rust_decimal::Decimal;
use tokenmeter_collector::{
    accounts::Accounts,
    bill,
    rate::PriceBook,
    receive::Ingestor,
    store::{self, SidePolicy},
    usage::{int_attribute, string_attribute},
};

/// Prices in cents per million tokens, so the expected amounts are integer arithmetic.
const BOOK: &str = r#"
currency = "USD"
minimum_charge = "50000.00"

[[prices]]
model = "gpt-4o"
input = { per_million = "250" }
cached_input = { per_million = "125" }
output = { per_million = "1000" }

[[prices]]
model = "llama-70b"
input = { per_million = "60", free_tokens = 1000000 }
output = { kind = "graduated", tiers = [
    { up_to = 8000000, per_million = "90" },
    { up_to = 20000000, per_million = "70" },
    { per_million = "55" },
] }

[[prices]]
model = "qwen-32b"
input = { kind = "volume", tiers = [
    { up_to = 30000000, per_million = "40" },
    { up_to = 100000000, per_million = "35" },
    { per_million = "30" },
] }
output = { per_million = "80" }

[[prices]]
model = "claude-sonnet"
input = { per_million = "300" }
output = { kind = "package", package_tokens = 1000000, package_price = "1500" }

[[prices]]
model = "mistral-7b"
input = { per_million = "20" }
output = { per_million = "20" }
request_fee = "0.03"

[[overrides]]
org = "initech"
[[overrides.prices]]
model = "llama-70b"
input = { per_million = "50" }
output = { per_million = "75" }
"#;

const MODELS: [&str; 5] = [
    "gpt-4o",
    "llama-70b",
    "qwen-32b",
    "claude-sonnet",
    "mistral-7b",
];
const ORGS: [&str; 3] = ["acme", "globex", "initech"];

/// team index -> org index: 4, 3 and 3 teams.
fn org_of_team(team: usize) -> usize {
    match team {
        0..=3 => 0,
        4..=6 => 1,
        _ => 2,
    }
}

fn accounts_toml() -> String {
    let mut text = String::new();
    for (o, org) in ORGS.iter().enumerate() {
        text.push_str(&format!("[[orgs]]\nid = \"{org}\"\n"));
        for team in (0..10).filter(|t| org_of_team(*t) == o) {
            let users: Vec<String> = (0..100)
                .filter(|u| u % 10 == team)
                .map(|u| format!("\"u{u}\""))
                .collect();
            text.push_str(&format!(
                "[[orgs.teams]]\nid = \"t{team}\"\nusers = [{}]\n",
                users.join(", ")
            ));
        }
    }
    text
}

/// A deterministic call: (user, model, input, cached, output).
fn call(i: u64) -> (usize, usize, u64, u64, u64) {
    let mut x = i
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    x ^= x >> 33;
    let user = (x % 100) as usize;
    let model = ((x >> 8) % 5) as usize;
    let input = 200 + (x >> 16) % 3000;
    let cached = if model == 0 {
        (x >> 28) % (input / 2)
    } else {
        0
    };
    let output = 20 + (x >> 40) % 800;
    (user, model, input, cached, output)
}

/// 2026-03-01T00:00Z + i * 2 s (1M calls fit in March).
fn time_of(i: u64) -> u64 {
    1_772_323_200_000_000_000 + i * 2_000_000_000
}

fn request(range: std::ops::Range<u64>) -> ExportLogsServiceRequest {
    let log_records = range
        .map(|i| {
            let (user, model, input, cached, output) = call(i);
            LogRecord {
                time_unix_nano: time_of(i),
                event_name: "tokenmeter.usage".into(),
                attributes: vec![
                    string_attribute("tokenmeter.record.id", &format!("month-{i:08}")),
                    string_attribute("tokenmeter.side", "server"),
                    string_attribute("gen_ai.response.model", MODELS[model]),
                    string_attribute("tokenmeter.user", &format!("u{user}")),
                    int_attribute("gen_ai.usage.input_tokens", input as i64),
                    int_attribute("gen_ai.usage.cache_read.input_tokens", cached as i64),
                    int_attribute("gen_ai.usage.output_tokens", output as i64),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// cents (as integer hundredths) of `tokens` at `c` cents per million, rounded half up.
fn round(cents_times_million: u128) -> u128 {
    (cents_times_million + 500_000) / 1_000_000
}

/// The expected amount in cents of one line, from the book above, written independently.
fn expected_line(org: usize, model: usize, item: &str, q: u64) -> u128 {
    let q = q as u128;
    let tiers = |q: u128, bands: &[(u128, u128)], graduated: bool| -> u128 {
        if graduated {
            let (mut floor, mut sum) = (0u128, 0u128);
            for &(up_to, c) in bands {
                if q <= floor {
                    break;
                }
                sum += (q.min(up_to) - floor) * c;
                floor = up_to;
            }
            round(sum)
        } else {
            let c = bands.iter().find(|(up_to, _)| q <= *up_to).unwrap().1;
            round(q * c)
        }
    };
    match (MODELS[model], item, ORGS[org]) {
        ("llama-70b", "input", "initech") => round(q * 50 * 100),
        ("llama-70b", "output", "initech") => round(q * 75 * 100),
        ("gpt-4o", "input", _) => round(q * 250 * 100),
        ("gpt-4o", "cached_input", _) => round(q * 125 * 100),
        ("gpt-4o", "output", _) => round(q * 1000 * 100),
        ("llama-70b", "input", _) => round(q.saturating_sub(1_000_000) * 60 * 100),
        ("llama-70b", "output", _) => tiers(
            q,
            &[(8_000_000, 9000), (20_000_000, 7000), (u128::MAX, 5500)],
            true,
        ),
        ("qwen-32b", "input", _) => tiers(
            q,
            &[(30_000_000, 4000), (100_000_000, 3500), (u128::MAX, 3000)],
            false,
        ),
        ("qwen-32b", "output", _) => round(q * 80 * 100),
        ("claude-sonnet", "input", _) => round(q * 300 * 100),
        ("claude-sonnet", "output", _) => q.div_ceil(1_000_000) * 150_000,
        ("mistral-7b", "input" | "output", _) => round(q * 20 * 100),
        ("mistral-7b", "requests", _) => q * 3,
        other => panic!("no expected price for {other:?}"),
    }
}

fn cents(amount: Decimal) -> u128 {
    let scaled = amount * Decimal::from(100);
    assert!(scaled.fract().is_zero(), "{amount} is not whole cents");
    u128::try_from(scaled.trunc().mantissa()).unwrap() / 10u128.pow(scaled.trunc().scale())
}

#[test]
fn a_month_of_usage_is_billed_exactly() {
    let n: u64 = std::env::var("TOKENMETER_MONTH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("usage.db").display());
    let book = PriceBook::parse(BOOK).unwrap();
    let accounts = Accounts::parse(&accounts_toml()).unwrap();
    let ingestor = Ingestor::new(store::open(&url).unwrap(), book.clone(), accounts.clone());
    let batch = 10_000;
    for start in (0..n).step_by(batch as usize) {
        let reply = ingestor
            .ingest_logs(&request(start..(start + batch).min(n)))
            .unwrap();
        assert_eq!(reply.rejected, 0);
    }
    // A retried batch changes nothing.
    ingestor.ingest_logs(&request(0..batch.min(n))).unwrap();

    // The independent computation: quantities per (org, model, item) and per user.
    let mut lines: BTreeMap<(usize, usize, &str), u64> = BTreeMap::new();
    let mut user_tokens: BTreeMap<usize, u64> = BTreeMap::new();
    for i in 0..n {
        let (user, model, input, cached, output) = call(i);
        let org = org_of_team(user % 10);
        for (item, q) in [
            ("input", input - cached),
            ("cached_input", cached),
            ("output", output),
        ] {
            if q > 0 {
                *lines.entry((org, model, item)).or_default() += q;
            }
        }
        if MODELS[model] == "mistral-7b" {
            *lines.entry((org, model, "requests")).or_default() += 1;
        }
        *user_tokens.entry(user).or_default() += input + output;
    }

    let mut store = store::open(&url).unwrap();
    let rows = store.usage("2026-03", SidePolicy::PreferServer).unwrap();
    let bill = bill::compute("2026-03", false, &rows, &book, &accounts);
    assert_eq!(bill.orgs.len(), 3);
    let mut checked = 0;
    for (o, org) in ORGS.iter().enumerate() {
        let org_bill = bill.orgs.iter().find(|b| b.org == *org).unwrap();
        let mut subtotal = 0u128;
        for line in &org_bill.lines {
            let model = MODELS.iter().position(|m| *m == line.model).unwrap();
            let quantity = lines[&(o, model, line.item)];
            assert_eq!(
                line.quantity, quantity,
                "{org} {} {}",
                line.model, line.item
            );
            let expected = expected_line(o, model, line.item, quantity);
            assert_eq!(
                cents(line.amount),
                expected,
                "{org} {} {}",
                line.model,
                line.item
            );
            subtotal += expected;
            checked += 1;
        }
        let expected_lines = lines.keys().filter(|(lo, _, _)| *lo == o).count();
        assert_eq!(org_bill.lines.len(), expected_lines, "{org}");
        assert_eq!(cents(org_bill.subtotal), subtotal, "{org}");
        let total = subtotal.max(5_000_000);
        assert_eq!(
            cents(org_bill.total),
            total,
            "{org}: the minimum charge tops up"
        );
        let teams: Decimal = org_bill.teams.iter().map(|t| t.amount).sum();
        let users: Decimal = org_bill.users.iter().map(|u| u.amount).sum();
        assert_eq!(teams, org_bill.subtotal, "{org}: team shares add up");
        assert_eq!(users, org_bill.subtotal, "{org}: user shares add up");
        assert_eq!(org_bill.teams.len(), if o == 0 { 4 } else { 3 });
        for user in &org_bill.users {
            let u: usize = user.account.split("/u").nth(1).unwrap().parse().unwrap();
            assert_eq!(user.tokens, user_tokens[&u], "{}", user.account);
        }
    }
    assert_eq!(
        bill.orgs.iter().map(|o| o.requests).sum::<u64>(),
        n,
        "every call billed once"
    );
    assert!(checked >= 3 * 10, "{checked} lines checked");
    // At the default size every enterprise's Llama output crosses both graduated boundaries
    // and its Qwen input lands in the last volume tier.
    if n >= 1_000_000 {
        for o in 0..3 {
            if ORGS[o] != "initech" {
                assert!(lines[&(o, 1, "output")] > 20_000_000);
            }
            assert!(lines[&(o, 2, "input")] > 100_000_000);
        }
    }
}
